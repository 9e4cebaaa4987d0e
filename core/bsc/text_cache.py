"""`SemanticCache`: prompt text in, cached answer out.

Three layers, cheapest first: an exact-repeat table (a hash of the normalised text, no embedding), then
the embedding and the binary cache, then the false-hit guard and an optional verifier on each candidate.
Each prompt is checked once here, tokenised once (by the embedding, which also says whether the text was
too long to compare by meaning), and analysed for the guard once when it is stored (`bsc.text_entry`).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bsc import _fork
from bsc.cache import BinarySemanticCache, CacheStats, Hit, Response, _check_namespace
from bsc.embedders import Embedder, default_embedder
from bsc.guard import FalseHitGuard, PreparedPrompt, prepare
from bsc.text_entry import (
    TextHit,
    TextRecord,
    normalise_prompt,
    prompt_key,
    prompt_of,
    record_of,
    stored_metadata,
    user_metadata,
)

if TYPE_CHECKING:
    from bsc.store import RedisStore

__all__ = ["SemanticCache", "SemanticCacheStats", "TextHit", "Verifier", "normalise_prompt"]

logger = logging.getLogger(__name__)

#: A second opinion on a semantic candidate: ``verifier(query_text, hit) -> accept?``. ``hit.prompt``
#: holds the cached prompt. Use it for a cross-encoder or an LLM judge.
Verifier = Callable[[str, TextHit], bool]

_CANDIDATES = 5
# The exact-text tables may hold this many more keys than the cache has entries before stale ones
# (evicted, expired, deleted) are swept out; an entry's key is one dict slot, ~0.2 KB.
_EXACT_SLACK = 1024


@dataclass(frozen=True, slots=True)
class SemanticCacheStats:
    """Counters of a text-level cache (a snapshot).

    There is one set of lookup counters: the underlying `BinarySemanticCache`'s, which every lookup here
    updates. ``misses`` and ``hit_rate`` are those (``cache.misses``, ``cache.hit_rate``, so they include
    direct ``get`` calls on ``cache`` and survive a save and load); ``exact_hits`` and ``semantic_hits``
    split this process's text-level hits by how they were found. ``cache`` holds the underlying stats
    (sizes, evictions).
    """

    exact_hits: int
    semantic_hits: int
    misses: int
    hit_rate: float
    guard_rejections: int
    verifier_rejections: int
    embed_seconds: float
    search_seconds: float
    embedded_texts: int
    cache: CacheStats


def _embeddable(text: str) -> str:
    """``text`` as an embedder can take it: lone surrogates (not valid in UTF-8, which tokenizers
    require) become U+FFFD; any other text is returned as it is."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


