"""Tests for meanfield.idx: IDX reading and MNIST loading."""

import gzip
import re

import numpy as np
import pytest

from meanfield.idx import IDXFormatError, load_mnist, read_idx

# numpy dtype -> IDX dtype code, as in the IDX specification.
CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def encode_idx(array):
    """Return the IDX encoding of ``array`` (big-endian header and data)."""
    array = np.asarray(array)
    code = CODES[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, content, gz=False):
    """Write bytes (or an array, IDX-encoded) to ``path``, gzipped if ``gz``."""
    if isinstance(content, np.ndarray):
        content = encode_idx(content)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def named(path):
    """Regex that matches the file name ``path`` literally."""
    return re.escape(str(path))


def mnist_dir(tmp_path, images, labels, prefix="t10k", gz=True):
    suffix = ".gz" if gz else ""
    write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return tmp_path


RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
PIXELS[0, 0, 0], PIXELS[0, 0, 1] = 0, 255  # make sure both ends occur
LABELS = np.array([3, 1, 4, 1, 9], dtype=np.uint8)


# --- read_idx -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 4), (1, 2, 1, 3)])
def test_round_trip(tmp_path, dtype, shape):
    # Values span the range of the type (negative, > 1 byte) so byte order
    # and signedness mistakes show.
    n = int(np.prod(shape))
    if dtype[0] in "ui":
        info = np.iinfo(dtype)
        values = np.linspace(info.min, info.max, num=n)
    else:
        values = np.linspace(-3.75, 2.5e30, num=n)  # fraction, sign, large
    expected = values.astype(dtype).reshape(shape)
    path = write(tmp_path / "data.idx", expected)

    result = read_idx(path)

    assert result.shape == shape
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, expected)


def test_big_endian_on_disk(tmp_path):
    # Independent of encode_idx: 0x0102 stored big-endian is 258.
    path = write(tmp_path / "x", bytes([0, 0, 0x0B, 1, 0, 0, 0, 1, 0x01, 0x02]))
    np.testing.assert_array_equal(read_idx(path), np.array([258], np.int16))


def test_gzip_detected_from_content_not_name(tmp_path):
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 10
    # Deliberately misleading names: gzip data without .gz, raw data with it.
    gz = write(tmp_path / "plain-name", array, gz=True)
    raw = write(tmp_path / "raw.gz", array)

    np.testing.assert_array_equal(read_idx(gz), array)
    np.testing.assert_array_equal(read_idx(raw), array)
    assert read_idx(gz).dtype == read_idx(raw).dtype == np.int32


