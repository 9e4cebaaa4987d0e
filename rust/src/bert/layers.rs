//! The encoder's parts besides the matrix products: LayerNorm, the feed-forward activation, attention over
//! the padding mask, and pooling.
//!
//! All in float32, written as loops over contiguous lanes (no horizontal reductions in the hot loops) so
//! that the compiler vectorises them; [`Vector::Avx512`] compiles the same loops for AVX-512.

/// The feed-forward activation, by Hugging Face's `hidden_act` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `"gelu"`: the exact erf form, as `torch.nn.functional.gelu`.
    Gelu,
    /// `"gelu_new"` / `"gelu_pytorch_tanh"`: the tanh approximation.
    GeluTanh,
    /// `"relu"`.
    Relu,
}

impl Activation {
    /// The activation Hugging Face calls `name`, if this encoder computes it.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the tokens the attention mask keeps (sentence-transformers' mean pooling).
    Mean,
    /// The first token's vector.
    Cls,
}

/// Which instructions the element-wise loops are compiled for (chosen with the matrix kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vector {
    Baseline,
    Avx512,
}

/// `x ↦ 0.5 x (1 + erf(x / √2))`: erf as a rational function of x² on [-4, 4] (clamped beyond, where
/// erf is ±1 in float32), the fit Eigen and XLA use; within 5e-7 of erf, a few float32 ulps.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let z2 = z * z;
    let p = ERF_ALPHA.iter().fold(0.0, |acc, &c| acc * z2 + c);
    let q = ERF_BETA.iter().fold(0.0, |acc, &c| acc * z2 + c);
    0.5 * x * (1.0 + z * p / q)
}

/// The numerator of `gelu`'s erf fit, in x², highest power first.
pub(super) const ERF_ALPHA: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
/// Its denominator.
pub(super) const ERF_BETA: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329_2e-3,
    -1.426_473_9e-2,
];

/// `e^x` for x ≤ 88 (Cephes' expf: x = n ln 2 + r, a degree-5 polynomial in r, 2ⁿ from the exponent
/// bits); within 2 ulp of `f32::exp`, and 0 for x below -87 (where float32 underflows anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    let small = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = EXP_P.iter().fold(0.0, |acc, &c| acc * r + c);
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if small {
        0.0
    } else {
        y * scale
    }
}

/// ln 2 split in two, so that `x - n ln 2` is exact for the `n` that `exp` meets.
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// `exp`'s polynomial in r, highest power first.
pub(super) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `tanh(x) = 1 - 2 / (e^{2x} + 1)`, through [`exp`].
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp((2.0 * x).min(88.0)) + 1.0)
}

