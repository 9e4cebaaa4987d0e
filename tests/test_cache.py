"""BinarySemanticCache: hits are right, eviction/TTL/delete/namespace rules hold, bad input stores nothing."""

from __future__ import annotations

import dataclasses
import gc
import math
import sys
import threading

import bsc
import numpy as np
import pytest
from bsc import BinarySemanticCache
from bsc.frozen import freeze
from bsc.thresholds import cosine_spread, radius_for, shortlist_radius, similarity_from_distance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DIM = 64


def unit(rng: np.random.Generator, n: int | None = None, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n or 1, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x if n else x[0]


def at_cosine(rng: np.random.Generator, x: np.ndarray, cos: float) -> np.ndarray:
    """A unit vector at exactly cosine ``cos`` to unit vector ``x``."""
    r = rng.standard_normal(x.shape).astype(np.float64)
    r -= (r @ x) * x
    r /= np.linalg.norm(r)
    return (cos * x + math.sqrt(1 - cos * cos) * r).astype(np.float32)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("rerank", [0, 10])
def test_paraphrase_hits_and_unrelated_misses(rerank: int) -> None:
    rng = np.random.default_rng(0)
    cache = BinarySemanticCache(DIM, threshold=0.9, rerank=rerank)
    stored = unit(rng, 200)
    cache.put_many(stored, [f"answer {i}" for i in range(200)])
    for i in range(0, 200, 10):
        hit = cache.get(at_cosine(rng, stored[i], 0.99))
        assert hit is not None and hit.response == f"answer {i}"
        assert hit.similarity > 0.9
    misses = sum(cache.get(unit(rng)) is None for _ in range(50))
    assert misses == 50
    s = cache.stats()
    assert (s.hits, s.misses) == (20, 50)
    assert s.hit_rate == pytest.approx(20 / 70)


def test_two_stage_decides_by_exact_cosine_at_the_threshold() -> None:
    rng = np.random.default_rng(1)
    cache = BinarySemanticCache(DIM, threshold=0.9, rerank=10)
    x = unit(rng)
    cache.put(x, "a")
    # int8 copies carry about 1e-3 of cosine error; stay clear of it.
    assert cache.get(at_cosine(rng, x, 0.92)) is not None
    assert cache.get(at_cosine(rng, x, 0.88)) is None
    hit = cache.get(at_cosine(rng, x, 0.95))
    assert hit is not None and hit.similarity == pytest.approx(0.95, abs=0.01)


def test_binary_mode_uses_the_calibrated_radius() -> None:
    rng = np.random.default_rng(2)
    cache = BinarySemanticCache(DIM, threshold=0.9, rerank=0)
    x = unit(rng)
    cache.put(x, "a")
    n, r = 256, radius_for(0.9, 256)
    hit = cache.search(x, k=1)[0]
    assert hit.distance == 0 and hit.similarity == 1.0
    # At cosine exactly 0.9 about half the queries land inside the radius: whatever is returned is within
    # it, with the SimHash estimate as its similarity, and the rest are misses.
    results = [cache.search(at_cosine(rng, x, 0.9), k=1) for _ in range(200)]
    hits = [h[0] for h in results if h]
    assert 0 < len(hits) < len(results)
    for h in hits:
        assert h.distance <= r
        assert h.similarity == pytest.approx(similarity_from_distance(h.distance, n))


def test_threshold_maps_to_hamming_radius_by_simhash_relation() -> None:
    assert radius_for(0.9, 256) == 36  # floor(256 * acos(0.9) / pi)
    assert radius_for(1.0, 256) == 0
    assert radius_for(0.0, 256) == 128
    assert similarity_from_distance(36, 256) >= 0.9 > similarity_from_distance(37, 256)
    assert cosine_spread(0.9, 256) == pytest.approx(0.03, abs=0.002)
    assert shortlist_radius(0.9, 256) > radius_for(0.9, 256)


def test_namespaces_are_isolated() -> None:
    rng = np.random.default_rng(3)
    cache = BinarySemanticCache(DIM)
    x = unit(rng)
    cache.put(x, "in a", namespace="a")
    assert cache.get(x, namespace="b") is None
    hit = cache.get(x, namespace="a")
    assert hit is not None and hit.namespace == "a"
    cache.put_many(unit(rng, 500), ["noise"] * 500, namespace="big")
    assert cache.get(x, namespace="a").response == "in a"  # type: ignore[union-attr]
    cache.clear("big")
    assert len(cache) == 1 and cache.namespaces() == ["a"]


def test_lru_eviction_keeps_recently_used_entries() -> None:
    rng = np.random.default_rng(4)
    cache = BinarySemanticCache(DIM, max_entries=3)
    xs = unit(rng, 4)
    ids = [cache.put(xs[i], str(i)) for i in range(3)]
    assert cache.get(xs[0]) is not None  # 0 is now the most recently used
    cache.put(xs[3], "3")  # evicts 1, the least recently used
    assert ids[1] not in cache
    assert cache.get(xs[1]) is None
    assert [cache.get(xs[i]).response for i in (0, 2, 3)] == ["0", "2", "3"]  # type: ignore[union-attr]
    assert cache.stats().evictions == 1
    assert len(cache) == 3


def test_lru_order_counts_every_hit_also_past_the_deferred_touch_buffer() -> None:
    # Hits record their use without the write lock; eviction must still see all of them, in order,
    # including more hits than the buffer holds (64) between two puts.
    rng = np.random.default_rng(12)
    cache = BinarySemanticCache(DIM, max_entries=100)
    xs = unit(rng, 130)
    ids = cache.put_many(xs[:100], [str(i) for i in range(100)])
    for i in range(70):
        assert cache.get(xs[i]) is not None
    assert cache._index.lru_order()[-70:] == ids[:70]  # the 70 just used, most recent last
    cache.put_many(xs[100:], [str(i) for i in range(100, 130)])  # evicts the 30 not used since
    assert all(i in cache for i in ids[:70]) and not any(i in cache for i in ids[70:])
    assert cache.stats().evictions == 30


def test_a_candidate_without_its_payload_yet_is_skipped_and_the_hit_is_the_one_kept_fresh() -> None:
    # Between a put's index insert and its payload's publication (or a delete's two steps), a lookup can
    # find an id whose payload is not there: it must answer with the next candidate and refresh that one.
    rng = np.random.default_rng(5)
    cache = BinarySemanticCache(DIM, threshold=0.5, max_entries=3)
    q = unit(rng)
    best, second, other = at_cosine(rng, q, 0.99), at_cosine(rng, q, 0.9), unit(rng)
    best_id = cache.put(best, "best")
    second_id = cache.put(second, "second")
    cache.put(other, "other")
    cache._payloads.forget([best_id])  # as if best were still being added
    hit = cache.get(q)
    assert hit is not None and (hit.id, hit.response) == (second_id, "second")
    cache._payloads.publish([best_id], ["best"], [None])
    cache.put(unit(rng), "new")  # evicts the least recently used: "other", not the hit
    assert second_id in cache and best_id in cache
    assert cache.stats().hits == 1


def test_ttl_expires_entries_with_an_injected_clock() -> None:
    rng = np.random.default_rng(5)
    clock = FakeClock()
    cache = BinarySemanticCache(DIM, ttl=10.0, clock=clock)
    old = unit(rng)
    cache.put(old, "old")
    clock.now += 5
    young = unit(rng)
    cache.put(young, "young")
    assert cache.get(old) is not None
    clock.now += 6  # old is 11 s old, young 6 s
    assert cache.get(old) is None
    assert cache.get(young).response == "young"  # type: ignore[union-attr]
    assert len(cache) == 1 and cache.stats().expirations == 1
    # The lookup that met only the expired entry counted one miss, not one per retry.
    assert (cache.stats().hits, cache.stats().misses) == (2, 1)
    clock.now += 10
    assert cache.purge_expired() == 1 and len(cache) == 0


def test_expired_nearest_entry_does_not_hide_a_live_match() -> None:
    rng = np.random.default_rng(6)
    clock = FakeClock()
    cache = BinarySemanticCache(DIM, ttl=10.0, clock=clock, rerank=0)
    x = unit(rng)
    cache.put(x, "expiring")
    clock.now += 5
    cache.put(at_cosine(rng, x, 0.995), "live")
    clock.now += 6
    assert cache.get(x).response == "live"  # type: ignore[union-attr]
    # The expired entry the lookup met is gone, and the lookup counted once, as a hit.
    assert len(cache) == 1 and cache.stats().expirations == 1
    assert (cache.stats().hits, cache.stats().misses) == (1, 0)


@pytest.mark.parametrize("rerank", [0, 10])
def test_delete_never_hides_another_live_match(rerank: int) -> None:
    rng = np.random.default_rng(7)
    cache = BinarySemanticCache(DIM, rerank=rerank)
    x = unit(rng)
    near = cache.put(x, "nearest")
    cache.put(at_cosine(rng, x, 0.99), "second")
    cache.put_many(unit(rng, 100), ["other"] * 100)
    assert cache.delete(near) is True
    assert cache.delete(near) is False
    assert cache.get(x).response == "second"  # type: ignore[union-attr]
    assert len(cache) == 101


def test_stale_id_does_not_delete_the_next_occupant() -> None:
    rng = np.random.default_rng(8)
    cache = BinarySemanticCache(DIM)
    a = cache.put(unit(rng), "a")
    cache.delete(a)
    b = cache.put(unit(rng), "b")
    assert a != b
    assert cache.delete(a) is False and b in cache


def test_metadata_is_returned_and_private() -> None:
    rng = np.random.default_rng(9)
    cache = BinarySemanticCache(DIM)
    x = unit(rng)
    meta = {"model": "m1"}
    cache.put(x, "a", metadata=meta)
    meta["model"] = "changed"
    hit = cache.get(x)
    assert hit is not None and hit.metadata == {"model": "m1"}
    with pytest.raises(TypeError):
        hit.metadata["model"] = "x"  # type: ignore[index]


def test_a_stale_id_never_deletes_a_later_occupant_of_its_slot_even_after_hundreds_of_reuses() -> None:
    # Capacity 1: every put evicts the previous entry and reuses its slot (ids repeated after 256
    # reuses when the generation was 8 bits; a stale id then deleted the live entry).
    rng = np.random.default_rng(81)
    cache = BinarySemanticCache(DIM, max_entries=1, rerank=0)
    ids = [cache.put(unit(rng), f"r{i}") for i in range(600)]
    assert len(set(ids)) == len(ids)
    live = ids[-1]
    assert not any(cache.delete(old) for old in ids[:-1])
    assert not any(cache.touch(old) or old in cache or cache.entry(old) for old in ids[:-1])
    hit = cache.entry(live)
    assert hit is not None and hit.response == "r599"


def test_memory_is_52_bytes_an_entry_in_binary_mode() -> None:
    rng = np.random.default_rng(10)
    cache = BinarySemanticCache(384, rerank=0)
    cache.put_many(unit(rng, 5000, 384), ["r"] * 5000, namespace="n")
    s = cache.stats()
    assert s.entries == 5000
    assert s.bytes_per_entry <= 52.01  # 32 code + 8 id + 12 slot, plus the namespace name once
    assert s.index_bytes_allocated >= s.index_bytes
    two_stage = BinarySemanticCache(384, rerank=10)
    two_stage.put_many(unit(rng, 100, 384), ["r"] * 100)
    assert two_stage.stats().bytes_per_entry <= 52.1 + 384


def test_put_many_and_search_return_ids_and_ordered_candidates() -> None:
    rng = np.random.default_rng(11)
    cache = BinarySemanticCache(DIM, threshold=0.8)
    x = unit(rng)
    ids = cache.put_many(np.stack([at_cosine(rng, x, c) for c in (0.85, 0.99, 0.93)]), ["c85", "c99", "c93"])
    assert len(set(ids)) == 3
    hits = cache.search(x, k=5)
    assert [h.response for h in hits] == ["c99", "c93", "c85"]
    assert cache.stats().hits == 0  # search is not a lookup


BAD_INPUTS = [
    (np.zeros(DIM + 1, dtype=np.float32), ValueError, "dimension"),
    (np.full(DIM, np.nan, dtype=np.float32), ValueError, "NaN or infinity"),
    (np.full(DIM, np.inf), ValueError, "NaN or infinity"),
    (np.zeros(DIM, dtype=np.float32), ValueError, "all-zero"),
    (np.ones(DIM, dtype=np.int64), TypeError, "float"),
    (np.array(["a"] * DIM), TypeError, "float"),
    ("a prompt", TypeError, "float array"),
    (np.ones((2, 3, DIM), dtype=np.float32), ValueError, "shape"),
    (np.ones((1, DIM), dtype=np.float32), ValueError, "shape"),
    (np.ones(0, dtype=np.float32), ValueError, "dimension"),
    ([[1.0, 2.0], [3.0]], ValueError, "rectangular"),
]


@pytest.mark.parametrize(("value", "error", "message"), BAD_INPUTS)
def test_bad_embedding_raises_and_stores_nothing(value: object, error: type[Exception], message: str) -> None:
    cache = BinarySemanticCache(DIM)
    with pytest.raises(error, match=message):
        cache.put(value, "r")  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        cache.get(value)  # type: ignore[arg-type]
    assert len(cache) == 0 and cache.stats().misses == 0


def test_bad_batches_store_nothing() -> None:
    rng = np.random.default_rng(12)
    cache = BinarySemanticCache(DIM)
    good = unit(rng, 3)
    bad = good.copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cache.put_many(bad, ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 responses"):
        cache.put_many(good, ["a", "b"])
    with pytest.raises(TypeError, match="response 1"):
        cache.put_many(good, ["a", 2, "c"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        cache.put_many(np.zeros((0, DIM), dtype=np.float32), [])
    with pytest.raises(TypeError, match="namespace"):
        cache.put(good[0], "a", namespace=3)  # type: ignore[arg-type]
    assert len(cache) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1.5},
        {"threshold": float("nan")},
        {"code_bits": 100},
        {"max_entries": 0},
        {"ttl": -1.0},
        {"rerank": -1},
        {"rerank": 2**64},
        {"rerank": 2**32 + 1},
        {"max_entries": 2**64},
        {"max_entries": 2**24},
        {"seed": 2**64},
        {"seed": -1},
    ],
)
def test_bad_parameters_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as info:
        BinarySemanticCache(DIM, **kwargs)  # type: ignore[arg-type]
    assert type(info.value) is ValueError  # not an OverflowError (a ValueError subclass would pass too)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": "0.9"},
        {"dim": "4"},
        {"dim": 4.0},
        {"ttl": True},
        {"max_entries": True},
        {"rerank": True},
        {"rerank": 2.0},
        {"seed": 1.5},
    ],
)
def test_parameters_of_the_wrong_type_raise_type_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        BinarySemanticCache(**{"dim": DIM, **kwargs})  # type: ignore[arg-type]


