//! AVX-512 VPOPCNTDQ kernels: eight (or sixteen) codes per block, their distances gathered into one zmm
//! and compared against the broadcast limit with one mask compare. The block leaves the vector loop only
//! when a code is within the limit, which after the first few blocks is rare.

use std::arch::x86_64::*;

use super::{scan_scalar, TopK};

/// Row (within the block) whose distance ends up in each lane, per layout.
const ORDER_IDENTITY: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
const ORDER_W2: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// Codes of 256 bits from which `scan_w4` prefetches ahead of itself: from here on they do not stay in
/// a core's L2 between lookups (1 MiB on the Zen 5 we measured, 2 MiB on the Xeon), and the prefetches
/// keep more lines in flight than the hardware prefetcher does. Measured on a 2-core AMD EPYC Zen 5, one
/// thread: the kernel 0.90x the time at 100k codes (3.2 MB, from L3) and 1M (32 MB, from memory), but
/// 1.36x at 10k (320 KB, in L2), where the prefetch instructions are pure overhead.
const PREFETCH_MIN_BYTES: usize = 1 << 20;
/// How far ahead `scan_w4` prefetches: four blocks of sixteen codes (2 KiB), into L1 (`prefetcht0`; the
/// non-temporal hint measured the same on the Zen 5, and 2x slower on the Xeon in an earlier round).
const PREFETCH_BLOCKS_AHEAD: usize = 4;

/// Scans `codes` (rows `base..`) into `top`.
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
pub(super) fn scan(codes: &[u64], words: usize, query: &[u64], base: usize, top: &mut TopK) {
    match words {
        1 => scan_w1(codes, query, base, top),
        2 => scan_w2(codes, query, base, top),
        4 if codes.len() * 8 >= PREFETCH_MIN_BYTES => scan_w4::<true>(codes, query, base, top),
        4 => scan_w4::<false>(codes, query, base, top),
        8 => scan_w8m::<1, 64>(codes, query, base, top),
        16 => scan_w8m::<2, 128>(codes, query, base, top),
        _ => scan_scalar(codes, words, query, base, top),
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load(v: &[u64; 8]) -> __m512i {
    // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// The query repeated to fill a zmm (`words` must divide 8).
#[inline]
#[target_feature(enable = "avx512f")]
fn query_vector(query: &[u64]) -> __m512i {
    let q: [u64; 8] = std::array::from_fn(|i| query[i % query.len()]);
    load(&q)
}

#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn popcnt_xor(v: &[u64; 8], q: __m512i) -> __m512i {
    _mm512_popcnt_epi64(_mm512_xor_si512(load(v), q))
}

/// Per 128-bit lane j: `[a[2j] + a[2j+1], b[2j] + b[2j+1]]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_sums(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
}

/// 128-bit lanes `[a.0 + a.1, a.2 + a.3, b.0 + b.1, b.2 + b.3]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane_sums(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi64(
        _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
    )
}

