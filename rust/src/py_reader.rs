//! `bsc._native.CacheReader`: a `BinarySemanticCache`'s lookups, with everything but the query bound
//! once (index, encoder, payloads, `Hit` type, shortlist, radius, threshold, clock).
//!
//! A `get` at 100k entries streams 3.2 MB of codes, and afterwards every object a lookup touches is out
//! of the CPU's caches again: a Python frame, an attribute load or an argument to convert costs tens of
//! nanoseconds each, and they add up to microseconds beside a 30 µs scan. So `get` is one call here
//! with two arguments, and the hit is built without looking up its fields by name.

use std::cell::Cell;
use std::os::raw::c_int;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use crate::error::Result;
use crate::index::{Candidate, EntryId, Lookup};
use crate::py_arrays::{embedding_shape, one_vector, Floats};
use crate::py_encoder::BinaryEncoder;
use crate::py_index::HammingIndex;
use crate::py_payloads::Payloads;
use crate::rows::{self, Shape};

pyo3::create_exception!(
    bsc._native,
    GeneralPath,
    pyo3::exceptions::PyException,
    "Raised by `CacheReader.get` when the caller's general path must take over; its one argument is\nthe list of expired ids to purge first (empty for an input to check there)."
);

thread_local! {
    /// The query `get` copies out of the caller's array, kept per thread between lookups: a 1.5 KB
    /// allocation is too large for glibc's per-thread cache, and each one also made it consolidate
    /// its freed chunks. A lookup nested in another on this thread (from the clock) finds it taken and
    /// uses a new one.
    static QUERY: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The fields of `bsc.Hit`, in declaration order.
const HIT_FIELDS: [&str; 6] = [
    "response",
    "similarity",
    "distance",
    "id",
    "metadata",
    "namespace",
];

type DescrSet =
    unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut ffi::PyObject) -> c_int;

/// `bsc.Hit` (a dataclass with slots) and the member descriptor of each of its fields with that
/// descriptor's setter, looked up once: setting a slot through them is what `object.__setattr__` does
/// after finding the descriptor in the type, which is the part skipped.
struct HitType {
    ty: Py<PyType>,
    fields: Vec<(Py<PyAny>, DescrSet)>,
}

impl HitType {
    fn new(ty: &Bound<'_, PyType>) -> PyResult<Self> {
        let py = ty.py();
        let member = py.import("types")?.getattr("MemberDescriptorType")?;
        let own = ty.getattr("__dict__")?;
        let mut fields = Vec::with_capacity(HIT_FIELDS.len());
        for name in HIT_FIELDS {
            let descr = own
                .get_item(name)
                .ok()
                .filter(|d| d.is_instance(&member).unwrap_or(false));
            let Some(descr) = descr else {
                return Err(PyTypeError::new_err(format!(
                    "{} has no slot {name:?}: expected a dataclass with slots and the fields {HIT_FIELDS:?}",
                    ty.name()?
                )));
            };
            // SAFETY: `descr` is a live object, so its type is; a member descriptor's type is a static
            // type, whose slots `PyType_GetSlot` reads (Python 3.10+).
            let set =
                unsafe { ffi::PyType_GetSlot(ffi::Py_TYPE(descr.as_ptr()), ffi::Py_tp_descr_set) };
            if set.is_null() {
                return Err(PyTypeError::new_err(format!(
                    "the slot {name:?} cannot be set"
                )));
            }
            // SAFETY: `Py_tp_descr_set` holds a `descrsetfunc`.
            let set: DescrSet = unsafe { std::mem::transmute(set) };
            fields.push((descr.unbind(), set));
        }
        Ok(Self {
            ty: ty.clone().unbind(),
            fields,
        })
    }

