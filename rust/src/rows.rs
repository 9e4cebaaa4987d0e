//! What a cache stores for an embedding besides its code: the int8 rerank row and its norm, and the
//! checks an embedding must pass first. Every number equals what the NumPy reference in
//! `bsc.oracle` computes (`unit_rows`, `quantize`), bit for bit, so a cache filled here ranks exactly
//! as one filled in NumPy would.

use crate::encoder::{all_finite, Encoder, MAX_WORDS};
use crate::error::{BscError, Result};

/// Which array an error message names ("embedding" for one, "embeddings" for a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One embedding, shape `(dim,)`: an index reads `(c,)`.
    One,
    /// A batch, shape `(n, dim)`: an index reads `(r, c)`.
    Batch,
}

impl Shape {
    fn what(self) -> &'static str {
        match self {
            Shape::One => "embedding",
            Shape::Batch => "embeddings",
        }
    }

    fn at(self, row: usize, col: usize) -> String {
        match self {
            Shape::One => format!("({col},)"),
            Shape::Batch => format!("({row}, {col})"),
        }
    }
}

/// Refuses rows (`dim` values each, already rounded to f32) that hold NaN or infinity, or that are all
/// zero (no direction to compare); the first offending value is named.
pub fn check_rows(xs: &[f32], dim: usize, shape: Shape) -> Result<()> {
    if dim == 0 || !xs.len().is_multiple_of(dim) {
        return Err(BscError::Shape(format!(
            "expected {} of dimension {dim}",
            shape.what()
        )));
    }
    if let Some(i) = (!all_finite(xs))
        .then(|| xs.iter().position(|v| !v.is_finite()))
        .flatten()
    {
        return Err(BscError::NonFinite(format!(
            "the {} contains NaN or infinity at index {}",
            shape.what(),
            shape.at(i / dim, i % dim)
        )));
    }
    if xs
        .chunks_exact(dim)
        .any(|row| row.iter().all(|&v| v == 0.0))
    {
        return Err(BscError::InvalidArgument(format!(
            "the {} is an all-zero vector; it has no direction to compare",
            shape.what()
        )));
    }
    Ok(())
}

/// NumPy's pairwise summation (`add.reduce` over a contiguous axis): blocks of at most 128 values are
/// summed in eight interleaved lanes, longer runs are split in two at a multiple of eight. Matching
/// its order makes a norm here round exactly as `np.linalg.norm` does.
/// (Of `f(a[i])`, computed on the fly.)
fn pairwise<T: Copy>(a: &[T], f: impl Fn(T) -> f64 + Copy) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        // NumPy adds short runs one by one, starting from -0.0 (so that -0.0 + -0.0 stays -0.0).
        return a.iter().fold(-0.0, |s, &v| s + f(v));
    }
    if n <= BLOCK {
        let mut r: [f64; 8] = std::array::from_fn(|l| f(a[l]));
        let mut i = 8;
        while i + 8 <= n {
            for (lane, &v) in r.iter_mut().zip(&a[i..i + 8]) {
                *lane += f(v);
            }
            i += 8;
        }
        let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            sum += f(v);
        }
        return sum;
    }
    let mut half = n / 2;
    half -= half % 8;
    pairwise(&a[..half], f) + pairwise(&a[half..], f)
}

/// Runs `f` compiled for AVX-512 (or AVX2) when the CPU has it, else for the baseline (SSE2). For the
/// element-wise loops below, which the compiler vectorises to whatever width it may use: the same
/// operations in the same order, so the same bits, in a quarter of the instructions.
#[inline(always)]
fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has AVX-512F and AVX-512BW, checked just above.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `x / ‖x‖` in f32, computed in f64 as `bsc.oracle.unit_rows` does (a float32 norm over- or
/// underflows for components near 1e20 or 1e-25). `x` must be finite and not all zero.
pub fn unit(x: &[f32], out: &mut [f32]) {
    widest(
        #[inline(always)]
        || {
            let norm = pairwise(x, |v| f64::from(v) * f64::from(v)).sqrt();
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (f64::from(v) / norm) as f32;
            }
        },
    )
}

/// The int8 copy of a unit row, scaled so its largest component is ±127 (the scale cancels in the
/// cosine, so none is stored), rounded half to even like `np.rint`; returns the copy's norm as
/// `np.linalg.norm` computes it (the sum of squares is an exact integer, so only the root rounds).
pub fn quantize(unit: &[f32], out: &mut [i8]) -> f32 {
    widest(
        #[inline(always)]
        || {
            let peak = unit.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (o, &u) in out.iter_mut().zip(unit) {
                // |u / peak| <= 1, so the rounded value is within ±127.
                *o = rint(u / peak * 127.0) as i8;
            }
            row_norm(out)
        },
    )
}

