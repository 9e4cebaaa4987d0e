"""The Rust encoder equals the NumPy oracle bit for bit, on every input, and rejects bad input clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bsc import BinaryEncoder, oracle
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

CODE_BITS = (64, 128, 256, 512, 1024)
DIMS = (384, 768, 1536)


def _oracle_matches(x: np.ndarray, code_bits: int, seed: int) -> None:
    enc = BinaryEncoder(x.shape[-1], code_bits, seed)
    got = enc.encode(x)
    want = oracle.encode(x, code_bits=code_bits, seed=seed)
    mismatches = int(np.count_nonzero(np.any(got != want, axis=-1)))
    assert mismatches == 0, f"{mismatches} of {len(x)} codes differ (dim {x.shape[-1]}, {code_bits} bits)"
    # One vector at a time is the lookup path, which projects with a smaller copy of the matrix (int8
    # with AVX-512 VNNI, else binary16; the error bounds cover that rounding): it must give the same bits.
    one_by_one = np.array([enc.encode(row) for row in x[:300]])
    differ = int(np.count_nonzero(np.any(one_by_one != want[:300], axis=-1)))
    assert differ == 0, f"{differ} single-vector codes differ (dim {x.shape[-1]}, {code_bits} bits)"


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("code_bits", CODE_BITS)
def test_rust_equals_oracle_on_random_vectors(dim: int, code_bits: int) -> None:
    # 15 combinations x 7,000 = 105,000 vectors in all.
    rng = np.random.default_rng(dim * 7 + code_bits)
    x = rng.standard_normal((7_000, dim)).astype(np.float32)
    _oracle_matches(x, code_bits, seed=dim + code_bits)


def test_projection_matrix_is_bit_identical_to_the_oracle() -> None:
    for dim, bits, seed in [(384, 256, 42), (5, 64, 0), (1536, 1024, 2**64 - 1)]:
        rust = BinaryEncoder(dim, bits, seed).projection_matrix()
        np.testing.assert_array_equal(
            rust.view(np.uint32), oracle.projection_matrix(dim, bits, seed).view(np.uint32)
        )


def test_rust_equals_oracle_on_real_minilm_embeddings(single_thread_default_embedder) -> None:
    rows = Path("benchmarks/data/prompt_pairs.tsv").read_text().splitlines()[1:]
    prompts = [line.split("\t")[0] for line in rows]
    x = single_thread_default_embedder.embed(prompts[:120])
    for bits in CODE_BITS:
        _oracle_matches(x, bits, seed=42)


def _orthogonal_to_rows(rng: np.random.Generator, p: np.ndarray, n: int) -> np.ndarray:
    """Vectors whose projection onto some matrix row is zero up to float32 rounding."""
    out = []
    for _ in range(n):
        x = rng.standard_normal(p.shape[1])
        rows = p[rng.choice(p.shape[0], size=rng.integers(1, 4), replace=False)].astype(np.float64)
        q, _ = np.linalg.qr(rows.T)
        x -= q @ (q.T @ x)
        out.append(x)
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("code_bits", CODE_BITS)
def test_rust_equals_oracle_on_near_zero_projections(code_bits: int) -> None:
    rng = np.random.default_rng(code_bits)
    dim = 384
    p = oracle.projection_matrix(dim, code_bits, 42)
    x = _orthogonal_to_rows(rng, p, 400)
    _oracle_matches(x, code_bits, seed=42)
    # Exact zeros: x = (p[r,1], -p[r,0], 0, ...) gives <x, p[r]> = 0 exactly, so bit r must be 0.
    rows = rng.choice(code_bits, size=50, replace=False)
    exact = np.zeros((50, dim), dtype=np.float32)
    exact[:, 0] = p[rows, 1]
    exact[:, 1] = -p[rows, 0]
    codes = BinaryEncoder(dim, code_bits, 42).encode(exact)
    bits = (codes[np.arange(50), rows // 64] >> (rows % 64).astype(np.uint64)) & np.uint64(1)
    assert not bits.any()
    _oracle_matches(exact, code_bits, seed=42)


def test_rust_equals_oracle_on_extreme_magnitudes() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((200, 64))
    for scale in (1e-42, 1e-30, 1e-3, 1e20, 3e36):
        _oracle_matches((base * scale).astype(np.float32), 256, seed=7)
    sparse = np.zeros((64, 64), dtype=np.float32)
    sparse[np.arange(64), np.arange(64)] = 1.0  # one-hot: each bit is the sign of one matrix element
    _oracle_matches(sparse, 64, seed=7)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 40)),
        elements=st.floats(-(2.0**100), 2.0**100, width=32, allow_nan=False, allow_subnormal=True),
    ),
    st.sampled_from(CODE_BITS),
    st.integers(0, 2**64 - 1),
)
def test_rust_equals_oracle_property(x: np.ndarray, code_bits: int, seed: int) -> None:
    _oracle_matches(x, code_bits, seed)


def test_single_and_batch_paths_agree_and_float64_rounds_to_float32() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((700, 384))  # float64, more than one parallel chunk
    enc = BinaryEncoder(384)
    batch = enc.encode(x)
    assert batch.shape == (700, 4) and batch.dtype == np.uint64
    for i in range(0, 700, 37):
        np.testing.assert_array_equal(enc.encode(x[i]), batch[i])
    np.testing.assert_array_equal(batch, enc.encode(x.astype(np.float32)))


def test_non_contiguous_input_is_encoded_like_its_copy() -> None:
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((50, 768)).astype(np.float32)
    view = wide[::2, ::2]
    enc = BinaryEncoder(384)
    np.testing.assert_array_equal(enc.encode(view), enc.encode(np.ascontiguousarray(view)))
    fortran = np.asfortranarray(wide[:, :384])
    np.testing.assert_array_equal(enc.encode(fortran), enc.encode(np.ascontiguousarray(fortran)))


def test_seed_and_code_size_change_the_code() -> None:
    x = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    a, b = BinaryEncoder(384, seed=1).encode(x), BinaryEncoder(384, seed=2).encode(x)
    assert not np.array_equal(a, b)
    # Row r of the matrix does not depend on code_bits, so a shorter code is a prefix of a longer one.
    np.testing.assert_array_equal(BinaryEncoder(384, 512).encode(x)[:4], BinaryEncoder(384, 256).encode(x))


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (np.zeros(383, dtype=np.float32), ValueError, "expected shape"),
        (np.zeros((2, 3, 384), dtype=np.float32), ValueError, "expected shape"),
        (np.zeros((0, 384), dtype=np.float32), ValueError, "at least one"),
        (np.full(384, np.nan, dtype=np.float32), ValueError, "non-finite"),
        (np.full(384, 1e39), ValueError, "non-finite"),
        (np.zeros(384, dtype=np.int64), TypeError, "float32 or float64"),
        ("a prompt", TypeError, "float32 or float64"),
        ([0.0] * 384, TypeError, "float32 or float64"),
    ],
)
def test_bad_input_raises_a_clear_error(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        BinaryEncoder(384).encode(value)


@pytest.mark.parametrize(("dim", "bits"), [(0, 256), (384, 100), (384, 2048)])
def test_bad_parameters_raise_value_error(dim: int, bits: int) -> None:
    with pytest.raises(ValueError, match=r"dim|code_bits"):
        BinaryEncoder(dim, bits)


def test_a_dim_beyond_the_limit_is_a_value_error_before_anything_is_allocated(run_isolated: Any) -> None:
    # Under a 3 GiB address-space limit the 2**24-dim projection (16 GiB) used to abort the process.
    out = run_isolated(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
        import bsc
        for make in (lambda: bsc.BinaryEncoder(2**24), lambda: bsc.BinarySemanticCache(dim=2**24)):
            try:
                make()
            except ValueError as exc:
                print("ValueError", "65536" in str(exc))
        """
    )
    assert out.split() == ["ValueError", "True"] * 2


