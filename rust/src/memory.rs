//! Large code arrays in huge pages where the kernel offers them: a scan of a million codes (32 MB) walks
//! 8,192 pages of 4 KiB but 16 of 2 MiB, and the address translations it saves were ~15 % of a 1M-code
//! scan on the build machine. NumPy asks for the same for its own large arrays, so without this the
//! index scanned its codes slower than the same kernel scanning a NumPy copy of them.

/// Below this, a vector stays as the allocator made it (a huge page would mostly be empty).
const HUGE_MIN_BYTES: usize = 2 << 20;

/// A vector with room for `capacity` values whose memory the kernel is asked to back with huge pages
/// (Linux `MADV_HUGEPAGE`; a no-op elsewhere, on small vectors, or when the advice is refused).
pub fn vec_with_capacity<T>(capacity: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(capacity);
    advise_huge(v.as_ptr().cast(), v.capacity() * std::mem::size_of::<T>());
    v
}

/// Grows `v` (doubling) so that `extra` more values fit, moving it into a huge-page-advised buffer
/// when it is large, before the new values are written (pages get their size when first touched).
pub fn reserve<T: Copy>(v: &mut Vec<T>, extra: usize) {
    let needed = v.len() + extra;
    if needed <= v.capacity() {
        return;
    }
    let capacity = needed.max(2 * v.capacity()).max(64);
    if capacity * std::mem::size_of::<T>() < HUGE_MIN_BYTES {
        v.reserve(capacity - v.len());
        return;
    }
    let mut grown = vec_with_capacity(capacity);
    grown.extend_from_slice(v);
    *v = grown;
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *const u8, bytes: usize) {
    const MADV_HUGEPAGE: i32 = 14;
    const PAGE: usize = 4096;
    extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    if bytes < HUGE_MIN_BYTES {
        return;
    }
    // Whole pages inside the allocation only.
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + bytes) / PAGE * PAGE;
    if end > start {
        // SAFETY: `madvise` with MADV_HUGEPAGE only changes how the kernel backs pages this process
        // owns (the range lies inside one live allocation); it never changes their contents, and a
        // refusal (an error return) leaves everything as it was, so the result is ignored.
        let _ = unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *const u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_keeps_the_values_and_makes_room() {
        let mut v: Vec<u64> = (0..1000).collect();
        reserve(&mut v, 1 << 20);
        assert!(v.capacity() >= 1000 + (1 << 20));
        assert_eq!(v, (0..1000).collect::<Vec<u64>>());
        let mut small: Vec<u64> = vec![1, 2, 3];
        reserve(&mut small, 10);
        assert!(small.capacity() >= 13);
        assert_eq!(small, [1, 2, 3]);
    }
}
