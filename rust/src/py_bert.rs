//! `bsc._native.BertModel`: weights copied in through a Python getter, token arrays checked and borrowed,
//! the forward pass run without the GIL, the pooled vectors handed back as a NumPy array.

use std::collections::HashMap;

use numpy::{
    IntoPyArray, PyArray2, PyArrayDyn, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::bert::{self, Activation, Bert, BertConfig, Kernel, Pooling, Tensor, Tokens};
use crate::py_arrays::row_major;

/// A BERT encoder with sentence pooling, run in float32 by bsc's own kernels (AVX-512 when the CPU has
/// it). Built by `bsc.embedders.NativeEmbedder`, which tokenises and normalises around it.
///
/// Args:
///     weight: Called with each checkpoint tensor name the encoder needs (no ``bert.`` prefix); returns
///         that tensor as a float32 NumPy array. Its exceptions propagate.
///     num_layers, num_heads: From ``config.json``.
///     activation: ``"gelu"`` (erf), ``"gelu_new"``/``"gelu_pytorch_tanh"`` or ``"relu"``.
///     layer_norm_eps: From ``config.json``.
///     pooling: ``"mean"`` or ``"cls"``.
///     portable: Use the portable matrix kernel even where AVX-512 is available (for tests).
///
/// Raises:
///     ValueError: An unknown activation or pooling, inconsistent sizes or a tensor of the wrong shape.
///     TypeError: The getter returned something other than a float32 array.
#[pyclass(frozen, module = "bsc._native")]
pub struct BertModel {
    inner: Bert,
}

#[pymethods]
impl BertModel {
    #[new]
    #[pyo3(signature = (weight, *, hidden_size, num_layers, num_heads, activation, layer_norm_eps, pooling, portable = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        weight: &Bound<'_, PyAny>,
        hidden_size: usize,
        num_layers: usize,
        num_heads: usize,
        activation: &str,
        layer_norm_eps: f64,
        pooling: &str,
        portable: bool,
    ) -> PyResult<Self> {
        let activation = Activation::from_name(activation).ok_or_else(|| {
            PyValueError::new_err(format!(
                "activation {activation:?} is not computed; expected gelu, gelu_new, gelu_pytorch_tanh or relu"
            ))
        })?;
        let pooling = match pooling {
            "mean" => Pooling::Mean,
            "cls" => Pooling::Cls,
            other => {
                return Err(PyValueError::new_err(format!(
                    "pooling {other:?} is not computed; expected \"mean\" or \"cls\""
                )))
            }
        };
        let config = BertConfig {
            hidden_size,
            num_layers,
            num_heads,
            activation,
            layer_norm_eps: layer_norm_eps as f32,
            pooling,
        };
        let mut tensors = HashMap::new();
        for name in bert::tensor_names(num_layers) {
            let value = weight.call1((name.as_str(),))?;
            let array = value.cast::<PyArrayDyn<f32>>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "weight({name:?}) must return a float32 NumPy array"
                ))
            })?;
            let array = array.readonly();
            let tensor = Tensor {
                shape: array.shape().to_vec(),
                data: row_major(&array).into_owned(),
            };
            tensors.insert(name, tensor);
        }
        let kernel = if portable {
            Kernel::Portable
        } else {
            Kernel::best()
        };
        Ok(Self {
            inner: Bert::new(config, tensors, kernel)?,
        })
    }

    /// Width of the pooled vectors.
    #[getter]
    fn hidden_size(&self) -> usize {
        self.inner.config().hidden_size
    }

    /// The longest sequence the position embeddings allow.
    #[getter]
    fn max_positions(&self) -> usize {
        self.inner.max_positions()
    }

    /// The matrix kernel in use: ``"avx512"`` or ``"portable"``.
    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel().name()
    }

    /// Pooled, not normalised, sentence vectors of shape ``(batch, hidden_size)`` for int32 token arrays of
    /// shape ``(batch, sequence)``, with the matrix products split over `threads` parts. The GIL is released.
    ///
    /// Raises:
    ///     ValueError: Arrays of different shapes, a sequence longer than the positions, an id or type out
    ///         of range, a mask value other than 0/1, or `threads` of 0.
    #[pyo3(signature = (input_ids, token_type_ids, attention_mask, *, threads = 1))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        input_ids: PyReadonlyArray2<'py, i32>,
        token_type_ids: PyReadonlyArray2<'py, i32>,
        attention_mask: PyReadonlyArray2<'py, i32>,
        threads: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        if threads == 0 {
            return Err(PyValueError::new_err("threads must be positive, got 0"));
        }
        let shape = input_ids.shape().to_vec();
        for (name, arr) in [
            ("token_type_ids", &token_type_ids),
            ("attention_mask", &attention_mask),
        ] {
            if arr.shape() != shape.as_slice() {
                return Err(PyValueError::new_err(format!(
                    "{name} has shape {:?}, expected input_ids' shape {shape:?}",
                    arr.shape()
                )));
            }
        }
        let (batch, seq) = (shape[0], shape[1]);
        let hidden = self.inner.config().hidden_size;
        if batch == 0 || seq == 0 {
            return Ok(PyArray2::zeros(py, [batch, hidden], false));
        }
        let (ids, types, mask) = (
            row_major(&input_ids),
            row_major(&token_type_ids),
            row_major(&attention_mask),
        );
        let tokens = Tokens {
            input_ids: &ids,
            token_type_ids: &types,
            attention_mask: &mask,
            batch,
            seq,
        };
        let pooled = py.detach(|| self.inner.forward(tokens, threads))?;
        let array = numpy::ndarray::Array2::from_shape_vec((batch, hidden), pooled)
            .map_err(|e| PyValueError::new_err(format!("pooled output has the wrong size: {e}")))?;
        Ok(array.into_pyarray(py))
    }
}
