"""The README's main job, end to end: the default search on the embedded photographs.

Marked slow (a few minutes on 2 cores); `make test-slow` runs it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import spacelang
from spacelang.runtime.config import load_config
from spacelang.sr.config import SearchConfig
from tests.paths import REPO

pytestmark = pytest.mark.slow


def test_default_search_writes_a_derived_spec_the_toolchain_accepts(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "spacelang", "search", "spaces/dlsr.space", "--run-dir",
         str(run_dir), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    derived = run_dir / "derived.space"
    assert f"derived architecture written to {derived}" in done.stdout
    for name in ("config.yaml", "spec.space", "metrics.jsonl", "arch.jsonl", "last.pt"):
        assert (run_dir / name).is_file(), name
    space = spacelang.load(derived)
    assert space.is_fixed and space.network.params["C"] == 16
    for command in (["check"], ["fmt", "--check"], ["flops"]):
        result = subprocess.run([sys.executable, "-m", "spacelang", *command, str(derived)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (command, result.stderr)
    # the done-when: neither corner of the space, within ±25 % of the budget
    cfg = load_config(SearchConfig, REPO / "spacelang" / "configs" / "search_small.yaml")
    searched = spacelang.load(REPO / "spaces" / "dlsr.space", **cfg.overrides).cost()
    macs = space.cost().base.macs
    assert searched.extreme("macs", min) < macs < searched.extreme("macs", max)
    assert 0.75 * cfg.budget <= macs <= 1.25 * cfg.budget
