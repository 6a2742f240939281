"""Tiled upscaling: the IR's receptive radius, and tiles that reproduce whole-image output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spacelang.api import loads
from spacelang.sr.upscale import UpscaleError, receptive_radius, upscale_array

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# Reach 1 (3×3) + 2 (3×3, dilation 2) in LR pixels, then a 3×3 conv after ×2: ½ more.
LOCAL = """\
network local(C = 6, scale = 2) {
    s = lrelu(conv(input, C, k=3), slope=0.1)
    d = conv(s, C, k=3, dilation=2) + s
    up = pixel_shuffle(conv(d, 3 * scale * scale, k=1), scale)
    return conv(up, 3, k=3)
}
"""

GREY = """\
network grey(input: 1, C = 4, scale = 3) {
    s = relu(conv(input, C, k=5))
    return pixel_shuffle(conv(s, scale * scale, k=3), scale)
}
"""


def _model(text: str, seed: int = 0):
    space = loads(text, path="t.space")
    torch.manual_seed(seed)
    model = space.fixed()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)  # larger weights: mistakes in the overlap show in the 8-bit output
    return space.network, model


def test_receptive_radius_counts_reach_in_lr_pixels():
    network, _ = _model(LOCAL)
    assert receptive_radius(network) == 4  # ceil(1 + 2 + 1/2)


def test_receptive_radius_of_networks_with_global_operations_is_unbounded(spaces_dir):
    from spacelang.api import load

    assert receptive_radius(load(spaces_dir / "imdn.space").network) is None
    assert receptive_radius(load(spaces_dir / "dlsr_derived.space").network) is None


def _image(rng, height, width, grey=False):
    shape = (height, width) if grey else (height, width, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@settings(max_examples=25, deadline=None)
@given(height=st.integers(3, 40), width=st.integers(3, 40), tile=st.integers(1, 17),
       seed=st.integers(0, 2**16))
def test_tiles_with_the_receptive_overlap_equal_the_whole_image(height, width, tile, seed):
    network, model = _model(LOCAL)
    image = _image(np.random.default_rng(seed), height, width)
    whole = upscale_array(model, image, 2, network.rgb_range)
    tiled = upscale_array(model, image, 2, network.rgb_range, tile=tile,
                          overlap=receptive_radius(network))
    assert tiled.shape == whole.shape == (2 * height, 2 * width, 3)
    np.testing.assert_array_equal(tiled, whole)


def test_a_too_small_overlap_shows_at_the_seams():
    network, model = _model(LOCAL)
    image = _image(np.random.default_rng(1), 32, 32)
    whole = upscale_array(model, image, 2, network.rgb_range)
    tiled = upscale_array(model, image, 2, network.rgb_range, tile=8, overlap=1)
    assert (tiled != whole).any()


def test_grey_networks_take_and_give_grey_images():
    network, model = _model(GREY)
    image = _image(np.random.default_rng(2), 20, 14, grey=True)
    whole = upscale_array(model, image, 3, network.rgb_range)
    tiled = upscale_array(model, image, 3, network.rgb_range, tile=6,
                          overlap=receptive_radius(network))
    assert whole.shape == (60, 42)
    np.testing.assert_array_equal(tiled, whole)


def test_negative_tile_is_refused():
    _, model = _model(LOCAL)
    with pytest.raises(UpscaleError, match="≥ 0"):
        upscale_array(model, _image(np.random.default_rng(0), 4, 4), 2, 1, tile=-1)
