//! Which entry a full index evicts: LRU, LFU with ageing, SIEVE, or the neighbourhood-aware `diverse`.
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
//! - `diverse`: SIEVE with two changes, both measured on the replay workloads (README, "Workloads and
//!   eviction"):
//!   1. *A protected newest window.* SIEVE's hand, evicting most of what it meets near the head, can stay
//!      just behind the newest entries: new entries then go before they are asked again while entries
//!      visited long ago sit behind the hand, which is why SIEVE loses to LRU when popularity drifts. Here
//!      the hand goes back to the tail whenever fewer than `PROTECTED_PERCENT` % of the entries are ahead
//!      of it, so a new entry always survives that many evictions.
//!   2. *Neighbourhood admission.* A new entry that has another entry of its namespace within the
//!      radius (the cache passes its hit radius) starts visited: its topic is being asked again in other
//!      words, so it gets the protection a hit would give. One scan of the namespace per insert; nothing
//!      to maintain on removal. (The shortlist radius, 47 bits at 0.90, measured the same.)
//!
//!   The first idea, evicting the entry with the most near-duplicates first, lowered hit rates in
//!   every form measured: a semantic cache stores a second entry near a first only when the first did not
//!   answer it, so the neighbours are paraphrases that extend a popular topic's reach, not redundancy.

use crate::error::{BscError, Result};
use crate::scan;

/// "No handle" (the index's NIL).
const NIL: u32 = 0x00FF_FFFF;
/// How many entries an `lfu` eviction looks at, at most.
const SCAN_LIMIT: usize = 32;
/// `diverse`: the share of the entries, newest first, that the hand never reaches (it goes back to the
/// tail first). Chosen from the replay sweep: 25 % still lost 2.5 % to LRU under drift at 20 % capacity,
/// 50 % gave up a third of the gain on the stationary workload. 45 % was tried against the extra false
/// hits under drift at 20 %: fewer on the seed it was tried on, as many on the held-out seed; not kept.
const PROTECTED_PERCENT: usize = 40;

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
        self == Policy::Lru
    }

    /// Whether a new entry's state depends on its having a neighbour (and so needs a scan on insert).
    pub fn admits_by_neighbour(self) -> bool {
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
    /// One byte per handle: counter (`lfu`), visited bit (`sieve`, `diverse`).
    state: Vec<u8>,
    /// SIEVE's hand: the next entry to look at, or NIL for the tail.
    hand: u32,
    /// Entries in the list.
    live: usize,
    /// Entries from the hand to the head, the hand's own included (`diverse`). Exact but for deletes of
    /// entries behind the hand, which are not told apart and make it smaller: the hand then goes back to
    /// the tail a little early, which only costs one pass.
    ahead: usize,
}

