"""`spacelang flops` and `spacelang compile`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spacelang.api import load
from spacelang.cli import common, tools
from spacelang.cli.compile_summary import compile_and_summarise

CONVENTION = ("1 multiply-add = 1 MAC; Multi-Adds = convolution MACs plus one op per "
              "element into and out of each average pool and through each PReLU "
              "(as thop counts); bias adds and other elementwise ops not counted")


def register(sub) -> None:
    flops = sub.add_parser("flops", help="parameters and Multi-Adds from the spec",
                           description="Parameters and Multi-Adds computed from the spec "
                                       "alone. " + CONVENTION + ".")
    flops.add_argument("file", metavar="FILE")
    common.add_overrides(flops)
    common.add_limits(flops)
    flops.add_argument("--hr", default="1280x720", metavar="WxH",
                       help="HR output size (default 1280x720); LR = HR / scale rounded down")
    flops.add_argument("--network", help="which network, when the file has several")
    flops.add_argument("--json", action="store_true", help="print JSON")
    flops.set_defaults(handler=run_flops)

    compile_ = sub.add_parser("compile", help="build the PyTorch network and summarise it",
                              description="Lower a spec to PyTorch (a supernet if it has "
                                          "choices), run one forward pass, print a summary.")
    compile_.add_argument("file", metavar="FILE")
    common.add_overrides(compile_)
    common.add_limits(compile_)
    compile_.add_argument("--network", help="which network, when the file has several")
    compile_.add_argument("--depth", type=int, default=2, help="module tree depth to show")
    compile_.add_argument("--input-size", default="32x32", metavar="WxH",
                          help="LR size of the test forward pass (default 32x32)")
    compile_.add_argument("--emit-py", metavar="OUT.py",
                          help="write standalone PyTorch source (fixed specs only)")
    compile_.add_argument("--graph", metavar="OUT.svg",
                          help="also draw the network (cells, chosen ops and wiring) as SVG "
                               "with Graphviz `dot`")
    compile_.set_defaults(handler=run_compile)


def _load(args):
    space = load(args.file, network=args.network, limits=common.limits(args),
                 **common.parse_overrides(args.overrides))
    common.print_warnings(space.warnings, space.program.sources)
    return space


def flops_json(space, report) -> dict:
    network = space.network
    data: dict = {
        "network": network.name,
        "params_overrides": network.params,
        "scale": network.scale,
        "hr": list(report.hr),
        "lr": list(report.lr),
        "convention": CONVENTION,
        "cells": {name: {"params": c.params, "macs": c.macs} for name, c in report.cells},
    }
    if network.is_fixed:
        data.update(params=report.base.params, macs=report.base.macs,
                    conv_macs=report.base.conv_macs)
    else:
        data.update(
            params={"min": report.extreme("params"), "max": report.extreme("params", max),
                    "uniform": report.uniform("params")},
            macs={"min": report.extreme("macs"), "max": report.extreme("macs", max),
                  "uniform": report.uniform("macs")},
            sites={s.key: {label: {"params": c.params, "macs": c.macs}
                           for label, c in zip(s.labels, s.costs, strict=True)}
                   for s in report.sites},
        )
        if report.variants:
            data["width"] = {"site": report.width, "values": {
                label: {field: {"min": v.extreme(field), "max": v.extreme(field, max)}
                        for field in ("params", "macs")}
                for label, v in zip(network.width_site.labels, report.variants, strict=True)}}
    return data


def run_flops(args: argparse.Namespace) -> int:
    from rich.table import Table


    hr = common.parse_size(args.hr)
    space = _load(args)
    network = space.network
    report = space.cost(hr)
    if args.json:
        print(json.dumps(flops_json(space, report), indent=2))
        return 0
    out = common.console()
    out.print(f"[bold]{network.name}[/] ×{network.scale}  "
              f"HR {hr[0]}×{hr[1]}, LR {report.lr[0]}×{report.lr[1]}")
    out.print(f"[dim]{CONVENTION}[/]")
    if network.is_fixed:
        cost = report.base
        out.print(f"parameters   {common.group(cost.params):>20}")
        out.print(f"Multi-Adds   {common.group(cost.macs):>20}  ({common.giga(cost.macs)})")
        out.print(f"conv MACs    {common.group(cost.conv_macs):>20}  "
                  f"({common.giga(cost.conv_macs)}, FlopCounterMode ÷ 2)")
    else:
        table = Table(title="over all architectures")
        for column in ("", "minimum", "uniform α expected", "maximum"):
            table.add_column(column, justify="right")
        for field, label in (("params", "parameters"), ("macs", "Multi-Adds")):
            table.add_row(label, common.group(report.extreme(field)),
                          common.group(round(report.uniform(field))),
                          common.group(report.extreme(field, max)))
        out.print(table)
        sites = Table(title="choice sites (cost summed over instances)")
        for column in ("site", "candidate", "parameters", "Multi-Adds"):
            sites.add_column(column, justify="left" if column in ("site", "candidate")
                             else "right")
        for site in report.sites:
            for label, cost in zip(site.labels, site.costs, strict=True):
                sites.add_row(site.key, label, common.group(cost.params),
                              common.giga(cost.macs))
        out.print(sites)
        if report.variants:
            widths = Table(title=f"width `{report.width}` (choice sites above at the widest)")
            for column in ("value", "min parameters", "max parameters", "min Multi-Adds",
                           "max Multi-Adds"):
                widths.add_column(column, justify="right")
            for label, variant in zip(network.width_site.labels, report.variants,
                                      strict=True):
                widths.add_row(label, common.group(variant.extreme("params")),
                               common.group(variant.extreme("params", max)),
                               common.giga(variant.extreme("macs")),
                               common.giga(variant.extreme("macs", max)))
            out.print(widths)
        out.print("[dim]a pick changes the cost only by what it leaves unread (an early "
                  "exit drops the cells after it)[/]")
    cells = Table(title="fixed part by cell" if not network.is_fixed else "by cell")
    cells.add_column("cell")
    cells.add_column("parameters", justify="right")
    cells.add_column("Multi-Adds", justify="right")
    for name, cost in report.cells:
        cells.add_row(name, common.group(cost.params), common.giga(cost.macs))
    out.print(cells)
    return 0


def run_compile(args: argparse.Namespace) -> int:
    space = _load(args)
    if args.graph:
        tools.write_graph(space, Path(args.graph))
    return compile_and_summarise(space, args)
