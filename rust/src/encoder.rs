//! Sign-random-projection encoder whose output is exact, so every correct implementation agrees bit for bit.
//!
//! Bit `r` of a code is 1 iff the *exact* real dot product of the input (rounded once to f32) with row `r`
//! of the projection matrix is > 0. Because the definition uses the exact value, the result cannot depend
//! on SIMD width, summation order or BLAS. Computing it is cheap: an f32 dot product decides the bit whenever
//! its magnitude exceeds a rigorous bound on its rounding error (nearly always); otherwise the products,
//! which are exact in f64, are summed exactly (Shewchuk's expansion) and the sign is read off that.
//! One vector (a lookup) is projected with a smaller copy of the matrix where the CPU allows, each with
//! its own rigorous bound: exact integer passes over an int8 copy (`int8`, AVX-512 VNNI), else f32 sums
//! over a binary16 copy (`half`).

use rayon::prelude::*;

use crate::error::{try_zeroed, BscError, Result};
use crate::parallel;
use crate::projection::fill_projection_matrix;

mod half;
#[cfg(target_arch = "x86_64")]
mod int8;

/// The code sizes the encoder and the scan support.
pub const SUPPORTED_CODE_BITS: [usize; 5] = [64, 128, 256, 512, 1024];
/// Words in the longest code.
pub const MAX_WORDS: usize = SUPPORTED_CODE_BITS[SUPPORTED_CODE_BITS.len() - 1] / 64;
/// Largest embedding dimension accepted: the projection (two copies of `code_bits * dim` f32) stays
/// within 512 MiB at 1024 bits; real embedders stay far below (3072 for the largest OpenAI model).
pub const MAX_DIM: usize = 1 << 16;
/// Batches at least this large are split over the pool (see `parallel`); below it the hand-off costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 2 * BATCH_ROWS;
/// From this many vectors on, a packed GEMM (matrixmultiply) beats the single-vector kernel.
const GEMM_MIN_ROWS: usize = 8;
/// Vectors encoded per pass over the projection matrix (and per parallel task).
const BATCH_ROWS: usize = 256;

pub struct Encoder {
    dim: usize,
    code_bits: usize,
    seed: u64,
    /// Row-major `(code_bits, dim)`: row r decides bit r.
    matrix: Vec<f32>,
    /// The same matrix transposed, `(dim, code_bits)`, so one input element scales a run of outputs.
    transposed: Vec<f32>,
    /// Per row: 1.001 · γ_dim · ‖P[r]‖₂, so that `row_bound[r] · ‖x‖₂ + underflow` bounds the rounding
    /// error of any f32 evaluation of <x, P[r]> (Cauchy–Schwarz on Σ|x_c P_rc|; 1.001 covers the
    /// rounding of the bound's own arithmetic, relative ~1e-13 here).
    row_bound: Vec<f64>,
    /// Absolute slack for products that underflow to f32 subnormals (each loses at most 2^-150).
    underflow: f64,
    /// What a one-vector encode (a lookup) projects with: the fewest bytes this CPU can use.
    one: OneVector,
}

/// The one-vector projection's matrix copy, chosen for the CPU when the encoder is built.
enum OneVector {
    /// AVX-512 VNNI: exact integer passes over an int8 copy (a quarter of the f32 bytes).
    #[cfg(target_arch = "x86_64")]
    Int8(int8::Tables),
    /// `transposed` rounded to binary16 (half the bytes), with `bound[r]` = 1.001 · (γ_dim · ‖P16[r]‖₂
    /// + ‖P16[r] − P[r]‖₂), so that `bound[r] · ‖x‖₂ + underflow` bounds |f32 <x, P16[r]> − <x, P[r]>|.
    Half {
        transposed: Vec<u16>,
        bound: Vec<f64>,
    },
    /// Neither: the f32 kernel of batches.
    Plain,
}

