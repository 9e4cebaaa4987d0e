"""Hit quality of the cache's decision modes, measured to choose its default threshold and rerank.

A hit is only worth serving if it is right, so every mode is scored on labelled pairs (label 1: same
meaning, a hit would be correct; label 0: a hit would be a false hit):

1. Pair level, on ``msrp_pairs.tsv``, ``paws_pairs.tsv`` (from ``--data``) and the repository's
   ``benchmarks/data/prompt_pairs.tsv`` (short LLM-style prompts with a ``kind`` column): q2 is cached,
   q1 looked up. Precision, recall and F1 at cosine thresholds 0.70 ... 0.95 of
   float cosine >= t; binary-only at 64/128/256/512 bits (``h <= radius_for(t, n)``); two-stage at 256
   bits (int8 cosine >= t within ``shortlist_radius(t, 256)``, with how often that radius cut a true
   pair); two-stage + the default `FalseHitGuard`. Computed vectorised from the embeddings and
   `BinaryEncoder` codes, and checked against `BinarySemanticCache` on a sample.
2. Pool simulation on ``msrp_all.tsv``, ``paws_all.tsv`` and the prompt pairs: every distinct sentence is
   stored once; each distinct q1 is looked up with its own sentence left out. A hit on a labelled partner
   (either direction) is correct (label 1) or false (label 0); a hit on any other sentence is "other",
   unlabelled and not counted as right or wrong (in samples we read at cos >= 0.90: mostly a near-copy of
   the same news sentence on MSRP, a paraphrase from another pair on the prompt set). Each lookup's
   decision (miss, or which entry) is compared with exact float-cosine search over the same pool at the
   same threshold. Modes: float, binary-only (256 bits) and two-stage (shortlists 5, 10, 20), each also
   with the guard offered the first ``GUARD_CANDIDATES`` answers, as `SemanticCache` does. One search per
   lookup and mode in a real cache (threshold -1, widest shortlist) yields the answers at every threshold
   and shortlist size; real caches with the query deleted check that derivation on a sample.
3. The guard at the recommended settings: false hits removed and correct hits lost, by rule and kind.
4. The recommended default threshold and rerank, by the rules in `recommend`.

Embeddings (all-MiniLM-L6-v2 via `bsc.embedders.default_embedder`, the cache's own default embedder, whose
vectors equal sentence-transformers' to float rounding; unit norm) are cached in
``benchmarks/results/embeddings/`` (``<hash>.npy`` + ``<hash>.texts.json``), so only the first run embeds
(~24k sentences: a few minutes at 100-200 sentences/s, over 20 on a busy 2-core machine); a rerun takes
seconds. Tables are printed as markdown; the numbers go to ``benchmarks/results/quality.json``.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py                 # full run
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py --quick         # 600 rows per public file
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/quality.py --data ../shared/data --limit 2000

``--limit N`` samples N rows (stratified by label) of each public file, for pairs and pools alike; a
smaller pool has fewer distractors, so it shows fewer "other" hits than the full one.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import numpy.typing as npt
from bsc import DEFAULT_RERANK, DEFAULT_THRESHOLD, BinaryEncoder, BinarySemanticCache, FalseHitGuard
from bsc.embedders import Embedder
from bsc.thresholds import radius_for, shortlist_radius

ROOT = Path(__file__).resolve().parents[1]
PROMPTS_TSV = ROOT / "benchmarks" / "data" / "prompt_pairs.tsv"
EMBED_DIR = ROOT / "benchmarks" / "results" / "embeddings"
RESULTS = ROOT / "benchmarks" / "results" / "quality.json"
MODEL = "all-MiniLM-L6-v2"
DIM = 384
SEED = 42  # the cache's default projection seed
BITS = (64, 128, 256, 512)
PAIR_THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95)
POOL_THRESHOLDS = (0.80, 0.85, 0.90, 0.95)
SHORTLISTS = (5, 10, 20)
# `SemanticCache` offers the guard up to this many candidates, best first, and serves the first it passes.
GUARD_CANDIDATES = 5
# Largest share of wrong answers among hits we accept for the default (see `recommend`).
FALSE_HIT_BUDGET = 0.02

F32 = npt.NDArray[np.float32]


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True, slots=True)
class Pair:
    q1: str
    q2: str
    label: int
    kind: str


def load_pairs(path: Path) -> list[Pair]:
    """Rows of a ``q1<TAB>q2<TAB>label[<TAB>kind]`` file (no quoting: the texts contain quote marks)."""
    with path.open(newline="", encoding="utf-8") as f:
        return [
            Pair(r["q1"], r["q2"], int(r["label"]), r.get("kind") or "")
            for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        ]


def subsample(rows: list[Pair], limit: int | None, seed: int = 0) -> list[Pair]:
    """At most ``limit`` rows, stratified by label, in file order; all rows when ``limit`` is None."""
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    keep: set[int] = set()
    for label in (0, 1):
        group = [i for i, r in enumerate(rows) if r.label == label]
        keep.update(rng.sample(group, min(len(group), round(limit * len(group) / len(rows)))))
    return [r for i, r in enumerate(rows) if i in keep]


# ------------------------------------------------------------------------------------------ embeddings
class EmbeddingStore:
    """Embeddings of text lists, cached on disk as ``<hash of model + texts>.npy`` beside a
    ``.texts.json`` of the same name, so a rerun (or a ``--limit`` run after a full one) embeds nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._embedder: Embedder | None = None
        self.embedded = 0
        self.seconds = 0.0

    def _key(self, texts: list[str]) -> str:
        return hashlib.sha256("\0".join([MODEL, *texts]).encode()).hexdigest()[:24]

    def _known_rows(self, wanted: set[str]) -> dict[str, F32]:
        """Rows for ``wanted`` texts found in any earlier cached list."""
        found: dict[str, F32] = {}
        for sidecar in sorted(self.directory.glob("*.texts.json")):
            npy = sidecar.with_name(sidecar.name.removesuffix(".texts.json") + ".npy")
            if not npy.exists():
                continue
            texts = json.loads(sidecar.read_text(encoding="utf-8"))
            rows = [i for i, t in enumerate(texts) if t in wanted and t not in found]
            if rows:
                arr = np.load(npy, mmap_mode="r")
                if arr.shape != (len(texts), DIM):
                    continue
                for i in rows:
                    found[texts[i]] = np.array(arr[i], dtype=np.float32)
        return found

    def embed(self, texts: list[str], what: str) -> F32:
        """Unit-norm float32 embeddings of ``texts`` (rows in order), from disk when possible."""
        path = self.directory / f"{self._key(texts)}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape == (len(texts), DIM):
                return np.ascontiguousarray(cached, dtype=np.float32)
        self.directory.mkdir(parents=True, exist_ok=True)
        known = self._known_rows(set(texts))
        todo = sorted({t for t in texts if t not in known}, key=len)  # similar lengths: less padding
        if todo:
            known.update(zip(todo, self._embed_fresh(todo, what), strict=True))
        out = np.stack([known[t] for t in texts]).astype(np.float32)
        # Written whole or not at all: an interrupted run must not leave a file that a rerun trusts.
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            np.save(f, out)
        os.replace(partial, path)
        path.with_name(path.stem + ".texts.json").write_text(json.dumps(texts), encoding="utf-8")
        return out

    def _embed_fresh(self, texts: list[str], what: str) -> F32:
        if self._embedder is None:
            from bsc.embedders import default_embedder

            self._embedder = default_embedder()
        embedder = self._embedder
        start = time.perf_counter()
        parts: list[F32] = []
        for i in range(0, len(texts), 1024):
            parts.append(embedder.embed(texts[i : i + 1024]))
            done = min(i + 1024, len(texts))
            rate = done / (time.perf_counter() - start)
            print(f"  embedding {what}: {done}/{len(texts)} ({rate:.0f}/s)", file=sys.stderr, flush=True)
        self.seconds += time.perf_counter() - start
        self.embedded += len(texts)
        return np.concatenate(parts)


