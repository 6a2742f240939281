"""Fixtures shared by the test suites.

Kept light: nothing here imports torch, so the language tests start fast.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.paths import REPO as REPO_ROOT
from tests.paths import SPACES as SPACES_DIR

SHIPPED_SPACES = tuple(sorted(SPACES_DIR.glob("*.space")))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the folder holding `spaces/`)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def spaces_dir() -> Path:
    return SPACES_DIR


@pytest.fixture(scope="session")
def shipped_spaces() -> tuple[Path, ...]:
    """Every `.space` file that ships in `spaces/`."""
    return SHIPPED_SPACES


@pytest.fixture
def spec_error() -> Callable[..., str]:
    """`spec_error(text, path="t.space", **overrides)`: the rendered `SpecError`.

    The text is dedented first; the test fails if the text checks cleanly or if
    anything other than a `SpecError` escapes.
    """
    from spacelang.api import loads
    from spacelang.diagnostics import SpecError

    def run(text: str, path: str = "t.space", **overrides) -> str:
        try:
            loads(textwrap.dedent(text), path=path, **overrides)
        except SpecError as exc:
            return exc.render()
        pytest.fail("expected a SpecError, but the spec checked cleanly")

    return run


@pytest.fixture
def load_text() -> Callable[..., object]:
    """`load_text(text, path="t.space", **overrides)`: a checked `Space` (text dedented)."""
    from spacelang.api import loads

    def run(text: str, path: str = "t.space", **overrides):
        return loads(textwrap.dedent(text), path=path, **overrides)

    return run


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """`cli(*argv)`: run the `spacelang` command in-process; (exit code, stdout, stderr)."""
    from spacelang.cli import run_cli

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_cli(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _default_float_flags():
    """The CLI flushes denormal floats for the whole process; tests that run it in
    process must not leave that on for the next test (it changes numpy too)."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: more threads only add overhead (and thrash on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