impl OneVector {
    /// Batches smaller than this are encoded one vector at a time with this copy. The int8 passes read
    /// a quarter of the f32 matrix's bytes, and a pass over the f32 matrix starts by packing all of it
    /// (384 KiB at 384-d x 256 bits), so below 32 rows the int8 copy wins. Measured on the 2-core Xeon
    /// (model 207), one thread, rows of 384, three alternating runs a build: 8 rows 25 µs vs 39-60 in
    /// one pass, 16 rows 49-52 vs 60-84, 24 rows 58-79 vs 102-151, 32 rows the same. The half copy
    /// keeps to lone vectors (the lookups), where it was measured.
    fn row_by_row_below(&self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Int8(_) => 32,
            _ => 2,
        }
    }

    /// The int8 tables where the CPU has VNNI, else the half copy where it has the instructions for
    /// it, else nothing. `gamma` is γ_dim for f32 (see `Encoder::row_bound`).
    fn for_cpu(
        matrix: &[f32],
        transposed: &[f32],
        dim: usize,
        bits: usize,
        gamma: f64,
    ) -> Result<Self> {
        #[cfg(target_arch = "x86_64")]
        if let Some(tables) = int8::Tables::new(matrix, dim, bits)? {
            return Ok(Self::Int8(tables));
        }
        Ok(Self::half(matrix, transposed, dim, bits, gamma))
    }

    /// The half copy and its bound where the CPU can multiply halves, else `Plain`.
    fn half(matrix: &[f32], transposed: &[f32], dim: usize, bits: usize, gamma: f64) -> Self {
        if !half::available() {
            return Self::Plain;
        }
        let transposed = half::to_half(transposed);
        let bound = (0..bits)
            .map(|r| {
                let (mut norm2, mut delta2) = (0.0f64, 0.0f64);
                for c in 0..dim {
                    let h = f64::from(half::f16_to_f32(transposed[c * bits + r]));
                    let d = h - f64::from(matrix[r * dim + c]); // exact: both are f32 values
                    norm2 += h * h;
                    delta2 += d * d;
                }
                1.001 * (gamma * norm2.sqrt() + delta2.sqrt())
            })
            .collect();
        Self::Half { transposed, bound }
    }
}

impl Encoder {
    pub fn new(dim: usize, code_bits: usize, seed: u64) -> Result<Self> {
        Self::build(dim, code_bits, seed, OneVector::for_cpu)
    }

