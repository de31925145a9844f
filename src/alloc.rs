//! The process allocator: the system allocator, except that very large
//! allocations are mapped lazily with `MAP_NORESERVE`.
//!
//! Why: the Kafka codec (kafka-protocol 0.18) sizes a `Vec` from an array
//! length read off the wire before decoding any element, so a few hostile
//! bytes can ask for hundreds of GiB. The system allocator refuses that and
//! Rust aborts the process. Mapped without reservation, the request succeeds
//! as address space only; decoding then fails at the end of the (bounded)
//! frame and the mapping is released, with no memory ever touched. Genuine
//! large buffers behave as any anonymous mapping does.
//!
//! This relies on Linux's default overcommit policy (`vm.overcommit_memory`
//! 0 or 1); under strict accounting (2) such a request still fails.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
const LAZY_MAPPING_MIN_BYTES: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system allocator.
const PAGE_BYTES: usize = 4096;

/// See the module docs.
pub struct LazyLargeAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_MAPPING_MIN_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: small allocations are delegated to `System` unchanged. Large ones
// come from anonymous private mappings, which are zeroed, page-aligned (so any
// alignment up to a page is met) and released with `munmap` of the same size,
// which `dealloc` receives because callers must pass the allocation's layout.
unsafe impl GlobalAlloc for LazyLargeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            // SAFETY: the caller's layout contract is passed on unchanged.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping of a non-zero size touches no
        // existing memory; failure is reported as MAP_FAILED, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // Anonymous mappings are already zeroed.
            // SAFETY: the caller's layout contract is passed on unchanged.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller's layout contract is passed on unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: a lazy layout's memory came from `mmap` of exactly this size in `alloc`.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: a small layout's memory came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `realloc`'s contract makes `new_size`, rounded up to the
        // existing (valid) alignment, not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: both layouts are `System`'s, and the caller's contract holds.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_layout` is valid and non-zero in size (see above).
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: the old block holds `layout.size()` bytes and the new one
            // `new_size`; they are distinct allocations, so they do not overlap,
            // and the old one is freed with the layout it was allocated with.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hostile_capacity_is_address_space_not_an_abort() {
        // 2^31 elements of 200 bytes: ~400 GiB, far beyond this machine's memory.
        let v: Vec<[u8; 200]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        drop(v);
        let mut small = vec![1u8; 10];
        small.extend_from_slice(&[2; 10]);
        assert_eq!(small.len(), 20);
    }

    #[test]
    fn large_buffers_grow_and_shrink_with_their_contents() {
        let mut big = vec![7u8; (1 << 30) + 5];
        assert_eq!(big[1 << 30], 7);
        big.truncate(16);
        big.shrink_to_fit();
        assert_eq!(big, vec![7u8; 16]);
    }
}
