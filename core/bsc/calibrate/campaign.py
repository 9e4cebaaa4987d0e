"""The calibration campaign: every measurement of ``bsc calibrate`` on one set of prompts, and the verdicts.

`calibrate` embeds the prompts (and the labelled pairs' texts) once, then measures against exact float
search on those embeddings: retrieval quality of binary codes, PQ and int8 at equal bytes per entry
(`bsc.calibrate.quantizers`), the real cache's decision agreement with exact float search's (and PQ's
and int8's at equal bytes), bit balance and geometry
(`bsc.calibrate.metrics`), and with labelled pairs the hit-quality curves and the recommended setting
(`bsc.calibrate.labelled`).

The bands are the research campaign's: binary Recall@10 >= 0.65 green, 0.55-0.65 yellow, below red
(judged at 256 and 512 bits); binary Recall@10 >= 0.80x PQ's at equal memory green, < 0.5x red; no bit
set in more than 60 % of codes.

Example:
    >>> from bsc.embedders import default_embedder
    >>> result = calibrate(["What is 2+2?", ...], embedder=default_embedder())  # doctest: +SKIP
    >>> result.code_size.bits  # doctest: +SKIP
    256
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bsc.calibrate.inputs import CalibrationInputError, LabelledPair
from bsc.calibrate.labelled import (
    CurvePoint,
    Recommendation,
    curve,
    pair_decisions,
    pairs_needed_without_labels,
    recommend,
)
from bsc.calibrate.metrics import F32, BitBalance, Geometry, bit_balance, exact_neighbours, geometry
from bsc.calibrate.quantizers import (
    Agreement,
    K,
    QuantizerRow,
    binary_codes,
    compare_at_equal_memory,
    decision_agreement,
)
from bsc.embedders import Embedder

__all__ = [
    "AGREEMENT_TARGET",
    "AGREEMENT_THRESHOLDS",
    "DEFAULT_BITS",
    "Bands",
    "Calibration",
    "CodeSize",
    "calibrate",
    "embed_all",
    "pq_band",
    "recall_band",
]

logger = logging.getLogger(__name__)

DEFAULT_BITS = (64, 128, 256, 512, 1024)
AGREEMENT_THRESHOLDS = (0.80, 0.85, 0.90, 0.95)
#: The code-size rule: the smallest size whose two-stage cache decides like exact float search on at
#: least this share of lookups at every threshold in `AGREEMENT_THRESHOLDS`.
AGREEMENT_TARGET = 0.99
_EMBED_BATCH = 64
#: Retrieval and agreement are measured over at most this many prompts as queries (a seeded sample),
#: each searching every prompt: the metrics' error is then about 1 % while the cost stays linear in the
#: number of prompts.
MAX_QUERIES = 2000


def recall_band(recall_at_10: float) -> str:
    """The campaign's band of a binary Recall@10 against exact float search."""
    return "green" if recall_at_10 >= 0.65 else "yellow" if recall_at_10 >= 0.55 else "red"


def pq_band(ratio: float) -> str:
    """The campaign's band of binary Recall@10 as a multiple of PQ's at equal memory."""
    return "green" if ratio >= 0.80 else "yellow" if ratio >= 0.5 else "red"


@dataclass(frozen=True, slots=True)
class Bands:
    """The campaign's bands at one code size, on Recall@10 and on the stricter overlap@10 (the research
    did not say which of the two it meant by Recall@10, so both are judged), and binary / PQ at equal
    memory on each (None when PQ was not measured)."""

    recall_at_10: str
    overlap_at_10: str
    vs_pq_recall: float | None
    vs_pq_recall_band: str | None
    vs_pq_overlap: float | None
    vs_pq_overlap_band: str | None