    /// `new` with the one-vector copy made by `one` (tests pick each CPU's choice here).
    fn build(
        dim: usize,
        code_bits: usize,
        seed: u64,
        one: impl FnOnce(&[f32], &[f32], usize, usize, f64) -> Result<OneVector>,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(BscError::InvalidArgument(
                "dim must be a positive integer, got 0".into(),
            ));
        }
        if !SUPPORTED_CODE_BITS.contains(&code_bits) {
            return Err(BscError::InvalidArgument(format!(
                "code_bits must be one of {SUPPORTED_CODE_BITS:?}, got {code_bits}"
            )));
        }
        if dim > MAX_DIM {
            return Err(BscError::InvalidArgument(format!(
                "dim must be at most {MAX_DIM}, got {dim}"
            )));
        }
        let mut matrix = try_zeroed(dim * code_bits, "projection matrix")?;
        fill_projection_matrix(&mut matrix, dim, code_bits, seed);
        let mut transposed = try_zeroed(matrix.len(), "transposed projection matrix")?;
        for (r, row) in matrix.chunks_exact(dim).enumerate() {
            for (c, &p) in row.iter().enumerate() {
                transposed[c * code_bits + r] = p;
            }
        }
        let n = dim as f64;
        let unit = f64::from(f32::EPSILON) / 2.0; // f32 unit roundoff, 2^-24
        let gamma = n * unit / (1.0 - n * unit);
        let row_bound = matrix
            .chunks_exact(dim)
            .map(|row| {
                1.001
                    * gamma
                    * row
                        .iter()
                        .map(|&p| f64::from(p) * f64::from(p))
                        .sum::<f64>()
                        .sqrt()
            })
            .collect();
        let underflow = 1.001 * n * f64::from_bits(0x36A0_0000_0000_0000); // n · 2^-149
        let one = one(&matrix, &transposed, dim, code_bits, gamma)?;
        Ok(Self {
            dim,
            code_bits,
            seed,
            matrix,
            transposed,
            row_bound,
            underflow,
            one,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn code_bits(&self) -> usize {
        self.code_bits
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// u64 words per code.
    pub fn words(&self) -> usize {
        self.code_bits / 64
    }

    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }

    /// Encodes one vector (already rounded to f32) into `out` (`words()` u64s).
    pub fn encode_into(&self, x: &[f32], out: &mut [u64]) -> Result<()> {
        self.encode_batch(x, out)
    }

    /// Encodes `n` row-major vectors into `out` (`n * words()` u64s), in parallel for large batches.
    pub fn encode_batch(&self, xs: &[f32], out: &mut [u64]) -> Result<()> {
        if !xs.len().is_multiple_of(self.dim) || out.len() != xs.len() / self.dim * self.words() {
            return Err(BscError::Shape(format!(
                "expected embeddings of dimension {} ({} values do not form whole rows)",
                self.dim,
                xs.len()
            )));
        }
        for (i, x) in xs.chunks_exact(self.dim).enumerate() {
            check_finite(x, i)?;
        }
        let rows = xs.len() / self.dim;
        let words = self.words();
        // Chunks of BATCH_ROWS vectors share each pass over the matrix.
        let step = self.dim * BATCH_ROWS;
        // Small batches never ask for the pool: finding it checks the process id, a system call.
        match (rows >= PARALLEL_MIN_ROWS).then(parallel::pool).flatten() {
            Some(pool) => pool.install(|| {
                xs.par_chunks(step)
                    .zip(out.par_chunks_mut(words * BATCH_ROWS))
                    .for_each(|(x, o)| self.encode_rows(x, o));
            }),
            _ => {
                for (x, o) in xs.chunks(step).zip(out.chunks_mut(words * BATCH_ROWS)) {
                    self.encode_rows(x, o);
                }
            }
        }
        Ok(())
    }

    /// Encodes up to `BATCH_ROWS` finite vectors: a few one at a time with the one-vector copy of the
    /// matrix, more in one pass over the f32 matrix.
    fn encode_rows(&self, xs: &[f32], out: &mut [u64]) {
        let words = self.words();
        if xs.len() / self.dim < self.one.row_by_row_below() {
            for (x, code) in xs.chunks_exact(self.dim).zip(out.chunks_exact_mut(words)) {
                if !self.encode_one(x, code) {
                    self.encode_projected(x, code);
                }
            }
        } else {
            self.encode_projected(xs, out);
        }
    }

    /// One vector with the smallest copy of the matrix this CPU can use; false (nothing written) when
    /// there is none or it cannot bound this vector's error.
    fn encode_one(&self, x: &[f32], code: &mut [u64]) -> bool {
        let mut open = [0u64; MAX_WORDS];
        let open = &mut open[..self.words()];
        match &self.one {
            #[cfg(target_arch = "x86_64")]
            OneVector::Int8(tables) => tables.project(x, code, open),
            OneVector::Half { transposed, bound } => {
                let mut approx = vec![0.0f32; self.code_bits];
                if !half::project(x, transposed, self.code_bits, &mut approx) {
                    return false;
                }
                self.decide(x, &approx, bound, code, open);
            }
            OneVector::Plain => return false,
        }
        self.settle(x, code, open);
        true
    }

    /// Vectors projected together with the f32 matrix (one pass over it), then decided and settled.
    fn encode_projected(&self, xs: &[f32], out: &mut [u64]) {
        let (bits, words) = (self.code_bits, self.words());
        let mut open = [0u64; MAX_WORDS];
        let open = &mut open[..words];
        let mut approx = vec![0.0f32; xs.len() / self.dim * bits];
        project(xs, self.dim, &self.transposed, bits, &mut approx);
        for ((x, a), code) in xs
            .chunks_exact(self.dim)
            .zip(approx.chunks_exact(bits))
            .zip(out.chunks_exact_mut(words))
        {
            self.decide(x, a, &self.row_bound, code, open);
            self.settle(x, code, open);
        }
    }

    /// One vector's bits from f32 estimates `approx` whose error is at most `bound[r] · ‖x‖₂ +
    /// underflow`: the sign where the estimate clears that, else an `open` bit.
    fn decide(&self, x: &[f32], approx: &[f32], bound: &[f64], code: &mut [u64], open: &mut [u64]) {
        let x_norm = norm(x);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { decide_avx512(approx, bound, x_norm, self.underflow, code, open) };
        }
        for (w, (word, open_word)) in code.iter_mut().zip(open.iter_mut()).enumerate() {
            let (mut positive, mut uncertain) = (0u64, 0u64);
            for j in 0..64 {
                let r = w * 64 + j;
                let v = f64::from(approx[r]);
                positive |= u64::from(v > 0.0) << j;
                // An f32 overflow (inf, or NaN from inf - inf) proves nothing: uncertain too.
                let certain = v.abs() > bound[r] * x_norm + self.underflow && v.is_finite();
                uncertain |= u64::from(!certain) << j;
            }
            *word = positive;
            *open_word = uncertain;
        }
    }

    /// Sets each `open` bit of one vector's code from the exact dot product.
    fn settle(&self, x: &[f32], code: &mut [u64], open: &[u64]) {
        for (w, (word, &open_word)) in code.iter_mut().zip(open).enumerate() {
            let mut left = open_word;
            while left != 0 {
                let j = left.trailing_zeros() as usize;
                left &= left - 1;
                let r = w * 64 + j;
                let exact = dot_sign(x, &self.matrix[r * self.dim..(r + 1) * self.dim]) > 0;
                *word = (*word & !(1u64 << j)) | (u64::from(exact) << j);
            }
        }
    }
}

/// Whether every value is finite, in one branch-free pass (it vectorises; finding *where* a value is
/// not finite is left to the rare caller that needs to say so).
pub fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(true, |ok, v| ok & v.is_finite())
}

