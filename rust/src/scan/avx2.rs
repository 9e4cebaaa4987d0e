//! AVX2 kernels: four codes per block. AVX2 has no vector popcount, so bytes are counted with a nibble
//! lookup (`vpshufb`) and summed per 64-bit lane with `vpsadbw`, then the lanes of each code are added up.

use std::arch::x86_64::*;

use super::{scan_scalar, TopK};

const ORDER_IDENTITY: [usize; 4] = [0, 1, 2, 3];
const ORDER_W2: [usize; 4] = [0, 2, 1, 3];

/// Scans `codes` (rows `base..`) into `top`.
#[target_feature(enable = "avx2,popcnt")]
pub(super) fn scan(codes: &[u64], words: usize, query: &[u64], base: usize, top: &mut TopK) {
    match words {
        1 => scan_w1(codes, query, base, top),
        2 => scan_w2(codes, query, base, top),
        4 => scan_w4m::<1, 16>(codes, query, base, top),
        8 => scan_w4m::<2, 32>(codes, query, base, top),
        16 => scan_w4m::<4, 64>(codes, query, base, top),
        _ => scan_scalar(codes, words, query, base, top),
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load(v: &[u64; 4]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// The query repeated to fill a ymm (`words` must divide 4).
#[inline]
#[target_feature(enable = "avx2")]
fn query_vector(query: &[u64]) -> __m256i {
    let q: [u64; 4] = std::array::from_fn(|i| query[i % query.len()]);
    load(&q)
}

/// Popcount of each 64-bit lane of `v ^ q`.
#[inline]
#[target_feature(enable = "avx2")]
fn popcnt_xor(v: &[u64; 4], q: __m256i) -> __m256i {
    let x = _mm256_xor_si256(load(v), q);
    let lut = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
        3, 4,
    );
    let nibble = _mm256_set1_epi8(0x0f);
    let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, nibble));
    let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16::<4>(x), nibble));
    _mm256_sad_epu8(_mm256_add_epi8(lo, hi), _mm256_setzero_si256())
}

/// Per 128-bit lane j: `[a[2j] + a[2j+1], b[2j] + b[2j+1]]`.
#[inline]
#[target_feature(enable = "avx2")]
fn pair_sums(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
}

/// Bit l set iff lane l of `d` is `<= lim` (both hold small non-negative values, so a signed compare works).
#[inline]
#[target_feature(enable = "avx2")]
fn within(d: __m256i, lim: __m256i) -> u32 {
    let above = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(d, lim)));
    !(above as u32) & 0xF
}

/// Hands a block with candidates to `top`; returns the new broadcast limit, `None` to stop.
#[inline]
#[target_feature(enable = "avx2")]
fn flush(top: &mut TopK, d: __m256i, mask: u32, order: &[usize; 4], row: usize) -> Option<__m256i> {
    let mut dists = [0u64; 4];
    // SAFETY: `dists` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dists.as_mut_ptr().cast(), d) };
    let limit = top.offer_block(&dists, order, mask, row)?;
    Some(_mm256_set1_epi64x(i64::from(limit)))
}

#[inline]
#[target_feature(enable = "avx2,popcnt")]
fn scan_w1(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    let q = query_vector(query);
    let (blocks, tail) = codes.as_chunks::<4>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm256_set1_epi64x(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let d = popcnt_xor(blk, q);
        let mask = within(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_IDENTITY, base + b * 4) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 1, query, base + blocks.len() * 4, top);
}

#[inline]
#[target_feature(enable = "avx2,popcnt")]
fn scan_w2(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    let q = query_vector(query);
    let (blocks, tail) = codes.as_chunks::<8>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm256_set1_epi64x(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let (v, _) = blk.as_chunks::<4>();
        let d = pair_sums(popcnt_xor(&v[0], q), popcnt_xor(&v[1], q));
        let mask = within(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_W2, base + b * 4) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 2, query, base + blocks.len() * 4, top);
}

/// Codes of `4 * M` words (`B = 16 * M`, the words of a block of 4 codes): each code is M ymm.
#[inline]
#[target_feature(enable = "avx2,popcnt")]
fn scan_w4m<const M: usize, const B: usize>(
    codes: &[u64],
    query: &[u64],
    base: usize,
    top: &mut TopK,
) {
    let (qs, _) = query.as_chunks::<4>();
    let q: [__m256i; M] = std::array::from_fn(|t| load(&qs[t]));
    let (blocks, tail) = codes.as_chunks::<B>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm256_set1_epi64x(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let (v, _) = blk.as_chunks::<4>();
        let s: [__m256i; 4] = std::array::from_fn(|c| {
            let mut acc = popcnt_xor(&v[c * M], q[0]);
            for t in 1..M {
                acc = _mm256_add_epi64(acc, popcnt_xor(&v[c * M + t], q[t]));
            }
            acc
        });
        // u01 lanes: [c0 lo, c1 lo | c0 hi, c1 hi]; the two 128-bit halves then add to [c0, c1, c2, c3].
        let u01 = pair_sums(s[0], s[1]);
        let u23 = pair_sums(s[2], s[3]);
        let d = _mm256_add_epi64(
            _mm256_permute2x128_si256::<0x20>(u01, u23),
            _mm256_permute2x128_si256::<0x31>(u01, u23),
        );
        let mask = within(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_IDENTITY, base + b * 4) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 4 * M, query, base + blocks.len() * 4, top);
}
