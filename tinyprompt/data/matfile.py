"""Numeric arrays from MATLAB level-5 MAT-files (`save -v7` and older), without scipy.

SVHN ("Reading Digits in Natural Images with Unsupervised Feature Learning", Netzer et al., NIPS workshop 2011)
ships its cropped digits as MAT-files, `train_32x32.mat` and `test_32x32.mat`, which torchvision (and ILM-VP,
arXiv 2211.11635, through it) reads with `scipy.io.loadmat`. Only their two numeric arrays are needed, so this
reads the documented level-5 format ("MAT-File Format", The MathWorks, 2023) directly:

    128-byte header: text, subsystem offset, version 0x0100, endian indicator "IM" (little) or "MI" (big)
    then data elements, each an 8-byte tag (type, byte count) + data padded to 8 bytes:
      miCOMPRESSED (15): zlib-compressed bytes holding one element (no padding after them)
      miMATRIX (14): array flags (class), dimensions, name, real part (its own storage type: MATLAB stores a
                     double array of small integers as uint8), stored column-major
    a "small" element packs type, count (upper 16 bits of the first word) and up to 4 bytes into 8 bytes.

Numeric classes only (double, single, integers); a complex, sparse, cell, struct or char array that is asked for
gets a clear error. MATLAB 7.3 files are HDF5, not level 5: they are refused, naming the format.
"""
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_mat"]

MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15
# storage types of an element's data (miINT8 .. miUINT64) -> numpy dtype
STORAGE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
# array classes (mxDOUBLE_CLASS .. mxUINT64_CLASS) -> the numpy dtype of the array MATLAB holds
CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
CLASS_NAMES = {1: "cell", 2: "struct", 3: "object", 4: "char", 5: "sparse"}
COMPLEX_FLAG = 0x0800


def _elements(data: bytes, order: str, path: Path):
    """(type, payload bytes) of each data element in `data`, in order."""
    at = 0
    while at < len(data):
        if len(data) - at < 8:
            raise ValueError(f"{path} ends inside a data element's tag: the file is truncated, download it again")
        first, count = struct.unpack_from(order + "II", data, at)
        if first >> 16:  # small element: count in the upper half, data in the tag's second word
            kind, count = first & 0xFFFF, first >> 16
            yield kind, data[at + 4 : at + 4 + count]
            at += 8
            continue
        kind, start = first, at + 8
        if start + count > len(data):
            raise ValueError(f"{path}: a data element of {count} bytes runs past the end of the file: the file is "
                             f"truncated, download it again")  # fmt: skip
        yield kind, data[start : start + count]
        at = start + count if kind == MI_COMPRESSED else start + (count + 7) // 8 * 8


def _matrix(payload: bytes, order: str, path: Path):
    """(name, class, flags, dimensions, real part's (storage type, bytes)) of one miMATRIX payload."""
    parts = list(_elements(payload, order, path))
    if len(parts) < 3 or parts[0][0] != MI_UINT32 or parts[1][0] != MI_INT32:
        raise ValueError(f"{path}: an array element lacks the flags, dimensions and name MAT-files give each array")
    flags = struct.unpack_from(order + "I", parts[0][1])[0]
    dims = struct.unpack(order + f"{len(parts[1][1]) // 4}i", parts[1][1])
    name = parts[2][1].decode("ascii", errors="replace")
    return name, flags & 0xFF, flags, dims, parts[3] if len(parts) > 3 else None


def read_mat(path, names, data: bytes | None = None) -> dict:
    """{name: numpy array} of the numeric arrays `names` in the level-5 MAT-file `path` (MATLAB's shape, as
    `scipy.io.loadmat` returns them); a missing name, another format or a damaged file get one clear error.
    `data`: the file's bytes where the caller has read them already (`path` then only names it in errors)."""
    path = Path(path)
    data = path.read_bytes() if data is None else data
    if data[:8] == b"\x89HDF\r\n\x1a\n" or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{path} is a MATLAB 7.3 (HDF5) file, not a level-5 MAT-file: save it again with "
                         f"save(..., '-v7'), or use the original download")  # fmt: skip
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise ValueError(f"{path} is not a MATLAB level-5 MAT-file (no 'MATLAB 5.0 MAT-file' header with an endian "
                         f"indicator): use the original download")  # fmt: skip
    order = "<" if data[126:128] == b"IM" else ">"
    wanted, found = set(names), {}
    for kind, payload in _elements(data[128:], order, path):
        if kind == MI_COMPRESSED:
            try:
                payload = zlib.decompress(payload)
            except zlib.error as e:
                raise ValueError(f"{path}: a compressed data element does not decompress ({e}): the file is "
                                 f"damaged, download it again") from None  # fmt: skip
            kind, payload = next(_elements(payload, order, path))
        if kind != MI_MATRIX or not payload:
            continue
        name, cls, flags, dims, real = _matrix(payload, order, path)
        if name not in wanted:
            continue
        if cls not in CLASSES or flags & COMPLEX_FLAG or real is None:
            what = CLASS_NAMES.get(cls, "complex" if flags & COMPLEX_FLAG else f"class {cls}")
            raise ValueError(f"{path}: '{name}' is a {what} array; only real numeric arrays are read")
        storage, raw = real
        if storage not in STORAGE:
            raise ValueError(f"{path}: '{name}' is stored as MAT type {storage}, not a numeric type")
        values = np.frombuffer(raw, dtype=np.dtype(STORAGE[storage]).newbyteorder(order))
        if values.size != int(np.prod(dims)):
            raise ValueError(f"{path}: '{name}' holds {values.size} values for its dimensions {dims}: the file is "
                             f"damaged, download it again")  # fmt: skip
        found[name] = values.astype(CLASSES[cls], copy=False).reshape(dims, order="F")  # MATLAB is column-major
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"{path} holds no array named {', '.join(missing)}: use the original download")
    return found
