"""Speed and memory of spacelang's networks against hand-written PyTorch, in one run.

    python examples/bench_speed.py [--quick] [--threads 1,2] [--sizes 640x360,320x180,64x64]
                                   [--reps N] [--no-compile] [--allocator retain|default]
                                   [--sections supernet,memory,forward,alternatives]

Every figure is printed next to its baseline, measured in the same process (memory: in
fresh processes) with the variants alternating repetition by repetition, so that a load
on the machine falls on all of them alike. A ratio is the median over repetitions of
(variant time / baseline time in the same repetition), with the smallest and largest
of those per-repetition ratios as its spread; below 1 the variant is faster.

The process's malloc keeps freed memory (`spacelang.runtime.speed.retain_freed_memory`,
as the CLI runs) unless ``--allocator default``; either way every variant runs under the
same setting. The forward rows also print the page faults of a pass (median), which is
where glibc's default setting loses time on large images.

* supernet: one weight step (forward, L1 loss, backward, Adam) of DLSR's search
  supernet (`spaces/dlsr.space`, C = 48, batch 16, LR patch 32×32 by default) against
  the hand-written supernet of `dlsr_handwritten.py`; GDAS with hard sampling against
  DARTS.
* memory: the peak RSS of a process during one weight step (each in a fresh process,
  after a warm-up step; Linux VmHWM reset before the step), spacelang vs hand-written;
  the ratio is of those peaks (weights, Adam state and activations together).
* forward: the derived network (`spaces/dlsr_derived.space`) on one image at each size,
  under `torch.inference_mode`, at each thread count: spacelang eager, spacelang
  optimised (channels-last, + torch.compile when this machine can compile), the module
  `spacelang compile --emit-py` writes (eager and optimised), and both channels-last +
  fuse (each conv one oneDNN call with its activation or residual add), against the
  hand-written network (eager; and channels-last, for the optimised rows' own baseline).
  All run the same weights; the script first checks that their outputs agree.

* alternatives (not run by default): at the first size and thread count, ways to run
  the derived network for inference that `optimise` does not offer, against the
  hand-written eager network: TorchScript trace + freeze (and + optimize_for_inference),
  `no_grad` instead of `inference_mode`, torch.compile (default; Inductor's freezing)
  with the seconds each takes to build.

`--quick` runs a few seconds (small supernet, 64×64 forward, one repetition, no
compile): a smoke test that keeps this script working, not a measurement.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from dlsr_handwritten import HandDLSR, HandDLSRSupernet  # noqa: E402
from spacelang.backends.emit import emit_python  # noqa: E402

import spacelang  # noqa: E402
from spacelang.runtime.speed import (  # noqa: E402
    compile_problem,
    fusion_problem,
    optimise,
    retain_freed_memory,
)
from spacelang.sr.weights import load_rename_map, map_state_dict  # noqa: E402

SEARCH_SPACE = ROOT / "spaces" / "dlsr.space"
DERIVED = ROOT / "spaces" / "dlsr_derived.space"
WEIGHTS_MAP = HERE / "weights" / "dlsr.yaml"


# --------------------------------------------------------------------------- timing

def alternate(variants: Mapping[str, Callable[[], Any]], reps: int,
              faults: dict[str, list[int]] | None = None) -> dict[str, list[float]]:
    """Seconds of each variant per repetition; the order rotates every repetition, after
    one untimed warm-up call of each. With ``faults``, also each call's minor page faults."""
    names = list(variants)
    for name in names:
        variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            paged = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
            if faults is not None:
                faults.setdefault(name, []).append(
                    resource.getrusage(resource.RUSAGE_SELF).ru_minflt - paged)
    return times


