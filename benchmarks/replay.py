"""Workloads and eviction: generated traffic replayed through the real text cache under each policy.

1. Workloads (`bsc.workloads.WORKLOADS`: skewed-paraphrase, drift, burst) drawn from labelled pools: the
   repository's prompt pairs and, when ``--data`` holds them, MSRP (and with ``--paws`` PAWS) groups.
2. Embeddings: every distinct prompt is embedded once, in batches, by the real all-MiniLM-L6-v2
   (`PrecomputedEmbedder`), so the sweep measures the cache, not the model; hit decisions are the same.
3. Policy sweep: for each workload, capacity (1 %, 5 %, 20 % of its distinct prompts) and policy, a fresh
   `SemanticCache(max_entries=..., eviction=...)` replays the stream (lookup; on a miss a simulated LLM
   call and an update): hit rate, false hits per labelled hit (the share of served answers that are
   wrong) and per request, evictions; and, under drift, which entries served the false hits.
4. Eviction cost per put: the same codes inserted into a `HammingIndex` that is full (every insert
   evicts) and into one with room, per policy, interleaved rounds, median; the difference over the
   number of inserts is the amortised cost of choosing and removing a victim (and, for ``diverse``, its
   neighbour scan on insert). Memory overhead: bytes per entry of the policy state (`bytes_in_use`).
5. Live overhead: one short replay that embeds every lookup with the real model, for the plan table's
   lookup overhead (what an application pays).
6. Stress: 8 threads replaying slices of the skewed workload against one cache at a fixed capacity
   (lookups, and an update on each miss): ops/s and p99 per op, per policy.

Prints markdown tables; JSON to ``benchmarks/results/replay.json``; PNGs to ``docs/`` with ``--plots``.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/replay.py                   # ~10 min on a busy 2-core box
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/replay.py --quick           # prompts only, short streams
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/replay.py --plots docs/     # also write the PNGs
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the model on a shared 2-core machine: see README

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from bsc import SemanticCache
from bsc._native import BinaryEncoder, HammingIndex
from bsc.embedders import Embedder, default_embedder
from bsc.thresholds import radius_for
from bsc.workloads import (
    WORKLOADS,
    PrecomputedEmbedder,
    ReplayResult,
    Request,
    distinct_prompts,
    format_report,
    generate,
    load_pool,
    merge_pools,
    replay,
    scaled,
)

POLICIES = ("lru", "lfu", "sieve", "diverse")
#: Rows of the sweep: (label, policy, neighbourhood radius or None for the cache's own). "diverse r=0"
#: counts only identical codes as neighbours: the protected window alone, without neighbourhood admission.
VARIANTS = (*((p, p, None) for p in POLICIES), ("diverse r=0", "diverse", 0))
SHARES = (0.01, 0.05, 0.20)
ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"


def sweep(
    streams: dict[str, list[Request]], embedder: PrecomputedEmbedder, progress: bool
) -> list[ReplayResult]:
    """Every (workload, capacity, variant) replay, each through a fresh cache."""
    results = []
    for name, stream in streams.items():
        distinct = distinct_prompts(stream)
        for share in SHARES:
            capacity = max(2, round(share * distinct))
            for label, policy, radius in VARIANTS:
                cache = SemanticCache(embedder, max_entries=capacity, eviction=policy)
                if radius is not None:
                    cache.cache._index.set_eviction(policy, radius)
                result = replay(stream, cache, workload=name, progress=progress)
                result.eviction = label
                results.append(result)
    return results


def false_hits(results: list[ReplayResult]) -> dict[str, dict[str, float]]:
    """Per variant: false hits over labelled hits pooled over every cell, and the cells whose rate is
    above LRU's by more than two standard errors of the difference (what "more false hits" means here;
    a cell holds 20-200 false hits, so smaller differences are noise)."""
    lru = {(r.workload, r.capacity): r for r in results if r.eviction == "lru"}
    out: dict[str, dict[str, float]] = {}
    for label, *_ in VARIANTS:
        mine = [r for r in results if r.eviction == label]
        worse = 0
        for r in mine:
            base = lru[(r.workload, r.capacity)]
            p1, n1, p0, n0 = r.false_hit_rate, r.labelled_hits, base.false_hit_rate, base.labelled_hits
            se = float(np.sqrt(p1 * (1 - p1) / max(n1, 1) + p0 * (1 - p0) / max(n0, 1)))
            worse += p1 - p0 > 2 * se
        pooled = sum(r.false_hits for r in mine) / max(1, sum(r.labelled_hits for r in mine))
        out[label] = {"pooled_false_hit_rate": pooled, "cells_worse_than_lru": worse, "cells": len(mine)}
    return out


def false_hit_sources(result: ReplayResult, phases: int) -> dict[str, float]:
    """Which entries served one cell's false hits: how many of those requests had their own answer
    cached, how long ago the serving entry was stored (requests, median), and how many were served by
    an entry stored in an earlier popularity phase (``phases`` equal phases, as the drift generator
    makes them; 1 for a stationary stream)."""
    n = max(1, result.requests)
    ages = [i - at for i, at in result.false_hit_sources]
    earlier = sum(i * phases // n != at * phases // n for i, at in result.false_hit_sources)
    return {
        "false_hits": result.false_hits,
        "own_answer_cached": result.false_hits_own_answer_cached,
        "median_age": float(np.median(ages)) if ages else 0.0,
        "from_earlier_phase": earlier,
    }


def eviction_cost(
    vectors: np.ndarray, capacity: int, rounds: int, threshold: float = 0.90
) -> dict[str, float]:
    """Amortised µs per insert spent on eviction, per policy: full index minus an index with room. Beyond
    the real vectors, noisy copies of them (cosine ~0.9) stand in, so near-duplicates stay as common."""
    n_extra = min(max(4 * capacity, 2000), 20_000)
    rng = np.random.default_rng(0)
    rows = [vectors]
    while sum(len(r) for r in rows) < capacity + n_extra:
        noise = rng.standard_normal(vectors.shape).astype(np.float32)
        noisy = vectors + 0.5 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        rows.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    all_rows = np.concatenate(rows)[: capacity + n_extra]
    codes = BinaryEncoder(vectors.shape[1], 256, 42).encode(all_rows)
    fill, extra = codes[:capacity], codes[capacity:]
    radius = radius_for(threshold, 256)
    timings: dict[str, list[float]] = {p: [] for p in POLICIES}
    room: list[float] = []
    for _ in range(rounds):
        for policy in (None, *POLICIES):
            index = HammingIndex(
                4, capacity + (n_extra if policy is None else 0), False, policy or "lru", radius
            )
            index.insert_many("n", fill, float("inf"))
            start = time.perf_counter()
            index.insert_many("n", extra, float("inf"))
            per_insert = (time.perf_counter() - start) / n_extra * 1e6
            (room if policy is None else timings[policy]).append(per_insert)
    base = statistics.median(room)
    return {p: max(0.0, statistics.median(t) - base) for p, t in timings.items()} | {"insert_with_room": base}


def policy_bytes() -> dict[str, float]:
    """Bytes per entry of each policy's state: an index with the policy minus one with LRU."""
    out = {}
    for policy in POLICIES:
        with_policy = HammingIndex(4, 100, False, policy, 36)
        plain = HammingIndex(4, 100, False, "lru", 36)
        codes = np.arange(400, dtype=np.uint64).reshape(100, 4)
        with_policy.insert_many("n", codes, float("inf"))
        plain.insert_many("n", codes, float("inf"))
        out[policy] = (with_policy.bytes_in_use() - plain.bytes_in_use()) / 100
    return out


