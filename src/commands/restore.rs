//! `restore` (section 11): a memory file back from the backup. The source is
//! every host (the fold of all lineages) or one host's file, at the branch tip
//! (with the parked commits), a revision, or the last commit at or before a date.
//! It is written in the memory file's format, after the old content is kept in a
//! `.bak` file; written into this host's memory file, it is recorded as what the
//! memory holds, so the next backup finds nothing new in it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backup::git_error;
use crate::cli::{RestoreArgs, RestoreFormat};
use crate::commands::common::{open_existing, plural};
use crate::context::Context;
use crate::core::clock::Timestamp;
use crate::core::entry::{self, Entry};
use crate::core::fold::{self, Folded, HostFile};
use crate::core::layout::Layout;
use crate::core::record::Kind;
use crate::core::writeback;
use crate::error::{Error, Result};
use crate::git::{CommitId, GitError, Repo, transport, url};
use crate::output::Report;
use crate::store::files::{UNIFIED_FILE, host_file_name, host_of_file_name, is_backup_file};
use crate::store::{atomic, memory_file, state};

/// How long `restore` waits for the remote before it restores from the local
/// repository alone.
pub const RESTORE_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// What `--from` names when it names no host.
pub const FROM_UNIFIED: &str = "unified";

pub fn cmd_restore(args: &RestoreArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let memory = cx.memory_path(None).ok();
    let out = match &args.out {
        Some(o) => o.clone(),
        None => cx.memory_path(None)?,
    };
    let from_host = match args.from.as_deref() {
        None | Some(FROM_UNIFIED) => None,
        Some(host) => Some(crate::context::sanitize_host(host)?),
    };
    let (repo, branch) = open_existing(cx)?;
    let tips = tips(&repo, &branch, cx, report)?;
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
    let (hosts, unified) = read_source(&repo, &commits, from_host.as_deref(), report)?;
    let files: Vec<HostFile<'_>> = hosts
        .iter()
        .map(|(h, e, whole)| HostFile {
            host: h,
            entries: e,
            whole: *whole,
        })
        .collect();
    let heads = fold::heads(&files, &unified);
    let folded = fold::fold(&heads, &args.id.id_field);
    let live: Vec<&Folded> = folded.iter().filter(|f| f.body.is_some()).collect();

    let existing = match std::fs::read(&out) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::write(&out, e)),
    };
    let layout = match args.format {
        RestoreFormat::Jsonl => Some(Layout::Lines),
        RestoreFormat::Json => Some(Layout::Array),
        RestoreFormat::Auto => None,
    };
    let mut written = writeback::writeback(
        &folded,
        &[],
        existing.as_deref(),
        layout,
        &args.id.id_field,
        &|_| false,
        None,
    );
    if args.keep_metadata {
        written.bytes = with_metadata(
            &live,
            layout.unwrap_or_else(|| Layout::of(existing.as_deref(), live.iter().map(|f| f.kind))),
        );
    }
    let count = |k: Kind| live.iter().filter(|f| f.kind == k).count();
    let at: Vec<String> = commits.iter().map(CommitId::short).collect();
    let source = match &from_host {
        Some(h) => host_file_name(h),
        None => UNIFIED_FILE.to_string(),
    };
    report.set("out", out.display().to_string());
    report.set("source", source.clone());
    report.set("commits", at.clone());
    report.set("entries", live.len());
    report.set("entities", count(Kind::Entity));
    report.set("relations", count(Kind::Relation));
    report.set("other", count(Kind::Other));
    let what = format!(
        "{} ({}, {}, {} other) from {source} at {}",
        plural(live.len(), "entry", "entries"),
        plural(count(Kind::Entity), "entity", "entities"),
        plural(count(Kind::Relation), "relation", "relations"),
        count(Kind::Other),
        at.join(" and ")
    );
    let is_memory = memory.as_deref().is_some_and(|m| same_file(m, &out));
    if existing.as_deref() == Some(written.bytes.as_slice()) {
        report.set("written", false);
        report.summary = format!("{} already holds {what}; nothing written", out.display());
    } else {
        let kept = match &existing {
            Some(old) => Some(keep_old(&out, old, cx.clock.now())?),
            None => None,
        };
        let target = atomic::resolve_links(&out);
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        }
        atomic::write_bytes(&target, atomic::Mode::KeepOr600, &written.bytes)
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
    if is_memory && !args.keep_metadata {
        record_base(
            &repo,
            cx,
            &out,
            &folded,
            &written,
            &args.id.id_field,
            report,
        );
    }
    Ok(())
}

/// Records what this host's memory file holds after a restore.
fn record_base(
    repo: &Repo,
    cx: &Context,
    out: &Path,
    folded: &[Folded],
    written: &writeback::Writeback,
    id_field: &str,
    report: &mut Report,
) {
    let Ok(host) = cx.host() else { return };
    let (old, _) = state::load_base(repo.git_dir(), &host);
    let mut held = written.held.clone();
    // What the file held before and no longer holds is not held: not a deletion.
    for (ident, h) in &old.held {
        if h.body.is_some() && !held.contains_key(ident) {
            let mut gone = h.clone();
            gone.body = None;
            held.insert(ident.clone(), gone);
        }
    }
    let _ = folded;
    let mut base = crate::core::base::Base {
        held,
        ..Default::default()
    };
    if let Ok(read) = memory_file::read(out, false) {
        base.snapshot = Some(read.snapshot);
    }
    if let Err(e) = state::save_base(repo.git_dir(), &host, &base, id_field) {
        report.warn(format!(
            "{}: the record of what the memory file holds was not written: {e}; the next backup \
             may take restored entries for new ones",
            repo.git_dir().display()
        ));
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        let t = atomic::resolve_links(p);
        std::fs::canonicalize(&t).unwrap_or(t)
    };
    resolve(a) == resolve(b)
}

