"""A plain (non-editable) install: build a wheel, install it in a fresh virtualenv, and
check a user's spec, kept outside the repository, that imports the shipped op library.

Offline and quick: the wheel is built without build isolation from a copy of the
sources, and the fresh environment borrows this environment's dependencies (lark,
attrs, …) through a `.pth` line; spacelang itself comes only from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.paths import REPO as REPO_ROOT

SOURCES = ("pyproject.toml", "README.md", "spacelang", "backends", "spaces")

USER_SPEC = textwrap.dedent("""\
    import "ops.space"

    network tiny(C = 8, scale = 2) {
        s = conv(input, C, k=3)
        x = act(sep_conv(s, 3)) + s
        return pixel_shuffle(conv(x, 3 * scale * scale, k=3), scale)
    }
    """)


def _run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `bin` folder of a fresh virtualenv holding spacelang installed from a wheel."""
    if any(not (REPO_ROOT / name).exists() for name in SOURCES):
        pytest.skip("not run from a source checkout")
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    dist = work / "dist"
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "--no-index", "-q", "-w", dist, source], work))
    (wheel,) = dist.glob("spacelang-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    assert "spacelang/spaces/ops.space" in names
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    thop = [line for line in requirements if "thop" in line]
    assert thop and all("extra ==" in line for line in thop), requirements

    venv = work / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", venv], work))
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                work)
    # this environment's packages come after the fresh one's own; a path added by a
    # .pth line runs none of its .pth files, so the editable spacelang stays out
    Path(_ok(site).stdout.strip(), "borrowed.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    _ok(_run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
              "-q", wheel], work))
    return bin_dir


def test_wheel_install_checks_a_user_spec_that_imports_the_op_library(installed, tmp_path):
    where = _ok(_run([installed / "python", "-c",
                      "import spacelang, spacelang.program as p; "
                      "print(spacelang.__file__); print(p.LIBRARY_DIR)"], tmp_path))
    package, library = where.stdout.splitlines()
    venv = installed.parent.resolve()
    assert Path(package).resolve().is_relative_to(venv)
    assert Path(library).resolve().is_relative_to(venv)

    (tmp_path / "mine.space").write_text(USER_SPEC)
    result = _ok(_run([installed / "spacelang", "check", "mine.space"], tmp_path))
    assert "network tiny" in result.stdout

    (tmp_path / "missing.space").write_text('import "no_such_library.space"\n')
    result = _run([installed / "spacelang", "check", "missing.space"], tmp_path)
    assert result.returncode == 2
    assert "cannot find imported file `no_such_library.space`" in result.stderr + result.stdout
    assert library in result.stderr + result.stdout
