"""`spacelang report` and `compile --graph`: a real short search run becomes one offline
page, checked in headless Debian chromium (Playwright pointed at the system browser)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from spacelang.api import loads
from spacelang.graph import to_dot
from spacelang.report import _pareto, read_run

SEARCH_SPEC = """\
op lite(x: c) { return conv(x, c, k=1) }
op wide(x: c) { return conv(x, c, k=3) }
op far(x: c) { return conv(x, c, k=3, dilation=2) }

choice light = [lite, wide, far]

cell block(x: C) shares light {
    r = lrelu(light(x) + x, slope=0.05)
    return conv(r, C, k=1)
}

network tinysearch(C = 4, scale = 2) {
    s = conv(input, C, k=3)
    b[1] = block(s)
    b[2] = block(b[1])
    x3 = conv(concat(pick 1 of b[1..2]), C, k=1)
    b[3] = block(x3)
    up = conv(b[3] + s, 3 * scale * scale, k=3)
    return pixel_shuffle(up, scale)
}
"""

SEARCH_CONFIG = """\
iterations: 8
arch_warmup: 2
patch_size: 16
batch_size: 2
epoch_length: 4
val_every: 4
log_every: 2
checkpoint_every: 4
budget_macs: 1.0e+9
"""

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SPACELANG_TEST_ARTIFACTS", "test-artifacts"))


def _photos(folder: Path) -> None:
    from spacelang.sr.images import write_image

    folder.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40
    for i in range(3):
        phase = rng.uniform(0, 2 * np.pi, 3)
        channels = [np.sin(2 * np.pi * (xx + yy * (c + 1) / 3) + phase[c]) for c in range(3)]
        write_image(folder / f"p{i}.png",
                    (np.stack(channels, -1) * 100 + 128).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """A real (short) `spacelang search` run folder."""
    pytest.importorskip("torch")
    from spacelang.cli import run_cli

    base = tmp_path_factory.mktemp("search")
    (base / "space.space").write_text(SEARCH_SPEC, encoding="utf-8")
    _photos(base / "photos")
    (base / "search.yaml").write_text(SEARCH_CONFIG + f"val_data: {base / 'photos'}\n",
                                      encoding="utf-8")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = run_cli(["search", str(base / "space.space"), "--config",
                        str(base / "search.yaml"), "--data", str(base / "photos"),
                        "--run-dir", str(base / "run"), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)
    assert code == 0
    return base / "run"


def test_read_run_tolerates_torn_lines_and_missing_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"iteration": 1, "loss": 0.5}\n{"iteration": 2, "lo',
                                       encoding="utf-8")
    (run / "arch.jsonl").write_text('{"iteration": 1}\n[1, 2]\n', encoding="utf-8")
    record = read_run(run)
    assert record.series("loss") == ([1.0], [0.5])
    assert record.series("val_psnr") == ([], [])
    assert record.space is None and record.config == {}


def test_pareto_front_keeps_points_nothing_beats():
    points = [(1.0, 30.0, "a"), (2.0, 29.0, "b"), (2.5, 31.0, "c"), (3.0, 31.0, "d")]
    assert [p[2] for p in _pareto(points)] == ["a", "c"]


def test_the_graph_boxes_cells_and_lists_unresolved_sites():
    dot = to_dot(loads(SEARCH_SPEC, path="t.space").network)
    assert '"b.1: block"' in dot and '"b.3: block"' in dot
    assert "choice" in dot and "lite | wide | far" in dot
    assert "pick 1 of 2" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_compile_draws_the_graph(cli, tmp_path):
    spec = tmp_path / "t.space"
    spec.write_text(SEARCH_SPEC, encoding="utf-8")
    code, _, err = cli("compile", str(spec), "--graph", str(tmp_path / "g.svg"))
    assert code == 0, err
    svg = (tmp_path / "g.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "b.2: block" in svg


def test_report_of_a_folder_that_is_no_run(cli, tmp_path):
    pytest.importorskip("plotly")
    code, _, err = cli("report", str(tmp_path), "-o", str(tmp_path / "r.html"))
    assert code == 2 and "holds no run" in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")
def test_report_of_a_search_run_renders_in_chromium(cli, search_run, tmp_path):
    """Every chart and the graph render with non-zero size and their labels; no console
    error; no network request; a screenshot is saved."""
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    playwright = pytest.importorskip("playwright.sync_api",
                                     reason="playwright (dev extra) is not installed")
    if BROWSER is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    page_path = tmp_path / "report.html"
    code, out, err = cli("report", str(search_run), "-o", str(page_path))
    assert code == 0, err
    assert "opens offline" in out
    text = page_path.read_text(encoding="utf-8")
    assert "http://" not in text.split("<script>")[0]  # nothing fetched by the document
    errors: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:"))
                    else requests.append(r.url))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            charts = page.evaluate("""() => [...document.querySelectorAll('.chart')].map(c => {
                const svg = c.querySelector('svg.main-svg');
                const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
                return {name: c.dataset.name, width: r.width, height: r.height,
                        text: c.textContent};
            })""")
            graph = page.evaluate("""() => { const s = document.querySelector('.graph svg');
                const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
                return {width: r.width, height: r.height, text: s ? s.textContent : ''}; }""")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert requests == []
    names = {c["name"] for c in charts}
    assert {"loss", "validation PSNR", "expected Multi-Adds", "site block.r",
            "site x3"} <= names, names
    for chart in charts:
        assert chart["width"] > 100 and chart["height"] > 100, chart
    site = next(c for c in charts if c["name"] == "site block.r")
    assert all(label in site["text"] for label in ("lite", "wide", "far"))
    assert "budget" in next(c for c in charts if c["name"] == "expected Multi-Adds")["text"]
    assert graph["width"] > 100 and graph["height"] > 100
    assert "b.3: block" in graph["text"]
    print(json.dumps({"screenshot": str(ARTIFACTS / "report.png"), "charts": len(charts)}))


def test_report_of_a_sweep_plots_psnr_against_cost(cli, search_run, tmp_path):
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("a", "b"):
        shutil.copytree(search_run, sweep / name, ignore=shutil.ignore_patterns("*.pt"))
    (sweep / "notes").mkdir()  # not a run
    code, _, err = cli("report", str(sweep))
    assert code == 0, err
    text = (sweep / "report.html").read_text(encoding="utf-8")
    assert "PSNR against Multi-Adds" in text and "Pareto front" in text
    assert text.count("<td>a</td>") == 1 and text.count("<td>b</td>") == 1


def test_report_takes_the_spec_when_the_run_copy_cannot_load(cli, search_run, tmp_path):
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    run = tmp_path / "run"
    shutil.copytree(search_run, run, ignore=shutil.ignore_patterns("*.pt"))
    (run / "spec.space").write_text('import "elsewhere.space"\n' + SEARCH_SPEC,
                                    encoding="utf-8")
    spec = tmp_path / "space.space"
    spec.write_text(SEARCH_SPEC, encoding="utf-8")
    assert cli("report", str(run), "-o", str(tmp_path / "bare.html"))[0] == 0
    assert cli("report", str(run), "-o", str(tmp_path / "named.html"), "--spec",
               str(spec))[0] == 0
    bare = (tmp_path / "bare.html").read_text(encoding="utf-8")
    named = (tmp_path / "named.html").read_text(encoding="utf-8")
    assert '"name":"wide"' not in bare and '"name":"#1"' in bare
    assert '"name":"wide"' in named


TRAIN_SPEC = """\
network plain(C = 4, scale = 2) {
    s = conv(input, C, k=3)
    return pixel_shuffle(conv(s, 3 * scale * scale, k=3), scale)
}
"""


def test_report_of_a_training_run_has_curves_graph_and_table(cli, tmp_path):
    pytest.importorskip("plotly", reason="the report extra (plotly) is not installed")
    run = tmp_path / "train"
    run.mkdir()
    (run / "spec.space").write_text(TRAIN_SPEC, encoding="utf-8")
    (run / "config.yaml").write_text("iterations: 4\nscale: 2\n", encoding="utf-8")
    records = [{"iteration": 2, "loss": 0.3, "lr": 1e-3},
               {"iteration": 4, "loss": 0.2, "val_psnr": 27.5, "val_ssim": 0.8}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records),
                                       encoding="utf-8")
    code, _, err = cli("report", str(run))
    assert code == 0, err
    text = (run / "report.html").read_text(encoding="utf-8")
    assert "spacelang train run" in text and 'data-name="validation PSNR"' in text
    assert "27.5000" in text and "Network plain" in text
    assert "Architecture weights" not in text
