"""An ONNX graph of a BERT encoder plus sentence pooling, built straight from safetensors weights.

No torch and no export step: the weights are read with ``safetensors``' NumPy API and wired into
onnxruntime's fused transformer kernels (the ``com.microsoft`` contrib ops ``EmbedLayerNormalization``,
``Attention``, ``SkipLayerNormalization``, ``BiasGelu``), the same graph shape that
``onnxruntime.transformers.optimizer`` produces from a torch export. The graph takes int32
``input_ids``, ``token_type_ids`` and ``attention_mask`` of shape (batch, sequence) and returns the
pooled, not yet normalised, ``sentence_embedding`` of shape (batch, hidden).

Example:
    >>> from bsc.embedders.local import packaged_minilm_path
    >>> import onnxruntime as ort
    >>> session = open_session(build_bert_graph(packaged_minilm_path(), pooling="mean"), ort.SessionOptions())
    >>> [i.name for i in session.get_inputs()]
    ['input_ids', 'token_type_ids', 'attention_mask']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bsc.embedders import onnx_proto

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT = "sentence_embedding"
SUPPORTED_MODEL_TYPES = ("bert",)
# Opset 17 is read by every onnxruntime >= 1.14; contrib ops live in their own domain.
_OPSET = 17
_MS = "com.microsoft"
# External-data location of the weights; never opened, since every such tensor is supplied in memory.
_IN_MEMORY = "bsc-weights-in-memory"


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
            NotImplementedError: For an architecture other than BERT, or a BERT variant this graph does
                not compute (relative positions, an unknown activation).
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
        if act not in _ACTIVATIONS:
            raise NotImplementedError(f"{path}: hidden_act {act!r}; supported: {', '.join(_ACTIVATIONS)}")
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


def _node(op: str, inputs: list[str], output: str, **attributes: int | float) -> bytes:
    domain = _MS if op in _CONTRIB_OPS else ""
    return onnx_proto.node(op, inputs, [output], name=output, domain=domain, attributes=attributes)


def _gelu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("BiasGelu", [x, bias], out)]


def _tanh_gelu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("FastGelu", [x, bias], out)]


def _relu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("Add", [x, bias], f"{out}.pre"), _node("Relu", [f"{out}.pre"], out)]


# Hugging Face's names for the feed-forward activation -> the fused nodes computing it with its bias.
_ACTIVATIONS: dict[str, Callable[[str, str, str], list[bytes]]] = {
    "gelu": _gelu,  # erf form, as torch.nn.functional.gelu
    "gelu_new": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "relu": _relu,
}
_CONTRIB_OPS = {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu"}


class _Weights:
    """The checkpoint's tensors by their Hugging Face names, with or without the ``bert.`` prefix."""

    def __init__(self, transformer_dir: Path) -> None:
        from safetensors.numpy import load_file

        files = sorted(transformer_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{transformer_dir} has no *.safetensors weights (pytorch_model.bin needs torch to read: "
                "use SentenceTransformerEmbedder)"
            )
        self._tensors: dict[str, npt.NDArray[Any]] = {}
        for file in files:
            self._tensors.update(load_file(file))
        self._path = transformer_dir

    def __getitem__(self, name: str) -> npt.NDArray[np.float32]:
        for key in (name, f"bert.{name}"):
            if key in self._tensors:
                return np.ascontiguousarray(self._tensors[key], dtype=np.float32)
        raise ValueError(f"{self._path}: weight {name!r} is missing; is this a BERT checkpoint?")


@dataclass(frozen=True)
class BertGraph:
    """A serialized ONNX model and the weights it names but does not hold.

    Open it with `open_session`; the arrays must outlive the session, which reads them in place.
    """

    model: bytes
    external: dict[str, npt.NDArray[np.float32]]
    hidden_size: int


def open_session(graph: BertGraph, options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU running `graph` with `options` (a SessionOptions)."""
    import onnxruntime as ort

    names = list(graph.external)
    options.add_external_initializers(
        names, [ort.OrtValue.ortvalue_from_numpy(graph.external[n]) for n in names]
    )
    return ort.InferenceSession(graph.model, options, providers=["CPUExecutionProvider"])


def build_bert_graph(transformer_dir: Path, *, pooling: Pooling) -> BertGraph:
    """The encoder in `transformer_dir` with `pooling` on top, as a `BertGraph`.

    Args:
        transformer_dir: A Hugging Face BERT directory: ``config.json`` and ``*.safetensors``.
        pooling: ``"mean"`` (over the attention mask, as sentence-transformers' mean pooling) or
            ``"cls"`` (the first token's vector).

    Raises:
        ImportError: If ``safetensors`` is missing.
        FileNotFoundError, NotImplementedError, ValueError: See `BertConfig.read`; also for missing weights.

    Example:
        >>> from bsc.embedders.local import packaged_minilm_path
        >>> sorted(build_bert_graph(packaged_minilm_path(), pooling="cls").external)[0]
        'embeddings.LayerNorm.bias'
    """
    config = BertConfig.read(transformer_dir)
    weights = _Weights(transformer_dir)
    initializers: list[bytes] = []
    external: dict[str, npt.NDArray[np.float32]] = {}

    def const(name: str, value: npt.NDArray[Any]) -> str:
        initializers.append(onnx_proto.tensor(name, value))
        return name

    def weight(name: str, transpose: bool = False) -> str:
        return big(name, weights[name].T if transpose else weights[name])

    def big(name: str, value: npt.NDArray[np.float32]) -> str:
        # A placeholder whose bytes onnxruntime takes from `external` (add_external_initializers):
        # copying 90 MB of weights into the protobuf and parsing them back cost ~1 s at start-up.
        external[name] = np.ascontiguousarray(value, dtype=np.float32)
        initializers.append(onnx_proto.external_tensor(name, external[name].dtype, value.shape, _IN_MEMORY))
        return name

    ids, types, mask = INPUTS
    eps = config.layer_norm_eps
    nodes = [
        onnx_proto.node(
            "EmbedLayerNormalization",
            [
                ids,
                types,
                weight("embeddings.word_embeddings.weight"),
                weight("embeddings.position_embeddings.weight"),
                weight("embeddings.token_type_embeddings.weight"),
                weight("embeddings.LayerNorm.weight"),
                weight("embeddings.LayerNorm.bias"),
            ],
            ["embeddings", "embeddings.mask_index"],
            name="embeddings",
            domain=_MS,
            attributes={"epsilon": eps},
        )
    ]
    hidden = "embeddings"
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"
        qkv = [weights[f"{p}.attention.self.{part}.weight"].T for part in ("query", "key", "value")]
        qkv_bias = [weights[f"{p}.attention.self.{part}.bias"] for part in ("query", "key", "value")]
        nodes += [
            # The raw (batch, sequence) 0/1 mask: padding may sit anywhere, not only at the end.
            _node(
                "Attention",
                [
                    hidden,
                    big(f"{p}.qkv.weight", np.concatenate(qkv, axis=1)),
                    big(f"{p}.qkv.bias", np.concatenate(qkv_bias)),
                    mask,
                ],
                f"{p}.attention.context",
                num_heads=config.num_heads,
            ),
            _node(
                "MatMul",
                [f"{p}.attention.context", weight(f"{p}.attention.output.dense.weight", True)],
                f"{p}.attention.dense",
            ),
            _node(
                "SkipLayerNormalization",
                [
                    f"{p}.attention.dense",
                    hidden,
                    weight(f"{p}.attention.output.LayerNorm.weight"),
                    weight(f"{p}.attention.output.LayerNorm.bias"),
                    weight(f"{p}.attention.output.dense.bias"),
                ],
                f"{p}.attention.output",
                epsilon=eps,
            ),
            _node(
                "MatMul",
                [f"{p}.attention.output", weight(f"{p}.intermediate.dense.weight", True)],
                f"{p}.intermediate.dense",
            ),
            *_ACTIVATIONS[config.hidden_act](
                f"{p}.intermediate.dense", weight(f"{p}.intermediate.dense.bias"), f"{p}.intermediate"
            ),
            _node(
                "MatMul", [f"{p}.intermediate", weight(f"{p}.output.dense.weight", True)], f"{p}.output.dense"
            ),
            _node(
                "SkipLayerNormalization",
                [
                    f"{p}.output.dense",
                    f"{p}.attention.output",
                    weight(f"{p}.output.LayerNorm.weight"),
                    weight(f"{p}.output.LayerNorm.bias"),
                    weight(f"{p}.output.dense.bias"),
                ],
                f"{p}.output",
                epsilon=eps,
            ),
        ]
        hidden = f"{p}.output"
    nodes += _pooling_nodes(hidden, mask, pooling, const)

    model = onnx_proto.model(
        nodes,
        initializers,
        [onnx_proto.value_info(name, onnx_proto.INT32, ["batch", "sequence"]) for name in INPUTS],
        [onnx_proto.value_info(OUTPUT, onnx_proto.FLOAT, ["batch", config.hidden_size])],
        {"": _OPSET, _MS: 1},
        name="bsc-bert",
    )
    return BertGraph(model, external, config.hidden_size)


def _pooling_nodes(
    hidden: str, mask: str, pooling: Pooling, const: Callable[[str, npt.NDArray[Any]], str]
) -> list[bytes]:
    """Nodes reducing (batch, sequence, hidden) token vectors to the (batch, hidden) `OUTPUT`."""
    if pooling == "cls":
        zero, one = (
            const("pool.zero", np.array([0], dtype=np.int64)),
            const("pool.one", np.array([1], dtype=np.int64)),
        )
        return [
            _node(
                "Slice", [hidden, zero, one, one], "pool.first"
            ),  # token 0 of axis 1, kept as (batch, 1, hidden)
            _node("Squeeze", ["pool.first", one], OUTPUT),
        ]
    # sentence-transformers: sum(token * mask) / clamp(sum(mask), min=1e-9).
    return [
        _node("Cast", [mask], "pool.mask", to=onnx_proto.FLOAT),
        _node(
            "Unsqueeze", ["pool.mask", const("pool.last_axis", np.array([-1], dtype=np.int64))], "pool.mask3"
        ),
        _node("Mul", [hidden, "pool.mask3"], "pool.masked"),
        _node(
            "ReduceSum",
            ["pool.masked", const("pool.axis", np.array([1], dtype=np.int64))],
            "pool.sum",
            keepdims=0,
        ),
        _node("ReduceSum", ["pool.mask3", "pool.axis"], "pool.count", keepdims=0),
        _node(
            "Max",
            ["pool.count", const("pool.min_count", np.array(1e-9, dtype=np.float32))],
            "pool.denominator",
        ),
        _node("Div", ["pool.sum", "pool.denominator"], OUTPUT),
    ]
