"""Apply a fixed SR network to whole images, tile by tile.

Tiles are ``tile × tile`` LR pixels, each read with ``overlap`` extra pixels on every
side (clipped at the image border) and cropped back after the network runs, so the
memory the network needs is that of one ``(tile + 2·overlap)²`` input whatever the
image size. When ``overlap`` covers the network's receptive radius
(:func:`receptive_radius`), the tiled output equals whole-image inference: every kept
output pixel sees the same input pixels, and the zero padding of the real image border
falls on the same pixels. Networks with global operations (contrast pooling, global
average pooling, resizing) have no finite radius; for them tiling is an approximation.

Images are ``H×W×3`` (RGB) or ``H×W`` (grey) ``uint8`` arrays; the network's
``in_channels`` (3 or 1) says which it takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from spacelang.ir import Graph, Network, Node
from spacelang.sr.metrics import to_uint8

__all__ = ["UpscaleError", "receptive_radius", "upscale_array"]

# Ops whose output pixel depends only on the same pixel of their inputs.
_POINTWISE = {"relu", "lrelu", "sigmoid", "prelu", "identity", "add", "mul", "sum",
              "concat", "split", "tanh", "zero", "scale", "shift"}
# Ops whose output pixel depends on the whole image.
_GLOBAL = {"mean", "std", "avgpool", "resize"}


class UpscaleError(Exception):
    """A network or image that cannot be upscaled (wrong channels, bad tile settings)."""


def _window_radius(node: Node) -> float | None:
    """Input pixels a windowed op reaches on its worse side, at its own resolution."""
    k = int(node.args.get("k", 1))
    dilation = int(node.args.get("dilation", 1))
    stride = int(node.args.get("stride", 1) or k)
    reach = dilation * (k - 1)
    if node.op == "maxpool":
        stride = int(node.args.get("stride", 0) or k)
    if stride != 1:
        return None
    padding = int(node.args.get("padding", -1))
    if padding < 0:
        padding = reach // 2
    return float(max(padding, reach - padding))


def _graph_radius(graph: Graph, start: dict[int, float | None]) -> float | None:
    radius: dict[int, float | None] = dict(start)
    for node in graph.nodes:
        if node.id in radius:
            continue
        inner = [radius.get(i) for i in node.inputs]
        if any(r is None for r in inner):
            radius[node.id] = None
            continue
        base = max((r for r in inner if r is not None), default=0.0)
        factor = node.spatial.scale
        if node.op in ("choice",):
            sub = [_graph_radius(c, dict(zip(c.inputs, inner, strict=False)))
                   for c in node.candidates]
            radius[node.id] = None if any(r is None for r in sub) else max(sub, default=base)
        elif node.op in _POINTWISE or node.op in ("pick", "pixel_shuffle"):
            radius[node.id] = base
        elif node.op in ("conv", "dwconv", "maxpool") and factor:
            own = _window_radius(node)
            radius[node.id] = None if own is None else base + own / factor
        else:  # global, resizing, or an op this bound does not know: no finite radius
            radius[node.id] = None
    return radius.get(graph.output)


def receptive_radius(network: Network) -> int | None:
    """How many LR pixels on each side an output pixel can depend on; None when unbounded.

    A conservative bound from the IR: windowed ops add their reach (in LR pixels, so a
    3×3 conv after a ×2 pixel shuffle adds ½), pointwise ops add nothing; global pooling,
    resizing, strided windows and ops the bound does not know make it unbounded.
    """
    graph = network.graph
    radius = _graph_radius(graph, {i: 0.0 for i in graph.inputs})
    return None if radius is None else math.ceil(radius)


def _starts(length: int, tile: int) -> list[int]:
    return list(range(0, length, tile))


def upscale_array(
    model: nn.Module,
    image: np.ndarray,
    scale: int,
    rgb_range: int,
    *,
    tile: int = 0,
    overlap: int = 0,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Super-resolve one ``uint8`` image (``H×W×3`` or ``H×W``); ``tile=0`` runs it whole.

    The network sees the image on its ``[0, rgb_range]`` scale; the output is clamped and
    rounded to ``uint8`` (``sH×sW[×3]``). ``on_tile(done, total)`` reports progress.
    """
    if tile < 0 or overlap < 0:
        raise UpscaleError(f"tile and overlap must be ≥ 0, got {tile} and {overlap}")
    grey = image.ndim == 2
    chw = image[None] if grey else image.transpose(2, 0, 1)
    lr = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32)).mul_(rgb_range / 255.0)
    height, width = image.shape[:2]
    tile_h = tile or height
    tile_w = tile or width
    out = np.empty((height * scale, width * scale, *(() if grey else (3,))), dtype=np.uint8)
    tiles = [(y, x) for y in _starts(height, tile_h) for x in _starts(width, tile_w)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for done, (y, x) in enumerate(tiles, 1):
                y0, x0 = max(0, y - overlap), max(0, x - overlap)
                y1 = min(height, y + tile_h + overlap)
                x1 = min(width, x + tile_w + overlap)
                sr = model(lr[None, :, y0:y1, x0:x1])[0].clamp_(0, rgb_range)
                expected = ((y1 - y0) * scale, (x1 - x0) * scale)
                if tuple(sr.shape[-2:]) != expected:
                    raise UpscaleError(f"the network made {sr.shape[-1]}x{sr.shape[-2]} from "
                                       f"{x1 - x0}x{y1 - y0} but upscales ×{scale}")
                pixels = to_uint8(sr, rgb_range)
                h = min(tile_h, height - y) * scale
                w = min(tile_w, width - x) * scale
                top, left = (y - y0) * scale, (x - x0) * scale
                kept = pixels[top:top + h, left:left + w]
                out[y * scale:y * scale + h, x * scale:x * scale + w] = kept[..., 0] if grey \
                    else kept
                if on_tile is not None:
                    on_tile(done, len(tiles))
    finally:
        model.train(was_training)
    return out
