//! The encoder's matrix products, `out = x · Wᵀ + bias (+ residual)`, against weights packed once at load.
//!
//! At batch 1 a call multiplies a few dozen token rows by each weight matrix once, so the weights stream
//! through the core and the work is bound by how fast they arrive and how many FMAs each loaded weight
//! feeds. The AVX-512 kernel therefore keeps up to 12 rows × 32 columns of accumulators in registers (24
//! of the 32 zmm), loads each weight once per row block from a panel laid out in exactly the order the
//! kernel reads it (32 columns, then down `k`), and adds bias and residual while the tile is still in
//! registers. Without AVX-512 the weights stay in Hugging Face's `(out, in)` order and `matrixmultiply`
//! (which picks AVX2/FMA itself at run time) does the product. Either kernel sums in float32, in its own
//! order: the vectors agree with torch's to float rounding.

use crate::parallel;

/// Output columns per packed panel: two 16-float zmm registers.
const NR: usize = 32;
/// Most rows per register tile: 12 rows × 2 registers of accumulators, plus the two weight registers and a
/// broadcast, fit the 32 zmm registers.
const MR_MAX: usize = 12;
/// Bytes of `x` rows one pass over the panels keeps hot (half this core's L2): more rows would evict
/// each other before the next panel re-reads them.
const X_CHUNK_BYTES: usize = 512 << 10;

/// Which code computes the products: fixed when the weights are packed, since the packing follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// `matrixmultiply` on the unpacked weights: any CPU.
    Portable,
    /// The register-tiled AVX-512F kernel on panel-packed weights.
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        if Kernel::Avx512.is_available() {
            Kernel::Avx512
        } else {
            Kernel::Portable
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 => false,
        }
    }

    /// The name `BertModel.kernel` reports.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx512 => "avx512",
        }
    }
}

/// One cache line of floats: panels start on a line, so the kernel's two loads never straddle two.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A linear layer: `n` outputs of `k` inputs and a bias, its weights in the layout `kernel` reads.
pub struct Linear {
    n: usize,
    k: usize,
    kernel: Kernel,
    /// `Portable`: Hugging Face's `(n, k)` row-major matrix. `Avx512`: `ceil(n / 32)` panels, each `k` rows
    /// of 32 columns (zero past `n`), as lines.
    weights: Vec<Line>,
    /// `n` floats, zero-padded to whole panels.
    bias: Vec<f32>,
}

