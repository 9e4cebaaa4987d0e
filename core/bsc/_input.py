"""Validation of user input (embeddings, numeric settings): one place that says what was wrong and what
was expected. Wrong types are TypeErrors, wrong values ValueErrors; NumPy scalars count as numbers, bools
do not."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

_FLOAT_KINDS = "f"


def as_embeddings(x: Any, dim: int, *, ndim: int, what: str = "embedding") -> npt.NDArray[np.float32]:
    """Returns ``x`` as a C-contiguous float32 array of shape ``(dim,)`` (ndim=1) or ``(n, dim)`` (ndim=2).
    The values are checked where they are read, in Rust (`bsc._native`): NaN/inf and all-zero rows raise
    ValueError there, with the same wording.

    Raises:
        TypeError: ``x`` is not a numeric array (strings, objects, integers, booleans).
        ValueError: wrong number of dimensions, wrong length, or empty.
    """
    if isinstance(x, str | bytes):
        raise TypeError(f"expected a float array for the {what}, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"expected a rectangular float array for the {what}: {exc}") from None
    if arr.dtype.kind != _FLOAT_KINDS:
        raise TypeError(f"expected a float16/float32/float64 array for the {what}, got dtype {arr.dtype}")
    shape_hint = f"({dim},)" if ndim == 1 else f"(n, {dim})"
    if arr.ndim != ndim:
        raise ValueError(f"expected the {what} to have shape {shape_hint}, got shape {arr.shape}")
    if arr.shape[-1] != dim:
        raise ValueError(
            f"expected the {what} to have dimension {dim}, got {arr.shape[-1]} (shape {arr.shape})"
        )
    if arr.size == 0:
        raise ValueError(f"expected at least one {what}, got shape {arr.shape}")
    # NaN/inf and all-zero rows are refused by the Rust side, which reads every value anyway.
    return np.ascontiguousarray(arr, dtype=np.float32)


def as_int(value: object, name: str, *, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``: any integral number (``np.int64`` too) but not a bool.

    Raises:
        TypeError: not an integer (a float, a str, a bool).
        ValueError: outside ``[low, high]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    number = int(value)
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    return number


def as_float(value: object, name: str) -> float:
    """``value`` as a float: any real number (``np.float32`` too) but not a bool.

    Raises:
        TypeError: not a real number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)
