"""A lookup in a small namespace costs the same whether or not a huge namespace sits beside it.

Each namespace keeps its own contiguous codes, so a lookup scans only its own. Measured in one run,
interleaved: `get` in a 1,000-entry namespace of a cache that holds nothing else, the same beside a
1,000,000-entry namespace, and — the peer — the same lookup when all entries share one namespace (what a
cache with one index and a metadata filter must scan).

Usage:
    python benchmarks/bench_namespaces.py            # big namespace of 1,000,000 entries
    python benchmarks/bench_namespaces.py --big 200000

Prints a table and writes ``benchmarks/results/namespaces.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import numpy as np
from bsc import BinarySemanticCache

RESULTS = Path(__file__).resolve().parent / "results" / "namespaces.json"
DIM = 384
SMALL = 1_000


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=1_000_000, help="entries in the big namespace")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    small = _unit(rng, SMALL)
    big = _unit(rng, args.big)
    caches = {
        "small namespace, nothing else cached": BinarySemanticCache(DIM, max_entries=SMALL, rerank=0),
        f"small namespace beside {args.big:,} in another": BinarySemanticCache(
            DIM, max_entries=SMALL + args.big, rerank=0
        ),
        f"one shared namespace of {SMALL + args.big:,} (peer)": BinarySemanticCache(
            DIM, max_entries=SMALL + args.big, rerank=0
        ),
    }
    names = list(caches)
    caches[names[0]].put_many(small, ["s"] * SMALL, namespace="small")
    caches[names[1]].put_many(small, ["s"] * SMALL, namespace="small")
    caches[names[1]].put_many(big, ["b"] * args.big, namespace="big")
    caches[names[2]].put_many(
        np.concatenate([small, big]), ["s"] * SMALL + ["b"] * args.big, namespace="small"
    )

    queries = small[:200]
    gets: dict[str, Callable[[], object]] = {
        name: (lambda c=cache: [c.get(q, namespace="small") for q in queries])
        for name, cache in caches.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in gets}
    for _ in range(args.rounds):  # interleaved, so drift hits every row alike
        for name, fn in gets.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) / len(queries) * 1e6)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    base = medians[names[0]]
    print(f"get hit, codes only (rerank=0), one thread; load average {os.getloadavg()[0]:.2f}")
    print(f"{'cache':52} {'µs / get':>9} {'vs alone':>9}")
    for name, m in medians.items():
        print(f"{name:52} {m:9.1f} {m / base:8.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"big": args.big, "median_us": medians, "samples_us": samples}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
