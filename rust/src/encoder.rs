//! Sign-random-projection encoder whose output is exact, so every correct implementation agrees bit for bit.
//!
//! Bit `r` of a code is 1 iff the *exact* real dot product of the input (rounded once to f32) with row `r`
//! of the projection matrix is > 0. Because the definition uses the exact value, the result cannot depend
//! on SIMD width, summation order or BLAS. Computing it is cheap: an f32 dot product decides the bit whenever
//! its magnitude exceeds a rigorous bound on its rounding error (nearly always); otherwise the products,
//! which are exact in f64, are summed exactly (Shewchuk's expansion) and the sign is read off that.

use rayon::prelude::*;

use crate::error::{BscError, Result};
use crate::projection::projection_matrix;

/// The code sizes the encoder and the scan support.
pub const SUPPORTED_CODE_BITS: [usize; 5] = [64, 128, 256, 512, 1024];
/// Batches at least this large are split over the rayon pool; below it the hand-off costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 256;
/// Accumulator lanes of the f32 dot product; wide enough for one AVX-512 register.
const LANES: usize = 16;

pub struct Encoder {
    dim: usize,
    code_bits: usize,
    seed: u64,
    /// Row-major `(code_bits, dim)`.
    matrix: Vec<f32>,
    /// Euclidean norm of each matrix row, for the Cauchy–Schwarz error bound.
    row_norms: Vec<f64>,
}

impl Encoder {
    pub fn new(dim: usize, code_bits: usize, seed: u64) -> Result<Self> {
        if dim == 0 {
            return Err(BscError::InvalidArgument("dim must be a positive integer, got 0".into()));
        }
        if !SUPPORTED_CODE_BITS.contains(&code_bits) {
            return Err(BscError::InvalidArgument(format!(
                "code_bits must be one of {SUPPORTED_CODE_BITS:?}, got {code_bits}"
            )));
        }
        let matrix = projection_matrix(dim, code_bits, seed);
        let row_norms = matrix
            .chunks_exact(dim)
            .map(|row| row.iter().map(|&p| f64::from(p) * f64::from(p)).sum::<f64>().sqrt())
            .collect();
        Ok(Self { dim, code_bits, seed, matrix, row_norms })
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
        self.check_row(x, 0)?;
        self.encode_unchecked(x, out);
        Ok(())
    }

    /// Encodes `n` row-major vectors into `out` (`n * words()` u64s), in parallel for large batches.
    pub fn encode_batch(&self, xs: &[f32], out: &mut [u64]) -> Result<()> {
        for (i, x) in xs.chunks_exact(self.dim).enumerate() {
            self.check_row(x, i)?;
        }
        let words = self.words();
        let n = xs.len() / self.dim;
        if n >= PARALLEL_MIN_ROWS {
            xs.par_chunks_exact(self.dim)
                .zip(out.par_chunks_exact_mut(words))
                .for_each(|(x, o)| self.encode_unchecked(x, o));
        } else {
            for (x, o) in xs.chunks_exact(self.dim).zip(out.chunks_exact_mut(words)) {
                self.encode_unchecked(x, o);
            }
        }
        Ok(())
    }

    fn check_row(&self, x: &[f32], row: usize) -> Result<()> {
        if x.len() != self.dim {
            return Err(BscError::Shape(format!(
                "expected an embedding of dimension {}, got {}",
                self.dim,
                x.len()
            )));
        }
        if let Some(col) = x.iter().position(|v| !v.is_finite()) {
            return Err(BscError::NonFinite(format!(
                "embedding row {row} has a non-finite value ({}) at index {col}; expected finite float32 values",
                x[col]
            )));
        }
        Ok(())
    }

