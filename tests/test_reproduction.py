"""The published IMDN and DLSR ×2 checkpoints, run through `spacelang eval`, give the
reference Set5 numbers of shared/REFERENCE.md; their rename maps keep working when
the spec is built with other parameters of the same structure.

The checkpoints and Set5 live outside the repository, in the `shared` folder next to
it; tests that need them skip when it is absent.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from spacelang.api import load
from spacelang.cli import run_cli
from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.sr.weights import WeightsError, load_weights
from tests.paths import REPO, SHARED

IMDN_SPEC = REPO / "spaces" / "imdn.space"
DLSR_SPEC = REPO / "spaces" / "dlsr_derived.space"
IMDN_MAP = REPO / "examples" / "weights" / "imdn.yaml"
DLSR_MAP = REPO / "examples" / "weights" / "dlsr.yaml"
IMDN_WEIGHTS = SHARED / "weights" / "imdn_x2.pth"
DLSR_WEIGHTS = SHARED / "weights" / "dlsr_x2.pt"
SET5 = SHARED / "data" / "Set5"
SET5_NAMES = ["baby", "bird", "butterfly", "head", "woman"]

# shared/REFERENCE.md: the authors' model code on this data, Y channel, `scale` px cropped.
IMDN_X2 = (37.9105, 0.9594)
DLSR_X2 = (37.9526, 0.9596)
PSNR_TOL, SSIM_TOL = 0.01, 0.0005


def need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"reference data not available: {', '.join(missing)}")


def need_set5() -> None:
    need(SET5 / "HR", SET5 / "LR_bicubic" / "X2")
    if sorted(p.stem for p in (SET5 / "HR").glob("*.png")) != SET5_NAMES:
        pytest.skip(f"{SET5 / 'HR'} does not hold the five Set5 images")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def cli(*argv: str | Path) -> tuple[int, str, str]:
    """Run `spacelang` in-process; (exit code, stdout, stderr). Usable from module fixtures."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def eval_json(spec: Path, weights: Path, weights_map: Path, *extra: str | Path) -> dict:
    code, out, err = cli("eval", spec, "--weights", weights, "--weights-map", weights_map,
                         "--data", SET5, "--scale", "2", "--json", *extra)
    assert code == 0, err
    assert "Traceback" not in err
    return json.loads(out)


@pytest.fixture(scope="module")
def imdn_run(tmp_path_factory) -> tuple[dict, Path]:
    """IMDN ×2 on Set5 through the CLI, saving the SR images: (JSON result, image folder)."""
    need(IMDN_WEIGHTS)
    need_set5()
    images = tmp_path_factory.mktemp("imdn_sr")
    return eval_json(IMDN_SPEC, IMDN_WEIGHTS, IMDN_MAP, "--save-images", images), images


# --------------------------------------------------------------------------- reference numbers


