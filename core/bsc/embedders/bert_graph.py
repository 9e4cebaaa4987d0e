"""An ONNX graph of a BERT encoder plus sentence pooling, built straight from safetensors weights.

No torch and no export step: the weights are read with NumPy (`bsc.embedders.safetensors_file`) and wired into
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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from bsc.embedders import onnx_proto
from bsc.embedders.bert_checkpoint import BertConfig, Pooling, Weights
from bsc.embedders.int8_weights import quantize_columns

logger = logging.getLogger(__name__)

Quantize = Literal["int8"] | None
INPUTS = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT = "sentence_embedding"
# Opset 18 (ReduceMean with axes as an input) is read by every onnxruntime >= 1.14; contrib ops live in
# their own domain.
_OPSET = 18
_MS = "com.microsoft"
# External-data location of the weights; never opened, since every such tensor is supplied in memory.
_IN_MEMORY = "bsc-weights-in-memory"


def _node(op: str, inputs: list[str], output: str, **attributes: int | float) -> bytes:
    domain = _MS if op in _CONTRIB_OPS else ""
    return onnx_proto.node(op, inputs, [output], name=output, domain=domain, attributes=attributes)


def _gelu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("BiasGelu", [x, bias], out)]


def _tanh_gelu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("FastGelu", [x, bias], out)]


def _relu(x: str, bias: str, out: str) -> list[bytes]:
    return [_node("Add", [x, bias], f"{out}.pre"), _node("Relu", [f"{out}.pre"], out)]


# Hugging Face's names for the feed-forward activation (bert_checkpoint.SUPPORTED_ACTIVATIONS) -> the fused
# nodes computing it with its bias.
_ACTIVATIONS: dict[str, Callable[[str, str, str], list[bytes]]] = {
    "gelu": _gelu,  # erf form, as torch.nn.functional.gelu
    "gelu_new": _tanh_gelu,
    "gelu_pytorch_tanh": _tanh_gelu,
    "relu": _relu,
}
_CONTRIB_OPS = {
    "EmbedLayerNormalization",
    "Attention",
    "QAttention",
    "DynamicQuantizeMatMul",
    "BiasGelu",
    "FastGelu",
}


@dataclass(frozen=True)
class BertGraph:
    """A serialized ONNX model and the weights it names but does not hold.

    Open it with `open_session`; the arrays must outlive the session, which reads them in place.
    """

    model: bytes
    external: dict[str, npt.NDArray[Any]]
    hidden_size: int


def open_session(graph: BertGraph, options: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU running `graph` with `options` (a SessionOptions)."""
    import onnxruntime as ort

    names = list(graph.external)
    options.add_external_initializers(
        names, [ort.OrtValue.ortvalue_from_numpy(graph.external[n]) for n in names]
    )
    return ort.InferenceSession(graph.model, options, providers=["CPUExecutionProvider"])


class _Builder:
    """Collects the nodes and initializers of one graph; one method per kind of layer."""

    def __init__(self, weights: Weights, config: BertConfig, quantize: Quantize) -> None:
        self.weights = weights
        self.config = config
        self.quantize = quantize
        self.nodes: list[bytes] = []
        self.initializers: list[bytes] = []
        self.external: dict[str, npt.NDArray[Any]] = {}
        self._consts: set[str] = set()

    def const(self, name: str, value: npt.NDArray[Any]) -> str:
        """A small constant stored in the graph itself (once, however often it is asked for)."""
        if name not in self._consts:
            self._consts.add(name)
            self.initializers.append(onnx_proto.tensor(name, value))
        return name

    def big(self, name: str, value: npt.NDArray[Any]) -> str:
        """A placeholder whose bytes onnxruntime takes from `external` (add_external_initializers):
        copying 90 MB of weights into the protobuf and parsing them back cost ~1 s at start-up."""
        self.external[name] = np.ascontiguousarray(value)
        self.initializers.append(
            onnx_proto.external_tensor(name, self.external[name].dtype, value.shape, _IN_MEMORY)
        )
        return name

    def weight(self, name: str) -> str:
        return self.big(name, self.weights[name])

    def add(self, op: str, inputs: list[str], output: str, **attributes: int | float) -> str:
        domain = _MS if op in _CONTRIB_OPS else ""
        self.nodes.append(
            onnx_proto.node(op, inputs, [output], name=output, domain=domain, attributes=attributes)
        )
        return output

    def linear(self, x: str, name: str, kernel: npt.NDArray[np.float32], bias: str | None, out: str) -> str:
        """``x @ kernel (+ bias)``; with int8 weights, onnxruntime quantises `x` per call."""
        if self.quantize is None:
            product = self.add(
                "MatMul", [x, self.big(f"{name}.kernel", kernel)], out if bias is None else f"{out}.mm"
            )
            return product if bias is None else self.add("Add", [product, bias], out)
        q, scale = quantize_columns(kernel)
        inputs = [x, self.big(f"{name}.kernel.int8", q), self.big(f"{name}.kernel.scale", scale)]
        return self.add("DynamicQuantizeMatMul", inputs + ([] if bias is None else ["", bias]), out)

    def layer_norm(self, x: str, ln: str, out: str) -> str:
        """LayerNorm over the last axis in plain ops, which onnxruntime runs as vectorised kernels: its
        fused (Skip)LayerNormalization CPU kernel measured about twice as slow as these ten nodes."""
        axis = self.const("ln.axis", np.array([-1], dtype=np.int64))
        eps = self.const("ln.epsilon", np.array(self.config.layer_norm_eps, dtype=np.float32))
        mean = self.add("ReduceMean", [x, axis], f"{out}.mean")
        centred = self.add("Sub", [x, mean], f"{out}.centred")
        square = self.add("Mul", [centred, centred], f"{out}.square")
        variance = self.add(
            "Add", [self.add("ReduceMean", [square, axis], f"{out}.var"), eps], f"{out}.var_eps"
        )
        inv_std = self.add("Reciprocal", [self.add("Sqrt", [variance], f"{out}.std")], f"{out}.inv_std")
        normed = self.add("Mul", [centred, inv_std], f"{out}.normed")
        scaled = self.add("Mul", [normed, self.weight(f"{ln}.weight")], f"{out}.scaled")
        return self.add("Add", [scaled, self.weight(f"{ln}.bias")], out)

    def attention(self, hidden: str, mask: str, p: str) -> str:
        """Multi-head self-attention with the query, key and value projections in one kernel."""
        parts = ("query", "key", "value")
        kernel = np.concatenate([self.weights[f"{p}.attention.self.{x}.weight"].T for x in parts], axis=1)
        bias = self.big(
            f"{p}.qkv.bias", np.concatenate([self.weights[f"{p}.attention.self.{x}.bias"] for x in parts])
        )
        out = f"{p}.attention.context"
        heads = self.config.num_heads
        # The raw (batch, sequence) 0/1 mask: padding may sit anywhere, not only at the end.
        if self.quantize is None:
            return self.add(
                "Attention", [hidden, self.big(f"{p}.qkv.kernel", kernel), bias, mask], out, num_heads=heads
            )
        q, scale = quantize_columns(kernel)
        quantized = f"{p}.attention.input"
        self.nodes.append(
            onnx_proto.node(
                "DynamicQuantizeLinear",
                [hidden],
                [quantized, f"{quantized}.scale", f"{quantized}.zero"],
                name=quantized,
            )
        )
        inputs = [quantized, self.big(f"{p}.qkv.kernel.int8", q), bias, f"{quantized}.scale"]
        inputs += [self.big(f"{p}.qkv.kernel.scale", scale), mask, f"{quantized}.zero"]
        return self.add("QAttention", inputs, out, num_heads=heads)


