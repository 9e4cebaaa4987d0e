//! The code store behind `BinarySemanticCache`: namespaces, exact LRU, optional expiry, in 52 bytes an entry.
//!
//! Each namespace keeps its codes contiguous (a lookup scans only its own namespace), and a delete moves
//! the namespace's last code into the hole, so there are never dead slots to shadow a live match. Entries
//! are addressed through stable *handles* (slab indices, reused after delete) and exposed as 64-bit ids that
//! add a 40-bit generation, so an id held after its entry went away does not name a later occupant of its
//! slot (that would take 2^40 reuses of the one slot, ~12 days at a million inserts a second into it).
//!
//! Per entry: the code (`8 * words` bytes), its id in the namespace (8), and three u32 fields per
//! handle — position, LRU prev, LRU next — 24 bits each, whose spare top bytes hold the 24-bit namespace
//! number. With 256-bit codes that is 32 + 8 + 12 = 52 bytes (plus 8 with expiry on). A free slot keeps its
//! next generation in its position and LRU-prev fields (48 bits), so the wide generation costs only the
//! 4 extra bytes of the id.

use std::collections::HashMap;

use crate::error::{BscError, Result};
use crate::eviction::{self, Eviction, Policy, Queue};
use crate::scan::{self, Neighbor};

/// Largest handle and position: 24 bits.
const MASK24: u32 = 0x00FF_FFFF;
/// "No handle" in LRU links and the free list.
const NIL: u32 = MASK24;
/// Most entries an index can hold (handles are 24-bit and NIL is reserved).
pub const MAX_ENTRIES: usize = MASK24 as usize;
/// Most namespaces alive at once.
pub const MAX_NAMESPACES: usize = MASK24 as usize - 1;

/// An entry id: handle in the low 24 bits, generation in the high 40.
pub type EntryId = u64;
/// Generations wrap after this many (a 40-bit counter per slot).
const GENERATION_MASK: u64 = (1 << 40) - 1;

#[inline]
fn handle_of(id: EntryId) -> u32 {
    (id & u64::from(MASK24)) as u32
}

#[inline]
fn generation_of(id: EntryId) -> u64 {
    id >> 24
}

#[inline]
fn make_id(handle: u32, generation: u64) -> EntryId {
    u64::from(handle) | ((generation & GENERATION_MASK) << 24)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: EntryId,
    pub distance: u32,
}

#[derive(Debug, Default)]
struct Space {
    name: String,
    codes: Vec<u64>,
    /// `handle | generation << 24` of the entry at each position.
    ids: Vec<EntryId>,
}

/// Per-handle fields: `[pos, prev, next]`, low 24 bits each; namespace bits 0-7, 8-15, 16-23 in their top bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Slot([u32; 3]);

impl Slot {
    fn field(&self, i: usize) -> u32 {
        self.0[i] & MASK24
    }
    fn set_field(&mut self, i: usize, v: u32) {
        self.0[i] = (self.0[i] & !MASK24) | (v & MASK24);
    }
    fn space(&self) -> u32 {
        (self.0[0] >> 24) | ((self.0[1] >> 24) << 8) | ((self.0[2] >> 24) << 16)
    }
    fn set_space(&mut self, ns: u32) {
        for (i, shift) in [(0, 0), (1, 8), (2, 16)] {
            self.0[i] = (self.0[i] & MASK24) | (((ns >> shift) & 0xFF) << 24);
        }
    }
    /// The next generation of a free slot: low 24 bits in POS, high 16 in PREV.
    fn free_generation(&self) -> u64 {
        u64::from(self.field(POS)) | (u64::from(self.field(PREV)) << 24)
    }
    fn set_free_generation(&mut self, generation: u64) {
        let generation = generation & GENERATION_MASK;
        self.set_field(POS, (generation & u64::from(MASK24)) as u32);
        self.set_field(PREV, (generation >> 24) as u32);
    }
}

const POS: usize = 0;
const PREV: usize = 1;
const NEXT: usize = 2;
/// Namespace mark of a free slot (never a real namespace number: those stay below MAX_NAMESPACES).
const FREE: u32 = MASK24;

#[derive(Debug)]
pub struct Index {
    words: usize,
    max_entries: usize,
    space_of: HashMap<String, u32>,
    spaces: Vec<Space>,
    free_spaces: Vec<u32>,
    slots: Vec<Slot>,
    /// Absolute expiry time per handle (same clock as the `now` arguments); empty when expiry is off.
    expires: Vec<f64>,
    with_expiry: bool,
    free_head: u32,
    /// Most recently used.
    lru_head: u32,
    /// Least recently used: the next eviction.
    lru_tail: u32,
    len: usize,
    /// Which entry goes when the index is full (LRU unless `set_eviction` chose another policy).
    eviction: Eviction,
}

