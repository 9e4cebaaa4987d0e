"""Adapters that let an embedding model from LangChain or LlamaIndex drive the cache.

Neither framework is imported here: the adapters rely only on the documented method names,
so wrapping a model costs nothing beyond the framework the caller already uses.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, Protocol, runtime_checkable

from bsc.embedders.protocol import _EmbedderBase

logger = logging.getLogger(__name__)

# Field names under which provider classes keep their model id, most specific first.
_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment_name", "deployment")
_PLACEHOLDER_NAMES = {"", "unknown", "default"}
# LlamaIndex's async batch method ends in these; BaseEmbedding's own versions call the sync
# `_get_text_embedding` on the event loop, so only an override of one of them is really async.
_LLAMAINDEX_ASYNC_METHODS = ("aget_text_embedding_batch", "_aget_text_embeddings", "_aget_text_embedding")


@runtime_checkable
class _LangChainEmbeddings(Protocol):
    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]: ...


@runtime_checkable
class _LlamaIndexEmbedding(Protocol):
    def get_text_embedding_batch(self, texts: list[str], show_progress: bool = ...) -> list[list[float]]: ...

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = ...
    ) -> list[list[float]]: ...


def _llamaindex_has_native_async(embed_model: object) -> bool:
    """Whether ``embed_model``'s class implements LlamaIndex's async text embedding itself.

    Objects that are not a ``BaseEmbedding`` (duck-typed models) are trusted to be async.
    """
    # A BaseEmbedding instance means LlamaIndex is already imported; looking it up in sys.modules
    # keeps this module free of a framework import for duck-typed models.
    module = sys.modules.get("llama_index.core.base.embeddings.base")
    base = getattr(module, "BaseEmbedding", None)
    if base is None or not isinstance(embed_model, base):
        return True
    # Compared by the class that defines each method: LlamaIndex's instrumentation wraps some
    # methods so that every attribute access returns a new wrapper object.
    return any(_defining_class(type(embed_model), name) is not base for name in _LLAMAINDEX_ASYNC_METHODS)


def _defining_class(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def _adapter_name(prefix: str, wrapped: object) -> str:
    """``prefix:ClassName[:model]`` from the wrapped object's class and first model-id field."""
    name = f"{prefix}:{type(wrapped).__name__}"
    for field in _MODEL_FIELDS:
        value = getattr(wrapped, field, None)
        if isinstance(value, str) and value.strip().lower() not in _PLACEHOLDER_NAMES:
            return f"{name}:{value}"
    return name


class LangChainEmbedder(_EmbedderBase):
    """Adapts any LangChain `Embeddings` (``embed_documents`` / ``aembed_documents``).

    `aembed` awaits ``aembed_documents``: native async for providers that implement it,
    LangChain's executor fallback otherwise, so the event loop is not blocked either way.

    Args:
        embeddings: A `langchain_core.embeddings.Embeddings` instance.
        dim: Width if known; otherwise learned from the first call (or one probe call).

    Raises:
        TypeError: If `embeddings` lacks ``embed_documents`` / ``aembed_documents``.

    Example:
        >>> from langchain_core.embeddings.fake import DeterministicFakeEmbedding
        >>> LangChainEmbedder(DeterministicFakeEmbedding(size=8)).embed(["hi"]).shape
        (1, 8)
    """

    def __init__(self, embeddings: Any, *, dim: int | None = None) -> None:
        if not isinstance(embeddings, _LangChainEmbeddings):
            raise TypeError(
                f"expected a LangChain Embeddings with embed_documents/aembed_documents, "
                f"got {type(embeddings).__name__}"
            )
        self._wrapped = embeddings
        self._dim = dim
        self._name = _adapter_name("langchain", embeddings)

    @property
    def name(self) -> str:
        """E.g. ``"langchain:OpenAIEmbeddings:text-embedding-3-small"``."""
        return self._name

    def _embed_batch(self, texts: list[str]) -> object:
        return self._wrapped.embed_documents(texts)

    async def _aembed_batch(self, texts: list[str]) -> object:
        return await self._wrapped.aembed_documents(texts)


class LlamaIndexEmbedder(_EmbedderBase):
    """Adapts any LlamaIndex `BaseEmbedding` (``get_text_embedding_batch`` and its async twin).

    `aembed` awaits ``aget_text_embedding_batch`` when the model implements async embedding itself.
    Otherwise (local models such as ``HuggingFaceEmbedding``) LlamaIndex's default would run the sync
    model on the event loop, so the sync batch call runs in a worker thread instead.

    Args:
        embed_model: A `llama_index.core.base.embeddings.base.BaseEmbedding` instance.
        dim: Width if known; otherwise taken from ``embed_dim`` when the model has one, else
            learned from the first call (or one probe call).

    Raises:
        TypeError: If `embed_model` lacks the batch embedding methods.

    Example:
        >>> from llama_index.core.embeddings import MockEmbedding
        >>> LlamaIndexEmbedder(MockEmbedding(embed_dim=8)).embed(["hi"]).shape
        (1, 8)
    """

    def __init__(self, embed_model: Any, *, dim: int | None = None) -> None:
        if not isinstance(embed_model, _LlamaIndexEmbedding):
            raise TypeError(
                "expected a LlamaIndex BaseEmbedding with get_text_embedding_batch/"
                f"aget_text_embedding_batch, got {type(embed_model).__name__}"
            )
        self._wrapped = embed_model
        declared = getattr(embed_model, "embed_dim", None)
        self._dim = dim if dim is not None else declared if isinstance(declared, int) else None
        self._name = _adapter_name("llamaindex", embed_model)
        self._native_async = _llamaindex_has_native_async(embed_model)

    @property
    def name(self) -> str:
        """E.g. ``"llamaindex:OpenAIEmbedding:text-embedding-3-small"``."""
        return self._name

    def _embed_batch(self, texts: list[str]) -> object:
        return self._wrapped.get_text_embedding_batch(texts)

    async def _aembed_batch(self, texts: list[str]) -> object:
        if self._native_async:
            return await self._wrapped.aget_text_embedding_batch(texts)
        return await asyncio.to_thread(self._wrapped.get_text_embedding_batch, texts)