def test_numpy_scalars_are_accepted_as_settings_and_k_beyond_the_capacity_is_not_an_error() -> None:
    rng = np.random.default_rng(82)
    cache = BinarySemanticCache(
        np.int64(DIM), threshold=np.float32(0.9), rerank=np.int32(5), ttl=np.float64(9.0)
    )  # type: ignore[arg-type]
    x = unit(rng)
    cache.put(x, "a")
    assert cache.threshold == pytest.approx(0.9) and cache.dim == DIM and type(cache.dim) is int
    assert [h.response for h in cache.search(x, k=2**64)] == ["a"]
    with pytest.raises(TypeError):
        cache.search(x, k=True)  # type: ignore[arg-type]


def test_returned_metadata_is_json_serialisable_and_readers_cannot_change_the_stored_entry() -> None:
    import copy
    import json
    import pickle

    rng = np.random.default_rng(83)
    cache = BinarySemanticCache(DIM)
    x = unit(rng)
    cache.put(x, "a", metadata={"tags": ["x", {"deep": [1, 2]}], "n": 1})
    hit = cache.get(x)
    assert hit is not None and hit.metadata is not None
    assert json.loads(json.dumps(hit.metadata)) == {"tags": ["x", {"deep": [1, 2]}], "n": 1}
    tags = hit.metadata["tags"]
    for mutate in (
        lambda: tags.append("y"),
        lambda: tags.__setitem__(0, "z"),
        lambda: tags[1]["deep"].append(3),
        lambda: tags[1].update(deep=None),
        lambda: hit.metadata.__setitem__("n", 2),  # type: ignore[union-attr]
        lambda: hit.metadata.pop("n"),  # type: ignore[union-attr]
    ):
        with pytest.raises(TypeError):
            mutate()
    mine = copy.deepcopy(hit.metadata)
    mine["tags"][1]["deep"].append(3)  # a copy is the reader's to change
    assert pickle.loads(pickle.dumps(hit.metadata)) == hit.metadata
    again = cache.get(x)
    assert again is not None and again.metadata == {"tags": ["x", {"deep": [1, 2]}], "n": 1}


