"""A NumPy reader of ``*.safetensors`` weight files, so the default embedder needs no ``safetensors``.

The format (documented by Hugging Face with the ``safetensors`` library) is: an unsigned 64-bit
little-endian header length ``n``; ``n`` bytes of UTF-8 JSON mapping each tensor name to its
``dtype``, ``shape`` and ``data_offsets`` ``[begin, end)`` (relative to the end of the header), plus an
optional ``__metadata__`` object; then the tensors' bytes, little-endian and C-ordered.

Example:
    >>> from bsc.embedders.local import packaged_minilm_path
    >>> tensors = read_safetensors(packaged_minilm_path() / "model.safetensors")
    >>> tensors["embeddings.word_embeddings.weight"].shape
    (30522, 384)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# The format's dtype names -> NumPy dtypes (little-endian). BF16 is widened to float32 on reading.
_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
    "BF16": "<u2",
}
# The format caps the header at 100 MB; a larger length means the file is not a safetensors file.
_MAX_HEADER = 100_000_000


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor in the safetensors file `path`, by name.

    Raises:
        ValueError: If the file is not a well-formed safetensors file (the message says what is wrong).
        OSError: If it cannot be read.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(_MAX_HEADER, size - 8):
            raise ValueError(
                f"{path}: not a safetensors file (header length {header_len} of a {size}-byte file)"
            )
        try:
            header = json.loads(f.read(header_len).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: the safetensors header is not JSON ({exc})") from exc
        # Read, not memory-mapped: a mapping of a file that is rewritten in place (a package upgrade
        # while the process runs) would crash the process on its next access.
        data = np.fromfile(f, dtype=np.uint8)
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header must be a JSON object")
    return {
        name: _tensor(path, name, entry, data) for name, entry in header.items() if name != "__metadata__"
    }


def _tensor(path: Path, name: str, entry: Any, data: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
    try:
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path}: tensor {name!r} needs a dtype of {', '.join(_DTYPES)}, a shape and data_offsets; "
            f"got {entry!r}"
        ) from exc
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not 0 <= begin <= end <= data.shape[0] or end - begin != expected or min(shape, default=0) < 0:
        raise ValueError(
            f"{path}: tensor {name!r} of shape {shape} ({entry['dtype']}) needs {expected} bytes, "
            f"its data_offsets [{begin}, {end}) do not fit the file's {data.shape[0]} data bytes"
        )
    array = data[begin:end].view(dtype).reshape(shape)
    if entry["dtype"] == "BF16":
        # bfloat16 is the top half of a float32.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array
