//! `bsc._native.HammingIndex`: the code store, shared safely between Python threads.
//!
//! Lookups take a read lock and run with the GIL released, so concurrent `get`s scan in parallel; a hit's
//! use is recorded for the eviction policy without a lock (`touches`) and applied when the write lock is
//! next taken; inserts, deletes and explicit touches take the write lock for O(1) work. Locks are only
//! ever taken with the GIL released, so a thread waiting for one never blocks the interpreter.

use std::cell::RefCell;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use crate::counters::{CounterValues, Counters};
use crate::encoder::Encoder;
use crate::error::{BscError, Result};
use crate::eviction::Policy;
use crate::index::{EntryId, Index, IndexPartsRef};
use crate::py_arrays::row_major;
use crate::rows::{self, Shape};
use crate::touches::Touches;

/// `([(id, distance)], expired_ids)`.
type SearchResult = (Vec<(EntryId, u32)>, Vec<EntryId>);
/// `(ids, evicted_ids)`.
type Inserted = (Vec<EntryId>, Vec<EntryId>);

#[pyclass(frozen, module = "bsc._native")]
pub struct HammingIndex {
    inner: RwLock<Index>,
    /// The cache's hit/miss/eviction/expiration counters: beside the lock, not under it.
    pub(crate) counters: Counters,
    /// Uses recorded by lookups, applied to the eviction order whenever the write lock is taken.
    touches: Touches,
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
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }
    /// The write lock, with the uses lookups recorded since it was last taken applied first, so that
    /// whatever the caller does sees them.
    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        let mut ix = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        self.touches.drain(|id| {
            ix.touch(id);
        });
        ix
    }
    /// The read lock, after the recorded uses are applied: for readers of the eviction order.
    fn read_settled(&self) -> RwLockReadGuard<'_, Index> {
        drop(self.write());
        self.read()
    }
    /// Marks `id` as used for eviction without waiting for the write lock (see `touches`).
    pub(crate) fn touch_later(&self, id: EntryId) {
        if !self.touches.record(id) {
            self.write().touch(id);
        }
    }

    /// `CacheWriter`'s puts: encodes `data` (one embedding or a batch, `shape` says which, for messages) with
    /// `encoder` and stores it in `namespace`, with the GIL released for both.
    pub(crate) fn encode_and_insert(
        &self,
        py: Python<'_>,
        encoder: &Encoder,
        namespace: &str,
        data: &[f32],
        shape: Shape,
        expires_at: f64,
    ) -> PyResult<Inserted> {
        let with_rows = self.read().row_dim() > 0;
        Ok(py.detach(|| {
            let encoded = rows::encode(encoder, data, shape, with_rows)?;
            let mut ix = self.write();
            if ix.words() != encoder.words() || (with_rows && ix.row_dim() != encoder.dim()) {
                return Err(BscError::Shape(format!(
                    "an encoder of {} bits and dim {} does not fit this index ({} words, rows of {})",
                    encoder.code_bits(),
                    encoder.dim(),
                    ix.words(),
                    ix.row_dim()
                )));
            }
            ix.insert_rows(namespace, &encoded.codes, &encoded.rows, expires_at)
        })?)
    }

    /// Stores rows that were encoded elsewhere (`BinaryEncoder.encode_rows`, or decoded from a shared
    /// store): codes `(n, words)` and int8 rerank rows `(n, dim)`, which an index without rerank rows
    /// ignores; both checked against the index, with the GIL released.
    pub(crate) fn insert_encoded_rows(
        &self,
        py: Python<'_>,
        namespace: &str,
        codes: &PyReadonlyArray2<'_, u64>,
        rows: &PyReadonlyArray2<'_, i8>,
        expires_at: f64,
    ) -> PyResult<Inserted> {
        let (n, words) = (codes.shape()[0], codes.shape()[1]);
        let width = rows.shape()[1];
        let (codes, rows) = (row_major(codes), row_major(rows));
        Ok(py.detach(|| {
            let mut ix = self.write();
            ix.check_width(words)?;
            // An index without rerank rows ignores the ones given (a store's peers may rerank).
            let keep: &[i8] = if ix.row_dim() == 0 { &[] } else { &rows };
            if ix.row_dim() > 0 && (width != ix.row_dim() || rows.len() != n * width) {
                return Err(BscError::Shape(format!(
                    "expected {n} rerank rows of {} values, got shape ({}, {width})",
                    ix.row_dim(),
                    rows.len() / width.max(1)
                )));
            }
            ix.insert_rows(namespace, &codes, keep, expires_at)
        })?)
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
    #[pyo3(signature = (words, max_entries, with_expiry = false, eviction = "lru", radius = 0, row_dim = 0))]
    fn new(
        words: usize,
        max_entries: usize,
        with_expiry: bool,
        eviction: &str,
        radius: u32,
        row_dim: usize,
    ) -> PyResult<Self> {
        let mut index = Index::new(words, max_entries, with_expiry)?.with_rows(row_dim)?;
        index.set_eviction(Policy::from_name(eviction)?, radius);
        Ok(Self {
            inner: RwLock::new(index),
            counters: Counters::default(),
            touches: Touches::default(),
        })
    }

    /// Counts one lookup as a hit or a miss (see `counters`).
    fn record_lookup(&self, hit: bool) {
        self.counters.record_lookup(hit);
    }

    /// Counts entries evicted to make room and entries dropped because their TTL ran out.
    fn record_removals(&self, evictions: u64, expirations: u64) {
        self.counters.record_removals(evictions, expirations);
    }

    /// `(hits, misses, evictions, expirations)` as counted so far.
    fn counters(&self) -> CounterValues {
        self.counters.values()
    }

    /// Replaces the counters (a cache loaded from a snapshot carries on from the saved values).
    fn set_counters(&self, values: CounterValues) {
        self.counters.set(values);
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

    /// Length of the int8 rerank row kept per entry (0: codes only).
    #[getter]
    fn row_dim(&self) -> usize {
        self.read().row_dim()
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
        let code = row_major(&code);
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
        let flat = row_major(&codes);
        Ok(py.detach(|| {
            let mut ix = self.write();
            ix.check_width(words)?;
            ix.insert_rows(namespace, &flat, &[], expires_at)
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
        let query = row_major(&query);
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
        py.detach(|| self.read_settled().lru_order())
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
        let p = py.detach(|| self.read_settled().to_parts());
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

    /// Everything a snapshot needs, under one read lock: the `to_parts` arrays, then the handle of each
    /// row (where its per-handle data goes), and the int8 rerank rows `(handles, row_dim)` and norms by
    /// handle (empty without rows).
    #[allow(clippy::type_complexity)]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        PyParts<'py>,
        Bound<'py, PyArray1<u32>>,
        Bound<'py, PyArray2<i8>>,
        Bound<'py, PyArray1<f32>>,
    )> {
        let (p, rows, norms, dim) = py.detach(|| {
            let ix = self.read_settled();
            let (rows, norms) = ix.rows_by_handle();
            (ix.to_parts(), rows.to_vec(), norms.to_vec(), ix.row_dim())
        });
        let handles = Index::handles_of(&p.ids).into_pyarray(py);
        let count = rows.len().checked_div(dim).unwrap_or(0);
        Ok((
            (
                p.names,
                p.counts.into_pyarray(py),
                p.codes.into_pyarray(py),
                p.ids.into_pyarray(py),
                p.lru.into_pyarray(py),
                p.expires.into_pyarray(py),
                p.free.into_pyarray(py),
            ),
            handles,
            rows.into_pyarray(py).reshape([count, dim])?,
            norms.into_pyarray(py),
        ))
    }

    /// The handle (slot number, the low 24 bits) of each id, for data stored by handle beside an index.
    #[staticmethod]
    fn handles_of<'py>(
        py: Python<'py>,
        ids: PyReadonlyArray1<'_, u64>,
    ) -> Bound<'py, PyArray1<u32>> {
        Index::handles_of(&row_major(&ids)).into_pyarray(py)
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
    ///
    /// With `row_dim` > 0 the index also gets its int8 rerank rows, `rows` of shape `(handles, row_dim)`
    /// and `norms` by handle; a norm that is not its row's is refused.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (words, max_entries, with_expiry, names, counts, codes, ids, lru, expires, free, row_dim = 0, rows = None, norms = None))]
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
        row_dim: usize,
        rows: Option<PyReadonlyArray2<'_, i8>>,
        norms: Option<PyReadonlyArray1<'_, f32>>,
    ) -> PyResult<Self> {
        let (counts, codes, ids) = (row_major(&counts), row_major(&codes), row_major(&ids));
        let (lru, expires, free) = (row_major(&lru), row_major(&expires), row_major(&free));
        let rows = rows.as_ref().map(row_major);
        let norms = norms.as_ref().map(row_major);
        let parts = IndexPartsRef {
            names: &names,
            counts: &counts,
            codes: &codes,
            ids: &ids,
            lru: &lru,
            expires: &expires,
            free: &free,
        };
        let index = py.detach(|| -> Result<Index> {
            let mut index = Index::from_parts(words, max_entries, with_expiry, parts)?;
            if row_dim > 0 || rows.is_some() || norms.is_some() {
                index.set_rows(
                    row_dim,
                    rows.as_deref().unwrap_or_default(),
                    norms.as_deref().unwrap_or_default(),
                )?;
            }
            Ok(index)
        })?;
        Ok(Self {
            inner: RwLock::new(index),
            counters: Counters::default(),
            touches: Touches::default(),
        })
    }
}