def stress_live(stream: list[Request], threads: int, capacity: int) -> dict[str, float]:
    """The stress run with the real model embedding every non-exact lookup, LRU."""
    return stress(stream, default_embedder(), capacity, threads, "lru")


def stress(
    stream: list[Request], embedder: Embedder, capacity: int, threads: int, policy: str
) -> dict[str, float]:
    cache = SemanticCache(embedder, max_entries=capacity, eviction=policy)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        mine = stream[i::threads]
        out = latencies[i]
        barrier.wait()
        for r in mine:
            t0 = time.perf_counter()
            if cache.lookup(r.prompt) is None:
                cache.update(r.prompt, f"answer {r.label}")
            out.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    flat = np.concatenate([np.array(x) for x in latencies])
    return {
        "ops": len(flat),
        "ops_per_s": len(flat) / wall,
        "p50_ms": float(np.percentile(flat, 50) * 1e3),
        "p99_ms": float(np.percentile(flat, 99) * 1e3),
        "hit_rate": cache.stats().hit_rate,
        "entries": len(cache),
    }


def print_sweep(
    results: list[ReplayResult], cost: dict[int, dict[str, float]], nbytes: dict[str, float]
) -> None:
    print(
        "\n| workload | capacity | policy | hit rate | vs LRU | false hits / hit | false hits / request "
        "| evict µs/put | B/entry |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    lru = {(r.workload, r.capacity): r for r in results if r.eviction == "lru"}
    for r in results:
        base = lru[(r.workload, r.capacity)]
        gain = (r.hit_rate / base.hit_rate - 1) * 100 if base.hit_rate else 0.0
        share = 100 * r.capacity / r.distinct_prompts
        policy = next(p for label, p, _ in VARIANTS if label == r.eviction)
        micro = cost.get(r.capacity, {}).get(policy, float("nan"))
        print(
            f"| {r.workload} | {share:.0f} % ({r.capacity}) | {r.eviction} | {100 * r.hit_rate:.1f} % | "
            f"{gain:+.1f} % | {100 * r.false_hit_rate:.2f} % | {100 * r.false_hits_per_lookup:.2f} % | "
            f"{micro:.2f} | {nbytes[policy]:.0f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        type=Path,
        # ../shared/data beside the checkout (or beside its parent, for a git worktree under wt/)
        default=next(
            (p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
            ROOT.parent.parent / "shared" / "data",
        ),
        help="directory with msrp_all.tsv (and paws_all.tsv)",
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paws", action="store_true", help="also draw from PAWS (adversarial word swaps)")
    parser.add_argument("--quick", action="store_true", help="prompt pairs only, 3,000 requests")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the eviction-cost measurement")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--plots", type=Path, help="directory for the PNG plots")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    requests = 3000 if args.quick else args.requests
    pools = [load_pool(ROOT / "data" / "prompt_pairs.tsv", "prompts")]
    if not args.quick and (args.data / "msrp_all.tsv").exists():
        pools.append(load_pool(args.data / "msrp_all.tsv", "msrp"))
    if args.paws and (args.data / "paws_all.tsv").exists():
        pools.append(load_pool(args.data / "paws_all.tsv", "paws"))
    pool = merge_pools(pools)
    streams = {name: generate(pool, scaled(spec, requests, args.seed)) for name, spec in WORKLOADS.items()}
    texts = [r.prompt for s in streams.values() for r in s]
    print(f"pool {pool.name}: {len(pool)} groups; {len(streams)} workloads of {requests} requests")
    embedder = PrecomputedEmbedder(default_embedder(), texts)
    print(f"embedded {len(set(texts))} distinct prompts once in {embedder.seconds:.0f} s (all-MiniLM-L6-v2)")
    started = time.perf_counter()
    load = os.getloadavg()
    results = sweep(streams, embedder, not args.no_progress)
    sweep_seconds = time.perf_counter() - started

    capacities = sorted({r.capacity for r in results})
    all_vectors = embedder.embed(list(dict.fromkeys(texts)))
    cost = {}
    for capacity in [*capacities, 10_000]:
        cost[capacity] = eviction_cost(all_vectors, capacity, args.rounds)
    nbytes = policy_bytes()
    print_sweep(results, cost, nbytes)
    fh = false_hits(results)
    print("\nFalse hits pooled over the 9 cells, and cells above LRU by more than 2 standard errors:")
    for label, row in fh.items():
        print(
            f"  {label:<12} {100 * row['pooled_false_hit_rate']:.2f} %, "
            f"{row['cells_worse_than_lru']:.0f} of {row['cells']:.0f} cells worse"
        )
    phases = WORKLOADS["drift"].drift_phases + 1
    sources = {
        f"{r.workload} {r.capacity} {r.eviction}": false_hit_sources(
            r, phases if r.workload == "drift" else 1
        )
        for r in results
    }
    print("\nWho served the false hits under drift (serving entry's age in requests; phase = stream / 5):")
    for r in results:
        if r.workload == "drift":
            row = sources[f"{r.workload} {r.capacity} {r.eviction}"]
            print(
                f"  {r.capacity:>5} {r.eviction:<12} {row['false_hits']:>4.0f} false hits: own answer cached "
                f"{row['own_answer_cached']:.0f}, served by an entry from an earlier phase "
                f"{row['from_earlier_phase']:.0f}, median age {row['median_age']:.0f}"
            )
    print(
        "\nEviction cost, µs per insert into a full index (median of rounds; insert with room for reference):"
    )
    for capacity, row in cost.items():
        print(f"  {capacity:>6} entries: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))

    skewed = streams["skewed-paraphrase"]
    live_n = min(1000, len(skewed))
    live_cache = SemanticCache(default_embedder(), max_entries=max(2, round(0.2 * distinct_prompts(skewed))))
    live = replay(
        skewed[:live_n],
        live_cache,
        workload="skewed-paraphrase (live, first 1000)",
        progress=not args.no_progress,
    )
    print("\nLive embeddings (each lookup embeds with MiniLM on one thread):")
    print(format_report(live))
    stress_capacity = max(2, round(0.05 * distinct_prompts(skewed)))
    stressed = {p: stress(skewed, embedder, stress_capacity, args.threads, p) for p in POLICIES}
    print(
        f"\nStress: {args.threads} threads, capacity {stress_capacity}, {len(skewed)} ops "
        "(lookup + update on miss):"
    )
    for p, s in stressed.items():
        print(
            f"  {p:<8} {s['ops_per_s']:>9,.0f} ops/s  p50 {s['p50_ms']:.3f} ms  p99 {s['p99_ms']:.3f} ms  "
            f"hit rate {100 * s['hit_rate']:.1f} %"
        )
    live_stress = stress_live(skewed[:1000], args.threads, stress_capacity)
    print(
        f"  lru, live embeddings (first 1000 ops): {live_stress['ops_per_s']:,.0f} ops/s  "
        f"p50 {live_stress['p50_ms']:.3f} ms  p99 {live_stress['p99_ms']:.3f} ms"
    )
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f} at start"
    print(f"\nmachine: {machine}; sweep took {sweep_seconds:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    out = {
        "machine": machine,
        "requests": requests,
        "seed": args.seed,
        "pool": pool.name,
        "embedding_seconds": embedder.seconds,
        "sweep": [r.to_json() for r in results],
        "eviction_cost_us": cost,
        "policy_bytes_per_entry": nbytes,
        "live": live.to_json(),
        "false_hits": fh,
        "false_hit_sources": sources,
        "stress": {
            "threads": args.threads,
            "capacity": stress_capacity,
            "by_policy": stressed,
            "lru_live_embeddings": live_stress,
        },
    }
    (RESULTS / "replay.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    if args.plots:
        from bsc.workloads.plot import plot_results

        args.plots.mkdir(parents=True, exist_ok=True)
        for name in streams:
            plot_results(
                [r for r in results if r.workload == name],
                args.plots / f"replay_{name}.png",
                title=f"{name}: {requests} requests, {pool.name}",
            )
        print(f"plots in {args.plots}")


if __name__ == "__main__":
    main()
