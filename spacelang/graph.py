"""Drawing a network: its IR as a Graphviz graph, laid out by Graphviz `dot` as SVG.

Each node is one primitive, labelled with its op, kernel and output channels. Nodes
are grouped in nested boxes by their dotted path: a cell instance (`b.3: rfdb`), the
composite op chosen inside it (`r2: sep_conv`), and so on; so a derived network shows
the op picked at each choice site, and the edges between cell boxes show the wiring
picked at each pick site. An unresolved choice or pick (a search space) is one node
listing its candidates. Layout is Graphviz's (`dot` must be on PATH: Debian
`apt-get install graphviz`).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from spacelang.ir import Network, Node

__all__ = ["GraphError", "render_svg", "to_dot"]


class GraphError(Exception):
    """Graphviz is missing or failed."""


_SYMBOLS = {"add": "+", "mul": "×", "sum": "Σ", "concat": "concat"}


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(node: Node, network: Network) -> str:
    if node.op == "input":
        return f"input\n{node.channels} ch"
    if node.op == "choice":
        return f"choice {node.site}\n" + " | ".join(node.labels)
    if node.op == "pick":
        return f"pick {node.k} of {len(node.inputs)}\n({node.aggregate})"
    head = _SYMBOLS.get(node.op, node.op)
    k = node.args.get("k")
    if k is not None:
        head += f" {k}×{k}"
    dilation = node.args.get("dilation", 1)
    if dilation and dilation != 1:
        head += f" d{dilation}"
    stride = node.args.get("stride", 1)
    if stride and stride != 1:
        head += f" /{stride}"
    if node.op == "pixel_shuffle":
        head += f" ×{node.args.get('r')}"
    name = node.path.rsplit(".", 1)[-1] if node.path else ""
    lines = [head] + ([name] if name and name != node.op else [])
    if node.id == network.graph.output:
        lines.append("output")
    return "\n".join(lines) + f"\n{node.channels} ch"


def _group(node: Node) -> str:
    """The dotted box a node is drawn in ('' for the top level)."""
    if node.path:
        return node.path.rsplit(".", 1)[0] if "." in node.path else ""
    return node.scope


def _box_label(prefix: str, cells: dict[str, str]) -> str:
    if prefix in cells:
        return f"{prefix}: {cells[prefix]}"
    parent, _, last = prefix.rpartition(".")
    if parent and last.isdigit():
        return prefix
    role = parent.rpartition(".")[2]
    return f"{role}: {last}" if role and not role.isdigit() else last


def to_dot(network: Network) -> str:
    """The network's top-level graph as Graphviz DOT text (left to right)."""
    cells = {c.path: c.cell for c in network.cells}
    nodes = network.graph.nodes
    members: dict[str, list[Node]] = {}
    for node in nodes:
        members.setdefault(_group(node), []).append(node)
    prefixes = set()
    for group in members:
        parts = group.split(".") if group else []
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    lines = [f"digraph {_quote(network.name)} {{",
             '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, nodesep=0.15, '
             'ranksep=0.25];',
             '  node [shape=box, style="rounded,filled", fillcolor="#f4f6fb", '
             'fontname="Helvetica", fontsize=9, margin="0.06,0.03"];',
             '  edge [arrowsize=0.5, color="#667"];']

    def emit(prefix: str, depth: int) -> None:
        pad = "  " * (depth + 1)
        for node in members.get(prefix, ()):
            colour = {"input": "#dbeafe", "choice": "#fde68a", "pick": "#fecaca"}.get(node.op)
            extra = f', fillcolor="{colour}"' if colour else ""
            lines.append(f"{pad}n{node.id} [label={_quote(_label(node, network))}{extra}];")
        children = sorted(p for p in prefixes if p and p.rpartition(".")[0] == prefix)
        for child in children:
            lines.append(f"{pad}subgraph {_quote('cluster_' + child)} {{")
            lines.append(f"{pad}  label={_quote(_box_label(child, cells))}; style=rounded; "
                         f'color="#8aa"; bgcolor="{"#fbfdff" if depth % 2 else "#f0f7f4"}";')
            emit(child, depth + 1)
            lines.append(f"{pad}}}")

    emit("", 0)
    for node in nodes:
        for source in node.inputs:
            lines.append(f"  n{source} -> n{node.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_svg(dot_text: str, *, timeout: float = 60.0) -> str:
    """Lay out DOT text with Graphviz `dot`; returns the SVG element (no XML prologue)."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphError("drawing graphs needs Graphviz `dot` on PATH "
                         "(Debian/Ubuntu: apt-get install graphviz)")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot_text, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GraphError(f"Graphviz `dot` took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        raise GraphError(f"Graphviz `dot` failed: {done.stderr.strip()[:500]}")
    svg = done.stdout
    start = svg.find("<svg")
    if start < 0:
        raise GraphError("Graphviz `dot` produced no SVG")
    return re.sub(r"<!--.*?-->", "", svg[start:], flags=re.S)
