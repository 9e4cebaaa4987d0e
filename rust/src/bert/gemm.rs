//! The encoder's matrix products, `out = x · Wᵀ + bias (+ residual)`, against weights packed once at load.
//!
//! At batch 1 a call multiplies a few dozen token rows by each weight matrix once, so the weights stream
//! through the core once and arrive from memory just fast enough to keep the FMAs busy. The AVX-512 kernel
//! reads each weight from memory once per call: register tiles of up to 14 rows × 32 columns (two 16-column
//! panels, 28 zmm accumulators) run over every pair of panels, the rows of a call (up to an L2's worth) in
//! blocks that take turns on one pair while it is in cache; the weights are laid out in exactly the order
//! the sweep reads them (16 columns, then down `k`, panel after panel) and prefetched ahead of it. Two
//! panels a tile rather than one panel of 28 rows: a broadcast of an input value feeds two FMAs, so the
//! loads no longer limit the FMAs (measured on a 2-core AMD EPYC Zen 5: a 27-token batch-1 forward
//! 0.87× the one-panel kernel's time; three panels of 9 rows measured the same as two). Bias and residual
//! are added while a tile is still in registers. Without AVX-512 the weights stay in Hugging Face's
//! `(out, in)` order and `matrixmultiply` (which picks AVX2/FMA itself at run time) does the product.
//! Either kernel sums in float32, in its own order: the vectors agree with torch's to float rounding.

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::layers::{self, Activation, Vector};
use crate::parallel;

/// What a product adds to `x · Wᵀ` (always the bias) before storing it.
#[derive(Debug, Clone, Copy)]
pub enum Epilogue<'a> {
    Bias,
    /// Bias and this `m × n` residual.
    Residual(&'a [f32]),
    /// Bias, then the erf GELU (the feed-forward's first product, fused while the tile is in registers).
    Gelu,
}

/// Output columns per packed panel: one 16-float zmm register.
const NR: usize = 16;
/// Panels side by side in one register tile, and most rows of a tile: `TILE_ROWS × TILE_PANELS`
/// accumulators, `TILE_PANELS` weight registers and a broadcast fit the 32 zmm.
const TILE_PANELS: usize = 2;
const TILE_ROWS: usize = 14;
/// How far ahead of the sweep the kernel prefetches its weights (in rows of a panel, 64 bytes each): into
/// L2 16 KiB ahead, enough requests in flight to keep memory busy while the FMAs run, and from there into
/// L1 1 KiB ahead. Measured on a loaded 2-core Xeon against one L1 prefetch at 48 rows: 0.83x instead of
/// 0.92x OnnxEmbedder's batch-1 time; no prefetch at all was 1.23x. The distances were flat within noise
/// from 16 to 64 (L1) and 160 to 1024 (L2) rows.
const PREFETCH_L1_ROWS: usize = 16;
const PREFETCH_L2_ROWS: usize = 256;
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

/// Products of fewer rows run on the calling thread whatever `threads` says. A batch-1 product takes
/// ~0.1 ms, and handing half of it to a pool worker costs a wake-up that, on a machine whose cores are
/// busy, can cost more than the half: measured on a loaded 2-core Xeon, 2 threads took 3x as long as 1
/// at batch 1 when every product was split (onnxruntime's spinning threads lost there too, 1.8x).
pub const PARALLEL_MIN_ROWS: usize = 64;

/// One cache line of floats: panels start on a line, so the kernel's two loads never straddle two.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A linear layer: `n` outputs of `k` inputs and a bias, its weights in the layout `kernel` reads.
pub struct Linear {
    n: usize,
    k: usize,
    kernel: Kernel,
    /// `Portable`: Hugging Face's `(n, k)` row-major matrix. `Avx512`: `ceil(n / 16)` panels, each `k` rows
    /// of 16 columns (zero past `n`), as lines.
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

