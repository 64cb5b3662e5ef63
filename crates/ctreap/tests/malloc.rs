//! The agent's malloc tuning (`agent::malloc`), shown on glibc itself: before it, a freed large
//! block raises the mmap threshold and a later large block comes from the heap (where, freed,
//! it would stay resident); after it, large blocks keep their own mappings.
//!
//! Alone in its binary: the allocator's settings and counters are the process's.

use ctreap::agent::malloc::{self, MMAP_THRESHOLD, Tuned};

/// Bytes in blocks glibc serves with their own mapping (`mallinfo2().hblkhd`).
fn mapped() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    unsafe { libc::mallinfo2() }.hblkhd
}

/// Frees a block of `big` bytes, then reports whether a new block of `probe` bytes got its
/// own mapping.
fn probe_is_mapped(big: usize, probe: usize) -> bool {
    drop(std::hint::black_box(vec![1u8; big]));
    let before = mapped();
    let block = std::hint::black_box(vec![1u8; probe]);
    let own = mapped() >= before + probe;
    drop(block);
    own
}

#[test]
fn large_blocks_keep_their_own_mapping_once_tuned() {
    assert!(
        std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
            && std::env::var_os("GLIBC_TUNABLES").is_none(),
        "run without MALLOC_MMAP_THRESHOLD_ and GLIBC_TUNABLES: they set what this test checks"
    );
    // glibc's default: freeing an 8 MiB mapped block raises the threshold to 8 MiB, so a 1 MiB
    // block then comes from the heap.
    assert!(
        !probe_is_mapped(8 << 20, 1 << 20),
        "glibc did not raise its mmap threshold: the premise of agent::malloc does not hold"
    );
    assert_eq!(
        malloc::tune(),
        Tuned::Fixed,
        "this is glibc: mallopt must take"
    );
    // Larger than the heap's free space left by the first probe (which glibc would reuse).
    assert!(
        probe_is_mapped(16 << 20, 4 << 20),
        "4 MiB after a freed 16 MiB (threshold {MMAP_THRESHOLD} bytes)"
    );
}
