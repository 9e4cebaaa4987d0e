"""bsc: a semantic cache for LLM calls built on 256-bit binary codes and Hamming search.

Example:
    >>> import numpy as np
    >>> from bsc import BinarySemanticCache
    >>> cache = BinarySemanticCache(dim=3)
    >>> _ = cache.put(np.array([0.9, 0.1, 0.0]), "42")
    >>> cache.get(np.array([0.9, 0.12, 0.0])).response
    '42'
"""

from bsc._native import BinaryEncoder
from bsc.cache import DEFAULT_RERANK, DEFAULT_THRESHOLD, BinarySemanticCache, CacheStats, Hit
from bsc.guard import FalseHitGuard
from bsc.persistence import CacheFormatError
from bsc.text_cache import SemanticCache, SemanticCacheStats, Verifier
from bsc.text_entry import TextHit

# The distribution's version (bsc-cache); tests check it against pyproject.toml and Cargo.toml.
__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RERANK",
    "DEFAULT_THRESHOLD",
    "BinaryEncoder",
    "BinarySemanticCache",
    "CacheFormatError",
    "CacheStats",
    "FalseHitGuard",
    "Hit",
    "SemanticCache",
    "SemanticCacheStats",
    "TextHit",
    "Verifier",
    "__version__",
]
