"""Snapshots of a `BinarySemanticCache` in one self-checking file: fast, atomic, and never pickled.

Loading a file only parses numbers, UTF-8 and JSON: it cannot run code. A save writes a temporary file
beside the target, fsyncs it, renames it over the target and fsyncs the directory, so a crash at any
moment leaves either the old snapshot or the new one (the next save or load of that path removes the
temporary file a killed save left). A load copies the file into memory before checking it, so a file
rewritten in place meanwhile is a `CacheFormatError`, never a crash. Every part carries an xxh3-64
checksum, and a truncated, bit-flipped, foreign, wrong-version or wrong-endianness file raises
`CacheFormatError` naming the file and the part that is wrong; nothing is half-loaded.

Layout (version 2, little-endian, sections 64-byte aligned, zero padding between them; the header and
section table together are 640 bytes)::

    header   192 bytes  magic "BSCCACHE", version, endianness marker 0x01020304, header size,
                        section count, header checksum (xxh3-64 of header + table with this field 0),
                        dim, code_bits, seed, max_entries, entries n, handles h, namespaces k, rerank,
                        threshold, ttl, flags, eviction policy (0 lru, 1 lfu, 2 sieve, 3 diverse; 0 in
                        files older than the policies), cache clock and wall clock at save,
                        hit/miss/eviction/expiration counters
    table    14 x 32    per section: kind, reserved, offset, length, checksum
    codes    n*words u64  every namespace's codes, contiguous, namespace after namespace (mmap-able:
                        `codes_view` scans them in place)
    ids      n u64      entry id (handle | generation << 24) of each code row
    lru      n u32      rows from least to most recently used
    expires  n f64      absolute expiry per row on the cache clock at save (empty without a ttl)
    free     u32        free handles in reuse order, each handle | next generation << 24
    ns_counts    k u32  rows per namespace
    ns_offsets   k+1 u64, ns_names UTF-8   namespace names
    vectors  h*dim i8   int8 rerank rows by handle (empty when rerank is 0)
    norms    h f32      their norms, as the cache keeps them (empty when rerank is 0)
    kinds    h u8       per handle: 0 free, 1 str response, 2 bytes response
    resp_offsets h+1 u64, resp_blob   responses (str as UTF-8 with surrogatepass)
    metadata            one JSON array with h items: an object or null per handle

Expiry times survive a restart: on load they are moved onto the new clock, minus the wall-clock time
that passed since the save.

Example:
    >>> import numpy as np, tempfile, os
    >>> from bsc import BinarySemanticCache
    >>> cache = BinarySemanticCache(dim=4)
    >>> _ = cache.put(np.array([1.0, 0.2, 0.0, 0.1]), "cached answer")
    >>> path = os.path.join(tempfile.mkdtemp(), "cache.bsc")
    >>> cache.save(path)
    >>> BinarySemanticCache.load(path).get(np.array([1.0, 0.21, 0.0, 0.1])).response
    'cached answer'
"""

from __future__ import annotations

import errno
import gc
import json
import math
import mmap
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from bsc._input import as_int
from bsc._native import CacheFormatError, HammingIndex, xxh3_64
from bsc.frozen import MAX_METADATA_DEPTH, FrozenDict, freeze
from bsc.snapshot import EVICTION_POLICIES, CacheSnapshot

__all__ = [
    "FORMAT_VERSION",
    "CacheFormatError",
    "codes_view",
    "format_version",
    "read_index",
    "read_snapshot",
    "write_snapshot",
]


#: The layout version this module writes (it also reads version 1, whose ids were 32-bit).
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)

PathLike = str | os.PathLike[str]

_MAGIC = b"BSCCACHE"
_ENDIAN = 0x0102_0304
_ALIGN = 64
_MAX_HANDLES = 0x00FF_FFFF
_FLAG_TTL = 1
# Responses are ASCII str, each followed by a 0x1E byte that none contains: one split decodes them all.
_FLAG_SEPARATED = 2
_SEPARATOR = "\x1e"
_FREE, _STR, _BYTES = 0, 1, 2

