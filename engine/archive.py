"""Reading zip archives and ``.npy`` arrays from untrusted bytes, with every size checked first.

A ``.bps`` container is a zip, and its ``.npz`` members are zips of ``.npy`` arrays. Both come
from files a person double-clicked, so this module treats them as hostile:

- Before anything is inflated, every member's zip header is checked: no encryption flag, a
  compression method this reader supports (stored or deflate: all Backprop Studio writes), a
  zip version it can read, a start inside the archive, a declared size within the caller's
  budget, and an inflation ratio no honest file of weights needs (a zip bomb is refused from its
  headers, never by running out of memory while inflating it).
- Inflating never produces more than the declared size: :mod:`zipfile` stops there, and a member
  whose data does not match its declared size or CRC is reported as damaged.
- An ``.npy`` header is read by hand up to :data:`MAX_NPY_HEADER` bytes (numpy would first read
  whatever length the header claims), then parsed with numpy's own literal parser; its shape
  must be whole numbers ≥ 0 in at most :data:`MAX_NDIM` dimensions whose product fits the bytes
  that follow, exactly; its dtype must be plain numbers (never Python objects, so never pickle).

:mod:`zipfile` and :mod:`numpy.lib.format` report damage through a dozen exception types
(``BadZipFile``, ``RuntimeError`` for encryption, ``NotImplementedError`` for an unknown method,
``ValueError`` for a negative seek, ``OverflowError``, ``struct.error``, ``EOFError``,
``zlib.error``, ``UnicodeDecodeError``, ...). For bytes from a file they all mean the same thing
to the person who opened it, so :func:`damage` turns every one of them into a
:class:`~engine.errors.FileFormatError` with the original reason in brackets.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import zipfile
from typing import Iterator, Mapping

import numpy as np

from engine.errors import FileFormatError

#: A member may unpack to at most this many times its packed size once it is larger than
#: :data:`RATIO_FREE_BYTES`. Weights and optimiser state are noisy floats that deflate to about
#: 90 % of their size; only long runs of equal bytes (a bomb) compress hundreds of times.
MAX_INFLATE_RATIO = 200
RATIO_FREE_BYTES = 2**20
MAX_NPY_HEADER = 16 * 2**10  # numpy's own default limit is 10,000 bytes
MAX_NDIM = 32
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 99: "AES encryption", 93: "zstandard", 95: "xz", 98: "ppmd"}


def size_text(nbytes: float) -> str:
    """``64 MiB``, ``65.5 MiB``, ``12 KiB``, ``1.5 GiB``: sizes in messages."""
    if nbytes >= 2**50:
        return "more than a PiB"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), at most 120
    characters: what goes in brackets after "it is damaged"."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


@contextlib.contextmanager
def damage(what: str) -> Iterator[None]:
    """Inside this block, any exception raised while parsing untrusted bytes becomes
    ``FileFormatError(f"{what} ({reason})")``; a FileFormatError passes through unchanged.

    Only wrap calls into parsers of file content (zipfile, zlib, numpy's header parser): there
    every exception means "these bytes are not what they claim to be"."""
    try:
        yield
    except FileFormatError:
        raise
    except MemoryError:
        raise FileFormatError(f"{what} (it does not fit in the memory available)") from None
    except Exception as exc:  # noqa: BLE001 -- see the module docstring: every type means "damaged"
        raise FileFormatError(f"{what} ({reason(exc)})") from None


def open_zip(source: str | io.BytesIO, damaged: str) -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` over a path or bytes; damage → ``FileFormatError(damaged)``
    with the reason in brackets."""
    with damage(damaged):
        return zipfile.ZipFile(source)


def check_members(zf: zipfile.ZipFile, what: str, archive_size: int, budget: int,
                  limits: Mapping[str, int] | None = None) -> list[zipfile.ZipInfo]:
    """Every member's header checked before anything is inflated (see the module docstring).
    ``what`` names the archive in messages ("weights.npz"; "it" for the file being opened,
    whose members are then "its member 'graph.json'").

    ``budget`` bounds the members' declared sizes together, ``limits`` (name → bytes) one
    member each. Returns the members in archive order; duplicates are refused."""
    with damage(f"{what} is damaged: its zip directory cannot be read"):
        infos = zf.infolist()
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = f"{'its' if what == 'it' else what} member {info.filename[:60]!r}"
        if info.filename in seen:
            raise FileFormatError(f"{what} is damaged: member {info.filename[:60]!r} appears twice")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise FileFormatError(f"{name} is encrypted; Backprop Studio never writes encrypted files")
        if info.compress_type not in _METHODS:
            method = _METHOD_NAMES.get(info.compress_type, "unknown")
            raise FileFormatError(f"{name} uses compression method {info.compress_type} ({method}); "
                                  f"Backprop Studio files use only deflate")
        if info.extract_version > zipfile.MAX_EXTRACT_VERSION:
            raise FileFormatError(f"{name} needs zip version {info.extract_version / 10:.1f}; this reader "
                                  f"handles up to {zipfile.MAX_EXTRACT_VERSION / 10:.1f}")
        if not 0 <= info.header_offset < archive_size or info.compress_size < 0 or info.file_size < 0 \
                or info.compress_size > archive_size:
            raise FileFormatError(f"{what} is damaged: the zip directory puts {name} outside the archive")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise FileFormatError(f"{what} is damaged: {name} is stored with two different sizes")
        if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_INFLATE_RATIO * info.compress_size:
            raise FileFormatError(
                f"{name} would unpack from {size_text(info.compress_size)} to {size_text(info.file_size)}, more than "
                f"{MAX_INFLATE_RATIO} times its packed size (a zip bomb?)"
            )
        limit = (limits or {}).get(info.filename)
        if limit is not None and info.file_size > limit:
            raise FileFormatError(f"{name} unpacks to {size_text(info.file_size)}, more than the {size_text(limit)} it can "
                                  f"hold for this graph")
        total += info.file_size
    if total > budget:
        raise FileFormatError(f"{what} unpacks to {size_text(total)}, more than the {size_text(budget)} limit (a zip bomb?)")
    return infos


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> bytes:
    """The inflated bytes of a member already passed by :func:`check_members`."""
    with damage(what):
        with zf.open(info) as f:
            data = f.read(info.file_size + 1)  # zipfile never inflates past the declared size
    if len(data) != info.file_size:
        raise FileFormatError(f"{what} (it holds {len(data)} bytes, its header says {info.file_size})")
    return data


def read_npy(data: bytes, where: str) -> np.ndarray:
    """The array in the bytes of one ``.npy`` file, checked (see the module docstring)."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        raise FileFormatError(f"{where} is not a numpy array (.npy)")
    major, minor = data[6], data[7]
    if (major, minor) == (1, 0):
        (length,), start = struct.unpack("<H", data[8:10]), 10
    elif (major, minor) == (2, 0) and len(data) >= 12:
        (length,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise FileFormatError(f"{where} uses .npy format version {major}.{minor}, which this version cannot read")
    if length > MAX_NPY_HEADER:
        raise FileFormatError(f"{where} is damaged (its header claims {size_text(length)}; an array header is a few dozen bytes)")
    end = start + length
    if len(data) < end:
        raise FileFormatError(f"{where} is truncated (its header is cut off)")
    header = io.BytesIO(data[:end])
    with damage(f"{where} is damaged"):
        np.lib.format.read_magic(header)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(header, max_header_size=MAX_NPY_HEADER)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(header, max_header_size=MAX_NPY_HEADER)
    if dtype.hasobject:
        raise FileFormatError(f"{where} holds Python objects (pickled data); Backprop Studio never loads pickled data")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise FileFormatError(f"{where} has dtype {dtype}, not numbers")
    if len(shape) > MAX_NDIM:
        raise FileFormatError(f"{where} is damaged (its header gives {len(shape)} dimensions; at most {MAX_NDIM} are read)")
    if any(s < 0 for s in shape):
        raise FileFormatError(f"{where} is damaged (its header gives the shape {shape}, with a negative size)")
    count = math.prod(shape)  # Python ints: no overflow, however absurd the header
    nbytes = count * dtype.itemsize
    have = len(data) - end
    if nbytes > have:
        raise FileFormatError(f"{where} is truncated (its header promises {size_text(nbytes)} of data; {size_text(have)} follow)")
    if nbytes < have:
        raise FileFormatError(f"{where} is damaged ({have - nbytes} bytes follow its data)")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=end)
    arr = arr.reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype, order="C")


def read_npz(raw: bytes, what: str, budget: int) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` held in memory (keys without ``.npy``), every size checked
    before it is read; ``budget`` bounds the arrays' bytes together."""
    zf = open_zip(io.BytesIO(raw), f"{what} is damaged: not a readable zip archive")
    with zf:
        infos = check_members(zf, what, len(raw), budget)
        out: dict[str, np.ndarray] = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise FileFormatError(f"{what} has a member {info.filename[:60]!r} that is not an array (.npy)")
            key = info.filename[:-4]
            where = f"{what} entry {key[:80]!r}"
            out[key] = read_npy(read_member(zf, info, f"{where} is damaged"), where)
    return out


__all__ = ["MAX_INFLATE_RATIO", "RATIO_FREE_BYTES", "MAX_NPY_HEADER", "MAX_NDIM", "size_text", "reason", "damage",
           "open_zip", "check_members", "read_member", "read_npy", "read_npz"]
