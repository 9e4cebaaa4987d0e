"""LangChain integration of bsc: a semantic LLM cache, a question-level cache for chains, a cache-aware
chat model that streams its hits, and an answer cache for LangChain 1.x agents.

`SemanticCacheMiddleware` needs the ``langchain`` package (``langchain-bsc[agents]``); it is imported
when first used, so the rest works with ``langchain-core`` alone.

Example:
    >>> from langchain_core.globals import set_llm_cache
    >>> from langchain_bsc import BinarySemanticLLMCache
    >>> set_llm_cache(BinarySemanticLLMCache())
    >>> set_llm_cache(None)
"""

from typing import TYPE_CHECKING, Any

from bsc.deprecation import deprecated_aliases

from langchain_bsc.chat_model import SemanticCacheChatModel
from langchain_bsc.hits import HIT_EVENT
from langchain_bsc.keys import PromptKey, PromptKeyFunction, default_prompt_key
from langchain_bsc.llm_cache import BinarySemanticLLMCache
from langchain_bsc.runnable import SemanticCacheRunnable
from langchain_bsc.tenancy import cache_namespace

if TYPE_CHECKING:
    from langchain_bsc.middleware import SemanticCacheMiddleware

__version__ = "0.1.0"

__all__ = [
    "HIT_EVENT",
    "BinarySemanticLLMCache",
    "PromptKey",
    "PromptKeyFunction",
    "SemanticCacheChatModel",
    "SemanticCacheMiddleware",
    "SemanticCacheRunnable",
    "__version__",
    "cache_namespace",
    "default_prompt_key",
]

# Old names, kept as deprecated aliases: the LlamaIndex integration used the same three for other types.
_deprecated = deprecated_aliases(
    __name__,
    {
        "CacheKey": ("PromptKey", PromptKey),
        "KeyFunction": ("PromptKeyFunction", PromptKeyFunction),
        "default_cache_key": ("default_prompt_key", default_prompt_key),
    },
)


def __getattr__(name: str) -> Any:
    if name == "SemanticCacheMiddleware":  # needs `langchain`, which langchain-core alone lacks
        from langchain_bsc.middleware import SemanticCacheMiddleware

        return SemanticCacheMiddleware
    return _deprecated(name)
