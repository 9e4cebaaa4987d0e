//! The seeded Gaussian projection matrix, a pure function of `(dim, code_bits, seed)`.
//!
//! Every element is computed with IEEE-754 `+ - * /` and `sqrt` only (all correctly rounded, so every
//! conforming implementation gives the same bits) from a counter-based integer generator. No libm call is
//! involved: `ln` is written out below with a fixed evaluation order. `bsc.oracle` (NumPy) implements the
//! same definition; see `docs/encoding.md`.

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
/// 0.7071067811865476 and 0.6931471805599453 as binary64 (the std constants are exactly these values).
const SQRT_HALF: f64 = std::f64::consts::FRAC_1_SQRT_2;
const LN2: f64 = std::f64::consts::LN_2;
/// Odd denominators of the atanh series used by [`ln_unit`], highest first (Horner order).
const SERIES_DENOMINATORS: [f64; 12] = [
    23.0, 21.0, 19.0, 17.0, 15.0, 13.0, 11.0, 9.0, 7.0, 5.0, 3.0, 1.0,
];

/// SplitMix64's finaliser: a bijection on u64 with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps the top 53 bits of `w` to `k * 2^-52 - 1`, an exact value in [-1, 1).
#[inline]
fn unit_symmetric(w: u64) -> f64 {
    ((w >> 11) as f64) * f64::from_bits(0x3CB0_0000_0000_0000) - 1.0 // 2^-52
}

/// Natural log of `s` in (0, 1), normal, from `frexp` and the atanh series; fixed operation order.
#[inline]
pub fn ln_unit(s: f64) -> f64 {
    let bits = s.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let mut m = f64::from_bits((bits & !(0x7ff_u64 << 52)) | (1022_u64 << 52)); // [0.5, 1)
    if m < SQRT_HALF {
        m *= 2.0;
        e -= 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut p = 1.0 / SERIES_DENOMINATORS[0];
    for d in &SERIES_DENOMINATORS[1..] {
        p = p * t2 + 1.0 / d;
    }
    (e as f64) * LN2 + 2.0 * t * p
}

/// The standard normal deviate at row `r`, column `c` (Marsaglia's polar method, first coordinate).
pub fn gaussian(seed: u64, r: u64, c: u64) -> f32 {
    let row_key = mix64(seed.wrapping_add((r + 1).wrapping_mul(GOLDEN)));
    let elem_key = mix64(row_key ^ c);
    let mut attempt: u64 = 0;
    loop {
        let u = unit_symmetric(mix64(
            elem_key.wrapping_add((2 * attempt + 1).wrapping_mul(GOLDEN)),
        ));
        let v = unit_symmetric(mix64(
            elem_key.wrapping_add((2 * attempt + 2).wrapping_mul(GOLDEN)),
        ));
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            let scale = ((-2.0 * ln_unit(s)) / s).sqrt();
            return (u * scale) as f32;
        }
        attempt += 1;
    }
}

/// Row-major `(code_bits, dim)` matrix: row `r` is the hyperplane normal that decides bit `r`.
pub fn projection_matrix(dim: usize, code_bits: usize, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0; dim * code_bits];
    fill_projection_matrix(&mut out, dim, code_bits, seed);
    out
}

/// [`projection_matrix`] into a buffer the caller allocated (so it can fail cleanly on a huge size).
///
/// # Panics
/// If `out.len() != dim * code_bits`.
pub fn fill_projection_matrix(out: &mut [f32], dim: usize, code_bits: usize, seed: u64) {
    assert_eq!(
        out.len(),
        dim * code_bits,
        "buffer must hold dim * code_bits values"
    );
    for (r, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = gaussian(seed, r as u64, c as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_unit_is_accurate() {
        for &s in &[1e-300, 1e-10, 0.1, 0.25, 0.5, 0.707, 0.75, 0.999_999] {
            let got = ln_unit(s);
            let want = f64::ln(s);
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1.0),
                "{s}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn matrix_looks_standard_normal() {
        let m = projection_matrix(384, 256, 42);
        let n = m.len() as f64;
        let mean = m.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = m.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn elements_do_not_depend_on_shape() {
        let small = projection_matrix(8, 64, 7);
        let large = projection_matrix(16, 128, 7);
        for r in 0..64 {
            assert_eq!(&small[r * 8..r * 8 + 8], &large[r * 16..r * 16 + 8]);
        }
    }

    #[test]
    fn seeds_give_different_matrices() {
        assert_ne!(projection_matrix(4, 64, 1), projection_matrix(4, 64, 2));
    }
}