fn check_finite(x: &[f32], row: usize) -> Result<()> {
    if all_finite(x) {
        return Ok(());
    }
    match x.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(col) => Err(BscError::NonFinite(format!(
            "embedding row {row} has a non-finite value ({}) at index {col} (after rounding to float32); \
             expected finite values",
            x[col]
        ))),
    }
}

/// `out[i][r] ≈ <xs[i], row r>` in f32 for up to `BATCH_ROWS` vectors. Any evaluation order is fine:
/// the caller only trusts a value beyond its rounding-error bound.
fn project(xs: &[f32], dim: usize, transposed: &[f32], bits: usize, out: &mut [f32]) {
    let rows = xs.len() / dim;
    if rows < GEMM_MIN_ROWS {
        return dispatch_project(xs, dim, transposed, bits, out);
    }
    // SAFETY: the pointers and strides describe exactly the slices: xs is rows×dim row-major,
    // transposed is dim×bits row-major, out is rows×bits row-major; sgemm writes only within out.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            dim,
            bits,
            1.0,
            xs.as_ptr(),
            dim as isize,
            1,
            transposed.as_ptr(),
            bits as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            bits as isize,
            1,
        );
    }
}

/// Outputs `block..block+B` for `V` vectors: `B` accumulators per vector, one pass over the inputs, so
/// there are no horizontal sums and each matrix load serves `V` vectors.
#[inline(always)]
fn project_block<const V: usize, const B: usize>(
    xs: &[f32],
    dim: usize,
    transposed: &[f32],
    bits: usize,
    block: usize,
    out: &mut [f32],
    madd: impl Fn(f32, f32, f32) -> f32,
) {
    let mut acc = [[0.0f32; B]; V];
    for c in 0..dim {
        let panel = &transposed[c * bits + block..c * bits + block + B];
        for v in 0..V {
            let xv = xs[v * dim + c];
            for (a, &p) in acc[v].iter_mut().zip(panel) {
                *a = madd(xv, p, *a);
            }
        }
    }
    for v in 0..V {
        out[v * bits + block..v * bits + block + B].copy_from_slice(&acc[v]);
    }
}

