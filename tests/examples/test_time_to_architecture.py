"""examples/time_to_architecture.py: its configs, reading, tables and a --quick run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import spacelang
from spacelang.sr.config import SearchConfig
from tests.paths import load_example


@pytest.fixture(scope="module")
def script():
    return load_example("time_to_architecture")


def test_every_method_is_a_valid_search_config_over_the_shared_protocol(script):
    for method in script.METHODS:
        config = script.search_config(script.FULL, method, seed=3)
        cfg = SearchConfig(**{k: v for k, v in config.items()})
        assert cfg.seed == 3 and cfg.budget == 12 * 10**9 and cfg.log_every == 5
        assert cfg.iterations == script.FULL.protocol.search["iterations"]
        if method != script.BASELINE:
            assert cfg.prune_every > 0 and cfg.prune_keep == 1  # these end when decided
    assert script.search_config(script.FULL, "darts", 0)["strategy"] == "darts1"
    assert script.search_config(script.FULL, "gdas+pc4+prune", 0)["strategy"] == "gdas"


def test_the_same_network_found_twice_is_retrained_once(script, tmp_path):
    body = spacelang.load(Path(spacelang.__file__).parents[1] / "spaces" / "dlsr_derived.space",
                          C=8)
    first, second = tmp_path / "a.space", tmp_path / "b.space"
    first.write_text(body.derive({}, header="run: a\nλ = 1"))
    second.write_text(body.derive({}, header="run: b"))
    assert script.architecture_key(first) == script.architecture_key(second)
    other = spacelang.load(Path(spacelang.__file__).parents[1] / "spaces" / "dlsr_derived.space",
                           C=12)
    (tmp_path / "c.space").write_text(other.derive({}))
    assert script.architecture_key(tmp_path / "c.space") != script.architecture_key(first)


def _row(method, seed, seconds, psnr, macs=10e9):
    return {"name": f"{method}-s{seed}", "method": method, "seed": seed,
            "settled_seconds": seconds, "settled_iteration": 100, "search_seconds": seconds,
            "macs": macs, "psnr": psnr, "censored": False}


def test_summary_states_the_ratio_and_the_spread_test(script, tmp_path):
    rows = [_row("darts", 0, 200.0, 35.0), _row("darts", 1, 220.0, 35.2),
            _row("pc4+prune", 0, 20.0, 34.95), _row("pc4+prune", 1, 22.0, 34.99),
            _row("gdas+pc4+prune", 0, 10.0, 34.0), _row("gdas+pc4+prune", 1, 12.0, 34.2)]
    setting = script.attrs.evolve(script.FULL, methods=("darts", "pc4+prune",
                                                        "gdas+pc4+prune"))
    summary = script.summarize(rows, setting)["methods"]
    assert summary["darts"]["speedup"] == 1.0
    assert summary["pc4+prune"]["speedup"] == pytest.approx(210 / 21)
    # darts: 35.1 ± 0.141; 34.97 is within one std below, 34.1 is not
    assert summary["pc4+prune"]["within_baseline_spread"] is True
    assert summary["gdas+pc4+prune"]["within_baseline_spread"] is False
    assert summary["gdas+pc4+prune"]["psnr_vs_baseline"] == pytest.approx(-1.0)
    for row in rows:
        row.update(params=1, ssim=0.9, retrained_as=row["name"], spec="specs/x.space",
                   search_iterations=100)
    script.write_tables(tmp_path, rows, {"methods": summary},
                        {"val": "Set5", "scale": 2, "budget": "12G", "seeds": [0, 1]},
                        {"psnr": 33.6})
    text = (tmp_path / "results.md").read_text()
    assert "| pc4+prune | 21.0 ± 1.4 | 10.0 |" in text
    assert json.loads((tmp_path / "results.json").read_text())["rows"][0]["name"] == "darts-s0"


def test_an_unknown_method_or_a_missing_baseline_is_refused(script, capsys):
    assert script.main(["--methods", "darts,fast"]) == 2
    assert "fast" in capsys.readouterr().err
    assert script.main(["--methods", "pc4+prune"]) == 2
    assert "darts" in capsys.readouterr().err


def test_quick_run_end_to_end(script, tmp_path):
    """Two methods at toy size (about 40 s on 2 idle cores): in the default suite, so that
    a config key the script writes cannot drift from the configs' own."""
    pytest.importorskip("skimage")
    args = ["--quick", "--out", str(tmp_path), "--data", "embedded", "--val", "embedded",
            "--jobs", "2", "--methods", "darts,pc4+prune"]
    assert script.main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["name"] for r in result["rows"]) == [
        "darts-s0", "darts-s1", "pc4+prune-s0", "pc4+prune-s1"]
    for row in result["rows"]:
        spec = spacelang.load(tmp_path / row["spec"])
        assert spec.is_fixed and spec.cost().base.macs == row["macs"]
        assert 0 < row["settled_seconds"] <= row["search_seconds"]
        assert row["settled_iteration"] <= row["search_iterations"]
    assert set(result["summary"]["methods"]) == {"darts", "pc4+prune"}
    # a second run reuses every finished search and retraining
    assert script.main(args) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
