//! The one error type of the Rust core. The binding layer maps each variant to a Python exception.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BscError {
    /// An argument is outside what the function accepts (maps to `ValueError`).
    #[error("{0}")]
    InvalidArgument(String),
    /// Input data has the wrong shape for this encoder or index (maps to `ValueError`).
    #[error("{0}")]
    Shape(String),
    /// Input contains NaN or infinity (maps to `ValueError`).
    #[error("{0}")]
    NonFinite(String),
}

pub type Result<T> = std::result::Result<T, BscError>;
