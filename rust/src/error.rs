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
    /// Stored data (a snapshot's parts) breaks an invariant: truncated, corrupted or forged
    /// (maps to `bsc.CacheFormatError`, a `ValueError`).
    #[error("{0}")]
    Corrupt(String),
    /// An allocation the input asked for could not be made (maps to `MemoryError`).
    #[error("{0}")]
    OutOfMemory(String),
}

pub type Result<T> = std::result::Result<T, BscError>;

/// A zeroed `Vec` of `len` elements, or `OutOfMemory` naming `what` when the allocator refuses
/// (instead of the abort an infallible allocation would cause).
pub fn try_zeroed<T: Clone + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        BscError::OutOfMemory(format!(
            "cannot allocate {len} elements ({} bytes) for the {what}",
            len.saturating_mul(std::mem::size_of::<T>())
        ))
    })?;
    v.resize(len, T::default());
    Ok(v)
}
