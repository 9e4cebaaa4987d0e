//! The one-vector projection over a half-precision copy of the matrix: half the bytes to read per
//! lookup, which is what a single encode is bound by (the f32 matrix is 384 KiB at 384-d x 256 bits and
//! comes from the second-level cache or beyond). Exactness is kept by the bound, not by the values: the
//! caller's per-row bound adds `‖P16_r − P_r‖₂ · ‖x‖₂` for the rounding of the matrix itself.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The matrix values rounded to IEEE binary16 (round to nearest even; values below the smallest normal
/// half, 2^-14, become zero: the bound accounts for whatever the rounding did).
pub fn to_half(values: &[f32]) -> Vec<u16> {
    values.iter().map(|&v| f32_to_f16(v)).collect()
}

fn f32_to_f16(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = v.abs();
    // Below 2^-14, or NaN (which a Gaussian matrix never holds): zero.
    if a.is_nan() || a < f32::from_bits(0x3880_0000) {
        return sign;
    }
    if a >= 65504.0 {
        return sign | 0x7BFF; // the largest finite half
    }
    let exp = ((bits >> 23) & 0xFF) + 15 - 127; // 1..=30 here (the f32 exponent is at least 113)
    let mant = bits & 0x007F_FFFF;
    let mut half = (exp << 10) | (mant >> 13);
    let rest = mant & 0x1FFF;
    if rest > 0x1000 || (rest == 0x1000 && half & 1 == 1) {
        half += 1; // a carry into the exponent is the correctly rounded result too
    }
    sign | (half.min(0x7BFF) as u16)
}

/// The exact f32 value of a half (finite, as `to_half` makes them).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1F);
    let mant = u32::from(h & 0x03FF);
    if exp == 0 {
        // Zero or subnormal: mant · 2^-24, exact in f32.
        let magnitude = mant as f32 * f32::from_bits(0x3380_0000);
        return f32::from_bits(sign | magnitude.to_bits());
    }
    f32::from_bits(sign | ((exp + 127 - 15) << 23) | (mant << 13))
}

/// Whether this CPU can multiply halves (AVX-512F, or AVX2 with F16C and FMA).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            || (is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[r] ≈ <x, P16 row r>` in f32 for one vector, from the `(dim, bits)` half matrix. Returns false
/// (and leaves `out` alone) when the CPU lacks the instructions; the caller then uses the f32 matrix.
pub fn project(x: &[f32], transposed: &[u16], bits: usize, out: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if bits.is_multiple_of(64) && transposed.len() == x.len() * bits && out.len() == bits {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above); shapes were checked above.
                unsafe { project_avx512(x, transposed, bits, out) };
                return true;
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("f16c")
                && is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2, F16C and FMA (checked just above); shapes were checked above.
                unsafe { project_avx2(x, transposed, bits, out) };
                return true;
            }
        }
    }
    let _ = (x, transposed, bits, out);
    false
}

/// `B` outputs at a time (`B / 16` zmm accumulators), one broadcast input element and `B / 16` loads of
/// sixteen halves each per step: 256 outputs keep sixteen FMA chains in flight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn project_avx512(x: &[f32], transposed: &[u16], bits: usize, out: &mut [f32]) {
    if bits.is_multiple_of(256) {
        blocks_avx512::<16>(x, transposed, bits, out);
    } else {
        blocks_avx512::<4>(x, transposed, bits, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn blocks_avx512<const Z: usize>(x: &[f32], transposed: &[u16], bits: usize, out: &mut [f32]) {
    let width = 16 * Z;
    for block in (0..bits).step_by(width) {
        let mut acc = [_mm512_setzero_ps(); Z];
        for (c, &xc) in x.iter().enumerate() {
            let xv = _mm512_set1_ps(xc);
            let row = &transposed[c * bits + block..c * bits + block + width];
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `row[16 j..16 j + 16]` is 32 readable bytes; `loadu` has no alignment requirement.
                let h = unsafe { _mm256_loadu_si256(row[16 * j..].as_ptr().cast()) };
                *a = _mm512_fmadd_ps(xv, _mm512_cvtph_ps(h), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: `out[block + 16 j..][..16]` is 64 writable bytes (`width` divides bits).
            unsafe { _mm512_storeu_ps(out[block + 16 * j..].as_mut_ptr(), *a) };
        }
    }
}

/// The same with eight ymm accumulators of eight outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c,fma")]
fn project_avx2(x: &[f32], transposed: &[u16], bits: usize, out: &mut [f32]) {
    for block in (0..bits).step_by(64) {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (c, &xc) in x.iter().enumerate() {
            let xv = _mm256_set1_ps(xc);
            let row = &transposed[c * bits + block..c * bits + block + 64];
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `row[8 j..8 j + 8]` is 16 readable bytes; `loadu` has no alignment requirement.
                let h = unsafe { _mm_loadu_si128(row[8 * j..].as_ptr().cast()) };
                *a = _mm256_fmadd_ps(xv, _mm256_cvtph_ps(h), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: `out[block + 8 j..][..8]` is 32 writable bytes (bits is a multiple of 64).
            unsafe { _mm256_storeu_ps(out[block + 8 * j..].as_mut_ptr(), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_to_nearest_even_and_decode_exactly() {
        for (v, want) in [
            (1.0f32, 1.0f32),
            (-2.5, -2.5),
            (1.0 + 1.0 / 2048.0, 1.0),
            (65519.0, 65504.0),
        ] {
            assert_eq!(f16_to_f32(f32_to_f16(v)), want, "{v}");
        }
        // Above halfway between 1 and the next half (1 + 2^-10) rounds up.
        assert_eq!(
            f16_to_f32(f32_to_f16(1.0 + 1.5 / 2048.0)),
            1.0 + 1.0 / 1024.0
        );
        assert_eq!(f16_to_f32(f32_to_f16(1e-6)), 0.0);
        let mut s = 7u64;
        for _ in 0..10_000 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 16.0;
            let back = f16_to_f32(f32_to_f16(v));
            assert!((back - v).abs() <= v.abs() / 2048.0 + 1e-4, "{v} -> {back}");
        }
    }

    #[test]
    fn the_half_projection_is_the_half_matrix_times_the_vector() {
        let (dim, bits) = (24, 128);
        let values: Vec<f32> = (0..dim * bits)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let halves = to_half(&values);
        let x: Vec<f32> = (0..dim).map(|i| (i as f32 - 11.5) / 7.0).collect();
        let mut out = vec![0.0f32; bits];
        if !project(&x, &halves, bits, &mut out) {
            return; // no F16C here: the f32 path is used instead
        }
        for r in 0..bits {
            let want: f64 = (0..dim)
                .map(|c| f64::from(x[c]) * f64::from(f16_to_f32(halves[c * bits + r])))
                .sum();
            assert!(
                (f64::from(out[r]) - want).abs() < 1e-4,
                "{r}: {} vs {want}",
                out[r]
            );
        }
    }
}