    /// A new hit holding `values` in field order: a bare instance (what `object.__new__` allocates)
    /// with its slots set, i.e. the very object `Hit(...)` builds, without the dataclass's `__init__`.
    fn build<'py>(
        &self,
        py: Python<'py>,
        values: [Bound<'py, PyAny>; 6],
    ) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `ty` is a live type object; `PyType_GenericAlloc` returns a new reference (or NULL
        // with an exception set), which `from_owned_ptr_or_err` takes over.
        let hit = unsafe {
            Bound::from_owned_ptr_or_err(py, ffi::PyType_GenericAlloc(self.ty.as_ptr().cast(), 0))?
        };
        for ((descr, set), value) in self.fields.iter().zip(values) {
            // SAFETY: the descriptor, the hit (an instance of the descriptor's type) and the value are
            // live for the call; a setter does not steal references.
            if unsafe { set(descr.as_ptr(), hit.as_ptr(), value.as_ptr()) } != 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(hit)
    }
}

#[pyclass(frozen, module = "bsc._native")]
pub struct CacheReader {
    index: Py<HammingIndex>,
    encoder: Py<BinaryEncoder>,
    /// The cache's payloads: an id the index returns that has none there is being added or was just
    /// removed, and is skipped.
    payloads: Py<Payloads>,
    hit: HitType,
    /// Candidates a lookup scans for (at least its `k`).
    shortlist: usize,
    max_distance: u32,
    min_similarity: f64,
    rerank: bool,
    /// Called for the expiry clock when entries expire; None when they never do.
    clock: Option<Py<PyAny>>,
}

/// Whether a lookup records its use of the best hit and counts itself as a hit or a miss (`get`), or
/// leaves both alone (`search`).
#[derive(Clone, Copy, PartialEq)]
enum Use {
    Get,
    Search,
}

impl CacheReader {
    /// Encodes `embedding` and scans, with the GIL released; then builds up to `k` hits. With
    /// `Use::Get`, the first hit is marked as used (and the best candidate, when it is not that hit:
    /// its payload is not there). Returns the hits and the ids of expired candidates met; counting the
    /// lookup is the caller's.
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &[f32],
        namespace: &Bound<'py, PyString>,
        k: usize,
        used: Use,
    ) -> PyResult<(Vec<Bound<'py, PyAny>>, Vec<EntryId>)> {
        let name = namespace.to_str()?;
        let now = match &self.clock {
            Some(clock) => clock.bind(py).call0()?.extract::<f64>()?,
            None => 0.0,
        };
        let encoder = self.encoder.get().encoder();
        let index = self.index.get();
        let payloads = self.payloads.get();
        let (found, expired) = py.detach(|| -> Result<_> {
            let query = rows::encode_query(encoder, x, self.rerank)?;
            let answer = index.read().lookup(&Lookup {
                namespace: name,
                code: query.code(),
                unit: self.rerank.then_some(query.unit.as_slice()),
                k: k.max(self.shortlist),
                max_distance: self.max_distance,
                now,
                min_similarity: self.min_similarity,
            })?;
            if let Some(best) = answer.0.first() {
                // Its payload's memory is on its way while the GIL is taken back.
                payloads.prefetch(best.id);
                // Touched here, before its payload is looked at, to save a second release of the GIL:
                // the best candidate nearly always is the first hit (else that one is touched below).
                if used == Use::Get {
                    index.touch_later(best.id);
                }
            }
            Ok(answer)
        })?;
        let hits = self.hits(py, &found, namespace, k)?;
        if let (Use::Get, Some((_, id))) = (used, hits.first()) {
            if *id != found[0].id {
                let id = *id;
                py.detach(|| index.touch_later(id));
            }
        }
        Ok((hits.into_iter().map(|(hit, _)| hit).collect(), expired))
    }

