"""The one way every `langchain_bsc` integration builds its cache: a `bsc.SemanticCache` over a LangChain
``Embeddings`` (or bsc's local model), behind `bsc.fail_open.FailOpenCache`, so a cache failure logs and
lets the model (or chain) answer instead of failing the user's call."""

from __future__ import annotations

import logging
import os

from bsc import SemanticCache
from bsc.embedders import LangChainEmbedder
from bsc.fail_open import FailOpenCache
from bsc.store import RedisStore
from langchain_core.embeddings import Embeddings

logger = logging.getLogger("langchain_bsc")


def fail_open_cache(
    embedding: Embeddings | None,
    *,
    threshold: float,
    max_entries: int,
    ttl: float | None,
    path: str | os.PathLike[str] | None = None,
    autosave: bool = False,
    store: RedisStore | None = None,
) -> FailOpenCache:
    """A fail-open `SemanticCache` embedding with ``embedding`` (None: bsc's local all-MiniLM-L6-v2);
    the settings are `SemanticCache`'s. ``.cache`` is the cache itself (stats, save, clear).

    Raises:
        TypeError: ``embedding`` is not a LangChain ``Embeddings``; and as `SemanticCache` does.
    """
    if embedding is not None and not isinstance(embedding, Embeddings):
        raise TypeError(f"embedding must be a LangChain Embeddings, got {type(embedding).__name__}")
    cache = SemanticCache(
        None if embedding is None else LangChainEmbedder(embedding),
        threshold=threshold,
        max_entries=max_entries,
        ttl=ttl,
        path=path,
        autosave=autosave,
        store=store,
    )
    return FailOpenCache(cache, logger)
