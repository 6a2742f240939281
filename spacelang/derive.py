"""Derivation: decisions for every choice and pick site → a fixed `.space`.

Decisions map each choice site key to a candidate (index or label) and each
pick site key to the candidates kept (indices or value names). The derived
spec is written at the level of the source: loops that hold picks are
unrolled, shared choices are resolved in their cell, per-instance choices give
one specialised cell per instance, and parameters take the values used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from spacelang import ast
from spacelang.checker import (
    _calls_in,
    _flatten,
    entity_calls,
    entity_paths,
    site_key,
    target_path,
)
from spacelang.diagnostics import SpecError, error
from spacelang.ir import Network

if TYPE_CHECKING:
    from spacelang.api import Space

Decision = Union[int, str, Sequence[int | str]]
Decisions = Mapping[str, Decision]


def normalize(network: Network, decisions: Decisions) -> dict[str, Any]:
    """Decisions as indices: `int` per choice site, sorted `tuple` per pick site."""
    out: dict[str, Any] = {}
    known = {s.key for s in network.choice_sites} | {s.key for s in network.pick_sites}
    for key in decisions:
        if key not in known:
            raise SpecError([error(f"no choice or pick site named `{key}` in "
                                   f"`{network.name}` (sites: {', '.join(sorted(known))})",
                                   None)])
    for site in network.choice_sites:
        if site.key not in decisions:
            raise SpecError([error(f"no decision for choice site `{site.key}`", None)])
        value = decisions[site.key]
        if isinstance(value, str):
            if value not in site.labels:
                raise SpecError([error(f"`{value}` is not a candidate of `{site.key}` "
                                       f"({', '.join(site.labels)})", None)])
            value = site.labels.index(value)
        if not isinstance(value, int) or not 0 <= value < len(site.labels):
            raise SpecError([error(f"decision for `{site.key}` must be a candidate index "
                                   f"0..{len(site.labels) - 1} or label, got {value!r}", None)])
        out[site.key] = int(value)
    for site in network.pick_sites:
        if site.key not in decisions:
            raise SpecError([error(f"no decision for pick site `{site.key}`", None)])
        raw = decisions[site.key]
        values = [site.candidates.index(v) if isinstance(v, str) and v in site.candidates
                  else v for v in raw]
        if (len(set(values)) != site.k or any(not isinstance(v, int) for v in values)
                or any(not 0 <= v < len(site.candidates) for v in values)):
            raise SpecError([error(f"decision for pick site `{site.key}` must be {site.k} "
                                   f"distinct candidates of {list(site.candidates)}, got "
                                   f"{list(raw)!r}", None)])
        out[site.key] = tuple(sorted(values))
    return out


def _fold(expr, env: Mapping[str, int]):
    """Substitute loop variables and fold constant arithmetic."""
    if isinstance(expr, ast.Name) and expr.name in env:
        return ast.Int(env[expr.name])
    if isinstance(expr, ast.BinOp):
        left, right = _fold(expr.left, env), _fold(expr.right, env)
        if isinstance(left, ast.Int) and isinstance(right, ast.Int):
            a, b = left.value, right.value
            if expr.op == "+":
                return ast.Int(a + b)
            if expr.op == "-":
                return ast.Int(a - b)
            if expr.op == "*":
                return ast.Int(a * b)
            if b and expr.op == "//":
                return ast.Int(a // b)
            if b and expr.op == "/" and a % b == 0:
                return ast.Int(a // b)
        return ast.BinOp(expr.op, left, right)
    if isinstance(expr, ast.Neg):
        inner = _fold(expr.operand, env)
        return ast.Int(-inner.value) if isinstance(inner, ast.Int) else ast.Neg(inner)
    if isinstance(expr, ast.Index):
        return ast.Index(expr.name, _fold(expr.index, env))
    if isinstance(expr, ast.Slice):
        return ast.Slice(expr.name, _fold(expr.lo, env), _fold(expr.hi, env))
    if isinstance(expr, ast.Call):
        return ast.Call(expr.func, tuple(_fold(a, env) for a in expr.args),
                        tuple(ast.Keyword(k.name, _fold(k.value, env)) for k in expr.keywords))
    if isinstance(expr, ast.Pick):
        return ast.Pick(_fold(expr.k, env), tuple(_fold(c, env) for c in expr.candidates))
    return expr


def _int_value(expr, params: Mapping[str, int]) -> int:
    folded = _fold(expr, params)
    if not isinstance(folded, ast.Int):
        raise SpecError([error("cannot evaluate this bound while deriving", expr.span)])
    return folded.value


def _unroll(statements, params: Mapping[str, int], env: dict[str, int]) -> list[ast.Assign]:
    out = []
    for statement in statements:
        if isinstance(statement, ast.ForLoop):
            scope = {**params, **env}
            lo, hi = _int_value(statement.lo, scope), _int_value(statement.hi, scope)
            for i in range(lo, hi + 1):
                out.extend(_unroll(statement.body, params, {**env, statement.var: i}))
        else:
            targets = tuple(ast.Target(t.name, None if t.index is None else _fold(t.index, env))
                            for t in statement.targets)
            out.append(ast.Assign(targets, _fold(statement.value, env)))
    return out


class _Rewriter:
    """Rewrites one statement's choice calls and picks from the decisions."""

    def __init__(self, space: Space, decisions: dict[str, Any]):
        self.network = space.network
        self.decisions = decisions
        self.definitions = space.program.definitions
        self.memo: dict[str, bool] = {}  # which definitions own weights (entity naming)

    def statement(self, expr, base: str, choice_key):
        counters = {"choice": 0, "pick": 0}
        return self._expr(expr, base, counters, choice_key)

    def _expr(self, expr, base, counters, choice_key):
        if isinstance(expr, ast.BinOp):
            return ast.BinOp(expr.op, self._expr(expr.left, base, counters, choice_key),
                             self._expr(expr.right, base, counters, choice_key))
        if not isinstance(expr, ast.Call):
            return expr
        args: list = []
        for arg in expr.args:
            if isinstance(arg, ast.Pick):
                args.extend(self._pick(arg, base, counters))
            else:
                args.append(self._expr(arg, base, counters, choice_key))
        keywords = tuple(ast.Keyword(k.name, self._expr(k.value, base, counters, choice_key))
                         for k in expr.keywords)
        definition = self.definitions.get(expr.func)
        if isinstance(definition, ast.ChoiceDef):
            key = site_key(choice_key(expr), counters["choice"])
            counters["choice"] += 1
            candidate = definition.candidates[self.decisions[key]]
            return ast.Call(candidate.func, tuple(args) + candidate.args,
                            keywords + candidate.keywords)
        return ast.Call(expr.func, tuple(args), keywords)

    def _pick(self, pick: ast.Pick, base: str, counters) -> list:
        candidates: list = []
        for candidate in pick.candidates:
            if isinstance(candidate, ast.Slice):
                lo, hi = _int_value(candidate.lo, self.network.params), _int_value(
                    candidate.hi, self.network.params)
                candidates.extend(ast.Index(candidate.name, ast.Int(i)) for i in range(lo, hi + 1))
            else:
                candidates.append(candidate)
        k = _int_value(pick.k, self.network.params)
        if k == len(candidates):
            return candidates
        key = site_key(base or "pick", counters["pick"])
        counters["pick"] += 1
        return [candidates[i] for i in self.decisions[key]]


