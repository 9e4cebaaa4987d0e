//! Which entry a full index evicts: LRU, LFU with ageing, SIEVE, or diversity-aware LRU.
//!
//! Every policy works on the index's one doubly linked list of entries (head = newest) and at most one
//! byte of state per handle, so the per-entry cost is 0 bytes (LRU) or 1 byte (the others):
//!
//! - `lru`: a hit moves the entry to the head; the tail is evicted.
//! - `lfu`: a hit adds one to a saturating counter and does not move the entry. To evict, a hand looks
//!   at the tail: an entry whose counter is 0 goes; any other has its counter halved (the ageing) and
//!   is moved to the head. At most `SCAN_LIMIT` entries are looked at; if all were used, the one with the
//!   lowest counter among them goes. A counted CLOCK (GCLOCK), the usual O(1) stand-in for LFU with ageing.
//! - `sieve`: SIEVE (Zhang et al., NSDI 2024). A hit sets a visited bit and does not move the entry;
//!   new entries go to the head. A hand walks from the tail towards the head, clearing visited bits,
//!   and evicts the first unvisited entry; it stays where it stopped for the next eviction.
//! - `diverse`: LRU order plus, per entry, the number of other entries of its namespace within the hit
//!   radius (saturating; kept exact by one scan on insert and one on removal of an entry that has
//!   neighbours). To evict, the `WINDOW` least recently used entries are looked at and the one with the
//!   most neighbours goes (the oldest on ties, so with no near-duplicates it is LRU): a near-duplicate
//!   of something kept is dropped before a unique entry.

use crate::error::{BscError, Result};
use crate::scan;

/// "No handle" (the index's NIL).
const NIL: u32 = 0x00FF_FFFF;
/// How many entries an `lfu` eviction looks at, at most.
const SCAN_LIMIT: usize = 32;
/// How many of the least recently used entries a `diverse` eviction chooses among.
const WINDOW: usize = 16;
/// Most neighbours one scan counts (the counter saturates anyway).
const MAX_NEIGHBOURS: usize = 64;
/// Neighbour counts are rebuilt when a policy is set on an index of at most this many entries (one scan
/// per entry); above it they start at zero and fill in as entries arrive.
pub const REBUILD_LIMIT: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    Lru,
    Lfu,
    Sieve,
    Diverse,
}

impl Policy {
    /// Every policy, in the order of their codes.
    pub const ALL: [Policy; 4] = [Policy::Lru, Policy::Lfu, Policy::Sieve, Policy::Diverse];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Lru => "lru",
            Policy::Lfu => "lfu",
            Policy::Sieve => "sieve",
            Policy::Diverse => "diverse",
        }
    }

    pub fn from_name(name: &str) -> Result<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                BscError::InvalidArgument(format!(
                    "eviction must be one of \"lru\", \"lfu\", \"sieve\", \"diverse\", got {name:?}"
                ))
            })
    }

    /// Bytes of policy state per entry.
    pub fn bytes_per_entry(self) -> usize {
        usize::from(self != Policy::Lru)
    }

    /// Whether a hit moves the entry to the head of the list (the recency-ordered policies).
    pub fn moves_on_touch(self) -> bool {
        matches!(self, Policy::Lru | Policy::Diverse)
    }

    /// Whether the policy keeps neighbour counts (and so needs a scan on insert and removal).
    pub fn counts_neighbours(self) -> bool {
        self == Policy::Diverse
    }
}

/// The index's list as a policy sees it: oldest entry, the next newer one, and a move to the head.
pub trait Queue {
    fn oldest(&self) -> u32;
    fn newer(&self, handle: u32) -> u32;
    fn to_head(&mut self, handle: u32);
}

/// A policy with its per-handle state.
#[derive(Debug, Default)]
pub struct Eviction {
    policy: Policy,
    /// Hamming radius within which two entries are neighbours (`diverse`).
    radius: u32,
    /// One byte per handle: counter (`lfu`), visited bit (`sieve`), neighbour count (`diverse`).
    state: Vec<u8>,
    /// SIEVE's hand: the next entry to look at, or NIL for the tail.
    hand: u32,
}

