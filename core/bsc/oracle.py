"""The encoder written plainly in NumPy: the reference the Rust encoder is tested against.

Never on the hot path. It implements the definition in ``docs/encoding.md`` with different machinery
(vectorised NumPy, BLAS, ``math.fsum``) from the Rust code, so agreement is evidence that the definition,
not one implementation, is what both compute.

Example:
    >>> import numpy as np
    >>> from bsc import oracle
    >>> oracle.encode(np.ones(8, dtype=np.float32), code_bits=64, seed=1).shape
    (1,)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["encode", "projection_matrix", "quantize", "unit_rows"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SQRT_HALF = 0.7071067811865476
_LN2 = 0.6931471805599453
_SERIES_DENOMINATORS = (23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0)
_TWO_POW_MINUS_52 = 2.0**-52


def _mix64(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser (uint64 arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _unit_symmetric(w: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
    return (w >> np.uint64(11)).astype(np.float64) * _TWO_POW_MINUS_52 - 1.0


def _ln_unit(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Natural log on (0, 1) with the exact operation sequence of the Rust `ln_unit`."""
    m, e = np.frexp(s)
    small = m < _SQRT_HALF
    m = np.where(small, m * 2.0, m)
    e = np.where(small, e - 1, e)
    t = (m - 1.0) / (m + 1.0)
    t2 = t * t
    p = np.full_like(t, 1.0 / _SERIES_DENOMINATORS[0])
    for d in _SERIES_DENOMINATORS[1:]:
        p = p * t2 + 1.0 / d
    out: npt.NDArray[np.float64] = e.astype(np.float64) * _LN2 + 2.0 * t * p
    return out


def projection_matrix(dim: int, code_bits: int, seed: int) -> npt.NDArray[np.float32]:
    """The ``(code_bits, dim)`` float32 Gaussian matrix: element (r, c) from Marsaglia's polar method
    driven by SplitMix64 counters keyed on (seed, r, c)."""
    with np.errstate(over="ignore"):
        rows = np.arange(code_bits, dtype=np.uint64)[:, None]
        cols = np.arange(dim, dtype=np.uint64)[None, :]
        row_key = _mix64(np.uint64(seed) + (rows + np.uint64(1)) * _GOLDEN)
        elem_key = _mix64(row_key ^ cols).ravel()
        out = np.empty(elem_key.shape, dtype=np.float32)
        pending = np.arange(elem_key.size)
        attempt = 0
        while pending.size:
            keys = elem_key[pending]
            u = _unit_symmetric(_mix64(keys + np.uint64(2 * attempt + 1) * _GOLDEN))
            v = _unit_symmetric(_mix64(keys + np.uint64(2 * attempt + 2) * _GOLDEN))
            s = u * u + v * v
            ok = (s > 0.0) & (s < 1.0)
            s_ok = s[ok]
            out[pending[ok]] = (u[ok] * np.sqrt((-2.0 * _ln_unit(s_ok)) / s_ok)).astype(np.float32)
            pending = pending[~ok]
            attempt += 1
    return out.reshape(code_bits, dim)


def encode(x: npt.ArrayLike, *, code_bits: int = 256, seed: int = 42) -> npt.NDArray[np.uint64]:
    """Codes of one embedding (1-D) or a batch (2-D): bit r = [exact <f32(x), P[r]> > 0], packed
    little-endian into uint64 words (bit r in word r // 64 at position r % 64)."""
    arr = np.asarray(x)
    single = arr.ndim == 1
    x32 = np.atleast_2d(arr).astype(np.float32)
    dim = x32.shape[1]
    p32 = projection_matrix(dim, code_bits, seed)
    x64, p64 = x32.astype(np.float64), p32.astype(np.float64)
    approx = x64 @ p64.T  # every product is exact in float64; only the summation rounds
    # |computed - exact| <= gamma_{dim} * sum|x_i p_i| <= gamma * |x| |p| for any summation order.
    unit = 2.0**-53
    gamma = dim * unit / (1.0 - dim * unit)
    bound = 1.001 * gamma * np.linalg.norm(x64, axis=1)[:, None] * np.linalg.norm(p64, axis=1)[None, :]
    bits = approx > 0.0
    for i, r in zip(*np.nonzero(~(np.abs(approx) > bound)), strict=True):
        bits[i, r] = math.fsum((x64[i] * p64[r]).tolist()) > 0.0
    packed = np.packbits(bits, axis=1, bitorder="little")  # byte j holds bits 8j..8j+7
    codes = packed.view("<u8").astype(np.uint64)
    return codes[0] if single else codes


def unit_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows scaled to unit length (float32), computed in float64: the reference for the Rust
    `rows::unit` (a float32 norm over- or underflows for components near 1e20 or 1e-25)."""
    wide = x.astype(np.float64)
    out: npt.NDArray[np.float32] = (wide / np.linalg.norm(wide, axis=-1, keepdims=True)).astype(np.float32)
    return out


def quantize(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """The int8 rerank copies of rows ``x`` (of `unit_rows`, scaled per row so the largest component is
    ±127, rounded half to even) and their norms: the reference for `BinaryEncoder.encode_rows`."""
    unit = unit_rows(x)
    peak = np.max(np.abs(unit), axis=1, keepdims=True)
    q8: npt.NDArray[np.int8] = np.rint(unit / peak * 127.0).astype(np.int8)
    return q8, np.linalg.norm(q8, axis=1).astype(np.float32)
