//! `bsc.BinaryEncoder`: extract the array, release the GIL, encode, hand back a NumPy array.

use std::borrow::Cow;

use numpy::{Element, IntoPyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::encoder::Encoder;

/// Seeded sign-random-projection encoder: float embeddings in, packed `uint64` codes out.
///
/// Bit `r` is 1 iff the exact dot product of the input (rounded to float32) with row `r` of the seeded
/// Gaussian matrix is positive; bit `r` lives in word `r // 64` at position `r % 64`. Identical to
/// `bsc.oracle.encode` on every input.
#[pyclass(frozen, module = "bsc._native")]
pub struct BinaryEncoder {
    inner: Encoder,
}

/// Input rows as float32, borrowed when the array already is C-contiguous float32.
fn rows_f32<'a, T: Element + Copy + 'static>(
    arr: &'a numpy::PyReadonlyArrayDyn<'_, T>,
    cast: fn(T) -> f32,
) -> Cow<'a, [f32]> {
    // `as_slice` also accepts Fortran order, whose memory order is not the row order we need.
    match arr.as_slice().ok().filter(|_| arr.is_c_contiguous()) {
        Some(s) if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() => {
            // SAFETY: T is f32 (checked through TypeId just above), so the slice has the same layout.
            Cow::Borrowed(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
        }
        Some(s) => Cow::Owned(s.iter().map(|&v| cast(v)).collect()),
        None => Cow::Owned(arr.as_array().iter().map(|&v| cast(v)).collect()),
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
        let (data, shape): (Cow<'_, [f32]>, Vec<usize>);
        let f32_arr;
        let f64_arr;
        if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
            f32_arr = a.readonly();
            shape = f32_arr.shape().to_vec();
            data = rows_f32(&f32_arr, |v| v);
        } else if let Ok(a) = x.cast::<PyArrayDyn<f64>>() {
            f64_arr = a.readonly();
            shape = f64_arr.shape().to_vec();
            data = rows_f32(&f64_arr, |v| v as f32);
        } else {
            let what = match x.getattr("dtype") {
                Ok(dtype) => format!("an array of dtype {dtype}"),
                Err(_) => format!("{}", x.get_type().name()?),
            };
            return Err(PyTypeError::new_err(format!(
                "expected a numpy array of float32 or float64 embeddings, got {what}"
            )));
        }
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
        let rows = n.unwrap_or(1);
        let codes = py.detach(|| {
            let mut out = vec![0u64; rows * words];
            self.inner.encode_batch(&data, &mut out).map(|()| out)
        })?;
        let arr = codes.into_pyarray(py);
        Ok(match n {
            None => arr.into_any(),
            Some(n) => arr.reshape([n, words])?.into_any(),
        })
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
