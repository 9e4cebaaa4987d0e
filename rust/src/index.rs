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
//!
//! A two-stage cache also keeps, per handle, an int8 copy of the unit embedding (`row_dim` bytes) and its
//! norm, and `lookup` reranks the shortlist by exact cosine in the same call that scans: the index is the
//! one owner of an entry's layout, and a reader never sees a row that does not belong to the id it found.

use std::collections::HashMap;

use crate::error::{BscError, Result};
use crate::eviction::{self, Eviction, Policy, Queue};
use crate::memory;
use crate::rows;
use crate::scan::{self, Neighbor};

mod parts;
#[cfg(test)]
mod tests;

pub use parts::{IndexParts, IndexPartsRef};

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

/// A lookup's answer: an entry, its Hamming distance and its cosine similarity to the query (exact
/// from the int8 row when the lookup reranks, estimated from the distance otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: EntryId,
    pub distance: u32,
    pub similarity: f64,
}

/// What `Index::lookup` looks for.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    pub namespace: &'a str,
    pub code: &'a [u64],
    /// The query's unit vector, to rerank the shortlist by exact cosine; None to estimate the cosine
    /// from the Hamming distance.
    pub unit: Option<&'a [f32]>,
    /// Shortlist size.
    pub k: usize,
    pub max_distance: u32,
    /// Expiry clock.
    pub now: f64,
    /// Reranked candidates below this similarity are dropped.
    pub min_similarity: f64,
}

