//! `bsc._native.CacheWriter`: a `BinarySemanticCache`'s `put` of one entry as one Rust call.
//!
//! A put comes after a model call, when everything it touches is out of the CPU's caches: measured on
//! the 2-core Xeon after a 1M scan, the Python steps around the index's insert (the checks, the payload
//! lists, the publish and forget calls, their frames) cost about as much as the encode and the insert
//! together. Here the insert, the payload and the forgetting of evicted entries' payloads are one
//! call, which also checks what it takes as it is; the write lock stays with the caller.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::index::EntryId;
use crate::py_arrays::one_vector;
use crate::py_encoder::BinaryEncoder;
use crate::py_index::HammingIndex;
use crate::py_payloads::Payloads;
use crate::py_reader::GeneralPath;
use crate::rows::Shape;

#[pyclass(frozen, module = "bsc._native")]
pub struct CacheWriter {
    index: Py<HammingIndex>,
    encoder: Py<BinaryEncoder>,
    payloads: Py<Payloads>,
}

#[pymethods]
impl CacheWriter {
    #[new]
    fn new(index: Py<HammingIndex>, encoder: Py<BinaryEncoder>, payloads: Py<Payloads>) -> Self {
        Self {
            index,
            encoder,
            payloads,
        }
    }

    /// Encodes `embedding` and stores it in `namespace`, expiring at `expires_at`, with `response` and
    /// `metadata` (None, or metadata already frozen) as its payload; forgets the payloads of the
    /// entries evicted to make room and counts them. Returns the new id. The caller holds the cache's
    /// write lock.
    ///
    /// Raises `GeneralPath`, with nothing stored, for what the caller's checks must see first: an
    /// embedding that is not a C-contiguous float32/float64 array of shape `(dim,)`, a namespace that
    /// is not a `str` of valid Unicode, a response that is not a `str` or `bytes`. NaN, infinity and
    /// all-zero embeddings are refused here (`ValueError`, nothing stored), as by `HammingIndex.put`.
    fn put(
        &self,
        py: Python<'_>,
        embedding: &Bound<'_, PyAny>,
        response: Bound<'_, PyAny>,
        namespace: &Bound<'_, PyAny>,
        metadata: Bound<'_, PyAny>,
        expires_at: f64,
    ) -> PyResult<EntryId> {
        let general = || Err(GeneralPath::new_err(Vec::<EntryId>::new()));
        let encoder = self.encoder.get().encoder();
        let Ok(namespace) = namespace.cast::<PyString>() else {
            return general();
        };
        let Ok(name) = namespace.to_str() else {
            return general();
        };
        if !(response.is_instance_of::<PyString>() || response.is_instance_of::<PyBytes>()) {
            return general();
        }
        let mut x = Vec::new();
        if !one_vector(embedding, encoder.dim(), &mut x) {
            return general();
        }
        let index = self.index.get();
        let (ids, evicted) =
            index.encode_and_insert(py, encoder, name, &x, Shape::One, expires_at)?;
        let id = ids[0]; // one embedding went in, so one id came out
        let payloads = self.payloads.get();
        payloads.publish_one(id, response, metadata)?;
        payloads.forget_ids(&evicted);
        if !evicted.is_empty() {
            index.counters.record_removals(evicted.len() as u64, 0);
        }
        Ok(id)
    }
}
