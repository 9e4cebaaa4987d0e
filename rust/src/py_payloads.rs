//! `bsc._native.Payloads`: each entry's response and metadata, by the slot (handle) of its id.
//!
//! What a hit reads after the scan is its payload, and at 100k entries and up that memory is cold: in a
//! dict keyed by id it is a chain of dependent reads (the hash slot, the entry, the key to compare, the
//! value tuple, then the response), each waiting for the last. Here the slot is found from the id by
//! arithmetic, and it holds the response and metadata pointers themselves, so a lookup can prefetch all
//! three while it still holds no GIL (`prefetch`), and the reads after it wait for one round trip.
//!
//! Every change and every reference taken happens with the GIL held (the cache's writers, under its
//! write lock), so the GIL orders them; the one access without the GIL is `prefetch`, which only hints
//! addresses to the CPU and dereferences nothing. Slots are kept in chunks that are allocated when first
//! needed and never move or go away before the store does, so the address `prefetch` computes is always
//! memory the store owns.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed};

use pyo3::exceptions::{PyKeyError, PyMemoryError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::index::{EntryId, MAX_ENTRIES};

/// Slots per chunk: 4,096 (96 KiB: from the allocator's heap, below the size it maps memory for, so
/// that the chunks do not move where the index's large code arrays get mapped), and 4,096 chunks cover
/// the 24-bit handles.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = (MAX_ENTRIES >> CHUNK_BITS) + 1;
/// No entry: ids are below 2^64 − 1 (40-bit generation, 24-bit handle, `index::make_id`).
const VACANT: u64 = u64::MAX;

/// One entry's payload: owned references (null metadata is None), valid while `id` names the entry.
struct Slot {
    id: AtomicU64,
    response: AtomicPtr<ffi::PyObject>,
    metadata: AtomicPtr<ffi::PyObject>,
}

impl Slot {
    /// Puts `response` and `metadata` (owned references; null metadata is None) under `id`, releasing
    /// the references the slot held. The caller holds the GIL.
    fn replace(&self, id: u64, response: *mut ffi::PyObject, metadata: *mut ffi::PyObject) {
        let old = [
            self.response.swap(response, Relaxed),
            self.metadata.swap(metadata, Relaxed),
        ];
        self.id.store(id, Relaxed);
        for p in old {
            // SAFETY: the slot owned these references, and the GIL is held.
            unsafe { ffi::Py_XDECREF(p) };
        }
    }

    fn vacate(&self) {
        self.replace(VACANT, ptr::null_mut(), ptr::null_mut());
    }
}

type Chunk = [Slot; CHUNK];
/// `(response, metadata)` of one entry.
type Payload<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);
/// Responses and metadata of several entries, in order.
type Rows<'py> = (Vec<Bound<'py, PyAny>>, Vec<Bound<'py, PyAny>>);

#[pyclass(frozen, module = "bsc._native")]
pub struct Payloads {
    chunks: Box<[AtomicPtr<Chunk>]>,
}

fn handle(id: EntryId) -> usize {
    (id & MAX_ENTRIES as u64) as usize
}

impl Payloads {
    /// The slot of `id`'s handle, if its chunk exists.
    fn slot(&self, id: EntryId) -> Option<&Slot> {
        let h = handle(id);
        let chunk = self.chunks[h >> CHUNK_BITS].load(Relaxed);
        // SAFETY: a non-null chunk pointer came from `Box::into_raw` and lives as long as `self`.
        (!chunk.is_null()).then(|| unsafe { &(*chunk)[h & (CHUNK - 1)] })
    }

    /// The slot of `id`'s handle, allocating its chunk (GIL held: no other thread allocates it too).
    fn slot_or_new(&self, id: EntryId) -> PyResult<&Slot> {
        let at = &self.chunks[handle(id) >> CHUNK_BITS];
        if at.load(Relaxed).is_null() {
            let mut chunk: Vec<Slot> = Vec::new();
            chunk.try_reserve_exact(CHUNK).map_err(|_| {
                PyMemoryError::new_err("cannot allocate 96 KiB for the payloads of 4,096 entries")
            })?;
            chunk.extend((0..CHUNK).map(|_| Slot {
                id: AtomicU64::new(VACANT),
                response: AtomicPtr::new(ptr::null_mut()),
                metadata: AtomicPtr::new(ptr::null_mut()),
            }));
            let Ok(chunk) = Box::<Chunk>::try_from(chunk.into_boxed_slice()) else {
                unreachable!("the chunk was filled with CHUNK slots");
            };
            at.store(Box::into_raw(chunk), Relaxed);
        }
        Ok(self.slot(id).expect("the chunk was just allocated"))
    }

