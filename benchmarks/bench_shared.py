"""A cache shared through Redis vs the in-process cache: lookup, propagation, bootstrap, memory, writes.

Embeddings are precomputed random unit vectors in 384 dimensions (the shape of all-MiniLM-L6-v2's; the
model is not run, so only the cache is timed). Hits query a stored vector plus small noise (cosine
~0.99), misses a fresh random vector. A real ``redis-server`` (Debian's) is started on a free
127.0.0.1 port with no persistence and stopped at the end.

- lookup: ``get`` p50/p99 on a `ReplicatedCache` (Redis-backed) vs a `BinarySemanticCache` holding the
  same entries, calls interleaved so both see the same machine noise; the ratio is the figure.
- propagation: another process puts 500+ entries one at a time; this process records when each one is
  applied to its replica (a lookup answers it from then on): p50/p99 of put-start -> applied.
- bootstrap: a new process opens the shared cache and answers its first lookup (imports excluded).
- memory: Redis ``INFO memory`` delta per entry, minus the response bytes (stream included).
- writes: puts/s from 1 and 4 processes, vs in-process ``put`` in the same run.

Usage:
    python benchmarks/bench_shared.py                  # 10k and 100k entries
    python benchmarks/bench_shared.py --million        # also bootstrap 1M entries (~2 GB of RAM)
    python benchmarks/bench_shared.py --peers --libssl-dir DIR   # only: vs redisvl and langchain-redis

``--peers`` compares lookup latency and Redis memory per entry with redisvl's ``SemanticCache`` and
langchain-redis's ``RedisSemanticCache`` on one redis-stack server (see ``shared_peers.py``) and writes
``benchmarks/results/shared_peers.json``; it skips with a one-line reason when a peer is missing.

Prints a table and writes ``benchmarks/results/shared.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shared.json"
DIM = 384
RESPONSE = "r" * 32  # a fixed-size response, subtracted from the memory per entry


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(samples), [50, 99])
    return float(p50), float(p99)


def fill(cache: Any, n: int) -> None:
    x = unit_rows(n, seed=1)
    for start in range(0, n, 5000):
        cache.put_many(x[start : start + 5000], [RESPONSE] * len(x[start : start + 5000]))


def lookup_latency(local: Any, shared: Any, n: int, calls: int = 2000) -> dict[str, float]:
    stored = unit_rows(n, seed=1)
    rng = np.random.default_rng(7)
    picks = rng.integers(0, n, size=calls)
    hits = stored[picks] + rng.normal(scale=0.004, size=(calls, DIM)).astype(np.float32)
    misses = unit_rows(calls, seed=8)
    queries = [hits[i // 2] if i % 2 == 0 else misses[i // 2] for i in range(calls)]
    times: dict[str, list[float]] = {"local": [], "shared": []}
    found = {"local": 0, "shared": 0}
    for q in queries[:100]:  # warm-up
        local.get(q)
        shared.get(q)
    for i, q in enumerate(queries):
        order = (("local", local), ("shared", shared)) if i % 2 else (("shared", shared), ("local", local))
        for name, cache in order:
            start = time.perf_counter()
            hit = cache.get(q)
            times[name].append((time.perf_counter() - start) * 1e6)
            found[name] += hit is not None
    assert found["local"] == found["shared"], found
    lp50, lp99 = percentiles(times["local"])
    sp50, sp99 = percentiles(times["shared"])
    return {
        "entries": n,
        "local_p50_us": lp50,
        "local_p99_us": lp99,
        "shared_p50_us": sp50,
        "shared_p99_us": sp99,
        "ratio_p50": sp50 / lp50,
        "ratio_p99": sp99 / lp99,
        "hit_fraction": found["shared"] / calls,
    }


def child(role: str, url: str, name: str, count: int, extra: str) -> None:
    """Runs in a separate process (``--child``)."""
    from bsc.store import RedisStore

    store = RedisStore(url, name=name)
    if role == "writer":  # propagation: one put at a time, stamped with its start time
        cache = store.open(DIM, max_entries=1_000_000)
        x = unit_rows(count, seed=11)
        for i in range(count):
            cache.put(x[i], RESPONSE, metadata={"t": time.time()})
            time.sleep(0.004)
    elif role == "bootstrap":
        start = time.perf_counter()
        cache = store.open(DIM, max_entries=int(extra))
        hit = cache.get(unit_rows(1, seed=1)[0])
        print(
            json.dumps(
                {"seconds": time.perf_counter() - start, "entries": len(cache), "hit": hit is not None}
            )
        )
    elif role == "throughput":
        cache = store.open(DIM, max_entries=1_000_000)
        x = unit_rows(count, seed=int(extra))
        ready = store._client.incr(f"bench:{name}:ready")
        del ready
        while int(store._client.get(f"bench:{name}:go") or 0) == 0:
            time.sleep(0.001)
        start = time.perf_counter()
        for i in range(count):
            cache.put(x[i], RESPONSE)
        print(json.dumps({"seconds": time.perf_counter() - start, "puts": count}))
    cache.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(err)
    return json.loads(out.strip().splitlines()[-1]) if out.strip() else {}


def propagation(url: str, puts: int) -> dict[str, float]:
    from bsc.store import RedisStore

    cache = RedisStore(url, name="propagation").open(DIM, max_entries=1_000_000)
    delays: list[float] = []

    def applied(namespace: str, ids: list[int], metadata: list[Any]) -> None:
        now = time.time()
        delays.extend((now - m["t"]) * 1000 for m in metadata if m is not None and "t" in m)

    cache.subscribe(applied)
    finish(spawn("writer", url, "propagation", str(puts), ""))
    deadline = time.monotonic() + 30
    while len(delays) < puts and time.monotonic() < deadline:
        time.sleep(0.01)
    cache.close()
    p50, p99 = percentiles(delays)
    return {"puts": puts, "received": len(delays), "p50_ms": p50, "p99_ms": p99, "max_ms": max(delays)}


def throughput(url: str, processes: int, puts: int) -> dict[str, float]:
    name = f"writes{processes}"
    procs = [spawn("throughput", url, name, str(puts), str(100 + p)) for p in range(processes)]
    from bsc.store import RedisStore

    client = RedisStore(url, name=name)._client
    while int(client.get(f"bench:{name}:ready") or 0) < processes:
        time.sleep(0.01)
    client.set(f"bench:{name}:go", 1)
    results = [finish(p) for p in procs]
    slowest = max(r["seconds"] for r in results)
    return {"processes": processes, "puts": processes * puts, "puts_per_s": processes * puts / slowest}


def local_put_rate(puts: int) -> float:
    from bsc import BinarySemanticCache

    cache = BinarySemanticCache(DIM, max_entries=1_000_000)
    x = unit_rows(puts, seed=3)
    start = time.perf_counter()
    for i in range(puts):
        cache.put(x[i], RESPONSE)
    return puts / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--million", action="store_true", help="also bootstrap a 1M-entry cache")
    parser.add_argument("--propagation-puts", type=int, default=600)
    parser.add_argument("--write-puts", type=int, default=2000, help="puts per writing process")
    parser.add_argument("--peers", action="store_true", help="only the redisvl / langchain-redis comparison")
    parser.add_argument("--peers-entries", type=int, default=100_000)
    parser.add_argument("--peers-calls", type=int, default=1000, help="lookups per cache, half hits")
    parser.add_argument(
        "--libssl-dir", default=os.environ.get("BSC_LIBSSL_DIR"), help="directory holding libssl.so.1.1"
    )
    parser.add_argument("--child", nargs=5, metavar=("ROLE", "URL", "NAME", "COUNT", "EXTRA"))
    args = parser.parse_args()
    if args.child:
        role, url, name, count, extra = args.child
        child(role, url, name, int(count), extra)
        return

    sys.path.insert(0, str(ROOT / "tests"))
    if args.peers:
        peers(args.peers_entries, args.peers_calls, args.libssl_dir)
        return
    from bsc import BinarySemanticCache
    from bsc.store import RedisStore
    from redis_server import RedisServer

    results: dict[str, Any] = {"machine": os.uname().nodename, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        client = server.client()
        try:
            results["lookup"] = []
            results["bootstrap"] = []
            results["memory"] = []
            sizes = [10_000, 100_000] + ([1_000_000] if args.million else [])
            for n in sizes:
                name = f"lookup{n}"
                before = int(client.info("memory")["used_memory"])
                shared = RedisStore(server.url, name=name).open(DIM, max_entries=n)
                fill(shared, n)
                after = int(client.info("memory")["used_memory"])
                results["memory"].append(
                    {
                        "entries": n,
                        "bytes_per_entry": (after - before) / n,
                        "bytes_per_entry_without_response": (after - before) / n - len(RESPONSE),
                        "stream_events": int(client.xlen(f"bsc:{{{name}}}:log")),
                    }
                )
                if n <= 100_000:
                    local = BinarySemanticCache(DIM, max_entries=n)
                    fill(local, n)
                    results["lookup"].append(lookup_latency(local, shared, n))
                    del local
                shared.close()
                del shared
                results["bootstrap"].append(finish(spawn("bootstrap", server.url, name, "0", str(n))))
                print(f"done {n}", file=sys.stderr)
            # Memory of entries written one put at a time (one stream event each, stream at its cap).
            name = "single"
            before = int(client.info("memory")["used_memory"])
            single = RedisStore(server.url, name=name).open(DIM, max_entries=100_000)
            x = unit_rows(10_000, seed=5)
            for i in range(len(x)):
                single.put(x[i], RESPONSE)
            after = int(client.info("memory")["used_memory"])
            single.close()
            results["memory"].append(
                {
                    "entries": len(x),
                    "one_put_each": True,
                    "bytes_per_entry": (after - before) / len(x),
                    "bytes_per_entry_without_response": (after - before) / len(x) - len(RESPONSE),
                    "stream_events": int(client.xlen(f"bsc:{{{name}}}:log")),
                }
            )
            results["propagation"] = propagation(server.url, args.propagation_puts)
            results["writes"] = [throughput(server.url, p, args.write_puts) for p in (1, 4)]
            results["local_put_per_s"] = local_put_rate(args.write_puts)
        finally:
            server.stop()
    results["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    report(results)


def peers(n: int, calls: int, libssl_dir: str | None) -> None:
    """The ``--peers`` section: ours and the two peers on one redis-stack server, same vectors."""
    import shared_peers
    from bsc.store import RedisStore

    reason = shared_peers.missing(libssl_dir)
    if reason is not None:
        print(f"--peers skipped: {reason}")
        return
    stored = unit_rows(n, seed=1)
    rng = np.random.default_rng(7)
    hits = stored[rng.integers(0, n, size=calls // 2)]
    hits = hits + rng.normal(scale=0.004, size=hits.shape).astype(np.float32)
    misses = unit_rows(calls // 2, seed=8)
    queries = [q for pair in zip(hits, misses, strict=True) for q in pair]
    is_hit = [i % 2 == 0 for i in range(len(queries))]
    results: dict[str, Any] = {"machine": os.uname().nodename, "load_before": os.getloadavg(), "entries": n}
    with tempfile.TemporaryDirectory() as tmp:
        server = shared_peers.stack_server(Path(tmp), libssl_dir or "")
        client = server.client()
        try:
            before = int(client.info("memory")["used_memory"])
            start = time.perf_counter()
            ours = RedisStore(server.url, name="ours").open(DIM, max_entries=n)
            fill(ours, n)
            ours_load = time.perf_counter() - start
            ours_memory = (int(client.info("memory")["used_memory"]) - before) / n
            out = shared_peers.run(server.url, client, stored, RESPONSE, queries, is_hit, ours)
            ours.close()
            out["rows"]["ours"]["load_s"] = ours_load
            out["memory"]["ours"] = ours_memory
            results["modules"] = [m[b"name"].decode() for m in client.module_list()]
        finally:
            server.stop()
    results.update(out)
    results["load_after"] = os.getloadavg()
    (RESULTS.parent / "shared_peers.json").parent.mkdir(parents=True, exist_ok=True)
    (RESULTS.parent / "shared_peers.json").write_text(json.dumps(results, indent=2))
    report_peers(results)


def report_peers(r: dict[str, Any]) -> None:
    print(f"machine {r['machine']}, load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}, ", end="")
    print(f"{r['entries']:,} entries, modules {r['modules']}\n")
    print("| cache | hit p50 / p99 µs | miss p50 / p99 µs | Redis B/entry | wrong | load s |")
    print("|---|---|---|---|---|---|")
    ours = r["rows"]["ours"]

    def cell(row: dict[str, Any], kind: str) -> str:
        p50, p99 = row[f"{kind}_p50_us"], row[f"{kind}_p99_us"]
        if row is ours:
            return f"{p50:.0f} / {p99:.0f}"
        r50, r99 = p50 / ours[f"{kind}_p50_us"], p99 / ours[f"{kind}_p99_us"]
        return f"{p50:.0f} / {p99:.0f} ({r50:.1f}x / {r99:.1f}x)"

    for name, row in r["rows"].items():
        mem = r["memory"][name]
        mratio = "" if row is ours else f" ({mem / r['memory']['ours']:.1f}x)"
        print(
            f"| {name} | {cell(row, 'hit')} | {cell(row, 'miss')} | {mem:,.0f}{mratio} | "
            f"{row['wrong_answers']} | {row['load_s']:.1f} |"
        )


def report(r: dict[str, Any]) -> None:
    print(f"machine {r['machine']}, load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}\n")
    print("| entries | in-process p50 / p99 µs | Redis-backed p50 / p99 µs | ratio p50 / p99 |")
    print("|---|---|---|---|")
    for row in r["lookup"]:
        print(
            f"| {row['entries']:,} | {row['local_p50_us']:.0f} / {row['local_p99_us']:.0f} | "
            f"{row['shared_p50_us']:.0f} / {row['shared_p99_us']:.0f} | "
            f"{row['ratio_p50']:.2f}x / {row['ratio_p99']:.2f}x |"
        )
    p = r["propagation"]
    print(f"\npropagation over {p['received']} puts: p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms")
    for b in r["bootstrap"]:
        print(
            f"bootstrap {b['entries']:,} entries: first lookup after {b['seconds']:.2f} s (hit: {b['hit']})"
        )
    for m in r["memory"]:
        how = "one put each" if m.get("one_put_each") else "put_many"
        print(
            f"Redis memory, {m['entries']:,} entries ({how}, {m['stream_events']} stream events): "
            f"{m['bytes_per_entry_without_response']:.0f} B/entry without the response"
        )
    for w in r["writes"]:
        print(f"writes from {w['processes']} process(es): {w['puts_per_s']:,.0f} puts/s")
    print(f"in-process put (peer): {r['local_put_per_s']:,.0f} puts/s")


if __name__ == "__main__":
    main()
