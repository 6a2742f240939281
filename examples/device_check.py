"""A short check of the CUDA path, with CPU baselines measured in the same run.

    python examples/device_check.py

Checks that α/β move with `.to("cuda")` and receive gradients there, that a
fixed network gives the same output on the GPU as on the CPU, that bf16
autocast stays close, and that a few steps of `search` run on the GPU; prints
step times on both devices and their ratio. Then (`speed_checks`):

* supernet weight steps per second on the GPU, eager against optimised
  (channels-last + bf16 autocast, and + torch.compile when Triton is there),
  alternating repetitions, with the ratio;
* the α trajectory of a short search under `amp: bf16`, and under `amp: fp16` (both
  steps loss-scaled), against the same search in fp32 (same seed, same batches): the
  largest |softmax(α) difference| over the run must stay within `ALPHA_TOLERANCE`;
* a short `train` under `amp: fp16` (GradScaler) stays finite and logs its loss scale.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import attrs
import torch

import spacelang
from spacelang.cli.run import DEFAULT_SEARCH_CONFIG, DEFAULT_TRAIN_CONFIG
from spacelang.runtime.log import MetricsLog
from spacelang.runtime.speed import compile_problem, optimise
from spacelang.sr.config import SearchConfig, TrainConfig, load_config
from spacelang.sr.data import embedded
from spacelang.sr.search import search
from spacelang.sr.train import train

#: Largest |softmax(α)_amp − softmax(α)_fp32| allowed over a short search (probabilities).
ALPHA_TOLERANCE = 0.02


def step_time(net: torch.nn.Module, device: str, steps: int = 5) -> float:
    """Median seconds of one forward+backward on a 16×3×48×48 batch."""
    net = net.to(device)
    x = torch.rand(16, 3, 48, 48, device=device) * 255
    times = []
    for _ in range(steps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        net(x).mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    torch.set_flush_denormal(True)

    space = spacelang.load("spaces/dlsr.space")
    net = space.supernet().to("cuda")
    assert all(p.device.type == "cuda" for p in net.arch_parameters())
    assert all(v.device.type == "cuda" for k, v in net.state_dict().items()
               if k.startswith(("alphas.", "betas.")))
    net(torch.rand(2, 3, 32, 32, device="cuda") * 255).mean().backward()
    grads = [p.grad for p in net.arch_parameters()]
    assert all(g is not None and g.device.type == "cuda" for g in grads)
    print(f"supernet C=48: α/β on cuda, gradient norm {sum(float(g.norm()) for g in grads):.3e}")
    gdas = space.supernet(mode="gdas").to("cuda")
    gdas(torch.rand(2, 3, 32, 32, device="cuda") * 255).mean().backward()
    print("GDAS hard forward/backward on cuda: ok")

    fixed = spacelang.load("spaces/dlsr_derived.space").fixed().eval()
    x = torch.rand(1, 3, 180, 320) * 255
    with torch.no_grad():
        cpu_out = fixed(x)
        gpu_out = fixed.to("cuda")(x.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16_out = fixed(x.cuda()).float().cpu()
    print(f"dlsr_derived 320×180: max |cuda − cpu| = {float((gpu_out - cpu_out).abs().max()):.2e}"
          f", max |bf16 − fp32| = {float((bf16_out - cpu_out).abs().max()):.2f} grey levels")

    supernet = space.supernet()
    cpu = step_time(supernet, "cpu", steps=2)
    gpu = step_time(supernet, "cuda")
    print(f"supernet C=48 forward+backward, batch 16×48×48: cpu {cpu * 1e3:.0f} ms, "
          f"cuda {gpu * 1e3:.1f} ms, ratio {cpu / gpu:.1f}×")

    cfg = attrs.evolve(load_config(SearchConfig, DEFAULT_SEARCH_CONFIG), iterations=40,
                       arch_warmup=10, val_every=40, checkpoint_every=20, batch_size=16)
    small = spacelang.load("spaces/dlsr.space", **cfg.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = search(small, cfg, train_set=embedded(2), val_set=embedded(2, "val"),
                        run_dir=Path(tmp) / "run", progress=False, device="cuda")
        took = time.perf_counter() - start
        print(f"search, 40 iterations on cuda: {took:.1f} s; derived {result.decisions}")
        resumed = attrs.evolve(cfg, iterations=60)
        search(small, resumed, train_set=embedded(2), val_set=None, run_dir=Path(tmp) / "run",
               resume=True, progress=False, device="cuda")
        print("search resumed on cuda from last.pt: ok")


def steps_per_second(net: torch.nn.Module, x: torch.Tensor, reps: int) -> list[float]:
    """Seconds of each of ``reps`` weight steps (forward, mean loss, backward, SGD)."""
    weights = [p for n, p in net.named_parameters() if not n.startswith(("alphas.", "betas."))]
    optimizer = torch.optim.SGD(weights, lr=1e-6)
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        net(x).float().mean().backward()
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def alpha_trajectory(run_dir: Path) -> list[torch.Tensor]:
    """softmax(α) of every site, concatenated, at each epoch record of ``arch.jsonl``."""
    out = []
    for record in MetricsLog(run_dir / "arch.jsonl").read():
        sites = [torch.softmax(torch.tensor(v), 0) for k, v in sorted(record["arch"].items())]
        out.append(torch.cat(sites))
    return out


def alpha_gap(fp32: list[torch.Tensor], amp: list[torch.Tensor]) -> float:
    """The largest difference of the two trajectories (they must have the same records)."""
    assert len(fp32) == len(amp) and fp32, "the runs logged different numbers of records"
    return max(float((a - b).abs().max()) for a, b in zip(fp32, amp, strict=True))


def speed_checks(device: str = "cuda", iterations: int = 60) -> None:
    space = spacelang.load("spaces/dlsr.space")
    x = torch.rand(16, 3, 32, 32, device=device) * 255
    eager = space.supernet().to(device)
    fast = space.supernet().to(device)
    fast.load_state_dict(eager.state_dict())
    problem = compile_problem(device)
    optimise(fast, amp="bf16", channels_last=True, compile=problem is None)
    how = "channels-last + bf16" + (" + compile" if problem is None else f" ({problem})")
    for net in (eager, fast):  # warm-up (and compilation)
        steps_per_second(net, x, 3)
    times: dict[str, list[float]] = {"eager": [], "optimised": []}
    for rep in range(10):
        order = ("eager", "optimised") if rep % 2 == 0 else ("optimised", "eager")
        for name in order:
            times[name] += steps_per_second(eager if name == "eager" else fast, x, 1)
    eager_s = sorted(times["eager"])[len(times["eager"]) // 2]
    fast_s = sorted(times["optimised"])[len(times["optimised"]) // 2]
    ratios = sorted(f / e for f, e in zip(times["optimised"], times["eager"], strict=True))
    print(f"supernet C=48 weight step, batch 16×32×32 on {device}: eager {1 / eager_s:.1f} "
          f"steps/s, optimised ({how}) {1 / fast_s:.1f} steps/s; time ratio "
          f"{ratios[len(ratios) // 2]:.2f} [{ratios[0]:.2f}–{ratios[-1]:.2f}]")

    cfg = attrs.evolve(load_config(SearchConfig, DEFAULT_SEARCH_CONFIG), iterations=iterations,
                       arch_warmup=10, val_every=iterations, checkpoint_every=iterations,
                       batch_size=8, epoch_length=32)
    small = spacelang.load("spaces/dlsr.space", **cfg.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for amp in ("fp32", "bf16", "fp16"):
            run_dir = Path(tmp) / amp
            search(small, attrs.evolve(cfg, amp=amp), train_set=embedded(2), val_set=None,
                   run_dir=run_dir, progress=False, device=device)
            runs[amp] = alpha_trajectory(run_dir)
        scales = [(r["loss_scale"], r["arch_loss_scale"])
                  for r in MetricsLog(Path(tmp) / "fp16" / "metrics.jsonl").read()
                  if "arch_loss_scale" in r]
    for amp in ("bf16", "fp16"):
        gap = alpha_gap(runs["fp32"], runs[amp])
        verdict = "ok" if gap <= ALPHA_TOLERANCE else "OUT OF TOLERANCE"
        print(f"α trajectory over {iterations} search iterations, {amp} autocast vs fp32: "
              f"largest |Δ softmax(α)| {gap:.4f} (tolerance {ALPHA_TOLERANCE}): {verdict}")
    print(f"search under amp fp16: (weight, α/β) loss scales {scales}")

    train_cfg = attrs.evolve(load_config(TrainConfig, DEFAULT_TRAIN_CONFIG), iterations=40,
                             val_every=40, checkpoint_every=20, log_every=10, amp="fp16")
    fixed = spacelang.load("spaces/dlsr_derived.space", C=16).fixed()
    with tempfile.TemporaryDirectory() as tmp:
        train(fixed, train_cfg, train_set=embedded(2), val_set=embedded(2, "val"),
              run_dir=Path(tmp) / "fp16", rgb_range=255, progress=False, device=device)
        records = MetricsLog(Path(tmp) / "fp16" / "metrics.jsonl").read()
    scales = [r["loss_scale"] for r in records if "loss_scale" in r]
    print(f"train under amp fp16, 40 iterations: final loss {records[-1]['loss']:.4f}, loss "
          f"scales {scales}")


if __name__ == "__main__":
    main()
    speed_checks()
