"""A `SemanticCache` as a framework integration uses it: a cache failure never fails the LLM call.

The LangChain and LlamaIndex integrations put the cache in front of a model call. If a lookup or a
store raises (an embedder that cannot reach its server, a full disk during autosave, a bug), the user's
call must still be answered by the model, so `FailOpenCache` logs the error and reports a miss or skips
the store. Each integration also owns the namespaces under one prefix, which `clear_prefix` empties.

Example:
    >>> import logging
    >>> from bsc import SemanticCache
    >>> cache = FailOpenCache(SemanticCache(), logging.getLogger("example"))
    >>> cache.update("What is 2 + 2?", "4", namespace="app:a")
    >>> cache.lookup("What is 2 + 2?", namespace="app:a").response
    '4'
    >>> cache.clear_prefix("app:")
    >>> cache.lookup("What is 2 + 2?", namespace="app:a") is None
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bsc.text_cache import SemanticCache
from bsc.text_entry import TextHit

__all__ = ["FailOpenCache"]


class FailOpenCache:
    """Lookups and stores on ``cache`` that log a failure (with its traceback) instead of raising.

    Args:
        cache: the cache to use; it stays reachable as ``.cache`` (stats, save, clear).
        logger: where failures are reported (the integration's logger).
    """

    __slots__ = ("_logger", "cache")

    def __init__(self, cache: SemanticCache, logger: logging.Logger) -> None:
        if not isinstance(cache, SemanticCache):
            raise TypeError(f"cache must be a bsc.SemanticCache, got {type(cache).__name__}")
        self.cache = cache
        self._logger = logger

    def lookup(self, text: str, *, namespace: str) -> TextHit | None:
        """`SemanticCache.lookup`, or None (a miss) if it raised."""
        try:
            return self.cache.lookup(text, namespace=namespace)
        except Exception:
            self._logger.warning("semantic cache lookup failed; calling the model", exc_info=True)
            return None

    def lookup_many(self, texts: Sequence[str], *, namespace: str) -> list[TextHit | None]:
        """`SemanticCache.lookup_many`, or all misses if it raised."""
        try:
            return self.cache.lookup_many(texts, namespace=namespace)
        except Exception:
            self._logger.warning("semantic cache lookup failed; calling the model", exc_info=True)
            return [None] * len(texts)

    async def alookup(self, text: str, *, namespace: str) -> TextHit | None:
        """`SemanticCache.alookup`, or None (a miss) if it raised."""
        try:
            return await self.cache.alookup(text, namespace=namespace)
        except Exception:
            self._logger.warning("semantic cache lookup failed; calling the model", exc_info=True)
            return None

    def update(self, text: str, response: str, *, namespace: str) -> None:
        """`SemanticCache.update`; a failure is logged and the answer is not cached."""
        try:
            self.cache.update(text, response, namespace=namespace)
        except Exception:
            self._logger.warning("semantic cache update failed; the answer is not cached", exc_info=True)

    async def aupdate(self, text: str, response: str, *, namespace: str) -> None:
        """`SemanticCache.aupdate`; a failure is logged and the answer is not cached."""
        try:
            await self.cache.aupdate(text, response, namespace=namespace)
        except Exception:
            self._logger.warning("semantic cache update failed; the answer is not cached", exc_info=True)

    def clear_prefix(self, prefix: str) -> None:
        """Empties every namespace whose name starts with ``prefix`` (errors propagate: a clear the
        user asked for must not silently do nothing)."""
        for namespace in self.cache.cache.namespaces():
            if namespace.startswith(prefix):
                self.cache.clear(namespace)
