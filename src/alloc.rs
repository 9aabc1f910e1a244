//! The binary's allocator (Linux): blocks of 2 MiB or more are mappings of their
//! own, aligned to a huge page and advised onto transparent huge pages; smaller
//! ones come from the system's allocator.
//!
//! A merge fills tens of megabytes of fresh memory (the canonical text kept for
//! the output, the entries, the tables), and each 4 KiB page of it is one page
//! fault. On huge pages a fault brings 2 MiB: a merge of 100,000 entries takes
//! about 10,300 page faults instead of 15,400, and 5 to 10 % less time (see the
//! README's Speed section). The kernel honours the advice when transparent
//! huge pages are set to `madvise` or `always`, and ignores it otherwise.
//!
//! Own mappings rather than aligned blocks of the system's allocator: a zeroed
//! block is zero already, a block that shrinks gives its tail back, and one that
//! grows is moved by the kernel (`mremap`) rather than copied.
//!
//! The small blocks, from the C library, are tuned too ([`tune_small_blocks`]).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// The size of a huge page, and the size from which a block is a mapping.
pub const HUGE_PAGE: usize = 2 << 20;

/// [`System`] for small blocks, mappings on huge pages for large ones.
pub struct Allocator;

/// Sets the C library's allocator (glibc) for the small blocks that are left to
/// it: blocks under [`HUGE_PAGE`] come from its heaps rather than from mappings of
/// their own (a block freed is then reused, not unmapped), the main heap grows
/// 16 MiB at a time and each thread's heap starts with 16 MiB, and up to 64 MiB
/// freed stay with the process. Each growth of a heap by
/// default is a system call (`brk` or `mprotect`) that takes the process's memory
/// map lock while the other thread's page faults wait on it; the merge's reading
/// threads then allocated a `unique_id` per entry. Measured with `scripts/bench
/// --compare` (31 runs, 100,000 entries): 89.9 against 95.8 ms; with the entry
/// lists no longer shrunk (`files`), the read phase 42 against 52 ms (`-v`,
/// medians of 15). Call it first, before any thread.
#[cfg(target_env = "gnu")]
pub fn tune_small_blocks() {
    const MMAP_THRESHOLD: libc::c_int = HUGE_PAGE as libc::c_int;
    // SAFETY: plain settings of the C library's allocator; they change no block
    // already handed out.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// The page size of mappings (4 KiB on x86-64; larger on some other machines).
fn page() -> usize {
    // SAFETY: a plain query of a constant of the process.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// Whether a block of `size` bytes aligned to `align` is a mapping of its own.
/// A mapping is aligned to a page; the rare larger alignment goes to the system.
fn is_mapped(size: usize, align: usize) -> bool {
    size >= HUGE_PAGE && align <= page()
}

/// The length of the mapping that holds `size` bytes; `None` when it overflows.
fn mapped_len(size: usize) -> Option<usize> {
    size.checked_next_multiple_of(page())
}

/// Maps `len` bytes (a multiple of the page size), zeroed, aligned to a huge page
/// and advised onto huge pages; null when the kernel refuses.
fn map(len: usize) -> *mut u8 {
    let Some(span) = len.checked_add(HUGE_PAGE) else {
        return ptr::null_mut();
    };
    // SAFETY: a new private anonymous mapping; no existing memory is named.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    // One huge page more than needed is mapped, and the parts before the first
    // huge-page boundary and after the block are given back.
    let start = (p as usize).next_multiple_of(HUGE_PAGE);
    let head = start - p as usize;
    let tail = span - head - len;
    // SAFETY: both ranges lie within the mapping just made, and nothing uses them.
    unsafe {
        if head > 0 {
            libc::munmap(p, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        // Only advice: refused, the memory is the same.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    start as *mut u8
}

// SAFETY: a block is a mapping exactly when `is_mapped` says so of its layout,
// which the caller passes unchanged (or, after `realloc`, with the new size), so
// every block goes back the way it came: mappings to `munmap` and `mremap` with
// the length that `mapped_len` gives of that size, the others to `System` with
// the caller's own layout.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_mapped(layout.size(), layout.align()) {
            // SAFETY: the caller's layout, as the caller guarantees it.
            return unsafe { System.alloc(layout) };
        }
        mapped_len(layout.size()).map_or(ptr::null_mut(), map)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_mapped(layout.size(), layout.align()) {
            // SAFETY: as in `alloc`.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // A new anonymous mapping reads as zeros.
        // SAFETY: as in `alloc`.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !is_mapped(layout.size(), layout.align()) {
            // SAFETY: `block` came from `System` with this layout.
            return unsafe { System.dealloc(block, layout) };
        }
        let len = mapped_len(layout.size()).expect("the length it was mapped with");
        // SAFETY: `block` is a mapping of `len` bytes that this allocator made.
        unsafe { libc::munmap(block.cast(), len) };
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was = is_mapped(layout.size(), layout.align());
        let will = is_mapped(new_size, layout.align());
        if !was && !will {
            // SAFETY: `block` came from `System` with `layout`; `new_size` is
            // nonzero, as the caller guarantees.
            return unsafe { System.realloc(block, layout, new_size) };
        }
        if was && will {
            let old = mapped_len(layout.size()).expect("the length it was mapped with");
            let Some(new) = mapped_len(new_size) else {
                return ptr::null_mut();
            };
            if new == old {
                return block;
            }
            // The kernel shrinks in place, and grows in place or moves the pages
            // without copying them; the advice goes with them. On failure the
            // old mapping is unchanged, as `realloc` must leave it.
            // SAFETY: `block` is a mapping of `old` bytes that this allocator made.
            let p = unsafe { libc::mremap(block.cast(), old, new, libc::MREMAP_MAYMOVE) };
            return if p == libc::MAP_FAILED {
                ptr::null_mut()
            } else {
                p.cast()
            };
        }
        // From one kind to the other: a new block, the bytes copied, the old freed.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: `new_layout` has the caller's nonzero size and alignment.
        let p = unsafe { self.alloc(new_layout) };
        if !p.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long;
            // `block` goes back with the layout it was made with.
            unsafe {
                ptr::copy_nonoverlapping(block, p, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        p
    }
}

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

    /// The `VmFlags` line of the mapping of /proc/self/smaps that holds `p`.
    fn vm_flags(p: *const u8) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let at = p as usize;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split(' ').next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo <= at && at < hi;
            } else if inside && line.starts_with("VmFlags:") {
                return Some(line.to_string());
            }
        }
        None
    }

    #[test]
    fn large_blocks_are_mappings_aligned_and_advised_onto_huge_pages() {
        let a = Allocator;
        for (size, align) in [
            (HUGE_PAGE, 1),
            (HUGE_PAGE * 3 + 5, 8),
            (HUGE_PAGE * 2, 4096),
        ] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % HUGE_PAGE, 0, "{size} bytes");
                fill(p, size, 7);
                assert!(holds(p, size, 7));
                if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
                    let flags = vm_flags(p).expect("the block is a mapping");
                    assert!(flags.split(' ').any(|f| f == "hg"), "{flags}");
                }
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % HUGE_PAGE, 0, "{size} bytes, zeroed");
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }

    #[test]
    fn small_blocks_and_large_alignments_come_from_the_system() {
        let a = Allocator;
        for (size, align) in [(HUGE_PAGE - 1, 1), (100, 64), (HUGE_PAGE, 2 * HUGE_PAGE)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = a.alloc(layout);
                assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                fill(p, size, 1);
                assert!(holds(p, size, 1));
                a.dealloc(p, layout);
                let z = a.alloc_zeroed(layout);
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
        let bigger = 5 * HUGE_PAGE;
        // Each step from the size before: small to small, small to large, large to
        // larger (grows), larger to large (shrinks), large to larger again, large
        // to small.
        let steps = [small * 3, big, bigger, big, bigger, small];
        let mut size = small;
        unsafe {
            let mut p = a.alloc(Layout::from_size_align(size, 8).unwrap());
            fill(p, size, 3);
            for to in steps {
                let q = a.realloc(p, Layout::from_size_align(size, 8).unwrap(), to);
                assert!(!q.is_null(), "{size} to {to}");
                assert!(holds(q, size.min(to), 3), "{size} to {to}");
                // The whole new size is usable.
                fill(q, to, 3);
                (p, size) = (q, to);
            }
            a.dealloc(p, Layout::from_size_align(size, 8).unwrap());
        }
    }

    #[test]
    fn a_block_that_cannot_be_had_is_null_and_the_old_one_stays() {
        let a = Allocator;
        let huge = isize::MAX as usize - 100;
        unsafe {
            assert!(a.alloc(Layout::from_size_align(huge, 1).unwrap()).is_null());
            for size in [4096, 3 * HUGE_PAGE] {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let p = a.alloc(layout);
                fill(p, size, 5);
                assert!(a.realloc(p, layout, huge).is_null(), "{size} bytes");
                assert!(holds(p, size, 5), "{size} bytes");
                a.dealloc(p, layout);
            }
        }
    }
}
