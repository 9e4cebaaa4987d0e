//! `bsc._native.HammingIndex`: the code store, shared safely between Python threads.
//!
//! Lookups take a read lock and run with the GIL released, so concurrent `get`s scan in parallel;
//! inserts, deletes and LRU touches take the write lock for O(1) work. Locks are only ever taken with
//! the GIL released, so a thread waiting for one never blocks the interpreter.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use numpy::{
    Element, IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::eviction::Policy;
use crate::index::{EntryId, Index, IndexPartsRef};

/// `([(id, distance)], expired_ids)`.
type SearchResult = (Vec<(EntryId, u32)>, Vec<EntryId>);

#[pyclass(frozen, module = "bsc._native")]
pub struct HammingIndex {
    inner: RwLock<Index>,
}

/// A write lock held across `fork()`, with a reference that keeps its index alive until it is released.
/// Field order matters: the guard is dropped before the reference.
struct HeldForFork {
    _guard: RwLockWriteGuard<'static, Index>,
    owner: Py<HammingIndex>,
}

thread_local! {
    // Held by the thread that forks (the only thread a child has), between `_hold_for_fork` and
    // `_release_after_fork`; those run in the same thread, before and after the fork.
    static HELD_FOR_FORK: RefCell<Vec<HeldForFork>> = const { RefCell::new(Vec::new()) };
}

impl HammingIndex {
    // A panic cannot leave the index half-updated in a way later calls would misread (every mutation
    // validates first), so a poisoned lock is recovered rather than turned into a permanent error.
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn one_code(code: &PyReadonlyArray1<'_, u64>) -> Vec<u64> {
    match code.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => code.as_array().iter().copied().collect(),
    }
}

/// A read-only view of a 1-D array: borrowed when contiguous (e.g. straight from a mapped file), copied otherwise.
fn flat<'a, T: Element + Copy>(arr: &'a PyReadonlyArray1<'_, T>) -> Cow<'a, [T]> {
    match arr.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(arr.as_array().iter().copied().collect()),
    }
}

/// `to_parts` as NumPy arrays: `(names, counts, codes, ids, lru, expires, free)`.
type PyParts<'py> = (
    Vec<String>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<u64>>,
);

#[pymethods]
impl HammingIndex {
    #[new]
    #[pyo3(signature = (words, max_entries, with_expiry = false, eviction = "lru", radius = 0))]
    fn new(
        words: usize,
        max_entries: usize,
        with_expiry: bool,
        eviction: &str,
        radius: u32,
    ) -> PyResult<Self> {
        let mut index = Index::new(words, max_entries, with_expiry)?;
        index.set_eviction(Policy::from_name(eviction)?, radius);
        Ok(Self {
            inner: RwLock::new(index),
        })
    }

