//! The working tree shows the branch tip: its files for people to read, and an
//! index that matches, so `git status` in the repository is clean. Each file is
//! replaced by a rename, and the index too, so no lock file is ever taken; it
//! repeats until the tip did not move while it wrote, so that of two runs the
//! last to finish leaves the newest tip. The files are a view, rebuilt by every
//! run: replaced, not synced to disk.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::git::error::{GitError, classify_local};
use crate::git::{CommitId, Files, Repo};
use crate::store::atomic::{self, TEMP_PREFIX};

/// A temporary file or index older than this was left by a killed run.
const STALE_TEMPORARY: Duration = Duration::from_secs(600);
const TEMP_INDEX_PREFIX: &str = "index.memory-backup-";

impl Repo {
    /// Makes the working tree and the index show `branch`'s tip (`known`: the
    /// files of a commit this run wrote, which saves reading them back).
    pub fn sync_worktree(
        &self,
        branch: &str,
        keep: impl Fn(&str) -> bool + Copy,
        known: Option<(CommitId, &Files)>,
    ) -> Result<(), GitError> {
        let Some(dir) = self.workdir().map(Path::to_path_buf) else {
            return Ok(());
        };
        atomic::remove_stale_temporaries(&dir, STALE_TEMPORARY);
        remove_stale_indexes(self.raw().path());
        for _ in 0..5 {
            let Some(tip) = self.local_tip(branch)? else {
                return Ok(());
            };
            let read;
            let files = match known {
                Some((id, files)) if id == tip => files,
                _ => {
                    read = self.read_files(tip, keep)?.0;
                    &read
                }
            };
            write_files(&dir, files)?;
            self.write_index(tip)?;
            if self.local_tip(branch)? == Some(tip) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn write_index(&self, tip: CommitId) -> Result<(), GitError> {
        let tree = self
            .raw()
            .find_commit(tip.oid())
            .and_then(|c| c.tree())
            .map_err(|e| classify_local(&e))?;
        let gitdir = self.raw().path();
        // A fresh name: libgit2 writes it through its own `.lock`, which no one
        // else takes, and the rename puts it in place without `index.lock`.
        let tmp = gitdir.join(format!(
            "{TEMP_INDEX_PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = git2::Index::open(&tmp)
            .and_then(|mut index| {
                index.read_tree(&tree)?;
                index.write()
            })
            .map_err(|e| classify_local(&e))
            .and_then(|()| {
                std::fs::rename(&tmp, gitdir.join("index"))
                    .map_err(|e| GitError::local(format!("{}: {e}", gitdir.display())))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn remove_stale_indexes(gitdir: &Path) {
    let Ok(entries) = std::fs::read_dir(gitdir) else {
        return;
    };
    for e in entries.flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with(TEMP_INDEX_PREFIX)
        {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > STALE_TEMPORARY);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `files` into the working tree `dir`, each unless it holds those bytes
/// already.
pub fn write_files(dir: &Path, files: &Files) -> Result<(), GitError> {
    for (name, bytes) in files {
        if !crate::store::files::is_plain_name(name) {
            continue;
        }
        let path = dir.join(name);
        let same_size = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if same_size && std::fs::read(&path).is_ok_and(|b| &b == bytes) {
            continue;
        }
        replace_file(dir, &path, bytes)
            .map_err(|e| GitError::local(format!("{}: write failed: {e}", path.display())))?;
    }
    Ok(())
}

/// Replaces `path` by a rename: a reader sees the old file or the new one.
fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // Private, as the whole repository is (git compares only the executable
    // bit with the tree's 100644).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}
