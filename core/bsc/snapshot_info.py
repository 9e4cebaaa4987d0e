"""`bsc info FILE`: what a cache snapshot holds, after checking every checksum in it.

The file is read with `BinarySemanticCache.load`, the same reader a cache uses, so "checksums ok" means the
file would load: the header, every section's xxh3-64 checksum, the padding between sections and every
invariant of the index were verified.

Example:
    >>> import io, os, tempfile
    >>> import numpy as np
    >>> from bsc import BinarySemanticCache
    >>> cache = BinarySemanticCache(dim=4)
    >>> _ = cache.put(np.array([1.0, 0.2, 0.0, 0.1]), "cached answer", namespace="docs")
    >>> path = os.path.join(tempfile.mkdtemp(), "cache.bsc")
    >>> cache.save(path)
    >>> describe(path)["entries_by_namespace"]
    {'docs': 1}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bsc.cache import BinarySemanticCache
from bsc.persistence import format_version

__all__ = ["add_arguments", "describe", "run"]


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What the snapshot at ``path`` holds, as a JSON-compatible dict (what ``bsc info --json`` prints).

    Raises:
        bsc.CacheFormatError: the file is not a valid snapshot (the message names the part).
        OSError: the file cannot be read.
    """
    cache = BinarySemanticCache.load(path)
    stats = cache.stats()
    return {
        "path": os.fspath(path),
        "file_bytes": os.path.getsize(path),
        "format_version": format_version(path),
        "checksums_ok": True,  # `load` raises on any mismatch
        "dim": cache.dim,
        "code_bits": cache.code_bits,
        "seed": cache.seed,
        "settings": {
            "threshold": cache.threshold,
            "rerank": cache.rerank,
            "max_entries": cache.max_entries,
            "ttl": cache.ttl,
        },
        "entries": stats.entries,
        "entries_by_namespace": {name: cache.namespace_len(name) for name in sorted(cache.namespaces())},
        "bytes_per_entry": stats.bytes_per_entry,
        "counters": {
            "hits": stats.hits,
            "misses": stats.misses,
            "evictions": stats.evictions,
            "expirations": stats.expirations,
        },
    }


def _text(info: dict[str, Any]) -> str:
    settings = info["settings"]
    ttl = "none" if settings["ttl"] is None else f"{settings['ttl']:g} s"
    mode = f"two-stage (int8 rerank of {settings['rerank']})" if settings["rerank"] else "codes only"
    counters = ", ".join(f"{name} {value:,}" for name, value in info["counters"].items())
    lines = [
        f"{info['path']}: bsc snapshot, format version {info['format_version']}, "
        f"{info['file_bytes']:,} bytes",
        "  checksums:  ok (header, every section, index invariants)",
        f"  encoding:   dim {info['dim']}, {info['code_bits']} bits, seed {info['seed']}",
        f"  settings:   threshold {settings['threshold']:g}, {mode}, "
        f"max_entries {settings['max_entries']:,}, ttl {ttl}",
        f"  entries:    {info['entries']:,} in {len(info['entries_by_namespace'])} namespaces"
        + (f", {info['bytes_per_entry']:.0f} bytes an entry in memory" if info["entries"] else ""),
    ]
    width = max((len(name) for name in info["entries_by_namespace"]), default=0)
    lines += [f"    {name:<{width}}  {count:,}" for name, count in info["entries_by_namespace"].items()]
    lines.append(f"  counters:   {counters} (at save)")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``bsc info`` arguments to ``parser``."""
    parser.add_argument("file", metavar="FILE", help="a snapshot written by save() (e.g. cache.bsc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    """Runs ``bsc info`` with parsed arguments; returns the exit status."""
    info = describe(args.file)
    print(json.dumps(info, indent=2) if args.json else _text(info), file=sys.stdout)
    return 0
