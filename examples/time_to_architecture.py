"""Time-to-architecture: how soon each search strategy settles, and what its answer is worth.

The same space, budget, data and retraining as `search_vs_random.py` (its `FULL`
protocol: `spaces/dlsr.space` at C = 16, T91 → Set5 ×2, 200 search updates of which 60
warm up the weights, every network retrained for 1,800 steps), searched with:

    darts             first-order DARTS, every candidate on every channel (the baseline)
    pc4+prune         partial channels, K = 4 (PC-DARTS), and every 5 architecture steps
                      each site drops its least likely candidate (sparing the derived
                      one) until one is left
    gdas+pc4+prune    GDAS (one sampled candidate per site runs), K = 4, the same pruning
    darts+prune       DARTS with the same pruning: what pruning alone buys

A search that prunes ends once every site is decided (`spacelang search` stops there).

Time-to-architecture is `spacelang.nas.search.settled`: the wall time, from the start of
the search loop, of the first logged update (every 5 updates) from which the derived
architecture no longer changes to the end of the run. A run whose last logged update
still changed it gets its whole time: a lower bound on when it would settle. Each
derived architecture is retrained (identical architectures once) and evaluated on the
validation set. Writes into OUT (default `runs/time_to_architecture`):

    results.json / results.csv / results.md     one row per search, and per method:
                                                time-to-architecture, its ratio to darts,
                                                Multi-Adds and PSNR (mean ± std over seeds)
    specs/*.space                               every derived architecture

    python examples/time_to_architecture.py --jobs 2     # about 45 min on 2 idle cores
    python examples/time_to_architecture.py --quick      # a smoke run: a minute or two

Searches run first, all of them, then the retrainings, so no retraining competes with
a timed search; ``--jobs`` runs side by side (1 thread each for 2 jobs on 2 cores).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_vs_random as protocol_base
from search_vs_random import Context, bicubic_baseline, cli, retrain, write_yaml

import spacelang
from spacelang.nas.search import settled
from spacelang.runtime.log import MetricsLog

REPO = protocol_base.REPO

#: The search options of each method, over the protocol's search config.
#: Retrained in this order (the baseline and the cheapest searches first; the ablation,
#: pruning alone, last).
METHODS: dict[str, dict[str, Any]] = {
    "darts": {},
    "pc4+prune": {"partial_channels": 4, "prune_every": 5, "prune_keep": 1},
    "gdas+pc4+prune": {"strategy": "gdas", "partial_channels": 4, "prune_every": 5,
                       "prune_keep": 1},
    "darts+prune": {"prune_every": 5, "prune_keep": 1},
}
BASELINE = "darts"


@attrs.frozen(kw_only=True)
class Setting:
    """What decides the numbers: the search-evidence protocol, one budget, the seeds."""

    protocol: protocol_base.Protocol
    budget: str = "12G"
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    log_every: int = 5


FULL = Setting(protocol=protocol_base.FULL)
QUICK = Setting(protocol=attrs.evolve(
    protocol_base.QUICK,
    search={**protocol_base.QUICK.search, "iterations": 12, "arch_warmup": 2}),
    budget="1G", seeds=(0, 1), log_every=1)


def search_config(setting: Setting, method: str, seed: int) -> dict[str, Any]:
    """The search config of one (method, seed): the protocol's, logged every
    ``log_every`` updates, with the method's options."""
    config = protocol_base.search_config(setting.protocol, setting.budget, seed)
    return {**config, "log_every": setting.log_every, **METHODS[method]}


def architecture_key(spec: Path) -> str:
    """A derived spec without its comments: two searches that found the same network
    have the same key."""
    lines = spec.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


