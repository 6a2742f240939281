"""Tests for the MATLAB-compatible bicubic resize."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spacelang.sr.imresize import bicubic_downscale, imresize
from tests.paths import SHARED

SET5 = SHARED / "data" / "Set5"
SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")

PROPS = settings(max_examples=40, deadline=None)


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _set5_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not (SET5 / "HR").is_dir() or not (SET5 / "LR_bicubic" / "X2").is_dir():
        pytest.skip(f"Set5 reference data not found under {SET5}")
    return [
        (n, _load(SET5 / "HR" / f"{n}.png"), _load(SET5 / "LR_bicubic" / "X2" / f"{n}x2.png"))
        for n in SET5_NAMES
    ]


# ---------------------------------------------------------------------------------------------
# Reference data (LR made by MATLAB imresize(hr, 1/2, 'bicubic'))


def test_set5_x2_matches_matlab() -> None:
    total = within_one = exact = 0
    worst = 0
    for name, hr, ref in _set5_pairs():
        cropped, lr = bicubic_downscale(hr, 2)
        assert cropped.shape == (ref.shape[0] * 2, ref.shape[1] * 2, 3), name
        assert lr.shape == ref.shape and lr.dtype == np.uint8, name
        diff = np.abs(lr.astype(np.int16) - ref.astype(np.int16))
        total += diff.size
        within_one += int((diff <= 1).sum())
        exact += int((diff == 0).sum())
        worst = max(worst, int(diff.max()))
    pct_within = 100.0 * within_one / total
    pct_exact = 100.0 * exact / total
    msg = f"Set5 x2: {pct_within:.4f}% within 1 grey level, {pct_exact:.4f}% exact, max |d|={worst}"
    assert pct_within >= 99.9, msg
    # The implementation is bit-exact on Set5; guard against silent regressions.
    assert pct_exact == 100.0, msg


# ---------------------------------------------------------------------------------------------
# Hand-computed values


def test_upscale_x2_hand_computed() -> None:
    # Column [a, b] = [0, 1] upscaled x2. Output pixel 1 maps to u = 0.75, taps at source
    # positions -1, 0, 1, 2 (mirrored to b, a, a, b) with Keys weights for distances
    # 1.75, 0.75, 0.25, 1.25: -0.0234375, 0.2265625, 0.8671875, -0.0703125.
    # out1 = 1.09375 a - 0.09375 b; out2 = 0.796875 a + 0.203125 b; the rest by symmetry.
    column = np.array([[0.0], [1.0]])
    out = imresize(column, 2.0)
    np.testing.assert_allclose(out[:, 0], [-0.09375, 0.203125, 0.796875, 1.09375], atol=1e-12)


def test_downscale_x2_interior_weights() -> None:
    # Antialiased x2 reduction: the kernel is cubic(x/2)/2 sampled at half-integer offsets
    # (+-0.5, +-1.5, +-2.5, +-3.5), giving symmetric weights w0..w3 on each side.
    def cubic(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        if x <= 2:
            return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
        return 0.0

    w = np.array([cubic(d / 2) / 2 for d in (3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5)])
    w /= w.sum()
    signal = np.zeros((32, 1))
    signal[15, 0] = 1.0  # impulse at 0-based index 15
    out = imresize(signal, output_shape=(16, 1))[:, 0]
    # Output k (0-based) is centred at 0-based input 2k + 0.5 and covers inputs 2k-3 .. 2k+4.
    expected = np.zeros(16)
    for k in range(16):
        taps = range(2 * k - 3, 2 * k + 5)
        expected[k] = sum(wt for wt, j in zip(w, taps, strict=True) if j == 15)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_uint8_rounds_half_away_and_clips() -> None:
    # A bright step overshoots above 255 when upscaled; uint8 output must saturate, not wrap.
    img = np.zeros((8, 8), dtype=np.uint8)
    img[:, 4:] = 255
    out = imresize(img, 2.0)
    assert out.dtype == np.uint8
    flt = imresize(img.astype(np.float64), 2.0)
    assert flt.max() > 255 and flt.min() < 0
    np.testing.assert_array_equal(out, np.clip(np.floor(flt + 0.5), 0, 255))


def test_bicubic_downscale_crops_top_left() -> None:
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    cropped, lr = bicubic_downscale(hr, 3)
    assert cropped.shape == (36, 48, 3)
    np.testing.assert_array_equal(cropped, hr[:36, :48])
    assert lr.shape == (12, 16, 3)
    np.testing.assert_array_equal(lr, imresize(hr[:36, :48], 1 / 3))


def test_argument_errors() -> None:
    img = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError):
        imresize(img)
    with pytest.raises(ValueError):
        imresize(img, 2.0, (8, 8))
    with pytest.raises(ValueError):
        imresize(img, -1.0)
    with pytest.raises(TypeError):
        imresize(img.astype(np.int32), 2.0)
    with pytest.raises(ValueError):
        bicubic_downscale(img, 0)
    with pytest.raises(ValueError):
        bicubic_downscale(img, 5)


def test_large_image_is_fast() -> None:
    img = np.random.default_rng(0).integers(0, 256, size=(1356, 2040, 3), dtype=np.uint8)
    start = time.perf_counter()
    _, lr = bicubic_downscale(img, 2)
    elapsed = time.perf_counter() - start
    assert lr.shape == (678, 1020, 3)
    # Typically ~0.15 s; the bound is loose so that a loaded CI machine does not flake.
    assert elapsed < 3.0, f"bicubic x2 of a 2040x1356 image took {elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------
# Properties

sizes = st.integers(min_value=1, max_value=24)
scales = st.sampled_from([0.25, 1 / 3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0])


@PROPS
@given(h=sizes, w=sizes, c=st.sampled_from([1, 3]), value=st.integers(0, 255), scale=scales)
def test_constant_stays_constant(h: int, w: int, c: int, value: int, scale: float) -> None:
    img = np.full((h, w, c), value, dtype=np.uint8)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(h * scale), math.ceil(w * scale), c)
    assert np.all(out == value)
    out_f = imresize(img.astype(np.float64) / 255, scale)
    np.testing.assert_allclose(out_f, value / 255, atol=1e-12)


@PROPS
@given(h=sizes, w=sizes, scale=scales)
def test_output_shape_is_ceil(h: int, w: int, scale: float) -> None:
    img = np.zeros((h, w), dtype=np.float32)
    out = imresize(img, scale)
    assert out.shape == (math.ceil(scale * h), math.ceil(scale * w))
    assert out.dtype == np.float32


@PROPS
@given(h=sizes, w=sizes, k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_upscale_then_downscale_restores_shape(h: int, w: int, k: int, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    up = imresize(img, float(k))
    assert up.shape == (h * k, w * k, 3)
    down = imresize(up, output_shape=(h, w))
    assert down.shape == img.shape and down.dtype == np.uint8


@PROPS
@given(
    h=st.integers(2, 20),
    w=st.integers(2, 20),
    oh=st.integers(1, 40),
    ow=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_flip_equivariance(h: int, w: int, oh: int, ow: int, seed: int) -> None:
    # With an explicit output shape, the sampling grid is symmetric about the image centre.
    img = np.random.default_rng(seed).random((h, w, 2))
    out = imresize(img, output_shape=(oh, ow))
    np.testing.assert_allclose(
        imresize(img[::-1, ::-1], output_shape=(oh, ow)), out[::-1, ::-1], atol=1e-10
    )


@PROPS
@given(h=sizes, w=sizes, scale=scales, a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_linear_in_float_mode(h: int, w: int, scale: float, a: float, b: float) -> None:
    img = np.random.default_rng(h * 31 + w).random((h, w))
    np.testing.assert_allclose(
        imresize(a * img + b, scale), a * imresize(img, scale) + b, atol=1e-9
    )


@PROPS
@given(h=sizes, w=sizes, seed=st.integers(0, 2**16), scale=scales)
def test_channels_are_independent(h: int, w: int, seed: int, scale: float) -> None:
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    out = imresize(img, scale)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], imresize(img[..., c], scale))


@PROPS
@given(h=sizes, w=sizes, seed=st.integers(0, 2**16))
def test_scale_one_is_identity(h: int, w: int, seed: int) -> None:
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    np.testing.assert_array_equal(imresize(img, 1.0), img)
