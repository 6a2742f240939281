"""spacelang.sr.weights: loading checkpoints by name or through a rename map, and the
errors that name what does not fit."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from spacelang.api import load, loads
from spacelang.sr.weights import WeightsError, load_rename_map, load_weights
from tests.paths import REPO, SHARED

IMDN_WEIGHTS = SHARED / "weights" / "imdn_x2.pth"
DLSR_WEIGHTS = SHARED / "weights" / "dlsr_x2.pt"

TINY = """\
network tiny(C = 8, scale = 2) {
    s = conv(input, C, k=3)
    up = conv(s, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return loads(TINY, path="tiny.space", **overrides).fixed()


def tiny_state(**overrides) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tiny(seed=1, **overrides).state_dict().items()}


def save(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def weights_error(model, path, map_path=None) -> str:
    with pytest.raises(WeightsError) as info:
        load_weights(model, path, map_path)
    return str(info.value)


def assert_same_state(model, state) -> None:
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(loaded[key], tensor), key


# --------------------------------------------------------------------------- loading by name


def test_same_names_load_without_a_map(tmp_path):
    state = tiny_state()
    path = save(tmp_path / "w.pt", state)
    model = tiny(seed=2)
    assert not torch.equal(model.state_dict()["s.weight"], state["s.weight"])
    load_weights(model, path)
    assert_same_state(model, state)


def test_a_shipped_spec_reloads_its_own_state_dict(tmp_path):
    space = load(REPO / "spaces" / "imdn.space", C=16, cells=2)
    torch.manual_seed(0)
    source = space.fixed().eval()
    path = save(tmp_path / "imdn.pt", source.state_dict())
    torch.manual_seed(1)
    fresh = space.fixed().eval()
    load_weights(fresh, path)
    assert_same_state(fresh, source.state_dict())
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))


@pytest.mark.parametrize("key", ["state_dict", "model", "params", "params_ema"])
def test_tensors_are_found_inside_the_usual_keys(tmp_path, key):
    state = tiny_state()
    path = save(tmp_path / "w.pt", {"epoch": 3, key: state, "note": "x"})
    model = tiny(seed=2)
    load_weights(model, path)
    assert_same_state(model, state)


def test_checkpoint_key_strip_prefix_and_ignore(tmp_path):
    state = tiny_state()
    inner = {f"module.{k}": v for k, v in state.items()}
    inner["module.total_ops"] = torch.zeros(1)
    inner["module.total_params"] = torch.zeros(1)
    path = save(tmp_path / "w.pt", {"weights": inner, "state_dict": {"x": torch.zeros(1)}})
    map_path = write(tmp_path / "map.yaml", 'checkpoint_key: weights\nstrip_prefix: "module."\n'
                                            "ignore: ['^total_(ops|params)$']\n")
    model = tiny(seed=2)
    load_weights(model, path, map_path)
    assert_same_state(model, state)


def test_ignore_may_be_a_single_pattern(tmp_path):
    state = tiny_state()
    path = save(tmp_path / "w.pt", {**state, "total_ops": torch.zeros(1)})
    map_path = write(tmp_path / "map.yaml", "ignore: '^total_ops$'\n")
    model = tiny(seed=2)
    load_weights(model, path, map_path)
    assert_same_state(model, state)


def test_rename_rules_with_groups(tmp_path):
    state = tiny_state()
    theirs = {"head.0.weight": state["s.weight"], "head.0.bias": state["s.bias"],
              "tail.weight": state["up.weight"], "tail.bias": state["up.bias"]}
    path = save(tmp_path / "w.pt", theirs)
    map_path = write(tmp_path / "map.yaml", "rename:\n"
                                            "  '^head\\.0\\.(weight|bias)$': 's.\\1'\n"
                                            "  '^tail\\.(.*)$': 'up.\\1'\n")
    model = tiny(seed=2)
    load_weights(model, path, map_path)
    assert_same_state(model, state)


def test_an_empty_map_is_loading_by_name(tmp_path):
    state = tiny_state()
    path = save(tmp_path / "w.pt", state)
    model = tiny(seed=2)
    load_weights(model, path, write(tmp_path / "map.yaml", "# nothing\n"))
    assert_same_state(model, state)


# ------------------------------------------------------------------ tensors that do not fit


def test_a_tensor_with_no_home_is_named(tmp_path):
    path = save(tmp_path / "w.pt", {**tiny_state(), "extra.weight": torch.zeros(3)})
    message = weights_error(tiny(), path)
    assert message.startswith(str(path))
    assert "tensor 'extra.weight' has no home in the network" in message
    assert "renamed" not in message  # nothing was renamed


