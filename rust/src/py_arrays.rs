//! Reading NumPy arrays in the bindings: borrowed when their memory already is the row-major slice Rust
//! wants (e.g. straight from a mapped file), copied otherwise. The one copy of that rule.

use std::borrow::Cow;

use numpy::ndarray::Dimension;
use numpy::{
    Element, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::rows::Shape;

/// The array's values in row-major order: borrowed when C-contiguous (`as_slice` alone would also accept
/// Fortran order, whose memory order is not the row order), copied otherwise.
pub fn row_major<'a, T: Element + Copy, D: Dimension>(
    arr: &'a PyReadonlyArray<'_, T, D>,
) -> Cow<'a, [T]> {
    match arr.as_slice() {
        Ok(s) if arr.is_c_contiguous() => Cow::Borrowed(s),
        _ => Cow::Owned(arr.as_array().iter().copied().collect()),
    }
}

/// A float32 or float64 NumPy array of embeddings, read as float32 (the encoder's input type).
pub enum Floats<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

impl<'py> Floats<'py> {
    /// `x` as a float array, or a `TypeError` naming what it is instead.
    pub fn extract(x: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
            return Ok(Floats::F32(a.readonly()));
        }
        if let Ok(a) = x.cast::<PyArrayDyn<f64>>() {
            return Ok(Floats::F64(a.readonly()));
        }
        let what = match x.getattr("dtype") {
            Ok(dtype) => format!("an array of dtype {dtype}"),
            Err(_) => format!("{}", x.get_type().name()?),
        };
        Err(PyTypeError::new_err(format!(
            "expected a numpy array of float32 or float64 embeddings, got {what}"
        )))
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Floats::F32(a) => a.shape(),
            Floats::F64(a) => a.shape(),
        }
    }

    /// The values in row-major order as float32: borrowed for a C-contiguous float32 array.
    pub fn as_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Floats::F32(a) => row_major(a),
            Floats::F64(a) => Cow::Owned(row_major(a).iter().map(|&v| v as f32).collect()),
        }
    }
}

/// Copies a C-contiguous float32 or float64 array of shape `(dim,)` into `out` as float32 (while the
/// GIL is held, so no Python code writes to it meanwhile) and returns true; false, with `out` left
/// alone, for anything else. Copying 1.5 KB costs less than registering a borrow of the array with
/// NumPy's borrow checker, whose table is cold memory after a large scan; `out` is the caller's so that
/// a buffer kept between lookups spares the allocation too.
pub fn one_vector(embedding: &Bound<'_, PyAny>, dim: usize, out: &mut Vec<f32>) -> bool {
    if let Ok(a) = embedding.cast::<PyArray1<f32>>() {
        if a.len() == dim && a.is_c_contiguous() {
            // SAFETY: the GIL is held and nothing in this crate holds a mutable borrow of a caller's
            // array; the values are copied before it is released.
            if let Ok(values) = unsafe { a.as_slice() } {
                out.clear();
                out.extend_from_slice(values);
                return true;
            }
        }
    } else if let Ok(a) = embedding.cast::<PyArray1<f64>>() {
        if a.len() == dim && a.is_c_contiguous() {
            // SAFETY: as above.
            if let Ok(values) = unsafe { a.as_slice() } {
                out.clear();
                out.extend(values.iter().map(|&v| v as f32));
                return true;
            }
        }
    }
    false
}

/// Whether `shape` is one embedding `(dim,)` or a non-empty batch `(n, dim)`.
pub(crate) fn embedding_shape(shape: &[usize], dim: usize) -> PyResult<Shape> {
    match shape {
        [d] if *d == dim => Ok(Shape::One),
        [n, d] if *d == dim && *n > 0 => Ok(Shape::Batch),
        _ => Err(PyValueError::new_err(format!(
            "expected an embedding of shape ({dim},) or embeddings of shape (n, {dim}), got {shape:?}"
        ))),
    }
}
