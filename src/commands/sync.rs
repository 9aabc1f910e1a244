//! `sync` (section 13): back up, then write into the memory file the fold of
//! every host's lineages, combined with what the file holds: entries and
//! observations from other hosts come in, deletions made elsewhere apply, and
//! what changed here is kept (it was just backed up). A change another writer
//! makes meanwhile is never overwritten: the file is read, backed up and merged
//! again. No `.bak`: everything written is in the backup.

use std::time::Instant;

use crate::backup::Outcome;
use crate::backup::idle::{self, Command};
use crate::cli::SyncArgs;
use crate::commands::common;
use crate::context::Context;
use crate::core::fold;
use crate::core::writeback;
use crate::error::{Error, Result};
use crate::output::Report;
use crate::store::memory_file::{self, Written};
use crate::store::state;

/// How many times `sync` starts again when the memory file changed under it.
const TRIES: usize = 4;
/// How long a write is watched: a writer that read the file before it (the MCP
/// server reads, changes and writes the whole graph) may replace it right after.
const GRACE: std::time::Duration = std::time::Duration::from_millis(200);

pub fn cmd_sync(args: &SyncArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let id_field = &args.backup.id.id_field;
    let memory_path = cx.memory_path(args.backup.memory.as_deref())?;
    let started = Instant::now();
    let max_elapsed = common::max_elapsed(args.backup.max_elapsed)?;
    if !args.dry_run && !args.backup.no_push {
        let deadline = started + max_elapsed;
        let idle = idle::check(cx, Command::Sync, &memory_path, id_field, deadline);
        if let Some(idle) = idle {
            // As the last sync left them, and nothing new on either side.
            tracing::info!("the memory file and the remote are as the last sync left them");
            idle.report_run(report);
            let nothing = writeback::Writeback::default();
            report_sync(report, &[], &nothing, idle.unified(), "", "");
            report.set("commit", serde_json::Value::Null);
            report.set("pushed", false);
            report.set("written", false);
            return Ok(());
        }
    }
    let mut local_changes: Vec<String> = Vec::new();
    for _ in 0..TRIES {
        let left = common::time_left(started, max_elapsed);
        let mut outcome =
            common::run_backup(&args.backup, left, cx, report, None, args.dry_run, true)?;
        let p = &outcome.prepared;
        let s = &p.stamped;
        local_changes.extend(
            s.new_idents
                .iter()
                .chain(&s.changed_idents)
                .chain(&s.deleted_idents)
                .cloned(),
        );
        let repo = &outcome.repo;
        let host = &outcome.host;
        let on = settled_on(&outcome, args.dry_run);
        let settled = |hash: &str| on.map(|c| state::synced_key(&c.to_string(), hash, id_field));
        // Nothing of this host's changed, and the state and the memory file are as
        // the last sync left them (any write of the base since removed its record):
        // nothing can come in.
        let unmoved = settled(&outcome.memory.snapshot.hash)
            .is_some_and(|k| state::last_synced(repo.git_dir(), host) == Some(k));
        let written = if unmoved {
            writeback::Writeback::default()
        } else {
            fold_into(&outcome, id_field)
        };
        local_changes.sort();
        local_changes.dedup();
        let kept = if outcome.not_pushed.is_some() {
            ", committed locally (not pushed)"
        } else {
            ""
        };
        let summary = |written: &writeback::Writeback, verb: &str, report: &mut Report| {
            report_sync(report, &local_changes, written, p.unified, verb, kept);
        };
        report.set("commit", outcome.commit.map(|c| c.to_string()));
        report.set("pushed", outcome.pushed && outcome.commit.is_some());
        if args.dry_run {
            summary(
                &written,
                " would be written (--dry-run: nothing written)",
                report,
            );
            report.lines = written
                .added
                .iter()
                .map(|i| format!("+ {i}"))
                .chain(written.changed.iter().map(|i| format!("~ {i}")))
                .chain(written.removed.iter().map(|i| format!("- {i}")))
                .collect();
            return Ok(());
        }
        // Nothing to add, change or remove: the file stays as its writer made it,
        // whatever its formatting.
        if written.is_empty() || written.bytes == outcome.memory.bytes {
            // The backup step recorded this read with the base it stamped.
            let saved = written.held.is_empty() || {
                let mut base = writeback::base_after(&s.base, &written);
                base.snapshot = Some(outcome.memory.snapshot.clone());
                save(repo, host, &base, id_field, report)
            };
            match settled(&outcome.memory.snapshot.hash) {
                Some(k) if saved && !unmoved => state::set_last_synced(repo.git_dir(), host, &k),
                _ => {}
            }
            report.set("written", false);
            summary(&written, "", report);
            if written.held.is_empty() {
                // The base is as the backup step left it: its record stands.
                idle::record(&outcome, id_field, report);
            }
            return finish(outcome.not_pushed.take());
        }
        match memory_file::replace_if_unchanged(
            &memory_path,
            &written.bytes,
            &outcome.memory.snapshot,
        )? {
            Written::Done => {
                let ours = memory_file::read(&memory_path, false)?;
                std::thread::sleep(GRACE);
                let replaced = ours.snapshot.hash != memory_file::content_hash(&written.bytes)
                    || memory_file::read(&memory_path, false)?.snapshot != ours.snapshot;
                if replaced {
                    // Replaced by a writer that had read it before: what it wrote is
                    // read, backed up and merged again; the base stays as it was.
                    tracing::info!(
                        "{}: replaced just after sync wrote it; again",
                        memory_path.display()
                    );
                    continue;
                }
                let key = settled(&ours.snapshot.hash);
                let mut base = writeback::base_after(&s.base, &written);
                base.snapshot = Some(ours.snapshot);
                if let (true, Some(k)) = (save(repo, host, &base, id_field, report), key) {
                    state::set_last_synced(repo.git_dir(), host, &k);
                }
                report.set("written", true);
                summary(&written, "", report);
                return finish(outcome.not_pushed.take());
            }
            Written::Changed => {
                tracing::info!("{}: changed while sync ran; again", memory_path.display());
                continue;
            }
        }
    }
    Err(Error::Busy(format!(
        "{}: the file kept changing while sync ran ({TRIES} tries); what it held each time is \
         backed up, and nothing of it was overwritten",
        memory_path.display()
    )))
}

