"""The process-wide default embedder: the packaged all-MiniLM-L6-v2 on ONNX Runtime, one thread."""

from __future__ import annotations

import threading

from bsc.embedders.onnx_runtime import OnnxEmbedder

_default: OnnxEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> OnnxEmbedder:
    """The shared `OnnxEmbedder()` (packaged all-MiniLM-L6-v2, one thread), created on first call.

    One intra-op thread because the cache embeds one prompt per call, where more threads buy
    little and, on a loaded machine, spin against other processes.

    Example:
        >>> default_embedder() is default_embedder()
        True
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = OnnxEmbedder()
        return _default
