"""`CacheSnapshot`: the whole state of a `BinarySemanticCache` as one plain value.

`BinarySemanticCache.to_snapshot` takes it (one consistent state, under the cache's write lock) and
`BinarySemanticCache.from_snapshot` builds a cache from it; `bsc.persistence` writes it to a file and
reads it back without knowing anything else about the cache. Arrays come from and go to the Rust index,
which owns the entry layout: per row (an entry) the code, id, handle, LRU position and expiry; per
handle (slot, live or free) the int8 rerank row and its norm.

Example:
    >>> import numpy as np
    >>> from bsc import BinarySemanticCache
    >>> cache = BinarySemanticCache(dim=4)
    >>> _ = cache.put(np.array([1.0, 0.2, 0.0, 0.1]), "cached answer")
    >>> snap = cache.to_snapshot()
    >>> snap.responses, len(snap.ids)
    (['cached answer'], 1)
    >>> BinarySemanticCache.from_snapshot(snap).get(np.array([1.0, 0.21, 0.0, 0.1])).response
    'cached answer'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EVICTION_POLICIES", "CacheSnapshot"]

Response = str | bytes

#: The eviction policies `BinarySemanticCache(eviction=...)` accepts (see ``rust/src/eviction.rs`` and the
#: README, "Workloads and eviction"); LRU is the default. A snapshot file stores a policy by its position
#: here.
EVICTION_POLICIES = ("lru", "lfu", "sieve", "diverse")


@dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """Settings, entries and counters of a cache, as arrays and lists.

    Rows are the entries in namespace order (``counts[i]`` rows for ``names[i]``), each namespace's rows
    in scan order. ``handles`` holds more slots than rows when some are free; ``free`` lists those as
    ``handle | next_generation << 24`` ids in reuse order.

    Attributes:
        dim, code_bits, seed, threshold, max_entries, ttl, rerank, eviction: the cache's settings.
        names, counts: namespace names and their row counts.
        codes: ``rows * code_bits // 64`` uint64 words.
        ids: the id of each row.
        handles: the slot (handle) of each row, where its per-handle data is.
        lru: rows from least to most recently used.
        expires: absolute expiry per row on the clock of ``clock_at`` (empty without a ttl).
        free: free handles, as ids carrying their next generation.
        vectors: ``(slots, dim)`` int8 rerank rows by handle (``(0, 0)`` when ``rerank`` is 0).
        norms: their norms by handle (empty when ``rerank`` is 0).
        responses, metadata: per row.
        counters: hits, misses, evictions, expirations.
        clock_at: the cache's clock when the snapshot was taken.
    """

    dim: int
    code_bits: int
    seed: int
    threshold: float
    max_entries: int
    ttl: float | None
    rerank: int
    eviction: str
    names: list[str]
    counts: npt.NDArray[np.uint32]
    codes: npt.NDArray[np.uint64]
    ids: npt.NDArray[np.uint64]
    handles: npt.NDArray[np.uint32]
    lru: npt.NDArray[np.uint32]
    expires: npt.NDArray[np.float64]
    free: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.int8]
    norms: npt.NDArray[np.float32]
    responses: list[Response]
    metadata: list[Mapping[str, Any] | None]
    counters: tuple[int, int, int, int]
    clock_at: float

    @property
    def slots(self) -> int:
        """Handles in use or free: the length of every per-handle array."""
        return len(self.ids) + len(self.free)