impl Index {
    pub fn new(words: usize, max_entries: usize, with_expiry: bool) -> Result<Self> {
        if ![1, 2, 4, 8, 16].contains(&words) {
            return Err(BscError::InvalidArgument(format!(
                "words must be 1, 2, 4, 8 or 16, got {words}"
            )));
        }
        if max_entries == 0 || max_entries > MAX_ENTRIES {
            return Err(BscError::InvalidArgument(format!(
                "max_entries must be between 1 and {MAX_ENTRIES}, got {max_entries}"
            )));
        }
        Ok(Self {
            words,
            max_entries,
            space_of: HashMap::new(),
            spaces: Vec::new(),
            free_spaces: Vec::new(),
            slots: Vec::new(),
            expires: Vec::new(),
            with_expiry,
            free_head: NIL,
            lru_head: NIL,
            lru_tail: NIL,
            len: 0,
            eviction: Eviction::default(),
        })
    }

    /// Chooses the eviction policy; `radius` is the Hamming hit radius (`diverse` counts neighbours
    /// within it). Resets the policy's per-entry state; `diverse` rebuilds its neighbour counts when
    /// the index holds at most `eviction::REBUILD_LIMIT` entries (one scan per entry).
    pub fn set_eviction(&mut self, policy: Policy, radius: u32) {
        self.eviction = Eviction::new(policy, radius, self.slots.len());
        if policy.counts_neighbours() && self.len <= eviction::REBUILD_LIMIT {
            for space in 0..self.spaces.len() {
                for pos in 0..self.spaces[space].ids.len() {
                    let neighbours = self.neighbours(space, pos);
                    let h = handle_of(self.spaces[space].ids[pos]);
                    // Every entry is visited, so each sets only its own count.
                    self.eviction.set_count(h, neighbours.len());
                }
            }
        }
    }

    pub fn eviction(&self) -> Policy {
        self.eviction.policy()
    }

    /// The eviction policy's byte for a live entry (counter, visited bit or neighbour count).
    pub fn eviction_state(&self, id: EntryId) -> Option<u8> {
        self.contains(id)
            .then(|| self.eviction.state_of(handle_of(id)))
    }

    /// Handles of the entries of `space` within the eviction radius of the entry at `pos` (itself excluded).
    fn neighbours(&self, space: usize, pos: usize) -> Vec<u32> {
        let sp = &self.spaces[space];
        let code = &sp.codes[pos * self.words..(pos + 1) * self.words];
        eviction::neighbour_rows(&sp.codes, self.words, code, self.eviction.radius(), pos)
            .into_iter()
            .map(|row| handle_of(sp.ids[row]))
            .collect()
    }

