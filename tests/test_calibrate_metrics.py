"""`bsc calibrate`'s measurements on cases small enough to compute by hand, and its recommendation rule
on synthetic labelled sets whose right answer is known."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from bsc import BinarySemanticCache
from bsc.calibrate.inputs import LabelledPair
from bsc.calibrate.labelled import (
    PairDecisions,
    curve,
    hits_needed,
    pair_decisions,
    pairs_needed_without_labels,
    recommend,
    wilson,
)
from bsc.calibrate.metrics import (
    bit_balance,
    exact_neighbours,
    geometry,
    ndcg_at,
    overlap_at,
    recall_at,
)
from bsc.calibrate.quantizers import (
    Skipped,
    binary_codes,
    binary_neighbours,
    compare_at_equal_memory,
    decision_agreement,
    int8_neighbours,
    pq_neighbours,
    quantiser_agreement,
    served_entries,
)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in a few loose clusters: neighbours are meaningful, as with real prompts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 10, dim))
    return _unit(centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, dim)))


# ------------------------------------------------------------------ retrieval metrics, by hand
EXACT = np.array([[1, 2, 3], [0, 2, 3]])
APPROX = np.array([[2, 1, 9], [0, 3, 2]])


def test_recall_counts_queries_whose_exact_nearest_is_in_the_approximate_top_k() -> None:
    assert recall_at(APPROX, EXACT, 1) == 0.5  # query 0 ranks 2 before its nearest 1; query 1 is right
    assert recall_at(APPROX, EXACT, 2) == 1.0


def test_overlap_is_the_share_of_the_exact_top_k_found() -> None:
    assert overlap_at(APPROX, EXACT, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert overlap_at(APPROX, EXACT, 1) == 0.5


def test_ndcg_grades_by_exact_rank() -> None:
    # exact [5, 7] has gains 2, 1; the swapped list scores (1 + 2/log2 3) / (2 + 1/log2 3)
    swapped = ndcg_at(np.array([[7, 5]]), np.array([[5, 7]]), 2)
    assert swapped == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at(np.array([[5, 7]]), np.array([[5, 7]]), 2) == 1.0
    assert ndcg_at(np.array([[8, 9]]), np.array([[5, 7]]), 2) == 0.0


def test_exact_neighbours_leave_the_query_out_and_rank_by_cosine() -> None:
    angles = np.radians([0.0, 10.0, 30.0, 100.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ids, sims = exact_neighbours(emb, 2)
    assert ids.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert sims[0].tolist() == pytest.approx(
        [math.cos(math.radians(10)), math.cos(math.radians(30))], abs=1e-6
    )
    with pytest.raises(ValueError, match="k must be"):
        exact_neighbours(emb, 4)


# ------------------------------------------------------------------ bit balance and geometry
def test_bit_balance_flags_bits_set_in_more_than_60_percent_of_codes() -> None:
    alternating = np.array([[0x5555555555555555], [0xAAAAAAAAAAAAAAAA]], dtype=np.uint64)
    even = bit_balance(alternating, 64)
    assert (even.max_share, even.min_share, even.unbalanced_bits, even.balanced) == (0.5, 0.5, 0, True)
    skewed = bit_balance(np.vstack([alternating, alternating[:1]]), 64)  # every bit is 2/3 or 1/3
    assert skewed.max_share == pytest.approx(2 / 3)
    assert skewed.unbalanced_bits == 64 and not skewed.balanced


def test_anisotropy_is_the_mean_cosine_between_distinct_rows() -> None:
    emb = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    ids, _ = exact_neighbours(emb, 2)
    assert geometry(emb, ids).anisotropy == pytest.approx((0 + 2 * math.sqrt(0.5)) / 3)


def test_intrinsic_dimension_finds_a_circle_and_a_sphere_inside_ten_dimensions() -> None:
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    circle = _unit(rng.normal(size=(3000, 2))) @ basis[:2]
    sphere = _unit(rng.normal(size=(3000, 3))) @ basis[:3]
    for points, dim in ((circle, 1), (sphere, 2)):
        emb = points.astype(np.float32)
        g = geometry(emb, exact_neighbours(emb, 2)[0])
        assert g.intrinsic_dim_twonn == pytest.approx(dim, abs=0.25)
        assert g.intrinsic_dim_pca90 == dim + 1  # PCA sees the ambient span, not the manifold


def test_outlier_fraction_counts_prompts_far_from_the_common_direction() -> None:
    rng = np.random.default_rng(2)
    bulk = _unit(np.array([5.0] + [0.0] * 15) + rng.normal(size=(200, 16)))
    far = _unit(np.array([-5.0] + [0.0] * 15) + rng.normal(size=(4, 16)))
    emb = np.vstack([bulk, far])
    assert geometry(emb, exact_neighbours(emb, 2)[0]).outlier_fraction == pytest.approx(4 / 204, abs=1 / 204)


# ------------------------------------------------------------------ quantizers at equal memory
def test_longer_codes_and_full_int8_track_exact_search_better() -> None:
    emb = _clustered(400, 64)
    exact, _ = exact_neighbours(emb, 10)
    r64 = recall_at(binary_neighbours(binary_codes(emb, 64), 10), exact, 10)
    r1024 = recall_at(binary_neighbours(binary_codes(emb, 1024), 10), exact, 10)
    assert r1024 > r64
    assert overlap_at(int8_neighbours(emb, 64, 10)[0], exact, 10) > 0.95  # every dimension, 8 bits each
    assert recall_at(pq_neighbours(emb, 16, 10)[0], exact, 10) > r64


def test_pq_is_skipped_with_a_reason_when_it_cannot_be_trained() -> None:
    with pytest.raises(Skipped, match="at least 256"):
        pq_neighbours(_clustered(100, 64), 8, 10)
    with pytest.raises(Skipped, match="do not divide"):
        pq_neighbours(_clustered(300, 60), 8, 10)


def test_missing_faiss_skips_the_pq_rows_and_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    emb = _clustered(300, 64)
    rows, agreement = compare_at_equal_memory(emb, exact_neighbours(emb, 10), [64, 256], [0.9])
    pq = [r for r in rows if r.method == "pq"]
    assert [r.retrieval for r in pq] == [None, None]
    assert all("faiss is not installed" in (r.note or "") for r in pq)
    assert all(r.retrieval is not None for r in rows if r.method == "binary")
    assert {a.mode for a in agreement} == {"int8", "int8-full"}  # no decisions from a skipped row


def test_two_stage_cache_decides_like_float_search_more_often_than_binary_only() -> None:
    emb = _clustered(300, 64)
    ids, sims = exact_neighbours(emb, 10)
    got = {(a.mode, a.threshold): a for a in decision_agreement(emb, ids, sims, [256], [0.5, 0.7])}
    for t in (0.5, 0.7):
        two, one = got[("two-stage", t)], got[("binary-only", t)]
        assert two.agreement > one.agreement
        assert two.agreement == pytest.approx(1 - two.missed - two.extra - two.other)


def _grid_set() -> np.ndarray:
    """12 unit vectors in 3 dimensions, each of 6 twice, with components 0, 0.6 and 0.8: int8 between a
    column's min 0 and max 0.8 stores each within half a step, 0.8 / 510. Each vector's nearest is its
    twin (cosine 1); the next best is 0.96 or less, so no estimate that close can change a decision."""
    base = [
        (0.6, 0.8, 0.0),
        (0.8, 0.6, 0.0),
        (0.0, 0.6, 0.8),
        (0.0, 0.8, 0.6),
        (0.6, 0.0, 0.8),
        (0.8, 0.0, 0.6),
    ]
    return np.array(base * 2, dtype=np.float32)


def test_int8_with_every_dimension_decides_exactly_like_float_search() -> None:
    emb = _grid_set()
    exact = exact_neighbours(emb, 1)
    # each vector's twin (its copy 6 rows away) has cosine 1: every lookup is a float hit on it
    assert exact[1][:, 0] == pytest.approx(1.0) and (exact[0][:, 0] == (np.arange(12) + 6) % 12).all()
    ids, scores = int8_neighbours(emb, 3, 1)
    assert scores == pytest.approx(exact[1], abs=1.4 * 0.8 / 510)  # |q|_1 <= 1.4 times half a step
    for a in quantiser_agreement("int8-full", 24, (ids, scores), exact, [0.80, 0.95]):
        assert (a.agreement, a.missed, a.extra, a.other, a.float_hit_rate) == (1.0, 0.0, 0.0, 0.0, 1.0)


def test_a_quantiser_keeping_one_direction_must_disagree_with_float_search() -> None:
    emb = _grid_set()
    exact = exact_neighbours(emb, 1)
    # one SVD direction: (1, 1, 1)/sqrt 3 by symmetry, every vector projects to 1.4/sqrt 3 and every
    # estimate is 1.96 / 3 = 0.653 < 0.80: each lookup misses where float search hits its twin
    ids, scores = int8_neighbours(emb, 1, 1)
    assert scores[:, 0] == pytest.approx(1.96 / 3, abs=0.01)
    (a,) = quantiser_agreement("int8", 8, (ids, scores), exact, [0.80])
    assert (a.agreement, a.missed, a.float_hit_rate) == (0.0, 1.0, 1.0)


def test_quantiser_agreement_counts_each_kind_of_disagreement_by_hand() -> None:
    exact = (np.array([[1], [0], [3], [2]]), np.array([[0.95], [0.95], [0.70], [0.85]], dtype=np.float32))
    # query 0 agrees (same entry), 1 serves another entry, 2 hits where float misses, 3 misses
    found = (np.array([[1], [3], [0], [2]]), np.array([[0.96], [0.90], [0.86], [0.80]], dtype=np.float32))
    assert served_entries(*exact, 0.85).tolist() == [1, 0, -1, 2]
    assert served_entries(*found, 0.85).tolist() == [1, 3, 0, -1]
    low, high = quantiser_agreement("pq", 64, found, exact, [0.85, 0.97])
    assert (low.agreement, low.other, low.extra, low.missed, low.float_hit_rate) == (
        0.25,
        0.25,
        0.25,
        0.25,
        0.75,
    )
    assert (high.agreement, high.float_hit_rate) == (1.0, 0.0)  # both miss everything
    assert (low.mode, low.bits, low.threshold) == ("pq", 64, 0.85)


def test_pq_and_int8_decision_agreement_is_measured_at_the_codes_bytes() -> None:
    emb = _clustered(300, 64)
    exact = exact_neighbours(emb, 10)
    rows, agreement = compare_at_equal_memory(emb, exact, [64, 256], [0.8, 0.9])
    got = {(a.mode, a.bits, a.threshold): a for a in agreement}
    assert set(got) == {(m, b, t) for m in ("pq", "int8") for b in (64, 256) for t in (0.8, 0.9)} | {
        ("int8-full", 8 * 64, t) for t in (0.8, 0.9)
    }
    for a in agreement:
        assert a.agreement == pytest.approx(1 - a.missed - a.extra - a.other)
    # more bytes estimate cosines better; every dimension in 8 bits is nearly exact
    assert got[("pq", 256, 0.8)].agreement > got[("pq", 64, 0.8)].agreement
    assert got[("int8-full", 512, 0.8)].agreement > 0.95
    pq_row = next(r for r in rows if r.method == "pq" and r.bytes_per_entry == 32)
    assert pq_row.retrieval is not None and pq_row.retrieval.recall_at_1 > 0


# ------------------------------------------------------------------ labelled pairs and the rule
def _synthetic(guarded: bool = False) -> PairDecisions:
    """500 pairs with known cosines: positives 100 each at 0.955 / 0.905 / 0.855, negatives 2 at 0.935,
    50 at 0.875 and 148 at 0.5 (below every threshold). With ``guarded`` the guard refuses the 52."""
    cos = np.array([0.955] * 100 + [0.905] * 100 + [0.855] * 100 + [0.935] * 2 + [0.875] * 50 + [0.5] * 148)
    labels = np.array([1] * 300 + [0] * 200)
    passes = np.ones(500, dtype=bool)
    if guarded:
        passes[300:352] = False
    c = cos.astype(np.float32)
    zero = np.zeros(500, dtype=np.int64)
    return PairDecisions(labels, c, passes, {64: c, 256: c}, {64: zero, 256: zero})


def test_recommendation_is_the_highest_hit_rate_within_the_false_hit_budget() -> None:
    points = curve(_synthetic(), [64, 256])
    rec = recommend(points, "float", 0.02)
    # t in 0.88..0.90 serves 200 right + 2 wrong (1.0 %); below, 50 more wrong ones: ties go to 0.90
    assert rec.point is not None
    assert (rec.point.threshold, rec.point.hits, rec.point.false_hits) == (0.90, 202, 2)
    assert rec.false_hit_rate_interval == pytest.approx(wilson(2, 202))
    assert not rec.confirmed  # 2 of 202 leaves an upper bound of 3.5 %
    assert rec.pairs_needed is not None and rec.pairs_needed > 500
    strict = recommend(points, "float", 0.005)  # 1.0 % and 1.96 % are over: only 100 clean hits remain
    assert strict.point is not None and strict.point.threshold == 0.95 and strict.point.false_hits == 0


def test_recommendation_prefers_fewer_bits_and_counts_the_guard() -> None:
    points = curve(_synthetic(guarded=True), [64, 256])
    rec = recommend(points, "two-stage + guard", 0.02)
    assert rec.point is not None
    # the guard removes the 52 near negatives: every positive is served from t = 0.85 down; ties -> 0.85
    assert (rec.point.bits, rec.point.threshold, rec.point.hits, rec.point.false_hits) == (64, 0.85, 300, 0)
    assert rec.confirmed
    unguarded = recommend(points, "two-stage", 0.02)
    assert unguarded.point is not None and unguarded.point.threshold == 0.90


def test_no_setting_within_the_budget_is_reported_not_invented() -> None:
    labels = np.array([1, 0] * 50)
    c = np.full(100, 0.99, dtype=np.float32)  # every pair identical in similarity: half are wrong
    zero = np.zeros(100, dtype=np.int64)
    rec = recommend(
        curve(PairDecisions(labels, c, np.ones(100, bool), {256: c}, {256: zero}), [256]), "two-stage", 0.02
    )
    assert rec.point is None and "no code size and threshold" in rec.reason


def test_wilson_interval_and_sample_sizes_match_hand_values() -> None:
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10)[1] == pytest.approx(1.959964**2 / (10 + 1.959964**2))
    assert hits_needed(0.0, 0.02) == 189  # 3.8415 / (n + 3.8415) <= 0.02  <=>  n >= 188.2
    assert hits_needed(0.02, 0.02) is None
    assert pairs_needed_without_labels(0.02) == 2 * hits_needed(0.01, 0.02)  # type: ignore[operator]


def test_pair_decisions_at_every_threshold_equal_a_real_cache_at_that_threshold() -> None:
    rng = np.random.default_rng(3)
    q2 = _unit(rng.normal(size=(120, 32)))
    q1 = _unit(q2 + rng.uniform(0.1, 0.9, size=(120, 1)) * rng.normal(size=(120, 32)))
    pairs = [LabelledPair(f"prompt {i}", f"prompt {i}", i % 2) for i in range(120)]
    decisions = pair_decisions(pairs, q1, q2, [64, 256])
    for bits in (64, 256):
        for t in (0.75, 0.85, 0.90):
            cache = BinarySemanticCache(32, code_bits=bits, threshold=t)
            real = []
            for i in range(120):
                cache.put(q2[i], "", namespace=f"n{i}")
                real.append(cache.get(q1[i], namespace=f"n{i}") is not None)
            assert decisions.hits("two-stage", bits, t).tolist() == real
            assert 0 < sum(real) < 120  # the case is not trivial


def test_importing_the_calibration_package_stays_light() -> None:
    code = (
        "import sys, bsc.calibrate, bsc.calibrate.cli;"
        "heavy = {'matplotlib', 'faiss', 'torch', 'sentence_transformers', 'tqdm'} "
        "& set(m.split('.')[0] for m in sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sampled_query_rows_get_the_same_neighbours_as_a_full_run() -> None:
    emb = _clustered(300, 64)
    rows = np.array([0, 7, 150, 299])
    ids, sims = exact_neighbours(emb, 10)
    sub_ids, sub_sims = exact_neighbours(emb, 10, rows)
    assert (sub_ids == ids[rows]).all() and np.allclose(sub_sims, sims[rows])
    codes = binary_codes(emb, 128)
    assert (binary_neighbours(codes, 10, rows) == binary_neighbours(codes, 10)[rows]).all()
    sub, sub_scores = int8_neighbours(emb, 16, 10, rows)
    full, full_scores = int8_neighbours(emb, 16, 10)
    assert (sub == full[rows]).all() and np.allclose(sub_scores, full_scores[rows])
    assert not (ids[rows] == rows[:, None]).any()  # the query itself is never its own neighbour
