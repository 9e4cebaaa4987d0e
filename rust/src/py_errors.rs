//! The one place where Rust errors become Python exceptions.

use pyo3::exceptions::{PyMemoryError, PyValueError};
use pyo3::PyErr;

use crate::error::BscError;

pyo3::create_exception!(
    bsc._native,
    CacheFormatError,
    PyValueError,
    "A cache file is not a valid snapshot: truncated, corrupted, foreign, of another format version or\nbyte order. The message names the file and the part that is wrong."
);

impl From<BscError> for PyErr {
    fn from(err: BscError) -> PyErr {
        match err {
            BscError::InvalidArgument(msg) | BscError::Shape(msg) | BscError::NonFinite(msg) => {
                PyValueError::new_err(msg)
            }
            BscError::Corrupt(msg) => CacheFormatError::new_err(msg),
            BscError::OutOfMemory(msg) => PyMemoryError::new_err(msg),
        }
    }
}
