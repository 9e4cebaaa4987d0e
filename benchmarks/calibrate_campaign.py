"""The calibration campaign of the README: `bsc calibrate`'s measurements on MSRP, PAWS and our prompt pairs.

For each labelled set, the distinct sentences are the prompt pool and the pairs are the labels; the
library function `bsc.calibrate.calibrate` (what the CLI runs) measures binary codes at 64-1024 bits
against exact float search, faiss PQ and int8 at equal bytes per entry, the cache's decision agreement,
bit balance, geometry and the threshold recommendation. Each set's full report (report.md, report.json,
plots) goes to ``benchmarks/results/calibrate/<set>/``; a combined markdown table is printed and written
to ``benchmarks/results/calibrate/campaign.json``. ``--docs`` also copies the plots to ``docs/calibrate/``.

Embeddings are cached in ``benchmarks/results/calibrate/embeddings/`` (keyed by text), so a rerun only
recomputes the measurements.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibrate_campaign.py --docs --threads 1  # ../shared/data
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/calibrate_campaign.py --limit 2000   # a stratified subset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
from bsc.calibrate import Calibration, LabelledPair, calibrate, load_pairs, write_report
from bsc.calibrate.cli import limit_threads
from bsc.calibrate.report import PLOTS
from bsc.embedders import Embedder, default_embedder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "calibrate"
DOCS = ROOT / "docs" / "calibrate"

F32 = npt.NDArray[np.float32]


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache of one ``.npy`` row per text hash (benchmarks only)."""

    def __init__(self, inner: Embedder, directory: Path) -> None:
        self.inner = inner
        self.directory = directory / inner.name.replace("/", "_").replace(":", "_")
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def name(self) -> str:
        return self.inner.name

    def _path(self, text: str) -> Path:
        return self.directory / (hashlib.blake2b(text.encode(), digest_size=12).hexdigest() + ".npy")

    def embed(self, texts: list[str]) -> F32:
        paths = [self._path(t) for t in texts]
        missing = [i for i, p in enumerate(paths) if not p.exists()]
        if missing:
            fresh = self.inner.embed([texts[i] for i in missing])
            for i, row in zip(missing, fresh, strict=True):
                np.save(paths[i], row)
        return np.stack([np.load(p) for p in paths]).astype(np.float32)

    async def aembed(self, texts: list[str]) -> F32:
        return self.embed(texts)


def sample(pairs: list[LabelledPair], limit: int | None, seed: int = 0) -> list[LabelledPair]:
    """Up to ``limit`` pairs, stratified by label (the same rows on every run)."""
    if limit is None or limit >= len(pairs):
        return pairs
    rng = random.Random(seed)
    out: list[LabelledPair] = []
    for label in (0, 1):
        group = [p for p in pairs if p.label == label]
        out += rng.sample(group, round(limit * len(group) / len(pairs)))
    return out


def row_of(name: str, c: Calibration, seconds: float) -> dict[str, object]:
    sizes: dict[str, dict[str, object]] = {}
    for bits in c.bits:
        binary, pq, int8 = c.at_size(bits)
        bands = c.bands(bits)
        assert binary.retrieval is not None
        sizes[str(bits)] = {
            "binary_recall_at_10": binary.retrieval.recall_at_10,
            "binary_overlap_at_10": binary.retrieval.overlap_at_10,
            "band": bands.recall_at_10,
            "overlap_band": bands.overlap_at_10,
            "pq_recall_at_10": pq.retrieval.recall_at_10 if pq.retrieval else None,
            "pq_overlap_at_10": pq.retrieval.overlap_at_10 if pq.retrieval else None,
            "vs_pq": bands.vs_pq_recall,
            "vs_pq_band": bands.vs_pq_recall_band,
            "vs_pq_overlap": bands.vs_pq_overlap,
            "vs_pq_overlap_band": bands.vs_pq_overlap_band,
            "int8_recall_at_10": int8.retrieval.recall_at_10 if int8.retrieval else None,
            "int8_overlap_at_10": int8.retrieval.overlap_at_10 if int8.retrieval else None,
            **{
                f"{mode}_agreement_at_0.90": next(
                    (
                        a.agreement
                        for a in c.agreement
                        if a.mode == mode and a.bits == bits and a.threshold == 0.90
                    ),
                    None,
                )
                for mode in ("two-stage", "binary-only", "pq", "int8")
            },
        }
    rec = c.recommendation
    return {
        "set": name,
        "prompts": c.prompts,
        "pairs": c.pairs,
        "seconds": seconds,
        "sizes": sizes,
        "geometry": {
            "anisotropy": c.geometry.anisotropy,
            "outliers": c.geometry.outlier_fraction,
            "twonn": c.geometry.intrinsic_dim_twonn,
            "pca90": c.geometry.intrinsic_dim_pca90,
            "mean_angle": c.geometry.mean_angle_deg,
        },
        "balanced_bits": {str(b.bits): b.balanced for b in c.bit_balance},
        "max_bit_share": {str(b.bits): b.max_share for b in c.bit_balance},
        "code_size": c.code_size.bits,
        "recommendation": None
        if rec is None or rec.point is None
        else {
            "bits": rec.point.bits,
            "threshold": rec.point.threshold,
            "hit_rate": rec.point.hit_rate,
            "false_hit_rate": rec.point.false_hit_rate,
            "interval": rec.false_hit_rate_interval,
            "confirmed": rec.confirmed,
        },
    }


