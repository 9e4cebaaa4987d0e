"""``bsc replay``: a request log or a generated workload through a real `SemanticCache`, measured.

Example:
    $ bsc replay --workload skewed-paraphrase --requests 2000 --capacity-share 0.05 --eviction sieve
    $ bsc replay requests.jsonl --embeddings live --plot replay.png
    $ bsc replay --from-proxy-log proxy-requests.jsonl --write-log requests.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from bsc.cache import EVICTION_POLICIES
from bsc.workloads.generators import WORKLOADS, generate, scaled
from bsc.workloads.pools import builtin_pool, load_pool, merge_pools
from bsc.workloads.replay import PrecomputedEmbedder, format_report, replay
from bsc.workloads.requests import (
    LogFormatError,
    Request,
    distinct_prompts,
    read_log,
    read_proxy_log,
    write_log,
)

__all__ = ["add_arguments", "run"]

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``bsc replay``."""
    parser.add_argument("log", nargs="?", help="a JSONL request log (format: bsc.workloads.requests)")
    parser.add_argument(
        "--from-proxy-log",
        metavar="PATH",
        help="replay a `bsc serve --request-log` file (its hits and misses, in the proxy's partitions)",
    )
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        help="generate this workload instead of reading a log (default: skewed-paraphrase)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="length of a generated workload")
    parser.add_argument("--seed", type=int, default=0, help="seed of a generated workload")
    parser.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="PATH",
        help="labelled pool(s) to draw from: pairs .tsv or groups .jsonl (default: the demo's prompts)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--capacity", type=int, help="max_entries of the cache (default 100000)")
    size.add_argument(
        "--capacity-share", type=float, help="max_entries as a share of the distinct prompts, e.g. 0.05"
    )
    parser.add_argument(
        "--embeddings",
        choices=("precomputed", "live"),
        default="precomputed",
        help="precomputed: the real model embeds every distinct prompt once, in batches, before the "
        "replay (fast; same hit decisions); live: each lookup embeds (what an application pays)",
    )
    parser.add_argument(
        "--eviction",
        choices=EVICTION_POLICIES,
        default="lru",
        help="eviction policy of the cache (default lru)",
    )
    parser.add_argument("--threshold", type=float, help="cosine threshold (default: the cache's)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON here")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the hit rate over the stream here")
    parser.add_argument("--write-log", metavar="PATH", help="also write the requests as a JSONL log here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Runs ``bsc replay``; returns the exit status (2 for bad input, with the reason on stderr)."""
    try:
        requests, name = _requests(args)
    except (OSError, ValueError) as exc:
        print(f"bsc replay: {exc}", file=sys.stderr)
        return 2
    if args.write_log:
        write_log(requests, args.write_log)
    options: dict[str, Any] = {"eviction": args.eviction}
    if args.capacity is not None or args.capacity_share is not None:
        capacity = (
            args.capacity
            if args.capacity is not None
            else round(args.capacity_share * distinct_prompts(requests))
        )
        if capacity < 1:
            print(f"bsc replay: the capacity must be at least 1 entry, got {capacity}", file=sys.stderr)
            return 2
        options["max_entries"] = capacity
    if args.threshold is not None:
        options["threshold"] = args.threshold
    from bsc.embedders import Embedder, default_embedder
    from bsc.text_cache import SemanticCache

    embedder: Embedder = default_embedder()
    start = time.perf_counter()
    if args.embeddings == "precomputed":
        precomputed = PrecomputedEmbedder(embedder, (r.prompt for r in requests))
        print(f"Embedded {distinct_prompts(requests)} distinct prompts in {precomputed.seconds:.1f} s.")
        embedder = precomputed
    try:
        cache = SemanticCache(embedder, **options)
    except (TypeError, ValueError) as exc:
        print(f"bsc replay: {exc}", file=sys.stderr)
        return 2
    result = replay(requests, cache, workload=name, progress=not args.no_progress)
    print(format_report(result))
    print(f"Replay finished in {time.perf_counter() - start:.1f} s. The upstream LLM is simulated.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result.to_json(), f, indent=2)
    if args.plot:
        from bsc.workloads.plot import plot_results

        plot_results([result], args.plot, title=f"bsc replay: {name}")
    return 0


def _requests(args: argparse.Namespace) -> tuple[list[Request], str]:
    given = [args.log is not None, args.from_proxy_log is not None, args.workload is not None]
    if sum(given) > 1:
        raise ValueError("give one of a log, --from-proxy-log or --workload")
    if args.from_proxy_log is not None:
        try:
            return read_proxy_log(args.from_proxy_log), args.from_proxy_log
        except LogFormatError as exc:
            raise ValueError(f"{args.from_proxy_log}: {exc}") from None
    if args.log is not None:
        try:
            return read_log(args.log), args.log
        except LogFormatError as exc:
            raise ValueError(f"{args.log}: {exc}") from None
    name = args.workload or "skewed-paraphrase"
    pool = merge_pools([load_pool(p) for p in args.pool]) if args.pool else builtin_pool()
    spec = scaled(WORKLOADS[name], args.requests, args.seed)
    return generate(pool, spec), name
