"""`get` from several threads at once: hits against misses of the same cache, in one run.

A hit and a miss scan the same codes; a hit also builds its `Hit` and records its use for the eviction
policy. Recording it must not make hits wait for other threads' scans, so the peer here is the cache's
own misses: hits/s over misses/s, per thread count, is the figure (near 1 when a hit adds nothing that
serialises). Codes-only caches of 384-d random unit vectors; hit queries are stored vectors with a little
noise, miss queries fresh random vectors; each thread calls `get` in a loop for ``--seconds``, hits and
misses alternating run by run.

Usage:
    python benchmarks/bench_threads.py                 # 100,000 and 1,000,000 entries, 1 and 2 threads
    python benchmarks/bench_threads.py --entries 100000 --seconds 2 --rounds 3

Prints a table and writes ``benchmarks/results/threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt
from bsc import BinarySemanticCache

RESULTS = Path(__file__).resolve().parent / "results" / "threads.json"
DIM = 384
QUERIES = 256


def unit_rows(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def calls_per_second(
    cache: BinarySemanticCache, queries: list[npt.NDArray[np.float32]], threads: int, seconds: float
) -> float:
    counts = [0] * threads
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        stop = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < stop:
            cache.get(queries[(i + t * 7) % len(queries)])
            i += 1
        counts[t] = i

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def run(n: int, seconds: float, rounds: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(n)
    cache = BinarySemanticCache(DIM, max_entries=n + QUERIES, rerank=0)
    for start in range(0, n, 100_000):
        cache.put_many(unit_rows(rng, min(100_000, n - start)), ["response"] * min(100_000, n - start))
    stored = unit_rows(rng, QUERIES)  # the entries the hit queries are near
    cache.put_many(stored, ["hit"] * QUERIES)
    noisy = stored + 0.01 * rng.standard_normal(stored.shape).astype(np.float32)
    hits = [row / np.linalg.norm(row) for row in noisy]
    misses = list(unit_rows(rng, QUERIES))
    assert all(cache.get(q) is not None for q in hits[:16]) and all(cache.get(q) is None for q in misses[:16])
    rows = []
    for threads in (1, 2):
        rates: dict[str, list[float]] = {"hit": [], "miss": []}
        for r in range(rounds):
            order = ("hit", "miss") if r % 2 == 0 else ("miss", "hit")
            for kind in order:
                rates[kind].append(
                    calls_per_second(cache, hits if kind == "hit" else misses, threads, seconds)
                )
        hit, miss = statistics.median(rates["hit"]), statistics.median(rates["miss"])
        rows.append(
            {
                "entries": n,
                "threads": threads,
                "hits_per_s": hit,
                "misses_per_s": miss,
                "hit_over_miss": hit / miss,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()
    rows = [row for n in args.entries for row in run(n, args.seconds, args.rounds)]
    print(f"get from threads: {platform.machine()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    print(f"{'entries':>10} {'threads':>7} {'hits/s':>10} {'misses/s':>10} {'hits / misses':>14}")
    for r in rows:
        print(
            f"{r['entries']:>10,} {r['threads']:>7} {r['hits_per_s']:>10,.0f} {r['misses_per_s']:>10,.0f}"
            f" {r['hit_over_miss']:>13.2f}x"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"load_average": load, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