def derive_module(space: Space, decisions: Decisions) -> ast.Module:
    """The derived spec as an AST (every choice and pick resolved)."""
    chosen = normalize(space.network, decisions)
    program = space.program
    network_def = next(n for n in program.networks if n.name == space.network.name)
    rewriter = _Rewriter(space, chosen)
    params = space.network.params
    cells_with_choices: dict[str, tuple[ast.CellDef, bool]] = {}
    for name, definition in program.definitions.items():
        if not isinstance(definition, ast.CellDef):
            continue
        choices = [c.func for c in _calls_in(definition)
                   if isinstance(program.definitions.get(c.func), ast.ChoiceDef)]
        if choices:
            per_instance = any(c not in definition.shares for c in choices)
            cells_with_choices[name] = (definition, per_instance)
    shared_rewrites: dict[str, ast.CellDef] = {}
    specialised: list[ast.CellDef] = []
    root_names = {getattr(item, "name", None) for item in program.root.items}

    def derived_cell_name(name: str, instance: str | None) -> str:
        base = name if name in root_names else f"{name}_derived"
        return base if instance is None else f"{base}_{instance.replace('.', '_')}"

    def rewrite_cell(cell: ast.CellDef, instance: str | None) -> ast.CellDef:
        if any(isinstance(s, ast.ForLoop) for s in cell.body.statements):
            raise SpecError([error(f"cannot derive cell `{cell.name}`: loops in cells with "
                                   "choices are not supported; unroll the loop", cell.span)])
        statements = []
        for statement, _ in _flatten(cell.body.statements):
            first = statement.targets[0]
            index = None if first.index is None else _int_value(first.index, {})
            value = target_path(first.name, index)

            def key(call, value=value):
                if call.func in cell.shares:
                    return ".".join(p for p in (cell.name, value) if p)
                return ".".join(p for p in (instance, value) if p)

            statements.append(ast.Assign(statement.targets,
                                         rewriter.statement(statement.value, value, key)))

        def result_key(call):
            return cell.name if call.func in cell.shares else instance

        result = rewriter.statement(cell.body.result, "", result_key)
        return ast.CellDef(derived_cell_name(cell.name, instance), cell.params, (),
                           ast.Body(tuple(statements), result))

    network_statements = []
    for statement in _unroll(network_def.body.statements, params, {}):
        first = statement.targets[0]
        index = None if first.index is None else _int_value(first.index, params)
        value_path = target_path(first.name, index)
        paths = entity_paths(entity_calls(program, statement.value, rewriter.memo), value_path)

        def network_key(call, value_path=value_path):
            return value_path or call.func

        value = _rename_cells(statement.value, paths, cells_with_choices, shared_rewrites,
                              specialised, rewrite_cell)
        value = rewriter.statement(value, value_path, network_key)
        network_statements.append(ast.Assign(statement.targets, value))
    result = rewriter.statement(
        _rename_cells(network_def.body.result,
                      entity_paths(entity_calls(program, network_def.body.result,
                                                rewriter.memo), ""),
                      cells_with_choices, shared_rewrites, specialised, rewrite_cell),
        "", lambda call: call.func)

    new_params = tuple(
        ast.IntParam(p.name, ast.Int(params[p.name])) if isinstance(p, ast.IntParam) else p
        for p in network_def.params)
    network = ast.NetworkDef(network_def.name, new_params,
                             ast.Body(tuple(network_statements), result))
    items: list = []
    for item in program.root.items:
        if isinstance(item, ast.ChoiceDef):
            continue
        if isinstance(item, ast.CellDef) and item.name in cells_with_choices:
            if item.name in shared_rewrites:
                items.append(shared_rewrites[item.name])
            continue
        if isinstance(item, ast.NetworkDef):
            if item.name == network_def.name:
                items.extend(c for c in shared_rewrites.values()
                             if c.name not in root_names)
                items.extend(specialised)
                items.append(network)
            continue
        items.append(item)
    return ast.Module(tuple(items), path=program.root.path)


