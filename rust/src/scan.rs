//! Exhaustive Hamming search over packed codes. (Placeholder scalar version; the SIMD kernels replace it.)

/// One search result: the row of the code and its Hamming distance to the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbor {
    pub distance: u32,
    pub index: usize,
}

/// The `k` codes nearest to `query` among rows of `codes` (`words` u64 per row) within `max_distance`,
/// sorted by (distance, index).
pub fn search(codes: &[u64], words: usize, query: &[u64], k: usize, max_distance: u32) -> Vec<Neighbor> {
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