def test_result_is_writable(tmp_path):
    result = read_idx(write(tmp_path / "x", np.arange(3, dtype=np.uint8)))
    result[0] = 7
    assert result[0] == 7


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=named(tmp_path / "absent")):
        read_idx(tmp_path / "absent")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x00\x08\x01" + bytes(5), "magic number"),
        (b"\x00\x01\x08\x01" + bytes(5), "magic number"),
        (b"\x00\x00", "magic number"),
        (b"\x00\x00\x0a\x01" + bytes(5), "unknown IDX dtype code 0x0A"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
    ],
)
def test_bad_header(tmp_path, content, message):
    path = write(tmp_path / "bad", content)
    with pytest.raises(IDXFormatError, match=named(path) + ".*" + message):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    path = write(tmp_path / "short", encode_idx(np.zeros((2, 3), ">f8"))[:-1], gz)
    with pytest.raises(IDXFormatError, match=named(path) + ".*truncated data"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes(tmp_path, gz):
    path = write(tmp_path / "long", encode_idx(np.zeros(4, np.uint8)) + b"\x00", gz)
    with pytest.raises(IDXFormatError, match=named(path) + ".*trailing bytes"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(encode_idx(np.arange(100, dtype=np.int16))))
    compressed[20] ^= 0xFF  # inside the deflate stream (header is 10 bytes)
    path = write(tmp_path / "corrupt.gz", bytes(compressed))
    with pytest.raises(IDXFormatError, match=named(path) + ".*corrupt gzip"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    compressed = gzip.compress(encode_idx(np.arange(100, dtype=np.int16)))
    path = write(tmp_path / "cut.gz", compressed[: len(compressed) // 2])
    with pytest.raises(IDXFormatError, match=named(path) + ".*corrupt gzip"):
        read_idx(path)


# --- load_mnist ---------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    directory = mnist_dir(tmp_path, PIXELS, LABELS, gz=gz)

    images, labels = load_mnist(directory)

    assert images.shape == (5, 16)
    assert images.dtype == np.float64
    assert labels.shape == (5,)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(images, PIXELS.reshape(5, 16) / 255.0)
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(labels, [3, 1, 4, 1, 9])


def test_load_mnist_train_split(tmp_path):
    mnist_dir(tmp_path, PIXELS[:2], LABELS[:2], prefix="train")
    mnist_dir(tmp_path, PIXELS, LABELS, prefix="t10k")

    images, labels = load_mnist(str(tmp_path), split="train")

    assert images.shape == (2, 16)
    np.testing.assert_array_equal(labels, [3, 1])


def test_load_mnist_prefers_raw_file(tmp_path):
    mnist_dir(tmp_path, PIXELS, LABELS, gz=True)
    write(tmp_path / "t10k-labels-idx1-ubyte", LABELS[::-1].copy())

    _, labels = load_mnist(tmp_path)

    np.testing.assert_array_equal(labels, LABELS[::-1])


def test_load_mnist_bad_split(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        load_mnist(tmp_path, split="validation")


def test_load_mnist_missing_directory(tmp_path):
    missing = tmp_path / "nowhere"
    pattern = (
        f"put t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in {named(missing)}"
    )
    with pytest.raises(FileNotFoundError, match=pattern):
        load_mnist(missing)


@pytest.mark.parametrize("kind", ["images-idx3", "labels-idx1"])
def test_load_mnist_missing_file(tmp_path, kind):
    mnist_dir(tmp_path, PIXELS, LABELS, prefix="train")
    (tmp_path / f"train-{kind}-ubyte.gz").unlink()
    pattern = (
        f"neither train-{kind}-ubyte nor train-{kind}-ubyte.gz.*"
        f"put train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz in {named(tmp_path)}"
    )
    with pytest.raises(FileNotFoundError, match=pattern):
        load_mnist(tmp_path, split="train")


@pytest.mark.parametrize(
    "images, labels, culprit",
    [
        (PIXELS.reshape(5, 16), LABELS, "images"),  # 2-D images
        (PIXELS.astype(np.int16), LABELS, "images"),  # not uint8
        (PIXELS, LABELS.reshape(5, 1), "labels"),  # 2-D labels
        (PIXELS, LABELS.astype(np.int32), "labels"),  # not uint8
    ],
)
def test_load_mnist_wrong_kind_of_file(tmp_path, images, labels, culprit):
    mnist_dir(tmp_path, images, labels)
    path = tmp_path / f"t10k-{culprit}-idx{3 if culprit == 'images' else 1}-ubyte.gz"
    with pytest.raises(IDXFormatError, match=named(path) + ".*expected"):
        load_mnist(tmp_path)


def test_load_mnist_bad_magic(tmp_path):
    mnist_dir(tmp_path, PIXELS, LABELS)
    path = write(tmp_path / "t10k-images-idx3-ubyte", b"\x1a\x2b\x3c\x4d" + bytes(8))
    with pytest.raises(IDXFormatError, match=named(path) + ".*magic number"):
        load_mnist(tmp_path)


def test_load_mnist_count_mismatch(tmp_path):
    mnist_dir(tmp_path, PIXELS, LABELS[:4])
    pattern = "t10k-images-idx3-ubyte.gz holds 5 images.*t10k-labels-idx1-ubyte.gz holds 4"
    with pytest.raises(IDXFormatError, match=pattern):
        load_mnist(tmp_path)


def test_load_mnist_label_out_of_range(tmp_path):
    bad = LABELS.copy()
    bad[2] = 10
    mnist_dir(tmp_path, PIXELS, bad)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(IDXFormatError, match=named(path) + ".*outside 0..9.*index 2"):
        load_mnist(tmp_path)
