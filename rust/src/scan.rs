//! Exhaustive Hamming search over packed codes: one query against every row, the `k` nearest kept.
//!
//! One fused pass: the kernel computes a block of distances, compares them all against a running limit
//! (the current k-th best distance, starting at `max_distance`) and only leaves the vector loop for the
//! rare block that holds a candidate. So k = 1 costs what computing the distances costs; each candidate
//! block costs a mispredicted branch, which at 100k codes of 256 bits adds ~10% for k = 10, ~30% for k = 32.
//!
//! The kernel is chosen at run time (AVX-512 VPOPCNTDQ → AVX2 → `popcnt` → portable scalar), never at
//! build time, so one binary runs on every x86-64 machine. The `BSC_SIMD` environment variable (read once)
//! may force a lower level, to exercise the fallbacks. Large scans are split over the `parallel` pool.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::parallel;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// One search result: the row of the code and its Hamming distance to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbor {
    pub distance: u32,
    pub index: usize,
}

/// A kernel family, from the portable one up. Ordered: a higher level needs more CPU features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `u64::count_ones` compiled for baseline x86-64 (a bit-trick popcount) or any other target.
    Scalar,
    /// The same loop compiled with the `popcnt` instruction.
    Popcnt,
    /// Byte-lookup popcount (`vpshufb`) and `vpsadbw` over 256-bit vectors.
    Avx2,
    /// `vpopcntq` over 512-bit vectors, eight or sixteen codes per mask compare.
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Popcnt, Level::Avx2, Level::Avx512];

    /// The name used by `BSC_SIMD` and `cpu_features()`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Popcnt => "popcnt",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The level called `name` (case-insensitive), if any.
    pub fn from_name(name: &str) -> Option<Level> {
        let name = name.trim();
        Level::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// Whether this CPU can run the level's kernel.
    pub fn is_available(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Popcnt => is_x86_feature_detected!("popcnt"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("popcnt"),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vpopcntdq")
                    && is_x86_feature_detected!("popcnt")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// The levels this CPU can run, lowest first (always starts with `Scalar`).
pub fn available_levels() -> Vec<Level> {
    Level::ALL
        .into_iter()
        .filter(|l| l.is_available())
        .collect()
}

/// The highest available level not above `wanted`.
fn clamp_level(wanted: Level) -> Level {
    Level::ALL
        .into_iter()
        .rev()
        .find(|l| *l <= wanted && l.is_available())
        .unwrap_or(Level::Scalar)
}

/// The level `search` uses: the best one available, or a lower one named by `BSC_SIMD` (read once; an
/// unknown name is ignored, a level above what the CPU has is clamped down).
pub fn selected_level() -> Level {
    // Cached in an atomic rather than a `OnceLock`: a thread never waits for another's initialisation,
    // which a process forked in the middle of it would do forever. Two threads may both compute it once;
    // they get the same answer.
    static SELECTED: AtomicU8 = AtomicU8::new(UNSELECTED);
    if let Some(level) = Level::ALL.get(usize::from(SELECTED.load(Ordering::Relaxed))) {
        return *level;
    }
    let wanted = std::env::var("BSC_SIMD")
        .ok()
        .and_then(|v| Level::from_name(&v))
        .unwrap_or(Level::Avx512);
    let level = clamp_level(wanted);
    let index = Level::ALL.iter().position(|l| *l == level).unwrap_or(0);
    SELECTED.store(index as u8, Ordering::Relaxed);
    level
}

/// `selected_level`'s "not chosen yet" (no index of `Level::ALL`).
const UNSELECTED: u8 = u8::MAX;

/// Scans of at least this many bytes of codes (48 MiB, ~1.6M codes of 256 bits) are split over the rayon
/// pool when it has more than one thread. Handing a part to a worker costs a thread wake-up and the scan is
/// bound by memory bandwidth, so a second thread only pays off on scans large enough to hide both. The
/// cutoff is the smallest size at which splitting stopped losing on a busy 2-core machine; on an idle one
/// the break-even may be lower. `benchmarks/bench_scan.py` measures the split scan (its 2-thread row);
/// figures and machine are in its output and the README, not here.
pub const PARALLEL_MIN_BYTES: usize = 48 << 20;

/// The `k` codes nearest to `query` among rows of `codes` (`words` u64 per row) within `max_distance`,
/// sorted by (distance, index).
///
/// Uses [`selected_level`] and splits scans of [`PARALLEL_MIN_BYTES`] or more over the `parallel` pool; the result
/// is the same either way.
///
/// # Panics
/// If `words` is 0, `query.len() != words` or `codes.len()` is not a multiple of `words`.
pub fn search(
    codes: &[u64],
    words: usize,
    query: &[u64],
    k: usize,
    max_distance: u32,
) -> Vec<Neighbor> {
    let level = selected_level();
    let threads = parallel::threads();
    if threads > 1 && std::mem::size_of_val(codes) >= PARALLEL_MIN_BYTES {
        search_split(level, codes, words, query, k, max_distance, threads)
    } else {
        search_with(level, codes, words, query, k, max_distance)
    }
}

/// [`search`] on the calling thread with the kernel of `level` (or the highest available level below it).
///
/// # Panics
/// As [`search`].
pub fn search_with(
    level: Level,
    codes: &[u64],
    words: usize,
    query: &[u64],
    k: usize,
    max_distance: u32,
) -> Vec<Neighbor> {
    check_shapes(codes, words, query);
    let n = codes.len() / words;
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let mut top = TopK::new(k, max_distance, n);
    scan_rows(clamp_level(level), codes, words, query, 0, &mut top);
    top.into_sorted()
}

/// [`search_with`] with the rows cut into `parts` contiguous ranges scanned as pool tasks, then merged.
/// Gives exactly the single-threaded result: each range keeps its own k best by (distance, index), and the
/// global k best are among them.
///
/// # Panics
/// As [`search`].
pub fn search_split(
    level: Level,
    codes: &[u64],
    words: usize,
    query: &[u64],
    k: usize,
    max_distance: u32,
    parts: usize,
) -> Vec<Neighbor> {
    check_shapes(codes, words, query);
    let n = codes.len() / words;
    if k == 0 || n == 0 {
        return Vec::new();
    }
    let level = clamp_level(level);
    // Whole SIMD blocks (at most 16 rows) per part, so only the last part has a scalar tail.
    let rows_per_part = n.div_ceil(parts.max(1)).next_multiple_of(16);
    let scan_part = |p: usize, chunk: &[u64]| {
        let mut top = TopK::new(k, max_distance, chunk.len() / words);
        scan_rows(level, chunk, words, query, p * rows_per_part, &mut top);
        top.into_sorted()
    };
    let chunks: Vec<&[u64]> = codes.chunks(rows_per_part * words).collect();
    let mut parts: Vec<Vec<Neighbor>> = vec![Vec::new(); chunks.len()];
    // The calling thread scans the first part itself and hands only the others to the pool: one wake-up fewer
    // than `par_iter`, which from a non-pool thread (Python's) parks the caller and wakes every worker.
    // Without a pool (one thread, or a forked child) the parts run one after the other: same result.
    match parallel::pool() {
        Some(pool) => pool.in_place_scope(|s| {
            let mut jobs = parts.iter_mut().zip(&chunks).enumerate();
            let first = jobs.next();
            for (p, (slot, chunk)) in jobs {
                s.spawn(move |_| *slot = scan_part(p, chunk));
            }
            if let Some((p, (slot, chunk))) = first {
                *slot = scan_part(p, chunk);
            }
        }),
        None => {
            for (p, (slot, chunk)) in parts.iter_mut().zip(&chunks).enumerate() {
                *slot = scan_part(p, chunk);
            }
        }
    }
    let mut all: Vec<Neighbor> = parts.into_iter().flatten().collect();
    all.sort_unstable();
    all.truncate(k);
    all
}

fn check_shapes(codes: &[u64], words: usize, query: &[u64]) {
    assert!(words > 0, "words must be positive");
    assert_eq!(query.len(), words, "query must have `words` u64s");
    assert_eq!(
        codes.len() % words,
        0,
        "codes must hold whole rows of `words` u64s"
    );
}

/// Scans `codes` (rows `base..`) into `top` with the kernel of `level`, which must be available.
fn scan_rows(
    level: Level,
    codes: &[u64],
    words: usize,
    query: &[u64],
    base: usize,
    top: &mut TopK,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => {
            // SAFETY: callers pass only levels that passed `clamp_level`, which checks `is_available`, i.e.
            // that the CPU has avx512f, avx512vpopcntdq and popcnt, the features `avx512::scan` is built for.
            unsafe { avx512::scan(codes, words, query, base, top) }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            // SAFETY: as above, the CPU has avx2 and popcnt (checked by `clamp_level` → `is_available`).
            unsafe { avx2::scan(codes, words, query, base, top) }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Popcnt => {
            // SAFETY: as above, the CPU has popcnt (checked by `clamp_level` → `is_available`).
            unsafe { scan_popcnt(codes, words, query, base, top) }
        }
        _ => scan_scalar(codes, words, query, base, top),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn scan_popcnt(codes: &[u64], words: usize, query: &[u64], base: usize, top: &mut TopK) {
    scan_scalar(codes, words, query, base, top);
}

/// The portable kernel; `#[inline(always)]` so that inside a `#[target_feature]` function (the `popcnt`
/// level, the SIMD levels' tails) `count_ones` compiles to the `popcnt` instruction.
#[inline(always)]
fn scan_scalar(codes: &[u64], words: usize, query: &[u64], base: usize, top: &mut TopK) {
    match words {
        1 => scan_scalar_fixed::<1>(codes, query, base, top),
        2 => scan_scalar_fixed::<2>(codes, query, base, top),
        4 => scan_scalar_fixed::<4>(codes, query, base, top),
        8 => scan_scalar_fixed::<8>(codes, query, base, top),
        16 => scan_scalar_fixed::<16>(codes, query, base, top),
        _ => {
            let Some(mut limit) = top.limit() else { return };
            for (i, row) in codes.chunks_exact(words).enumerate() {
                let d: u32 = row
                    .iter()
                    .zip(query)
                    .map(|(a, b)| (a ^ b).count_ones())
                    .sum();
                if d <= limit {
                    top.offer(d, base + i);
                    let Some(l) = top.limit() else { return };
                    limit = l;
                }
            }
        }
    }
}

#[inline(always)]
fn scan_scalar_fixed<const W: usize>(codes: &[u64], query: &[u64], base: usize, top: &mut TopK) {
    let Ok(q) = <&[u64; W]>::try_from(query) else {
        return;
    };
    let (rows, _) = codes.as_chunks::<W>();
    let Some(mut limit) = top.limit() else { return };
    for (i, row) in rows.iter().enumerate() {
        let mut d = 0;
        for w in 0..W {
            d += (row[w] ^ q[w]).count_ones();
        }
        if d <= limit {
            top.offer(d, base + i);
            let Some(l) = top.limit() else { return };
            limit = l;
        }
    }
}

/// The `k` best (distance, index) pairs seen so far, as a max-heap whose top is the one to evict next.
struct TopK {
    k: usize,
    max_distance: u32,
    heap: BinaryHeap<Neighbor>,
}

impl TopK {
    fn new(k: usize, max_distance: u32, rows: usize) -> Self {
        // Bounded pre-allocation: k may be huge (k > n is allowed) and most rows may be out of range.
        let heap = BinaryHeap::with_capacity(k.min(rows).min(1024));
        TopK {
            k,
            max_distance,
            heap,
        }
    }

    /// The largest distance a row scanned *after* every row offered so far could enter with (`d <= limit`),
    /// or `None` when none can (k rows at distance 0 already). Later rows have higher indices, so when the
    /// heap is full they must be strictly closer than the current k-th best.
    #[inline(always)]
    fn limit(&self) -> Option<u32> {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.k => worst.distance.checked_sub(1),
            _ => Some(self.max_distance),
        }
    }

    /// Keeps row `index` at `distance` if it is among the k best by (distance, index). Rows may be offered in
    /// any order within a block, as long as rows not offered are beyond the `limit()` seen before the block.
    #[inline]
    fn offer(&mut self, distance: u32, index: usize) {
        let cand = Neighbor { distance, index };
        if self.heap.len() < self.k {
            if distance <= self.max_distance {
                self.heap.push(cand);
            }
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if cand < *worst {
                *worst = cand;
            }
        }
    }

    /// Offers the candidates of one SIMD block: lane `l` of `dists` is the distance of row
    /// `base + order[l]`, and bit `l` of `mask` says whether it is within the limit. Returns the new limit.
    #[cold]
    #[inline(never)]
    fn offer_block<D: Copy + Into<u64>>(
        &mut self,
        dists: &[D],
        order: &[usize],
        mut mask: u32,
        base: usize,
    ) -> Option<u32> {
        while mask != 0 {
            let lane = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            // Lanes hold popcounts of at most `words * 64` bits, so the narrowing is exact.
            self.offer(dists[lane].into() as u32, base + order[lane]);
        }
        self.limit()
    }

    fn into_sorted(self) -> Vec<Neighbor> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: every distance, filter, sort, cut.
    fn reference(
        codes: &[u64],
        words: usize,
        query: &[u64],
        k: usize,
        max_distance: u32,
    ) -> Vec<Neighbor> {
        let mut out: Vec<Neighbor> = codes
            .chunks_exact(words)
            .enumerate()
            .map(|(index, c)| Neighbor {
                distance: c.iter().zip(query).map(|(a, b)| (a ^ b).count_ones()).sum(),
                index,
            })
            .filter(|n| n.distance <= max_distance)
            .collect();
        out.sort_unstable();
        out.truncate(k);
        out
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const WORDS: [usize; 5] = [1, 2, 4, 8, 16];

    /// Codes of several shapes: uniform, near the query (many candidates, many heap updates, decreasing
    /// distances), a few distinct codes repeated (ties), all equal to the query (distance 0 everywhere).
    fn datasets(rng: &mut Rng, n: usize, words: usize) -> Vec<(Vec<u64>, Vec<u64>)> {
        let query: Vec<u64> = (0..words).map(|_| rng.next()).collect();
        let uniform: Vec<u64> = (0..n * words).map(|_| rng.next()).collect();
        let near: Vec<u64> = (0..n * words)
            .map(|i| {
                let flips = rng.below(4);
                let mut v = query[i % words];
                for _ in 0..flips {
                    v ^= 1 << rng.below(64);
                }
                v
            })
            .collect();
        let pool: Vec<Vec<u64>> = (0..3)
            .map(|_| (0..words).map(|_| rng.next()).collect())
            .collect();
        let dups: Vec<u64> = (0..n).flat_map(|_| pool[rng.below(3)].clone()).collect();
        let same: Vec<u64> = (0..n).flat_map(|_| query.clone()).collect();
        let descending: Vec<u64> = (0..n)
            .flat_map(|i| {
                // Row i differs from the query in fewer bits as i grows: every row improves the best.
                let flip = (words * 64).saturating_sub(i).min(words * 64);
                (0..words).map(move |w| {
                    let lo = w * 64;
                    let bits = flip.saturating_sub(lo).min(64);
                    if bits == 64 {
                        u64::MAX
                    } else {
                        (1u64 << bits) - 1
                    }
                })
            })
            .zip(query.iter().cycle())
            .map(|(m, q)| m ^ q)
            .collect();
        vec![
            (uniform, query.clone()),
            (near, query.clone()),
            (dups, query.clone()),
            (same, query.clone()),
            (descending, query),
        ]
    }

    fn check_all_levels(codes: &[u64], words: usize, query: &[u64], k: usize, max_distance: u32) {
        let want = reference(codes, words, query, k, max_distance);
        for level in available_levels() {
            let got = search_with(level, codes, words, query, k, max_distance);
            assert_eq!(
                got,
                want,
                "level {level:?} words {words} n {} k {k} max {max_distance}",
                codes.len() / words
            );
        }
    }

    #[test]
    fn scalar_is_always_available_and_first() {
        let levels = available_levels();
        assert_eq!(levels.first(), Some(&Level::Scalar));
        assert!(levels.contains(&selected_level()));
    }

    #[test]
    fn level_names_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
            assert_eq!(Level::from_name(&l.name().to_uppercase()), Some(l));
        }
        assert_eq!(Level::from_name("sse9"), None);
    }

    #[test]
    fn every_level_equals_reference_on_small_n_edge_cases() {
        let mut rng = Rng(7);
        for words in WORDS {
            let bits = (words * 64) as u32;
            for n in 0..=67 {
                for (codes, query) in datasets(&mut rng, n, words) {
                    for k in [0, 1, 5, n + 3] {
                        for max_distance in [0, 1, bits / 2, bits - 1, bits, u32::MAX] {
                            check_all_levels(&codes, words, &query, k, max_distance);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_level_equals_reference_on_random_sizes() {
        let mut rng = Rng(11);
        for _ in 0..40 {
            let words = WORDS[rng.below(WORDS.len())];
            let n = 68 + rng.below(3000);
            let bits = (words * 64) as u32;
            for (codes, query) in datasets(&mut rng, n, words) {
                for k in [1, 2, 10, 32, 100, n + 3] {
                    let max_distance =
                        [bits, bits / 2 - 4, rng.below(bits as usize + 1) as u32][rng.below(3)];
                    check_all_levels(&codes, words, &query, k, max_distance);
                }
            }
        }
    }

    #[test]
    fn large_scans_equal_reference() {
        // 40,000 codes of 256 bits (1.25 MiB): past the size from which the AVX-512 kernel prefetches.
        let mut rng = Rng(17);
        for (codes, query) in datasets(&mut rng, 40_000, 4) {
            for k in [1, 10] {
                check_all_levels(&codes, 4, &query, k, 256);
                check_all_levels(&codes, 4, &query, k, 100);
            }
        }
    }

    #[test]
    fn other_word_counts_fall_back_correctly() {
        let mut rng = Rng(3);
        for words in [3, 5, 6, 12, 24, 32] {
            for n in [0, 1, 7, 8, 9, 100, 1001] {
                for (codes, query) in datasets(&mut rng, n, words) {
                    for k in [1, 5, n + 3] {
                        check_all_levels(&codes, words, &query, k, (words * 64) as u32);
                        check_all_levels(&codes, words, &query, k, (words * 16) as u32);
                    }
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let words = 4;
        let codes: Vec<u64> = (0..100).flat_map(|_| [1u64, 2, 3, 4]).collect();
        for level in available_levels() {
            let got = search_with(level, &codes, words, &[1, 2, 3, 5], 3, 256);
            let want: Vec<Neighbor> = (0..3)
                .map(|index| Neighbor { distance: 1, index })
                .collect();
            assert_eq!(got, want, "{level:?}");
        }
    }

    #[test]
    fn split_scan_equals_single_scan() {
        let mut rng = Rng(5);
        for words in WORDS {
            for n in [0, 1, 9, 64, 65, 1000, 4099] {
                for (codes, query) in datasets(&mut rng, n, words) {
                    for k in [0, 1, 7, n + 3] {
                        for max_distance in [0, (words * 16) as u32, (words * 64) as u32] {
                            let want = reference(&codes, words, &query, k, max_distance);
                            for parts in [1, 2, 3, 7] {
                                let got = search_split(
                                    selected_level(),
                                    &codes,
                                    words,
                                    &query,
                                    k,
                                    max_distance,
                                    parts,
                                );
                                assert_eq!(got, want, "words {words} n {n} k {k} parts {parts}");
                            }
                            assert_eq!(search(&codes, words, &query, k, max_distance), want);
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "query must have")]
    fn wrong_query_length_panics() {
        search_with(Level::Scalar, &[0; 8], 4, &[0; 3], 1, 256);
    }
}
