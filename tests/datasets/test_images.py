"""Image loaders: IDX parsing, MNIST, binarized MNIST, embedded digits."""

import gzip
import struct

import numpy as np
import pytest

import ppgen
from ppgen.datasets import load_binarized_mnist, load_digits, load_mnist, read_idx
from ppgen.errors import DatasetError


def _write_idx(path, array, code=0x08, compress=False):
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(payload)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int32, 0x0C), (np.float64, 0x0E)])
def test_idx_round_trip(tmp_path, compress, dtype, code):
    array = (np.arange(2 * 3 * 4) * 7 % 11).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    _write_idx(path, array, code, compress)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, array)


def test_idx_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DatasetError, match="bad.idx.*magic"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    _write_idx(short, np.zeros((4, 5), np.uint8))
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="short.idx.*declares shape \\(4, 5\\)"):
        read_idx(short)
    with pytest.raises(DatasetError, match="cannot read"):
        read_idx(tmp_path / "missing.idx")


def test_load_mnist_from_a_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28)).astype(np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(6, dtype=np.uint8))
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (6, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x[2], images[2].ravel() / 255.0)
    assert y.tolist() == list(range(6))
    with pytest.raises(DatasetError, match="train-images"):
        load_mnist(tmp_path, "train")
    with pytest.raises(DatasetError, match="split='dev'"):
        load_mnist(tmp_path, "dev")


def test_real_mnist(shared_data):
    x, y = load_mnist(shared_data / "mnist", "train")
    assert x.shape == (60000, 784) and y.shape == (60000,)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]  # the well-known first training labels
    assert 0.0 <= x.min() and x.max() == 1.0
    xt, yt = load_mnist(shared_data / "mnist", "test", flatten=False)
    assert xt.shape == (10000, 28, 28) and np.bincount(yt).sum() == 10000


def test_real_binarized_mnist(shared_data):
    sizes = {"train": 50000, "valid": 10000, "test": 10000}
    for split, size in sizes.items():
        x = load_binarized_mnist(shared_data / "binarized_mnist", split)
        assert x.shape == (size, 784) and set(np.unique(x)) <= {0.0, 1.0}


def test_binarized_mnist_checks(tmp_path):
    path = tmp_path / "b.npz"
    np.savez(path, train=np.full((3, 784), 2, np.uint8))
    with pytest.raises(DatasetError, match="other than 0 and 1"):
        load_binarized_mnist(path, "train")
    with pytest.raises(DatasetError, match="no array 'test'"):
        load_binarized_mnist(path, "test")


def test_embedded_digits():
    x, y = ppgen.datasets.load("digits", return_labels=True)
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    b = load_digits(binarize=0.5)
    assert set(np.unique(b)) == {0.0, 1.0}
    assert "CC BY 4.0" in ppgen.datasets.describe("digits")
    with pytest.raises(DatasetError, match="unexpected arguments"):
        ppgen.datasets.load("faithful", binarize=0.5)
