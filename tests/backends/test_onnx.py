"""ONNX export: onnxruntime reproduces PyTorch within 1e-3 on the 0–255 scale, for the
shipped published networks, with reference weights when ../shared has them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from spacelang.backends.onnx import export_onnx, run_onnx

from spacelang.api import load
from spacelang.sr.weights import load_weights
from tests.paths import REPO, SHARED

pytest.importorskip("onnx", reason="the onnx extra is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

WEIGHTS = SHARED / "weights"
CASES = {
    "imdn.space": ("imdn_x2.pth", "imdn.yaml"),
    "dlsr_derived.space": ("dlsr_x2.pt", "dlsr.yaml"),
}

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("reference", [False, True], ids=["random", "reference"])
@pytest.mark.parametrize("spec", sorted(CASES))
def test_onnxruntime_matches_pytorch(spec, reference, tmp_path):
    space = load(REPO / "spaces" / spec)
    torch.manual_seed(0)
    model = space.fixed().eval()
    if reference:
        weights, rename = CASES[spec]
        if not (WEIGHTS / weights).is_file():
            pytest.skip(f"reference weights {WEIGHTS / weights} are not there")
        load_weights(model, WEIGHTS / weights, REPO / "examples" / "weights" / rename)
    target = tmp_path / "model.onnx"
    export_onnx(model, space.network, target)
    rgb_range = space.network.rgb_range
    for height, width in ((32, 24), (27, 41)):  # dynamic sizes, not the export size
        lr = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        lr = lr * rgb_range
        with torch.no_grad():
            expected = model(lr).numpy()
        got = run_onnx(target, lr.numpy())
        assert got.shape == expected.shape == (1, 3, 2 * height, 2 * width)
        worst = float(np.abs(got - expected).max()) * 255 / rgb_range
        assert worst <= 1e-3, f"{spec}: max |onnx − torch| = {worst:.2e} on 0–255"