    pub fn words(&self) -> usize {
        self.words
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn namespace_len(&self, namespace: &str) -> usize {
        self.space_of
            .get(namespace)
            .map_or(0, |&s| self.spaces[s as usize].ids.len())
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = self.space_of.keys().cloned().collect();
        names.sort();
        names
    }

    /// Bytes the live entries occupy: per entry, the code, its id and its slot (and expiry when on),
    /// plus the namespace names.
    pub fn bytes_in_use(&self) -> usize {
        let names: usize = self.spaces.iter().map(|s| s.name.len()).sum();
        let per_entry = self.words * 8
            + 8
            + 12
            + if self.with_expiry { 8 } else { 0 }
            + self.eviction.policy().bytes_per_entry();
        self.len * per_entry + names
    }

    /// Bytes allocated for the same structures, including growth headroom and free slots.
    pub fn bytes_allocated(&self) -> usize {
        let spaces: usize = self
            .spaces
            .iter()
            .map(|s| s.codes.capacity() * 8 + s.ids.capacity() * 8 + s.name.capacity())
            .sum();
        spaces
            + self.slots.capacity() * 12
            + self.expires.capacity() * 8
            + self.eviction.bytes_allocated()
    }

    fn check_code(&self, code: &[u64]) -> Result<()> {
        if code.len() != self.words {
            return Err(BscError::Shape(format!(
                "expected a code of {} uint64 words, got {}",
                self.words,
                code.len()
            )));
        }
        Ok(())
    }

    /// Stores `code` in `namespace`; when full, first evicts the entry the eviction policy chooses (returned).
    pub fn insert(
        &mut self,
        namespace: &str,
        code: &[u64],
        expires_at: f64,
    ) -> Result<(EntryId, Option<EntryId>)> {
        self.check_code(code)?;
        let evicted = if self.len >= self.max_entries {
            self.victim()
        } else {
            None
        };
        if let Some(old) = evicted {
            self.remove(old);
        }
        let space = match self.space_of.get(namespace) {
            Some(&s) => s,
            None => {
                if self.space_of.len() >= MAX_NAMESPACES {
                    return Err(BscError::InvalidArgument(format!(
                        "too many namespaces (at most {MAX_NAMESPACES} at once)"
                    )));
                }
                let s = match self.free_spaces.pop() {
                    Some(s) => s,
                    None => {
                        self.spaces.push(Space::default());
                        (self.spaces.len() - 1) as u32
                    }
                };
                self.spaces[s as usize].name = namespace.to_owned();
                self.space_of.insert(namespace.to_owned(), s);
                s
            }
        };
        let (handle, generation) = if self.free_head != NIL {
            let h = self.free_head;
            let free = self.slots[h as usize];
            self.free_head = free.field(NEXT);
            (h, free.free_generation())
        } else {
            self.slots.push(Slot::default());
            if self.with_expiry {
                self.expires.push(f64::INFINITY);
            }
            ((self.slots.len() - 1) as u32, 0)
        };
        let id = make_id(handle, generation);
        let sp = &mut self.spaces[space as usize];
        let pos = sp.ids.len() as u32;
        sp.codes.extend_from_slice(code);
        sp.ids.push(id);
        let slot = &mut self.slots[handle as usize];
        *slot = Slot::default();
        slot.set_field(POS, pos);
        slot.set_space(space);
        if self.with_expiry {
            self.expires[handle as usize] = expires_at;
        }
        self.link_front(handle);
        self.len += 1;
        let neighbours = if self.eviction.policy().counts_neighbours() {
            self.neighbours(space as usize, pos as usize)
        } else {
            Vec::new()
        };
        self.eviction.inserted(handle, &neighbours);
        Ok((id, evicted))
    }

    fn victim(&mut self) -> Option<EntryId> {
        // The policy walks (and, for LFU, reorders) the list, which the index owns.
        let mut policy = std::mem::take(&mut self.eviction);
        let victim = policy.victim(self);
        self.eviction = policy;
        victim.map(|h| self.id_of_handle(h))
    }

    fn id_of_handle(&self, h: u32) -> EntryId {
        let slot = &self.slots[h as usize];
        self.spaces[slot.space() as usize].ids[slot.field(POS) as usize]
    }

    /// Whether `id` names a live entry (a free handle carries the FREE namespace mark).
    pub fn contains(&self, id: EntryId) -> bool {
        let h = handle_of(id) as usize;
        h < self.slots.len() && self.slots[h].space() != FREE && self.id_of_handle(h as u32) == id
    }

    /// Deletes an entry; false if it was not there (already deleted, evicted, or a stale id).
    pub fn remove(&mut self, id: EntryId) -> bool {
        self.remove_with(id, true)
    }

    /// `remove`; `update_neighbours` false skips the `diverse` bookkeeping scan when the entry's whole
    /// namespace is going anyway.
    fn remove_with(&mut self, id: EntryId, update_neighbours: bool) -> bool {
        if !self.contains(id) {
            return false;
        }
        let h = handle_of(id);
        let slot = self.slots[h as usize];
        let (space, pos) = (slot.space() as usize, slot.field(POS) as usize);
        let neighbours = if update_neighbours && self.eviction.needs_neighbours_on_removal(h) {
            self.neighbours(space, pos)
        } else {
            Vec::new()
        };
        self.eviction.removing(h, slot.field(PREV), &neighbours);
        self.unlink(h);
        let words = self.words;
        let sp = &mut self.spaces[space];
        let last = sp.ids.len() - 1;
        if pos != last {
            sp.codes
                .copy_within(last * words..(last + 1) * words, pos * words);
            sp.ids[pos] = sp.ids[last];
            let moved = handle_of(sp.ids[pos]);
            self.slots[moved as usize].set_field(POS, pos as u32);
        }
        let sp = &mut self.spaces[space];
        sp.codes.truncate(last * words);
        sp.ids.truncate(last);
        if sp.ids.is_empty() {
            self.drop_space(space as u32);
        }
        // A free slot keeps the next generation in its POS and PREV fields and the free list in NEXT.
        let slot = &mut self.slots[h as usize];
        *slot = Slot::default();
        slot.set_space(FREE);
        slot.set_free_generation(generation_of(id) + 1);
        slot.set_field(NEXT, self.free_head);
        self.free_head = h;
        self.len -= 1;
        true
    }

    fn drop_space(&mut self, space: u32) {
        let sp = std::mem::take(&mut self.spaces[space as usize]);
        self.space_of.remove(&sp.name);
        self.free_spaces.push(space);
    }

    /// Marks an entry as just used (LRU). False if it is gone.
    pub fn touch(&mut self, id: EntryId) -> bool {
        if !self.contains(id) {
            return false;
        }
        let h = handle_of(id);
        if self.eviction.touched(h) && self.lru_head != h {
            self.unlink(h);
            self.link_front(h);
        }
        true
    }

    fn link_front(&mut self, h: u32) {
        let old = self.lru_head;
        self.slots[h as usize].set_field(PREV, NIL);
        self.slots[h as usize].set_field(NEXT, old);
        if old != NIL {
            self.slots[old as usize].set_field(PREV, h);
        } else {
            self.lru_tail = h;
        }
        self.lru_head = h;
    }

    fn unlink(&mut self, h: u32) {
        let (prev, next) = (
            self.slots[h as usize].field(PREV),
            self.slots[h as usize].field(NEXT),
        );
        if prev != NIL {
            self.slots[prev as usize].set_field(NEXT, next);
        } else {
            self.lru_head = next;
        }
        if next != NIL {
            self.slots[next as usize].set_field(PREV, prev);
        } else {
            self.lru_tail = prev;
        }
    }

    /// The `k` nearest live entries of `namespace` within `max_distance`, nearest first, and separately
    /// the ids of expired entries that were among the candidates (the caller deletes them and, if that
    /// emptied the answer, searches again).
    pub fn search(
        &self,
        namespace: &str,
        query: &[u64],
        k: usize,
        max_distance: u32,
        now: f64,
    ) -> Result<(Vec<Found>, Vec<EntryId>)> {
        self.check_code(query)?;
        let Some(&space) = self.space_of.get(namespace) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let sp = &self.spaces[space as usize];
        let hits: Vec<Neighbor> = scan::search(&sp.codes, self.words, query, k, max_distance);
        let (mut live, mut expired) = (Vec::with_capacity(hits.len()), Vec::new());
        for n in hits {
            let id = sp.ids[n.index];
            if self.with_expiry && self.expires[handle_of(id) as usize] <= now {
                expired.push(id);
            } else {
                live.push(Found {
                    id,
                    distance: n.distance,
                });
            }
        }
        Ok((live, expired))
    }

    /// Ids of every expired entry (a full pass; for explicit purges, not lookups).
    pub fn expired(&self, now: f64) -> Vec<EntryId> {
        if !self.with_expiry {
            return Vec::new();
        }
        self.spaces
            .iter()
            .flat_map(|sp| sp.ids.iter().copied())
            .filter(|&id| self.expires[handle_of(id) as usize] <= now)
            .collect()
    }

    /// Removes a namespace's entries (or all) and returns their ids.
    pub fn clear(&mut self, namespace: Option<&str>) -> Vec<EntryId> {
        let ids: Vec<EntryId> = match namespace {
            Some(name) => match self.space_of.get(name) {
                Some(&s) => self.spaces[s as usize].ids.clone(),
                None => Vec::new(),
            },
            None => self
                .spaces
                .iter()
                .flat_map(|sp| sp.ids.iter().copied())
                .collect(),
        };
        // One by one, so every freed handle moves to its next generation and ids handed out before
        // the clear never name a later entry. Last positions first: no codes are moved.
        // Whole namespaces go, so no neighbour count outside them needs updating.
        for &id in ids.iter().rev() {
            self.remove_with(id, false);
        }
        ids
    }

    /// Live ids, least recently used first.
    pub fn lru_order(&self) -> Vec<EntryId> {
        let mut out = Vec::with_capacity(self.len);
        let mut h = self.lru_tail;
        while h != NIL {
            out.push(self.id_of_handle(h));
            h = self.slots[h as usize].field(PREV);
        }
        out
    }

    /// The code, namespace and expiry of a live entry.
    pub fn entry(&self, id: EntryId) -> Option<(&str, &[u64], f64)> {
        if !self.contains(id) {
            return None;
        }
        let slot = &self.slots[handle_of(id) as usize];
        let sp = &self.spaces[slot.space() as usize];
        let pos = slot.field(POS) as usize;
        let expires = if self.with_expiry {
            self.expires[handle_of(id) as usize]
        } else {
            f64::INFINITY
        };
        Some((
            &sp.name,
            &sp.codes[pos * self.words..(pos + 1) * self.words],
            expires,
        ))
    }
}

impl Queue for Index {
    fn oldest(&self) -> u32 {
        self.lru_tail
    }
    fn newer(&self, handle: u32) -> u32 {
        self.slots[handle as usize].field(PREV)
    }
    fn to_head(&mut self, handle: u32) {
        if self.lru_head != handle {
            self.unlink(handle);
            self.link_front(handle);
        }
    }
}

/// An index taken apart into flat arrays: what a snapshot file stores, and what `Index::from_parts`
/// rebuilds an index from. Rows are the entries in namespace order, each namespace's rows in position
/// order, so `codes` can be written (and scanned) as one contiguous block.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexParts {
    /// Namespace names, in row order.
    pub names: Vec<String>,
    /// Entries per namespace (each > 0).
    pub counts: Vec<u32>,
    /// `rows * words` code words.
    pub codes: Vec<u64>,
    /// The id (handle | generation << 24) at each row.
    pub ids: Vec<EntryId>,
    /// Rows from least to most recently used.
    pub lru: Vec<u32>,
    /// Absolute expiry per row; empty when expiry is off.
    pub expires: Vec<f64>,
    /// Free handles in free-list order (next reused first), each `handle | next_generation << 24`.
    pub free: Vec<EntryId>,
}

