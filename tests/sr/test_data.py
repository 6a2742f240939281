"""Tests for image I/O, dataset layouts, the LR cache and patch sampling."""

from __future__ import annotations

import io
import os
import pickle
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from spacelang.sr import data as data_mod
from spacelang.sr.data import (
    DataError,
    DataWarning,
    ImagePair,
    ImageSet,
    PatchDataset,
    benchmark,
    div2k,
    embedded,
    folder,
    full_image_tensors,
    open_dataset,
)
from spacelang.sr.images import ImageError, probe_image, read_image, write_image
from spacelang.sr.imresize import bicubic_downscale
from tests.paths import SHARED

SET5 = SHARED / "data" / "Set5"


@pytest.fixture(autouse=True)
def _isolated_user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Keep the fallback LR cache (``$XDG_CACHE_HOME``) out of the real home folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random RGB image (uint8), so bicubic LR has structure."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(h // 4 + 2, w // 4 + 2, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR))
    return np.clip(big.astype(np.int16) + rng.integers(-20, 21, size=big.shape), 0, 255).astype(
        np.uint8
    )


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# images.py


def test_read_write_roundtrip(tmp_path: Path) -> None:
    img = _noise(17, 23)
    write_image(tmp_path / "a.png", img)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (17, 23, 3)
    np.testing.assert_array_equal(out, img)
    assert probe_image(tmp_path / "a.png") == (17, 23)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no temp file left behind


