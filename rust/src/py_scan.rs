//! `hamming_search` and `cpu_features`: check and borrow the arrays, release the GIL, scan, hand back NumPy
//! arrays.

use std::borrow::Cow;

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::error::BscError;
use crate::parallel;
use crate::scan::{self, Level};

/// `(indices, distances)` as NumPy arrays.
type SearchResult<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u32>>);

/// The k nearest codes to `query` by Hamming distance, by exhaustive scan.
///
/// Args:
///     codes: uint64 array of shape `(n, words)`, one packed code per row. Read in place when C-contiguous,
///         otherwise copied.
///     query: uint64 array of shape `(words,)`.
///     k: how many neighbours to return (at most n); 0 gives empty arrays.
///     max_distance: only rows at Hamming distance `<= max_distance` are returned; `None` means no limit.
///
/// Returns:
///     `(indices, distances)`: int64 row indices and uint32 distances, sorted by distance, ties by index.
///
/// Raises:
///     TypeError: `codes` or `query` is not a NumPy array of dtype uint64.
///     ValueError: wrong number of dimensions, `words` of 0 or not matching, negative `k` or `max_distance`.
///
/// Example:
///     >>> codes = np.array([[0b1011], [0b0001], [0b1111]], dtype=np.uint64)
///     >>> hamming_search(codes, np.array([0b0011], dtype=np.uint64), k=2)
///     (array([0, 1]), array([1, 1], dtype=uint32))
#[pyfunction]
#[pyo3(signature = (codes, query, k = 1, max_distance = None))]
pub fn hamming_search<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    query: &Bound<'py, PyAny>,
    k: i64,
    max_distance: Option<i64>,
) -> PyResult<SearchResult<'py>> {
    let codes_arr = uint64_array(py, codes, "codes", "(n, words)")?;
    let query_arr = uint64_array(py, query, "query", "(words,)")?;
    let (n, words) = match codes_arr.shape() {
        [_, 0] => {
            return Err(BscError::Shape(
                "codes must have at least one uint64 word per row, got shape (n, 0)".into(),
            )
            .into())
        }
        [n, words] => (*n, *words),
        other => {
            return Err(BscError::Shape(format!(
                "codes must be 2-D with shape (n, words), got shape {}",
                shape_str(other)
            ))
            .into())
        }
    };
    if query_arr.shape() != [words] {
        return Err(BscError::Shape(format!(
            "query must have shape ({words},) to match codes of shape ({n}, {words}), got shape {}",
            shape_str(query_arr.shape())
        ))
        .into());
    }
    let k = usize::try_from(k)
        .map_err(|_| BscError::InvalidArgument(format!("k must be >= 0, got {k}")))?;
    let max_distance = match max_distance {
        None => u32::MAX,
        Some(d) if d < 0 => {
            return Err(BscError::InvalidArgument(format!(
                "max_distance must be >= 0 or None, got {d}"
            ))
            .into())
        }
        // Anything beyond the code length filters nothing, like u32::MAX.
        Some(d) => u32::try_from(d).unwrap_or(u32::MAX),
    };

    let codes_ro = codes_arr.cast::<PyArray2<u64>>()?.readonly();
    let query_ro = query_arr.cast::<PyArray1<u64>>()?.readonly();
    // Borrowed when the rows lie one after another; `as_slice` alone would also accept Fortran order.
    let codes_rows: Cow<'_, [u64]> = match codes_ro.as_slice() {
        Ok(rows) if codes_arr.is_c_contiguous() => Cow::Borrowed(rows),
        _ => Cow::Owned(codes_ro.as_array().iter().copied().collect()),
    };
    let query_words: Vec<u64> = query_ro.as_array().iter().copied().collect();

    let found = py.detach(|| scan::search(&codes_rows, words, &query_words, k, max_distance));

    let indices: Vec<i64> = found.iter().map(|nb| nb.index as i64).collect();
    let distances: Vec<u32> = found.iter().map(|nb| nb.distance).collect();
    Ok((indices.into_pyarray(py), distances.into_pyarray(py)))
}

/// The SIMD levels this CPU can run (lowest first), then `"selected=<level>"`: the one `hamming_search` uses
/// (the best available unless the `BSC_SIMD` environment variable asked for a lower one).
///
/// Example:
///     >>> cpu_features()
///     ['scalar', 'popcnt', 'avx2', 'avx512', 'selected=avx512']
#[pyfunction]
pub fn cpu_features() -> Vec<String> {
    let mut out: Vec<String> = scan::available_levels()
        .into_iter()
        .map(|l| Level::name(l).to_owned())
        .collect();
    out.push(format!("selected={}", scan::selected_level().name()));
    out
}

/// How many threads large encodes and scans use in this process: the pool's size (capped by the
/// `BSC_NUM_THREADS` environment variable), or 1 when they run on the calling thread, as they do with
/// `BSC_NUM_THREADS=1` and in a process forked after the pool started.
///
/// Example:
///     >>> thread_count()
///     2
#[pyfunction]
pub fn thread_count() -> usize {
    parallel::threads()
}

/// `x` as a NumPy array of native uint64, or a `TypeError` naming what it is instead.
fn uint64_array<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    name: &str,
    shape: &str,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let Ok(arr) = x.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a numpy uint64 array of shape {shape}, got {}",
            x.get_type().name()?
        )));
    };
    let dtype = arr.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<u64>(py)) {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a numpy uint64 array of shape {shape}, got dtype {dtype}"
        )));
    }
    Ok(arr.clone())
}

fn shape_str(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
