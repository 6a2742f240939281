"""Which architecture a search derives: `spacelang.nas.selection`."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spacelang
from spacelang.nas.selection import select
from tests.paths import SPACES

DLSR = spacelang.load(SPACES / "dlsr.space", C=8)
REPORT = DLSR.cost((64, 64))
NETWORK = DLSR.network
LOW, HIGH = REPORT.extreme("macs", min), REPORT.extreme("macs", max)


def _normalised(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


@st.composite
def probabilities(draw):
    out = {}
    for site in NETWORK.choice_sites:
        out[site.key] = _normalised(draw(st.lists(st.floats(0.01, 1.0), min_size=len(
            site.labels), max_size=len(site.labels))))
    for site in NETWORK.pick_sites:
        n = len(site.candidates)
        out[site.key] = _normalised(draw(st.lists(st.floats(0.01, 1.0), min_size=n,
                                                  max_size=n)))
    return out


def _argmax(p):
    out = {}
    for site in NETWORK.choice_sites:
        out[site.key] = max(range(len(p[site.key])), key=p[site.key].__getitem__)
    for site in NETWORK.pick_sites:
        top = sorted(range(len(p[site.key])), key=p[site.key].__getitem__, reverse=True)
        out[site.key] = tuple(sorted(top[:site.k]))
    return out


def _single_site_changes(decisions):
    for site in NETWORK.choice_sites:
        for i in range(len(site.labels)):
            yield {**decisions, site.key: i}


@settings(max_examples=25, deadline=None)
@given(p=probabilities(), fraction=st.floats(0.0, 1.0))
def test_the_budget_is_met_from_below_and_no_single_change_would_still_fit(p, fraction):
    budget = int(LOW + fraction * (HIGH - LOW))
    chosen = select(NETWORK, p, REPORT, "macs", budget)
    assert chosen.cost == REPORT.architecture(chosen.decisions).macs <= budget
    # the rest of the budget is spent: no dearer single-site change still fits
    for other in _single_site_changes(chosen.decisions):
        cost = REPORT.architecture(other).macs
        assert cost <= chosen.cost or cost > budget


@settings(max_examples=25, deadline=None)
@given(p=probabilities())
def test_a_budget_the_argmax_fits_exactly_keeps_it_and_argmax_ignores_budgets(p):
    argmax = _argmax(p)
    cost = REPORT.architecture(argmax).macs
    assert select(NETWORK, p, REPORT, "macs", cost).decisions == argmax
    assert select(NETWORK, p, REPORT, "macs", LOW, rule="argmax").decisions == argmax
    assert select(NETWORK, p, REPORT, "macs", None).decisions == argmax


def test_over_budget_the_site_that_loses_least_probability_gives_way():
    # r1 is sure of its dear op, r2 and r3 hesitate: r2/r3 give way first
    p = {}
    for site in NETWORK.choice_sites:
        dear = site.labels.index("conv_7x7")
        weights = [0.01] * len(site.labels)
        weights[dear] = 0.9 if site.key.endswith("r1") else 0.3
        weights[site.labels.index("conv_1x1")] = 0.05 if site.key.endswith("r1") else 0.25
        p[site.key] = _normalised(weights)
    for site in NETWORK.pick_sites:
        p[site.key] = [1 / len(site.candidates)] * len(site.candidates)
    argmax = _argmax(p)
    budget = REPORT.architecture(argmax).macs - 1
    chosen = select(NETWORK, p, REPORT, "macs", budget)
    assert chosen.lam > 0 and chosen.cost <= budget
    r1 = next(s for s in NETWORK.choice_sites if s.key.endswith("r1"))
    assert r1.labels[chosen.decisions[r1.key]] == "conv_7x7"


def test_under_budget_the_rest_goes_where_it_costs_least_probability():
    p = {}
    for site in NETWORK.choice_sites:
        weights = [0.01] * len(site.labels)
        weights[site.labels.index("conv_1x1")] = 0.5
        # r3 nearly prefers conv_3x3; r1 and r2 do not want it
        weights[site.labels.index("conv_3x3")] = 0.45 if site.key.endswith("r3") else 0.02
        p[site.key] = _normalised(weights)
    for site in NETWORK.pick_sites:
        p[site.key] = [1 / len(site.candidates)] * len(site.candidates)
    r3 = next(s for s in NETWORK.choice_sites if s.key.endswith("r3"))
    one = {**_argmax(p), r3.key: r3.labels.index("conv_3x3")}
    budget = REPORT.architecture(one).macs
    chosen = select(NETWORK, p, REPORT, "macs", budget)
    assert chosen.decisions == one and chosen.lam < 0


def test_a_budget_below_the_space_gives_its_cheapest_architecture():
    p = {site.key: [1 / len(site.labels)] * len(site.labels) for site in NETWORK.choice_sites}
    p.update({site.key: [1 / len(site.candidates)] * len(site.candidates)
              for site in NETWORK.pick_sites})
    chosen = select(NETWORK, p, REPORT, "macs", LOW // 2)
    assert chosen.cost == LOW


def test_width_and_depth_sites_are_measured_exactly(tmp_path):
    space = spacelang.loads(WIDTH_AND_EXIT, path=str(tmp_path / "w.space"))
    report = space.cost((64, 64))
    network = space.network
    p = {site.key: [1 / len(site.labels)] * len(site.labels) for site in network.choice_sites}
    p.update({site.key: [1 / len(site.candidates)] * len(site.candidates)
              for site in network.pick_sites})
    low, high = report.extreme("macs", min), report.extreme("macs", max)
    for fraction in (0.1, 0.4, 0.7, 1.0):
        budget = int(low + fraction * (high - low))
        chosen = select(network, p, report, "macs", budget)
        assert chosen.cost == report.architecture(chosen.decisions).macs <= budget
        assert not math.isnan(chosen.lam)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="derive rule"):
        select(NETWORK, {}, REPORT, "macs", 1, rule="cheapest")


WIDTH_AND_EXIT = """\
import "ops.space"

choice light = [conv_1x1, conv_3x3, conv_5x5]

network w(C = choice [4, 8, 12], scale = 2, rgb_range = 1) {
    f = conv(input, C, k=3)
    a = light(f)
    b = light(a)
    out = sum(pick 1 of [a, b])
    return pixel_shuffle(conv(out, 3 * scale * scale, k=3), scale)
}
"""


def test_a_candidate_at_probability_zero_is_never_derived():
    p = {}
    for site in NETWORK.choice_sites:
        weights = [1.0] * len(site.labels)
        weights[site.labels.index("conv_7x7")] = 0.0  # pruned: the dearest op is gone
        p[site.key] = _normalised(weights)
    for site in NETWORK.pick_sites:
        p[site.key] = [1 / len(site.candidates)] * len(site.candidates)
    chosen = select(NETWORK, p, REPORT, "macs", HIGH)
    for site in NETWORK.choice_sites:
        assert site.labels[chosen.decisions[site.key]] != "conv_7x7"
