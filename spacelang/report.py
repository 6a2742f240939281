"""A run folder as one self-contained HTML page (charts by plotly, the graph by Graphviz).

Reads what `search` and `train` write: ``metrics.jsonl`` (loss, lr, expected cost,
validation PSNR/SSIM), ``arch.jsonl`` (α/β logits per site), ``config.yaml``,
``spec.space`` and ``derived.space``. A folder without ``metrics.jsonl`` whose
subfolders are runs is a sweep: its page adds PSNR against Multi-Adds with the Pareto
front. Missing files and keys leave their section out. The page inlines plotly.js and
the SVG, so it opens offline.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from spacelang.api import Space, load
from spacelang.backends.cost import cost_report
from spacelang.graph import GraphError, render_svg, to_dot

__all__ = ["ReportError", "RunRecord", "read_run", "write_report"]

_PSNR_KEYS = ("val_psnr", "val_psnr_derived")
_SSIM_KEYS = ("val_ssim", "val_ssim_derived")


class ReportError(Exception):
    """The folder is not a run or a sweep, or the report's extra is missing."""


def _records(path: Path) -> list[dict[str, Any]]:
    """The complete JSON objects of a JSONL file (a torn or bad line is skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@attrs.frozen
class RunRecord:
    """What a run folder holds (any part may be empty)."""

    path: Path
    metrics: tuple[dict[str, Any], ...]
    arch: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    config_text: str
    space: Space | None
    derived: Space | None

    @property
    def kind(self) -> str:
        return "search" if self.arch or self.derived is not None else "train"

    def series(self, key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for record in self.metrics:
            x, y = _number(record.get("iteration")), _number(record.get(key))
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        return xs, ys

    def last(self, keys: Sequence[str]) -> float | None:
        for record in reversed(self.metrics):
            for key in keys:
                value = _number(record.get(key))
                if value is not None:
                    return value
        return None

    def best(self, keys: Sequence[str]) -> float | None:
        values = [v for r in self.metrics for k in keys if (v := _number(r.get(k))) is not None]
        return max(values) if values else None

    def final_network(self) -> Space | None:
        if self.derived is not None:
            return self.derived
        if self.space is not None and self.space.network.is_fixed:
            return self.space
        return None


def _load_space(path: Path, overrides: dict[str, Any]) -> Space | None:
    if not path.is_file():
        return None
    try:
        return load(path, **{k: str(v) for k, v in overrides.items()})
    except Exception:
        try:
            return load(path)
        except Exception:
            return None


def read_run(path: str | os.PathLike[str],
             spec: str | os.PathLike[str] | None = None) -> RunRecord:
    """Read one run folder, tolerating missing files, keys and torn lines.

    The search space comes from ``spec`` when given, else from the folder's copy
    ``spec.space`` (`search` copies the files it imports beside it; the shipped library
    resolves from anywhere).
    """
    base = Path(path)
    config_text = ""
    config: dict[str, Any] = {}
    if (base / "config.yaml").is_file():
        config_text = (base / "config.yaml").read_text(encoding="utf-8", errors="replace")
        try:
            loaded = yaml.safe_load(config_text)
        except yaml.YAMLError:
            loaded = None
        config = loaded if isinstance(loaded, dict) else {}
    overrides = config.get("overrides") if isinstance(config.get("overrides"), dict) else {}
    return RunRecord(
        path=base,
        metrics=tuple(_records(base / "metrics.jsonl")),
        arch=tuple(_records(base / "arch.jsonl")),
        config=config,
        config_text=config_text,
        space=_load_space(Path(spec) if spec else base / "spec.space", overrides or {}),
        derived=_load_space(base / "derived.space", {}),
    )


def _is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() or (path / "arch.jsonl").is_file()


# --------------------------------------------------------------------------- charts


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        import plotly.offline
    except ImportError:
        raise ReportError("the report draws its charts with plotly, which is not installed: "
                          "pip install 'spacelang[report]'") from None
    return go, plotly.offline


class _Page:
    def __init__(self, title: str) -> None:
        self.title = title
        self.sections: list[str] = []
        self.charts = 0

    def section(self, heading: str, body: str) -> None:
        self.sections.append(f"<section><h2>{html.escape(heading)}</h2>{body}</section>")

    def chart(self, figure: Any, name: str, height: int = 320) -> str:
        self.charts += 1
        figure.update_layout(height=height, margin={"l": 50, "r": 20, "t": 40, "b": 40},
                             template="plotly_white")
        div = figure.to_html(full_html=False, include_plotlyjs=False,
                             div_id=f"chart-{self.charts}",
                             config={"displaylogo": False, "responsive": True})
        return f'<div class="chart" data-name="{html.escape(name)}">{div}</div>'

    def render(self, plotly_js: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>"
                f"<script>{plotly_js}</script></head><body>"
                f"<h1>{html.escape(self.title)}</h1>" + "".join(self.sections)
                + "</body></html>\n")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ddd; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 8px; }
.graph { overflow: auto; border: 1px solid #ddd; max-height: 900px; }
.graph svg { display: block; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 8px; overflow: auto; }
"""


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def _site_labels(space: Space | None) -> dict[str, tuple[str, ...]]:
    if space is None:
        return {}
    labels = {site.key: site.labels for site in space.network.choice_sites}
    labels.update({site.key: site.candidates for site in space.network.pick_sites})
    return labels


