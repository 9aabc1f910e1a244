//! The binary's allocator: the system's, with every block of 2 MiB or more aligned
//! to a huge page and marked for transparent huge pages (on Linux).
//!
//! A merge fills tens of megabytes of fresh memory (the canonical text kept for the
//! output, the entries, the tables), and each 4 KiB page of it is one page fault.
//! With the blocks on huge pages a fault brings 2 MiB: a merge of 100,000 entries
//! takes 15,000 page faults without this and about 8,000 with it, and about a
//! tenth less time (see the README's Speed section). The kernel honours the advice
//! when transparent huge pages are set to `madvise` or `always`, and ignores it
//! when they are off.

use std::alloc::{GlobalAlloc, Layout, System};

/// The size of a huge page, and the size from which a block is put on them.
pub const HUGE_PAGE: usize = 2 << 20;

/// [`System`], with blocks of at least [`HUGE_PAGE`] bytes aligned to one and
/// advised onto huge pages.
pub struct Allocator;

/// The layout asked of the system for `size` bytes aligned to `align`: a huge
/// block is aligned to a huge page, so that all its pages can be huge. Its
/// leading gap, if the system makes one, is address space only: it is never
/// touched, so it takes no memory.
fn actual(size: usize, align: usize) -> Layout {
    let align = if size >= HUGE_PAGE {
        align.max(HUGE_PAGE)
    } else {
        align
    };
    Layout::from_size_align(size, align).expect("a larger power of two keeps a layout valid")
}

// SAFETY: every block comes from `System` with the layout `actual` gives, and goes
// back to it with the same layout, which `actual` computes again from the layout
// the caller passes (the one the block was made with, as `GlobalAlloc` requires).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let layout = actual(layout.size(), layout.align());
        // SAFETY: `layout` has the caller's nonzero size.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let layout = actual(layout.size(), layout.align());
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was made by `System` with this same actual layout.
        unsafe { System.dealloc(ptr, actual(layout.size(), layout.align())) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = actual(layout.size(), layout.align());
        let new = actual(new_size, layout.align());
        if old.align() == new.align() {
            if new_size <= layout.size() && new.align() == HUGE_PAGE {
                // A huge block that shrinks stays as it is: the system would copy
                // it to keep the alignment, and its pages not written hold no
                // memory. Its later calls give the smaller size, which maps to
                // the same alignment, and the system frees by address.
                return ptr;
            }
            // SAFETY: `ptr` was made by `System` with `old`; `new_size` is
            // nonzero, as the caller guarantees.
            let p = unsafe { System.realloc(ptr, old, new_size) };
            advise(p, new_size);
            return p;
        }
        // Across the threshold the alignment changes, which `System.realloc`
        // cannot do: a new block, the bytes copied, the old one freed.
        // SAFETY: `new` has the caller's nonzero size.
        let p = unsafe { System.alloc(new) };
        if !p.is_null() {
            advise(p, new.size());
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
        }
        p
    }
}

/// Advises the huge pages that lie within the `size` bytes at `p`. Only advice:
/// when the kernel says no, or has no huge pages, the memory is the same.
#[cfg(target_os = "linux")]
fn advise(p: *mut u8, size: usize) {
    if size < HUGE_PAGE || p.is_null() {
        return;
    }
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let end = (p as usize + size) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies within a block that this process owns; the
        // advice changes how its pages are backed, never what they hold.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_p: *mut u8, _size: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills `n` bytes at `p` with a pattern of `seed`.
    unsafe fn fill(p: *mut u8, n: usize, seed: u8) {
        for i in 0..n {
            unsafe { *p.add(i) = (i as u8).wrapping_mul(31).wrapping_add(seed) };
        }
    }

    /// Whether the `n` bytes at `p` hold the pattern of `seed`.
    unsafe fn holds(p: *const u8, n: usize, seed: u8) -> bool {
        (0..n).all(|i| unsafe { *p.add(i) } == (i as u8).wrapping_mul(31).wrapping_add(seed))
    }

    #[test]
    fn huge_blocks_are_aligned_to_a_huge_page_and_small_ones_as_asked() {
        let a = Allocator;
        for (size, align, want) in [
            (HUGE_PAGE, 1, HUGE_PAGE),
            (HUGE_PAGE * 3 + 5, 8, HUGE_PAGE),
            (HUGE_PAGE - 1, 1, 1),
            (100, 64, 64),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % want, 0, "{size} bytes");
                fill(p, size, 7);
                assert!(holds(p, size, 7));
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % want, 0, "{size} bytes, zeroed");
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_on_every_path() {
        let a = Allocator;
        let small = 4096;
        let big = HUGE_PAGE + 4096;
        let bigger = 3 * HUGE_PAGE;
        // (from, to): small to small, small to huge, huge to huge (grow), huge to
        // huge (shrink: kept in place), huge to small.
        for (from, to) in [
            (small, small * 3),
            (small, big),
            (big, bigger),
            (bigger, big),
            (big, small),
        ] {
            let layout = Layout::from_size_align(from, 8).unwrap();
            unsafe {
                let p = a.alloc(layout);
                fill(p, from, 3);
                let q = a.realloc(p, layout, to);
                assert!(!q.is_null());
                assert!(holds(q, from.min(to), 3), "{from} to {to}");
                if to >= HUGE_PAGE {
                    assert_eq!(q as usize % HUGE_PAGE, 0, "{from} to {to}");
                }
                if to < from && to >= HUGE_PAGE {
                    assert_eq!(p, q, "a huge block that shrinks stays");
                }
                // The whole new size is usable, and the block goes back with it.
                fill(q, to, 9);
                assert!(holds(q, to, 9));
                a.dealloc(q, Layout::from_size_align(to, 8).unwrap());
            }
        }
    }
}
