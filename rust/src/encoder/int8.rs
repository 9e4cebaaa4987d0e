//! The one-vector projection on CPUs with AVX-512 VNNI: exact integer dot products against an int8
//! copy of the matrix. A lookup then reads a quarter of the f32 matrix's bytes (96 KiB at 384-d x 256
//! bits, half the binary16 copy) and does 64 multiply-adds per instruction (`vpdpbusd`) instead of 16.
//!
//! Exactness comes from a bound, as on the other paths. The query is scaled by a power of two `t` and
//! rounded to integers `q` (|q| ≤ 32767), so `e = x − t·q` is exact in f64. Each row is scaled by an
//! f32 `s` and split as `P ≈ s·Q1 + (s/256)·Q2` with int8 `Q1` (the nearest multiple of `s`) and int8
//! `Q2` (what is left, rounded); every product and difference of these is exact in f64. For `M = s·Q1`
//! (the coarse pass over every row) or `M = s·Q1 + (s/256)·Q2` (the fine pass over the rows the coarse
//! one left open),
//!
//! ```text
//! <x, P> − t·<q, M> = <x, P − M> + <e, M>,  so  |<x, P> − t·<q, M>| ≤ ‖x‖·‖P − M‖ + ‖e‖·‖M‖
//! ```
//!
//! by Cauchy–Schwarz. `<q, Q>` is an integer computed exactly: `q + 32768` is split into a high and a
//! low byte, and a sum of at most `MAX_DIM` u8 x s8 products fits in an i32 (65536 · 255 · 127 < 2^31).
//! A bit is decided when `|t·<q, M>|` exceeds the bound; the row norms carry a factor 1.001, which
//! covers the rounding of every norm, product and sum in the test (relative errors below 1e-11). At
//! 384-d the coarse pass leaves ~29 of 256 rows open and the fine pass ~0.2, which the caller settles
//! exactly.

use std::arch::x86_64::*;
use std::cell::Cell;

use crate::error::{try_zeroed, Result};

/// The offset that makes the rounded query non-negative for `vpdpbusd`'s unsigned operand.
const BIAS: f64 = 32768.0;
/// Largest |q|: `q + BIAS` stays within u16.
const Q_MAX: f64 = 32767.0;
/// `Q2`'s scale is `s / FINE`: a power of two, so the two passes' integers combine exactly.
const FINE: f64 = 256.0;

/// One pass's terms of the bound, per row.
struct Bound {
    /// `BIAS · ΣQ` (exact): `<q + BIAS, Q> − bias = <q, Q>`.
    bias: Vec<f64>,
    /// 1.001 · ‖P − M‖₂.
    err: Vec<f64>,
    /// 1.001 · ‖M‖₂.
    norm: Vec<f64>,
}

impl Bound {
    fn with_capacity(bits: usize) -> Self {
        Self {
            bias: Vec::with_capacity(bits),
            err: Vec::with_capacity(bits),
            norm: Vec::with_capacity(bits),
        }
    }

    fn push(&mut self, sum: i64, err2: f64, norm2: f64) {
        self.bias.push(BIAS * sum as f64);
        self.err.push(1.001 * err2.sqrt());
        self.norm.push(1.001 * norm2.sqrt());
    }
}

/// The int8 matrix in the two layouts the passes read, and the per-row terms of their bounds.
pub struct Tables {
    dim: usize,
    bits: usize,
    /// Rows per coarse block (`16 · Z` for `Z` accumulators per query byte).
    block: usize,
    /// Bytes per query split and per fine row: `dim` rounded up to 64 (zero padding).
    stride: usize,
    /// `Q1` by blocks of `block` rows, then by groups of four dimensions, then by row: the four bytes of
    /// row `b · block + i`, dimensions `4g..4g + 4`, start at `((b · groups + g) · block + i) · 4`; one
    /// 64-byte load feeds sixteen rows.
    coarse: Vec<i8>,
    /// `Q2`, row-major, `stride` bytes a row: only the open rows are read.
    fine: Vec<i8>,
    /// `s` per row (an f32 value).
    scale: Vec<f64>,
    coarse_bound: Bound,
    fine_bound: Bound,
}

/// The query rounded for the integer passes, and the norms its bound needs.
struct Query<'a> {
    /// High and low bytes of `q + BIAS`, `stride` each (beyond `dim` they meet only zero rows).
    hi: &'a [u8],
    lo: &'a [u8],
    t: f64,
    x_norm: f64,
    e_norm: f64,
}

