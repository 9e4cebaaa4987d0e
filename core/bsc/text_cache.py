"""`SemanticCache`: prompt text in, cached answer out.

Three layers, cheapest first: an exact-repeat table (a hash of the normalised text, no embedding), then
the embedding and the binary cache, then the false-hit guard and an optional verifier on each candidate.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
import unicodedata
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc import _fork
from bsc.cache import BinarySemanticCache, CacheStats, Hit, Response
from bsc.embedders import Embedder, default_embedder
from bsc.guard import FalseHitGuard

__all__ = ["SemanticCache", "SemanticCacheStats", "Verifier"]

logger = logging.getLogger(__name__)

#: A second opinion on a semantic candidate: ``verifier(query_text, hit) -> accept?``. ``hit.prompt``
#: holds the cached prompt. Use it for a cross-encoder or an LLM judge.
Verifier = Callable[[str, Hit], bool]

_CANDIDATES = 5
# The exact-text tables may hold this many more keys than the cache has entries before stale ones
# (evicted, expired, deleted) are swept out; an entry's key is one dict slot, ~0.2 KB.
_EXACT_SLACK = 1024


@dataclass(frozen=True, slots=True)
class SemanticCacheStats:
    """Counters of a text-level cache (a snapshot).

    The hit/miss counters here are the text-level ones. ``cache`` holds the underlying
    `BinarySemanticCache`'s stats for its sizes and evictions; its own ``hits``/``misses`` count only
    direct ``get`` calls, which the text-level cache does not make (it searches, then applies the guard).
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


def normalise_prompt(text: str) -> str:
    """The form used for exact matching: Unicode NFC, line endings unified, trailing spaces of each line
    and blank lines before and after the text dropped. Everything else is kept: case, line breaks,
    indentation and runs of spaces inside a line (code, tables and ASCII art turn on them; prompts that
    differ there go through the semantic path and its guard), and compatibility characters (NFKC would
    make "2³" read "23")."""
    lines = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip(" \t") for line in lines).strip("\n")


