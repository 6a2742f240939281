"""How a network computes, beside what it computes: mixed precision, memory layout,
compilation, fused inference.

Four options, applied to a model in place by `optimise`; the first three are settings of
`spacelang train` / `search` (and of `eval` for the second and third), the last of `eval`:

- ``amp``: ``bf16`` or ``fp16`` runs the forward pass under `torch.autocast` and returns
  float32, so losses and metrics stay in float32. fp16 needs a CUDA device (CPU autocast
  has no fast fp16 kernels) and, where weights are updated, a `torch.amp.GradScaler`.
- ``channels_last``: weights (and so activations) in NHWC layout, which oneDNN (CPU) and
  cuDNN run faster for many convolutions.
- ``compile``: `nn.Module.compile` (TorchInductor). On CPU it needs a C++ compiler and
  Python's headers, on CUDA Triton; `compile_problem` says what is missing.
- ``fuse``: for inference on CPU. A network spacelang built runs its forward passes
  without gradients (`torch.no_grad` / `torch.inference_mode`, float32 inputs) with every
  convolution one oneDNN call that also applies the activation, or adds the residual,
  that follows it (`backends.fusion`); passes with gradients run as before. The output
  equals the unfused one to float32 rounding (about 1e-6 of its magnitude);
  `fusion_problem` says when this torch cannot.

None changes the state_dict's keys, shapes or values, so checkpoints move freely between
runs with and without them.

Beside them, one setting of the process rather than of a model: `retain_freed_memory`,
which the CLI applies to every command that runs a network.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from spacelang.backends.torch.graph import GraphModule

__all__ = ["AMP_DTYPES", "Amp", "SpeedError", "amp_dtype", "compile_problem", "fusion_problem",
           "optimise", "retain_freed_memory"]

Amp = Literal["fp32", "bf16", "fp16"]

#: The autocast dtype of each ``amp`` setting (``fp32``: no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class SpeedError(Exception):
    """An option this machine cannot honour; the message says why and what to do."""


def amp_dtype(amp: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``; a `SpeedError` when it cannot run there."""
    if amp not in AMP_DTYPES:
        raise SpeedError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    device = torch.device(device)
    if amp == "fp16" and device.type != "cuda":
        raise SpeedError(
            f"amp fp16 needs a CUDA device (this run is on {device.type}): CPU autocast "
            "has no fast float16 kernels; use amp bf16 on CPU")
    return AMP_DTYPES[amp]


def compile_problem(device: torch.device | str = "cpu") -> str | None:
    """Why `torch.compile` cannot build kernels for ``device`` here, or None when it can."""
    device = torch.device(device)
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "compiling for CUDA needs Triton (pip install triton)"
        return None
    compilers = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(name) for name in compilers):
        return (f"compiling for {device.type} needs a C++ compiler ({' or '.join(compilers)} "
                "on PATH, or CXX set); install one (e.g. apt-get install g++) or run "
                "without compile")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not header.exists():
        return (f"compiling for {device.type} needs Python's C headers ({header} is missing; "
                "e.g. apt-get install python3-dev) or run without compile")
    return None


def fusion_problem(model: nn.Module, device: torch.device | str = "cpu",
                   amp: str = "fp32", compile: bool = False) -> str | None:
    """Why ``fuse`` cannot apply to ``model`` with these other options, or None when it can."""
    if torch.device(device).type != "cpu":
        return f"fuse runs convolutions through oneDNN on CPU, not on {torch.device(device)}"
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn,
                                                               "_convolution_pointwise"):
        return f"fuse needs oneDNN's fused convolutions, which torch {torch.__version__} lacks"
    if amp != "fp32":
        return "fuse runs float32 convolutions; use it without amp"
    if compile:
        return "fuse and compile exclude each other (compile fuses on its own); choose one"
    if not isinstance(model, GraphModule):
        return (f"fuse applies to networks spacelang builds, not to {type(model).__name__} "
                "(an emitted module fuses through its own build(fuse=True))")
    if model.has_masks:
        return "fuse applies to fixed networks, not to a width supernet"
    return None


_AUTOCAST_CLASSES: dict[type, type] = {}


def _autocast_class(cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` with its forward run under autocast (``self._amp``: device type, dtype)."""
    if cls not in _AUTOCAST_CLASSES:
        def forward(self, *args, **kwargs):
            device_type, dtype = self._amp
            with torch.autocast(device_type, dtype=dtype):
                out = cls.forward(self, *args, **kwargs)
            return out.float() if isinstance(out, torch.Tensor) else out

        _AUTOCAST_CLASSES[cls] = type(cls.__name__, (cls,), {
            "forward": forward, "__doc__": cls.__doc__, "__module__": cls.__module__,
            "__qualname__": cls.__qualname__})
    return _AUTOCAST_CLASSES[cls]


def optimise(model: nn.Module, *, amp: str = "fp32", channels_last: bool = False,
             compile: bool = False, fuse: bool = False,
             device: torch.device | str | None = None) -> nn.Module:
    """Apply the options to ``model`` in place and return it.

    ``device`` (default: that of the model's first parameter) decides what ``amp``,
    ``compile`` and ``fuse`` may do; a `SpeedError` says when one cannot run there.
    Parameters stay the same objects, so optimizers built before keep working. Applying
    ``amp`` twice replaces the first setting; ``fuse=False`` leaves a fused network fused.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    if fuse:
        problem = fusion_problem(model, device, amp, compile)
        if problem is not None:
            raise SpeedError(problem)
    if compile:
        problem = compile_problem(device)
        if problem is not None:
            raise SpeedError(problem)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    base = next((c for c, a in _AUTOCAST_CLASSES.items() if a is type(model)), type(model))
    if dtype is not None:
        model._amp = (device.type, dtype)
        model.__class__ = _autocast_class(base)
    elif base is not type(model):
        model.__class__ = base
    if fuse:
        model.fuse_convolutions()
    if compile:
        model.compile()
    return model


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4  # how many blocks may be mapped at once
#: Free memory at the top of the heap beyond this goes back to the kernel (the largest int).
_TRIM_THRESHOLD = 2**31 - 1


@functools.cache
def retain_freed_memory() -> bool:
    """Make this process keep the memory freed tensors return, for the tensors that follow.

    By default glibc's malloc maps each block above its mmap threshold (128 KiB to start,
    rising with use to at most 32 MiB) from the kernel and unmaps it when freed, and hands
    the heap's free top back once it exceeds twice that threshold; the next tensor of the
    size then page-faults every page in afresh, zeroed. A forward pass frees and allocates
    image-sized tensors all the time: the derived DLSR network (C = 48) takes 45,000 to
    145,000 faults (0.2–0.6 GB) per pass on one 320×180 image and 1.9 million (7 GB) on a
    640×360 one, about half of that pass's time on one thread. Here malloc maps nothing
    (on the main thread's heap; other threads' arenas still map blocks larger than their
    64 MiB heaps) and trims nothing below 2 GiB of free heap, so repeated passes reuse the
    same pages. The process keeps up to its peak heap until it exits.

    Process-wide and not undone (a second call does nothing); the CLI calls it for every
    command that runs a network. Returns whether it applied: False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)) and bool(mallopt(_M_MMAP_MAX, 0))
