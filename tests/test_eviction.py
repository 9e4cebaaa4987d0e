"""Eviction policies of `BinarySemanticCache(eviction=...)`: capacity, TTL first, persistence, determinism."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from bsc import BinarySemanticCache, CacheFormatError, SemanticCache
from bsc._native import xxh3_64
from bsc.cache import EVICTION_POLICIES

DIM = 16


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def churn(cache: BinarySemanticCache, seed: int, steps: int = 400) -> list[int]:
    """A seeded mix of puts and hits; returns the ids of the entries left, in id order."""
    rng = np.random.default_rng(seed)
    vectors = unit_rows(steps, seed)
    ids: list[int] = []
    for i in range(steps):
        if ids and rng.random() < 0.4:
            cache.touch(ids[int(rng.integers(len(ids)))])
        ids.append(cache.put(vectors[i], f"r{i}"))
        assert len(cache) <= cache.max_entries
    return sorted(i for i in ids if i in cache)


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_every_policy_holds_the_capacity_and_is_deterministic(policy: str) -> None:
    a = BinarySemanticCache(DIM, max_entries=25, eviction=policy)
    b = BinarySemanticCache(DIM, max_entries=25, eviction=policy)
    left = churn(a, seed=1)
    assert len(left) == 25 == len(a)
    assert left == churn(b, seed=1)
    assert a.stats().evictions == 400 - 25
    assert a.eviction == policy and a._index.eviction == policy


def test_policies_choose_differently() -> None:
    survivors = {
        p: tuple(churn(BinarySemanticCache(DIM, max_entries=25, eviction=p), seed=2))
        for p in EVICTION_POLICIES
    }
    assert len(set(survivors.values())) == len(EVICTION_POLICIES)


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_expired_entries_go_before_live_ones_under_every_policy(policy: str) -> None:
    clock = Clock()
    cache = BinarySemanticCache(DIM, max_entries=4, ttl=10.0, clock=clock, eviction=policy)
    v = unit_rows(6, seed=3)
    old = [cache.put(v[i], f"old{i}") for i in range(2)]
    clock.now += 8
    live = [cache.put(v[i], f"live{i}") for i in range(2, 4)]
    for i in live:
        cache.touch(i)
    clock.now += 5  # the first two have expired, the last two have not
    cache.put(v[4], "new4")
    cache.put(v[5], "new5")
    assert all(i not in cache for i in old)
    assert all(i in cache for i in live)
    assert cache.stats().expirations == 2 and cache.stats().evictions == 0


def test_diverse_keeps_the_newest_entries_that_sieve_and_lru_evict() -> None:
    # Ten entries, the eight oldest used once: LRU and SIEVE evict the 9th (unused, nearly the newest);
    # diverse's hand goes back to the oldest before it reaches the newest 40 % and evicts the 1st.
    v = unit_rows(11, seed=6)
    for policy, expected_gone in (("lru", 8), ("sieve", 8), ("diverse", 0)):
        cache = BinarySemanticCache(DIM, max_entries=10, eviction=policy)
        ids = [cache.put(v[i], f"r{i}") for i in range(10)]
        for i in range(8):
            assert cache.get(v[i]) is not None
        cache.put(v[10], "new")
        assert [i for i, x in enumerate(ids) if x not in cache] == [expected_gone], policy


def test_diverse_protects_a_new_entry_near_a_kept_one_as_if_it_had_a_hit() -> None:
    base = unit_rows(1, seed=4)[0]
    near = base + 0.05 * unit_rows(1, seed=5)[0]  # cosine ~0.999: within the hit radius of base
    for policy, kept in (("sieve", False), ("diverse", True)):
        cache = BinarySemanticCache(DIM, max_entries=4, eviction=policy)
        cache.put(base, "first wording")
        second = cache.put(near, "second wording")
        for x in unit_rows(6, seed=9):  # one-offs, more than the cache holds
            cache.put(x, "one-off")
        assert (second in cache) is kept, policy


def test_sieve_keeps_a_used_entry_through_a_scan_that_flushes_lru() -> None:
    v = unit_rows(60, seed=6)
    # One hit, then a scan of one-off entries longer than the cache: LRU flushes it, SIEVE's bit keeps it.
    for policy, survives in (("lru", False), ("sieve", True), ("diverse", True)):
        cache = BinarySemanticCache(DIM, max_entries=10, eviction=policy)
        hot = cache.put(v[0], "hot")
        assert cache.get(v[0]) is not None
        for i in range(1, 20):
            cache.put(v[i], f"scan{i}")
        assert (hot in cache) is survives, policy


def test_policy_state_costs_at_most_one_byte_an_entry() -> None:
    sizes = {}
    for policy in EVICTION_POLICIES:
        cache = BinarySemanticCache(DIM, max_entries=100, eviction=policy, rerank=0)
        cache.put_many(unit_rows(50, seed=7), ["r"] * 50)
        sizes[policy] = cache.stats().bytes_per_entry
    assert all(sizes[p] - sizes["lru"] == pytest.approx(1.0) for p in ("lfu", "sieve", "diverse"))


def test_bad_eviction_settings_are_refused() -> None:
    with pytest.raises(
        ValueError, match=r'eviction must be one of "lru", "lfu", "sieve", "diverse", got "LRU"'
    ):
        BinarySemanticCache(DIM, eviction="LRU")
    with pytest.raises(TypeError, match="eviction must be a str"):
        BinarySemanticCache(DIM, eviction=None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_policy_survives_a_snapshot_and_the_loaded_cache_evicts_the_same_way(
    policy: str, tmp_path: Path
) -> None:
    cache = BinarySemanticCache(DIM, max_entries=20, eviction=policy)
    churn(cache, seed=8, steps=60)
    path = tmp_path / "c.bsc"
    cache.save(path)
    a, b = BinarySemanticCache.load(path), BinarySemanticCache.load(path)
    assert a.eviction == policy and f"eviction='{policy}'" in repr(a)
    assert a._index.lru_order() == cache._index.lru_order()
    assert churn(a, seed=9, steps=50) == churn(b, seed=9, steps=50)
    if policy == "lru":  # LRU's whole state is the saved order: the original evicts identically
        assert churn(cache, seed=9, steps=50) == churn(BinarySemanticCache.load(path), seed=9, steps=50)


def test_eviction_can_be_changed_on_load_and_text_caches_pass_it(tmp_path: Path) -> None:
    path = tmp_path / "c.bsc"
    BinarySemanticCache(DIM, max_entries=5).save(path)
    assert BinarySemanticCache.load(path).eviction == "lru"
    assert BinarySemanticCache.load(path, eviction="sieve").eviction == "sieve"
    with pytest.raises(ValueError, match="eviction must be one of"):
        BinarySemanticCache.load(path, eviction="fifo")


def _rewrite_eviction_code(path: Path, code: int) -> None:
    """Sets the header's eviction field and re-seals the header checksum, as a writer would."""
    data = bytearray(path.read_bytes())
    at = struct.calcsize("<8sIIIIQIIQQQQIIddI")
    struct.pack_into("<I", data, at, code)
    table_end = 192 + 14 * 32
    struct.pack_into("<Q", data, 24, 0)
    struct.pack_into("<Q", data, 24, xxh3_64(bytes(data[:table_end])))
    path.write_bytes(bytes(data))