    /// `out = epilogue(x · Wᵀ + bias)` for `m` rows, the columns split over `threads` parts.
    ///
    /// # Panics
    /// If `x` is not `m * k` floats or `out` (and a residual) not `m * n`.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        epilogue: Epilogue<'_>,
        out: &mut [f32],
        threads: usize,
    ) {
        let (n, k) = (self.n, self.k);
        assert!(x.len() == m * k && out.len() == m * n);
        let (residual, gelu) = match epilogue {
            Epilogue::Bias => (None, false),
            Epilogue::Residual(r) => (Some(r), false),
            Epilogue::Gelu => (None, true),
        };
        assert!(residual.is_none_or(|r| r.len() == m * n));
        let panels = n.div_ceil(NR);
        let parts = if m < PARALLEL_MIN_ROWS {
            1
        } else {
            threads.clamp(1, panels)
        };
        let target = Output(out.as_mut_ptr());
        parallel_parts(parts, |part| {
            let first = part * panels / parts;
            let last = (part + 1) * panels / parts;
            // SAFETY: part `part` writes only the columns of panels first..last, and the parts' panel
            // ranges are disjoint, so no two parts write the same element; `out` is borrowed mutably for
            // the whole call, and every index written is below m * n (checked above).
            unsafe { self.columns(x, m, residual, gelu, target, first..last) };
        });
    }

    /// Computes the columns of `panels` into `out`, adding `residual` or applying the erf GELU.
    ///
    /// # Safety
    /// `out` must point at `m * n` writable floats that nobody else reads or writes in those columns
    /// meanwhile; `x` and `residual` as in [`Linear::forward`].
    unsafe fn columns(
        &self,
        x: &[f32],
        m: usize,
        residual: Option<&[f32]>,
        gelu: bool,
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
                for row in (0..m).filter(|_| gelu) {
                    // SAFETY: as for the bias above.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.0.add(row * n + first_col), cols)
                    };
                    layers::activate(dst, Activation::Gelu, Vector::Baseline);
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the kernel is only chosen when AVX-512F is available (`Linear::new` asserts it); the
            // memory contract is this function's.
            Kernel::Avx512 => unsafe {
                self.columns_avx512(x, m, residual.is_some(), gelu, out, panels)
            },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 => unreachable!("the AVX-512 kernel is never selected off x86-64"),
        }
    }

    /// The AVX-512 path of [`Linear::columns`]: rows in chunks that stay in L2, each chunk's blocks of up
    /// to [`TILE_ROWS`] rows run against every group of [`TILE_PANELS`] panels (a lone last panel on its
    /// own), so a panel is fetched from memory once per chunk and from cache for the chunk's other blocks.
    ///
    /// # Safety
    /// As [`Linear::columns`]; the CPU must have AVX-512F. When `accumulate`, `out` already holds bias +
    /// residual for these columns; otherwise the bias is added here (then the GELU, when `gelu`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn columns_avx512(
        &self,
        x: &[f32],
        m: usize,
        accumulate: bool,
        gelu: bool,
        out: Output,
        panels: std::ops::Range<usize>,
    ) {
        let (n, k) = (self.n, self.k);
        let weights = self.weights.as_ptr().cast::<f32>();
        let tile = |panel: usize, width: usize| Tile {
            // SAFETY: panel + width <= ceil(n / 16), so these panels' k × 16 floats each are inside
            // `weights`.
            panel: unsafe { weights.add(panel * k * NR) },
            bias: self.bias[panel * NR..].as_ptr(),
            k,
            ldc: n,
            masks: lane_masks((n - panel * NR).min(width * NR)),
            accumulate,
            gelu,
        };
        let blocks = row_blocks(m, k, TILE_ROWS);
        let packed = pack_rows(x, k, &blocks);
        for chunk in blocks.chunk_by(|a, b| a.chunk == b.chunk) {
            for first in panels.clone().step_by(TILE_PANELS) {
                // The last panels, when fewer than a tile's, run one at a time.
                let whole = first + TILE_PANELS <= panels.end;
                let tiles: Vec<(usize, Tile)> = if whole {
                    vec![(first, tile(first, TILE_PANELS))]
                } else {
                    (first..panels.end).map(|p| (p, tile(p, 1))).collect()
                };
                for block in chunk {
                    for (panel, tile) in &tiles {
                        // SAFETY: the block's rows exist in `packed` (k floats each, interleaved) and in
                        // `out`, whose columns of these panels are this caller's.
                        unsafe {
                            let x = packed.as_ptr().add(block.start * k);
                            let out = out.0.add(block.start * n + panel * NR);
                            if whole {
                                tile.run::<TILE_PANELS>(block.rows, x, out);
                            } else {
                                tile.run::<1>(block.rows, x, out);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Rows `start..start + rows` of the input, computed together in registers; blocks of the same `chunk`
/// run against every panel before the next chunk starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowBlock {
    start: usize,
    rows: usize,
    chunk: usize,
}

/// How the AVX-512 path cuts `m` rows of width `k` into blocks of at most `max_rows`: chunks whose rows
/// stay in L2, each split evenly over the fewest blocks (20 rows in blocks of 12 run as 10 + 10, not
/// 12 + 8).
fn row_blocks(m: usize, k: usize, max_rows: usize) -> Vec<RowBlock> {
    let chunk_rows = (X_CHUNK_BYTES / (4 * k.max(1))).max(max_rows) / max_rows * max_rows;
    let mut blocks = Vec::new();
    for (chunk, chunk_start) in (0..m).step_by(chunk_rows).enumerate() {
        let rows = chunk_rows.min(m - chunk_start);
        let count = rows.div_ceil(max_rows);
        let mut start = chunk_start;
        for b in 0..count {
            let rows = rows / count + usize::from(b < rows % count);
            blocks.push(RowBlock { start, rows, chunk });
            start += rows;
        }
    }
    blocks
}

/// `x` (row-major, `k` wide) with each block's rows interleaved column by column (`[i][r]`), so that the
/// kernel's broadcasts of one column are neighbours at fixed offsets from one pointer.
fn pack_rows(x: &[f32], k: usize, blocks: &[RowBlock]) -> Vec<f32> {
    let mut packed = vec![0.0; x.len()];
    for block in blocks {
        let rows = &x[block.start * k..(block.start + block.rows) * k];
        let dst = &mut packed[block.start * k..(block.start + block.rows) * k];
        // Written in order, read down the block's rows (at most `TILE_ROWS` streams, all in cache).
        for (i, column) in dst.chunks_exact_mut(block.rows).enumerate() {
            for (r, v) in column.iter_mut().enumerate() {
                *v = rows[r * k + i];
            }
        }
    }
    packed
}

/// A shared pointer to the output, handed to the parts of a split product.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: the parts write disjoint columns (see `Linear::forward`), and the call waits for all of them
// before the output's borrow ends.
unsafe impl Send for Output {}
// SAFETY: as for Send.
unsafe impl Sync for Output {}

/// Runs `f(0) .. f(parts - 1)`: part 0 on the calling thread and the others on the `parallel` pool when
/// there is more than one part and the pool exists in this process, otherwise one after another on the
/// calling thread. (`in_place_scope`, not `scope`: the latter also moves part 0 to a worker and so wakes
/// one more thread per product, which measured several times slower at batch 1 on a loaded machine.)
pub fn parallel_parts<F: Fn(usize) + Sync>(parts: usize, f: F) {
    match parallel::pool() {
        Some(pool) if parts > 1 => pool.in_place_scope(|scope| {
            let f = &f;
            for part in 1..parts {
                scope.spawn(move |_| f(part));
            }
            f(0);
        }),
        _ => (0..parts).for_each(f),
    }
}

/// The lane masks of a tile's registers when only `valid` of its columns exist.
fn lane_masks(valid: usize) -> [u16; TILE_PANELS] {
    std::array::from_fn(|p| {
        let lanes = valid.saturating_sub(p * NR);
        if lanes >= NR {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        }
    })
}

/// What every register tile of one panel (or [`TILE_PANELS`] side by side) shares.
#[cfg(target_arch = "x86_64")]
struct Tile {
    /// The first panel; the next ones follow it `k * 16` floats apart.
    panel: *const f32,
    bias: *const f32,
    k: usize,
    ldc: usize,
    masks: [u16; TILE_PANELS],
    accumulate: bool,
    /// Apply the erf GELU after the bias.
    gelu: bool,
}

/// `match mr { 1 => tile.rows::<P, 1>(..), 2 => .., }` over the listed row counts (the last one also
/// catches anything larger, which the callers never pass).
#[cfg(target_arch = "x86_64")]
macro_rules! rows_dispatch {
    ($tile:ident, $p:ident, $mr:expr, $x:expr, $out:expr; $($rows:literal)* ; $last:literal) => {
        match $mr {
            $($rows => $tile.rows::<$p, $rows>($x, $out),)*
            _ => $tile.rows::<$p, $last>($x, $out),
        }
    };
}

#[cfg(target_arch = "x86_64")]
impl Tile {
    /// `mr` rows (1..=[`TILE_ROWS`]) of this tile: dispatch to the kernel with that many rows in
    /// registers.
    ///
    /// # Safety
    /// `x` points at `mr` rows of `k` floats interleaved as `[i][r]` (see `pack_rows`); `out` at `mr` rows
    /// of this tile's valid columns (row stride `ldc`), writable and ours; `P` panels exist from `panel`;
    /// AVX-512F is available.
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const P: usize>(&self, mr: usize, x: *const f32, out: *mut f32) {
        // SAFETY: forwarded contract.
        unsafe { rows_dispatch!(self, P, mr, x, out; 1 2 3 4 5 6 7 8 9 10 11 12 13; 14) }
    }

    /// The micro-kernel: `MR` rows × `P` × 16 columns accumulated in registers over all of `k`, the
    /// weights prefetched ahead ([`PREFETCH_L2_ROWS`]), then bias (or what `out` already holds) added and
    /// stored through the lane masks.
    ///
    /// # Safety
    /// As [`Tile::run`] with `mr == MR`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const P: usize, const MR: usize>(&self, x: *const f32, out: *mut f32) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); P]; MR];
        let k = self.k;
        // Index loops rather than iterator adapters: inside this target-feature function the adapters were
        // not inlined, which cost 6x.
        #[allow(clippy::needless_range_loop)]
        for i in 0..k {
            // SAFETY: each of the P panels holds k rows of 16 floats, 64-byte aligned; x holds MR rows of
            // k floats. A prefetch never faults, and its address is formed with wrapping arithmetic, so
            // pointing past the weights is allowed.
            unsafe {
                let mut w = [_mm512_setzero_ps(); P];
                for p in 0..P {
                    let row = self.panel.add((p * k + i) * NR);
                    _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(PREFETCH_L2_ROWS * NR).cast());
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PREFETCH_L1_ROWS * NR).cast());
                    w[p] = _mm512_load_ps(row);
                }
                for r in 0..MR {
                    let a = _mm512_set1_ps(*x.add(i * MR + r));
                    for p in 0..P {
                        acc[r][p] = _mm512_fmadd_ps(a, w[p], acc[r][p]);
                    }
                }
            }
        }
        #[allow(clippy::needless_range_loop)]
        for r in 0..MR {
            for p in 0..P {
                // SAFETY: row r of `out` has the tile's valid columns, which the masks cover; the bias is
                // padded to whole panels; masked lanes are neither read nor written.
                unsafe {
                    let (dst, mask) = (out.add(r * self.ldc + p * NR), self.masks[p]);
                    let base = if self.accumulate {
                        _mm512_maskz_loadu_ps(mask, dst)
                    } else {
                        _mm512_loadu_ps(self.bias.add(p * NR))
                    };
                    let mut v = _mm512_add_ps(acc[r][p], base);
                    if self.gelu {
                        v = avx512::gelu(v);
                    }
                    _mm512_mask_storeu_ps(dst, mask, v);
                }
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

    fn check(kernel: Kernel, m: usize, n: usize, k: usize, threads: usize, epilogue: u8) {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let r = values(m * n, 4);
        let (epilogue, residual) = match epilogue {
            0 => (Epilogue::Bias, None),
            1 => (Epilogue::Residual(&r), Some(r.as_slice())),
            _ => (Epilogue::Gelu, None),
        };
        let linear = Linear::new(&w, &b, n, k, kernel);
        let mut out = vec![f32::NAN; m * n];
        linear.forward(&x, m, epilogue, &mut out, threads);
        let mut expected = reference(&x, &w, &b, residual, m, n, k);
        if matches!(epilogue, Epilogue::Gelu) {
            layers::activate(&mut expected, Activation::Gelu, Vector::Baseline);
        }
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
                (15, 48, 9),
                (25, 96, 48),
                (29, 80, 33),
                (200, 40, 384),
            ] {
                for threads in [1, 2, 3] {
                    for epilogue in 0..3 {
                        check(kernel, m, n, k, threads, epilogue);
                    }
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
