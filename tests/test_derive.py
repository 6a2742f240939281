"""Derivation (spacelang/derive.py): for every spec `check` accepts and every
decision, the derived text checks, is fixed, and computes what the supernet
computes with one-hot architecture weights."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spacelang
from spacelang.strategies import architectures
from tests.one_hot import set_one_hot
from tests.paths import SPACES


@st.composite
def spaces(draw) -> str:
    """Specs with choices in nested cells, loops inside cells with choices, `let`
    loop bounds, and a choice and a pick in one cell."""
    shared = draw(st.booleans())
    nested = draw(st.booleans())
    loop_in_cell = draw(st.booleans())
    let_bounds = draw(st.booleans())
    cell_pick = draw(st.sampled_from(["none", "sum", "concat"]))
    network_pick = draw(st.booleans())
    cells = draw(st.integers(2, 3))
    width = draw(st.integers(1, 2))
    shares = " shares light" if shared else ""
    lines = ['import "ops.space"', "",
             "choice light = [conv_1x1, conv_3x3, sep_conv(3)]", "",
             f"cell inner(x: C){shares} {{", "    y = light(x)", "    return act(y) + x", "}", "",
             f"cell outer(x: C, n = {width}){shares} {{",
             "    a = inner(x)" if nested else "    a = light(x)"]
    members = ["a"]
    if loop_in_cell:
        bound = "n"
        if let_bounds:
            lines.append("    m = n + 0")
            bound = "m"
        lines += [f"    for i in 1..{bound} {{", "        h[i] = light(a)", "    }"]
        members = [f"h[1..{bound}]", "a"]
    candidates = ", ".join([*members, "x"])
    if cell_pick == "sum":
        lines.append(f"    z = sum(pick 1 of [{candidates}])")
    elif cell_pick == "concat":
        lines.append(f"    z = conv(concat(pick 2 of [{candidates}]), C, k=1)")
    else:
        lines.append("    z = a + x")
    lines += ["    return z", "}", "",
              f"network gen(C = 4, scale = 2, cells = {cells}) {{",
              "    s = conv(input, C, k=3)", "    b[1] = outer(s)"]
    last = "cells"
    if let_bounds:
        lines.append("    last = cells * 1")
        last = "last"
    lines.append(f"    for i in 2..{last} {{")
    if network_pick:
        lines += ["        x[i] = conv(concat(pick 1 of [b[1..i - 1]]), C, k=1)",
                  "        b[i] = outer(x[i])"]
    else:
        lines.append("        b[i] = outer(b[i - 1])")
    lines += ["    }", f"    return pixel_shuffle(conv(b[{last}], 3 * scale * scale, k=3), scale)",
              "}"]
    return "\n".join(lines) + "\n"


def _load(text: str):
    return spacelang.loads(text, path=str(SPACES / "generated.space"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=spaces())
def test_derive_never_fails_on_a_checked_spec_and_the_derived_text_checks(data, text):
    space = _load(text)
    decisions = data.draw(architectures(space))
    derived = _load(space.derive(decisions))
    assert derived.is_fixed
    # every site went somewhere: the derived network has the chosen candidates' cost
    assert derived.cost().base == space.cost().architecture(decisions)


_CELL_PICKS = """import "ops.space"

cell mix(x: C) {
    return sum(pick 1 of [x, relu(x)])
}

network n(C = 4, scale = 1) {
    a = mix(input)
    b = mix(a)
    return conv(b, 3, k=3)
}
"""


def test_per_instance_pick_sites_in_cells():
    """A pick inside a cell is a site per instance, as in the supernet."""
    space = _load(_CELL_PICKS)
    assert [site.key for site in space.network.pick_sites] == ["a", "b"]
    assert [site.instance for site in space.network.pick_sites] == ["a", "b"]
    assert space.network.architecture_count == 4
    derived = space.derive({"a": (0,), "b": (1,)})
    assert "pick" not in derived
    assert "sum(relu(x))" in derived and "sum(x)" in derived
    assert _load(derived).is_fixed


torch = pytest.importorskip("torch")


@settings(max_examples=5, deadline=None)
@given(text=spaces() | st.just(_CELL_PICKS))
def test_the_supernet_has_the_sites_check_reports(text):
    space = _load(text)
    net = space.supernet()
    assert len(net.alphas) == len(space.network.choice_sites)
    assert len(net.betas) == len(space.network.pick_sites)


def _inherit(fixed, net, decisions) -> None:
    """The supernet's weights in the derived network: each choice site's chosen
    candidate, and the conv after a concatenating pick sliced to the kept inputs
    (scaled by their β weight, as the supernet scales them)."""
    chosen = {}
    for name, module in net.body.named_modules():
        if hasattr(module, "candidates") and hasattr(module, "site"):
            chosen[name] = list(module.candidates)[decisions[module.site]]
    source = {}
    for key, value in net.body.state_dict().items():
        head, marker, tail = key.partition(".candidates.")
        if marker:
            label, _, rest = tail.partition(".")
            if chosen.get(head) != label:
                continue
            key = f"{head}.{rest}"
        source[key] = value
    nodes = net.network.graph.nodes
    for node in nodes:
        if node.op != "pick" or node.aggregate != "concat":
            continue
        width = node.channels // node.k
        weights = net.site_weights(node.site, pick=True).detach()
        for consumer in (n for n in nodes if node.id in n.inputs):
            weight = source[f"{consumer.path}.weight"]
            blocks = [weight[:, i * width:(i + 1) * width] * weights[i]
                      for i in decisions[node.site]]
            source[f"{consumer.path}.weight"] = torch.cat(blocks, dim=1)
    state = fixed.state_dict()
    assert set(state) <= set(source)
    with torch.no_grad():
        for key, value in state.items():
            assert source[key].shape == value.shape, key
            value.copy_(source[key])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), text=spaces())
def test_one_hot_supernet_equals_the_derived_network_with_inherited_weights(data, text):
    space = _load(text)
    decisions = data.draw(architectures(space))
    torch.manual_seed(0)
    net = space.supernet()
    set_one_hot(net, decisions)
    fixed = space.fixed(decisions)
    _inherit(fixed, net, decisions)
    x = torch.rand(1, 3, 6, 5)
    net.eval()
    fixed.eval()
    with torch.no_grad():
        assert torch.allclose(net(x), fixed(x), atol=1e-5)
