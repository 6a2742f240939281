"""Derivation: decisions for every choice and pick site → a fixed `.space`.

Derivation reads the IR, not the source a second time: `Network.body` is the
tree of elaborated bodies that hold sites, each statement run with its loop
variables and, for its choice calls, picks and cell calls, the site key or
instance the checker gave them. Each body is printed with its choice calls
replaced by the chosen candidate and its picks by the kept values; loops in
such bodies are unrolled; a chosen candidate cell with sites of its own is
derived as a cell instance is. Instances of one cell that derive to the same body
share one definition (a shared choice keeps the cell's name); differing ones
become one cell per instance (`rfdb_b_3`). Parameters take the values used.
"""

from __future__ import annotations

from typing import Any

from spacelang import ast
from spacelang.constants import substitute
from spacelang.decisions import Decisions, normalize
from spacelang.ir import Instance, Network, Run
from spacelang.naming import holds_sites
from spacelang.printer import format_module
from spacelang.program import Program

_PLACEHOLDER = "\0"  # a derived body's call of a derived cell, before naming: "\0<version>"


class _Deriver:
    def __init__(self, program: Program, chosen: dict[str, Any], params: dict[str, int]):
        self.program = program
        self.chosen = chosen
        self.params = params  # the network's parameters, to read indices such as b[cells]
        self.versions: dict[tuple[str, ast.Body], int] = {}  # (definition, body) → version
        self.first_path: dict[int, str] = {}

    def instance(self, instance: Instance) -> tuple[ast.Body, int]:
        """The derived body of an instance and its version number."""
        statements: list[ast.Assign] = []
        result = None
        params = self.params if instance.path == "" else {}
        runs = _live_runs(instance.runs, params, self.chosen)
        for run in runs:
            env = dict(run.loop_env)
            value = self._expr(run.value, run, env)
            if run.statement is None:
                result = value
                continue
            targets = tuple(ast.Target(t.name, None if t.index is None else
                                       substitute(t.index, env)) for t in run.statement.targets)
            shares = run.statement.shares
            statements.append(ast.Assign(targets, value,
                                         None if shares is None else substitute(shares, env)))
        body = ast.Body(tuple(statements), result)
        version = self.versions.setdefault((instance.definition, body), len(self.versions))
        self.first_path.setdefault(version, instance.path)
        return body, version

    def _expr(self, expr, run: Run, env: dict[str, int]):
        # A site that the checker dropped as dead (it does not reach the output) has no
        # decision; any candidate derives the same network, so the first is printed.
        if isinstance(expr, ast.BinOp):
            return substitute(ast.BinOp(expr.op, self._expr(expr.left, run, env),
                                        self._expr(expr.right, run, env), span=expr.span), {})
        if isinstance(expr, ast.Neg):
            return substitute(ast.Neg(self._expr(expr.operand, run, env), span=expr.span), {})
        if not isinstance(expr, ast.Call):
            return substitute(expr, env)
        args: list = []
        for arg in expr.args:
            if isinstance(arg, ast.Pick) and id(arg) in run.picks:
                pick = run.picks[id(arg)]
                kept = (self.chosen.get(pick.key, range(pick.k)) if pick.key
                        else range(len(pick.candidates)))
                args.extend(self._expr(pick.candidates[i], run, env) for i in kept)
            else:
                args.append(self._expr(arg, run, env))
        keywords = tuple(ast.Keyword(k.name, self._expr(k.value, run, env))
                         for k in expr.keywords)
        if id(expr) in run.choices:
            choice = self.program.definitions[expr.func]
            index = self.chosen.get(run.choices[id(expr)], 0)
            candidate = choice.candidates[index]
            func = candidate.func
            inner = run.candidates.get(id(expr), ())
            if index < len(inner) and inner[index] is not None:  # a cell with its own sites
                _, version = self.instance(inner[index])
                func = f"{_PLACEHOLDER}{version}"
            return ast.Call(func, tuple(args) + candidate.args, keywords + candidate.keywords)
        func = expr.func
        if id(expr) in run.calls:
            _, version = self.instance(run.calls[id(expr)])
            func = f"{_PLACEHOLDER}{version}"
        return ast.Call(func, tuple(args), keywords)