def _rename_cells(expr, paths, cells_with_choices, shared_rewrites, specialised, rewrite_cell):
    """Point calls of cells with choices at their derived definitions."""
    if isinstance(expr, ast.BinOp):
        return ast.BinOp(expr.op, *(
            _rename_cells(e, paths, cells_with_choices, shared_rewrites, specialised,
                          rewrite_cell) for e in (expr.left, expr.right)))
    if not isinstance(expr, ast.Call):
        return expr
    args = tuple(_rename_cells(a, paths, cells_with_choices, shared_rewrites, specialised,
                               rewrite_cell) for a in expr.args)
    cell, per_instance = cells_with_choices.get(expr.func, (None, False))
    if cell is None:
        return ast.Call(expr.func, args, expr.keywords)
    if not per_instance:
        if cell.name not in shared_rewrites:
            shared_rewrites[cell.name] = rewrite_cell(cell, None)
        return ast.Call(shared_rewrites[cell.name].name, args, expr.keywords)
    derived = rewrite_cell(cell, paths.get(id(expr), ""))
    specialised.append(derived)
    return ast.Call(derived.name, args, expr.keywords)


def derive_text(space: Space, decisions: Decisions, header: str = "") -> str:
    """The derived spec as canonical `.space` text, with an optional header comment."""
    from spacelang.backends.text import format_module

    text = format_module(derive_module(space, decisions))
    if header:
        lines = [f"# {line}".rstrip() for line in header.rstrip("\n").splitlines()]
        text = "\n".join(lines) + "\n\n" + text
    return text


__all__ = ["Decisions", "derive_module", "derive_text", "normalize"]