/// Borrowed view of `IndexParts`, so a caller can rebuild an index straight from mapped file memory.
#[derive(Debug, Clone, Copy)]
pub struct IndexPartsRef<'a> {
    pub names: &'a [String],
    pub counts: &'a [u32],
    pub codes: &'a [u64],
    pub ids: &'a [EntryId],
    pub lru: &'a [u32],
    pub expires: &'a [f64],
    pub free: &'a [EntryId],
}

impl IndexParts {
    pub fn as_ref(&self) -> IndexPartsRef<'_> {
        IndexPartsRef {
            names: &self.names,
            counts: &self.counts,
            codes: &self.codes,
            ids: &self.ids,
            lru: &self.lru,
            expires: &self.expires,
            free: &self.free,
        }
    }
}

fn corrupt(msg: String) -> BscError {
    BscError::Corrupt(msg)
}

/// Marks `v` in `seen`; false if it was out of range or already marked.
fn mark_once(seen: &mut [bool], v: usize) -> bool {
    match seen.get_mut(v) {
        Some(s) if !*s => {
            *s = true;
            true
        }
        _ => false,
    }
}

impl Index {
    /// Takes the index apart into flat arrays (see `IndexParts`); `from_parts` rebuilds an equal index.
    pub fn to_parts(&self) -> IndexParts {
        let live: Vec<usize> = (0..self.spaces.len())
            .filter(|&s| !self.spaces[s].ids.is_empty())
            .collect();
        let mut row_start = vec![0u32; self.spaces.len()];
        let mut parts = IndexParts {
            names: Vec::with_capacity(live.len()),
            counts: Vec::with_capacity(live.len()),
            codes: Vec::with_capacity(self.len * self.words),
            ids: Vec::with_capacity(self.len),
            lru: Vec::with_capacity(self.len),
            expires: Vec::new(),
            free: Vec::new(),
        };
        for &s in &live {
            let sp = &self.spaces[s];
            row_start[s] = parts.ids.len() as u32;
            parts.names.push(sp.name.clone());
            parts.counts.push(sp.ids.len() as u32);
            parts.codes.extend_from_slice(&sp.codes);
            parts.ids.extend_from_slice(&sp.ids);
        }
        if self.with_expiry {
            parts.expires = parts
                .ids
                .iter()
                .map(|&id| self.expires[handle_of(id) as usize])
                .collect();
        }
        let mut h = self.lru_tail;
        while h != NIL {
            let slot = &self.slots[h as usize];
            parts
                .lru
                .push(row_start[slot.space() as usize] + slot.field(POS));
            h = slot.field(PREV);
        }
        let mut h = self.free_head;
        while h != NIL {
            let slot = &self.slots[h as usize];
            parts.free.push(make_id(h, slot.free_generation()));
            h = slot.field(NEXT);
        }
        parts
    }

