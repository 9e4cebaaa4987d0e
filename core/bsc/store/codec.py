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
_HEADER_DTYPE = np.dtype(
    [("version", "u1"), ("flags", "u1"), ("deadline", "<f8"), ("norm", "<f4"), ("body", "<u4")]
)
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
    """Decoded entries as arrays, ready for `BinarySemanticCache.insert_encoded`."""

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
    n, fixed = len(blobs), _HEADER.size + 8 * words + dim
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    if n and lengths.min() < fixed:
        short = int(lengths.min())
        raise CacheFormatError(f"shared entry is {short} bytes, shorter than its {fixed}-byte layout")
    # The fixed-width parts of all entries as one array (one join, no per-entry struct calls).
    head = np.frombuffer(b"".join(blob[:fixed] for blob in blobs), dtype=np.uint8).reshape(n, fixed)
    fields = np.ascontiguousarray(head[:, : _HEADER.size]).view(_HEADER_DTYPE).reshape(n)
    wrong = fields["version"] != _VERSION
    if wrong.any():
        bad = int(fields["version"][wrong][0])
        raise CacheFormatError(f"shared entry has format version {bad}, expected {_VERSION}")
    body_ends = fixed + fields["body"].astype(np.int64)
    if (body_ends > lengths).any():
        raise CacheFormatError("shared entry's response runs past its end")
    responses: list[Response] = []
    metadata: list[Mapping[str, Any] | None] = []
    for blob, flags, end in zip(blobs, fields["flags"].tolist(), body_ends.tolist(), strict=True):
        try:
            body = blob[fixed:end]
            responses.append(bytes(body) if flags & _BYTES_RESPONSE else body.decode())
            decoded = json.loads(blob[end:]) if len(blob) > end else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise CacheFormatError(f"shared entry's response or metadata does not decode: {exc}") from None
        if decoded is not None and not isinstance(decoded, dict):
            raise CacheFormatError(
                f"shared entry's metadata is a {type(decoded).__name__}, expected an object"
            )
        metadata.append(None if decoded is None else freeze(decoded))
    code_end = _HEADER.size + 8 * words
    return DecodedRows(
        codes=np.ascontiguousarray(head[:, _HEADER.size : code_end]).view("<u8").astype(np.uint64),
        vectors=np.ascontiguousarray(head[:, code_end:]).view(np.int8),
        norms=fields["norm"].astype(np.float32),
        deadlines=fields["deadline"].astype(np.float64),
        responses=responses,
        metadata=metadata,
    )