def test_metadata_nested_deeper_than_the_limit_is_refused_at_put_and_stores_nothing() -> None:
    from bsc.cache import MAX_METADATA_DEPTH

    rng = np.random.default_rng(84)
    cache = BinarySemanticCache(DIM)
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(990):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    with pytest.raises(ValueError, match="deeper than"):
        cache.put(unit(rng), "a", metadata=deep)
    assert len(cache) == 0
    ok: dict[str, object] = {}
    inner = ok
    for _ in range(MAX_METADATA_DEPTH - 1):
        inner["x"] = {}
        inner = inner["x"]  # type: ignore[assignment]
    cache.put(unit(rng), "b", metadata=ok)
    assert len(cache) == 1


def test_a_forged_rerank_norm_cannot_make_a_similarity_outside_minus_one_to_one() -> None:
    rng = np.random.default_rng(85)
    cache = BinarySemanticCache(DIM, threshold=0.5)
    x = unit(rng)
    cache.put(x, "a")
    hit = cache.get(x)
    assert hit is not None and -1.0 <= hit.similarity <= 1.0
    # The norms are computed from the rows by the index; a snapshot carrying others is refused.
    forged = dataclasses.replace(cache.to_snapshot(), norms=np.full(1, 1e-3, dtype=np.float32))
    with pytest.raises(bsc.CacheFormatError, match="norm"):
        BinarySemanticCache.from_snapshot(forged)


