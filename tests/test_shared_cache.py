"""A cache shared through a real redis-server: replicas, propagation, global capacity and TTL, faults."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bsc import BinarySemanticCache, SemanticCache
from bsc.store import RedisStore, ReplicatedCache, StoreUnavailableError, redact_url

WORKER = Path(__file__).with_name("shared_worker.py")
DIM = 16


def pool(n: int = 300) -> np.ndarray:
    return np.random.default_rng(1234).normal(size=(n, DIM)).astype(np.float32)


def run_worker(*args: str, timeout: float = 300) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Waits for a condition the replicas reach asynchronously (bounded; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def content(cache: ReplicatedCache) -> set[tuple[str, str | bytes]]:
    out = set()
    for entry_id in cache._index.lru_order():
        hit = cache.entry(entry_id)
        if hit is not None:
            out.add((hit.namespace, hit.response))
    return out


@pytest.fixture
def replicas(redis_server: Any) -> Iterator[Callable[..., ReplicatedCache]]:
    made: list[ReplicatedCache] = []

    def make(**options: Any) -> ReplicatedCache:
        store_keys = ("fail_open", "name", "stream_len", "timeout")
        store_options = {k: options.pop(k) for k in store_keys if k in options}
        cache = RedisStore(redis_server.url, **store_options).open(DIM, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


# ---------------------------------------------------------------- sharing
def test_an_entry_put_by_another_process_is_served_by_this_one(redis_server: Any, replicas: Any) -> None:
    out = run_worker("put", redis_server.url, "default", "50", "1000")
    assert out["entries"] == 50
    cache = replicas(max_entries=1000)  # bootstraps from Redis
    assert len(cache) == 50
    x = pool()
    assert cache.get(x[7] + 0.01).response == "shared 7"
    assert cache.get(x[7], namespace="other") is None


def test_a_put_reaches_a_running_replica_without_sync(replicas: Any) -> None:
    a, b = replicas(), replicas()
    x = pool()
    a.put(x[0], "from a", metadata={"k": [1, 2]})
    eventually(lambda: b.get(x[0]) is not None)  # the follower thread applies it
    hit = b.get(x[0])
    assert hit.response == "from a" and dict(hit.metadata) == {"k": [1, 2]}
    b.put(x[1], b"bytes from b", namespace="n2")
    a.sync()
    assert a.get(x[1], namespace="n2").response == b"bytes from b"


def test_delete_and_clear_in_one_process_leave_no_stale_hit_in_another(replicas: Any) -> None:
    a, b = replicas(), replicas()
    x = pool()
    ids = a.put_many(x[:20], [f"r{i}" for i in range(20)], namespace="ns1")
    a.put_many(x[:20], [f"s{i}" for i in range(20)], namespace="ns2")
    b.sync()
    assert b.get(x[3], namespace="ns1").response == "r3"
    assert a.delete(ids[3]) and not a.delete(ids[3])
    b.sync()
    assert b.get(x[3], namespace="ns1") is None
    b.clear("ns1")
    a.sync()
    assert all(a.get(v, namespace="ns1") is None for v in x[:20])
    assert a.get(x[5], namespace="ns2").response == "s5"
    a.clear()
    b.sync()
    assert len(b) == 0 and b.get(x[5], namespace="ns2") is None


def test_max_entries_is_global_and_evicts_the_least_recently_used(replicas: Any) -> None:
    a, b = replicas(max_entries=30), replicas(max_entries=30)
    x = pool()
    for i in range(20):  # one by one: each its own last-use time
        a.put(x[i], f"a{i}")
    b.sync()
    assert b.get(x[0]).response == "a0"  # a use, sent to the global LRU order within touch_interval
    b._flush_uses()  # (what the follower thread does every second)
    b.put_many(x[20:40], [f"b{i}" for i in range(20)])
    a.sync()
    assert len(a) == len(b) == a.store.entry_count() == 30
    assert content(a) == content(b) == a.store.dump(a)
    assert a.get(x[0]).response == "a0"  # used recently: kept
    assert a.get(x[1]) is None  # the oldest unused: evicted


def test_ttl_is_honoured_by_every_replica(replicas: Any) -> None:
    ttl = 3.0  # long enough for the first lookups to come before the deadline on a loaded machine
    a, b = replicas(ttl=ttl), replicas(ttl=ttl)
    x = pool()
    put_at = time.monotonic()
    a.put(x[0], "short-lived")
    b.sync()
    assert b.get(x[0]).response == "short-lived"
    time.sleep(max(0.0, put_at + ttl + 0.2 - time.monotonic()))
    assert a.get(x[0]) is None and b.get(x[0]) is None
    c = replicas(ttl=ttl)  # a replica starting now does not load the expired entry
    assert len(c) == 0


def test_other_settings_than_the_shared_cache_are_refused(redis_server: Any, replicas: Any) -> None:
    replicas(max_entries=100)
    with pytest.raises(ValueError, match="max_entries=100"):
        replicas(max_entries=200)
    with pytest.raises(ValueError, match="dim=16"):
        RedisStore(redis_server.url).open(32, max_entries=100)
    with pytest.raises(ValueError, match="model="):
        RedisStore(redis_server.url).open(DIM, max_entries=100, model="another-embedder")


def test_semantic_cache_shares_prompts_between_processes(
    redis_server: Any, single_thread_default_embedder: Any
) -> None:
    run_worker("text", redis_server.url, "chat")
    cache = SemanticCache(single_thread_default_embedder, store=RedisStore(redis_server.url, name="chat"))
    try:
        exact = cache.lookup("What is the capital of France?")
        assert exact is not None and exact.exact and exact.response == "Paris"
        assert dict(exact.metadata) == {"by": "writer"}
        paraphrase = cache.lookup("Which city is the capital of France?")
        assert paraphrase is not None and not paraphrase.exact and paraphrase.response == "Paris"
        assert cache.lookup("What is the capital of Spain?") is None
        cache.update("What is the capital of France?", "Paris, France")  # replaces the shared answer
        assert len(cache) == 1
        assert cache.lookup("What is the capital of France?").response == "Paris, France"
    finally:
        cache.cache.close()


def test_semantic_cache_takes_a_redis_url(redis_server: Any, single_thread_default_embedder: Any) -> None:
    a = SemanticCache(single_thread_default_embedder, redis_url=redis_server.url)
    b = SemanticCache(single_thread_default_embedder, redis_url=redis_server.url)
    a.update("How do I reset my password?", "Settings > Security")
    b.cache.sync()
    assert b.lookup("How do I reset my password?").exact
    a.cache.close()
    b.cache.close()
    with pytest.raises(ValueError, match="not both"):
        SemanticCache(single_thread_default_embedder, redis_url=redis_server.url, path="x.bsc")


# ---------------------------------------------------------------- faults
def test_redis_unreachable_at_start_raises_or_serves_locally(
    tmp_path: Path, redis_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from redis_server import RedisServer

    redis_server.stop()
    redis_server = RedisServer(tmp_path, password="hunter2")
    url = redis_server.url
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        RedisStore(url, timeout=1).open(DIM)
    with caplog.at_level(logging.WARNING, logger="bsc"):
        cache = RedisStore(url, fail_open=True, timeout=1).open(DIM)
        x = pool()
        cache.put(x[0], "local only")
        cache.put(x[1], "local too")
        assert cache.get(x[0]).response == "local only"
        stats = cache.replication()
        assert not stats.connected and stats.lost_writes == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "local replica" in warnings[0].getMessage()
    assert "hunter2" not in caplog.text and "hunter2" not in repr(cache)
    # Redis comes back: the replica reloads from it and its local-only entries are gone.
    redis_server.start()
    eventually(lambda: cache.replication().connected)
    assert len(cache) == 0
    cache.close()
    redis_server.stop()


def test_redis_stopping_mid_run_keeps_lookups_local_and_counts_lost_writes(
    redis_server: Any, replicas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    open_cache, strict = replicas(fail_open=True), replicas()
    x = pool()
    open_cache.put_many(x[:10], [f"r{i}" for i in range(10)])
    strict.sync()
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="bsc.store"):
        for i in range(10):
            assert open_cache.get(x[i]).response == f"r{i}"
            assert strict.get(x[i]).response == f"r{i}"
        for i in range(10, 15):
            open_cache.put(x[i], f"lost {i}")  # never raises
        open_cache.delete(open_cache.get(x[0]).id)
        open_cache.clear("nothing-here")
        with pytest.raises(StoreUnavailableError):
            strict.put(x[20], "refused")
        eventually(lambda: not strict.replication().connected)
    assert open_cache.replication().lost_writes == 7
    assert not open_cache.replication().connected
    messages = [r for r in caplog.records if r.name == "bsc.store.replica"]
    per_cache = {r.getMessage().endswith("until Redis is back") for r in messages}
    assert len(messages) == 2 and per_cache == {True, False}  # one warning per replica, not per call


def test_a_restart_empty_or_flushall_makes_replicas_converge_to_empty(
    redis_server: Any, replicas: Any
) -> None:
    a, b = replicas(), replicas()
    x = pool()
    a.put_many(x[:30], ["r"] * 30)
    b.sync()
    assert len(b) == 30
    redis_server.client().flushall()
    eventually(lambda: len(a) == 0 and len(b) == 0)  # noticed without any write
    a.put(x[0], "after flush")
    b.sync()
    assert content(b) == {("default", "after flush")}
    redis_server.restart()  # no persistence: comes back empty
    eventually(lambda: len(a) == 0 and len(b) == 0 and a.replication().connected)
    b.put(x[1], "after restart")
    a.sync()
    assert content(a) == {("default", "after restart")}
    assert a.get(x[0]) is None


def test_redis_back_at_an_earlier_state_makes_replicas_reload(
    redis_server: Any, replicas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = replicas(), replicas()
    x = pool()
    a.put(x[0], "kept")
    b.sync()
    roll_back = rollback_to_now(redis_server)
    a.put_many(x[1:4], ["lost"] * 3)
    b.sync()
    assert len(a) == len(b) == 4
    with caplog.at_level(logging.WARNING, logger="bsc.store"):
        roll_back()
        eventually(lambda: len(a) == len(b) == 1)  # noticed without any write
        assert "went back from change 2 to 1" in caplog.text
        # b, not following, then meets the changes after the earlier state: more than it had seen (the
        # first one's number comes again), then as many (the same last number, another change).
        for lost, later in ((x[1:4], x[5:7]), (x[7:9], x[9:12])):
            a.put_many(lost, ["lost again"] * len(lost))
            b.sync()
            b.close()
            roll_back()
            eventually(lambda: len(a) == 1)  # the writer's follower noticed first
            for i, v in enumerate(later):
                a.put(v, f"after {i}")
            b.sync()
            assert content(b) == {("default", "kept")} | {
                ("default", f"after {i}") for i in range(len(later))
            }
            assert content(a) == content(b)
            b = replicas()


def test_a_writer_that_puts_before_it_notices_a_rollback_gets_its_entries(
    redis_server: Any, replicas: Any
) -> None:
    writer = replicas()
    x = pool()
    writer.put(x[0], "kept")
    roll_back = rollback_to_now(redis_server)
    writer.put_many(x[1:4], ["lost"] * 3)
    writer.close()  # its follower stops: only the write itself can notice
    roll_back()
    # Redis hands out the change number after the earlier state, one this replica has applied already.
    ids = writer.put_many(x[5:7], ["after 0", "after 1"])
    assert [writer.entry(i).response for i in ids] == ["after 0", "after 1"]
    assert content(writer) == {("default", r) for r in ("kept", "after 0", "after 1")}


def rollback_to_now(redis_server: Any) -> Callable[[], None]:
    """Saves the cache's keys in Redis; the returned function puts them back, as a restart from an older
    snapshot, or a failover to a replica that lagged, would."""
    client = redis_server.client()
    saved = {key: client.dump(key) for key in client.scan_iter("bsc:*")}

    def roll_back() -> None:
        with client.pipeline(transaction=True) as pipe:
            for key in client.scan_iter("bsc:*"):
                pipe.delete(key)
            for key, value in saved.items():
                pipe.restore(key, 0, value)
            pipe.execute()

    return roll_back


def test_a_replica_that_fell_behind_the_trimmed_stream_rebuilds(replicas: Any) -> None:
    a = replicas(stream_len=100)
    b = replicas(stream_len=100)
    b.close()  # stops following: it falls behind
    x = np.random.default_rng(5).normal(size=(3000, DIM)).astype(np.float32)
    for i in range(0, 3000, 10):
        a.put_many(x[i : i + 10], [f"r{j}" for j in range(i, i + 10)])
    rebuilds = b.replication().rebuilds
    b.sync()
    assert b.replication().rebuilds > rebuilds
    assert content(b) == content(a) == a.store.dump(a)


@pytest.mark.slow
def test_concurrent_writers_converge_and_never_answer_across_namespaces(redis_server: Any) -> None:
    workers, ops = 4, 5000
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "mixed", redis_server.url, "mix", str(w), str(ops), str(workers)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(workers)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    store = RedisStore(redis_server.url, name="mix")
    reader = store.open(DIM, max_entries=400)
    truth = sorted([ns, str(r)] for ns, r in store.dump(reader))
    reader.close()
    assert len(truth) > 0
    for r in results:
        assert r["wrong"] == 0
        assert r["hits"] > 0
        assert r["replica"] == truth


def test_sigkill_mid_write_leaves_every_entry_with_its_event(redis_server: Any, replicas: Any) -> None:
    victim = subprocess.Popen(
        [sys.executable, str(WORKER), "forever", redis_server.url, "kill"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = redis_server.client()
    eventually(lambda: client.xlen("bsc:{kill}:log") >= 20, timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    # Replaying the whole stream must give exactly the entries Redis holds (none lost, none extra).
    live: set[bytes] = set()
    for _, fields in client.xrange("bsc:{kill}:log"):
        removed = fields[b"x"]
        live -= set(removed.split(b",")) if removed else set()
        live |= set(fields[b"u"].split(b",")) if fields.get(b"u") else set()
    stored = {uid for key in client.scan_iter("bsc:{kill}:e:*") for uid in client.hkeys(key)}
    assert stored == live and len(stored) == client.zcard("bsc:{kill}:lru")
    seqs = [int(f[b"s"]) for _, f in client.xrange("bsc:{kill}:log")]
    assert seqs == list(range(1, len(seqs) + 1)) and int(client.hget("bsc:{kill}:meta", "seq")) == len(seqs)
    cache = replicas(name="kill", max_entries=400)
    assert len(cache) == len(stored)


def test_a_corrupted_entry_in_redis_is_skipped_not_executed(
    redis_server: Any, replicas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a = replicas()
    x = pool()
    a.put_many(x[:3], ["a", "b", "c"])
    client = redis_server.client()
    key = next(iter(client.scan_iter("bsc:{default}:e:*")))
    uid = client.hkeys(key)[0]
    client.hset(key, uid, b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle, as an attacker would
    with caplog.at_level(logging.WARNING, logger="bsc.store"):
        b = replicas()
    assert len(b) == 2
    assert "skipping entry" in caplog.text


def test_an_event_of_only_corrupt_entries_is_skipped_and_every_replica_moves_on(
    redis_server: Any, replicas: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = replicas(), replicas()
    x = pool()
    a.put(x[0], "good0")
    b.sync()
    # A put whose one entry is not bsc's (a foreign or broken writer), through the store's own script.
    a.store.put("e" * 16, a._cfg, "default", a.max_entries, [(0.0, False, b"garbage")])
    with caplog.at_level(logging.WARNING, logger="bsc.store"):
        assert a.put(x[1], "good1") >= 0  # the writer applies the bad event on its way: no error
        b.sync()
        assert b.get(x[1]).response == "good1"  # the other replica went past it too
        c = replicas()  # and a new one loads around it
    assert {len(a), len(b), len(c)} == {2}
    assert "skipping entry" in caplog.text


def test_a_hung_redis_stalls_one_write_and_the_rest_stay_local_at_once(
    redis_server: Any, replicas: Any
) -> None:
    # A frozen host or a black-holed network: connections open, nothing answers. The first write waits
    # for the store's timeout (a hung Redis looks like a slow one until then); after it, writes must not
    # wait on the follower, which keeps trying Redis, each try taking a timeout.
    cache = replicas(fail_open=True, timeout=0.5)
    x = pool()
    cache.put_many(x[:5], [f"r{i}" for i in range(5)])
    redis_server.pause()
    try:
        cache.put(x[5], "first after the freeze")
        assert not cache.replication().connected
        slowest, i, until = 0.0, 6, time.monotonic() + 4.0  # spans several of the follower's tries
        while time.monotonic() < until:
            started = time.monotonic()
            cache.put(x[i], f"local {i}")
            cache.clear("another-namespace")
            slowest = max(slowest, time.monotonic() - started)
            assert cache.get(x[i]).response == f"local {i}"
            assert cache.get(x[0]).response == "r0"
            i += 1
            time.sleep(0.05)
        assert slowest < cache.store.timeout, f"a local write waited {slowest:.2f} s for Redis"
    finally:
        redis_server.resume()
    eventually(lambda: cache.replication().connected)
    assert cache.replication().lost_writes == i - 5 + (i - 6)  # the puts and the clears
    cache.put(x[i], "after")
    assert cache.get(x[i]).response == "after"
    # The local writes are gone with the reload. The first one timed out, but Redis may run it when it
    # wakes: a timeout cannot tell a write that never arrived from one whose answer did not.
    held = {r for _, r in content(cache)} - {"first after the freeze"}
    assert held == {f"r{j}" for j in range(5)} | {"after"}


def test_redis_out_of_memory_is_an_outage_for_fail_open_writes(redis_server: Any, replicas: Any) -> None:
    cache = replicas(fail_open=True)
    x = pool()
    cache.put(x[0], "stored")
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write now refused with OOM
    cache.put(x[1], "not in Redis")  # never raises: kept locally, counted as lost
    assert cache.replication().lost_writes == 1
    client.config_set("maxmemory", 0)
    eventually(lambda: cache.replication().connected)
    cache.put(x[2], "stored again")
    assert content(replicas()) == {("default", "stored"), ("default", "stored again")}


def test_an_unexpected_follower_error_is_logged_once_per_streak(
    replicas: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = replicas()
    follow = cache._follow_once
    calls = []

    def broken(interval: float) -> None:
        calls.append(interval)
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="bsc.store"):
        monkeypatch.setattr(cache, "_follow_once", broken)
        eventually(lambda: len(calls) >= 3)  # retried every second...
        monkeypatch.setattr(cache, "_follow_once", follow)
        time.sleep(1.5)  # ...recovers...
        monkeypatch.setattr(cache, "_follow_once", broken)
        eventually(lambda: len(calls) >= 5)  # ...and fails again
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all("a bug" in (r.exc_text or "") for r in errors)


# ---------------------------------------------------------------- configuration
def test_urls_are_checked_and_passwords_never_shown() -> None:
    assert redact_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(ValueError, match="scheme"):
        RedisStore("http://u:secret@h:1")
    with pytest.raises(ValueError, match=r"master-name") as info:
        RedisStore("redis+sentinel://u:secret@h:26379")
    assert "secret" not in str(info.value)
    with pytest.raises(ValueError, match="name"):
        RedisStore("redis://h:1", name="a{b}")
    store = RedisStore("redis+sentinel://:secret@127.0.0.1:1,127.0.0.1:2/mymaster/3")
    assert "secret" not in repr(store)
    assert type(store._client).__name__ == "Redis"  # a master_for client, connected lazily
    os.environ["BSC_REDIS_URL"] = "redis://127.0.0.1:1/0"
    try:
        assert RedisStore().url == "redis://127.0.0.1:1/0"
    finally:
        del os.environ["BSC_REDIS_URL"]


# ---------------------------------------------------------------- integrations
def test_langchain_caches_share_through_redis_and_fail_open(
    redis_server: Any, single_thread_default_embedder: Any
) -> None:
    from langchain_bsc import BinarySemanticLLMCache
    from langchain_core.outputs import Generation

    a = BinarySemanticLLMCache(redis_url=redis_server.url)
    b = BinarySemanticLLMCache(redis_url=redis_server.url)
    a.update("What is the capital of France?", "model=x", [Generation(text="Paris")])
    b._cache.cache.sync()
    assert b.lookup("Which city is the capital of France?", "model=x")[0].text == "Paris"
    assert b.lookup("Which city is the capital of France?", "model=y") is None
    redis_server.stop()
    a.update("What is 2 + 2?", "model=x", [Generation(text="4")])  # Redis down: never raises
    assert a.lookup("What is 2 + 2?", "model=x")[0].text == "4"
    a.clear()
    assert b.lookup("What is the capital of France?", "model=x")[0].text == "Paris"
    for cache in (a, b):
        cache._cache.cache.close()


def test_llamaindex_wrappers_share_through_redis(
    redis_server: Any, single_thread_default_embedder: Any
) -> None:
    from llama_index.core.llms import MockLLM
    from llamaindex_bsc import CachingLLM

    a = CachingLLM(MockLLM(max_tokens=3), redis_url=redis_server.url)
    b = CachingLLM(MockLLM(max_tokens=3), redis_url=redis_server.url)
    answer = a.complete("What is the capital of France?").text
    b.cache.cache.sync()
    assert len(b.cache) == 1
    assert b.complete("What is the capital of France?").text == answer
    assert b.cache.stats().exact_hits == 1
    for llm in (a, b):
        llm.cache.cache.close()


def test_a_sentinel_url_finds_the_master(tmp_path: Path, redis_server: Any) -> None:
    from redis_server import RedisServer

    sentinel = RedisServer(tmp_path, monitor=redis_server.port).start()
    try:
        a = RedisStore(f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0").open(DIM)
        b = RedisStore(redis_server.url).open(DIM)  # the master itself: the same cache
        x = pool()
        a.put(x[0], "via sentinel")
        b.sync()
        assert b.get(x[0]).response == "via sentinel"
        a.close()
        b.close()
    finally:
        sentinel.stop()


async def test_async_update_and_lookup_on_a_shared_cache(
    redis_server: Any, single_thread_default_embedder: Any
) -> None:
    a = SemanticCache(single_thread_default_embedder, redis_url=redis_server.url)
    b = SemanticCache(single_thread_default_embedder, redis_url=redis_server.url)
    await a.aupdate("What is the boiling point of water?", "100 °C")
    b.cache.sync()
    hit = await b.alookup("What is the boiling point of water?")
    assert hit is not None and hit.exact and hit.response == "100 °C"
    assert await b.alookup("What is the freezing point of water?") is None
    a.cache.close()
    b.cache.close()


def test_a_fork_while_the_replica_applies_a_peers_put_does_not_deadlock(redis_server: Any) -> None:
    # The follower holds the replica's applier lock while it applies and calls the text cache's
    # listener (which takes the text cache's lock); the fork hooks must take the locks in that order.
    script = f"""