def run_search(ctx: Context, setting: Setting, method: str, seed: int) -> dict[str, Any]:
    """Search with ``method`` and ``seed``; the row with its time-to-architecture
    (cached on disk)."""
    name = f"{method}-s{seed}"
    folder = ctx.out / "runs" / name
    result = folder / "search.json"
    if result.exists():
        return json.loads(result.read_text(encoding="utf-8"))
    run_dir = folder / "search"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = write_yaml(ctx.out / "configs" / f"search-{name}.yaml",
                        search_config(setting, method, seed))
    overrides = [f"--set={k}={v}" for k, v in setting.protocol.width.items()]
    started = time.monotonic()
    cli(["search", str(setting.protocol.spec), "--config", str(config), "--data", ctx.data,
         "--run-dir", str(run_dir), "--no-progress", *overrides], folder / "log.txt",
        ctx.threads)
    wall = time.monotonic() - started
    records = MetricsLog.read_records(run_dir / "metrics.jsonl")
    logged = [r for r in records if "architecture" in r]
    since = settled(records)
    spec = ctx.out / "specs" / f"{name}.space"
    spec.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "derived.space", spec)
    row = {"name": name, "method": method, "seed": seed,
           "settled_iteration": since.iteration, "settled_seconds": round(since.elapsed, 1),
           # the last logged update still changed it: settled is a lower bound
           "censored": len(logged) > 1 and logged[-1]["architecture"] != logged[-2][
               "architecture"],
           "search_iterations": int(records[-1]["iteration"]),
           "search_seconds": round(float(records[-1]["elapsed"]), 1),
           "wall_seconds": round(wall, 1),
           "spec": str(spec.relative_to(ctx.out))}
    result.write_text(json.dumps(row, indent=2), encoding="utf-8")
    return row


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: Sequence[Mapping[str, Any]], setting: Setting) -> dict[str, Any]:
    """Per method: mean ± std of time-to-architecture, Multi-Adds and PSNR; the time
    ratio to the baseline; whether the PSNR is within the baseline's seed spread (its
    mean at least the baseline's mean minus the baseline's std)."""
    methods: dict[str, dict[str, Any]] = {}
    for method in setting.methods:
        group = [r for r in rows if r["method"] == method]
        if not group:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in group]}
        for field in ("settled_seconds", "settled_iteration", "search_seconds", "macs", "psnr"):
            entry[f"{field}_mean"], entry[f"{field}_std"] = _mean_std(
                [float(r[field]) for r in group])
        entry["censored"] = sum(bool(r["censored"]) for r in group)
        methods[method] = entry
    base = methods.get(BASELINE)
    if base is not None:
        for entry in methods.values():
            entry["speedup"] = base["settled_seconds_mean"] / entry["settled_seconds_mean"]
            entry["psnr_vs_baseline"] = entry["psnr_mean"] - base["psnr_mean"]
            entry["within_baseline_spread"] = (
                entry["psnr_mean"] >= base["psnr_mean"] - base["psnr_std"])
    return {"methods": methods}


_COLUMNS = ("name", "method", "seed", "settled_iteration", "settled_seconds", "censored",
            "search_iterations", "search_seconds", "params", "macs", "psnr", "ssim",
            "retrained_as", "spec")