    /// Rebuilds an index from `parts`, checking every invariant first: counts add up, names are unique,
    /// every handle below `ids.len() + free.len()` is used exactly once, `lru` is a permutation of the
    /// rows, expiries are not NaN. Corrupt input is an error, never a panic or a half-built index.
    pub fn from_parts(
        words: usize,
        max_entries: usize,
        with_expiry: bool,
        parts: IndexPartsRef<'_>,
    ) -> Result<Self> {
        let mut ix = Self::new(words, max_entries, with_expiry)?;
        let n = parts.ids.len();
        if parts.names.len() != parts.counts.len() {
            return Err(corrupt(format!(
                "{} namespace names but {} namespace counts",
                parts.names.len(),
                parts.counts.len()
            )));
        }
        if parts.names.len() > MAX_NAMESPACES {
            return Err(corrupt(format!(
                "{} namespaces, at most {MAX_NAMESPACES}",
                parts.names.len()
            )));
        }
        if parts.counts.contains(&0) {
            return Err(corrupt("a namespace with no entries".to_owned()));
        }
        let total: u64 = parts.counts.iter().map(|&c| u64::from(c)).sum();
        if total != n as u64 {
            return Err(corrupt(format!(
                "namespace counts add up to {total}, but there are {n} ids"
            )));
        }
        if n > max_entries {
            return Err(corrupt(format!(
                "{n} entries exceed max_entries {max_entries}"
            )));
        }
        if parts.codes.len() != n * words {
            return Err(corrupt(format!(
                "{} code words for {n} entries of {words} words",
                parts.codes.len()
            )));
        }
        if parts.lru.len() != n {
            return Err(corrupt(format!(
                "LRU order has {} rows, expected {n}",
                parts.lru.len()
            )));
        }
        let expected_expires = if with_expiry { n } else { 0 };
        if parts.expires.len() != expected_expires {
            return Err(corrupt(format!(
                "{} expiry times, expected {expected_expires}",
                parts.expires.len()
            )));
        }
        if parts.expires.iter().any(|e| e.is_nan()) {
            return Err(corrupt("an expiry time is NaN".to_owned()));
        }
        let handles = n + parts.free.len();
        if handles > MAX_ENTRIES {
            return Err(corrupt(format!("{handles} handles, at most {MAX_ENTRIES}")));
        }
        let mut seen = vec![false; handles];
        for &id in parts.ids.iter().chain(parts.free.iter()) {
            if !mark_once(&mut seen, handle_of(id) as usize) {
                return Err(corrupt(format!(
                    "handle {} is out of range or used twice",
                    handle_of(id)
                )));
            }
        }
        let mut seen = vec![false; n];
        for &row in parts.lru {
            if !mark_once(&mut seen, row as usize) {
                return Err(corrupt(format!(
                    "LRU row {row} is out of range or listed twice"
                )));
            }
        }
        for name in parts.names {
            if ix
                .space_of
                .insert(name.clone(), ix.spaces.len() as u32)
                .is_some()
            {
                return Err(corrupt(format!("namespace {name:?} is listed twice")));
            }
            ix.spaces.push(Space {
                name: name.clone(),
                ..Space::default()
            });
        }

        // Everything is validated: from here on the build cannot fail.
        ix.slots = vec![Slot::default(); handles];
        if with_expiry {
            ix.expires = vec![f64::INFINITY; handles];
        }
        let mut row = 0usize;
        for (s, &count) in parts.counts.iter().enumerate() {
            let count = count as usize;
            let sp = &mut ix.spaces[s];
            sp.ids = parts.ids[row..row + count].to_vec();
            sp.codes = parts.codes[row * words..(row + count) * words].to_vec();
            for (pos, &id) in sp.ids.iter().enumerate() {
                let slot = &mut ix.slots[handle_of(id) as usize];
                slot.set_field(POS, pos as u32);
                slot.set_space(s as u32);
                if with_expiry {
                    ix.expires[handle_of(id) as usize] = parts.expires[row + pos];
                }
            }
            row += count;
        }
        // `lru` runs oldest first: PREV points to the more recently used neighbour, NEXT to the older.
        let handle_at = |i: usize| handle_of(parts.ids[parts.lru[i] as usize]);
        for i in 0..n {
            let h = handle_at(i) as usize;
            ix.slots[h].set_field(PREV, if i + 1 < n { handle_at(i + 1) } else { NIL });
            ix.slots[h].set_field(NEXT, if i > 0 { handle_at(i - 1) } else { NIL });
        }
        if n > 0 {
            ix.lru_tail = handle_at(0);
            ix.lru_head = handle_at(n - 1);
        }
        for (j, &f) in parts.free.iter().enumerate() {
            let slot = &mut ix.slots[handle_of(f) as usize];
            slot.set_space(FREE);
            slot.set_free_generation(generation_of(f));
            slot.set_field(NEXT, parts.free.get(j + 1).map_or(NIL, |&g| handle_of(g)));
        }
        ix.free_head = parts.free.first().map_or(NIL, |&f| handle_of(f));
        ix.len = n;
        Ok(ix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: u64) -> [u64; 4] {
        [v, !v, v.rotate_left(7), v ^ 0x5555]
    }

    #[test]
    fn insert_search_delete_round_trip() {
        let mut ix = Index::new(4, 10, false).unwrap();
        let (a, _) = ix.insert("ns", &code(1), f64::INFINITY).unwrap();
        let (b, _) = ix.insert("ns", &code(2), f64::INFINITY).unwrap();
        let (found, _) = ix.search("ns", &code(2), 1, 0, 0.0).unwrap();
        assert_eq!(found, vec![Found { id: b, distance: 0 }]);
        assert!(ix.remove(b));
        assert!(!ix.remove(b));
        let (found, _) = ix.search("ns", &code(1), 5, 256, 0.0).unwrap();
        assert_eq!(found[0].id, a);
        assert_eq!(found.len(), 1);
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn delete_never_hides_another_match() {
        let mut ix = Index::new(4, 100, false).unwrap();
        let ids: Vec<_> = (0..20)
            .map(|i| ix.insert("n", &code(i), f64::INFINITY).unwrap().0)
            .collect();
        for (i, &id) in ids.iter().enumerate().step_by(2) {
            assert!(ix.remove(id), "{i}");
        }
        for i in (1..20).step_by(2) {
            let (found, _) = ix.search("n", &code(i as u64), 1, 0, 0.0).unwrap();
            assert_eq!(found[0].id, ids[i]);
        }
    }

    #[test]
    fn namespaces_are_isolated_and_dropped_when_empty() {
        let mut ix = Index::new(4, 100, false).unwrap();
        let (a, _) = ix.insert("a", &code(9), f64::INFINITY).unwrap();
        assert!(ix.search("b", &code(9), 1, 256, 0.0).unwrap().0.is_empty());
        assert_eq!(ix.namespaces(), vec!["a".to_string()]);
        ix.remove(a);
        assert!(ix.namespaces().is_empty());
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut ix = Index::new(4, 3, false).unwrap();
        let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
        let b = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
        let c = ix.insert("x", &code(3), f64::INFINITY).unwrap().0;
        assert!(ix.touch(a));
        let (d, evicted) = ix.insert("n", &code(4), f64::INFINITY).unwrap();
        assert_eq!(evicted, Some(b));
        assert_eq!(ix.lru_order(), vec![c, a, d]);
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn stale_ids_do_not_name_the_next_occupant() {
        let mut ix = Index::new(4, 10, false).unwrap();
        let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
        ix.remove(a);
        let b = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
        assert_eq!(handle_of(a), handle_of(b));
        assert_ne!(a, b);
        assert!(!ix.remove(a));
        assert!(!ix.touch(a));
        assert!(ix.contains(b));
    }

    #[test]
    fn stale_ids_stay_stale_after_hundreds_of_reuses_of_their_slot() {
        let mut ix = Index::new(4, 1, false).unwrap();
        let first = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
        let mut seen = vec![first];
        for i in 0..1000u64 {
            // Capacity 1: every insert evicts the previous entry and reuses its slot.
            let (id, evicted) = ix.insert("n", &code(i), f64::INFINITY).unwrap();
            assert_eq!(evicted, seen.last().copied());
            assert_eq!(handle_of(id), handle_of(first));
            seen.push(id);
        }
        let live = *seen.last().unwrap();
        for &stale in &seen[..seen.len() - 1] {
            assert!(!ix.contains(stale) && !ix.remove(stale) && !ix.touch(stale));
        }
        assert!(ix.contains(live));
    }

    #[test]
    fn generations_survive_to_parts_on_free_slots_past_24_bits() {
        let mut ix = Index::new(4, 4, false).unwrap();
        let a = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
        ix.remove(a);
        let mut parts = ix.to_parts();
        // A free slot whose next generation needs more than the 24 bits of its position field.
        parts.free[0] = make_id(handle_of(a), (1 << 39) + 5);
        let mut b = Index::from_parts(4, 4, false, parts.as_ref()).unwrap();
        let id = b.insert("n", &code(2), f64::INFINITY).unwrap().0;
        assert_eq!(generation_of(id), (1 << 39) + 5);
        assert_eq!(b.to_parts().ids, vec![id]);
    }

    #[test]
    fn expired_entries_are_reported_not_returned() {
        let mut ix = Index::new(4, 10, true).unwrap();
        let a = ix.insert("n", &code(1), 10.0).unwrap().0;
        let b = ix.insert("n", &code(1), 20.0).unwrap().0;
        let (live, expired) = ix.search("n", &code(1), 2, 0, 15.0).unwrap();
        assert_eq!(live, vec![Found { id: b, distance: 0 }]);
        assert_eq!(expired, vec![a]);
        assert_eq!(ix.expired(25.0).len(), 2);
    }

    #[test]
    fn ids_from_before_a_clear_do_not_name_later_entries() {
        let mut ix = Index::new(4, 10, false).unwrap();
        let old = ix.insert("n", &code(1), f64::INFINITY).unwrap().0;
        ix.clear(None);
        let new = ix.insert("n", &code(2), f64::INFINITY).unwrap().0;
        assert_ne!(old, new);
        assert!(!ix.contains(old) && !ix.remove(old));
        assert!(ix.contains(new));
    }

    #[test]
    fn clear_one_namespace_or_all() {
        let mut ix = Index::new(4, 10, false).unwrap();
        ix.insert("a", &code(1), f64::INFINITY).unwrap();
        ix.insert("b", &code(2), f64::INFINITY).unwrap();
        assert_eq!(ix.clear(Some("a")).len(), 1);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.clear(None).len(), 1);
        assert!(ix.is_empty());
    }

    #[test]
    fn randomized_operations_match_a_simple_model() {
        let mut ix = Index::new(1, 50, false).unwrap();
        let mut model: Vec<(EntryId, String, u64)> = Vec::new(); // LRU order, oldest first
        let mut s: u64 = 12345;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        };
        for _ in 0..5000 {
            let op = next() % 10;
            let ns = format!("ns{}", next() % 3);
            if op < 5 {
                let c = next() % 64;
                let (id, ev) = ix.insert(&ns, &[c], f64::INFINITY).unwrap();
                if model.len() == 50 {
                    assert_eq!(ev, Some(model.remove(0).0));
                } else {
                    assert_eq!(ev, None);
                }
                model.push((id, ns, c));
            } else if op < 7 && !model.is_empty() {
                let i = (next() as usize) % model.len();
                assert!(ix.remove(model.remove(i).0));
            } else if !model.is_empty() {
                let i = (next() as usize) % model.len();
                let e = model.remove(i);
                assert!(ix.touch(e.0));
                let (found, _) = ix.search(&e.1, &[e.2], 64, 0, 0.0).unwrap();
                assert!(found.iter().any(|f| f.id == e.0));
                model.push(e);
            }
            assert_eq!(ix.len(), model.len());
        }
        assert_eq!(
            ix.lru_order(),
            model.iter().map(|e| e.0).collect::<Vec<_>>()
        );
    }
}

#[cfg(test)]
mod parts_tests {
    use super::*;

