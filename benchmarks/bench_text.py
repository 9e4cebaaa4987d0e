"""Text-level lookups: exact repeat (no embedding) vs paraphrase (embedding + scan + guard) vs miss.

The peer in the same run is a plain ``dict`` lookup of the normalised prompt (the floor for an exact
cache), so the exact-repeat row reads as a ratio. Issue target: an exact repeat costs <= 20 µs.

Usage:
    HF_HUB_OFFLINE=1 python benchmarks/bench_text.py          # 10,000 cached prompts
    HF_HUB_OFFLINE=1 python benchmarks/bench_text.py --entries 1000

Prints a table and writes ``benchmarks/results/text.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "text.json"
PAIRS = Path(__file__).resolve().parent / "data" / "prompt_pairs.tsv"
FIELDS = ("lookup", "median_us", "p25_us", "p75_us")


def _median_us(fn: Callable[[int], object], calls: int, rounds: int = 7) -> tuple[float, float, float]:
    """Median, p25 and p75 over ``rounds`` of the mean time per call, in µs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples), q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000, help="filler entries")
    args = parser.parse_args()

    from bsc import SemanticCache
    from bsc.embedders import default_embedder
    from bsc.text_cache import normalise_prompt

    rows = [line.split("\t") for line in PAIRS.read_text().splitlines()[1:]]
    positives = [(q1, q2) for q1, q2, label, _ in rows if label == "1"]
    cached = [q2 for _, q2 in positives]
    paraphrases = [q1 for q1, _ in positives]

    embedder = default_embedder()
    cache = SemanticCache(embedder, max_entries=args.entries + len(cached))
    # Filler entries: random unit vectors under their own texts (embedding 10k real prompts takes minutes).
    rng = np.random.default_rng(0)
    filler = rng.standard_normal((args.entries, embedder.dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    texts = [f"filler prompt {i}" for i in range(args.entries)]
    cache._store(texts, filler, ["answer"] * args.entries, "default", [None] * args.entries)
    cache.update_many(cached, [f"answer to {q}" for q in cached])
    table = {normalise_prompt(t): "answer" for t in [*texts, *cached]}

    n = len(cached)
    exact = _median_us(lambda i: cache.lookup(cached[i % n]), 2000)
    floor = _median_us(lambda i: table.get(normalise_prompt(cached[i % n])), 2000)
    # Paraphrases embed once each: bypass the memo by measuring the first pass only.
    start = time.perf_counter()
    hits = sum(cache.lookup(p) is not None for p in paraphrases)
    paraphrase = (time.perf_counter() - start) / len(paraphrases) * 1e6
    stats = cache.stats()

    rows_out = [
        ("exact repeat (SemanticCache.lookup)", *exact),
        ("dict lookup of the normalised text (floor)", *floor),
        ("paraphrase, first time (embed + scan + guard)", paraphrase, paraphrase, paraphrase),
    ]
    print(f"{args.entries + n:,} cached prompts; embedder threads 1; load average {os.getloadavg()[0]:.2f}")
    print(f"{'lookup':48} {'median µs':>10} {'p25-p75':>16}")
    for name, med, lo, hi in rows_out:
        print(f"{name:48} {med:10.1f} {lo:7.1f}-{hi:<8.1f}")
    print(f"exact / floor: {exact[0] / floor[0]:.1f}x; paraphrase hits {hits}/{len(paraphrases)}")
    print(
        f"embedding took {stats.embed_seconds:.2f} s for {stats.embedded_texts} texts, "
        f"searching {stats.search_seconds * 1e3:.1f} ms in all"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "entries": args.entries + n,
                "rows": [dict(zip(FIELDS, r, strict=True)) for r in rows_out],
                "paraphrase_hits": hits,
                "paraphrases": len(paraphrases),
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