def write_tables(out: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                 setting: Mapping[str, Any], bicubic: Mapping[str, float]) -> None:
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(
        {"setting": setting, "bicubic": dict(bicubic), "summary": summary, "rows": list(rows)},
        indent=2, default=str), encoding="utf-8")
    lines = [f"Validation: {setting['val']} ×{setting['scale']}, Y channel. Bicubic: "
             f"{bicubic['psnr']:.2f} dB. Budget {setting['budget']} Multi-Adds; seeds "
             f"{', '.join(map(str, setting['seeds']))}.", "",
             "| search | settled at update | time-to-architecture (s) | whole search (s) "
             "| Multi-Adds (G) | PSNR (dB) | retrained as |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mark = " (not settled)" if r["censored"] else ""
        lines.append(f"| {r['name']} | {r['settled_iteration']}{mark} | "
                     f"{r['settled_seconds']:.1f} | {r['search_seconds']:.1f} | "
                     f"{r['macs'] / 1e9:.2f} | {r['psnr']:.2f} | {r['retrained_as']} |")
    lines += ["", "| method | time-to-architecture (s) | × less than darts | Multi-Adds (G) "
              "| PSNR (dB) | PSNR − darts | within darts' spread |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for method, e in summary["methods"].items():
        lines.append(
            f"| {method} | {e['settled_seconds_mean']:.1f} ± {e['settled_seconds_std']:.1f} | "
            f"{e.get('speedup', float('nan')):.1f} | {e['macs_mean'] / 1e9:.2f} ± "
            f"{e['macs_std'] / 1e9:.2f} | {e['psnr_mean']:.2f} ± {e['psnr_std']:.2f} | "
            f"{e.get('psnr_vs_baseline', float('nan')):+.2f} | "
            f"{'yes' if e.get('within_baseline_spread') else 'no'} |")
    lines += ["", "Setting: " + json.dumps(setting, default=str)]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_pool(jobs: int, tasks: Sequence[tuple[str, Any, tuple]], started: float
             ) -> list[Any]:
    out = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(function, *args): label for label, function, args in tasks}
        for future in concurrent.futures.as_completed(futures):
            out.append(future.result())
            print(f"[{time.monotonic() - started:7.0f} s] {futures[future]} done", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "time_to_architecture")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny everything")
    protocol_base.add_run_arguments(parser)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of: {', '.join(METHODS)}")
    args = parser.parse_args(argv)

    setting = QUICK if args.quick else FULL
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown or BASELINE not in methods:
        print(f"error: --methods: {', '.join(unknown) or 'darts missing'}; known: "
              f"{', '.join(METHODS)} (darts, the baseline, is needed)", file=sys.stderr)
        return 2
    setting = attrs.evolve(setting, methods=methods)
    out: Path = args.out.resolve()
    data = args.data or protocol_base._default_data("train")
    val = args.val or protocol_base._default_data("val")
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    out.mkdir(parents=True, exist_ok=True)
    protocol = setting.protocol
    scale = spacelang.load(protocol.spec, **protocol.width).network.scale
    ctx = Context(protocol, out, data, val, scale, threads)
    started = time.monotonic()
    bicubic = bicubic_baseline(None if val == "embedded" else val, ctx.scale)
    write_yaml(out / "configs" / "train.yaml", protocol_base.train_config(protocol))

    searches = [(f"search {m} seed {s}", run_search, (ctx, setting, m, s))
                for s in setting.seeds for m in setting.methods]
    rows = run_pool(jobs, searches, started)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(architecture_key(out / row["spec"]), []).append(row)
    order = sorted(by_key.values(), key=lambda group: min(
        setting.methods.index(r["method"]) for r in group))
    trainings = [(f"retrain {group[0]['name']}", retrain,
                  (ctx, group[0]["name"], out / group[0]["spec"], {})) for group in order]
    trained = {r["name"]: r for r in run_pool(jobs, trainings, started)}
    for group in order:
        result = trained[group[0]["name"]]
        for row in group:
            row.update({k: result[k] for k in ("params", "macs", "psnr", "ssim")},
                       retrained_as=group[0]["name"])
    rows.sort(key=lambda r: (setting.methods.index(r["method"]), r["seed"]))
    summary = summarize(rows, setting)
    record = {"spec": str(protocol.spec.relative_to(REPO)), "width": dict(protocol.width),
              "data": data, "val": val, "scale": ctx.scale, "budget": setting.budget,
              "seeds": list(setting.seeds), "methods": {m: METHODS[m] for m in methods},
              "search": dict(protocol.search), "log_every": setting.log_every,
              "train": dict(protocol.train), "train_seed": protocol.train_seed,
              "jobs": jobs, "threads_per_job": threads,
              "wall_seconds": round(time.monotonic() - started, 1)}
    write_tables(out, rows, summary, record, bicubic)
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"{len(rows)} searches, {len(trainings)} retrainings in "
          f"{record['wall_seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