impl Linear {
    /// Packs `weight` (`n` rows of `k`, Hugging Face's `(out, in)` order) and `bias` (`n`) for `kernel`.
    ///
    /// # Panics
    /// If the lengths are not `n * k` and `n`, or `kernel` is not available (callers check both).
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize, kernel: Kernel) -> Linear {
        assert!(weight.len() == n * k && bias.len() == n && kernel.is_available());
        let panels = n.div_ceil(NR);
        let mut padded_bias = vec![0.0; panels * NR];
        padded_bias[..n].copy_from_slice(bias);
        let floats: Vec<f32> = match kernel {
            Kernel::Portable => weight.to_vec(),
            Kernel::Avx512 => {
                let mut packed = vec![0.0; panels * k * NR];
                for (col, row) in weight.chunks_exact(k).enumerate() {
                    let (panel, lane) = (col / NR, col % NR);
                    for (i, &w) in row.iter().enumerate() {
                        packed[(panel * k + i) * NR + lane] = w;
                    }
                }
                packed
            }
        };
        let mut weights = vec![Line::default(); floats.len().div_ceil(16)];
        for (line, chunk) in weights.iter_mut().zip(floats.chunks(16)) {
            line.0[..chunk.len()].copy_from_slice(chunk);
        }
        Linear {
            n,
            k,
            kernel,
            weights,
            bias: padded_bias,
        }
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// `out = x · Wᵀ + bias (+ residual)` for `m` rows, the columns split over `threads` parts.
    ///
    /// # Panics
    /// If `x` is not `m * k` floats or `out` (and `residual`) not `m * n`.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        residual: Option<&[f32]>,
        out: &mut [f32],
        threads: usize,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() == m * k && out.len() == m * n);
        assert!(residual.is_none_or(|r| r.len() == m * n));
        let panels = n.div_ceil(NR);
        let parts = threads.clamp(1, panels);
        let target = Output(out.as_mut_ptr());
        parallel_parts(parts, |part| {
            let first = part * panels / parts;
            let last = (part + 1) * panels / parts;
            // SAFETY: part `part` writes only the columns of panels first..last, and the parts' panel
            // ranges are disjoint, so no two parts write the same element; `out` is borrowed mutably for
            // the whole call, and every index written is below m * n (checked above).
            unsafe { self.columns(x, m, residual, target, first..last) };
        });
    }

    /// Computes the columns of `panels` into `out`.
    ///
    /// # Safety
    /// `out` must point at `m * n` writable floats that nobody else reads or writes in those columns
    /// meanwhile; `x` and `residual` as in [`Linear::forward`].
    unsafe fn columns(
        &self,
        x: &[f32],
        m: usize,
        residual: Option<&[f32]>,
        out: Output,
        panels: std::ops::Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        let first_col = panels.start * NR;
        let cols = (panels.end * NR).min(n).saturating_sub(first_col);
        if cols == 0 {
            return;
        }
        for row in 0..m {
            // SAFETY: row * n + first_col + cols <= m * n, and these columns are this caller's alone.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(out.0.add(row * n + first_col), cols) };
            let bias = &self.bias[first_col..first_col + cols];
            match residual {
                Some(r) => {
                    let r = &r[row * n + first_col..row * n + first_col + cols];
                    for ((d, b), r) in dst.iter_mut().zip(bias).zip(r) {
                        *d = b + r;
                    }
                }
                None if self.kernel == Kernel::Portable => dst.copy_from_slice(bias),
                None => {}
            }
        }
        match self.kernel {
            Kernel::Portable => {
                let w = self.weights.as_ptr().cast::<f32>();
                // SAFETY: `x` is m × k row-major; the weights are n × k row-major, read as the k × cols
                // matrix Wᵀ[:, first_col..] (row stride 1, column stride k) starting at row first_col;
                // `out` holds m × n with row stride n and these columns are ours (see above). beta = 1
                // adds to the bias (and residual) written above.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        cols,
                        1.0,
                        x.as_ptr(),
                        k as isize,
                        1,
                        w.add(first_col * k),
                        1,
                        k as isize,
                        1.0,
                        out.0.add(first_col),
                        n as isize,
                        1,
                    )
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the kernel is only chosen when AVX-512F is available (`Linear::new` asserts it); the
            // memory contract is this function's.
            Kernel::Avx512 => unsafe { self.columns_avx512(x, m, residual.is_some(), out, panels) },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 => unreachable!("the AVX-512 kernel is never selected off x86-64"),
        }
    }

    /// The AVX-512 path of [`Linear::columns`]: rows in chunks that stay in L2, each chunk's row blocks
    /// run against every panel, so a panel is fetched from memory once per chunk.
    ///
    /// # Safety
    /// As [`Linear::columns`]; the CPU must have AVX-512F. When `accumulate`, `out` already holds bias +
    /// residual for these columns; otherwise the bias is added here.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn columns_avx512(
        &self,
        x: &[f32],
        m: usize,
        accumulate: bool,
        out: Output,
        panels: std::ops::Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        let chunk_rows = (X_CHUNK_BYTES / (4 * k)).max(MR_MAX) / MR_MAX * MR_MAX;
        let weights = self.weights.as_ptr().cast::<f32>();
        for chunk_start in (0..m).step_by(chunk_rows) {
            let rows = chunk_rows.min(m - chunk_start);
            // Rows split evenly over the fewest blocks of at most MR_MAX: 20 rows run as 10 + 10, not 12 + 8.
            let blocks = rows.div_ceil(MR_MAX);
            for panel in panels.clone() {
                let col = panel * NR;
                let valid = (n - col).min(NR);
                let tile = Tile {
                    // SAFETY: panel < ceil(n / 32), so the panel's k × 32 floats are inside `weights`.
                    panel: unsafe { weights.add(panel * k * NR) },
                    bias: self.bias[col..col + NR].as_ptr(),
                    k,
                    ldc: n,
                    masks: lane_masks(valid),
                    accumulate,
                };
                let mut row = chunk_start;
                for block in 0..blocks {
                    let mr = rows / blocks + usize::from(block < rows % blocks);
                    // SAFETY: rows row..row + mr exist in `x` (row + mr <= m) and in `out`, whose columns
                    // col..col + valid are this caller's; the tile reads k floats per row of `x`.
                    unsafe { tile.run(mr, x.as_ptr().add(row * k), out.0.add(row * n + col)) };
                    row += mr;
                }
            }
        }
    }
}

/// A shared pointer to the output, handed to the parts of a split product.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: the parts write disjoint columns (see `Linear::forward`), and the call waits for all of them
// before the output's borrow ends.
unsafe impl Send for Output {}
// SAFETY: as for Send.
unsafe impl Sync for Output {}

/// Runs `f(0) .. f(parts - 1)`: on the `parallel` pool when there is more than one part and the pool
/// exists in this process, otherwise one after another on the calling thread.
pub fn parallel_parts<F: Fn(usize) + Sync>(parts: usize, f: F) {
    match parallel::pool() {
        Some(pool) if parts > 1 => pool.scope(|scope| {
            let f = &f;
            for part in 1..parts {
                scope.spawn(move |_| f(part));
            }
            f(0);
        }),
        _ => (0..parts).for_each(f),
    }
}

/// The lane masks of a panel's two registers when only `valid` of its 32 columns exist.
fn lane_masks(valid: usize) -> [u16; 2] {
    let bits = |lanes: usize| {
        if lanes >= 16 {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        }
    };
    [bits(valid.min(16)), bits(valid.saturating_sub(16))]
}

