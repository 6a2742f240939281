"""Data-parallel search and training under torchrun: 2 ranks on Gloo (CPU).

Each test launches ``python -m torch.distributed.run`` in a subprocess; the scenarios on
the library API live in `distributed_worker.py`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spacelang.runtime.checkpoint import load_checkpoint
from spacelang.sr.data import folder
from spacelang.sr.task import evaluate

HERE = Path(__file__).resolve().parent
WORKER = HERE / "distributed_worker.py"

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(not torch.distributed.is_available()
                       or not torch.distributed.is_gloo_available(),
                       reason="torch.distributed with Gloo is not available"),
]


def _load_worker():
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("SPACELANG_DEBUG", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, nproc: int = 2, launch: tuple[str, ...] = ("--standalone",)
              ) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launch,
            "--nproc-per-node", str(nproc), *args]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    worker.write_images(root)
    return root


@pytest.fixture(scope="module")
def lockstep(tmp_path_factory, image_dir) -> Path:
    """The worker's lockstep scenario on 2 ranks: a search per strategy, a NaN on rank 1."""
    out = tmp_path_factory.mktemp("lockstep")
    done = subprocess.run(_torchrun(str(WORKER), "lockstep", str(image_dir), str(out)),
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("strategy", worker.STRATEGIES)
def test_ranks_hold_bitwise_equal_alpha_beta_and_weights(lockstep, strategy):
    first = torch.load(lockstep / f"{strategy}-rank0.pt", weights_only=True)
    second = torch.load(lockstep / f"{strategy}-rank1.pt", weights_only=True)
    assert any(k.startswith("alphas.") for k in first)
    assert any(k.startswith("betas.") for k in first)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # α/β moved from their initial values, so the agreement is not that of untouched values
    assert max(float(first[k].abs().max()) for k in first if k.startswith("alphas.")) > 0.01


@pytest.mark.parametrize("strategy", worker.STRATEGIES)
def test_two_ranks_match_one_process_with_the_same_global_batch(lockstep, strategy,
                                                                image_dir, tmp_path):
    two = torch.load(lockstep / f"{strategy}-rank0.pt", weights_only=True)
    one = worker.run_search(strategy, image_dir, tmp_path / "run")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_rank_that_drifts_is_named_by_the_lockstep_check(lockstep):
    for rank in (0, 1):
        assert (lockstep / f"desync-rank{rank}.txt").read_text() == "alphas.b None"


def test_search_help_says_how_to_run_under_torchrun(capsys):
    from spacelang.cli import run_cli

    with pytest.raises(SystemExit):
        run_cli(["search", "--help"])
    text = capsys.readouterr().out
    assert "torchrun --nproc-per-node N -m spacelang search" in text
    assert "--rdzv-backend c10d" in text and "global batch" in text


def test_one_set_of_run_files_per_search(lockstep):
    run = lockstep / "run-darts1"
    names = sorted(p.name for p in run.iterdir())
    assert names == ["arch.jsonl", "config.yaml", "derived.pt", "derived.space", "last.pt",
                     "metrics.jsonl", "spec.space"]
    assert [r["iteration"] for r in _records(run / "metrics.jsonl")] == list(range(1, 7))
    assert [r["iteration"] for r in _records(run / "arch.jsonl")] == [2, 4, 6]
    config = (run / "config.yaml").read_text()
    assert "data-parallel run on 2 ranks" in config and "(2 per rank)" in config
    assert "batch_size: 4" in config


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_update(lockstep):
    messages = {(lockstep / f"nan-rank{r}.txt").read_text() for r in (0, 1)}
    assert len(messages) == 1
    (message,) = messages
    # epoch 1 starts at update 3 (8 patches, global batch 4): rank 1's patches turn NaN
    assert message.startswith("non-finite loss at iteration 3; last good checkpoint kept")
    assert load_checkpoint(lockstep / "run-nan" / "last.pt")["iteration"] == 2


def _train_setup(tmp_path: Path, image_dir: Path) -> tuple[Path, Path]:
    spec = tmp_path / "tiny.space"
    spec.write_text(worker.FIXED)
    config = tmp_path / "train.yaml"
    config.write_text(f"iterations: 6\npatch_size: 16\nbatch_size: 4\nepoch_length: 8\n"
                      f"val_every: 3\nlog_every: 1\ncheckpoint_every: 3\n"
                      f"val_data: {image_dir}\n")
    return spec, config


def test_torchrun_train_reports_the_one_process_psnr(tmp_path, image_dir):
    spec, config = _train_setup(tmp_path, image_dir)
    run = tmp_path / "run"
    done = subprocess.run(
        _torchrun("-m", "spacelang", "train", str(spec), "--config", str(config),
                  "--data", str(image_dir), "--run-dir", str(run), "--no-progress"),
        capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 6 iterations") == 1
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt",
                                                      "metrics.jsonl", "spec.space"]
    records = _records(run / "metrics.jsonl")
    assert [r["iteration"] for r in records] == list(range(1, 7))
    best = load_checkpoint(run / "best.pt")
    reported = next(r["val_psnr"] for r in records if r["iteration"] == best["iteration"])
    import spacelang

    model = spacelang.load(spec).fixed()
    model.load_state_dict(best["model"])
    # 4 validation images over 2 ranks, gathered and averaged in the set's order
    psnr, _, _ = evaluate(model, folder(image_dir, 2).materialize(), 2, 1)
    assert reported == psnr


def test_a_run_under_torchrun_needs_a_run_dir(tmp_path, image_dir):
    spec, config = _train_setup(tmp_path, image_dir)
    done = subprocess.run(
        _torchrun("-m", "spacelang", "train", str(spec), "--config", str(config)),
        capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("needs --run-dir") == 1  # once, not once per rank


def test_two_nodes_on_one_machine_complete_a_search_and_one_writes(tmp_path, image_dir):
    spec = tmp_path / "smooth.space"
    spec.write_text(worker.SMOOTH)
    config = tmp_path / "search.yaml"
    config.write_text("iterations: 4\narch_warmup: 1\npatch_size: 16\nbatch_size: 4\n"
                      "epoch_length: 8\ncomplexity: none\nhr_size: [64, 64]\n"
                      "log_every: 1\ncheckpoint_every: 2\nval_every: 1000\n")
    port = _free_port()
    launch = ("--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
              f"127.0.0.1:{port}", "--rdzv-id", "two-nodes")
    nodes = []
    for node in (0, 1):
        home = tmp_path / f"node{node}"
        home.mkdir()
        nodes.append((home, subprocess.Popen(
            _torchrun("--node-rank", str(node), "-m", "spacelang", "search",
                      str(spec), "--config", str(config), "--data", str(image_dir),
                      "--run-dir", "run", "--no-progress", nproc=1, launch=launch),
            cwd=home, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    outputs = [(home, *proc.communicate(timeout=300), proc.returncode) for home, proc in nodes]
    for _, _, err, code in outputs:
        assert code == 0, err[-3000:]
    written = [home for home, *_ in outputs if (home / "run").exists()]
    assert len(written) == 1  # the node that holds rank 0; a relative run dir per node
    assert sorted(p.name for p in (written[0] / "run").iterdir()) == [
        "arch.jsonl", "config.yaml", "derived.pt", "derived.space", "last.pt", "metrics.jsonl",
        "spec.space"]
    assert sum(out.count("derived architecture written") for _, out, _, _ in outputs) == 1


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_rank_restarts_from_the_last_checkpoint_to_the_same_result(tmp_path,
                                                                            image_dir):
    spec = tmp_path / "smooth.space"
    spec.write_text(worker.SMOOTH)
    config = tmp_path / "search.yaml"
    config.write_text("iterations: 16\narch_warmup: 2\npatch_size: 16\nbatch_size: 4\n"
                      "epoch_length: 8\nstrategy: gdas\nhr_size: [64, 64]\n"
                      "log_every: 1\ncheckpoint_every: 2\nval_every: 1000\n")

    def command(run: Path) -> list[str]:
        return _torchrun("--max-restarts", "1", "-m", "spacelang", "search", str(spec),
                         "--config", str(config), "--data", str(image_dir),
                         "--run-dir", str(run), "--no-progress")

    whole = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True,
                           env=_env(), timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen(command(run), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed_at = None
    deadline = time.monotonic() + 240
    while killed_at is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        records = _records(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else []
        if (run / "last.pt").exists() and records and 4 <= records[-1]["iteration"] < 14:
            victims = [pid for pid in _children(proc.pid) if _rank_of(pid) == 1]
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed_at = records[-1]["iteration"]
    _, err = proc.communicate(timeout=300)
    assert killed_at is not None, "the run ended before a rank could be killed"
    assert proc.returncode == 0, err[-3000:]
    assert "resuming from" in err
    finished = load_checkpoint(run / "last.pt")
    reference = load_checkpoint(tmp_path / "whole" / "last.pt")
    assert finished["iteration"] == reference["iteration"] == 16
    for key, value in reference["model"].items():
        assert torch.equal(finished["model"][key], value), key
    assert [r["iteration"] for r in _records(run / "metrics.jsonl")] == list(range(1, 17))