/// Hands a block with candidates (`mask != 0`) to `top`; returns the new broadcast limit, `None` to stop.
#[inline]
#[target_feature(enable = "avx512f")]
fn flush(top: &mut TopK, d: __m512i, mask: u8, order: &[usize; 8], row: usize) -> Option<__m512i> {
    let mut dists = [0u64; 8];
    // SAFETY: `dists` is 64 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(dists.as_mut_ptr().cast(), d) };
    let limit = top.offer_block(&dists, order, u32::from(mask), row)?;
    Some(_mm512_set1_epi64(i64::from(limit)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
fn scan_w1(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    let q = query_vector(query);
    let (blocks, tail) = codes.as_chunks::<8>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm512_set1_epi64(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let d = popcnt_xor(blk, q);
        let mask = _mm512_cmple_epu64_mask(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_IDENTITY, base + b * 8) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 1, query, base + blocks.len() * 8, top);
}

#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
fn scan_w2(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    let q = query_vector(query);
    let (blocks, tail) = codes.as_chunks::<16>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm512_set1_epi64(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let (v, _) = blk.as_chunks::<8>();
        let d = pair_sums(popcnt_xor(&v[0], q), popcnt_xor(&v[1], q));
        let mask = _mm512_cmple_epu64_mask(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_W2, base + b * 8) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 2, query, base + blocks.len() * 8, top);
}

/// Sixteen 256-bit codes per block, the hot path. Two codes per zmm; distances fit in 32 bits, so the
/// popcounts of two zmm are first interleaved into one (even dwords from one, odd from the other), which
/// halves the reduction work: all sixteen distances land in one zmm for one mask compare. With `PREFETCH`
/// (codes beyond [`PREFETCH_MIN_BYTES`]) it prefetches [`PREFETCH_BLOCKS_AHEAD`] blocks ahead.
#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
fn scan_w4<const PREFETCH: bool>(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    const ORDER: [usize; 16] = [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15];
    let q = query_vector(query);
    let (blocks, tail) = codes.as_chunks::<64>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm512_set1_epi32(limit as i32);
    for (b, blk) in blocks.iter().enumerate() {
        if PREFETCH {
            let ahead = blk
                .as_ptr()
                .wrapping_add(64 * PREFETCH_BLOCKS_AHEAD)
                .cast::<i8>();
            for line in 0..8 {
                // A prefetch never faults, and the address is formed with wrapping arithmetic, so
                // pointing past the codes is allowed.
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
        }
        let (v, _) = blk.as_chunks::<8>();
        let q01 = interleave32(popcnt_xor(&v[0], q), popcnt_xor(&v[1], q));
        let q23 = interleave32(popcnt_xor(&v[2], q), popcnt_xor(&v[3], q));
        let q45 = interleave32(popcnt_xor(&v[4], q), popcnt_xor(&v[5], q));
        let q67 = interleave32(popcnt_xor(&v[6], q), popcnt_xor(&v[7], q));
        // Dword lanes, by row: [0 2 4 6 | 1 3 5 7 | 8 10 12 14 | 9 11 13 15] (see `ORDER`).
        let d = lane_sums32(pair_sums32(q01, q23), pair_sums32(q45, q67));
        let mask = _mm512_cmple_epu32_mask(d, lim);
        if mask != 0 {
            let mut dists = [0u32; 16];
            // SAFETY: `dists` is 64 writable bytes; `storeu` has no alignment requirement.
            unsafe { _mm512_storeu_si512(dists.as_mut_ptr().cast(), d) };
            let Some(l) = top.offer_block(&dists, &ORDER, u32::from(mask), base + b * 16) else {
                return;
            };
            lim = _mm512_set1_epi32(l as i32);
        }
    }
    scan_scalar(tail, 4, query, base + blocks.len() * 16, top);
}

/// Even dwords from `a`, odd dwords from the low dword of each qword of `b`: two vectors of 64-bit popcounts
/// (each < 2^32) packed into one of 32-bit lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn interleave32(a: __m512i, b: __m512i) -> __m512i {
    _mm512_mask_shuffle_epi32::<0b10_11_00_01>(a, 0xAAAA, b)
}

/// `pair_sums` adding 32-bit lanes: per 128-bit lane j, qword `[a[2j] + a[2j+1], b[2j] + b[2j+1]]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_sums32(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
}

/// `lane_sums` adding 32-bit lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn lane_sums32(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
        _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
    )
}

/// Codes of `8 * M` words (`B = 64 * M`, the words of a block of 8 codes): each code is M zmm.
#[inline]
#[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
fn scan_w8m<const M: usize, const B: usize>(
    codes: &[u64],
    query: &[u64],
    base: usize,
    top: &mut TopK,
) {
    let (qs, _) = query.as_chunks::<8>();
    let q: [__m512i; M] = std::array::from_fn(|t| load(&qs[t]));
    let (blocks, tail) = codes.as_chunks::<B>();
    let Some(limit) = top.limit() else { return };
    let mut lim = _mm512_set1_epi64(i64::from(limit));
    for (b, blk) in blocks.iter().enumerate() {
        let (v, _) = blk.as_chunks::<8>();
        let p: [__m512i; 8] = std::array::from_fn(|c| {
            let mut acc = popcnt_xor(&v[c * M], q[0]);
            for t in 1..M {
                acc = _mm512_add_epi64(acc, popcnt_xor(&v[c * M + t], q[t]));
            }
            acc
        });
        let t0 = lane_sums(pair_sums(p[0], p[1]), pair_sums(p[2], p[3]));
        let t1 = lane_sums(pair_sums(p[4], p[5]), pair_sums(p[6], p[7]));
        let d = lane_sums(t0, t1);
        let mask = _mm512_cmple_epu64_mask(d, lim);
        if mask != 0 {
            let Some(l) = flush(top, d, mask, &ORDER_IDENTITY, base + b * 8) else {
                return;
            };
            lim = l;
        }
    }
    scan_scalar(tail, 8 * M, query, base + blocks.len() * 8, top);
}
