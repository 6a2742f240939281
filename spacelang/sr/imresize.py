"""MATLAB-compatible bicubic resizing.

:func:`imresize` reproduces MATLAB's ``imresize(I, scale, 'bicubic')`` (antialiasing on, the
default): Keys cubic kernel with ``a = -0.5``, kernel widened by ``1/scale`` when shrinking,
mirrored ("symmetric") boundary indices, one separable pass per dimension in order of
increasing scale factor, and for ``uint8`` input a round-half-away-from-zero and saturating
conversion after every pass (MATLAB's resize kernel returns the input class).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bicubic_downscale", "imresize"]

_KERNEL_WIDTH = 4.0
_BLOCK_BYTES = 1 << 18


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based source indices, both ``(out_len, P)``, for one dimension.

    Mirrors MATLAB's ``contributions`` (imresize.m): output pixel ``x`` (1-based) maps to
    ``u = x/scale + 0.5*(1 - 1/scale)`` in input coordinates; indices outside ``1..in_len``
    are reflected with the period-``2*in_len`` sequence ``[1..n, n..1]``.
    """
    if scale < 1:
        width = _KERNEL_WIDTH / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * t)
    else:
        width = _KERNEL_WIDTH
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = aux[np.mod(indices.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero columns
    return weights[:, keep], idx[:, keep]


def _resize_axis(
    image: np.ndarray, axis: int, out_len: int, scale: float, as_uint8: bool
) -> np.ndarray:
    """One separable pass along ``axis``; uint8 results are rounded as MATLAB does."""
    weights, idx = _contributions(image.shape[axis], out_len, scale)
    src = np.moveaxis(image, axis, 0)
    rest = src.shape[1:]
    # Resized axis first and contiguous, so every tap gathers whole rows (a memcpy).
    src2d = np.ascontiguousarray(src).reshape(src.shape[0], -1)
    cols = src2d.shape[1]
    out = np.empty((out_len, cols), dtype=np.uint8 if as_uint8 else np.float64)
    # Process blocks of output rows small enough for the accumulator to stay in cache.
    rows = max(1, _BLOCK_BYTES // (8 * cols))
    for r0 in range(0, out_len, rows):
        r1 = min(out_len, r0 + rows)
        acc = np.zeros((r1 - r0, cols), dtype=np.float64)
        tmp = np.empty_like(acc)
        for k in range(weights.shape[1]):  # same summation order as MATLAB's kernel
            tmp[...] = src2d[idx[r0:r1, k]]
            tmp *= weights[r0:r1, k, None]
            acc += tmp
        if as_uint8:
            acc += 0.5
            np.floor(acc, out=acc)
            np.clip(acc, 0, 255, out=acc)
        out[r0:r1] = acc
    return np.moveaxis(out.reshape(out_len, *rest), 0, axis)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resize like MATLAB ``imresize(image, scale_or_shape, 'bicubic')``.

    Args:
        image: HxW or HxWxC array. ``uint8`` in [0, 255], or floating point (any range).
        scale: Scale factor; the output is ``ceil(scale * H) x ceil(scale * W)``.
        output_shape: ``(H_out, W_out)``; per-dimension scales are ``H_out/H`` and ``W_out/W``.
            Give exactly one of ``scale`` and ``output_shape``.

    Returns:
        The resized array, same number of dimensions and channels. ``uint8`` input gives
        ``uint8`` output (rounded half away from zero, clipped to [0, 255]); floating input
        gives output of the same floating dtype (computed in float64, not clipped).
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWxC array, got shape {image.shape}")
    as_uint8 = image.dtype == np.uint8
    if not as_uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected uint8 or floating-point image, got {image.dtype}")
    in_shape = image.shape[:2]
    if min(in_shape) < 1:
        raise ValueError(f"cannot resize an empty image of shape {image.shape}")
    if scale is not None:
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = (math.ceil(scale * in_shape[0]), math.ceil(scale * in_shape[1]))
    else:
        assert output_shape is not None
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        if min(out_shape) < 1:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])

    out = image if as_uint8 else image.astype(np.float64)
    # MATLAB: [~, order] = sort(scale) -- stable, so rows first on ties.
    order = sorted(range(2), key=lambda d: scales[d])
    for axis in order:
        out = _resize_axis(out, axis, out_shape[axis], scales[axis], as_uint8)
    if as_uint8:
        return out
    return out.astype(image.dtype, copy=False)


def bicubic_downscale(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``hr`` to a multiple of ``scale`` (top-left anchored) and bicubic-downscale it.

    Args:
        hr: HxW or HxWxC image (``uint8`` in [0, 255] or floating point).
        scale: Integer downscaling factor >= 1.

    Returns:
        ``(cropped_hr, lr)`` where ``cropped_hr = hr[:H - H % scale, :W - W % scale]`` and
        ``lr`` is ``imresize(cropped_hr, 1/scale)`` of shape ``(H // scale, W // scale, ...)``.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    s = int(scale)
    h, w = hr.shape[:2]
    if h < s or w < s:
        raise ValueError(f"image of size {h}x{w} is smaller than the scale factor {s}")
    cropped = hr[: h - h % s, : w - w % s]
    if s == 1:
        return cropped, cropped.copy()
    lr = imresize(cropped, output_shape=(cropped.shape[0] // s, cropped.shape[1] // s))
    return cropped, lr
