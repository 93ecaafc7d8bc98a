"""tinyprompt.data.matfile: numeric arrays from level-5 MAT-files, written here as MATLAB writes them (compressed or
not, either byte order, small elements, a double array stored as uint8), and, where scipy is installed, as
scipy.io.savemat writes them; the errors for what it does not read."""
import struct
import zlib

import numpy as np
import pytest

from tinyprompt.data.matfile import read_mat

# array classes and storage types of the format (the reader's tables, spelled out independently here)
CLASS = {np.dtype("f8"): 6, np.dtype("f4"): 7, np.dtype("i1"): 8, np.dtype("u1"): 9, np.dtype("i2"): 10,
         np.dtype("u2"): 11, np.dtype("i4"): 12, np.dtype("u4"): 13}  # fmt: skip
STORAGE = {np.dtype("i1"): 1, np.dtype("u1"): 2, np.dtype("i2"): 3, np.dtype("u2"): 4, np.dtype("i4"): 5,
           np.dtype("u4"): 6, np.dtype("f4"): 7, np.dtype("f8"): 9}  # fmt: skip


def _element(kind: int, data: bytes, order: str, small: bool = True) -> bytes:
    """One data element: the small form (type and count in one word, <= 4 bytes of data) or tag + data + padding."""
    if small and len(data) <= 4:
        return struct.pack(order + "I", len(data) << 16 | kind) + data.ljust(4, b"\0")
    return struct.pack(order + "II", kind, len(data)) + data + b"\0" * (-len(data) % 8)


def _matrix(name: str, array: np.ndarray, order: str, compact: bool) -> bytes:
    """An miMATRIX element of `array`; compact: integral doubles stored as uint8, as MATLAB saves them."""
    stored = array.astype("u1") if compact else array
    payload = (_element(6, struct.pack(order + "II", CLASS[array.dtype], 0), order)  # array flags: the class
               + _element(5, struct.pack(order + f"{array.ndim}i", *array.shape), order)  # dimensions
               + _element(1, name.encode("ascii"), order)  # name
               + _element(STORAGE[stored.dtype], stored.astype(stored.dtype.newbyteorder(order)).tobytes("F"), order))
    return _element(14, payload, order, small=False)


def write_mat(path, arrays: dict, compress: bool = True, order: str = "<", compact=()) -> None:
    """A level-5 MAT-file of `arrays` {name: array (>= 2-D)}, each compressed on its own as MATLAB's -v7 does."""
    header = b"MATLAB 5.0 MAT-file, written by tinyprompt's tests".ljust(116, b" ") + b"\0" * 8
    header += struct.pack(order + "H", 0x0100) + struct.pack(order + "H", 0x4D49)  # "IM" little, "MI" big
    body = b""
    for name, array in arrays.items():
        element = _matrix(name, array, order, name in compact)
        if compress:  # miCOMPRESSED: the element's zlib stream, not padded
            element = struct.pack(order + "II", 15, len(zlib.compress(element))) + zlib.compress(element)
        body += element
    path.write_bytes(header + body)


ARRAYS = {
    "X": np.random.default_rng(0).integers(0, 256, (4, 5, 3, 2), dtype=np.uint8),
    "y": np.array([[10.0], [3.0]]),  # a double of small integers: MATLAB stores it as uint8
    "longer_name": np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
    "f": np.array([[1.5, -2.25]], dtype=np.float32),
}


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
@pytest.mark.parametrize("order", ["<", ">"], ids=["little", "big"])
def test_reads_what_matlab_writes(tmp_path, compress, order):
    path = tmp_path / "a.mat"
    write_mat(path, ARRAYS, compress, order, compact=("y",))
    got = read_mat(path, list(ARRAYS))
    for name, array in ARRAYS.items():  # the class's dtype and MATLAB's shape, values exact
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array), name
    assert list(read_mat(path, ["y"])) == ["y"]  # only what is asked for


def test_reads_what_scipy_writes(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="scipy is not installed (an optional cross-check)")
    for compress in (True, False):
        path = tmp_path / f"s{compress}.mat"
        scipy_io.savemat(path, {**ARRAYS, "text": "skipped", "z": np.array([1 + 2j])}, do_compression=compress)
        want, got = scipy_io.loadmat(path), read_mat(path, list(ARRAYS))
        for name in ARRAYS:
            assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name


def test_what_it_does_not_read_gets_one_clear_line(tmp_path):
    path = tmp_path / "a.mat"
    write_mat(path, ARRAYS)
    with pytest.raises(ValueError, match=r"a.mat holds no array named Z, w: use the original download"):
        read_mat(path, ["X", "w", "Z"])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(ValueError, match="runs past the end of the file: the file is truncated"):
        read_mat(path, ["X"])
    path.write_bytes(b"<html>Not Found</html>")
    with pytest.raises(ValueError, match="is not a MATLAB level-5 MAT-file"):
        read_mat(path, ["X"])
    path.write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"is a MATLAB 7.3 \(HDF5\) file, not a level-5 MAT-file: save it again"):
        read_mat(path, ["X"])
    header = raw[:128]
    char = _element(14, _element(6, struct.pack("<II", 4, 0), "<") + _element(5, struct.pack("<2i", 1, 2), "<")
                    + _element(1, b"s", "<") + _element(4, "hi".encode("utf-16-le"), "<"), "<", small=False)
    path.write_bytes(header + char)
    with pytest.raises(ValueError, match="'s' is a char array; only real numeric arrays are read"):
        read_mat(path, ["s"])
    path.write_bytes(header + struct.pack("<II", 15, 8) + b"notzlib!")
    with pytest.raises(ValueError, match="a compressed data element does not decompress"):
        read_mat(path, ["X"])
