"""Does the search beat chance? Searched, random and published architectures, retrained alike.

The experiment, all on one space (`spaces/dlsr.space` at a CPU-sized width):

1. bicubic's PSNR on the validation set, measured with the project's own MATLAB-style
   `imresize` and Y-channel PSNR (the bar: every network must beat it by `margin_db`);
2. `random` architectures drawn uniformly from the space (each choice and pick site
   independently uniform, which is uniform over the architectures the space counts);
3. the search at several Multi-Adds budgets, with several seeds each, derived to fixed specs;
4. the published DLSR cell and wiring (`spaces/dlsr_derived.space`) at the same width;
5. every network retrained with the same config and evaluated on the validation set.

Every step goes through the `spacelang` CLI (`search`, `train`, `eval --json`,
`flops --json`); random architectures are written with the torch-free API
(`spacelang.load`, `Space.derive`). Writes into OUT (default `runs/search_vs_random`):

    results.json / results.csv   one row per network: params, Multi-Adds, PSNR, SSIM, ...
    results.md                   the table, bicubic, seeds and spread, the verdict
    psnr_vs_macs.png             PSNR versus Multi-Adds (needs matplotlib)
    specs/*.space                every architecture as a fixed spec
    runs/<name>/                 the search and training runs (configs, logs, checkpoints)

    python examples/search_vs_random.py            # full protocol: 70–80 min on 2 idle cores
    python examples/search_vs_random.py --quick    # a smoke run: tiny everything, a minute or two
    python examples/search_vs_random.py --jobs 2   # CLI runs side by side (1 thread each)

Data: T91 for training and Set5 for validation when `../shared/data` is there, else
(or with `--data embedded --val embedded`) the photographs bundled with scikit-image. The
search never sees the validation images. A finished step is not redone when the script is
run again with the same OUT. Exits 1 if some network does not clear bicubic + margin_db
(outside --quick), so a too-short retraining cannot pass for a result.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import yaml

import spacelang
from spacelang.sr.data import open_dataset
from spacelang.sr.imresize import imresize
from spacelang.sr.metrics import psnr, ssim
from spacelang.units import parse_count

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SPACELANG = [sys.executable, "-m", "spacelang"]


@attrs.frozen(kw_only=True)
class Protocol:
    """Everything that decides the numbers. `train` and `search` are run-config mappings."""

    spec: Path = REPO / "spaces" / "dlsr.space"
    reference: Path = REPO / "spaces" / "dlsr_derived.space"
    width: Mapping[str, int] = {"C": 16}  # network parameters set on every architecture
    random: int = 8  # architectures drawn uniformly
    draw_seed: int = 0
    budgets: tuple[str, ...] = ("8G", "12G", "20G")  # Multi-Adds at HR 1280×720
    seeds: tuple[int, ...] = (0, 1)  # search seeds per budget
    train_seed: int = 0  # one retraining seed for every network: the same budget for all
    margin_db: float = 1.0  # every network must beat bicubic by this much
    require_margin: bool = True
    search: Mapping[str, Any] = {}
    train: Mapping[str, Any] = {}


# Calibrated on T91 → Set5 ×2 (examples/search_vs_random.md): the all-conv_1x1 network clears
# bicubic + 1 dB by step 600 of this retraining; the all-conv_7x7 one, the slowest to learn,
# was 0.02 dB short after 1,500 steps, hence 1,800.
FULL = Protocol(
    search={"iterations": 200, "arch_warmup": 60, "patch_size": 48, "batch_size": 8,
            "weight_lr": 2.0e-3, "arch_lr": 3.0e-3, "strategy": "darts1", "loss": "l1"},
    train={"iterations": 1800, "patch_size": 48, "batch_size": 16, "lr": 2.0e-3,
           "schedule": "cosine"},
)
QUICK = Protocol(
    width={"C": 4}, random=2, budgets=("1G",), seeds=(0, 1), require_margin=False,
    search={"iterations": 3, "arch_warmup": 1, "patch_size": 32, "batch_size": 2,
            "weight_lr": 1.0e-3, "arch_lr": 3.0e-3, "strategy": "darts1", "loss": "l1"},
    train={"iterations": 3, "patch_size": 32, "batch_size": 2, "lr": 1.0e-3,
           "schedule": "cosine"},
)


# --------------------------------------------------------------------------- run configs


def search_config(protocol: Protocol, budget: str, seed: int) -> dict[str, Any]:
    """The search run config for one (budget, seed): the one place that names the keys
    of the complexity target (a hinge above `budget_macs`, Multi-Adds at HR 1280×720)."""
    return {
        **protocol.search,
        "seed": seed,
        "complexity": "macs",
        "budget_macs": parse_count(budget),
        "complexity_weight": 1.0,
        "val_every": protocol.search["iterations"],
        "log_every": max(1, protocol.search["iterations"] // 20),
        "checkpoint_every": protocol.search["iterations"],
    }


def train_config(protocol: Protocol) -> dict[str, Any]:
    """The retraining config, the same for every network."""
    return {
        **protocol.train,
        "seed": protocol.train_seed,
        "val_every": protocol.train["iterations"],
        "log_every": max(1, protocol.train["iterations"] // 20),
        "checkpoint_every": protocol.train["iterations"],
    }


# --------------------------------------------------------------------------- architectures


def draw_architectures(space: spacelang.Space, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` distinct architectures, each site's decision uniform and independent.

    Decisions are written by name (candidate label per choice site, value names per pick
    site), so they read back in the JSON and survive reordering of sites.
    """
    rng = random.Random(seed)
    total = space.network.architecture_count
    drawn: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(drawn) < min(count, total):
        decisions: dict[str, Any] = {}
        for site in space.network.choice_sites:
            decisions[site.key] = rng.choice(site.labels)
        for site in space.network.pick_sites:
            decisions[site.key] = sorted(rng.sample(site.candidates, site.k),
                                         key=site.candidates.index)
        key = json.dumps(decisions, sort_keys=True)
        if key not in seen:
            seen.add(key)
            drawn.append(decisions)
    return drawn


