"""Image data sets for optical diffusion models (numpy only, never downloads anything).

Readers
-------
``read_idx(path)``            IDX files (MNIST / Fashion-MNIST), ``.gz`` or raw.
``read_quickdraw(path)``      Quick, Draw! numpy bitmaps (``.npy``, ``[K, 784]`` uint8).
``read_image_folder(path)``   a folder of PNG/JPG/BMP/PGM images (optionally one sub-folder per class).

Transforms
----------
``resize_images(x, size)``    separable area (down) / bilinear (up) resampling in float64.
``to_model_range(x)``         map pixel values to float64 in ``[-1, 1]``.

Loader
------
``load_dataset(name, ...)``   -> ``(images float64 [K, size, size] in [-1, 1], labels int64 [K])``
for every name in ``DATASETS``. A data set that is not on disk raises ``FileNotFoundError``
listing every place that was searched and how to obtain the files.

Splits: MNIST and Fashion-MNIST have official ``train`` / ``test`` (``t10k``) files. The other
sets have no official split; there item ``i`` of each class (in file / sorted-name order) belongs
to ``test`` when ``i % 10 == 9`` and to ``train`` otherwise. ``split="all"`` takes everything.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..optics._args import integer

__all__ = [
    "DATASETS",
    "SPLITS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SYSTEM_DIR",
    "IMAGE_EXTENSIONS",
    "read_idx",
    "read_quickdraw",
    "read_image_folder",
    "resize_images",
    "to_model_range",
    "load_dataset",
    "dataset_class_names",
    "installed_fashion_mnist",
]

#: Names accepted by :func:`load_dataset`. ``"digits"`` (scikit-learn's bundled 8x8 digits)
#: is the default that needs no files on disk.
DATASETS = ("digits", "fashion-mnist", "mnist", "quickdraw", "folder")

#: Accepted values of ``split`` (``"t10k"`` is also accepted as an alias of ``"test"``).
SPLITS = ("train", "test", "all")

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: File name suffixes read by :func:`read_image_folder` (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".gif", ".tif", ".tiff")

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_MAX_DIMS = 16


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------

def _read_maybe_gzip(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{path}: corrupt or truncated gzip stream ({exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST / Fashion-MNIST container format).

    The file may be gzip-compressed (detected from its first bytes, whatever its name) or raw.
    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``d``, then ``d`` big-endian
    uint32 sizes, then the data in C order, big-endian.

    Returns
    -------
    numpy.ndarray
        Shape given by the header (e.g. ``[60000, 28, 28]`` images or ``[60000]`` labels),
        dtype in native byte order (uint8 for MNIST files). A fresh, writeable array.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Bad magic number, unknown type code, zero dimensions, or a payload size that does
        not match the header (truncated file or trailing bytes); the message names the file.
    """
    path = _as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    buf = _read_maybe_gzip(path)
    if len(buf) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(buf)} bytes, header needs 4)")
    if buf[0] != 0 or buf[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (bad magic number 0x{buf[0]:02x}{buf[1]:02x}{buf[2]:02x}"
            f"{buf[3]:02x}; IDX files start with two zero bytes)")
    code, ndim = buf[2], buf[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown IDX data type code 0x{code:02x} "
            f"(known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)})")
    if ndim == 0 or ndim > _IDX_MAX_DIMS:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions (expected 1..{_IDX_MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(buf)} bytes, header needs {header})")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # exact: an int64 product wraps for huge headers
    got = len(buf) - header
    if got < expected:
        raise ValueError(
            f"{path}: truncated IDX file: header says shape {dims} of {dtype.name} "
            f"({expected} data bytes) but only {got} bytes follow")
    if got > expected:
        raise ValueError(
            f"{path}: IDX file has {got - expected} unexpected trailing bytes after the data "
            f"of shape {dims}")
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def _open_quickdraw(path: Path) -> np.ndarray:
    """Memory-map a Quick, Draw! bitmap file and validate it; returns the [K, 784] map."""
    if not path.is_file():
        raise FileNotFoundError(f"Quick, Draw! file not found: {path}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a single .npy array, got {type(arr).__name__}")
    if arr.ndim != 2 or arr.shape[1] != 784:
        raise ValueError(f"{path}: Quick, Draw! bitmaps must have shape [K, 784], got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"{path}: Quick, Draw! bitmaps must be uint8, got {arr.dtype}")
    return arr


def read_quickdraw(path: str | os.PathLike, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Read a Quick, Draw! numpy bitmap file (one class per file).

    Parameters
    ----------
    path
        ``.npy`` file holding a uint8 array ``[K, 784]`` (28x28 drawings, white strokes on 0).
    indices
        Optional rows to read (the file is memory-mapped, so only these rows are loaded;
        the full-size files hold ~10^5 drawings each).

    Returns
    -------
    numpy.ndarray
        uint8 ``[K, 28, 28]`` (or ``[len(indices), 28, 28]``).

    Raises
    ------
    FileNotFoundError, ValueError (wrong shape/dtype, not an .npy file)
    """
    arr = _open_quickdraw(_as_path(path))
    rows = arr if indices is None else arr[_row_indices(indices, arr.shape[0])]
    return np.array(rows, dtype=np.uint8).reshape(-1, 28, 28)


def _as_path(path, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file or folder name (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


def _row_indices(indices, count: int) -> np.ndarray:
    """Exact integer row numbers in ``0..count-1`` (floats, bools and out-of-range rows refused)."""
    try:
        idx = np.asarray(indices)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"indices must be a sequence of row numbers ({exc})") from None
    if idx.size == 0:
        return idx.astype(np.int64).reshape(-1)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integer row numbers, got dtype {idx.dtype}")
    if idx.min() < 0 or idx.max() >= count:
        raise ValueError(f"indices must be row numbers in 0..{count - 1}, got {int(idx.min())}..{int(idx.max())}")
    return idx.astype(np.int64).reshape(-1)


def _size(size, name: str = "size") -> int:
    size = integer(size, name)
    if not 1 <= size <= 1 << 16:
        raise ValueError(f"{name} must be a positive number of pixels (<= 65536), got {size}")
    return size


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _load_gray(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image  # pillow is an optional dependency

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    if size is not None and arr.shape != (size, size):
        arr = np.clip(np.rint(resize_images(arr, size)), 0, 255).astype(np.uint8)
    return arr


def _folder_groups(root: Path) -> list[tuple[str, list[Path]]]:
    """``[(class_name, [image files])]`` for an image folder (see :func:`read_image_folder`)."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    loose = _list_images(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subdirs if _list_images(d)]
    if class_dirs and loose:
        raise ValueError(
            f"{root}: has both image files ({loose[0].name}, ...) and class sub-folders "
            f"({class_dirs[0].name}, ...); use one layout")
    groups = [(d.name, _list_images(d)) for d in class_dirs] if class_dirs else [(root.name, loose)]
    if not any(files for _, files in groups):
        raise FileNotFoundError(
            f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)} files in the "
            f"folder and its sub-folders)")
    return groups


def read_image_folder(path: str | os.PathLike, size: int | None = None, return_labels: bool = False):
    """Read a folder of images as 8-bit grayscale.

    Layout: either image files directly in ``path`` (one class, label 0), or one sub-folder
    per class (class names = sub-folder names sorted, labels 0..C-1; loose images next to
    class folders are an error). Files are read in sorted name order; hidden files and other
    extensions than ``IMAGE_EXTENSIONS`` are ignored. Colour images are converted with PIL
    mode ``"L"``.

    Size policy: with ``size=None`` every image must have the size of the first one,
    otherwise a ``ValueError`` names the offending file and both sizes (nothing is resized
    silently). With an integer ``size`` every image is resampled to ``size x size`` (area /
    bilinear, see :func:`resize_images`) as it is read, so mixed sizes are fine.

    Returns
    -------
    images : uint8 ``[K, H, W]``
    (labels int64 ``[K]``, class_names list[str])  only with ``return_labels=True``
    """
    root = _as_path(path)
    size = None if size is None else _size(size)
    groups = _folder_groups(root)
    images, labels, ref_shape, ref_file = [], [], None, None
    for label, (_, files) in enumerate(groups):
        for f in files:
            img = _load_gray(f, size)
            if ref_shape is None:
                ref_shape, ref_file = img.shape, f
            elif img.shape != ref_shape:
                raise ValueError(
                    f"{f}: image size {img.shape[1]}x{img.shape[0]} differs from "
                    f"{ref_file.name} ({ref_shape[1]}x{ref_shape[0]}); pass size= to resize "
                    f"all images on load")
            images.append(img)
            labels.append(label)
    out = np.stack(images).astype(np.uint8)
    if return_labels:
        return out, np.asarray(labels, dtype=np.int64), [name for name, _ in groups]
    return out


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------

def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights averaging the input over each output cell (exact overlaps)."""
    scale = n_in / n_out
    edges = np.arange(n_out + 1, dtype=np.float64) * scale
    lo, hi = edges[:-1, None], edges[1:, None]
    j = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, j + 1.0) - np.maximum(lo, j), 0.0, None)
    return overlap / scale


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights, pixel centres aligned (half-pixel convention)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - w1)
    np.add.at(m, (rows, i1), w1)
    return m


def _resample_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    if method == "auto":
        method = "area" if n_out <= n_in else "bilinear"
    if method == "area":
        return _area_matrix(n_in, n_out)
    if method == "bilinear":
        return _bilinear_matrix(n_in, n_out)
    raise ValueError(f"resize method must be 'auto', 'area' or 'bilinear', got {method!r}")


def resize_images(x: np.ndarray, size: int | tuple[int, int], method: str = "auto") -> np.ndarray:
    """Resample images with separable linear filters (pure numpy, deterministic).

    Parameters
    ----------
    x
        ``[K, H, W]`` or a single ``[H, W]`` image, any real dtype.
    size
        Output side ``s`` (-> ``s x s``) or ``(h, w)``.
    method
        ``"area"`` exact area averaging (right for shrinking, e.g. 28 -> 20: each output
        pixel is the mean of the input area it covers), ``"bilinear"`` (right for enlarging,
        e.g. the 8x8 digits), or ``"auto"`` (area along an axis that shrinks or keeps its
        size, bilinear along one that grows). Same-size input is returned unchanged (as float64).

    Returns
    -------
    float64 array ``[K, h, w]`` (or ``[h, w]``) in the value range of the input (no rounding).
    """
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"resize_images expects [K,H,W] or [H,W], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise TypeError(f"resize_images expects real images, got dtype {x.dtype}")
    try:
        h, w = (size, size) if np.isscalar(size) else tuple(size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an integer or a pair (h, w), got {size!r}") from None
    h, w = _size(h), _size(w)
    xf = x.astype(np.float64)
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return xf
    rh = _resample_matrix(H, h, method)
    rw = _resample_matrix(W, w, method)
    return np.einsum("ih,...hw,jw->...ij", rh, xf, rw, optimize=True)


def to_model_range(x: np.ndarray, max_value: float | None = None) -> np.ndarray:
    """Map pixel values ``[0, max_value]`` linearly to float64 ``[-1, 1]`` (clipped).

    ``max_value`` defaults to 255 for uint8 input and 1.0 for floating input (so images
    already in ``[0, 1]`` work as is); other integer dtypes need an explicit ``max_value``
    (e.g. 16 for scikit-learn's digits). Any shape; returns float64 of the same shape.
    """
    x = np.asarray(x)
    if max_value is None:
        if x.dtype == np.uint8:
            max_value = 255.0
        elif np.issubdtype(x.dtype, np.floating):
            max_value = 1.0
        else:
            raise ValueError(f"to_model_range: pass max_value for dtype {x.dtype}")
    if isinstance(max_value, (bool, np.bool_, str, bytes)) or not np.isscalar(max_value) or not (
            np.isfinite(max_value) and max_value > 0):
        raise ValueError(f"max_value must be a positive finite number, got {max_value!r}")
    out = x.astype(np.float64) * (2.0 / float(max_value)) - 1.0
    return np.clip(out, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# dataset loader
# --------------------------------------------------------------------------------------------

def _norm_split(split: str) -> str:
    s = str(split).lower()
    if s == "t10k":
        s = "test"
    if s not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} (or 't10k'), got {split!r}")
    return s


def _split_mask(n: int, split: str) -> np.ndarray:
    """Rule for data sets without an official split: index % 10 == 9 is test."""
    idx = np.arange(n)
    if split == "all":
        return np.ones(n, dtype=bool)
    test = idx % 10 == 9
    return test if split == "test" else ~test


def _idx_candidates(directory: Path, prefix: str, kind: str) -> list[Path]:
    # kind: "images-idx3" or "labels-idx1"; both "train-images-idx3-ubyte" and the
    # "train-images.idx3-ubyte" spelling are accepted, gzip'd or raw.
    a, b = kind.split("-")
    names = [f"{prefix}-{a}-{b}-ubyte", f"{prefix}-{a}.{b}-ubyte"]
    return [directory / (n + ext) for n in names for ext in (".gz", "")]


def _find_idx_pair(directory: Path, prefix: str):
    imgs = next((p for p in _idx_candidates(directory, prefix, "images-idx3") if p.is_file()), None)
    labs = next((p for p in _idx_candidates(directory, prefix, "labels-idx1") if p.is_file()), None)
    return imgs, labs


_HOW_TO = {
    "fashion-mnist": (
        "Install Debian's package (`apt-get install dataset-fashion-mnist`, files go to "
        f"{FASHION_MNIST_SYSTEM_DIR}) or put train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
        "into a folder and pass it as data_dir (--data-dir)."),
    "mnist": (
        "Put the MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; raw or .gz) into a folder and "
        "pass it as data_dir (--data-dir). optdiff never downloads data."),
    "quickdraw": (
        "Put Quick, Draw! numpy bitmap files (one <class>.npy per class, uint8 [K, 784]) into "
        "a folder and pass it as data_dir (--data-dir). optdiff never downloads data."),
    "folder": (
        "Pass a folder of PNG/JPG images (or one sub-folder per class) as data_dir (--data-dir)."),
}


def _idx_dirs(name: str, data_dir: Path | None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [data_dir, data_dir / name]
    if name == "fashion-mnist":
        dirs.append(Path(FASHION_MNIST_SYSTEM_DIR))
    return dirs


#: The IDX file prefixes of each split.
_IDX_PREFIXES = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}


def installed_fashion_mnist(split: str = "train") -> Path | None:
    """The folder of Debian's ``dataset-fashion-mnist`` when its ``split`` files are there, else None."""
    d = Path(FASHION_MNIST_SYSTEM_DIR)
    prefixes = _IDX_PREFIXES[_norm_split(split)]
    return d if all(all(_find_idx_pair(d, p)) for p in prefixes) else None


def _load_idx_dataset(name: str, data_dir: Path | None, split: str):
    if name == "mnist" and data_dir is None:
        raise FileNotFoundError(
            "the 'mnist' data set needs data_dir (--data-dir): there is no default location. "
            + _HOW_TO["mnist"])
    dirs = _idx_dirs(name, data_dir)
    prefixes = _IDX_PREFIXES[split]
    partial: list[str] = []
    for d in dirs:
        found = {p: _find_idx_pair(d, p) for p in ("train", "t10k")}
        if all(all(found[p]) for p in prefixes):
            xs, ys = [], []
            for p in prefixes:
                img_path, lab_path = found[p]
                x, y = read_idx(img_path), read_idx(lab_path)
                if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                    raise ValueError(
                        f"{img_path} / {lab_path}: expected images [K,H,W] and labels [K], "
                        f"got {x.shape} and {y.shape}")
                xs.append(x)
                ys.append(y)
            return np.concatenate(xs), np.concatenate(ys).astype(np.int64)
        present = [p for p in ("train", "t10k") if all(found[p])]
        if present:
            hint = "split='test'" if present == ["t10k"] else "split='train'"
            partial.append(f"{d} holds only the {' and '.join(present)} files (use {hint})")
    wanted = " and ".join(f"{p}-images-idx3-ubyte[.gz] + {p}-labels-idx1-ubyte[.gz]" for p in prefixes)
    msg = (f"{name} data set not found for split={split!r}: looked for {wanted} in: "
           + "; ".join(str(d) for d in dirs) + ".")
    if partial:
        msg += " Note: " + "; ".join(partial) + "."
    raise FileNotFoundError(msg + " " + _HOW_TO[name])


def _quickdraw_files(data_dir: Path | None) -> list[Path]:
    if data_dir is None:
        raise FileNotFoundError("the 'quickdraw' data set needs data_dir (--data-dir). " + _HOW_TO["quickdraw"])
    for d in (data_dir, data_dir / "quickdraw"):
        if d.is_dir():
            files = sorted(p for p in d.glob("*.npy") if p.is_file())
            if files:
                return files
    raise FileNotFoundError(
        f"quickdraw data set not found. Looked for *.npy files in: {data_dir}; "
        f"{data_dir / 'quickdraw'}. " + _HOW_TO["quickdraw"])


def dataset_class_names(name: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """Class names indexed by label for ``name`` (quickdraw/folder read them from ``data_dir``)."""
    name = name.lower()
    dd = Path(data_dir) if data_dir is not None else None
    if name == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    if name in ("mnist", "digits"):
        return [str(i) for i in range(10)]
    if name == "quickdraw":
        return [p.stem for p in _quickdraw_files(dd)]
    if name == "folder":
        if dd is None:
            raise FileNotFoundError("the 'folder' data set needs data_dir. " + _HOW_TO["folder"])
        return [name for name, _ in _folder_groups(dd)]
    raise ValueError(f"unknown data set name {name!r}; known: {', '.join(DATASETS)}")


def _resolve_classes(classes, names: list[str]) -> np.ndarray:
    """Map a classes filter (labels or names) to an array of integer labels."""
    out = []
    for c in classes:
        if isinstance(c, (str, np.str_)):
            if str(c) not in names:
                raise ValueError(f"classes: unknown class {c!r}; available: {', '.join(names)}")
            out.append(names.index(str(c)))
        else:
            try:
                ci = integer(c, "classes")
            except ValueError:
                raise ValueError(f"classes must hold integer labels or class names, got {c!r}") from None
            if not 0 <= ci < len(names):
                raise ValueError(f"classes: class label {c!r} out of range 0..{len(names) - 1}")
            out.append(ci)
    if not out:
        raise ValueError("classes filter is empty")
    return np.unique(np.asarray(out, dtype=np.int64))


def _choose(labels: np.ndarray, keep: np.ndarray | None, limit: int | None, seed: int) -> np.ndarray:
    """Indices (sorted, file order) after the class filter and a seeded random ``limit`` subset."""
    idx = np.arange(labels.shape[0]) if keep is None else np.flatnonzero(np.isin(labels, keep))
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        if limit < idx.size:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(idx, size=limit, replace=False))
    return idx


def load_dataset(
    name: str = "digits",
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    classes: Iterable[int | str] | None = None,
    size: int | None = 20,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a data set as model-ready images.

    Parameters
    ----------
    name
        One of ``DATASETS``:
        ``"digits"`` scikit-learn's bundled 8x8 digits (1797 images, values 0..16, no files
        needed; upsampled bilinearly); ``"fashion-mnist"`` IDX files in ``data_dir``,
        ``data_dir/fashion-mnist`` or ``FASHION_MNIST_SYSTEM_DIR``; ``"mnist"`` IDX files in
        ``data_dir`` or ``data_dir/mnist`` (``data_dir`` required; when only the ``t10k``
        files exist use ``split="test"``); ``"quickdraw"`` ``*.npy`` bitmaps in ``data_dir``
        (or ``data_dir/quickdraw``), one per class, classes = file stems sorted;
        ``"folder"`` images in ``data_dir`` (see :func:`read_image_folder`).
    data_dir
        Folder to search first (``--data-dir`` on the command line); ``None`` or ``""``: none.
    split
        ``"train"``, ``"test"`` (alias ``"t10k"``) or ``"all"``; see the module docstring
        for sets without an official split.
    classes
        Keep only these classes: integer labels (e.g. ``[0, 1, 2]``, the reference work's
        first three classes) or class names (quickdraw file stems, folder names, the
        Fashion-MNIST names). Labels keep their original values.
    size
        Output side (images are ``size x size``; area resampling when shrinking, bilinear
        when enlarging). ``None`` keeps the native size.
    limit
        At most this many images, a uniformly random subset drawn with ``seed`` after the
        class filter, returned in file order. ``None`` or ``0``: no limit.

    Returns
    -------
    images : float64 ``[K, size, size]`` in ``[-1, 1]`` (background -1)
    labels : int64 ``[K]``

    Raises
    ------
    FileNotFoundError
        The data set is not on disk; the message lists every place searched and how to get
        the files. Nothing is ever downloaded.
    ValueError
        Unknown name/split/class, corrupt files, or an empty selection.
    """
    key = str(name).lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in DATASETS:
        raise ValueError(f"unknown data set name {name!r}; known: {', '.join(DATASETS)}")
    split = _norm_split(split)
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise ValueError(f"classes must be a list of labels or class names, got {classes!r}")
        classes = list(classes)
    dd = Path(data_dir).expanduser() if data_dir not in (None, "") else None
    if limit is not None:
        limit = integer(limit, "limit")
        if limit < 0:
            raise ValueError(f"limit must be >= 0 (0: no limit), got {limit}")
        limit = limit or None
    seed = integer(seed, "seed")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if size is not None:
        size = _size(size)

    if key == "digits":
        from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

        d = load_digits()
        raw = d.images.astype(np.float64)  # [1797, 8, 8], 0..16
        lab = d.target.astype(np.int64)
        mask = np.zeros(lab.shape[0], dtype=bool)
        for c in range(10):  # split rule applied within each class
            where = np.flatnonzero(lab == c)
            mask[where[_split_mask(where.size, split)]] = True
        raw, lab = raw[mask], lab[mask]
        keep = None if classes is None else _resolve_classes(classes, dataset_class_names(key))
        idx = _choose(lab, keep, limit, seed)
        x, lab, max_value = raw[idx], lab[idx], 16.0
    elif key in ("fashion-mnist", "mnist"):
        raw, lab = _load_idx_dataset(key, dd, split)
        keep = None if classes is None else _resolve_classes(classes, dataset_class_names(key))
        idx = _choose(lab, keep, limit, seed)
        x, lab, max_value = raw[idx], lab[idx], 255.0
    elif key == "quickdraw":
        files = _quickdraw_files(dd)
        names = [p.stem for p in files]
        keep = None if classes is None else _resolve_classes(classes, names)
        maps, rows, labs = [], [], []
        for label, f in enumerate(files):
            if keep is not None and label not in keep:
                continue
            m = _open_quickdraw(f)
            r = np.flatnonzero(_split_mask(m.shape[0], split))
            maps.append(m)
            rows.append(r)
            labs.append(np.full(r.size, label, dtype=np.int64))
        all_labels = np.concatenate(labs)
        idx = _choose(all_labels, None, limit, seed)
        offsets = np.cumsum([0] + [r.size for r in rows])
        parts = []
        for k, (m, r) in enumerate(zip(maps, rows)):
            sel = idx[(idx >= offsets[k]) & (idx < offsets[k + 1])] - offsets[k]
            if sel.size:
                parts.append(np.asarray(m[r[sel]], dtype=np.uint8).reshape(-1, 28, 28))
        x = np.concatenate(parts) if parts else np.zeros((0, 28, 28), np.uint8)
        lab, max_value = all_labels[idx], 255.0
    else:  # folder
        if dd is None:
            raise FileNotFoundError("the 'folder' data set needs data_dir (--data-dir). " + _HOW_TO["folder"])
        if not dd.is_dir():
            raise FileNotFoundError(f"image folder not found: {dd}. " + _HOW_TO["folder"])
        imgs, lab_all, names = read_image_folder(dd, size=size, return_labels=True)
        mask = np.zeros(lab_all.shape[0], dtype=bool)
        for c in range(len(names)):
            where = np.flatnonzero(lab_all == c)
            mask[where[_split_mask(where.size, split)]] = True
        imgs, lab_all = imgs[mask], lab_all[mask]
        keep = None if classes is None else _resolve_classes(classes, names)
        idx = _choose(lab_all, keep, limit, seed)
        x, lab, max_value = imgs[idx], lab_all[idx], 255.0

    if x.shape[0] == 0:
        raise ValueError(
            f"{key}: no images left for split={split!r}, classes={None if classes is None else list(classes)}")
    xf = x.astype(np.float64)
    if size is not None:
        xf = resize_images(xf, size)
    images = np.ascontiguousarray(to_model_range(xf, max_value=max_value))
    return images, np.ascontiguousarray(lab, dtype=np.int64)
