"""The packed form of one cache entry in a shared store: fixed-width numbers, bytes and JSON, never pickle.

An entry is one binary string (a Redis hash value and a stream event field)::

    header  <BBdfI  version, flags, deadline (wall-clock seconds, 0 = none), norm of the int8 row,
                    length of the response
    code    code_bits / 8 bytes (the little-endian u64 words of the binary code)
    vector  dim bytes (the int8 copy of the unit embedding, for the exact-cosine rerank)
    response  UTF-8 text, or raw bytes when flag 1 is set
    metadata  the rest: JSON of the metadata object, or nothing for None

Decoding checks every length and type, so a corrupted or foreign value raises `bsc.CacheFormatError`
and nothing in the store is ever executed (the rules of `bsc.persistence` snapshots).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bsc.cache import Response, freeze
from bsc.persistence import CacheFormatError

__all__ = ["DecodedRows", "decode_entries", "encode_entry"]

_VERSION = 1
_HEADER = struct.Struct("<BBdfI")
_BYTES_RESPONSE = 1


def encode_entry(
    code: npt.NDArray[np.uint64],
    vector: npt.NDArray[np.int8],
    norm: float,
    response: Response,
    metadata: Mapping[str, Any] | None,
    deadline: float,
) -> bytes:
    """One entry's packed form; ``deadline`` is wall-clock seconds (0 for none).

    Example:
        >>> import numpy as np
        >>> blob = encode_entry(np.zeros(4, np.uint64), np.ones(3, np.int8), 1.7, "hi", None, 0.0)
        >>> decode_entries([blob], words=4, dim=3).responses
        ['hi']
    """
    if isinstance(response, str):
        body, flags = response.encode(), 0
    else:
        body, flags = bytes(response), _BYTES_RESPONSE
    meta = b"" if metadata is None else json.dumps(dict(metadata), separators=(",", ":")).encode()
    return b"".join(
        (
            _HEADER.pack(_VERSION, flags, deadline, norm, len(body)),
            code.astype("<u8", copy=False).tobytes(),
            vector.astype(np.int8, copy=False).tobytes(),
            body,
            meta,
        )
    )


@dataclass(frozen=True, slots=True)
class DecodedRows:
    """Decoded entries as arrays, ready for `BinarySemanticCache._insert_encoded`."""

    codes: npt.NDArray[np.uint64]
    vectors: npt.NDArray[np.int8]
    norms: npt.NDArray[np.float32]
    deadlines: npt.NDArray[np.float64]
    responses: list[Response]
    metadata: list[Mapping[str, Any] | None]


def decode_entries(blobs: Sequence[bytes], *, words: int, dim: int) -> DecodedRows:
    """Decodes packed entries of a cache with ``words`` u64 words a code and ``dim``-byte vectors.

    Raises:
        bsc.CacheFormatError: a value is truncated, of another version or layout, or its response or
            metadata does not decode.
    """
    fixed = _HEADER.size + 8 * words + dim
    codes = bytearray(8 * words * len(blobs))
    vectors = bytearray(dim * len(blobs))
    norms = np.empty(len(blobs), dtype=np.float32)
    deadlines = np.empty(len(blobs), dtype=np.float64)
    responses: list[Response] = []
    metadata: list[Mapping[str, Any] | None] = []
    code_len = 8 * words
    for i, blob in enumerate(blobs):
        if len(blob) < fixed:
            raise CacheFormatError(f"shared entry is {len(blob)} bytes, shorter than its {fixed}-byte layout")
        version, flags, deadline, norm, body_len = _HEADER.unpack_from(blob)
        if version != _VERSION:
            raise CacheFormatError(f"shared entry has format version {version}, expected {_VERSION}")
        if fixed + body_len > len(blob):
            raise CacheFormatError("shared entry's response runs past its end")
        codes[i * code_len : (i + 1) * code_len] = blob[_HEADER.size : _HEADER.size + code_len]
        vectors[i * dim : (i + 1) * dim] = blob[_HEADER.size + code_len : fixed]
        norms[i] = norm
        deadlines[i] = deadline
        body = blob[fixed : fixed + body_len]
        try:
            responses.append(bytes(body) if flags & _BYTES_RESPONSE else body.decode())
            meta = blob[fixed + body_len :]
            decoded = json.loads(meta) if meta else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise CacheFormatError(f"shared entry's response or metadata does not decode: {exc}") from None
        if decoded is not None and not isinstance(decoded, dict):
            raise CacheFormatError(
                f"shared entry's metadata is a {type(decoded).__name__}, expected an object"
            )
        metadata.append(None if decoded is None else freeze(decoded))
    return DecodedRows(
        codes=np.frombuffer(codes, dtype="<u8").astype(np.uint64).reshape(len(blobs), words),
        vectors=np.frombuffer(vectors, dtype=np.int8).reshape(len(blobs), dim),
        norms=norms,
        deadlines=deadlines,
        responses=responses,
        metadata=metadata,
    )
