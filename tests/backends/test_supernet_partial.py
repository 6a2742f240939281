"""Partial channels (PC-DARTS) in the supernet: a slice of 1/K of the channels goes
through each choice site's candidates, the rest bypasses them, then a channel shuffle."""

from __future__ import annotations

import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from spacelang.backends.torch.supernet import MixedOp, SuperNet, channel_shuffle, param_key

import spacelang
from spacelang.diagnostics import SpecError
from tests.paths import SPACES

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# `negate` changes every channel it sees; `conv_3x3` is built for whatever it is given.
SPEC = """\
op negate(x: c) {
    return zero(x) - x
}

op conv_3x3(x: c) {
    return conv(x, c, k=3, bias=false)
}

choice flip = [negate]
choice mix = [conv_3x3, negate]

network pc(C = 8, scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    y = flip(f)
    z = mix(y)
    return pixel_shuffle(conv(z, 3 * scale * scale, k=3), scale)
}
"""


def load(text: str = SPEC, **overrides) -> spacelang.Space:
    return spacelang.loads(textwrap.dedent(text), path="pc.space", **overrides)


def unshuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The inverse of `channel_shuffle`, written out channel by channel."""
    width = x.shape[1] // groups
    order = [j * groups + g for g in range(groups) for j in range(width)]
    return x[:, order]


@settings(max_examples=30, deadline=None)
@given(groups=st.integers(1, 5), width=st.integers(1, 5))
def test_channel_shuffle_interleaves_the_groups(groups, width):
    x = torch.arange(groups * width, dtype=torch.float32).view(1, -1, 1, 1).expand(2, -1, 2, 3)
    y = channel_shuffle(x, groups)
    for g in range(groups):
        for j in range(width):
            assert torch.equal(y[:, j * groups + g], x[:, g * width + j])
    assert torch.equal(unshuffle(y, groups), x)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_exactly_the_first_c_over_k_channels_go_through_the_mixed_op(k):
    net = load().supernet(partial_channels=k)
    mixed = net.body.y
    assert isinstance(mixed, MixedOp) and mixed.partial == (k > 1)
    x = torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        out = mixed(x)
    before = unshuffle(out, k)  # the channels as they were before the shuffle
    width = 8 // k
    assert torch.equal(before[:, :width], -x[:, :width])  # negated: went through
    assert torch.equal(before[:, width:], x[:, width:])  # bypassed, bit for bit


def test_candidates_are_built_for_the_slice_and_the_net_keeps_its_shape():
    space = load()
    full, partial = space.supernet(), space.supernet(partial_channels=2)
    candidate = partial.body.z.candidates["conv_3x3"].get_submodule("conv")
    assert (candidate.in_channels, candidate.out_channels) == (4, 4)
    assert full.body.z.candidates["conv_3x3"].get_submodule("conv").in_channels == 8
    # everything outside the choice sites is as wide as in the full supernet
    assert partial.body.f.weight.shape == full.body.f.weight.shape
    x = torch.rand(1, 3, 6, 7)
    assert partial(x).shape == full(x).shape == (1, 3, 12, 14)


def test_gradients_flow_through_slice_and_bypass():
    torch.manual_seed(0)
    net = load().supernet(partial_channels=2)
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    net(x).square().mean().backward()
    alpha = net.alphas[param_key("z")]
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    conv = net.body.z.candidates["conv_3x3"].get_submodule("conv")
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert net.body.f.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("mode", "hard"), [("darts", True), ("gdas", True), ("gdas", False)])
def test_partial_channels_run_on_a_shipped_space_in_every_mode(mode, hard):
    space = spacelang.load(SPACES / "dlsr.space", C=8, cells=3)
    torch.manual_seed(0)
    net = space.supernet(mode=mode, hard=hard, partial_channels=2)
    y = net(torch.rand(1, 3, 24, 24) * 255)
    assert y.shape == (1, 3, 48, 48)
    y.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.arch_parameters())


def test_the_derived_network_is_full_width_and_inherits_all_but_the_partial_candidates():
    space = load()
    net = space.supernet(partial_channels=2)
    decisions = {"y": 0, "z": 0}
    weights = net.fixed_state_dict(decisions)
    assert "z.conv.weight" not in weights  # built for 4 of the 8 channels: not inherited
    assert torch.equal(weights["f.weight"], net.body.f.weight)
    fixed = space.fixed(decisions)
    initial = fixed.state_dict()["z.conv.weight"].clone()
    kept = net.inherit_into(fixed, decisions)
    assert kept == ["z.conv.weight"]
    assert torch.equal(fixed.state_dict()["z.conv.weight"], initial)
    assert fixed.get_submodule("z.conv").in_channels == 8
    assert torch.equal(fixed.state_dict()["f.weight"], net.body.f.weight)


# --------------------------------------------------------------------------- refusals


def partial_error(text: str, k: int, **overrides) -> str:
    space = load(text, **overrides)
    with pytest.raises(SpecError) as caught:
        space.supernet(partial_channels=k)
    return caught.value.render()


def test_channels_that_k_does_not_divide_are_refused_at_the_site():
    message = partial_error(SPEC, 3)
    assert "pc.space:" in message  # located in the spec
    assert "choice site `y` cannot run on 1/3 of its channels (partial_channels: 3)" in message
    assert "8 channels, not a multiple of 3" in message


def test_a_candidate_whose_width_does_not_follow_its_input_is_refused():
    text = SPEC.replace("choice mix = [conv_3x3, negate]", "choice mix = [conv_3x3, eight]") \
        + "\nop eight(x: c) {\n    return conv(x, 8, k=1)\n}\n"
    message = partial_error(text, 2)
    assert "choice site `z`" in message
    assert "candidate `eight` gives 8 channels for an input of 4" in message


@pytest.mark.parametrize(("body", "turns"), [
    ("conv(x, c, k=3, padding=0)", "turns 8 channels (H×W) into 8 (H-2×W-2)"),
    ("conv(x, 2 * c, k=1)", "turns 8 channels (H×W) into 16 (H×W)"),
])
def test_a_candidate_that_changes_the_width_or_size_is_refused(body, turns):
    text = f"""\
    op odd(x: c) {{
        return {body}
    }}

    choice change = [odd]

    network n(C = 8, scale = 2) {{
        f = conv(input, C, k=3)
        g = conv(resize(change(f), f), C, k=1)
        return pixel_shuffle(conv(g, 3 * scale * scale, k=3), scale)
    }}
    """
    message = partial_error(text, 2)
    assert "choice site `g` cannot run on 1/2 of its channels" in message
    assert f"candidate `odd` {turns}" in message


def test_a_site_with_two_inputs_is_refused():
    text = """\
    op both(a: c, b: c) {
        return a + b
    }

    choice join = [both]

    network two(C = 8, scale = 2) {
        f = conv(input, C, k=3)
        g = join(f, f)
        return pixel_shuffle(conv(g, 3 * scale * scale, k=3), scale)
    }
    """
    assert "choice site `g` cannot run on 1/2 of its channels" in partial_error(text, 2)
    assert "it has 2 inputs" in partial_error(text, 2)


def test_a_width_choice_is_refused():
    space = spacelang.load(SPACES / "dlsr_width.space")
    with pytest.raises(SpecError, match="do not combine with the width choice `C`"):
        space.supernet(partial_channels=2)


def test_a_network_not_elaborated_for_partial_channels_is_refused():
    with pytest.raises(ValueError, match="elaborated for them"):
        SuperNet(load().network, partial_channels=2)
    with pytest.raises(ValueError, match="at least 1"):
        SuperNet(load().network, partial_channels=0)


def test_a_candidate_that_holds_sites_of_its_own_is_refused():
    text = """\
    op c1(x: c) {
        return conv(x, c, k=1)
    }

    choice inner = [c1]

    cell nest(x: C) {
        return inner(x)
    }

    choice outer = [nest, c1]

    network n(C = 8, scale = 2) {
        f = conv(input, C, k=3)
        g = outer(f)
        return pixel_shuffle(conv(g, 3 * scale * scale, k=3), scale)
    }
    """
    message = partial_error(text, 2)
    assert "choice site `g` cannot run on 1/2 of its channels" in message
    assert "candidate `nest` holds choice or pick sites of its own" in message
