"""A sentence-transformers BERT model run by ONNX Runtime, without torch: the opt-in ``bsc-cache[onnx]``
extra, for its int8 mode.

The encoder graph is built at start-up straight from the model's ``*.safetensors`` weights
(`bsc.embedders.bert_graph`); tokenization, truncation, padding and batching are the shared
`bsc.embedders.bert_embedder` ones. Its float32 vectors are the default `NativeEmbedder`'s (both equal
sentence-transformers' to float rounding), so the reason to pick it is ``quantize="int8"``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import numpy.typing as npt

from bsc.embedders.bert_embedder import _BertEmbedder, _checked_threads
from bsc.embedders.bert_graph import INPUTS, OUTPUT, Quantize, build_bert_graph, open_session

logger = logging.getLogger(__name__)


class OnnxEmbedder(_BertEmbedder):
    """A sentence-transformers BERT model (Transformer, mean or CLS pooling) run by ONNX Runtime.

    Opt-in (``pip install "bsc-cache[onnx]"``), for ``quantize="int8"``; the default embedder is
    `NativeEmbedder`, which gives the same float32 vectors without onnxruntime. Gives the same vectors
    as sentence-transformers for the same model (to float rounding; ``benchmarks/bench_embed.py``
    measures it) without importing torch:
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
        ImportError: If onnxruntime is missing; the message says what to install (``bsc-cache[onnx]``).
        FileNotFoundError: If `model` is not a model directory or lacks ``tokenizer.json``/weights.
        NotImplementedError: If the model is not a BERT, its tokenizer not BERT's WordPiece, or the
            pipeline not Transformer -> mean/CLS Pooling [-> Normalize].
        ValueError: If `batch_size` or `threads` is not positive, or `quantize` is unknown.

    Example (needs the ``[onnx]`` extra):
        >>> e = OnnxEmbedder(quantize="int8")
        >>> e.embed(["hello", "hi"]).shape
        (2, 384)
        >>> e.name
        'sentence-transformers:all-MiniLM-L6-v2:int8'
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
        threads = _checked_threads(threads)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError(
                f'OnnxEmbedder needs onnxruntime: pip install "bsc-cache[onnx]" ({exc})'
            ) from exc
        # int8 vectors differ from the float ones, so they must not share a cache. int8 activations are
        # quantised with one range per forward pass, so in a batch a text's vector would depend on its
        # neighbours; one text per pass keeps it a function of the text alone.
        super().__init__(
            model,
            batch_size=batch_size if quantize is None or batch_size <= 0 else 1,
            name=name,
            name_suffix="" if quantize is None else f":{quantize}",
        )
        graph = build_bert_graph(
            self._layout.transformer_dir, pooling=self._layout.pooling, quantize=quantize
        )
        self._check_width(graph.hidden_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = open_session(graph, options)
        # The session reads the weights in place: they must live as long as it does.
        self._weights = graph.external
        logger.info(
            "loaded %s on onnxruntime %s (%d threads, %s weights)",
            self._model_dir,
            ort.__version__,
            threads,
            quantize or "float32",
        )

    def _forward(
        self,
        input_ids: npt.NDArray[np.int32],
        token_type_ids: npt.NDArray[np.int32],
        attention_mask: npt.NDArray[np.int32],
    ) -> npt.NDArray[np.float32]:
        feed = dict(zip(INPUTS, (input_ids, token_type_ids, attention_mask), strict=True))
        pooled: npt.NDArray[np.float32] = self._session.run([OUTPUT], feed)[0]
        return pooled
