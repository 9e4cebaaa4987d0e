"""`BinarySemanticCache`: embeddings in, cached responses out, by Hamming search over binary codes."""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import numpy.typing as npt

from bsc import _fork
from bsc._input import as_embeddings, as_float, as_int, normalised
from bsc._native import BinaryEncoder, HammingIndex
from bsc.thresholds import radius_for, shortlist_radius, similarity_from_distance

__all__ = [
    "DEFAULT_RERANK",
    "DEFAULT_THRESHOLD",
    "EVICTION_POLICIES",
    "BinarySemanticCache",
    "CacheStats",
    "Hit",
]

logger = logging.getLogger(__name__)

#: Default cosine threshold; chosen from benchmarks/quality.py (see README, "Choosing the defaults").
DEFAULT_THRESHOLD = 0.90
#: Default two-stage shortlist size (0 turns the exact-cosine rerank off).
DEFAULT_RERANK = 10

Response = str | bytes

#: The eviction policies `BinarySemanticCache(eviction=...)` accepts (see ``rust/src/eviction.rs`` and the
#: README, "Workloads and eviction"); LRU is the default.
EVICTION_POLICIES = ("lru", "lfu", "sieve", "diverse")


@dataclass(frozen=True, slots=True)
class Hit:
    """A cached response that matched a lookup.

    Attributes:
        response: the stored response.
        similarity: cosine similarity of the query to the stored embedding — exact (from the stored
            int8 copy) in two-stage mode, estimated from the Hamming distance otherwise.
        distance: Hamming distance between the two codes.
        id: the entry's id (for ``delete``).
        metadata: what was stored with the response, or None.
        namespace: the namespace the entry lives in.
        prompt: the cached prompt's text (text-level caches only), for judging the hit.
        exact: True when the text-level cache matched the prompt text exactly, without embedding it.
    """

    response: Response
    similarity: float
    distance: int
    id: int
    metadata: Mapping[str, Any] | None
    namespace: str
    prompt: str | None = None
    exact: bool = False


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters and sizes of a cache (a snapshot).

    ``hits`` and ``misses`` count every lookup: `BinarySemanticCache.get` and each lookup of a
    `SemanticCache` over this cache (exact or semantic); ``search`` alone counts nothing. They are saved
    with a snapshot, like ``evictions`` and ``expirations``.

    ``index_bytes`` is what the live entries occupy (code, id, LRU/position slot, expiry when on:
    52 bytes an entry at 256 bits without TTL); ``index_bytes_allocated`` adds growth headroom and free
    slots; ``vector_bytes`` is the int8 rerank copies (``dim`` bytes an entry). ``bytes_per_entry`` is
    ``(index_bytes + vector_bytes) / entries``. Responses and metadata are not counted.
    """

    hits: int
    misses: int
    hit_rate: float
    evictions: int
    expirations: int
    entries: int
    namespaces: int
    index_bytes: int
    index_bytes_allocated: int
    vector_bytes: int
    bytes_per_entry: float


class _Entry(NamedTuple):
    """What is published for a handle; replaced whole, so readers never see half an entry."""

    id: int
    response: Response
    metadata: Mapping[str, Any] | None
    namespace: str


# An id is a 24-bit handle (slot number) with a 40-bit generation above it (see rust/src/index.rs).
_HANDLE_MASK = 0x00FF_FFFF
#: Largest embedding dimension (the Rust encoder's limit: its projection stays within 512 MiB).
MAX_DIM = 1 << 16
#: Most entries a cache can hold (ids carry a 24-bit slot number).
MAX_ENTRIES = _HANDLE_MASK
#: Largest rerank shortlist: beyond a few hundred candidates a shortlist only costs time.
MAX_RERANK = 4096
#: Deepest nesting of dicts and lists accepted in metadata (a JSON decoder recurses once per level).
MAX_METADATA_DEPTH = 64
_SEARCH_RETRIES = 4
# The int8 copy reproduces a cosine to ~1e-4 (identical vectors score ~0.99997), so a threshold is met
# within that tolerance; otherwise threshold=1.0 could never hit in two-stage mode.
INT8_TOLERANCE = 1e-4


class BinarySemanticCache:
    """A semantic cache keyed by embeddings, stored as short binary codes and searched by Hamming distance.

    Each embedding is projected by a seeded Gaussian matrix and sign-binarized into ``code_bits`` bits
    (32 bytes at the default 256). A lookup returns the stored response of the nearest code in the same
    namespace if it is close enough: its cosine similarity to the query is at least ``threshold``. In
    two-stage mode (``rerank`` > 0, the default) the Hamming scan only shortlists ``rerank`` candidates
    within a widened radius and an int8 copy of each stored embedding decides by exact cosine; with
    ``rerank=0`` only the codes are kept (52 bytes an entry) and the cosine is estimated from the distance.

    Args:
        dim: embedding dimension.
        code_bits: bits per code: 64, 128, 256, 512 or 1024.
        seed: projection seed; caches must share it (and dim, code_bits) to share codes.
        threshold: minimum cosine similarity for a hit, in [-1, 1].
        max_entries: capacity; beyond it the eviction policy chooses an entry to drop (expired first).
        eviction: "lru" (least recently used, the default), "lfu" (least frequently used, with ageing),
            "sieve" (SIEVE: scan-resistant, no reordering on hits) or "diverse" (SIEVE that never
            evicts the newest 40 % and treats a new entry near a kept one as used). 0 or 1 byte an
            entry.
        ttl: seconds an entry lives, or None for no expiry.
        rerank: shortlist size for the exact-cosine second stage; 0 for codes only.
        clock: monotonic time source in seconds (for tests).

    Raises:
        TypeError: a setting of the wrong type (a str or a bool for a number, a float for an int;
            NumPy scalars are fine).
        ValueError: for an unsupported ``code_bits``, a threshold outside [-1, 1], ``dim`` outside
            1..65536, ``max_entries`` outside 1..16777215, a non-positive ``ttl``, ``rerank`` outside
            0..4096, ``seed`` outside 0..2**64-1, or an unknown ``eviction``.

    Example:
        >>> import numpy as np
        >>> cache = BinarySemanticCache(dim=4)
        >>> _ = cache.put(np.array([1.0, 0.2, 0.0, 0.1]), "cached answer")
        >>> cache.get(np.array([1.0, 0.21, 0.0, 0.1])).response
        'cached answer'
    """

    #: A cache that hands its rows to peers (the shared store's replica) needs the int8 copies even
    #: with ``rerank=0``; a local codes-only cache skips computing them.
    _shares_int8_rows = False

    def __init__(
        self,
        dim: int,
        *,
        code_bits: int = 256,
        seed: int = 42,
        threshold: float = DEFAULT_THRESHOLD,
        max_entries: int = 100_000,
        ttl: float | None = None,
        rerank: int = DEFAULT_RERANK,
        clock: Callable[[], float] = time.monotonic,
        eviction: str = "lru",
    ) -> None:
        dim = as_int(dim, "dim", low=1, high=MAX_DIM)
        code_bits = as_int(code_bits, "code_bits", low=64, high=1024)
        seed = as_int(seed, "seed", low=0, high=2**64 - 1)
        threshold = as_float(threshold, "threshold")
        radius = radius_for(threshold, code_bits)  # validates the range
        if ttl is not None:
            ttl = as_float(ttl, "ttl")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        rerank = as_int(rerank, "rerank (the shortlist size, 0 = off)", low=0, high=MAX_RERANK)
        max_entries = as_int(max_entries, "max_entries", low=1, high=MAX_ENTRIES)
        if not isinstance(eviction, str):
            raise TypeError(
                f"eviction must be a str, one of {EVICTION_POLICIES}, got {type(eviction).__name__}"
            )
        self._encoder = BinaryEncoder(dim, code_bits, seed)
        self._index = HammingIndex(code_bits // 64, max_entries, ttl is not None, eviction, radius)
        self.eviction = eviction
        self.dim = dim
        self.code_bits = code_bits
        self.seed = seed
        self.threshold = float(threshold)
        self.max_entries = max_entries
        self.ttl = ttl
        self.rerank = rerank
        self._clock = clock
        if rerank:
            self._radius = shortlist_radius(threshold, code_bits)
            self._k = rerank
        else:
            self._radius = radius
            self._k = 4  # a few spares in case the nearest is being deleted concurrently
        # Published entries by handle; None where the handle is free.
        self._entries: list[_Entry | None] = []
        # int8 copies of the unit embeddings by handle (two-stage mode only).
        self._vectors: npt.NDArray[np.int8] = np.zeros((0, dim if rerank else 0), dtype=np.int8)
        self._vector_norms: npt.NDArray[np.float32] = np.ones(0, dtype=np.float32)
        self._write_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._expirations = 0
        self._last_sweep = -math.inf
        _fork.track(self, _fork.BINARY_LEVEL)

    def _hold_for_fork(self) -> None:
        # Lock order as everywhere else: writer, counters, then the Rust index (see bsc._fork).
        self._write_lock.acquire()
        self._stats_lock.acquire()
        self._held_index = self._index
        self._held_index._hold_for_fork()

    def _release_after_fork(self) -> None:
        self._held_index._release_after_fork()
        self._stats_lock.release()
        self._write_lock.release()

    # ---------------------------------------------------------------- writing
    def put(
        self,
        embedding: npt.ArrayLike,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Stores ``response`` under ``embedding`` and returns the new entry's id.

        Raises:
            TypeError: non-float embedding, a response that is not str/bytes, a non-str namespace.
            ValueError: wrong shape, NaN/inf, or an all-zero embedding. Nothing is stored on error.
        """
        x = as_embeddings(embedding, self.dim, ndim=1)
        return self._put_rows(x[None, :], [response], namespace, [metadata])[0]

    def put_many(
        self,
        embeddings: npt.ArrayLike,
        responses: Sequence[Response],
        *,
        namespace: str = "default",
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[int]:
        """Stores one response per row of ``embeddings`` (shape ``(n, dim)``); returns their ids in order."""
        x = as_embeddings(embeddings, self.dim, ndim=2, what="embeddings")
        if len(responses) != len(x):
            raise ValueError(f"expected {len(x)} responses (one per embedding), got {len(responses)}")
        metas: list[Mapping[str, Any] | None] = list(metadata) if metadata is not None else [None] * len(x)
        if len(metas) != len(x):
            raise ValueError(f"expected {len(x)} metadata items (one per embedding), got {len(metas)}")
        return self._put_rows(x, list(responses), namespace, metas)

    def _put_rows(
        self,
        x: npt.NDArray[np.float32],
        responses: list[Response],
        namespace: str,
        metas: list[Mapping[str, Any] | None],
    ) -> list[int]:
        _check_namespace(namespace)
        for i, r in enumerate(responses):
            if not isinstance(r, str | bytes):
                raise TypeError(f"response {i} must be str or bytes, got {type(r).__name__}")
        for i, m in enumerate(metas):
            if m is not None and not isinstance(m, Mapping):
                raise TypeError(f"metadata {i} must be a mapping or None, got {type(m).__name__}")
        # Everything that can fail happens before the index is touched, so an error stores nothing.
        frozen, codes, q8, q8_norms = self._encode_rows(x, metas)
        expires = self._clock() + self.ttl if self.ttl is not None else math.inf
        return self._insert_encoded(namespace, codes, q8, q8_norms, responses, frozen, expires)

    def _encode_rows(
        self, x: npt.NDArray[np.float32], metas: list[Mapping[str, Any] | None]
    ) -> tuple[
        list[Mapping[str, Any] | None], npt.NDArray[np.uint64], npt.NDArray[np.int8], npt.NDArray[np.float32]
    ]:
        """The stored forms of validated rows: frozen metadata, codes, int8 unit rows and their norms.
        The int8 rows are empty (width 0) unless this cache reranks or `_shares_int8_rows`."""
        frozen = [_frozen(m, i) for i, m in enumerate(metas)]
        codes = self._encoder.encode(x)
        if not (self.rerank or self._shares_int8_rows):
            return frozen, codes, np.zeros((len(x), 0), dtype=np.int8), np.ones(len(x), dtype=np.float32)
        q8 = _quantize(normalised(x))
        q8_norms = np.linalg.norm(q8, axis=1).astype(np.float32)
        return frozen, codes, q8, q8_norms

    def _insert_encoded(
        self,
        namespace: str,
        codes: npt.NDArray[np.uint64],
        q8: npt.NDArray[np.int8],
        q8_norms: npt.NDArray[np.float32],
        responses: Sequence[Response],
        frozen: Sequence[Mapping[str, Any] | None],
        expires: float,
    ) -> list[int]:
        """Publishes already encoded rows (from `_encode_rows`, or decoded from a shared store) that
        expire at ``expires`` on this cache's clock; returns their ids."""
        with self._write_lock:
            if self.ttl is not None:
                self._make_room_from_expired(len(codes))
            ids, evicted = self._index.insert_many(namespace, codes, expires)
            top = max(i & _HANDLE_MASK for i in ids) + 1
            self._grow(top)
            entries = self._entries
            for row, (new_id, response, meta) in enumerate(zip(ids, responses, frozen, strict=True)):
                h = new_id & _HANDLE_MASK
                # Unpublish before overwriting the handle's rerank row: a reader that validated the
                # previous occupant re-checks it after copying the row (see `_decide`).
                entries[h] = None
                if self.rerank:
                    self._vectors[h] = q8[row]
                    self._vector_norms[h] = q8_norms[row]
                entries[h] = _Entry(new_id, response, meta, namespace)
            # An id evicted within this batch had its handle reused by a later row: already replaced.
            self._drop_payloads(evicted)
        if evicted:
            with self._stats_lock:
                self._evictions += len(evicted)
        return list(ids)

    def _make_room_from_expired(self, incoming: int) -> None:
        """With a TTL, a full cache drops expired entries before the LRU evicts live ones (caller holds
        the write lock). The sweep is a full pass, so it runs at most once per ttl/16 seconds: an
        entry can outlive its TTL by that much before it is preferred over a live one."""
        if self.max_entries - len(self._index) >= incoming or self.ttl is None:
            return
        now = self._clock()
        if now - self._last_sweep < self.ttl / 16:
            return
        self._last_sweep = now
        gone = [i for i in self._index.expired(now) if self._index.remove(i)]
        self._drop_payloads(gone)
        if gone:
            with self._stats_lock:
                self._expirations += len(gone)

    def _grow(self, handles: int) -> None:
        if handles > len(self._entries):
            self._entries.extend([None] * (handles - len(self._entries)))
        if self.rerank and handles > len(self._vectors):
            size = max(handles, 2 * len(self._vectors), 16)
            grown = np.zeros((size, self.dim), dtype=np.int8)
            grown[: len(self._vectors)] = self._vectors
            grown_norms = np.ones(size, dtype=np.float32)
            grown_norms[: len(self._vector_norms)] = self._vector_norms
            # Norms first: a reader that sees the new vectors must also see their norms.
            self._vector_norms = grown_norms
            self._vectors = grown

    def _drop_payloads(self, ids: Any) -> int:
        """Forgets the published entries of removed ids (caller holds the write lock)."""
        n = 0
        for removed in ids:
            h = removed & _HANDLE_MASK
            entry = self._entries[h] if h < len(self._entries) else None
            if entry is not None and entry.id == removed:
                self._entries[h] = None
                n += 1
        return n

    def delete(self, id: int) -> bool:
        """Removes an entry; False if it is already gone (deleted, evicted, expired, or a stale id)."""
        if not isinstance(id, int) or not 0 <= id < 2**64:
            return False
        with self._write_lock:
            if not self._index.remove(id):
                return False
            self._drop_payloads([id])
            return True

    def clear(self, namespace: str | None = None) -> None:
        """Removes every entry, or only those of one namespace."""
        if namespace is not None:
            _check_namespace(namespace)
        with self._write_lock:
            removed = self._index.clear(namespace)
            if namespace is None:
                self._entries = []
                self._vectors = np.zeros((0, self._vectors.shape[1]), dtype=np.int8)
                self._vector_norms = np.ones(0, dtype=np.float32)
            else:
                self._drop_payloads(removed)

    def purge_expired(self) -> int:
        """Deletes every expired entry now (lookups also drop the expired entries they meet)."""
        return self._purge(self._index.expired(self._clock()))

    def _purge(self, ids: list[int]) -> int:
        with self._write_lock:
            gone = [i for i in ids if self._index.remove(i)]
            self._drop_payloads(gone)
        with self._stats_lock:
            self._expirations += len(gone)
        return len(gone)

    # ---------------------------------------------------------------- reading
    def get(self, embedding: npt.ArrayLike, *, namespace: str = "default") -> Hit | None:
        """The best cached response for ``embedding`` in ``namespace``, or None on a miss.

        Raises:
            TypeError / ValueError: as for ``put``.
        """
        hits = self.search(embedding, namespace=namespace, k=1)
        self.record_lookup(bool(hits))
        if hits:
            self._index.touch(hits[0].id)
            return hits[0]
        return None

    def record_lookup(self, hit: bool) -> None:
        """Counts one lookup in `stats` as a hit or a miss: `get` does, and so does a layer above that
        decides hits itself from `search` (`SemanticCache`), so the counters cover every lookup."""
        with self._stats_lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1

    def search(self, embedding: npt.ArrayLike, *, namespace: str = "default", k: int = 5) -> list[Hit]:
        """Up to ``k`` entries whose similarity passes the threshold, best first. Does not count as a
        hit or a miss and does not refresh LRU order (``get`` does both)."""
        _check_namespace(namespace)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), self.max_entries)  # no more can match
        x = as_embeddings(embedding, self.dim, ndim=1)
        code = self._encoder.encode(x)
        unit = normalised(x) if self.rerank else None
        shortlist = max(k, self._k)
        for _ in range(_SEARCH_RETRIES):
            now = self._clock() if self.ttl is not None else 0.0
            found, expired = self._index.search(namespace, code, shortlist, self._radius, now)
            if expired:
                self._purge(expired)
            hits = self._decide(found, unit)
            if hits or not expired:
                return hits[:k]
        return []

    def _decide(self, found: list[tuple[int, int]], unit: npt.NDArray[np.float32] | None) -> list[Hit]:
        # One snapshot of the containers: `clear()` replaces them, `_grow` replaces the arrays.
        entries, vectors, norms = self._entries, self._vectors, self._vector_norms
        published: list[tuple[_Entry, int]] = []
        for entry_id, distance in found:
            h = entry_id & _HANDLE_MASK
            entry = entries[h] if h < len(entries) else None
            if entry is not None and entry.id == entry_id:  # not deleted or replaced since the scan
                published.append((entry, distance))
        if unit is None:
            n = self.code_bits
            return [
                Hit(e.response, similarity_from_distance(d, n), d, e.id, e.metadata, e.namespace)
                for e, d in published
            ]
        rows = min(len(vectors), len(norms))
        published = [(e, d) for e, d in published if (e.id & _HANDLE_MASK) < rows]  # newer than the arrays
        if not published:
            return []
        handles = [e.id & _HANDLE_MASK for e, _ in published]
        copies, copy_norms = vectors[handles].astype(np.float32), norms[handles]
        # A writer unpublishes a handle before overwriting its row, so an entry still published after
        # the copy was copied with its own row.
        still = [entries[h] is e for h, (e, _) in zip(handles, published, strict=True)]
        if not all(still):
            keep = np.flatnonzero(still)
            published = [published[i] for i in keep]
            copies, copy_norms = copies[keep], copy_norms[keep]
            if not published:
                return []
        # Clipped: int8 rounding can overshoot 1 slightly, and a forged snapshot's values must not
        # produce a similarity outside what a cosine can be.
        sims = np.clip((copies @ unit) / copy_norms, -1.0, 1.0)
        order = np.argsort(-sims, kind="stable")
        threshold = self.threshold - INT8_TOLERANCE
        return [
            Hit(e.response, float(sims[i]), d, e.id, e.metadata, e.namespace)
            for i in order
            if sims[i] >= threshold
            for e, d in (published[i],)
        ]

    def entry(self, id: int) -> Hit | None:
        """The live entry ``id`` as a Hit (similarity 1, distance 0), or None if it is gone."""
        h = id & _HANDLE_MASK if isinstance(id, int) and 0 <= id < 2**64 else None
        entries = self._entries
        entry = entries[h] if h is not None and h < len(entries) else None
        if entry is None or entry.id != id or id not in self._index:
            return None
        if self.ttl is not None:
            found = self._index.entry(id)
            if found is None or found[2] <= self._clock():
                return None
        return Hit(entry.response, 1.0, 0, entry.id, entry.metadata, entry.namespace)

    def touch(self, id: int) -> bool:
        """Marks an entry as just used (LRU and diverse move it to the front, LFU counts it, SIEVE marks
        it visited), so eviction takes it later. False if it is gone."""
        return isinstance(id, int) and 0 <= id < 2**64 and self._index.touch(id)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a snapshot to ``path`` atomically: a crash mid-save leaves the previous file intact.

        The file holds the codes, ids, namespaces, LRU order, remaining TTLs, rerank vectors, responses,
        metadata (JSON) and counters, each part checksummed; see `bsc.persistence`.

        Raises:
            TypeError: a metadata value that JSON cannot encode.
            OSError: the file cannot be written.

        Example:
            >>> cache.save("cache.bsc")  # doctest: +SKIP
        """
        from bsc.persistence import save

        save(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        dim: int | None = None,
        code_bits: int | None = None,
        seed: int | None = None,
        threshold: float | None = None,
        max_entries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        eviction: str | None = None,
    ) -> BinarySemanticCache:
        """Loads a snapshot written by `save`. Nothing in the file is executed (no pickle).

        Args:
            path: the snapshot file.
            dim, code_bits, seed: when given, must equal the saved ones.
            threshold, max_entries, eviction: new settings (default: the saved ones; files written
                before eviction policies existed load as "lru").
            clock: the new cache's clock; remaining TTLs carry over.

        Raises:
            bsc.CacheFormatError: the file is truncated, corrupted, foreign, or of another version.
            ValueError: dim, code_bits or seed differ from the file's.

        Example:
            >>> cache = BinarySemanticCache.load("cache.bsc", dim=384)  # doctest: +SKIP
        """
        from bsc.persistence import load

        return load(
            path,
            dim=dim,
            code_bits=code_bits,
            seed=seed,
            threshold=threshold,
            max_entries=max_entries,
            clock=clock,
            eviction=eviction,
        )

    # ---------------------------------------------------------------- introspection
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, id: object) -> bool:
        return isinstance(id, int) and 0 <= id < 2**64 and id in self._index

    def namespace_len(self, namespace: str) -> int:
        """Number of entries in ``namespace`` (0 for one that does not exist)."""
        return self._index.namespace_len(namespace)

    def namespaces(self) -> list[str]:
        """Names of the namespaces that hold entries."""
        return self._index.namespaces()

    def stats(self) -> CacheStats:
        """Hits, misses, hit rate, evictions, expirations, entries and bytes in use."""
        entries = len(self._index)
        index_bytes = self._index.bytes_in_use()
        index_allocated = self._index.bytes_allocated()
        vector_bytes = entries * self._vectors.shape[1]
        with self._stats_lock:
            hits, misses = self._hits, self._misses
            evictions, expirations = self._evictions, self._expirations
        lookups = hits + misses
        return CacheStats(
            hits=hits,
            misses=misses,
            hit_rate=hits / lookups if lookups else 0.0,
            evictions=evictions,
            expirations=expirations,
            entries=entries,
            namespaces=len(self._index.namespaces()),
            index_bytes=index_bytes,
            index_bytes_allocated=index_allocated,
            vector_bytes=vector_bytes,
            bytes_per_entry=(index_bytes + vector_bytes) / entries if entries else 0.0,
        )

    def __repr__(self) -> str:
        return (
            f"BinarySemanticCache(dim={self.dim}, code_bits={self.code_bits}, seed={self.seed}, "
            f"threshold={self.threshold}, max_entries={self.max_entries}, ttl={self.ttl}, "
            f"rerank={self.rerank}, eviction={self.eviction!r}, entries={len(self)})"
        )


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    try:
        namespace.encode()
    except UnicodeEncodeError:
        raise ValueError(f"namespace must be valid Unicode (no lone surrogates), got {namespace!r}") from None


def _frozen(meta: Mapping[str, Any] | None, index: int = 0) -> Mapping[str, Any] | None:
    """A deep, read-only copy of JSON-compatible metadata (what persistence can store), so neither the
    caller's later changes nor a reader's can alter the entry. Raises TypeError for anything else and
    ValueError for nesting deeper than `MAX_METADATA_DEPTH` (a snapshot could not be read back)."""
    if meta is None:
        return None
    if metadata_depth(meta) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata {index} is nested deeper than {MAX_METADATA_DEPTH} levels")
    try:
        copied = json.loads(json.dumps(meta, default=_plain))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metadata {index} must be JSON-compatible (str keys; str, number, bool, None, "
            f"list, dict values): {exc}"
        ) from None
    if not isinstance(copied, dict):
        raise TypeError(f"metadata {index} must be a mapping, got {type(meta).__name__}")
    return freeze(copied)


def metadata_depth(value: object) -> int:
    """Nesting depth of dicts and lists in ``value`` (0 for a scalar, 1 for a flat dict), found without
    recursion (so it works from a deep call stack) and stopping once past `MAX_METADATA_DEPTH`."""
    depth, level = 0, [value]
    while depth <= MAX_METADATA_DEPTH:
        containers = [v for v in level if isinstance(v, Mapping | list | tuple)]
        if not containers:
            break
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, Mapping) else v)]
    return depth


def _plain(value: object) -> object:
    # Already-frozen metadata (a read-only mapping) may be stored again, e.g. copied from a Hit.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-compatible")


class FrozenDict(dict[str, Any]):
    """A JSON object no reader can change: a real ``dict`` (``json.dumps`` takes it, it compares equal to
    the dict that was stored), whose mutating methods raise TypeError. ``dict(d)`` gives a mutable copy;
    copying or pickling gives plain dicts and lists."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("cached metadata is read-only; copy it with dict(...) to change it")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_thawed, (dict(self),))

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return _thawed(self)  # type: ignore[no-any-return]


