"""examples/bench_speed.py: the hand-written baselines compute what spacelang computes, and a
--quick run prints every section with its baseline and ratios (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import torch

import spacelang
from spacelang.runtime.speed import fusion_problem
from spacelang.sr.weights import load_rename_map, map_state_dict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_hand_written_dlsr_is_the_derived_spec_on_the_same_weights():
    hand_module = _module("dlsr_handwritten")
    torch.manual_seed(0)
    hand = hand_module.HandDLSR(channels=16).eval()
    fixed = spacelang.load(EXAMPLES.parent / "spaces" / "dlsr_derived.space", C=16).fixed()
    fixed.load_state_dict(map_state_dict(fixed, hand.state_dict(),
                                         load_rename_map(EXAMPLES / "weights" / "dlsr.yaml")))
    fixed.eval()
    x = torch.rand(2, 3, 30, 34) * 255
    with torch.no_grad():
        assert torch.equal(hand(x), fixed(x))


def test_hand_written_supernet_has_the_spaces_weights_and_shapes():
    hand_module = _module("dlsr_handwritten")
    hand = hand_module.HandDLSRSupernet(channels=8)
    net = spacelang.load(EXAMPLES.parent / "spaces" / "dlsr.space", C=8).supernet()
    assert sorted(p.numel() for p in hand.weight_parameters()) == \
        sorted(p.numel() for p in net.weight_parameters())
    # α: 3 refine steps × 9 ops (one tensor by hand, one per site in spacelang); β of cells
    # 3–6 over 2..5 earlier cells, where cell 3's `pick 2 of` two has nothing to learn
    assert sum(p.numel() for p in hand.arch_parameters()) == 3 * 9 + 2 + 3 + 4 + 5
    assert sum(p.numel() for p in net.arch_parameters()) == 3 * 9 + 3 + 4 + 5
    x = torch.rand(1, 3, 20, 20) * 255
    out = hand(x)
    assert out.shape == net(x).shape == (1, 3, 40, 40)
    out.mean().backward()
    assert all(p.grad is not None for p in hand.arch_parameters())


def test_quick_run_prints_each_figure_next_to_its_baseline():
    done = subprocess.run([sys.executable, str(EXAMPLES / "bench_speed.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for heading in ("supernet weight step", "peak memory", "derived network forward"):
        assert heading in out
    labels = ["spacelang DARTS", "spacelang GDAS hard", "spacelang, eager",
              "emitted module, eager", "spacelang, channels-last"]
    derived = spacelang.load(EXAMPLES.parent / "spaces" / "dlsr_derived.space", C=8).fixed()
    if fusion_problem(derived) is None:
        labels.append("spacelang, channels-last + fuse")
    for label in labels:
        line = next(line for line in out.splitlines() if label in line and "ratio" in line)
        assert re.search(r"ratio\s+\d+\.\d\d\s+\[\d+\.\d\d–\d+\.\d\d\]", line), line
    assert out.count("(baseline)") >= 4
