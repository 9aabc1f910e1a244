//! The pure core: plain data in, plain data out. No file system, no git, no
//! unsafe code. Canonical JSON ([`json`]), memory records and their identity
//! ([`record`]), stamped entries and their files ([`entry`]), the merge and its
//! order ([`merge`]), stamping ([`stamp`]), the base that stamping and `sync`
//! compare with ([`base`]), the fold ([`fold`]) and the secret scanner
//! ([`secrets`]).
#![forbid(unsafe_code)]

pub mod base;
pub mod clock;
pub mod entry;
pub mod fold;
pub mod json;
pub mod layout;
pub mod merge;
pub mod record;
pub mod secrets;
pub mod stamp;
pub mod writeback;

/// How many threads the machine runs at once, asked once: the answer reads
/// several cgroup files each time.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
