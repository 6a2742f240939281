"""Loading a `.space` file with its imports into one namespace of definitions."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from attrs import frozen

from spacelang import ast
from spacelang.diagnostics import SpecError, error
from spacelang.parser import parse, without_bom
from spacelang.primitives import PRIMITIVES

#: Where `import "ops.space"` looks after the importing file's own folder: the shipped
#: spaces (the repository's `spaces/`, installed as the package data `spacelang.spaces`).
LIBRARY_DIR = Path(str(files("spacelang.spaces")))

Definition = ast.ChoiceDef | ast.OpDef | ast.CellDef | ast.NetworkDef


@frozen
class Program:
    """A root module, everything it imports, and the definitions they make."""

    root: ast.Module
    modules: tuple[ast.Module, ...]
    definitions: dict[str, Definition]
    sources: dict[str, str]

    @property
    def networks(self) -> list[ast.NetworkDef]:
        return [d for d in self.root.items if isinstance(d, ast.NetworkDef)]

    def files_for_copy(self, name: str) -> dict[str, str]:
        """The files a copy of the root saved as `name` in another folder (a run folder)
        needs in order to load there: the root's text, and each imported file under its
        path relative to the root's folder. The shipped library resolves from anywhere and
        is left out, as is a file outside the root's folder (it cannot be placed)."""
        files = {name: self.root.source}
        home = Path(_key(self.root.path)).parent if not self.root.path.startswith("<") \
            else Path.cwd()
        library = Path(_key(str(LIBRARY_DIR)))
        for module in self.modules:
            path = Path(_key(module.path))
            if module is self.root or path.is_relative_to(library):
                continue
            if path.is_relative_to(home):
                files.setdefault(path.relative_to(home).as_posix(), module.source)
        return files


def load_program(path: str | Path, text: str | None = None) -> Program:
    """Parse `path` (or `text` under that name) and its imports; raises `SpecError`."""
    path = str(path)
    sources: dict[str, str] = {}
    if text is None:
        text = _read(path, None, sources)
    modules: list[ast.Module] = []
    seen: dict[str, ast.Module] = {}

    def visit(file: str, source: str, chain: tuple[str, ...]) -> ast.Module:
        source = without_bom(source)  # the text diagnostics show, as the parser reads it
        sources[file] = source
        try:
            module = parse(source, file)
        except SpecError as exc:
            raise SpecError(exc.diagnostics, sources) from None
        seen[_key(file)] = module
        for item in module.items:
            if not isinstance(item, ast.Import):
                continue
            target = _resolve_import(item, file, sources)
            key = _key(target)
            if key in {_key(p) for p in chain} or key == _key(file):
                cycle = " → ".join(Path(p).name for p in (*chain, file, target))
                raise SpecError([error(f"cyclic import: {cycle}", item.span)], sources)
            if key in seen:
                continue
            visit(target, _read(target, item.span, sources), (*chain, file))
        modules.append(module)
        return module

    root = visit(path, text, ())
    definitions: dict[str, Definition] = {}
    problems = []
    for module in modules:
        for item in module.items:
            if isinstance(item, ast.Import):
                continue
            if item.name in PRIMITIVES:
                problems.append(error(f"`{item.name}` is a primitive op and cannot be redefined",
                                      item.name_span))
            elif item.name in definitions:
                first = definitions[item.name].name_span
                problems.append(error(
                    f"duplicate definition of `{item.name}`", item.name_span,
                    f"first defined at {first.path}:{first.line}:{first.column}"))
            else:
                definitions[item.name] = item
    if problems:
        raise SpecError(problems, sources)
    return Program(root, tuple(modules), definitions, sources)


def _key(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def _resolve_import(item: ast.Import, importer: str, sources: dict[str, str]) -> str:
    here = Path(importer).parent if not importer.startswith("<") else Path.cwd()
    candidates = [here / item.path, LIBRARY_DIR / item.path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
        if candidate.exists():
            what = "a directory" if candidate.is_dir() else "not a regular file"
            raise SpecError([error(f"imported `{item.path}` is {what}: {candidate}", item.span,
                                   "import a .space file")], sources)
    searched = ", ".join(str(folder) for folder in (here, LIBRARY_DIR))
    raise SpecError([error(f"cannot find imported file `{item.path}`", item.span,
                           f"looked in {searched}")], sources)


def _read(path: str, span: ast.Span | None, sources: dict[str, str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
        if "\x00" in text:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "a NUL byte")
        return text
    except FileNotFoundError:
        message = f"no such file: {path}"
    except IsADirectoryError:
        message = f"{path} is a directory, not a .space file"
    except UnicodeDecodeError:
        message = f"{path} is not a UTF-8 text file"
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}"
    raise SpecError([error(message, span)], sources)
