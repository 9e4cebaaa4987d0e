"""LlamaIndex integration of bsc: a caching wrapper for any LLM, and a question-level cache for RAG.

Install the LLM cache before building indexes or engines (they read ``Settings.llm`` when built).

Example:
    >>> from llama_index.core import Settings
    >>> from llama_index.core.llms import MockLLM
    >>> from llamaindex_bsc import BinarySemanticCacheLLM
    >>> Settings.llm = BinarySemanticCacheLLM(llm=MockLLM())
"""

__version__ = "0.1.0"

from llamaindex_bsc.keys import CacheKey, KeyFunction, LLMCall, default_cache_key
from llamaindex_bsc.llm import BinarySemanticCacheLLM, install_llm_cache
from llamaindex_bsc.query_engine import SemanticCacheQueryEngine

__all__ = [
    "BinarySemanticCacheLLM",
    "CacheKey",
    "KeyFunction",
    "LLMCall",
    "SemanticCacheQueryEngine",
    "default_cache_key",
    "install_llm_cache",
]