def print_tables(rows: list[dict[str, object]]) -> None:
    columns = [
        "set", "bits", "binary R@10", "band", "binary overlap@10", "PQ R@10 (overlap)", "binary/PQ R@10",
        "binary/PQ overlap", "int8 R@10 (overlap)", "agreement t=0.90: two-stage / binary-only / PQ / int8",
    ]  # fmt: skip
    print("\n| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))

    def f(x: object) -> str:
        return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    for r in rows:
        for bits, s in r["sizes"].items():  # type: ignore[attr-defined]
            ratio = "-" if s["vs_pq"] is None else f"{s['vs_pq']:.2f}x {s['vs_pq_band']}"
            ratio_o = (
                "-" if s["vs_pq_overlap"] is None else f"{s['vs_pq_overlap']:.2f}x {s['vs_pq_overlap_band']}"
            )
            print(
                f"| {r['set']} | {bits} | {f(s['binary_recall_at_10'])} | {s['band']} | "
                f"{f(s['binary_overlap_at_10'])} ({s['overlap_band']}) | {f(s['pq_recall_at_10'])} "
                f"({f(s['pq_overlap_at_10'])}) | {ratio} | {ratio_o} | {f(s['int8_recall_at_10'])} "
                f"({f(s['int8_overlap_at_10'])}) | {f(s['two-stage_agreement_at_0.90'])} / "
                f"{f(s['binary-only_agreement_at_0.90'])} / {f(s['pq_agreement_at_0.90'])} / "
                f"{f(s['int8_agreement_at_0.90'])} |"
            )
    print("\n| set | prompts | pairs | anisotropy | outliers | TwoNN | PCA-90 | max bit share (256) | "
          "code size | recommended (guard on) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = r["geometry"]
        rec = r["recommendation"]
        shown = (
            "none within budget"
            if rec is None
            else f"t={rec['threshold']:.2f} @ {rec['bits']} bits: hit rate {rec['hit_rate']:.1%}, "  # type: ignore[index]
            f"false hits {rec['false_hit_rate']:.1%} (CI {rec['interval'][0]:.1%}-{rec['interval'][1]:.1%})"  # type: ignore[index]
        )
        print(
            f"| {r['set']} | {r['prompts']} | {r['pairs']} | {g['anisotropy']:.3f} | {g['outliers']:.3f} | "  # type: ignore[index]
            f"{g['twonn']:.1f} | {g['pca90']} | {r['max_bit_share'].get('256', float('nan')):.3f} | "  # type: ignore[attr-defined, index]
            f"{r['code_size']} | {shown} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="MSRP/PAWS folder")
    parser.add_argument("--limit", type=int, help="sample this many pairs (stratified) of each public set")
    parser.add_argument("--sets", default="msrp,paws,prompts", help="comma-separated: msrp, paws, prompts")
    parser.add_argument("--docs", action="store_true", help="copy the plots to docs/calibrate/")
    parser.add_argument(
        "--threads",
        type=int,
        help="faiss/BLAS threads (the default embedder runs on one; 1 is fastest on a loaded machine)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    sources = {
        "msrp": args.data / "msrp_pairs.tsv",
        "paws": args.data / "paws_pairs.tsv",
        "prompts": ROOT / "benchmarks" / "data" / "prompt_pairs.tsv",
    }
    embedder = CachedEmbedder(default_embedder(), RESULTS / "embeddings")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = []
    for name in args.sets.split(","):
        pairs = load_pairs(sources[name])
        pairs = pairs if name == "prompts" else sample(pairs, args.limit)
        prompts = [t for p in pairs for t in (p.q1, p.q2)]
        start = time.perf_counter()
        result = calibrate(prompts, pairs=pairs, embedder=embedder, progress=True)
        seconds = time.perf_counter() - start
        write_report(result, RESULTS / name)
        rows.append(row_of(name, result, seconds))
        print(f"{name}: {result.prompts} prompts, {result.pairs} pairs, {seconds:.0f} s", flush=True)
        if args.docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            for plot in PLOTS:
                shutil.copy(RESULTS / name / plot, DOCS / f"{name}_{plot}")
    print_tables(rows)
    (RESULTS / "campaign.json").write_text(
        json.dumps({"load_average": os.getloadavg()[0], "limit": args.limit, "sets": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