    fn encode_unchecked(&self, x: &[f32], out: &mut [u64]) {
        let n = self.dim as f64;
        let unit = f64::from(f32::EPSILON) / 2.0; // f32 unit roundoff, 2^-24
        let gamma = n * unit / (1.0 - n * unit);
        // Absolute slack for products that underflow to f32 subnormals (each loses at most 2^-150).
        let underflow = n * f64::from_bits(0x36A0_0000_0000_0000); // 2^-149
        let x_norm = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        out.fill(0);
        for (r, row) in self.matrix.chunks_exact(self.dim).enumerate() {
            let approx = f64::from(dot_f32(x, row));
            // 1.001 covers the rounding of the bound's own arithmetic (relative ~1e-13 here).
            let bound = 1.001 * (gamma * x_norm * self.row_norms[r] + underflow);
            let positive = if approx.is_finite() && approx.abs() > bound {
                approx > 0.0
            } else {
                exact_dot_sign(x, row) > 0
            };
            if positive {
                out[r / 64] |= 1u64 << (r % 64);
            }
        }
    }
}

/// f32 dot product in `LANES` independent accumulators (any order is fine: only its error bound matters).
#[inline]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dispatch_dot(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
fn dispatch_dot(a: &[f32], b: &[f32]) -> f32 {
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(a: &[f32], b: &[f32]) -> f32 {
        dot_lanes(a, b)
    }
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(a: &[f32], b: &[f32]) -> f32 {
        dot_lanes(a, b)
    }
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        unsafe { avx512(a, b) }
    } else if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { avx2(a, b) }
    } else {
        dot_lanes(a, b)
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn dispatch_dot(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes(a, b)
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

    fn lcg(state: &mut u64) -> f32 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
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

    #[test]
    fn fast_path_equals_exact_definition() {
        let enc = Encoder::new(384, 256, 42).unwrap();
        let mut s = 1;
        for _ in 0..300 {
            let x: Vec<f32> = (0..384).map(|_| lcg(&mut s)).collect();
            let mut got = vec![0u64; 4];
            enc.encode_into(&x, &mut got).unwrap();
            assert_eq!(got, exact_code(&enc, &x));
        }
    }

    #[test]
    fn near_zero_projections_take_the_exact_path() {
        let enc = Encoder::new(64, 64, 3).unwrap();
        let m = enc.matrix();
        for r in 0..64 {
            // x = (p[r,1], -p[r,0], 0, ...) makes the dot product with row r exactly zero: bit r must be 0.
            let mut x = vec![0.0f32; 64];
            x[0] = m[r * 64 + 1];
            x[1] = -m[r * 64];
            let mut got = vec![0u64; 1];
            enc.encode_into(&x, &mut got).unwrap();
            assert_eq!(got[0] >> r & 1, 0, "row {r}");
            assert_eq!(got, exact_code(&enc, &x));
            // Nudge by one ulp: now the sign is decided by a value far below the f32 error bound.
            x[0] = f32::from_bits(x[0].to_bits() + 1);
            enc.encode_into(&x, &mut got).unwrap();
            assert_eq!(got, exact_code(&enc, &x));
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
            enc.encode_into(&xs[i * 40..(i + 1) * 40], &mut one).unwrap();
            assert_eq!(&batch[i * 2..i * 2 + 2], &one[..]);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Encoder::new(0, 256, 1).is_err());
        assert!(Encoder::new(8, 100, 1).is_err());
        let enc = Encoder::new(4, 64, 1).unwrap();
        let mut out = [0u64; 1];
        assert!(matches!(enc.encode_into(&[1.0, 2.0, 3.0], &mut out), Err(BscError::Shape(_))));
        assert!(matches!(enc.encode_into(&[1.0, f32::NAN, 3.0, 4.0], &mut out), Err(BscError::NonFinite(_))));
        assert!(matches!(enc.encode_batch(&[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, f32::INFINITY, 4.0], &mut [0; 2]),
            Err(BscError::NonFinite(_))));
    }

    #[test]
    fn huge_values_overflowing_f32_still_give_the_exact_sign() {
        let enc = Encoder::new(4, 64, 11).unwrap();
        let x = [3.0e38f32, -3.0e38, 2.0e38, 1.0e38];
        let mut got = [0u64; 1];
        enc.encode_into(&x, &mut got).unwrap();
        assert_eq!(got.to_vec(), exact_code(&enc, &x));
    }
}