    fn lcg(s: &mut u64) -> u64 {
        *s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *s >> 33
    }

    /// An index after a random mix of inserts, deletes and touches over a few namespaces.
    fn shuffled_index(seed: u64, with_expiry: bool) -> Index {
        let mut ix = Index::new(2, 40, with_expiry).unwrap();
        let mut s = seed;
        let mut live: Vec<EntryId> = Vec::new();
        for step in 0..400 {
            let op = lcg(&mut s) % 10;
            if op < 6 || live.is_empty() {
                let ns = format!("ns{}", lcg(&mut s) % 4);
                let (id, ev) = ix
                    .insert(&ns, &[lcg(&mut s), lcg(&mut s)], step as f64)
                    .unwrap();
                live.retain(|&l| Some(l) != ev);
                live.push(id);
            } else if op < 8 {
                let i = (lcg(&mut s) as usize) % live.len();
                assert!(ix.remove(live.swap_remove(i)));
            } else {
                let i = (lcg(&mut s) as usize) % live.len();
                assert!(ix.touch(live[i]));
            }
        }
        ix
    }

    fn assert_same(a: &mut Index, b: &mut Index) {
        assert_eq!(a.len(), b.len());
        assert_eq!(a.namespaces(), b.namespaces());
        assert_eq!(a.lru_order(), b.lru_order());
        for id in a.lru_order() {
            let (ns, code, exp) = a.entry(id).unwrap();
            let (ns2, code2, exp2) = b.entry(id).unwrap();
            assert_eq!((ns, code, exp.to_bits()), (ns2, code2, exp2.to_bits()));
            assert_eq!(
                a.search(ns, code, 3, 128, 0.0).unwrap(),
                b.search(ns, code, 3, 128, 0.0).unwrap()
            );
        }
        // The same future: new ids (free-list order, generations) and evictions match.
        for i in 0..60u64 {
            let ns = format!("ns{}", i % 5);
            let code: Vec<u64> = (0..a.words() as u64)
                .map(|w| i ^ w.rotate_left(9))
                .collect();
            assert_eq!(
                a.insert(&ns, &code, 1.0).unwrap(),
                b.insert(&ns, &code, 1.0).unwrap()
            );
        }
        assert_eq!(a.lru_order(), b.lru_order());
    }