def test_non_contiguous_embeddings_work() -> None:
    rng = np.random.default_rng(13)
    wide = unit(rng, 10, 2 * DIM)
    view = wide[:, ::2]
    cache = BinarySemanticCache(DIM)
    cache.put_many(view, [str(i) for i in range(10)])
    for i in range(10):
        assert cache.get(np.ascontiguousarray(view[i])).response == str(i)  # type: ignore[union-attr]
    assert cache.get(np.asfortranarray(view)[3]).response == "3"  # type: ignore[union-attr]


def test_concurrent_get_put_delete_clear_never_returns_a_wrong_entry() -> None:
    rng = np.random.default_rng(14)
    vectors = unit(rng, 400)
    cache = BinarySemanticCache(DIM, threshold=0.95, max_entries=300)
    errors: list[BaseException] = []
    wrong: list[str] = []
    right: list[int] = []

    def worker(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for _ in range(600):
                i = int(r.integers(400))
                op = r.random()
                if op < 0.45:
                    hit = cache.get(vectors[i])
                    # Vectors are near-orthogonal: a hit for vector i can only be vector i's answer.
                    if hit is not None and hit.response != f"v{i}":
                        wrong.append(f"{i} -> {hit.response}")
                    elif hit is not None:
                        right.append(i)
                elif op < 0.9:
                    cache.put(vectors[i], f"v{i}")
                elif op < 0.99:
                    for h in cache.search(vectors[i], k=3):
                        cache.delete(h.id)
                else:
                    cache.clear()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not wrong, wrong[:5]
    assert right, "no get ever hit: the check above would pass vacuously"
    assert len(cache) <= 300
    for h in cache.search(vectors[0], k=50):
        assert h.id in cache


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "delete"]), st.integers(0, 19)), max_size=60))
def test_random_operations_agree_with_a_dict_model(ops: list[tuple[str, int]]) -> None:
    rng = np.random.default_rng(15)
    vectors = unit(rng, 20)
    cache = BinarySemanticCache(DIM, threshold=0.95, max_entries=8)
    model: dict[int, list[int]] = {}  # vector -> live ids (newest last)
    order: list[int] = []  # live ids, least recently used first
    for op, i in ops:
        if op == "put":
            new = cache.put(vectors[i], f"v{i}")
            if len(order) == 8:
                gone = order.pop(0)
                for ids in model.values():
                    if gone in ids:
                        ids.remove(gone)
            model.setdefault(i, []).append(new)
            order.append(new)
        elif op == "get":
            hit = cache.get(vectors[i])
            if model.get(i):
                assert hit is not None and hit.response == f"v{i}" and hit.id in model[i]
                order.remove(hit.id)
                order.append(hit.id)
            else:
                assert hit is None
        elif model.get(i):
            victim = model[i].pop(0)
            assert cache.delete(victim)
            order.remove(victim)
        assert len(cache) == len(order)
    assert sorted(order) == sorted(i for ids in model.values() for i in ids)


