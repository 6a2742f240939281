"""The package's import structure: no cycles, no function-local imports of the
torch-free modules, and a front end that imports no torch."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = ("spacelang", "spacelang.backends")


def _modules() -> dict[str, Path]:
    """Every module of the package (`spacelang.backends` lives in its own folder)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if package == "spacelang" and name.startswith("spacelang.backends"):
                continue
            found[name] = path
    return found


MODULES = _modules()


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The spacelang modules an import statement loads (a package's own name for
    names that are not submodules)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if MODULES[module].name != "__init__.py":
                package = package[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                   for alias in node.names]
    return [t for t in targets if t in MODULES or t == "torch" or t.startswith("torch.")]


def _imports(module: str) -> list[tuple[str, str, int]]:
    """(imported module, where, line) for each import: where is "top", "typing" (under
    `if TYPE_CHECKING:`) or "function"."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    out: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((target, where, child.lineno)
                           for target in dict.fromkeys(_imported(child, module)))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function")
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, "typing" if where == "top" else where)
            else:
                visit(child, where)

    visit(tree, "top")
    return out


IMPORTS = {module: _imports(module) for module in MODULES}


# The torch half of the layering (training, search, the SR task, torch lowering):
# the front end loads these on demand, whether or not a module imports torch itself.
TORCH_LAYERS = ("spacelang.sr", "spacelang.nas", "spacelang.runtime",
                "spacelang.backends.torch")


def _torch_side() -> set[str]:
    """Modules of the torch layers, and modules that import torch when they are
    imported (directly or through others)."""
    side = {m for m, imports in IMPORTS.items()
            if any(t.split(".")[0] == "torch" and w == "top" for t, w, _ in imports)
            or m.startswith(TORCH_LAYERS)}
    changed = True
    while changed:
        changed = False
        for module, imports in IMPORTS.items():
            if module not in side and any(t in side and w == "top" for t, w, _ in imports):
                side.add(module)
                changed = True
    return side


TORCH_SIDE = _torch_side()


def test_the_walk_sees_the_package():
    assert {"spacelang.api", "spacelang.checker", "spacelang.backends.torch.supernet",
            "spacelang.cli"} <= set(MODULES)
    assert "spacelang.backends.torch.ops" in TORCH_SIDE
    assert "spacelang.checker" not in TORCH_SIDE
    assert ("spacelang.ir", "top") in {(t, w) for t, w, _ in IMPORTS["spacelang.checker"]}


def test_no_import_cycle_among_the_modules():
    """Every import counts, lazy and typing-only ones too: a cycle hidden behind
    `TYPE_CHECKING` or a function-local import is still a cycle."""
    graph = {m: sorted({t for t, _, _ in imports if t in MODULES and t != m})
             for m, imports in IMPORTS.items()}
    # a package's lazy exports (`spacelang.load`) are its __init__'s business
    graph["spacelang"] = [t for t in graph["spacelang"]
                          if not any(w == "function" and t == tt
                                     for tt, w, _ in IMPORTS["spacelang"])]
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in graph:
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_function_local_import_of_a_torch_free_module():
    """Loading a torch-side module on demand is the one exception; a package
    `__init__` may export lazily."""
    offenders = [
        f"{MODULES[module]}:{line}: imports {target} inside a function"
        for module, imports in IMPORTS.items() if MODULES[module].name != "__init__.py"
        for target, where, line in imports
        if where == "function" and target in MODULES and target not in TORCH_SIDE
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("code", [
    "import spacelang.api, spacelang.derive, spacelang.strategies, spacelang.backends.cost",
    "import spacelang.cli; spacelang.cli.build_parser()",
    "import spacelang.cli as c; c.run_cli(['check', 'spaces/dlsr.space'])",
])
def test_the_front_end_imports_no_torch(code):
    root = Path(__file__).resolve().parents[1]
    probe = f"{code}\nimport sys\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=root, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


def test_the_front_end_modules_are_torch_free():
    front_end = {"spacelang.api", "spacelang.ast", "spacelang.checker", "spacelang.constants",
                 "spacelang.decisions", "spacelang.derive", "spacelang.diagnostics",
                 "spacelang.ir", "spacelang.naming", "spacelang.parser", "spacelang.printer",
                 "spacelang.program", "spacelang.cli", "spacelang.backends.cost"}
    assert not front_end & TORCH_SIDE