impl Eviction {
    pub fn new(policy: Policy, radius: u32, handles: usize) -> Self {
        let state = if policy == Policy::Lru {
            Vec::new()
        } else {
            vec![0; handles]
        };
        Self {
            policy,
            radius,
            state,
            hand: NIL,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn radius(&self) -> u32 {
        self.radius
    }

    pub fn bytes_allocated(&self) -> usize {
        self.state.capacity()
    }

    /// The neighbour count (`diverse`), counter (`lfu`) or visited bit (`sieve`) of a handle.
    pub fn state_of(&self, handle: u32) -> u8 {
        self.state.get(handle as usize).copied().unwrap_or(0)
    }

    /// A new entry took `handle`; `neighbours` are the other entries within the radius (`diverse` only).
    pub fn inserted(&mut self, handle: u32, neighbours: &[u32]) {
        if self.policy == Policy::Lru {
            return;
        }
        let h = handle as usize;
        if h >= self.state.len() {
            self.state.resize(h + 1, 0);
        }
        self.state[h] = 0;
        if self.policy.counts_neighbours() {
            self.state[h] = neighbours.len().min(255) as u8;
            for &n in neighbours {
                if let Some(c) = self.state.get_mut(n as usize) {
                    *c = c.saturating_add(1);
                }
            }
        }
    }

    /// Sets the neighbour count of `handle` (when rebuilding the counts of a loaded index).
    pub fn set_count(&mut self, handle: u32, neighbours: usize) {
        let h = handle as usize;
        if h >= self.state.len() {
            self.state.resize(h + 1, 0);
        }
        self.state[h] = neighbours.min(255) as u8;
    }

    /// Whether removing `handle` needs its neighbours (only a `diverse` entry that has some).
    pub fn needs_neighbours_on_removal(&self, handle: u32) -> bool {
        self.policy.counts_neighbours() && self.state_of(handle) > 0
    }

    /// `handle` is about to leave the list; `newer` is the entry after it towards the head.
    pub fn removing(&mut self, handle: u32, newer: u32, neighbours: &[u32]) {
        if self.hand == handle {
            self.hand = newer;
        }
        for &n in neighbours {
            if let Some(c) = self.state.get_mut(n as usize) {
                *c = c.saturating_sub(1);
            }
        }
        if let Some(c) = self.state.get_mut(handle as usize) {
            *c = 0;
        }
    }

    /// A hit on `handle`. Returns whether the index should move it to the head.
    pub fn touched(&mut self, handle: u32) -> bool {
        if let Some(c) = self.state.get_mut(handle as usize) {
            match self.policy {
                Policy::Lfu => *c = c.saturating_add(1),
                Policy::Sieve => *c = 1,
                Policy::Lru | Policy::Diverse => {}
            }
        }
        self.policy.moves_on_touch()
    }

    /// The handle to evict next, or None for an empty list. May reorder the list (`lfu`).
    pub fn victim(&mut self, queue: &mut impl Queue) -> Option<u32> {
        let oldest = queue.oldest();
        if oldest == NIL {
            return None;
        }
        Some(match self.policy {
            Policy::Lru => oldest,
            Policy::Lfu => self.lfu_victim(queue),
            Policy::Sieve => self.sieve_victim(queue),
            Policy::Diverse => self.diverse_victim(queue),
        })
    }

    fn lfu_victim(&mut self, queue: &mut impl Queue) -> u32 {
        let mut best = (u8::MAX, NIL);
        for _ in 0..SCAN_LIMIT {
            let h = queue.oldest();
            let count = self.state_of(h);
            if count == 0 {
                return h;
            }
            if count < best.0 || best.1 == NIL {
                best = (count, h);
            }
            self.state[h as usize] = count >> 1;
            queue.to_head(h);
        }
        best.1
    }

    fn sieve_victim(&mut self, queue: &mut impl Queue) -> u32 {
        let mut h = if self.hand == NIL {
            queue.oldest()
        } else {
            self.hand
        };
        // Terminates: one pass towards the head clears every visited bit it meets.
        loop {
            if h == NIL {
                h = queue.oldest();
            }
            if self.state_of(h) == 0 {
                self.hand = queue.newer(h);
                return h;
            }
            self.state[h as usize] = 0;
            h = queue.newer(h);
        }
    }

    fn diverse_victim(&self, queue: &impl Queue) -> u32 {
        let mut h = queue.oldest();
        let mut best = (self.state_of(h), h);
        for _ in 1..WINDOW {
            h = queue.newer(h);
            if h == NIL {
                break;
            }
            let count = self.state_of(h);
            if count > best.0 {
                best = (count, h);
            }
        }
        best.1
    }
}

/// Positions of the codes of `codes` (rows of `words` words) within `radius` of `query`, at most
/// `MAX_NEIGHBOURS`, `skip` excluded: what a `diverse` insert or removal counts.
pub fn neighbour_rows(
    codes: &[u64],
    words: usize,
    query: &[u64],
    radius: u32,
    skip: usize,
) -> Vec<usize> {
    scan::search(codes, words, query, MAX_NEIGHBOURS + 1, radius)
        .into_iter()
        .map(|n| n.index)
        .filter(|&row| row != skip)
        .take(MAX_NEIGHBOURS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain list of handles, oldest first.
    struct Fifo(Vec<u32>);

    impl Queue for Fifo {
        fn oldest(&self) -> u32 {
            self.0.first().copied().unwrap_or(NIL)
        }
        fn newer(&self, handle: u32) -> u32 {
            let i = self.0.iter().position(|&h| h == handle).unwrap();
            self.0.get(i + 1).copied().unwrap_or(NIL)
        }
        fn to_head(&mut self, handle: u32) {
            self.0.retain(|&h| h != handle);
            self.0.push(handle);
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.name()), Ok(p));
        }
        assert!(Policy::from_name("LRU").is_err());
        assert!(Policy::from_name("s3fifo").is_err());
    }

    #[test]
    fn sieve_keeps_visited_entries_and_its_hand() {
        let mut e = Eviction::new(Policy::Sieve, 0, 4);
        let mut q = Fifo(vec![0, 1, 2, 3]);
        assert!(!e.touched(0));
        e.touched(1);
        assert_eq!(e.victim(&mut q), Some(2));
        assert_eq!(e.state_of(0), 0, "the hand cleared what it passed");
        q.0.retain(|&h| h != 2);
        // The hand stays at 3; 3 is unvisited.
        assert_eq!(e.victim(&mut q), Some(3));
    }

    #[test]
    fn lfu_evicts_the_unused_and_ages_the_used() {
        let mut e = Eviction::new(Policy::Lfu, 0, 3);
        let mut q = Fifo(vec![0, 1, 2]);
        for _ in 0..4 {
            e.touched(0);
        }
        e.touched(1);
        assert_eq!(e.victim(&mut q), Some(2));
        assert_eq!(e.state_of(0), 2, "halved when passed");
        assert_eq!(e.state_of(1), 0);
        assert_eq!(q.0, vec![2, 0, 1]);
    }

    #[test]
    fn lfu_with_every_entry_used_evicts_the_least_used_it_saw() {
        let mut e = Eviction::new(Policy::Lfu, 0, 40);
        let mut q = Fifo((0..40).collect());
        for h in 0..40 {
            for _ in 0..(if h == 7 { 1 } else { 200 }) {
                e.touched(h);
            }
        }
        assert_eq!(e.victim(&mut q), Some(7));
    }

    #[test]
    fn diverse_prefers_the_most_redundant_of_the_oldest() {
        let mut e = Eviction::new(Policy::Diverse, 10, 20);
        for h in 0..20 {
            e.inserted(h, &[]);
        }
        let mut q = Fifo((0..20).collect());
        assert_eq!(e.victim(&mut q), Some(0), "no near-duplicates: LRU");
        e.inserted(5, &[3]);
        assert_eq!((e.state_of(5), e.state_of(3)), (1, 1));
        assert_eq!(e.victim(&mut q), Some(3), "oldest of the redundant ones");
        e.inserted(19, &[18]); // outside the window of the 16 oldest
        assert_eq!(e.victim(&mut q), Some(3));
        e.removing(3, 4, &[5]);
        assert_eq!(e.state_of(5), 0);
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;
    use crate::index::{EntryId, Index};

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 33
    }

    /// A random mix of inserts (codes from a few clusters), touches and deletes over two namespaces.
    fn churn(policy: Policy, seed: u64, cap: usize) -> (Index, Vec<EntryId>) {
        let mut ix = Index::new(1, cap, false).unwrap();
        ix.set_eviction(policy, 6);
        let mut s = seed;
        let mut live: Vec<EntryId> = Vec::new();
        for _ in 0..3000 {
            let op = lcg(&mut s) % 10;
            if op < 6 || live.is_empty() {
                let ns = if lcg(&mut s).is_multiple_of(4) {
                    "b"
                } else {
                    "a"
                };
                // Cluster centre plus a few flipped bits: many entries have neighbours within 6 bits.
                let centre = (lcg(&mut s) % 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let code = centre ^ (1u64 << (lcg(&mut s) % 64)) ^ (1u64 << (lcg(&mut s) % 64));
                let (id, evicted) = ix.insert(ns, &[code], f64::INFINITY).unwrap();
                live.retain(|&l| Some(l) != evicted);
                live.push(id);
            } else if op < 8 {
                let i = (lcg(&mut s) as usize) % live.len();
                assert!(ix.touch(live[i]));
            } else {
                let i = (lcg(&mut s) as usize) % live.len();
                assert!(ix.remove(live.swap_remove(i)));
            }
            assert!(ix.len() <= cap);
            assert_eq!(ix.len(), live.len());
        }
        (ix, live)
    }

    #[test]
    fn every_policy_keeps_the_capacity_and_a_consistent_list() {
        for policy in Policy::ALL {
            for seed in 0..5 {
                let (ix, live) = churn(policy, seed, 40);
                let mut order = ix.lru_order();
                order.sort_unstable();
                let mut expected = live.clone();
                expected.sort_unstable();
                assert_eq!(order, expected, "{policy:?}");
            }
        }
    }

    #[test]
    fn diverse_neighbour_counts_match_a_brute_force_count() {
        for seed in 0..5 {
            let (ix, live) = churn(Policy::Diverse, seed, 60);
            for &id in &live {
                let (ns, code, _) = ix.entry(id).unwrap();
                let others = live
                    .iter()
                    .filter(|&&o| o != id)
                    .filter_map(|&o| ix.entry(o))
                    .filter(|(ns2, c2, _)| *ns2 == ns && (c2[0] ^ code[0]).count_ones() <= 6)
                    .count();
                assert_eq!(ix.eviction_state(id), Some(others.min(255) as u8));
            }
            assert!(live.iter().any(|&id| ix.eviction_state(id) > Some(1)));
            // Rebuilding from scratch (as after a load) gives the same counts.
            let before: Vec<_> = live.iter().map(|&id| ix.eviction_state(id)).collect();
            let mut rebuilt = ix;
            rebuilt.set_eviction(Policy::Diverse, 6);
            let after: Vec<_> = live.iter().map(|&id| rebuilt.eviction_state(id)).collect();
            assert_eq!(before, after);
        }
    }

    #[test]
    fn policies_are_deterministic() {
        for policy in Policy::ALL {
            let (a, _) = churn(policy, 11, 30);
            let (b, _) = churn(policy, 11, 30);
            assert_eq!(a.lru_order(), b.lru_order(), "{policy:?}");
        }
    }

    #[test]
    fn diverse_evicts_a_near_duplicate_before_an_older_unique_entry() {
        let mut ix = Index::new(1, 3, false).unwrap();
        ix.set_eviction(Policy::Diverse, 2);
        let unique = ix.insert("n", &[0], f64::INFINITY).unwrap().0;
        let dup_a = ix.insert("n", &[u64::MAX], f64::INFINITY).unwrap().0;
        let dup_b = ix.insert("n", &[u64::MAX ^ 1], f64::INFINITY).unwrap().0;
        let (_, evicted) = ix.insert("n", &[0xFFFF_0000], f64::INFINITY).unwrap();
        assert_eq!(evicted, Some(dup_a), "the older of the two near-duplicates");
        assert!(ix.contains(unique) && ix.contains(dup_b));
        assert_eq!(ix.eviction_state(dup_b), Some(0), "its neighbour is gone");
        let mut lru = Index::new(1, 3, false).unwrap();
        let first = lru.insert("n", &[0], f64::INFINITY).unwrap().0;
        lru.insert("n", &[u64::MAX], f64::INFINITY).unwrap();
        lru.insert("n", &[u64::MAX ^ 1], f64::INFINITY).unwrap();
        assert_eq!(lru.insert("n", &[1], f64::INFINITY).unwrap().1, Some(first));
    }

    #[test]
    fn sieve_and_lfu_keep_a_hot_entry_through_a_scan() {
        for policy in [Policy::Sieve, Policy::Lfu] {
            let mut ix = Index::new(1, 8, false).unwrap();
            ix.set_eviction(policy, 0);
            let hot = ix.insert("n", &[7], f64::INFINITY).unwrap().0;
            for i in 0..100u64 {
                ix.touch(hot);
                ix.insert("n", &[1000 + i], f64::INFINITY).unwrap();
            }
            assert!(ix.contains(hot), "{policy:?}");
        }
    }
}