def test_concurrent_evicting_puts_never_yield_a_hit_below_the_threshold() -> None:
    # A put into a full cache reuses the evicted entry's handle and overwrites its rerank row; a reader
    # that validated the old entry must not score it with the new row.
    rng = np.random.default_rng(16)
    q = unit(rng)
    far = [at_cosine(rng, q, 0.85) for _ in range(4)]  # below the threshold
    near = at_cosine(rng, q, 0.999)
    cache = BinarySemanticCache(DIM, threshold=0.9, max_entries=1, rerank=10)
    stop = threading.Event()
    started = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                cache.put(far[i % 4], "far")
                cache.put(near, "near")
                started.set()
                if i % 50 == 0:
                    cache.clear()
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    # Every read below happens while the writer is between its first put and `stop`.
    assert started.wait(timeout=60), errors
    wrong = 0
    try:
        for _ in range(20_000):
            hit = cache.get(q)
            if hit is not None and hit.response != "near":
                wrong += 1
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert wrong == 0


def test_with_a_ttl_a_full_cache_evicts_expired_entries_before_live_ones() -> None:
    rng = np.random.default_rng(17)
    clock = FakeClock()
    cache = BinarySemanticCache(DIM, max_entries=2, ttl=10.0, clock=clock)
    a, b, d = unit(rng, 3)
    cache.put(a, "a")
    clock.now += 5
    cache.put(b, "b")
    assert cache.get(a) is not None  # a is now the most recently used...
    clock.now += 6  # ...but expired; b is live
    cache.put(d, "d")
    assert cache.get(b).response == "b"  # type: ignore[union-attr]
    assert cache.get(d).response == "d"  # type: ignore[union-attr]
    assert cache.stats().evictions == 0 and cache.stats().expirations == 1


