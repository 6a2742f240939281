"""Crash-safe checkpoint files and RNG state capture.

Checkpoints are written atomically (temp file in the same folder, fsync, ``os.replace``), so a
reader sees either the old file or the new one, never a torn write. They are read with
``torch.load(..., weights_only=True)``: loading never runs code stored in the file.
"""

import collections
import contextlib
import os
import pickle
import random
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

# Plain types that weights-only loading accepts (besides tensors and containers).
_SCALARS = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)


class CheckpointError(Exception):
    """A checkpoint could not be written or read."""


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (best effort; not supported everywhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unlike mkstemp's 0600, honour the umask (and keep the mode of the file being replaced).
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    _atomic_write(path, lambda handle: handle.write(data))


def _check_payload(value: Any, where: str) -> None:
    """Reject values that ``weights_only`` loading would refuse, naming where they are."""
    kind = type(value)
    if isinstance(value, torch.Tensor) or kind in _SCALARS or kind is torch.Size:
        return
    if kind in (dict, collections.OrderedDict):
        for key, item in value.items():
            if type(key) not in _SCALARS:
                raise CheckpointError(f"{where} has a key of type {type(key).__name__}: {key!r}")
            _check_payload(item, f"{where}[{key!r}]")
        return
    if kind in (list, tuple):
        for index, item in enumerate(value):
            _check_payload(item, f"{where}[{index}]")
        return
    raise CheckpointError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which a weights-only "
        "checkpoint cannot hold; convert it to a tensor or a plain type"
    )


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically; an interrupted save leaves the old file intact.

    The payload may hold only tensors, plain Python values and containers of them, so that
    `load_checkpoint` can read it back without unpickling arbitrary objects.
    """
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    try:
        _check_payload(payload, "payload")
    except CheckpointError as exc:
        raise CheckpointError(f"cannot save {path}: {exc}") from None
    _atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` onto the CPU (weights-only, no code runs)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise CheckpointError(f"{path} is empty, not a PyTorch checkpoint")
    if not head.startswith((b"PK", b"\x80")):  # zip archive (torch.save) or legacy pickle
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (neither a zip archive nor a pickle; "
            f"it starts with {head!r})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(str(exc))
        if "global" in detail.lower():
            raise CheckpointError(
                f"refusing to load {path}: it holds objects that weights-only loading does not "
                f"allow ({detail}); nothing from the file was executed"
            ) from None
        raise CheckpointError(
            f"{path} is damaged or not a PyTorch checkpoint ({detail}); nothing from the file "
            "was executed"
        ) from None
    except Exception as exc:  # corrupt archives surface as many exception types
        raise CheckpointError(
            f"{path} is damaged or not a PyTorch checkpoint "
            f"({type(exc).__name__}: {_short(str(exc))})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: expected a checkpoint dict, found a {type(payload).__name__}"
        )
    return payload


def _unpickler_detail(text: str) -> str:
    """The useful sentence of torch's weights-only error text."""
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
        text = text.split("Check the documentation", 1)[0]
        text = text.split(" Please use", 1)[0]
    else:
        lines = [ln for ln in text.splitlines() if "GLOBAL" in ln] or text.splitlines()[:1]
        text = lines[0] if lines else ""
    return _short(text.strip() or "unreadable")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """Capture the python, numpy, torch CPU (and CUDA) RNG states as weights-only-safe values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore RNG states captured by `rng_state` (CUDA only when the device count matches)."""
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
        npy = state["numpy"]
        np.random.set_state(
            (
                npy["kind"],
                npy["keys"].numpy().astype(np.uint32),
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"invalid RNG state in checkpoint: {exc!r}") from None
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