#[inline(always)]
fn activate_lanes(x: &mut [f32], activation: Activation) {
    match activation {
        Activation::Gelu => x.iter_mut().for_each(|v| *v = gelu(*v)),
        Activation::GeluTanh => x.iter_mut().for_each(|v| {
            let u = *v;
            *v = 0.5 * u * (1.0 + tanh(0.797_884_6 * (u + 0.044_715 * u * u * u)));
        }),
        Activation::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn activate_avx512(x: &mut [f32], activation: Activation) {
    activate_lanes(x, activation);
}

/// Applies `activation` to every value of `x` in place.
pub fn activate(x: &mut [f32], activation: Activation, vector: Vector) {
    match vector {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Vector::Avx512` is chosen only when the CPU has AVX-512F.
        Vector::Avx512 => unsafe { activate_avx512(x, activation) },
        _ => activate_lanes(x, activation),
    }
}

/// Sum of `f(x)` over `x`, in 16 interleaved float32 partial sums so that the loop vectorises.
#[inline(always)]
fn sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// LayerNorm of every `gamma.len()`-wide row of `x`, in place: `(x - mean) / √(var + eps) · γ + β`.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for row in x.chunks_exact_mut(width) {
        let mean = sum_of(row, |v| v) / width as f32;
        let var = sum_of(row, |v| (v - mean) * (v - mean)) / width as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv_std * g + b;
        }
    }
}

/// The shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    /// Tokens per sequence (the padded length).
    pub seq: usize,
    /// Model width (`heads × head width`).
    pub hidden: usize,
    pub heads: usize,
}

/// Self-attention of one sequence: `qkv` is its `seq` rows of `[q | k | v]` (each `hidden` wide, heads
/// side by side), `mask` its attention mask (0 = padding), `context` its `seq × hidden` output.
///
/// Padded keys get no weight, exactly as Hugging Face's additive mask of float32's minimum gives them
/// (its `exp` underflows to 0); a sequence with no kept token at all attends uniformly, as there too.
pub fn attention(qkv: &[f32], mask: &[i32], context: &mut [f32], shape: Heads, vector: Vector) {
    let Heads { seq, hidden, heads } = shape;
    let width = hidden / heads;
    let stride = 3 * hidden;
    let mut keys: Vec<usize> = (0..seq).filter(|&j| mask[j] != 0).collect();
    if keys.is_empty() {
        keys = (0..seq).collect();
    }
    let kept = keys.len();
    let padded = kept.div_ceil(LANES) * LANES;
    let scale = 1.0 / (width as f32).sqrt();
    // The head's keys transposed (width × padded, zero past `kept`), so a query's scores accumulate along
    // contiguous lanes.
    let mut keys_t = vec![0.0f32; width * padded];
    let mut scores = vec![0.0f32; padded];
    for head in 0..heads {
        let (q_at, k_at, v_at) = (
            head * width,
            hidden + head * width,
            2 * hidden + head * width,
        );
        for (jj, &j) in keys.iter().enumerate() {
            let key = &qkv[j * stride + k_at..j * stride + k_at + width];
            for (c, &v) in key.iter().enumerate() {
                keys_t[c * padded + jj] = v;
            }
        }
        let value = |jj: usize| &qkv[keys[jj] * stride + v_at..keys[jj] * stride + v_at + width];
        for i in 0..seq {
            let query = Query {
                query: &qkv[i * stride + q_at..i * stride + q_at + width],
                keys_t: &keys_t,
                padded,
                kept,
                scale,
            };
            let out = &mut context[i * hidden + q_at..i * hidden + q_at + width];
            match vector {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `Vector::Avx512` is chosen only when the CPU has AVX-512F.
                Vector::Avx512 => unsafe { query.attend(&mut scores, value, out) },
                _ => query.attend_lanes(&mut scores, value, out),
            }
        }
    }
}

/// Lanes per block of attention scores: the key count is padded to a multiple of this.
const LANES: usize = 16;

/// One query's attention over one head.
pub(super) struct Query<'a> {
    pub query: &'a [f32],
    /// The head's kept keys transposed: `query.len()` rows of `padded` floats (zero past `kept`).
    pub keys_t: &'a [f32],
    pub padded: usize,
    pub kept: usize,
    pub scale: f32,
}

impl Query<'_> {
    /// Fills `scores[..padded]` with the softmax weights (0 past `kept`) and `out` with the weighted sum
    /// of the kept keys' value rows (`value(jj)` for the `jj`-th). `avx512::Query::attend` is its twin.
    fn attend_lanes<'v>(
        &self,
        scores: &mut [f32],
        value: impl Fn(usize) -> &'v [f32],
        out: &mut [f32],
    ) {
        let (padded, kept) = (self.padded, self.kept);
        scores[..padded].fill(0.0);
        for (c, &q) in self.query.iter().enumerate() {
            for (s, &k) in scores
                .iter_mut()
                .zip(&self.keys_t[c * padded..(c + 1) * padded])
            {
                *s += q * k;
            }
        }
        let top = scores[..kept]
            .iter()
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b * self.scale));
        for (j, s) in scores[..padded].iter_mut().enumerate() {
            // Padding lanes hold 0 (no key), so they must not count.
            *s = if j < kept {
                exp(*s * self.scale - top)
            } else {
                0.0
            };
        }
        let inv_total = 1.0 / sum_of(&scores[..padded], |s| s);
        out.fill(0.0);
        for (jj, &p) in scores[..kept].iter().enumerate() {
            for (o, &v) in out.iter_mut().zip(value(jj)) {
                *o += p * v;
            }
        }
        out.iter_mut().for_each(|o| *o *= inv_total);
    }
}

/// One sentence vector from a sequence's `seq × hidden` token vectors: see [`Pooling`]. A sequence whose
/// mask keeps nothing pools to zeros under `Mean` (sentence-transformers divides by max(count, 1e-9)).
pub fn pool(tokens: &[f32], mask: &[i32], hidden: usize, pooling: Pooling, out: &mut [f32]) {
    match pooling {
        Pooling::Cls => out.copy_from_slice(&tokens[..hidden]),
        Pooling::Mean => {
            out.fill(0.0);
            let mut count = 0.0f32;
            for (row, &m) in tokens.chunks_exact(hidden).zip(mask) {
                if m != 0 {
                    count += 1.0;
                    out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
                }
            }
            let inv = 1.0 / count.max(1e-9);
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf to double precision (Abramowitz & Stegun 7.1.28 is not enough; use the series / continued
    /// fraction split), as the reference the float32 fit is held to.
    fn erf64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            // Taylor series: erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
            let (mut term, mut total, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -x * x / n;
                total += term / (2.0 * n + 1.0);
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // Continued fraction for erfc, accurate for |x| >= 3.
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn gelu_is_the_erf_form_to_float32_rounding() {
        for i in -12_000..=12_000 {
            let x = i as f32 / 1000.0;
            let exact = 0.5 * f64::from(x) * (1.0 + erf64(f64::from(x) / std::f64::consts::SQRT_2));
            assert!(
                (f64::from(gelu(x)) - exact).abs() < 2e-6,
                "gelu({x}) = {} vs {exact}",
                gelu(x)
            );
        }
    }

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (ours, std) = (exp(x), x.exp());
            assert!(
                (ours - std).abs() <= 4.0 * f32::EPSILON * std,
                "exp({x}) = {ours} vs {std}"
            );
        }
        assert_eq!(exp(-1000.0), 0.0);
    }

    #[test]
    fn vectorised_loops_equal_the_baseline_ones() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 97.0).collect();
        for activation in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
            let (mut a, mut b) = (x.clone(), x.clone());
            activate(&mut a, activation, Vector::Baseline);
            if std::is_x86_feature_detected!("avx512f") {
                activate(&mut b, activation, Vector::Avx512);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn padded_keys_get_no_weight_and_an_all_padded_sequence_attends_uniformly() {
        let shape = Heads {
            seq: 3,
            hidden: 4,
            heads: 2,
        };
        let qkv: Vec<f32> = (0..3 * 12)
            .map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0)
            .collect();
        let mut with_pad = vec![0.0; 12];
        attention(&qkv, &[1, 1, 0], &mut with_pad, shape, Vector::Baseline);
        // The same two tokens alone: the padded third may not change them.
        let mut alone = vec![0.0; 8];
        attention(
            &qkv[..24],
            &[1, 1],
            &mut alone,
            Heads { seq: 2, ..shape },
            Vector::Baseline,
        );
        for (a, b) in with_pad[..8].iter().zip(&alone) {
            assert!((a - b).abs() < 1e-6);
        }
        let (mut none, mut all) = (vec![0.0; 12], vec![0.0; 12]);
        attention(&qkv, &[0, 0, 0], &mut none, shape, Vector::Baseline);
        attention(&qkv, &[1, 1, 1], &mut all, shape, Vector::Baseline);
        assert_eq!(none, all);
    }

    #[test]
    fn avx512_attention_equals_the_baseline_on_ragged_shapes() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        for (seq, hidden, heads) in [(1, 16, 1), (17, 64, 2), (40, 48, 2), (33, 96, 3)] {
            let shape = Heads { seq, hidden, heads };
            let qkv: Vec<f32> = (0..seq * 3 * hidden)
                .map(|i| ((i * 37) % 101) as f32 / 25.0 - 2.0)
                .collect();
            let mask: Vec<i32> = (0..seq).map(|j| i32::from(j % 7 != 3)).collect();
            let (mut baseline, mut avx512) = (vec![0.0; seq * hidden], vec![0.0; seq * hidden]);
            attention(&qkv, &mask, &mut baseline, shape, Vector::Baseline);
            attention(&qkv, &mask, &mut avx512, shape, Vector::Avx512);
            for (a, b) in baseline.iter().zip(&avx512) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{shape:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn mean_pooling_averages_the_kept_tokens_and_cls_takes_the_first() {
        let tokens = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mut out = [0.0; 2];
        pool(&tokens, &[1, 1, 0], 2, Pooling::Mean, &mut out);
        assert_eq!(out, [2.0, 3.0]);
        pool(&tokens, &[1, 1, 0], 2, Pooling::Cls, &mut out);
        assert_eq!(out, [1.0, 2.0]);
        pool(&tokens, &[0, 0, 0], 2, Pooling::Mean, &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }
}
