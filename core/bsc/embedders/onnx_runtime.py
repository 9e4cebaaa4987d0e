"""The default local embedder: a sentence-transformers BERT model run by ONNX Runtime, without torch.

The encoder graph is built at start-up straight from the model's ``*.safetensors`` weights
(`bsc.embedders.bert_graph`); tokenization reads the model's own ``tokenizer.json``
(`bsc.embedders.wordpiece`, the ``tokenizers`` package's BERT rules in Python), with
sentence-transformers' truncation (at ``max_seq_length``), padding
(to the longest text of a batch) and pooling. So the vectors equal sentence-transformers' own to
float rounding, and a process needs only onnxruntime and numpy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc.embedders.bert_graph import INPUTS, OUTPUT, Pooling, Quantize, build_bert_graph, open_session
from bsc.embedders.local import _local_model_name, packaged_minilm_path
from bsc.embedders.protocol import _checked_texts, _chunks, _EmbedderBase
from bsc.embedders.wordpiece import Tokenizer

logger = logging.getLogger(__name__)

_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class _Layout:
    """What sentence-transformers' module files say about a model directory."""

    transformer_dir: Path
    dim: int
    max_seq_length: int
    do_lower_case: bool
    pooling: Pooling


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _pooling_modes(config: dict[str, Any]) -> list[str]:
    """Pooling modes from either the current (``pooling_mode``) or the legacy config format."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    legacy = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    return legacy if any(key in config for key in _LEGACY_POOLING_KEYS) else ["mean"]


def _read_layout(model_dir: Path) -> _Layout:
    """Check that `model_dir` is Transformer -> mean or CLS Pooling [-> Normalize] and read its settings.

    Raises:
        FileNotFoundError: If the directory or its ``tokenizer.json`` is missing.
        NotImplementedError: For any other module pipeline or pooling mode.
    """
    if not model_dir.is_dir():
        raise FileNotFoundError(f"OnnxEmbedder needs a local model directory; {model_dir} is not one")
    pooling: dict[str, Any] = {"pooling_mode": "mean"}
    transformer_dir = model_dir
    # Without modules.json it is a plain Hugging Face model, which sentence-transformers wraps
    # in mean pooling too.
    if (model_dir / "modules.json").is_file():
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            raise NotImplementedError(
                f"OnnxEmbedder runs Transformer -> Pooling [-> Normalize] models only; {model_dir} has "
                f"{' -> '.join(kinds)}"
            )
        transformer_dir = model_dir / modules[0].get("path", "")
        pooling = _read_json(model_dir / modules[1]["path"] / "config.json")
    modes = _pooling_modes(pooling)
    if modes not in (["mean"], ["cls"]):
        raise NotImplementedError(f"OnnxEmbedder supports mean or cls pooling; {model_dir} uses {modes}")
    if not (transformer_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{transformer_dir} has no tokenizer.json (a fast tokenizer is required)")
    config = _read_json(transformer_dir / "config.json")
    st_config = _read_json(transformer_dir / "sentence_bert_config.json")
    dim = (
        pooling.get("embedding_dimension") or pooling.get("word_embedding_dimension") or config["hidden_size"]
    )
    max_seq_length = st_config.get("max_seq_length")
    if max_seq_length is None:
        # sentence-transformers' fallback: what both the tokenizer and the positions allow.
        limits = [
            _read_json(transformer_dir / "tokenizer_config.json").get("model_max_length"),
            config.get("max_position_embeddings"),
        ]
        max_seq_length = min((n for n in limits if isinstance(n, int)), default=512)
    return _Layout(
        transformer_dir=transformer_dir,
        dim=int(dim),
        max_seq_length=int(max_seq_length),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pooling="mean" if modes == ["mean"] else "cls",
    )


class OnnxEmbedder(_EmbedderBase):
    """A sentence-transformers BERT model (Transformer, mean or CLS pooling) run by ONNX Runtime.

    The default embedder of `bsc`. Gives the same vectors as sentence-transformers for the same
    model (to float rounding; ``benchmarks/bench_embed.py`` measures it) without importing torch:
    the encoder graph is built from the model's safetensors weights when the embedder is
    constructed (well under a second for MiniLM), nothing is exported or written to disk. Because
    the vectors agree, `name` is the torch embedder's name for the model (e.g.
    ``"sentence-transformers:all-MiniLM-L6-v2"``): the name keys caches, so a cache filled with one
    runtime is valid with the other. Pass `name` if you change anything that makes the vectors differ.

    Loads any sentence-transformers directory whose ``config.json`` is a BERT (``model_type``
    ``"bert"``: MiniLM-L6/L12, bge-small, e5-small, ...) with its weights in ``*.safetensors``;
    other architectures raise `NotImplementedError` (use `SentenceTransformerEmbedder` for them).
    Safe to call from several threads: the session and the tokenizer's settings are read-only
    while embedding.

    Args:
        model: None for the packaged all-MiniLM-L6-v2, or a local sentence-transformers model
            directory (hub names are not resolved here).
        batch_size: Texts per forward pass (texts are sorted by length first, like
            sentence-transformers, to pad less). With ``quantize="int8"`` every text has its own pass.
        threads: onnxruntime intra-op threads; None means 1. More threads help only while cores are
            idle; when other processes load the cores the extra threads spin against them and
            latency collapses, so raise it only on a machine you have to yourself.
        name: Identifier to key caches by; defaults to the torch embedder's name for `model`, with
            ``":int8"`` appended when quantised.
        quantize: None (float32, the default) or ``"int8"``: the matrix products on int8 weights
            (quantised in NumPy at start-up) and int8 activations, run by onnxruntime's integer
            kernels. Faster (``benchmarks/bench_embed.py`` measures how much on your CPU) but not the
            same vectors: cosine to sentence-transformers' about 0.99 on average, so some hit
            decisions and most 256-bit codes change. Opt-in.

    Raises:
        ImportError: If onnxruntime is missing; the message says what to install.
        FileNotFoundError: If `model` is not a model directory or lacks ``tokenizer.json``/weights.
        NotImplementedError: If the model is not a BERT, its tokenizer not BERT's WordPiece, or the
            pipeline not Transformer -> mean/CLS Pooling [-> Normalize].
        ValueError: If `batch_size` or `threads` is not positive, or `quantize` is unknown.

    Example:
        >>> e = OnnxEmbedder()
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
        quantize: Quantize = None,
    ) -> None:
        if quantize not in (None, "int8"):
            raise ValueError(f'quantize must be None or "int8", got {quantize!r}')
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        threads = 1 if threads is None else threads
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(
                f'the local embedder needs onnxruntime: pip install "bsc-cache[local]" ({exc})'
            ) from exc
        model_dir = packaged_minilm_path() if model is None else Path(model).resolve()
        layout = _read_layout(model_dir)
        self._layout = layout
        self._dim = layout.dim
        # int8 vectors differ from the float ones, so they must not share a cache.
        self._name = name or _local_model_name(model_dir) + ("" if quantize is None else f":{quantize}")
        # int8 activations are quantised with one range per forward pass, so in a batch a text's vector
        # would depend on its neighbours; one text per pass keeps it a function of the text alone.
        self._batch_size = batch_size if quantize is None else 1
        # sentence-transformers' setup: truncation at max_seq_length, padding to the longest text of a
        # batch (tokenizer.json's own padding and truncation settings are not what it uses).
        self._tokenizer = Tokenizer.from_file(
            layout.transformer_dir / "tokenizer.json", max_length=layout.max_seq_length
        )

        graph = build_bert_graph(layout.transformer_dir, pooling=layout.pooling, quantize=quantize)
        if graph.hidden_size != layout.dim:
            raise ValueError(
                f"{model_dir}: encoder width {graph.hidden_size} but pooling config width {layout.dim}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = open_session(graph, options)
        # The session reads the weights in place: they must live as long as it does.
        self._weights = graph.external
        logger.info(
            "loaded %s on onnxruntime %s (%d threads, %s weights)",
            model_dir,
            ort.__version__,
            threads,
            quantize or "float32",
        )

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
            >>> vectors, long = OnnxEmbedder().embed_with_overflow(["hi", "word " * 300])
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
        columns = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        feed = {name: np.array(columns[name], dtype=np.int32) for name in INPUTS}
        pooled: npt.NDArray[np.float32] = self._session.run([OUTPUT], feed)[0]
        return pooled

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
        # onnxruntime releases the GIL for the forward pass, nearly all of a call: a worker thread keeps
        # the loop responsive.
        return await asyncio.to_thread(self._embed_batch, texts)
