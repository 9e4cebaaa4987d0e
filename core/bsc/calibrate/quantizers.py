"""Compressed representations compared at equal bytes per entry, and the cache's decisions against exact ones.

Three ways to store an entry in ``B`` bytes, each searched for every prompt's 10 nearest other prompts:

- **binary**: bsc's own codes (`bsc.BinaryEncoder`, seeded Gaussian projection, sign bits), ``8·B`` bits,
  ranked by Hamming distance with bsc's scan (`bsc._native.hamming_search`). The query is a code too.
- **PQ**: faiss ``IndexPQ`` with ``B`` sub-quantisers of 8 bits (256 centroids each), trained on the
  prompts themselves, ranked by asymmetric inner product (the query stays float). Needs faiss-cpu, at
  least 256 prompts and ``B`` dividing the dimension; otherwise the row is skipped with the reason.
- **int8**: the top ``B`` directions of a truncated SVD (uncentred, so inner products keep their meaning)
  of the prompts, each scalar-quantised to 8 bits between its min and max (faiss's SQ8 rule), ranked by
  asymmetric inner product. One extra row keeps every dimension (``dim`` bytes: what bsc's rerank stores).

`decision_agreement` then runs the real `bsc.BinarySemanticCache` (two-stage and binary-only) over the
prompts and counts how often its hit-or-miss decision equals exact float search's at each threshold.
`compare_at_equal_memory` counts the same for PQ and int8, each deciding on its own similarity estimate
of its nearest entry (PQ: the asymmetric inner product with the reconstructed entry, which is the cosine
estimate for unit vectors; int8: the dot product with the dequantised entry).

Example:
    >>> import numpy as np
    >>> emb = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    >>> emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    >>> ids = binary_neighbours(binary_codes(emb, 256), 10)
    >>> ids.shape
    (300, 10)
    >>> ids, scores = int8_neighbours(emb, 64, 1)
    >>> served = served_entries(ids, scores, 0.9)  # -1: no entry reaches cosine 0.9
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bsc._native import BinaryEncoder, hamming_search
from bsc.cache import DEFAULT_RERANK, BinarySemanticCache
from bsc.calibrate.metrics import F32, I64, Retrieval, retrieval, top_k

__all__ = [
    "Agreement",
    "QuantizerRow",
    "Skipped",
    "binary_codes",
    "binary_neighbours",
    "compare_at_equal_memory",
    "decision_agreement",
    "int8_neighbours",
    "pq_neighbours",
    "quantiser_agreement",
    "served_entries",
]

logger = logging.getLogger(__name__)

K = 10
#: The projection seed of the codes measured (the cache's default).
SEED = 42
# faiss's k-means needs at least one training point per centroid; 2**8 centroids per sub-quantiser.
_PQ_MIN_POINTS = 256
# ... and recommends 39 per centroid: with fewer, the centroids nearly memorise the training prompts,
# and since PQ is trained on the very prompts it is measured on, its figures come out optimistic.
PQ_RECOMMENDED_POINTS = 39 * 256


class Skipped(Exception):
    """A representation cannot be measured on these inputs; the message says why."""


@dataclass(frozen=True, slots=True)
class QuantizerRow:
    """One representation at one size: its retrieval quality, or why it was not measured."""

    method: str
    bytes_per_entry: int
    retrieval: Retrieval | None
    note: str | None = None


def binary_codes(emb: F32, bits: int, seed: int = SEED) -> npt.NDArray[np.uint64]:
    """bsc's ``bits``-bit codes of the rows of ``emb`` (what `bsc.BinarySemanticCache` stores)."""
    return BinaryEncoder(emb.shape[1], bits, seed).encode(emb)


def _all(n: int, rows: I64 | None) -> I64:
    return np.arange(n, dtype=np.int64) if rows is None else rows


def binary_neighbours(codes: npt.NDArray[np.uint64], k: int, rows: I64 | None = None) -> I64:
    """The ``k`` nearest other codes of each code in ``rows`` (default: all) by Hamming distance (ties
    by position, as bsc's scan breaks them)."""
    queries = _all(len(codes), rows)
    found = np.stack([hamming_search(codes, codes[q], k + 1)[0] for q in queries])
    return np.take_along_axis(found, _without_self(found, k, queries), axis=1)


