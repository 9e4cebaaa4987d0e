"""`bsc._native.hamming_search` against a NumPy definition, under every SIMD level this CPU has."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bsc._native import cpu_features, hamming_search
from hypothesis import given, settings
from hypothesis import strategies as st

LEVELS = ["scalar", "popcnt", "avx2", "avx512"]
WORDS = [1, 2, 4, 8, 16]


def _reference(
    codes: np.ndarray, query: np.ndarray, k: int, max_distance: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Every distance, filter, sort by (distance, index), cut to k."""
    dist = np.bitwise_count(codes ^ query).sum(axis=1, dtype=np.int64)
    idx = np.arange(len(codes), dtype=np.int64)
    if max_distance is not None:
        keep = dist <= max_distance
        dist, idx = dist[keep], idx[keep]
    order = np.lexsort((idx, dist))[:k]
    return idx[order], dist[order].astype(np.uint32)


def _datasets(rng: np.random.Generator, n: int, words: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Uniform codes, codes a few bits from the query, three distinct codes repeated (ties), all = query."""
    query = rng.integers(0, 2**64, size=words, dtype=np.uint64)
    uniform = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=(n, words), dtype=np.uint64)
    near = query ^ np.where(rng.random((n, words)) < 0.3, flips, np.uint64(0))
    pool = rng.integers(0, 2**64, size=(3, words), dtype=np.uint64)
    dups = pool[rng.integers(0, 3, size=n)]
    same = np.tile(query, (n, 1))
    return [(uniform, query), (near, query), (dups, query), (same, query)]


def _assert_matches(codes: np.ndarray, query: np.ndarray, k: int, max_distance: int | None) -> None:
    got_idx, got_dist = hamming_search(codes, query, k=k, max_distance=max_distance)
    want_idx, want_dist = _reference(codes, query, k, max_distance)
    assert got_idx.dtype == np.int64
    assert got_dist.dtype == np.uint32
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_array_equal(got_dist, want_dist)


def _check_many(seed: int = 0) -> None:
    """The edge-case sweep, also run in subprocesses under each `BSC_SIMD` level."""
    rng = np.random.default_rng(seed)
    for words in WORDS:
        bits = words * 64
        for n in [*range(0, 68), 100, 1000, 4097]:
            for codes, query in _datasets(rng, n, words):
                for k in sorted({0, 1, 5, n + 3}):
                    for max_distance in (None, 0, bits // 2 - 8, bits):
                        _assert_matches(codes, query, k, max_distance)


def _available() -> list[str]:
    return [f for f in cpu_features() if not f.startswith("selected=")]


def _run_self(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
    )


def test_reference_agrees_with_unpackbits() -> None:
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2**64, size=(50, 4), dtype=np.uint64)
    query = rng.integers(0, 2**64, size=4, dtype=np.uint64)
    bits = np.unpackbits((codes ^ query).view(np.uint8), axis=1).sum(axis=1)
    _, dist = _reference(codes, query, 50, None)
    np.testing.assert_array_equal(np.sort(bits), dist)


def test_matches_reference_on_edge_cases_at_the_selected_level() -> None:
    _check_many(seed=2)


@pytest.mark.parametrize("words", WORDS)
def test_matches_reference_on_large_inputs(words: int) -> None:
    # Every SIMD block layout and the tails, on inputs large enough for many candidate blocks.
    rng = np.random.default_rng(words)
    for codes, query in _datasets(rng, 200_000, words)[:3]:
        for k in (1, 10, 100):
            _assert_matches(codes, query, k, None)
        _assert_matches(codes, query, 10, words * 24)


@settings(max_examples=200, deadline=None)
@given(
    words=st.sampled_from(WORDS),
    n=st.integers(0, 300),
    k=st.integers(0, 310),
    max_distance=st.one_of(st.none(), st.integers(0, 1100)),
    seed=st.integers(0, 2**32 - 1),
    low_entropy=st.booleans(),
)
def test_matches_reference_property(
    words: int, n: int, k: int, max_distance: int | None, seed: int, low_entropy: bool
) -> None:
    rng = np.random.default_rng(seed)
    high = 4 if low_entropy else 2**64  # tiny values make many equal distances
    codes = rng.integers(0, high, size=(n, words), dtype=np.uint64)
    query = rng.integers(0, high, size=words, dtype=np.uint64)
    _assert_matches(codes, query, k, max_distance)


@pytest.mark.parametrize("level", LEVELS)
def test_every_simd_level_matches_reference(level: str) -> None:
    if level not in _available():
        pytest.skip(f"this CPU has no {level}")
    proc = _run_self({"BSC_SIMD": level})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"selected={level} ok"


def test_unknown_bsc_simd_value_selects_best_level() -> None:
    proc = _run_self({"BSC_SIMD": "sse9", "BSC_SCAN_SELF_CHECK": "quick"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"selected={_available()[-1]} ok"


@pytest.mark.parametrize("threads", ["1", "2"])
def test_rayon_thread_count_does_not_change_results(threads: str) -> None:
    proc = _run_self({"RAYON_NUM_THREADS": threads, "BSC_SCAN_SELF_CHECK": "large"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")


def test_concurrent_calls_from_python_threads_are_correct() -> None:
    # The scan runs with the GIL released; results must not mix between threads.
    rng = np.random.default_rng(6)
    codes = rng.integers(0, 2**64, size=(50_000, 4), dtype=np.uint64)
    queries = rng.integers(0, 2**64, size=(32, 4), dtype=np.uint64)
    want = [_reference(codes, q, 5, None) for q in queries]

    def work(i: int) -> tuple[np.ndarray, np.ndarray]:
        return hamming_search(codes, queries[i], k=5)

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(work, range(len(queries))))
    for (gi, gd), (wi, wd) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gd, wd)


def test_cpu_features_lists_levels_then_selection() -> None:
    feats = cpu_features()
    assert feats[0] == "scalar"
    assert all(f in LEVELS for f in feats[:-1])
    assert feats[-1].startswith("selected=")
    assert feats[-1].removeprefix("selected=") in feats[:-1]


def test_ties_go_to_the_lower_index() -> None:
    codes = np.tile(np.array([1, 2, 3, 4], dtype=np.uint64), (100, 1))
    idx, dist = hamming_search(codes, np.array([1, 2, 3, 5], dtype=np.uint64), k=3)
    np.testing.assert_array_equal(idx, [0, 1, 2])
    np.testing.assert_array_equal(dist, [1, 1, 1])


def test_k_larger_than_n_and_zero_k_and_empty_codes() -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 2**64, size=(5, 4), dtype=np.uint64)
    query = codes[2].copy()
    idx, dist = hamming_search(codes, query, k=1000)
    assert len(idx) == 5 and idx[0] == 2 and dist[0] == 0
    idx, dist = hamming_search(codes, query, k=0)
    assert idx.shape == (0,) and dist.shape == (0,)
    idx, dist = hamming_search(np.empty((0, 4), dtype=np.uint64), query, k=3)
    assert idx.shape == (0,) and dist.shape == (0,)


def test_max_distance_filters_rows() -> None:
    codes = np.array([[0], [1], [3], [7]], dtype=np.uint64)
    idx, dist = hamming_search(codes, np.array([0], dtype=np.uint64), k=10, max_distance=1)
    np.testing.assert_array_equal(idx, [0, 1])
    np.testing.assert_array_equal(dist, [0, 1])
    idx, _ = hamming_search(codes, np.array([0], dtype=np.uint64), k=10, max_distance=10**12)
    assert len(idx) == 4


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: a[::2], id="strided-rows"),
        pytest.param(lambda a: np.asfortranarray(a), id="fortran-order"),
        pytest.param(lambda a: np.hstack([a, a])[:, :4], id="column-slice"),
        pytest.param(lambda a: a[::-1], id="reversed"),
    ],
)
def test_non_contiguous_codes_are_copied_not_rejected(make: object) -> None:
    rng = np.random.default_rng(4)
    base = rng.integers(0, 2**64, size=(301, 4), dtype=np.uint64)
    codes = make(base)  # type: ignore[operator]
    assert not codes.flags.c_contiguous
    query = rng.integers(0, 2**64, size=4, dtype=np.uint64)
    _assert_matches(codes, query, 7, None)
    _assert_matches(codes, np.hstack([query, query])[::2], 7, None)


def test_read_only_codes_are_accepted() -> None:
    codes = np.random.default_rng(5).integers(0, 2**64, size=(40, 2), dtype=np.uint64)
    codes.flags.writeable = False
    _assert_matches(codes, codes[3], 4, None)


@pytest.mark.parametrize(
    ("codes", "query", "match"),
    [
        ([[1, 2, 3, 4]], np.zeros(4, np.uint64), "codes must be a numpy uint64 array"),
        (np.zeros((3, 4), np.int64), np.zeros(4, np.uint64), "got dtype int64"),
        (np.zeros((3, 4), np.float64), np.zeros(4, np.uint64), "got dtype float64"),
        (np.zeros((3, 8), np.uint32), np.zeros(4, np.uint64), "got dtype uint32"),
        (np.zeros((3, 4), np.uint64), np.zeros(4, np.int64), "query must be a numpy uint64 array"),
        (np.zeros((3, 4), np.uint64), [0, 0, 0, 0], "query must be a numpy uint64 array"),
    ],
)
def test_wrong_dtype_raises_type_error(codes: object, query: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        hamming_search(codes, query)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codes", "query", "kwargs", "match"),
    [
        (
            np.zeros(4, np.uint64),
            np.zeros(4, np.uint64),
            {},
            r"2-D with shape \(n, words\), got shape \(4,\)",
        ),
        (np.zeros((2, 2, 4), np.uint64), np.zeros(4, np.uint64), {}, r"got shape \(2, 2, 4\)"),
        (np.zeros((3, 0), np.uint64), np.zeros(0, np.uint64), {}, "at least one uint64 word"),
        (np.zeros((3, 4), np.uint64), np.zeros(3, np.uint64), {}, r"query must have shape \(4,\)"),
        (np.zeros((3, 4), np.uint64), np.zeros((1, 4), np.uint64), {}, r"got shape \(1, 4\)"),
        (np.zeros((3, 4), np.uint64), np.zeros(4, np.uint64), {"k": -1}, "k must be >= 0"),
        (np.zeros((3, 4), np.uint64), np.zeros(4, np.uint64), {"max_distance": -2}, "max_distance must be"),
    ],
)
def test_wrong_shape_or_argument_raises_value_error(
    codes: np.ndarray, query: np.ndarray, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        hamming_search(codes, query, **kwargs)


def test_non_integer_k_raises_type_error() -> None:
    with pytest.raises(TypeError):
        hamming_search(np.zeros((3, 4), np.uint64), np.zeros(4, np.uint64), k=1.5)  # type: ignore[arg-type]


if __name__ == "__main__":
    # Child process of the BSC_SIMD / RAYON_NUM_THREADS tests: the level is chosen once per process.
    mode = os.environ.get("BSC_SCAN_SELF_CHECK", "full")
    if mode == "large":
        # 2.1M codes of 256 bits (67 MB) are above the parallel cutoff: with 2 threads the split path runs.
        rng = np.random.default_rng(9)
        for codes, query in _datasets(rng, 2_100_000, 4)[:2]:
            for k in (1, 32):
                _assert_matches(codes, query, k, None)
    elif mode == "full":
        _check_many(seed=0)
    print(f"{cpu_features()[-1]} ok")