    /// Up to `k` hits from the candidates whose payload is there, with their ids.
    fn hits<'py>(
        &self,
        py: Python<'py>,
        found: &[Candidate],
        namespace: &Bound<'py, PyString>,
        k: usize,
    ) -> PyResult<Vec<(Bound<'py, PyAny>, EntryId)>> {
        let payloads = self.payloads.get();
        let mut hits = Vec::with_capacity(k.min(found.len()));
        for candidate in found {
            if hits.len() == k {
                break;
            }
            let Some((response, metadata)) = payloads.get(py, candidate.id) else {
                continue;
            };
            let hit = self.hit.build(
                py,
                [
                    response,
                    candidate.similarity.into_pyobject(py)?.into_any(),
                    candidate.distance.into_pyobject(py)?.into_any(),
                    candidate.id.into_pyobject(py)?.into_any(),
                    metadata,
                    namespace.clone().into_any(),
                ],
            )?;
            hits.push((hit, candidate.id));
        }
        Ok(hits)
    }
}

#[pymethods]
impl CacheReader {
    #[new]
    #[pyo3(signature = (index, encoder, payloads, hit_type, *, shortlist, max_distance, min_similarity, rerank, clock))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: Py<HammingIndex>,
        encoder: Py<BinaryEncoder>,
        payloads: Py<Payloads>,
        hit_type: &Bound<'_, PyType>,
        shortlist: usize,
        max_distance: u32,
        min_similarity: f64,
        rerank: bool,
        clock: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        Ok(Self {
            index,
            encoder,
            payloads,
            hit: HitType::new(hit_type)?,
            shortlist,
            max_distance,
            min_similarity,
            rerank,
            clock,
        })
    }

    /// `BinarySemanticCache.get` when nothing needs Python: the best hit or None, its use recorded
    /// and the lookup counted. Raises `GeneralPath`, with nothing counted, when the caller's general
    /// path must take over, holding the ids of the expired candidates the scan met (to purge before it
    /// retries), or none for an embedding that is not a float32/float64 array of shape `(dim,)` or a
    /// namespace that is not a str (for the general path's checks and messages). An exception rather
    /// than a return value that the caller tests: a `try` costs nothing until it catches.
    fn get<'py>(
        &self,
        py: Python<'py>,
        embedding: &Bound<'py, PyAny>,
        namespace: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let general = |expired: Vec<EntryId>| Err(GeneralPath::new_err(expired));
        let dim = self.encoder.get().encoder().dim();
        let Ok(namespace) = namespace.cast_exact::<PyString>() else {
            return general(Vec::new());
        };
        if namespace.to_str().is_err() {
            return general(Vec::new());
        }
        let mut x = QUERY.take();
        let found =
            one_vector(embedding, dim, &mut x).then(|| self.run(py, &x, namespace, 1, Use::Get));
        QUERY.set(x);
        let Some(found) = found else {
            return general(Vec::new());
        };
        let (mut hits, expired) = found?;
        if !expired.is_empty() {
            return general(expired);
        }
        self.index.get().counters.record_lookup(!hits.is_empty());
        Ok(hits.pop().unwrap_or_else(|| py.None().into_bound(py)))
    }

    /// Up to `k` hits for `embedding` in `namespace`, best first, and the ids of expired candidates
    /// for the caller to purge. With `touch_and_count` (a `get`), the first hit's use is recorded and
    /// the lookup counted as a hit or a miss, unless the caller has to retry it: no hit, and expired
    /// candidates that may have crowded out live ones.
    fn lookup<'py>(
        &self,
        py: Python<'py>,
        embedding: &Bound<'py, PyAny>,
        namespace: &Bound<'py, PyString>,
        k: usize,
        touch_and_count: bool,
    ) -> PyResult<(Vec<Bound<'py, PyAny>>, Vec<EntryId>)> {
        let used = if touch_and_count {
            Use::Get
        } else {
            Use::Search
        };
        let floats = Floats::extract(embedding)?;
        let dim = self.encoder.get().encoder().dim();
        if embedding_shape(floats.shape(), dim)? != Shape::One {
            return Err(PyValueError::new_err(format!(
                "expected one embedding of shape ({dim},)"
            )));
        }
        let (hits, expired) = self.run(py, &floats.as_f32(), namespace, k, used)?;
        if touch_and_count && (!hits.is_empty() || expired.is_empty()) {
            self.index.get().counters.record_lookup(!hits.is_empty());
        }
        Ok((hits, expired))
    }
}