_EVERY = -1  # a reference to every member of an indexed family (an index not known here)


def _references(expr, params: dict[str, int], out: set[tuple[str, Any]]) -> None:
    """Add the values `expr` reads to `out`, as (name, index) with index None for a plain
    name and `_EVERY` where the index is not a constant under `params`."""
    if isinstance(expr, ast.Name):
        out.add((expr.name, None))
    elif isinstance(expr, ast.Index):
        _references(expr.index, params, out)  # a number statement such as `last = cells`
        index = substitute(expr.index, params)
        out.add((expr.name, index.value if isinstance(index, ast.Int) else _EVERY))
    elif isinstance(expr, ast.Slice):
        _references(expr.lo, params, out)
        _references(expr.hi, params, out)
        lo, hi = substitute(expr.lo, params), substitute(expr.hi, params)
        if isinstance(lo, ast.Int) and isinstance(hi, ast.Int):
            out.update((expr.name, i) for i in range(lo.value, hi.value + 1))
        else:
            out.add((expr.name, _EVERY))
    elif isinstance(expr, ast.Call):
        for arg in expr.args:
            _references(arg, params, out)
        for keyword in expr.keywords:
            _references(keyword.value, params, out)
    elif isinstance(expr, ast.BinOp):
        _references(expr.left, params, out)
        _references(expr.right, params, out)
    elif isinstance(expr, ast.Neg):
        _references(expr.operand, params, out)
    elif isinstance(expr, ast.Vector):
        for item in expr.items:
            _references(item, params, out)
    elif isinstance(expr, ast.Pick):
        for candidate in expr.candidates:
            _references(candidate, params, out)


def _kept(expr, run: Run, chosen: dict[str, Any]):
    """`expr` with each pick replaced by the candidates it keeps under `chosen`."""
    if isinstance(expr, ast.BinOp):
        return ast.BinOp(expr.op, _kept(expr.left, run, chosen), _kept(expr.right, run, chosen))
    if isinstance(expr, ast.Neg):
        return ast.Neg(_kept(expr.operand, run, chosen))
    if not isinstance(expr, ast.Call):
        return expr
    args: list = []
    for arg in expr.args:
        if isinstance(arg, ast.Pick) and id(arg) in run.picks:
            pick = run.picks[id(arg)]
            kept = (chosen.get(pick.key, range(pick.k)) if pick.key
                    else range(len(pick.candidates)))
            args.extend(_kept(pick.candidates[i], run, chosen) for i in kept)
        else:
            args.append(_kept(arg, run, chosen))
    return ast.Call(expr.func, tuple(args),
                    tuple(ast.Keyword(k.name, _kept(k.value, run, chosen))
                          for k in expr.keywords))


def _live_runs(runs, params: dict[str, int], chosen: dict[str, Any]) -> list[Run]:
    """The runs whose values reach the body's result once every pick keeps only its
    chosen candidates: a derived network holds no dead statements (no cells after an
    early exit)."""
    live: set[tuple[str, Any]] = set()
    kept = []
    for run in reversed(runs):
        env = {**params, **dict(run.loop_env)}
        if run.statement is not None:
            names = []
            for target in run.statement.targets:
                index = None if target.index is None else substitute(target.index, env)
                names.append((target.name, index.value if isinstance(index, ast.Int)
                              else index if index is None else _EVERY))
            if not any(name in live or (name[0], _EVERY) in live or name[1] == _EVERY
                       for name in names):
                continue
            if run.statement.shares is not None:
                _references(substitute(run.statement.shares, env), params, live)
        _references(_substitute_all(_kept(run.value, run, chosen), env), params, live)
        kept.append(run)
    return kept[::-1]