#[inline(always)]
fn project_generic<const B: usize>(
    xs: &[f32],
    dim: usize,
    transposed: &[f32],
    bits: usize,
    out: &mut [f32],
    madd: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    let rows = xs.len() / dim;
    let mut v = 0;
    while v < rows {
        if rows - v >= 4 {
            let (x, o) = (
                &xs[v * dim..(v + 4) * dim],
                &mut out[v * bits..(v + 4) * bits],
            );
            for block in (0..bits).step_by(64) {
                project_block::<4, 64>(x, dim, transposed, bits, block, o, madd);
            }
            v += 4;
        } else {
            let (x, o) = (
                &xs[v * dim..(v + 1) * dim],
                &mut out[v * bits..(v + 1) * bits],
            );
            for block in (0..bits).step_by(B) {
                project_block::<1, B>(x, dim, transposed, bits, block, o, madd);
            }
            v += 1;
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn dispatch_project(xs: &[f32], dim: usize, transposed: &[f32], bits: usize, out: &mut [f32]) {
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512(xs: &[f32], dim: usize, t: &[f32], bits: usize, out: &mut [f32]) {
        if bits.is_multiple_of(256) {
            project_generic::<256>(xs, dim, t, bits, out, f32::mul_add);
        } else {
            project_generic::<64>(xs, dim, t, bits, out, f32::mul_add);
        }
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(xs: &[f32], dim: usize, t: &[f32], bits: usize, out: &mut [f32]) {
        project_generic::<64>(xs, dim, t, bits, out, f32::mul_add);
    }
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports AVX-512F and FMA, checked just above.
        unsafe { avx512(xs, dim, transposed, bits, out) }
    } else if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { avx2(xs, dim, transposed, bits, out) }
    } else {
        project_generic::<64>(xs, dim, transposed, bits, out, |a, b, c| a * b + c);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn dispatch_project(xs: &[f32], dim: usize, transposed: &[f32], bits: usize, out: &mut [f32]) {
    project_generic::<64>(xs, dim, transposed, bits, out, |a, b, c| a * b + c);
}

/// `Encoder::decide`'s loop eight rows a step: one mask compare each for the sign, the bound and
/// finiteness, where the scalar loop shifted in one bit at a time (a fifth of a batch encode's time).
/// The same decisions: `|v| > bound · ‖x‖ + underflow` with the product and sum rounded separately,
/// and an ordered compare, so NaN is never certain; `|v| < inf` is `v.is_finite()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn decide_avx512(
    approx: &[f32],
    bound: &[f64],
    x_norm: f64,
    underflow: f64,
    code: &mut [u64],
    open: &mut [u64],
) {
    use std::arch::x86_64::*;
    let (x_norm, underflow) = (_mm512_set1_pd(x_norm), _mm512_set1_pd(underflow));
    let infinity = _mm512_set1_pd(f64::INFINITY);
    let (approx, _) = approx.as_chunks::<8>();
    let (bound, _) = bound.as_chunks::<8>();
    for (w, (word, open_word)) in code.iter_mut().zip(open.iter_mut()).enumerate() {
        let (mut positive, mut uncertain) = (0u64, 0u64);
        for g in 0..8 {
            let (a, b) = (&approx[w * 8 + g], &bound[w * 8 + g]);
            // SAFETY: `a` is 8 readable f32 and `b` 8 readable f64; unaligned loads.
            let (v, b) = unsafe {
                (
                    _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr())),
                    _mm512_loadu_pd(b.as_ptr()),
                )
            };
            let magnitude = _mm512_abs_pd(v);
            let limit = _mm512_add_pd(_mm512_mul_pd(b, x_norm), underflow);
            let certain = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(magnitude, limit)
                & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(magnitude, infinity);
            let sign = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(v, _mm512_setzero_pd());
            positive |= u64::from(sign) << (8 * g);
            uncertain |= u64::from(!certain) << (8 * g);
        }
        *word = positive;
        *open_word = uncertain;
    }
}

/// Euclidean norm in f64, in eight independent lanes (vectorisable; only used inside an error bound
/// that has slack for its rounding).
fn norm(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += f64::from(c[l]) * f64::from(c[l]);
        }
    }
    (acc.iter().sum::<f64>() + tail).sqrt()
}