def _curves(page: _Page, run: RunRecord, go: Any) -> list[str]:
    charts = []
    loss_keys = [k for k in ("loss", "arch_loss") if run.series(k)[0]]
    if loss_keys:
        figure = go.Figure([go.Scatter(x=run.series(k)[0], y=run.series(k)[1], name=k,
                                       mode="lines") for k in loss_keys])
        figure.update_layout(title="loss", xaxis_title="iteration")
        charts.append(page.chart(figure, "loss"))
    psnr_key = next((k for k in _PSNR_KEYS if run.series(k)[0]), None)
    if psnr_key:
        xs, ys = run.series(psnr_key)
        figure = go.Figure([go.Scatter(x=xs, y=ys, name=psnr_key, mode="lines+markers")])
        figure.update_layout(title="validation PSNR (dB)", xaxis_title="iteration")
        charts.append(page.chart(figure, "validation PSNR"))
    for key, title, unit in (("expected_macs", "expected Multi-Adds", 1e9),
                             ("expected_params", "expected parameters", 1e3)):
        xs, ys = run.series(key)
        if not xs:
            continue
        suffix = "G" if unit == 1e9 else "K"
        traces = [go.Scatter(x=xs, y=[y / unit for y in ys], name=title, mode="lines")]
        budget = _number(run.config.get("budget_macs" if key == "expected_macs"
                                        else "budget_params"))
        if budget is not None:
            traces.append(go.Scatter(x=[xs[0], xs[-1]], y=[budget / unit] * 2, name="budget",
                                     mode="lines", line={"dash": "dash", "color": "#c33"}))
        figure = go.Figure(traces)
        figure.update_layout(title=f"{title} ({suffix})", xaxis_title="iteration")
        charts.append(page.chart(figure, title))
    return charts


def _site_charts(page: _Page, run: RunRecord, go: Any) -> list[str]:
    labels = _site_labels(run.space)
    sites: dict[str, tuple[list[float], list[list[float]]]] = {}
    for record in run.arch:
        iteration = _number(record.get("iteration"))
        arch = record.get("arch")
        if iteration is None or not isinstance(arch, dict):
            continue
        for key, logits in arch.items():
            if not isinstance(logits, list) or not logits or \
                    any(_number(v) is None for v in logits):
                continue
            xs, rows = sites.setdefault(str(key), ([], []))
            xs.append(iteration)
            rows.append(_softmax([float(v) for v in logits]))
    charts = []
    for key, (xs, rows) in sites.items():
        width = max(len(r) for r in rows)
        names = list(labels.get(key, ()))
        names += [f"#{i}" for i in range(len(names), width)]
        traces = [go.Scatter(x=xs, y=[r[i] if i < len(r) else None for r in rows],
                             name=names[i], mode="lines") for i in range(width)]
        figure = go.Figure(traces)
        figure.update_layout(title=f"site {key}", xaxis_title="iteration",
                             yaxis={"title": "softmax", "range": [0, 1]},
                             legend={"font": {"size": 9}})
        charts.append(page.chart(figure, f"site {key}", height=300))
    return charts