def test_write_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    write_image(path, np.zeros((4, 4, 3), np.uint8))
    write_image(path, np.full((5, 6, 3), 7, np.uint8))
    np.testing.assert_array_equal(read_image(path), np.full((5, 6, 3), 7, np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_read_converts_gray_and_rgba(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    rgba = np.dstack([_noise(6, 7), np.full((6, 7), 9, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), rgba[..., :3])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not an image"),
        (lambda p: p.mkdir(), "directory"),
        (
            lambda p: Image.fromarray(np.zeros((4, 4), np.uint16)).save(p),
            "unsupported image mode",
        ),
    ],
)
def test_read_errors_name_path(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageError, match=match) as info:
        read_image(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImageError):
        probe_image(path)


def test_truncated_png(tmp_path: Path) -> None:
    path = _png(tmp_path / "full.png", _noise(64, 64))
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"cut\.png"):
        read_image(cut)
    with pytest.raises(ImageError, match=r"cut\.png"):
        probe_image(cut)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_noise(8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


_VALID_PNG = _png_bytes()


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, len(_VALID_PNG)), junk=st.binary(max_size=64), pos=st.integers(0, 200))
def test_no_raw_pil_exception_escapes(cut: int, junk: bytes, pos: int) -> None:
    blob = bytearray(_VALID_PNG[:cut])
    at = min(pos, len(blob))
    blob[at : at + len(junk)] = junk
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.png"
        path.write_bytes(bytes(blob))
        try:
            out = read_image(path)
        except ImageError as e:
            assert str(path) in str(e)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="extension"):
        write_image(tmp_path / "a.unknownext", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ImageError, match="could not write"):
        write_image(tmp_path / "missing_dir" / "a.png", np.zeros((2, 2, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# Plain folder + LR cache


def _make_folder(root: Path, n: int = 3) -> dict[str, np.ndarray]:
    imgs = {f"img{i}": _noise(30 + i, 41 + 2 * i, seed=i) for i in range(n)}
    for name, img in imgs.items():
        _png(root / f"{name}.png", img)
    return imgs


def test_folder_pairs(tmp_path: Path) -> None:
    imgs = _make_folder(tmp_path / "imgs")
    ds = folder(tmp_path / "imgs", 2)
    assert isinstance(ds, ImageSet) and len(ds) == 3
    assert ds.names == ["img0", "img1", "img2"]
    for pair in ds:
        hr_full = imgs[pair.name]
        cropped, lr = bicubic_downscale(hr_full, 2)
        np.testing.assert_array_equal(pair.hr, cropped)
        np.testing.assert_array_equal(pair.lr, lr)
        assert pair.scale == 2
        assert pair.hr.shape[0] == 2 * pair.lr.shape[0]
    assert ds[-1].name == "img2"
    assert [p.name for p in ds[1:]] == ["img1", "img2"]
    with pytest.raises(IndexError):
        ds[3]


def test_folder_cache_hit_and_invalidation(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=2)
    first = folder(root, 2)[0]
    cache_dir = root / ".spacelang_cache" / "X2"
    assert len(list(cache_dir.glob("img0.png.*.png"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("LR recomputed despite a valid cache entry")

    # Cache hit: a fresh set loads the LR from disk without resizing.
    with monkeypatch.context() as m:
        m.setattr(data_mod, "bicubic_downscale", boom)
        again = folder(root, 2)[0]
    np.testing.assert_array_equal(again.lr, first.lr)

    # Changing the HR (new content, size and mtime) invalidates the entry.
    new_hr = _noise(36, 50, seed=99)
    _png(root / "img0.png", new_hr)
    st = (root / "img0.png").stat()
    os.utime(root / "img0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = folder(root, 2)[0]
    np.testing.assert_array_equal(changed.lr, bicubic_downscale(new_hr, 2)[1])
    np.testing.assert_array_equal(changed.hr, new_hr)
    assert len(list(cache_dir.glob("img0.png.*.png"))) == 1  # stale entry removed


def test_folder_cache_falls_back_to_user_cache(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=1)
    (root / ".spacelang_cache").write_text("not a folder")  # default location unusable
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    folder(root, 2)[0]
    cached = list((xdg / "spacelang" / "lr").glob("imgs-*/X2/img0.png.*.png"))
    assert len(cached) == 1


def test_folder_read_only_is_not_written(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=1)
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    root.chmod(0o555)
    try:
        folder(root, 2)[0]
        assert not (root / ".spacelang_cache").exists()
    finally:
        root.chmod(0o755)
    assert list((xdg / "spacelang" / "lr").glob("imgs-*/X2/*.png"))


def test_folder_explicit_cache_dir(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=1)
    folder(root, 3, cache_dir=tmp_path / "c")[0]
    assert list((tmp_path / "c").glob("imgs-*/X3/img0.png.*.png"))
    assert not (root / ".spacelang_cache").exists()


def test_corrupt_image_fail_and_skip(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=2)
    (root / "x.png").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(DataError, match=r"x\.png"):
        folder(root, 2)
    with pytest.warns(DataWarning, match=r"x\.png"):
        ds = folder(root, 2, on_error="skip")
    assert ds.names == ["img0", "img1"]
    with pytest.raises(DataError, match=r"x\.png"):
        open_dataset(root, 2)


def test_image_smaller_than_scale(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=1)
    _png(root / "tiny.png", np.zeros((3, 9, 3), np.uint8))
    with pytest.raises(DataError, match=r"tiny\.png"):
        folder(root, 4)
    with pytest.warns(DataWarning, match=r"tiny\.png"):
        assert folder(root, 4, on_error="skip").names == ["img0"]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no images"):
        folder(tmp_path / "empty", 2)
    with pytest.raises(DataError, match="accepted"):
        open_dataset(tmp_path / "empty", 2)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope", 2)
    with pytest.raises(DataError, match="not a folder"):
        open_dataset(tmp_path / "empty" / "notes.txt", 2)
    with pytest.raises(DataError, match="all skipped"), pytest.warns(DataWarning):
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "a.png").write_bytes(b"nope")
        folder(tmp_path / "bad", 2, on_error="skip")


def test_load_time_error_is_data_error(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _make_folder(root, n=1)
    ds = folder(root, 2)
    (root / "img0.png").unlink()
    with pytest.raises(DataError, match=r"img0\.png"):
        ds[0]


# ---------------------------------------------------------------------------------------------
# Benchmark and DIV2K layouts


def test_benchmark_uses_lr_files(tmp_path: Path) -> None:
    root = tmp_path / "Set2"
    hr = _noise(41, 30, seed=1)  # odd size: HR gets cropped to 40x30
    lr = _noise(20, 15, seed=2)  # deliberately NOT the bicubic of hr
    _png(root / "HR" / "a.png", hr)
    _png(root / "LR_bicubic" / "X2" / "ax2.png", lr)
    _png(root / "HR" / "b.png", _noise(24, 24, seed=3))  # no LR file: made on the fly
    for ds in (benchmark(root, 2), open_dataset(root, 2)):
        assert ds.names == ["a", "b"]
        np.testing.assert_array_equal(ds[0].lr, lr)
        np.testing.assert_array_equal(ds[0].hr, hr[:40])
        np.testing.assert_array_equal(ds[1].lr, bicubic_downscale(_noise(24, 24, seed=3), 2)[1])


def test_benchmark_without_lr_folder(tmp_path: Path) -> None:
    root = tmp_path / "Set1"
    hr = _noise(33, 27)
    _png(root / "HR" / "a.png", hr)
    pair = open_dataset(root, 3)[0]
    cropped, lr = bicubic_downscale(hr, 3)
    np.testing.assert_array_equal(pair.lr, lr)
    np.testing.assert_array_equal(pair.hr, cropped)


def test_benchmark_size_mismatch(tmp_path: Path) -> None:
    root = tmp_path / "S"
    _png(root / "HR" / "a.png", _noise(40, 40))
    _png(root / "LR_bicubic" / "X2" / "ax2.png", _noise(10, 10))
    with pytest.raises(DataError, match=r"ax2\.png"):
        benchmark(root, 2)


def test_div2k_layout(tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    hr = {f"{i:04d}": _noise(32, 48, seed=i) for i in (1, 2)}
    for name, img in hr.items():
        _png(root / "DIV2K_train_HR" / f"{name}.png", img)
        _png(root / "DIV2K_train_LR_bicubic" / "X2" / f"{name}x2.png", bicubic_downscale(img, 2)[1])
    _png(root / "DIV2K_valid_HR" / "0801.png", _noise(32, 32, seed=801))  # no LR: on the fly
    train = open_dataset(root, 2)
    assert train.names == ["0001", "0002"]
    np.testing.assert_array_equal(train[1].hr, hr["0002"])
    valid = open_dataset(root, 2, split="val")
    assert valid.names == ["0801"] and valid[0].lr.shape == (16, 16, 3)
    assert div2k(root, 2, "valid").names == ["0801"]
    (tmp_path / "only_valid" / "DIV2K_valid_HR").mkdir(parents=True)
    with pytest.raises(DataError, match="DIV2K_train_HR"):
        div2k(tmp_path / "only_valid", 2)
    with pytest.raises(ValueError):
        open_dataset(root, 2, split="test")


def test_open_dataset_detects_folder(tmp_path: Path) -> None:
    _make_folder(tmp_path / "plain", n=2)
    ds = open_dataset(tmp_path / "plain", 2)
    assert ds.names == ["img0", "img1"] and "folder" in repr(ds)


def test_image_pair_validation() -> None:
    lr = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError):
        ImagePair("x", lr, np.zeros((8, 11, 3), np.uint8))
    with pytest.raises(ValueError):
        ImagePair("x", lr, np.zeros((8, 15, 3), np.uint8))  # different factors
    with pytest.raises(ValueError):
        ImagePair("x", lr.astype(np.float32), np.zeros((8, 10, 3), np.uint8))
    assert ImagePair("x", lr, np.zeros((12, 15, 3), np.uint8)).scale == 3


# ---------------------------------------------------------------------------------------------
# Embedded (scikit-image) photographs


def test_embedded_offline(monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    train, val = embedded(2, "train"), open_dataset(None, 2, split="val")
    assert len(train) >= 4 and len(val) >= 1
    assert not set(train.names) & set(val.names)
    assert open_dataset("embedded", 2).names == train.names
    pair = val[0]
    assert pair.hr.shape[0] == 2 * pair.lr.shape[0] and pair.hr.shape[2] == 3
    assert pair.hr.std() > 10  # a real photograph, not a blank


# ---------------------------------------------------------------------------------------------
# PatchDataset


@pytest.fixture()
def small_set(tmp_path: Path) -> ImageSet:
    _make_folder(tmp_path / "imgs", n=3)
    return folder(tmp_path / "imgs", 2)


def test_patches_shapes_and_range(small_set: ImageSet) -> None:
    ds = PatchDataset(small_set, 2, 16, seed=0)
    assert len(ds) == 3
    lr, hr = ds[0]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16)
    assert lr.dtype == torch.float32 and hr.dtype == torch.float32
    assert float(lr.min()) >= 0.0 and float(hr.max()) <= 1.0
    with pytest.raises(IndexError):
        ds[3]


def test_patches_deterministic(small_set: ImageSet, tmp_path: Path) -> None:
    a = PatchDataset(small_set, 2, 16, seed=7, length=20)
    b = PatchDataset(folder(tmp_path / "imgs", 2), 2, 16, seed=7, length=20)
    forward = [a[i] for i in range(20)]
    backward = {i: b[i] for i in reversed(range(20))}
    for i in range(20):
        assert torch.equal(forward[i][0], backward[i][0])
        assert torch.equal(forward[i][1], backward[i][1])
    # Survives pickling (DataLoader workers) and gives the same items.
    c = pickle.loads(pickle.dumps(a))
    assert torch.equal(c[5][1], forward[5][1])
    # Different items / seeds give different patches.
    assert not torch.equal(forward[0][1], forward[3][1])  # same image (0 % 3 == 3 % 3)
    other = PatchDataset(small_set, 2, 16, seed=8, length=20)
    assert any(not torch.equal(other[i][1], forward[i][1]) for i in range(20))


def _locate(patch: np.ndarray, image: np.ndarray) -> list[tuple[int, int]]:
    p = patch.shape[0]
    h, w = image.shape[:2]
    return [
        (y, x)
        for y in range(h - p + 1)
        for x in range(w - p + 1)
        if np.array_equal(image[y : y + p, x : x + p], patch)
    ]


def _as_hwc_uint8(t: torch.Tensor) -> np.ndarray:
    return np.rint(t.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)


def test_patches_aligned_without_augment(small_set: ImageSet) -> None:
    ds = PatchDataset(small_set, 2, 12, seed=3, augment=False, length=9)
    for i in range(9):
        pair = small_set[i % 3]
        lr, hr = (_as_hwc_uint8(t) for t in ds[i])
        hits = _locate(lr, pair.lr)
        assert len(hits) == 1
        y, x = hits[0]
        np.testing.assert_array_equal(hr, pair.hr[2 * y : 2 * y + 12, 2 * x : 2 * x + 12])


def _dihedral_variants(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for t in (False, True):
        b = a.transpose(1, 0, 2) if t else a
        for k in range(4):
            out.append(np.rot90(b, k))
    return out


def test_patches_aligned_with_augment(small_set: ImageSet) -> None:
    ds = PatchDataset(small_set, 2, 12, seed=5, augment=True, length=12)
    seen = set()
    for i in range(12):
        pair = small_set[i % 3]
        lr, hr = (_as_hwc_uint8(t) for t in ds[i])
        found = False
        for k, (lr_v, hr_v) in enumerate(
            zip(_dihedral_variants(lr), _dihedral_variants(hr), strict=True)
        ):
            for y, x in _locate(lr_v, pair.lr):
                if np.array_equal(hr_v, pair.hr[2 * y : 2 * y + 12, 2 * x : 2 * x + 12]):
                    found = True
                    seen.add(k)
        assert found, f"patch {i}: LR and HR are not the same transform of one region"
    assert len(seen) > 1  # augmentation actually happens


def test_patch_length_repeats_images(small_set: ImageSet) -> None:
    ds = PatchDataset(small_set, 2, 8, seed=0, length=50)
    assert len(ds) == 50
    assert ds[49][0].shape == (3, 4, 4)


def test_patch_errors(small_set: ImageSet) -> None:
    with pytest.raises(ValueError, match="multiple"):
        PatchDataset(small_set, 2, 15, seed=0)
    with pytest.raises(ValueError):
        PatchDataset(small_set, 3, 15, seed=0)  # set is x2
    with pytest.raises(DataError, match="img0"):
        PatchDataset(small_set, 2, 64, seed=0)  # images are ~30x41
    # Sizes unknown up front (embedded): the error comes when the item is loaded.
    big = PatchDataset(embedded(2, "val"), 2, 2048, seed=0)
    with pytest.raises(DataError, match="chelsea"):
        big[0]


def test_full_image_tensors(small_set: ImageSet) -> None:
    pair = small_set[0]
    lr, hr = full_image_tensors(pair)
    assert lr.shape == (3, *pair.lr.shape[:2]) and hr.shape == (3, *pair.hr.shape[:2])
    assert lr.dtype == torch.float32
    np.testing.assert_array_equal(_as_hwc_uint8(hr), pair.hr)


def test_set5_benchmark_layout() -> None:
    if not (SET5 / "HR").is_dir() or not (SET5 / "LR_bicubic" / "X2").is_dir():
        pytest.skip(f"Set5 reference data not found under {SET5}")
    ds = open_dataset(SET5, 2)  # LR files exist: nothing is written to the shared folder
    assert ds.names == ["baby", "bird", "butterfly", "head", "woman"]
    pair = ds[4]
    assert pair.lr.shape == (172, 114, 3) and pair.hr.shape == (344, 228, 3)