    /// Hints the CPU to bring in `id`'s slot, response and metadata: for a lookup, between its scan and
    /// the GIL. Reads only atomics; a stale or vacant slot just wastes the hint.
    pub(crate) fn prefetch(&self, id: EntryId) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slot(id) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let hint = |p: *const i8| {
                // SAFETY: a prefetch never faults, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p) }
            };
            hint((slot as *const Slot).cast());
            hint(slot.response.load(Relaxed).cast_const().cast());
            hint(slot.metadata.load(Relaxed).cast_const().cast());
        }
    }

    /// `(response, metadata)` of the live entry `id`, or None when its slot holds another id or none
    /// (the entry is being added or was just removed).
    pub(crate) fn get<'py>(&self, py: Python<'py>, id: EntryId) -> Option<Payload<'py>> {
        let slot = self.slot(id).filter(|s| s.id.load(Relaxed) == id)?;
        // SAFETY: with the GIL held the slot's references are alive (they change only under the GIL);
        // `from_borrowed_ptr` takes a new reference of its own.
        let take = |p: *mut ffi::PyObject| unsafe {
            if p.is_null() {
                py.None().into_bound(py)
            } else {
                Bound::from_borrowed_ptr(py, p)
            }
        };
        Some((
            take(slot.response.load(Relaxed)),
            take(slot.metadata.load(Relaxed)),
        ))
    }

    /// Records the payload of `id` (an id the index just handed out, not `VACANT`), replacing whatever
    /// its slot held; metadata None is kept as no metadata. The GIL is held (the `Bound`s prove it).
    pub(crate) fn publish_one(
        &self,
        id: EntryId,
        response: Bound<'_, PyAny>,
        metadata: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let metadata = if metadata.is_none() {
            ptr::null_mut()
        } else {
            metadata.into_ptr()
        };
        self.slot_or_new(id)?
            .replace(id, response.into_ptr(), metadata);
        Ok(())
    }

    /// Forgets the payloads of `ids`, skipping those whose slot holds another id. With the GIL held.
    pub(crate) fn forget_ids(&self, ids: &[EntryId]) {
        for &id in ids {
            if let Some(slot) = self.slot(id).filter(|s| s.id.load(Relaxed) == id) {
                slot.vacate();
            }
        }
    }

    /// The slots of the chunks allocated so far.
    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.chunks.iter().flat_map(|chunk| {
            let chunk = chunk.load(Relaxed);
            // SAFETY: a non-null chunk pointer lives as long as `self`.
            (!chunk.is_null())
                .then(|| unsafe { &*chunk })
                .into_iter()
                .flatten()
        })
    }
}

#[pymethods]
impl Payloads {
    #[new]
    fn new() -> Self {
        Self {
            chunks: (0..CHUNKS)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        }
    }

    /// Records the payloads of entries just added: `responses[i]` and `metadata[i]` (None for none)
    /// under `ids[i]`, replacing whatever the slot held.
    fn publish(
        &self,
        _py: Python<'_>,
        ids: Vec<EntryId>,
        responses: Vec<Bound<'_, PyAny>>,
        metadata: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if responses.len() != ids.len() || metadata.len() != ids.len() {
            return Err(PyValueError::new_err(format!(
                "{} ids, {} responses and {} metadata items",
                ids.len(),
                responses.len(),
                metadata.len()
            )));
        }
        if let Some(id) = ids.iter().find(|&&id| id == VACANT) {
            return Err(PyValueError::new_err(format!("{id} is not an entry id")));
        }
        for ((id, response), meta) in ids.into_iter().zip(responses).zip(metadata) {
            self.publish_one(id, response, meta)?;
        }
        Ok(())
    }

    /// Forgets the payloads of removed entries (ids whose slot holds something else are skipped).
    fn forget(&self, _py: Python<'_>, ids: Vec<EntryId>) {
        self.forget_ids(&ids);
    }

    /// Forgets every payload.
    fn clear(&self, _py: Python<'_>) {
        self.slots()
            .filter(|s| s.id.load(Relaxed) != VACANT)
            .for_each(Slot::vacate);
    }

    /// `(response, metadata)` of `id`, or None.
    #[pyo3(name = "get")]
    fn py_get<'py>(&self, py: Python<'py>, id: EntryId) -> Option<Payload<'py>> {
        self.get(py, id)
    }

    /// The responses and metadata of `ids`, in order (a snapshot's rows). Raises `KeyError` for an id
    /// without a payload.
    fn rows<'py>(&self, py: Python<'py>, ids: Vec<EntryId>) -> PyResult<Rows<'py>> {
        let (mut responses, mut metadata) =
            (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
        for id in ids {
            let (r, m) = self.get(py, id).ok_or_else(|| PyKeyError::new_err(id))?;
            responses.push(r);
            metadata.push(m);
        }
        Ok((responses, metadata))
    }
}

impl Drop for Payloads {
    fn drop(&mut self) {
        // A pyclass is dropped in its `tp_dealloc`, with the GIL held.
        self.slots().for_each(Slot::vacate);
        for chunk in self.chunks.iter() {
            let chunk = chunk.swap(ptr::null_mut(), Relaxed);
            if !chunk.is_null() {
                // SAFETY: the pointer came from `Box::into_raw` and is taken out of the store here, once.
                drop(unsafe { Box::from_raw(chunk) });
            }
        }
    }
}
