"""examples/device_check.py imports without a GPU, and its α-trajectory comparison reads
the search's arch.jsonl as a search writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.paths import load_example


@pytest.fixture(scope="module")
def device_check():
    return load_example("device_check")


def _write(path: Path, alphas: list[list[float]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"iteration": i, "epoch": i, "arch": {"light": a, "pick": [0.0, 0.0]}})
             for i, a in enumerate(alphas)]
    (path / "arch.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_alpha_gap_is_the_largest_probability_difference(device_check, tmp_path):
    _write(tmp_path / "fp32", [[0.0, 0.0], [1.0, 0.0]])
    _write(tmp_path / "bf16", [[0.0, 0.0], [1.0, 0.1]])
    fp32 = device_check.alpha_trajectory(tmp_path / "fp32")
    bf16 = device_check.alpha_trajectory(tmp_path / "bf16")
    assert len(fp32) == 2 and fp32[0].shape == (4,)
    expected = float(torch.softmax(torch.tensor([1.0, 0.0]), 0)[0]
                     - torch.softmax(torch.tensor([1.0, 0.1]), 0)[0])
    assert device_check.alpha_gap(fp32, bf16) == pytest.approx(expected)
    assert device_check.alpha_gap(fp32, fp32) == 0.0
    with pytest.raises(AssertionError):
        device_check.alpha_gap(fp32, bf16[:1])