# magic, version, endian, header_size, sections, header checksum, dim, code_bits, seed, max_entries,
# entries, handles, namespaces, rerank, threshold, ttl, flags, eviction policy, clock at save, wall clock
# at save, hits, misses, evictions, expirations; padded to 192 bytes.
_HEADER = struct.Struct("<8sIIIIQIIQQQQIIddIIddQQQQ")
_HEADER_SIZE = 192
_CHECKSUM_AT = 24
_ENTRY = struct.Struct("<IIQQQ")
_SECTIONS = (
    "codes",
    "ids",
    "lru",
    "expires",
    "free",
    "ns_counts",
    "ns_offsets",
    "ns_names",
    "vectors",
    "norms",
    "kinds",
    "resp_offsets",
    "resp_blob",
    "metadata",
)
_INDEX_SECTIONS = _SECTIONS[:8]
_TABLE_END = _HEADER_SIZE + len(_SECTIONS) * _ENTRY.size
assert _HEADER.size <= _HEADER_SIZE


@dataclass(frozen=True, slots=True)
class _Header:
    version: int
    dim: int
    code_bits: int
    seed: int
    max_entries: int
    entries: int
    handles: int
    namespaces: int
    rerank: int
    threshold: float
    ttl: float | None
    separated: bool
    eviction: str
    clock_at_save: float
    wall_at_save: float
    counters: tuple[int, int, int, int]
    # name -> (offset, length, checksum)
    sections: dict[str, tuple[int, int, int]]


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _checksum(data: Any) -> int:
    """XXH3-64 of the bytes of a contiguous buffer (computed in Rust with the GIL released)."""
    view = memoryview(data)
    return xxh3_64(view if view.format == "B" else view.cast("B"))


# ---------------------------------------------------------------------------------------------- save
@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic GC while building millions of small objects, which would otherwise trigger
    repeated full collections (measured: 3-4x slower bulk encoding and decoding)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_snapshot(snapshot: CacheSnapshot, path: PathLike) -> None:
    """Writes ``snapshot`` to ``path`` atomically (temporary file, fsync, rename, fsync dir).

    Args:
        snapshot: the state to write (`BinarySemanticCache.to_snapshot`).
        path: the target file; its directory must exist. A new file gets the mode the umask gives
            (0o644 under the usual 022), like any file the user creates; a replaced file keeps its mode.
            Temporary files that earlier saves to the same path left when their process was killed are
            removed.

    Metadata is stored as JSON: it round-trips exactly when it is made of dicts with str keys, lists,
    str, int, float, bool and None (a tuple comes back as a list, a non-str key as a str).

    Raises:
        TypeError: a metadata value that JSON cannot encode.
        OSError: the file cannot be written (the previous snapshot, if any, is left as it was).

    Example:
        >>> write_snapshot(cache.to_snapshot(), "cache.bsc")  # doctest: +SKIP
    """
    with _gc_paused():
        sections, header = _encode(snapshot, time.time())
    _write_atomically(os.fspath(path), header, sections)


def _raw(data: npt.NDArray[Any] | bytes) -> memoryview:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    return memoryview(data)


def _by_handle(values: list[Any], handles: npt.NDArray[np.uint32], slots: int, vacant: Any) -> list[Any]:
    """Per-row values laid out by handle (the file's order), ``vacant`` at free handles."""
    out = np.empty(slots, dtype=object)
    out[:] = [vacant] * slots if slots else []
    rows = np.empty(len(values), dtype=object)
    rows[:] = values
    out[handles] = rows
    by_handle: list[Any] = out.tolist()
    return by_handle


