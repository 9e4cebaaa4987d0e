"""What every local BERT embedder shares: the model directory's layout, the cache-keying name,
sentence-transformers' tokenisation (truncation at ``max_seq_length``, padding to the longest text of a
batch, longest-first batches) and the overflow signal; a runtime adds only its forward pass.
"""

from __future__ import annotations

import asyncio
import os
from abc import abstractmethod
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bsc.embedders.bert_checkpoint import Layout, read_layout
from bsc.embedders.local import _local_model_name, packaged_minilm_path
from bsc.embedders.protocol import _checked_texts, _chunks, _EmbedderBase
from bsc.embedders.wordpiece import Tokenizer


def _checked_threads(threads: int | None) -> int:
    """A local runtime's ``threads`` argument: None means 1; anything else must be positive."""
    threads = 1 if threads is None else threads
    if threads <= 0:
        raise ValueError(f"threads must be positive, got {threads}")
    return threads


class _BertEmbedder(_EmbedderBase):
    """A sentence-transformers BERT directory, tokenised in Python, run by a subclass's `_forward`.

    Args:
        model: None for the packaged all-MiniLM-L6-v2, or a local model directory.
        batch_size: Texts per forward pass; must be positive.
        name: Identifier to key caches by; None for the torch embedder's name for `model` followed by
            `name_suffix`.
        name_suffix: Appended to the default name by runtimes whose vectors differ (``":int8"``).

    Raises:
        ValueError: If `batch_size` is not positive.
        FileNotFoundError, NotImplementedError: See `bert_checkpoint.read_layout`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None,
        *,
        batch_size: int,
        name: str | None,
        name_suffix: str = "",
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_dir = packaged_minilm_path() if model is None else Path(model).resolve()
        self._layout: Layout = read_layout(self._model_dir)
        self._dim = self._layout.dim
        self._name = name or _local_model_name(self._model_dir) + name_suffix
        self._batch_size = batch_size
        # sentence-transformers' setup: truncation at max_seq_length, padding to the longest text of a
        # batch (tokenizer.json's own padding and truncation settings are not what it uses).
        self._tokenizer = Tokenizer.from_file(
            self._layout.transformer_dir / "tokenizer.json", max_length=self._layout.max_seq_length
        )

    def _check_width(self, hidden_size: int) -> None:
        """Refuse an encoder whose width is not the pooling config's."""
        if hidden_size != self._layout.dim:
            raise ValueError(
                f"{self._model_dir}: encoder width {hidden_size} but pooling config width {self._layout.dim}"
            )

    @abstractmethod
    def _forward(
        self,
        input_ids: npt.NDArray[np.int32],
        token_type_ids: npt.NDArray[np.int32],
        attention_mask: npt.NDArray[np.int32],
    ) -> npt.NDArray[np.float32]:
        """Pooled, not normalised, vectors ``(batch, dim)`` of int32 ``(batch, sequence)`` token arrays."""

    @property
    def name(self) -> str:
        """E.g. ``"sentence-transformers:all-MiniLM-L6-v2"``, as for the torch embedder."""
        return self._name

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text (special tokens included); the rest is cut off."""
        return self._layout.max_seq_length

    def overflows(self, texts: list[str]) -> list[bool]:
        """Which texts are longer than the model reads (``max_seq_length`` tokens): the rest of such a
        text does not reach the embedding, so a cache must not match it by meaning."""
        return [bool(e.overflowing) for e in self._tokenizer.encode_batch(self._cased(texts))]

    def embed_with_overflow(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """`embed` and `overflows` from one tokenisation: the vectors, and which texts were cut at
        ``max_seq_length`` (what a cache needs to know about each text it embeds).

        Example:
            >>> from bsc.embedders import default_embedder
            >>> vectors, long = default_embedder().embed_with_overflow(["hi", "word " * 300])
            >>> vectors.shape, long
            ((2, 384), [False, True])
        """
        batch = _checked_texts(texts)
        overflow: list[bool] = []
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32), overflow
        return self._finish(self._embed_batch(batch, overflow), len(batch)), overflow

    async def aembed_with_overflow(self, texts: list[str]) -> tuple[npt.NDArray[np.float32], list[bool]]:
        """`embed_with_overflow` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_with_overflow, texts)

    def _cased(self, texts: list[str]) -> list[str]:
        return [t.lower() for t in texts] if self._layout.do_lower_case else texts

    def _pooled(self, texts: list[str], overflow: list[bool] | None = None) -> npt.NDArray[np.float32]:
        encodings = self._tokenizer.encode_batch(texts)
        if overflow is not None:  # the caller wants the lengths too: read them off this tokenisation
            overflow.extend(bool(e.overflowing) for e in encodings)
        return self._forward(
            np.array([e.ids for e in encodings], dtype=np.int32),
            np.array([e.type_ids for e in encodings], dtype=np.int32),
            np.array([e.attention_mask for e in encodings], dtype=np.int32),
        )

    def _embed_batch(self, texts: list[str], overflow: list[bool] | None = None) -> object:
        texts = self._cased(texts)
        if len(texts) <= self._batch_size:
            return self._pooled(texts, overflow)
        # Longest first, like sentence-transformers: batches of similar length pad less.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        flags: list[bool] | None = None if overflow is None else []
        pooled = np.concatenate([self._pooled(c, flags) for c in _chunks(ordered, self._batch_size)])
        rows = np.empty_like(pooled)
        rows[order] = pooled
        if overflow is not None and flags is not None:
            unsorted = [False] * len(texts)
            for position, flag in zip(order.tolist(), flags, strict=True):
                unsorted[position] = flag
            overflow.extend(unsorted)
        return rows

    async def _aembed_batch(self, texts: list[str]) -> object:
        # Both runtimes release the GIL for the forward pass, nearly all of a call: a worker thread keeps
        # the loop responsive.
        return await asyncio.to_thread(self._embed_batch, texts)