/// Sign of the exact dot product, for a bit the f32 estimate could not decide. The products are exact
/// in f64, so their f64 sum errs by at most γ_n(f64) · Σ|x_c p_c|: that settles nearly every case in
/// one pass; only a sum within that bound of zero needs the exact expansion.
fn dot_sign(a: &[f32], b: &[f32]) -> i32 {
    let (mut sum, mut magnitude) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let p = f64::from(x) * f64::from(y);
        sum += p;
        magnitude += p.abs();
    }
    let n = a.len() as f64;
    // 2·n·2^-53 covers γ_{n-1} and the rounding of `magnitude` itself with a wide margin.
    if sum.abs() > 2.0 * n * (f64::EPSILON / 2.0) * magnitude {
        if sum > 0.0 {
            1
        } else {
            -1
        }
    } else {
        exact_dot_sign(a, b)
    }
}

/// Sign (-1, 0, 1) of the exact dot product. f32×f32 products are exact in f64, and Shewchuk's
/// grow-expansion keeps their running sum exactly as non-overlapping partials of increasing magnitude,
/// so the largest non-zero partial carries the sign of the exact sum.
pub fn exact_dot_sign(a: &[f32], b: &[f32]) -> i32 {
    let mut partials: Vec<f64> = Vec::with_capacity(8);
    for (&x, &y) in a.iter().zip(b) {
        let mut v = f64::from(x) * f64::from(y);
        let mut kept = 0;
        for i in 0..partials.len() {
            let mut p = partials[i];
            if v.abs() < p.abs() {
                std::mem::swap(&mut v, &mut p);
            }
            let hi = v + p;
            let lo = p - (hi - v);
            if lo != 0.0 {
                partials[kept] = lo;
                kept += 1;
            }
            v = hi;
        }
        partials.truncate(kept);
        partials.push(v);
    }
    match partials.iter().rev().find(|p| **p != 0.0) {
        Some(p) if *p > 0.0 => 1,
        Some(_) => -1,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform values in [-1, 1) from a seeded LCG (the tests' inputs).
    pub(super) fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn exact_code(enc: &Encoder, x: &[f32]) -> Vec<u64> {
        let mut out = vec![0u64; enc.words()];
        for (r, row) in enc.matrix().chunks_exact(enc.dim()).enumerate() {
            if exact_dot_sign(x, row) > 0 {
                out[r / 64] |= 1 << (r % 64);
            }
        }
        out
    }

    /// One encoder per one-vector path this CPU can run (int8, half, plain f32), so that every path
    /// is checked here whatever `new` picks.
    fn every_path(dim: usize, bits: usize, seed: u64) -> Vec<(&'static str, Encoder)> {
        let mut out = vec![];
        let picked = Encoder::new(dim, bits, seed).unwrap();
        #[cfg(target_arch = "x86_64")]
        if matches!(picked.one, OneVector::Int8(_)) {
            out.push(("int8", picked));
        }
        let half = Encoder::build(dim, bits, seed, |m, t, d, b, g| {
            Ok(OneVector::half(m, t, d, b, g))
        })
        .unwrap();
        if matches!(half.one, OneVector::Half { .. }) {
            out.push(("half", half));
        }
        let plain = Encoder::build(dim, bits, seed, |_, _, _, _, _| Ok(OneVector::Plain));
        out.push(("plain", plain.unwrap()));
        out
    }

    fn check_one(name: &str, enc: &Encoder, x: &[f32]) {
        let mut got = vec![0u64; enc.words()];
        enc.encode_into(x, &mut got).unwrap();
        assert_eq!(got, exact_code(enc, x), "{name} path, x = {x:?}");
    }

    #[test]
    fn the_cpu_gets_its_smallest_one_vector_matrix() {
        let enc = Encoder::new(384, 256, 42).unwrap();
        #[cfg(target_arch = "x86_64")]
        if int8::available() {
            assert!(matches!(enc.one, OneVector::Int8(_)));
            return;
        }
        assert_eq!(matches!(enc.one, OneVector::Half { .. }), half::available());
    }

    #[test]
    fn fast_path_equals_exact_definition() {
        for (name, enc) in every_path(384, 256, 42) {
            let mut s = 1;
            for _ in 0..300 {
                let x: Vec<f32> = (0..384).map(|_| lcg(&mut s)).collect();
                check_one(name, &enc, &x);
            }
        }
    }

    #[test]
    fn every_path_equals_the_exact_definition_for_every_shape() {
        // Dimensions that are not a multiple of 4, 16 or 64 exercise the padding of each layout.
        for dim in [1, 3, 37, 64, 100, 385] {
            for bits in SUPPORTED_CODE_BITS {
                for (name, enc) in every_path(dim, bits, dim as u64 + 7) {
                    let mut s = dim as u64 * 31 + bits as u64;
                    for _ in 0..20 {
                        let x: Vec<f32> = (0..dim).map(|_| lcg(&mut s)).collect();
                        check_one(name, &enc, &x);
                    }
                }
            }
        }
    }

    #[test]
    fn extreme_and_degenerate_vectors_give_the_exact_code() {
        for (name, enc) in every_path(48, 128, 5) {
            let mut s = 9;
            let base: Vec<f32> = (0..48).map(|_| lcg(&mut s)).collect();
            for scale in [1e-44f32, 1e-38, 1e-20, 1.0, 1e20, 1e36] {
                let x: Vec<f32> = base.iter().map(|v| v * scale).collect();
                check_one(name, &enc, &x);
            }
            // The zero vector: every dot product is 0, so every bit is 0.
            let mut got = vec![u64::MAX; 2];
            enc.encode_into(&[0.0; 48], &mut got).unwrap();
            assert_eq!(got, vec![0, 0], "{name}");
            // A peak just below a power of two: it rounds to 2^15 steps of the query's scale, one
            // more than the integer passes take (they clamp it).
            let mut x = base.clone();
            x[3] = 2.0 - f32::EPSILON;
            check_one(name, &enc, &x);
            // One non-zero value, then all equal.
            let mut one_hot = vec![0.0f32; 48];
            one_hot[47] = -3.5;
            check_one(name, &enc, &one_hot);
            check_one(name, &enc, &[0.25; 48]);
        }
    }

    #[test]
    fn near_zero_projections_take_the_exact_path() {
        for (name, enc) in every_path(64, 64, 3) {
            let m = enc.matrix();
            for r in 0..64 {
                // x = (p[r,1], -p[r,0], 0, ...) makes the dot product with row r exactly zero: bit r
                // must be 0.
                let mut x = vec![0.0f32; 64];
                x[0] = m[r * 64 + 1];
                x[1] = -m[r * 64];
                let mut got = vec![0u64; 1];
                enc.encode_into(&x, &mut got).unwrap();
                assert_eq!(got[0] >> r & 1, 0, "{name} row {r}");
                check_one(name, &enc, &x);
                // Nudge by one ulp: now the sign is decided by a value far below any estimate's bound.
                x[0] = f32::from_bits(x[0].to_bits() + 1);
                check_one(name, &enc, &x);
            }
        }
    }

    #[test]
    fn exact_sign_handles_cancellation() {
        assert_eq!(exact_dot_sign(&[1e30, 1e-30, -1e30], &[1.0, 1.0, 1.0]), 1);
        assert_eq!(exact_dot_sign(&[1e30, -1e-30, -1e30], &[1.0, 1.0, 1.0]), -1);
        assert_eq!(exact_dot_sign(&[1.0, -1.0], &[3.0, 3.0]), 0);
        assert_eq!(exact_dot_sign(&[], &[]), 0);
    }

    #[test]
    fn batch_equals_single_and_parallel_equals_serial() {
        let enc = Encoder::new(40, 128, 9).unwrap();
        let mut s = 5;
        let n = PARALLEL_MIN_ROWS + 3;
        let xs: Vec<f32> = (0..40 * n).map(|_| lcg(&mut s)).collect();
        let mut batch = vec![0u64; 2 * n];
        enc.encode_batch(&xs, &mut batch).unwrap();
        for i in 0..n {
            let mut one = vec![0u64; 2];
            enc.encode_into(&xs[i * 40..(i + 1) * 40], &mut one)
                .unwrap();
            assert_eq!(&batch[i * 2..i * 2 + 2], &one[..]);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Encoder::new(0, 256, 1).is_err());
        assert!(Encoder::new(8, 100, 1).is_err());
        let enc = Encoder::new(4, 64, 1).unwrap();
        let mut out = [0u64; 1];
        assert!(matches!(
            enc.encode_into(&[1.0, 2.0, 3.0], &mut out),
            Err(BscError::Shape(_))
        ));
        assert!(matches!(
            enc.encode_into(&[1.0, f32::NAN, 3.0, 4.0], &mut out),
            Err(BscError::NonFinite(_))
        ));
        assert!(matches!(
            enc.encode_batch(
                &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, f32::INFINITY, 4.0],
                &mut [0; 2]
            ),
            Err(BscError::NonFinite(_))
        ));
    }

    #[test]
    fn batches_equal_the_exact_definition_across_chunks_and_overflows() {
        // Batches encoded a row at a time (3, 31 rows with the int8 copy), in one pass just above that
        // cutoff (32), and over more rows than one chunk (the packed GEMM and the eight-row decision)
        // with one chunk cut short; every third of them has rows whose f32 products overflow to
        // infinity or NaN, which no estimate may decide.
        let dim = 37;
        for bits in [64, 256, 1024] {
            for (name, enc) in every_path(dim, bits, bits as u64) {
                for rows in [3, 31, 32, BATCH_ROWS + 45] {
                    let mut s = (bits * rows) as u64;
                    let mut xs: Vec<f32> = (0..dim * rows).map(|_| lcg(&mut s)).collect();
                    for (i, row) in xs.chunks_exact_mut(dim).enumerate().skip(1).step_by(29) {
                        row.iter_mut().for_each(|v| *v *= 3.0e38);
                        row[i % dim] = -f32::MAX;
                    }
                    let mut got = vec![0u64; rows * enc.words()];
                    enc.encode_batch(&xs, &mut got).unwrap();
                    for (i, (x, code)) in xs
                        .chunks_exact(dim)
                        .zip(got.chunks_exact(enc.words()))
                        .enumerate()
                    {
                        assert_eq!(
                            code,
                            exact_code(&enc, x),
                            "{name}, bits {bits}, {rows} rows, row {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn huge_values_overflowing_f32_still_give_the_exact_sign() {
        for (name, enc) in every_path(4, 64, 11) {
            check_one(name, &enc, &[3.0e38f32, -3.0e38, 2.0e38, 1.0e38]);
        }
    }
}