def _encode(snap: CacheSnapshot, wall_at_save: float) -> tuple[list[memoryview], bytes]:
    handles = snap.slots
    free_handles = HammingIndex.handles_of(snap.free)
    responses: list[str | bytes] = _by_handle(snap.responses, snap.handles, handles, "")
    meta_list: list[Mapping[str, Any] | None] = _by_handle(snap.metadata, snap.handles, handles, None)
    vectors = snap.vectors if snap.rerank else np.zeros((0, 0), dtype=np.int8)
    norms = snap.norms if snap.rerank else np.ones(0, dtype=np.float32)
    names, counts, codes, ids, lru, expires, free = (
        snap.names,
        snap.counts,
        snap.codes,
        snap.ids,
        snap.lru,
        snap.expires,
        snap.free,
    )

    kinds, resp_offsets, resp_blob, separated = _encode_responses(responses, handles)
    kinds[free_handles] = _FREE
    encoded_names = [n.encode("utf-8", "surrogatepass") for n in names]
    name_offsets = np.zeros(len(names) + 1, dtype="<u8")
    np.cumsum([len(n) for n in encoded_names], out=name_offsets[1:])
    try:
        metadata = json.dumps(meta_list, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serializable to be saved: {exc}") from exc

    sections: list[memoryview] = [
        _raw(data)
        for data in (
            codes.astype("<u8", copy=False),
            ids.astype("<u8", copy=False),
            lru.astype("<u4", copy=False),
            expires.astype("<f8", copy=False),
            free.astype("<u8", copy=False),
            counts.astype("<u4", copy=False),
            name_offsets,
            b"".join(encoded_names),
            vectors,
            norms.astype("<f4", copy=False),
            kinds,
            resp_offsets,
            resp_blob,
            metadata.encode("utf-8", "surrogatepass"),
        )
    ]
    flags = (_FLAG_TTL if snap.ttl is not None else 0) | (_FLAG_SEPARATED if separated else 0)
    fixed = _HEADER.pack(
        _MAGIC,
        FORMAT_VERSION,
        _ENDIAN,
        _TABLE_END,
        len(_SECTIONS),
        0,
        snap.dim,
        snap.code_bits,
        snap.seed,
        snap.max_entries,
        len(ids),
        handles,
        len(names),
        snap.rerank,
        snap.threshold,
        snap.ttl or 0.0,
        flags,
        EVICTION_POLICIES.index(snap.eviction),
        snap.clock_at,
        wall_at_save,
        *snap.counters,
    ).ljust(_HEADER_SIZE, b"\0")
    table = bytearray()
    offset = _TABLE_END
    for view in sections:
        offset = _align(offset)
        table += _ENTRY.pack(len(table) // _ENTRY.size + 1, 0, offset, view.nbytes, _checksum(view))
        offset += view.nbytes
    header = bytearray(fixed + table)
    struct.pack_into("<Q", header, _CHECKSUM_AT, _checksum(header))
    return sections, bytes(header)


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _encode_responses(
    responses: list[str | bytes], handles: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], bytes, bool]:
    """Per-handle kinds, start offsets (plus the end) and the blob, and whether it is separated."""
    offsets = np.zeros(handles + 1, dtype="<u8")
    try:
        joined = _SEPARATOR.join([*responses, ""])  # type: ignore[list-item]  # TypeError if bytes
    except TypeError:
        joined = None
    if handles and joined is not None and joined.isascii() and joined.count(_SEPARATOR) == handles:
        # The common case in bulk: one join, lengths in C, character offsets are byte offsets.
        np.cumsum(np.fromiter(map(len, responses), dtype=np.int64, count=handles) + 1, out=offsets[1:])
        return np.full(handles, _STR, dtype=np.uint8), offsets, joined.encode("ascii"), True
    kinds = np.fromiter((_BYTES if isinstance(r, bytes) else _STR for r in responses), np.uint8, handles)
    raw = [r if isinstance(r, bytes) else r.encode("utf-8", "surrogatepass") for r in responses]
    np.cumsum(np.fromiter(map(len, raw), dtype=np.int64, count=handles), out=offsets[1:])
    return kinds, offsets, b"".join(raw), False


def _temp_prefix(path: str) -> str:
    """Temporary files of saves to ``path`` are ``.<name>.<pid>.<random>.tmp`` beside it."""
    return "." + os.path.basename(path) + "."


def _remove_stale_temp_files(path: str) -> None:
    """Removes the temporary files that saves to ``path`` left behind when their process was killed
    (each can be as large as the snapshot). A file whose writer is still running, or might be (another
    user's process, or one of this process's threads), is left alone."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = _temp_prefix(path)
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _process_exists(int(pid_text)):
            continue
        with suppress(OSError):  # already gone, or not ours to remove
            os.unlink(os.path.join(directory, name))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # alive under another user (or not a pid we can judge): keep its file
    return True


def _create_temp(path: str) -> tuple[int, str]:
    """A new temporary file beside ``path``, created with mode 0o666 so the umask applies (as for any
    file the user creates), then given the mode of the file it will replace, if there is one."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save: the directory {directory!r} does not exist", path
        )
    tmp = os.path.join(directory, f"{_temp_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with suppress(FileNotFoundError):
            os.fchmod(fd, stat.S_IMODE(os.stat(path).st_mode))
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def _write_atomically(path: str, header: bytes, sections: list[memoryview]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temp_files(path)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            position = len(header)
            for view in sections:
                pad = _align(position) - position
                f.write(b"\0" * pad)
                f.write(view)
                position += pad + view.nbytes
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------------------- load
def read_snapshot(
    path: PathLike,
    *,
    dim: int | None = None,
    code_bits: int | None = None,
    seed: int | None = None,
    threshold: float | None = None,
    max_entries: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    eviction: str | None = None,
) -> CacheSnapshot:
    """The snapshot in the file at ``path``, every part checked first (the index's own invariants are
    checked again when a cache is built from it).

    Args:
        path: the snapshot file.
        dim, code_bits, seed: when given, must equal the file's (codes from another projection would
            be meaningless); ``ValueError`` otherwise.
        threshold: a new similarity threshold (default: the saved one).
        max_entries: a new capacity, at least the number of saved entries (default: the saved one).
        eviction: a new eviction policy (default: the saved one). The policy's per-entry state
            (LFU counters, SIEVE and diverse visited bits) is not saved: it restarts at zero, in the
            saved list order.
        clock: the loaded cache's monotonic clock; saved expiry times are moved onto it.
        wall_clock: wall-clock time source, used to age entries by the time since the save (for tests).

    Raises:
        CacheFormatError: the file is truncated, corrupted, foreign, of another version or byte order.
        ValueError: dim/code_bits/seed differ from the file, or max_entries is below its entry count.
        OSError: the file cannot be read.

    Example:
        >>> snap = read_snapshot("cache.bsc", dim=384)  # doctest: +SKIP
    """
    path = os.fspath(path)
    with _naming(path):
        return _read(path, dim, code_bits, seed, threshold, max_entries, clock, wall_clock, eviction)


def _read(
    path: str,
    dim: int | None,
    code_bits: int | None,
    seed: int | None,
    threshold: float | None,
    max_entries: int | None,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    eviction: str | None,
) -> CacheSnapshot:
    _remove_stale_temp_files(path)
    header, buf = _read_snapshot(path)
    _check_expected(header, dim=dim, code_bits=code_bits, seed=seed)
    for name in _SECTIONS:
        _verify(buf, header, name)
    _check_padding(buf, header)
    capacity = (
        header.max_entries
        if max_entries is None
        else as_int(max_entries, "max_entries", low=1, high=_MAX_HANDLES)
    )
    if capacity < header.entries:
        raise ValueError(f"max_entries={capacity} is below the {header.entries} saved entries")
    names, counts, codes, ids, lru, expires, free = _index_parts(buf, header, clock, wall_clock)
    with _gc_paused():
        handles, responses, metadata = _read_entries(buf, header, len(names), counts, ids, free)
    rows, width = (header.handles, header.dim) if header.rerank else (0, 0)
    return CacheSnapshot(
        dim=header.dim,
        code_bits=header.code_bits,
        seed=header.seed,
        threshold=header.threshold if threshold is None else threshold,
        max_entries=capacity,
        ttl=header.ttl,
        rerank=header.rerank,
        eviction=header.eviction if eviction is None else eviction,
        names=names,
        counts=counts,
        codes=codes,
        ids=ids,
        handles=handles,
        lru=lru,
        expires=expires,
        free=free,
        vectors=_section_array(buf, header, "vectors", np.int8).reshape(rows, width),
        norms=_section_array(buf, header, "norms", np.float32),
        responses=responses,
        metadata=metadata,
        counters=header.counters,
        clock_at=clock(),
    )


def read_index(
    path: PathLike,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> HammingIndex:
    """Loads only the code index of a snapshot (codes, ids, namespaces, LRU, expiry), checksummed and
    validated: the fast path to answering Hamming lookups, without decoding responses.

    Raises:
        CacheFormatError: as for `load` (only the header and index parts are read and checked).

    Example:
        >>> index = read_index("cache.bsc")  # doctest: +SKIP
    """
    path = os.fspath(path)
    with _naming(path):
        header, buf = _read_snapshot(path, index_only=True)
        for name in _INDEX_SECTIONS:
            _verify(buf, header, name)
        _check_padding(buf, header, _INDEX_SECTIONS)
        parts = _index_parts(buf, header, clock, wall_clock)
        try:
            return HammingIndex.from_parts(
                header.code_bits // 64, header.max_entries, header.ttl is not None, *parts
            )
        except CacheFormatError as exc:
            raise CacheFormatError(f"index: {exc}") from None


def codes_view(path: PathLike) -> tuple[mmap.mmap, npt.NDArray[np.uint64]]:
    """The snapshot's codes as a read-only ``(n, words)`` uint64 array over the memory-mapped file, with
    the mapping that backs it (keep it open while using the array), for scans without any copy, e.g.
    with `bsc._native.hamming_search`. Rows are in namespace order; the header and the codes' checksum
    are verified first.

    Unlike `load`, this keeps the file mapped: truncating or rewriting the file in place (``cp new.bsc
    cache.bsc``) while the array is in use can kill the process with SIGBUS. `save` never does that (it
    renames a new file over the old one), so map only files written by `save`.

    Raises:
        CacheFormatError: as for `load`.
    """
    path = os.fspath(path)
    with _naming(path), _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        header = _parse_header(_read_header(f, size), size)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with memoryview(mapped) as view, _naming(path):
        _verify(view, header, "codes")
    offset, _, _ = header.sections["codes"]
    codes = np.frombuffer(mapped, dtype="<u8", count=header.entries * header.code_bits // 64, offset=offset)
    return mapped, codes.reshape(header.entries, header.code_bits // 64)


@contextmanager
def _naming(path: str) -> Iterator[None]:
    """Prefixes the message of a `CacheFormatError` raised inside with the file's path."""
    try:
        yield
    except CacheFormatError as exc:
        raise CacheFormatError(f"{path}: {exc}") from None


@contextmanager
def _open_regular(path: str) -> Iterator[Any]:
    """The file opened for reading, refused unless it is a regular file: opening a FIFO would block until
    a writer appears, and a directory or device is no snapshot. O_NONBLOCK keeps the open itself from
    waiting on a FIFO; it changes nothing for a regular file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CacheFormatError("file: not a regular file (a FIFO, directory or device is not a snapshot)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def _read_header(f: Any, size: int) -> bytes:
    """The header and section table; a file too short for them is named as foreign or as truncated."""
    head = f.read(_TABLE_END)
    if len(head) < _TABLE_END:
        if not head:
            raise CacheFormatError("file: empty (0 bytes), not a bsc snapshot")
        if not _MAGIC.startswith(head[:8]) and not head.startswith(_MAGIC):
            raise CacheFormatError(f"header: not a bsc snapshot (magic {head[:8]!r}, expected {_MAGIC!r})")
        raise CacheFormatError(
            f"header: file is {size} bytes, shorter than the {_TABLE_END}-byte header (truncated?)"
        )
    return bytes(head)


def _read_snapshot(path: str, *, index_only: bool = False) -> tuple[_Header, memoryview]:
    """Parses the header, then reads the file (only up to the end of the index sections when
    ``index_only``) into memory and returns ``(header, view)``.

    The file is copied, not mapped: a mapped file that someone truncates or rewrites in place while it
    is read (``cp new.bsc cache.bsc``) kills the reader with SIGBUS; a copy that came out shorter or
    changed is caught here, or by the checksums, as a `CacheFormatError`.
    """
    with _open_regular(path) as f:
        before = os.fstat(f.fileno())
        head = _read_header(f, before.st_size)
        header = _parse_header(head, before.st_size)
        offset, length, _ = header.sections[_INDEX_SECTIONS[-1]]
        end = offset + length if index_only else before.st_size
        view = np.empty(end, dtype=np.uint8).data  # not zero-filled: every byte is read into
        view[:_TABLE_END] = head
        got = _TABLE_END
        while got < end:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
        after = os.fstat(f.fileno())
    if got < end or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise CacheFormatError("file: changed while it was being read (rewritten in place?); try again")
    return header, view


def _parse_header(buf: bytes, file_size: int) -> _Header:
    if bytes(buf[:8]) != _MAGIC:
        raise CacheFormatError(f"header: not a bsc snapshot (magic {bytes(buf[:8])!r}, expected {_MAGIC!r})")
    (
        _,
        version,
        endian,
        header_size,
        n_sections,
        checksum,
        dim,
        code_bits,
        seed,
        max_entries,
        entries,
        handles,
        namespaces,
        rerank,
        threshold,
        ttl,
        flags,
        eviction,
        clock_at_save,
        wall_at_save,
        hits,
        misses,
        evictions,
        expirations,
    ) = _HEADER.unpack_from(buf)
    if endian != _ENDIAN:
        if endian == 0x0403_0201:
            raise CacheFormatError("header: file was written big-endian; this reader expects little-endian")
        raise CacheFormatError(f"header: bad endianness marker {endian:#010x}")
    if version not in _READABLE_VERSIONS:
        raise CacheFormatError(
            f"header: unsupported format version {version} (this build reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))})"
        )
    id_size = 4 if version == 1 else 8
    if header_size != _TABLE_END or n_sections != len(_SECTIONS):
        raise CacheFormatError(
            f"header: {n_sections} sections in {header_size} bytes, expected {len(_SECTIONS)} in {_TABLE_END}"
        )
    head = bytearray(buf[:_TABLE_END])
    struct.pack_into("<Q", head, _CHECKSUM_AT, 0)
    if _checksum(head) != checksum:
        raise CacheFormatError("header: checksum mismatch (the header or section table is corrupted)")
    if bytes(buf[_HEADER.size : _HEADER_SIZE]).strip(b"\0"):
        raise CacheFormatError("header: reserved bytes are not zero")
    if code_bits not in (64, 128, 256, 512, 1024) or dim == 0:
        raise CacheFormatError(f"header: invalid dim {dim} or code_bits {code_bits}")
    if (
        not entries <= handles <= _MAX_HANDLES
        or namespaces > entries
        or flags & ~(_FLAG_TTL | _FLAG_SEPARATED)
    ):
        raise CacheFormatError(
            f"header: inconsistent counts (entries {entries}, handles {handles}, namespaces {namespaces})"
        )
    if not entries <= max_entries <= _MAX_HANDLES or max_entries == 0:
        raise CacheFormatError(
            f"header: invalid max_entries {max_entries} (expected 1 to {_MAX_HANDLES}, at least the "
            f"{entries} entries)"
        )
    if eviction >= len(EVICTION_POLICIES):
        raise CacheFormatError(f"header: unknown eviction policy code {eviction}")
    has_ttl = bool(flags & _FLAG_TTL)
    if has_ttl and not (math.isfinite(ttl) and ttl > 0):
        raise CacheFormatError(f"header: invalid ttl {ttl}")
    words = code_bits // 64
    expected = {
        "codes": entries * words * 8,
        "ids": entries * id_size,
        "lru": entries * 4,
        "expires": entries * 8 if has_ttl else 0,
        "free": (handles - entries) * id_size,
        "ns_counts": namespaces * 4,
        "ns_offsets": (namespaces + 1) * 8,
        "vectors": handles * dim if rerank else 0,
        "norms": handles * 4 if rerank else 0,
        "kinds": handles,
        "resp_offsets": (handles + 1) * 8,
    }
    sections: dict[str, tuple[int, int, int]] = {}
    position = _TABLE_END
    for i, name in enumerate(_SECTIONS):
        kind, _, offset, length, digest = _ENTRY.unpack_from(buf, _HEADER_SIZE + i * _ENTRY.size)
        want = expected.get(name)
        if kind != i + 1 or offset != _align(position) or (want is not None and length != want):
            raise CacheFormatError(
                f"section {name}: table entry is inconsistent (kind {kind}, offset {offset}, length {length}"
                + (f", expected length {want})" if want is not None else ")")
            )
        sections[name] = (offset, length, digest)
        position = offset + length
    if file_size != position:
        what = "truncated" if file_size < position else "has trailing bytes"
        raise CacheFormatError(f"file: {file_size} bytes but the sections end at {position} ({what})")
    return _Header(
        version=version,
        dim=dim,
        code_bits=code_bits,
        seed=seed,
        max_entries=max_entries,
        entries=entries,
        handles=handles,
        namespaces=namespaces,
        rerank=rerank,
        threshold=threshold,
        ttl=ttl if has_ttl else None,
        separated=bool(flags & _FLAG_SEPARATED),
        eviction=EVICTION_POLICIES[eviction],
        clock_at_save=clock_at_save,
        wall_at_save=wall_at_save,
        counters=(hits, misses, evictions, expirations),
        sections=sections,
    )


def _check_expected(header: _Header, **expected: int | None) -> None:
    for name, want in expected.items():
        have = getattr(header, name)
        if want is not None and want != have:
            raise ValueError(f"the cache file was saved with {name}={have}, but {name}={want} was expected")


def _verify(buf: memoryview, header: _Header, name: str) -> None:
    offset, length, digest = header.sections[name]
    if _checksum(buf[offset : offset + length]) != digest:
        raise CacheFormatError(f"section {name}: checksum mismatch (corrupted)")


def _check_padding(buf: memoryview, header: _Header, names: tuple[str, ...] = _SECTIONS) -> None:
    end = _TABLE_END
    for name in names:
        offset, length, _ = header.sections[name]
        if bytes(buf[end:offset]).strip(b"\0"):
            raise CacheFormatError(f"section {name}: padding before it is not zero (corrupted)")
        end = offset + length


def _section_array(buf: memoryview, header: _Header, name: str, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    offset, length, _ = header.sections[name]
    dt = np.dtype(dtype)
    if length % dt.itemsize:
        raise CacheFormatError(f"section {name}: length {length} is not a multiple of {dt.itemsize}")
    # Native order for the Rust side; a no-op view on little-endian machines.
    return np.frombuffer(buf, dtype=dt.newbyteorder("<"), count=length // dt.itemsize, offset=offset).astype(
        dt.newbyteorder("="), copy=False
    )


def _ids(buf: memoryview, header: _Header, name: str) -> npt.NDArray[np.uint64]:
    """An id section as uint64 (version 1 stored 32-bit ids, whose 8-bit generations widen as they are)."""
    if header.version == 1:
        return _section_array(buf, header, name, np.uint32).astype(np.uint64)
    return _section_array(buf, header, name, np.uint64)


def _section_bytes(buf: memoryview, header: _Header, name: str) -> memoryview:
    offset, length, _ = header.sections[name]
    return buf[offset : offset + length]


def _offsets(buf: memoryview, header: _Header, name: str, blob_length: int) -> npt.NDArray[np.uint64]:
    offsets = _section_array(buf, header, name, np.uint64)
    if offsets[0] != 0 or offsets[-1] != blob_length or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise CacheFormatError(f"section {name}: offsets are not increasing from 0 to {blob_length}")
    return offsets


def _decode(data: bytes | memoryview, what: str) -> str:
    try:
        return str(data, "utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise CacheFormatError(f"section {what}: invalid UTF-8 ({exc.reason} at byte {exc.start})") from None


_Parts = tuple[
    list[str],
    npt.NDArray[np.uint32],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint32],
    npt.NDArray[np.float64],
    npt.NDArray[np.uint64],
]


def _index_parts(
    buf: memoryview, header: _Header, clock: Callable[[], float], wall_clock: Callable[[], float]
) -> _Parts:
    """The index sections as `HammingIndex.from_parts` takes them, expiry times moved onto ``clock``."""
    blob = _section_bytes(buf, header, "ns_names")
    offsets = _offsets(buf, header, "ns_offsets", len(blob)).tolist()
    names = [_decode(blob[a:b], "ns_names") for a, b in pairwise(offsets)]
    counts = _section_array(buf, header, "ns_counts", np.uint32)
    ids = _ids(buf, header, "ids")
    expires = _section_array(buf, header, "expires", np.float64)
    if len(expires):
        # Move absolute expiry times onto the new clock, aged by the wall-clock time since the save.
        elapsed = max(0.0, wall_clock() - header.wall_at_save)
        shift = clock() - header.clock_at_save - elapsed
        if shift != 0.0:
            expires = expires + shift
    codes = _section_array(buf, header, "codes", np.uint64)
    lru = _section_array(buf, header, "lru", np.uint32)
    return names, counts, codes, ids, lru, expires, _ids(buf, header, "free")


def _read_entries(
    buf: memoryview,
    header: _Header,
    namespaces: int,
    counts: npt.NDArray[np.uint32],
    ids: npt.NDArray[np.uint64],
    free: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint32], list[str | bytes], list[Mapping[str, Any] | None]]:
    """Each row's handle, response and metadata (the file stores the last two by handle). Handles are
    checked here only as far as reading by them needs; the index checks the rest when it is built."""
    handles = header.handles
    row_handles = HammingIndex.handles_of(ids)
    all_handles = np.concatenate([row_handles, HammingIndex.handles_of(free)])
    if len(all_handles) != handles or not np.array_equal(np.sort(all_handles), np.arange(handles)):
        raise CacheFormatError("index: handles are out of range or used twice")
    if len(counts) != namespaces or int(counts.sum(dtype=np.uint64)) != len(ids):
        raise CacheFormatError("index: namespace counts do not add up to the entries")
    live = np.zeros(handles, dtype=bool)
    live[row_handles] = True
    kinds = _section_array(buf, header, "kinds", np.uint8)
    if np.any(kinds > _BYTES) or not np.array_equal(kinds != _FREE, live):
        raise CacheFormatError("section kinds: response kinds do not match the index's live entries")
    blob = _section_bytes(buf, header, "resp_blob")
    offsets = _offsets(buf, header, "resp_offsets", len(blob))
    spans = cast("npt.NDArray[np.int64]", np.diff(offsets.astype(np.int64)))
    if np.any(spans[~live] != int(header.separated)):
        raise CacheFormatError("section resp_offsets: a free handle has a response")
    if header.separated:
        responses = _split_responses(blob, handles, kinds)
    else:
        responses = _decode_responses(bytes(blob), offsets.tolist(), kinds)

    text = _decode(_section_bytes(buf, header, "metadata"), "metadata")
    # Without arrays inside the outer one (a '[' only there; text in a string just takes the slow path),
    # the decoder itself builds the read-only objects; otherwise `freeze` walks each item. The fast
    # path skips the depth check: `json.loads` still refuses what would exhaust the stack.
    flat = text.count("[") == 1
    try:
        metas = json.loads(text, object_hook=FrozenDict if flat else None)
    except json.JSONDecodeError as exc:
        raise CacheFormatError(f"section metadata: invalid JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise CacheFormatError(f"section metadata: nested deeper than {MAX_METADATA_DEPTH} levels") from None
    if not isinstance(metas, list) or len(metas) != handles:
        raise CacheFormatError(f"section metadata: expected a JSON array of {handles} items")
    frozen: list[Mapping[str, Any] | None] = metas
    if flat:
        nulls = metas.count(None)
        if nulls != handles and sum(type(m) is FrozenDict for m in metas) + nulls != handles:
            raise CacheFormatError("section metadata: an item is neither a JSON object nor null")
    elif metas.count(None) != handles:
        try:
            frozen = [None if m is None else freeze(m) for m in metas if m is None or type(m) is dict]
        except ValueError as exc:
            raise CacheFormatError(f"section metadata: {exc}") from None
        if len(frozen) != handles:
            raise CacheFormatError("section metadata: an item is neither a JSON object nor null")

    if np.array_equal(row_handles, np.arange(handles)):
        return row_handles, responses, frozen  # the common case: no free handles, rows in handle order
    by_handle = np.empty(handles, dtype=object)
    by_handle[:] = responses
    meta_by_handle = np.empty(handles, dtype=object)
    meta_by_handle[:] = frozen
    return row_handles, by_handle[row_handles].tolist(), meta_by_handle[row_handles].tolist()


def _split_responses(blob: memoryview, handles: int, kinds: npt.NDArray[np.uint8]) -> list[str | bytes]:
    # Decoded straight from the mapping: one pass, no intermediate bytes copy.
    if np.any(kinds == _BYTES) or not len(blob) or blob[-1] != ord(_SEPARATOR):
        raise CacheFormatError("section resp_blob: separated responses do not end with the separator")
    try:
        text = str(blob[:-1], "ascii")
    except UnicodeDecodeError:
        raise CacheFormatError("section resp_blob: separated responses are not ASCII text") from None
    responses: list[str | bytes] = list(text.split(_SEPARATOR))
    if len(responses) != handles:
        raise CacheFormatError(
            f"section resp_blob: {len(responses)} separated responses for {handles} handles"
        )
    return responses


def _decode_responses(blob: bytes, offsets: list[int], kinds: npt.NDArray[np.uint8]) -> list[str | bytes]:
    slices = map(slice, offsets[:-1], offsets[1:])
    out: list[str | bytes] = []
    for s, kind in zip(slices, kinds.tolist(), strict=True):
        out.append(blob[s] if kind == _BYTES else _decode(blob[s], "resp_blob"))
    return out


def format_version(path: PathLike) -> int:
    """The layout version of the snapshot at ``path`` (``bsc info`` shows it), read from its header
    after the magic, byte order and header checksum are checked; the sections are not read.

    Raises:
        CacheFormatError: the header is not a valid snapshot header.
        OSError: the file cannot be read.

    Example:
        >>> format_version("cache.bsc")  # doctest: +SKIP
        2
    """
    with _open_regular(os.fspath(path)) as f:
        size = os.fstat(f.fileno()).st_size
        return _parse_header(_read_header(f, size), size).version