/// Each folded entry with the metadata of its newest head, for reading.
fn with_metadata(live: &[&Folded], layout: Layout) -> Vec<u8> {
    let entries: Vec<(Kind, String)> = live
        .iter()
        .map(|f| {
            let body = f.body.as_deref().expect("live");
            let e = Entry::new(f.newest_head.meta.clone(), body);
            (Kind::Other, e.to_json())
        })
        .collect();
    crate::core::layout::render(entries.iter().map(|(k, b)| (*k, b.as_str())), layout)
}

/// The tips to restore from: the local branch, the remote's (fetched when it
/// answers) and the parked commits; a tip that another contains is left out.
fn tips(repo: &Repo, branch: &str, cx: &Context, report: &mut Report) -> Result<Vec<CommitId>> {
    let g = |e: GitError| git_error(e, branch);
    let mut tips: Vec<CommitId> = repo.local_tip(branch).map_err(g)?.into_iter().collect();
    if let Some(u) = repo.remote_url() {
        let deadline = Instant::now() + RESTORE_FETCH_TIMEOUT;
        match cx.transport().and_then(|t| {
            transport::fetch(&t, repo, &u, branch, deadline).map_err(|e| git_error(e, &u))
        }) {
            Ok(f) => {
                tips.extend(f.tip);
                tips.extend(f.parked.into_iter().map(|(_, c)| c));
            }
            Err(e) => report.warn(format!(
                "cannot fetch from {} ({e}); restoring from the local repository",
                url::redact(&u)
            )),
        }
    }
    let mut kept: Vec<CommitId> = Vec::new();
    for t in &tips {
        let covered = tips
            .iter()
            .any(|o| o != t && repo.contains(*o, *t).unwrap_or(false));
        if !covered && !kept.contains(t) {
            kept.push(*t);
        }
    }
    Ok(kept)
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

type Hosts = Vec<(String, Vec<Entry>, bool)>;

/// The host files (merged over `commits`) and unified entries to fold: every
/// host's, or `host`'s alone.
fn read_source(
    repo: &Repo,
    commits: &[CommitId],
    host: Option<&str>,
    report: &mut Report,
) -> Result<(Hosts, Vec<Entry>)> {
    let wanted = host.map(host_file_name);
    let mut by_name: std::collections::BTreeMap<String, (Vec<Entry>, bool)> = Default::default();
    let mut unified = Vec::new();
    let mut names_seen: Vec<String> = Vec::new();
    for &commit in commits {
        let (files, _) = repo
            .read_files(commit, is_backup_file)
            .map_err(|e| git_error(e, "the backup"))?;
        for (name, bytes) in files {
            names_seen.push(name.clone());
            if wanted.as_ref().is_some_and(|w| *w != name) {
                continue;
            }
            let at = format!("{}:{name}", commit.short());
            let parsed = match entry::parse_stamped(&bytes) {
                Ok(p) => p,
                Err(e) if name == UNIFIED_FILE || wanted.is_some() => {
                    return Err(Error::Invalid {
                        path: PathBuf::from(&at),
                        line: e.line,
                        column: e.column,
                        cause: e.cause,
                    });
                }
                Err(e) => {
                    report.warn(format!(
                        "{at}:{}:{}: {}; its entries come from {UNIFIED_FILE}",
                        e.line, e.column, e.cause
                    ));
                    continue;
                }
            };
            for (line, cause) in &parsed.skipped {
                report.warn(format!("{at}:{line}: entry skipped: {cause}"));
            }
            if name == UNIFIED_FILE {
                unified.extend(parsed.entries);
            } else {
                let slot = by_name.entry(name).or_insert((Vec::new(), true));
                slot.1 &= parsed.skipped.is_empty();
                slot.0.extend(parsed.entries);
            }
        }
    }
    if let Some(w) = &wanted
        && !by_name.contains_key(w)
    {
        names_seen.sort();
        names_seen.dedup();
        let hosts: Vec<&str> = names_seen
            .iter()
            .filter_map(|n| host_of_file_name(n))
            .collect();
        return Err(Error::Missing {
            path: PathBuf::from(format!("{}:{w}", commits[0].short())),
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
    let hosts = by_name
        .into_iter()
        .map(|(name, (entries, whole))| {
            let merged = crate::core::merge::merge_owned(&entries);
            (
                host_of_file_name(&name).unwrap_or(&name).to_string(),
                merged,
                whole,
            )
        })
        .collect();
    Ok((hosts, unified))
}

/// Copies the old content of `out` to `out.<UTC timestamp>.bak` (mode 0600) and
/// returns its path.
fn keep_old(out: &Path, old: &[u8], now: Timestamp) -> Result<PathBuf> {
    let target = atomic::resolve_links(out);
    let bak = memory_file::bak_path(&target, &now_for_file_name(now));
    atomic::write_bytes(&bak, atomic::Mode::Private, old).map_err(|e| Error::write(&bak, e))?;
    Ok(bak)
}

/// `20261122T010203Z`: an instant that sorts as text and fits in a file name.
fn now_for_file_name(now: Timestamp) -> String {
    let text = now.to_string();
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
