"""The tools around a trained model: `eval` over a benchmark root, `upscale`, `export`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spacelang.api import load
from spacelang.cli import common
from spacelang.cli.language import write_atomic
from spacelang.graph import GraphError, render_svg, to_dot
from spacelang.program import load_program
from spacelang.report import ReportError, write_report

DEFAULT_TILE = 192


def register(sub) -> None:
    upscale = sub.add_parser(
        "upscale", help="super-resolve image files with a spec and its weights",
        description="Apply a fixed spec to images, tile by tile (bounded memory). With the "
                    "default --overlap, tiles overlap by the network's receptive radius when "
                    "it is finite, so the output equals whole-image inference.")
    upscale.add_argument("spec", metavar="SPEC")
    upscale.add_argument("inputs", nargs="+", metavar="IMAGE|DIR")
    upscale.add_argument("--weights", required=True, metavar="FILE")
    common.add_weights_map(upscale)
    upscale.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="output folder (or an image file name for a single input)")
    upscale.add_argument("--tile", type=_non_negative, default=DEFAULT_TILE, metavar="PX",
                         help=f"tile side in input pixels (default {DEFAULT_TILE}; 0: whole "
                              "image at once)")
    upscale.add_argument("--overlap", type=_non_negative, metavar="PX",
                         help="extra input pixels around each tile (default: the network's "
                              "receptive radius, or 32 when it has global operations)")
    upscale.add_argument("--force", action="store_true", help="overwrite existing outputs")
    common.add_bad_image_flag(upscale)
    upscale.add_argument("--no-progress", action="store_true", help="no progress bar")
    common.add_overrides(upscale)
    upscale.set_defaults(handler=run_upscale)

    export = sub.add_parser(
        "export", help="export a fixed spec with its weights to ONNX",
        description="Write an ONNX model (the opset is printed) with dynamic height and width; "
                    "input NCHW float on the network's [0, rgb_range] scale. Needs the `onnx` "
                    "extra: pip install 'spacelang[onnx]'.")
    export.add_argument("spec", metavar="SPEC")
    export.add_argument("--weights", metavar="FILE",
                        help="weights (default: the network's initial random weights)")
    common.add_weights_map(export)
    export.add_argument("--onnx", required=True, metavar="OUT.onnx")
    export.add_argument("--force", action="store_true", help="overwrite an existing file")
    common.add_overrides(export)
    export.set_defaults(handler=run_export)

    report = sub.add_parser(
        "report", help="an offline HTML page of a search, training or sweep folder",
        description="One self-contained HTML file: loss and validation curves, α/β per site, "
                    "expected cost against the budget, the network drawn, config and final "
                    "table; for a folder of runs, PSNR against Multi-Adds with the Pareto "
                    "front. Needs the `report` extra (plotly) and Graphviz `dot`.")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("-o", "--output", metavar="OUT.html",
                        help="where to write (default: RUN_DIR/report.html)")
    report.add_argument("--spec", metavar="SPEC",
                        help="the searched .space, when RUN_DIR/spec.space imports files "
                             "that search could not copy beside it (outside the spec's "
                             "folder); names each site's candidates")
    report.set_defaults(handler=run_report)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


# --------------------------------------------------------------------------- shared


def load_model(spec: str, overrides: dict[str, str], *, scale: int | None = None,
               weights: str | None = None, weights_map: str | None = None,
               rgb_only: bool = True, channels_last: bool = False,
               compile: bool = False, fuse: bool = False) -> tuple[Any, Any]:
    """The checked space and its fixed network with weights loaded, in NHWC layout,
    compiled or fused when asked (`spacelang.runtime.speed.optimise`).

    ``scale`` sets the spec's `scale` parameter when it has one (unless --set gives it) and
    must match the network's factor.
    """
    from spacelang.sr.weights import load_weights

    overrides = dict(overrides)
    if scale is not None:
        program = load_program(spec)
        has_scale = any(p.name == "scale" for n in program.networks for p in n.params)
        if has_scale and "scale" not in overrides:
            overrides["scale"] = str(scale)
    space = load(spec, **overrides)
    if scale is not None and space.network.scale != scale:
        raise common.UsageError(f"--scale {scale} but {spec} upscales ×{space.network.scale}")
    network = space.network
    if rgb_only:
        common.require_rgb(network)
    common.prepare_torch()
    model = space.fixed()
    if weights is not None:
        load_weights(model, weights, weights_map)
    if channels_last or compile or fuse:
        from spacelang.runtime.speed import optimise

        optimise(model, channels_last=channels_last, compile=compile, fuse=fuse)
    return space, model


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``advance(description=None)``. Silent when
    disabled or when stderr is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = common.console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda description=None: None
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=console, transient=True)
    task = progress.add_task(description, total=total)

    def advance(description: str | None = None) -> None:
        progress.update(task, advance=1, **({"description": description} if description
                                           else {}))

    with progress:
        yield advance


# --------------------------------------------------------------------------- eval over sets


def is_multi_eval(args: argparse.Namespace) -> bool:
    """Whether `eval` needs the per-set tables (a benchmark root, several scales, markdown)."""
    from spacelang.sr.benchmark import is_benchmark_root

    return (len(args.scale) > 1 or len(args.weights) > 1 or args.format == "md"
            or is_benchmark_root(args.data))


def run_eval_sets(args: argparse.Namespace) -> int:
    from spacelang.sr.benchmark import is_benchmark_root, open_sets, score_sets
    from spacelang.sr.data import open_dataset

    scales: list[int] = args.scale
    if len(args.weights) not in (1, len(scales)):
        raise common.UsageError(f"give --weights once, or once per scale ({len(scales)}), "
                                f"not {len(args.weights)} times")
    weights = args.weights * len(scales) if len(args.weights) == 1 else args.weights
    overrides = common.parse_overrides(args.overrides)
    root = args.data
    tables = []
    for scale, weights_file in zip(scales, weights, strict=True):
        space, model = load_model(args.spec, overrides, scale=scale, weights=weights_file,
                                  weights_map=args.weights_map,
                                  channels_last=bool(args.channels_last),
                                  compile=bool(args.compile), fuse=args.fuse)
        if is_benchmark_root(root):
            sets = open_sets(root, scale, on_error=args.on_bad_image)
        else:
            source = None if root == "embedded" else root
            name = "embedded" if source is None else Path(root).name
            sets = [(name, open_dataset(source, scale, split="val", on_error=args.on_bad_image))]
        total = sum(len(images) for _, images in sets)
        with progress_bar(total, f"×{scale}", enabled=not args.no_progress) as advance:
            scores = score_sets(model, sets, scale, space.network.rgb_range,
                                y_channel=not args.rgb,
                                save_dir=Path(args.save_images) if args.save_images else None,
                                on_image=lambda name, scale=scale: advance(f"×{scale} {name}"))
        tables.append((scale, space.network.name, scores))
    channel = "rgb" if args.rgb else "y"
    if args.json:
        print(json.dumps({"channel": channel, "data": str(root),
                          "results": [s.as_json() for _, _, scores in tables for s in scores]}))
    elif args.format == "md":
        print(_markdown(tables, channel))
    else:
        _print_tables(tables, channel, root)
    return 0


def _caption(scale: int, network: str, channel: str) -> str:
    return (f"{network} ×{scale} ({'RGB' if channel == 'rgb' else 'Y'} channel, "
            f"{scale} px cropped)")


def _markdown(tables, channel: str) -> str:
    lines: list[str] = []
    for scale, network, scores in tables:
        lines += [f"### {_caption(scale, network, channel)}", "",
                  "| set | PSNR (dB) | SSIM | images |", "|---|---:|---:|---:|"]
        lines += [f"| {s.name} | {s.psnr:.2f} | {s.ssim:.4f} | {s.count} |" for s in scores]
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _print_tables(tables, channel: str, root: str) -> None:
    from rich.table import Table

    out = common.console()
    for scale, network, scores in tables:
        table = Table(title=f"{_caption(scale, network, channel)} on {root}")
        for name, justify in (("set", "left"), ("PSNR (dB)", "right"), ("SSIM", "right"),
                              ("images", "right")):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for s in scores:
            table.add_row(s.name, f"{s.psnr:.4f}", f"{s.ssim:.4f}", str(s.count))
        out.print(table)


# --------------------------------------------------------------------------- upscale


def _image_files(inputs: list[str]) -> list[Path]:
    from spacelang.sr.data import IMAGE_EXTENSIONS

    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not
                           p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise common.UsageError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise common.UsageError(f"no such image or folder: {path}")
    return files


def _output_paths(files: list[Path], output: str) -> list[Path]:
    from PIL import Image

    out = Path(output).expanduser()
    if out.suffix.lower() in Image.registered_extensions() and not out.is_dir():
        if len(files) != 1:
            raise common.UsageError(f"-o {output} names one image but there are "
                                    f"{len(files)} inputs; give a folder")
        return [out]
    stems = [f.stem for f in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise common.UsageError(f"several inputs would write {out / (clashes[0] + '.png')}")
    return [out / f"{f.stem}.png" for f in files]


def _read_for(path: Path, channels: int) -> Any:
    import numpy as np
    from PIL import Image

    from spacelang.sr.images import read_image

    rgb = read_image(path)
    if channels == 3:
        return rgb
    return np.asarray(Image.fromarray(rgb).convert("L"))


def run_upscale(args: argparse.Namespace) -> int:
    from spacelang.sr.images import ImageError, write_image
    from spacelang.sr.upscale import receptive_radius, upscale_array

    space, model = load_model(args.spec, common.parse_overrides(args.overrides),
                              weights=args.weights, weights_map=args.weights_map,
                              rgb_only=False)
    network = space.network
    if network.in_channels not in (1, 3) or network.out_channels != network.in_channels:
        raise common.UsageError(
            f"network `{network.name}` maps {network.in_channels} to {network.out_channels} "
            "channels; upscale needs 3 to 3 (RGB) or 1 to 1 (grey)")
    files = _image_files(args.inputs)
    targets = _output_paths(files, args.output)
    existing = [t for t in targets if t.exists()]
    if existing and not args.force:
        raise common.UsageError(f"{existing[0]} exists" + (
            f" (and {len(existing) - 1} more outputs)" if len(existing) > 1 else "")
            + "; use --force to overwrite")
    overlap = args.overlap
    if overlap is None:
        radius = receptive_radius(network)
        if radius is None and args.tile:
            common.print_error(f"warning: `{network.name}` has global operations; tiles of "
                               f"{args.tile} px with a 32 px overlap approximate whole-image "
                               "inference (--tile 0 for exact)")
        overlap = 32 if radius is None else radius
    failed = 0
    with progress_bar(len(files), "upscale", enabled=not args.no_progress) as advance:
        for source, target in zip(files, targets, strict=True):
            try:
                image = _read_for(source, network.in_channels)
            except ImageError as exc:
                if args.on_bad_image == "fail":
                    raise
                common.print_error(f"warning: skipped {exc}")
                failed += 1
                advance()
                continue
            sr = upscale_array(model, image, network.scale, network.rgb_range,
                               tile=args.tile, overlap=overlap)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_image(target, sr)
            advance(source.name)
    done = len(files) - failed
    print(f"upscaled {done} image{'s' * (done != 1)} ×{network.scale} into "
          f"{targets[0].parent if len(targets) > 1 else targets[0]}"
          + (f"; skipped {failed}" if failed else ""))
    return 0


# --------------------------------------------------------------------------- export


def run_export(args: argparse.Namespace) -> int:
    from spacelang.backends.onnx import DEFAULT_OPSET, OnnxUnavailable, export_onnx

    target = Path(args.onnx)
    if target.exists() and not args.force:
        raise common.UsageError(f"{target} exists; use --force to overwrite")
    space, model = load_model(args.spec, common.parse_overrides(args.overrides),
                              weights=args.weights, weights_map=args.weights_map,
                              rgb_only=False)
    try:
        export_onnx(model, space.network, target, opset=DEFAULT_OPSET)
    except OnnxUnavailable as exc:
        raise common.UsageError(str(exc)) from None
    network = space.network
    print(f"wrote {target} (opset {DEFAULT_OPSET}; input `lr` N×{network.in_channels}×H×W on "
          f"[0, {network.rgb_range}], output `sr` N×{network.out_channels}×"
          f"{network.scale}H×{network.scale}W)", file=sys.stdout)
    return 0


# --------------------------------------------------------------------------- report, graph


def run_report(args: argparse.Namespace) -> int:

    target = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    try:
        written = write_report(args.run_dir, target, spec=args.spec)
    except ReportError as exc:
        raise common.UsageError(str(exc)) from None
    print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB, opens offline)")
    return 0


def write_graph(space: Any, target: Path) -> None:
    """Draw a checked space's network to an SVG file (Graphviz `dot`)."""

    try:
        svg = render_svg(to_dot(space.network))
    except GraphError as exc:
        raise common.UsageError(str(exc)) from None
    write_atomic(target, '<?xml version="1.0" encoding="UTF-8"?>\n' + svg)
    print(f"drew {space.network.name} in {target}", file=sys.stderr)
