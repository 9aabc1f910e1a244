//! Host and unified files by name, and reading them from a folder (`merge`,
//! `verify`).

use std::cell::RefCell;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::core::entry::{self, StampedFile};
use crate::core::record::ParseError;

/// The merged file of a backup.
pub const UNIFIED_FILE: &str = "unified-memory.json";
const HOST_PREFIX: &str = "memory-";
const HOST_SUFFIX: &str = ".json";

/// The file name of a host's file.
pub fn host_file_name(host: &str) -> String {
    format!("{HOST_PREFIX}{host}{HOST_SUFFIX}")
}

/// The host a file name belongs to, if it is a host file's name.
pub fn host_of_file_name(name: &str) -> Option<&str> {
    name.strip_prefix(HOST_PREFIX)?
        .strip_suffix(HOST_SUFFIX)
        .filter(|h| !h.is_empty())
}

/// Whether a file name read from a tree is a plain name that may be written to
/// disk (section 6): no `/`, no `..`, not starting with `.`, no NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && !name.contains("..")
}

/// Whether a name is one of the files a backup reads and writes.
pub fn is_backup_file(name: &str) -> bool {
    is_plain_name(name) && (name == UNIFIED_FILE || host_of_file_name(name).is_some())
}

/// Every `memory-*.json` at the top of `dir`, sorted by name.
pub fn host_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let is_host = name.to_str().is_some_and(is_backup_file) && name != UNIFIED_FILE;
        if is_host && e.file_type()?.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Why a stamped file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Parse(ParseError),
}

/// Reads and parses many host or unified files on all cores, each read by the
/// thread that parses it into a buffer it keeps for the next file: a new buffer
/// per file costs a page fault every 4 KiB.
pub fn read_many(paths: &[PathBuf]) -> Vec<Result<StampedFile, ReadError>> {
    thread_local! {
        static TEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let size = |i: usize| fs::metadata(&paths[i]).map_or(0, |m| m.len() as usize);
    let results = entry::on_all_cores(paths.len(), size, |i| {
        TEXT.with_borrow_mut(|text| {
            text.clear();
            fs::File::open(&paths[i])
                .and_then(|mut f| f.read_to_end(text))
                .map_err(ReadError::Io)?;
            entry::parse_stamped(text).map_err(ReadError::Parse)
        })
    });
    // On one core the calling thread read them.
    TEXT.take();
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_backup_files() {
        assert!(is_backup_file("memory-laptop.json"));
        assert!(is_backup_file(UNIFIED_FILE));
        for bad in [
            "memory-a/../../../evil2.json",
            ".memory-a.json",
            "memory-..json",
            "memory-.json",
            "notes.txt",
            "memory-a\\b.json",
        ] {
            assert!(!is_backup_file(bad), "{bad}");
        }
    }
}
