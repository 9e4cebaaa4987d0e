"""Retrieval metrics against exact float search, bit balance and geometry diagnostics of an embedding set.

The prompts serve as both the stored entries and the queries: each prompt looks up its neighbours among
the *other* prompts (leave-one-out), once by exact float cosine (the reference) and once through a
compressed representation. Definitions (``E_k`` = exact top-k, ``A_k`` = approximate top-k, per query,
averaged over queries):

- ``recall@k``: the exact nearest neighbour is in ``A_k`` (faiss's R@k). Recall@10 is what a shortlist of
  10 reranked by exact cosine needs, so it is the number bsc's two-stage mode lives on.
- ``overlap@k``: ``|A_k ∩ E_k| / k`` (ann-benchmarks' k-recall@k), the stricter whole-list agreement.
- ``nDCG@k``: graded by exact rank (the exact r-th neighbour, r = 0..k-1, has gain ``k - r``; others 0),
  discounted by ``log2(position + 2)``, divided by the ideal (exact) ordering's DCG.

Example:
    >>> import numpy as np
    >>> exact = np.array([[1, 2, 3]]); approx = np.array([[2, 1, 9]])
    >>> recall_at(approx, exact, 1), recall_at(approx, exact, 3), round(overlap_at(approx, exact, 3), 3)
    (0.0, 1.0, 0.667)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BitBalance",
    "Geometry",
    "Retrieval",
    "bit_balance",
    "exact_neighbours",
    "geometry",
    "ndcg_at",
    "overlap_at",
    "recall_at",
    "retrieval",
    "top_k",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: A bit set in more than this share of codes carries little information (the campaign's balance rule).
BIT_BALANCE_LIMIT = 0.60


def top_k(queries: F32, database: F32, k: int, rows: I64 | None = None, chunk: int = 1024) -> tuple[I64, F32]:
    """Each query's ``k`` best database rows by inner product, best first, with the scores. Query i is
    the prompt of database row ``rows[i]`` (default: row i) and never returns it (leave-one-out).
    Computed in chunks of ``chunk`` queries, so memory stays ``chunk * n``."""
    n = len(database)
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for {n} rows, got {k}")
    own = np.arange(len(queries)) if rows is None else rows
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        block = (queries[start : start + chunk] @ database.T).astype(np.float32)
        block[np.arange(len(block)), own[start : start + len(block)]] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        ids[start : start + len(block)] = np.take_along_axis(top, order, axis=1)
        scores[start : start + len(block)] = np.take_along_axis(top_scores, order, axis=1)
    return ids, scores


def exact_neighbours(emb: F32, k: int, rows: I64 | None = None) -> tuple[I64, F32]:
    """The ``k`` nearest other rows of each unit row in ``rows`` (default: all) by exact cosine, best
    first, with the cosines."""
    return top_k(emb if rows is None else emb[rows], emb, k, rows)


def recall_at(approx: I64, exact: I64, k: int) -> float:
    """Share of queries whose exact nearest neighbour is among the first ``k`` approximate ones."""
    return float(np.mean((approx[:, :k] == exact[:, :1]).any(axis=1)))


def overlap_at(approx: I64, exact: I64, k: int) -> float:
    """Mean share of the exact top-``k`` that the approximate top-``k`` contains."""
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) / k


def ndcg_at(approx: I64, exact: I64, k: int) -> float:
    """Mean nDCG@k of the approximate ranking, relevance graded by exact rank (see the module docstring)."""
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = float(np.sum((k - np.arange(k)) * discount))
    total = 0.0
    for a, e in zip(approx, exact, strict=True):
        gain = {int(item): k - rank for rank, item in enumerate(e[:k])}
        total += sum(gain.get(int(item), 0) * discount[i] for i, item in enumerate(a[:k])) / ideal
    return total / len(approx)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """How well a compressed representation reproduces exact float neighbours (see the module docstring)."""

    recall_at_1: float
    recall_at_10: float
    ndcg_at_10: float
    overlap_at_10: float


def retrieval(approx: I64, exact: I64) -> Retrieval:
    """All four metrics of an approximate top-10 against the exact one."""
    return Retrieval(
        recall_at_1=recall_at(approx, exact, 1),
        recall_at_10=recall_at(approx, exact, 10),
        ndcg_at_10=ndcg_at(approx, exact, 10),
        overlap_at_10=overlap_at(approx, exact, 10),
    )


@dataclass(frozen=True, slots=True)
class BitBalance:
    """Share of codes that set each bit, summarised. A balanced bit is set in half the codes; the
    campaign's rule is that no bit is set in more than 60 % (or fewer than 40 %) of them."""

    max_share: float
    min_share: float
    mean_abs_deviation: float
    unbalanced_bits: int
    bits: int

    @property
    def balanced(self) -> bool:
        """True if every bit is set in 40-60 % of the codes."""
        return self.unbalanced_bits == 0