def test_imdn_set5_x2_matches_reference(imdn_run):
    result, _ = imdn_run
    assert result["channel"] == "y" and result["scale"] == 2
    assert [row["name"] for row in result["images"]] == SET5_NAMES
    assert result["psnr"] == pytest.approx(IMDN_X2[0], abs=PSNR_TOL)
    assert result["ssim"] == pytest.approx(IMDN_X2[1], abs=SSIM_TOL)
    # The reported mean is the mean of the per-image numbers.
    assert result["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result["images"]]))
    assert result["ssim"] == pytest.approx(np.mean([r["ssim"] for r in result["images"]]))


def test_dlsr_set5_x2_matches_reference():
    need(DLSR_WEIGHTS)
    need_set5()
    result = eval_json(DLSR_SPEC, DLSR_WEIGHTS, DLSR_MAP)
    assert [row["name"] for row in result["images"]] == SET5_NAMES
    assert result["psnr"] == pytest.approx(DLSR_X2[0], abs=PSNR_TOL)
    assert result["ssim"] == pytest.approx(DLSR_X2[1], abs=SSIM_TOL)


def test_save_images_writes_one_png_of_the_hr_size_per_image(imdn_run):
    from spacelang.sr.images import read_image

    _, folder = imdn_run
    written = sorted(folder.iterdir())
    assert [p.name for p in written] == [f"{name}.png" for name in SET5_NAMES]
    for path in written:
        sr = read_image(path)
        hr = read_image(SET5 / "HR" / path.name)
        assert sr.shape == hr.shape, path.name
        assert sr.dtype == np.uint8
        # A real super-resolution, not a blank or a copy of something else.
        diff = np.abs(sr.astype(np.int16) - hr.astype(np.int16))
        assert diff.mean() < 5, path.name


def test_rgb_scores_differ_from_y_and_are_lower(imdn_run):
    y_result, _ = imdn_run
    rgb = eval_json(IMDN_SPEC, IMDN_WEIGHTS, IMDN_MAP, "--rgb")
    assert rgb["channel"] == "rgb"
    assert rgb["psnr"] < y_result["psnr"] - 0.5
    assert rgb["ssim"] < y_result["ssim"]
    for y_row, rgb_row in zip(y_result["images"], rgb["images"], strict=True):
        assert rgb_row["name"] == y_row["name"]
        assert rgb_row["psnr"] < y_row["psnr"]


def test_cli_refuses_the_x2_weights_for_a_x3_network():
    need(IMDN_WEIGHTS)
    need_set5()
    # The weights are refused before any image is read.
    code, out, err = cli("eval", IMDN_SPEC, "--weights", IMDN_WEIGHTS, "--weights-map",
                         IMDN_MAP, "--data", SET5, "--scale", "3", "--set", "scale=3")
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert "upsampler.0.weight" in err and "(12, 64, 3, 3)" in err and "(27, 64, 3, 3)" in err


# ------------------------------------------------------------- maps under other parameters


def test_imdn_map_into_scale_3_names_the_upsampler_and_both_shapes():
    need(IMDN_WEIGHTS)
    model = load(IMDN_SPEC, scale=3).fixed()
    with pytest.raises(WeightsError) as info:
        load_weights(model, IMDN_WEIGHTS, IMDN_MAP)
    message = str(info.value)
    assert "upsampler.0.weight" in message
    assert "(12, 64, 3, 3)" in message  # the checkpoint's ×2 upsampler: 3·2² outputs
    assert "(27, 64, 3, 3)" in message  # the ×3 network's: 3·3² outputs
    assert "up.weight" in message


def test_imdn_map_into_fewer_cells_names_the_extra_block():
    need(IMDN_WEIGHTS)
    model = load(IMDN_SPEC, cells=4).fixed()
    with pytest.raises(WeightsError, match=r"IMDB5\.c1\.weight.* has no home"):
        load_weights(model, IMDN_WEIGHTS, IMDN_MAP)


_IMDN_OFFICIAL_NAMES = [
    # spaces/imdn.space name → the official IMDN code's name (before DataParallel's prefix)
    (r"^fea\.(weight|bias)$", r"fea_conv.\1"),
    (r"^b\.(\d+)\.(c[1-5])\.(weight|bias)$", r"IMDB\1.\2.\3"),
    (r"^b\.(\d+)\.attention\.squeeze\.(weight|bias)$", r"IMDB\1.cca.conv_du.0.\2"),
    (r"^b\.(\d+)\.attention\.excite\.(weight|bias)$", r"IMDB\1.cca.conv_du.2.\2"),
    (r"^fused\.(weight|bias)$", r"c.0.\1"),
    (r"^lr\.(weight|bias)$", r"LR_conv.\1"),
    (r"^up\.(weight|bias)$", r"upsampler.0.\1"),
]


def official_imdn_name(name: str) -> str:
    """The official checkpoint's key for a weight of spaces/imdn.space (written by hand,
    independently of examples/weights/imdn.yaml)."""
    hits = [re.sub(p, r, name) for p, r in _IMDN_OFFICIAL_NAMES if re.fullmatch(p, name)]
    assert len(hits) == 1, f"no single official name for {name!r}: {hits}"
    return "module." + hits[0]


def test_hand_inverse_of_the_imdn_map_gives_the_official_keys():
    """The inverse used below really is the official naming (checked on the real file)."""
    need(IMDN_WEIGHTS)
    ours = load(IMDN_SPEC).fixed().state_dict()
    official = load_checkpoint(IMDN_WEIGHTS)
    assert sorted(official_imdn_name(k) for k in ours) == sorted(official)
    for key, tensor in ours.items():
        assert tuple(official[official_imdn_name(key)].shape) == tuple(tensor.shape), key


def test_imdn_map_loads_an_official_style_checkpoint_with_other_parameters(tmp_path):
    """C=32, ×4: same structure, other shapes; the same map finds every tensor a home."""
    space = load(IMDN_SPEC, C=32, scale=4)
    torch.manual_seed(1)
    source = space.fixed()
    state = source.state_dict()
    official = {official_imdn_name(k): v.clone() for k, v in state.items()}
    assert "module.upsampler.0.weight" in official and "module.IMDB6.cca.conv_du.2.bias" in official
    assert tuple(official["module.upsampler.0.weight"].shape) == (48, 32, 3, 3)
    path = tmp_path / "imdn_c32_x4.pth"
    torch.save(official, path)

    torch.manual_seed(2)
    target = space.fixed()
    assert not torch.equal(target.state_dict()["fea.weight"], state["fea.weight"])
    load_weights(target, path, IMDN_MAP)
    loaded = target.state_dict()
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key
    source.eval()
    target.eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        expected, got = source(x), target(x)
    assert got.shape == (1, 3, 48, 40)
    assert torch.equal(got, expected)


def test_dlsr_map_loads_an_official_style_checkpoint_with_other_channels(tmp_path):
    """The official DLSR key names with C=32 tensors load through the same map."""
    need(DLSR_WEIGHTS)
    official_keys = list(load_checkpoint(DLSR_WEIGHTS)["state_dict"])
    from spacelang.sr.weights import load_rename_map

    mapping = load_rename_map(DLSR_MAP)
    space = load(DLSR_SPEC, C=32)
    torch.manual_seed(3)
    state = space.fixed().state_dict()
    renamed = {key: mapping.target(key) for key in official_keys}
    assert sorted(renamed.values()) == sorted(state)  # the map is a bijection
    payload = {"epoch": 7, "state_dict": {k: state[renamed[k]].clone() for k in official_keys}}
    path = tmp_path / "dlsr_c32.pt"
    torch.save(payload, path)

    torch.manual_seed(4)
    target = space.fixed()
    load_weights(target, path, DLSR_MAP)
    for key, tensor in target.state_dict().items():
        assert torch.equal(tensor, state[key]), key
