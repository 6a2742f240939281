"""A short check of the CUDA path, with CPU baselines measured in the same run.

    python examples/device_check.py

Checks that α/β move with `.to("cuda")` and receive gradients there, that a
fixed network gives the same output on the GPU as on the CPU, that bf16
autocast stays close, and that a few steps of `search` run on the GPU; prints
step times on both devices and their ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import attrs
import torch

import spacelang
from spacelang.cli.run import DEFAULT_SEARCH_CONFIG
from spacelang.sr.config import SearchConfig, load_config
from spacelang.sr.data import embedded
from spacelang.sr.search import search


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


if __name__ == "__main__":
    main()
