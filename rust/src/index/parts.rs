//! `Index` taken apart into flat arrays and rebuilt from them: what a snapshot file stores, with every
//! invariant of loaded data checked before anything is built.

use super::{
    generation_of, handle_of, make_id, EntryId, Index, Slot, Space, FREE, MAX_ENTRIES,
    MAX_NAMESPACES, NEXT, NIL, POS, PREV,
};
use crate::error::{BscError, Result};
use crate::{memory, rows};

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
            sp.codes = memory::vec_with_capacity(count * words);
            sp.codes
                .extend_from_slice(&parts.codes[row * words..(row + count) * words]);
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

impl Index {
    /// The int8 rerank rows by handle (`row_dim` values each, stale for free handles) and their norms.
    pub fn rows_by_handle(&self) -> (&[i8], &[f32]) {
        (&self.rows, &self.norms)
    }

    /// The handle of each id (the slot its rows and payload belong to), for storing per-handle data
    /// beside `to_parts`; ids need not be live.
    pub fn handles_of(ids: &[EntryId]) -> Vec<u32> {
        ids.iter().map(|&id| handle_of(id)).collect()
    }

    /// Gives an index built by `from_parts` its rerank rows: `dim` int8 values and a norm per handle
    /// (`dim` 0: none). A norm is derivable from its row, so a stored one that differs (forged: a tiny
    /// norm would turn a miss into a hit) is refused; free handles' rows are not checked.
    pub fn set_rows(&mut self, dim: usize, rows: &[i8], norms: &[f32]) -> Result<()> {
        let handles = self.slots.len();
        if rows.len() != handles * dim || norms.len() != handles * usize::from(dim > 0) {
            return Err(corrupt(format!(
                "{} rerank values and {} norms for {handles} handles of {dim} values",
                rows.len(),
                norms.len(),
            )));
        }
        if dim > crate::encoder::MAX_DIM {
            return Err(corrupt(format!("rerank rows of {dim} values")));
        }
        for (h, (row, &norm)) in rows.chunks_exact(dim.max(1)).zip(norms).enumerate() {
            let live = self.slots[h].space() != FREE;
            if live && rows::row_norm(row).to_bits() != norm.to_bits() {
                return Err(corrupt(format!(
                    "rerank norms: the norm of handle {h} ({norm}) does not match its vector"
                )));
            }
        }
        self.row_dim = dim;
        self.rows = rows.to_vec();
        self.norms = norms.to_vec();
        Ok(())
    }
}
