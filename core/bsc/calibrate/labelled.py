"""Hit quality on labelled prompt pairs, and the recommended threshold and code size.

For each pair, q2's answer is cached and q1 is looked up; label 1 means the cached answer is right for
q1, label 0 that serving it would be a false hit. Decisions come from the real cache: per code size, one
`bsc.BinarySemanticCache` (default two-stage mode) holds every q2 in its own namespace, and one search per
q1 at threshold -1 returns the int8 cosine and the Hamming distance. A cache at threshold t hits exactly
when that cosine is >= t (within the cache's int8 tolerance) and the distance is within
``shortlist_radius(t, bits)``, so one search yields the decision at every threshold. "+ guard" also asks
`bsc.FalseHitGuard` (the default rules, as `bsc.SemanticCache` does); "float" is exact cosine >= t, the
reference no code can beat.

Per setting: hit rate (hits / pairs), precision, recall (correct hits / label-1 pairs) and the
false-hit rate (wrong hits / hits, the share of served answers that are wrong).

**The rule** (`recommend`): among code sizes and thresholds of the chosen mode, the setting with the
highest hit rate whose false-hit rate is <= the target (default 2 %); ties go to fewer bits, then the
higher threshold. The false-hit rate comes with a 95 % Wilson interval over the hits it was measured on;
when the interval's upper end exceeds the target, the sample is too small to confirm the choice, and
`hits_needed` says how many accepted pairs would confirm it.

Example:
    >>> wilson(0, 200)[1] < 0.02
    True
    >>> hits_needed(0.01, 0.02) > 300
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bsc.cache import INT8_TOLERANCE, BinarySemanticCache
from bsc.calibrate.inputs import LabelledPair
from bsc.calibrate.metrics import F32
from bsc.guard import FalseHitGuard
from bsc.thresholds import shortlist_radius

__all__ = [
    "CurvePoint",
    "PairDecisions",
    "Recommendation",
    "curve",
    "hits_needed",
    "pair_decisions",
    "pairs_needed_without_labels",
    "recommend",
    "wilson",
]

#: Thresholds the curves are computed at.
THRESHOLDS = tuple(round(0.70 + 0.01 * i, 2) for i in range(30))
#: z of a two-sided 95 % interval.
Z95 = 1.959964

B = npt.NDArray[np.bool_]


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (0..1 when n is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def hits_needed(rate: float, target: float, z: float = Z95) -> int | None:
    """Fewest hits at which an observed false-hit ``rate`` has a Wilson upper bound <= ``target``
    (None if ``rate`` >= ``target``: no sample size confirms it)."""
    if rate >= target:
        return None

    def upper(n: int) -> float:
        return wilson(math.ceil(rate * n - 1e-9), n, z)[1]

    high = 1
    while upper(high) > target:  # the bound tends to `rate` < target, so this ends
        high *= 2
    low = high // 2
    while low + 1 < high:
        mid = (low + high) // 2
        low, high = (mid, high) if upper(mid) > target else (low, mid)
    return high


@dataclass(frozen=True, slots=True)
class PairDecisions:
    """What the real cache returned for each pair, from which every threshold's decision follows."""

    labels: npt.NDArray[np.int64]
    float_cosine: F32
    guard_passes: B
    # per code size: the int8 cosine the two-stage cache computed, and the Hamming distance
    rerank_cosine: dict[int, F32]
    distance: dict[int, npt.NDArray[np.int64]]

    def hits(self, mode: str, bits: int, threshold: float) -> B:
        """Which pairs hit in ``mode`` ("float", "two-stage", "two-stage + guard") at a setting."""
        if mode == "float":
            return self.float_cosine >= threshold
        radius = shortlist_radius(threshold, bits)
        hit = (self.rerank_cosine[bits] >= threshold - INT8_TOLERANCE) & (self.distance[bits] <= radius)
        return hit & self.guard_passes if mode == "two-stage + guard" else hit


