"""A minimal writer of ONNX model files (protobuf wire format), enough for `bsc.embedders.bert_graph`.

Why not the ``onnx`` package: importing it takes ~2 s (its ``ml_dtypes`` dependency registers every
dtype at import), which alone would break the default embedder's start-up budget, and it adds ~35 MB
to an install for a job of a few dozen lines. The field numbers below are those of ``onnx.proto``
(stable since IR version 3); only the messages and fields the encoder graph uses are written.

Example:
    >>> relu = node("Relu", ["x"], ["y"])
    >>> graph = model([relu], [], [value_info("x", FLOAT, [2])], [value_info("y", FLOAT, [2])], {"": 17})
    >>> graph[:2]  # field 1 (ir_version), varint 8
    b'\\x08\\x08'
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

# TensorProto.DataType values.
FLOAT = 1
INT8 = 3
INT32 = 6
INT64 = 7
_DTYPES = {
    np.dtype(np.float32): FLOAT,
    np.dtype(np.int8): INT8,
    np.dtype(np.int32): INT32,
    np.dtype(np.int64): INT64,
}
# AttributeProto.AttributeType values.
_ATTR_FLOAT = 1
_ATTR_INT = 2
_TENSOR_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 values are sent as their 64-bit two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode("utf-8"))


def _float(field: int, value: float) -> bytes:
    return _varint(field << 3 | 5) + struct.pack("<f", value)


def node(
    op_type: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    name: str = "",
    domain: str = "",
    attributes: Mapping[str, int | float] | None = None,
) -> bytes:
    """A NodeProto; attribute values are int (INT) or float (FLOAT)."""
    out = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    out += _str(3, name) + _str(4, op_type)
    for key, value in (attributes or {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"attribute {key} of {op_type} must be int or float, got {type(value).__name__}")
        body = (
            _int(3, value) + _int(20, _ATTR_INT)
            if isinstance(value, int)
            else _float(2, value) + _int(20, _ATTR_FLOAT)
        )
        out += _bytes(5, _str(1, key) + body)
    return out + _str(7, domain)


def tensor(name: str, value: npt.NDArray[np.generic]) -> bytes:
    """A TensorProto holding `value` (float32, int8, int32 or int64) inline."""
    array = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
    return _tensor_header(name, array.dtype, array.shape) + _bytes(9, array.tobytes())


def external_tensor(name: str, dtype: np.dtype[np.generic], shape: Sequence[int], location: str) -> bytes:
    """A TensorProto whose data is elsewhere: onnxruntime takes it from ``add_external_initializers``."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    entries = (("location", location), ("offset", "0"), ("length", str(nbytes)))
    body = b"".join(_bytes(13, _str(1, k) + _str(2, v)) for k, v in entries)
    return _tensor_header(name, dtype, shape) + body + _int(14, _TENSOR_EXTERNAL)


def _tensor_header(name: str, dtype: np.dtype[np.generic], shape: Sequence[int]) -> bytes:
    if np.dtype(dtype) not in _DTYPES:
        raise TypeError(f"tensor {name}: dtype {dtype} is not float32, int8, int32 or int64")
    return b"".join(_int(1, int(d)) for d in shape) + _int(2, _DTYPES[np.dtype(dtype)]) + _str(8, name)


def value_info(name: str, elem_type: int, dims: Sequence[int | str]) -> bytes:
    """A ValueInfoProto of a tensor; a str dimension is symbolic (e.g. ``"batch"``)."""
    shape = b"".join(_bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in dims)
    tensor_type = _int(1, elem_type) + _bytes(2, shape)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def model(
    nodes: Sequence[bytes],
    initializers: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
    opsets: Mapping[str, int],
    *,
    name: str = "graph",
    ir_version: int = 8,
) -> bytes:
    """A serialized ModelProto: one graph and its opset imports (domain -> version)."""
    graph = b"".join(_bytes(1, n) for n in nodes) + _str(2, name)
    graph += b"".join(_bytes(5, t) for t in initializers)
    graph += b"".join(_bytes(11, i) for i in inputs) + b"".join(_bytes(12, o) for o in outputs)
    opset_imports = b"".join(
        _bytes(8, _str(1, domain) + _int(2, version)) for domain, version in opsets.items()
    )
    return _int(1, ir_version) + _str(2, "bsc") + _bytes(7, graph) + opset_imports