def ratio(times: Sequence[float], base: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of the per-repetition ratios times / base."""
    ratios = [t / b for t, b in zip(times, base, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def row(label: str, times: Sequence[float], base: Sequence[float] | None,
        unit: str = "ms", faults: Sequence[int] | None = None) -> str:
    scale = 1e3 if unit == "ms" else 1.0
    text = f"  {label:<40} {statistics.median(times) * scale:10.2f} {unit}"
    paged = "" if faults is None else f"   {statistics.median(faults):9,.0f} page faults"
    if base is None:
        return text + "   (baseline)    " + " " * 11 + paged
    mid, low, high = ratio(times, base)
    return text + f"   ratio {mid:5.2f}  [{low:.2f}–{high:.2f}]" + paged


# --------------------------------------------------------------------------- supernet

def supernet_variants(options: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The spacelang supernets compared with the hand-written one: (label, keyword
    arguments of `Space.supernet`). ``options`` are the benchmark's supernet options
    (``channels``, ``batch``, ``lr_size``). Partial channels (PC-DARTS) use K = 4, or
    the largest of 4, 2 that divides the width."""
    variants = [("DARTS (full channels)", {"mode": "darts"})]
    k = next((k for k in (4, 2) if options["channels"] % k == 0), None)
    if k is not None:
        variants.append((f"DARTS, partial channels 1/{k}",
                         {"mode": "darts", "partial_channels": k}))
    return variants


def weight_step(net: nn.Module, weights: list[nn.Parameter], batch: int, lr_size: int,
                scale: int = 2) -> Callable[[], None]:
    """One Adam step of ``weights`` on an L1 loss, on a fixed random batch."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, lr_size, lr_size, generator=generator) * 255
    y = torch.rand(batch, 3, lr_size * scale, lr_size * scale, generator=generator) * 255
    optimizer = torch.optim.Adam(weights, lr=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.l1_loss(net(x) / 255, y / 255).backward()
        optimizer.step()

    return step


def build_supernet(which: str, channels: int, options: Mapping[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    if which == "hand":
        return HandDLSRSupernet(channels)
    return spacelang.load(SEARCH_SPACE, C=channels).supernet(**options)


def supernet_section(args: argparse.Namespace) -> None:
    options = {"channels": args.channels, "batch": args.batch, "lr_size": args.lr_size}
    print(f"\nsupernet weight step: C = {args.channels}, batch {args.batch}, LR "
          f"{args.lr_size}×{args.lr_size}, {torch.get_num_threads()} threads, "
          f"{args.step_reps} alternating repetitions")
    hand = build_supernet("hand", args.channels, {})
    steps = {"hand-written supernet (DARTS)": weight_step(hand, hand.weight_parameters(),
                                                          args.batch, args.lr_size)}
    for label, kwargs in supernet_variants(options):
        net = build_supernet("spacelang", args.channels, kwargs)
        steps[f"spacelang {label}"] = weight_step(net, net.weight_parameters(), args.batch,
                                                  args.lr_size)
    gdas = build_supernet("spacelang", args.channels, {"mode": "gdas", "hard": True})
    steps["spacelang GDAS hard"] = weight_step(gdas, gdas.weight_parameters(), args.batch,
                                               args.lr_size)
    times = alternate(steps, args.step_reps)
    names = list(steps)
    print(row(names[0], times[names[0]], None, "s"))
    for name in names[1:-1]:
        print(row(name, times[name], times[names[0]], "s"))
    darts = names[1]
    print("  GDAS hard against spacelang DARTS:")
    print(row(darts, times[darts], None, "s"))
    print(row(names[-1], times[names[-1]], times[darts], "s"))


def memory_child(which: str, channels: int, batch: int, lr_size: int,
                 options: Mapping[str, Any]) -> None:
    """In a fresh process: one warm-up step, then print the peak RSS a step adds (MiB)."""
    torch.set_flush_denormal(True)
    net = build_supernet(which, channels, options)
    step = weight_step(net, net.weight_parameters(), batch, lr_size)
    step()  # Adam's state and the allocator's pools exist from here on
    before = _rss_mib()
    _reset_peak()
    step()
    peak = _peak_mib()
    print(json.dumps({"before": before, "peak": peak, "added": max(0.0, peak - before)}))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Start this process's peak RSS afresh (Linux: VmHWM := VmRSS). `ru_maxrss` cannot
    be used: it survives exec, so a child would report its parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # then the peak is the process's lifetime peak, an upper bound


def _peak_mib() -> float:
    """This process's peak RSS in MiB (VmHWM; else ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_section(args: argparse.Namespace) -> None:
    options = {"channels": args.channels, "batch": args.batch, "lr_size": args.lr_size}
    print(f"\npeak memory of one supernet weight step (RSS, each in a fresh process): "
          f"C = {args.channels}, batch {args.batch}, LR {args.lr_size}×{args.lr_size}")
    runs = [("hand-written supernet (DARTS)", "hand", {})]
    runs += [(f"spacelang {label}", "spacelang", kwargs)
             for label, kwargs in supernet_variants(options)]
    results = {}
    for label, which, kwargs in runs:
        command = [sys.executable, __file__, "--memory-child", which, "--allocator",
                   args.allocator, "--threads",
                   ",".join(map(str, args.threads)), "--channels",
                   str(args.channels), "--batch", str(args.batch), "--lr-size",
                   str(args.lr_size), "--supernet-options", json.dumps(kwargs)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[label] = json.loads(out.strip().splitlines()[-1])
    base = results[runs[0][0]]
    for label, result in results.items():
        text = (f"  {label:<40} peak {result['peak']:8.0f} MiB during the step "
                f"({result['added']:6.1f} MiB above the RSS before it)")
        if label == runs[0][0]:
            print(text + "   (baseline)")
        else:
            print(text + f"   ratio {result['peak'] / base['peak']:5.2f}")


# --------------------------------------------------------------------------- forward

def emitted_module(network: Any) -> Any:
    """The module `compile --emit-py` writes for ``network``, imported from a temp file."""
    folder = Path(tempfile.mkdtemp(prefix="spacelang-emit-"))
    path = folder / "emitted_dlsr.py"
    path.write_text(emit_python(network), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("emitted_dlsr", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forward_networks(compile_: bool) -> dict[str, nn.Module]:
    """The derived network in each form, all with one set of weights; the hand-written
    eager network first (the baseline), the hand-written channels-last one fourth (the
    optimised rows' own baseline)."""
    torch.manual_seed(0)
    hand = HandDLSR().eval()
    space = spacelang.load(DERIVED)
    state = map_state_dict(space.fixed(), hand.state_dict(), load_rename_map(WEIGHTS_MAP))
    emitted = emitted_module(space.network)

    def spacelang_net(**speed: bool) -> nn.Module:
        net = space.fixed().eval()
        net.load_state_dict(state)
        return optimise(net, **speed)

    def emitted_net(**speed: bool) -> nn.Module:
        net = emitted.build(**speed).eval()
        net.load_state_dict(state)
        return net

    hand_cl = HandDLSR().eval()
    hand_cl.load_state_dict(hand.state_dict())
    hand_cl.to(memory_format=torch.channels_last)
    optimised = {"channels_last": True, "compile": compile_}
    how = "channels-last + compile" if compile_ else "channels-last"
    networks = {
        "hand-written, eager": hand,
        "spacelang, eager": spacelang_net(),
        "emitted module, eager": emitted_net(),
        "hand-written, channels-last": hand_cl,
        f"spacelang, {how}": spacelang_net(**optimised),
        f"emitted module, {how}": emitted_net(**optimised),
    }
    if fusion_problem(space.fixed()) is None:
        networks["spacelang, channels-last + fuse"] = spacelang_net(channels_last=True,
                                                                    fuse=True)
        networks["emitted module, channels-last + fuse"] = emitted_net(channels_last=True,
                                                                       fuse=True)
    return networks


def forward_section(args: argparse.Namespace) -> None:
    can_compile = not args.no_compile and compile_problem("cpu") is None
    if not args.no_compile and not can_compile:
        print(f"\n(torch.compile left out: {compile_problem('cpu')})")
    networks = forward_networks(can_compile)
    names = list(networks)
    probe = torch.rand(1, 3, 24, 24) * 255
    with torch.inference_mode():
        reference = networks[names[0]](probe)
        worst = max(float((net(probe) - reference).abs().max()) for net in networks.values())
    print(f"\nderived network forward (spaces/dlsr_derived.space, {args.reps} alternating "
          f"repetitions); all forms agree with the hand-written one to {worst:.1e} "
          "(0–255 scale)")
    problem = fusion_problem(spacelang.load(DERIVED).fixed())
    if problem is not None:
        print(f"(fuse left out: {problem})")
    hand_cl = names[3]
    for threads in args.threads:
        torch.set_num_threads(threads)
        for width, height in args.sizes:
            x = torch.rand(1, 3, height, width) * 255
            faults: dict[str, list[int]] = {}
            with torch.inference_mode():
                times = alternate({n: (lambda net=net, x=x: net(x)) for n, net in networks.items()},
                                  args.reps, faults)
            print(f" {width}×{height} input, {threads} thread{'s' * (threads > 1)}:")
            for name in names:
                base = None if name == names[0] else times[names[0]]
                print(row(name, times[name], base, faults=faults[name]))
            for name in names[4:]:
                if "channels-last" in name:
                    print(row(f"{name} vs {hand_cl}", times[name], times[hand_cl]))


class _TraceRoot(nn.Module):
    """``net`` for `torch.jit.trace`: its leaf modules registered under plain names (a
    spacelang value may be called `half`, which TorchScript takes for the method)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.leaves = nn.ModuleList([m for m in net.modules() if not m._modules])
        object.__setattr__(self, "net", net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def alternatives_section(args: argparse.Namespace) -> None:
    """Other ways to run the derived network for inference, at the first size and thread
    count, against the hand-written eager network: TorchScript (trace + freeze, and
    + optimize_for_inference), `torch.no_grad` instead of `torch.inference_mode`, and
    torch.compile (default; with Inductor's freezing) with its compile time."""
    torch.set_num_threads(args.threads[0])
    width, height = args.sizes[0]
    x = torch.rand(1, 3, height, width) * 255
    networks = forward_networks(False)
    hand, fused = networks["hand-written, eager"], networks.get("spacelang, channels-last + fuse")
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def spacelang_cl() -> nn.Module:
        return copy.deepcopy(networks["spacelang, channels-last"])

    variants: dict[str, Callable[[], Any]] = {"hand-written, eager": lambda: hand(x)}
    built: dict[str, float] = {}
    traced = [("TorchScript trace + freeze, channels-last", spacelang_cl, False),
              ("+ optimize_for_inference", spacelang_cl, True)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it takes as constants
        for label, build, optimize in traced:
            start = time.perf_counter()
            script = torch.jit.freeze(torch.jit.trace(_TraceRoot(build()).eval(), x_cl,
                                                      check_trace=False))
            if optimize:
                script = torch.jit.optimize_for_inference(script)
            built[label] = time.perf_counter() - start
            variants[label] = lambda script=script: script(x)
    if fused is not None:
        def no_grad_fused() -> torch.Tensor:
            with torch.no_grad():
                return fused(x)
        variants["spacelang, channels-last + fuse"] = lambda: fused(x)
        variants["same, under no_grad (not inference_mode)"] = no_grad_fused
    if not args.no_compile and compile_problem("cpu") is None:
        import torch._inductor.config as inductor

        for label, freezing in (("torch.compile, channels-last", False),
                                ("torch.compile + freezing, channels-last", True)):
            with inductor.patch(freezing=freezing):
                net = torch.compile(spacelang_cl())
                start = time.perf_counter()
                with torch.inference_mode():
                    net(x)
                built[label] = time.perf_counter() - start
            variants[label] = lambda net=net: net(x)
    with torch.inference_mode():
        reference = hand(x)
        worst = {name: float((run() - reference).abs().max()) for name, run in variants.items()}
        times = alternate(variants, args.reps)
    print(f"\nalternatives: {width}×{height} input, {args.threads[0]} thread"
          f"{'s' * (args.threads[0] > 1)}, {args.reps} alternating repetitions "
          "(torch.inference_mode unless said)")
    names = list(variants)
    print(row(names[0], times[names[0]], None))
    for name in names[1:]:
        note = f"   (built in {built[name]:.1f} s)" if name in built else ""
        print(row(name, times[name], times[names[0]]) + f"  max |Δ| {worst[name]:.1e}" + note)


# --------------------------------------------------------------------------- main

def _size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--sections", default="supernet,memory,forward")
    parser.add_argument("--threads", default="1,2",
                        help="thread counts of the forward section (the largest: of the "
                             "supernet and memory sections)")
    parser.add_argument("--sizes", default="640x360,320x180,64x64",
                        help="LR input sizes of the forward section, WxH")
    parser.add_argument("--reps", type=int, default=7, help="forward repetitions")
    parser.add_argument("--step-reps", type=int, default=5, help="supernet step repetitions")
    parser.add_argument("--channels", type=int, default=48, help="supernet C")
    parser.add_argument("--batch", type=int, default=16, help="supernet batch")
    parser.add_argument("--lr-size", type=int, default=32, help="supernet LR patch side")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--allocator", choices=("retain", "default"), default="retain",
                        help="retain: malloc keeps freed memory, as spacelang's CLI runs "
                             "(default); default: glibc's own setting")
    parser.add_argument("--memory-child", choices=("hand", "spacelang"), help=argparse.SUPPRESS)
    parser.add_argument("--supernet-options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.sizes, args.reps, args.step_reps = "1", "64x64", 1, 1
        args.channels, args.batch, args.lr_size, args.no_compile = 8, 1, 16, True
    args.threads = [int(t) for t in str(args.threads).split(",")]
    args.sizes = [_size(s) for s in str(args.sizes).split(",")]
    args.sections = args.sections.split(",")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    retained = args.allocator == "retain" and retain_freed_memory()
    if args.memory_child:
        torch.set_num_threads(max(args.threads))
        memory_child(args.memory_child, args.channels, args.batch, args.lr_size,
                     json.loads(args.supernet_options))
        return
    torch.set_flush_denormal(True)
    torch.set_num_threads(max(args.threads))  # the supernet and memory sections
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load:.2f} "
          "at the start" + (" (quick: a smoke run, not a measurement)" if args.quick else ""))
    print("malloc " + ("keeps freed memory (retain_freed_memory)" if retained else
                       "at its default setting"))
    if "supernet" in args.sections:
        supernet_section(args)
    if "memory" in args.sections:
        memory_section(args)
    if "forward" in args.sections:
        forward_section(args)
    if "alternatives" in args.sections:
        alternatives_section(args)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
