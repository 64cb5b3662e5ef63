//! glibc malloc, tuned for the agent: one large model built from the initial lists, then kept
//! for days with small changes.
//!
//! glibc serves a block of at least `M_MMAP_THRESHOLD` (128 KiB) with its own mapping, which
//! goes back to the kernel when it is freed. Its default raises that threshold each time such
//! a block is freed, up to the freed block's size (at most 32 MiB). The initial lists free many
//! of them (list pages, growing tables and vectors), so after a few the threshold is megabytes
//! and every later block below it comes from the heap. Freed, those blocks leave holes between
//! the model's long-lived allocations that the heap never returns: at 100,000 Services x 5
//! endpoints, 13 MiB of the agent's 93 MiB of heap was free and resident for good
//! (`mallinfo2`, docs/benchmarks.md). Setting the threshold explicitly turns the raising off,
//! so large blocks keep their own mappings and are returned when freed; the trim threshold
//! (free memory at the heap's top kept rather than returned), raised along with it, is set back
//! to its initial value too.
//!
//! An operator's own setting (`MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc.mmap_threshold` in
//! `GLIBC_TUNABLES`) is left as it is.

/// The thresholds the agent fixes (mmap and trim): glibc's own initial value.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// What [`tune`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Tuned {
    /// The mmap threshold is now fixed at [`MMAP_THRESHOLD`].
    Fixed,
    /// The environment sets it: left alone.
    Operator,
    /// Not glibc, or glibc refused: the allocator's defaults stay.
    Unsupported,
}

/// The environment already sets the threshold (glibc reads it at its first allocation).
fn set_by_operator(env: impl Fn(&str) -> Option<String>) -> bool {
    env("MALLOC_MMAP_THRESHOLD_").is_some()
        || env("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc.mmap_threshold"))
}

/// Fixes glibc's mmap threshold (see the module's documentation), unless the environment sets it.
pub fn tune() -> Tuned {
    if set_by_operator(|k| std::env::var(k).ok()) {
        return Tuned::Operator;
    }
    fix_threshold()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_threshold() -> Tuned {
    let value = libc::c_int::try_from(MMAP_THRESHOLD).expect("128 KiB fits an int");
    // SAFETY: mallopt only sets the allocator's parameters; both take a size in bytes.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, value) == 1
    };
    if ok { Tuned::Fixed } else { Tuned::Unsupported }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_threshold() -> Tuned {
    Tuned::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_setting_is_left_alone() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(!set_by_operator(env(&[])));
        assert!(set_by_operator(env(&[("MALLOC_MMAP_THRESHOLD_", "65536")])));
        assert!(set_by_operator(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"
        )])));
        assert!(!set_by_operator(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2"
        )])));
    }
}
