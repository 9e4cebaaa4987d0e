//! `bsc._native.CacheWriter`: a `BinarySemanticCache`'s writes, each one Rust call: the insert, the
//! payloads, and forgetting and counting the entries evicted to make room.
//!
//! A put comes after a model call, when everything it touches is out of the CPU's caches: measured on
//! the 2-core Xeon after a 1M scan, the Python steps around the index's insert (the checks, the payload
//! lists, the publish and forget calls, their frames) cost about as much as the encode and the insert
//! together. Every write of the cache goes through here, so the bookkeeping after an insert has one
//! owner; the write lock stays with the caller.

use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::index::EntryId;
use crate::py_arrays::{embedding_shape, one_vector, Floats};
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

/// A response and its metadata (None, or metadata already frozen).
type Payload<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

impl CacheWriter {
    /// After an insert: records the payloads of the new `ids` in order, forgets those of the `evicted`
    /// and counts them as evictions. Returns the ids.
    fn publish<'py>(
        &self,
        (ids, evicted): (Vec<EntryId>, Vec<EntryId>),
        payloads: impl IntoIterator<Item = Payload<'py>>,
    ) -> PyResult<Vec<EntryId>> {
        let store = self.payloads.get();
        // The evicted first: an allocation failure below must not leave their payloads behind.
        store.forget_ids(&evicted);
        if !evicted.is_empty() {
            self.index
                .get()
                .counters
                .record_removals(evicted.len() as u64, 0);
        }
        let mut published = 0;
        for (&id, (response, metadata)) in ids.iter().zip(payloads) {
            store.publish_one(id, response, metadata)?;
            published += 1;
        }
        debug_assert_eq!(
            published,
            ids.len(),
            "one payload per id (the callers check the counts)"
        );
        Ok(ids)
    }
}

/// Refuses, before anything is stored, payload lists that do not match the `rows` going in.
fn check_counts(
    rows: usize,
    responses: &[Bound<'_, PyAny>],
    metadata: &[Bound<'_, PyAny>],
) -> PyResult<()> {
    if responses.len() != rows || metadata.len() != rows {
        return Err(PyValueError::new_err(format!(
            "{rows} rows, {} responses and {} metadata items: expected one of each per row",
            responses.len(),
            metadata.len()
        )));
    }
    Ok(())
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

    /// `put`: encodes `embedding` and stores it in `namespace`, expiring at `expires_at`, with
    /// `response` and `metadata` (None, or metadata already frozen) as its payload. Returns the new id.
    ///
    /// Raises `GeneralPath`, with nothing stored, for what the caller's checks must see first: an
    /// embedding that is not a C-contiguous float32/float64 array of shape `(dim,)`, a namespace that
    /// is not a `str` of valid Unicode, a response that is not a `str` or `bytes`. NaN, infinity and
    /// all-zero embeddings are refused here (`ValueError`, nothing stored), as by `put_many`.
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
        let inserted =
            self.index
                .get()
                .encode_and_insert(py, encoder, name, &x, Shape::One, expires_at)?;
        let ids = self.publish(inserted, [(response, metadata)])?;
        Ok(ids[0]) // one embedding went in, so one id came out
    }

    /// `put_many`: encodes the rows of `embeddings` (float32/float64, `(n, dim)`) and stores them in
    /// `namespace` with `responses[i]` and `metadata[i]` (checked and frozen by the caller). Nothing is
    /// stored when a row is NaN/inf or all zero, or the counts differ (`ValueError`). Returns the ids.
    fn put_many<'py>(
        &self,
        py: Python<'py>,
        embeddings: &Bound<'py, PyAny>,
        responses: Vec<Bound<'py, PyAny>>,
        namespace: &str,
        metadata: Vec<Bound<'py, PyAny>>,
        expires_at: f64,
    ) -> PyResult<Vec<EntryId>> {
        let encoder = self.encoder.get().encoder();
        let floats = Floats::extract(embeddings)?;
        let shape = embedding_shape(floats.shape(), encoder.dim())?;
        let rows = if shape == Shape::One {
            1
        } else {
            floats.shape()[0]
        };
        check_counts(rows, &responses, &metadata)?;
        let inserted = self.index.get().encode_and_insert(
            py,
            encoder,
            namespace,
            &floats.as_f32(),
            shape,
            expires_at,
        )?;
        self.publish(inserted, responses.into_iter().zip(metadata))
    }

    /// `insert_encoded`: stores codes `(n, words)` and int8 rerank rows `(n, dim)` encoded elsewhere in
    /// `namespace` with their payloads (metadata already read-only). Nothing is stored when they do not
    /// fit the index or the counts differ (`ValueError`). Returns the ids.
    #[allow(clippy::too_many_arguments)]
    fn insert_encoded<'py>(
        &self,
        py: Python<'py>,
        namespace: &str,
        codes: PyReadonlyArray2<'py, u64>,
        rows: PyReadonlyArray2<'py, i8>,
        expires_at: f64,
        responses: Vec<Bound<'py, PyAny>>,
        metadata: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<EntryId>> {
        check_counts(codes.shape()[0], &responses, &metadata)?;
        let inserted = self
            .index
            .get()
            .insert_encoded_rows(py, namespace, &codes, &rows, expires_at)?;
        self.publish(inserted, responses.into_iter().zip(metadata))
    }
}
