"""In-place steps of `GraphModule` compute exactly what out-of-place steps compute."""

from __future__ import annotations

import pytest
import torch
from spacelang.backends.torch import graph as graph_module
from spacelang.backends.torch.graph import GraphModule

import spacelang
from tests.paths import SPACES

#: Supernets that take a minute each on two cores: checked by `-m slow`.
HEAVY = {"darts_cell.space", "imdn_cell.space", "dlsr_depth.space", "dlsr_width.space"}
SPECS = [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
         for name in sorted(p.name for p in SPACES.glob("*.space") if p.name != "ops.space")]


def _out_of_place(monkeypatch: pytest.MonkeyPatch, build):
    with monkeypatch.context() as patch:
        patch.setattr(graph_module, "in_place_inputs", lambda *a, **k: {})
        return build()


def _run(net: torch.nn.Module, x: torch.Tensor, grad: bool, seed: int = 0):
    torch.manual_seed(seed)  # the same GDAS samples in both networks
    net.zero_grad(set_to_none=True)
    if not grad:
        with torch.no_grad():
            return net(x), {}
    out = net(x)
    out.square().mean().backward()
    return out.detach(), {k: p.grad for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", SPECS)
def test_in_place_steps_change_no_value_and_no_gradient(monkeypatch, name):
    space = spacelang.load(SPACES / name)
    if "C" in space.network.params:  # the least of 8, 16 at which the spec checks
        for width in (8, 16):
            try:
                space = spacelang.load(SPACES / name, C=width)
                break
            except spacelang.SpecError:
                continue
    fixed = space.network.is_fixed
    modes = [None] if fixed else ["darts", "gdas"]
    for mode in modes:
        def build(mode=mode):
            torch.manual_seed(1)
            return space.fixed() if fixed else space.supernet(mode=mode)
        fast, plain = build(), _out_of_place(monkeypatch, build)
        plain.load_state_dict(fast.state_dict())
        x = torch.rand(1, space.network.in_channels, 24, 24) * space.network.rgb_range
        before = x.clone()
        for grad in (False, True):
            out_fast, grads_fast = _run(fast, x, grad)
            out_plain, grads_plain = _run(plain, x, grad)
            assert torch.equal(x, before), "the network's input was written"
            assert torch.equal(out_fast, out_plain)
            assert grads_fast.keys() == grads_plain.keys()
            for key, value in grads_fast.items():
                assert torch.equal(value, grads_plain[key]), key


def test_steps_run_in_place_where_their_input_dies():
    """DLSR's activations and residual adds write into the conv outputs they consume."""
    net: GraphModule = spacelang.load(SPACES / "dlsr_derived.space").fixed()
    def in_place(run) -> bool:
        return getattr(run, "__qualname__", "").startswith("_in_place_step")

    with_grad = sum(in_place(run) for _, run, *_ in net._steps)
    without = sum(in_place(run) for _, _, run, *_ in net._steps)
    # per cell: 7 lrelu, 3 residual adds, 2 sep_conv relus (after a conv), ESA's sigmoid
    assert with_grad >= 6 * 13
    assert without > with_grad  # and without gradients, ESA's product too


def test_every_in_place_primitive_has_a_torch_form():
    from spacelang.backends.inplace import IN_PLACE_OPS
    from spacelang.backends.torch.ops import INPLACE

    assert set(INPLACE) == set(IN_PLACE_OPS)


@pytest.mark.parametrize("name", ["dlsr_derived.space", "imdn.space", "rfdn.space"])
def test_the_emitted_module_trains_like_the_out_of_place_network(monkeypatch, tmp_path, name):
    import importlib.util

    from spacelang.backends.emit import emit_python

    space = spacelang.load(SPACES / name, C=16)
    plain = _out_of_place(monkeypatch, space.fixed)
    path = tmp_path / "emitted.py"
    path.write_text(emit_python(space.network), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("emitted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    emitted = module.build()
    emitted.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 24, 24) * space.network.rgb_range
    for grad in (False, True):
        out_emitted, grads_emitted = _run(emitted, x, grad)
        out_plain, grads_plain = _run(plain, x, grad)
        assert torch.equal(out_emitted, out_plain)
        for key, value in grads_plain.items():
            assert torch.equal(grads_emitted[key], value), key
