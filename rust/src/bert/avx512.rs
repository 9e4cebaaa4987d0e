//! AVX-512F versions of the element-wise maths and of one query's attention, written with intrinsics: the
//! compiler vectorised the plain loops of `layers` only partly (256-bit, scalar remainders for a key count
//! like 17, scalar `max`/`exp`). Each function computes what its scalar twin in `layers` computes, to float
//! rounding (fused multiply-adds round once where the scalar code rounds twice); the tests compare them.

use std::arch::x86_64::*;

use super::layers::{Query, ERF_ALPHA, ERF_BETA, EXP_P, LN2_HI, LN2_LO};

/// `gelu` of `layers` on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn gelu(x: __m512) -> __m512 {
    let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    let z = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
    let z2 = _mm512_mul_ps(z, z);
    let mut p = _mm512_setzero_ps();
    for c in ERF_ALPHA {
        p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(c));
    }
    let mut q = _mm512_setzero_ps();
    for c in ERF_BETA {
        q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(c));
    }
    let erf = _mm512_div_ps(_mm512_mul_ps(z, p), q);
    let half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
    _mm512_fmadd_ps(half_x, erf, half_x)
}

/// `exp` of `layers` on 16 lanes (2ⁿ applied with `vscalefps`).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    let small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
        _mm512_set1_ps(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_setzero_ps();
    for c in EXP_P {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
        _mm512_set1_ps(1.0),
    );
    _mm512_maskz_mov_ps(!small, _mm512_scalef_ps(y, n))
}

/// The lanes of a 16-wide block that exist when `valid` of its elements do.
#[inline]
fn lanes(valid: usize) -> __mmask16 {
    if valid >= 16 {
        u16::MAX
    } else {
        (1u16 << valid) - 1
    }
}

impl Query<'_> {
    /// Fills `scores[..padded]` with the softmax weights (0 past `kept`) and `out` with the weighted sum
    /// of the kept keys' value rows (`value(jj)` for the `jj`-th): `Query::attend_lanes` on 16 lanes.
    ///
    /// # Panics
    /// If `scores` is shorter than `padded` or `keys_t` than `query.len() * padded` (callers size them).
    #[target_feature(enable = "avx512f")]
    pub(super) fn attend<'v>(
        &self,
        scores: &mut [f32],
        value: impl Fn(usize) -> &'v [f32],
        out: &mut [f32],
    ) {
        let (padded, kept, width) = (self.padded, self.kept, self.query.len());
        assert!(
            scores.len() >= padded && self.keys_t.len() >= width * padded && out.len() == width
        );
        let mut top = _mm512_set1_ps(f32::NEG_INFINITY);
        for block in 0..padded / 16 {
            let mut acc = _mm512_setzero_ps();
            for c in 0..width {
                // SAFETY: c * padded + block * 16 + 16 <= width * padded <= keys_t.len() (asserted).
                let k =
                    unsafe { _mm512_loadu_ps(self.keys_t.as_ptr().add(c * padded + block * 16)) };
                acc = _mm512_fmadd_ps(_mm512_set1_ps(self.query[c]), k, acc);
            }
            let acc = _mm512_mul_ps(acc, _mm512_set1_ps(self.scale));
            top = _mm512_mask_max_ps(top, lanes(kept.saturating_sub(block * 16)), top, acc);
            // SAFETY: block * 16 + 16 <= padded <= scores.len() (asserted).
            unsafe { _mm512_storeu_ps(scores.as_mut_ptr().add(block * 16), acc) };
        }
        let top = _mm512_set1_ps(_mm512_reduce_max_ps(top));
        let mut total = _mm512_setzero_ps();
        for block in 0..padded / 16 {
            // SAFETY: as above.
            unsafe {
                let at = scores.as_mut_ptr().add(block * 16);
                let valid = lanes(kept.saturating_sub(block * 16));
                let e = _mm512_maskz_mov_ps(valid, exp(_mm512_sub_ps(_mm512_loadu_ps(at), top)));
                total = _mm512_add_ps(total, e);
                _mm512_storeu_ps(at, e);
            }
        }
        let inv_total = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(total));
        for chunk in (0..width).step_by(16) {
            let mask = lanes(width - chunk);
            let mut acc = _mm512_setzero_ps();
            for (jj, &p) in scores[..kept].iter().enumerate() {
                let v = &value(jj)[..width];
                // SAFETY: v has `width` floats (the callers slice it so); masked lanes are not read.
                let v = unsafe { _mm512_maskz_loadu_ps(mask, v.as_ptr().add(chunk)) };
                acc = _mm512_fmadd_ps(_mm512_set1_ps(p), v, acc);
            }
            // SAFETY: out has `width` floats (asserted); masked lanes are not written.
            unsafe {
                _mm512_mask_storeu_ps(
                    out.as_mut_ptr().add(chunk),
                    mask,
                    _mm512_mul_ps(acc, inv_total),
                )
            };
        }
    }
}
