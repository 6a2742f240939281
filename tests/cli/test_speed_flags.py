"""`--amp`, `--channels-last` and `--compile` of `train`, `search` and `eval` (and `eval`'s
`--fuse`): runs under them
stay finite, record them in the run's config, resume across a change of them, and refuse
what the machine cannot do with a message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.runtime.speed import compile_problem
from tests.cli.test_run_commands import SEARCH_CONFIG, SEARCHABLE, TRAIN_CONFIG, user_error
from tests.photos import write_photos

pytestmark = pytest.mark.usefixtures("torch_one_thread", "in_tmp")


@pytest.fixture
def images(tmp_path) -> Path:
    return write_photos(tmp_path / "images", 4, 32, prefix="img")


@pytest.fixture(params=["train", "search"])
def run_args(request, tmp_path, spec, images):
    """The argv of a short run of either command (without the speed flags)."""
    config = tmp_path / "run.yaml"
    if request.param == "train":
        config.write_text(TRAIN_CONFIG, encoding="utf-8")
        spec_path = spec
    else:
        config.write_text(SEARCH_CONFIG, encoding="utf-8")
        spec_path = tmp_path / "searchable.space"
        spec_path.write_text(SEARCHABLE, encoding="utf-8")
    return [request.param, str(spec_path), "--config", str(config), "--data", str(images),
            "--run-dir", str(tmp_path / "run"), "--no-progress"]


def _losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in
               (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_bf16_channels_last_run_stays_finite_and_is_recorded(cli, run_args, tmp_path):
    code, _, err = cli(*run_args, "--amp", "bf16", "--channels-last")
    assert code == 0, err
    run = tmp_path / "run"
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["amp"] == "bf16" and saved["channels_last"] is True
    losses = _losses(run)
    assert losses and all(math.isfinite(v) for v in losses)
    weights = load_checkpoint(run / "last.pt")["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_resume_with_another_precision_continues_and_says_so(cli, run_args, tmp_path):
    assert cli(*run_args, "--amp", "bf16")[0] == 0
    config = Path(run_args[3])
    config.write_text(config.read_text(encoding="utf-8").replace("iterations: 6",
                                                                 "iterations: 8"),
                      encoding="utf-8")
    code, _, err = cli(*run_args, "--resume")  # the config's amp: fp32
    assert code == 0, err
    assert "changed settings" in err and "amp 'bf16' -> 'fp32'" in err
    run = tmp_path / "run"
    assert load_checkpoint(run / "last.pt")["iteration"] == 8
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["amp"] == "fp32"


def test_fp16_is_refused_on_cpu(cli, run_args, tmp_path):
    user_error(cli(*run_args, "--amp", "fp16"), "amp fp16 needs a CUDA device", "bf16")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_compile_without_a_compiler_is_a_clear_error(cli, run_args, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    user_error(cli(*run_args, "--compile"), "needs a C++ compiler", "no-such-c++-compiler")


@pytest.mark.parametrize("flag", [
    "--channels-last",
    "--fuse",
    pytest.param("--compile", marks=[
        pytest.mark.slow,
        pytest.mark.skipif(compile_problem() is not None,
                           reason="torch.compile cannot build here")]),
])
def test_eval_with_a_speed_flag_scores_as_before(cli, spec, images, tmp_path, flag):
    torch.manual_seed(0)
    from spacelang.api import load

    weights = tmp_path / "tiny.pt"
    torch.save(load(spec).fixed().state_dict(), weights)
    args = ["eval", str(spec), "--weights", str(weights), "--data", str(images), "--scale", "2",
            "--json", "--no-progress"]
    plain = json.loads(cli(*args)[1])
    code, out, err = cli(*args, flag)
    assert code == 0, err
    assert json.loads(out)["psnr"] == pytest.approx(plain["psnr"], abs=1e-3)


def test_eval_refuses_fuse_with_compile(cli, spec, images, tmp_path):
    from spacelang.api import load

    weights = tmp_path / "tiny.pt"
    torch.save(load(spec).fixed().state_dict(), weights)
    user_error(cli("eval", str(spec), "--weights", str(weights), "--data", str(images),
                   "--scale", "2", "--no-progress", "--fuse", "--compile"),
               "fuse and compile exclude each other")
