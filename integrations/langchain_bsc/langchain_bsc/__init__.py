"""LangChain integration of bsc: a semantic LLM cache and a question-level cache for chains.

Example:
    >>> from langchain_core.globals import set_llm_cache
    >>> from langchain_bsc import BinarySemanticLLMCache
    >>> set_llm_cache(BinarySemanticLLMCache())
    >>> set_llm_cache(None)
"""

__version__ = "0.1.0"

from langchain_bsc.keys import CacheKey, KeyFunction, default_cache_key
from langchain_bsc.llm_cache import BinarySemanticLLMCache
from langchain_bsc.runnable import SemanticCacheRunnable

__all__ = [
    "BinarySemanticLLMCache",
    "CacheKey",
    "KeyFunction",
    "SemanticCacheRunnable",
    "default_cache_key",
]
