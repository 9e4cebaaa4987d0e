"""The process-wide default embedder: the packaged all-MiniLM-L6-v2 on bsc's Rust encoder, one thread."""

from __future__ import annotations

import threading

from bsc.embedders.native_bert import NativeEmbedder

_default: NativeEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> NativeEmbedder:
    """The shared `NativeEmbedder()` (packaged all-MiniLM-L6-v2, one thread), created on first call.

    One thread because the cache embeds one prompt per call, where more threads buy little and, on a
    loaded machine, wait for cores other processes hold.

    Example:
        >>> default_embedder() is default_embedder()
        True
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = NativeEmbedder()
        return _default