    #[test]
    fn from_parts_of_to_parts_is_the_same_index() {
        for seed in 0..20 {
            for with_expiry in [false, true] {
                let mut a = shuffled_index(seed, with_expiry);
                let parts = a.to_parts();
                let mut b = Index::from_parts(2, 40, with_expiry, parts.as_ref()).unwrap();
                assert_eq!(b.to_parts(), parts);
                assert_same(&mut a, &mut b);
            }
        }
    }

    #[test]
    fn empty_index_round_trips() {
        let mut a = Index::new(4, 5, false).unwrap();
        let mut b = Index::from_parts(4, 5, false, a.to_parts().as_ref()).unwrap();
        assert!(b.is_empty());
        assert_same(&mut a, &mut b);
    }

    #[test]
    fn from_parts_rejects_every_broken_invariant() {
        let good = shuffled_index(7, true).to_parts();
        assert!(!good.free.is_empty() && good.names.len() > 1);
        type Breaker = Box<dyn Fn(&mut IndexParts)>;
        let broken: Vec<(&str, Breaker)> = vec![
            ("names/counts", Box::new(|p| p.names.truncate(1))),
            ("zero count", Box::new(|p| p.counts[0] = 0)),
            ("count sum", Box::new(|p| p.counts[0] += 1)),
            ("codes", Box::new(|p| p.codes.pop().map(drop).unwrap_or(()))),
            ("lru short", Box::new(|p| p.lru.truncate(1))),
            ("lru dup", Box::new(|p| p.lru[0] = p.lru[1])),
            ("lru range", Box::new(|p| p.lru[0] = u32::MAX)),
            ("expires", Box::new(|p| p.expires.clear())),
            ("nan", Box::new(|p| p.expires[0] = f64::NAN)),
            ("dup handle", Box::new(|p| p.ids[0] = p.ids[1])),
            ("free dup", Box::new(|p| p.free[0] = p.ids[0])),
            ("handle range", Box::new(|p| p.ids[0] = u64::from(MASK24))),
            ("dup name", Box::new(|p| p.names[1] = p.names[0].clone())),
            ("too many", Box::new(|p| p.ids.extend_from_slice(&[1; 100]))),
        ];
        for (what, f) in broken {
            let mut p = good.clone();
            f(&mut p);
            assert!(
                Index::from_parts(2, 40, true, p.as_ref()).is_err(),
                "{what} accepted"
            );
        }
        assert!(
            Index::from_parts(2, 40, false, good.as_ref()).is_err(),
            "expiry mismatch accepted"
        );
        assert!(
            Index::from_parts(4, 40, true, good.as_ref()).is_err(),
            "word count mismatch accepted"
        );
        assert!(
            Index::from_parts(2, 3, true, good.as_ref()).is_err(),
            "over capacity accepted"
        );
    }
}