def _exact_key(text: str) -> bytes:
    # surrogatepass: a lone surrogate (what `json.loads('"\\ud800"')` gives a web app) is hashed like
    # any other character instead of raising, the same way on every path (update, lookup, reload).
    return hashlib.blake2b(normalise_prompt(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


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
        **cache_options: passed to `BinarySemanticCache` (threshold, code_bits, seed, max_entries, ttl,
            rerank, clock, eviction).

    Raises:
        bsc.CacheFormatError: ``path`` exists but is not a valid snapshot.
        ValueError: the snapshot's settings differ from the embedder's dim or the options given.

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
        **cache_options: Any,
    ) -> None:
        self.embedder: Embedder = embedder if embedder is not None else default_embedder()
        if autosave and path is None:
            raise ValueError("autosave needs a path to save to")
        self.path = None if path is None else os.fspath(path)
        if self.path is not None and os.path.exists(self.path):
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
        self._memo: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._memo_size = memo_size
        # namespace -> digest of the normalised prompt -> entry id; `_exact_keys` counts the keys of all.
        self._exact: dict[str, dict[bytes, int]] = {}
        self._exact_keys = 0
        self._lock = threading.Lock()
        self._exact_hits = self._semantic_hits = self._misses = 0
        self._guard_rejections = self._verifier_rejections = 0
        self._embed_seconds = self._search_seconds = 0.0
        self._embedded = 0
        if len(self.cache):
            self._exact = _exact_table(self.cache)
            self._exact_keys = sum(map(len, self._exact.values()))
        if autosave:
            atexit.register(_autosave, weakref.ref(self))
        _fork.track(self, _fork.TEXT_LEVEL)

    def _hold_for_fork(self) -> None:
        self._lock.acquire()

    def _release_after_fork(self) -> None:
        self._lock.release()

    # ---------------------------------------------------------------- embedding with a memo
    def _memo_get(self, texts: Sequence[str]) -> tuple[list[npt.NDArray[np.float32] | None], list[int]]:
        with self._lock:
            found: list[npt.NDArray[np.float32] | None] = []
            for t in texts:
                v = self._memo.get(t)
                if v is not None:
                    self._memo.move_to_end(t)
                found.append(v)
        return found, [i for i, v in enumerate(found) if v is None]

    def _memo_put(self, texts: Sequence[str], vectors: npt.NDArray[np.float32], seconds: float) -> None:
        with self._lock:
            self._embed_seconds += seconds
            self._embedded += len(texts)
            for t, v in zip(texts, vectors, strict=True):
                # A copy: a view would keep the embedder's whole batch array alive while any row is memoised.
                self._memo[t] = np.array(v, dtype=np.float32)
                self._memo.move_to_end(t)
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)

    def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        found, missing = self._memo_get(texts)
        if missing:
            todo = [texts[i] for i in missing]
            start = time.perf_counter()
            fresh = self.embedder.embed([_embeddable(t) for t in todo])
            self._memo_put(todo, fresh, time.perf_counter() - start)
            for i, v in zip(missing, fresh, strict=True):
                found[i] = v
        return np.stack([v for v in found if v is not None])

    async def _aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        found, missing = self._memo_get(texts)
        if missing:
            todo = [texts[i] for i in missing]
            start = time.perf_counter()
            fresh = await self.embedder.aembed([_embeddable(t) for t in todo])
            self._memo_put(todo, fresh, time.perf_counter() - start)
            for i, v in zip(missing, fresh, strict=True):
                found[i] = v
        return np.stack([v for v in found if v is not None])

    # ---------------------------------------------------------------- lookups
    def lookup(self, text: str, *, namespace: str = "default") -> Hit | None:
        """The cached answer for ``text`` (or a paraphrase of it) in ``namespace``, or None."""
        _check_text(text, 0)
        exact = self._exact_hit(text, namespace)
        if exact is not None:
            return exact
        if not self.cache.namespace_len(namespace) or self._overflowing([text])[0]:
            self._miss()  # nothing to compare with, or too long to compare by meaning: don't embed
            return None
        return self._semantic_hit(text, self._embed([text])[0], namespace)

    async def alookup(self, text: str, *, namespace: str = "default") -> Hit | None:
        """`lookup` that awaits the embedder instead of blocking the event loop."""
        _check_text(text, 0)
        exact = self._exact_hit(text, namespace)
        if exact is not None:
            return exact
        if not self.cache.namespace_len(namespace) or self._overflowing([text])[0]:
            self._miss()
            return None
        return self._semantic_hit(text, (await self._aembed([text]))[0], namespace)

    def lookup_many(self, texts: Sequence[str], *, namespace: str = "default") -> list[Hit | None]:
        """`lookup` for many texts, embedding all the non-exact ones in one batch."""
        for i, t in enumerate(texts):
            _check_text(t, i)
        out: list[Hit | None] = [self._exact_hit(t, namespace) for t in texts]
        todo = [i for i, h in enumerate(out) if h is None]
        too_long = self._overflowing([texts[i] for i in todo]) if todo else []
        for _ in range(sum(too_long)):
            self._miss()
        todo = [i for i, long in zip(todo, too_long, strict=True) if not long]
        if todo:
            vectors = self._embed([texts[i] for i in todo])
            for i, v in zip(todo, vectors, strict=True):
                out[i] = self._semantic_hit(texts[i], v, namespace)
        return out

    def _overflowing(self, texts: list[str]) -> list[bool]:
        """Which texts the embedder cannot read whole (an embedder may say so with an ``overflows``
        method; the local ones do). Their tail never reaches the embedding: a RAG prompt whose context
        fills the window would look the same whatever question follows it, so such texts are matched
        exactly only."""
        check = getattr(self.embedder, "overflows", None)
        return list(check([_embeddable(t) for t in texts])) if callable(check) else [False] * len(texts)

    def _miss(self) -> None:
        """Counts a lookup answered without a search (an empty namespace)."""
        with self._lock:
            self._misses += 1

    def _exact_hit(self, text: str, namespace: str) -> Hit | None:
        table = self._exact.get(namespace)
        if not table:
            return None
        key = _exact_key(text)
        entry_id = table.get(key)
        if entry_id is None:
            return None
        entry = self.cache.entry(entry_id)
        stored = None if entry is None or entry.metadata is None else entry.metadata.get("prompt")
        # The id may be stale (evicted, expired, deleted) or, after 256 reuses of its slot, name a later
        # entry: only an entry stored for this very prompt answers it.
        if (
            entry is None
            or entry.namespace != namespace
            or not isinstance(stored, str)
            or _exact_key(stored) != key
        ):
            with self._lock:
                if table.get(key) == entry_id:
                    del table[key]
                    self._exact_keys -= 1
            return None
        self.cache.touch(entry_id)
        with self._lock:
            self._exact_hits += 1
        return self._text_hit(entry, exact=True)

    def _semantic_hit(self, text: str, vector: npt.NDArray[np.float32], namespace: str) -> Hit | None:
        start = time.perf_counter()
        candidates = self.cache.search(vector, namespace=namespace, k=_CANDIDATES)
        elapsed = time.perf_counter() - start
        guard_rejections = verifier_rejections = 0
        chosen: Hit | None = None
        for candidate in candidates:
            if (candidate.metadata or {}).get("exact_only"):
                continue  # stored from a prompt too long to compare by meaning
            hit = self._text_hit(candidate, exact=False)
            if self.guard is not None and hit.prompt is not None:
                rule = self.guard.check(text, hit.prompt)
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
            if chosen is None:
                self._misses += 1
            else:
                self._semantic_hits += 1
        return chosen

    @staticmethod
    def _text_hit(hit: Hit, *, exact: bool) -> Hit:
        stored = hit.metadata or {}
        user = stored.get("metadata")
        return replace(
            hit,
            metadata=user,  # already a read-only copy (see `bsc.cache.freeze`)
            prompt=stored.get("prompt"),
            exact=exact,
        )

    # ---------------------------------------------------------------- updates
    def update(
        self,
        text: str,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Caches ``response`` for ``text``; an earlier answer to the identical text is replaced."""
        _check_text(text, 0)
        return self._store([text], self._embed([text]), [response], namespace, [metadata])[0]

    async def aupdate(
        self,
        text: str,
        response: Response,
        *,
        namespace: str = "default",
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """`update` that awaits the embedder instead of blocking the event loop."""
        _check_text(text, 0)
        return self._store([text], await self._aembed([text]), [response], namespace, [metadata])[0]

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
        if len(responses) != len(texts):
            raise ValueError(f"expected {len(texts)} responses (one per text), got {len(responses)}")
        metas: list[Mapping[str, Any] | None] = (
            list(metadata) if metadata is not None else [None] * len(texts)
        )
        if not texts:
            return []
        return self._store(list(texts), self._embed(texts), list(responses), namespace, metas)

    def _store(
        self,
        texts: list[str],
        vectors: npt.NDArray[np.float32],
        responses: list[Response],
        namespace: str,
        metas: list[Mapping[str, Any] | None],
    ) -> list[int]:
        too_long = self._overflowing(texts)
        stored: list[dict[str, Any]] = [
            {"prompt": t, "metadata": None if m is None else dict(m)}
            for t, m in zip(texts, metas, strict=True)
        ]
        for entry, long in zip(stored, too_long, strict=True):
            if long:
                entry["exact_only"] = True
        ids = self.cache.put_many(vectors, responses, namespace=namespace, metadata=stored)
        with self._lock:
            table = self._exact.setdefault(namespace, {})
            for text, new_id in zip(texts, ids, strict=True):
                key = _exact_key(text)
                old = table.get(key)
                table[key] = new_id
                if old is None:
                    self._exact_keys += 1
                elif old != new_id:
                    self.cache.delete(old)
            # Evicted entries leave stale ids behind, possibly in namespaces no longer written to (one
            # per conversation, say); sweep every table once they could outnumber the live entries, so
            # the tables stay within twice the live entries plus a constant (amortised O(1) per key).
            if self._exact_keys > 2 * len(self.cache) + _EXACT_SLACK:
                self._sweep_exact()
        return ids

    def _sweep_exact(self) -> None:
        """Drops the keys of entries that are gone and the tables left empty (caller holds the lock)."""
        swept = {ns: {k: v for k, v in t.items() if v in self.cache} for ns, t in self._exact.items()}
        self._exact = {ns: t for ns, t in swept.items() if t}
        self._exact_keys = sum(map(len, self._exact.values()))

    # ---------------------------------------------------------------- the rest
    def clear(self, namespace: str | None = None) -> None:
        """Removes every entry, or only one namespace's."""
        self.cache.clear(namespace)
        with self._lock:
            if namespace is None:
                self._exact = {}
            else:
                self._exact.pop(namespace, None)
            self._exact_keys = sum(map(len, self._exact.values()))

    def __len__(self) -> int:
        return len(self.cache)

    def stats(self) -> SemanticCacheStats:
        """Exact and semantic hits, misses, guard/verifier rejections, time embedding vs searching."""
        cache = self.cache.stats()
        with self._lock:
            hits = self._exact_hits + self._semantic_hits
            lookups = hits + self._misses
            return SemanticCacheStats(
                exact_hits=self._exact_hits,
                semantic_hits=self._semantic_hits,
                misses=self._misses,
                hit_rate=hits / lookups if lookups else 0.0,
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


def _exact_table(cache: BinarySemanticCache) -> dict[str, dict[bytes, int]]:
    """The exact-text table rebuilt from the prompts stored in the entries' metadata; least recently used
    first, so where two entries share a prompt the most recently used one wins."""
    table: dict[str, dict[bytes, int]] = {}
    for entry_id in cache._index.lru_order():
        hit = cache.entry(entry_id)
        prompt = None if hit is None or hit.metadata is None else hit.metadata.get("prompt")
        if hit is not None and isinstance(prompt, str):
            table.setdefault(hit.namespace, {})[_exact_key(prompt)] = entry_id
    return table


def _autosave(ref: weakref.ReferenceType[SemanticCache]) -> None:
    cache = ref()
    if cache is None:
        return
    try:
        cache.save()
    except Exception:  # at exit there is no caller left to raise to
        logger.exception("autosave of the semantic cache to %s failed", cache.path)


def _check_text(text: object, index: int) -> None:
    if not isinstance(text, str):
        raise TypeError(f"prompt {index} must be a str, got {type(text).__name__}")
