"""Setting a supernet's architecture weights to one architecture, for equivalence tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from spacelang.backends.torch.supernet import param_key


def set_one_hot(net: Any, decisions: Mapping[str, Any]) -> None:
    """α one-hot and β k-hot at `decisions`: the supernet computes that one architecture."""
    with torch.no_grad():
        for site in net.network.choice_sites:
            alpha = net.alphas[param_key(site.key)]
            alpha.fill_(-1e4)
            alpha[decisions[site.key]] = 0.0
        for site in net.network.pick_sites:
            beta = net.betas[param_key(site.key)]
            beta.fill_(-1e4)
            beta[list(decisions[site.key])] = 0.0