/// The int8 copy reproduces a cosine to ~1e-4, so a reranked candidate passes its threshold within that
/// tolerance (identical vectors score ~0.99997: otherwise threshold 1.0 could never hit).
pub const INT8_TOLERANCE: f64 = 1e-4;

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
    /// Length of the int8 rerank row kept per handle; 0 keeps none.
    row_dim: usize,
    /// `row_dim` int8 values per handle (a free handle's row is stale until the handle is reused).
    rows: Vec<i8>,
    /// Norm of each handle's row, computed here from the row (never taken from a caller).
    norms: Vec<f32>,
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
            row_dim: 0,
            rows: Vec::new(),
            norms: Vec::new(),
        })
    }

    /// The same empty index keeping an int8 rerank row of `dim` values per entry.
    pub fn with_rows(mut self, dim: usize) -> Result<Self> {
        if !self.slots.is_empty() {
            return Err(BscError::InvalidArgument(
                "rerank rows can only be added to an empty index".into(),
            ));
        }
        if dim > crate::encoder::MAX_DIM {
            return Err(BscError::InvalidArgument(format!(
                "the rerank row length must be at most {}, got {dim}",
                crate::encoder::MAX_DIM
            )));
        }
        self.row_dim = dim;
        Ok(self)
    }

    /// Length of the rerank rows (0 when the index keeps none).
    pub fn row_dim(&self) -> usize {
        self.row_dim
    }

    /// Chooses the eviction policy; `radius` is the Hamming radius of a neighbourhood (`diverse`: a new
    /// entry with a neighbour within it starts visited). Resets the policy's per-entry state.
    pub fn set_eviction(&mut self, policy: Policy, radius: u32) {
        self.eviction = Eviction::new(policy, radius, self.slots.len(), self.len);
    }

    pub fn eviction(&self) -> Policy {
        self.eviction.policy()
    }

    /// The eviction policy's byte for a live entry (counter or visited bit).
    pub fn eviction_state(&self, id: EntryId) -> Option<u8> {
        self.contains(id)
            .then(|| self.eviction.state_of(handle_of(id)))
    }

    /// Whether another entry of `space` lies within the eviction radius of the entry at `pos`.
    fn has_neighbour(&self, space: usize, pos: usize) -> bool {
        let sp = &self.spaces[space];
        let code = &sp.codes[pos * self.words..(pos + 1) * self.words];
        eviction::has_neighbour(&sp.codes, self.words, code, self.eviction.radius(), pos)
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
    /// An index with rerank rows needs `insert_row`.
    pub fn insert(
        &mut self,
        namespace: &str,
        code: &[u64],
        expires_at: f64,
    ) -> Result<(EntryId, Option<EntryId>)> {
        self.insert_row(namespace, code, &[], expires_at)
    }

    /// `insert` with the entry's int8 rerank row (`row_dim` values; empty when the index keeps none).
    pub fn insert_row(
        &mut self,
        namespace: &str,
        code: &[u64],
        row: &[i8],
        expires_at: f64,
    ) -> Result<(EntryId, Option<EntryId>)> {
        self.check_code(code)?;
        if row.len() != self.row_dim {
            return Err(BscError::Shape(format!(
                "expected a rerank row of {} int8 values, got {}",
                self.row_dim,
                row.len()
            )));
        }
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
            if self.row_dim > 0 {
                self.rows.resize(self.slots.len() * self.row_dim, 0);
                self.norms.push(1.0);
            }
            ((self.slots.len() - 1) as u32, 0)
        };
        if self.row_dim > 0 {
            let at = handle as usize * self.row_dim;
            self.rows[at..at + self.row_dim].copy_from_slice(row);
            self.norms[handle as usize] = rows::row_norm(row);
        }
        let id = make_id(handle, generation);
        let sp = &mut self.spaces[space as usize];
        let pos = sp.ids.len() as u32;
        memory::reserve(&mut sp.codes, code.len());
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
        let has_neighbour = self.eviction.policy().admits_by_neighbour()
            && self.has_neighbour(space as usize, pos as usize);
        self.eviction.inserted(handle, has_neighbour);
        Ok((id, evicted))
    }

    /// Inserts row after row (codes `words` each, rerank rows `row_dim` each, none when the index
    /// keeps none); returns `(ids, evicted_ids)`. Shapes are checked before anything is stored.
    pub fn insert_rows(
        &mut self,
        namespace: &str,
        codes: &[u64],
        rows: &[i8],
        expires_at: f64,
    ) -> Result<(Vec<EntryId>, Vec<EntryId>)> {
        if !codes.len().is_multiple_of(self.words) {
            return Err(BscError::Shape(format!(
                "{} code words do not form codes of {} words",
                codes.len(),
                self.words
            )));
        }
        let n = codes.len() / self.words;
        let width = self.row_dim;
        if rows.len() != n * width {
            return Err(BscError::Shape(format!(
                "expected {n} rerank rows of {width} int8 values, got {} values",
                rows.len()
            )));
        }
        let (mut ids, mut evicted) = (Vec::with_capacity(n), Vec::new());
        for (i, code) in codes.chunks_exact(self.words).enumerate() {
            let row = &rows[i * width..(i + 1) * width];
            let (id, gone) = self.insert_row(namespace, code, row, expires_at)?;
            ids.push(id);
            evicted.extend(gone);
        }
        Ok((ids, evicted))
    }

    /// Refuses codes of another width than this index's.
    pub fn check_width(&self, words: usize) -> Result<()> {
        if words != self.words {
            return Err(BscError::Shape(format!(
                "expected codes of {} uint64 words, got {words}",
                self.words
            )));
        }
        Ok(())
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
        if !self.contains(id) {
            return false;
        }
        let h = handle_of(id);
        let slot = self.slots[h as usize];
        let (space, pos) = (slot.space() as usize, slot.field(POS) as usize);
        self.eviction.removing(h, slot.field(PREV));
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

    /// The best entries for a query, best first: the `k` nearest live codes of the namespace within
    /// `max_distance`, reranked by exact cosine against their int8 rows when the query brings its unit
    /// vector (candidates below `min_similarity - INT8_TOLERANCE` dropped), and separately the expired
    /// candidates' ids (the caller deletes them and, if that emptied the answer, looks again).
    pub fn lookup(&self, q: &Lookup<'_>) -> Result<(Vec<Candidate>, Vec<EntryId>)> {
        let (found, expired) = self.search(q.namespace, q.code, q.k, q.max_distance, q.now)?;
        let bits = (self.words * 64) as f64;
        let unit = match q.unit {
            Some(unit) if self.row_dim > 0 => unit,
            Some(unit) => {
                return Err(BscError::Shape(format!(
                    "this index keeps no rerank rows to compare a {}-value vector with",
                    unit.len()
                )))
            }
            None => {
                let estimated = found.iter().map(|f| Candidate {
                    id: f.id,
                    distance: f.distance,
                    similarity: (std::f64::consts::PI * f64::from(f.distance) / bits).cos(),
                });
                return Ok((estimated.collect(), expired));
            }
        };
        if unit.len() != self.row_dim {
            return Err(BscError::Shape(format!(
                "expected a unit vector of {} values, got {}",
                self.row_dim,
                unit.len()
            )));
        }
        let threshold = q.min_similarity - INT8_TOLERANCE;
        let mut out: Vec<Candidate> = found
            .iter()
            .map(|f| {
                let h = handle_of(f.id) as usize;
                let row = &self.rows[h * self.row_dim..(h + 1) * self.row_dim];
                let dot = rows::dot(row, unit);
                // Clipped: int8 rounding can overshoot 1 slightly.
                let similarity = f64::from((dot / self.norms[h]).clamp(-1.0, 1.0));
                Candidate {
                    id: f.id,
                    distance: f.distance,
                    similarity,
                }
            })
            .filter(|c| c.similarity >= threshold)
            .collect();
        // Stable: equal similarities stay in scan order (nearest code first).
        out.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        Ok((out, expired))
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
        for &id in ids.iter().rev() {
            self.remove(id);
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
