"""What a sentence-transformers BERT directory says: its module pipeline, pooling, sequence limit,
encoder config and safetensors weights, read and checked once for every runtime that computes it
(`bsc.embedders.NativeEmbedder`, `bsc.embedders.OnnxEmbedder`).

Example:
    >>> from bsc.embedders.local import packaged_minilm_path
    >>> layout = read_layout(packaged_minilm_path())
    >>> layout.pooling, layout.max_seq_length, BertConfig.read(layout.transformer_dir).num_layers
    ('mean', 256, 6)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bsc.embedders.safetensors_file import read_safetensors

Pooling = Literal["mean", "cls"]
SUPPORTED_MODEL_TYPES = ("bert",)
# Hugging Face's names for the feed-forward activations every runtime computes: "gelu" is the erf form
# (torch.nn.functional.gelu), the two others its tanh approximation.
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


@dataclass(frozen=True)
class Layout:
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


def read_layout(model_dir: Path) -> Layout:
    """Check that `model_dir` is Transformer -> mean or CLS Pooling [-> Normalize] and read its settings.

    Raises:
        FileNotFoundError: If the directory or its ``tokenizer.json`` is missing.
        NotImplementedError: For any other module pipeline or pooling mode.
    """
    if not model_dir.is_dir():
        raise FileNotFoundError(f"the local embedder needs a local model directory; {model_dir} is not one")
    pooling: dict[str, Any] = {"pooling_mode": "mean"}
    transformer_dir = model_dir
    # Without modules.json it is a plain Hugging Face model, which sentence-transformers wraps
    # in mean pooling too.
    if (model_dir / "modules.json").is_file():
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
            raise NotImplementedError(
                f"the local embedder runs Transformer -> Pooling [-> Normalize] models only; {model_dir} has "
                f"{' -> '.join(kinds)}"
            )
        transformer_dir = model_dir / modules[0].get("path", "")
        pooling = _read_json(model_dir / modules[1]["path"] / "config.json")
    modes = _pooling_modes(pooling)
    if modes not in (["mean"], ["cls"]):
        raise NotImplementedError(
            f"the local embedder supports mean or cls pooling; {model_dir} uses {modes}"
        )
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
    return Layout(
        transformer_dir=transformer_dir,
        dim=int(dim),
        max_seq_length=int(max_seq_length),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        pooling="mean" if modes == ["mean"] else "cls",
    )


@dataclass(frozen=True)
class BertConfig:
    """The parts of a Hugging Face ``config.json`` that decide the encoder's computation."""

    hidden_size: int
    num_layers: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float

    @classmethod
    def read(cls, transformer_dir: Path) -> BertConfig:
        """Read and check ``config.json``.

        Raises:
            FileNotFoundError: If there is no ``config.json``.
            NotImplementedError: For an architecture other than BERT, or a BERT variant the built-in
                encoders do not compute (relative positions, an unknown activation).
            ValueError: If a required field is missing or inconsistent.
        """
        path = transformer_dir / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{transformer_dir} has no config.json")
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        model_type = config.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise NotImplementedError(
                f"{path}: model_type {model_type!r} is not supported by the built-in encoder (supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}); use SentenceTransformerEmbedder (bsc-cache[torch])"
            )
        positions = config.get("position_embedding_type", "absolute")
        if positions != "absolute":
            raise NotImplementedError(f"{path}: position_embedding_type {positions!r}; only 'absolute' is")
        act = config.get("hidden_act", "gelu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise NotImplementedError(
                f"{path}: hidden_act {act!r}; supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            layers = int(config["num_hidden_layers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{path} lacks a valid hidden_size/num_attention_heads/num_hidden_layers"
            ) from exc
        if hidden <= 0 or heads <= 0 or layers <= 0 or hidden % heads:
            raise ValueError(f"{path}: hidden_size {hidden} must be a positive multiple of {heads} heads")
        return cls(hidden, layers, heads, act, float(config.get("layer_norm_eps", 1e-12)))


class Weights:
    """The checkpoint's tensors by their Hugging Face names, with or without the ``bert.`` prefix.

    Raises:
        FileNotFoundError: If the directory has no ``*.safetensors`` file.
        ValueError: If a file is not a valid safetensors file.
    """

    def __init__(self, transformer_dir: Path) -> None:
        files = sorted(transformer_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{transformer_dir} has no *.safetensors weights (pytorch_model.bin needs torch to read: "
                "use SentenceTransformerEmbedder)"
            )
        self._tensors: dict[str, npt.NDArray[Any]] = {}
        for file in files:
            self._tensors.update(read_safetensors(file))
        self._path = transformer_dir

    def __getitem__(self, name: str) -> npt.NDArray[np.float32]:
        """The tensor `name` as a C-ordered float32 array of its own.

        Raises:
            ValueError: If the checkpoint has no such tensor.
        """
        for key in (name, f"bert.{name}"):
            if key in self._tensors:
                # A copy of its own: a view would keep the whole file's buffer alive as long as the model.
                return np.array(self._tensors[key], dtype=np.float32, order="C")
        raise ValueError(f"{self._path}: weight {name!r} is missing; is this a BERT checkpoint?")