impl Eviction {
    /// A fresh policy for an index of `handles` slots holding `live` entries.
    pub fn new(policy: Policy, radius: u32, handles: usize, live: usize) -> Self {
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
            live,
            ahead: live,
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

    /// The counter (`lfu`) or visited bit (`sieve`, `diverse`) of a handle.
    pub fn state_of(&self, handle: u32) -> u8 {
        self.state.get(handle as usize).copied().unwrap_or(0)
    }

    /// A new entry took `handle` at the head; `has_neighbour`: another entry of its namespace lies within
    /// the radius (`diverse` only).
    pub fn inserted(&mut self, handle: u32, has_neighbour: bool) {
        self.live += 1;
        self.ahead += 1;
        if self.policy == Policy::Lru {
            return;
        }
        let h = handle as usize;
        if h >= self.state.len() {
            self.state.resize(h + 1, 0);
        }
        self.state[h] = u8::from(self.policy.admits_by_neighbour() && has_neighbour);
    }

    /// `handle` is about to leave the list; `newer` is the entry after it towards the head.
    pub fn removing(&mut self, handle: u32, newer: u32) {
        self.live = self.live.saturating_sub(1);
        if self.hand == handle {
            self.hand = newer;
            self.ahead = self.ahead.saturating_sub(1);
        }
        self.ahead = self.ahead.min(self.live);
        if let Some(c) = self.state.get_mut(handle as usize) {
            *c = 0;
        }
    }

    /// A hit on `handle`. Returns whether the index should move it to the head.
    pub fn touched(&mut self, handle: u32) -> bool {
        if let Some(c) = self.state.get_mut(handle as usize) {
            match self.policy {
                Policy::Lfu => *c = c.saturating_add(1),
                Policy::Sieve | Policy::Diverse => *c = 1,
                Policy::Lru => {}
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

    fn diverse_victim(&mut self, queue: &impl Queue) -> u32 {
        // Fewer than `live` ahead after a reset, so the loop ends within two passes: every visited bit
        // it meets is cleared.
        let protected = self.live * PROTECTED_PERCENT / 100;
        loop {
            if self.hand == NIL || self.ahead <= protected {
                self.hand = queue.oldest();
                self.ahead = self.live;
            }
            let h = self.hand;
            if self.state_of(h) == 0 {
                return h;
            }
            self.state[h as usize] = 0;
            self.hand = queue.newer(h);
            self.ahead = self.ahead.saturating_sub(1);
        }
    }
}

/// Whether a code of `codes` (rows of `words` words) other than row `skip` lies within `radius` of
/// `query`: what a `diverse` insert asks.
pub fn has_neighbour(codes: &[u64], words: usize, query: &[u64], radius: u32, skip: usize) -> bool {
    scan::search(codes, words, query, 2, radius)
        .iter()
        .any(|n| n.index != skip)
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
        let mut e = Eviction::new(Policy::Sieve, 0, 4, 4);
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
        let mut e = Eviction::new(Policy::Lfu, 0, 3, 3);
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
        let mut e = Eviction::new(Policy::Lfu, 0, 40, 40);
        let mut q = Fifo((0..40).collect());
        for h in 0..40 {
            for _ in 0..(if h == 7 { 1 } else { 200 }) {
                e.touched(h);
            }
        }
        assert_eq!(e.victim(&mut q), Some(7));
    }

    #[test]
    fn diverse_never_reaches_the_newest_window_where_sieve_would_evict() {
        // Ten entries, the eight oldest visited: SIEVE clears them all and evicts 8, the newest but one.
        // `diverse` goes back to the tail once only 40 % (4) are ahead, and evicts 0 (cleared on the way).
        let mut sieve = Eviction::new(Policy::Sieve, 0, 10, 10);
        let mut diverse = Eviction::new(Policy::Diverse, 0, 10, 0);
        for h in 0..10 {
            diverse.inserted(h, false);
        }
        for h in 0..8 {
            sieve.touched(h);
            assert!(!diverse.touched(h), "a hit does not move the entry");
        }
        assert_eq!(sieve.victim(&mut Fifo((0..10).collect())), Some(8));
        assert_eq!(diverse.victim(&mut Fifo((0..10).collect())), Some(0));
        assert_eq!(diverse.state_of(6), 1, "the hand stopped before the window");
    }

    #[test]
    fn diverse_admits_an_entry_with_a_neighbour_as_visited() {
        let mut e = Eviction::new(Policy::Diverse, 4, 3, 0);
        e.inserted(0, false);
        e.inserted(1, true);
        e.inserted(2, false);
        assert_eq!((e.state_of(0), e.state_of(1), e.state_of(2)), (0, 1, 0));
        let mut sieve = Eviction::new(Policy::Sieve, 4, 1, 0);
        sieve.inserted(0, true);
        assert_eq!(sieve.state_of(0), 0, "only diverse looks at neighbours");
    }

    #[test]
    fn diverse_ends_within_two_passes_when_every_entry_is_visited() {
        for n in 1..12u32 {
            let mut e = Eviction::new(Policy::Diverse, 0, n as usize, 0);
            for h in 0..n {
                e.inserted(h, true);
            }
            let victim = e.victim(&mut Fifo((0..n).collect()));
            assert_eq!(victim, Some(0), "{n} entries");
        }
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
    fn diverse_admission_matches_a_brute_force_neighbour_check() {
        let mut ix = Index::new(1, 50, false).unwrap();
        ix.set_eviction(Policy::Diverse, 6);
        let mut s = 7;
        let mut admitted = 0;
        for _ in 0..2000 {
            let ns = if lcg(&mut s).is_multiple_of(3) {
                "b"
            } else {
                "a"
            };
            let centre = (lcg(&mut s) % 16).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let code = centre ^ (1u64 << (lcg(&mut s) % 64)) ^ (1u64 << (lcg(&mut s) % 64));
            let before = ix.lru_order();
            let (id, evicted) = ix.insert(ns, &[code], f64::INFINITY).unwrap();
            let expected = before
                .iter()
                .filter(|&&o| Some(o) != evicted)
                .filter_map(|&o| ix.entry(o))
                .any(|(ns2, c2, _)| ns2 == ns && (c2[0] ^ code).count_ones() <= 6);
            assert_eq!(ix.eviction_state(id), Some(u8::from(expected)));
            admitted += usize::from(expected);
        }
        assert!(
            admitted > 100 && admitted < 1900,
            "both cases seen: {admitted}"
        );
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
    fn sieve_lfu_and_diverse_keep_a_hot_entry_through_a_scan() {
        for policy in [Policy::Sieve, Policy::Lfu, Policy::Diverse] {
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