def bit_balance(codes: npt.NDArray[np.uint64], bits: int) -> BitBalance:
    """The balance of ``codes`` (shape ``(n, bits // 64)``, as `bsc.BinaryEncoder` returns them)."""
    unpacked = np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1)[:, :bits]
    share = unpacked.mean(axis=0)
    off = np.maximum(share, 1.0 - share) > BIT_BALANCE_LIMIT
    return BitBalance(
        max_share=float(share.max()),
        min_share=float(share.min()),
        mean_abs_deviation=float(np.mean(np.abs(share - 0.5))),
        unbalanced_bits=int(off.sum()),
        bits=bits,
    )


def _twonn(ratios: npt.NDArray[np.float64], keep: float = 0.9) -> float:
    """TwoNN's estimate from the ratios r2/r1: the slope through the origin of ``-log(1 - F(mu))``
    against ``log(mu)`` over the smallest ``keep`` share of ratios (Facco et al. 2017 drop the largest
    10 %, which near-duplicate prompts inflate)."""
    mu = np.sort(ratios)
    n_fit = int(len(mu) * keep)
    if n_fit < 2:
        return math.nan
    x = np.log(mu[:n_fit])
    y = -np.log(1.0 - np.arange(1, n_fit + 1) / len(mu))
    denominator = float(x @ x)
    return float(x @ y) / denominator if denominator > 0 else math.nan


@dataclass(frozen=True, slots=True)
class Geometry:
    """Shape of an embedding set, as far as it matters for sign-random-projection codes.

    Attributes:
        anisotropy: mean cosine between distinct prompts (0 for directions spread evenly; high values
            mean every prompt sits in one narrow cone, where 1-bit codes spend bits on the shared part).
        outlier_fraction: share of prompts whose cosine to the mean direction is more than 3 robust
            standard deviations (1.4826 * MAD) below the median.
        intrinsic_dim_twonn: TwoNN estimate (Facco et al. 2017) from the ratio of the Euclidean distances
            to the two nearest neighbours, fitted on the smallest 90 % of ratios; prompts with an exact
            duplicate embedding are left out.
        intrinsic_dim_pca90: principal components (of the centred embeddings) holding 90 % of variance.
        mean_angle_deg, std_angle_deg: angle between random distinct pairs (up to 20,000 sampled).
        median_nn_angle_deg: median angle to the nearest other prompt.
    """

    anisotropy: float
    outlier_fraction: float
    intrinsic_dim_twonn: float
    intrinsic_dim_pca90: int
    mean_angle_deg: float
    std_angle_deg: float
    median_nn_angle_deg: float


def geometry(
    emb: F32, nn_ids: I64, rows: I64 | None = None, *, seed: int = 0, sample_pairs: int = 20_000
) -> Geometry:
    """Geometry diagnostics of unit rows ``emb``, given the exact nearest other rows ``nn_ids`` (best
    first, at least two columns, from `exact_neighbours`) of the rows ``rows`` (default: all)."""
    n = len(emb)
    x = emb.astype(np.float64)
    total = x.sum(axis=0)
    anisotropy = (float(total @ total) - n) / (n * (n - 1))

    centre = total / np.linalg.norm(total)
    to_centre = x @ centre
    median = float(np.median(to_centre))
    mad = 1.4826 * float(np.median(np.abs(to_centre - median)))
    outliers = float(np.mean(to_centre < median - 3.0 * mad)) if mad > 0 else 0.0

    # Distances in float64 from the vectors: from a float32 cosine near 1, sqrt(2 - 2 cos) is mostly noise.
    own = x if rows is None else x[rows]
    r = np.linalg.norm(own[:, None, :] - x[nn_ids[:, :2]], axis=2)
    usable = r[:, 0] > 1e-6
    twonn = _twonn(r[usable, 1] / r[usable, 0])

    centred = x - x.mean(axis=0)
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    pca90 = int(np.searchsorted(np.cumsum(variance) / variance.sum(), 0.90) + 1)

    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, sample_pairs)
    b = rng.integers(0, n, sample_pairs)
    distinct = a != b
    cosines = np.einsum("ij,ij->i", x[a[distinct]], x[b[distinct]])
    angles = np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))
    nn_angles = np.degrees(2.0 * np.arcsin(np.clip(r[:, 0] / 2.0, 0.0, 1.0)))
    return Geometry(
        anisotropy=anisotropy,
        outlier_fraction=outliers,
        intrinsic_dim_twonn=twonn,
        intrinsic_dim_pca90=pca90,
        mean_angle_deg=float(angles.mean()),
        std_angle_deg=float(angles.std()),
        median_nn_angle_deg=float(np.median(nn_angles)),
    )
