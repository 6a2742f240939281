"""The primitive registry against its backends: completeness, and adding a primitive.

Adding a primitive is one record in `PRIMITIVES` plus one entry per backend
table; the toy primitives below go through parse, check, cost, torch lowering
(fixed and supernet), derivation and source emission with nothing else changed.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
import spacelang.backends
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from spacelang.backends.emit import EMITTERS, emit_python
from spacelang.backends.torch.ops import LOWERINGS
from thop import profile
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import spacelang
from spacelang.ir import INPUT
from spacelang.primitives import (
    BACKENDS,
    PRIMITIVES,
    Cost,
    Extent,
    ParamSpec,
    Primitive,
    ShapeError,
    TensorInfo,
    coverage_errors,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _import_every_backend() -> None:
    """Import every module under spacelang.backends, so every backend table exists."""
    for info in pkgutil.walk_packages(spacelang.backends.__path__, "spacelang.backends."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:  # an optional third-party dependency
            if (exc.name or "").startswith("spacelang"):
                raise


def test_every_backend_implements_exactly_the_primitives():
    _import_every_backend()
    assert {"torch", "emit"} <= set(BACKENDS)
    assert coverage_errors() == []
    for table in BACKENDS.values():
        assert set(table) == set(PRIMITIVES), table.backend


def test_a_table_refuses_unknown_and_duplicate_entries():
    with pytest.raises(KeyError, match="no such primitive"):
        LOWERINGS.register("no_such_op")(lambda args, x: x)
    with pytest.raises(ValueError, match="twice"):
        EMITTERS.register("relu")(lambda args, xs: xs[0])
    with pytest.raises(NotImplementedError, match="torch backend has no entry"):
        LOWERINGS["no_such_op"]
    assert coverage_errors() == []


# -- adding a primitive: one record and one entry per backend

def _scale_cost(args: dict[str, Any], inputs: list[Extent], output: Extent) -> Cost:
    return Cost(output.channels, output.elements, output.elements)


TOY_POWER = Primitive(
    name="toy_power", params=(ParamSpec("x", "tensor"),
                              ParamSpec("power", "int", 2, False, minimum=1)),
    infer=lambda inputs, args: [inputs[0]],
    cost=lambda args, inputs, output: Cost(), doc="x to an integer power")
TOY_SCALE = Primitive(
    name="toy_scale", params=(ParamSpec("x", "tensor"),), infer=lambda inputs, args: [inputs[0]],
    cost=_scale_cost, has_weights=True, doc="a learned scale per channel")

TOY_ENTRIES = {
    "toy_power": {"torch": lambda args, x: x ** args["power"],
                  "emit": lambda args, xs: f"{xs[0]} ** {args['power']}"},
    "toy_scale": {
        "torch": lambda args, c_in, c_out: nn.Conv2d(c_in, c_out, 1, groups=c_in, bias=False),
        "emit": lambda args, c_in, c_out: f"nn.Conv2d({c_in}, {c_out}, 1, groups={c_in}, "
                                          "bias=False)"},
}


@contextmanager
def registered(record: Primitive, entries: dict[str, Any]) -> Iterator[None]:
    """`record` in the registry and `entries[backend]` in each named backend table."""
    PRIMITIVES[record.name] = record
    added = []
    try:
        for backend, entry in entries.items():
            BACKENDS[backend].register(record.name)(entry)
            added.append(backend)
        yield
    finally:
        for backend in added:
            BACKENDS[backend].unregister(record.name)
        del PRIMITIVES[record.name]


@pytest.fixture
def toys() -> Iterator[None]:
    with registered(TOY_POWER, TOY_ENTRIES["toy_power"]), \
            registered(TOY_SCALE, TOY_ENTRIES["toy_scale"]):
        yield
    assert "toy_power" not in PRIMITIVES and coverage_errors() == []


def test_a_record_without_backend_entries_is_flagged():
    _import_every_backend()
    with registered(TOY_POWER, {"torch": TOY_ENTRIES["toy_power"]["torch"]}):
        errors = coverage_errors()
        assert errors == ["the emit backend has no entry for toy_power"]
        assert EMITTERS.missing() == ["toy_power"] and LOWERINGS.missing() == []
    with registered(TOY_POWER, TOY_ENTRIES["toy_power"]):
        assert coverage_errors() == []


TOY_SPACE = """
choice act = [toy_power, relu]

