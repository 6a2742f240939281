"""`spacelang.runtime.speed`: autocast, channels-last, compile and fuse change how a network
computes, never its state_dict, and refuse what the device cannot do."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import spacelang
from spacelang.runtime.speed import SpeedError, amp_dtype, compile_problem, optimise
from spacelang.sr.train import train
from tests.paths import SPACES
from tests.sr.test_train import Patches, tiny_config, tiny_model


def _derived(C: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return spacelang.load(SPACES / "dlsr_derived.space", C=C).fixed().eval()


def _conv_dtypes(net: nn.Module, x: torch.Tensor) -> set[torch.dtype]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_bf16_runs_the_convolutions_in_bf16_and_returns_float32():
    net = _derived()
    keys = list(net.state_dict())
    x = torch.rand(1, 3, 24, 24) * 255
    with torch.no_grad():
        plain = net(x)
    optimise(net, amp="bf16")
    assert _conv_dtypes(net, x) == {torch.bfloat16}
    with torch.no_grad():
        out = net(x)
    assert out.dtype == torch.float32
    assert list(net.state_dict()) == keys
    assert isinstance(net, spacelang.backends.torch.FixedNet)
    # bf16 keeps about 3 significant digits: the SR image agrees to a few grey levels
    assert (out - plain).abs().mean() < 0.02 * plain.abs().mean()
    assert _conv_dtypes(copy.deepcopy(net), x) == {torch.bfloat16}
    optimise(net, amp="fp32")  # back to float32 arithmetic
    assert _conv_dtypes(net, x) == {torch.float32}
    with torch.no_grad():
        assert torch.equal(net(x), plain)


def test_channels_last_changes_the_layout_not_the_result():
    net = _derived()
    x = torch.rand(1, 3, 24, 24) * 255
    with torch.no_grad():
        plain = net(x)
        optimise(net, channels_last=True)
        fast = net(x)
    conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-3)


def test_what_the_device_cannot_do_is_refused():
    with pytest.raises(SpeedError, match="needs a CUDA device"):
        amp_dtype("fp16", "cpu")
    with pytest.raises(SpeedError, match="must be one of"):
        amp_dtype("int8", "cpu")
    assert amp_dtype("bf16", "cpu") == torch.bfloat16


def test_compile_problem_names_the_missing_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    problem = compile_problem("cpu")
    assert problem is not None and "no-such-compiler" in problem
    with pytest.raises(SpeedError, match="C\\+\\+ compiler"):
        optimise(_derived(), compile=True)


def test_the_training_loop_applies_the_config(tmp_path: Path):
    model = tiny_model()
    train(model, tiny_config(iterations=4, amp="bf16", channels_last=True), train_set=Patches(),
          val_set=None, run_dir=tmp_path / "run", rgb_range=255, progress=False)
    assert model._amp == ("cpu", torch.bfloat16)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fuse_refuses_what_it_cannot_fuse():
    with pytest.raises(SpeedError, match="networks spacelang builds"):
        optimise(nn.Sequential(nn.Conv2d(3, 3, 3)), fuse=True)
    with pytest.raises(SpeedError, match="without amp"):
        optimise(_derived(), fuse=True, amp="bf16")
    with pytest.raises(SpeedError, match="exclude each other"):
        optimise(_derived(), fuse=True, compile=True)
    with pytest.raises(SpeedError, match="on CPU"):
        optimise(_derived(), fuse=True, device="cuda")



_FAULTS_OF_PASSES = """
import resource, sys, torch
import spacelang
from spacelang.runtime.speed import retain_freed_memory
print(retain_freed_memory())
torch.set_num_threads(1)
net = spacelang.load(sys.argv[1], C=16).fixed().eval()
x = torch.rand(1, 3, 160, 160)
with torch.inference_mode():
    for _ in range(9):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_retaining_freed_memory_stops_repeated_passes_faulting_pages_in():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _FAULTS_OF_PASSES,
                             str(SPACES / "dlsr_derived.space")],
                            capture_output=True, text=True, check=True, timeout=300)
    applied, *faults = result.stdout.split()
    if applied != "True":
        pytest.skip("the C library is not glibc: nothing to retain through mallopt")
    first, *later = (int(n) for n in faults)
    assert first > 5000  # the first pass maps its tensors' pages in (≥ 20 MiB)
    # the later ones reuse them (the heap may still grow now and then as it settles)
    assert sorted(later)[len(later) // 2] < first / 50
