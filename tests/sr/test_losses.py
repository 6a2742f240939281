"""Tests for spacelang.sr.losses: L1 and L1 + HFEN."""

import pytest
import torch
import torch.nn.functional as F

from spacelang.sr.losses import dlsr_high_pass, laplacian_of_gaussian, pixel_loss


def test_hfen_loss_is_l1_plus_weighted_log_l1():
    gen = torch.Generator().manual_seed(0)
    sr = torch.rand(2, 3, 20, 20, generator=gen)
    hr = torch.rand(2, 3, 20, 20, generator=gen)
    expected = F.l1_loss(sr, hr) + 0.2 * F.l1_loss(laplacian_of_gaussian(sr),
                                                   laplacian_of_gaussian(hr))
    torch.testing.assert_close(pixel_loss("l1_hfen")(sr, hr), expected)
    assert float(pixel_loss("l1_hfen")(sr, hr)) > float(F.l1_loss(sr, hr))
    torch.testing.assert_close(pixel_loss("l1_hfen", 0.5)(sr, hr),
                               F.l1_loss(sr, hr) + 0.5 * F.l1_loss(laplacian_of_gaussian(sr),
                                                                   laplacian_of_gaussian(hr)))
    torch.testing.assert_close(pixel_loss("l1")(sr, hr), F.l1_loss(sr, hr))
    with pytest.raises(ValueError, match="unknown loss"):
        pixel_loss("l2")


def test_laplacian_of_gaussian_ignores_flat_images_and_sees_edges():
    flat = torch.full((1, 3, 16, 16), 0.7)
    response = laplacian_of_gaussian(flat)
    assert response.shape == flat.shape
    assert float(response.abs().max()) < 1e-6
    edge = torch.zeros(1, 1, 16, 16)
    edge[..., 8:] = 1.0
    response = laplacian_of_gaussian(edge)
    assert float(response.abs().max()) > 0.01
    # zero far from the edge, opposite signs on its two sides
    assert float(response[..., 0].abs().max()) < 1e-3
    assert float(response[..., 7].mean()) * float(response[..., 8].mean()) < 0
    # channels are filtered independently
    two = torch.cat([flat[:, :1], edge], dim=1)
    torch.testing.assert_close(laplacian_of_gaussian(two)[:, 1:], response)


def _gaussian_5x5() -> torch.Tensor:
    r = torch.arange(5, dtype=torch.float64) - 2
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    k = torch.outer(g, g)
    return k / k.sum()


def _dlsr_filter_by_hand(x: torch.Tensor) -> torch.Tensor:
    """Gaussian per channel by explicit sums, then the Laplacian stencil, channels summed."""
    x = x.double()
    n, c, h, w = x.shape
    g = _gaussian_5x5()
    blurred = torch.zeros(n, c, h - 4, w - 4, dtype=torch.float64)
    for dy in range(5):
        for dx in range(5):
            blurred += g[dy, dx] * x[:, :, dy:dy + h - 4, dx:dx + w - 4]
    b = blurred.sum(1, keepdim=True)
    return (b[:, :, :-2, 1:-1] + b[:, :, 2:, 1:-1] + b[:, :, 1:-1, :-2] + b[:, :, 1:-1, 2:]
            - 4 * b[:, :, 1:-1, 1:-1])


def test_dlsr_hfen_is_gaussian_then_laplacian_each_over_its_batch_maximum():
    g = torch.Generator().manual_seed(1)
    sr, hr = torch.rand(2, 3, 16, 12, generator=g), torch.rand(2, 3, 16, 12, generator=g)
    a, b = _dlsr_filter_by_hand(sr), _dlsr_filter_by_hand(hr)
    assert dlsr_high_pass(sr).shape == (2, 1, 10, 6)
    torch.testing.assert_close(dlsr_high_pass(sr).double(), a, rtol=1e-5, atol=1e-5)
    expected = F.l1_loss(sr, hr) + 0.5 * (a / a.max() - b / b.max()).abs().mean()
    got = pixel_loss("l1_hfen", 0.5, hfen="dlsr")(sr, hr)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_dlsr_hfen_does_not_depend_on_the_pixel_scale_unlike_log9():
    g = torch.Generator().manual_seed(2)
    sr, hr = torch.rand(1, 3, 20, 20, generator=g), torch.rand(1, 3, 20, 20, generator=g)
    hfen = {form: pixel_loss("l1_hfen", 1.0, hfen=form) for form in ("dlsr", "log9")}
    l1 = F.l1_loss(sr, hr)
    dlsr_1 = float(hfen["dlsr"](sr, hr) - l1)
    dlsr_255 = float(hfen["dlsr"](255 * sr, 255 * hr) - 255 * l1)
    assert dlsr_255 == pytest.approx(dlsr_1, rel=1e-4)
    log_1 = float(hfen["log9"](sr, hr) - l1)
    assert float(hfen["log9"](255 * sr, 255 * hr) - 255 * l1) == pytest.approx(255 * log_1,
                                                                              rel=1e-4)


def test_unknown_hfen_form_is_refused():
    with pytest.raises(ValueError, match="HFEN form"):
        pixel_loss("l1_hfen", hfen="sobel")
