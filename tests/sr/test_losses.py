"""Tests for spacelang.sr.losses: L1 and L1 + HFEN."""

import pytest
import torch
import torch.nn.functional as F

from spacelang.sr.losses import laplacian_of_gaussian, pixel_loss


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
