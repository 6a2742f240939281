"""`spacelang compile`: lower a spec to PyTorch, run it once, summarise it.

A searchable spec becomes a supernet (architecture weights α/β included), a
fixed one a plain network. One forward pass on a random LR input checks that
the lowered network produces the shape the checker inferred. `--emit-py`
writes standalone PyTorch source for a fixed spec (see `backends/emit.py`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from spacelang.backends.cost import cost_report
from spacelang.backends.emit import emit_python
from spacelang.checker import first_empty
from spacelang.cli import common
from spacelang.cli.language import write_atomic
from spacelang.diagnostics import SpecError, error


class CompileError(RuntimeError):
    """The lowered network disagrees with the checked spec: a bug, not a user error."""


def _parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _tree(net, label: str, depth: int):
    from rich.markup import escape
    from rich.tree import Tree
    from torch import nn

    def describe(name: str, module) -> str:
        text = (f"[bold]{escape(name)}[/] [cyan]{type(module).__name__}[/] "
                f"{common.group(_parameter_count(module))}")
        if isinstance(module, nn.ParameterDict):
            extra = ", ".join(f"{key}: {p.numel()}" for key, p in module.items())
        elif next(module.children(), None) is None:
            extra = module.extra_repr()
        else:
            extra = ""
        if extra and "\n" not in extra:
            text += f" [dim]{escape(extra)}[/]"
        return text

    def add(node, module, level: int) -> None:
        for name, child in module.named_children():
            branch = node.add(describe(name, child))
            if level + 1 < depth:
                add(branch, child, level + 1)
            else:
                hidden = sum(1 for _ in child.modules()) - 1
                if hidden:
                    branch.label = f"{branch.label} [dim](+{hidden} submodules)[/]"

    root = Tree(f"[bold]{escape(label)}[/] [cyan]{type(net).__name__}[/] "
                f"{common.group(_parameter_count(net))}")
    if depth > 0:
        add(root, net, 0)
    return root


def _sites(network):
    from rich.markup import escape
    from rich.table import Table

    tables = []
    if network.choice_sites:
        table = Table(title="choice sites (one α per candidate)")
        for column in ("site", "choice", "candidates", "shared", "instances"):
            table.add_column(column)
        for site in network.choice_sites:
            shared = "shared" if site.shared else "per instance"
            table.add_row(escape(site.key), escape(site.choice),
                          escape(", ".join(site.labels)), shared,
                          escape(", ".join(site.instances)))
        tables.append(table)
    if network.pick_sites:
        table = Table(title="pick sites (one β per candidate)")
        for column in ("site", "k of n", "candidates", "aggregate", "combinations"):
            table.add_column(column)
        for site in network.pick_sites:
            table.add_row(escape(site.key), f"{site.k} of {len(site.candidates)}",
                          escape(", ".join(site.candidates)), escape(site.aggregate),
                          common.group(site.combinations))
        tables.append(table)
    return tables


def _forward(net, network, height: int, width: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, network.in_channels, height, width, generator=generator)
    x = x * network.rgb_range
    start = time.perf_counter()
    with torch.no_grad():
        y = net(x)
    elapsed = time.perf_counter() - start
    expected = (1, network.out_channels, height * network.scale, width * network.scale)
    if tuple(y.shape) != expected:
        raise CompileError(
            f"the lowered `{network.name}` maps a {tuple(x.shape)} input to "
            f"{tuple(y.shape)}, but the checker inferred {expected} (×{network.scale}); "
            "this is a bug in the checker or the torch backend, please report it")
    return x, y, elapsed


def _emit(net, network, x, y, out: Path) -> int:
    """Write the standalone source, then check it rebuilds the same network."""
    import torch


    source = emit_python(network)
    namespace: dict[str, Any] = {"__name__": f"spacelang_emitted_{network.name}"}
    exec(compile(source, str(out), "exec"), namespace)
    rebuilt = namespace["build"]()
    ours = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    theirs = [(k, tuple(v.shape)) for k, v in rebuilt.state_dict().items()]
    if ours != theirs:
        raise CompileError(f"emitted source for `{network.name}` has different state_dict "
                           "keys than the compiled network; please report it")
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        if not torch.allclose(rebuilt(x), y, rtol=1e-5, atol=1e-6 * network.rgb_range):
            raise CompileError(f"emitted source for `{network.name}` computes a different "
                               "output than the compiled network; please report it")
    write_atomic(out, source)
    return source.count("\n")


def compile_and_summarise(space, args: argparse.Namespace) -> int:
    """Build `space` (a supernet if it has choices), run it once, print a summary."""
    from rich.markup import escape


    network = space.network
    common.prepare_torch()
    emit_py = getattr(args, "emit_py", None)
    if emit_py and not space.is_fixed:
        common.print_error(
            f"--emit-py needs a fixed network; `{network.name}` has "
            f"{len(network.choice_sites)} choice and {len(network.pick_sites)} pick sites "
            "(derive an architecture first: `spacelang derive`)")
        return 2
    if emit_py:
        common.check_output_file(emit_py)
    depth = getattr(args, "depth", 2)
    if depth < 0:
        raise common.UsageError(f"--depth must be 0 or more, got {depth}")
    width, height = common.parse_size(getattr(args, "input_size", "32x32"))
    empty = first_empty(network.graph, width, height)
    if empty is not None:
        node, w, h = empty
        raise SpecError([error(f"an input of {width}x{height} is too small for "
                               f"`{network.name}`: this value would be {w}x{h}; give a larger "
                               "--input-size", node.span)], space.program.sources)

    net = space.supernet() if not space.is_fixed else space.fixed()
    x, y, elapsed = _forward(net, network, height, width)

    out = common.console()
    kind = "fixed network" if space.is_fixed else "supernet"
    params = ", ".join(f"{k}={v}" for k, v in network.params.items())
    out.print(f"[bold]{escape(network.name)}[/]({escape(params)}) ×{network.scale}: {kind}, "
              f"from {escape(space.path)}")
    out.print(f"forward {'×'.join(map(str, x.shape))} → {'×'.join(map(str, y.shape))} "
              f"in {elapsed * 1000:.0f} ms: ok")
    out.print(_tree(net, network.name, depth))

    report = cost_report(network, (width * network.scale, height * network.scale))
    total = _parameter_count(net)
    if space.is_fixed:
        out.print(f"parameters   {common.group(total):>14}")
        if report.base.params != total:
            out.print(f"[red]the cost model counts {common.group(report.base.params)} "
                      "parameters; please report this mismatch[/]")
        out.print(f"Multi-Adds   {common.group(report.base.macs):>14}  at LR {width}×{height}")
        out.print("search space: fixed (1 architecture)")
    else:
        arch = sum(p.numel() for p in net.arch_parameters())
        weights = sum(p.numel() for p in net.weight_parameters())
        out.print(f"parameters   {common.group(total):>14}  = {common.group(weights)} weights "
                  f"+ {common.group(arch)} architecture ({network.alpha_count} α, "
                  f"{network.beta_count} β)")
        for table in _sites(network):
            out.print(table)
        out.print(f"search space: {common.group(network.architecture_count)} architectures")
        out.print(f"parameters over all architectures: min "
                  f"{common.group(report.extreme('params'))}, max "
                  f"{common.group(report.extreme('params', max))}")
        out.print(f"Multi-Adds at LR {width}×{height}: min "
                  f"{common.group(report.extreme('macs'))}, max "
                  f"{common.group(report.extreme('macs', max))}")
        if network.pick_sites:
            out.print("[dim]the supernet holds the weights of every candidate (and every pick "
                      "input); one architecture has fewer[/]")

    if emit_py:
        path = Path(emit_py)
        lines = _emit(net, network, x, y, path)
        out.print(f"wrote {escape(str(path))} ({lines} lines): standalone PyTorch, same "
                  "state_dict keys and output")
    return 0


__all__ = ["CompileError", "compile_and_summarise"]