/// Round half to even, as `np.rint` (for |v| < 2^22): adding and removing 1.5 · 2^23 leaves no
/// fraction bits, and the addition rounds to nearest even. Spelled out because `round_ties_even`
/// compiles to a library call per value on baseline x86-64 (no SSE4.1).
#[inline]
fn rint(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Norm of an int8 row, as `np.linalg.norm(row)` gives it (f64 root of an exact sum, then f32).
#[inline(always)]
pub fn row_norm(row: &[i8]) -> f32 {
    // i32 cannot overflow: at most 127² · 2^16 (MAX_DIM) < 2^31; i32 lanes vectorise twice as wide.
    let squares: i32 = row.iter().map(|&v| i32::from(v) * i32::from(v)).sum();
    f64::from(squares).sqrt() as f32
}

/// `<row, unit>` in f32, in sixteen independent lanes (so it vectorises; a rerank only needs the
/// cosine to ~1e-4, far above the rounding of any summation order).
pub fn dot(row: &[i8], unit: &[f32]) -> f32 {
    widest(
        #[inline(always)]
        || dot_lanes(row, unit),
    )
}

#[inline(always)]
fn dot_lanes(row: &[i8], unit: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (rows, units) = (row.chunks_exact(LANES), unit.chunks_exact(LANES));
    let tail: f32 = rows
        .remainder()
        .iter()
        .zip(units.remainder())
        .map(|(&r, &u)| f32::from(r) * u)
        .sum();
    for (r, u) in rows.zip(units) {
        for l in 0..LANES {
            acc[l] += f32::from(r[l]) * u[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Encoded rows: codes, and the int8 rerank rows and norms when they were asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// `n * words` code words.
    pub codes: Vec<u64>,
    /// `n * dim` int8 values, or empty.
    pub rows: Vec<i8>,
    /// `n` norms, or empty.
    pub norms: Vec<f32>,
}

/// Checks and encodes `xs` (row-major, `encoder.dim()` values a row), and quantises each row too when
/// `with_rows`: everything a cache stores for them, computed before anything is stored.
pub fn encode(encoder: &Encoder, xs: &[f32], shape: Shape, with_rows: bool) -> Result<Encoded> {
    let dim = encoder.dim();
    check_rows(xs, dim, shape)?;
    let n = xs.len() / dim;
    let mut out = Encoded {
        codes: vec![0; n * encoder.words()],
        ..Encoded::default()
    };
    encoder.encode_batch(xs, &mut out.codes)?;
    if with_rows {
        out.rows = vec![0; n * dim];
        out.norms = Vec::with_capacity(n);
        let mut u = vec![0.0f32; dim];
        for (x, row) in xs.chunks_exact(dim).zip(out.rows.chunks_exact_mut(dim)) {
            unit(x, &mut u);
            out.norms.push(quantize(&u, row));
        }
    }
    Ok(out)
}

/// One query's code, held inline (a lookup allocates nothing for it: `calloc` bypasses glibc's
/// per-thread cache and takes the arena's lock), and for a rerank its unit vector.
pub struct QueryCode {
    words: usize,
    code: [u64; MAX_WORDS],
    pub unit: Vec<f32>,
}

impl QueryCode {
    pub fn code(&self) -> &[u64] {
        &self.code[..self.words]
    }
}

/// Checks and encodes one query embedding; with `with_unit`, also its unit vector (for a rerank).
pub fn encode_query(encoder: &Encoder, x: &[f32], with_unit: bool) -> Result<QueryCode> {
    check_rows(x, encoder.dim(), Shape::One)?;
    let words = encoder.words();
    let mut code = [0u64; MAX_WORDS];
    encoder.encode_into(x, &mut code[..words])?;
    let mut u = Vec::new();
    if with_unit {
        u.resize(x.len(), 0.0);
        unit(x, &mut u);
    }
    Ok(QueryCode {
        words,
        code,
        unit: u,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairwise_sum_of(a: &[f64]) -> f64 {
        pairwise(a, |v| v)
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers_and_splits_like_numpy() {
        let a: Vec<f64> = (0..384).map(f64::from).collect();
        assert_eq!(pairwise_sum_of(&a), 383.0 * 384.0 / 2.0);
        assert_eq!(pairwise_sum_of(&[]), 0.0);
        assert_eq!(pairwise_sum_of(&[1.5, 2.0]), 3.5);
        // Eight lanes, then ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)): 1e16 absorbs a lone 1
        // (its ulp is 2) but not the lanes' pairs, so the order shows in the result.
        let mut b = vec![1.0f64; 16];
        b[0] = 1e16;
        assert_eq!(pairwise_sum_of(&b), 1e16 + 14.0);
    }

    #[test]
    fn rint_is_round_half_to_even() {
        for v in [
            -127.5f32, -2.5, -0.5, -0.49, 0.0, 0.5, 1.5, 2.5, 3.5, 126.5, 127.0,
        ] {
            assert_eq!(rint(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn quantize_scales_the_peak_to_127_and_rounds_half_to_even() {
        let mut out = [0i8; 4];
        let norm = quantize(&[0.5, -1.0, 0.25, 2.5 / 127.0], &mut out);
        assert_eq!(out, [64, -127, 32, 2]); // 63.5 -> 64, 31.75 -> 32, 2.5 -> 2
        assert_eq!(
            norm,
            ((64 * 64 + 127 * 127 + 32 * 32 + 4) as f64).sqrt() as f32
        );
    }

    #[test]
    fn check_rows_names_the_first_bad_value_and_refuses_zero_rows() {
        let err = check_rows(&[1.0, f32::NAN, 0.0, 1.0], 2, Shape::Batch).unwrap_err();
        // Worded as the Python checks word it ("the {what} contains ..."), for one message everywhere.
        assert_eq!(
            err.to_string(),
            "the embeddings contains NaN or infinity at index (0, 1)"
        );
        let err = check_rows(&[0.0, 0.0], 2, Shape::One).unwrap_err();
        assert!(err.to_string().contains("all-zero"), "{err}");
        assert!(check_rows(&[1e-40, 0.0], 2, Shape::One).is_ok());
    }

    #[test]
    fn unit_rows_have_unit_length_even_for_tiny_and_huge_values() {
        let mut u = [0.0f32; 2];
        for scale in [1e-30f32, 1.0, 1e30] {
            unit(&[3.0 * scale, 4.0 * scale], &mut u);
            assert!(
                (u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6,
                "{scale}: {u:?}"
            );
        }
    }
}
