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
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc import _fork, persistence
from bsc._input import as_embeddings, as_float, as_int
from bsc._native import (
    BinaryEncoder,
    CacheFormatError,
    CacheReader,
    CacheWriter,
    GeneralPath,
    HammingIndex,
    Payloads,
)
from bsc.frozen import MAX_METADATA_DEPTH, FrozenDict, FrozenList, freeze, metadata_depth
from bsc.snapshot import EVICTION_POLICIES, CacheSnapshot
from bsc.thresholds import radius_for, shortlist_radius

# Re-exported: they were defined here before `bsc.frozen` and `bsc.snapshot` held them.
__all__ = [
    "DEFAULT_RERANK",
    "DEFAULT_THRESHOLD",
    "EVICTION_POLICIES",
    "MAX_METADATA_DEPTH",
    "BinarySemanticCache",
    "CacheStats",
    "EncodedRows",
    "FrozenDict",
    "FrozenList",
    "Hit",
    "checked_payloads",
    "freeze",
    "metadata_depth",
]

logger = logging.getLogger(__name__)

#: Default cosine threshold; chosen from benchmarks/quality.py (see README, "Choosing the defaults").
DEFAULT_THRESHOLD = 0.90
#: Default two-stage shortlist size (0 turns the exact-cosine rerank off).
DEFAULT_RERANK = 10

