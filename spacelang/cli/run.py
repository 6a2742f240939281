"""`spacelang search`, `derive`, `train` and `eval`."""

from __future__ import annotations

import argparse
import contextlib
import json
import textwrap
import time
from pathlib import Path

from spacelang.api import load
from spacelang.cli import common, tools
from spacelang.cli.language import write_atomic
from spacelang.units import format_count, parse_count

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_SEARCH_CONFIG = CONFIG_DIR / "search_small.yaml"
DEFAULT_TRAIN_CONFIG = CONFIG_DIR / "train_small.yaml"

DISTRIBUTED_HELP = """\
several processes (GPUs or CPU cores; one machine or many), with PyTorch's torchrun:
  torchrun --nproc-per-node N -m spacelang {command} SPEC --run-dir DIR [...]
  torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d \\
           --rdzv-endpoint HOST:PORT --max-restarts 3 -m spacelang {command} SPEC --run-dir DIR
batch_size is the global batch (each rank takes batch_size/world of it); gradients, α
and β are averaged, so the run is the one-process run with the same config. Rank 0
writes the run folder. After a torchrun restart the run resumes from DIR/last.pt.
"""


def register(sub) -> None:
    search = sub.add_parser(
        "search", help="search a space's architecture (DARTS / GDAS, two levels)",
        description=textwrap.fill(
            "Differentiable search of cell-level ops and network-level connections "
            "under a complexity penalty. Without --config, a small shipped config "
            f"({DEFAULT_SEARCH_CONFIG.name}: few channels and steps) runs on the "
            "embedded photographs. Ends by writing RUN_DIR/derived.space.", 86),
        epilog=DISTRIBUTED_HELP.format(command="search"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    search.add_argument("spec", metavar="SPEC")
    search.add_argument("--budget", action="append", default=[], metavar="MACS",
                        help="Multi-Adds budget at the config's hr_size, e.g. 12G or 68e9; "
                             "repeat for a Pareto family (one derived spec per budget)")
    search.add_argument("--budget-params", action="append", default=[], metavar="N",
                        help="parameter budget instead, e.g. 300K or 1.5M (repeatable)")
    _run_flags(search)
    search.set_defaults(handler=run_search)

    derive = sub.add_parser(
        "derive", help="write the fixed .space a search run has found",
        description="Argmax per choice site, top-k per pick site, written as a fixed .space.")
    derive.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    derive.add_argument("-o", "--output", metavar="OUT.space",
                        help="where to write (default: print to standard output)")
    derive.set_defaults(handler=run_derive)

    train = sub.add_parser(
        "train", help="train a fixed spec on SR data",
        description=textwrap.fill(
            "Train a fixed spec (L1, Adam). Without --config, a small shipped config "
            f"({DEFAULT_TRAIN_CONFIG.name}) runs on the embedded photographs.", 86),
        epilog=DISTRIBUTED_HELP.format(command="train"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("spec", metavar="SPEC")
    _run_flags(train)
    train.set_defaults(handler=run_train)

    evaluate = sub.add_parser(
        "eval", help="PSNR/SSIM of a spec with given weights",
        description="Super-resolve a dataset and report PSNR/SSIM on the Y channel "
                    "(BT.601, 8-bit rounded, `scale` pixels cropped; SSIM 11×11 Gaussian "
                    "σ=1.5).")
    evaluate.add_argument("spec", metavar="SPEC")
    evaluate.add_argument("--weights", required=True, action="append", metavar="FILE",
                          help="weights; repeat it, once per --scale, when several scales "
                               "are given")
    evaluate.add_argument("--data", required=True, metavar="DIR",
                          help="benchmark folder (NAME/HR, NAME/LR_bicubic/X{s}), a benchmark "
                               "root holding several (Set5, Set14, B100, Urban100, Manga109, "
                               "...; one row per set), DIV2K, or a folder of HR images; "
                               "'embedded' for the bundled photographs")
    evaluate.add_argument("--scale", type=int, required=True, action="append",
                          help="upscaling factor; repeat it (--scale 2 --scale 3) for one "
                               "table per scale")
    common.add_overrides(evaluate)
    common.add_weights_map(evaluate)
    _layout_flags(evaluate)
    evaluate.add_argument("--fuse", action="store_true",
                          help="run each convolution as one oneDNN call with the activation "
                               "or residual add after it (CPU inference; outputs equal to "
                               "float32 rounding)")
    evaluate.add_argument("--save-images", metavar="DIR", help="write the SR outputs as PNG")
    evaluate.add_argument("--rgb", action="store_true",
                          help="score RGB instead of the Y channel")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.add_argument("--format", choices=("table", "md"), default="table",
                          help="per-set tables as rich tables (default) or markdown")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_bad_image_flag(evaluate)
    evaluate.set_defaults(handler=run_eval)


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="DIR",
                        help="training data (default: the config's, else embedded photos)")
    parser.add_argument("--config", metavar="RUN.yaml", help="run configuration (YAML)")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="run folder (default: runs/<network>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--amp", choices=("fp32", "bf16", "fp16"),
                        help="autocast the forward pass to bf16 or fp16 (fp16: CUDA only, "
                             "with loss scaling); overrides the config's 'amp'")
    _layout_flags(parser)
    common.add_bad_image_flag(parser)
    common.add_overrides(parser)


def _layout_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channels-last", action="store_true", default=None,
                        help="weights and activations in NHWC layout (often faster convs)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile the network (needs a C++ compiler on CPU, "
                             "Triton on CUDA; the first steps compile)")


def _with_speed_flags(cfg, args: argparse.Namespace):
    """The config with --amp / --channels-last / --compile where given."""
    given = {name: getattr(args, name) for name in ("amp", "channels_last", "compile")
             if getattr(args, name, None) is not None}
    return _with(cfg, **given) if given else cfg


def _run_dir(args, name: str) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    if common.rank_environment()[1] > 1 or common.under_torchrun():
        raise common.UsageError(
            "a run under torchrun needs --run-dir: every rank, and every restart, must use "
            "the same run folder")
    if args.resume:
        raise common.UsageError("--resume needs --run-dir (the run to continue)")
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _datasets(data: str | None, val_data: str | None, scale: int, on_error: str):
    from spacelang.sr.data import open_dataset

    train_set = open_dataset(data, scale, split="train", on_error=on_error)
    if val_data is not None:
        val_set = open_dataset(val_data, scale, split="val", on_error=on_error)
    elif data is None or data == "embedded":
        val_set = open_dataset(None, scale, split="val")
    else:
        val_set = None
    return train_set, val_set


def run_search(args: argparse.Namespace) -> int:
    from spacelang.sr.config import SearchConfig, load_config
    from spacelang.sr.search import search

    config_path = args.config or DEFAULT_SEARCH_CONFIG
    cfg = load_config(SearchConfig, config_path)
    overrides = {**{k: str(v) for k, v in cfg.overrides.items()},
                 **common.parse_overrides(args.overrides)}
    space = load(args.spec, **overrides)
    if common.is_main_rank():
        common.print_warnings(space.warnings, space.program.sources)
    common.require_rgb(space.network)
    if space.network.scale != cfg.scale:
        cfg = _with(cfg, scale=space.network.scale)
    cfg = _with_budgets(cfg, args.budget, args.budget_params)
    cfg = _with_speed_flags(cfg, args)
    data = args.data or cfg.data
    run_dir = _run_dir(args, space.network.name)  # flag errors before loading data
    train_set, val_set = _datasets(data, cfg.val_data, cfg.scale, args.on_bad_image)
    common.prepare_torch()
    arch_set = None
    if cfg.arch_data is not None:
        from spacelang.sr.data import open_dataset

        arch_set = open_dataset(cfg.arch_data, cfg.scale, split="train",
                                on_error=args.on_bad_image)
    out = common.console(stderr=True, quiet=not common.is_main_rank())
    out.print(f"search {space.network.name} ({space.network.architecture_count:,} "
              f"architectures, strategy {cfg.strategy}) in {run_dir}")
    with _distributed_job():
        result = search(space, cfg, train_set=train_set, val_set=val_set, run_dir=run_dir,
                        resume=args.resume, console=out, progress=not args.no_progress,
                        arch_set=arch_set)
    if not common.is_main_rank():
        return 0
    if isinstance(result, list):
        _print_pareto(run_dir, result)
    else:
        _print_derived(result.derived_path)
    return 0


@contextlib.contextmanager
def _distributed_job():
    """Leave torchrun's process group when the run ends (a no-op outside torchrun)."""
    from spacelang.runtime import distributed

    try:
        yield
    finally:
        distributed.shutdown()


def _with_budgets(cfg, macs: list[str], params: list[str]):
    """The config with the budgets of --budget / --budget-params (none: unchanged)."""
    if macs and params:
        raise common.UsageError("give --budget (Multi-Adds) or --budget-params, not both")
    if not macs and not params:
        return cfg
    flag = "--budget" if macs else "--budget-params"
    values = []
    for text in macs or params:
        try:
            values.append(parse_count(text))
        except ValueError as exc:
            raise common.UsageError(f"{flag}: {exc}") from None
    complexity = "macs" if macs else "params"
    single = values[0] if len(values) == 1 else None
    return _with(cfg, complexity=complexity, budgets=() if single else tuple(values),
                 budget_macs=single if macs else None,
                 budget_params=single if params else None)


def _print_pareto(run_dir: Path, results) -> None:
    print(f"Pareto family written to {run_dir / 'pareto.csv'} and pareto.json")
    for r in results:
        psnr = f"{r.val_psnr:.2f} dB" if r.val_psnr is not None else "n/a"
        print(f"  budget {format_count(r.budget)}: parameters {r.params:,}; Multi-Adds "
              f"{r.macs / 1e9:.2f} G; PSNR {psnr}; {r.derived_path}")


def _with(cfg, **changes):
    import attrs

    return attrs.evolve(cfg, **changes)


def _print_derived(path: Path) -> None:
    derived = load(path)
    cost = derived.cost().base
    print(f"derived architecture written to {path}")
    print(f"  parameters {cost.params:,}; Multi-Adds {cost.macs:,} ({cost.macs / 1e9:.2f} G) "
          "at HR 1280x720")


def run_derive(args: argparse.Namespace) -> int:
    from spacelang.nas.search import (
        derive_selection,
        derived_header,
        load_search_checkpoint,
        read_search_checkpoint,
    )
    from spacelang.runtime.config import parse_config
    from spacelang.sr.config import SearchConfig

    if args.output:
        common.check_output_file(args.output)  # before any work
    checkpoint, state = read_search_checkpoint(args.source)
    spec_path = Path(state["spec_path"])
    if not spec_path.exists():
        spec_path = checkpoint.parent / "spec.space"
    overrides = json.loads(state.get("overrides", "{}"))
    space = load(spec_path, **overrides)
    net = load_search_checkpoint(space, checkpoint)
    cfg = parse_config(SearchConfig, state["config"], source=str(checkpoint))
    selection = derive_selection(net, space.cost(tuple(cfg.hr_size)), cfg)
    text = space.derive(selection.decisions,
                        header=derived_header(space, net, checkpoint.parent,
                                              int(state.get("iteration", 0)), selection, cfg))
    if args.output:
        write_atomic(Path(args.output), text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from spacelang.sr.config import TrainConfig, load_config
    from spacelang.sr.task import patch_size_problem
    from spacelang.sr.train import train

    cfg = _with_speed_flags(load_config(TrainConfig, args.config or DEFAULT_TRAIN_CONFIG), args)
    space = load(args.spec, **common.parse_overrides(args.overrides))
    if common.is_main_rank():
        common.print_warnings(space.warnings, space.program.sources)
    common.require_rgb(space.network)
    if space.network.scale != cfg.scale:
        cfg = _with(cfg, scale=space.network.scale)
    problem = patch_size_problem(space.network, cfg.patch_size, cfg.scale)
    if problem is not None:
        raise common.UsageError(problem)
    common.prepare_torch()
    model = space.fixed()
    run_dir = _run_dir(args, space.network.name)  # flag errors before loading data
    train_set, val_set = _datasets(args.data or cfg.data, cfg.val_data, cfg.scale,
                                   args.on_bad_image)
    out = common.console(stderr=True, quiet=not common.is_main_rank())
    out.print(f"train {space.network.name} ×{cfg.scale} "
              f"({sum(p.numel() for p in model.parameters()):,} parameters) in {run_dir}")
    with _distributed_job():
        result = train(model, cfg, train_set=train_set, val_set=val_set, run_dir=run_dir,
                       rgb_range=space.network.rgb_range, resume=args.resume,
                       spec_text=space.program.root.source, console=out,
                       progress=not args.no_progress)
    if not common.is_main_rank():
        return 0
    best = f"{result.best_psnr:.2f} dB" if result.best_psnr is not None else "n/a"
    print(f"trained {result.last_iteration} iterations; best validation PSNR {best}; "
          f"weights in {run_dir / 'best.pt'} and {run_dir / 'last.pt'}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from spacelang.sr.benchmark import counted
    from spacelang.sr.data import open_dataset
    from spacelang.sr.task import evaluate

    if tools.is_multi_eval(args):
        return tools.run_eval_sets(args)
    (args.scale,), (args.weights,) = args.scale, args.weights
    space, model = tools.load_model(args.spec, common.parse_overrides(args.overrides),
                                    scale=args.scale, weights=args.weights,
                                    weights_map=args.weights_map,
                                    channels_last=bool(args.channels_last),
                                    compile=bool(args.compile), fuse=args.fuse)
    images = open_dataset(None if args.data == "embedded" else args.data, args.scale,
                          split="val", on_error=args.on_bad_image)
    with tools.progress_bar(len(images), "eval", enabled=not args.no_progress) as advance:
        psnr, ssim, per_image = evaluate(model, counted(images, advance), args.scale,
                                         space.network.rgb_range, y_channel=not args.rgb,
                                         save_dir=Path(args.save_images) if args.save_images
                                         else None)
    if args.json:
        print(json.dumps({"psnr": psnr, "ssim": ssim, "images": per_image,
                          "channel": "rgb" if args.rgb else "y", "scale": args.scale}))
        return 0
    table = Table(title=f"{space.network.name} ×{args.scale} on {args.data} "
                        f"({'RGB' if args.rgb else 'Y'} channel, {args.scale} px cropped)")
    table.add_column("image")
    table.add_column("PSNR (dB)", justify="right")
    table.add_column("SSIM", justify="right")
    for row in per_image:
        table.add_row(row["name"], f"{row['psnr']:.4f}", f"{row['ssim']:.4f}")
    table.add_row("[bold]mean", f"[bold]{psnr:.4f}", f"[bold]{ssim:.4f}")
    common.console().print(table)
    return 0
