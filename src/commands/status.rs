//! `status`: what the backup holds and how it is doing. Per host: entries, last
//! change, file size; unified's entries; the local branch against the remote;
//! the last run's result; warnings. It works offline and says when the remote
//! could not be asked.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::Context;
use crate::cli::StatusArgs;
use crate::clock::Timestamp;
use crate::commands::backup::{git_error, is_backup_file};
use crate::error::Result;
use crate::files::{self, UNIFIED_FILE};
use crate::git::{self, CommitId, GitError};
use crate::logging::LAST_RUN_FILE;
use crate::report::Report;

/// How long `status` waits for the remote before it answers from what it knows.
pub const STATUS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A host whose newest entry is older than this gets a warning.
pub const SILENT_HOST: Duration = Duration::from_secs(7 * 24 * 3600);

/// One file of the backup, as `status` shows it.
#[derive(Debug)]
struct FileStatus {
    name: String,
    entries: usize,
    last_change: Option<Timestamp>,
    bytes: usize,
}

pub fn cmd_status(args: &StatusArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let repo_name = cx.repo.display().to_string();
    let (repo, branch) = super::open_existing(cx, !args.no_fetch)?;
    let g = |e: GitError| git_error(e, &repo_name);
    let local = repo.local_tip(&branch).map_err(g)?;
    let mut lines = Vec::new();

    // The remote: asked unless --no-fetch; else what the last contact saw.
    let url = repo.remote_url();
    // Shown: a password in the URL is never printed.
    let shown = url.as_deref().map(git::redact);
    let mut remote = Map::new();
    remote.insert("url".into(), shown.clone().into());
    let mut remote_tip = None;
    let mut remote_line = String::new();
    if let Some(url) = &url {
        let asked = if args.no_fetch {
            Err("not asked (--no-fetch)".to_string())
        } else {
            repo.fetch(url, &branch, STATUS_FETCH_TIMEOUT)
                .map_err(|e| e.to_string())
        };
        match asked {
            Ok(tip) => {
                if let Some(t) = tip {
                    repo.note_remote_tip(&branch, t);
                }
                remote_tip = tip;
                remote.insert("reachable".into(), true.into());
            }
            Err(why) => {
                remote_tip = repo.noted_remote_tip(&branch);
                remote.insert("reachable".into(), false.into());
                remote.insert("error".into(), why.clone().into());
                if !args.no_fetch {
                    report.warn(format!(
                        "cannot ask {} ({why}); ahead and behind are as of the last contact",
                        git::redact(url)
                    ));
                }
                remote_line = format!(" (not asked now: {why}; as of the last contact)");
            }
        }
        remote.insert("tip".into(), remote_tip.map(|t| t.to_string()).into());
    }
    let (ahead, behind) = match (local, remote_tip) {
        (Some(l), Some(r)) => {
            let (a, b) = repo.ahead_behind(l, r).map_err(g)?;
            (Some(a), Some(b))
        }
        _ => (None, None),
    };
    remote.insert("ahead".into(), ahead.into());
    remote.insert("behind".into(), behind.into());

    // The files: of the newer of the two tips (the remote's when they diverged).
    let shown_commit = match (local, remote_tip) {
        (Some(l), Some(r)) if !repo.contains(l, r).map_err(g)? => Some(r),
        (l, r) => l.or(r),
    };
    let mut hosts = Vec::new();
    let mut unified = None;
    if let Some(commit) = shown_commit {
        let files = repo.read_files(commit, is_backup_file).map_err(g)?;
        for (name, bytes) in &files {
            if let Some(w) = crate::large_file_warning(name, bytes.len() as u64) {
                report.warn(w);
            }
            let Some(st) = file_status(name, bytes, commit, report) else {
                continue;
            };
            if name == UNIFIED_FILE {
                unified = Some(st);
            } else {
                hosts.push(st);
            }
        }
    }
    let now = cx.clock.now();
    for h in &hosts {
        if let Some(last) = h.last_change {
            let silent = now.micros() - last.micros();
            if silent > SILENT_HOST.as_micros() as i64 {
                report.warn(format!(
                    "{}: no change for {} days (last {last})",
                    h.name,
                    silent / 86_400_000_000
                ));
            }
        }
    }
    // The table, for people.
    lines.push(format!(
        "{:<32} {:>9} {:<27} {:>10}",
        "host", "entries", "last change", "size"
    ));
    for h in &hosts {
        let host = files::host_of_file_name(&h.name).unwrap_or(&h.name);
        lines.push(row(host, h));
    }
    if let Some(u) = &unified {
        lines.push(row("(unified)", u));
    }
    let tip = |c: Option<CommitId>| c.map_or("no commit".to_string(), |c| c.short());
    lines.push(match &shown {
        None => format!("branch {branch} at {}; no remote set", tip(local)),
        Some(url) => format!(
            "branch {branch} at {}; {url} at {}: {} ahead, {} behind{remote_line}",
            tip(local),
            tip(remote_tip),
            count(ahead),
            count(behind)
        ),
    });
    let census = repo.census();
    lines.push(format!(
        "objects: {} loose ({}), {} pack(s) ({})",
        census.loose_objects,
        size(census.loose_bytes as usize),
        census.packs,
        size(census.pack_bytes as usize)
    ));
    let last_run = last_run(&cx.log_dir);
    lines.push(match &last_run {
        Some(run) => format!("last run: {}", describe_run(run)),
        None => "last run: none recorded".to_string(),
    });

    report.set("repo", repo_name.clone());
    report.set("branch", branch.clone());
    report.set("local_tip", local.map(|c| c.to_string()));
    report.set("shown_commit", shown_commit.map(|c| c.to_string()));
    report.set("hosts", hosts.iter().map(file_json).collect::<Vec<_>>());
    report.set("unified", unified.as_ref().map(file_json));
    report.set("remote", Value::Object(remote));
    report.set(
        "objects",
        json!({
            "loose": census.loose_objects,
            "loose_bytes": census.loose_bytes,
            "packs": census.packs,
            "pack_bytes": census.pack_bytes,
        }),
    );
    report.set("last_run", last_run.unwrap_or(Value::Null));
    report.lines = lines;
    report.summary = format!(
        "{} host(s), unified {} entries{}",
        hosts.len(),
        unified.as_ref().map_or(0, |u| u.entries),
        match (&url, ahead, behind) {
            (None, _, _) => "; no remote".to_string(),
            (Some(_), Some(0), Some(0)) => "; in step with the remote".to_string(),
            (Some(_), Some(a), Some(b)) => format!("; {a} ahead of, {b} behind the remote"),
            (Some(_), _, _) => "; the remote's state is unknown".to_string(),
        }
    );
    Ok(())
}

