//! `bsc._native.xxh3_64`: the checksum of persisted sections, so `import bsc` needs no extra package.

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// XXH3-64 (seed 0) of a C-contiguous bytes-like object, computed with the GIL released.
#[pyfunction]
pub fn xxh3_64(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
    let buffer = PyBuffer::<u8>::get(data).map_err(|_| {
        PyTypeError::new_err("expected a bytes-like object (bytes, memoryview, uint8 array)")
    })?;
    if !buffer.is_c_contiguous() {
        return Err(PyTypeError::new_err("expected a C-contiguous buffer"));
    }
    let len = buffer.len_bytes();
    let ptr = buffer.buf_ptr() as usize;
    Ok(py.detach(move || {
        // SAFETY: `buffer` holds the exporter's buffer (and so its memory) alive until it is dropped
        // after this closure returns; the region is `len` contiguous bytes, and it is only read.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) };
        xxhash_rust::xxh3::xxh3_64(bytes)
    }))
}
