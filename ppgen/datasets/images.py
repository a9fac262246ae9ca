"""Image data: MNIST in LeCun's IDX format, fixed-binarization MNIST, and the
embedded 8x8 digits.

The loaders take a path (nothing is downloaded) and check what they read: the
IDX magic number, the declared sizes against the bytes present, pixel values.
``.npz`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DatasetError

#: IDX type codes (the third magic byte) -> numpy big-endian dtypes
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_bytes(path):
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def read_idx(path):
    """Read one IDX file (gzipped or not) into a numpy array.

    The format: two zero bytes, a type code, the number of dimensions ``d``,
    then ``d`` big-endian uint32 sizes and the values in row-major order.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path}: IDX header declares shape {shape} ({expected} bytes) "
                           f"but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: no file {stem}[.gz] (MNIST IDX files expected there)")


def load_mnist(root, split="train", *, flatten=True):
    """MNIST from the four IDX files in ``root``.

    Returns
    -------
    images : float32 array in [0, 1], ``(N, 784)`` (or ``(N, 28, 28)`` with ``flatten=False``)
    labels : int64 array ``(N,)``
    """
    if split not in _MNIST_FILES:
        raise DatasetError(f"split={split!r}: choose 'train' or 'test'")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory of MNIST IDX files")
    images = read_idx(_find(root, _MNIST_FILES[split][0]))
    labels = read_idx(_find(root, _MNIST_FILES[split][1]))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: images {images.shape} and labels {labels.shape} do not match")
    images = images.astype(np.float32) / 255.0
    return (images.reshape(len(images), -1) if flatten else images), labels.astype(np.int64)


def load_binarized_mnist(path, split="train"):
    """Fixed-binarization MNIST (Larochelle and Murray 2011) as a float32 0/1 array ``(N, 784)``.

    ``path`` is an ``.npz`` with arrays ``train``, ``valid``, ``test``, or a
    directory holding ``binarized_mnist.npz`` or the original
    ``binarized_mnist_{split}.amat`` text files.
    """
    if split not in ("train", "valid", "test"):
        raise DatasetError(f"split={split!r}: choose 'train', 'valid' or 'test'")
    path = Path(path)
    if path.is_dir():
        amat = path / f"binarized_mnist_{split}.amat"
        path = amat if amat.is_file() else path / "binarized_mnist.npz"
    if path.suffix == ".amat":
        try:
            values = np.loadtxt(path, dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read ({exc})") from None
    else:
        try:
            with np.load(path, allow_pickle=False) as archive:
                if split not in archive.files:
                    raise DatasetError(f"{path}: no array {split!r} (has {', '.join(archive.files)})")
                values = np.ascontiguousarray(archive[split], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: cannot read ({exc})") from None
    if values.ndim != 2 or values.shape[1] != 784:
        raise DatasetError(f"{path}: {split} has shape {values.shape}, expected (N, 784)")
    if not np.isin(values, (0.0, 1.0)).all():
        raise DatasetError(f"{path}: {split} holds values other than 0 and 1")
    return values


def load_digits(*, return_labels=False, binarize=None):
    """The embedded 8x8 digits (1,797 images, the UCI test set; see ``describe('digits')``).

    Pixels are scaled from 0..16 to [0, 1]; ``binarize=t`` thresholds them at
    ``t`` instead. Returns a float32 ``(1797, 64)`` array, and the labels
    ``(1797,)`` too with ``return_labels=True``.
    """
    with resources.as_file(resources.files(__package__).joinpath("data", "digits.npz")) as path:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    x = images.reshape(len(images), -1).astype(np.float32) / 16.0
    if binarize is not None:
        x = (x > float(binarize)).astype(np.float32)
    return (x, labels.astype(np.int64)) if return_labels else x

