"""Reading and writing 8-bit RGB images with clear errors.

All images are ``numpy`` arrays of shape HxWx3, dtype ``uint8``, values in [0, 255], RGB order.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["ImageError", "probe_image", "read_image", "write_image"]

# Modes that convert to 8-bit RGB without losing meaning. High-bit-depth modes (I;16, I, F)
# would be silently clipped by PIL, so they are rejected instead.
_CONVERTIBLE_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
)


class ImageError(Exception):
    """An image could not be read or written; the message names the path and the problem."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_path(p: Path) -> None:
    if not p.exists():
        raise ImageError(p, "file does not exist")
    if p.is_dir():
        raise ImageError(p, "is a directory, not an image file")


def _wrap_pil_error(p: Path, e: Exception) -> ImageError:
    if isinstance(e, PermissionError):
        return ImageError(p, "permission denied")
    if isinstance(e, Image.UnidentifiedImageError):
        return ImageError(p, "not an image or a corrupt file (format not recognised)")
    if isinstance(e, Image.DecompressionBombError):
        return ImageError(p, f"image too large to decode safely ({e})")
    # PIL raises OSError, ValueError, SyntaxError, struct.error, ... for damaged files.
    return ImageError(p, f"corrupt or truncated image data ({type(e).__name__}: {e})")


def _check_mode(p: Path, mode: str) -> None:
    if mode not in _CONVERTIBLE_MODES:
        raise ImageError(p, f"unsupported image mode {mode!r} (need 8-bit L/RGB/RGBA)")


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Check that a file is a readable image in a supported mode, without decoding pixels.

    Runs PIL's ``verify`` (which catches most truncated or damaged files, e.g. PNG CRC errors).

    Returns:
        ``(height, width)`` in pixels.

    Raises:
        ImageError: as :func:`read_image`.
    """
    p = Path(path)
    try:
        _check_path(p)
        with Image.open(p) as img:
            _check_mode(p, img.mode)
            width, height = img.size
            img.verify()
    except ImageError:
        raise
    except Exception as e:
        raise _wrap_pil_error(p, e) from e
    if width < 1 or height < 1:
        raise ImageError(p, f"empty image ({width}x{height})")
    return height, width


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha is dropped); for
    multi-frame files the first frame is used.

    Returns:
        HxWx3 ``uint8`` array, values in [0, 255].

    Raises:
        ImageError: the file is missing, unreadable, not an image, corrupt or truncated, or
            has a pixel format that cannot be represented as 8-bit RGB.
    """
    p = Path(path)
    try:
        _check_path(p)
        with Image.open(p) as img:
            _check_mode(p, img.mode)
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            array = np.asarray(rgb, dtype=np.uint8).copy()
    except ImageError:
        raise
    except Exception as e:
        raise _wrap_pil_error(p, e) from e
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ImageError(p, f"decoded to unexpected shape {array.shape}")
    return array


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an image atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        path: Destination; the format comes from the extension (``.png``, ``.jpg``, ...).
        array: HxWx3 (RGB) or HxW (grayscale) ``uint8`` array, values in [0, 255].

    Raises:
        ValueError: ``array`` has the wrong dtype or shape.
        ImageError: unknown extension, or the file could not be written.
    """
    p = Path(path)
    if array.dtype != np.uint8:
        raise ValueError(f"write_image expects a uint8 array, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"write_image expects an HxW or HxWx3 array, got shape {array.shape}")
    fmt = Image.registered_extensions().get(p.suffix.lower())
    if fmt is None:
        raise ImageError(p, f"unsupported file extension {p.suffix!r}")
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        img = Image.fromarray(np.ascontiguousarray(array))
        with open(tmp, "xb") as f:
            img.save(f, format=fmt)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ImageError(p, f"could not write image ({type(e).__name__}: {e})") from e