# --------------------------------------------------------------------------------------- pair level
def codes(emb: F32, bits: int) -> npt.NDArray[np.uint64]:
    """The cache's binary codes for ``emb`` (same encoder, seed and code size as the cache)."""
    out: npt.NDArray[np.uint64] = BinaryEncoder(DIM, bits, SEED).encode(emb)
    return out


def hamming(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Row-wise Hamming distance between two code arrays of the same shape."""
    out: npt.NDArray[np.int64] = np.bitwise_count(a ^ b).sum(axis=1, dtype=np.int64)
    return out


def int8_cosine(query: F32, stored: F32) -> F32:
    """Row-wise cosine the two-stage cache computes: float query against the int8 copy of the stored
    unit embedding (scaled so its largest component is ±127), divided by that copy's norm."""
    peak = np.max(np.abs(stored), axis=1, keepdims=True)
    q8 = np.rint(stored / peak * 127.0).astype(np.int8)
    norms = np.linalg.norm(q8, axis=1).astype(np.float32)
    out: F32 = np.einsum("ij,ij->i", q8.astype(np.float32), query) / norms
    return out


def prf(decide: npt.NDArray[np.bool_], labels: npt.NDArray[np.int64]) -> dict[str, float | int]:
    """Hits, true/false hits, precision, recall and F1 of hit decisions against pair labels."""
    tp = int((decide & (labels == 1)).sum())
    fp = int((decide & (labels == 0)).sum())
    positives = int(labels.sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "hits": tp + fp,
        "true_hits": tp,
        "false_hits": fp,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


def auc(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
    """ROC AUC by the rank-sum formula (ties get mean ranks)."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores[np.diff(np.sort(scores), prepend=np.nan) == 0]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class PairFeatures:
    """Everything the pair-level decisions need, computed once per pair set."""

    labels: npt.NDArray[np.int64]
    cosine: F32
    cosine8: F32  # q1 against the int8 copy of q2 (q2 is the cached side)
    distance: dict[int, npt.NDArray[np.int64]]  # code bits -> Hamming distance
    guard: list[str | None]  # rule that refuses q1 -> q2, or None


def pair_features(pairs: list[Pair], emb: F32, row: dict[str, int], guard: FalseHitGuard) -> PairFeatures:
    a = emb[[row[p.q1] for p in pairs]]
    b = emb[[row[p.q2] for p in pairs]]
    return PairFeatures(
        labels=np.array([p.label for p in pairs], dtype=np.int64),
        cosine=np.einsum("ij,ij->i", a, b),
        cosine8=int8_cosine(a, b),
        distance={bits: hamming(codes(a, bits), codes(b, bits)) for bits in BITS},
        guard=[guard.check(p.q1, p.q2) for p in pairs],
    )


def pair_decisions(f: PairFeatures, t: float) -> dict[str, npt.NDArray[np.bool_]]:
    """Hit decision per pair and mode at threshold ``t`` (q2 cached, q1 looked up)."""
    out = {"float": f.cosine >= t}
    for bits in BITS:
        out[f"binary-{bits}"] = f.distance[bits] <= radius_for(t, bits)
    two = (f.distance[256] <= shortlist_radius(t, 256)) & (f.cosine8 >= t)
    out["two-stage-256"] = two
    out["two-stage-256+guard"] = two & np.array([g is None for g in f.guard])
    return out


def pair_level(f: PairFeatures, thresholds: tuple[float, ...]) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for t in thresholds:
        modes = {name: prf(d, f.labels) for name, d in pair_decisions(f, t).items()}
        beyond = f.distance[256] > shortlist_radius(t, 256)
        modes["two-stage-256"]["radius_cut_true_pairs"] = int(
            (beyond & (f.cosine8 >= t) & (f.labels == 1)).sum()
        )
        modes["two-stage-256"]["radius_cut_pairs"] = int((beyond & (f.cosine8 >= t)).sum())
        results.append({"threshold": t, "modes": modes})
    return results


def best_f1(f: PairFeatures) -> dict[str, float]:
    """Float-cosine threshold with the best F1 (a check against the data README's reference)."""
    best = (0.0, 0.0)
    for t in np.arange(0.50, 0.99, 0.005):
        score = prf(f.cosine >= t, f.labels)["f1"]
        best = max(best, (float(score), round(float(t), 3)))
    return {"f1": best[0], "threshold": best[1]}


def validate_pairs(
    pairs: list[Pair], emb: F32, row: dict[str, int], f: PairFeatures, thresholds: tuple[float, ...], n: int
) -> dict[str, object]:
    """Check on ``n`` sampled pairs that the vectorised decisions equal `BinarySemanticCache`'s: each
    pair's q2 alone in its own namespace, looked up with q1."""
    sample = random.Random(1).sample(range(len(pairs)), min(n, len(pairs)))
    checked = mismatched = 0
    max_cos_diff = 0.0
    examples: list[str] = []
    for t in thresholds:
        expected = pair_decisions(f, t)
        for mode in [f"binary-{b}" for b in BITS] + ["two-stage-256"]:
            bits = int(mode.rsplit("-", 1)[1])
            rerank = 10 if mode.startswith("two-stage") else 0
            cache = BinarySemanticCache(DIM, code_bits=bits, seed=SEED, threshold=t, rerank=rerank)
            for i in sample:
                cache.put(emb[row[pairs[i].q2]], "", namespace=str(i))
            for i in sample:
                hit = cache.get(emb[row[pairs[i].q1]], namespace=str(i))
                checked += 1
                if (hit is not None) != bool(expected[mode][i]):
                    mismatched += 1
                    if len(examples) < 5:
                        examples.append(f"{mode} t={t} pair {i}: cache {hit is not None}")
                if hit is not None and rerank:
                    max_cos_diff = max(max_cos_diff, abs(hit.similarity - float(f.cosine8[i])))
    return {
        "decisions": checked,
        "mismatches": mismatched,
        "max_abs_int8_cosine_diff": max_cos_diff,
        "examples": examples,
    }


# ------------------------------------------------------------------------------------- pool simulation
@dataclass
class Pool:
    """Every distinct sentence of a pair file, stored once; each distinct q1 is looked up."""

    name: str
    texts: list[str]
    emb: F32
    queries: list[int]  # rows of the distinct q1s
    partners: dict[int, dict[int, int]]  # row -> {labelled partner row: label}, both directions


def build_pool(name: str, rows: list[Pair], emb: F32, row: dict[str, int]) -> Pool:
    texts = sorted({r.q1 for r in rows} | {r.q2 for r in rows})
    at = {t: i for i, t in enumerate(texts)}
    partners: dict[int, dict[int, int]] = {}
    for r in rows:
        a, b = at[r.q1], at[r.q2]
        partners.setdefault(a, {})[b] = r.label
        partners.setdefault(b, {})[a] = r.label
    queries = sorted({at[r.q1] for r in rows})
    return Pool(name, texts, np.ascontiguousarray(emb[[row[t] for t in texts]]), queries, partners)


def float_nearest(pool: Pool, chunk: int = 1024) -> tuple[npt.NDArray[np.int64], F32]:
    """Exact float-cosine nearest other sentence of each query, and its cosine."""
    q = np.array(pool.queries, dtype=np.int64)
    best = np.empty(len(q), dtype=np.int64)
    best_cos = np.empty(len(q), dtype=np.float32)
    for s in range(0, len(q), chunk):
        part = q[s : s + chunk]
        sims = pool.emb[part] @ pool.emb.T
        sims[np.arange(len(part)), part] = -np.inf  # leave-one-out
        best[s : s + chunk] = np.argmax(sims, axis=1)
        best_cos[s : s + chunk] = sims[np.arange(len(part)), best[s : s + chunk]]
    return best, best_cos


@dataclass(frozen=True, slots=True)
class Candidate:
    row: int
    distance: int
    similarity: float  # exact int8 cosine in two-stage mode, estimated from the distance otherwise


def shortlists(pool: Pool, rerank: int, k: int) -> tuple[list[list[Candidate]], float]:
    """Each query's ``k`` nearest stored entries by Hamming distance, from a `BinarySemanticCache`
    holding the whole pool with threshold -1 (so nothing is filtered), in the index's order: distance,
    then insertion order. The decision at any threshold and shortlist size is derived from this list by
    `decide`, which `check_against_cache` compares with real caches. Also returns bytes per entry."""
    cache = BinarySemanticCache(DIM, code_bits=256, seed=SEED, threshold=-1.0, rerank=rerank)
    ids = cache.put_many(pool.emb, [""] * len(pool.texts))
    row_of = {entry: i for i, entry in enumerate(ids)}
    out: list[list[Candidate]] = []
    for q in pool.queries:
        found = [Candidate(row_of[h.id], h.distance, h.similarity) for h in cache.search(pool.emb[q], k=k)]
        out.append(sorted(found, key=lambda c: (c.distance, c.row)))
    return out, cache.stats().bytes_per_entry


def decide(query: int, nearest: list[Candidate], t: float, rerank: int) -> list[int]:
    """Rows the cache would answer with at threshold ``t``, best first, up to ``GUARD_CANDIDATES``, as if
    the query's own sentence were not stored (it is at distance 0 and takes one shortlist slot here)."""
    if rerank == 0:
        radius = radius_for(t, 256)
        return [c.row for c in nearest if c.distance <= radius and c.row != query][:GUARD_CANDIDATES]
    radius = shortlist_radius(t, 256)
    shortlist = [c for c in nearest if c.distance <= radius][: max(rerank, GUARD_CANDIDATES) + 1]
    cut = float(np.float32(t))  # the cache compares float32 similarities with the threshold in float32
    passing = sorted((c for c in shortlist if c.similarity >= cut), key=lambda c: -c.similarity)  # stable
    return [c.row for c in passing if c.row != query][:GUARD_CANDIDATES]


def check_against_cache(
    pool: Pool, ranked: dict[tuple[float, int], list[list[int]]], sample: int
) -> dict[str, int]:
    """Leave-one-out for real on ``sample`` queries: a cache at each threshold and shortlist size,
    the query's own entry deleted, ``search(k=GUARD_CANDIDATES)``; compared with the derived answers."""
    picks = random.Random(2).sample(range(len(pool.queries)), min(sample, len(pool.queries)))
    checked = mismatches = 0
    for (t, rerank), answers in ranked.items():
        cache = BinarySemanticCache(DIM, code_bits=256, seed=SEED, threshold=t, rerank=rerank)
        ids = cache.put_many(pool.emb, [""] * len(pool.texts))
        row_of = {entry: i for i, entry in enumerate(ids)}
        for j in picks:
            q = pool.queries[j]
            cache.delete(ids[q])
            got = [row_of[h.id] for h in cache.search(pool.emb[q], k=GUARD_CANDIDATES)]
            # Put back, now last in insertion order: only a later check with a distance tie on this very
            # entry at its shortlist's edge could tell the difference.
            ids[q] = cache.put(pool.emb[q], "")
            row_of[ids[q]] = q
            checked += 1
            mismatches += got != answers[j]
    return {"lookups": checked, "mismatches": mismatches}


def outcomes(pool: Pool, decided: list[int], reference: list[int]) -> dict[str, float | int]:
    """Counts of a list of decisions (row, or -1 for a miss) and their agreement with ``reference``."""
    n = len(decided)
    correct = false = other = agree = extra = missed = elsewhere = 0
    labelled_positive = sum(1 for q in pool.queries if 1 in pool.partners[q].values())
    for q, d, ref in zip(pool.queries, decided, reference, strict=True):
        if d >= 0:
            label = pool.partners[q].get(d)
            correct += label == 1
            false += label == 0
            other += label is None
        agree += d == ref
        extra += d >= 0 and ref < 0
        missed += d < 0 and ref >= 0
        elsewhere += d >= 0 and ref >= 0 and d != ref
    hits = correct + false + other
    return {
        "lookups": n,
        "hits": hits,
        "correct": correct,
        "false": false,
        "other": other,
        "hit_rate": round(hits / n, 4) if n else 0.0,
        "wrong_share_of_hits": round((false + other) / hits, 4) if hits else 0.0,
        "labelled_precision": round(correct / (correct + false), 4) if correct + false else 1.0,
        "correct_recall": round(correct / labelled_positive, 4) if labelled_positive else 0.0,
        "agree_with_float": round(agree / n, 4) if n else 1.0,
        "extra_hits": extra,
        "missed_hits": missed,
        "other_entry": elsewhere,
    }


def pool_simulation(
    pool: Pool, thresholds: tuple[float, ...], reranks: tuple[int, ...], check_sample: int
) -> dict[str, object]:
    """Float exact search, binary-only and two-stage (each shortlist size), without and with the guard
    (offered up to ``GUARD_CANDIDATES`` answers best first, as `SemanticCache` does)."""
    nearest, nearest_cos = float_nearest(pool)
    guard = FalseHitGuard()
    verdicts: dict[tuple[int, int], bool] = {}

    def served(q: int, rows: list[int]) -> int:
        for r in rows:
            if (q, r) not in verdicts:
                verdicts[(q, r)] = guard.check(pool.texts[q], pool.texts[r]) is None
            if verdicts[(q, r)]:
                return r
        return -1

    binary, binary_bytes = shortlists(pool, 0, GUARD_CANDIDATES + 1)
    two_stage, two_stage_bytes = shortlists(pool, max(reranks), max(reranks) + 1)
    ranked: dict[tuple[float, int], list[list[int]]] = {}
    results: list[dict[str, object]] = []
    for t in thresholds:
        reference = [int(r) if c >= t else -1 for r, c in zip(nearest, nearest_cos, strict=True)]
        modes: dict[str, dict[str, float | int]] = {
            "float": {**outcomes(pool, reference, reference), "bytes_per_entry": DIM * 4}
        }
        for rerank in (0, *reranks):
            name, lists, per_entry = (
                (f"two-stage-{rerank}", two_stage, two_stage_bytes)
                if rerank
                else ("binary-256", binary, binary_bytes)
            )
            answers = [decide(q, n, t, rerank) for q, n in zip(pool.queries, lists, strict=True)]
            ranked[(t, rerank)] = answers
            size = {"bytes_per_entry": round(per_entry, 1)}
            modes[name] = {**outcomes(pool, [a[0] if a else -1 for a in answers], reference), **size}
            guarded = [served(q, a) for q, a in zip(pool.queries, answers, strict=True)]
            modes[name + "+guard"] = {**outcomes(pool, guarded, reference), **size}
        results.append({"threshold": t, "modes": modes})
    return {
        "sentences": len(pool.texts),
        "lookups": len(pool.queries),
        "check_against_cache": check_against_cache(pool, ranked, check_sample),
        "results": results,
    }


# ------------------------------------------------------------------------------------------ the guard
def guard_effect(pairs: list[Pair], f: PairFeatures, t: float) -> dict[str, object]:
    """What the default guard does to the pairs two-stage accepts at ``t``: false hits it removes and
    correct hits it loses, in total, by rule and by ``kind``."""
    accepted = pair_decisions(f, t)["two-stage-256"]
    by_kind: dict[str, dict[str, int]] = {}
    by_rule: dict[str, dict[str, int]] = {}
    for p, ok, rule in zip(pairs, accepted, f.guard, strict=True):
        k = by_kind.setdefault(p.kind or "-", {"label": p.label, "pairs": 0, "accepted": 0, "refused": 0})
        k["pairs"] += 1
        if ok:
            k["accepted"] += 1
            if rule is not None:
                k["refused"] += 1
                r = by_rule.setdefault(rule, {"removed_false_hits": 0, "lost_correct_hits": 0})
                r["removed_false_hits" if p.label == 0 else "lost_correct_hits"] += 1
    refused = accepted & np.array([g is not None for g in f.guard])
    return {
        "threshold": t,
        "false_hits": int((accepted & (f.labels == 0)).sum()),
        "false_hits_removed": int((refused & (f.labels == 0)).sum()),
        "correct_hits": int((accepted & (f.labels == 1)).sum()),
        "correct_hits_lost": int((refused & (f.labels == 1)).sum()),
        "by_rule": by_rule,
        "by_kind": dict(sorted(by_kind.items(), key=lambda kv: (-kv[1]["label"], kv[0]))),
    }


# ----------------------------------------------------------------------------------- recommendation
def _mode(results: list[dict[str, object]], t: float, mode: str) -> dict[str, float | int]:
    for r in results:
        if r["threshold"] == t:
            modes = r["modes"]
            assert isinstance(modes, dict)
            out: dict[str, float | int] = modes[mode]
            return out
    raise KeyError(t)


def recommend(pairs: dict[str, dict[str, object]], pools: dict[str, dict[str, object]]) -> dict[str, object]:
    """Default threshold and rerank from the measurements, by the rules stated in the returned text.

    Threshold: the deployed path is two-stage + guard (`SemanticCache`). The lowest candidate threshold
    (most hits) whose false-hit rate, 1 - precision on the prompt pairs, is within ``FALSE_HIT_BUDGET``.
    Rerank: the smallest shortlist whose agreement with exact float search is within 0.1 point of the
    largest shortlist measured, on every pool and at every measured threshold (users change the threshold;
    the shortlist default must hold for all of them); off (codes only) only if binary-only is also within
    1 point everywhere and serves no larger share of false hits among labelled hits at the chosen threshold.
    """
    prompt_results = pairs["prompts"]["results"]
    assert isinstance(prompt_results, list)
    chosen_t = POOL_THRESHOLDS[-1]
    for t in POOL_THRESHOLDS:
        if 1 - float(_mode(prompt_results, t, "two-stage-256+guard")["precision"]) <= FALSE_HIT_BUDGET:
            chosen_t = t
            break
    everywhere: dict[int, list[float]] = {r: [] for r in (0, *SHORTLISTS)}  # pools x thresholds
    agree: dict[int, list[float]] = {r: [] for r in (0, *SHORTLISTS)}  # pools, at chosen_t
    wrong: dict[int, list[float]] = {r: [] for r in (0, *SHORTLISTS)}
    for entry in pools.values():
        results = entry["results"]
        assert isinstance(results, list)
        for r in (0, *SHORTLISTS):
            mode = f"two-stage-{r}" if r else "binary-256"
            everywhere[r] += [float(_mode(results, t, mode)["agree_with_float"]) for t in POOL_THRESHOLDS]
            m = _mode(results, chosen_t, mode)
            agree[r].append(float(m["agree_with_float"]))
            wrong[r].append(1 - float(m["labelled_precision"]))
    best = everywhere[max(SHORTLISTS)]

    def close(r: int, tolerance: float) -> bool:
        return all(a >= b - tolerance for a, b in zip(everywhere[r], best, strict=True))

    chosen_r = next(r for r in SHORTLISTS if close(r, 0.001))
    if close(0, 0.01) and all(w <= v for w, v in zip(wrong[0], wrong[chosen_r], strict=True)):
        chosen_r = 0
    shortfall = {
        (f"two-stage-{r}" if r else "binary-256"): round(
            max(b - a for a, b in zip(everywhere[r], best, strict=True)), 4
        )
        for r in everywhere
    }
    rows = []
    for t in POOL_THRESHOLDS:
        line: dict[str, object] = {"threshold": t}
        for name, entry in pairs.items():
            results = entry["results"]
            assert isinstance(results, list)
            m = _mode(results, t, "two-stage-256+guard")
            line[f"{name}_pairs"] = {k: m[k] for k in ("precision", "recall", "true_hits", "false_hits")}
        for name, entry in pools.items():
            results = entry["results"]
            assert isinstance(results, list)
            m = _mode(results, t, f"two-stage-{chosen_r or max(SHORTLISTS)}+guard")
            line[f"{name}_pool"] = {k: m[k] for k in ("hit_rate", "correct", "false", "other")}
        rows.append(line)
    return {
        "threshold": chosen_t,
        "rerank": chosen_r,
        "reasons": _reasons(pairs, pools, chosen_t, chosen_r),
        "false_hit_budget": FALSE_HIT_BUDGET,
        "agreement_with_float_at_threshold": {
            (f"two-stage-{r}" if r else "binary-256"): agree[r] for r in agree
        },
        "largest_agreement_shortfall_vs_widest_shortlist": shortfall,
        "false_share_of_labelled_hits_at_threshold": {
            (f"two-stage-{r}" if r else "binary-256"): wrong[r] for r in wrong
        },
        "pool_order": list(pools),
        "by_threshold": rows,
    }


# ----------------------------------------------------------------------------------------- printing
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def print_pair_table(name: str, entry: dict[str, object]) -> None:
    results = entry["results"]
    assert isinstance(results, list)
    print(
        f"\n#### {name}: pair level, {entry['pairs']} pairs ({entry['positives']} positive); "
        f"precision / recall / F1 (q2 cached, q1 looked up)\n"
    )
    print("| mode | " + " | ".join(f"cos ≥ {r['threshold']:.2f}" for r in results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for mode in results[0]["modes"]:
        cells = [r["modes"][mode] for r in results]
        print(
            f"| {mode} | "
            + " | ".join(f"{c['precision']:.2f} / {c['recall']:.2f} / {c['f1']:.2f}" for c in cells)
            + " |"
        )
    cut = [f"{r['modes']['two-stage-256']['radius_cut_true_pairs']}" for r in results]
    print("| two-stage: true pairs cut by shortlist radius | " + " | ".join(cut) + " |")


def print_pool_table(name: str, entry: dict[str, object]) -> None:
    print(
        f"\n#### {name}: pool simulation, {entry['sentences']} sentences stored, {entry['lookups']} lookups "
        "(leave-one-out), 256-bit codes\n"
    )
    print(
        "| cos ≥ | mode | B/entry | hit % | correct | false | other | false % of labelled hits | "
        "= float % | extra / missed / other entry |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = entry["results"]
    assert isinstance(results, list)
    for r in results:
        for mode, m in r["modes"].items():
            print(
                f"| {r['threshold']:.2f} | {mode} | {m['bytes_per_entry']:g} | {_pct(m['hit_rate'])} | "
                f"{m['correct']} | {m['false']} | {m['other']} | {_pct(1 - m['labelled_precision'])} | "
                f"{_pct(m['agree_with_float'])} | "
                f"{m['extra_hits']} / {m['missed_hits']} / {m['other_entry']} |"
            )


def print_guard_table(name: str, g: dict[str, object]) -> None:
    print(
        f"\n#### Guard on {name} pairs that two-stage accepts at cos ≥ {g['threshold']:.2f}: "
        f"{g['false_hits_removed']} of {g['false_hits']} false hits removed, "
        f"{g['correct_hits_lost']} of {g['correct_hits']} correct hits lost\n"
    )
    by_kind = g["by_kind"]
    assert isinstance(by_kind, dict)
    if len(by_kind) > 1:
        print("| kind | label | pairs | accepted | refused by guard |")
        print("|---|---|---|---|---|")
        for kind, k in by_kind.items():
            print(f"| {kind} | {k['label']} | {k['pairs']} | {k['accepted']} | {k['refused']} |")
    by_rule = g["by_rule"]
    assert isinstance(by_rule, dict)
    print("\n| rule | false hits removed | correct hits lost |\n|---|---|---|")
    for rule, r in sorted(by_rule.items()):
        print(f"| {rule} | {r['removed_false_hits']} | {r['lost_correct_hits']} |")


def _reasons(
    pairs: dict[str, dict[str, object]], pools: dict[str, dict[str, object]], t: float, r: int
) -> list[str]:
    """The numbers behind the recommendation, as sentences."""
    out: list[str] = []
    prompt_results = pairs["prompts"]["results"]
    assert isinstance(prompt_results, list)
    i = POOL_THRESHOLDS.index(t)
    for u in POOL_THRESHOLDS[max(0, i - 1) : i + 2]:
        m = _mode(prompt_results, u, "two-stage-256+guard")
        f = _mode(prompt_results, u, "two-stage-256")
        line = (
            f"cos ≥ {u:.2f}, prompt pairs: two-stage + guard serves {m['true_hits']} correct and "
            f"{m['false_hits']} false hits (false-hit rate {_pct(1 - float(m['precision']))} %, recall "
            f"{m['recall']:.2f}); without the guard {f['false_hits']} false hits"
        )
        for name, entry in pairs.items():
            if name != "prompts":
                results = entry["results"]
                assert isinstance(results, list)
                line += (
                    f"; {name} pairs precision {_mode(results, u, 'two-stage-256+guard')['precision']:.2f}"
                )
        out.append(line)
    shortlist = r or max(SHORTLISTS)
    for name, entry in pools.items():
        results = entry["results"]
        assert isinstance(results, list)
        b, two = _mode(results, t, "binary-256"), _mode(results, t, f"two-stage-{shortlist}")
        out.append(
            f"{name} pool at cos ≥ {t:.2f}: two-stage ({shortlist}) decides as exact float search in "
            f"{_pct(float(two['agree_with_float']))} % of lookups, binary-only in "
            f"{_pct(float(b['agree_with_float']))} %; binary-only serves {b['false']} false hits "
            f"({b['extra_hits']} hits float would refuse) against {two['false']}, for "
            f"{b['bytes_per_entry']:g} instead of {two['bytes_per_entry']:g} bytes an entry"
        )
    return out


def print_recommendation(rec: dict[str, object]) -> None:
    t, r = rec["threshold"], rec["rerank"]
    rows = rec["by_threshold"]
    assert isinstance(rows, list)
    pair_sets = [k.removesuffix("_pairs") for k in rows[0] if k.endswith("_pairs")]
    pool_sets = [k.removesuffix("_pool") for k in rows[0] if k.endswith("_pool")]
    print(f"\n#### Choosing the defaults: two-stage (shortlist {r or max(SHORTLISTS)}) + guard\n")
    head = [f"{n} pairs P / R" for n in pair_sets] + [
        f"{n} pool hit % (correct/false/other)" for n in pool_sets
    ]
    print("| cos ≥ | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for row in rows:
        cells = [
            f"{row[n + '_pairs']['precision']:.3f} / {row[n + '_pairs']['recall']:.3f}" for n in pair_sets
        ]
        cells += [
            "{} ({correct}/{false}/{other})".format(_pct(row[n + "_pool"]["hit_rate"]), **row[n + "_pool"])
            for n in pool_sets
        ]
        print(f"| {row['threshold']:.2f} | " + " | ".join(cells) + " |")
    agree = rec["agreement_with_float_at_threshold"]
    wrong = rec["false_share_of_labelled_hits_at_threshold"]
    assert isinstance(agree, dict) and isinstance(wrong, dict)
    shortfall = rec["largest_agreement_shortfall_vs_widest_shortlist"]
    assert isinstance(shortfall, dict)
    worst = ", ".join(f"{mode} {100 * v:.2f}" for mode, v in shortfall.items())
    print(
        f"\nWorst shortfall, over pools and thresholds {list(POOL_THRESHOLDS)}, in agreement with float "
        f"search against shortlist {max(SHORTLISTS)} (points): {worst}"
    )
    print(f"\nAt cos ≥ {t:.2f}, decisions equal to exact float search (pools {rec['pool_order']}):")
    for mode, values in agree.items():
        shares = ", ".join(f"{_pct(a)} %" for a in values)
        wrongs = ", ".join(f"{_pct(w)} %" for w in wrong[mode])
        print(f"- {mode}: {shares} (false share of labelled hits: {wrongs})")
    print()
    reasons = rec["reasons"]
    assert isinstance(reasons, list)
    for line in reasons:
        print(f"- {line}")
    print(
        f"\n**Recommended: threshold {t:.2f}, rerank {r}.** Threshold: the lowest of {list(POOL_THRESHOLDS)} "
        f"whose two-stage + guard false-hit rate on the prompt pairs is at most {_pct(FALSE_HIT_BUDGET)} %. "
        "Rerank: the smallest shortlist that agrees with exact float search as often as the largest "
        "(within 0.1 point) on every pool at every threshold; codes only if binary-only agrees within "
        "1 point and serves no larger share of false hits."
    )


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="labelled pair TSVs"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="max rows per public file (stratified sample)"
    )
    parser.add_argument("--quick", action="store_true", help="--limit 600 and smaller validation samples")
    parser.add_argument(
        "--datasets", nargs="+", default=["prompts", "msrp", "paws"], choices=["prompts", "msrp", "paws"]
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    missing = [
        str(args.data / f"{name}_{part}.tsv")
        for name in args.datasets
        if name != "prompts"
        for part in ("pairs", "all")
        if not (args.data / f"{name}_{part}.tsv").is_file()
    ]
    if missing:
        parser.error(
            f"labelled data not found: {', '.join(missing)}. MSRP and PAWS are not in the repository "
            "(see the README's 'Choosing the defaults'); pass --data DIR where they are, or run "
            "--datasets prompts for the bundled prompt pairs only"
        )
    limit = args.limit if args.limit is not None else (600 if args.quick else None)
    validate_n, loo_n = (50, 20) if args.quick else (300, 100)

    started = time.perf_counter()
    store = EmbeddingStore(EMBED_DIR)
    guard = FalseHitGuard()
    report: dict[str, object] = {
        "model": f"{MODEL} (unit norm)",
        "code_seed": SEED,
        "limit": limit,
        "current_defaults": {"threshold": DEFAULT_THRESHOLD, "rerank": DEFAULT_RERANK},
        "guard_rules": list(guard.rules),
        "pairs": {},
        "pools": {},
    }
    pairs_out: dict[str, dict[str, object]] = {}
    pools_out: dict[str, dict[str, object]] = {}
    features: dict[str, tuple[list[Pair], PairFeatures]] = {}
    for name in args.datasets:
        if name == "prompts":
            pairs = pool_rows = load_pairs(PROMPTS_TSV)
        else:
            pairs = subsample(load_pairs(args.data / f"{name}_pairs.tsv"), limit)
            pool_rows = subsample(load_pairs(args.data / f"{name}_all.tsv"), limit)
        texts = sorted({p.q1 for p in pairs + pool_rows} | {p.q2 for p in pairs + pool_rows})
        emb = store.embed(texts, name)
        row = {t: i for i, t in enumerate(texts)}

        f = pair_features(pairs, emb, row, guard)
        features[name] = (pairs, f)
        pairs_out[name] = {
            "pairs": len(pairs),
            "positives": int(f.labels.sum()),
            "auc_float": round(auc(f.cosine.astype(np.float64), f.labels), 4),
            "auc_binary_256": round(auc(-f.distance[256].astype(np.float64), f.labels), 4),
            "best_f1_float": best_f1(f),
            "validation": validate_pairs(pairs, emb, row, f, PAIR_THRESHOLDS, validate_n),
            "results": pair_level(f, PAIR_THRESHOLDS),
        }
        print_pair_table(name, pairs_out[name])
        p = pairs_out[name]
        print(
            f"\nfloat AUC {p['auc_float']}, 256-bit Hamming AUC {p['auc_binary_256']}, "
            f"best float F1 {p['best_f1_float']}; "
            f"vectorised decisions == BinarySemanticCache: {p['validation']}"
        )
        sys.stdout.flush()

        pool = build_pool(name, pool_rows, emb, row)
        pools_out[name] = pool_simulation(pool, POOL_THRESHOLDS, SHORTLISTS, loo_n)
        print_pool_table(name, pools_out[name])
        print(
            "\nderived decisions == real cache with the query deleted: "
            f"{pools_out[name]['check_against_cache']}"
        )
        sys.stdout.flush()

    report["pairs"] = pairs_out
    report["pools"] = pools_out
    if "prompts" in pairs_out and pools_out:
        rec = recommend(pairs_out, pools_out)
        t = rec["threshold"]
        assert isinstance(t, float)
        guard_out = {name: guard_effect(p_, f_, t) for name, (p_, f_) in features.items() if name != "paws"}
        for name, g in guard_out.items():
            print_guard_table(name, g)
        print_recommendation(rec)
        report["guard_effect"] = guard_out
        report["recommendation"] = rec
    report["embedding"] = {"embedded_now": store.embedded, "seconds": round(store.seconds, 1)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out} in {report['seconds']} s")


if __name__ == "__main__":
    main()
