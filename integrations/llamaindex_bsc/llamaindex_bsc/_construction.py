"""Building the `bsc.SemanticCache` behind a LlamaIndex wrapper from the options users pass."""

from __future__ import annotations

from typing import Any

from bsc import FalseHitGuard, SemanticCache, Verifier
from bsc.embedders import Embedder, LlamaIndexEmbedder
from bsc.store import RedisStore


def build_cache(
    cache: SemanticCache | None,
    embedder: Any,
    guard: FalseHitGuard | bool,
    verifier: Verifier | None,
    cache_options: dict[str, Any],
) -> SemanticCache:
    """``cache`` itself, or a new `SemanticCache` from the other options.

    ``embedder`` may be a `bsc.embedders.Embedder`, a LlamaIndex ``BaseEmbedding`` (such as
    ``Settings.embed_model``) or None for the local offline MiniLM.

    Raises:
        TypeError: if ``cache`` is given together with options that only a new cache would use, or
            ``embedder`` is neither kind of embedder.
    """
    if cache is not None:
        if not isinstance(cache, SemanticCache):
            raise TypeError(f"cache must be a bsc.SemanticCache, got {type(cache).__name__}")
        if embedder is not None or guard is not True or verifier is not None or cache_options:
            raise TypeError("pass either cache= or options to build one (embedder, guard, ...), not both")
        return cache
    if embedder is not None and not isinstance(embedder, Embedder):
        if not hasattr(embedder, "get_text_embedding_batch"):
            raise TypeError(
                "embedder must be a bsc Embedder or a LlamaIndex BaseEmbedding, "
                f"got {type(embedder).__name__}"
            )
        embedder = LlamaIndexEmbedder(embedder)
    redis_url = cache_options.pop("redis_url", None)
    if redis_url is not None:  # shared through Redis, failing open: the app never fails because of its cache
        cache_options["store"] = RedisStore(redis_url, fail_open=True)
    return SemanticCache(embedder, guard=guard, verifier=verifier, **cache_options)
