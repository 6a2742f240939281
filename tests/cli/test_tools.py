"""`spacelang eval` over a benchmark root, `upscale` and `export`, run in-process on a tiny
spec: per-set numbers equal single-set eval, outputs are never overwritten silently, bad
images are named, ONNX matches PyTorch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spacelang.api import load
from spacelang.sr.images import read_image, write_image
from tests.paths import SHARED
from tests.photos import write_photos

SHARED_SET5 = SHARED / "data" / "Set5"


pytestmark = pytest.mark.usefixtures("torch_one_thread", "in_tmp")


def _weights(spec: Path, scale: int, path: Path) -> Path:
    torch.manual_seed(scale)
    torch.save(load(spec, scale=str(scale)).fixed().state_dict(), path)
    return path


@pytest.fixture
def weights(tmp_path, spec) -> Path:
    return _weights(spec, 2, tmp_path / "x2.pt")


@pytest.fixture
def root(tmp_path) -> Path:
    """A benchmark root: Set5 from ../shared when there (else a synthetic stand-in), and a
    synthetic set with HR images only (LR made on the fly)."""
    base = tmp_path / "benchmarks"
    base.mkdir()
    if SHARED_SET5.is_dir():
        (base / "Set5").symlink_to(SHARED_SET5.resolve())
    else:
        write_photos(base / "Set5" / "HR", 3, 24, seed=5)
    write_photos(base / "Mine" / "HR", 3, 30, seed=1)
    (base / "notes").mkdir()  # not a set: no HR/
    return base


def _ok(result):
    code, out, err = result
    assert code == 0, (code, out, err)
    return out


def test_eval_over_a_root_reproduces_single_set_eval(cli, spec, weights, root):
    multi = json.loads(_ok(cli("eval", str(spec), "--weights", str(weights), "--data", str(root),
                               "--scale", "2", "--json")))
    assert [r["set"] for r in multi["results"]] == ["Set5", "Mine"]  # usual sets first
    for row in multi["results"]:
        single = json.loads(_ok(cli("eval", str(spec), "--weights", str(weights), "--data",
                                    str(root / row["set"]), "--scale", "2", "--json")))
        assert (row["psnr"], row["ssim"], row["images"]) == \
            (single["psnr"], single["ssim"], single["images"])
        assert row["count"] == len(single["images"])


def test_eval_over_a_root_as_markdown_and_rich_tables(cli, spec, weights, root):
    out = _ok(cli("eval", str(spec), "--weights", str(weights), "--data", str(root),
                  "--scale", "2", "--format", "md"))
    lines = out.splitlines()
    assert lines[0].startswith("### tiny ×2 (Y channel, 2 px cropped)")
    assert "| set | PSNR (dB) | SSIM | images |" in lines
    assert sum(line.startswith(("| Set5 |", "| Mine |")) for line in lines) == 2
    table = _ok(cli("eval", str(spec), "--weights", str(weights), "--data", str(root),
                    "--scale", "2"))
    assert "Set5" in table and "Mine" in table and "images" in table


def test_eval_one_table_per_scale_with_weights_per_scale(cli, spec, weights, root, tmp_path):
    x3 = _weights(spec, 3, tmp_path / "x3.pt")
    out = json.loads(_ok(cli("eval", str(spec), "--weights", str(weights), "--weights", str(x3),
                             "--data", str(root), "--scale", "2", "--scale", "3", "--json")))
    assert [(r["scale"], r["set"]) for r in out["results"]] == \
        [(2, "Set5"), (2, "Mine"), (3, "Set5"), (3, "Mine")]
    code, _, err = cli("eval", str(spec), "--weights", str(weights), "--weights", str(x3),
                       "--weights", str(x3), "--data", str(root), "--scale", "2", "--scale", "3")
    assert code == 2 and "once per scale" in err


def test_eval_weights_before_the_spec_is_not_ambiguous(cli, spec, weights, root):
    """`--weights` and `--scale` take one value each (repeated for several scales), so they
    may come before SPEC without swallowing it."""
    before = json.loads(_ok(cli("eval", "--weights", str(weights), "--scale", "2", str(spec),
                                "--data", str(root), "--json")))
    after = json.loads(_ok(cli("eval", str(spec), "--weights", str(weights), "--data", str(root),
                               "--scale", "2", "--json")))
    assert before == after


def test_train_eval_and_upscale_name_a_non_rgb_network_alike(cli, tmp_path, root):
    """One rule, one message: train and eval need 3 → 3 channels (upscale takes grey)."""
    grey = tmp_path / "grey.space"
    grey.write_text("network grey(input: 1, scale = 2) {\n"
                    "    return pixel_shuffle(conv(input, scale * scale), scale)\n}\n",
                    encoding="utf-8")
    message = "network `grey` maps 1 to 1 channels; training and evaluation work on RGB"
    for args in (("train", str(grey), "--run-dir", str(tmp_path / "run")),
                 ("eval", str(grey), "--weights", "w.pt", "--data", str(root), "--scale", "2")):
        code, _, err = cli(*args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err


def test_eval_over_a_root_saves_images_per_set_and_scale(cli, spec, weights, root, tmp_path):
    _ok(cli("eval", str(spec), "--weights", str(weights), "--data", str(root), "--scale", "2",
            "--save-images", str(tmp_path / "sr"), "--json"))
    saved = sorted(p.relative_to(tmp_path / "sr").as_posix()
                   for p in (tmp_path / "sr").rglob("*.png"))
    assert "Mine/X2/pic0.png" in saved
    assert any(s.startswith("Set5/X2/") for s in saved)


# --------------------------------------------------------------------------- upscale


def test_upscale_a_folder_then_refuse_to_overwrite(cli, spec, weights, tmp_path):
    write_photos(tmp_path / "in", 2, 20, seed=3)
    out = tmp_path / "out"
    _ok(cli("upscale", str(spec), str(tmp_path / "in"), "--weights", str(weights), "-o",
            str(out), "--tile", "7"))
    assert read_image(out / "pic0.png").shape == (40, 40, 3)
    before = (out / "pic1.png").read_bytes()
    code, _, err = cli("upscale", str(spec), str(tmp_path / "in"), "--weights", str(weights),
                       "-o", str(out))
    assert code == 2 and "exists" in err and "--force" in err
    assert (out / "pic1.png").read_bytes() == before
    _ok(cli("upscale", str(spec), str(tmp_path / "in"), "--weights", str(weights), "-o",
            str(out), "--force", "--tile", "0"))
    assert (out / "pic1.png").read_bytes() == before  # whole image == tiles


def test_upscale_a_bad_file_fails_or_is_skipped(cli, spec, weights, tmp_path):
    write_photos(tmp_path / "in", 1, 16, seed=4)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    code, _, err = cli("upscale", str(spec), str(tmp_path / "in"), "--weights", str(weights),
                       "-o", str(tmp_path / "out"))
    assert code == 2 and "broken.png" in err and "Traceback" not in err
    out = _ok(cli("upscale", str(spec), str(tmp_path / "in"), "--weights", str(weights),
                  "-o", str(tmp_path / "out2"), "--on-bad-image", "skip"))
    assert "skipped 1" in out
    assert (tmp_path / "out2" / "pic0.png").is_file()
    assert not (tmp_path / "out2" / "broken.png").exists()


def test_upscale_one_file_to_a_named_file(cli, spec, weights, tmp_path):
    write_photos(tmp_path / "in", 1, 12, seed=6)
    _ok(cli("upscale", str(spec), str(tmp_path / "in" / "pic0.png"), "--weights",
            str(weights), "-o", str(tmp_path / "big.png")))
    assert read_image(tmp_path / "big.png").shape == (24, 24, 3)
    code, _, err = cli("upscale", str(spec), str(tmp_path / "missing.png"), "--weights",
                       str(weights), "-o", str(tmp_path / "o"))
    assert code == 2 and "missing.png" in err


MEMORY_CEILING_MIB = 1024


def test_upscale_of_a_2000_square_image_stays_under_the_memory_ceiling(spec, weights,
                                                                       tmp_path):
    """The whole process (Python, torch, the 2000² input and 4000² output) stays under
    MEMORY_CEILING_MIB, as the README states."""
    yy, xx = np.mgrid[0:2000, 0:2000]
    write_image(tmp_path / "large.png", np.stack([xx % 256, yy % 256, (xx + yy) % 256],
                                                 axis=-1).astype(np.uint8))
    script = ("import resource, sys\nfrom spacelang.cli import run_cli\n"
              "code = run_cli(sys.argv[1:])\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
              "sys.exit(code)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, "upscale", str(spec),
                           str(tmp_path / "large.png"), "--weights", str(weights),
                           "-o", str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    peak_mib = int(done.stdout.strip().splitlines()[-1])
    print(f"upscale 2000x2000 -> 4000x4000: peak RSS {peak_mib} MiB")
    assert peak_mib < MEMORY_CEILING_MIB, peak_mib
    assert read_image(tmp_path / "out" / "large.png").shape == (4000, 4000, 3)


# --------------------------------------------------------------------------- export


def test_export_onnx_matches_pytorch(cli, spec, weights, tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from spacelang.backends.onnx import run_onnx

    target = tmp_path / "tiny.onnx"
    out = _ok(cli("export", str(spec), "--weights", str(weights), "--onnx", str(target)))
    assert "opset" in out
    model = load(spec).fixed().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    lr = torch.rand(2, 3, 23, 17)
    with torch.no_grad():
        expected = model(lr).numpy()
    assert np.abs(run_onnx(target, lr.numpy()) - expected).max() * 255 <= 1e-3
    code, _, err = cli("export", str(spec), "--weights", str(weights), "--onnx", str(target))
    assert code == 2 and "--force" in err


def test_export_without_onnx_says_which_extra(cli, spec, weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    code, _, err = cli("export", str(spec), "--weights", str(weights), "--onnx",
                       str(tmp_path / "m.onnx"))
    assert code == 2 and "spacelang[onnx]" in err
    assert not (tmp_path / "m.onnx").exists()