def test_an_allocation_the_memory_limit_refuses_is_a_memory_error_not_an_abort(run_isolated: Any) -> None:
    out = run_isolated(
        """
        import resource
        import bsc
        used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        limit = used + (200 << 20)  # the 65536 x 1024 projection needs 2 x 256 MiB
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))  # soft limit only, so it can be lifted
        try:
            bsc.BinaryEncoder(65536, 1024)
        except MemoryError as exc:
            print("MemoryError", "projection matrix" in str(exc))
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        print(bsc.BinaryEncoder(384).dim)  # the process is still fine
        """
    )
    assert out.split() == ["MemoryError", "True", "384"]


# ---------------------------------------------------------------------------------------------- rerank rows
def _rows_match(x: np.ndarray) -> None:
    codes, q8, norms = BinaryEncoder(x.shape[1], 256, 42).encode_rows(x)
    want_q8, want_norms = oracle.quantize(x.astype(np.float32))
    np.testing.assert_array_equal(q8, want_q8)
    np.testing.assert_array_equal(norms.view(np.uint32), want_norms.view(np.uint32))
    np.testing.assert_array_equal(codes, oracle.encode(x.astype(np.float32), code_bits=256, seed=42))


@pytest.mark.parametrize("dim", (3, 8, 100, 384, 1536))
def test_int8_rerank_rows_equal_the_numpy_quantisation_bit_for_bit(dim: int) -> None:
    # Row norms are summed in NumPy's pairwise order, so a unit vector rounds exactly as NumPy's does.
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((2_000, dim)).astype(np.float32)
    x[::7] *= np.float32(1e-25)  # a float32 norm would underflow here
    x[1::7] *= np.float32(1e20)  # and overflow here
    _rows_match(x)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 40)),
        elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=True),
    )
)
def test_int8_rerank_rows_equal_numpy_on_any_finite_input(x: np.ndarray) -> None:
    x = x[np.any(x != 0, axis=1)]  # an all-zero row is refused (next test)
    if len(x):
        _rows_match(x)


def test_encode_rows_refuses_what_put_refuses_and_names_the_value() -> None:
    enc = BinaryEncoder(4, 64, 1)
    with pytest.raises(ValueError, match=r"NaN or infinity at index \(1, 2\)"):
        enc.encode_rows(np.array([[1, 2, 3, 4], [1, 2, np.inf, 4]], dtype=np.float32))
    with pytest.raises(ValueError, match="all-zero"):
        enc.encode_rows(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="float32 or float64"):
        enc.encode_rows(np.ones((2, 4), dtype=np.int32))
    codes, q8, norms = enc.encode_rows(np.ones((2, 4)), with_rows=False)
    assert codes.shape == (2, 1) and q8.shape == (2, 0) and norms.tolist() == [1.0, 1.0]
