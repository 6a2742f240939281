"""Super-resolution datasets: LR/HR image pairs and random training patches.

All images are HxWx3 ``uint8`` RGB arrays in [0, 255]; tensors handed to models are float32
CxHxW in [0, 1]. LR images are MATLAB-style bicubic downscales of the HR image
(:func:`spacelang.sr.imresize.bicubic_downscale`), either read from disk or made on the fly
(and then cached on disk as PNG for folder layouts).

Layouts understood by :func:`open_dataset`:

* ``None`` or ``"embedded"``: photographs bundled with scikit-image (no download).
* ``root/HR/*.png`` (+ optional ``root/LR_bicubic/X{s}/{name}x{s}.png``): benchmark sets
  such as Set5, Set14, B100, Urban100.
* ``root/DIV2K_{train,valid}_HR/`` (+ optional ``DIV2K_{split}_LR_bicubic/X{s}/``): DIV2K.
* any other folder of ``.png/.jpg/.jpeg/.bmp/.tif/.tiff`` images: HR only, LR made on the fly.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import numbers
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, overload

import attrs
import numpy as np
import torch
from torch.utils.data import Dataset

from spacelang.sr.images import ImageError, probe_image, read_image, write_image
from spacelang.sr.imresize import bicubic_downscale

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "DataWarning",
    "ImagePair",
    "ImageSet",
    "PatchDataset",
    "benchmark",
    "div2k",
    "embedded",
    "folder",
    "full_image_tensors",
    "open_dataset",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

OnError = Literal["fail", "skip"]

# Bump when the LR generation changes, so stale on-disk caches are not reused.
_CACHE_VERSION = 1
_CACHE_DIRNAME = ".spacelang_cache"

_LAYOUTS = (
    "accepted sources: None or 'embedded' (bundled scikit-image photos); a folder with HR/ "
    "(and optionally LR_bicubic/X{s}/); a DIV2K root with DIV2K_train_HR/ or DIV2K_valid_HR/; "
    "or a folder of images (" + ", ".join(IMAGE_EXTENSIONS) + ")"
)

# Colour photographs shipped inside scikit-image (skimage.data.data_dir); no download needed.
_EMBEDDED_TRAIN = (
    ("astronaut", "astronaut.png"),
    ("coffee", "coffee.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("retina", "retina.jpg"),
    ("motorcycle_left", "motorcycle_left.png"),
)
_EMBEDDED_VAL = (
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.jpg"),
)


class DataError(Exception):
    """A dataset could not be opened or an image in it could not be used."""


class DataWarning(UserWarning):
    """An image was skipped (``on_error="skip"``) or the LR cache could not be used."""


# --------------------------------------------------------------------------------------------
# Pairs and sets


def _check_rgb8(name: str, what: str, a: object) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        desc = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{name}: {what} must be an HxWx3 uint8 array, got {desc}")


@attrs.frozen(eq=False)
class ImagePair:
    """An LR/HR training or evaluation pair.

    Attributes:
        name: Image name (file stem).
        lr: h x w x 3 ``uint8`` RGB, [0, 255].
        hr: (h*s) x (w*s) x 3 ``uint8`` RGB, [0, 255], already cropped to exactly ``s`` times
            the LR size (top-left anchored).
    """

    name: str
    lr: np.ndarray
    hr: np.ndarray

    def __attrs_post_init__(self) -> None:
        _check_rgb8(self.name, "lr", self.lr)
        _check_rgb8(self.name, "hr", self.hr)
        (lh, lw), (hh, hw) = self.lr.shape[:2], self.hr.shape[:2]
        if min(lh, lw) < 1 or hh % lh or hw % lw or hh // lh != hw // lw:
            raise ValueError(
                f"{self.name}: hr {hh}x{hw} is not an integer multiple of lr {lh}x{lw}"
            )

    @property
    def scale(self) -> int:
        """The integer factor between HR and LR sizes."""
        return self.hr.shape[0] // self.lr.shape[0]


@attrs.frozen
class _Entry:
    """A lazily loaded pair: ``loader()`` builds it; ``lr_size`` is (h, w) if known cheaply."""

    name: str
    loader: _Loader
    lr_size: tuple[int, int] | None


class ImageSet(Sequence[ImagePair]):
    """A sequence of :class:`ImagePair`, loaded lazily on indexing.

    The most recently used ``memory_cache`` pairs are kept decoded in memory (the cache is not
    pickled, so DataLoader workers start empty); since pairs may be shared this way, their
    arrays are read-only. Loading errors raise :class:`DataError`.
    """

    def __init__(
        self, entries: Sequence[_Entry], scale: int, *, description: str, memory_cache: int = 16
    ) -> None:
        self._entries = tuple(entries)
        self.scale = scale
        self.description = description
        self.memory_cache = memory_cache
        self._lru: collections.OrderedDict[int, ImagePair] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @overload
    def __getitem__(self, index: int) -> ImagePair: ...

    @overload
    def __getitem__(self, index: slice) -> ImageSet: ...

    def __getitem__(self, index: int | slice) -> ImagePair | ImageSet:
        if isinstance(index, slice):
            return ImageSet(
                self._entries[index],
                self.scale,
                description=self.description,
                memory_cache=self.memory_cache,
            )
        n = len(self._entries)
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for ImageSet of {n} images")
        pair = self._lru.get(i)
        if pair is not None:
            self._lru.move_to_end(i)
            return pair
        pair = self._entries[i].loader()
        if self.memory_cache > 0:
            self._lru[i] = pair
            while len(self._lru) > self.memory_cache:
                self._lru.popitem(last=False)
        return pair

    def __iter__(self) -> Iterator[ImagePair]:
        for i in range(len(self)):
            yield self[i]

    @property
    def names(self) -> list[str]:
        """Image names, in index order."""
        return [e.name for e in self._entries]

    def lr_size(self, index: int) -> tuple[int, int] | None:
        """LR ``(height, width)`` of image ``index`` if known without decoding it, else None."""
        return self._entries[index].lr_size

    def materialize(self) -> ImageSet:
        """Load every pair now and return a set that keeps them all in memory."""
        pairs = [self[i] for i in range(len(self))]
        entries = [_Entry(p.name, _Preloaded(p), p.lr.shape[:2]) for p in pairs]
        return ImageSet(entries, self.scale, description=self.description, memory_cache=0)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_lru"] = collections.OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"ImageSet({self.description}, x{self.scale}, {len(self)} images)"


# --------------------------------------------------------------------------------------------
# Loaders (module-level attrs classes so that ImageSets pickle into DataLoader workers)


@attrs.frozen
class _LRCache:
    """On-disk PNG cache of generated LR images, keyed by HR file name + size + mtime."""

    directory: Path

    def _key(self, hr_path: Path, scale: int) -> str:
        st = hr_path.stat()
        raw = f"v{_CACHE_VERSION}|x{scale}|{hr_path.name}|{st.st_size}|{st.st_mtime_ns}"
        return f"{hr_path.name}.{hashlib.sha1(raw.encode()).hexdigest()[:16]}.png"

    def load(self, hr_path: Path, scale: int) -> tuple[str, np.ndarray | None]:
        key = self._key(hr_path, scale)
        path = self.directory / key
        if not path.is_file():
            return key, None
        try:
            return key, read_image(path)
        except ImageError:
            return key, None  # damaged cache entry: regenerate

    def store(self, key: str, hr_name: str, lr: np.ndarray) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_image(self.directory / key, lr)
        except (OSError, ImageError) as e:
            warnings.warn(f"could not cache LR image in {self.directory}: {e}", DataWarning, 3)
            return
        stale = re.compile(re.escape(hr_name) + r"\.[0-9a-f]{16}\.png")
        for other in self.directory.iterdir():
            if other.name != key and stale.fullmatch(other.name):
                other.unlink(missing_ok=True)


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except ImageError as e:
        raise DataError(f"cannot load image {path}: {e.reason}") from e


def _frozen_pair(name: str, lr: np.ndarray, hr: np.ndarray) -> ImagePair:
    """An ImagePair over contiguous, read-only copies-or-views of freshly loaded arrays."""
    lr, hr = np.ascontiguousarray(lr), np.ascontiguousarray(hr)
    lr.setflags(write=False)
    hr.setflags(write=False)
    return ImagePair(name, lr, hr)


@attrs.frozen
class _GeneratedPair:
    """HR from a file, LR by bicubic downscaling (through the disk cache if any)."""

    name: str
    hr_path: Path
    scale: int
    cache: _LRCache | None

    def __call__(self) -> ImagePair:
        key, lr = "", None
        if self.cache is not None:
            # A missing or unreadable HR file is reported by _read below.
            with contextlib.suppress(OSError):
                key, lr = self.cache.load(self.hr_path, self.scale)
        hr = _read(self.hr_path)
        h, w = hr.shape[:2]
        s = self.scale
        if h < s or w < s:
            raise DataError(f"image {self.hr_path} ({h}x{w}) is smaller than the scale x{s}")
        hr = hr[: h - h % s, : w - w % s]
        if lr is None or lr.shape != (h // s, w // s, 3):
            hr, lr = bicubic_downscale(hr, s)
            if self.cache is not None and key:
                self.cache.store(key, self.hr_path.name, lr)
        return _frozen_pair(self.name, lr, hr)


@attrs.frozen
class _FilePair:
    """HR and LR both from files; HR cropped (top-left) to ``scale`` times the LR size."""

    name: str
    hr_path: Path
    lr_path: Path
    scale: int

    def __call__(self) -> ImagePair:
        hr = _read(self.hr_path)
        lr = _read(self.lr_path)
        lh, lw = lr.shape[:2]
        s = self.scale
        if hr.shape[0] // s != lh or hr.shape[1] // s != lw:
            raise DataError(_size_mismatch(self.hr_path, hr.shape[:2], self.lr_path, (lh, lw), s))
        return _frozen_pair(self.name, lr, hr[: lh * s, : lw * s])


@attrs.frozen
class _Preloaded:
    pair: ImagePair

    def __call__(self) -> ImagePair:
        return self.pair


_Loader = _GeneratedPair | _FilePair | _Preloaded


def _size_mismatch(
    hr_path: Path, hr_size: tuple[int, ...], lr_path: Path, lr_size: tuple[int, ...], s: int
) -> str:
    return (
        f"LR image {lr_path} is {lr_size[0]}x{lr_size[1]} but HR image {hr_path} "
        f"({hr_size[0]}x{hr_size[1]}) needs {hr_size[0] // s}x{hr_size[1] // s} at x{s}"
    )


# --------------------------------------------------------------------------------------------
# Constructors


def _check_args(scale: int, on_error: str) -> None:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")


def _bad_image(message: str, on_error: OnError) -> None:
    """Raise DataError (``fail``) or warn and return (``skip``)."""
    if on_error == "fail":
        raise DataError(message)
    warnings.warn(f"skipping: {message}", DataWarning, stacklevel=3)


def _probe(path: Path, on_error: OnError) -> tuple[int, int] | None:
    try:
        return probe_image(path)
    except ImageError as e:
        _bad_image(f"unusable image {path}: {e.reason}", on_error)
        return None


def _list_images(directory: Path) -> list[Path]:
    try:
        files = sorted(
            p
            for p in directory.iterdir()
            if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
        )
    except OSError as e:
        raise DataError(f"cannot list folder {directory}: {e}") from e
    return files


def _unique_names(files: Sequence[Path]) -> list[str]:
    stems = collections.Counter(f.stem for f in files)
    return [f.stem if stems[f.stem] == 1 else f.name for f in files]


def _writable_dir(d: Path) -> bool:
    """Create ``d`` if needed and check a file can be made in it.

    Folders whose permission bits forbid writing count as read-only even for root (who could
    write anyway), so read-only datasets are never modified.
    """
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        mode = existing.stat().st_mode
    except OSError:
        return False
    if not existing.is_dir() or not mode & 0o222 or not os.access(existing, os.W_OK):
        return False
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError:
        return False
    return True


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spacelang" / "lr"


def _cache_subdir(root: Path) -> str:
    absolute = str(root.resolve())
    return f"{root.resolve().name}-{hashlib.sha1(absolute.encode()).hexdigest()[:12]}"


def _resolve_cache(
    root: Path, scale: int, cache_dir: str | os.PathLike[str] | None
) -> _LRCache | None:
    """Pick the LR cache folder (see :func:`folder`); None (with a warning) if none works."""
    if cache_dir is not None:
        d = Path(cache_dir).expanduser() / _cache_subdir(root) / f"X{scale}"
        if not _writable_dir(d):
            raise DataError(f"LR cache folder {d} is not writable")
        return _LRCache(d)
    candidates = (
        root / _CACHE_DIRNAME / f"X{scale}",
        _user_cache_root() / _cache_subdir(root) / f"X{scale}",
    )
    for d in candidates:
        if _writable_dir(d):
            return _LRCache(d)
    warnings.warn(
        f"no writable LR cache folder for {root} (tried {', '.join(map(str, candidates))}); "
        "LR images will be recomputed on every load",
        DataWarning,
        stacklevel=3,
    )
    return None


def _check_dir(path: str | os.PathLike[str], what: str) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder")
    return root


def folder(
    path: str | os.PathLike[str],
    scale: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: OnError = "fail",
) -> ImageSet:
    """A folder of HR images; LR images are made by bicubic downscaling and cached as PNG.

    Images (``IMAGE_EXTENSIONS``, hidden files ignored) are checked when the set is built;
    pixels are decoded on first access. HR images are cropped to a multiple of ``scale``.

    The LR cache lives in ``<path>/.spacelang_cache/X{scale}/``, or, when that is not writable,
    in ``$XDG_CACHE_HOME/spacelang/lr/<folder>-<hash of absolute path>/X{scale}/`` (default
    ``~/.cache``). With ``cache_dir`` given it is ``cache_dir/<folder>-<hash>/X{scale}/``.
    Entries are keyed by HR file name, size and modification time, so editing an HR image
    invalidates its LR.

    Args:
        path: Folder of HR images.
        scale: Integer SR factor.
        cache_dir: Explicit cache root (must be writable).
        on_error: ``"fail"`` raises :class:`DataError` for an unreadable or too-small image;
            ``"skip"`` leaves it out with a :class:`DataWarning`.

    Raises:
        DataError: missing folder, no usable images, a bad image with ``on_error="fail"``.
    """
    _check_args(scale, on_error)
    root = _check_dir(path, "image folder")
    files = _list_images(root)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {root}")
    cache = _resolve_cache(root, scale, cache_dir)
    entries = []
    for name, f in zip(_unique_names(files), files, strict=True):
        size = _probe(f, on_error)
        if size is None:
            continue
        if min(size) < scale:
            _bad_image(f"image {f} ({size[0]}x{size[1]}) is smaller than x{scale}", on_error)
            continue
        lr_size = (size[0] // scale, size[1] // scale)
        entries.append(_Entry(name, _GeneratedPair(name, f, scale, cache), lr_size))
    if not entries:
        raise DataError(f"no usable images in folder {root} (all skipped)")
    return ImageSet(entries, scale, description=f"folder {root}")


def _find_lr(lr_dir: Path, stem: str, scale: int) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        candidate = lr_dir / f"{stem}x{scale}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _paired(
    hr_dir: Path,
    lr_dir: Path,
    scale: int,
    *,
    cache_dir: str | os.PathLike[str] | None,
    on_error: OnError,
    description: str,
) -> ImageSet:
    """HR folder plus an LR folder of ``{stem}x{scale}.png``; missing LR made on the fly."""
    files = _list_images(hr_dir)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in HR folder {hr_dir}")
    cache: _LRCache | None = None
    entries = []
    for name, hr_path in zip(_unique_names(files), files, strict=True):
        hr_size = _probe(hr_path, on_error)
        if hr_size is None:
            continue
        if min(hr_size) < scale:
            _bad_image(
                f"image {hr_path} ({hr_size[0]}x{hr_size[1]}) is smaller than x{scale}", on_error
            )
            continue
        lr_path = _find_lr(lr_dir, hr_path.stem, scale) if lr_dir.is_dir() else None
        if lr_path is None:
            if cache is None:
                cache = _resolve_cache(hr_dir, scale, cache_dir)
            lr_size = (hr_size[0] // scale, hr_size[1] // scale)
            entries.append(_Entry(name, _GeneratedPair(name, hr_path, scale, cache), lr_size))
            continue
        lr_size = _probe(lr_path, on_error)
        if lr_size is None:
            continue
        if (hr_size[0] // scale, hr_size[1] // scale) != lr_size:
            _bad_image(_size_mismatch(hr_path, hr_size, lr_path, lr_size, scale), on_error)
            continue
        entries.append(_Entry(name, _FilePair(name, hr_path, lr_path, scale), lr_size))
    if not entries:
        raise DataError(f"no usable images in {hr_dir} (all skipped)")
    return ImageSet(entries, scale, description=description)


def benchmark(
    root: str | os.PathLike[str],
    scale: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: OnError = "fail",
) -> ImageSet:
    """A benchmark set laid out as ``root/HR/{name}.png`` + ``root/LR_bicubic/X{s}/{name}x{s}.png``.

    LR images that are missing are made by bicubic downscaling (cached as in :func:`folder`,
    for the ``root/HR`` folder). HR images are cropped (top-left) to ``scale`` x the LR size.
    """
    _check_args(scale, on_error)
    base = _check_dir(root, "benchmark folder")
    hr_dir = _check_dir(base / "HR", "HR folder")
    return _paired(
        hr_dir,
        base / "LR_bicubic" / f"X{scale}",
        scale,
        cache_dir=cache_dir,
        on_error=on_error,
        description=f"benchmark {base}",
    )


def _normalise_split(split: str, valid: str) -> str:
    if split == "train":
        return "train"
    if split in ("val", "valid"):
        return valid
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def div2k(
    root: str | os.PathLike[str],
    scale: int,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    on_error: OnError = "fail",
) -> ImageSet:
    """DIV2K: ``root/DIV2K_{split}_HR/0001.png`` + ``DIV2K_{split}_LR_bicubic/X{s}/0001x{s}.png``.

    ``split`` is ``"train"`` or ``"valid"`` (``"val"`` accepted). Missing LR images are made
    by bicubic downscaling (cached as in :func:`folder`).
    """
    _check_args(scale, on_error)
    split = _normalise_split(split, "valid")
    base = _check_dir(root, "DIV2K folder")
    hr_dir = base / f"DIV2K_{split}_HR"
    if not hr_dir.is_dir():
        raise DataError(f"DIV2K folder {base} has no {hr_dir.name}/ for split {split!r}")
    return _paired(
        hr_dir,
        base / f"DIV2K_{split}_LR_bicubic" / f"X{scale}",
        scale,
        cache_dir=cache_dir,
        on_error=on_error,
        description=f"DIV2K {split} {base}",
    )


def embedded(scale: int, split: str = "train") -> ImageSet:
    """Colour photographs bundled with scikit-image; no network access.

    ``split="train"``: astronaut, coffee, hubble_deep_field, immunohistochemistry, retina,
    motorcycle_left (6 images). ``split="val"``: chelsea, rocket (2 images). LR images are made
    by bicubic downscaling in memory.
    """
    _check_args(scale, "fail")
    split = _normalise_split(split, "val")
    try:
        import skimage.data
    except ImportError:
        raise DataError("the embedded photographs come from scikit-image, which is not "
                        "installed: pip install 'spacelang[embedded]', or give --data") from None

    data_dir = Path(skimage.data.data_dir)
    items = _EMBEDDED_TRAIN if split == "train" else _EMBEDDED_VAL
    entries = []
    for name, filename in items:
        path = data_dir / filename
        if not path.is_file():
            raise DataError(f"scikit-image sample image {path} is missing from this installation")
        entries.append(_Entry(name, _GeneratedPair(name, path, scale, None), None))
    return ImageSet(entries, scale, description=f"embedded {split}")


def open_dataset(
    source: str | os.PathLike[str] | None,
    scale: int,
    *,
    split: str = "train",
    on_error: OnError = "fail",
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageSet:
    """Open a dataset, detecting its layout (see the module docstring).

    ``split`` (``"train"`` / ``"val"``) selects the part of DIV2K and embedded sources; folder
    and benchmark sources have no splits and return all their images.

    Raises:
        DataError: the source does not exist or matches no known layout (the message lists the
            accepted layouts), or one of the per-layout errors.
    """
    _check_args(scale, on_error)
    _normalise_split(split, "val")
    if source is None or (isinstance(source, str) and source == "embedded"):
        return embedded(scale, split)
    root = Path(source).expanduser()
    if not root.exists():
        raise DataError(f"dataset {root} does not exist; {_LAYOUTS}")
    if not root.is_dir():
        raise DataError(f"dataset {root} is not a folder; {_LAYOUTS}")
    if (root / "HR").is_dir():
        return benchmark(root, scale, cache_dir=cache_dir, on_error=on_error)
    if (root / "DIV2K_train_HR").is_dir() or (root / "DIV2K_valid_HR").is_dir():
        return div2k(root, scale, split, cache_dir=cache_dir, on_error=on_error)
    if not _list_images(root):
        raise DataError(f"dataset folder {root} has no images and no known layout; {_LAYOUTS}")
    return folder(root, scale, cache_dir=cache_dir, on_error=on_error)


# --------------------------------------------------------------------------------------------
# Tensors


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 [0, 255] -> 3xHxW float32 [0, 1]."""
    chw = image.transpose(2, 0, 1).astype(np.float32, order="C")  # always a fresh copy
    return torch.from_numpy(chw).div_(255.0)


