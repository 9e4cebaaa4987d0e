"""LangChain integration of bsc: a semantic LLM cache and a question-level cache for chains.

Example:
    >>> from langchain_core.globals import set_llm_cache
    >>> from langchain_bsc import BinarySemanticLLMCache
    >>> set_llm_cache(BinarySemanticLLMCache())
    >>> set_llm_cache(None)
"""

from bsc.deprecation import deprecated_aliases

from langchain_bsc.keys import PromptKey, PromptKeyFunction, default_prompt_key
from langchain_bsc.llm_cache import BinarySemanticLLMCache
from langchain_bsc.runnable import SemanticCacheRunnable

__version__ = "0.1.0"

__all__ = [
    "BinarySemanticLLMCache",
    "PromptKey",
    "PromptKeyFunction",
    "SemanticCacheRunnable",
    "__version__",
    "default_prompt_key",
]

# Old names, kept as deprecated aliases: the LlamaIndex integration used the same three for other types.
__getattr__ = deprecated_aliases(
    __name__,
    {
        "CacheKey": ("PromptKey", PromptKey),
        "KeyFunction": ("PromptKeyFunction", PromptKeyFunction),
        "default_cache_key": ("default_prompt_key", default_prompt_key),
    },
)