def _without_self(found: I64, k: int, queries: I64) -> npt.NDArray[np.intp]:
    """Column positions, per row of ``found`` (the k + 1 best), of its first ``k`` entries other than
    the query itself."""
    keep = found != queries[:, None]
    return np.stack([np.flatnonzero(row)[:k] for row in keep])


def pq_neighbours(emb: F32, n_bytes: int, k: int, rows: I64 | None = None) -> tuple[I64, F32]:
    """The ``k`` nearest other rows of each row in ``rows`` (default: all) through a faiss ``IndexPQ``
    of ``n_bytes`` bytes an entry, trained on and holding every row, with PQ's estimate of each one's
    inner product with the (float) query: for unit vectors, its cosine estimate.

    Raises:
        Skipped: faiss is not installed, fewer than 256 rows, or ``n_bytes`` does not divide the dim.
    """
    n, dim = emb.shape
    if dim % n_bytes:
        raise Skipped(f"{n_bytes} sub-quantisers do not divide dimension {dim}")
    if n < _PQ_MIN_POINTS:
        raise Skipped(f"PQ needs at least {_PQ_MIN_POINTS} prompts to train 256 centroids, got {n}")
    try:
        import faiss
    except ImportError:
        raise Skipped('faiss is not installed (pip install "bsc-cache[calibrate]")') from None
    index = faiss.IndexPQ(dim, n_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.min_points_per_centroid = 1  # the shortfall is reported in the row's note instead
    data = np.ascontiguousarray(emb, dtype=np.float32)
    index.train(data)
    index.add(data)
    queries = _all(n, rows)
    scores, found = index.search(data[queries], k + 1)
    cols = _without_self(found.astype(np.int64), k, queries)
    ids = np.take_along_axis(found, cols, axis=1).astype(np.int64)
    return ids, np.take_along_axis(scores, cols, axis=1).astype(np.float32)


def int8_neighbours(emb: F32, n_bytes: int, k: int, rows: I64 | None = None) -> tuple[I64, F32]:
    """The ``k`` nearest other rows of each row in ``rows`` (default: all) through ``n_bytes`` int8
    components an entry (the top SVD directions if ``n_bytes`` < dim, else every dimension),
    scalar-quantised per component, with each one's dequantised dot product with the (float, projected)
    query: int8's cosine estimate (below dim bytes it leaves out the dropped directions' part)."""
    dim = emb.shape[1]
    x = emb.astype(np.float64)
    if n_bytes < dim:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:n_bytes].T
    low, high = x.min(axis=0), x.max(axis=0)
    step = np.where(high > low, (high - low) / 255.0, 1.0)
    stored = np.rint((x - low) / step) * step + low  # what 8 bits a component can hold
    queries = _all(len(x), rows)
    return top_k(x[queries].astype(np.float32), stored.astype(np.float32), k, queries)


@dataclass(frozen=True, slots=True)
class Agreement:
    """How often a cache (or a quantiser's own decision) agrees with exact float search's over the same
    prompts, at one setting.

    ``mode`` is a cache mode (``two-stage``, ``binary-only``: ``bits`` is the code size) or a quantiser
    deciding on its own estimate (``pq``, ``int8`` at ``bits // 8`` bytes per entry, the binary code's
    size; ``int8-full`` at ``dim`` bytes, ``bits = 8 * dim``). ``agreement`` counts a lookup as agreeing
    when both miss or both return the same entry; the disagreements split into ``missed`` (float hits,
    the cache misses), ``extra`` (the cache hits, float misses) and ``other`` (both hit, different
    entries).
    """

    mode: str
    bits: int
    threshold: float
    agreement: float
    missed: float
    extra: float
    other: float
    float_hit_rate: float


def served_entries(ids: I64, scores: F32, threshold: float) -> I64:
    """Per query, the entry a cache deciding on ``scores`` serves (its best, ``ids[:, 0]``, if that
    scores at least ``threshold``), or -1 for a miss. With exact cosines: exact float search's decision."""
    return np.where(scores[:, 0] >= threshold, ids[:, 0], -1)


def _agreement(mode: str, bits: int, threshold: float, got: I64, reference: I64) -> Agreement:
    ref_hit, got_hit = reference >= 0, got >= 0
    return Agreement(
        mode=mode,
        bits=bits,
        threshold=threshold,
        agreement=float(np.mean(got == reference)),
        missed=float(np.mean(ref_hit & ~got_hit)),
        extra=float(np.mean(~ref_hit & got_hit)),
        other=float(np.mean(ref_hit & got_hit & (got != reference))),
        float_hit_rate=float(np.mean(ref_hit)),
    )