def write_fixed(space: spacelang.Space, decisions: Mapping[str, Any], path: Path) -> Path:
    """The architecture `decisions` picks, as a fixed spec with every parameter written in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(space.derive(decisions), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- measuring


def bicubic_baseline(val: str | None, scale: int) -> dict[str, float]:
    """PSNR/SSIM of MATLAB-style bicubic upscaling on `val` (Y channel, `scale` px cropped)."""
    images = open_dataset(val, scale, split="val")
    psnrs, ssims = [], []
    for pair in images:
        up = imresize(pair.lr, scale=scale)
        psnrs.append(psnr(up, pair.hr, crop=scale))
        ssims.append(ssim(up, pair.hr, crop=scale))
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "images": len(psnrs)}


def cli(args: Sequence[str], log: Path, threads: int) -> str:
    """Run `spacelang ARGS`, its output appended to `log`; return its standard output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*SPACELANG, *args], capture_output=True, text=True, env=env,
                          cwd=REPO)
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ spacelang {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"`spacelang {' '.join(args)}` exited {done.returncode} "
                           f"(log: {log}):\n{tail}")
    return done.stdout


def cost(spec: Path, log: Path) -> tuple[int, int]:
    """(parameters, Multi-Adds at HR 1280×720) from `spacelang flops --json`."""
    report = json.loads(cli(["flops", str(spec), "--json"], log, threads=1))
    return int(report["params"]), int(report["macs"])


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


@attrs.frozen
class Context:
    protocol: Protocol
    out: Path
    data: str
    val: str
    scale: int
    threads: int


