//! Rust core of `bsc`: the seeded sign-random-projection encoder and the Hamming scan.
//!
//! The plain modules know nothing about Python; `py_*` modules are the thin PyO3 binding layer.

pub mod bert;
pub mod counters;
pub mod encoder;
pub mod error;
pub mod eviction;
pub mod index;
pub mod memory;
pub mod parallel;
pub mod projection;
pub mod rows;
pub mod scan;
pub mod touches;

#[cfg(feature = "python")]
mod py_arrays;
#[cfg(feature = "python")]
mod py_bert;
#[cfg(feature = "python")]
mod py_checksum;
#[cfg(feature = "python")]
mod py_encoder;
#[cfg(feature = "python")]
mod py_errors;
#[cfg(feature = "python")]
mod py_index;
#[cfg(feature = "python")]
mod py_payloads;
#[cfg(feature = "python")]
mod py_reader;
#[cfg(feature = "python")]
mod py_scan;
#[cfg(feature = "python")]
mod py_writer;

#[cfg(feature = "python")]
#[pyo3::pymodule]
mod _native {
    #[pymodule_export]
    use crate::py_bert::BertModel;
    #[pymodule_export]
    use crate::py_checksum::xxh3_64;
    #[pymodule_export]
    use crate::py_encoder::BinaryEncoder;
    #[pymodule_export]
    use crate::py_errors::CacheFormatError;
    #[pymodule_export]
    use crate::py_index::HammingIndex;
    #[pymodule_export]
    use crate::py_payloads::Payloads;
    #[pymodule_export]
    use crate::py_reader::{CacheReader, GeneralPath};
    #[pymodule_export]
    use crate::py_scan::{cpu_features, hamming_search, thread_count};
    #[pymodule_export]
    use crate::py_writer::CacheWriter;
}