def quantiser_agreement(
    mode: str,
    bits: int,
    found: tuple[I64, F32],
    exact: tuple[I64, F32],
    thresholds: list[float],
) -> list[Agreement]:
    """`Agreement` at each threshold of a quantiser whose nearest entries and similarity estimates per
    query are ``found`` (ids, scores; best first) with exact float search's ``exact`` on the same
    queries: each decides on its own top entry's score."""
    return [
        _agreement(mode, bits, t, served_entries(*found, t), served_entries(*exact, t)) for t in thresholds
    ]


def compare_at_equal_memory(
    emb: F32,
    exact: tuple[I64, F32],
    bits_list: list[int],
    thresholds: list[float],
    rows: I64 | None = None,
) -> tuple[list[QuantizerRow], list[Agreement]]:
    """Binary, PQ and int8 rows at ``bits // 8`` bytes for each code size, plus ``int8-full``: every
    dimension in 8 bits (``dim`` bytes, the two-stage rerank's copy); and the PQ and int8 decisions'
    `Agreement` with exact float search's at each of ``thresholds``. ``exact`` holds the exact top 10
    (ids, cosines) of the query rows ``rows`` (default: every row)."""
    out: list[QuantizerRow] = []
    agreement: list[Agreement] = []
    dim = emb.shape[1]

    def measure(method: str, n_bytes: int, found: tuple[I64, F32], note: str | None = None) -> None:
        out.append(QuantizerRow(method, n_bytes, retrieval(found[0], exact[0]), note))
        agreement.extend(quantiser_agreement(method, 8 * n_bytes, found, exact, thresholds))

    for bits in bits_list:
        n_bytes = bits // 8
        binary = binary_neighbours(binary_codes(emb, bits), K, rows)
        out.append(QuantizerRow("binary", n_bytes, retrieval(binary, exact[0])))
        try:
            few = len(emb) < PQ_RECOMMENDED_POINTS
            note = f"trained on {len(emb)} prompts (< {PQ_RECOMMENDED_POINTS}): optimistic" if few else None
            measure("pq", n_bytes, pq_neighbours(emb, n_bytes, K, rows), note)
        except Skipped as why:
            logger.info("PQ at %d bytes skipped: %s", n_bytes, why)
            out.append(QuantizerRow("pq", n_bytes, None, str(why)))
        if n_bytes < dim:
            measure("int8", n_bytes, int8_neighbours(emb, n_bytes, K, rows))
        else:
            out.append(QuantizerRow("int8", n_bytes, None, f"{n_bytes} bytes >= dim {dim}: see the full row"))
    measure("int8-full", dim, int8_neighbours(emb, dim, K, rows), "every dimension")
    return out, agreement


def _cache_decisions(emb: F32, bits: int, threshold: float, rerank: int, queries: I64) -> I64:
    """For each prompt in ``queries``, the other prompt a real cache holding all of them returns, or -1
    for a miss."""
    n = len(emb)
    # The query's own entry is always the nearest; one more shortlist slot keeps `rerank` for the others.
    cache = BinarySemanticCache(
        emb.shape[1], code_bits=bits, threshold=threshold, rerank=rerank + 1 if rerank else 0, max_entries=n
    )
    ids = cache.put_many(emb, [""] * n)
    row_of = {entry_id: row for row, entry_id in enumerate(ids)}
    out = np.full(len(queries), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        for hit in cache.search(emb[q], k=2):
            if row_of[hit.id] != q:
                out[i] = row_of[hit.id]
                break
    return out


def decision_agreement(
    emb: F32,
    exact_ids: I64,
    exact_sims: F32,
    bits_list: list[int],
    thresholds: list[float],
    rows: I64 | None = None,
) -> list[Agreement]:
    """`Agreement` of the two-stage (default rerank) and binary-only caches at every size and threshold,
    over the lookups of the rows ``rows`` (default: all), whose exact neighbours are given."""
    queries = _all(len(emb), rows)
    out = []
    for bits in bits_list:
        for t in thresholds:
            reference = served_entries(exact_ids, exact_sims, t)
            for mode, rerank in (("two-stage", DEFAULT_RERANK), ("binary-only", 0)):
                out.append(
                    _agreement(mode, bits, t, _cache_decisions(emb, bits, t, rerank, queries), reference)
                )
    return out
