"""Hypothesis strategies over a search space, for property tests of your own.

    from hypothesis import given
    import spacelang
    from spacelang.strategies import architectures

    space = spacelang.load("spaces/dlsr.space", C=16)

    @given(architectures(space))
    def test_cost_is_positive(decisions):
        assert space.cost().architecture(decisions).params > 0

A drawn architecture maps every choice site key (a width site too) to a candidate
index and every pick site key to a sorted tuple of `k` distinct candidate indices: the form
`spacelang.decisions.normalize` returns, accepted by `Space.fixed`,
`Space.derive`, `Space.derived` and `CostReport.architecture`. Hypothesis
shrinks towards the first candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

if TYPE_CHECKING:
    from spacelang.api import Space
    from spacelang.ir import Network


def _network(space: Space | Network) -> Network:
    return getattr(space, "network", space)


def _sorted_tuple(values: list[int]) -> tuple[int, ...]:
    return tuple(sorted(values))


def architectures(space: Space | Network) -> st.SearchStrategy[dict[str, Any]]:
    """Valid decisions for every choice and pick site of `space` (a Space or a Network).

    A fixed network has exactly one architecture, the empty dict.
    """
    network = _network(space)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for site in network.choice_sites:
        fields[site.key] = st.integers(0, len(site.labels) - 1)
    for site in network.pick_sites:
        fields[site.key] = st.lists(
            st.integers(0, len(site.candidates) - 1),
            min_size=site.k, max_size=site.k, unique=True,
        ).map(_sorted_tuple)
    return st.fixed_dictionaries(fields)


__all__ = ["architectures"]
