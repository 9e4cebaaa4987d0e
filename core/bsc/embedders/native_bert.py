"""The default local embedder: a sentence-transformers BERT model run by bsc's own Rust encoder.

No torch and no onnxruntime: the weights are read from the model's ``*.safetensors`` with NumPy
(`bsc.embedders.bert_checkpoint`), copied once into the extension and packed for its matrix kernel
(AVX-512 where the CPU has it, a portable one elsewhere); tokenization, truncation, padding and
batching are the shared `bsc.embedders.bert_embedder` ones. Everything is float32, so the vectors
equal sentence-transformers' to float rounding and the name (which keys caches) is the torch
embedder's.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import numpy.typing as npt

from bsc._native import BertModel
from bsc.embedders.bert_checkpoint import BertConfig, Weights
from bsc.embedders.bert_embedder import _BertEmbedder, _checked_threads

logger = logging.getLogger(__name__)


class NativeEmbedder(_BertEmbedder):
    """A sentence-transformers BERT model (Transformer, mean or CLS pooling) run by bsc's Rust encoder.

    The default embedder of `bsc` (`default_embedder`). Gives the same vectors as
    sentence-transformers for the same model (to float rounding; ``benchmarks/bench_embed.py``
    measures it) with only NumPy and bsc's own extension: the weights are read from the model's
    safetensors file and packed when the embedder is constructed (well under a second for MiniLM).
    Because the vectors agree, `name` is the torch embedder's name for the model (e.g.
    ``"sentence-transformers:all-MiniLM-L6-v2"``), so a cache filled with one runtime is valid with
    the other. For int8 weights see ``OnnxEmbedder(quantize="int8")`` (the ``[onnx]`` extra).

    Loads any sentence-transformers directory whose ``config.json`` is a BERT (``model_type``
    ``"bert"``: MiniLM-L6/L12, bge-small, e5-small, ...) with its weights in ``*.safetensors``;
    other architectures raise `NotImplementedError` (use `SentenceTransformerEmbedder` for them).
    Safe to call from several threads at once (the forward pass releases the GIL and keeps no state
    between calls), and in a process forked from one that used it.

    Args:
        model: None for the packaged all-MiniLM-L6-v2, or a local sentence-transformers model
            directory (hub names are not resolved here).
        batch_size: Texts per forward pass (texts are sorted by length first, like
            sentence-transformers, to pad less).
        threads: Threads a forward pass splits its matrix products over (bsc's worker pool, capped by
            ``BSC_NUM_THREADS``); None means 1. More help only while cores are idle.
        name: Identifier to key caches by; defaults to the torch embedder's name for `model`.

    Raises:
        FileNotFoundError: If `model` is not a model directory or lacks ``tokenizer.json``/weights.
        NotImplementedError: If the model is not a BERT, its tokenizer not BERT's WordPiece, or the
            pipeline not Transformer -> mean/CLS Pooling [-> Normalize].
        ValueError: If `batch_size` or `threads` is not positive, or a weight is missing or misshapen.

    Example:
        >>> e = NativeEmbedder()
        >>> e.embed(["hello", "hi"]).shape
        (2, 384)
        >>> e.name
        'sentence-transformers:all-MiniLM-L6-v2'
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self._threads = _checked_threads(threads)
        super().__init__(model, batch_size=batch_size, name=name)
        transformer_dir = self._layout.transformer_dir
        config = BertConfig.read(transformer_dir)
        weights = Weights(transformer_dir)
        # The model copies each tensor as it asks for it; `weights` (the file's bytes) is dropped after.
        self._model = BertModel(
            weights.__getitem__,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            activation=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            pooling=self._layout.pooling,
        )
        self._check_width(self._model.hidden_size)
        logger.info(
            "loaded %s on bsc's encoder (%s kernel, %d threads)",
            self._model_dir,
            self._model.kernel,
            self._threads,
        )

    def _forward(
        self,
        input_ids: npt.NDArray[np.int32],
        token_type_ids: npt.NDArray[np.int32],
        attention_mask: npt.NDArray[np.int32],
    ) -> npt.NDArray[np.float32]:
        return self._model.forward(input_ids, token_type_ids, attention_mask, threads=self._threads)
