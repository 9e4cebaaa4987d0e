"""Save and load of a 1M-entry, 256-bit cache: bsc's snapshot format against the unsafe/naive peers.

For the pure-binary mode (codes only) and the two-stage mode (codes + int8 rerank vectors, dim 384) it
times, median of ``--repeat`` runs, wall clock and process CPU time:

- save: ``cache.save(path)`` (atomic: temp file, fsync, rename, fsync dir), with file size;
- index-only load: `bsc.persistence.read_index` until the index answers its first Hamming lookup;
- full load: ``BinarySemanticCache.load(path)`` until ``get`` answers, responses and metadata included.

Peers in the same run: ``np.save``/``np.load`` of the same code array (no checks, codes only, and
``mmap_mode="r"``), and ``pickle`` of the same published entries (what the unsafe way costs; loading a
pickle can run code).

The cache is filled directly with random codes, int8 vectors and ~64-byte ASCII responses (metadata
None), exactly as ``put_many`` would leave it, because encoding a million embeddings is not what is
measured. CPU time is reported beside wall time because the benchmark machine is shared: wall time
includes waiting for a core.

Usage:
    .venv/bin/python benchmarks/bench_persistence.py [--entries 1000000] [--repeat 3]

Writes benchmarks/results/persistence.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pickle
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bsc import BinarySemanticCache
from bsc.persistence import read_index

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "persistence.json"
DIM = 384


def filled(entries: int, rerank: int) -> tuple[BinarySemanticCache, np.ndarray]:
    """A cache of random codes (and random int8 rows), built through a snapshot value: encoding a million
    embeddings would take longer than the measurements."""
    rng = np.random.default_rng(0)
    empty = BinarySemanticCache(DIM, code_bits=256, max_entries=entries, rerank=rerank).to_snapshot()
    codes = rng.integers(0, 2**63, size=(entries, 4), dtype=np.uint64)
    vectors = rng.integers(-127, 128, size=(entries if rerank else 0, DIM if rerank else 0), dtype=np.int8)
    ids = np.arange(entries, dtype=np.uint64)  # handle i, generation 0
    snap = dataclasses.replace(
        empty,
        names=["default"],
        counts=np.array([entries], dtype=np.uint32),
        codes=codes.reshape(-1),
        ids=ids,
        handles=ids.astype(np.uint32),
        lru=np.arange(entries, dtype=np.uint32),
        vectors=vectors,
        norms=np.sqrt(np.einsum("ij,ij->i", vectors.astype(np.int64), vectors).astype(np.float64)).astype(
            np.float32
        ),
        responses=[
            f"Cached answer #{i:07d}: the quick brown fox jumps over the lazy dog." for i in range(entries)
        ],
        metadata=[None] * entries,
    )
    return BinarySemanticCache.from_snapshot(snap), codes


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def run_mode(name: str, entries: int, rerank: int, repeat: int, workdir: Path) -> dict[str, Any]:
    cache, codes = filled(entries, rerank)
    path = workdir / f"{name}.bsc"
    query = codes[entries // 2]
    out: dict[str, Any] = {}

    out["save"] = timed(lambda: cache.save(path), repeat)
    out["file_mb"] = os.path.getsize(path) / 1e6

    def index_only() -> None:
        index = read_index(path)
        found, _ = index.search("default", query, 1, 0)
        assert found and found[0][1] == 0

    out["index_load"] = timed(index_only, repeat)

    def full() -> None:
        loaded = BinarySemanticCache.load(path)
        assert len(loaded) == entries and loaded.entry(entries // 2) is not None

    out["full_load"] = timed(full, repeat)

    npy = workdir / f"{name}.npy"
    out["peer_np_save_codes"] = timed(lambda: np.save(npy, codes), repeat)
    out["peer_np_load_codes"] = timed(lambda: np.load(npy), repeat)
    out["peer_np_load_codes_mmap"] = timed(lambda: np.load(npy, mmap_mode="r")[0].copy(), repeat)
    pkl = workdir / f"{name}.pkl"

    def pickle_save() -> None:
        with open(pkl, "wb") as f:
            snap = cache.to_snapshot()  # the entries: ids, responses, metadata
            pickle.dump(
                (snap.ids.tolist(), snap.responses, snap.metadata), f, protocol=pickle.HIGHEST_PROTOCOL
            )

    def pickle_load() -> None:
        with open(pkl, "rb") as f:
            pickle.load(f)

    out["peer_pickle_save_entries"] = timed(pickle_save, repeat)
    out["peer_pickle_load_entries"] = timed(pickle_load, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    results: dict[str, Any] = {
        "entries": args.entries,
        "code_bits": 256,
        "dim": DIM,
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_start": os.getloadavg()[0],
        },
        "modes": {},
    }
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        for name, rerank in (("pure_binary", 0), ("two_stage", 10)):
            results["modes"][name] = run_mode(name, args.entries, rerank, args.repeat, Path(tmp))
    results["machine"]["load_average_1m_at_end"] = os.getloadavg()[0]

    print(f"{args.entries:,} entries, 256-bit codes, median of {args.repeat} (wall / CPU)")
    print(f"{'mode':<12} {'file MB':>8} {'save':>17} {'index-only load':>19} {'full load':>17}")
    for name, r in results["modes"].items():

        def cell(key: str, unit: float = 1.0, fmt: str = "{:.2f} s", r: dict[str, Any] = r) -> str:
            return f"{fmt.format(r[key]['wall_s'] * unit)} / {fmt.format(r[key]['cpu_s'] * unit)}"

        print(
            f"{name:<12} {r['file_mb']:>8.0f} {cell('save'):>17} "
            f"{cell('index_load', 1e3, '{:.0f} ms'):>19} {cell('full_load'):>17}"
        )
    print("\npeers (same data, same run):")
    for name, r in results["modes"].items():
        print(
            f"{name:<12} np.save codes {r['peer_np_save_codes']['wall_s']:.3f} s, "
            f"np.load codes {r['peer_np_load_codes']['wall_s'] * 1e3:.0f} ms "
            f"(mmap {r['peer_np_load_codes_mmap']['wall_s'] * 1e3:.1f} ms), "
            f"pickle entries save {r['peer_pickle_save_entries']['wall_s']:.2f} s / "
            f"load {r['peer_pickle_load_entries']['wall_s']:.2f} s"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
