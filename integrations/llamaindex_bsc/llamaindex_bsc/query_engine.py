"""`SemanticCacheQueryEngine`: a question-level cache in front of any query engine.

It is keyed on the user's question before retrieval, so a question that comes back in other words skips
retrieval *and* generation, and the cached `Response` (text, source nodes, metadata) is returned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bsc import FalseHitGuard, SemanticCache, TextHit, Verifier
from bsc.fail_open import FailOpenCache
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.types import TokenAsyncGen

from llamaindex_bsc._construction import build_cache
from llamaindex_bsc.keys import Unkeyable, json_safe, json_safe_items, namespace_for, namespace_prefix
from llamaindex_bsc.recording import arecorded, recorded
from llamaindex_bsc.responses import CACHE_HIT_KEY, aiter_replay, iter_replay

__all__ = ["SemanticCacheQueryEngine"]

logger = logging.getLogger(__name__)

_FORMAT = 1


class SemanticCacheQueryEngine(BaseQueryEngine):
    """Answers a question from the cache when it (or a paraphrase) was asked before, skipping retrieval.

    The key is the question text (``QueryBundle.query_str``) in an exact partition made of ``namespace``,
    the wrapped engine's class and the bundle's custom embedding strings. The cache does not see the index:
    use one ``namespace`` per index and engine configuration, and ``clear()`` (or a ``ttl``) when the
    documents change. Cached answers are JSON: response text, JSON-safe response metadata and, per source
    node, its id, score, text and JSON-safe metadata. A streaming engine's answer is stored once its
    stream has been read to the end and replayed as a stream. A replayed response's metadata carries
    ``"bsc_cache_hit"`` (similarity, exact, id). Queries with an image are passed through uncached.

    Args:
        query_engine: the engine to put the cache in front of.
        cache: a `bsc.SemanticCache` to use; if given, ``embedder``, ``guard``, ``verifier`` and cache
            options must not be.
        embedder: a `bsc.embedders.Embedder` or a LlamaIndex ``BaseEmbedding``; None uses the local
            offline all-MiniLM-L6-v2.
        namespace: the partition of this engine's answers.
        guard: the false-hit guard (True, False or a configured `bsc.FalseHitGuard`).
        verifier: an optional second opinion on each semantic candidate.
        callback_manager: defaults to the wrapped engine's.
        **cache_options: passed to `bsc.SemanticCache` (threshold, ttl, max_entries, path, autosave, ...).

    Raises:
        TypeError: if ``query_engine`` is not a LlamaIndex query engine, or options conflict.

    Example:
        >>> engine = SemanticCacheQueryEngine(index.as_query_engine())  # doctest: +SKIP
        >>> engine.query("How long is the warranty?")  # doctest: +SKIP
        >>> engine.query("What is the warranty period?")  # from the cache, no retrieval  # doctest: +SKIP
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        cache: SemanticCache | None = None,
        *,
        embedder: Any = None,
        namespace: str = "default",
        guard: FalseHitGuard | bool = True,
        verifier: Verifier | None = None,
        callback_manager: CallbackManager | None = None,
        **cache_options: Any,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise TypeError(
                f"query_engine must be a LlamaIndex BaseQueryEngine, got {type(query_engine).__name__}"
            )
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
        super().__init__(callback_manager=callback_manager or query_engine.callback_manager)
        self._query_engine = query_engine
        self._cache = FailOpenCache(build_cache(cache, embedder, guard, verifier, cache_options), logger)
        self._namespace = namespace

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped query engine."""
        return self._query_engine

    @property
    def cache(self) -> SemanticCache:
        """The underlying `bsc.SemanticCache` (``stats()``, ``clear()``)."""
        return self._cache.cache

    def clear(self) -> None:
        """Forgets this engine's cached answers (e.g. after the documents changed)."""
        self._cache.clear_prefix(namespace_prefix("query", self._namespace))

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._query_engine}

    # ---------------------------------------------------------------- keys
    def _namespace_of(self, bundle: QueryBundle) -> str:
        engine = type(self._query_engine)
        parts = {
            "engine": f"{engine.__module__}.{engine.__qualname__}",
            "custom_embedding_strs": json_safe(bundle.custom_embedding_strs),
        }
        return namespace_for("query", self._namespace, parts)

    def _slot(self, bundle: QueryBundle) -> tuple[str, str] | None:
        if bundle.image_path is not None or not bundle.query_str.strip():
            return None
        try:
            return self._namespace_of(bundle), bundle.query_str
        except Unkeyable as exc:
            logger.debug("query not cached: %s", exc)
            return None

    # ---------------------------------------------------------------- query
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        slot = self._slot(query_bundle)
        if slot is not None:
            cached = _cached_response(self._cache.lookup(slot[1], namespace=slot[0]), asynchronous=False)
            if cached is not None:
                return cached
        response = self._query_engine.query(query_bundle)
        if slot is None:
            return response
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = recorded(response.response_gen, self._storer(slot, response))
        elif isinstance(response, Response):
            self._store(slot, _dumps(response.response, response, streaming=False))
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        slot = self._slot(query_bundle)
        if slot is not None:
            hit = await self._cache.alookup(slot[1], namespace=slot[0])
            cached = _cached_response(hit, asynchronous=True)
            if cached is not None:
                return cached
        response = await self._query_engine.aquery(query_bundle)
        if slot is None:
            return response
        if isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            response.response_gen = arecorded(response.response_gen, self._astorer(slot, response))
        elif isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = recorded(response.response_gen, self._storer(slot, response))
        elif isinstance(response, Response):
            await self._astore(slot, _dumps(response.response, response, streaming=False))
        return response

    def _storer(self, slot: tuple[str, str], response: StreamingResponse) -> Callable[[list[str]], None]:
        """What stores a streamed answer once its tokens have all been read."""
        return lambda tokens: self._store(slot, _dumps("".join(tokens), response, streaming=True))

    def _astorer(
        self, slot: tuple[str, str], response: AsyncStreamingResponse
    ) -> Callable[[list[str]], Awaitable[None]]:
        return lambda tokens: self._astore(slot, _dumps("".join(tokens), response, streaming=True))

    def _store(self, slot: tuple[str, str], payload: str | None) -> None:
        if payload is not None:
            self._cache.update(slot[1], payload, namespace=slot[0])

    async def _astore(self, slot: tuple[str, str], payload: str | None) -> None:
        if payload is not None:
            await self._cache.aupdate(slot[1], payload, namespace=slot[0])