/// A file's entries, newest change and size; a warning and `None` when it does
/// not parse, a warning per entry without valid metadata.
fn file_status(
    name: &str,
    bytes: &[u8],
    commit: CommitId,
    report: &mut Report,
) -> Option<FileStatus> {
    match files::parse_stamped(bytes) {
        Ok(s) => {
            for (line, cause) in &s.skipped {
                report.warn(format!(
                    "{name}:{line} (commit {}): entry without valid metadata: {cause}",
                    commit.short()
                ));
            }
            Some(FileStatus {
                name: name.to_string(),
                entries: s.entries.len(),
                last_change: s.entries.iter().map(|e| e.meta.timestamp).max(),
                bytes: bytes.len(),
            })
        }
        Err(e) => {
            report.warn(format!(
                "{name}:{}:{} (commit {}): does not parse: {}",
                e.line,
                e.column,
                commit.short(),
                e.cause
            ));
            None
        }
    }
}

fn row(label: &str, f: &FileStatus) -> String {
    format!(
        "{label:<32} {:>9} {:<27} {:>10}",
        f.entries,
        f.last_change.map_or("-".to_string(), |t| t.to_string()),
        size(f.bytes)
    )
}

fn file_json(f: &FileStatus) -> Value {
    json!({
        "file": f.name,
        "host": files::host_of_file_name(&f.name),
        "entries": f.entries,
        "last_change": f.last_change.map(|t| t.to_string()),
        "bytes": f.bytes,
    })
}

fn count(n: Option<usize>) -> String {
    n.map_or("?".to_string(), |n| n.to_string())
}

/// `812 B`, `12.3 kB`, `4.5 MB`.
fn size(bytes: usize) -> String {
    match bytes {
        b if b < 1_000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// `last-run.json`, if there is one that parses.
fn last_run(log_dir: &std::path::Path) -> Option<Value> {
    let text = std::fs::read(log_dir.join(LAST_RUN_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn describe_run(run: &Value) -> String {
    let field = |k: &str| run.get(k).and_then(Value::as_str).unwrap_or("?");
    let code = run.get("exit_code").and_then(Value::as_i64).unwrap_or(-1);
    let what = run
        .get("error")
        .and_then(Value::as_str)
        .or_else(|| run.get("summary").and_then(Value::as_str))
        .unwrap_or("");
    format!(
        "{} at {}, exit {code}: {what}",
        field("command"),
        field("finished")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_short() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(12_345), "12.3 kB");
        assert_eq!(size(4_500_000), "4.5 MB");
    }
}