def retrain(ctx: Context, name: str, spec: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Train `spec` with the shared config, evaluate it; the finished row (cached on disk)."""
    result_path = ctx.out / "runs" / name / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text(encoding="utf-8"))
    run_dir = ctx.out / "runs" / name / "train"
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of ours: start it again
    log = ctx.out / "runs" / name / "log.txt"
    config = ctx.out / "configs" / "train.yaml"  # written by main, before any job starts
    params, macs = cost(spec, log)
    started = time.monotonic()
    cli(["train", str(spec), "--config", str(config), "--data", ctx.data,
         "--run-dir", str(run_dir), "--no-progress"], log, ctx.threads)
    train_s = time.monotonic() - started
    report = json.loads(cli(["eval", str(spec), "--weights", str(run_dir / "last.pt"),
                             "--data", ctx.val, "--scale", str(ctx.scale), "--json"],
                            log, ctx.threads))
    row = {**row, "name": name, "spec": str(spec.relative_to(ctx.out)), "params": params,
           "macs": macs, "psnr": report["psnr"], "ssim": report["ssim"],
           "train_seconds": round(train_s, 1),
           "train_iterations": ctx.protocol.train["iterations"]}
    result_path.write_text(json.dumps(row, indent=2), encoding="utf-8")
    return row


def searched(ctx: Context, budget: str, seed: int) -> dict[str, Any]:
    """Search at `budget` with `seed`, then retrain what it derived."""
    name = f"searched-{budget}-s{seed}"
    spec = ctx.out / "specs" / f"{name}.space"
    search_seconds = None
    if not spec.exists():
        run_dir = ctx.out / "runs" / name / "search"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = write_yaml(ctx.out / "configs" / f"search-{budget}-s{seed}.yaml",
                            search_config(ctx.protocol, budget, seed))
        overrides = [f"--set={k}={v}" for k, v in ctx.protocol.width.items()]
        started = time.monotonic()
        cli(["search", str(ctx.protocol.spec), "--config", str(config), "--data", ctx.data,
             "--run-dir", str(run_dir), "--no-progress", *overrides],
            ctx.out / "runs" / name / "log.txt", ctx.threads)
        search_seconds = round(time.monotonic() - started, 1)
        spec.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "derived.space", spec)
    return retrain(ctx, name, spec, {"kind": "searched", "budget": budget,
                                     "budget_macs": parse_count(budget), "seed": seed,
                                     "search_seconds": search_seconds})


# --------------------------------------------------------------------------- reading


def random_front(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The random architectures no other random one beats at equal or lower Multi-Adds."""
    front, best = [], -math.inf
    for row in sorted(rows, key=lambda r: (r["macs"], -r["psnr"])):
        if row["psnr"] > best:
            front.append(row)
            best = row["psnr"]
    return front


def front_psnr_at(front: Sequence[Mapping[str, Any]], macs: float) -> float | None:
    """The best random PSNR at Multi-Adds ≤ `macs` (None: no random network that cheap)."""
    cheaper = [r["psnr"] for r in front if r["macs"] <= macs]
    return max(cheaper) if cheaper else None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: Sequence[Mapping[str, Any]], bicubic: Mapping[str, float],
              margin_db: float) -> dict[str, Any]:
    """Per-budget mean ± std over seeds, the random front, and how the searched compare."""
    randoms = [r for r in rows if r["kind"] == "random"]
    front = random_front(randoms)
    budgets: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["kind"] != "searched":
            continue
        budgets.setdefault(row["budget"], {"rows": []})["rows"].append(row)
    for entry in budgets.values():
        group = entry.pop("rows")
        entry["seeds"] = [r["seed"] for r in group]
        entry["psnr_mean"], entry["psnr_std"] = _mean_std([r["psnr"] for r in group])
        entry["macs_mean"], entry["macs_std"] = _mean_std([r["macs"] for r in group])
        above = []
        for r in group:
            reference = front_psnr_at(front, r["macs"])
            above.append(reference is None or r["psnr"] >= reference)
        entry["on_or_above_random_front"] = sum(above)
        entry["count"] = len(group)
    bar = bicubic["psnr"] + margin_db
    return {
        "bicubic": dict(bicubic),
        "bar_psnr": bar,
        "below_bar": [r["name"] for r in rows if r["psnr"] < bar],
        "random_front": [r["name"] for r in front],
        "random_psnr_mean": _mean_std([r["psnr"] for r in randoms])[0] if randoms else None,
        "budgets": budgets,
    }


# --------------------------------------------------------------------------- writing

_COLUMNS = ("name", "kind", "budget", "seed", "params", "macs", "psnr", "ssim",
            "train_seconds", "search_seconds", "spec")


