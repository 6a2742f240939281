"""Does the search do something? Searched architecture versus random ones.

Runs the small search of `spaces/dlsr.space`, then retrains the derived
network and N random architectures of the same space with the same training
budget (iterations, data, seed), and prints Multi-Adds, parameters and PSNR for
each, with the searched result against the random mean and best.

    python examples/search_vs_random.py                       # T91 + Set5 if ../shared exists
    python examples/search_vs_random.py --data DIR --val DIR --random 5 --train-iterations 600

Without ../shared it uses the photographs bundled with scikit-image.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import attrs
import torch
from spacelang.backends.cost import cost_report

import spacelang
from spacelang.cli.run import DEFAULT_SEARCH_CONFIG, DEFAULT_TRAIN_CONFIG
from spacelang.sr.config import SearchConfig, TrainConfig, load_config
from spacelang.sr.data import open_dataset
from spacelang.sr.search import search
from spacelang.sr.task import evaluate
from spacelang.sr.train import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_decisions(network, rng: random.Random) -> dict:
    out: dict = {}
    for site in network.choice_sites:
        out[site.key] = rng.randrange(len(site.labels))
    for site in network.pick_sites:
        out[site.key] = tuple(sorted(rng.sample(range(len(site.candidates)), site.k)))
    return out


def retrain(space, decisions, cfg: TrainConfig, train_set, val_set, run_dir: Path) -> dict:
    derived = space.derived(decisions)
    torch.manual_seed(cfg.seed)
    model = derived.fixed()
    train(model, cfg, train_set=train_set, val_set=None, run_dir=run_dir,
          rgb_range=derived.network.rgb_range, progress=False)
    psnr, ssim, _ = evaluate(model, val_set, cfg.scale, derived.network.rgb_range)
    cost = cost_report(derived.network).base
    return {"decisions": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in decisions.items()},
            "params": cost.params, "macs": cost.macs, "psnr": psnr, "ssim": ssim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="spaces/dlsr.space")
    parser.add_argument("--data", default=str(SHARED / "T91") if SHARED.exists() else None)
    parser.add_argument("--val", default=str(SHARED / "Set5") if SHARED.exists() else None)
    parser.add_argument("--random", type=int, default=5, help="random architectures")
    parser.add_argument("--search-iterations", type=int, default=None)
    parser.add_argument("--train-iterations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()

    search_cfg = load_config(SearchConfig, DEFAULT_SEARCH_CONFIG)
    if args.search_iterations:
        search_cfg = attrs.evolve(search_cfg, iterations=args.search_iterations)
    train_cfg = attrs.evolve(load_config(TrainConfig, DEFAULT_TRAIN_CONFIG),
                             iterations=args.train_iterations, seed=args.seed)
    space = spacelang.load(args.spec, **search_cfg.overrides)
    train_set = open_dataset(args.data, space.network.scale, split="train")
    val_set = open_dataset(args.val, space.network.scale, split="val")
    print(f"train data: {args.data or 'embedded'} ({len(train_set)} images); "
          f"validation: {args.val or 'embedded'} ({len(val_set)} images)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        result = search(space, search_cfg, train_set=train_set, val_set=None,
                        run_dir=tmp_dir / "search", progress=False)
        print(f"searched: {result.decisions}")
        rows.append(("searched", retrain(space, result.decisions, train_cfg, train_set,
                                         val_set, tmp_dir / "searched")))
        rng = random.Random(args.seed)
        for i in range(args.random):
            decisions = random_decisions(space.network, rng)
            rows.append((f"random {i + 1}", retrain(space, decisions, train_cfg, train_set,
                                                    val_set, tmp_dir / f"random{i}")))
            print(f"random {i + 1}: {rows[-1][1]['psnr']:.2f} dB")

    print("\n| architecture | params | Multi-Adds (G) | PSNR (dB) | SSIM |")
    print("|---|---:|---:|---:|---:|")
    for name, row in rows:
        print(f"| {name} | {row['params']:,} | {row['macs'] / 1e9:.2f} | {row['psnr']:.2f} "
              f"| {row['ssim']:.4f} |")
    randoms = [row for name, row in rows if name.startswith("random")]
    if randoms:
        searched = rows[0][1]
        mean_psnr = statistics.mean(r["psnr"] for r in randoms)
        best = max(randoms, key=lambda r: r["psnr"])
        print(f"\nsearched {searched['psnr']:.2f} dB at {searched['macs'] / 1e9:.2f} G; "
              f"random mean {mean_psnr:.2f} dB at "
              f"{statistics.mean(r['macs'] for r in randoms) / 1e9:.2f} G; "
              f"random best {best['psnr']:.2f} dB at {best['macs'] / 1e9:.2f} G")
    if args.out:
        Path(args.out).write_text(json.dumps([{"name": n, **r} for n, r in rows], indent=2))


if __name__ == "__main__":
    main()
