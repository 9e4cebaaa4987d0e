"""Exhaustive Hamming search, one query: bsc `hamming_search` vs faiss `IndexBinaryFlat` vs NumPy.

Every row is measured in the same run, interleaved round by round, so the ratios hold on a noisy shared
machine even when the absolute times drift. Single-thread rows run with `RAYON_NUM_THREADS=1` and
`faiss.omp_set_num_threads(1)`; the 2-thread bsc row runs in a child process (the rayon pool size is fixed
when the pool starts), which also measures faiss k=1 so that its ratio is from its own run.

Usage:
    python benchmarks/bench_scan.py            # N = 10k, 100k, 1M, 4M
    python benchmarks/bench_scan.py --quick    # N = 10k, 100k

Prints a table and writes `benchmarks/results/scan.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Before anything starts the rayon pool: the parent process measures one thread.
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import faiss
import numpy as np
from bsc._native import cpu_features, hamming_search

RESULTS = Path(__file__).resolve().parent / "results" / "scan.json"
QUERIES = 64


def _numpy_naive(codes: np.ndarray, query: np.ndarray) -> int:
    return int(np.bitwise_count(codes ^ query).sum(axis=1).argmin())


def _numpy_per_word(codes: np.ndarray, query: np.ndarray) -> int:
    """One column at a time: small uint8 popcount arrays, accumulated in uint16 (the fastest NumPy found)."""
    d = np.bitwise_count(codes[:, 0] ^ query[0]).astype(np.uint16)
    for w in range(1, codes.shape[1]):
        d += np.bitwise_count(codes[:, w] ^ query[w])
    return int(d.argmin())


def _measure(
    methods: dict[str, Callable[[int], object]], reps: int, rounds: int = 5
) -> dict[str, dict[str, float]]:
    """Median and quartiles (µs) per method; each round runs every method reps/rounds times, in turn."""
    samples: dict[str, list[float]] = {name: [] for name in methods}
    per_round = max(1, reps // rounds)
    for fn in methods.values():  # warm-up: page in, start pools, fill caches
        for q in range(3):
            fn(q)
    for _ in range(rounds):
        for name, fn in methods.items():
            out = samples[name]
            for r in range(per_round):
                t0 = time.perf_counter_ns()
                fn(r % QUERIES)
                out.append((time.perf_counter_ns() - t0) / 1e3)
    stats = {}
    for name, xs in samples.items():
        a = np.asarray(xs)
        stats[name] = {
            "median_us": float(np.median(a)),
            "p25_us": float(np.percentile(a, 25)),
            "p75_us": float(np.percentile(a, 75)),
            "samples": len(xs),
        }
    return stats


def _data(n: int, words: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    queries = rng.integers(0, 2**64, size=(QUERIES, words), dtype=np.uint64)
    return codes, queries


def _faiss_index(codes: np.ndarray) -> Any:
    index = faiss.IndexBinaryFlat(codes.shape[1] * 64)
    index.add(codes.view(np.uint8))
    return index


def _reps(n: int, scale: float) -> int:
    return max(20, int(scale * {10_000: 3000, 100_000: 600, 1_000_000: 80, 4_000_000: 25}.get(n, 100)))


def _check_agreement(codes: np.ndarray, queries: np.ndarray, index: Any) -> None:
    """bsc and faiss must find the same distances (faiss may break ties differently)."""
    q8 = queries.view(np.uint8)
    for q in range(4):
        _, bsc_d = hamming_search(codes, queries[q], k=10)
        faiss_d, _ = index.search(q8[q : q + 1], 10)
        if not np.array_equal(bsc_d.astype(np.int64), faiss_d[0].astype(np.int64)):
            raise SystemExit(f"bsc and faiss disagree: {bsc_d} vs {faiss_d[0]}")


def run_single_thread(n: int, words: int, scale: float) -> list[dict[str, Any]]:
    codes, queries = _data(n, words)
    q8 = queries.view(np.uint8)
    faiss.omp_set_num_threads(1)
    index = _faiss_index(codes)
    _check_agreement(codes, queries, index)
    methods: dict[str, Callable[[int], object]] = {
        "bsc k=1": lambda q: hamming_search(codes, queries[q], k=1),
        "bsc k=10": lambda q: hamming_search(codes, queries[q], k=10),
        "faiss k=1": lambda q: index.search(q8[q : q + 1], 1),
        "faiss k=10": lambda q: index.search(q8[q : q + 1], 10),
    }
    stats = _measure(methods, _reps(n, scale))
    # NumPy is 10-50x slower: fewer repeats, measured separately, the better variant reported.
    np_stats = _measure(
        {
            "numpy naive": lambda q: _numpy_naive(codes, queries[q]),
            "numpy per-word": lambda q: _numpy_per_word(codes, queries[q]),
        },
        max(10, _reps(n, scale) // 20),
    )
    best_np = min(np_stats, key=lambda k: np_stats[k]["median_us"])
    stats[f"numpy best ({best_np.removeprefix('numpy ')}) k=1"] = np_stats[best_np]
    return [_row(n, words, name, s, threads=1, process="main") for name, s in stats.items()]


def _row(n: int, words: int, name: str, s: dict[str, float], threads: int, process: str) -> dict[str, Any]:
    k = int(name.rsplit("k=", 1)[1])
    return {
        "process": process,
        "n": n,
        "words": words,
        "method": name.rsplit(" k=", 1)[0],
        "k": k,
        "threads": threads,
        **s,
        "gb_per_s": n * words * 8 / (s["median_us"] * 1e3),
    }


def run_two_threads_child(n: int, words: int, scale: float) -> list[dict[str, Any]]:
    codes, queries = _data(n, words)
    q8 = queries.view(np.uint8)
    faiss.omp_set_num_threads(1)
    index = _faiss_index(codes)
    stats = _measure(
        {
            "bsc k=1": lambda q: hamming_search(codes, queries[q], k=1),
            "faiss k=1": lambda q: index.search(q8[q : q + 1], 1),
        },
        _reps(n, scale),
    )
    return [
        _row(n, words, "bsc k=1", stats["bsc k=1"], threads=2, process="child"),
        _row(n, words, "faiss k=1", stats["faiss k=1"], threads=1, process="child"),
    ]


def _ratios(rows: list[dict[str, Any]]) -> None:
    """`vs_faiss` = faiss time / this time, same N and k, measured in the same process."""
    for r in rows:
        if r["method"] == "faiss":
            continue
        ref = [
            x
            for x in rows
            if x["method"] == "faiss" and (x["n"], x["k"], x["process"]) == (r["n"], r["k"], r["process"])
        ]
        r["vs_faiss"] = ref[0]["median_us"] / r["median_us"] if ref else None


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = ("N", "method", "k", "thr", "median µs", "p25-p75 µs", "GB/s", "vs faiss")
    print("{:>9} {:<24} {:>3} {:>3} {:>11} {:>19} {:>7} {:>9}".format(*head))
    for r in rows:
        if r["process"] == "child" and r["method"] == "faiss":
            continue  # the 2-thread row's own faiss reference, shown through its ratio
        vs = f"{r['vs_faiss']:.2f}x" if r.get("vs_faiss") else ""
        iqr = f"{r['p25_us']:.1f}-{r['p75_us']:.1f}"
        print(
            f"{r['n']:>9} {r['method']:<24} {r['k']:>3} {r['threads']:>3} {r['median_us']:>11.1f} "
            f"{iqr:>19} {r['gb_per_s']:>7.1f} {vs:>9}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 10k and 100k only")
    parser.add_argument("--words", type=int, default=4, help="uint64 words per code (default 4 = 256 bits)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the repeat counts")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"output file (default {RESULTS})")
    parser.add_argument("--child-two-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_two_threads is not None:
        print(json.dumps(run_two_threads_child(args.child_two_threads, args.words, args.scale)))
        return

    # 4M (128 MB of 256-bit codes) is the one size above the parallel cutoff (48 MiB), for the 2-thread row.
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000, 4_000_000]
    rows: list[dict[str, Any]] = []
    child_cmd = [sys.executable, __file__, "--words", str(args.words), "--scale", str(args.scale)]
    child_cmd.append("--child-two-threads")
    for n in sizes:
        rows += run_single_thread(n, args.words, args.scale)
        env = {**os.environ, "RAYON_NUM_THREADS": "2"}
        child = subprocess.run(
            [*child_cmd, str(n)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        rows += json.loads(child.stdout)
    _ratios(rows)
    _print_table(rows)

    meta = {
        "cpu_features": cpu_features(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