def _dumps(
    text: str | None, response: Response | StreamingResponse | AsyncStreamingResponse, *, streaming: bool
) -> str | None:
    if text is None:
        return None
    sources = [
        {
            "id": source.node.node_id,
            "score": source.score,
            "text": source.node.get_content(),
            "metadata": json_safe_items(source.node.metadata),
        }
        for source in response.source_nodes
    ]
    metadata = {k: v for k, v in (response.metadata or {}).items() if k != CACHE_HIT_KEY}
    return json.dumps(
        {
            "v": _FORMAT,
            "kind": "query",
            "response": text,
            "streaming": streaming,
            "metadata": json_safe_items(metadata),
            "sources": sources,
        },
        ensure_ascii=False,
    )


def _cached_response(hit: TextHit | None, *, asynchronous: bool) -> RESPONSE_TYPE | None:
    if hit is None:
        return None
    try:
        data = json.loads(hit.response)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("v") != _FORMAT or data.get("kind") != "query":
        return None
    text = str(data.get("response", ""))
    sources = [
        NodeWithScore(
            node=TextNode(id_=s["id"], text=s.get("text", ""), metadata=s.get("metadata") or {}),
            score=s.get("score"),
        )
        for s in data.get("sources", [])
    ]
    metadata = {
        **(data.get("metadata") or {}),
        CACHE_HIT_KEY: {"similarity": hit.similarity, "exact": hit.exact, "id": hit.id},
    }
    if not data.get("streaming"):
        return Response(text, source_nodes=sources, metadata=metadata)
    if asynchronous:
        return AsyncStreamingResponse(response_gen=_atokens(text), source_nodes=sources, metadata=metadata)
    return StreamingResponse(
        response_gen=(delta for _, delta in iter_replay(text)), source_nodes=sources, metadata=metadata
    )


async def _atokens(text: str) -> TokenAsyncGen:
    async for _, delta in aiter_replay(text):
        yield delta
