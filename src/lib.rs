//! memory-backup: coding agents' memory files from many hosts in one git
//! repository, merged as a state-based CRDT, with no lock and no entry ever lost.
//!
//! The core (`json`, `entry`, `memory`, `stamp`, `crdt`) is plain data in and out;
//! `files` does the file I/O and `commands` puts them together.

pub mod alloc;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod crdt;
pub mod entry;
pub mod error;
pub mod files;
pub mod fold;
pub mod git;
pub mod index_pack;
pub mod json;
pub mod logging;
pub mod loose;
pub mod memory;
pub mod pack;
pub mod repack;
pub mod report;
pub mod stamp;
pub mod unpack;
pub mod wire;

use std::path::{Path, PathBuf};

use crate::clock::Clock;
use crate::error::{Error, Result};

/// Environment variables besides those that clap reads.
pub mod env {
    pub const MEMORY: &str = "MEMORY_BACKUP_MEMORY";
    /// The MCP memory server's own variable for its file.
    pub const MCP_MEMORY: &str = "MEMORY_FILE_PATH";
    pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
    pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
}

/// The memory file when nothing names one.
pub const DEFAULT_MEMORY_FILE: &str = "memory.json";
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

/// What every command may need, resolved from options and the environment.
#[derive(Debug, Clone)]
pub struct Context {
    pub repo: PathBuf,
    /// The host name as given (`--host`, `MEMORY_BACKUP_HOST`), not yet sanitised.
    pub host: Option<String>,
    pub clock: Clock,
    /// Where logs and `last-run.json` go.
    pub log_dir: PathBuf,
}

impl Context {
    /// This host's name: as given, else the machine's hostname, sanitised.
    pub fn host(&self) -> Result<String> {
        let raw = match &self.host {
            Some(h) => h.clone(),
            None => hostname::get()
                .map_err(|e| Error::Other(format!("cannot read the hostname: {e}")))?
                .to_string_lossy()
                .into_owned(),
        };
        sanitize_host(&raw)
    }
}

/// How many threads the machine runs at once, asked once: the answer reads
/// several cgroup files each time.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Characters outside `A-Za-z0-9._-` become `-`; an empty name is an error.
pub fn sanitize_host(raw: &str) -> Result<String> {
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        return Err(Error::Usage(
            "the host name is empty: give one with --host or MEMORY_BACKUP_HOST".into(),
        ));
    }
    Ok(name)
}

/// `$VAR/memory-backup`, else `$HOME/<fallback>/memory-backup`.
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    let base = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("memory-backup")
}

/// The default repository: `$XDG_DATA_HOME/memory-backup/repo`.
pub fn default_repo() -> PathBuf {
    xdg_dir(env::XDG_DATA_HOME, ".local/share").join("repo")
}

/// The default log folder: `$XDG_STATE_HOME/memory-backup`.
pub fn default_log_dir() -> PathBuf {
    xdg_dir(env::XDG_STATE_HOME, ".local/state")
}

/// The memory file: `--memory`, else `MEMORY_BACKUP_MEMORY`, else
/// `MEMORY_FILE_PATH`, else `memory.json` in the current folder.
pub fn memory_path(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_path_buf)
        .or_else(|| {
            [env::MEMORY, env::MCP_MEMORY]
                .iter()
                .filter_map(std::env::var_os)
                .find(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MEMORY_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_sanitised() {
        assert_eq!(sanitize_host("my laptop/ü").unwrap(), "my-laptop--");
        assert_eq!(
            sanitize_host("ci_runner-3.local").unwrap(),
            "ci_runner-3.local"
        );
        assert!(matches!(sanitize_host("  "), Err(Error::Usage(_))));
    }
}
