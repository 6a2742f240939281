"""examples/search_vs_random.py: its drawing, reading and writing, and a --quick run."""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spacelang
from tests.paths import load_example

TOY = """
import "ops.space"

choice light = [conv_1x1, conv_3x3, sep_conv_3x3]

cell block(x: C) shares light {
    r = act(light(x) + x)
    return r
}

network toy(C = 4, scale = 2) {
    fea = conv(input, C, k=3)
    b[1] = block(fea)
    b[2] = block(b[1])
    b[3] = block(b[2])
    x = act(conv(concat(pick 2 of b[1..3]), C, k=1))
    up = conv(x + fea, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""


@pytest.fixture(scope="module")
def script():
    return load_example("search_vs_random")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.space"
    path.write_text(TOY)
    return spacelang.load(path)


@pytest.mark.parametrize(("text", "value"), [
    ("12G", 12 * 10**9), ("300K", 300_000), ("1.5M", 1_500_000), ("6.5e9", 6_500_000_000),
    (7, 7), (" 20g ", 20 * 10**9),
])
def test_budgets_are_read_by_the_one_count_parser(script, text, value):
    assert script.parse_count(text) == value


def test_drawing_the_whole_space_yields_every_architecture_once(script, toy):
    total = toy.network.architecture_count
    draws = script.draw_architectures(toy, total + 5, seed=3)
    assert len(draws) == total
    seen = {(tuple(d[s.key] for s in toy.network.choice_sites),
             tuple(tuple(d[s.key]) for s in toy.network.pick_sites)) for d in draws}
    expected = set(itertools.product(
        itertools.product(*(s.labels for s in toy.network.choice_sites)),
        itertools.product(*(tuple(itertools.combinations(s.candidates, s.k))
                            for s in toy.network.pick_sites))))
    assert seen == expected


def test_draws_are_uniform_per_site(script):
    space = spacelang.load(Path(script.REPO) / "spaces" / "dlsr.space", C=4)
    draws = script.draw_architectures(space, 900, seed=0)
    site = space.network.choice_sites[0]
    counts = [sum(d[site.key] == label for d in draws) for label in site.labels]
    expected = len(draws) / len(site.labels)
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 26.1  # 8 degrees of freedom, p = 0.001


def test_written_architectures_are_fixed_specs_that_check(script, toy, tmp_path):
    for index, decisions in enumerate(script.draw_architectures(toy, 4, seed=1)):
        path = script.write_fixed(toy, decisions, tmp_path / f"a{index}.space")
        fixed = spacelang.load(path)
        assert fixed.is_fixed
        assert fixed.cost().base.macs == toy.derived(decisions).cost().base.macs


def test_search_config_states_the_budget_in_multi_adds(script):
    cfg = script.search_config(script.FULL, "12G", seed=1)
    assert cfg["budget_macs"] == 12 * 10**9
    assert cfg["seed"] == 1
    assert cfg["iterations"] == script.FULL.search["iterations"]


def test_the_full_protocol_meets_the_issue(script):
    full = script.FULL
    assert full.random >= 8 and len(full.budgets) >= 3 and len(full.seeds) >= 2
    assert full.require_margin and full.margin_db >= 1.0
    space = spacelang.load(full.spec, **full.width)
    report = space.cost()
    macs = [script.parse_count(b) for b in full.budgets]
    lowest = report.extreme("macs", min)
    highest = report.extreme("macs", max)
    assert all(lowest < m < highest for m in macs)


rows_strategy = st.lists(
    st.tuples(st.integers(1, 50), st.floats(20, 40, allow_nan=False)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(rows_strategy)
def test_the_random_front_is_what_nothing_beats(script, points):
    rows = [{"name": f"r{i}", "macs": m, "psnr": p} for i, (m, p) in enumerate(points)]
    front = script.random_front(rows)
    for f in front:  # nothing on the front is beaten at equal or lower cost
        assert not any(r["macs"] <= f["macs"] and r["psnr"] > f["psnr"] for r in rows)
    for r in rows:  # everything else is matched by a front point at equal or lower cost
        assert any(f["macs"] <= r["macs"] and f["psnr"] >= r["psnr"] for f in front)


def test_summary_and_tables(script, tmp_path):
    rows = [
        {"name": "dlsr", "kind": "reference", "params": 9, "macs": 10e9, "psnr": 35.0,
         "ssim": 0.9},
        {"name": "s0", "kind": "searched", "budget": "8G", "seed": 0, "params": 5,
         "macs": 7e9, "psnr": 35.2, "ssim": 0.9},
        {"name": "s1", "kind": "searched", "budget": "8G", "seed": 1, "params": 5,
         "macs": 9e9, "psnr": 34.0, "ssim": 0.9},
        {"name": "r1", "kind": "random", "params": 5, "macs": 6e9, "psnr": 35.1, "ssim": 0.9},
        {"name": "r2", "kind": "random", "params": 5, "macs": 20e9, "psnr": 35.5, "ssim": 0.9},
    ]
    summary = script.summarize(rows, {"psnr": 33.5, "ssim": 0.92}, margin_db=1.0)
    entry = summary["budgets"]["8G"]
    assert entry["psnr_mean"] == pytest.approx(34.6)
    assert entry["psnr_std"] == pytest.approx(0.8485, abs=1e-4)
    assert entry["on_or_above_random_front"] == 1  # s0 beats r1; s1 does not
    assert summary["below_bar"] == ["s1"]
    assert summary["random_front"] == ["r1", "r2"]
    script.write_tables(tmp_path, rows, summary, {"val": "Set5", "scale": 2, "margin_db": 1.0})
    with (tmp_path / "results.csv").open() as f:
        assert [r["name"] for r in csv.DictReader(f)] == [r["name"] for r in rows]
    text = (tmp_path / "results.md").read_text()
    assert "34.60 ± 0.85" in text and "Bicubic: 33.50 dB" in text
    assert json.loads((tmp_path / "results.json").read_text())["summary"]["bar_psnr"] == 34.5


def test_quick_run_end_to_end(script, tmp_path):
    """The whole pipeline at toy size (about 30 s on 2 idle cores): in the default suite,
    so that a config key the script writes cannot drift from the configs' own."""
    pytest.importorskip("skimage")
    plot = importlib.util.find_spec("matplotlib") is not None
    args = ["--quick", "--out", str(tmp_path), "--data", "embedded", "--val", "embedded",
            "--jobs", "2", *([] if plot else ["--no-plot"])]
    assert script.main(args) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    kinds = sorted(r["kind"] for r in result["rows"])
    quick = script.QUICK
    assert kinds == sorted(["reference"] + ["searched"] * len(quick.budgets) * len(quick.seeds)
                           + ["random"] * quick.random)
    for row in result["rows"]:
        spec = spacelang.load(tmp_path / row["spec"])
        assert spec.is_fixed
        assert spec.cost().base.macs == row["macs"]
        assert row["psnr"] > 0
    assert result["summary"]["bicubic"]["images"] == 2
    assert (tmp_path / "psnr_vs_macs.png").exists() == plot
    # a second run reuses every finished network
    assert script.main([*args, "--no-plot"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == result["rows"]
    assert script.main([*args, "--calibrate"]) == 0
    assert (tmp_path / "runs" / "calibrate" / "cheapest" / "metrics.jsonl").exists()