/// What every register tile of one panel shares.
#[cfg(target_arch = "x86_64")]
struct Tile {
    panel: *const f32,
    bias: *const f32,
    k: usize,
    ldc: usize,
    masks: [u16; 2],
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// `mr` rows (1..=12) of this panel: dispatch to the kernel with that many rows in registers.
    ///
    /// # Safety
    /// `x` points at `mr` rows of `k` floats (row stride `k`); `out` at `mr` rows of this panel's valid
    /// columns (row stride `ldc`), writable and ours; AVX-512F is available.
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, mr: usize, x: *const f32, out: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe {
            match mr {
                1 => self.rows::<1>(x, out),
                2 => self.rows::<2>(x, out),
                3 => self.rows::<3>(x, out),
                4 => self.rows::<4>(x, out),
                5 => self.rows::<5>(x, out),
                6 => self.rows::<6>(x, out),
                7 => self.rows::<7>(x, out),
                8 => self.rows::<8>(x, out),
                9 => self.rows::<9>(x, out),
                10 => self.rows::<10>(x, out),
                11 => self.rows::<11>(x, out),
                _ => self.rows::<12>(x, out),
            }
        }
    }

    /// The micro-kernel: `MR` rows × 32 columns accumulated in registers over all of `k`, then bias (or
    /// what `out` already holds) added and stored through the lane masks.
    ///
    /// # Safety
    /// As [`Tile::run`] with `mr == MR`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const MR: usize>(&self, x: *const f32, out: *mut f32) {
        use std::arch::x86_64::*;
        let mut lo = [_mm512_setzero_ps(); MR];
        let mut hi = [_mm512_setzero_ps(); MR];
        let mut w = self.panel;
        for i in 0..self.k {
            // SAFETY: the panel holds k rows of 32 floats; x holds MR rows of k floats.
            unsafe {
                let w0 = _mm512_load_ps(w);
                let w1 = _mm512_load_ps(w.add(16));
                for r in 0..MR {
                    let a = _mm512_set1_ps(*x.add(r * self.k + i));
                    lo[r] = _mm512_fmadd_ps(a, w0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(a, w1, hi[r]);
                }
                w = w.add(NR);
            }
        }
        let [m0, m1] = self.masks;
        for r in 0..MR {
            // SAFETY: row r of `out` has the panel's valid columns, which the masks cover; the bias has
            // 32 floats (padded); masked lanes are neither read nor written.
            unsafe {
                let dst = out.add(r * self.ldc);
                let (base0, base1) = if self.accumulate {
                    (
                        _mm512_maskz_loadu_ps(m0, dst),
                        _mm512_maskz_loadu_ps(m1, dst.add(16)),
                    )
                } else {
                    (
                        _mm512_loadu_ps(self.bias),
                        _mm512_loadu_ps(self.bias.add(16)),
                    )
                };
                _mm512_mask_storeu_ps(dst, m0, _mm512_add_ps(lo[r], base0));
                _mm512_mask_storeu_ps(dst.add(16), m1, _mm512_add_ps(hi[r], base1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// The definition, summed in float64.
    fn reference(
        x: &[f32],
        w: &[f32],
        b: &[f32],
        r: Option<&[f32]>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|t| f64::from(x[i * k + t]) * f64::from(w[j * k + t]))
                    .sum();
                out[i * n + j] =
                    (dot + f64::from(b[j]) + r.map_or(0.0, |r| f64::from(r[i * n + j]))) as f32;
            }
        }
        out
    }

    fn check(kernel: Kernel, m: usize, n: usize, k: usize, threads: usize, with_residual: bool) {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let r = values(m * n, 4);
        let residual = with_residual.then_some(r.as_slice());
        let linear = Linear::new(&w, &b, n, k, kernel);
        let mut out = vec![f32::NAN; m * n];
        linear.forward(&x, m, residual, &mut out, threads);
        let expected = reference(&x, &w, &b, residual, m, n, k);
        for (i, (a, e)) in out.iter().zip(&expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-4 * (k as f32).sqrt(),
                "{kernel:?} m={m} n={n} k={k} [{i}]: {a} vs {e}"
            );
        }
    }

    #[test]
    fn every_kernel_equals_the_definition_on_ragged_shapes() {
        for kernel in [Kernel::Portable, Kernel::Avx512] {
            if !kernel.is_available() {
                continue;
            }
            for (m, n, k) in [
                (1, 1, 1),
                (1, 32, 7),
                (5, 33, 19),
                (13, 70, 64),
                (25, 96, 48),
                (200, 40, 384),
            ] {
                for threads in [1, 2, 3] {
                    check(kernel, m, n, k, threads, false);
                    check(kernel, m, n, k, threads, true);
                }
            }
        }
    }

    #[test]
    fn lane_masks_cover_exactly_the_valid_columns() {
        assert_eq!(lane_masks(32), [u16::MAX, u16::MAX]);
        assert_eq!(lane_masks(16), [u16::MAX, 0]);
        assert_eq!(lane_masks(17), [u16::MAX, 1]);
        assert_eq!(lane_masks(3), [0b111, 0]);
    }
}