def test_a_renamed_tensor_with_no_home_names_both_names(tmp_path):
    state = tiny_state()
    path = save(tmp_path / "w.pt", {"stem.weight": state["s.weight"], **state})
    map_path = write(tmp_path / "map.yaml", "rename:\n  '^stem\\.(.*)$': 'body.\\1'\n")
    message = weights_error(tiny(), path, map_path)
    assert "tensor 'stem.weight' has no home in the network (renamed to 'body.weight')" in message
    assert "similar: s.weight, up.weight" in message


def test_two_rules_giving_one_tensor_different_homes(tmp_path):
    path = save(tmp_path / "w.pt", tiny_state())
    map_path = write(tmp_path / "map.yaml", "rename:\n"
                                            "  '^s\\.(weight|bias)$': 'a.\\1'\n"
                                            "  '^(s)\\.weight$': 'b.weight'\n")
    message = weights_error(tiny(), path, map_path)
    assert "checkpoint tensor 's.weight' has two possible homes: a.weight, b.weight" in message
    assert "exclusive" in message


def test_two_rules_agreeing_on_a_home_are_fine(tmp_path):
    state = tiny_state()
    path = save(tmp_path / "w.pt", state)
    map_path = write(tmp_path / "map.yaml", "rename:\n"
                                            "  '^s\\.(weight|bias)$': 's.\\1'\n"
                                            "  '^s\\.weight$': 's.weight'\n")
    model = tiny(seed=2)
    load_weights(model, path, map_path)
    assert_same_state(model, state)


def test_two_tensors_mapped_to_one_weight(tmp_path):
    state = tiny_state()
    payload = OrderedDict(state)
    payload["old.weight"] = state["s.weight"].clone()
    path = save(tmp_path / "w.pt", payload)
    map_path = write(tmp_path / "map.yaml", "rename:\n  '^old\\.(.*)$': 's.\\1'\n")
    message = weights_error(tiny(), path, map_path)
    assert "tensors 's.weight' and 'old.weight' both map to 's.weight'" in message


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    path = save(tmp_path / "w.pt", tiny_state(C=16))
    message = weights_error(tiny(C=8), path)
    assert ("tensor 's.weight' has shape (16, 3, 3, 3) but 's.weight' in the network has "
            "(8, 3, 3, 3)") in message


def test_missing_weights_are_named(tmp_path):
    state = tiny_state()
    del state["up.bias"]
    message = weights_error(tiny(), save(tmp_path / "w.pt", state))
    assert "no tensor for up.bias of the network" in message


def test_many_missing_weights_are_counted(tmp_path):
    model = load(REPO / "spaces" / "imdn.space", C=16, cells=2).fixed()
    keys = list(model.state_dict())
    path = save(tmp_path / "w.pt", {"fea.weight": model.state_dict()["fea.weight"]})
    message = weights_error(model, path)
    assert (f"no tensor for {keys[1]}, {keys[2]}, {keys[3]} and {len(keys) - 4} more of the "
            "network; the checkpoint belongs to another network or the map misses a rule"
            ) in message


def test_a_checkpoint_of_another_spec_names_what_differs(tmp_path):
    """IMDN weights into the DLSR network: the first IMDN-only tensor is named."""
    torch.manual_seed(0)
    imdn = load(REPO / "spaces" / "imdn.space", C=16, cells=2).fixed()
    path = save(tmp_path / "imdn.pt", imdn.state_dict())
    dlsr = load(REPO / "spaces" / "dlsr_derived.space", C=16).fixed()
    message = weights_error(dlsr, path)
    assert "tensor 'b.1.c1.weight' has no home in the network" in message
    assert "renamed" not in message


def test_the_official_imdn_checkpoint_into_dlsr_without_a_map():
    if not IMDN_WEIGHTS.exists():
        pytest.skip(f"reference data not available: {IMDN_WEIGHTS}")
    dlsr = load(REPO / "spaces" / "dlsr_derived.space").fixed()
    message = weights_error(dlsr, IMDN_WEIGHTS)
    assert "tensor 'module.fea_conv.weight' has no home in the network" in message


def test_the_official_dlsr_checkpoint_into_imdn_without_a_map():
    if not DLSR_WEIGHTS.exists():
        pytest.skip(f"reference data not available: {DLSR_WEIGHTS}")
    imdn = load(REPO / "spaces" / "imdn.space").fixed()
    message = weights_error(imdn, DLSR_WEIGHTS)
    assert "tensor 'fea_conv.weight' has no home in the network" in message


