"""SuperNet.fixed_state_dict / inherit_into: the derived network with the supernet's
weights computes what the supernet computes when α/β are one-hot on the same decisions."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spacelang
from tests.one_hot import set_one_hot

SPEC = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3, sep_conv(3), dil_conv(3)]

cell block(x: C) {
    r = lrelu(light(x) + x)
    return conv(r, C, k=1)
}

network net(C = 4, scale = 2, rgb_range = 1) {
    s = conv(input, C, k=3)
    b1 = block(s)
    b2 = block(b1)
    a = sum(pick 1 of [s, b1, b2])
    return pixel_shuffle(conv(a + s, 3 * scale * scale, k=3), scale)
}
"""


@pytest.fixture(scope="module")
def space(spaces_dir):
    return spacelang.loads(SPEC, path=str(spaces_dir / "inherit.space"))


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_inherited_network_matches_the_one_hot_supernet(space, data):
    net = space.supernet()
    decisions = {}
    for site in net.network.choice_sites:
        decisions[site.key] = data.draw(st.integers(0, len(site.labels) - 1), label=site.key)
    for site in net.network.pick_sites:
        chosen = data.draw(st.sets(st.integers(0, len(site.candidates) - 1),
                                   min_size=site.k, max_size=site.k), label=site.key)
        decisions[site.key] = tuple(sorted(chosen))
    set_one_hot(net, decisions)
    assert net.decisions() == decisions
    fixed = space.fixed(decisions)
    kept = net.inherit_into(fixed)
    assert kept == []  # every derived weight has a supernet source of its shape
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), net(x), rtol=1e-5, atol=1e-6)


def test_fixed_state_dict_takes_only_the_chosen_candidate(space):
    net = space.supernet()
    decisions = net.decisions()
    weights = net.fixed_state_dict(decisions)
    # every weight of the derived network has its source (values a pick leaves unread
    # are not in the derived network, but their supernet weights may be)
    assert set(space.fixed(decisions).state_dict()) <= set(weights)
    assert not any("candidates" in key or key.startswith(("alphas", "betas")) for key in weights)


CONCAT = """\
import "ops.space"

network net(C = 4, scale = 2, rgb_range = 1) {
    s = conv(input, C, k=3)
    b1 = lrelu(conv_3x3(s))
    b2 = lrelu(conv_3x3(b1))
    a = conv(concat(pick 2 of [s, b1, b2]), C, k=1)
    return pixel_shuffle(conv(a + s, 3 * scale * scale, k=3), scale)
}
"""


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), mode=st.sampled_from(["darts", "gdas"]))
def test_fusion_conv_is_sliced_to_the_chosen_inputs(spaces_dir, seed, mode):
    """The derived net with inherited weights computes the supernet with the unchosen
    inputs of the concatenating pick left out (the chosen keep their factors)."""
    space = spacelang.loads(CONCAT, path=str(spaces_dir / "concat.space"))
    torch.manual_seed(seed)
    net = space.supernet(mode=mode)
    with torch.no_grad():
        for beta in net.betas.values():
            beta.normal_()
    decisions = net.decisions()
    (site,) = net.network.pick_sites
    fixed = space.fixed(decisions)
    assert net.inherit_into(fixed) == []
    kept = net.pick_scales(site.key).detach().clone()
    kept[[i for i in range(3) if i not in decisions[site.key]]] = 0.0
    net.site_weights = lambda key, pick=False: kept  # the supernet without the unchosen
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(fixed(x), net(x), rtol=1e-5, atol=1e-6)
