"""`bsc.embedders.safetensors_file.read_safetensors` against the reference ``safetensors`` library, and
its errors on files that are not well-formed safetensors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from bsc.embedders.safetensors_file import read_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def test_the_packaged_model_reads_as_the_safetensors_library_reads_it(minilm_path: Path) -> None:
    path = minilm_path / "model.safetensors"
    ours, theirs = read_safetensors(path), safetensors_numpy.load_file(path)
    assert sorted(ours) == sorted(theirs) and len(ours) > 100
    for name, expected in theirs.items():
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


def test_every_numpy_dtype_and_empty_and_scalar_tensors_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "f64": rng.standard_normal((3, 2)),
        "f32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "i32": np.arange(4, dtype=np.int32).reshape(2, 2),
        "i16": np.array([-7, 7], dtype=np.int16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.array([0, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "scalar": np.array(2.5, dtype=np.float32),
    }
    path = tmp_path / "all.safetensors"
    safetensors_numpy.save_file(tensors, path, metadata={"format": "np"})
    ours = read_safetensors(path)
    assert sorted(ours) == sorted(tensors)  # __metadata__ is not a tensor
    for name, expected in tensors.items():
        assert ours[name].dtype == expected.dtype and ours[name].shape == expected.shape, name
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)


def write_raw(path: Path, header: object, data: bytes = b"") -> Path:
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)
    return path


def test_bfloat16_is_widened_to_float32(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625], dtype=np.float32)  # exactly representable in bfloat16
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    path = write_raw(
        tmp_path / "bf16.safetensors", {"w": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}, bf16
    )
    out = read_safetensors(path)["w"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "do not fit"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "do not fit"),
        ({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "needs a dtype of"),
        ({"w": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "needs a dtype of"),
        ([1, 2], b"", "must be a JSON object"),
    ],
)
def test_a_malformed_header_is_a_value_error_naming_the_file_and_tensor(
    tmp_path: Path, header: object, data: bytes, message: str
) -> None:
    path = write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(ValueError, match=message) as info:
        read_safetensors(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x02", "shorter than its 8-byte header length"),
        (struct.pack("<Q", 10**6) + b"{}", "header length 1000000"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "not JSON"),
        (struct.pack("<Q", 1) + b"{", "not JSON"),
    ],
)
def test_a_file_that_is_not_safetensors_is_a_value_error(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=message):
        read_safetensors(path)
