//! A backup with nothing to do, told apart before anything is parsed (section
//! 8, step 4). A backup that a hook or a timer starts finds nothing new most of
//! the time; making the state to learn that reads and parses the memory file
//! and every file of the branch. Instead, a run that ended with its state on the
//! branch and nothing to say records every input of that result; the next run
//! compares them, at the cost of reading the memory file once and one
//! `git ls-remote`, and when all are the same, that result stands.
//!
//! The inputs: the memory file (size, modification time, content hash), the
//! base that records the same read (any write of the base removes the record,
//! see `store::state::save_base`), the id field, this version of the tool, the
//! working tree and git's index, the local branch, its tip and the remote's as
//! last fetched, the readability of the tip's files, the remote's one URL, and
//! the remote's refs that a fetch takes (the branch and the parked commits).
//! Only through `git`: ids are compared as text, and libgit2 is not even
//! started. docs/design.md says what is left to the next whole run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::core::base::Snapshot;
use crate::git::transport::{self, Fetched, Transport};
use crate::git::{REMOTE_NAME, cli, url};
use crate::output::Report;
use crate::store::memory_file;
use crate::store::state as local_state;

use super::Outcome;

/// What a run that ended settled leaves for the next one.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    version: String,
    id_field: String,
    branch: String,
    /// The branch's tip, here and on the remote.
    tip: String,
    /// The remote's refs as the run fetched them (`transport::listed`).
    refs: Vec<(String, String)>,
    memory_size: u64,
    memory_modified_ns: i64,
    memory_hash: String,
    unified: usize,
    host_files: usize,
    /// The working tree's files as the run left them: (name, size, modified).
    worktree: Vec<(String, u64, i64)>,
}

impl Record {
    fn read_is(&self, s: &Snapshot) -> bool {
        self.memory_size == s.size
            && i128::from(self.memory_modified_ns) == s.modified_ns
            && self.memory_hash == s.hash
    }
}

/// A run with nothing to do: what the run that recorded it reported.
#[derive(Debug)]
pub struct Idle {
    host: String,
    branch: String,
    remote: String,
    unified: usize,
    host_files: usize,
}

impl Idle {
    /// The entries of the unified file.
    pub fn unified(&self) -> usize {
        self.unified
    }

    /// The fields that every run of the pipeline sets (`backup::run`).
    pub fn report_run(&self, report: &mut Report) {
        report.set("host", self.host.as_str());
        report.set("branch", self.branch.as_str());
        report.set("remote", self.remote.as_str());
        report.set("transport", "git");
        report.set("held_back", Vec::<String>::new());
    }

    /// The summary and fields of a backup that changed nothing, as
    /// `commands::common::report_backup` gives them.
    pub fn report(&self, report: &mut Report) {
        report.summary = format!(
            "backup from {}: nothing changed; unified {} entries",
            self.host, self.unified
        );
        let none: Vec<String> = Vec::new();
        self.report_run(report);
        for count in ["new", "changed", "deleted"] {
            report.set(count, 0);
            report.set(&format!("{count}_idents"), none.clone());
        }
        report.set("unified_entries", self.unified);
        report.set("host_files", self.host_files);
        report.set("commit", serde_json::Value::Null);
        report.set("pushed", false);
        report.set("attempts", 0);
    }
}

fn path(git_dir: &Path, host: &str) -> PathBuf {
    local_state::dir(git_dir).join(format!("idle-{host}.json"))
}

