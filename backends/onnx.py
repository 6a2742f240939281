"""ONNX export of a fixed network: NCHW float input `lr`, output `sr`, dynamic H and W.

Needs the `onnx` extra (onnx to write the file, onnxruntime to run it). The network is
traced by torch's TorchScript-based exporter, which turns every primitive of the
registry into standard ONNX operators; the file is checked with `onnx.checker`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from spacelang.ir import Network

__all__ = ["DEFAULT_OPSET", "OnnxUnavailable", "export_onnx", "run_onnx"]

DEFAULT_OPSET = 17
_EXTRA = "pip install 'spacelang[onnx]'"


class OnnxUnavailable(Exception):
    """The optional `onnx` / `onnxruntime` packages are not installed."""


def export_onnx(model: nn.Module, network: Network, path: str | os.PathLike[str], *,
                opset: int = DEFAULT_OPSET) -> None:
    """Write `model` (the fixed lowering of `network`) to `path`, atomically."""
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailable(f"ONNX export needs the onnx package: {_EXTRA}") from None
    was_training = model.training
    model.eval()
    example = torch.rand(1, network.in_channels, 16, 16) * network.rgb_range
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), buffer, dynamo=False, opset_version=opset,
                input_names=["lr"], output_names=["sr"],
                dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"},
                              "sr": {0: "batch", 2: "out_height", 3: "out_width"}})
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, target)


def run_onnx(path: str | os.PathLike[str], lr):
    """Run an exported file in onnxruntime (CPU) on an N×C×H×W float32 numpy array."""
    try:
        import onnxruntime
    except ImportError:
        raise OnnxUnavailable(f"running ONNX models needs onnxruntime: {_EXTRA}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["sr"], {"lr": lr})[0]
