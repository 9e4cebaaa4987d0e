"""Keeping tenants apart without changing prompts: a namespace per user, team or customer.

Two ways, both exact partitions (one tenant never gets another's answers):

- `cache_namespace` (a context manager over a contextvar) for `BinarySemanticLLMCache` and so for
  `SemanticCacheChatModel`, whose ``lookup(prompt, llm_string)`` carries no context of its own:
  ``with cache_namespace("acme"): model.invoke(...)``. It follows the call into LangChain's threads
  and asyncio tasks, and the runnable and the middleware honour it too.
- ``namespace_key="user_id"`` on `SemanticCacheRunnable` and `SemanticCacheMiddleware`: the value under
  that key in the call's ``config["configurable"]`` or ``config["metadata"]`` (or, in an agent, the
  runtime context) names the tenant.

Example:
    >>> with cache_namespace("acme"):
    ...     current_namespace()
    'acme'
    >>> current_namespace() is None
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["cache_namespace", "current_namespace", "namespace_from"]

_NAMESPACE: ContextVar[str | None] = ContextVar("bsc_cache_namespace", default=None)


@contextmanager
def cache_namespace(namespace: str) -> Iterator[None]:
    """Within the block, bsc's LangChain caches read and write ``namespace`` (a tenant's partition).

    Raises:
        TypeError: if ``namespace`` is not a str.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"namespace must be a str, got {type(namespace).__name__}")
    token = _NAMESPACE.set(namespace)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)


def current_namespace() -> str | None:
    """The namespace set by the innermost `cache_namespace` block, or None outside any."""
    return _NAMESPACE.get()


def namespace_from(key: str | None, *sources: Any) -> str | None:
    """The tenant named by ``key`` in the first source that has it, else `current_namespace()`.

    A source is a mapping (``config["configurable"]``, ``config["metadata"]``, a context dict) or an
    object with that attribute (a dataclass runtime context); None sources are skipped.

    Raises:
        TypeError: if the value found is not a str or an int.
    """
    if key is not None:
        for source in sources:
            if source is None:
                continue
            found = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
            if found is None:
                continue
            if isinstance(found, bool) or not isinstance(found, str | int):
                raise TypeError(
                    f"the namespace under {key!r} must be a str or an int, got {type(found).__name__}"
                )
            return str(found)
    return current_namespace()