/// Removes the record of `host` (the base changed).
pub fn forget(git_dir: &Path, host: &str) -> std::io::Result<()> {
    match std::fs::remove_file(path(git_dir, host)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What a run with nothing to do is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Backup,
    /// Also as the last sync left it (`last-synced-<host>`): nothing comes in.
    Sync,
}

/// Whether a backup (or a sync) of `memory` has nothing to do, by the record
/// of the last run; `None` when anything differs or cannot be told (then the
/// run makes the state as usual, and says what is wrong if something is).
/// What can be told here is compared before any git runs.
pub fn check(
    cx: &Context,
    command: Command,
    memory: &Path,
    id_field: &str,
    deadline: Instant,
) -> Option<Idle> {
    let Ok(Transport::Git(program)) = cx.transport() else {
        return None;
    };
    let host = cx.host().ok()?;
    let git_dir = cx.repo.join(".git");
    let record: Record =
        serde_json::from_slice(&std::fs::read(path(&git_dir, &host)).ok()?).ok()?;
    if record.version != env!("CARGO_PKG_VERSION") || record.id_field != id_field {
        return None;
    }
    let read = memory_file::snapshot(memory).ok()??;
    let base = local_state::load_snapshot(&git_dir, &host);
    if !record.read_is(&read) || base.as_ref() != Some(&read) {
        return None;
    }
    if command == Command::Sync {
        let key = local_state::synced_key(&record.tip, &record.memory_hash, id_field);
        if local_state::last_synced(&git_dir, &host) != Some(key) {
            return None;
        }
    }
    if worktree(&cx.repo).as_ref() != Some(&record.worktree) {
        return None;
    }
    // Local: no ssh; `transport::list` sets up its own for the remote.
    let git = || cli::Git {
        program: &program,
        dir: Some(&git_dir),
        deadline,
        largest_file: 0,
        ssh: false,
    };
    // The branch, its tip, and the remote's as the last fetch saw it (a whole
    // run puts a tracking ref that went back).
    let tracking = format!("{}{}", transport::TRACKING_PREFIX, record.branch);
    let local = git()
        .run_reading(&[
            "rev-parse",
            "HEAD",
            &tracking,
            "--symbolic-full-name",
            "HEAD",
        ])
        .ok()?;
    let tip = &record.tip;
    let expected = format!("{tip}\n{tip}\nrefs/heads/{}\n", record.branch);
    if !local.success || local.stdout != expected {
        return None;
    }
    // Every file of the tip can be read (what `heal` checks of a whole run): a
    // loose object that a power cut left empty shows as `BAD`.
    let tree = git().run_reading(&["ls-tree", "-l", &record.tip]).ok()?;
    if !tree.success || !tree.stderr.is_empty() || tree.stdout.contains(" BAD\t") {
        return None;
    }
    // With `insteadOf` applied, as libgit2 gives it to a whole run; a remote of
    // several URLs, or a relative path (taken from the current folder by a whole
    // run), is left to one.
    let remote = git()
        .run_reading(&["remote", "get-url", "--all", REMOTE_NAME])
        .ok()?;
    let remote = remote.stdout.trim_end();
    let relative = matches!(url::remote_kind(remote), url::RemoteKind::Local(p) if p.is_relative());
    if remote.lines().count() != 1 || relative || url::mistake(remote).is_some() {
        return None;
    }
    let refs = transport::list(&program, &git_dir, remote, &record.branch, deadline).ok()?;
    if refs != record.refs {
        return None;
    }
    // Reached, and it holds this host's state: as a whole run would.
    local_state::set_last_push(&git_dir, cx.clock.now());
    Some(Idle {
        host,
        branch: record.branch,
        remote: url::redact(remote),
        unified: record.unified,
        host_files: record.host_files,
    })
}

/// The files of the working tree at `dir` (its top level, `.git` left out, and
/// git's index, which a whole run writes too) by name, size and modification
/// time, sorted.
fn worktree(dir: &Path) -> Option<Vec<(String, u64, i64)>> {
    use std::os::unix::fs::MetadataExt;
    let stat = |name: String, m: std::fs::Metadata| {
        (name, m.size(), m.mtime() * 1_000_000_000 + m.mtime_nsec())
    };
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name().into_string().ok()?;
        if name != ".git" {
            files.push(stat(name, e.metadata().ok()?));
        }
    }
    let index = std::fs::metadata(dir.join(".git/index")).ok()?;
    files.push(stat(".git/index".to_string(), index));
    files.sort();
    Some(files)
}

/// Records the inputs of `outcome` when it ended settled: its state on the
/// branch (pushed there, or there already), here too, nothing held back and
/// nothing to warn of. Otherwise removes any record, so that the next run
/// makes its state (and repeats what it had to say).
pub fn record(outcome: &Outcome, id_field: &str, report: &Report) {
    let fetched = outcome.fetched.as_ref();
    let git_dir = outcome.repo.git_dir();
    let p = &outcome.prepared;
    let settled = outcome.pushed
        && outcome.not_pushed.is_none()
        && outcome.remote.is_some()
        && report.warnings.is_empty()
        && !report.fields.contains_key("parked")
        && p.stamped.held_back.is_empty()
        && !p.partial
        && outcome.worktree_synced;
    let tip = outcome.commit.or(fetched.and_then(|f| f.tip));
    let local = outcome.repo.local_tip(&outcome.branch).ok().flatten();
    let base = local_state::load_snapshot(git_dir, &outcome.host);
    let files = outcome.repo.workdir().and_then(worktree);
    let record = match (fetched, tip, files) {
        (Some(f), Some(tip), Some(files))
            if settled && local == Some(tip) && base.as_ref() == Some(&outcome.memory.snapshot) =>
        {
            let s = &outcome.memory.snapshot;
            let fetched = Fetched {
                tip: Some(tip),
                parked: f.parked.clone(),
            };
            i64::try_from(s.modified_ns).ok().map(|modified_ns| Record {
                version: env!("CARGO_PKG_VERSION").to_string(),
                id_field: id_field.to_string(),
                branch: outcome.branch.clone(),
                tip: tip.to_string(),
                refs: transport::listed(&outcome.branch, &fetched),
                memory_size: s.size,
                memory_modified_ns: modified_ns,
                memory_hash: s.hash.clone(),
                unified: p.unified,
                host_files: p.host_files,
                worktree: files,
            })
        }
        _ => None,
    };
    let written = match record {
        Some(r) => crate::store::atomic::write_bytes(
            &path(git_dir, &outcome.host),
            crate::store::atomic::Mode::Private,
            &serde_json::to_vec(&r).expect("a record serialises"),
        ),
        None => forget(git_dir, &outcome.host),
    };
    if let Err(e) = written {
        tracing::debug!("the record of a settled run was not written: {e}");
    }
}