cell block(x: C) {
    y = act(toy_scale(conv(x, C, k=3)))
    return y + x
}

network toy(C = 4, scale = 2) {
    s = conv(input, C, k=3)
    b1 = block(s)
    b2 = toy_scale(toy_power(b1, power=3))
    return pixel_shuffle(conv(b2, 3 * scale * scale, k=3), scale)
}
"""


def _measure(net: nn.Module, x: torch.Tensor) -> Cost:
    params = sum(p.numel() for p in net.parameters())
    macs, _ = profile(copy.deepcopy(net), inputs=(x,), verbose=False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return Cost(params, int(macs), counter.get_total_flops() // 2)


def test_a_new_primitive_is_checked_costed_lowered_and_emitted(toys):
    space = spacelang.loads(textwrap.dedent(TOY_SPACE), path="toy.space", C=4)
    ops = {node.op for node in space.network.graph.walk()}
    assert {"toy_power", "toy_scale"} <= ops
    power = next(n for n in space.network.graph.nodes if n.op == "toy_power")
    assert power.args == {"power": 3}

    decisions = {site.key: 0 for site in space.network.choice_sites}
    hr = (24, 16)
    x = torch.rand(1, 3, 8, 12) * 255
    fixed = space.fixed(decisions)
    assert {"b1.y.toy_scale.weight", "b2.weight"} <= set(fixed.state_dict())
    assert space.cost(hr).architecture(decisions) == _measure(fixed, x)

    supernet = space.supernet()
    assert supernet(x).shape == (1, 3, 16, 24)

    assert "toy_power(b1, power=3)" in space.derive(decisions)
    derived = space.derived(decisions)
    namespace: dict = {}
    exec(compile(emit_python(derived.network), "<emitted>", "exec"), namespace)
    emitted = namespace["build"]()
    retrained = derived.fixed()
    emitted.load_state_dict(retrained.state_dict())
    with torch.no_grad():
        assert torch.equal(emitted(x), retrained(x))


def test_a_new_primitive_has_its_signature_and_rules_checked(toys, spec_error):
    assert "`toy_scale` takes" in spec_error("""
        network t(C = 4, scale = 1) {
            return toy_scale(input, 2)
        }
        """)
    message = spec_error("""
        network t(C = 4, scale = 1) {
            return toy_power(input, power=0)
        }
        """)
    assert "t.space:3:35: error: `power` of `toy_power` must be positive, got 0" in message


def test_argument_ranges_are_stated_once_in_the_record(toys, spec_error):
    """The checker reads each argument's range from the record: change the record, and the
    located error changes with it (no second copy of the rule to update)."""
    spec = """
        network t(C = 4, scale = 1) {
            return toy_power(input, power=0)
        }
        """
    with swapped_param("toy_power", "power", minimum=0):
        assert spacelang.loads(textwrap.dedent(spec), path="t.space").is_fixed
    with swapped_param("toy_power", "power", minimum=2):
        assert "`power` of `toy_power` must be at least 2, got 0" in spec_error(spec)
    assert all(p.minimum in (0, 1) for r in PRIMITIVES.values() for p in r.params)
    assert {(r.name, p.name) for r in PRIMITIVES.values() for p in r.params if p.window} >= {
        ("conv", "k"), ("conv", "stride"), ("conv", "dilation"), ("conv", "padding"),
        ("maxpool", "k"), ("maxpool", "padding")}


@contextmanager
def swapped_param(primitive: str, name: str, **changes: Any) -> Iterator[None]:
    record = PRIMITIVES[primitive]
    params = tuple(attrs.evolve(p, **changes) if p.name == name else p for p in record.params)
    PRIMITIVES[primitive] = attrs.evolve(record, params=params)
    try:
        yield
    finally:
        PRIMITIVES[primitive] = record


# -- each record's rules agree with what its torch lowering does

@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["conv", "dwconv", "maxpool"]), st.integers(1, 4),
       st.integers(1, 7), st.integers(1, 3), st.integers(1, 2), st.booleans(),
       st.one_of(st.none(), st.integers(0, 3)), st.integers(7, 12), st.integers(7, 12),
       st.booleans())
def test_window_rules_agree_with_torch(op, groups, k, stride, dilation, bias, padding,
                                       height, width, default_stride):
    channels, out = 2 * groups, 4 * groups
    args: dict[str, Any] = {"k": k, "stride": stride, "padding": padding}
    if op == "conv":
        args.update(out=out, dilation=dilation, groups=groups, bias=bias)
    elif op == "dwconv":
        args.update(dilation=dilation, bias=bias)
    else:
        args["padding"] = padding or 0
        if default_stride:
            args["stride"] = None
    record = PRIMITIVES[op]
    try:
        resolved, (output,) = record.apply([TensorInfo(channels, INPUT)], args)
    except ShapeError:
        assume(False)  # an even kernel with 'same' padding, or too much max pool padding
    out_height, out_width = output.spatial.size(height, width)
    assume(out_height > 0 and out_width > 0)
    x = torch.rand(1, channels, height, width)
    if record.module:
        module = LOWERINGS[op](resolved, channels, output.channels)
        params = sum(p.numel() for p in module.parameters())
    else:
        module = lambda t: LOWERINGS[op](resolved, t)  # noqa: E731
        params = 0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        y = module(x)
    assert y.shape == (1, output.channels, out_height, out_width)
    cost = record.cost(resolved, [Extent(channels, height, width)],
                       Extent(output.channels, out_height, out_width))
    assert (cost.params, cost.conv_macs) == (params, counter.get_total_flops() // 2)


def test_derived_facts_are_resolved_once_in_the_ir(load_text):
    network = load_text("""
        network t(C = 8, scale = 1) {
            a = conv(input, C, k=5, dilation=2)
            b = dwconv(a, k=3)
            c = maxpool(b, 3, padding=1)
            d = prelu(c, per_channel=true)
            return conv(resize(d, a), 3, k=3, padding=1)
        }
        """).network
    args = {node.op: node.args for node in network.graph.nodes if node.op != "input"}
    assert args["conv"]["padding"] == 1  # the last conv: padding given
    first = next(n for n in network.graph.nodes if n.op == "conv")
    assert first.args["padding"] == 4  # 'same': dilation · (k − 1) / 2
    assert args["dwconv"]["groups"] == 8 and args["dwconv"]["padding"] == 1
    assert args["maxpool"]["stride"] == 3
    assert args["prelu"]["slopes"] == 8


@pytest.mark.parametrize(("call", "where", "message"), [
    ("conv(input, 8, padding=-1)", "3:40", "`padding` of `conv` must be non-negative, got -1"),
    ("conv(input, 8, k=2)", "3:17", "'same' padding needs an odd kernel, got k=2"),
    ("maxpool(input, 3, stride=0)", "3:42", "`stride` of `maxpool` must be positive, got 0"),
    ("maxpool(input, 3, padding=2)", "3:17",
     "max pool padding must be between 0 and half the kernel"),
])
def test_arguments_rules_report_at_the_call(spec_error, call, where, message):
    rendered = spec_error(f"""
        network t(scale = 1) {{
            return conv({call}, 3, k=1)
        }}
        """)
    assert f"t.space:{where}: error: {message}" in rendered
