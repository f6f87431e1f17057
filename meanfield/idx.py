"""Read IDX files, the binary format the MNIST data set is distributed in.

An IDX file is a 4-byte magic number -- two zero bytes, a dtype code and the
number of dimensions -- followed by one big-endian ``uint32`` size per
dimension and then the array data, big-endian, in C order. Files may be
gzip-compressed; compression is recognised from the content, not the name.
"""

import gzip
import math
import os
import zlib

import numpy as np

__all__ = ["IDXFormatError", "read_idx", "load_mnist"]

_GZIP_MAGIC = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype of the stored data.
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Split name -> file name prefix used by the MNIST distribution.
_MNIST_PREFIXES = {"test": "t10k", "train": "train"}


class IDXFormatError(ValueError):
    """Raised when a file is not a valid IDX file or not valid MNIST data."""


def _read_bytes(path):
    """Return the content of ``path``, decompressed if it is gzip data."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    # BadGzipFile (an OSError) for bad headers and CRCs, EOFError for a
    # truncated stream, zlib.error for damaged deflate data.
    except (OSError, EOFError, zlib.error) as exc:
        raise IDXFormatError(f"{path}: corrupt gzip data ({exc})") from exc


def read_idx(path):
    """Read an IDX file, raw or gzip-compressed, into an array.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip compression is detected from the first two bytes
        of the file, so the name need not end in ``.gz``.

    Returns
    -------
    array : numpy.ndarray, shape as stored in the header
        The data, as ``uint8``, ``int8``, ``int16``, ``int32``, ``float32``
        or ``float64`` (IDX codes 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E) in
        native byte order. The array is a writable copy.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IDXFormatError
        If the gzip data is corrupt, the magic number does not start with
        two zero bytes, the dtype code is unknown, or the file holds fewer
        or more bytes than the header announces. The message names the file.

    Examples
    --------
    >>> import os, struct, tempfile
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "tiny-idx2-short")
    ...     with open(path, "wb") as f:
    ...         n = f.write(bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 3))
    ...         n = f.write(np.arange(6, dtype=">i2").tobytes())
    ...     array = read_idx(path)
    >>> array
    array([[0, 1, 2],
           [3, 4, 5]], dtype=int16)
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise IDXFormatError(
            f"{path}: not an IDX file (magic number {data[:4].hex()} does "
            "not start with two zero bytes)"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise IDXFormatError(
            f"{path}: unknown IDX dtype code 0x{code:02X} in magic number "
            f"(known: {', '.join(f'0x{c:02X}' for c in _DTYPES)})"
        )
    dtype = _DTYPES[code]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise IDXFormatError(
            f"{path}: truncated header ({len(data)} bytes, {ndim} dimensions "
            f"need {offset})"
        )
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", ndim, 4))
    count = math.prod(shape)
    expected = offset + count * dtype.itemsize
    if len(data) != expected:
        problem = "truncated data" if len(data) < expected else "trailing bytes"
        raise IDXFormatError(
            f"{path}: {problem}: header promises shape {shape} of {dtype.name} "
            f"({expected} bytes in all), file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype, count, offset).reshape(shape)
    # astype copies: the result is native-endian and no longer a read-only
    # view of the bytes object.
    return array.astype(dtype.newbyteorder("="))


def _find_file(directory, name, hint):
    """Return the path of ``name`` or ``name.gz`` in ``directory``, raw first."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{directory}: neither {name} nor {name}.gz found; {hint}"
    )


def load_mnist(directory, split="test"):
    """Load the MNIST images and labels of one split from IDX files.

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding the files of the original MNIST distribution:
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` for the
        test split, ``train-images-idx3-ubyte`` and
        ``train-labels-idx1-ubyte`` for the train split, each raw or with a
        ``.gz`` suffix (the raw file is used if both exist).
    split : {"test", "train"}, default "test"
        Which split to load.

    Returns
    -------
    images : numpy.ndarray, shape (n, rows * cols), dtype float64
        One flattened image per row, pixel values scaled from 0..255 to
        [0, 1].
    labels : numpy.ndarray, shape (n,), dtype int64
        Digit of each image, in 0..9.

    Raises
    ------
    ValueError
        If ``split`` is not "test" or "train".
    FileNotFoundError
        If ``directory`` or one of the two files is missing; the message
        names the files expected and the directory.
    IDXFormatError
        If a file is not valid IDX (see `read_idx`), the images are not a
        3-D ``uint8`` array or the labels a 1-D ``uint8`` array, the numbers
        of images and labels differ, or a label is outside 0..9. The message
        names the file(s) at fault.

    Examples
    --------
    >>> import gzip, os, tempfile
    >>> import numpy as np
    >>> def write_idx(path, array):  # uint8 data only (IDX code 0x08)
    ...     header = bytes([0, 0, 0x08, array.ndim])
    ...     header += np.array(array.shape, ">u4").tobytes()
    ...     with gzip.open(path, "wb") as f:
    ...         f.write(header + array.tobytes())
    >>> with tempfile.TemporaryDirectory() as d:
    ...     pixels = np.array([[[0, 255], [51, 0]], [[255, 255], [0, 0]]], np.uint8)
    ...     write_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"), pixels)
    ...     write_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), np.array([7, 3], np.uint8))
    ...     images, labels = load_mnist(d, split="test")
    >>> images
    array([[0. , 1. , 0.2, 0. ],
           [1. , 1. , 0. , 0. ]])
    >>> labels
    array([7, 3])
    """
    if split not in _MNIST_PREFIXES:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    directory = os.fspath(directory)
    prefix = _MNIST_PREFIXES[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    hint = f"put {names[0]}.gz and {names[1]}.gz in {directory}"
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no such directory; {hint}")
    images_path, labels_path = (_find_file(directory, n, hint) for n in names)

    images = read_idx(images_path)
    # MNIST images are IDX 0x0803 (uint8, 3-D) and labels 0x0801 (uint8, 1-D);
    # anything else means the wrong file, and /255 scaling assumes uint8.
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IDXFormatError(
            f"{images_path}: expected 3-D uint8 images (magic 0x00000803), "
            f"got {images.ndim}-D {images.dtype}"
        )
    labels = read_idx(labels_path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXFormatError(
            f"{labels_path}: expected 1-D uint8 labels (magic 0x00000801), "
            f"got {labels.ndim}-D {labels.dtype}"
        )
    if len(images) != len(labels):
        raise IDXFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} "
            f"holds {len(labels)} labels"
        )
    # uint8 labels cannot be negative, so only the upper bound can fail.
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise IDXFormatError(
            f"{labels_path}: {bad.size} label(s) outside 0..9, first "
            f"{labels[bad[0]]} at index {bad[0]}"
        )

    n, rows, cols = images.shape
    images = images.reshape(n, rows * cols).astype(np.float64)
    images /= 255.0
    return images, labels.astype(np.int64)
