//! `restore`: a memory file back from the backup. The source is unified or one
//! host's file, at the branch tip, a revision, or the last commit at or before a
//! date; it is folded to one entry per identity and written in the memory file's
//! format, after the old content is kept in a `.bak` file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{RestoreArgs, RestoreFormat};
use crate::clock::Timestamp;
use crate::commands::backup::git_error;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::files::{self, UNIFIED_FILE};
use crate::fold::{self, Folded, Kind};
use crate::git::{self, CommitId, GitError, Repo};
use crate::report::Report;
use crate::{Context, crdt, json};

/// How long `restore` waits for the remote before it restores from the local
/// repository alone.
pub const RESTORE_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--from` names when it names no host.
pub const FROM_UNIFIED: &str = "unified";

/// The layout of a written memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One entry per line, as the MCP memory server writes.
    Lines,
    /// One JSON array.
    Array,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Lines => "jsonl",
            Layout::Array => "json",
        }
    }
}

pub fn cmd_restore(args: &RestoreArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let out = crate::memory_path(args.out.as_deref());
    let file = match args.from.as_deref() {
        None | Some(FROM_UNIFIED) => UNIFIED_FILE.to_string(),
        Some(host) => files::host_file_name(&crate::sanitize_host(host)?),
    };
    let (repo, branch) = super::open_existing(cx, true)?;
    let tips = tips(&repo, &branch, report)?;
    let commits = match &args.at {
        None => tips,
        Some(at) => vec![commit_at(&repo, &tips, at)?],
    };
    if commits.is_empty() {
        return Err(Error::Missing {
            path: cx.repo.clone(),
            cause: format!("nothing is backed up on branch {branch} yet"),
        });
    }
    let entries = read_source(&repo, &commits, &file, report)?;
    let merged = crdt::merge(&entries);
    let owned: Vec<Entry> = merged.into_iter().cloned().collect();
    let folded = fold::fold(&owned, &args.id.id_field);

    let existing = match std::fs::read(&out) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::write(&out, e)),
    };
    let layout = layout(args.format, existing.as_deref(), &folded);
    let text = render(&folded, layout, args.keep_metadata);

    let count = |k: Kind| folded.iter().filter(|f| f.kind == k).count();
    let at: Vec<String> = commits.iter().map(CommitId::short).collect();
    report.set("out", out.display().to_string());
    report.set("source", file.clone());
    report.set("commits", at.clone());
    report.set("format", layout.name());
    report.set("entries", folded.len());
    report.set("entities", count(Kind::Entity));
    report.set("relations", count(Kind::Relation));
    report.set("other", count(Kind::Other));
    let what = format!(
        "{} ({}, {}, {} other) from {file} at {}",
        plural(folded.len(), "entry", "entries"),
        plural(count(Kind::Entity), "entity", "entities"),
        plural(count(Kind::Relation), "relation", "relations"),
        count(Kind::Other),
        at.join(" and ")
    );
    match existing {
        Some(old) if old == text => {
            report.set("written", false);
            report.summary = format!("{} already holds {what}; nothing written", out.display());
        }
        old => {
            let kept = match old {
                Some(old) => Some(keep_old(&out, &old, cx.clock.now())?),
                None => None,
            };
            // On a new machine the memory file's folder may not exist yet.
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
            }
            files::atomic_write(&out, |w| std::io::Write::write_all(w, &text))
                .map_err(|e| Error::write(&out, e))?;
            report.set("written", true);
            report.set("backup", kept.as_ref().map(|p| p.display().to_string()));
            report.summary = match kept {
                Some(bak) => format!(
                    "restored {what} into {}; its previous content is in {}",
                    out.display(),
                    bak.display()
                ),
                None => format!("restored {what} into {}", out.display()),
            };
        }
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The tips to restore from: the local branch and, when a remote is set and
/// answers, its branch; a tip that the other contains is left out.
fn tips(repo: &Repo, branch: &str, report: &mut Report) -> Result<Vec<CommitId>> {
    let g = |e: GitError| git_error(e, branch);
    let mut tips: Vec<CommitId> = repo.local_tip(branch).map_err(g)?.into_iter().collect();
    if let Some(url) = repo.remote_url() {
        match repo.fetch(&url, branch, RESTORE_FETCH_TIMEOUT) {
            Ok(Some(tip)) => {
                repo.note_remote_tip(branch, tip);
                tips.push(tip);
            }
            Ok(None) => {}
            Err(e) => report.warn(format!(
                "cannot fetch from {} ({e}); restoring from the local repository",
                git::redact(&url)
            )),
        }
    }
    if let [a, b] = tips[..] {
        if repo.contains(a, b).map_err(g)? {
            tips.pop();
        } else if repo.contains(b, a).map_err(g)? {
            tips.remove(0);
        }
    }
    Ok(tips)
}

/// The commit `at` names: the last one at or before a date (RFC 3339, or
/// `YYYY-MM-DD` for the end of that day, UTC), else a revision.
fn commit_at(repo: &Repo, tips: &[CommitId], at: &str) -> Result<CommitId> {
    let g = |e: GitError| git_error(e, at);
    if let Some(t) = Timestamp::parse_date_or_time(at) {
        let secs = t.micros().div_euclid(1_000_000);
        return repo
            .last_commit_at_or_before(tips, secs)
            .map_err(g)?
            .ok_or_else(|| Error::Missing {
                path: PathBuf::from(at),
                cause: "no backup was made at or before this date".into(),
            });
    }
    repo.resolve(at).map_err(g)?.ok_or_else(|| {
        Error::Usage(format!(
            "--at {at}: neither a revision of the backup repository nor a date (RFC 3339 or YYYY-MM-DD)"
        ))
    })
}

/// Every entry of `file` in `commits`. A file that does not parse stops the
/// restore; entries without valid metadata are skipped with a warning.
fn read_source(
    repo: &Repo,
    commits: &[CommitId],
    file: &str,
    report: &mut Report,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut found = false;
    for &commit in commits {
        let files = repo
            .read_files(commit, |n| n == file)
            .map_err(|e| git_error(e, file))?;
        let Some(bytes) = files.get(file) else {
            continue;
        };
        found = true;
        let at = format!("{}:{file}", commit.short());
        let stamped = files::parse_stamped(bytes).map_err(|e| Error::Invalid {
            path: PathBuf::from(&at),
            line: e.line,
            column: e.column,
            cause: e.cause,
        })?;
        for (line, cause) in &stamped.skipped {
            report.warn(format!("{at}:{line}: entry skipped: {cause}"));
        }
        entries.extend(stamped.entries);
    }
    if !found {
        let names = repo
            .read_files(commits[0], |n| files::host_of_file_name(n).is_some())
            .map_err(|e| git_error(e, file))?;
        let hosts: Vec<&str> = names
            .keys()
            .filter_map(|n| files::host_of_file_name(n))
            .collect();
        return Err(Error::Missing {
            path: PathBuf::from(format!("{}:{file}", commits[0].short())),
            cause: format!(
                "not in the backup; hosts there: {}",
                if hosts.is_empty() {
                    "none".to_string()
                } else {
                    hosts.join(", ")
                }
            ),
        });
    }
    Ok(entries)
}

/// `auto`: the existing file's layout; else JSON Lines when every entry is an
/// MCP entity or relation; else a JSON array.
fn layout(format: RestoreFormat, existing: Option<&[u8]>, folded: &[Folded]) -> Layout {
    match format {
        RestoreFormat::Jsonl => Layout::Lines,
        RestoreFormat::Json => Layout::Array,
        RestoreFormat::Auto => {
            let first = existing.and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace()));
            match first {
                Some(b'[') => Layout::Array,
                Some(_) => Layout::Lines,
                None if folded.iter().all(|f| f.kind != Kind::Other) => Layout::Lines,
                None => Layout::Array,
            }
        }
    }
}

/// The restored file's bytes. Entities and relations without metadata are
/// written with their keys in the MCP server's own order, so that the server's
/// next rewrite of the file changes no byte of them.
pub fn render(folded: &[Folded], layout: Layout, keep_metadata: bool) -> Vec<u8> {
    let texts = folded.iter().map(|f| {
        if keep_metadata {
            f.with_metadata()
        } else {
            mcp_key_order(f)
        }
    });
    let mut out = Vec::new();
    match layout {
        Layout::Lines => {
            for t in texts {
                out.extend_from_slice(t.as_bytes());
                out.push(b'\n');
            }
        }
        Layout::Array if folded.is_empty() => out.extend_from_slice(b"[]\n"),
        Layout::Array => {
            out.extend_from_slice(b"[\n");
            for (i, t) in texts.enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n");
                }
                out.extend_from_slice(t.as_bytes());
            }
            out.extend_from_slice(b"\n]\n");
        }
    }
    out
}

/// The keys the MCP memory server writes, in its order.
const ENTITY_KEYS: [&str; 4] = ["type", "name", "entityType", "observations"];
const RELATION_KEYS: [&str; 4] = ["type", "from", "to", "relationType"];

/// An entity or relation with the MCP server's keys first, in its order, then
/// any others in canonical order; anything else as it is.
fn mcp_key_order(f: &Folded) -> String {
    let order: &[&str] = match f.kind {
        Kind::Entity => &ENTITY_KEYS,
        Kind::Relation => &RELATION_KEYS,
        Kind::Other => return f.body.clone(),
    };
    let mut members: Vec<(&[u8], &[u8])> = json::canonical_members(f.body.as_bytes()).collect();
    let rank = |key: &[u8]| {
        order
            .iter()
            .position(|k| key.len() == k.len() + 2 && &key[1..key.len() - 1] == k.as_bytes())
            .unwrap_or(order.len())
    };
    // Stable: keys outside the MCP order keep their canonical order.
    members.sort_by_key(|(k, _)| rank(k));
    let mut text = Vec::with_capacity(f.body.len());
    text.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(k);
        text.push(b':');
        text.extend_from_slice(v);
    }
    text.push(b'}');
    String::from_utf8(text).expect("canonical JSON is UTF-8")
}

/// Copies the old content of `out` to `out.<UTC timestamp>.bak` (a new name
/// when that one is taken) and returns its path.
fn keep_old(out: &Path, old: &[u8], now: Timestamp) -> Result<PathBuf> {
    let stamp = now_for_file_name(now);
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "memory".into());
    let mut n = 0;
    let bak = loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = out.with_file_name(format!("{name}.{stamp}{suffix}.bak"));
        if std::fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        n += 1;
    };
    files::atomic_write(&bak, |w| std::io::Write::write_all(w, old))
        .map_err(|e| Error::write(&bak, e))?;
    Ok(bak)
}

/// `20261122T010203Z`: an instant that sorts as text and fits in a file name.
fn now_for_file_name(now: Timestamp) -> String {
    let text = now.to_string();
    // 2026-11-22T01:02:03.000000Z → 20261122T010203Z
    let digits: String = text
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{digits}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_stamps_are_compact_utc() {
        let t = Timestamp::parse("2026-11-22T01:02:03.456789Z").unwrap();
        assert_eq!(now_for_file_name(t), "20261122T010203Z");
    }
}