def test_files_from_before_the_policies_load_as_lru_and_unknown_codes_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.bsc"
    BinarySemanticCache(DIM, max_entries=5, eviction="diverse").save(path)
    _rewrite_eviction_code(path, 0)  # what every earlier version wrote in that (reserved) field
    assert BinarySemanticCache.load(path).eviction == "lru"
    _rewrite_eviction_code(path, 3)
    assert BinarySemanticCache.load(path).eviction == "diverse"
    _rewrite_eviction_code(path, 9)
    with pytest.raises(CacheFormatError, match="unknown eviction policy code 9"):
        BinarySemanticCache.load(path)


def test_text_cache_uses_and_keeps_the_policy(single_thread_default_embedder: object, tmp_path: Path) -> None:
    path = tmp_path / "t.bsc"
    cache = SemanticCache(single_thread_default_embedder, max_entries=2, eviction="sieve", path=path)
    for prompt in ("How do I reset my password?", "Where is my order?", "How do I cancel my plan?"):
        cache.update(prompt, "answer")
    assert len(cache) == 2 and cache.cache.eviction == "sieve"
    cache.save()
    assert SemanticCache(single_thread_default_embedder, path=path).cache.eviction == "sieve"


@pytest.mark.parametrize("policy", EVICTION_POLICIES)
def test_threads_mixing_lookups_and_updates_keep_the_capacity(policy: str) -> None:
    cache = BinarySemanticCache(DIM, max_entries=30, eviction=policy)
    vectors = unit_rows(200, seed=10)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            rng = np.random.default_rng(offset)
            for _ in range(300):
                v = vectors[int(rng.integers(len(vectors)))]
                hit = cache.get(v)
                if hit is None:
                    cache.put(v, "answer")
                else:
                    assert hit.similarity > 0.99  # only its own vector is that close
                assert len(cache) <= 30
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cache) == 30 == len(cache._index.lru_order())
    assert cache.stats().hits > 0 and cache.stats().evictions > 0
