"""Measure the false-hit guard: which rules earn their place.

For each labelled pair set and cosine threshold, the pairs the embedding alone would accept as a cache
hit (cosine >= threshold) are checked by the guard. The script prints, per dataset x threshold, the
precision/recall/F1 of hits without and with the default guard, and for every rule on its own how many
false hits (label 0) it removes and how many true hits (label 1) it wrongly refuses. Results go to
``benchmarks/results/guard.json``.

Embeddings (all-MiniLM-L6-v2, normalised) are computed once per run and kept in memory only.

Example:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/guard_eval.py --limit 2000
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "core"))

from bsc.guard import ALL_RULES, DEFAULT_RULES, FalseHitGuard  # noqa: E402

DATASETS = {
    "prompts": ROOT / "benchmarks" / "data" / "prompt_pairs.tsv",
    "msrp": ROOT.parent / "shared" / "data" / "msrp_pairs.tsv",
    "paws": ROOT.parent / "shared" / "data" / "paws_pairs.tsv",
}
THRESHOLDS = (0.80, 0.85, 0.90)


@dataclass(frozen=True)
class Pair:
    q1: str
    q2: str
    label: int
    kind: str


def load_pairs(path: Path, limit: int | None, seed: int = 0) -> list[Pair]:
    """Read a q1/q2/label[/kind] TSV; with ``limit``, a label-stratified random subsample."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = [
            Pair(r["q1"], r["q2"], int(r["label"]), r.get("kind") or "")
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    out: list[Pair] = []
    for label in (0, 1):
        group = [r for r in rows if r.label == label]
        share = round(limit * len(group) / len(rows))
        out.extend(rng.sample(group, min(share, len(group))))
    return out


def cosines(pairs: list[Pair], batch_size: int) -> np.ndarray:
    """Cosine similarity of each pair under the cache's default embedder (normalised all-MiniLM-L6-v2)."""
    from bsc.embedders import NativeEmbedder

    model = NativeEmbedder(batch_size=batch_size)
    sentences = sorted({p.q1 for p in pairs} | {p.q2 for p in pairs})
    index = {s: i for i, s in enumerate(sentences)}
    emb = model.embed(sentences)
    a = emb[[index[p.q1] for p in pairs]]
    b = emb[[index[p.q2] for p in pairs]]
    sims: np.ndarray = np.einsum("ij,ij->i", a, b)
    return sims


def _prf(tp: int, fp: int, positives: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate(pairs: list[Pair], cos: np.ndarray, threshold: float, rules: tuple[str, ...]) -> dict[str, Any]:
    """Score hits at one threshold without the guard, with ``rules`` together, and each rule alone."""
    positives = sum(p.label for p in pairs)
    accepted = [(p, float(c)) for p, c in zip(pairs, cos, strict=True) if c >= threshold]
    tp = sum(p.label for p, _ in accepted)
    fp = len(accepted) - tp

    per_rule: dict[str, dict[str, Any]] = {}
    for name in ALL_RULES:
        guard = FalseHitGuard(rules=[name])
        refused = [p for p, _ in accepted if guard.check(p.q1, p.q2) is not None]
        per_rule[name] = {
            "removed_false_hits": sum(1 for p in refused if p.label == 0),
            "refused_true_hits": sum(1 for p in refused if p.label == 1),
            "refused_kinds": dict(Counter(f"{p.label}:{p.kind}" for p in refused if p.kind)),
        }

    guard = FalseHitGuard(rules=rules)
    kept = [p for p, _ in accepted if guard.check(p.q1, p.q2) is None]
    g_tp = sum(p.label for p in kept)
    g_fp = len(kept) - g_tp
    return {
        "threshold": threshold,
        "pairs": len(pairs),
        "positives": positives,
        "accepted": len(accepted),
        "false_hits": fp,
        "no_guard": _prf(tp, fp, positives),
        "guard": {**_prf(g_tp, g_fp, positives), "false_hits": g_fp, "true_hits": g_tp},
        "per_rule": per_rule,
    }


def _guard_speed(pairs: list[Pair], rules: tuple[str, ...]) -> float:
    """Mean microseconds per ``check`` call over the pairs (fresh texts, so no caching helps)."""
    guard = FalseHitGuard(rules=rules)
    start = time.perf_counter()
    for p in pairs:
        guard.check(p.q1, p.q2)
    return (time.perf_counter() - start) / max(1, len(pairs)) * 1e6


def _print_table(name: str, result: dict[str, Any]) -> None:
    r = result
    ng, g = r["no_guard"], r["guard"]
    print(
        f"\n{name} cos>={r['threshold']:.2f}: {r['accepted']}/{r['pairs']} accepted, "
        f"{r['false_hits']} false hits -> {g['false_hits']} with guard | "
        f"P {ng['precision']:.3f}->{g['precision']:.3f}  R {ng['recall']:.3f}->{g['recall']:.3f}  "
        f"F1 {ng['f1']:.3f}->{g['f1']:.3f}"
    )
    print(f"  {'rule':<14} {'removed FP':>10} {'refused TP':>10}")
    for rule, stats in r["per_rule"].items():
        mark = "*" if rule in DEFAULT_RULES else " "
        print(f" {mark}{rule:<14} {stats['removed_false_hits']:>10} {stats['refused_true_hits']:>10}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--limit", type=int, default=2000, help="max pairs per public set (stratified)")
    parser.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS))
    parser.add_argument("--rules", nargs="*", default=list(DEFAULT_RULES), help="rules of the combined guard")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guard.json")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (normalised)",
        "default_rules": list(DEFAULT_RULES),
        "combined_rules": list(args.rules),
        "limit": args.limit,
        "datasets": {},
    }
    for name in args.datasets:
        limit = None if name == "prompts" else args.limit
        pairs = load_pairs(DATASETS[name], limit)
        start = time.perf_counter()
        cos = cosines(pairs, args.batch_size)
        embed_s = time.perf_counter() - start
        results = [evaluate(pairs, cos, t, tuple(args.rules)) for t in args.thresholds]
        speed = _guard_speed(pairs, tuple(args.rules))
        print(f"\n=== {name}: {len(pairs)} pairs, embedded in {embed_s:.1f}s, guard {speed:.1f} us/check")
        for r in results:
            _print_table(name, r)
        report["datasets"][name] = {
            "pairs": len(pairs),
            "guard_us_per_check": round(speed, 2),
            "results": results,
        }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