def write_tables(out: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                 setting: Mapping[str, Any]) -> None:
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(
        json.dumps({"setting": setting, "summary": summary, "rows": list(rows)}, indent=2),
        encoding="utf-8")
    bicubic = summary["bicubic"]
    lines = [
        f"Validation: {setting['val']} ×{setting['scale']}, Y channel, {setting['scale']} px "
        f"cropped. Bicubic: {bicubic['psnr']:.2f} dB / {bicubic['ssim']:.4f}; the bar "
        f"(bicubic + {setting['margin_db']:g} dB): {summary['bar_psnr']:.2f} dB.",
        "",
        "| architecture | params | Multi-Adds (G) | PSNR (dB) | SSIM |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['name']} | {row['params']:,} | {row['macs'] / 1e9:.2f} | "
                     f"{row['psnr']:.2f} | {row['ssim']:.4f} |")
    lines += ["", "| budget | seeds | Multi-Adds (G), mean ± std | PSNR (dB), mean ± std "
                  "| on or above the random front |", "|---|---|---:|---:|---:|"]
    for budget, entry in summary["budgets"].items():
        lines.append(f"| {budget} | {', '.join(map(str, entry['seeds']))} | "
                     f"{entry['macs_mean'] / 1e9:.2f} ± {entry['macs_std'] / 1e9:.2f} | "
                     f"{entry['psnr_mean']:.2f} ± {entry['psnr_std']:.2f} | "
                     f"{entry['on_or_above_random_front']} of {entry['count']} |")
    lines += ["", f"Random front: {', '.join(summary['random_front']) or 'none'}. "
                  f"Below the bar: {', '.join(summary['below_bar']) or 'none'}.",
              f"Setting: {json.dumps(setting, default=str)}"]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(out: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    randoms = [r for r in rows if r["kind"] == "random"]
    ax.scatter([r["macs"] / 1e9 for r in randoms], [r["psnr"] for r in randoms],
               c="0.55", label="random (uniform)", zorder=2)
    front = random_front(randoms)
    if front:
        ax.step([r["macs"] / 1e9 for r in front], [r["psnr"] for r in front], where="post",
                c="0.55", ls="--", lw=1, label="random front")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, budget in enumerate(summary["budgets"]):
        group = [r for r in rows if r["kind"] == "searched" and r["budget"] == budget]
        colour = colours[index % len(colours)]
        ax.scatter([r["macs"] / 1e9 for r in group], [r["psnr"] for r in group],
                   color=colour, marker="D", label=f"searched, budget {budget}", zorder=3)
        ax.axvline(parse_count(budget) / 1e9, c=colour, lw=0.8, ls=":")
    for r in (r for r in rows if r["kind"] == "reference"):
        ax.scatter([r["macs"] / 1e9], [r["psnr"]], c="k", marker="*", s=150,
                   label="DLSR (published cell and wiring)", zorder=4)
    ax.axhline(summary["bicubic"]["psnr"], c="tab:red", lw=0.8, label="bicubic")
    ax.axhline(summary["bar_psnr"], c="tab:red", lw=0.8, ls="--", label="bicubic + margin")
    ax.set_xlabel("Multi-Adds (G) at HR 1280×720")
    ax.set_ylabel("PSNR (dB), Y channel")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = out / "psnr_vs_macs.png"
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- calibration


def extreme_architectures(space: spacelang.Space, log: Path) -> dict[str, dict[str, Any]]:
    """The cheapest and the dearest architecture by Multi-Adds (each site at its extreme
    candidate, the first k candidates of each pick site, which cost the same)."""
    sites = json.loads(cli(["flops", str(space.path), "--json",
                            *(f"--set={k}={v}" for k, v in space.overrides.items())],
                           log, threads=1))["sites"]
    out: dict[str, dict[str, Any]] = {}
    for name, pick in (("cheapest", min), ("dearest", max)):
        decisions: dict[str, Any] = {
            site.key: pick(site.labels, key=lambda label, key=site.key: sites[key][label]["macs"])
            for site in space.network.choice_sites}
        decisions.update({site.key: list(site.candidates[:site.k])
                          for site in space.network.pick_sites})
        out[name] = decisions
    return out


def calibrate(ctx: Context, space: spacelang.Space, bar: float) -> int:
    """Train the cheapest and dearest architectures with the protocol's retraining,
    validating every tenth of the run: per-step time and the first step over `bar`."""
    iterations = ctx.protocol.train["iterations"]
    config = write_yaml(ctx.out / "configs" / "calibrate.yaml",
                        {**train_config(ctx.protocol), "val_data": ctx.val,
                         "val_every": max(1, iterations // 10)})
    log = ctx.out / "runs" / "calibrate" / "log.txt"

    def one(item: tuple[str, dict[str, Any]]) -> str:
        name, decisions = item
        spec = write_fixed(space, decisions, ctx.out / "specs" / f"calibrate-{name}.space")
        run_dir = ctx.out / "runs" / "calibrate" / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cli(["train", str(spec), "--config", str(config), "--data", ctx.data, "--run-dir",
             str(run_dir), "--no-progress"], log, ctx.threads)
        records = [json.loads(line) for line in
                   (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        curve = [(r["iteration"], r["val_psnr"]) for r in records if "val_psnr" in r]
        cleared = next((i for i, value in curve if value >= bar), None)
        per_step = records[-1]["elapsed"] / records[-1]["iteration"]
        return (f"{name} ({', '.join(map(str, decisions.values()))}): "
                f"{per_step:.3f} s/step with validation; PSNR "
                f"{', '.join(f'{i}: {v:.2f}' for i, v in curve)}; first over {bar:.2f} dB: "
                f"{cleared if cleared is not None else 'never'}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        lines = list(pool.map(one, extreme_architectures(space, log).items()))
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------- main


def _default_data(split: str) -> str:
    folder = SHARED_DATA / ("T91" if split == "train" else "Set5")
    return str(folder) if folder.is_dir() else "embedded"


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every experiment on this protocol takes: data and parallel jobs."""
    parser.add_argument("--data", default=None,
                        help="training images (default: ../shared/data/T91, else embedded)")
    parser.add_argument("--val", default=None,
                        help="validation set (default: ../shared/data/Set5, else embedded)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="CLI runs side by side (default: one per core)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "search_vs_random")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: tiny width, few steps, 2 random networks")
    add_run_arguments(parser)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--calibrate", action="store_true",
                        help="only retrain the cheapest and dearest architectures, "
                             "validating as they go: is the retraining long enough?")
    args = parser.parse_args(argv)

    if not (args.no_plot or args.calibrate):
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("the plot needs matplotlib: pip install 'spacelang[experiments]' "
                  "(or pass --no-plot)", file=sys.stderr)
            return 2
    protocol = QUICK if args.quick else FULL
    out: Path = args.out.resolve()
    data = args.data or _default_data("train")
    val = args.val or _default_data("val")
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    out.mkdir(parents=True, exist_ok=True)

    space = spacelang.load(protocol.spec, **protocol.width)
    scale = space.network.scale
    ctx = Context(protocol, out, data, val, scale, threads)
    setting = {"spec": str(protocol.spec.relative_to(REPO)), "width": dict(protocol.width),
               "data": data, "val": val, "scale": scale, "margin_db": protocol.margin_db,
               "draw_seed": protocol.draw_seed, "train_seed": protocol.train_seed,
               "search": dict(protocol.search), "train": dict(protocol.train),
               "budgets": list(protocol.budgets), "seeds": list(protocol.seeds),
               "jobs": jobs, "threads_per_job": threads}
    started = time.monotonic()
    bicubic = bicubic_baseline(None if val == "embedded" else val, scale)
    print(f"bicubic on {val}: {bicubic['psnr']:.2f} dB; the bar is "
          f"{bicubic['psnr'] + protocol.margin_db:.2f} dB", flush=True)

    if args.calibrate:
        return calibrate(ctx, space, bicubic["psnr"] + protocol.margin_db)
    write_yaml(out / "configs" / "train.yaml", train_config(protocol))
    reference = spacelang.load(protocol.reference, **protocol.width)
    tasks: list[tuple[str, Any, tuple]] = []
    for budget in protocol.budgets:
        for seed in protocol.seeds:
            tasks.append((f"searched {budget} seed {seed}", searched, (ctx, budget, seed)))
    tasks.append(("reference", retrain,
                  (ctx, "dlsr", write_fixed(reference, {}, out / "specs" / "dlsr.space"),
                   {"kind": "reference"})))
    draws = draw_architectures(space, protocol.random, protocol.draw_seed)
    for index, decisions in enumerate(draws, 1):
        name = f"random-{index:02d}"
        spec = write_fixed(space, decisions, out / "specs" / f"{name}.space")
        tasks.append((name, retrain, (ctx, name, spec,
                                      {"kind": "random", "decisions": decisions})))

    rows: list[dict[str, Any]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(function, *task_args): label
                   for label, function, task_args in tasks}
        for future in concurrent.futures.as_completed(futures):
            row = future.result()
            rows.append(row)
            print(f"[{time.monotonic() - started:7.0f} s] {futures[future]}: "
                  f"{row['psnr']:.2f} dB at {row['macs'] / 1e9:.2f} G", flush=True)
    order = {"reference": 0, "searched": 1, "random": 2}
    rows.sort(key=lambda r: (order[r["kind"]], r.get("budget_macs") or 0, r.get("seed") or 0,
                             r["name"]))
    summary = summarize(rows, bicubic, protocol.margin_db)
    setting["wall_seconds"] = round(time.monotonic() - started, 1)
    write_tables(out, rows, summary, setting)
    if not args.no_plot:
        print(f"plot: {plot(out, rows, summary)}")
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"{len(rows)} networks in {setting['wall_seconds']:.0f} s; results in {out}")
    if protocol.require_margin and summary["below_bar"]:
        print(f"error: {', '.join(summary['below_bar'])} did not clear bicubic + "
              f"{protocol.margin_db:g} dB; retrain longer (Protocol.train) before reading "
              "the table", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