class FrozenList(list[Any]):
    """A JSON array no reader can change (see `FrozenDict`)."""

    __slots__ = ()

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("cached metadata is read-only; copy it with list(...) to change it")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = append = extend = insert = _read_only  # type: ignore[assignment]
    pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return (_thawed, (list(self),))

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return _thawed(self)  # type: ignore[no-any-return]


def _thawed(value: Any) -> Any:
    """Plain, mutable dicts and lists again (for copies and pickles of frozen metadata)."""
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_thawed(v) for v in value]
    return value


def freeze(value: dict[str, Any]) -> Mapping[str, Any]:
    """The stored form of decoded JSON metadata: `FrozenDict` and `FrozenList` all the way down, built
    once when the entry is stored, so a lookup hands it out without copying.

    Raises:
        ValueError: ``value`` is nested deeper than `MAX_METADATA_DEPTH`.
    """
    return cast("Mapping[str, Any]", _freeze_value(value, 1))


def _freeze_value(value: dict[str, Any] | list[Any], depth: int) -> FrozenDict | FrozenList:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
    # Copied whole in C first; only nested containers are replaced (snapshots load millions of these).
    if isinstance(value, dict):
        mapping = FrozenDict(value)
        for key, item in value.items():
            if isinstance(item, dict | list):
                dict.__setitem__(mapping, key, _freeze_value(item, depth + 1))
        return mapping
    array = FrozenList(value)
    for i, item in enumerate(value):
        if isinstance(item, dict | list):
            list.__setitem__(array, i, _freeze_value(item, depth + 1))
    return array


def _quantize(unit: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
    """int8 copy of unit rows, scaled per row so the largest component is ±127. The scale cancels in
    the cosine, so none is stored."""
    peak = np.max(np.abs(unit), axis=1, keepdims=True)
    out: npt.NDArray[np.int8] = np.rint(unit / peak * 127.0).astype(np.int8)
    return out