def pair_decisions(
    pairs: Sequence[LabelledPair], q1: F32, q2: F32, bits_list: Sequence[int]
) -> PairDecisions:
    """Runs every pair through a real cache per code size (see the module docstring); ``q1``/``q2`` are
    the unit embeddings of the pairs' texts, row by row."""
    guard = FalseHitGuard()
    rerank_cosine: dict[int, F32] = {}
    distance: dict[int, npt.NDArray[np.int64]] = {}
    for bits in bits_list:
        cache = BinarySemanticCache(q1.shape[1], code_bits=bits, threshold=-1.0, max_entries=len(pairs))
        sims = np.empty(len(pairs), dtype=np.float32)
        dist = np.empty(len(pairs), dtype=np.int64)
        for i in range(len(pairs)):
            cache.put(q2[i], "", namespace=f"pair-{i}")
            (hit,) = cache.search(q1[i], namespace=f"pair-{i}", k=1)
            sims[i], dist[i] = hit.similarity, hit.distance
        rerank_cosine[bits], distance[bits] = sims, dist
    return PairDecisions(
        labels=np.array([p.label for p in pairs], dtype=np.int64),
        float_cosine=np.einsum("ij,ij->i", q1.astype(np.float64), q2.astype(np.float64)).astype(np.float32),
        guard_passes=np.array([guard.check(p.q1, p.q2) is None for p in pairs], dtype=bool),
        rerank_cosine=rerank_cosine,
        distance=distance,
    )


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """Hit quality of one mode at one code size and threshold."""

    mode: str
    bits: int
    threshold: float
    hits: int
    false_hits: int
    pairs: int
    positives: int
    hit_rate: float
    precision: float
    recall: float
    false_hit_rate: float


def _point(mode: str, bits: int, t: float, hit: B, labels: npt.NDArray[np.int64]) -> CurvePoint:
    hits = int(hit.sum())
    correct = int((hit & (labels == 1)).sum())
    positives = int((labels == 1).sum())
    return CurvePoint(
        mode=mode,
        bits=bits,
        threshold=t,
        hits=hits,
        false_hits=hits - correct,
        pairs=len(labels),
        positives=positives,
        hit_rate=hits / len(labels),
        precision=correct / hits if hits else 1.0,
        recall=correct / positives if positives else 0.0,
        false_hit_rate=(hits - correct) / hits if hits else 0.0,
    )


MODES = ("float", "two-stage", "two-stage + guard")


def curve(decisions: PairDecisions, bits_list: Sequence[int]) -> list[CurvePoint]:
    """Every mode at every code size (float once, as bits 0) and threshold in `THRESHOLDS`."""
    points = [_point("float", 0, t, decisions.hits("float", 0, t), decisions.labels) for t in THRESHOLDS]
    for mode in MODES[1:]:
        for bits in bits_list:
            points.extend(
                _point(mode, bits, t, decisions.hits(mode, bits, t), decisions.labels) for t in THRESHOLDS
            )
    return points


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The setting `recommend` chose, with its uncertainty; ``point`` is None when no setting meets the
    target (then only ``reason`` is meaningful)."""

    mode: str
    target_false_hit_rate: float
    point: CurvePoint | None
    false_hit_rate_interval: tuple[float, float] | None
    hit_rate_interval: tuple[float, float] | None
    confirmed: bool
    pairs_needed: int | None
    reason: str


def recommend(points: Sequence[CurvePoint], mode: str, target: float) -> Recommendation:
    """The highest hit rate of ``mode`` whose false-hit rate is <= ``target`` (ties: fewer bits, then the
    higher threshold), with 95 % Wilson intervals, whether the interval confirms it, and how many labelled
    pairs of this kind would (None if already confirmed or if no sample size could)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"the target false-hit rate must be in (0, 1), got {target!r}")
    eligible = [p for p in points if p.mode == mode and p.hits > 0 and p.false_hit_rate <= target]
    if not eligible:
        return Recommendation(
            mode=mode,
            target_false_hit_rate=target,
            point=None,
            false_hit_rate_interval=None,
            hit_rate_interval=None,
            confirmed=False,
            pairs_needed=None,
            reason=f"no code size and threshold of '{mode}' keeps the false-hit rate at or below "
            f"{target:.1%} on these pairs: raise the target or add a verifier",
        )
    best = max(eligible, key=lambda p: (p.hit_rate, -p.bits, p.threshold))
    fhr = wilson(best.false_hits, best.hits)
    confirmed = fhr[1] <= target
    needed = None
    if not confirmed:
        hits = hits_needed(best.false_hit_rate, target)
        needed = None if hits is None else math.ceil(hits / best.hit_rate)
    reason = (
        f"highest hit rate ({best.hit_rate:.1%}) with a false-hit rate <= {target:.1%}: "
        f"{best.false_hits} wrong of {best.hits} hits"
    )
    return Recommendation(
        mode=mode,
        target_false_hit_rate=target,
        point=best,
        false_hit_rate_interval=fhr,
        hit_rate_interval=wilson(best.hits, best.pairs),
        confirmed=confirmed,
        pairs_needed=needed,
        reason=reason,
    )


def pairs_needed_without_labels(target: float, hit_share: float = 0.5) -> int:
    """How many labelled pairs to collect before the interval can confirm ``target``: enough accepted
    pairs that a measured rate of half the target has its Wilson upper bound at the target, assuming
    ``hit_share`` of the labelled pairs are accepted by the cache."""
    hits = hits_needed(target / 2, target)
    assert hits is not None  # target / 2 < target always converges
    return math.ceil(hits / hit_share)