def test_refused_writes_leave_a_full_cache_with_expired_entries_as_it_was() -> None:
    # Counts are checked before anything is touched: not even the expired entries a write sweeps to
    # make room go.
    rng = np.random.default_rng(19)
    clock = FakeClock()
    cache = BinarySemanticCache(DIM, max_entries=2, ttl=10.0, clock=clock)
    cache.put_many(unit(rng, 2), ["a", "b"])
    clock.now += 11  # both expired, still held
    rows = cache.encode_rows(unit(rng, 2))
    with pytest.raises(ValueError, match="2 rows, 1 responses"):
        cache.insert_encoded("default", rows, ["c"], [None])
    with pytest.raises(ValueError):
        cache.put_many(unit(rng, 2), ["c"])
    assert len(cache) == 2 and cache.stats().expirations == 0


def test_threshold_one_hits_only_the_identical_embedding_in_both_modes() -> None:
    rng = np.random.default_rng(18)
    x = unit(rng)
    for rerank in (0, 10):
        cache = BinarySemanticCache(DIM, threshold=1.0, rerank=rerank)
        cache.put(x, "same")
        assert cache.get(x) is not None
        assert cache.get(at_cosine(rng, x, 0.99)) is None


def test_metadata_is_deep_copied_and_must_be_json_compatible() -> None:
    rng = np.random.default_rng(19)
    cache = BinarySemanticCache(DIM)
    x = unit(rng)
    meta = {"tags": ["a"], "src": {"url": "u"}}
    cache.put(x, "r", metadata=meta)
    meta["tags"].append("changed")  # type: ignore[attr-defined]
    meta["src"]["url"] = "changed"  # type: ignore[index]
    assert cache.get(x).metadata == {"tags": ["a"], "src": {"url": "u"}}  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="metadata 1 must be JSON-compatible"):
        cache.put_many(unit(rng, 2), ["p", "q"], metadata=[None, {"when": object()}])
    assert len(cache) == 1  # nothing of the failed batch was stored


def test_search_rejects_a_non_positive_k_and_odd_namespaces() -> None:
    rng = np.random.default_rng(20)
    cache = BinarySemanticCache(DIM)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            cache.search(unit(rng), k=k)
    with pytest.raises(ValueError, match="lone surrogates"):
        cache.put(unit(rng), "r", namespace="\ud800")
    cache.put(unit(rng), "r", namespace="")  # the empty name is a namespace like any other
    assert cache.namespaces() == [""]