@dataclass(frozen=True, slots=True)
class CodeSize:
    """The code size the rule picked from the prompts alone (see `AGREEMENT_TARGET`), with its lowest
    agreement over the thresholds measured and the threshold where that occurred."""

    bits: int
    agreement: float
    threshold: float
    met: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Calibration:
    """Everything ``bsc calibrate`` measured; `bsc.calibrate.report` renders it."""

    embedder: str
    dim: int
    prompts: int
    queries: int
    duplicates_dropped: int
    bits: tuple[int, ...]
    quantizers: list[QuantizerRow]
    agreement: list[Agreement]
    bit_balance: list[BitBalance]
    geometry: Geometry
    code_size: CodeSize
    pairs: int
    pair_cosines: tuple[list[float], list[float]] | None  # float cosines of label-1, label-0 pairs
    curve: list[CurvePoint]
    recommendation: Recommendation | None
    recommendation_without_guard: Recommendation | None
    pairs_needed: int
    target_false_hit_rate: float

    def at_size(self, bits: int) -> tuple[QuantizerRow, QuantizerRow, QuantizerRow]:
        """The binary, PQ and int8 rows at ``bits // 8`` bytes per entry."""
        by = {(q.method, q.bytes_per_entry): q for q in self.quantizers}
        n = bits // 8
        return by[("binary", n)], by[("pq", n)], by[("int8", n)]

    def bands(self, bits: int) -> Bands:
        """The campaign's verdicts at one code size."""
        binary, pq, _ = self.at_size(bits)
        assert binary.retrieval is not None  # binary rows are always measured
        r = binary.retrieval
        vs_r = vs_o = None
        if pq.retrieval is not None:
            vs_r = r.recall_at_10 / pq.retrieval.recall_at_10 if pq.retrieval.recall_at_10 else None
            vs_o = r.overlap_at_10 / pq.retrieval.overlap_at_10 if pq.retrieval.overlap_at_10 else None
        return Bands(
            recall_at_10=recall_band(r.recall_at_10),
            overlap_at_10=recall_band(r.overlap_at_10),
            vs_pq_recall=vs_r,
            vs_pq_recall_band=None if vs_r is None else pq_band(vs_r),
            vs_pq_overlap=vs_o,
            vs_pq_overlap_band=None if vs_o is None else pq_band(vs_o),
        )


def _batches(texts: list[str], progress: bool) -> Iterator[list[str]]:
    starts = range(0, len(texts), _EMBED_BATCH)
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:
            logger.info("tqdm is not installed: no progress bar")
        else:
            with tqdm(total=len(texts), desc="embedding", unit="text", file=sys.stderr, ncols=88) as bar:
                for s in starts:
                    yield texts[s : s + _EMBED_BATCH]
                    bar.update(min(_EMBED_BATCH, len(texts) - s))
            return
    for s in starts:
        yield texts[s : s + _EMBED_BATCH]


