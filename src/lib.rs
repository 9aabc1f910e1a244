//! memory-backup: coding agents' memory files from many hosts in one git
//! repository, merged as a state-based CRDT, with no lock and no entry ever lost,
//! and what every host learned and forgot brought back into each host's memory.
//!
//! # Code map
//!
//! Arrows point down only: a module uses those below it, never above.
//!
//! - `main.rs`: arguments, logging, the exit code. [`cli`]: the command line.
//! - [`commands`]: one thin file per command (`init`, `backup`, `sync`, `forget`,
//!   `stamp`, `merge`, `verify`, `status`, `restore`, `config`, `install`, `hook`).
//! - [`backup`]: one run of the pipeline, step by step, and its retry loop.
//! - [`core`]: pure data in and out, no I/O, no unsafe code: canonical JSON,
//!   records and identities, entries and their files, the merge, stamping, the
//!   base, the fold, the write-back, the secret scanner.
//! - [`git`]: the only code that uses git2 or runs `git`: the repository, fetch
//!   and push (the user's `git`, or libgit2), the working tree, packing.
//! - [`store`]: files on disk: atomic writes, the memory file, host files in a
//!   folder, what a repository keeps on this machine only.
//! - [`setup`]: the MCP memory server's file found in MCP configs; the cron,
//!   systemd and Claude Code integrations.
//! - [`config`], [`context`], [`error`], [`output`], [`logging`]: the config
//!   file and where each setting came from, what every command needs, typed
//!   errors and their exit codes, what a command tells its user, the log files.
//! - [`sys`]: the few system calls, each with its safety argument.
//!
//! ARCHITECTURE.md has the bird's-eye view and the invariants.

pub mod backup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod context;
pub mod core;
pub mod error;
pub mod git;
pub mod logging;
pub mod output;
pub mod setup;
pub mod store;
pub mod sys;

/// Past this size a memory file gets a warning (the seed design's alert).
pub const LARGE_FILE_BYTES: u64 = 50 * 1024 * 1024;

/// The warning for a file of `bytes` past [`LARGE_FILE_BYTES`], naming it `what`.
pub fn large_file_warning(what: &str, bytes: u64) -> Option<String> {
    const MIB: u64 = 1024 * 1024;
    (bytes > LARGE_FILE_BYTES).then(|| {
        format!(
            "{what}: {} MiB, over the {} MiB alert threshold",
            bytes / MIB,
            LARGE_FILE_BYTES / MIB
        )
    })
}

/// A merge slower than this gets a warning.
pub const SLOW_MERGE_SECS: f64 = 5.0;
