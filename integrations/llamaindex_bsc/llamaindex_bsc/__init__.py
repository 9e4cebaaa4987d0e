"""LlamaIndex integration of bsc: a caching wrapper for any LLM, and a question-level cache for RAG.

Install the LLM cache before building indexes or engines (they read ``Settings.llm`` when built).

Example:
    >>> from llama_index.core import Settings
    >>> from llama_index.core.llms import MockLLM
    >>> from llamaindex_bsc import CachingLLM
    >>> Settings.llm = CachingLLM(llm=MockLLM())
"""

from bsc.deprecation import deprecated_aliases

from llamaindex_bsc.keys import CallKey, CallKeyFunction, LLMCall, default_call_key
from llamaindex_bsc.llm import CachingLLM, install_llm_cache
from llamaindex_bsc.query_engine import SemanticCacheQueryEngine

__version__ = "0.1.0"

__all__ = [
    "CachingLLM",
    "CallKey",
    "CallKeyFunction",
    "LLMCall",
    "SemanticCacheQueryEngine",
    "__version__",
    "default_call_key",
    "install_llm_cache",
]

# Old names, kept as deprecated aliases: BinarySemanticCacheLLM differed from LangChain's
# BinarySemanticLLMCache by word order only, and the LangChain integration used the key names for other types.
__getattr__ = deprecated_aliases(
    __name__,
    {
        "BinarySemanticCacheLLM": ("CachingLLM", CachingLLM),
        "CacheKey": ("CallKey", CallKey),
        "KeyFunction": ("CallKeyFunction", CallKeyFunction),
        "default_cache_key": ("default_call_key", default_call_key),
    },
)
