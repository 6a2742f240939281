"""Where the tests find the repository's files, and the shared data and reference weights
(`../shared`, which may be absent: tests that need it skip)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPACES = REPO / "spaces"
SHARED = (REPO.parent / "shared").resolve()
