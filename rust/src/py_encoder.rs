//! `bsc.BinaryEncoder`: extract the array, release the GIL, encode, hand back a NumPy array.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::encoder::{Encoder, MAX_WORDS};
use crate::py_arrays::Floats;
use crate::rows::{self, Shape};

/// `encode_rows`' result: codes `(n, words)`, int8 rows `(n, dim)` (width 0 when not asked for) and norms.
type EncodedRows<'py> = (
    Bound<'py, PyArray2<u64>>,
    Bound<'py, PyArray2<i8>>,
    Bound<'py, PyArray1<f32>>,
);

/// Seeded sign-random-projection encoder: float embeddings in, packed `uint64` codes out.
///
/// Bit `r` is 1 iff the exact dot product of the input (rounded to float32) with row `r` of the seeded
/// Gaussian matrix is positive; bit `r` lives in word `r // 64` at position `r % 64`. Identical to
/// `bsc.oracle.encode` on every input.
#[pyclass(frozen, module = "bsc._native")]
pub struct BinaryEncoder {
    inner: Encoder,
}

impl BinaryEncoder {
    /// The plain Rust encoder, for bindings that encode inside a larger call.
    pub(crate) fn encoder(&self) -> &Encoder {
        &self.inner
    }
}

#[pymethods]
impl BinaryEncoder {
    #[new]
    #[pyo3(signature = (dim, code_bits = 256, seed = 42))]
    fn new(dim: usize, code_bits: usize, seed: u64) -> PyResult<Self> {
        Ok(Self {
            inner: Encoder::new(dim, code_bits, seed)?,
        })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn code_bits(&self) -> usize {
        self.inner.code_bits()
    }

    #[getter]
    fn seed(&self) -> u64 {
        self.inner.seed()
    }

    /// Number of uint64 words per code (`code_bits // 64`).
    #[getter]
    fn words(&self) -> usize {
        self.inner.words()
    }

    /// Encodes one embedding (1-D, shape `(dim,)`) or a batch (2-D, shape `(n, dim)`).
    ///
    /// Returns uint64 codes of shape `(words,)` or `(n, words)`. Raises `TypeError` for anything but a
    /// float32/float64 NumPy array and `ValueError` for a wrong shape or a NaN/inf value.
    fn encode<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let floats = Floats::extract(x)?;
        let shape = floats.shape().to_vec();
        let data = floats.as_f32();
        let dim = self.inner.dim();
        let words = self.inner.words();
        let n = match shape.as_slice() {
            [d] if *d == dim => None,
            [n, d] if *d == dim && *n > 0 => Some(*n),
            [0, d] if *d == dim => {
                return Err(PyValueError::new_err(format!(
                    "expected at least one embedding, got shape (0, {dim})"
                )))
            }
            _ => {
                return Err(PyValueError::new_err(format!(
                    "expected shape ({dim},) or (n, {dim}), got {shape:?}"
                )))
            }
        };
        let Some(n) = n else {
            // One vector (a lookup) takes ~2 µs: not worth releasing and re-taking the GIL, nor a
            // vector handed over to NumPy (`from_slice` copies 32 bytes into an array NumPy owns).
            let mut code = [0u64; MAX_WORDS];
            let code = &mut code[..words];
            self.inner.encode_into(&data, code)?;
            return Ok(PyArray1::from_slice(py, code).into_any());
        };
        let codes = py.detach(|| {
            let mut out = vec![0u64; n * words];
            self.inner.encode_batch(&data, &mut out).map(|()| out)
        })?;
        Ok(codes.into_pyarray(py).reshape([n, words])?.into_any())
    }

    /// What a cache stores for a batch of embeddings (shape `(n, dim)`), computed before anything is
    /// stored: the codes and, when `with_rows`, each row's int8 rerank copy (the unit vector scaled so
    /// its peak is ±127, rounded half to even) and that copy's norm; equal to `bsc.oracle.quantize`.
    ///
    /// Raises `TypeError` for anything but a float32/float64 array and `ValueError` for a wrong shape,
    /// a NaN/inf value or an all-zero row.
    #[pyo3(signature = (x, with_rows = true))]
    fn encode_rows<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        with_rows: bool,
    ) -> PyResult<EncodedRows<'py>> {
        let floats = Floats::extract(x)?;
        let (dim, words) = (self.inner.dim(), self.inner.words());
        let n = match floats.shape() {
            [n, d] if *d == dim && *n > 0 => *n,
            shape => {
                return Err(PyValueError::new_err(format!(
                    "expected embeddings of shape (n, {dim}) with n > 0, got {shape:?}"
                )))
            }
        };
        let data = floats.as_f32();
        let out = py.detach(|| rows::encode(&self.inner, &data, Shape::Batch, with_rows))?;
        let width = if with_rows { dim } else { 0 };
        let norms = if with_rows { out.norms } else { vec![1.0; n] };
        Ok((
            out.codes.into_pyarray(py).reshape([n, words])?,
            out.rows.into_pyarray(py).reshape([n, width])?,
            norms.into_pyarray(py),
        ))
    }

    /// The `(code_bits, dim)` float32 projection matrix (a copy), for tests and reimplementations.
    fn projection_matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let arr = PyArray1::from_slice(py, self.inner.matrix());
        Ok(arr
            .reshape([self.inner.code_bits(), self.inner.dim()])?
            .into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "BinaryEncoder(dim={}, code_bits={}, seed={})",
            self.inner.dim(),
            self.inner.code_bits(),
            self.inner.seed()
        )
    }
}
