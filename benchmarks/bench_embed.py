"""Embedding throughput of the default model (all-MiniLM-L6-v2) on torch and on ONNX Runtime.

Measures sentences/s at batch 1 (one prompt per call, the cache's online path) and batch 64
(bulk warm-up), for the default torch backend and, when onnxruntime is installed, for the same
weights exported to ONNX. The ONNX run is only worth offering if it agrees with torch: the
script compares pair cosines on MSRP paraphrase pairs (|delta| <= 1e-3), the hit decisions at the
cache's default threshold, and the 256-bit codes `bsc.BinaryEncoder` derives from both.

sentence-transformers' own ``backend="onnx"`` is tried and reported (it needs `optimum`); the
ONNX run measured is `bsc.embedders.OnnxEmbedder`, which exports the model with
``torch.onnx.export`` into a temporary cache dir (timed: export, then a cached load) and runs it
with onnxruntime, with the same tokenizer and mean pooling as the sentence-transformers pipeline.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_embed.py [--pairs 500] [--single 200]

Writes benchmarks/results/embed.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
from bsc.embedders import OnnxEmbedder, SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parents[1]
PAIRS_TSV = Path("/work/shared/data/msrp_pairs.tsv")
RESULTS = ROOT / "benchmarks" / "results" / "embed.json"
COSINE_TOLERANCE = 1e-3

Embed = Callable[[list[str]], npt.NDArray[np.float32]]


def load_pairs(path: Path, n: int) -> list[tuple[str, str, int]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["q1"], r["q2"], int(r["label"])) for _, r in zip(range(n), rows, strict=False)]


def rates(embedders: dict[str, Embed], batches: Sequence[list[str]], repeat: int) -> dict[str, float]:
    """Sentences per second over `batches` per backend, best of `repeat` runs.

    Backends take turns within each repeat, so a burst of load from other processes on a
    shared machine hurts both rather than whichever happened to run at the time.
    """
    n = sum(len(b) for b in batches)
    best = dict.fromkeys(embedders, float("inf"))
    for _ in range(repeat):
        for name, embed in embedders.items():
            start = time.perf_counter()
            for batch in batches:
                embed(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n / seconds for name, seconds in best.items()}


def pair_cosines(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a, b = vectors[0::2].astype(np.float64), vectors[1::2].astype(np.float64)
    result: npt.NDArray[np.float64] = (a * b).sum(axis=1)
    return result


def code_agreement(ref: npt.NDArray[np.float32], other: npt.NDArray[np.float32]) -> dict[str, float] | None:
    """How the 256-bit codes of the cache differ between the two backends."""
    try:
        from bsc import BinaryEncoder
    except ImportError:
        return None
    encoder = BinaryEncoder(ref.shape[1], 256, 42)
    c_ref, c_other = encoder.encode(ref), encoder.encode(other)
    flipped = np.unpackbits((c_ref ^ c_other).view(np.uint8), axis=1).sum(axis=1)

    def pair_hamming(codes: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        x = codes[0::2] ^ codes[1::2]
        bits: npt.NDArray[np.int64] = np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1).astype(np.int64)
        return bits

    dh = np.abs(pair_hamming(c_ref) - pair_hamming(c_other))
    return {
        "sentences_with_any_bit_flipped": float((flipped > 0).mean()),
        "mean_bits_flipped": float(flipped.mean()),
        "max_bits_flipped": float(flipped.max()),
        "max_pair_hamming_delta": float(dh.max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500, help="MSRP pairs to use (2 sentences each)")
    parser.add_argument("--single", type=int, default=200, help="sentences embedded one at a time")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many timed runs")
    parser.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads (0: torch default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    pairs = load_pairs(PAIRS_TSV, args.pairs)
    sentences = [s for q1, q2, _ in pairs for s in (q1, q2)]
    singles = [[s] for s in sentences[: args.single]]
    bulk = [sentences]  # one call; each backend splits it into batches of 64

    start = time.perf_counter()
    torch_embedder = SentenceTransformerEmbedder(batch_size=64)
    load_seconds = time.perf_counter() - start
    results: dict[str, Any] = {
        "model": torch_embedder.name,
        "sentences": len(sentences),
        "command": " ".join(sys.argv),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_start": os.getloadavg()[0],
            "threads": threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "backends": {"torch": {"load_seconds": load_seconds}},
    }
    batch1: dict[str, Embed] = {"torch": torch_embedder.embed}
    batch64: dict[str, Embed] = {"torch": torch_embedder.embed}

    try:
        SentenceTransformerEmbedder(backend="onnx")
        results["st_onnx_backend"] = "loaded"
    except Exception as exc:  # report why, then fall back to a direct onnxruntime run
        results["st_onnx_backend"] = f"unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"

    onnx: OnnxEmbedder | None = None
    onnx_cache = tempfile.TemporaryDirectory(prefix="bsc-onnx-")
    try:
        import onnxruntime
    except ImportError as exc:
        results["backends"]["onnx"] = {"error": f"onnxruntime not installed: {exc}"}
    else:
        start = time.perf_counter()
        OnnxEmbedder(cache_dir=onnx_cache.name, threads=threads)
        export_seconds = time.perf_counter() - start
        start = time.perf_counter()
        onnx = OnnxEmbedder(cache_dir=onnx_cache.name, batch_size=64, threads=threads)
        results["backends"]["onnx"] = {
            "onnxruntime": onnxruntime.__version__,
            "export_seconds": export_seconds,
            "cached_load_seconds": time.perf_counter() - start,
            "same_name_as_torch": onnx.name == torch_embedder.name,
        }
        batch1["onnx"] = batch64["onnx"] = onnx.embed

    for embed in batch64.values():
        embed(sentences[:64])  # warm-up: first calls allocate
    for name, rate in rates(batch1, singles, args.repeat).items():
        results["backends"][name]["batch1_sentences_per_s"] = rate
    for name, rate in rates(batch64, bulk, args.repeat).items():
        results["backends"][name]["batch64_sentences_per_s"] = rate

    print(f"{results['model']}, {len(sentences)} MSRP sentences, {threads} threads")
    print(f"{'backend':<8} {'batch 1 (sent/s)':>17} {'batch 64 (sent/s)':>18}")
    for name, row in results["backends"].items():
        if "error" in row:
            print(f"{name:<8} {row['error']}")
        else:
            print(f"{name:<8} {row['batch1_sentences_per_s']:>17.1f} {row['batch64_sentences_per_s']:>18.1f}")

    if onnx is not None:
        reference = torch_embedder.embed(sentences)
        vectors = onnx.embed(sentences)
        cos_torch, cos_onnx = pair_cosines(reference), pair_cosines(vectors)
        delta = np.abs(cos_torch - cos_onnx)
        threshold = float(getattr(sys.modules.get("bsc"), "DEFAULT_THRESHOLD", 0.90))
        onnx_row, torch_row = results["backends"]["onnx"], results["backends"]["torch"]
        speedup = {
            b: onnx_row[f"batch{b}_sentences_per_s"] / torch_row[f"batch{b}_sentences_per_s"] for b in (1, 64)
        }
        agreement = {
            "max_abs_vector_delta": float(np.abs(reference - vectors).max()),
            "max_abs_pair_cosine_delta": float(delta.max()),
            "pairs_within_1e-3": float((delta <= COSINE_TOLERANCE).mean()),
            "threshold": threshold,
            "hit_decisions_changed": int(((cos_torch >= threshold) != (cos_onnx >= threshold)).sum()),
            "codes": code_agreement(reference, vectors),
        }
        onnx_row["speedup_over_torch"] = speedup
        onnx_row["agreement"] = agreement
        print(f"onnx/torch speed: batch 1 x{speedup[1]:.2f}, batch 64 x{speedup[64]:.2f}")
        print(
            f"agreement: max |pair cosine delta| {agreement['max_abs_pair_cosine_delta']:.2e}, "
            f"{agreement['pairs_within_1e-3']:.1%} of pairs within 1e-3, "
            f"{agreement['hit_decisions_changed']} hit decisions changed at cosine >= {threshold}"
        )
        print(f"256-bit codes: {agreement['codes']}")
    print(f"sentence-transformers backend='onnx': {results['st_onnx_backend']}")

    onnx_cache.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