/// The fields and the summary of a sync: what came in (`written`), what went
/// out, and how (`kept`: a suffix when it was kept here, not pushed).
fn report_sync(
    report: &mut Report,
    local_changes: &[String],
    written: &writeback::Writeback,
    unified: usize,
    verb: &str,
    kept: &str,
) {
    report.set("added", written.added.clone());
    report.set("changed", written.changed.clone());
    report.set("removed", written.removed.clone());
    report.set("local_changes", local_changes.to_vec());
    report.set("unified_entries", unified);
    report.summary = format!(
        "sync: {} added, {} changed, {} removed from other hosts{verb}; {} backed up{kept}",
        written.added.len(),
        written.changed.len(),
        written.removed.len(),
        common::plural(local_changes.len(), "local change", "local changes"),
    );
}

/// The commit whose files the fold reads, when nothing of this host's changed
/// and the local branch holds it (not when the branch could not follow the
/// remote; a commit made now may merge what another run brought in).
fn settled_on(outcome: &Outcome, dry_run: bool) -> Option<crate::git::CommitId> {
    let made_on = outcome.prepared.parents.first().copied();
    let made_on = made_on.filter(|_| outcome.commit.is_none() && !dry_run);
    let tip = outcome.repo.local_tip(&outcome.branch).ok().flatten();
    made_on.filter(|_| tip == made_on)
}

/// The memory file's content after the sync: the fold of every host's lineages
/// combined with the file as read; what differs from the base, for the base.
fn fold_into(outcome: &Outcome, id_field: &str) -> writeback::Writeback {
    let p = &outcome.prepared;
    let s = &p.stamped;
    let heads = fold::heads(&p.host_files(), &p.unified_entries);
    let folded = fold::fold(&heads, id_field);
    let keep = |ident: &str| s.held_back.iter().any(|h| h == ident);
    writeback::writeback(
        &folded,
        &outcome.memory.records,
        Some(&outcome.memory.bytes),
        None,
        id_field,
        &keep,
        Some(&s.base),
    )
}

fn save(
    repo: &crate::git::Repo,
    host: &str,
    base: &crate::core::base::Base,
    id_field: &str,
    report: &mut Report,
) -> bool {
    let saved = state::save_base(repo.git_dir(), host, base, id_field);
    if let Err(e) = &saved {
        report.warn(format!(
            "{}: the record of what the memory file holds was not written: {e}",
            repo.git_dir().display()
        ));
    }
    saved.is_ok()
}

fn finish(not_pushed: Option<Error>) -> Result<()> {
    match not_pushed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