def test_get_takes_any_float_sequence_and_names_an_odd_namespace() -> None:
    # `get` answers a float32/float64 array and a str namespace in one Rust call; anything else takes
    # the general path, which converts or refuses it with the same answers and messages.
    rng = np.random.default_rng(22)
    cache = BinarySemanticCache(DIM)
    x = unit(rng)
    cache.put(x, "r", namespace="ns")

    class Name(str):
        pass

    strided = np.stack([x, -x], axis=1)[:, 0]  # a view with a stride of two values
    for query, namespace in (
        (x.tolist(), "ns"),
        (x.astype(np.float16), "ns"),
        (strided, "ns"),
        (x.astype(np.float64), "ns"),
        (x, Name("ns")),
    ):
        hit = cache.get(query, namespace=namespace)  # type: ignore[arg-type]
        assert hit is not None and hit.response == "r" and hit.namespace == "ns"
    with pytest.raises(TypeError, match="namespace"):
        cache.get(x, namespace=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lone surrogates"):
        cache.get(x, namespace="\ud800")
    assert (cache.stats().hits, cache.stats().misses) == (5, 0)


def test_put_takes_any_float_sequence_and_checks_namespace_and_response_like_its_general_path() -> None:
    # `put` stores a float32/float64 array with a str namespace, a str/bytes response and no metadata in
    # one Rust call; anything else takes the general path, which converts or refuses it as before.
    rng = np.random.default_rng(24)
    cache = BinarySemanticCache(DIM, max_entries=8)

    class Name(str):
        pass

    class Text(str):
        pass

    x = unit(rng)
    strided = np.stack([x, -x], axis=1)[:, 0]
    ids = []
    for embedding, response, namespace in (
        (x.tolist(), "list", "ns"),
        (x.astype(np.float16), "half", "ns"),
        (strided, "strided", "ns"),
        (x.astype(np.float64), b"bytes", "ns"),
        (x, Text("a str subclass"), Name("ns")),
    ):
        ids.append(cache.put(embedding, response, namespace=namespace))  # type: ignore[arg-type]
        entry, hit = cache.entry(ids[-1]), cache.get(x, namespace="ns")
        assert entry is not None and entry.response == response and entry.namespace == "ns"
        assert hit is not None and hit.similarity > 0.99
    for bad, error, message in (
        ({"namespace": 3}, TypeError, "namespace must be a str"),
        ({"namespace": "\ud800"}, ValueError, "lone surrogates"),
        ({"response": 3}, TypeError, "response 0 must be str or bytes"),
    ):
        with pytest.raises(error, match=message):
            cache.put(x, **{"response": "r", **bad})  # type: ignore[arg-type]
    assert len(cache) == 5
    for _ in range(5):  # two past the capacity: each evicts one of the first five
        cache.put(unit(rng), "new")
    assert len(cache) == 8 and cache.stats().evictions == 2
    assert sum(cache.entry(i) is None for i in ids) == 2


def test_ids_from_before_clear_do_not_name_later_entries() -> None:
    rng = np.random.default_rng(21)
    cache = BinarySemanticCache(DIM)
    old = cache.put(unit(rng), "old")
    cache.clear()
    new = cache.put(unit(rng), "new")
    assert old != new and old not in cache and cache.entry(old) is None
    assert cache.delete(old) is False and new in cache


@pytest.mark.parametrize("scale", [1e-25, 1e20])
def test_extreme_but_finite_embeddings_still_hit_in_both_modes(scale: float) -> None:
    rng = np.random.default_rng(22)
    x = (unit(rng) * scale).astype(np.float32)
    for rerank in (0, 10):
        cache = BinarySemanticCache(DIM, rerank=rerank)
        cache.put(x, "r")
        hit = cache.get(x)
        assert hit is not None and hit.similarity > 0.99


def test_concurrent_two_stage_hits_carry_their_own_rows_similarity_under_eviction() -> None:
    # The index owns each entry's int8 row: a hit's exact similarity is the cosine of the query with the
    # stored vector of that very entry, even while puts evict and reuse slots and deletes free them.
    rng = np.random.default_rng(41)
    vectors = unit(rng, 200)
    queries = vectors + 0.05 * unit(rng, 200)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cosines = np.einsum("ij,ij->i", vectors, queries)
    cache = BinarySemanticCache(DIM, threshold=0.9, max_entries=40, rerank=10)
    errors: list[BaseException] = []
    wrong: list[str] = []
    hits: list[int] = []

    def worker(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            for _ in range(500):
                i = int(r.integers(200))
                op = r.random()
                if op < 0.5:
                    hit = cache.get(queries[i])
                    if hit is None:
                        continue
                    if hit.response != f"v{i}" or abs(hit.similarity - cosines[i]) > 0.01:
                        wrong.append(f"{i}: {hit.response} at {hit.similarity:.4f}, want {cosines[i]:.4f}")
                    hits.append(i)
                elif op < 0.9:
                    cache.put(vectors[i], f"v{i}", metadata={"i": i})
                else:
                    for h in cache.search(queries[i], k=2):
                        cache.delete(h.id)
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not wrong, wrong[:5]
    assert hits, "no get ever hit: the check above would pass vacuously"
    assert len(cache) <= 40
    snap = cache.to_snapshot()
    assert len(snap.ids) == len(cache) and all(cache.entry(i) is not None for i in snap.ids.tolist())


def test_encode_rows_then_insert_encoded_stores_what_put_stores() -> None:
    # The seam a store uses (encode first, write elsewhere, insert later) gives the same entry as put.
    rng = np.random.default_rng(42)
    x = unit(rng, 3)
    direct, staged = BinarySemanticCache(DIM), BinarySemanticCache(DIM)
    direct.put_many(x, ["a", "b", "c"], metadata=[{"k": 1}, None, None])
    rows = staged.encode_rows(x)
    ids = staged.insert_encoded("default", rows, ["a", "b", "c"], [freeze({"k": 1}), None, None])
    for q in x:
        want, got = direct.get(q), staged.get(q)
        assert want is not None and got is not None
        assert (got.response, got.similarity, got.distance, got.metadata) == (
            want.response,
            want.similarity,
            want.distance,
            want.metadata,
        )
    assert sorted(ids) == sorted(staged.to_snapshot().ids.tolist())
    with pytest.raises(ValueError, match="3 rows, 2 responses"):
        staged.insert_encoded("default", rows, ["a", "b"], [None, None])
    assert len(staged) == 3  # nothing of the refused rows was stored


def test_a_snapshot_round_trips_into_an_equal_cache() -> None:
    rng = np.random.default_rng(43)
    cache = BinarySemanticCache(DIM, max_entries=10, ttl=30.0)
    ids = cache.put_many(unit(rng, 12), [f"r{i}" for i in range(12)], metadata=[{"i": i} for i in range(12)])
    cache.delete(ids[-1])
    cache.put(unit(rng), b"bytes", namespace="other")
    copy = BinarySemanticCache.from_snapshot(cache.to_snapshot())
    a, b = cache.to_snapshot(), copy.to_snapshot()
    for field in ("names", "responses", "metadata", "counters", "dim", "ttl", "eviction"):
        assert getattr(a, field) == getattr(b, field), field
    for field in ("counts", "codes", "ids", "handles", "lru", "expires", "free", "vectors", "norms"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert [cache.entry(i) for i in a.ids.tolist()] == [copy.entry(i) for i in a.ids.tolist()]
    # The next id and the next eviction are the same too.
    x = unit(rng)
    assert cache.put(x, "next") == copy.put(x, "next")


def test_a_cache_holds_one_reference_to_each_payload_and_lets_go_of_it() -> None:
    # The payloads live in the extension (kept by slot); every path that replaces or drops one must
    # release exactly the reference it took: delete, eviction, clear, a snapshot's copy, the cache itself.
    rng = np.random.default_rng(23)
    response, meta = "a response " * 10, {"k": "v"}
    base = sys.getrefcount(response)
    cache = BinarySemanticCache(DIM, max_entries=2)
    first = cache.put(unit(rng), response)
    assert sys.getrefcount(response) == base + 1
    assert cache.delete(first) and sys.getrefcount(response) == base
    cache.put(unit(rng), response, metadata=meta)
    cache.put(unit(rng), "other")
    cache.put(unit(rng), "evicts the first")
    assert sys.getrefcount(response) == base
    cache.put(unit(rng), response)
    copy = BinarySemanticCache.from_snapshot(cache.to_snapshot())
    assert sys.getrefcount(response) == base + 2
    cache.clear()
    assert sys.getrefcount(response) == base + 1
    del copy
    gc.collect()
    assert sys.getrefcount(response) == base