def _graph(space: Space) -> str:
    try:
        return f'<div class="graph">{render_svg(to_dot(space.network))}</div>'
    except GraphError as exc:
        return f"<p>(graph not drawn: {html.escape(str(exc))})</p>"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td class=\"num\">{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def _final_rows(run: RunRecord) -> list[tuple[str, str]]:
    rows = [("kind", run.kind)]
    iterations = [i for r in run.metrics if (i := _number(r.get("iteration"))) is not None]
    if iterations:
        rows.append(("last iteration", f"{max(iterations):.0f}"))
    for name, keys, pick in (("last loss", ("loss",), run.last),
                             ("best validation PSNR (dB)", _PSNR_KEYS, run.best),
                             ("last validation SSIM", _SSIM_KEYS, run.last)):
        value = pick(keys)
        if value is not None:
            rows.append((name, f"{value:.4f}"))
    final = run.final_network()
    if final is not None:
        cost = cost_report(final.network).base
        rows += [("network", final.network.name), ("parameters", f"{cost.params:,}"),
                 ("Multi-Adds (HR 1280×720)", f"{cost.macs / 1e9:.2f} G")]
    if run.arch and isinstance(run.arch[-1].get("decisions"), dict):
        for key, value in run.arch[-1]["decisions"].items():
            labels = _site_labels(run.space).get(str(key), ())
            picked = value if isinstance(value, list) else [value]
            names = [labels[i] if isinstance(i, int) and 0 <= i < len(labels) else str(i)
                     for i in picked]
            rows.append((f"decision {key}", ", ".join(names)))
    return rows


def _run_sections(page: _Page, run: RunRecord, go: Any) -> None:
    curves = _curves(page, run, go)
    if curves:
        page.section("Training", f'<div class="grid">{"".join(curves)}</div>')
    sites = _site_charts(page, run, go)
    if sites:
        page.section("Architecture weights (softmax of α / β per site)",
                     f'<div class="grid">{"".join(sites)}</div>')
    final = run.final_network()
    if final is not None:
        page.section(f"Network {final.network.name}", _graph(final))
    page.section("Result", _table(_final_rows(run)))
    if run.config_text:
        page.section("Config", f"<pre>{html.escape(run.config_text)}</pre>")


def _pareto(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points no other point beats on both lower Multi-Adds and higher PSNR."""
    front, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p[0], -p[1])):
        if point[1] > best:
            front.append(point)
            best = point[1]
    return front


def _sweep_sections(page: _Page, runs: list[RunRecord], go: Any) -> None:
    points = []
    rows = []
    for run in runs:
        final = run.final_network()
        psnr = run.best(_PSNR_KEYS)
        macs = cost_report(final.network).base.macs if final is not None else None
        rows.append((run.path.name, "n/a" if psnr is None else f"{psnr:.3f} dB",
                     "n/a" if macs is None else f"{macs / 1e9:.2f} G"))
        if psnr is not None and macs is not None:
            points.append((macs / 1e9, psnr, run.path.name))
    if points:
        front = _pareto(points)
        figure = go.Figure([
            go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers",
                       text=[p[2] for p in points], name="runs"),
            go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines+markers",
                       name="Pareto front", line={"shape": "hv"}),
        ])
        figure.update_layout(title="PSNR against Multi-Adds", xaxis_title="Multi-Adds (G)",
                             yaxis_title="best validation PSNR (dB)")
        page.section("Sweep", page.chart(figure, "PSNR against Multi-Adds", height=420))
    body = "".join(f"<tr><td>{html.escape(a)}</td><td class=\"num\">{html.escape(b)}</td>"
                   f"<td class=\"num\">{html.escape(c)}</td></tr>" for a, b, c in rows)
    page.section("Runs", "<table><tr><th>run</th><th>best PSNR</th><th>Multi-Adds</th></tr>"
                 f"{body}</table>")


def write_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str], *,
                 spec: str | os.PathLike[str] | None = None) -> Path:
    """Write the HTML page for a run or sweep folder; returns the output path.

    ``spec``: the searched space, when the run folder's copy cannot be loaded on its own
    (its imports are not in the run folder); it names the candidates of each site.
    """
    go, offline = _plotly()
    base = Path(run_dir)
    if not base.is_dir():
        raise ReportError(f"run folder {base} does not exist")
    if _is_run(base):
        run = read_run(base, spec)
        page = _Page(f"spacelang {run.kind} run {base.name}")
        _run_sections(page, run, go)
    else:
        subruns = [read_run(p, spec) for p in sorted(base.iterdir()) if p.is_dir() and _is_run(p)]
        if not subruns:
            raise ReportError(f"{base} holds no run (metrics.jsonl or arch.jsonl) and no "
                              "folders of runs")
        page = _Page(f"spacelang sweep {base.name} ({len(subruns)} runs)")
        _sweep_sections(page, subruns, go)
    target = Path(output)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(page.render(offline.get_plotlyjs()), encoding="utf-8")
    os.replace(tmp, target)
    return target