def build_bert_graph(transformer_dir: Path, *, pooling: Pooling, quantize: Quantize = None) -> BertGraph:
    """The encoder in `transformer_dir` with `pooling` on top, as a `BertGraph`.

    Args:
        transformer_dir: A Hugging Face BERT directory: ``config.json`` and ``*.safetensors``.
        pooling: ``"mean"`` (over the attention mask, as sentence-transformers' mean pooling) or
            ``"cls"`` (the first token's vector).
        quantize: None for float32 weights (sentence-transformers' vectors to float rounding), or
            ``"int8"``: the encoder's matrix products on int8 weights (`quantize_columns`) and int8
            activations quantised per call, several times faster and less exact.

    Raises:
        FileNotFoundError, NotImplementedError, ValueError: See `BertConfig.read`; also for missing or
            malformed weights.

    Example:
        >>> from bsc.embedders.local import packaged_minilm_path
        >>> sorted(build_bert_graph(packaged_minilm_path(), pooling="cls").external)[0]
        'embeddings.LayerNorm.bias'
    """
    config = BertConfig.read(transformer_dir)
    weights = Weights(transformer_dir)
    g = _Builder(weights, config, quantize)
    ids, types, mask = INPUTS
    g.nodes.append(
        onnx_proto.node(
            "EmbedLayerNormalization",
            [
                ids,
                types,
                g.weight("embeddings.word_embeddings.weight"),
                g.weight("embeddings.position_embeddings.weight"),
                g.weight("embeddings.token_type_embeddings.weight"),
                g.weight("embeddings.LayerNorm.weight"),
                g.weight("embeddings.LayerNorm.bias"),
            ],
            ["embeddings", "embeddings.mask_index"],
            name="embeddings",
            domain=_MS,
            attributes={"epsilon": config.layer_norm_eps},
        )
    )
    hidden = "embeddings"
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"
        context = g.attention(hidden, mask, p)
        dense = g.linear(
            context,
            f"{p}.attention.output.dense",
            weights[f"{p}.attention.output.dense.weight"].T,
            g.weight(f"{p}.attention.output.dense.bias"),
            f"{p}.attention.dense",
        )
        residual = g.add("Add", [dense, hidden], f"{p}.attention.residual")
        attended = g.layer_norm(residual, f"{p}.attention.output.LayerNorm", f"{p}.attention.output")
        # The intermediate bias is added by the fused activation node instead.
        intermediate = g.linear(
            attended,
            f"{p}.intermediate.dense",
            weights[f"{p}.intermediate.dense.weight"].T,
            None,
            f"{p}.intermediate.dense",
        )
        g.nodes += _ACTIVATIONS[config.hidden_act](
            intermediate, g.weight(f"{p}.intermediate.dense.bias"), f"{p}.intermediate"
        )
        output = g.linear(
            f"{p}.intermediate",
            f"{p}.output.dense",
            weights[f"{p}.output.dense.weight"].T,
            g.weight(f"{p}.output.dense.bias"),
            f"{p}.output.dense",
        )
        residual = g.add("Add", [output, attended], f"{p}.output.residual")
        hidden = g.layer_norm(residual, f"{p}.output.LayerNorm", f"{p}.output")
    g.nodes += _pooling_nodes(hidden, mask, pooling, g.const)

    model = onnx_proto.model(
        g.nodes,
        g.initializers,
        [onnx_proto.value_info(name, onnx_proto.INT32, ["batch", "sequence"]) for name in INPUTS],
        [onnx_proto.value_info(OUTPUT, onnx_proto.FLOAT, ["batch", config.hidden_size])],
        {"": _OPSET, _MS: 1},
        name="bsc-bert",
    )
    return BertGraph(model, g.external, config.hidden_size)


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
