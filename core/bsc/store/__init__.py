"""Sharing one cache between processes: Redis holds the entries, each process a replica it searches locally.

`RedisStore` is the Redis side (keys, scripts, the change stream); `ReplicatedCache` is a
`bsc.BinarySemanticCache` kept in sync with it. ``SemanticCache(redis_url=...)`` wires both. The
``redis`` client (``pip install "bsc-cache[redis]"``) is imported only when a store is made.

Example:
    >>> from bsc import SemanticCache
    >>> cache = SemanticCache(redis_url="redis://127.0.0.1:6379/0")  # doctest: +SKIP
"""

from bsc.store.redis_store import RedisStore, StoreUnavailableError, redact_url
from bsc.store.replica import PutListener, ReplicaStats, ReplicatedCache

__all__ = [
    "PutListener",
    "RedisStore",
    "ReplicaStats",
    "ReplicatedCache",
    "StoreUnavailableError",
    "redact_url",
]
