//! Python bindings of the Hamming scan (placeholder until the SIMD kernels land).

use pyo3::prelude::*;