def embed_all(embedder: Embedder, texts: list[str], progress: bool) -> F32:
    """Unit embeddings of ``texts`` in batches, with a progress bar on stderr if asked (and tqdm is there)."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.concatenate([embedder.embed(batch) for batch in _batches(texts, progress)])


def _code_size(agreement: list[Agreement], bits: Sequence[int]) -> CodeSize:
    worst = {
        b: min((a for a in agreement if a.mode == "two-stage" and a.bits == b), key=lambda a: a.agreement)
        for b in bits
    }
    span = f"{min(AGREEMENT_THRESHOLDS):.2f}-{max(AGREEMENT_THRESHOLDS):.2f}"
    for b in sorted(bits):
        if worst[b].agreement >= AGREEMENT_TARGET:
            reason = (
                f"smallest code whose two-stage decisions equal exact float search's on >= "
                f"{AGREEMENT_TARGET:.0%} of lookups at every threshold {span}"
            )
            return CodeSize(b, worst[b].agreement, worst[b].threshold, True, reason)
    best = max(sorted(bits), key=lambda b: worst[b].agreement)
    reason = f"no code size reaches {AGREEMENT_TARGET:.0%} agreement at every threshold {span}; the best"
    return CodeSize(best, worst[best].agreement, worst[best].threshold, False, reason)


def calibrate(
    prompts: Sequence[str],
    *,
    embedder: Embedder,
    pairs: Sequence[LabelledPair] = (),
    bits: Sequence[int] = DEFAULT_BITS,
    target_false_hit_rate: float = 0.02,
    progress: bool = False,
) -> Calibration:
    """Runs the whole campaign on ``prompts`` (and ``pairs`` if given) and returns the measurements.

    Args:
        prompts: the user's prompts; exact repeats are dropped (the exact-match layer answers them).
        embedder: the embedder the cache will use.
        pairs: labelled pairs for the threshold recommendation (may be empty).
        bits: code sizes to measure, each one of 64, 128, 256, 512, 1024.
        target_false_hit_rate: the recommendation's false-hit budget, in (0, 1).
        progress: draw a progress bar on stderr while embedding.

    Raises:
        CalibrationInputError: fewer than 11 distinct prompts (Recall@10 needs 10 other prompts).
        ValueError: an unsupported code size or a target outside (0, 1).
    """
    sizes = tuple(sorted(set(bits)))
    bad = [b for b in sizes if b not in DEFAULT_BITS]
    if bad or not sizes:
        raise ValueError(f"code sizes must be among {', '.join(map(str, DEFAULT_BITS))}, got {list(bits)}")
    if not 0.0 < target_false_hit_rate < 1.0:
        raise ValueError(f"the target false-hit rate must be in (0, 1), got {target_false_hit_rate!r}")
    distinct = list(dict.fromkeys(p for p in prompts))
    if len(distinct) <= K:
        raise CalibrationInputError(
            f"need at least {K + 1} distinct prompts (each is compared with its {K} nearest others), "
            f"got {len(distinct)}"
        )
    pair_texts = [t for p in pairs for t in (p.q1, p.q2)]
    texts = list(dict.fromkeys([*distinct, *pair_texts]))
    vectors = embed_all(embedder, texts, progress)
    row = {t: i for i, t in enumerate(texts)}
    emb = np.ascontiguousarray(vectors[: len(distinct)])

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(emb), min(len(emb), MAX_QUERIES), replace=False)).astype(np.int64)
    logger.info("exact float neighbours of %d of %d prompts", len(rows), len(emb))
    exact_ids, exact_sims = exact_neighbours(emb, K, rows)
    logger.info("binary, PQ and int8 at equal bytes per entry")
    thresholds = list(AGREEMENT_THRESHOLDS)
    quantizers, quantised = compare_at_equal_memory(
        emb, (exact_ids, exact_sims), list(sizes), thresholds, rows
    )
    logger.info("cache decisions against exact float decisions")
    agreement = [*decision_agreement(emb, exact_ids, exact_sims, list(sizes), thresholds, rows), *quantised]

    points: list[CurvePoint] = []
    rec = rec_no_guard = None
    cosines = None
    if pairs:
        logger.info("hit quality on %d labelled pairs", len(pairs))
        q1 = vectors[[row[p.q1] for p in pairs]]
        q2 = vectors[[row[p.q2] for p in pairs]]
        decisions = pair_decisions(pairs, q1, q2, sizes)
        points = curve(decisions, sizes)
        rec = recommend(points, "two-stage + guard", target_false_hit_rate)
        rec_no_guard = recommend(points, "two-stage", target_false_hit_rate)
        labels = decisions.labels
        cosines = (
            decisions.float_cosine[labels == 1].tolist(),
            decisions.float_cosine[labels == 0].tolist(),
        )
    return Calibration(
        embedder=embedder.name,
        dim=int(emb.shape[1]),
        prompts=len(distinct),
        queries=len(rows),
        duplicates_dropped=len(prompts) - len(distinct),
        bits=sizes,
        quantizers=quantizers,
        agreement=agreement,
        bit_balance=[bit_balance(binary_codes(emb, b), b) for b in sizes],
        geometry=geometry(emb, exact_ids, rows),
        code_size=_code_size(agreement, sizes),
        pairs=len(pairs),
        pair_cosines=cosines,
        curve=points,
        recommendation=rec,
        recommendation_without_guard=rec_no_guard,
        pairs_needed=pairs_needed_without_labels(target_false_hit_rate),
        target_false_hit_rate=target_false_hit_rate,
    )