# --------------------------------------------------------------------------- bad maps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rename: [unclosed\n", "cannot read weights map"),
        ("rename:\n  a: b\n c: d\n", "cannot read weights map"),
        ("- rename\n", "a weights map is a mapping with `rename:` rules"),
        ("renames:\n  '^a$': b\n", "unknown key(s) renames; expected rename, strip_prefix"),
        ("rename: [a, b]\n", "`rename` must map patterns to replacements"),
        ("rename:\n  '^s\\.(weight$': 'x'\n", "bad pattern '^s\\\\.(weight$'"),
        ("rename:\n  '^s\\.(weight)$': 'x.\\2'\n", "bad replacement 'x.\\\\2'"),
        ("ignore: ['(']\n", "bad ignore pattern '('"),
        ("ignore: {a: b}\n", "`ignore` must be a list of patterns"),
    ],
)
def test_bad_maps_name_the_file(tmp_path, text, expected):
    map_path = write(tmp_path / "bad_map.yaml", text)
    path = save(tmp_path / "w.pt", tiny_state())
    message = weights_error(tiny(), path, map_path)
    assert message.startswith(f"{map_path}: "), message
    assert expected in message, message
    with pytest.raises(WeightsError, match=re.escape(str(map_path))):
        load_rename_map(map_path)


def test_a_missing_map_file(tmp_path):
    path = save(tmp_path / "w.pt", tiny_state())
    message = weights_error(tiny(), path, tmp_path / "nope.yaml")
    assert message == f"{tmp_path / 'nope.yaml'}: no such weights map"


def test_a_map_that_is_not_text(tmp_path):
    map_path = tmp_path / "map.yaml"
    map_path.write_bytes(b"\xff\xfe\x00rename")
    message = weights_error(tiny(), save(tmp_path / "w.pt", tiny_state()), map_path)
    assert message.startswith(f"{map_path}: cannot read weights map")


def test_checkpoint_key_not_in_the_checkpoint(tmp_path):
    path = save(tmp_path / "w.pt", {"epoch": 1, "state_dict": tiny_state()})
    map_path = write(tmp_path / "map.yaml", "checkpoint_key: model\n")
    message = weights_error(tiny(), path, map_path)
    assert message == f"{path}: no 'model' in the checkpoint (keys: epoch, state_dict)"


def test_checkpoint_key_that_holds_no_tensors(tmp_path):
    path = save(tmp_path / "w.pt", {"epoch": 1, "state_dict": tiny_state()})
    map_path = write(tmp_path / "map.yaml", "checkpoint_key: epoch\n")
    message = weights_error(tiny(), path, map_path)
    assert message == f"{path}: 'epoch' in the checkpoint holds a int, not a dict of tensors"


# --------------------------------------------------------------------------- not a checkpoint


def test_missing_weights_file(tmp_path):
    message = weights_error(tiny(), tmp_path / "none.pt")
    assert message == f"checkpoint not found: {tmp_path / 'none.pt'}"


def test_a_folder_is_not_a_checkpoint(tmp_path):
    message = weights_error(tiny(), tmp_path)
    assert "not a file" in message and str(tmp_path) in message


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = write(tmp_path / "w.pt", "these are not weights\n")
    message = weights_error(tiny(), path)
    assert f"{path} is not a PyTorch checkpoint" in message


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert not data.startswith((b"PK", b"\x80"))
    path = tmp_path / "w.pt"
    path.write_bytes(data)
    assert f"{path} is not a PyTorch checkpoint" in weights_error(tiny(), path)


def test_a_damaged_archive_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(tiny_state(), path)
    path.write_bytes(path.read_bytes()[:300])
    assert f"{path} is damaged or not a PyTorch checkpoint" in weights_error(tiny(), path)


def test_an_empty_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"")
    assert f"{path} is empty" in weights_error(tiny(), path)


def test_a_lone_tensor_is_not_a_checkpoint(tmp_path):
    path = save(tmp_path / "w.pt", torch.zeros(3))
    assert "expected a checkpoint dict, found a Tensor" in weights_error(tiny(), path)


def test_a_dict_without_tensors(tmp_path):
    path = save(tmp_path / "w.pt", {"epoch": 3, "name": "x"})
    message = weights_error(tiny(), path)
    assert message == f"{path}: holds no tensors; is it a checkpoint of a network?"


class NotAllowed:
    """Pickled by reference; weights-only loading must refuse it."""


def test_code_in_a_checkpoint_is_refused(tmp_path):
    path = save(tmp_path / "w.pt", {"state_dict": tiny_state(), "obj": NotAllowed()})
    message = weights_error(tiny(), path)
    assert f"refusing to load {path}" in message
    assert "nothing from the file was executed" in message
