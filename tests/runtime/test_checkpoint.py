"""Tests for spacelang.runtime.checkpoint: atomic saves, safe loads, RNG state."""

import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import spacelang.runtime.checkpoint as checkpoint_module
from spacelang.runtime.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tests.paths import REPO


class Opaque:
    """A custom class: weights-only loading must refuse it."""

    def __init__(self) -> None:
        self.value = 3


class Exploit:
    """Unpickling this would create ``marker`` if code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip(tmp_path: Path) -> None:
    model = torch.nn.Conv2d(3, 4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": 7,
        "best": None,
        "window": [1.5, 2],
        "config": "scale: 2\n",
        "nested": {"shape": torch.Size([1, 2]), "t": (1, 2.5, "x", True)},
    }
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 7 and loaded["best"] is None and loaded["window"] == [1.5, 2]
    assert loaded["nested"]["t"] == (1, 2.5, "x", True)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["model"][key], value)
    fresh = torch.optim.Adam(torch.nn.Conv2d(3, 4, 3).parameters())
    fresh.load_state_dict(loaded["optimizer"])
    assert temp_files(path.parent) == []


def test_interrupted_save_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})

    def crash(src: object, dst: object) -> None:
        assert Path(str(src)).exists()  # the new data is fully written by now
        raise KeyboardInterrupt("simulated crash between temp write and replace")

    monkeypatch.setattr(checkpoint_module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"iteration": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded["iteration"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert temp_files(tmp_path) == []


def test_hard_crash_before_replace_keeps_old_file(tmp_path: Path) -> None:
    """A process that dies (no cleanup at all) after writing the temp file."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1})
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        import spacelang.runtime.checkpoint as ck
        ck.os.replace = lambda src, dst: os._exit(17)
        ck.save_checkpoint({str(path)!r}, {{"iteration": 2}})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 17
    assert load_checkpoint(path)["iteration"] == 1
    assert len(temp_files(tmp_path)) == 1  # the orphaned temp file; last.pt is untouched


def test_atomic_write_bytes_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    atomic_write_bytes(path, b"a: 1\n")
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"a: 2\n")
    assert path.read_bytes() == b"a: 2\n"
    assert path.stat().st_mode & 0o777 == 0o640


def test_unsupported_payload_is_rejected_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"iteration": 1})
    with pytest.raises(CheckpointError, match=r"payload\['meta'\]\['dir'\] is a pathlib"):
        save_checkpoint(path, {"meta": {"dir": Path("x")}})
    with pytest.raises(CheckpointError, match=r"numpy\.float64"):
        save_checkpoint(path, {"x": np.float64(1.0)})
    with pytest.raises(CheckpointError, match="must be a dict"):
        save_checkpoint(path, [1, 2])  # type: ignore[arg-type]
    assert load_checkpoint(path) == {"iteration": 1}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"iteration: 5\nthis is a text file\n", "not a PyTorch checkpoint"),
        (b"", "is empty"),
        (np.random.default_rng(0).bytes(4096), "not a PyTorch checkpoint"),
        (b"PK\x03\x04" + np.random.default_rng(1).bytes(4096), "damaged or not a PyTorch"),
        (b"\x80\x02" + np.random.default_rng(2).bytes(4096), "damaged or not a PyTorch"),
    ],
    ids=["text", "empty", "random", "fake-zip", "fake-pickle"],
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.randn(100, 100)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a checkpoint dict, found a list"):
        load_checkpoint(path)


def test_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "opaque.pt"
    torch.save({"model": {}, "extra": Opaque()}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        load_checkpoint(path)
    assert "Opaque" in str(info.value) and "nothing from the file was executed" in str(info.value)


@pytest.mark.parametrize("container", ["torch-zip", "pickle-2", "pickle-default"])
def test_code_in_checkpoint_never_runs(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save({"model": Exploit(marker)}, path)
    else:
        protocol = 2 if container == "pickle-2" else pickle.DEFAULT_PROTOCOL
        path.write_bytes(pickle.dumps({"model": Exploit(marker)}, protocol=protocol))
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def draws() -> tuple[float, float, float, float, torch.Tensor]:
    # gauss()/standard_normal() consume the cached second gaussian held in the state
    return (
        random.gauss(0, 1),
        random.random(),
        float(np.random.standard_normal()),
        float(np.random.rand()),
        torch.rand(4),
    )


def test_rng_state_round_trip_through_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    first = draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(path)["rng"])
    second = draws()
    assert first[:4] == second[:4]
    assert torch.equal(first[4], second[4])


def test_bad_rng_state() -> None:
    with pytest.raises(CheckpointError, match="invalid RNG state"):
        set_rng_state({"python": {}})