/// An encode's working memory: the query's bytes and each row's coarse sum `<q, Q1[r]>`.
#[derive(Default)]
struct Scratch {
    hi: Vec<u8>,
    lo: Vec<u8>,
    sums: Vec<f64>,
}

thread_local! {
    /// Kept per thread between encodes: a lookup's few kilobytes are not worth an allocation each time
    /// (a 2 KiB one also makes glibc consolidate its freed chunks).
    static SCRATCH: Cell<Scratch> = const {
        Cell::new(Scratch { hi: Vec::new(), lo: Vec::new(), sums: Vec::new() })
    };
}

/// Whether this CPU runs the integer passes.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")
}

impl Tables {
    /// Builds the tables from the row-major `(bits, dim)` matrix; `None` when the CPU lacks VNNI.
    pub fn new(matrix: &[f32], dim: usize, bits: usize) -> Result<Option<Self>> {
        if !available() || !bits.is_multiple_of(64) || matrix.len() != dim * bits {
            return Ok(None);
        }
        let block = if bits.is_multiple_of(128) { 128 } else { 64 };
        let groups = dim.div_ceil(4);
        let stride = dim.div_ceil(64) * 64;
        let mut coarse = try_zeroed(groups * 4 * bits, "int8 projection matrix")?;
        let mut fine = try_zeroed(stride * bits, "int8 projection residual")?;
        let mut scale = Vec::with_capacity(bits);
        let (mut coarse_bound, mut fine_bound) =
            (Bound::with_capacity(bits), Bound::with_capacity(bits));
        for (r, row) in matrix.chunks_exact(dim).enumerate() {
            let peak = row.iter().fold(0.0f32, |m, p| m.max(p.abs()));
            // A row of zeros or subnormals gets scale 1: all its Q are 0 and the bound is its whole norm.
            let s = Some(peak / 127.0).filter(|s| s.is_normal()).unwrap_or(1.0);
            let s = f64::from(s);
            let s_fine = s / FINE;
            let (mut sum1, mut sum2) = (0i64, 0i64);
            let (mut err1, mut norm1, mut err2, mut norm2) = (0.0f64, 0.0, 0.0, 0.0);
            for (c, &p) in row.iter().enumerate() {
                let p = f64::from(p);
                let q1 = (p / s).round_ties_even().clamp(-127.0, 127.0);
                let d1 = p - s * q1; // exact: s·q1 has 32 significant bits, p − s·q1 at most 33
                let q2 = (d1 / s_fine).round_ties_even().clamp(-127.0, 127.0);
                let d2 = d1 - s_fine * q2; // exact likewise (at most 42 significant bits)
                let m1 = s * q1;
                let m2 = m1 + s_fine * q2;
                err1 += d1 * d1;
                norm1 += m1 * m1;
                err2 += d2 * d2;
                norm2 += m2 * m2;
                // q1, q2 are integers in [-127, 127]: the casts are exact.
                sum1 += q1 as i64;
                sum2 += q2 as i64;
                let (b, i) = (r / block, r % block);
                coarse[((b * groups + c / 4) * block + i) * 4 + c % 4] = q1 as i8;
                fine[r * stride + c] = q2 as i8;
            }
            scale.push(s);
            coarse_bound.push(sum1, err1, norm1);
            fine_bound.push(sum2, err2, norm2);
        }
        Ok(Some(Self {
            dim,
            bits,
            block,
            stride,
            coarse,
            fine,
            scale,
            coarse_bound,
            fine_bound,
        }))
    }

    /// Sets `code`'s bits that the integer passes decide and marks the rest in `open` (both
    /// `bits / 64` words); the caller settles the open bits exactly. `x` is finite, `dim` long.
    pub fn project(&self, x: &[f32], code: &mut [u64], open: &mut [u64]) {
        let mut scratch = SCRATCH.take();
        scratch.hi.resize(self.stride, 0);
        scratch.lo.resize(self.stride, 0);
        scratch.sums.resize(self.bits, 0.0);
        let Scratch { hi, lo, sums } = &mut scratch;
        // SAFETY: `Tables` exist only on CPUs with AVX-512F and VNNI (`new` checks `available()`).
        unsafe {
            match self.quantise(x, hi, lo) {
                Some(query) => {
                    if self.block == 128 {
                        self.coarse_pass::<8>(&query, code, open, sums);
                    } else {
                        self.coarse_pass::<4>(&query, code, open, sums);
                    }
                    self.fine_pass(&query, sums, code, open);
                }
                None => {
                    // x = 0: every dot product is exactly 0, so every bit is 0.
                    code.fill(0);
                    open.fill(0);
                }
            }
        }
        SCRATCH.set(scratch);
    }