import faulthandler, os, time
faulthandler.dump_traceback_later(60, exit=True)  # a deadlock ends the script with every thread's stack
from bsc import SemanticCache
from bsc.embedders import default_embedder
embedder = default_embedder()
here = SemanticCache(embedder, redis_url={redis_server.url!r})
peer = SemanticCache(embedder, redis_url={redis_server.url!r})
insert = here.cache.insert_encoded
def slow_insert(*args, **kwargs):  # a slow apply: the follower holds its lock meanwhile
    time.sleep(1.0)
    return insert(*args, **kwargs)
here.cache.insert_encoded = slow_insert
peer.update("What is the boiling point of water?", "100 °C")
time.sleep(0.3)  # here's follower is applying the peer's put
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
here.cache.sync()
print("forked", here.lookup("What is the boiling point of water?").response)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "forked 100 °C"


def test_importing_the_store_does_not_import_the_redis_client() -> None:
    code = "import sys, bsc, bsc.store, langchain_bsc; print('redis' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_equal_settings_written_differently_are_the_same_cache(replicas: Any) -> None:
    a, b = replicas(ttl=60), replicas(ttl=60.0)
    a.put(pool()[0], "same cache")
    b.sync()
    assert b.get(pool()[0]).response == "same cache"


def test_a_cluster_url_keeps_one_cache_on_one_slot(tmp_path: Path) -> None:
    import shutil

    from redis_server import RedisServer

    if RedisServer.binary is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server / redis-cli (Debian package redis-server) are not installed")
    nodes = [RedisServer(tmp_path, cluster=True).start() for _ in range(3)]
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-yes"],
            capture_output=True,
            check=True,
            timeout=60,
        )
        client = nodes[0].client()
        eventually(lambda: client.cluster("info")["cluster_state"] == "ok", timeout=60)
        a = RedisStore(f"redis+cluster://127.0.0.1:{nodes[0].port}", name="cl").open(DIM)
        b = RedisStore(f"redis+cluster://127.0.0.1:{nodes[1].port}", name="cl").open(DIM)
        x = pool()
        ids = a.put_many(x[:10], [f"r{i}" for i in range(10)], namespace="n")
        b.sync()
        assert b.get(x[3], namespace="n").response == "r3"
        a.delete(ids[3])
        b.sync()
        assert b.get(x[3], namespace="n") is None and len(b) == 9
        b.clear("n")
        a.sync()
        assert len(a) == 0
        a.close()
        b.close()
    finally:
        for node in nodes:
            node.stop()


