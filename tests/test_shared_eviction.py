"""A shared cache (real ``redis-server``) evicts by its ``eviction`` policy, globally, as a local one does.

"Honoured" in a shared setting: one policy per shared cache, pinned in Redis like ``max_entries``; when
the shared cache is full the put script evicts what the policy chooses over the uses of every process;
every replica then drops the same entries (their own indexes never evict).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from bsc.cache import EVICTION_POLICIES
from bsc.store import RedisStore
from bsc.store.replica import ReplicatedCache

redis = pytest.importorskip("redis")

DIM = 16


@pytest.fixture
def replicas(redis_server: Any) -> Iterator[Callable[..., ReplicatedCache]]:
    made: list[ReplicatedCache] = []

    def make(**options: Any) -> ReplicatedCache:
        cache = RedisStore(redis_server.url, name=options.pop("name", "evict")).open(DIM, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    unit: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return unit


def responses(cache: ReplicatedCache) -> set[str]:
    return {str(hit.response) for i in cache._index.lru_order() if (hit := cache.entry(i)) is not None}


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_a_shared_cache_evicts_what_its_policy_chooses_and_every_replica_agrees(
    policy: str, replicas: Any, redis_server: Any
) -> None:
    # One entry used once by another process, then a scan of one-off entries: LRU evicts the used one
    # first (its use is older than every one-off); LFU, SIEVE and diverse keep it through the scan.
    a, b = replicas(max_entries=6, eviction=policy), replicas(max_entries=6, eviction=policy)
    x = unit_rows(9, seed=1)
    a.put(x[0], "hot")
    b.sync()
    assert b.get(x[0]).response == "hot"
    b._flush_uses()  # what b's follower thread does every touch_interval
    for i in range(1, 9):  # one by one: each its own put and eviction decision
        a.put(x[i], f"one-off {i}")
    a.sync()
    b.sync()
    assert a.store.entry_count() == len(a) == len(b) == 6
    assert responses(a) == responses(b) == {str(r) for _, r in a.store.dump(a)}
    assert ("hot" in responses(a)) is (policy != "lru"), policy
    client = redis.Redis.from_url(redis_server.url)
    queued, states = client.zcard("bsc:{evict}:ord"), client.hlen("bsc:{evict}:st")
    assert (queued, states <= 6) == ((0, True) if policy == "lru" else (6, True))


def test_lfu_counts_uses_from_every_process(replicas: Any) -> None:
    a, b = replicas(max_entries=4, eviction="lfu"), replicas(max_entries=4, eviction="lfu")
    x = unit_rows(12, seed=2)
    a.put(x[0], "used by both")
    a.put(x[1], "used by a")
    b.sync()
    a.get(x[0])
    a.get(x[1])
    b.get(x[0])
    a._flush_uses()
    b._flush_uses()
    for i in range(2, 9):
        a.put(x[i], f"one-off {i}")
    a.sync()
    # Two uses survive two passes of the hand (2 -> 1 -> 0); one use only one.
    assert "used by both" in responses(a) and "used by a" not in responses(a)


def test_diverse_admits_a_paraphrase_of_an_entry_another_process_wrote_as_visited(
    replicas: Any, redis_server: Any
) -> None:
    a, b = replicas(max_entries=10, eviction="diverse"), replicas(max_entries=10, eviction="diverse")
    base = unit_rows(1, seed=3)[0]
    near = base + 0.05 * unit_rows(1, seed=4)[0]  # cosine ~0.999: within the hit radius
    a.put(base, "first wording")
    b.sync()
    second = b.put(near, "second wording")
    b.put(unit_rows(1, seed=5)[0], "unrelated")
    visited = redis.Redis.from_url(redis_server.url).hkeys("bsc:{evict}:st")
    assert [v.decode() for v in visited] == [b._uid_of[second]]


def test_one_policy_per_shared_cache(replicas: Any) -> None:
    replicas(max_entries=10, eviction="sieve")
    for other in ("lfu", "lru"):
        with pytest.raises(ValueError, match="made with other settings"):
            replicas(max_entries=10, eviction=other)
    replicas(max_entries=10, eviction="sieve")  # the same policy joins
    replicas(max_entries=10, name="other")  # LRU caches keep their settings string, so old ones join


def test_expired_entries_still_go_before_the_policy_evicts(replicas: Any) -> None:
    a = replicas(max_entries=3, ttl=1.0, eviction="diverse")
    x = unit_rows(5, seed=6)
    a.put(x[0], "old 0")
    a.put(x[1], "old 1")
    time.sleep(1.2)  # past the deadline (not a timing assert: any longer sleep gives the same result)
    a.put(x[2], "new 2")
    a.put(x[3], "new 3")
    a.put(x[4], "new 4")
    a.sync()
    assert responses(a) == {"new 2", "new 3", "new 4"} and a.store.entry_count() == 3


def test_one_shared_eviction_looks_at_1024_entries_at_most(replicas: Any, redis_server: Any) -> None:
    # Every entry visited: a full SIEVE pass would clear 1,100 bits inside one script (blocking Redis);
    # the bound clears 1,024 and evicts the last of them.
    a = replicas(max_entries=1100, eviction="sieve")
    a.put_many(unit_rows(1100, seed=7), [f"r{i}" for i in range(1100)])
    a.store.touch({uid: 0.0 for uid in a._by_uid}, "sieve")
    client = redis.Redis.from_url(redis_server.url)
    assert client.hlen("bsc:{evict}:st") == 1100
    a.put(unit_rows(1, seed=8)[0], "one more")
    assert a.store.entry_count() == 1100 and "r1023" not in responses(a) and "r1024" in responses(a)
    assert client.hlen("bsc:{evict}:st") == 1100 - 1024
