"""Super-resolution quality metrics computed the way the SR literature reports them.

``psnr`` and ``ssim`` follow the MATLAB evaluation protocol used by most SR papers (and BasicSR's
``calculate_psnr`` / ``calculate_ssim``): inputs are 8-bit RGB images, ``crop`` pixels are removed
on every border, and by default the metric is computed on the Y channel of ITU-R BT.601 YCbCr as
MATLAB's ``rgb2ycbcr`` produces it for ``uint8`` input (i.e. Y rounded to an integer in [16, 235]).

SR network outputs must be quantised to 8 bits before evaluation; use :func:`to_uint8`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["psnr", "rgb_to_y", "ssim", "to_uint8"]

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64)

_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_L = 255.0
_SSIM_WIN = 11
_SSIM_SIGMA = 1.5


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (MATLAB's ``round`` and integer conversion)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def to_uint8(image: torch.Tensor | np.ndarray, rgb_range: float) -> np.ndarray:
    """Quantise a float image with values in [0, ``rgb_range``] to 8 bits.

    Args:
        image: CxHxW (or 1xCxHxW) ``torch.Tensor``, or HxWxC ``numpy`` array, float values
            nominally in [0, rgb_range] (e.g. ``rgb_range=1`` or ``255``).
        rgb_range: The value that maps to 255.

    Returns:
        HxWxC ``uint8`` array: ``round(image * 255 / rgb_range)`` (half away from zero),
        clipped to [0, 255].
    """
    if rgb_range <= 0:
        raise ValueError(f"rgb_range must be positive, got {rgb_range}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise ValueError(f"expected an HxWxC array, got shape {image.shape}")
        array = image.astype(np.float64)
    else:
        t: Any = image
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3:
            raise ValueError(f"expected a CxHxW tensor, got shape {tuple(t.shape)}")
        array = t.detach().to("cpu").double().numpy().transpose(1, 2, 0)
    scaled = np.clip(array * (255.0 / rgb_range), 0.0, 255.0)
    return np.floor(scaled + 0.5).astype(np.uint8)


def rgb_to_y(image: np.ndarray, *, round_8bit: bool = False) -> np.ndarray:
    """Luma (Y) of ITU-R BT.601 YCbCr, as MATLAB's ``rgb2ycbcr``.

    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in [0, 1].

    Args:
        image: HxWx3 RGB; ``uint8`` with values in [0, 255], or floating with values in [0, 1].
        round_8bit: Round Y to an integer (half away from zero), which is what MATLAB returns
            for ``uint8`` input.

    Returns:
        HxW ``float64`` Y on the 8-bit scale, in [16, 235] for in-range input.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        rgb = image.astype(np.float64) / 255.0
    elif np.issubdtype(image.dtype, np.floating):
        rgb = image.astype(np.float64)
    else:
        raise TypeError(f"expected uint8 or floating-point image, got {image.dtype}")
    y = 16.0 + rgb @ _Y_WEIGHTS
    return _round_half_away(y) if round_8bit else y


def _prepare(sr: np.ndarray, hr: np.ndarray, crop: int, y_channel: bool) -> tuple[Any, Any]:
    """Validate, crop borders and optionally take rounded Y; returns float64 arrays."""
    for name, img in (("sr", sr), ("hr", hr)):
        if img.dtype != np.uint8:
            raise TypeError(
                f"{name} must be uint8 (quantise SR output with to_uint8 first), got {img.dtype}"
            )
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{name} must be an HxWx3 RGB image, got shape {img.shape}")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {sr.shape} vs {hr.shape}")
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    h, w = hr.shape[:2]
    if h <= 2 * crop or w <= 2 * crop:
        raise ValueError(f"crop={crop} leaves nothing of a {h}x{w} image")
    if crop:
        sr = sr[crop:-crop, crop:-crop]
        hr = hr[crop:-crop, crop:-crop]
    if y_channel:
        return rgb_to_y(sr, round_8bit=True), rgb_to_y(hr, round_8bit=True)
    return sr.astype(np.float64), hr.astype(np.float64)


def psnr(sr: np.ndarray, hr: np.ndarray, *, crop: int, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255).

    Args:
        sr: HxWx3 ``uint8`` RGB super-resolved image, values in [0, 255] (already rounded).
        hr: HxWx3 ``uint8`` RGB ground truth, same shape.
        crop: Pixels removed from each border before comparison (usually the scale factor).
        y_channel: Compare rounded BT.601 Y (as MATLAB ``rgb2ycbcr``); otherwise the MSE is
            taken over all three RGB channels.

    Returns:
        ``10 * log10(255**2 / MSE)``; ``inf`` when the (cropped) images are identical.
    """
    a, b = _prepare(sr, hr, crop, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window() -> np.ndarray:
    """1-D normalised Gaussian, 11 taps, sigma 1.5 (``fspecial('gaussian', 11, 1.5)`` factor)."""
    x = np.arange(_SSIM_WIN, dtype=np.float64) - (_SSIM_WIN - 1) / 2
    g = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of an HxW image with the outer product ``g gᵀ``."""
    n = g.size
    rows = np.lib.stride_tricks.sliding_window_view(img, n, axis=0) @ g  # (H-n+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, n, axis=1) @ g  # (H-n+1, W-n+1)


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two HxW float64 images on the 0-255 scale (Wang et al. 2004)."""
    g = _gaussian_window()
    c1 = (_SSIM_K1 * _SSIM_L) ** 2
    c2 = (_SSIM_K2 * _SSIM_L) ** 2
    mu_a = _filter_valid(a, g)
    mu_b = _filter_valid(b, g)
    mu_a2, mu_b2, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a = _filter_valid(a * a, g) - mu_a2
    var_b = _filter_valid(b * b, g) - mu_b2
    cov = _filter_valid(a * b, g) - mu_ab
    num = (2 * mu_ab + c1) * (2 * cov + c2)
    den = (mu_a2 + mu_b2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))


def ssim(sr: np.ndarray, hr: np.ndarray, *, crop: int, y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) as MATLAB ``ssim_index`` / BasicSR.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering (no
    padding), mean of the SSIM map.

    Args:
        sr: HxWx3 ``uint8`` RGB super-resolved image, values in [0, 255] (already rounded).
        hr: HxWx3 ``uint8`` RGB ground truth, same shape.
        crop: Pixels removed from each border first; at least 11x11 pixels must remain.
        y_channel: Use rounded BT.601 Y; otherwise the mean of the per-channel RGB SSIMs.

    Returns:
        Mean SSIM, at most 1 (exactly 1 for identical images).
    """
    a, b = _prepare(sr, hr, crop, y_channel)
    if min(a.shape[:2]) < _SSIM_WIN:
        raise ValueError(
            f"SSIM needs at least {_SSIM_WIN}x{_SSIM_WIN} pixels after cropping, "
            f"got {a.shape[0]}x{a.shape[1]}"
        )
    if y_channel:
        return _ssim_single(a, b)
    return float(np.mean([_ssim_single(a[..., c], b[..., c]) for c in range(a.shape[2])]))