def full_image_tensors(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-image ``(lr, hr)`` float32 CxHxW tensors in [0, 1], for validation."""
    return _to_tensor(pair.lr), _to_tensor(pair.hr)


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Random aligned LR/HR training patches.

    Item ``i`` takes image ``i % len(images)``, a random LR crop of ``patch_size // scale``
    pixels and the HR crop at the same place (``scale`` x larger), then (with ``augment``) a
    random horizontal flip, vertical flip and transpose (together: the 8 dihedral transforms).
    Randomness comes only from ``numpy.random.default_rng([seed, i])``, so an item is the
    same in any worker, process or order.

    Items are ``(lr, hr)`` float32 tensors, 3 x p/s x p/s and 3 x p x p, values in [0, 1].
    """

    def __init__(
        self,
        images: ImageSet,
        scale: int,
        patch_size: int,
        *,
        seed: int,
        augment: bool = True,
        length: int | None = None,
    ) -> None:
        if images.scale != scale:
            raise ValueError(f"images are x{images.scale} but scale={scale}")
        if patch_size < scale or patch_size % scale:
            raise ValueError(
                f"patch_size ({patch_size}) must be a positive multiple of scale ({scale})"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if len(images) == 0:
            raise DataError(f"{images!r} has no images")
        if length is not None and length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.images = images
        self.scale = scale
        self.patch_size = patch_size
        self.seed = seed
        self.augment = augment
        self.length = len(images) if length is None else length
        lp = patch_size // scale
        for j, name in enumerate(images.names):
            size = images.lr_size(j)
            if size is not None and min(size) < lp:
                raise DataError(self._too_small(name, size))

    def _too_small(self, name: str, lr_size: tuple[int, ...]) -> str:
        s, p = self.scale, self.patch_size
        return (
            f"image {name!r} in {self.images!r} is {lr_size[0] * s}x{lr_size[1] * s} "
            f"(LR {lr_size[0]}x{lr_size[1]}), smaller than the {p}x{p} patch"
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} patches")
        pair = self.images[index % len(self.images)]
        lh, lw = pair.lr.shape[:2]
        lp, s = self.patch_size // self.scale, self.scale
        if lh < lp or lw < lp:
            raise DataError(self._too_small(pair.name, (lh, lw)))
        rng = np.random.default_rng([self.seed, index])
        y = int(rng.integers(0, lh - lp + 1))
        x = int(rng.integers(0, lw - lp + 1))
        flips = rng.random(3) < 0.5
        lr = pair.lr[y : y + lp, x : x + lp]
        hr = pair.hr[y * s : (y + lp) * s, x * s : (x + lp) * s]
        if self.augment:
            lr, hr = _dihedral(lr, *flips), _dihedral(hr, *flips)
        return _to_tensor(lr), _to_tensor(hr)


def _dihedral(a: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    if hflip:
        a = a[:, ::-1]
    if vflip:
        a = a[::-1]
    if transpose:
        a = a.transpose(1, 0, 2)
    return a
