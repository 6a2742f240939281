"""Tests for PSNR / SSIM / Y-channel conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from spacelang.sr.imresize import imresize
from spacelang.sr.metrics import psnr, rgb_to_y, ssim, to_uint8
from tests.paths import SHARED

SET5 = SHARED / "data" / "Set5"

PROPS = settings(max_examples=30, deadline=None)

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def _rgb(value: tuple[int, int, int], h: int = 4, w: int = 4) -> np.ndarray:
    return np.broadcast_to(np.array(value, dtype=np.uint8), (h, w, 3)).copy()


images = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(11, 20), st.integers(11, 20), st.just(3)),
    elements=st.integers(0, 255),
)


# ---------------------------------------------------------------------------------------------
# rgb_to_y


def test_rgb_to_y_known_values() -> None:
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = rgb_to_y(img)
    np.testing.assert_allclose(y[0], [16.0, 235.0, 81.481, 144.553, 40.966], atol=1e-9)
    # MATLAB rgb2ycbcr on uint8 rounds half away from zero: 81.481 -> 81, 144.553 -> 145.
    np.testing.assert_array_equal(rgb_to_y(img, round_8bit=True)[0], [16, 235, 81, 145, 41])
    # Float input in [0, 1] gives the same Y on the 8-bit scale.
    np.testing.assert_allclose(rgb_to_y(img / 255.0), y, atol=1e-9)


def test_rgb_to_y_matches_skimage() -> None:
    from skimage.color import rgb2ycbcr

    img = np.random.default_rng(0).integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(img), rgb2ycbcr(img)[..., 0], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# PSNR


def test_psnr_hand_computed_rgb() -> None:
    hr = _rgb((0, 0, 0))
    sr = hr.copy()
    sr[1, 2] = 16  # one pixel off by 16 in all three channels
    mse = 3 * 16**2 / (4 * 4 * 3)  # = 16
    assert psnr(sr, hr, crop=0, y_channel=False) == pytest.approx(10 * math.log10(255**2 / mse))


def test_psnr_hand_computed_y() -> None:
    hr = _rgb((0, 0, 0))
    sr = hr.copy()
    sr[1, 2] = 16
    # Y(black) = 16; Y(16,16,16) = 16 + 16 * 219/255 = 29.74 -> 30. One pixel differs by 14.
    mse = 14**2 / 16
    assert psnr(sr, hr, crop=0) == pytest.approx(10 * math.log10(255**2 / mse))


def test_psnr_identical_is_inf() -> None:
    img = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    assert psnr(img, img, crop=2) == math.inf
    assert psnr(img, img, crop=0, y_channel=False) == math.inf


def test_psnr_matches_skimage_rgb() -> None:
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    expected = peak_signal_noise_ratio(a[3:-3, 3:-3], b[3:-3, 3:-3], data_range=255)
    assert psnr(a, b, crop=3, y_channel=False) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# SSIM


def test_ssim_constant_images_closed_form() -> None:
    # Constant images: all variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 100.0, 120.0
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    got = ssim(
        _rgb((100, 100, 100), 11, 11), _rgb((120, 120, 120), 11, 11), crop=0, y_channel=False
    )
    assert got == pytest.approx(expected, rel=1e-9)


def test_ssim_rgb_is_mean_over_channels() -> None:
    sr, hr = _rgb((10, 100, 200), 13, 13), _rgb((30, 100, 150), 13, 13)

    def one(a: float, b: float) -> float:
        return (2 * a * b + C1) / (a * a + b * b + C1)

    expected = (one(10, 30) + one(100, 100) + one(200, 150)) / 3
    assert ssim(sr, hr, crop=1, y_channel=False) == pytest.approx(expected, rel=1e-9)


def test_ssim_matches_skimage_valid_region() -> None:
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 25, size=a.shape), 0, 255).astype(np.uint8)
    ya, yb = rgb_to_y(a[2:-2, 2:-2], round_8bit=True), rgb_to_y(b[2:-2, 2:-2], round_8bit=True)
    # skimage with these options averages exactly the 'valid' region of the same SSIM map.
    expected = structural_similarity(
        ya, yb, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert ssim(a, b, crop=2) == pytest.approx(expected, rel=1e-10)


def test_ssim_needs_11_pixels() -> None:
    img = np.zeros((14, 14, 3), np.uint8)
    with pytest.raises(ValueError, match="11x11"):
        ssim(img, img, crop=2)


# ---------------------------------------------------------------------------------------------
# Properties


@PROPS
@given(a=images, data=st.data())
def test_symmetry_and_bounds(a: np.ndarray, data: st.DataObject) -> None:
    b = data.draw(hnp.arrays(np.uint8, a.shape, elements=st.integers(0, 255)))
    for y_channel in (True, False):
        assert psnr(a, b, crop=0, y_channel=y_channel) == psnr(b, a, crop=0, y_channel=y_channel)
        s = ssim(a, b, crop=0, y_channel=y_channel)
        assert s == ssim(b, a, crop=0, y_channel=y_channel)
        assert -1.0 <= s <= 1.0 + 1e-12


@PROPS
@given(a=images)
def test_identity(a: np.ndarray) -> None:
    assert psnr(a, a, crop=0) == math.inf
    assert ssim(a, a, crop=0) == 1.0
    assert ssim(a, a, crop=0, y_channel=False) == 1.0


@PROPS
@given(a=images, crop=st.integers(1, 3), noise=st.integers(1, 255))
def test_crop_removes_border_differences(a: np.ndarray, crop: int, noise: int) -> None:
    b = a.copy()
    b[:crop] ^= np.uint8(noise)  # change only the top `crop` rows
    b[:, -crop:] ^= np.uint8(noise)  # and the right `crop` columns
    assert psnr(a, b, crop=0, y_channel=False) < math.inf
    assert psnr(a, b, crop=crop, y_channel=False) == math.inf
    assert psnr(a, b, crop=crop) == math.inf
    if min(a.shape[:2]) - 2 * crop >= 11:
        assert ssim(a, b, crop=crop) == 1.0


def test_rejects_float_and_mismatched_inputs() -> None:
    a = np.zeros((12, 12, 3), np.uint8)
    with pytest.raises(TypeError, match="to_uint8"):
        psnr(a.astype(np.float32), a, crop=0)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(a, a[:11], crop=0)
    with pytest.raises(ValueError, match="crop"):
        psnr(a, a, crop=6)


# ---------------------------------------------------------------------------------------------
# to_uint8


def test_to_uint8_tensor_and_array() -> None:
    t = torch.tensor([[[0.0, 0.5 / 255, 1.0], [-0.2, 1.2, 0.25]]])  # 1x2x3 CHW in [0, 1]
    t = t.expand(3, 2, 3)
    out = to_uint8(t, 1.0)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    # 0.5/255 * 255 = 0.5 rounds half away from zero to 1; out-of-range values are clipped.
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 255], [0, 255, 64]])
    np.testing.assert_array_equal(to_uint8((t * 255).unsqueeze(0), 255), out)
    np.testing.assert_array_equal(to_uint8(t.permute(1, 2, 0).numpy(), 1.0), out)


# ---------------------------------------------------------------------------------------------
# Reference data: bicubic x2 on Set5 (literature: 33.66 dB / 0.9299 on Y, crop 2)


def test_set5_bicubic_x2_sanity() -> None:
    hr_dir, lr_dir = SET5 / "HR", SET5 / "LR_bicubic" / "X2"
    if not hr_dir.is_dir() or not lr_dir.is_dir():
        pytest.skip(f"Set5 reference data not found under {SET5}")
    psnrs, ssims = [], []
    for hr_path in sorted(hr_dir.glob("*.png")):
        with Image.open(hr_path) as im:
            hr = np.asarray(im.convert("RGB"))
        with Image.open(lr_dir / f"{hr_path.stem}x2.png") as im:
            lr = np.asarray(im.convert("RGB"))
        hr = hr[: lr.shape[0] * 2, : lr.shape[1] * 2]
        sr = imresize(lr, 2.0)
        psnrs.append(psnr(sr, hr, crop=2))
        ssims.append(ssim(sr, hr, crop=2))
    assert len(psnrs) == 5
    mean_psnr, mean_ssim = float(np.mean(psnrs)), float(np.mean(ssims))
    assert 33.0 <= mean_psnr <= 34.5, f"Set5 x2 bicubic PSNR {mean_psnr:.3f} dB"
    assert 0.92 <= mean_ssim <= 0.94, f"Set5 x2 bicubic SSIM {mean_ssim:.4f}"
