"""Benchmark of data-parallel search: patches per second on 1 and 2 ranks, in one run.

    python examples/bench_distributed.py [--iterations N] [--batch B] [--spec SPEC]

Runs the same short DARTS search (first order, global batch B, the DLSR space at C = 8
by default, synthetic images) three times under torchrun on this machine's CPUs:

  * 1 rank, 1 thread          the baseline;
  * 1 rank, 2 threads         what one process makes of two cores by itself;
  * 2 ranks, 1 thread each    data parallel (Gloo): each rank does half of every batch.

Throughput is counted between the first logged update and the last (start-up, the
first update and the rendezvous left out), from the run's own ``metrics.jsonl``. The
ratios compare each against the baseline; on a machine with two cores the ideal for
2 ranks is 2.0, less what the all-reduce costs, and any other load on the cores.
With a CUDA device the ranks use NCCL on ``cuda:LOCAL_RANK`` (one GPU per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spacelang.sr.images import write_image  # noqa: E402


def write_images(folder: Path, count: int = 8, size: int = 96) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        image = np.zeros((size, size, 3))
        for _ in range(6):
            fy, fx = rng.uniform(-0.6, 0.6, 2)
            image += rng.uniform(10, 30, 3) * np.sin(
                fy * yy + fx * xx + rng.uniform(0, 2 * np.pi))[..., None]
        write_image(folder / f"img{i}.png", np.clip(image + 128, 0, 255).astype(np.uint8))


def run(work: Path, name: str, ranks: int, threads: int, args: argparse.Namespace) -> float:
    """Patches per second of one search run."""
    run_dir = work / name
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(ranks), "-m", "spacelang", "search", args.spec,
               "--config", str(work / "search.yaml"), "--data", str(work / "images"),
               "--run-dir", str(run_dir), "--no-progress", "--set", f"C={args.channels}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    updates = last["iteration"] - first["iteration"]
    return updates * args.batch / (last["elapsed"] - first["elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="global batch (even)")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--spec", default=str(ROOT / "spaces" / "dlsr.space"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "images").mkdir()
        write_images(work / "images")
        (work / "search.yaml").write_text(
            f"iterations: {args.iterations}\narch_warmup: 1\npatch_size: {args.patch}\n"
            f"batch_size: {args.batch}\nepoch_length: {4 * args.batch}\nstrategy: darts1\n"
            f"log_every: 1\ncheckpoint_every: {args.iterations}\nval_every: 100000\n")
        rows = [("1 rank x 1 thread", 1, 1), ("1 rank x 2 threads", 1, 2),
                ("2 ranks x 1 thread", 2, 1)]
        speeds = {}
        for label, ranks, threads in rows:
            speeds[label] = run(work, label.replace(" ", "-"), ranks, threads, args)
    base = speeds[rows[0][0]]
    print(f"DARTS-1 search of {Path(args.spec).name} (C={args.channels}), global batch "
          f"{args.batch} of {args.patch}x{args.patch} patches, {args.iterations} updates, "
          f"{os.cpu_count()} CPUs")
    print(f"{'setting':<22}{'patches/s':>12}{'vs 1x1':>10}")
    for label, _, _ in rows:
        print(f"{label:<22}{speeds[label]:>12.1f}{speeds[label] / base:>10.2f}")
    ratio = speeds[rows[2][0]] / speeds[rows[1][0]]
    print(f"2 ranks x 1 thread vs 1 rank x 2 threads (the same two cores): {ratio:.2f}. "
          "Above 1, data parallelism uses two cores better than one process's intra-op "
          "threads; the 2-rank figure against 1x1 would be 2.0 on two idle cores, less the "
          "all-reduce per update. Other load on the cores lowers every figure (threads "
          "most). On GPUs each rank has its own device, so this ratio does not carry over.")

if __name__ == "__main__":
    main()
