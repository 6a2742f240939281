"""Where the tests find the repository's files, and the shared data and reference weights
(`../shared`, which may be absent: tests that need it skip)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
SPACES = REPO / "spaces"
SHARED = (REPO.parent / "shared").resolve()
EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    """The script ``examples/<name>.py`` as a module, registered in `sys.modules` (attrs
    classes need their module registered; `time_to_architecture` imports
    `search_vs_random` by that name)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
