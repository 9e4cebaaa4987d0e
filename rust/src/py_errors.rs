//! The one place where Rust errors become Python exceptions.

use pyo3::exceptions::PyValueError;
use pyo3::PyErr;

use crate::error::BscError;

impl From<BscError> for PyErr {
    fn from(err: BscError) -> PyErr {
        match err {
            BscError::InvalidArgument(msg) | BscError::Shape(msg) | BscError::NonFinite(msg) => {
                PyValueError::new_err(msg)
            }
        }
    }
}
