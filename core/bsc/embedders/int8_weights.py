"""Int8 weights for the encoder's matrix products, quantised in NumPy when the graph is built.

Each output column of a (in, out) kernel gets its own scale, ``max|column| / 63``, and is rounded
to int8 in [-63, 63]. Seven bits, not eight, because onnxruntime's int8 kernels on x86 CPUs
without VNNI multiply uint8 activations by int8 weights with ``vpmaddubsw``, whose 16-bit sums of
two products saturate beyond 32767 (255 * 127 * 2 does; 255 * 63 * 2 does not); this is the
``reduce_range`` choice of ``onnxruntime.quantization``. Doing it here instead of importing
``onnxruntime.quantization`` (which imports ``onnx``, ~2 s) keeps start-up fast.

Example:
    >>> import numpy as np
    >>> kernel = np.array([[0.5, -2.0], [-1.0, 1.0]], dtype=np.float32)
    >>> q, scale = quantize_columns(kernel)
    >>> q.tolist()
    [[31, -63], [-63, 31]]
    >>> bool(np.all(np.abs(q * scale - kernel) <= scale / 2))
    True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_LEVELS = 63


def quantize_columns(kernel: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-column int8 codes of `kernel` and their scales: ``kernel ~= q * scale``.

    A column of zeros gets scale 1 (and codes 0) rather than a division by zero.
    """
    peak = np.abs(kernel).max(axis=0)
    scale = np.where(peak > 0, peak / _LEVELS, 1.0).astype(np.float32)
    q = np.clip(np.rint(kernel / scale), -_LEVELS, _LEVELS).astype(np.int8)
    return q, scale