def test_a_forked_worker_follows_the_stream_on_its_own(redis_server: Any, run_isolated: Any) -> None:
    out = run_isolated(
        f"""
        import os, time
        import numpy as np
        from bsc.store import RedisStore
        x = np.random.default_rng(3).normal(size=(2, 16)).astype(np.float32)
        cache = RedisStore({redis_server.url!r}).open(16)   # made before the fork, as with --preload
        writer = RedisStore({redis_server.url!r}).open(16)
        pid = os.fork()
        if pid == 0:
            deadline = time.monotonic() + 20
            while cache.get(x[0]) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            ok = cache.get(x[0]) is not None
            cache.put(x[1], "from the child")
            os._exit(0 if ok else 1)
        time.sleep(0.2)
        writer.put(x[0], "after the fork")
        _, status = os.waitpid(pid, 0)
        writer.sync()
        print(os.waitstatus_to_exitcode(status), writer.get(x[1]).response)
        """,
        timeout=60,
    )
    assert out.split() == ["0", "from", "the", "child"]


def test_a_codes_only_writer_gives_reranking_peers_the_int8_rows(replicas: Any) -> None:
    # The writer keeps no int8 rows itself (rerank=0), but encodes them for the store: a peer that
    # reranks scores the entry by exact cosine, as if it had stored the vector itself.
    writer, reader = replicas(rerank=0), replicas(rerank=10)
    x = pool(2)
    query = x[0] + 0.05 * x[1]
    writer.put_many(x, ["first", "second"], metadata=[{"n": 1}, None])
    reader.sync()
    local = BinarySemanticCache(DIM, rerank=10)
    local.put_many(x, ["first", "second"])
    got, want = reader.get(query), local.get(query)
    assert got is not None and want is not None
    assert (got.response, got.similarity, got.metadata) == ("first", want.similarity, {"n": 1})
    assert writer.stats().vector_bytes == 0 and reader.stats().vector_bytes == 2 * DIM
