//! Helpers that several commands share.

use std::time::Duration;

use crate::backup::{self, Outcome};
use crate::cli::BackupArgs;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::git::Repo;
use crate::output::Report;

/// The backup repository that must exist already (`restore`, `status`,
/// `verify`) and its branch; 78 when there is none.
pub fn open_existing(cx: &Context) -> Result<(Repo, String)> {
    let name = cx.repo.display().to_string();
    let repo = Repo::open(&cx.repo)
        .map_err(|e| backup::git_error(e, &name))?
        .ok_or_else(|| {
            Error::Config(format!(
                "{name}: no backup repository here; `memory-backup backup` makes one, \
                 `memory-backup init --remote URL` clones one"
            ))
        })?;
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    Ok((repo, branch))
}

/// The least time a run gets to make its state and keep it here, whatever a
/// check before it took of `--max-elapsed`.
const MOMENT: Duration = Duration::from_secs(1);

/// What is left of `max_elapsed` since `started`, and a moment (`MOMENT`) at least.
pub fn time_left(started: std::time::Instant, max_elapsed: Duration) -> Duration {
    max_elapsed.saturating_sub(started.elapsed()).max(MOMENT)
}

/// `--max-elapsed` as a duration.
pub fn max_elapsed(secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::Usage(format!("--max-elapsed {secs}: not a positive duration")))
}

/// `1 entry`, `2 entries`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Runs the backup pipeline as `backup` and `sync` do; `whole`: the run needs
/// the whole merged state, never only this host's file (`sync`, `forget`);
/// `max_elapsed`: the time it has.
pub fn run_backup(
    args: &BackupArgs,
    max_elapsed: Duration,
    cx: &Context,
    report: &mut Report,
    forget: Option<&dyn Fn(&str) -> bool>,
    dry_run: bool,
    whole: bool,
) -> Result<Outcome> {
    let memory = cx.memory_path(args.memory.as_deref())?;
    let mut allowed = cx.allow_secrets.clone();
    allowed.extend(args.allow_secret.iter().cloned());
    let opts = backup::Options {
        memory: &memory,
        id_field: &args.id.id_field,
        no_push: args.no_push,
        max_elapsed,
        allow_mass_delete: args.allow_mass_delete,
        allow_secrets: &allowed,
        forget,
        dry_run,
        park_at_once: !whole && !dry_run && forget.is_none(),
    };
    backup::run(&opts, cx, report)
}

/// The summary and fields of a backup run; `how` says where the state went.
pub fn report_backup(outcome: &Outcome, report: &mut Report) {
    let p = &outcome.prepared;
    let s = &p.stamped;
    let changes = if outcome.commit.is_none() {
        "nothing changed".to_string()
    } else {
        format!(
            "{} new, {} changed, {} deleted",
            s.new, s.changed, s.deleted
        )
    };
    let parked = report
        .fields
        .get("parked")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let how = match (&outcome.commit, outcome.pushed, &outcome.remote) {
        (None, _, _) => String::new(),
        (Some(c), true, Some(remote)) if parked.is_some() => format!(
            "; parked {} on {remote} ({}): other hosts landed first or are landing now; the next run of any host \
             takes it into the branch",
            c.short(),
            parked.as_deref().unwrap_or_default()
        ),
        (Some(c), true, Some(remote)) => format!("; pushed {} to {remote}", c.short()),
        (Some(c), _, _) if outcome.not_pushed.is_some() => {
            format!("; committed {} locally, not pushed", c.short())
        }
        (Some(c), _, _) => match report.fields.get("local_only").and_then(|v| v.as_str()) {
            Some(why) => format!("; committed {} locally; {why}", c.short()),
            None => format!("; committed {} locally", c.short()),
        },
    };
    let held = if s.held_back.is_empty() {
        String::new()
    } else {
        format!("; {} held back (secrets)", s.held_back.len())
    };
    // A run that parked at once read this host's file alone, not unified.
    let unified = if p.partial {
        String::new()
    } else {
        format!("; unified {} entries", p.unified)
    };
    report.summary = format!(
        "backup from {}: {changes}{unified}{held}{how}",
        outcome.host
    );
    report.set("new", s.new);
    report.set("changed", s.changed);
    report.set("deleted", s.deleted);
    report.set("new_idents", s.new_idents.clone());
    report.set("changed_idents", s.changed_idents.clone());
    report.set("deleted_idents", s.deleted_idents.clone());
    report.set("unified_entries", (!p.partial).then_some(p.unified));
    report.set("host_files", (!p.partial).then_some(p.host_files));
    report.set("commit", outcome.commit.map(|c| c.to_string()));
    report.set("pushed", outcome.pushed && outcome.commit.is_some());
    report.set("attempts", outcome.attempts);
}