def _substitute_all(expr, env: dict[str, int]):
    """`substitute` through calls, so that indices inside arguments are resolved."""
    if isinstance(expr, ast.Call):
        return ast.Call(expr.func, tuple(_substitute_all(a, env) for a in expr.args),
                        tuple(ast.Keyword(k.name, _substitute_all(k.value, env))
                              for k in expr.keywords))
    if isinstance(expr, ast.BinOp):
        return ast.BinOp(expr.op, _substitute_all(expr.left, env),
                         _substitute_all(expr.right, env))
    if isinstance(expr, ast.Neg):
        return ast.Neg(_substitute_all(expr.operand, env))
    return substitute(expr, env)


def _rename(expr, names: dict[str, str]):
    if isinstance(expr, ast.Call):
        return ast.Call(names.get(expr.func, expr.func),
                        tuple(_rename(a, names) for a in expr.args),
                        tuple(ast.Keyword(k.name, _rename(k.value, names))
                              for k in expr.keywords))
    if isinstance(expr, ast.BinOp):
        return ast.BinOp(expr.op, _rename(expr.left, names), _rename(expr.right, names))
    if isinstance(expr, ast.Neg):
        return ast.Neg(_rename(expr.operand, names))
    return expr


def _renamed(body: ast.Body, names: dict[str, str]) -> ast.Body:
    return ast.Body(tuple(ast.Assign(s.targets, _rename(s.value, names), s.shares)
                          for s in body.statements), _rename(body.result, names))


def derive_module(program: Program, network: Network, decisions: Decisions) -> ast.Module:
    """The derived spec as an AST (every choice and pick resolved)."""
    chosen = normalize(network, decisions)
    width = network.width_site
    source = network.variants[chosen[width.key]] if width is not None else network
    deriver = _Deriver(program, chosen, source.params)
    assert network.body is not None, "a checked network records its body"
    network_body, network_version = deriver.instance(network.body)

    root_names = {getattr(item, "name", None) for item in program.root.items}
    by_definition: dict[str, list[tuple[int, ast.Body]]] = {}
    for (definition, body), version in deriver.versions.items():
        if version != network_version:
            by_definition.setdefault(definition, []).append((version, body))
    names: dict[str, str] = {}
    for definition, versions in by_definition.items():
        base = definition if definition in root_names else f"{definition}_derived"
        for version, _ in versions:
            suffix = deriver.first_path[version].replace(".", "_")
            names[f"{_PLACEHOLDER}{version}"] = (base if len(versions) == 1
                                                 else f"{base}_{suffix}")
    derived: dict[str, ast.CellDef] = {}
    for definition, versions in by_definition.items():
        original = program.definitions[definition]
        for version, body in versions:
            name = names[f"{_PLACEHOLDER}{version}"]
            derived[name] = ast.CellDef(name, original.params, (), _renamed(body, names))

    network_def = next(n for n in program.networks if n.name == network.name)
    params = tuple(
        ast.IntParam(p.name, ast.Int(source.params[p.name])) if isinstance(p, ast.IntParam)
        else p for p in network_def.params)
    network_item = ast.NetworkDef(network_def.name, params, _renamed(network_body, names))

    memo: dict[str, bool] = {}
    items: list = []
    for item in program.root.items:
        if isinstance(item, ast.ChoiceDef):
            continue
        if isinstance(item, ast.NetworkDef):
            if item.name == network_def.name:
                items.extend(d for name, d in derived.items() if name not in root_names)
                items.append(network_item)
            continue
        if isinstance(item, (ast.OpDef, ast.CellDef)):
            if item.name in derived:
                items.append(derived[item.name])
                continue
            if holds_sites(program, item.name, memo):
                continue
        items.append(item)
    return ast.Module(tuple(items), path=program.root.path)


def derive_text(program: Program, network: Network, decisions: Decisions,
                header: str = "") -> str:
    """The derived spec as canonical `.space` text, with an optional header comment."""
    text = format_module(derive_module(program, network, decisions))
    if header:
        lines = [f"# {line}".rstrip() for line in header.rstrip("\n").splitlines()]
        text = "\n".join(lines) + "\n\n" + text
    return text


__all__ = ["derive_module", "derive_text"]