    /// The eviction policy's name: "lru", "lfu", "sieve" or "diverse".
    #[getter]
    fn eviction(&self) -> &'static str {
        self.read().eviction().name()
    }

    /// Chooses the eviction policy (`radius`: the Hamming hit radius, for "diverse"); resets the
    /// policy's per-entry state (see `Index::set_eviction`).
    fn set_eviction(&self, py: Python<'_>, eviction: &str, radius: u32) -> PyResult<()> {
        let policy = Policy::from_name(eviction)?;
        py.detach(|| self.write().set_eviction(policy, radius));
        Ok(())
    }

    #[getter]
    fn words(&self) -> usize {
        self.read().words()
    }

    #[getter]
    fn max_entries(&self) -> usize {
        self.read().max_entries()
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().len())
    }

    fn namespace_len(&self, py: Python<'_>, namespace: &str) -> usize {
        py.detach(|| self.read().namespace_len(namespace))
    }

    fn namespaces(&self, py: Python<'_>) -> Vec<String> {
        py.detach(|| self.read().namespaces())
    }

    fn bytes_in_use(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().bytes_in_use())
    }

    fn bytes_allocated(&self, py: Python<'_>) -> usize {
        py.detach(|| self.read().bytes_allocated())
    }

    /// Stores a code; returns `(id, evicted_id_or_None)`.
    fn insert(
        &self,
        py: Python<'_>,
        namespace: &str,
        code: PyReadonlyArray1<'_, u64>,
        expires_at: f64,
    ) -> PyResult<(EntryId, Option<EntryId>)> {
        let code = one_code(&code);
        Ok(py.detach(|| self.write().insert(namespace, &code, expires_at))?)
    }

    /// Stores `n` codes (shape `(n, words)`); returns `(ids, evicted_ids)`.
    fn insert_many(
        &self,
        py: Python<'_>,
        namespace: &str,
        codes: PyReadonlyArray2<'_, u64>,
        expires_at: f64,
    ) -> PyResult<(Vec<EntryId>, Vec<EntryId>)> {
        let words = codes.shape()[1];
        // Row order: `as_slice` alone would also accept a Fortran-ordered array.
        let flat: Vec<u64> = match codes.as_slice() {
            Ok(s) if codes.is_c_contiguous() => s.to_vec(),
            _ => codes.as_array().iter().copied().collect(),
        };
        Ok(py.detach(|| -> crate::error::Result<_> {
            let mut ix = self.write();
            let (mut ids, mut evicted) = (Vec::new(), Vec::new());
            for code in flat.chunks_exact(words.max(1)) {
                let (id, ev) = ix.insert(namespace, code, expires_at)?;
                ids.push(id);
                evicted.extend(ev);
            }
            Ok((ids, evicted))
        })?)
    }

    /// Up to `k` nearest live entries of `namespace` within `max_distance`, nearest first, as
    /// `[(id, distance)]`, plus the ids of expired candidates for the caller to delete.
    #[pyo3(signature = (namespace, query, k, max_distance, now = 0.0))]
    fn search(
        &self,
        py: Python<'_>,
        namespace: &str,
        query: PyReadonlyArray1<'_, u64>,
        k: usize,
        max_distance: u32,
        now: f64,
    ) -> PyResult<SearchResult> {
        let query = one_code(&query);
        let (found, expired) =
            py.detach(|| self.read().search(namespace, &query, k, max_distance, now))?;
        Ok((
            found.into_iter().map(|f| (f.id, f.distance)).collect(),
            expired,
        ))
    }

    fn remove(&self, py: Python<'_>, id: EntryId) -> bool {
        py.detach(|| self.write().remove(id))
    }

    fn touch(&self, py: Python<'_>, id: EntryId) -> bool {
        py.detach(|| self.write().touch(id))
    }

    fn __contains__(&self, py: Python<'_>, id: EntryId) -> bool {
        py.detach(|| self.read().contains(id))
    }

    #[pyo3(signature = (namespace = None))]
    fn clear(&self, py: Python<'_>, namespace: Option<&str>) -> Vec<EntryId> {
        py.detach(|| self.write().clear(namespace))
    }

    fn expired(&self, py: Python<'_>, now: f64) -> Vec<EntryId> {
        py.detach(|| self.read().expired(now))
    }

    /// Live ids, least recently used first.
    fn lru_order(&self, py: Python<'_>) -> Vec<EntryId> {
        py.detach(|| self.read().lru_order())
    }

    /// `(namespace, code, expires_at)` of a live entry, or None.
    fn entry(&self, py: Python<'_>, id: EntryId) -> Option<(String, Vec<u64>, f64)> {
        py.detach(|| {
            self.read()
                .entry(id)
                .map(|(ns, code, exp)| (ns.to_owned(), code.to_vec(), exp))
        })
    }

    /// The index as flat arrays, `(names, counts, codes, ids, lru, expires, free)` (see
    /// `Index::to_parts`): one consistent snapshot taken under the read lock; the arrays are moved into
    /// NumPy, not copied.
    fn to_parts<'py>(&self, py: Python<'py>) -> PyParts<'py> {
        let p = py.detach(|| self.read().to_parts());
        (
            p.names,
            p.counts.into_pyarray(py),
            p.codes.into_pyarray(py),
            p.ids.into_pyarray(py),
            p.lru.into_pyarray(py),
            p.expires.into_pyarray(py),
            p.free.into_pyarray(py),
        )
    }

    /// Takes the write lock and keeps it until `_release_after_fork` (called from `os.register_at_fork`
    /// hooks): a lock that another thread held at the moment of `fork()` would stay held forever in the
    /// child, whose only thread is the forking one. Waiting here with the GIL held cannot deadlock:
    /// no thread holding this lock ever waits for the GIL.
    fn _hold_for_fork(slf: &Bound<'_, Self>) {
        let me = slf.get();
        let guard = me.write();
        // SAFETY: the guard borrows `me.inner`, which lives inside the Python object `slf`. The `Py`
        // stored beside the guard keeps that object alive (and Python objects never move), and the
        // guard is dropped first (field order of `HeldForFork`), so the borrow never outlives the lock.
        let guard: RwLockWriteGuard<'static, Index> = unsafe { std::mem::transmute(guard) };
        let held = HeldForFork {
            _guard: guard,
            owner: slf.clone().unbind(),
        };
        HELD_FOR_FORK.with(|h| h.borrow_mut().push(held));
    }

    /// Releases the lock `_hold_for_fork` took (call it in the parent and in the child).
    fn _release_after_fork(&self) {
        let me: *const HammingIndex = self;
        HELD_FOR_FORK.with(|h| {
            h.borrow_mut()
                .retain(|held| !std::ptr::eq(held.owner.get(), me));
        });
    }

    /// Rebuilds an index from `to_parts` arrays, validating every invariant (a `bsc.CacheFormatError` says
    /// which one failed). Contiguous arrays, such as views of a memory-mapped file, are read without a copy.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        py: Python<'_>,
        words: usize,
        max_entries: usize,
        with_expiry: bool,
        names: Vec<String>,
        counts: PyReadonlyArray1<'_, u32>,
        codes: PyReadonlyArray1<'_, u64>,
        ids: PyReadonlyArray1<'_, u64>,
        lru: PyReadonlyArray1<'_, u32>,
        expires: PyReadonlyArray1<'_, f64>,
        free: PyReadonlyArray1<'_, u64>,
    ) -> PyResult<Self> {
        let (counts, codes, ids) = (flat(&counts), flat(&codes), flat(&ids));
        let (lru, expires, free) = (flat(&lru), flat(&expires), flat(&free));
        let parts = IndexPartsRef {
            names: &names,
            counts: &counts,
            codes: &codes,
            ids: &ids,
            lru: &lru,
            expires: &expires,
            free: &free,
        };
        let index = py.detach(|| Index::from_parts(words, max_entries, with_expiry, parts))?;
        Ok(Self {
            inner: RwLock::new(index),
        })
    }
}
