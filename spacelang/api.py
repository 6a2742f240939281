"""The public Python API: load a spec, then build, count or derive from it.

    space = spacelang.load("spaces/dlsr.space", C=16)
    net = space.supernet()            # torch module with α/β
    fixed = space.fixed(decisions)    # one architecture, plain module
    cost = space.cost()               # analytic params and MACs
    text = space.derive(decisions)    # a fixed `.space` file

Everything here but `supernet()` and `fixed()` runs without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import field, frozen

from spacelang import ast
from spacelang.backends.cost import CostReport, cost_report
from spacelang.checker import (
    CheckResult,
    check,
    empty_size,
    integer_parameters,
    parameter_list_span,
    partial_network,
)
from spacelang.decisions import Decisions
from spacelang.derive import derive_text
from spacelang.diagnostics import Diagnostic, SpecError, did_you_mean, error
from spacelang.ir import Network
from spacelang.limits import DEFAULT_HR, DEFAULT_LIMITS, Limits
from spacelang.parser import parse
from spacelang.printer import format_module
from spacelang.program import Program, load_program


def format_source(text: str, path: str = "<string>") -> str:
    """The canonical layout of `.space` source text; raises `SpecError`."""
    return format_module(parse(text, path))


@frozen
class Space:
    """A checked spec with one network, ready to lower, count and derive."""

    program: Program
    network: Network
    overrides: dict[str, str]
    warnings: tuple[Diagnostic, ...] = ()
    # the report at the default HR size, made when the limits were checked
    default_cost: CostReport | None = field(default=None, eq=False, repr=False)
    limits: Limits = field(default=DEFAULT_LIMITS, eq=False, repr=False)  # checked under

    @property
    def path(self) -> str:
        return self.program.root.path

    @property
    def is_fixed(self) -> bool:
        return self.network.is_fixed

    def supernet(self, *, mode: str = "darts", tau: float = 1.0, hard: bool = True,
                 partial_channels: int = 1, pruning: bool = False):
        """The network as a torch supernet; choices relaxed by softmax over α/β.

        ``partial_channels`` K > 1: each choice site runs its candidates on 1/K of its
        input's channels (`SuperNet`); `SpecError`, naming the site, where one cannot.
        ``pruning``: the supernet's pruning masks are saved in its ``state_dict``.
        """
        from spacelang.backends.torch import build_supernet

        network = self.network
        if partial_channels > 1:
            network = partial_network(self.program, network.name, self.overrides,
                                      self.limits, partial_channels)
        return build_supernet(network, mode=mode, tau=tau, hard=hard,
                              partial_channels=partial_channels, pruning=pruning)

    def fixed(self, decisions: Decisions | None = None):
        """A plain torch module: this spec if fixed, else the architecture `decisions` picks."""
        from spacelang.backends.torch import build_fixed

        if decisions is None:
            if not self.is_fixed:
                raise SpecError([error(
                    f"network `{self.network.name}` has {len(self.network.choice_sites)} "
                    f"choice and {len(self.network.pick_sites)} pick sites; give decisions "
                    "or derive it first", None)])
            return build_fixed(self.network)
        return build_fixed(self.derived(decisions).network)

    def cost(self, hr: tuple[int, int] = DEFAULT_HR) -> CostReport:
        """Params and MACs for an HR output of `hr` (w, h); `SpecError` if a value is empty."""
        if hr == DEFAULT_HR and self.default_cost is not None:
            return self.default_cost  # `check` already refused empty sizes at this size
        empty = empty_size(self.network.graph, self.network.scale, hr)
        if empty is not None:
            raise SpecError([error(*empty)], self.program.sources)
        return cost_report(self.network, hr)

    def derive(self, decisions: Decisions, header: str = "") -> str:
        """A fixed `.space` text with every choice resolved by `decisions`."""
        return derive_text(self.program, self.network, decisions, header=header)

    def derived(self, decisions: Decisions) -> Space:
        """The fixed Space that `decisions` picks (checked like any spec)."""
        text = self.derive(decisions)
        return loads(text, path=self.path)


def _single(result: CheckResult, program: Program, network: str | None,
            overrides: Mapping[str, str]) -> Network:
    networks = result.networks
    if network is not None:
        chosen = [n for n in networks if n.name == network]
        if not chosen:
            names = ", ".join(n.name for n in networks) or "none"
            raise SpecError([error(f"no network named `{network}` (networks: {names})", None)])
        definition = next(n for n in program.networks if n.name == network)
        own = integer_parameters(definition)
        foreign = [name for name in overrides if name not in own]
        if foreign:
            raise SpecError([error(
                f"--set {name}: network `{network}` has no parameter `{name}`",
                parameter_list_span(definition),
                did_you_mean(name, own) or (f"parameters of `{network}`: {', '.join(own)}" if own
                                            else f"`{network}` has no parameters"))
                for name in foreign], program.sources)
        return chosen[0]
    if not networks:
        raise SpecError([error(f"{program.root.path} defines no network", None)])
    if len(networks) > 1:
        names = ", ".join(n.name for n in networks)
        raise SpecError([error(f"{program.root.path} defines several networks ({names}); "
                               "choose one", None)])
    return networks[0]


def _overrides(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in values.items()}


def load(path: str | Path, network: str | None = None, *, limits: Limits = DEFAULT_LIMITS,
         **overrides: Any) -> Space:
    """Parse, check and elaborate a `.space` file; keyword arguments override parameters."""
    return _space(load_program(path), network, overrides, limits)


def loads(text: str, path: str = "<string>", network: str | None = None, *,
          limits: Limits = DEFAULT_LIMITS, **overrides: Any) -> Space:
    """Like `load`, from source text; imports resolve relative to `path`'s folder."""
    return _space(load_program(path, text), network, overrides, limits)


def _space(program: Program, network: str | None, overrides: Mapping[str, Any],
           limits: Limits) -> Space:
    values = _overrides(overrides)
    result, reports = _checked(program, values, limits)
    chosen = _single(result, program, network, values)
    return Space(program, chosen, values, result.warnings, reports[chosen.name], limits)


def _checked(program: Program, values: dict[str, str], limits: Limits
             ) -> tuple[CheckResult, dict[str, CostReport]]:
    """`check`, then the limits on the largest architecture's params and Multi-Adds; also
    each network's cost report at the default HR size, which that needed."""
    result = check(program, values, limits)
    problems = []
    reports = {}
    for network in result.networks:
        report = reports[network.name] = cost_report(network)
        span = next(n.name_span for n in program.networks if n.name == network.name)
        for quantity, what, flag in (("params", "parameters", "params"),
                                  ("macs", "Multi-Adds at HR 1280×720", "macs")):
            largest = report.extreme(quantity, max)
            if largest > getattr(limits, quantity):
                problems.append(error(
                    f"the largest architecture of `{network.name}` has {largest:,} {what}; at "
                    f"most {getattr(limits, quantity):,} (limit `{flag}`, --max-{flag})", span))
    if problems:
        raise SpecError(problems, program.sources)
    return result, reports


def check_file(path: str | Path, overrides: Mapping[str, Any] | None = None,
               text: str | None = None, *,
               limits: Limits = DEFAULT_LIMITS) -> tuple[Program, CheckResult]:
    """Check every network of a file; raises `SpecError`."""
    program = load_program(path, text)
    return program, _checked(program, _overrides(overrides or {}), limits)[0]


__all__ = ["Limits", "Space", "ast", "check_file", "format_source", "load", "loads", "parse"]