    /// `None` for the zero vector (no scale fits it). Sixteen values a step: a lookup cannot afford a
    /// scalar pass over the query.
    #[target_feature(enable = "avx512f")]
    fn quantise<'a>(&self, x: &[f32], hi: &'a mut [u8], lo: &'a mut [u8]) -> Option<Query<'a>> {
        let chunks = x.chunks(16);
        let lanes = |chunk: &[f32]| {
            let mask = (1u32 << chunk.len()).wrapping_sub(1) as u16; // chunk.len() is 1..=16
                                                                     // SAFETY: the mask enables only the chunk's own elements; masked-off lanes are not read.
            unsafe { _mm512_maskz_loadu_ps(mask, chunk.as_ptr()) }
        };
        let mut peak = _mm512_setzero_ps();
        for chunk in chunks.clone() {
            peak = _mm512_max_ps(peak, _mm512_abs_ps(lanes(chunk)));
        }
        let peak = _mm512_reduce_max_ps(peak);
        if peak == 0.0 {
            return None;
        }
        // t = 2^(e − 14) for peak in [2^e, 2^(e+1)): peak / t < 2^15. Every f32 is normal in f64, so
        // e is in [-149, 127] and t, 1/t are normal powers of two (scaling by them is exact).
        let e = ((f64::from(peak).to_bits() >> 52) & 0x7FF) as i64 - 1023;
        let t = f64::from_bits(((e - 14 + 1023) as u64) << 52);
        let inv_t = f64::from_bits(((14 - e + 1023) as u64) << 52);
        let (vt, v_inv_t) = (_mm512_set1_pd(t), _mm512_set1_pd(inv_t));
        let (mut x2, mut e2) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for (i, chunk) in chunks.enumerate() {
            let v = lanes(chunk);
            let mut u = [_mm256_setzero_si256(); 2];
            for (half, u) in u.iter_mut().enumerate() {
                let v = _mm512_cvtps_pd(if half == 0 {
                    _mm512_castps512_ps256(v)
                } else {
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)))
                });
                let q = _mm512_roundscale_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_mul_pd(v, v_inv_t),
                );
                let q = _mm512_min_pd(
                    _mm512_max_pd(q, _mm512_set1_pd(-Q_MAX)),
                    _mm512_set1_pd(Q_MAX),
                );
                // Exact: t·q is exact and |v − t·q| ≤ t lies on the grid of v's last bit (or is v).
                let d = _mm512_fnmadd_pd(vt, q, v);
                x2 = _mm512_fmadd_pd(v, v, x2);
                e2 = _mm512_fmadd_pd(d, d, e2);
                // q + BIAS is an integer in [1, 65535]: the conversion is exact.
                *u = _mm512_cvtpd_epi32(_mm512_add_pd(q, _mm512_set1_pd(BIAS)));
            }
            let u = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(u[0]), u[1]);
            // SAFETY: bytes 16 i..16 i + 16 are within `stride` (a multiple of 64, at least dim).
            unsafe {
                _mm_storeu_si128(
                    hi[16 * i..].as_mut_ptr().cast(),
                    _mm512_cvtepi32_epi8(_mm512_srli_epi32::<8>(u)),
                );
                _mm_storeu_si128(
                    lo[16 * i..].as_mut_ptr().cast(),
                    _mm512_cvtepi32_epi8(_mm512_and_si512(u, _mm512_set1_epi32(0xFF))),
                );
            }
        }
        Some(Query {
            hi,
            lo,
            t,
            x_norm: _mm512_reduce_add_pd(x2).sqrt(),
            e_norm: _mm512_reduce_add_pd(e2).sqrt(),
        })
    }

    /// Every row against `Q1`, sixteen rows per accumulator and `Z` accumulators per query byte, then
    /// the coarse bound; `coarse_sum[r]` keeps `<q, Q1[r]>` for the fine pass.
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn coarse_pass<const Z: usize>(
        &self,
        query: &Query,
        code: &mut [u64],
        open: &mut [u64],
        coarse_sum: &mut [f64],
    ) {
        let groups = self.dim.div_ceil(4);
        let panel_len = groups * self.block * 4;
        let t = _mm512_set1_pd(query.t);
        let x_norm = _mm512_set1_pd(query.x_norm);
        let e_norm = _mm512_set1_pd(query.e_norm);
        let bound = &self.coarse_bound;
        for (b, panel) in self.coarse.chunks_exact(panel_len).enumerate() {
            let (mut acc_hi, mut acc_lo) =
                ([_mm512_setzero_si512(); Z], [_mm512_setzero_si512(); Z]);
            let (hi, lo) = (query.hi.as_ptr(), query.lo.as_ptr());
            for (g, rows) in panel.chunks_exact(self.block * 4).enumerate() {
                // SAFETY: bytes 4g..4g + 4 are within `stride` ≥ 4 · groups; `read_unaligned` has no
                // alignment requirement.
                let (hi, lo) = unsafe {
                    (
                        _mm512_set1_epi32(hi.add(4 * g).cast::<i32>().read_unaligned()),
                        _mm512_set1_epi32(lo.add(4 * g).cast::<i32>().read_unaligned()),
                    )
                };
                let rows = rows.as_ptr();
                for j in 0..Z {
                    // Eight groups ahead: the panel is read once, so the hardware prefetcher alone
                    // leaves the first loads of every page waiting on the second-level cache or beyond.
                    _mm_prefetch::<_MM_HINT_T0>(rows.wrapping_add(64 * j + 4096).cast());
                    // SAFETY: `rows` holds `block` = 16 Z rows of 4 bytes, so bytes 64 j..64 j + 64
                    // are in bounds; `loadu` has no alignment requirement.
                    let m = unsafe { _mm512_loadu_si512(rows.add(64 * j).cast()) };
                    acc_hi[j] = _mm512_dpbusd_epi32(acc_hi[j], hi, m);
                    acc_lo[j] = _mm512_dpbusd_epi32(acc_lo[j], lo, m);
                }
            }
            for j in 0..Z {
                for half in 0..2 {
                    let r = b * self.block + 16 * j + 8 * half;
                    let (h, l) = if half == 0 {
                        (
                            _mm512_castsi512_si256(acc_hi[j]),
                            _mm512_castsi512_si256(acc_lo[j]),
                        )
                    } else {
                        (
                            _mm512_extracti64x4_epi64::<1>(acc_hi[j]),
                            _mm512_extracti64x4_epi64::<1>(acc_lo[j]),
                        )
                    };
                    // 256·hi + lo − bias: integers below 2^48, exact in f64.
                    let at = |v: &[f64]| {
                        // SAFETY: `v[r..r + 8]` is in bounds (r + 8 ≤ bits = v.len()).
                        unsafe { _mm512_loadu_pd(v[r..r + 8].as_ptr()) }
                    };
                    let sum = _mm512_sub_pd(
                        _mm512_fmadd_pd(
                            _mm512_cvtepi32_pd(h),
                            _mm512_set1_pd(FINE),
                            _mm512_cvtepi32_pd(l),
                        ),
                        at(&bound.bias),
                    );
                    // SAFETY: `coarse_sum[r..r + 8]` is in bounds (its length is bits).
                    unsafe { _mm512_storeu_pd(coarse_sum[r..r + 8].as_mut_ptr(), sum) };
                    let y = _mm512_mul_pd(sum, _mm512_mul_pd(t, at(&self.scale)));
                    let limit = _mm512_fmadd_pd(
                        x_norm,
                        at(&bound.err),
                        _mm512_mul_pd(e_norm, at(&bound.norm)),
                    );
                    let positive = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(y, _mm512_setzero_pd());
                    let certain = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_abs_pd(y), limit);
                    let (w, shift) = (r / 64, r % 64);
                    let lane = 0xFFu64 << shift;
                    code[w] = (code[w] & !lane) | (u64::from(positive & certain) << shift);
                    open[w] = (open[w] & !lane) | (u64::from(!certain) << shift);
                }
            }
        }
    }

    /// The open rows again with `Q1 + Q2 / 256`, from the row-major residual.
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn fine_pass(&self, query: &Query, coarse_sum: &[f64], code: &mut [u64], open: &mut [u64]) {
        let bound = &self.fine_bound;
        for (w, &open_word) in open.iter().enumerate() {
            let mut left = open_word;
            while left != 0 {
                let r = w * 64 + left.trailing_zeros() as usize;
                left &= left - 1;
                for line in self.fine[r * self.stride..(r + 1) * self.stride].chunks_exact(64) {
                    _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
                }
            }
        }
        for (w, (word, open_word)) in code.iter_mut().zip(open.iter_mut()).enumerate() {
            let mut left = *open_word;
            while left != 0 {
                let j = left.trailing_zeros() as usize;
                left &= left - 1;
                let r = w * 64 + j;
                let (hi, lo) =
                    self.fine_dot(query, &self.fine[r * self.stride..(r + 1) * self.stride]);
                // Exact: |coarse_sum| < 2^40 and the fine sums < 2^40, so everything stays below 2^53.
                let sum =
                    FINE * coarse_sum[r] + (FINE * f64::from(hi) + f64::from(lo) - bound.bias[r]);
                let y = sum * (query.t * self.scale[r] / FINE);
                // Branch-free, so that the next rows' loads and sums overlap this one's.
                let decided = y.abs() > query.x_norm * bound.err[r] + query.e_norm * bound.norm[r];
                let bit = u64::from(decided) << j;
                *word = (*word & !bit) | (u64::from(decided & (y > 0.0)) << j);
                *open_word &= !bit;
            }
        }
    }

    /// `(<hi, row>, <lo, row>)` for one fine row (`stride` bytes, a multiple of 64).
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn fine_dot(&self, query: &Query, row: &[i8]) -> (i32, i32) {
        // SAFETY: every pointer below is to 64 readable bytes of a chunk; `loadu` has no alignment
        // requirement.
        let load = |bytes: &[u8]| unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) };
        let load_row = |bytes: &[i8]| unsafe { _mm512_loadu_si512(bytes.as_ptr().cast()) };
        // Two accumulators per byte, for even and odd chunks: the chains of dependent `vpdpbusd` are
        // half as long.
        let (mut acc_hi, mut acc_lo) = ([_mm512_setzero_si512(); 2], [_mm512_setzero_si512(); 2]);
        let pairs = row.chunks_exact(128);
        let rest = pairs.remainder();
        for ((m, hi), lo) in pairs
            .zip(query.hi.chunks_exact(128))
            .zip(query.lo.chunks_exact(128))
        {
            for i in 0..2 {
                let m = load_row(&m[64 * i..]);
                acc_hi[i] = _mm512_dpbusd_epi32(acc_hi[i], load(&hi[64 * i..]), m);
                acc_lo[i] = _mm512_dpbusd_epi32(acc_lo[i], load(&lo[64 * i..]), m);
            }
        }
        if !rest.is_empty() {
            let at = row.len() - 64;
            let m = load_row(rest);
            acc_hi[0] = _mm512_dpbusd_epi32(acc_hi[0], load(&query.hi[at..]), m);
            acc_lo[0] = _mm512_dpbusd_epi32(acc_lo[0], load(&query.lo[at..]), m);
        }
        let (acc_hi, acc_lo) = (
            _mm512_add_epi32(acc_hi[0], acc_hi[1]),
            _mm512_add_epi32(acc_lo[0], acc_lo[1]),
        );
        // The full sums fit in i32 (see the module doc), so the lanes' wrapping sum is exact.
        (
            _mm512_reduce_add_epi32(acc_hi),
            _mm512_reduce_add_epi32(acc_lo),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::exact_dot_sign;
    use crate::encoder::tests::lcg;
    use crate::projection::fill_projection_matrix;

    fn matrix(dim: usize, bits: usize, seed: u64) -> Vec<f32> {
        let mut m = vec![0.0f32; dim * bits];
        fill_projection_matrix(&mut m, dim, bits, seed);
        m
    }

    /// The code and the open rows after the coarse pass alone and after both passes.
    fn passes(tables: &Tables, x: &[f32]) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
        let words = tables.bits / 64;
        let (mut code, mut open) = (vec![0u64; words], vec![0u64; words]);
        let (mut hi, mut lo) = (vec![0u8; tables.stride], vec![0u8; tables.stride]);
        let mut sums = vec![0.0f64; tables.bits];
        assert_eq!(
            tables.block, 128,
            "coarse_pass::<8> reads blocks of 128 rows"
        );
        // SAFETY: the callers build `tables` only where `available()`.
        unsafe {
            let query = tables.quantise(x, &mut hi, &mut lo).unwrap();
            tables.coarse_pass::<8>(&query, &mut code, &mut open, &mut sums);
            let coarse_open = open.clone();
            tables.fine_pass(&query, &sums, &mut code, &mut open);
            (code, coarse_open, open)
        }
    }

    /// Every bit a pass decided (not open) equals the exact sign.
    fn assert_decided_bits_are_exact(m: &[f32], dim: usize, x: &[f32], code: &[u64], open: &[u64]) {
        for (r, row) in m.chunks_exact(dim).enumerate() {
            let (w, j) = (r / 64, r % 64);
            if open[w] >> j & 1 == 0 {
                let want = u64::from(exact_dot_sign(x, row) > 0);
                assert_eq!(code[w] >> j & 1, want, "row {r}");
            }
        }
    }

    fn ones(words: &[u64]) -> u32 {
        words.iter().map(|w| w.count_ones()).sum()
    }

    #[test]
    fn each_pass_decides_only_exact_bits_and_the_fine_pass_settles_most_of_the_rest() {
        if !available() {
            return; // no VNNI here: the encoder uses another path, tested in `encoder::tests`
        }
        let (dim, bits) = (384, 256);
        let m = matrix(dim, bits, 42);
        let tables = Tables::new(&m, dim, bits).unwrap().unwrap();
        let (mut s, mut coarse_open, mut fine_open) = (3, 0, 0);
        for _ in 0..200 {
            let x: Vec<f32> = (0..dim).map(|_| lcg(&mut s)).collect();
            let (code, after_coarse, after_fine) = passes(&tables, &x);
            assert_decided_bits_are_exact(&m, dim, &x, &code, &after_fine);
            // The fine pass only closes rows the coarse pass left open.
            assert!(after_coarse
                .iter()
                .zip(&after_fine)
                .all(|(c, f)| f & !c == 0));
            coarse_open += ones(&after_coarse);
            fine_open += ones(&after_fine);
        }
        // ~29 of 256 rows per vector need the fine pass and ~0.2 the exact path.
        assert!((2_000..12_000).contains(&coarse_open), "{coarse_open}");
        assert!(fine_open < coarse_open / 20, "{fine_open} of {coarse_open}");
    }

    #[test]
    fn a_row_orthogonal_to_the_query_stays_open_for_the_exact_path() {
        if !available() {
            return;
        }
        let (dim, bits) = (64, 128);
        let m = matrix(dim, bits, 8);
        let tables = Tables::new(&m, dim, bits).unwrap().unwrap();
        for r in [0, 77, 127] {
            let mut x = vec![0.0f32; dim];
            x[0] = m[r * dim + 1];
            x[1] = -m[r * dim];
            let (code, after_coarse, after_fine) = passes(&tables, &x);
            assert_eq!(after_coarse[r / 64] >> (r % 64) & 1, 1, "row {r}");
            assert_eq!(after_fine[r / 64] >> (r % 64) & 1, 1, "row {r}");
            assert_decided_bits_are_exact(&m, dim, &x, &code, &after_fine);
        }
    }

    #[test]
    fn rows_of_zeros_subnormals_and_huge_values_keep_the_bound_rigorous() {
        if !available() {
            return;
        }
        let (dim, bits) = (40, 128);
        let mut m = matrix(dim, bits, 1);
        m[..dim].fill(0.0); // row 0: no scale fits it
        for (c, v) in m[dim..2 * dim].iter_mut().enumerate() {
            *v = f32::from_bits(1 + c as u32); // row 1: subnormals
        }
        m[2 * dim] = 3.0e38; // row 2: one huge value among Gaussians
        let tables = Tables::new(&m, dim, bits).unwrap().unwrap();
        let mut s = 4;
        for _ in 0..100 {
            let x: Vec<f32> = (0..dim).map(|_| lcg(&mut s)).collect();
            let (code, _, after_fine) = passes(&tables, &x);
            assert_decided_bits_are_exact(&m, dim, &x, &code, &after_fine);
            assert_eq!(
                after_fine[0] & 0b11,
                0b11,
                "rows 0 and 1 are left to the exact path"
            );
        }
    }
}
