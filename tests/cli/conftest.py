"""Fixtures of the CLI tests that run models: a tiny fixed spec, run in an empty folder."""

from __future__ import annotations

from pathlib import Path

import pytest

#: A fixed ×`scale` network small enough to train in a few steps.
TINY = """\
network tiny(C = 8, scale = 2) {
    s = conv(input, C, k=3)
    up = conv(s, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that a default `runs/` would land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def spec(tmp_path) -> Path:
    """`tiny.space` (the `TINY` network) in the test's folder."""
    path = tmp_path / "tiny.space"
    path.write_text(TINY, encoding="utf-8")
    return path
