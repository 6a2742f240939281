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
    loop bounds, a choice and a pick in one cell, and weights shared by a recursion."""
    shared = draw(st.booleans())
    nested = draw(st.booleans())
    loop_in_cell = draw(st.booleans())
    let_bounds = draw(st.booleans())
    cell_pick = draw(st.sampled_from(["none", "sum", "concat"]))
    network_pick = draw(st.booleans())
    cells = draw(st.integers(2, 3))
    width = draw(st.integers(1, 2))
    recursion = draw(st.integers(0, 2))
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
    lines += ["    }", f"    t[0] = conv(b[{last}], C, k=3)"]
    if recursion:
        lines += [f"    for j in 1..{recursion} {{",
                  "        t[j] = act(conv(t[j - 1], C, k=3) + b[1]) shares t[0]", "    }"]
    lines += [f"    return pixel_shuffle(conv(t[{recursion}], 3 * scale * scale, k=3), scale)",
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
    chosen: dict[str, str] = {}

    def flat(key: str) -> str | None:
        """A supernet key with each chosen candidate level removed; None if not chosen."""
        while ".candidates." in key:
            head, _, tail = key.partition(".candidates.")
            label, _, rest = tail.partition(".")
            if chosen.get(head) != label:
                return None
            key = f"{head}.{rest}"
        return key

    for name, module in net.body.named_modules():  # parents before the sites inside them
        if hasattr(module, "candidates") and hasattr(module, "site"):
            name = flat(name)
            if name is not None:
                chosen[name] = list(module.candidates)[decisions[module.site]]
    source = {}
    for key, value in net.body.state_dict().items():
        key = flat(key)
        if key is not None:
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


SHARED_SPACE = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3]

cell block(x: C) {
    b1 = act(light(x) + x)
    o1 = conv(b1, C, k=1)
    b2 = conv(o1, C, k=1) shares o1
    return b2
}

network shared(C = 4, scale = 2) {
    stem = conv(input, C, k=3)
    s = conv(stem, C, k=3)
    c[1] = block(s)
    for i in 2..3 {
        c[i] = conv(c[i - 1], C, k=3) shares s
    }
    return pixel_shuffle(conv(c[3], 3 * scale * scale, k=3), scale)
}
"""


def test_derivation_keeps_shared_weights():
    space = spacelang.loads(SHARED_SPACE, path="shared.space")
    decisions = {site.key: 1 for site in space.network.choice_sites}
    text = space.derive(decisions)
    assert "b2 = conv(o1, C, k=1) shares o1" in text
    assert "c[2] = conv(c[1], C, k=3) shares s" in text
    assert "c[3] = conv(c[2], C, k=3) shares s" in text
    derived = space.derived(decisions)
    assert derived.cost((32, 32)).fixed == space.cost((32, 32)).architecture(decisions)
    fixed = derived.fixed()
    assert fixed.get_submodule("s") is fixed.get_submodule("s")
    assert "c.2.weight" not in fixed.state_dict() and "s.weight" in fixed.state_dict()


NESTED_SPACE = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3, sep_conv(3)]

cell plain(x: C) {
    return act(conv(x, C, k=3)) + x
}

cell searched(x: C) {
    y = act(light(x))
    z = light(y) + x
    return z
}

cell picky(x: C) {
    a = light(x)
    b = conv(a, C, k=1)
    return sum(pick 1 of [a, b, x])
}

choice block = [plain, searched, picky, conv_3x3]

network nest(C = 4, scale = 2, cells = 2) {
    b[0] = conv(input, C, k=3)
    for i in 1..cells {
        b[i] = block(b[i - 1])
    }
    return pixel_shuffle(conv(b[cells], 3 * scale * scale, k=3), scale)
}
"""


def test_cells_as_candidates_have_nested_sites_under_their_site():
    space = _load(NESTED_SPACE)
    sites = {site.key: site for site in space.network.choice_sites}
    assert sites["b.1"].labels == ("plain", "searched", "picky", "conv_3x3")
    assert sites["b.1.searched.y"].parent == ("b.1", 1)
    assert sites["b.1.searched.z"].parent == ("b.1", 1)
    assert sites["b.2.picky.a"].parent == ("b.2", 2)
    assert [site.key for site in space.network.pick_sites] == ["b.1.picky", "b.2.picky"]
    # 4 - 2 candidates with sites + 3 · 3 (searched) + 3 (picky's choice) · 3 (its pick)
    assert space.network.architecture_count == (2 + 9 + 9) ** 2
    report = space.cost((16, 16))
    assert report.extreme("params") <= report.uniform("params") <= report.extreme("params", max)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_chosen_cell_with_sites_derives_and_computes_the_one_hot_supernet(data):
    space = _load(NESTED_SPACE)
    decisions = data.draw(architectures(space))
    derived = space.derived(decisions)
    assert derived.is_fixed
    assert derived.cost((24, 16)).fixed == space.cost((24, 16)).architecture(decisions)
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