class SemanticCache:
    """A semantic cache for prompt texts.

    Args:
        embedder: any `bsc.embedders.Embedder`; None uses the local all-MiniLM-L6-v2 (offline).
        guard: the false-hit guard for semantic hits: True for the default rules, False to disable,
            or a configured `bsc.guard.FalseHitGuard`.
        verifier: optional extra check on each semantic candidate (see `Verifier`).
        memo_size: how many recent text → embedding results to remember (a lookup that misses and the
            update that follows embed the text once).
        path: a snapshot file: loaded if it exists (its dim, code_bits, seed, ttl and rerank must match
            the embedder and the options given; threshold, max_entries and clock apply), and the default
            target of `save`.
        autosave: also save to ``path`` when the interpreter exits.
        redis_url: share this cache with every process that uses the same Redis (see `bsc.store`):
            Redis holds the entries, this process a replica it searches locally. Shorthand for
            ``store=RedisStore(redis_url)``.
        store: a configured `bsc.store.RedisStore` (cache name, ``fail_open``, ...) to share through.
        **cache_options: passed to `BinarySemanticCache` (threshold, code_bits, seed, max_entries, ttl,
            rerank, clock, eviction).

    Raises:
        bsc.CacheFormatError: ``path`` exists but is not a valid snapshot.
        ValueError: the snapshot's settings differ from the embedder's dim or the options given; both
            a path and a Redis store were given; the shared cache in Redis has other settings.
        bsc.store.StoreUnavailableError: Redis is unreachable and the store does not fail open.

    Example:
        >>> cache = SemanticCache()
        >>> _ = cache.update("What is the capital of France?", "Paris")
        >>> cache.lookup("Which city is the capital of France?").response
        'Paris'
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        guard: FalseHitGuard | bool = True,
        verifier: Verifier | None = None,
        memo_size: int = 1024,
        path: str | os.PathLike[str] | None = None,
        autosave: bool = False,
        redis_url: str | None = None,
        store: RedisStore | None = None,
        **cache_options: Any,
    ) -> None:
        self.embedder: Embedder = embedder if embedder is not None else default_embedder()
        if autosave and path is None:
            raise ValueError("autosave needs a path to save to")
        if redis_url is not None and store is not None:
            raise ValueError("give redis_url or store, not both")
        if (redis_url is not None or store is not None) and path is not None:
            raise ValueError("a shared cache lives in Redis: give a path or a Redis store, not both")
        self.path = None if path is None else os.fspath(path)
        if redis_url is not None or store is not None:
            from bsc.store import RedisStore

            shared = store if store is not None else RedisStore(redis_url)
            self.cache: BinarySemanticCache = shared.open(
                self.embedder.dim, model=self.embedder.name, **cache_options
            )
        elif self.path is not None and os.path.exists(self.path):
            self.cache = _load_cache(self.path, self.embedder.dim, cache_options)
        else:
            self.cache = BinarySemanticCache(self.embedder.dim, **cache_options)
        if guard is True:
            self.guard: FalseHitGuard | None = FalseHitGuard()
        elif guard is False:
            self.guard = None
        elif isinstance(guard, FalseHitGuard):
            self.guard = guard
        else:
            raise TypeError(f"guard must be True, False or a FalseHitGuard, got {type(guard).__name__}")
        self.verifier = verifier
        if not isinstance(memo_size, int) or isinstance(memo_size, bool):
            raise TypeError(f"memo_size must be an int, got {type(memo_size).__name__}")
        if memo_size < 0:
            raise ValueError(f"memo_size must be >= 0 (0 turns the memo off), got {memo_size}")
        # text -> (embedding, whether the text was longer than the embedder reads)
        self._memo: OrderedDict[str, tuple[npt.NDArray[np.float32], bool]] = OrderedDict()
        self._memo_size = memo_size
        # namespace -> digest of the normalised prompt -> entry id; `_exact_keys` counts the keys of all.
        self._exact: dict[str, dict[bytes, int]] = {}
        self._exact_keys = 0
        # entry id -> what the text layer knows of it (its key, exact-only flag, guard analysis).
        self._records: dict[int, TextRecord] = {}
        self._lock = threading.Lock()
        self._exact_hits = self._semantic_hits = 0
        self._guard_rejections = self._verifier_rejections = 0
        self._embed_seconds = self._search_seconds = 0.0
        self._embedded = 0
        subscribe = getattr(self.cache, "subscribe", None)
        if subscribe is not None:  # a shared cache: other processes' prompts join the exact table too
            subscribe(self._remember_exact)
        elif len(self.cache):
            self._exact, self._records = _text_tables(self.cache)
            self._exact_keys = sum(map(len, self._exact.values()))
        if autosave:
            atexit.register(_autosave, weakref.ref(self))
        _fork.track(self, _fork.TEXT_LEVEL)

    def _hold_for_fork(self) -> None:
        self._lock.acquire()

    def _release_after_fork(self) -> None:
        self._lock.release()

    # ---------------------------------------------------------------- embedding with a memo
    def _memo_get(
        self, texts: Sequence[str]
    ) -> tuple[list[tuple[npt.NDArray[np.float32], bool] | None], list[int]]:
        with self._lock:
            found: list[tuple[npt.NDArray[np.float32], bool] | None] = []
            for t in texts:
                v = self._memo.get(t)
                if v is not None:
                    self._memo.move_to_end(t)
                found.append(v)
        return found, [i for i, v in enumerate(found) if v is None]

    def _memo_put(
        self, texts: Sequence[str], vectors: npt.NDArray[np.float32], long: list[bool], seconds: float
    ) -> list[tuple[npt.NDArray[np.float32], bool]]:
        # Copies: a view would keep the embedder's whole batch array alive while any row is memoised.
        fresh = [(np.array(v, dtype=np.float32), bool(f)) for v, f in zip(vectors, long, strict=True)]
        with self._lock:
            self._embed_seconds += seconds
            self._embedded += len(texts)
            for t, item in zip(texts, fresh, strict=True):
                self._memo[t] = item
                self._memo.move_to_end(t)
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
        return fresh

    def _embed_fresh(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """Embeddings of ``texts`` and which of them overflow, from one tokenisation when the embedder
        can tell (`bsc.embedders.OverflowAwareEmbedder`); otherwise ``overflows()`` asks separately,
        and an embedder with neither truncates nothing the cache knows of."""
        with_overflow = getattr(self.embedder, "embed_with_overflow", None)
        if callable(with_overflow):
            vectors, long = with_overflow(texts)
            return vectors, list(long)
        return self.embedder.embed(texts), self._overflowing(texts)

    async def _aembed_fresh(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        with_overflow = getattr(self.embedder, "aembed_with_overflow", None)
        if callable(with_overflow):
            vectors, long = await with_overflow(texts)
            return vectors, list(long)
        return await self.embedder.aembed(texts), self._overflowing(texts)

    def _overflowing(self, texts: list[str]) -> list[bool]:
        """Which texts the embedder cannot read whole, for an embedder that says so only through an
        ``overflows`` method. Their tail never reaches the embedding: a RAG prompt whose context fills
        the window would look the same whatever question follows it, so such texts are matched
        exactly only."""
        check = getattr(self.embedder, "overflows", None)
        return list(check(texts)) if callable(check) else [False] * len(texts)

    def _embed(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """The embeddings of ``texts`` (checked str) and which texts overflow, through the memo."""
        found, missing = self._memo_get(texts)
        if missing:
            todo = [texts[i] for i in missing]
            start = time.perf_counter()
            vectors, long = self._embed_fresh([_embeddable(t) for t in todo])
            fresh = self._memo_put(todo, vectors, long, time.perf_counter() - start)
            for i, item in zip(missing, fresh, strict=True):
                found[i] = item
        return _stacked(found)

    async def _aembed(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        found, missing = self._memo_get(texts)
        if missing:
            todo = [texts[i] for i in missing]
            start = time.perf_counter()
            vectors, long = await self._aembed_fresh([_embeddable(t) for t in todo])
            fresh = self._memo_put(todo, vectors, long, time.perf_counter() - start)
            for i, item in zip(missing, fresh, strict=True):
                found[i] = item
        return _stacked(found)

    # ---------------------------------------------------------------- lookups
    def lookup(self, text: str, *, namespace: str = "default") -> TextHit | None:
        """The cached answer for ``text`` (or a paraphrase of it) in ``namespace``, or None.

        Raises:
            TypeError: ``text`` or ``namespace`` is not a str.
            ValueError: ``namespace`` is not valid Unicode.
        """
        _check_text(text, 0)
        _check_prompt_namespace(namespace)
        exact = self._exact_hit(text, namespace)
        if exact is not None:
            return exact
        if not self.cache.namespace_len(namespace):
            self._miss()  # nothing to compare with: don't embed
            return None
        vectors, long = self._embed([text])
        return self._semantic_or_miss(text, vectors[0], long[0], namespace)

    async def alookup(self, text: str, *, namespace: str = "default") -> TextHit | None:
        """`lookup` that awaits the embedder instead of blocking the event loop."""
        _check_text(text, 0)
        _check_prompt_namespace(namespace)
        exact = self._exact_hit(text, namespace)
        if exact is not None:
            return exact
        if not self.cache.namespace_len(namespace):
            self._miss()
            return None
        vectors, long = await self._aembed([text])
        return self._semantic_or_miss(text, vectors[0], long[0], namespace)

    def lookup_many(self, texts: Sequence[str], *, namespace: str = "default") -> list[TextHit | None]:
        """`lookup` for many texts, embedding all the non-exact ones in one batch."""
        for i, t in enumerate(texts):
            _check_text(t, i)
        _check_prompt_namespace(namespace)
        out: list[TextHit | None] = [self._exact_hit(t, namespace) for t in texts]
        todo = [i for i, h in enumerate(out) if h is None]
        if todo:
            vectors, long = self._embed([texts[i] for i in todo])
            for i, v, too_long in zip(todo, vectors, long, strict=True):
                out[i] = self._semantic_or_miss(texts[i], v, too_long, namespace)
        return out

    def _semantic_or_miss(
        self, text: str, vector: npt.NDArray[np.float32], too_long: bool, namespace: str
    ) -> TextHit | None:
        if too_long:  # its tail never reached the embedding: matched exactly only (see `_overflowing`)
            self._miss()
            return None
        return self._semantic_hit(text, vector, namespace)

    def _miss(self) -> None:
        """Counts a lookup answered without a search (an empty namespace, a text too long)."""
        self.cache.record_lookup(False)

    def _record(self, hit: Hit) -> TextRecord:
        """The text layer's record of a live entry; built from its stored metadata if this process has
        none yet (an entry put straight into the vector cache)."""
        record = self._records.get(hit.id)
        if record is None:
            record = record_of(hit.metadata)
            with self._lock:  # a sweep iterates the records under the lock
                record = self._records.setdefault(hit.id, record)
        return record

    def _exact_hit(self, text: str, namespace: str) -> TextHit | None:
        table = self._exact.get(namespace)
        if not table:
            return None
        key = prompt_key(text)
        entry_id = table.get(key)
        if entry_id is None:
            return None
        record = self._records.get(entry_id)
        hit = None if record is None else record.exact_hit
        if hit is None or hit.namespace != namespace or not self._live(entry_id):
            hit = self._first_exact_hit(entry_id, key, namespace)
            if hit is None:
                return None
        self.cache.touch(entry_id)
        with self._lock:
            self._exact_hits += 1
        self.cache.record_lookup(True)
        return hit

    def _live(self, entry_id: int) -> bool:
        # Without a TTL an entry lives while the index holds it; with one, `entry` also checks the clock.
        return entry_id in self.cache if self.cache.ttl is None else self.cache.entry(entry_id) is not None

    def _first_exact_hit(self, entry_id: int, key: bytes, namespace: str) -> TextHit | None:
        """The exact hit on ``entry_id``, kept in its record for the next repeats; None (and the key
        dropped) if the id is stale: evicted, expired or deleted. Ids carry a 40-bit generation, so a
        stale one names no later entry, and the key check makes sure the hit is this very prompt."""
        entry = self.cache.entry(entry_id)
        record = None if entry is None else self._record(entry)
        if entry is None or record is None or entry.namespace != namespace or record.key != key:
            table = self._exact.get(namespace, {})
            with self._lock:
                if table.get(key) == entry_id:
                    del table[key]
                    self._exact_keys -= 1
            return None
        hit = record.exact_hit = _text_hit(entry, exact=True)
        return hit

    def _semantic_hit(self, text: str, vector: npt.NDArray[np.float32], namespace: str) -> TextHit | None:
        start = time.perf_counter()
        candidates = self.cache.search(vector, namespace=namespace, k=_CANDIDATES)
        elapsed = time.perf_counter() - start
        guard_rejections = verifier_rejections = 0
        chosen: TextHit | None = None
        query: PreparedPrompt | None = None  # analysed once, for all the candidates, if any need it
        for candidate in candidates:
            record = self._record(candidate)
            if record.exact_only:
                continue  # stored from a prompt too long to compare by meaning
            hit = _text_hit(candidate, exact=False)
            if self.guard is not None and hit.prompt is not None:
                if query is None:
                    query = prepare(text)
                rule = self.guard.check_prepared(query, record.prepared(hit.prompt))
                if rule is not None:
                    logger.debug("guard rule %r refused %r for %r", rule, hit.prompt, text)
                    guard_rejections += 1
                    continue
            if self.verifier is not None and not self.verifier(text, hit):
                verifier_rejections += 1
                continue
            chosen = hit
            break
        if chosen is not None:
            self.cache.touch(chosen.id)
        with self._lock:
            self._search_seconds += elapsed
            self._guard_rejections += guard_rejections
            self._verifier_rejections += verifier_rejections
            if chosen is not None:
                self._semantic_hits += 1
        self.cache.record_lookup(chosen is not None)
        return chosen

    # ---------------------------------------------------------------- updates
    def update(
        self,
        text: str,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Caches ``response`` for ``text``; an earlier answer to the identical text is replaced.

        Raises:
            TypeError: ``text`` or ``namespace`` is not a str, ``response`` not str/bytes, or metadata
                that JSON cannot encode.
            ValueError: ``namespace`` is not valid Unicode, or metadata nested too deep.
        """
        _check_text(text, 0)
        _check_prompt_namespace(namespace)
        vectors, long = self._embed([text])
        return self._store([text], vectors, long, [response], namespace, [metadata])[0]

    async def aupdate(
        self,
        text: str,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """`update` that awaits the embedder instead of blocking the event loop (and, for a cache shared
        through Redis, runs the write's round trip in a worker thread)."""
        _check_text(text, 0)
        _check_prompt_namespace(namespace)
        vectors, long = await self._aembed([text])
        args = ([text], vectors, long, [response], namespace, [metadata])
        if getattr(self.cache, "store", None) is not None:
            return (await asyncio.to_thread(self._store, *args))[0]
        return self._store(*args)[0]

    def update_many(
        self,
        texts: Sequence[str],
        responses: Sequence[Response],
        *,
        namespace: str = "default",
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[int]:
        """`update` for many texts, embedded in one batch."""
        for i, t in enumerate(texts):
            _check_text(t, i)
        _check_prompt_namespace(namespace)
        if len(responses) != len(texts):
            raise ValueError(f"expected {len(texts)} responses (one per text), got {len(responses)}")
        metas: list[Mapping[str, Any] | None] = (
            list(metadata) if metadata is not None else [None] * len(texts)
        )
        if not texts:
            return []
        vectors, long = self._embed(texts)
        return self._store(list(texts), vectors, long, list(responses), namespace, metas)

    def _store(
        self,
        texts: list[str],
        vectors: npt.NDArray[np.float32],
        too_long: list[bool],
        responses: list[Response],
        namespace: str,
        metas: list[Mapping[str, Any] | None],
    ) -> list[int]:
        stored = [
            stored_metadata(t, m, exact_only=long) for t, m, long in zip(texts, metas, too_long, strict=True)
        ]
        keys = [prompt_key(t) for t in texts]
        records = [TextRecord(k, long) for k, long in zip(keys, too_long, strict=True)]
        if self.guard is not None:  # analysed for the guard now, once, not at every lookup finding it
            for record, text in zip(records, texts, strict=True):
                if not record.exact_only:
                    record.prepared(text)
        with self._lock:  # read before the put: a shared cache's listener records the new ids at once
            table = self._exact.setdefault(namespace, {})
            before = {k: table.get(k) for k in keys}
        ids = self.cache.put_many(vectors, responses, namespace=namespace, metadata=stored)
        replaced = []
        with self._lock:
            table = self._exact.setdefault(namespace, {})
            self._records.update(zip(ids, records, strict=True))
            for key, new_id in zip(keys, ids, strict=True):
                old = before[key]
                if key not in table:
                    self._exact_keys += 1
                before[key] = table[key] = new_id
                if old is not None and old != new_id:
                    replaced.append(old)
            # Evicted entries leave stale ids behind, possibly in namespaces no longer written to (one
            # per conversation, say); sweep every table once they could outnumber the live entries, so
            # the tables stay within twice the live entries plus a constant (amortised O(1) per key).
            limit = 2 * len(self.cache) + _EXACT_SLACK
            if self._exact_keys > limit or len(self._records) > limit:
                self._sweep_exact()
        for old in replaced:  # outside the lock: a shared cache's delete applies changes (and listeners)
            self.cache.delete(old)
        return ids

    def _sweep_exact(self) -> None:
        """Drops the keys and records of entries that are gone, and the tables left empty (caller holds
        the lock)."""
        swept = {ns: {k: v for k, v in t.items() if v in self.cache} for ns, t in self._exact.items()}
        self._exact = {ns: t for ns, t in swept.items() if t}
        self._exact_keys = sum(map(len, self._exact.values()))
        self._records = {i: r for i, r in self._records.items() if i in self.cache}

    def _remember_exact(
        self, namespace: str, ids: list[int], metadata: list[Mapping[str, Any] | None]
    ) -> None:
        """Adds entries a shared cache's replica received (from any process) to the text tables (their
        guard analysis waits for their first lookup: most entries of a busy store are never candidates
        here)."""
        records = [record_of(meta) for meta in metadata]
        with self._lock:
            table = self._exact.setdefault(namespace, {})
            for entry_id, record in zip(ids, records, strict=True):
                self._records.setdefault(entry_id, record)
                if record.key is not None:
                    if record.key not in table:
                        self._exact_keys += 1
                    table[record.key] = entry_id

    # ---------------------------------------------------------------- the rest
    def clear(self, namespace: str | None = None) -> None:
        """Removes every entry, or only one namespace's."""
        self.cache.clear(namespace)
        with self._lock:
            if namespace is None:
                self._exact = {}
                self._records = {}
            else:  # the namespace's records go with the next sweep
                self._exact.pop(namespace, None)
            self._exact_keys = sum(map(len, self._exact.values()))

    def __len__(self) -> int:
        return len(self.cache)

    def stats(self) -> SemanticCacheStats:
        """Exact and semantic hits, misses, guard/verifier rejections, time embedding vs searching."""
        cache = self.cache.stats()
        with self._lock:
            return SemanticCacheStats(
                exact_hits=self._exact_hits,
                semantic_hits=self._semantic_hits,
                misses=cache.misses,
                hit_rate=cache.hit_rate,
                guard_rejections=self._guard_rejections,
                verifier_rejections=self._verifier_rejections,
                embed_seconds=self._embed_seconds,
                search_seconds=self._search_seconds,
                embedded_texts=self._embedded,
                cache=cache,
            )

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Writes a snapshot atomically to ``path``, or to the ``path`` given at construction. The memo
        and the text-level counters are not saved; the exact-text table is rebuilt on load.

        Raises:
            ValueError: no path given here or at construction.
            TypeError: a metadata value that JSON cannot encode.
            OSError: the file cannot be written.

        Example:
            >>> cache.save("cache.bsc")  # doctest: +SKIP
        """
        target = path if path is not None else self.path
        if target is None:
            raise ValueError("no path to save to: pass one here or to SemanticCache(path=...)")
        self.cache.save(target)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embedder: Embedder | None = None, **options: Any
    ) -> SemanticCache:
        """A text cache over the snapshot at ``path`` (which must exist); ``options`` as for the constructor.

        Raises:
            FileNotFoundError: there is no file at ``path``.
            bsc.CacheFormatError: the file is not a valid snapshot.
            ValueError: the snapshot's dim/code_bits/seed/ttl/rerank differ from the embedder or options.

        Example:
            >>> cache = SemanticCache.load("cache.bsc")  # doctest: +SKIP
        """
        if not os.path.exists(path):
            raise FileNotFoundError(f"no cache file at {os.fspath(path)!r}")
        return cls(embedder, path=path, **options)

    def __repr__(self) -> str:
        return f"SemanticCache(embedder={self.embedder.name!r}, cache={self.cache!r})"


def _load_cache(path: str, dim: int, options: dict[str, Any]) -> BinarySemanticCache:
    known = {"code_bits", "seed", "threshold", "max_entries", "clock", "ttl", "rerank", "eviction"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"unexpected cache options: {sorted(unknown)}")
    loaded = {k: v for k, v in options.items() if k not in ("ttl", "rerank")}
    cache = BinarySemanticCache.load(path, dim=dim, **loaded)
    for name in ("ttl", "rerank"):
        if name in options and options[name] != getattr(cache, name):
            raise ValueError(
                f"the cache file was saved with {name}={getattr(cache, name)}, "
                f"but {name}={options[name]} was given"
            )
    return cache


def _text_tables(cache: BinarySemanticCache) -> tuple[dict[str, dict[bytes, int]], dict[int, TextRecord]]:
    """The exact-text table and the records rebuilt from the prompts stored in the entries' metadata;
    least recently used first, so where two entries share a prompt the most recently used one wins. The
    guard's analysis of each prompt is left to its first lookup (a load should not analyse every prompt)."""
    table: dict[str, dict[bytes, int]] = {}
    records: dict[int, TextRecord] = {}
    for entry_id in cache._index.lru_order():
        hit = cache.entry(entry_id)
        if hit is None:
            continue
        record = records[entry_id] = record_of(hit.metadata)
        if record.key is not None:
            table.setdefault(hit.namespace, {})[record.key] = entry_id
    return table, records


def _text_hit(hit: Hit, *, exact: bool) -> TextHit:
    """The text-level hit of a vector-level one: the stored metadata unpacked into the prompt and the
    user's own metadata (already a read-only copy, see `bsc.cache.freeze`)."""
    stored = hit.metadata
    return TextHit(
        hit.response,
        hit.similarity,
        hit.distance,
        hit.id,
        user_metadata(stored),
        hit.namespace,
        prompt_of(stored),
        exact,
    )


def _stacked(
    found: list[tuple[npt.NDArray[np.float32], bool] | None],
) -> tuple[npt.NDArray[np.float32], list[bool]]:
    items = [item for item in found if item is not None]
    if len(items) == 1:
        # One text (every lookup): a view, not `np.stack`, whose Python-level work costs ~20 µs when a
        # large scan has just pushed the interpreter's data out of the caches (bench_text at 100k).
        # The memo's arrays are private and nothing downstream writes to them.
        vector, long = items[0]
        return vector[np.newaxis], [long]
    return np.stack([v for v, _ in items]), [long for _, long in items]


def _autosave(ref: weakref.ReferenceType[SemanticCache]) -> None:
    cache = ref()
    if cache is None:
        return
    try:
        cache.save()
    except Exception:  # at exit there is no caller left to raise to
        logger.exception("autosave of the semantic cache to %s failed", cache.path)


def _check_prompt_namespace(namespace: object) -> None:
    """The vector layer's namespace check, with the common case (a plain ASCII str) decided here: an
    exact hit never reaches the vector layer's own check."""
    if type(namespace) is not str or not namespace.isascii():
        _check_namespace(namespace)


def _check_text(text: object, index: int) -> None:
    if not isinstance(text, str):
        raise TypeError(f"prompt {index} must be a str, got {type(text).__name__}")