Response = str | bytes


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
    """

    response: Response
    similarity: float
    distance: int
    id: int
    metadata: Mapping[str, Any] | None
    namespace: str


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


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """What a cache stores for ``n`` embeddings besides their payloads, computed before anything is
    stored (`BinarySemanticCache.encode_rows`), for a store that writes them elsewhere first.

    Attributes:
        codes: ``(n, code_bits // 64)`` uint64 codes.
        vectors: ``(n, dim)`` int8 rerank copies of the unit embeddings (peak ±127).
        norms: ``(n,)`` float32 norms of those copies.
    """

    codes: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.int8]
    norms: npt.NDArray[np.float32]


#: Largest embedding dimension (the Rust encoder's limit: its projection stays within 512 MiB).
MAX_DIM = 1 << 16
#: Most entries a cache can hold (the Rust index numbers its slots in 24 bits).
MAX_ENTRIES = 0x00FF_FFFF
#: Largest rerank shortlist: beyond a few hundred candidates a shortlist only costs time.
MAX_RERANK = 4096
_SEARCH_RETRIES = 4
#: The int8 copy reproduces a cosine to ~1e-4 (identical vectors score ~0.99997), so the Rust rerank
#: (``INT8_TOLERANCE`` in rust/src/index.rs) lets a candidate meet its threshold within this much.
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
        self._index = HammingIndex(
            code_bits // 64, max_entries, ttl is not None, eviction, radius, row_dim=dim if rerank else 0
        )
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
        # Responses and metadata by entry id (kept by the id's slot, see bsc._native.Payloads). The Rust
        # index owns everything else about an entry (code, slot, LRU links, expiry, int8 row); an id is
        # never reused, so a reader that finds no payload for an id the index returned knows the entry
        # is being added or was just removed.
        self._payloads = Payloads()
        self._reader = self._new_reader()
        self._writer = CacheWriter(self._index, self._encoder, self._payloads)
        self._write_lock = threading.Lock()
        self._last_sweep = -math.inf
        _fork.track(self, _fork.BINARY_LEVEL)

    def _new_reader(self) -> CacheReader[Hit]:
        """The lookups over this index and these payloads, with everything but the query bound."""
        return CacheReader(
            self._index,
            self._encoder,
            self._payloads,
            Hit,
            shortlist=self._k,
            max_distance=self._radius,
            min_similarity=self.threshold,
            rerank=self.rerank > 0,
            clock=self._clock if self.ttl is not None else None,
        )

    def _hold_for_fork(self) -> None:
        # Lock order as everywhere else: writer, then the Rust index (see bsc._fork).
        self._write_lock.acquire()
        self._held_index = self._index
        self._held_index._hold_for_fork()

    def _release_after_fork(self) -> None:
        self._held_index._release_after_fork()
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
        # One Rust call (see CacheWriter) for what it takes as it is: after a model call everything here
        # is out of the CPU's caches, and each Python step around the insert costs microseconds.
        if metadata is None and self.ttl is None:
            try:
                with self._write_lock:
                    return self._writer.put(embedding, response, namespace, None, math.inf)
            except GeneralPath:
                pass  # checked below, with their messages; nothing was stored
        x = np.ascontiguousarray(self._embedding(embedding))
        _check_namespace(namespace)
        frozen = _checked_payload(0, response, metadata)
        expires = self._expiry()
        with self._write_lock:
            if self.ttl is not None:
                self._make_room_from_expired(1)
            return self._writer.put(x, response, namespace, frozen, expires)

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
        frozen = checked_payloads(namespace, responses, metadata, rows=len(x))
        expires = self._expiry()
        with self._write_lock:
            if self.ttl is not None:
                self._make_room_from_expired(len(x))
            # Encodes, quantises, stores and publishes in one call; an invalid row stores nothing.
            return self._writer.put_many(x, list(responses), namespace, frozen, expires)

    def _embedding(self, embedding: npt.ArrayLike) -> npt.NDArray[np.floating[Any]]:
        """One embedding as the Rust side reads it. A float32/float64 array of shape ``(dim,)`` goes as it
        is (Rust refuses NaN/inf and all-zero vectors, with the messages `as_embeddings` uses); anything
        else is converted and shape-checked first."""
        # Identity first: comparing dtypes by value runs NumPy code that, cold after a large scan, costs
        # microseconds; an array's dtype nearly always is the canonical object itself.
        if type(embedding) is np.ndarray and embedding.shape == (self.dim,):
            dtype = embedding.dtype
            if dtype is _FLOAT32 or dtype is _FLOAT64 or dtype in _FLOATS:
                return embedding
        return as_embeddings(embedding, self.dim, ndim=1)

    def _expiry(self) -> float:
        return self._clock() + self.ttl if self.ttl is not None else math.inf

    # ---------------------------------------------------------------- the seam for stores
    def encode_rows(self, embeddings: npt.ArrayLike) -> EncodedRows:
        """Codes and int8 rerank rows of ``embeddings`` (shape ``(n, dim)``), validated, without storing
        them: for a store that writes them elsewhere first and adds them with `insert_encoded`.

        Raises:
            TypeError / ValueError: as for `put_many`.
        """
        x = as_embeddings(embeddings, self.dim, ndim=2, what="embeddings")
        codes, vectors, norms = self._encoder.encode_rows(x)
        return EncodedRows(codes, vectors, norms)

    def insert_encoded(
        self,
        namespace: str,
        rows: EncodedRows,
        responses: Sequence[Response],
        metadata: Sequence[Mapping[str, Any] | None],
        *,
        expires: float = math.inf,
    ) -> list[int]:
        """Adds rows encoded by `encode_rows` (or decoded from a store) with their responses and
        metadata, expiring at ``expires`` on this cache's clock; returns their ids. Metadata is stored
        as given, so it must be read-only already (`freeze`, or what `checked_payloads` returns).

        Raises:
            ValueError: the rows do not fit this cache (code width, vector length, counts).
        """
        # Before the sweep for room, so that a refused call leaves the cache as it was.
        if not len(rows.codes) == len(responses) == len(metadata):
            raise ValueError(
                f"{len(rows.codes)} rows, {len(responses)} responses and {len(metadata)} metadata items: "
                "expected one of each per row"
            )
        with self._write_lock:
            if self.ttl is not None:
                self._make_room_from_expired(len(responses))
            return self._writer.insert_encoded(
                namespace, rows.codes, rows.vectors, expires, list(responses), list(metadata)
            )

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
        self._payloads.forget(gone)
        if gone:
            self._index.record_removals(0, len(gone))

    def delete(self, id: int) -> bool:
        """Removes an entry; False if it is already gone (deleted, evicted, expired, or a stale id)."""
        if not isinstance(id, int) or not 0 <= id < 2**64:
            return False
        with self._write_lock:
            if not self._index.remove(id):
                return False
            self._payloads.forget([id])
            return True

    def clear(self, namespace: str | None = None) -> None:
        """Removes every entry, or only those of one namespace."""
        if namespace is not None:
            _check_namespace(namespace)
        with self._write_lock:
            removed = self._index.clear(namespace)
            if namespace is None:
                self._payloads.clear()
            else:
                self._payloads.forget(removed)

    def purge_expired(self) -> int:
        """Deletes every expired entry now (lookups also drop the expired entries they meet)."""
        return self._purge(self._index.expired(self._clock()))

    def _purge(self, ids: list[int]) -> int:
        with self._write_lock:
            gone = [i for i in ids if self._index.remove(i)]
            self._payloads.forget(gone)
        self._index.record_removals(0, len(gone))
        return len(gone)

    # ---------------------------------------------------------------- reading
    def get(self, embedding: npt.ArrayLike, *, namespace: str = "default") -> Hit | None:
        """The best cached response for ``embedding`` in ``namespace``, or None on a miss.

        Raises:
            TypeError / ValueError: as for ``put``.
        """
        # One Rust call, for a float array of the right shape and a str namespace (see CacheReader): a
        # large scan evicts the CPU's caches, so every Python step here costs microseconds at 100k.
        try:
            return self._reader.get(embedding, namespace)
        except GeneralPath as general:
            self._purge(general.args[0])
        hits = self._lookup(embedding, namespace, 1, get=True)
        return hits[0] if hits else None

    def record_lookup(self, hit: bool) -> None:
        """Counts one lookup in `stats` as a hit or a miss: `get` does, and so does a layer above that
        decides hits itself from `search` (`SemanticCache`), so the counters cover every lookup. The
        counters are the index's atomics: counting takes no lock."""
        self._index.record_lookup(bool(hit))

    def search(self, embedding: npt.ArrayLike, *, namespace: str = "default", k: int = 5) -> list[Hit]:
        """Up to ``k`` entries whose similarity passes the threshold, best first. Does not count as a
        hit or a miss and does not refresh LRU order (``get`` does both)."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        return self._lookup(embedding, namespace, min(int(k), self.max_entries), get=False)

    def _lookup(self, embedding: npt.ArrayLike, namespace: str, k: int, *, get: bool) -> list[Hit]:
        """Up to ``k`` hits, best first, validating the input (`get`'s general path, and `search`). The
        whole lookup is one Rust call (encode, scan, rerank, threshold, the hits built from the
        payloads, and for a ``get`` the touch of the best and the hit/miss count); here only expired
        candidates are purged, and the lookup retried if they were all it found."""
        _check_namespace(namespace)
        x = self._embedding(embedding)
        for _ in range(_SEARCH_RETRIES):
            hits, expired = self._reader.lookup(x, namespace, k, get)
            if not expired:
                return hits
            self._purge(expired)
            if hits:
                return hits
        if get:  # the Rust call leaves a lookup that found only expired entries to be counted here
            self._index.record_lookup(False)
        return []

    def entry(self, id: int) -> Hit | None:
        """The live entry ``id`` as a Hit (similarity 1, distance 0), or None if it is gone."""
        payload = self._payloads.get(id) if isinstance(id, int) and 0 <= id < 2**64 else None
        found = self._index.entry(id) if payload is not None else None
        if payload is None or found is None:
            return None
        if self.ttl is not None and found[2] <= self._clock():
            return None
        response, metadata = payload
        return Hit(response, 1.0, 0, id, metadata, found[0])

    def touch(self, id: int) -> bool:
        """Marks an entry as just used (LRU and diverse move it to the front, LFU counts it, SIEVE marks
        it visited), so eviction takes it later. False if it is gone."""
        return isinstance(id, int) and 0 <= id < 2**64 and self._index.touch(id)

    # ---------------------------------------------------------------- snapshots and persistence
    def to_snapshot(self) -> CacheSnapshot:
        """The cache's whole state as one plain value (what `save` writes), consistent: writers wait
        for the few milliseconds it takes."""
        with self._write_lock:
            (names, counts, codes, ids, lru, expires, free), handles, vectors, norms = self._index.snapshot()
            responses, metadata = self._payloads.rows(ids.tolist())
            clock_at = self._clock()
            counters = self._index.counters()
        return CacheSnapshot(
            dim=self.dim,
            code_bits=self.code_bits,
            seed=self.seed,
            threshold=self.threshold,
            max_entries=self.max_entries,
            ttl=self.ttl,
            rerank=self.rerank,
            eviction=self.eviction,
            names=names,
            counts=counts,
            codes=codes,
            ids=ids,
            handles=handles,
            lru=lru,
            expires=expires,
            free=free,
            vectors=vectors,
            norms=norms,
            responses=responses,
            metadata=metadata,
            counters=counters,
            clock_at=clock_at,
        )

    @classmethod
    def from_snapshot(
        cls, snapshot: CacheSnapshot, *, clock: Callable[[], float] = time.monotonic
    ) -> BinarySemanticCache:
        """A cache holding exactly the snapshot's state (expiry times taken as they are, on ``clock``).
        The Rust index re-validates every invariant, and refuses rerank norms that are not their rows'.

        Raises:
            bsc.CacheFormatError: the arrays break an invariant of the index.
            TypeError / ValueError: the settings are invalid (as for the constructor).
        """
        s = snapshot
        cache = cls(
            s.dim,
            code_bits=s.code_bits,
            seed=s.seed,
            threshold=s.threshold,
            max_entries=s.max_entries,
            ttl=s.ttl,
            rerank=s.rerank,
            clock=clock,
            eviction=s.eviction,
        )
        index = HammingIndex.from_parts(
            s.code_bits // 64,
            s.max_entries,
            s.ttl is not None,
            s.names,
            s.counts,
            s.codes,
            s.ids,
            s.lru,
            s.expires,
            s.free,
            row_dim=s.dim if s.rerank else 0,
            rows=s.vectors if s.rerank else None,
            norms=s.norms if s.rerank else None,
        )
        if len(s.responses) != len(s.ids) or len(s.metadata) != len(s.ids):
            raise ValueError(f"a snapshot of {len(s.ids)} entries needs one response and metadata item each")
        index.set_eviction(cache.eviction, radius_for(cache.threshold, cache.code_bits))
        cache._index = index
        cache._payloads.publish(s.ids.tolist(), s.responses, s.metadata)
        cache._reader = cache._new_reader()
        cache._writer = CacheWriter(index, cache._encoder, cache._payloads)
        index.set_counters(s.counters)
        return cache

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
        persistence.write_snapshot(self.to_snapshot(), path)

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
        wall_clock: Callable[[], float] = time.time,
    ) -> BinarySemanticCache:
        """Loads a snapshot written by `save`. Nothing in the file is executed (no pickle).

        Args:
            path: the snapshot file.
            dim, code_bits, seed: when given, must equal the saved ones.
            threshold, max_entries, eviction: new settings (default: the saved ones; files written
                before eviction policies existed load as "lru").
            clock: the new cache's clock; remaining TTLs carry over.
            wall_clock: wall-clock time source, which ages entries by the time since the save (for tests).

        Raises:
            bsc.CacheFormatError: the file is truncated, corrupted, foreign, or of another version.
            ValueError: dim, code_bits or seed differ from the file's.

        Example:
            >>> cache = BinarySemanticCache.load("cache.bsc", dim=384)  # doctest: +SKIP
        """
        snapshot = persistence.read_snapshot(
            path,
            dim=dim,
            code_bits=code_bits,
            seed=seed,
            threshold=threshold,
            max_entries=max_entries,
            clock=clock,
            wall_clock=wall_clock,
            eviction=eviction,
        )
        try:
            return cls.from_snapshot(snapshot, clock=clock)
        except CacheFormatError as exc:
            raise CacheFormatError(f"{os.fspath(path)}: index: {exc}") from None
        except (ValueError, TypeError) as exc:
            if threshold is not None or max_entries is not None or eviction is not None:
                raise  # a setting the caller chose
            raise CacheFormatError(f"{os.fspath(path)}: header: invalid cache settings: {exc}") from exc

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
        vector_bytes = entries * self._index.row_dim
        hits, misses, evictions, expirations = self._index.counters()
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


_FLOAT32, _FLOAT64 = _FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def checked_payloads(
    namespace: object,
    responses: Sequence[object],
    metadata: Sequence[Mapping[str, Any] | None] | None,
    *,
    rows: int,
) -> list[Mapping[str, Any] | None]:
    """Checks what is stored beside ``rows`` embeddings (a str namespace; one str/bytes response and one
    JSON-compatible metadata item or None per row, ``metadata=None`` for none at all) and returns the
    metadata frozen (`freeze`), for `put` and for stores that write first.

    Raises:
        TypeError / ValueError: as for `BinarySemanticCache.put`; ValueError for counts that are not one
        per embedding.
    """
    if len(responses) != rows:
        raise ValueError(f"expected {rows} responses (one per embedding), got {len(responses)}")
    metas = list(metadata) if metadata is not None else [None] * rows
    if len(metas) != rows:
        raise ValueError(f"expected {rows} metadata items (one per embedding), got {len(metas)}")
    _check_namespace(namespace)
    for i, r in enumerate(responses):
        _check_response(i, r)
    for i, m in enumerate(metas):
        _check_metadata(i, m)
    return [_frozen(m, i) for i, m in enumerate(metas)]


def _checked_payload(
    i: int, response: object, metadata: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """`checked_payloads` for one row (a `put`, without building the lists): the frozen metadata."""
    _check_response(i, response)
    _check_metadata(i, metadata)
    return _frozen(metadata, i)


def _check_response(i: int, response: object) -> None:
    if not isinstance(response, str | bytes):
        raise TypeError(f"response {i} must be str or bytes, got {type(response).__name__}")


def _check_metadata(i: int, metadata: object) -> None:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata {i} must be a mapping or None, got {type(metadata).__name__}")


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


def _plain(value: object) -> object:
    # Already-frozen metadata (a read-only mapping) may be stored again, e.g. copied from a Hit.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-compatible")
