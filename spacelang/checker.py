"""Checking and elaboration: a `Program` → one IR `Network` per network.

Two passes. `resolve` checks each definition on its own (names, duplicates,
use before definition, cycles, arity, unused values). `elaborate` instantiates
a network with concrete parameters, inlines its ops and cells, and infers the
channel count and spatial size of every value.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import define, evolve, field, frozen

from spacelang import ast
from spacelang.constants import (
    ConstantError,
    arith,
    describe,
    evaluate,
    is_number_expr,
    require_int,
)
from spacelang.diagnostics import Diagnostic, SpecError, did_you_mean, error, warning
from spacelang.ir import (
    CONCAT_PICK_READER,
    INPUT,
    CellInstance,
    ChoiceSite,
    Graph,
    Instance,
    Network,
    Node,
    PickRun,
    PickSite,
    Run,
    live_nodes,
)
from spacelang.limits import DEFAULT_HR, DEFAULT_LIMITS, MAX_DEPTH, Limits, depth_errors
from spacelang.naming import (
    candidate_label,
    choice_site_base,
    entity_calls,
    entity_paths,
    flatten,
    holds_sites,
    join,
    module_name,
    pick_site_base,
    site_key,
    target_path,
)
from spacelang.parser import paused_gc
from spacelang.primitives import (
    BINARY_OPERATORS,
    PRIMITIVES,
    SCALAR_OPERATOR,
    ParamSpec,
    Primitive,
    ShapeError,
    TensorInfo,
)
from spacelang.printer import format_expr
from spacelang.program import Program

RESERVED = {"input"}
RGB_RANGE = "rgb_range"
DEFAULT_IN_CHANNELS = 3


class _Failed(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def _fail(message: str, span: ast.Span, hint: str | None = None):
    raise _Failed(error(message, span, hint))


@frozen
class CheckResult:
    networks: tuple[Network, ...]
    warnings: tuple[Diagnostic, ...]


def check(program: Program, overrides: dict[str, str] | None = None,
          limits: Limits = DEFAULT_LIMITS) -> CheckResult:
    """Resolve and elaborate every network of `program.root`; raises `SpecError`."""
    with paused_gc():
        return _check(program, overrides, limits)


def _check(program: Program, overrides: dict[str, str] | None, limits: Limits) -> CheckResult:
    deep = [d for module in program.modules for d in depth_errors(module)]
    if deep:
        raise SpecError(deep, program.sources)
    problems, warnings = resolve(program)
    problems = _misplaced_widths(program) + problems
    if problems:
        raise SpecError(problems + warnings, program.sources)
    networks = []
    overrides = dict(overrides or {})
    problems.extend(_check_overrides(program, overrides))
    if problems:
        raise SpecError(problems, program.sources)
    for network in program.networks:
        try:
            networks.append(_network(program, network, overrides, limits, warnings))
        except (_Failed, ConstantError) as failure:
            problems.append(failure.diagnostic)
    if problems:
        raise SpecError(problems + warnings, program.sources)
    return CheckResult(tuple(networks), tuple(warnings))


def partial_network(program: Program, name: str, overrides: dict[str, str] | None,
                    limits: Limits, partial_channels: int) -> Network:
    """Network `name` of a checked `program`, elaborated again with each choice node's
    candidates also built for the first 1/`partial_channels` of its input's channels
    (`Node.partial`, PC-DARTS' partial channel connections).

    A site qualifies when it has one input whose channels `partial_channels` divides and
    every candidate keeps its input's channels and size at full width and, rebuilt for
    the slice, gives the slice's width: then the channels that bypass the candidates fit
    beside their output. Raises `SpecError` at the first site that does not, naming it;
    a width choice does not combine with partial channels.
    """
    definition = next(n for n in program.networks if n.name == name)
    try:
        with paused_gc():
            return _network(program, definition, dict(overrides or {}), limits, [],
                            partial_channels=partial_channels)
    except (_Failed, ConstantError) as failure:
        raise SpecError([failure.diagnostic], program.sources) from None


def parameter_list_span(network: ast.NetworkDef) -> ast.Span:
    """Where a network's parameters are written (its name when it has none): the place an
    error about a `--set` name that is not among them points at."""
    if not network.params:
        return network.name_span
    first, last = network.params[0].span, network.params[-1].span
    return ast.Span(first.path, first.line, first.column, last.end_line, last.end_column)


def integer_parameters(network: ast.NetworkDef) -> list[str]:
    """The names `--set` may override in `network`."""
    return [p.name for p in network.params if isinstance(p, ast.IntParam)]


def _misplaced_widths(program: Program) -> list[Diagnostic]:
    """A width choice (`C = choice [...]`) is a network parameter only."""
    return [error(f"`{param.name} = choice [...]`: only a network's parameter can be a "
                  "width choice", param.span,
                  f"make `{param.name}` a parameter of the network and pass it in")
            for module in program.modules for item in module.items
            if isinstance(item, (ast.OpDef, ast.CellDef))
            for param in item.params if isinstance(param, ast.IntParam) and param.choices]


def _network(program: Program, definition: ast.NetworkDef, overrides: dict[str, str],
             limits: Limits, warnings: list[Diagnostic], partial_channels: int = 1
             ) -> Network:
    """Elaborate one network; with a width choice, once per value (see `_width`)."""
    widths = [p for p in definition.params
              if isinstance(p, ast.IntParam) and p.choices and p.name not in overrides]
    if len(widths) > 1:
        _fail(f"a network searches at most one width; `{widths[0].name}` is one already",
              widths[1].span, f"fix `{widths[1].name}` or derive it from `{widths[0].name}`")
    if widths and partial_channels > 1:
        _fail(f"partial channels (partial_channels: {partial_channels}) do not combine with "
              f"the width choice `{widths[0].name}`: the supernet masks every layer's "
              "channels by width, which a slice through the candidates would not follow",
              widths[0].span, f"fix the width, e.g. --set {widths[0].name}=...")
    if not widths:
        elaborator = _Elaborator(program, limits, partial_channels)
        network = elaborator.network(definition, overrides)
        warnings.extend(elaborator.warnings)
        return network
    param = widths[0]
    variants = []
    for index in range(len(param.choices)):
        elaborator = _Elaborator(program, limits)
        variants.append(elaborator.network(definition, overrides, width=(param.name, index)))
        if index == 0:
            warnings.extend(elaborator.warnings)
    return _width(param, variants)


def _width(param: ast.IntParam, variants: list[Network]) -> Network:
    """The widest variant, with the width site first among its sites and every variant.

    The values must differ, and change only channel counts, never more in a narrower
    variant (the supernet masks the widest's channels down to each value's).
    """
    values = tuple(v.params[param.name] for v in variants)
    seen: set[int] = set()
    for value, expr in zip(values, param.choices, strict=True):
        if value in seen:
            _fail(f"width `{param.name}` lists {value} twice", expr.span)
        seen.add(value)
    widest_index = values.index(max(values))
    widest = variants[widest_index]
    keys = {s.key for s in widest.choice_sites} | {s.key for s in widest.pick_sites}
    if param.name in keys:
        _fail(f"width `{param.name}` has the key of a site of the network; rename the "
              "parameter", param.span)
    wide_nodes = list(widest.graph.walk())
    for value, variant in zip(values, variants, strict=True):
        nodes = list(variant.graph.walk())
        same = (len(nodes) == len(wide_nodes)
                and all(a.op == b.op and a.inputs == b.inputs and a.path == b.path
                        for a, b in zip(nodes, wide_nodes, strict=True))
                and variant.choice_sites == widest.choice_sites
                and variant.pick_sites == widest.pick_sites)
        if not same:
            _fail(f"width `{param.name}` must change channel counts only, but the network "
                  f"at {param.name} = {value} has other layers or sites than at "
                  f"{param.name} = {max(values)}", param.span)
        for a, b in zip(nodes, wide_nodes, strict=True):
            if a.channels > b.channels:
                _fail(f"`{a.path or a.op}` has {a.channels} channels at {param.name} = "
                      f"{value} but {b.channels} at {param.name} = {max(values)}; a width "
                      "must not shrink a layer as it grows", param.span)
    site = ChoiceSite(param.name, "width", tuple(str(v) for v in values), True, (),
                      span=param.span, values=values)
    variants = [evolve(v, choice_sites=(site, *v.choice_sites)) for v in variants]
    return evolve(variants[widest_index], variants=tuple(variants))


def _check_overrides(program: Program, overrides: dict[str, str]) -> list[Diagnostic]:
    problems = []
    known = {name for n in program.networks for name in integer_parameters(n)}
    for name, value in overrides.items():
        if name not in known:
            where = ", ".join(f"`{n.name}`" for n in program.networks) or "this file"
            span = parameter_list_span(program.networks[0]) if program.networks else None
            hint = did_you_mean(name, known) or (
                f"parameters: {', '.join(sorted(known))}" if known else None)
            problems.append(error(f"--set {name}: no network in {where} has a parameter "
                                  f"`{name}`", span, hint))
            continue
        if override_value(value) is None:
            span = next(p.span for n in program.networks for p in n.params if p.name == name)
            problems.append(error(f"--set {name}={value}: the value must be an integer", span,
                                  "ASCII digits with an optional sign, as --set C=32"))
    return problems


_INTEGER = re.compile(r"[+-]?[0-9]+")


def override_value(value: object) -> int | None:
    """The integer an override spells (`16`, `-1`), or None: no `3_2`, no full-width digits."""
    text = str(value).strip()
    if isinstance(value, bool) or not _INTEGER.fullmatch(text):
        return None
    return int(text)


# --------------------------------------------------------------------- pass 1


def resolve(program: Program) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """Check every definition on its own; returns (errors, warnings)."""
    resolver = _Resolver(program)
    for module in program.modules:
        for item in module.items:
            if isinstance(item, ast.ChoiceDef):
                resolver.choice(item)
            elif isinstance(item, (ast.OpDef, ast.CellDef, ast.NetworkDef)):
                resolver.definition(item)
    resolver.recursion()
    return _dedupe(resolver.errors), _dedupe(resolver.warnings)


def _dedupe(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diagnostics:
        key = (d.message, d.span)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _callables(program: Program) -> set[str]:
    return set(PRIMITIVES) | {
        name for name, d in program.definitions.items() if not isinstance(d, ast.NetworkDef)
    }


def _signature(program: Program, name: str) -> list[tuple[str, str, bool]] | None:
    """(name, kind, required) per parameter of a callable, or None if variadic."""
    if name in PRIMITIVES:
        prim = PRIMITIVES[name]
        if any(p.kind in ("tensors", "ints") for p in prim.params):
            return None
        return [(p.name, p.kind, p.required) for p in prim.params]
    definition = program.definitions.get(name)
    if isinstance(definition, (ast.OpDef, ast.CellDef)):
        return [
            (p.name, "tensor" if isinstance(p, ast.TensorParam) else "int",
             isinstance(p, ast.TensorParam) or p.default is None)
            for p in definition.params
        ]
    return None


@define
class _Resolver:
    program: Program
    errors: list[Diagnostic] = field(factory=list)
    warnings: list[Diagnostic] = field(factory=list)
    calls: dict[str, list[tuple[str, ast.Span]]] = field(factory=dict)

    def choice(self, item: ast.ChoiceDef) -> None:
        if not item.candidates:
            self.errors.append(error(f"choice `{item.name}` has no candidates", item.span))
        labels = set()
        for candidate in item.candidates:
            self._callee(candidate, {}, set(), in_choice=True)
            definition = self.program.definitions.get(candidate.func)
            if isinstance(definition, (ast.ChoiceDef, ast.NetworkDef)):
                self.errors.append(error(
                    f"candidate `{candidate.func}` of choice `{item.name}` is not an op "
                    "or a cell", candidate.func_span))
            label = candidate_label(candidate)
            if label in labels:
                self.errors.append(error(f"candidate `{label}` appears twice in choice "
                                         f"`{item.name}`", candidate.span))
            labels.add(label)

    def definition(self, item: ast.OpDef | ast.CellDef | ast.NetworkDef) -> None:
        self.calls[item.name] = []
        scope: dict[str, str] = {}  # name -> "int" | "tensor" | "family"
        defined_at: dict[str, ast.Span] = {}
        for param in item.params:
            if param.name in scope:
                self.errors.append(error(f"duplicate parameter `{param.name}`", param.span))
            image_input = isinstance(item, ast.NetworkDef) and isinstance(param, ast.TensorParam)
            if param.name in RESERVED and not image_input:
                self.errors.append(error(f"`{param.name}` is reserved", param.span))
            if isinstance(param, ast.TensorParam):
                scope[param.name] = "tensor"
                channels = param.channels
                if isinstance(channels, ast.Name) and channels.name not in scope:
                    scope[channels.name] = "int"
                else:
                    self._expr(channels, scope, set(), item, want="int")
            else:
                if param.default is not None:
                    self._expr(param.default, scope, set(), item, want="int")
                scope[param.name] = "int"
        if isinstance(item, ast.NetworkDef) and not any(
                isinstance(p, ast.TensorParam) for p in item.params):
            scope["input"] = "tensor"
            defined_at["input"] = item.name_span
        if isinstance(item, ast.CellDef):
            for name, span in zip(item.shares, item.shares_spans, strict=False):
                if not isinstance(self.program.definitions.get(name), ast.ChoiceDef):
                    choices = [n for n, d in self.program.definitions.items()
                               if isinstance(d, ast.ChoiceDef)]
                    self.errors.append(error(f"`shares {name}`: no choice named `{name}`", span,
                                             did_you_mean(name, choices)))
        self._loop_variables(item)
        statements = list(flatten(item.body.statements))
        later = self._later_definitions(statements)
        used: set[str] = set()
        for index, (statement, loop_vars) in enumerate(statements):
            local = scope
            if loop_vars:  # copy only then: a copy per statement is quadratic in the body
                local = dict(scope)
                for var in loop_vars:
                    local[var] = "int"
            self._expr(statement.value, local, used, item, later=later, index=index)
            if statement.shares is not None:
                self._expr(statement.shares, local, used, item, later=later, index=index)
            is_number = is_number_expr(statement.value, local)
            for target in statement.targets:
                if target.index is not None:
                    self._expr(target.index, local, used, item, want="int")
                    kind = "family"
                else:
                    kind = "int" if is_number else "tensor"
                previous = scope.get(target.name)
                if loop_vars and kind == "tensor":
                    loop = loop_vars[-1]
                    self.errors.append(error(
                        f"`{target.name}` is assigned in every iteration of the loop over "
                        f"`{loop}`, so its ops would all have one name", target.span,
                        f"make it a family of values: {target.name}[{loop}] = ..."))
                    continue
                if target.name in RESERVED:
                    self.errors.append(error(f"`{target.name}` is reserved", target.span))
                elif previous == "family" and kind == "family":
                    pass
                elif previous is not None:
                    first = defined_at.get(target.name)
                    hint = (f"`{target.name}` was first defined at line {first.line}; values "
                            "are assigned once (use b[i] for a family of values)"
                            if first else None)
                    self.errors.append(error(f"duplicate definition of `{target.name}`",
                                             target.span, hint))
                    continue
                scope[target.name] = kind
                defined_at.setdefault(target.name, target.span)
        self._expr(item.body.result, scope, used, item)
        for name, span in defined_at.items():
            if name not in used and name != "input":
                self.warnings.append(warning(f"`{name}` is never used", span))
        if isinstance(item, ast.CellDef):
            for name, span in zip(item.shares, item.shares_spans, strict=False):
                if not isinstance(self.program.definitions.get(name), ast.ChoiceDef):
                    continue  # an error already
                if not any(callee == name for callee, _ in self.calls[item.name]):
                    self.warnings.append(warning(f"cell `{item.name}` shares `{name}` but never "
                                                 "uses it", span))

    def _loop_variables(self, item) -> None:
        """A loop variable may not shadow a parameter, a value or an enclosing loop's variable."""
        taken = {p.name for p in item.params}
        taken |= {t.name for s, _ in flatten(item.body.statements) for t in s.targets}
        pending = [(s, frozenset()) for s in item.body.statements]
        while pending:
            statement, outer = pending.pop()
            if not isinstance(statement, ast.ForLoop):
                continue
            if statement.var in taken or statement.var in outer:
                what = "an enclosing loop's variable" if statement.var in outer else \
                    "a parameter or value of the same name"
                self.errors.append(error(f"loop variable `{statement.var}` shadows {what}",
                                         statement.var_span, "choose another name"))
            inner = outer | {statement.var}
            pending.extend((s, inner) for s in statement.body)

    @staticmethod
    def _later_definitions(statements) -> dict[str, int]:
        first: dict[str, int] = {}
        for index, (statement, _) in enumerate(statements):
            for target in statement.targets:
                first.setdefault(target.name, index)
        return first

    def _expr(self, expr, scope, used, item, *, want: str | None = None, later=None,
              index: int = 0, in_pick_arg: bool = False) -> None:
        if isinstance(expr, ast.Name):
            kind = scope.get(expr.name)
            if kind is None:
                self._undefined(expr.name, expr.span, scope, item, later, index, used)
                return
            used.add(expr.name)
            if kind == "family":
                self.errors.append(error(f"`{expr.name}` is a family of values; index it, "
                                         f"as in {expr.name}[1]", expr.span))
            elif want == "int" and kind == "tensor":
                self.errors.append(error(f"expected an integer, but `{expr.name}` is a tensor",
                                         expr.span))
        elif isinstance(expr, (ast.Index, ast.Slice)):
            kind = scope.get(expr.name)
            if kind is None:
                self._undefined(expr.name, expr.span, scope, item, later, index, used)
            elif kind != "family":
                self.errors.append(error(f"`{expr.name}` is not a family of values and cannot "
                                         "be indexed", expr.span))
            else:
                used.add(expr.name)
            bounds = (expr.index,) if isinstance(expr, ast.Index) else (expr.lo, expr.hi)
            for bound in bounds:
                self._expr(bound, scope, used, item, want="int")
        elif isinstance(expr, ast.BinOp):
            self._expr(expr.left, scope, used, item, want=want, later=later, index=index)
            self._expr(expr.right, scope, used, item, want=want, later=later, index=index)
        elif isinstance(expr, ast.Vector):
            for value in expr.items:
                self._expr(value, scope, used, item, want="int", later=later, index=index)
        elif isinstance(expr, ast.Neg):
            self._expr(expr.operand, scope, used, item, want=want, later=later, index=index)
        elif isinstance(expr, ast.Pick):
            if not in_pick_arg:
                self.errors.append(error("`pick` must be the only argument of `concat(...)` or "
                                         "`sum(...)`", expr.span))
            if isinstance(item, ast.OpDef):
                self.errors.append(error("`pick` is a network-level choice; it cannot appear "
                                         "in an op", expr.span))
            self._expr(expr.k, scope, used, item, want="int")
            for candidate in expr.candidates:
                self._expr(candidate, scope, used, item, later=later, index=index)
        elif isinstance(expr, ast.Call):
            if want == "int":
                self.errors.append(error(f"expected an integer, but `{expr.func}(...)` is a "
                                         "tensor", expr.span))
            self._callee(expr, scope, used, item=item, later=later, index=index)

    def _undefined(self, name, span, scope, item, later, index, used) -> None:
        if later and name in later and later[name] >= index:
            used.add(name)  # it is used, only too early: no "never used" warning as well
            if later[name] == index:
                self.errors.append(error(f"`{name}` is defined in terms of itself", span))
            else:
                self.errors.append(error(
                    f"`{name}` is used before it is defined (a cycle or a misordered "
                    "statement)", span, "values are defined in order; move the definition up"))
            return
        known = [n for n in scope if n not in RESERVED or scope.get(n)]
        known += list(_callables(self.program))
        self.errors.append(error(f"undefined name `{name}`", span, did_you_mean(name, known)))

    def _callee(self, call: ast.Call, scope, used, *, item=None, later=None, index: int = 0,
                in_choice: bool = False) -> None:
        definition = self.program.definitions.get(call.func)
        if call.func not in PRIMITIVES and definition is None:
            known = _callables(self.program)
            self.errors.append(error(f"unknown op `{call.func}`", call.func_span,
                                     did_you_mean(call.func, known)))
        elif isinstance(definition, ast.NetworkDef):
            self.errors.append(error(f"`{call.func}` is a network and cannot be called",
                                     call.func_span))
        elif isinstance(definition, ast.ChoiceDef):
            if isinstance(item, ast.OpDef):
                self.errors.append(error(f"choice `{call.func}` used in op `{item.name}`; "
                                         "choices belong in cells and networks", call.func_span))
        elif isinstance(definition, ast.CellDef) and isinstance(item, ast.OpDef):
            self.errors.append(error(f"cell `{call.func}` used in op `{item.name}`; ops are "
                                     "built from primitives and other ops", call.func_span))
        if item is not None and item.name in self.calls:
            self.calls[item.name].append((call.func, call.func_span))
        signature = _signature(self.program, call.func)
        if signature is not None:
            self._arity(call, signature, partial=in_choice)
        for arg in call.args:
            self._expr(arg, scope, used, item, later=later, index=index,
                       in_pick_arg=call.func in ("concat", "sum") and len(call.args) == 1
                       and isinstance(arg, ast.Pick))
        for keyword in call.keywords:
            self._expr(keyword.value, scope, used, item, later=later, index=index)

    def _arity(self, call: ast.Call, signature, *, partial: bool) -> None:
        names = [name for name, _, _ in signature]
        given = len(call.args)
        if partial:
            tensors = sum(1 for _, kind, _ in signature if kind == "tensor")
            given += tensors
        if given > len(signature):
            shown = ", ".join(names)
            self.errors.append(error(
                f"`{call.func}` takes at most {len(signature)} arguments ({shown}), got {given}",
                call.span))
            return
        bound = set(names[:given])
        for keyword in call.keywords:
            if keyword.name not in names:
                self.errors.append(error(f"`{call.func}` has no parameter `{keyword.name}`",
                                         keyword.span, did_you_mean(keyword.name, names)))
            elif keyword.name in bound:
                self.errors.append(error(f"`{keyword.name}` given twice in call to "
                                         f"`{call.func}`", keyword.span))
            bound.add(keyword.name)
        missing = [name for name, _, required in signature if required and name not in bound]
        if missing and not partial:
            self.errors.append(error(f"`{call.func}` is missing argument `{missing[0]}`",
                                     call.span))

    def recursion(self) -> None:
        graph = {name: [c for c, _ in calls if c in self.calls] for name, calls in
                 self.calls.items()}
        for name, calls in self.calls.items():
            for callee, span in calls:
                path = _find_path(graph, callee, name)
                if path is not None:
                    cycle = " → ".join([name, *path])
                    self.errors.append(error(f"`{name}` is recursive: {cycle}", span))
                    break


def _find_path(graph: dict[str, list[str]], start: str, goal: str) -> list[str] | None:
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        if node == goal:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((n, [*path, n]) for n in graph.get(node, []))
    return None


# --------------------------------------------------------------------- pass 2


@define
class _Tensor:
    id: int


@define
class _Many:
    ids: list[int]
    span: ast.Span


@define
class _PickValue:
    k: int
    ids: list[int]
    names: list[str]
    base: str
    span: ast.Span
    node: ast.Pick
    exprs: list  # the candidates as expressions, slices expanded
    owned: list[tuple[int, ...]]  # per candidate, the nodes made only to compute it


@define
class _RunRecord:
    """A `Run` while it is elaborated."""

    statement: ast.Assign | None
    value: Any
    loop_env: tuple[tuple[str, int], ...]
    choices: dict[int, str] = field(factory=dict)
    picks: dict[int, PickRun] = field(factory=dict)
    calls: dict[int, _Record] = field(factory=dict)
    candidates: dict[int, tuple[_Record | None, ...]] = field(factory=dict)


@define
class _Record:
    """An `Instance` while it is elaborated."""

    definition: str
    path: str
    runs: list[_RunRecord] = field(factory=list)

    def freeze(self, always: bool = False) -> Instance | None:
        """The instance, or None if neither it nor anything it calls holds a site
        (and not `always`)."""
        runs, any_site = [], False
        for run in self.runs:
            calls = {}
            for key, record in run.calls.items():
                child = record.freeze()
                if child is not None:
                    calls[key] = child
            any_site = any_site or bool(calls or run.choices
                                        or any(p.key for p in run.picks.values()))
            candidates = {key: tuple(None if r is None else r.freeze(always=True)
                                     for r in records)
                          for key, records in run.candidates.items()}
            runs.append(Run(run.statement, run.value, run.loop_env, run.choices, run.picks,
                            calls, candidates))
        if not (any_site or always):
            return None
        return Instance(self.definition, self.path, tuple(runs))


@define
class _Builder:
    max_nodes: int = DEFAULT_LIMITS.nodes
    nodes: list[Node] = field(factory=list)
    inputs: list[int] = field(factory=list)

    def add(self, **kwargs: Any) -> int:
        if len(self.nodes) >= self.max_nodes:
            _fail(f"the network grows beyond {self.max_nodes:,} primitive ops (limit `nodes`, "
                  "--max-nodes)", kwargs["span"])
        node = Node(id=len(self.nodes), **kwargs)
        self.nodes.append(node)
        return node.id

    def info(self, id: int) -> TensorInfo:
        node = self.nodes[id]
        return TensorInfo(node.channels, node.spatial)

    def graph(self, output: int) -> Graph:
        return Graph(tuple(self.nodes), tuple(self.inputs), output)


@define
class _Frame:
    """Where elaboration is: which definition, under which module path."""

    definition: ast.OpDef | ast.CellDef | ast.NetworkDef
    prefix: str
    scope: str
    cell: str = ""
    ints: dict[str, Any] = field(factory=dict)
    values: dict[str, _Tensor] = field(factory=dict)
    families: dict[str, dict[int, _Tensor]] = field(factory=dict)
    value_names: dict[int, str] = field(factory=dict)
    loop_env: dict[str, int] = field(factory=dict)
    record: _Record | None = None  # None inside choice candidates: they hold no sites
    run: _RunRecord | None = None
    # value id → the nodes (first, end) of the statement that made it, for `shares`
    made_by: dict[int, tuple[int, int]] = field(factory=dict)
    # inside a candidate cell of a choice: the prefix of its sites' keys (the module
    # prefix is then relative to the candidate) and the (site key, candidate index)
    key_prefix: str | None = None
    parent_site: tuple[str, int] | None = None

    @property
    def site_prefix(self) -> str:
        """The path that keys this body's sites."""
        return self.prefix if self.key_prefix is None else self.key_prefix


def first_empty(graph: Graph, width: int, height: int) -> tuple[Node, int, int] | None:
    """The first value (node, its width, its height) that is empty for an LR input of
    width×height, or None; choice candidates included."""
    for node in graph.walk():
        h, w = node.spatial.size(height, width)
        if h <= 0 or w <= 0:
            return node, max(w, 0), max(h, 0)
    return None


def empty_size(graph: Graph, scale: int, hr: tuple[int, int]) -> tuple[str, ast.Span] | None:
    """(message, span) for the first value that is empty for an HR output of `hr` (w, h)."""
    lw, lh = hr[0] // scale, hr[1] // scale
    found = first_empty(graph, lw, lh)
    if found is None:
        return None
    node, w, h = found
    what = "the LR input" if node.op == "input" else "this value"
    return (f"for an HR output of {hr[0]}×{hr[1]} (LR {lw}×{lh}) {what} would be {w}×{h}, "
            "which is empty", node.span)


class _Elaborator:
    def __init__(self, program: Program, limits: Limits = DEFAULT_LIMITS,
                 partial_channels: int = 1):
        self.program = program
        self.limits = limits
        self.partial_channels = partial_channels  # > 1: fill `Node.partial` of choices
        self.memo: dict[str, bool] = {}
        self.builder = _Builder(limits.nodes)
        self.main_builder = self.builder
        self.owners: dict[str, ast.Span] = {}  # module path -> the op that holds it
        self.groups: dict[str, ast.Span] = {}  # proper prefixes of those paths
        self.choice_sites: dict[str, ChoiceSite | None] = {}
        self.pick_sites: list[PickSite] = []
        self.cells: list[CellInstance] = []
        self.stack: list[str] = []
        self.counters: dict[str, int] = {}  # sites per key base seen in this statement
        self.candidate_graphs: dict[tuple, Graph] = {}
        self.cell_spans: dict[str, ast.Span] = {}
        self.warnings: list[Diagnostic] = []
        self.memo_sites: dict[str, bool] = {}

    # -- network
    def network(self, definition: ast.NetworkDef, overrides: dict[str, str],
                width: tuple[str, int] | None = None) -> Network:
        """Elaborate `definition`; `width` = (parameter, index) takes that value of a width
        choice."""
        frame = _Frame(definition, prefix="", scope="", record=_Record(definition.name, ""))
        params: dict[str, int] = {}
        tensor_params = [p for p in definition.params if isinstance(p, ast.TensorParam)]
        for param in definition.params:
            if isinstance(param, ast.TensorParam):
                continue
            if param.name in overrides:
                value = override_value(overrides[param.name])
            elif width is not None and param.name == width[0]:
                value = self._int(param.choices[width[1]], frame, f"width `{param.name}`")
                self._positive(value, param.choices[width[1]].span, f"width `{param.name}`")
            elif param.choices:
                _fail(f"width `{param.name}` needs a value here", param.span)
            elif param.default is None:
                _fail(f"parameter `{param.name}` of network `{definition.name}` has no "
                      "default", param.span, f"give one with --set {param.name}=...")
            else:
                value = self._int(param.default, frame, f"parameter `{param.name}`")
            frame.ints[param.name] = value
            params[param.name] = value
        rgb_range = params.get(RGB_RANGE, 1)
        if rgb_range not in (1, 255):
            span = next(p.span for p in definition.params if p.name == RGB_RANGE)
            _fail(f"rgb_range must be 1 or 255, got {rgb_range}", span)
        if not tensor_params:
            tensor_params = [ast.TensorParam("input", ast.Int(DEFAULT_IN_CHANNELS),
                                             definition.name_span)]
        if len(tensor_params) != 1:
            _fail("a network takes exactly one image input", tensor_params[1].span)
        (image,) = tensor_params
        in_channels = self._int(image.channels, frame, "input channels")
        self._positive(in_channels, image.span, "input channels")
        self._channels(in_channels, image.span)
        input_id = self.builder.add(op="input", inputs=(), channels=in_channels, spatial=INPUT,
                                    path=image.name, span=image.span)
        self.builder.inputs.append(input_id)
        frame.values[image.name] = _Tensor(input_id)
        output = self._body(frame)
        out = self.builder.nodes[output.id]
        scale = out.spatial.scale
        if scale is None:
            _fail("the network's output is not an integer upscaling of its input; its size "
                  f"is {out.spatial.describe()}", definition.body.result.span)
        if "scale" in params and params["scale"] != scale:
            _fail(f"network `{definition.name}` has scale = {params['scale']} but its output "
                  f"is {scale}× its input", definition.body.result.span)
        if out.channels != in_channels:
            _fail(f"network `{definition.name}` gives {out.channels} output channels for "
                  f"{in_channels} input channels; an SR network's output has its input's "
                  "channels", definition.body.result.span)
        self._check_pick_consumers()
        graph = self._reachable(output.id)
        empty = empty_size(graph, scale, DEFAULT_HR)
        if empty is not None:
            _fail(empty[0], empty[1])
        return Network(
            name=definition.name,
            params=params,
            graph=graph,
            choice_sites=tuple(self.choice_sites.values()),
            pick_sites=tuple(self.pick_sites),
            cells=tuple(self.cells),
            scale=scale,
            in_channels=in_channels,
            out_channels=out.channels,
            rgb_range=rgb_range,
            source=definition.span.path,
            body=frame.record.freeze(always=True),
        )

    def _reachable(self, output: int) -> Graph:
        """The graph of what reaches the output: dead values are neither built nor counted.

        Sites and cell instances that only dead values hold are dropped, with a warning
        per dead cell instance (values that are never named get one from `resolve`).
        """
        nodes = self.builder.nodes
        graph = self.builder.graph(output)
        alive = live_nodes(graph)
        for i in self.builder.inputs:
            alive[i] = True
        if all(alive):
            return graph
        renumber: dict[int, int] = {}
        kept = []
        for node in nodes:
            if alive[node.id]:
                renumber[node.id] = len(kept)
                kept.append(evolve(node, id=len(kept),
                                   inputs=tuple(renumber[i] for i in node.inputs)))
        choice_paths = {n.path for n in kept if n.op == "choice"}
        pick_keys = {n.site for n in kept if n.op == "pick"}
        scopes = {n.scope for n in kept}
        for key, site in list(self.choice_sites.items()):
            instances = tuple(p for p in site.instances if p in choice_paths)
            if instances:
                self.choice_sites[key] = evolve(site, instances=instances)
            else:
                del self.choice_sites[key]
        self.pick_sites = [s for s in self.pick_sites if s.key in pick_keys]
        living = []
        for cell in self.cells:
            if cell.path in scopes or any(s.startswith(cell.path + ".") for s in scopes):
                living.append(cell)
            else:
                span = self.cell_spans.get(cell.path)
                self.warnings.append(warning(
                    f"`{cell.path}` (cell `{cell.cell}`) does not reach the network's output; "
                    "it is not built and not counted", span))
        self.cells = living
        return Graph(tuple(kept), tuple(renumber[i] for i in self.builder.inputs),
                     renumber[output])

    def _claim(self, path: str, span: ast.Span) -> None:
        """Each op that holds weights (and each choice site) becomes a module named by its
        path; two may not share a name, nor may one's name be a group of others."""
        if not path or self.builder is not self.main_builder:
            return
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(1, len(parts))]
        clash = self.owners.get(path) or next(
            (self.owners[p] for p in prefixes if p in self.owners), None)
        if clash is None and path in self.groups:
            clash = self.groups[path]
        if clash is not None:
            _fail(f"two ops would hold weights under one name `{path}`", span,
                  f"the other is at {clash.path}:{clash.line}:{clash.column}; give each "
                  "call its own value name")
        self.owners[path] = span
        for prefix in prefixes:
            self.groups.setdefault(prefix, span)

    def _check_pick_consumers(self) -> None:
        """Only `CONCAT_PICK_READER` (a conv with groups=1) may read a concatenating pick."""
        nodes = self.builder.nodes
        for node in nodes:
            if node.op != "pick" or node.aggregate != "concat":
                continue
            consumers = [n for n in nodes if node.id in n.inputs]
            if node.id == self.builder.nodes[-1].id or not consumers:
                _fail(f"a concatenating pick must feed a {CONCAT_PICK_READER}", node.span)
            for consumer in consumers:
                carries = (f"in the supernet it carries all {len(node.inputs)} candidates, "
                           f"in a derived network {node.k}")
                if consumer.op != CONCAT_PICK_READER:
                    _fail(f"a concatenating pick must feed a {CONCAT_PICK_READER} directly "
                          f"(here it feeds `{consumer.op}`): {carries}", node.span)
                groups = consumer.args.get("groups", 1)
                if groups != 1:
                    _fail(f"a concatenating pick must feed a {CONCAT_PICK_READER} with groups=1 "
                          f"(this conv has groups={groups}): {carries}, so the groups would "
                          "differ", node.span)

    # -- bodies
    def _body(self, frame: _Frame) -> _Tensor:
        self._statements(frame.definition.body.statements, frame)
        result = frame.definition.body.result
        paths = entity_paths(entity_calls(self.program, result, self.memo), "")
        self._start_run(frame, None, result)
        saved, self.counters = self.counters, {}
        value = self._expr(result, frame, paths, value_path="")
        self.counters = saved
        if not isinstance(value, _Tensor):
            _fail("a body must return a tensor", result.span)
        return value

    def _statements(self, statements, frame: _Frame) -> None:
        for statement in statements:
            if isinstance(statement, ast.ForLoop):
                lo = self._int(statement.lo, frame, "loop bound")
                hi = self._int(statement.hi, frame, "loop bound")
                if hi - lo + 1 > self.limits.loop:
                    _fail(f"this loop runs {hi - lo + 1:,} times ({lo}..{hi}); at most "
                          f"{self.limits.loop:,} (limit `loop`, --max-loop)", statement.span)
                for i in range(lo, hi + 1):
                    frame.ints[statement.var] = i
                    frame.loop_env[statement.var] = i
                    self._statements(statement.body, frame)
                frame.ints.pop(statement.var, None)
                frame.loop_env.pop(statement.var, None)
            else:
                self._assign(statement, frame)

    @staticmethod
    def _start_run(frame: _Frame, statement: ast.Assign | None, value) -> None:
        if frame.record is not None:
            frame.run = _RunRecord(statement, value, tuple(frame.loop_env.items()))
            frame.record.runs.append(frame.run)

    def _assign(self, statement: ast.Assign, frame: _Frame) -> None:
        first = statement.targets[0]
        index = None if first.index is None else self._int(first.index, frame, "index")
        if index is not None and index in frame.families.get(first.name, {}):
            _fail(f"`{first.name}[{index}]` is defined twice", first.span)
        value_path = target_path(first.name, index)
        calls = entity_calls(self.program, statement.value, self.memo)
        paths = entity_paths(calls, value_path)
        self._start_run(frame, statement, statement.value)
        saved, self.counters = self.counters, {}
        first_node = len(self.builder.nodes)
        value = self._expr(statement.value, frame, paths, value_path=value_path)
        self.counters = saved
        made = (first_node, len(self.builder.nodes)) if len(calls) == 1 else None
        if statement.shares is not None:
            self._share(statement, calls, made, frame)
        if isinstance(value, _Many):
            if len(value.ids) != len(statement.targets):
                _fail(f"{len(statement.targets)} names on the left but "
                      f"the right gives {len(value.ids)} values", statement.span)
            results = [_Tensor(i) for i in value.ids]
        elif isinstance(value, (int, float, tuple)) and len(statement.targets) == 1 \
                and first.index is None:
            frame.ints[first.name] = value
            return
        elif isinstance(value, _Tensor):
            if len(statement.targets) != 1:
                _fail(f"{len(statement.targets)} names on the left but the right gives one "
                      "value", statement.span)
            results = [value]
        else:
            _fail("a statement must define a tensor; use a parameter for integers",
                  statement.value.span)
        for target, result in zip(statement.targets, results, strict=True):
            if made is not None:
                frame.made_by[result.id] = made
            if target.index is None:
                frame.values[target.name] = result
                frame.value_names[result.id] = target.name
            else:
                i = self._int(target.index, frame, "index")
                family = frame.families.setdefault(target.name, {})
                if i in family:
                    _fail(f"`{target.name}[{i}]` is defined twice", target.span)
                family[i] = result
                frame.value_names[result.id] = f"{target.name}[{i}]"

    def _share(self, statement: ast.Assign, calls: list[ast.Call],
               made: tuple[int, int] | None, frame: _Frame) -> None:
        """Point the weight nodes of this statement at those of the statement that made
        `statement.shares`, after checking that both have the same weights."""
        target = statement.shares
        shown = format_expr(target)
        if made is None:
            what = "none" if not calls else ", ".join(f"`{c.func}`" for c in calls)
            _fail(f"a statement that shares weights needs exactly one call with weights; "
                  f"this one has {what}", statement.value.span)
        if isinstance(target, ast.Index):
            source = self._member(target.name, self._int(target.index, frame, "index"),
                                  target.span, frame)
        elif target.name in frame.values:
            source = frame.values[target.name]
        else:  # a number: the resolver has reported undefined names
            _fail(f"`{shown}` is a number; `shares` names a value made by a call with "
                  "weights", target.span)
        if source.id not in frame.made_by:
            _fail(f"`{shown}` was not made by one call with weights, so there are no weights "
                  "to share", target.span)
        nodes = self.builder.nodes
        mine = list(range(*made))
        if any(nodes[i].op in ("choice", "pick") for i in mine):
            _fail("a call with choices or picks cannot share weights", statement.value.span)
        if any(nodes[i].op in ("choice", "pick") for i in range(*frame.made_by[source.id])):
            _fail(f"`{shown}` was made by a call with choices or picks, whose weights cannot "
                  "be shared", target.span)
        theirs = [nodes[i] for i in range(*frame.made_by[source.id])
                  if nodes[i].op not in ("choice", "pick") and PRIMITIVES[nodes[i].op].has_weights]
        ours = [i for i in mine if nodes[i].op != "input" and PRIMITIVES[nodes[i].op].has_weights]
        if len(ours) != len(theirs):
            _fail(f"cannot share the weights of `{shown}`: it has {len(theirs)} weighted "
                  f"layers, this call {len(ours)}", target.span)
        for i, original in zip(ours, theirs, strict=True):
            node = nodes[i]
            difference = _layer_difference(original, node, nodes)
            if difference:
                _fail(f"cannot share the weights of `{shown}`: its `{original.path}` "
                      f"{difference[0]}, but here `{node.path}` {difference[1]}", target.span)
            nodes[i] = evolve(node, weights=original.weights or original.path)

    # -- expressions
    def _int(self, expr, frame: _Frame, what: str) -> int:
        return require_int(self._number(expr, frame), expr, what)

    def _number(self, expr, frame: _Frame):
        def lookup(name: ast.Name):
            if name.name in frame.ints:
                return frame.ints[name.name]
            if name.name in frame.values or name.name in frame.families:
                _fail(f"expected an integer, but `{name.name}` is a tensor", name.span)
            _fail(f"undefined name `{name.name}`", name.span,
                  did_you_mean(name.name, list(frame.ints)))

        return evaluate(expr, lookup)

    def _expr(self, expr, frame: _Frame, paths: dict[int, str], *, value_path: str):
        if isinstance(expr, (ast.Int, ast.Float, ast.Bool, ast.Vector)):
            return self._number(expr, frame)
        if isinstance(expr, ast.String):
            return expr.value
        if isinstance(expr, ast.Name):
            if expr.name in frame.values:
                return frame.values[expr.name]
            return self._number(expr, frame)
        if isinstance(expr, ast.Index):
            return self._member(expr.name, self._int(expr.index, frame, "index"), expr.span,
                                frame)
        if isinstance(expr, ast.Neg):
            operand = self._expr(expr.operand, frame, paths, value_path=value_path)
            if isinstance(operand, _Tensor):  # -x is x · (-1)
                return self._scalar(ast.BinOp("*", expr.operand, ast.Int(-1, span=expr.span),
                                              span=expr.span), operand, -1, frame)
            return self._number(expr, frame)
        if isinstance(expr, ast.BinOp):
            left = self._expr(expr.left, frame, paths, value_path=value_path)
            right = self._expr(expr.right, frame, paths, value_path=value_path)
            left_tensor, right_tensor = isinstance(left, _Tensor), isinstance(right, _Tensor)
            for side, operand in ((left, expr.left), (right, expr.right)):
                if isinstance(side, (_Many, _PickValue, str)):
                    _fail("this value cannot be used in arithmetic", operand.span)
            if not left_tensor and not right_tensor:
                return arith(expr, left, right)
            if left_tensor != right_tensor:
                return self._scalar(expr, left, right, frame)
            if expr.op not in BINARY_OPERATORS:
                _fail(f"`{expr.op}` is not defined between tensors; tensors support +, - "
                      "and *", expr.span)
            prim = PRIMITIVES[BINARY_OPERATORS[expr.op]]
            spans = [expr.left.span, expr.right.span]
            return self._primitive(prim, [left, right], {}, spans, expr.span, frame, "")
        if isinstance(expr, ast.Pick):
            _fail("`pick` must be the only argument of `concat(...)` or `sum(...)`", expr.span)
        if isinstance(expr, ast.Call):
            return self._call(expr, frame, paths, value_path=value_path)
        _fail("unexpected expression", expr.span)

    def _scalar(self, expr: ast.BinOp, left, right, frame: _Frame) -> _Tensor:
        """A tensor and a number (or per-channel constant): `affine(x, scale, shift)`."""
        tensor_left = isinstance(left, _Tensor)
        tensor, number = (left, right) if tensor_left else (right, left)
        number_span = (expr.right if tensor_left else expr.left).span
        values = number if isinstance(number, tuple) else (float(number),)
        negated = tuple(-v for v in values)
        if expr.op == "*":
            scale, shift = values, (0.0,)
        elif expr.op == "+":
            scale, shift = (1.0,), values
        elif expr.op == "-":
            scale, shift = ((1.0,), negated) if tensor_left else ((-1.0,), values)
        elif expr.op == "/" and tensor_left:
            if 0.0 in values:
                _fail(f"division by zero: `{format_expr(expr.right)}` is "
                      f"{describe(number)}" if len(values) == 1 else
                      f"division by zero: `{format_expr(expr.right)}` holds a zero",
                      expr.right.span)
            scale, shift = tuple(1.0 / v for v in values), (0.0,)
        else:
            _fail("cannot divide a number by a tensor" if expr.op == "/" else
                  f"`{expr.op}` is not defined on tensors; a tensor and a number combine "
                  "with *, /, + and -", expr.span)
        if scale == (1.0,) and shift == (0.0,):
            return tensor  # `x * 1`, `x + 0`: nothing to compute
        prim = PRIMITIVES[SCALAR_OPERATOR]
        spans = [(expr.left if tensor_left else expr.right).span, number_span]
        return self._primitive(prim, [tensor], {"scale": scale, "shift": shift}, spans,
                               expr.span, frame, "")

    def _member(self, name: str, index: int, span: ast.Span, frame: _Frame) -> _Tensor:
        family = frame.families.get(name)
        if family is None:
            _fail(f"undefined name `{name}`", span)
        if index not in family:
            defined = sorted(family)
            shown = ", ".join(f"{name}[{i}]" for i in defined) if len(defined) <= 3 else \
                f"{name}[{defined[0]}], ..., {name}[{defined[-1]}]"
            shown = shown or "none"
            _fail(f"`{name}[{index}]` is not defined (defined so far: {shown})", span)
        return family[index]

    def _values(self, exprs, frame: _Frame, paths, *, value_path, exprs_out=None):
        """Evaluate arguments, expanding slices `b[1..3]` into several values (and into
        `exprs_out`, if given, the argument expressions with slices expanded)."""
        out: list[tuple[Any, ast.Span]] = []
        for expr in exprs:
            if isinstance(expr, ast.Slice):
                lo = self._int(expr.lo, frame, "slice bound")
                hi = self._int(expr.hi, frame, "slice bound")
                if hi < lo:
                    _fail(f"empty slice {expr.name}[{lo}..{hi}]", expr.span)
                out.extend((self._member(expr.name, i, expr.span, frame), expr.span)
                           for i in range(lo, hi + 1))
                if exprs_out is not None:
                    exprs_out.extend(ast.Index(expr.name, ast.Int(i), span=expr.span)
                                     for i in range(lo, hi + 1))
                continue
            if exprs_out is not None:
                exprs_out.append(expr)
            if isinstance(expr, ast.Pick):
                out.append((self._pick(expr, frame, paths, value_path), expr.span))
            else:
                out.append((self._expr(expr, frame, paths, value_path=value_path), expr.span))
        return out

    def _call(self, call: ast.Call, frame: _Frame, paths, *, value_path):
        args = self._values(call.args, frame, paths, value_path=value_path)
        keywords = {
            k.name: (self._expr(k.value, frame, paths, value_path=value_path), k.value.span)
            for k in call.keywords
        }
        path = join(frame.prefix, paths.get(id(call), ""))
        if call.func in PRIMITIVES:
            prim = PRIMITIVES[call.func]
            if len(args) == 1 and isinstance(args[0][0], _PickValue):
                return self._pick_node(prim, args[0][0], frame)
            bound, spans = self._bind_primitive(prim, call, args, keywords)
            tensors = bound.pop("__tensors__")
            return self._primitive(prim, tensors, bound, spans, call.span, frame, path)
        definition = self.program.definitions[call.func]
        if isinstance(definition, ast.ChoiceDef):
            return self._choice(call, definition, args, keywords, frame, path, value_path)
        return self._inline(call, definition, args, keywords, frame, path)

    def _bind_primitive(self, prim: Primitive, call: ast.Call, args, keywords):
        tensors: list[Any] = []
        spans: list[ast.Span] = []
        bound: dict[str, Any] = {}
        positional = list(args)
        for spec in prim.params:
            if spec.kind == "tensors":
                for value, span in positional:
                    if isinstance(value, _PickValue):
                        _fail("`pick` must be the only argument", span)
                    tensors.append(self._tensor(value, span, call.func))
                    spans.append(span)
                positional = []
                continue
            if spec.kind == "ints":
                values = [self._typed(v, s, "int", call.func, spec.name) for v, s in positional]
                for (_, s), v in zip(positional, values, strict=True):
                    self._argument_range(v, s, spec, call.func)
                bound[spec.name] = values
                positional = []
                continue
            if positional:
                value, span = positional.pop(0)
            elif spec.name in keywords:
                value, span = keywords[spec.name]
            elif spec.required:
                _fail(f"`{call.func}` is missing argument `{spec.name}`", call.span)
            else:
                bound[spec.name] = spec.default
                continue
            if spec.kind == "tensor":
                tensors.append(self._tensor(value, span, call.func))
                spans.append(span)
            else:
                bound[spec.name] = self._typed(value, span, spec.kind, call.func, spec.name,
                                               spec.options)
                self._argument_range(bound[spec.name], span, spec, call.func)
        if positional:
            _fail(f"`{call.func}` takes {len(prim.params)} arguments, got {len(args)}",
                  call.span)
        for spec in prim.params:
            # a default too, as k=3 under --max-kernel 1; None is a default resolved later
            value = bound.get(spec.name) if spec.window else None
            if value is not None and value > self.limits.kernel:
                _fail(f"`{spec.name}` of `{call.func}` is {value:,}; at most "
                      f"{self.limits.kernel} (limit `kernel`, --max-kernel)", call.span)
        bound["__tensors__"] = tensors
        return bound, spans

    def _argument_range(self, value, span: ast.Span, spec: ParamSpec, func: str) -> None:
        """An argument written in the spec, against its record's range and the limits,
        located at the argument (defaults are in range by the record)."""
        problem = spec.range_problem(value)
        if problem is not None:
            _fail(f"`{spec.name}` of `{func}` {problem}", span)
        if spec.window and value > self.limits.kernel:
            _fail(f"`{spec.name}` of `{func}` is {value:,}; at most {self.limits.kernel} "
                  "(limit `kernel`, --max-kernel)", span)
        if spec.channels:
            self._channels(value, span)

    @staticmethod
    def _tensor(value, span: ast.Span, func: str) -> _Tensor:
        if not isinstance(value, _Tensor):
            _fail(f"`{func}` expects a tensor here, got {_describe(value)}", span)
        return value

    @staticmethod
    def _typed(value, span: ast.Span, kind: str, func: str, name: str,
               options: tuple[str, ...] = ()):
        if isinstance(value, (_Tensor, _Many, _PickValue)):
            _fail(f"`{name}` of `{func}` must be a number, got a tensor", span)
        if kind == "str":
            if not isinstance(value, str) or value not in options:
                shown = " or ".join(f'"{o}"' for o in options)
                got = f'"{value}"' if isinstance(value, str) else describe(value)
                _fail(f"`{name}` of `{func}` must be {shown}, got {got}", span)
            return value
        if isinstance(value, str):
            _fail(f"`{name}` of `{func}` must be a number, got the string \"{value}\"", span)
        if kind == "floats":
            return tuple(float(v) for v in value) if isinstance(value, tuple) else \
                (float(value),)
        if kind == "number":  # a parameter of an op or cell: any constant
            return value
        if isinstance(value, tuple):
            _fail(f"`{name}` of `{func}` must be one number, got {describe(value)}", span)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                _fail(f"`{name}` of `{func}` must be an integer, got {value!r}", span)
            return value
        if kind == "bool":
            if value not in (0, 1):
                _fail(f"`{name}` of `{func}` must be true or false, got {value!r}", span)
            return bool(value)
        try:
            return float(value)
        except OverflowError:
            _fail(f"`{name}` of `{func}` must be a finite number, got an integer too large "
                  "for a float", span)

    def _primitive(self, prim: Primitive, tensors: list[_Tensor], args: dict[str, Any],
                   spans: list[ast.Span], span: ast.Span, frame: _Frame, path: str):
        infos = [self.builder.info(t.id) for t in tensors]
        try:
            args, outputs = prim.apply(infos, args)
        except ShapeError as exc:
            culprit = spans[exc.argument] if exc.argument is not None \
                and exc.argument < len(spans) else span
            message = str(exc)
            if prim.name in BINARY_OPERATORS.values() and exc.argument == 1:
                names = [self._value_name(frame, t.id) for t in tensors]
                message += f" (`{names[0]}` and `{names[1]}`)"
                culprit = span
            _fail(message, culprit)
        for out in outputs:
            self._channels(out.channels, span)
        if prim.has_weights:
            self._claim(path, span)
        ids = [
            self.builder.add(op=prim.name, inputs=tuple(t.id for t in tensors),
                             channels=out.channels, spatial=out.spatial, args=dict(args),
                             path=path if prim.has_weights else "", scope=frame.scope,
                             span=span, output_index=i)
            for i, out in enumerate(outputs)
        ]
        if prim.outputs_many:
            return _Many(ids, span)
        return _Tensor(ids[0])

    def _value_name(self, frame: _Frame, id: int) -> str:
        name = frame.value_names.get(id)
        if name:
            return name
        node = self.builder.nodes[id]
        return f"{node.op}(...)" if node.op != "input" else node.path

    # -- calls of composite ops and cells
    def _inline(self, call: ast.Call, definition, args, keywords, frame: _Frame, path: str,
                *, candidate: bool = False):
        if definition.name in self.stack:
            _fail(f"`{definition.name}` is recursive", call.func_span)
        if len(self.stack) >= MAX_DEPTH:
            _fail(f"ops call ops more than {MAX_DEPTH} levels deep", call.func_span)
        callee = _Frame(definition, prefix=path, scope=frame.scope, cell=frame.cell,
                        parent_site=frame.parent_site)
        if frame.key_prefix is not None:
            callee.key_prefix = join(frame.key_prefix, path[len(frame.prefix):].lstrip("."))
        if frame.run is not None:
            callee.record = _Record(definition.name, path)
            frame.run.calls[id(call)] = callee.record
        if isinstance(definition, ast.CellDef):
            callee.scope = path
            callee.cell = definition.name
            if not candidate:  # a candidate cell is part of its choice
                self.cells.append(CellInstance(path, definition.name))
                self.cell_spans[path] = call.span
        params = list(definition.params)
        positional = list(args)
        bindings: dict[str, tuple[Any, ast.Span]] = {}
        for param in params:
            if positional:
                bindings[param.name] = positional.pop(0)
            elif param.name in keywords:
                bindings[param.name] = keywords[param.name]
        if positional:
            _fail(f"`{definition.name}` takes {len(params)} arguments, got {len(args)}",
                  call.span)
        for name in keywords:
            if name not in {p.name for p in params}:
                _fail(f"`{definition.name}` has no parameter `{name}`", keywords[name][1],
                      did_you_mean(name, [p.name for p in params]))
        int_params = [p for p in params if isinstance(p, ast.IntParam)]
        tensor_params = [p for p in params if isinstance(p, ast.TensorParam)]
        for param in int_params:
            if param.name in bindings:
                value, span = bindings[param.name]
                callee.ints[param.name] = self._typed(value, span, "number", definition.name,
                                                      param.name)
        deferred = []
        for param in tensor_params:
            if param.name not in bindings:
                _fail(f"`{definition.name}` is missing argument `{param.name}`", call.span)
            value, span = bindings[param.name]
            tensor = self._tensor(value, span, definition.name)
            channels = self.builder.nodes[tensor.id].channels
            declared = param.channels
            if isinstance(declared, ast.Name) and declared.name not in callee.ints \
                    and declared.name not in {p.name for p in int_params}:
                callee.ints[declared.name] = channels
            else:
                deferred.append((param, channels, span))
            callee.values[param.name] = tensor
            callee.value_names[tensor.id] = param.name
        for param in int_params:
            if param.name in callee.ints:
                continue
            if param.default is None:
                _fail(f"`{definition.name}` is missing argument `{param.name}`", call.span)
            callee.ints[param.name] = self._number(param.default, callee)
        for param, channels, span in deferred:
            expected = self._int(param.channels, callee, f"channels of `{param.name}`")
            if expected != channels:
                _fail(f"`{definition.name}` expects `{param.name}` with {expected} "
                      f"channels, got {channels}", span)
        self.stack.append(definition.name)
        try:
            return self._body(callee)
        except _Failed as failure:
            where = call.func_span
            note = (f"in expansion of `{definition.name}`, called from "
                    f"{where.path}:{where.line}:{where.column}")
            failure.diagnostic = evolve(failure.diagnostic,
                                        notes=(*failure.diagnostic.notes, note))
            raise
        finally:
            self.stack.pop()

    # -- choice sites
    def _choice(self, call: ast.Call, choice: ast.ChoiceDef, args, keywords, frame: _Frame,
                path: str, value_path: str):
        if keywords:
            _fail(f"choice `{choice.name}` takes tensors only, no keywords",
                  call.keywords[0].span)
        tensors = [self._tensor(v, s, choice.name) for v, s in args
                   if isinstance(v, _Tensor) or not isinstance(v, (int, float))]
        extra = args[len(tensors):]
        if not tensors:
            _fail(f"choice `{choice.name}` needs at least one input", call.span)
        shared = (isinstance(frame.definition, ast.CellDef)
                  and choice.name in frame.definition.shares)
        if shared:  # one key for every instance of the cell: the path inside it
            base = choice_site_base(choice.name, value_path, frame.prefix,
                                    shared_in=frame.cell, scope=frame.scope)
        else:
            base = choice_site_base(choice.name, value_path, frame.site_prefix)
        ordinal = self.counters.get(base, 0)
        self.counters[base] = ordinal + 1
        key = site_key(base, ordinal)
        if frame.run is not None:
            frame.run.choices[id(call)] = key
        labels = tuple(candidate_label(c) for c in choice.candidates)
        self.choice_sites.setdefault(key, None)  # before the sites of its candidates
        graphs = []
        reference: tuple[int, Any, str] | None = None
        for candidate, label in zip(choice.candidates, labels, strict=True):
            index = len(graphs)
            if holds_sites(self.program, candidate.func, self.memo_sites):
                graph, record = self._candidate_graph(
                    candidate, [self.builder.info(t.id) for t in tensors], extra, call,
                    nested=(join(key, module_name(label)), (key, index)))
                if frame.run is not None:
                    records = frame.run.candidates.setdefault(id(call), [None] * len(labels))
                    records[index] = record
            else:
                graph = self._cached_candidate_graph(
                    candidate, [self.builder.info(t.id) for t in tensors], extra, call)
            out = graph.output_node
            if reference is None:
                reference = (out.channels, out.spatial, label)
            elif (out.channels, out.spatial) != reference[:2]:
                _fail(f"candidates of choice `{choice.name}` disagree: `{reference[2]}` gives "
                      f"{reference[0]} channels ({reference[1].describe()}), `{label}` gives "
                      f"{out.channels} ({out.spatial.describe()})", call.span)
            graphs.append(graph)
        assert reference is not None
        partial = ()
        if self.partial_channels > 1:
            partial = self._partial_candidates(choice, key, tensors, extra, call, graphs)
        self._claim(path, call.span)
        node = self.builder.add(op="choice", inputs=tuple(t.id for t in tensors),
                                channels=reference[0], spatial=reference[1], path=path,
                                scope=frame.scope, span=call.span, site=key,
                                candidates=tuple(graphs), labels=labels, partial=partial)
        site = self.choice_sites.get(key)
        if site is not None and site.parent != frame.parent_site:
            _fail(f"choice `{choice.name}` is shared by cell `{frame.cell}`, whose instances "
                  "here hang under different choices; a shared choice inside a candidate "
                  "cell needs one parent site", call.span,
                  f"drop `shares {choice.name}` from cell `{frame.cell}`")
        if frame.key_prefix is not None:  # in a candidate cell: shown under its site
            path = join(frame.key_prefix, path[len(frame.prefix):].lstrip("."))
        instances = (*site.instances, path) if site else (path,)
        self.choice_sites[key] = ChoiceSite(key, choice.name, labels, shared, instances,
                                            call.span, call, frame.parent_site)
        return _Tensor(node)

    def _partial_candidates(self, choice: ast.ChoiceDef, key: str, tensors: list[_Tensor],
                            extra: list, call: ast.Call, graphs: list[Graph]
                            ) -> tuple[Graph, ...]:
        """Each candidate built for the first 1/K of the input's channels (see
        `partial_network`); fails, naming the site, where that cannot stand in for it."""
        k = self.partial_channels
        where = f"choice site `{key}` cannot run on 1/{k} of its channels " \
                f"(partial_channels: {k})"
        if len(tensors) != 1:
            _fail(f"{where}: it has {len(tensors)} inputs; partial channels split one",
                  call.span)
        full = self.builder.info(tensors[0].id)
        if full.channels % k:
            _fail(f"{where}: its input has {full.channels} channels, not a multiple of {k}",
                  call.span)
        part = TensorInfo(full.channels // k, full.spatial)
        out = []
        for candidate, graph in zip(choice.candidates, graphs, strict=True):
            label = candidate_label(candidate)
            if holds_sites(self.program, candidate.func, self.memo_sites):
                _fail(f"{where}: candidate `{label}` holds choice or pick sites of its own",
                      call.span)
            made = graph.output_node
            if (made.channels, made.spatial) != (full.channels, full.spatial):
                _fail(f"{where}: candidate `{label}` turns {full.channels} channels "
                      f"({full.spatial.describe()}) into {made.channels} "
                      f"({made.spatial.describe()}); the channels that bypass the "
                      "candidates fit beside their output only if it keeps both", call.span)
            try:
                sliced = self._cached_candidate_graph(candidate, [part], extra, call)
            except _Failed as failure:
                note = (f"building candidate `{label}` of choice site `{key}` for "
                        f"{part.channels} of its {full.channels} input channels "
                        f"(partial_channels: {k})")
                failure.diagnostic = evolve(failure.diagnostic,
                                            notes=(*failure.diagnostic.notes, note))
                raise
            if sliced.output_node.channels != part.channels:
                _fail(f"{where}: candidate `{label}` gives {sliced.output_node.channels} "
                      f"channels for an input of {part.channels}; its output width must "
                      "follow its input's", call.span)
            out.append(sliced)
        return tuple(out)

    def _cached_candidate_graph(self, candidate: ast.Call, inputs: list[TensorInfo],
                                extra: list, site_call: ast.Call) -> Graph:
        """A candidate's graph depends only on its input shapes and extra numbers.

        The same choice in every cell would otherwise re-elaborate each candidate
        once per cell; graphs are immutable, so the sites share them.
        """
        numbers = tuple(value for value, _ in extra)
        if not all(isinstance(v, (int, float)) for v in numbers):
            return self._candidate_graph(candidate, inputs, extra, site_call)[0]
        key = (id(candidate), tuple(inputs), tuple((type(v), v) for v in numbers))
        graph = self.candidate_graphs.get(key)
        if graph is None:
            graph = self._candidate_graph(candidate, inputs, extra, site_call)[0]
            self.candidate_graphs[key] = graph
        return graph

    def _candidate_graph(self, candidate: ast.Call, inputs: list[TensorInfo], extra: list,
                         site_call: ast.Call, nested: tuple[str, tuple[str, int]] | None = None,
                         ) -> tuple[Graph, _Record | None]:
        """The graph of one candidate over fresh inputs of the given shapes. A candidate
        that holds sites (`nested`: their key prefix and the (site, index) they hang
        under) also gives the record of its body, for derivation."""
        outer = self.builder
        self.builder = _Builder(self.limits.nodes)
        try:
            inner = _Frame(ast.OpDef(candidate.func, (), ast.Body((), candidate)), prefix="",
                           scope="")
            if nested is not None:
                inner.key_prefix, inner.parent_site = nested
                inner.record = _Record("", nested[0])
                self._start_run(inner, None, candidate)
            names = []
            for i, info in enumerate(inputs):
                new = self.builder.add(op="input", inputs=(), channels=info.channels,
                                       spatial=info.spatial, path=f"x{i}", span=site_call.span)
                self.builder.inputs.append(new)
                names.append(_Tensor(new))
            call = ast.Call(candidate.func, candidate.args, candidate.keywords,
                            span=candidate.span, func_span=candidate.func_span)
            args = [(t, site_call.span) for t in names] + list(extra)
            args += self._values(call.args, inner, {}, value_path="")
            keywords = {k.name: (self._expr(k.value, inner, {}, value_path=""), k.value.span)
                        for k in call.keywords}
            definition = self.program.definitions.get(call.func)
            if call.func in PRIMITIVES:
                prim = PRIMITIVES[call.func]
                bound, spans = self._bind_primitive(prim, call, args, keywords)
                tensors_in = bound.pop("__tensors__")
                result = self._primitive(prim, tensors_in, bound, spans, call.span, inner, "")
            else:
                result = self._inline(call, definition, args, keywords, inner, "",
                                      candidate=True)
            if not isinstance(result, _Tensor):
                _fail(f"candidate `{candidate.func}` must give one tensor", candidate.span)
            record = None
            if inner.run is not None and id(call) in inner.run.calls:
                record = inner.run.calls[id(call)]
                record.path = inner.key_prefix or ""
            return self.builder.graph(result.id), record
        finally:
            self.builder = outer

    # -- pick sites
    def _pick(self, pick: ast.Pick, frame: _Frame, paths: dict[int, str],
              value_path: str) -> _PickValue:
        k = self._int(pick.k, frame, "pick count")
        exprs: list = []
        values: list = []
        owned: list[tuple[int, ...]] = []
        for candidate in pick.candidates:
            first = len(self.builder.nodes)
            found = self._values([candidate], frame, paths, value_path=value_path,
                                 exprs_out=exprs)
            made = tuple(range(first, len(self.builder.nodes)))
            owned.extend([made] if len(found) == 1 else [()] * len(found))
            values.extend(found)
        tensors = [self._tensor(v, s, "pick") for v, s in values]
        if k <= 0:
            _fail(f"pick count must be positive, got {k}", pick.k.span)
        if k > len(tensors):
            _fail(f"cannot pick {k} of {len(tensors)} candidate"
                  f"{'s' if len(tensors) != 1 else ''}", pick.span)
        if len({t.id for t in tensors}) != len(tensors):
            _fail("a candidate appears twice in this pick", pick.span)
        names = [self._value_name(frame, t.id) for t in tensors]
        infos = [self.builder.info(t.id) for t in tensors]
        for name, info in zip(names[1:], infos[1:], strict=True):
            if (info.channels, info.spatial) != (infos[0].channels, infos[0].spatial):
                _fail(f"pick candidates differ: `{names[0]}` has {infos[0].channels} channels "
                      f"({infos[0].spatial.describe()}), `{name}` has {info.channels} "
                      f"({info.spatial.describe()})", pick.span)
        return _PickValue(k, [t.id for t in tensors], names,
                          pick_site_base(frame.site_prefix, value_path), pick.span, pick, exprs,
                          owned)

    def _pick_node(self, prim: Primitive, pick: _PickValue, frame: _Frame) -> _Tensor:
        infos = [self.builder.info(i) for i in pick.ids]
        if pick.k == len(pick.ids):
            outputs = prim.infer(infos, {})
            node = self.builder.add(op=prim.name, inputs=tuple(pick.ids),
                                    channels=outputs[0].channels, spatial=outputs[0].spatial,
                                    scope=frame.scope, span=pick.span)
            if frame.run is not None:
                frame.run.picks[id(pick.node)] = PickRun("", tuple(pick.exprs), pick.k)
            return _Tensor(node)
        ordinal = self.counters.get(pick.base, 0)  # one count per base: choices and picks
        self.counters[pick.base] = ordinal + 1      # of one statement never share a key
        key = site_key(pick.base, ordinal)
        if frame.run is not None:
            frame.run.picks[id(pick.node)] = PickRun(key, tuple(pick.exprs), pick.k)
        channels = infos[0].channels * (pick.k if prim.name == "concat" else 1)
        node = self.builder.add(op="pick", inputs=tuple(pick.ids), channels=channels,
                                spatial=infos[0].spatial, scope=frame.scope, span=pick.span,
                                site=key, k=pick.k, aggregate=prim.name,
                                owned=tuple(pick.owned))
        self.pick_sites.append(PickSite(key, pick.k, tuple(pick.names), prim.name, pick.span,
                                        frame.prefix, pick.node, frame.parent_site))
        return _Tensor(node)

    def _channels(self, channels: int, span: ast.Span) -> None:
        if channels > self.limits.channels:
            _fail(f"{channels:,} channels; at most {self.limits.channels:,} (limit `channels`, "
                  "--max-channels)", span)

    @staticmethod
    def _positive(value: int, span: ast.Span, what: str) -> None:
        if value <= 0:
            _fail(f"{what} must be positive, got {value}", span)


def _layer_difference(a: Node, b: Node, nodes: list[Node]) -> tuple[str, str] | None:
    """How two weighted layers differ, as (a's side, b's side), or None if alike."""
    if a.op != b.op:
        return f"is a {a.op}", f"is a {b.op}"
    shapes = [(nodes[n.inputs[0]].channels, n.channels) for n in (a, b)]
    if shapes[0] != shapes[1]:
        return tuple(f"maps {i} → {o} channels" for i, o in shapes)
    keys = [k for k in a.args if a.args[k] != b.args.get(k)]
    if keys:
        return tuple("has " + ", ".join(f"{k}={n.args.get(k)}" for k in keys) for n in (a, b))
    return None


def _describe(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, tuple):
        return f"the constant {describe(value)}"
    if isinstance(value, str):
        return f'the string "{value}"'

    if isinstance(value, _Many):
        return "several values (assign them with a, b = ...)"
    return "a pick"
