//! `status`: what the backup holds and how it is doing. Per host: its live
//! entries, tombstones, the last backup that changed its file, and whether it
//! waits parked (section 8, Contention); unified; the local branch against the
//! remote; this host's last run, last successful run and last push. Warnings
//! only for what needs a person. It works offline and says when the remote
//! could not be asked. The `--json` shape is documented in `docs/status-json.md`:
//! `hosts` (`host`, `entries`, `tombstones`, `bytes`, `last_backup`,
//! `last_backup_commit`, `future_timestamp`, `parked_commits`, `this_host`),
//! `unified`, `remote` (`url`, `asked`, `error`, `tip`, `ahead`, `behind`),
//! `last_push`, `last_success`, `last_run`, `repo`, `branch`, `local_tip`,
//! `shown_commit`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backup::git_error;
use crate::cli::StatusArgs;
use crate::commands::common::open_existing;
use crate::context::Context;
use crate::core::clock::Timestamp;
use crate::core::entry;
use crate::core::stamp::FUTURE_MICROS;
use crate::error::Result;
use crate::git::{CommitId, GitError, transport, url};
use crate::output::Report;
use crate::store::files::{UNIFIED_FILE, host_of_file_name, is_backup_file};

/// How long `status` waits for the remote before it answers from what it knows.
pub const STATUS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How far back the last change of a host's file is looked for.
const HISTORY_DEPTH: usize = 2000;

/// One host file of the backup, as `status` shows it.
#[derive(Debug, Default)]
struct HostStatus {
    host: String,
    live: usize,
    tombstones: usize,
    bytes: usize,
    /// The commit that last changed the file, and its time.
    last_backup: Option<(CommitId, i64)>,
    /// The newest timestamp more than a day ahead of the clock.
    future: Option<Timestamp>,
    /// This host's commit waits on its parked ref: commits the branch lacks.
    parked: Option<usize>,
}

pub fn cmd_status(args: &StatusArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let repo_name = cx.repo.display().to_string();
    let (repo, branch) = open_existing(cx)?;
    let g = |e: GitError| git_error(e, &repo_name);
    let local = repo.local_tip(&branch).map_err(g)?;
    let remote = ask_remote(args, cx, &repo, &branch, local, report).map_err(g)?;

    // The files of the newer tip (the remote's when they diverged).
    let shown_commit = match (local, remote.tip) {
        (Some(l), Some(r)) if !repo.contains(l, r).map_err(g)? => Some(r),
        (l, r) => l.or(r),
    };
    let now = cx.clock.now();
    let (hosts, unified) = match shown_commit {
        Some(commit) => read_hosts(&repo, commit, now, report).map_err(g)?,
        None => (BTreeMap::new(), None),
    };
    for h in hosts.values() {
        if let Some(t) = h.future {
            let days = (t.micros() - now.micros()) / 86_400_000_000;
            report.warn(format!(
                "host {}: timestamps up to {t}, {days} day(s) ahead of this clock: its clock ran ahead, \
                 or a copy was forged; `memory-backup verify` names the entries",
                h.host
            ));
        }
    }

    let me = cx.host().ok();
    let last_run = crate::logging::read_last_run(&cx.log_dir, &cx.repo);
    let last_push = crate::store::state::last_push(repo.git_dir());
    let mut lines = host_table(&hosts, unified, me.as_deref());
    let tip = |c: Option<CommitId>| c.map_or("no commit".to_string(), |c| c.short());
    lines.push(match &remote.shown {
        None => format!("branch {branch} at {}; no remote set", tip(local)),
        Some(u) => format!(
            "branch {branch} at {}; {u} at {}: {} ahead, {} behind{}",
            tip(local),
            tip(remote.tip),
            count(remote.ahead),
            count(remote.behind),
            remote.note
        ),
    });
    lines.push(match &last_push {
        Some(t) => format!("last successful push from this host: {t}"),
        None => "last successful push from this host: none recorded".to_string(),
    });
    let last_ok = last_run_lines(
        last_run.as_ref(),
        cx,
        remote.shown.is_some(),
        &mut lines,
        report,
    );

    report.set("repo", repo_name.clone());
    report.set("branch", branch.clone());
    report.set("local_tip", local.map(|c| c.to_string()));
    report.set("shown_commit", shown_commit.map(|c| c.to_string()));
    report.set(
        "hosts",
        hosts
            .values()
            .map(|h| {
                json!({
                    "host": h.host,
                    "entries": h.live,
                    "tombstones": h.tombstones,
                    "bytes": h.bytes,
                    "last_backup": h.last_backup.map(|(_, t)| time_of(t)),
                    "last_backup_commit": h.last_backup.map(|(c, _)| c.to_string()),
                    "future_timestamp": h.future.map(|t| t.to_string()),
                    "parked_commits": h.parked,
                    "this_host": me.as_deref() == Some(h.host.as_str()),
                })
            })
            .collect::<Vec<_>>(),
    );
    report.set(
        "unified",
        unified.map(
            |(live, dead, bytes)| json!({"entries": live, "tombstones": dead, "bytes": bytes}),
        ),
    );
    report.set("remote", Value::Object(remote.json));
    report.set("last_push", last_push);
    report.set("last_success", last_ok.unwrap_or(Value::Null));
    report.set("last_run", last_run.unwrap_or(Value::Null));
    report.lines = lines;
    let parked = hosts.values().filter(|h| h.parked.is_some()).count();
    report.summary = format!(
        "{} host(s), unified {} entries{}{}",
        hosts.len(),
        unified.map_or(0, |u| u.0),
        if parked > 0 {
            format!(", {parked} parked")
        } else {
            String::new()
        },
        match (&remote.shown, remote.ahead, remote.behind) {
            (None, _, _) => "; no remote".to_string(),
            (Some(_), Some(0), Some(0)) => "; in step with the remote".to_string(),
            (Some(_), Some(a), Some(b)) => format!("; {a} ahead of, {b} behind the remote"),
            (Some(_), _, _) => "; the remote's state is unknown".to_string(),
        }
    );
    Ok(())
}

/// The remote as `status` shows it.
struct RemoteStatus {
    /// Its URL, credentials removed; `None`: no remote is set.
    shown: Option<String>,
    /// Its branch's tip as last fetched.
    tip: Option<CommitId>,
    ahead: Option<usize>,
    behind: Option<usize>,
    /// Said after the branch line when the remote was not asked now.
    note: String,
    /// The `remote` object of `--json`.
    json: serde_json::Map<String, Value>,
}

/// Fetches from the remote, unless `--no-fetch` or it does not answer in
/// time, and compares the local branch with its tip.
fn ask_remote(
    args: &StatusArgs,
    cx: &Context,
    repo: &crate::git::Repo,
    branch: &str,
    local: Option<CommitId>,
    report: &mut Report,
) -> std::result::Result<RemoteStatus, GitError> {
    let url = repo.remote_url();
    let shown = url.as_deref().map(url::redact);
    let mut json = serde_json::Map::new();
    json.insert("url".into(), shown.clone().into());
    let mut note = String::new();
    if let Some(u) = &url {
        if args.no_fetch {
            json.insert("asked".into(), false.into());
            note = " (--no-fetch: as of the last contact)".into();
        } else {
            let deadline = Instant::now() + STATUS_FETCH_TIMEOUT;
            let asked = cx.transport().map_err(|e| e.to_string()).and_then(|t| {
                transport::fetch(&t, repo, u, branch, deadline).map_err(|e| e.to_string())
            });
            json.insert("asked".into(), asked.is_ok().into());
            if let Err(why) = asked {
                json.insert("error".into(), why.clone().into());
                report.warn(format!(
                    "cannot ask {} ({why}); ahead and behind are as of the last contact",
                    url::redact(u)
                ));
                note = " (the remote did not answer: as of the last contact)".into();
            }
        }
    }
    let tip = repo.tracking_tip(branch);
    json.insert("tip".into(), tip.map(|t| t.to_string()).into());
    let (ahead, behind) = match (local, tip) {
        (Some(l), Some(r)) => {
            let (a, b) = repo.ahead_behind(l, r)?;
            (Some(a), Some(b))
        }
        _ => (None, None),
    };
    json.insert("ahead".into(), ahead.into());
    json.insert("behind".into(), behind.into());
    Ok(RemoteStatus {
        shown,
        tip,
        ahead,
        behind,
        note,
        json,
    })
}

/// Unified's live entries, tombstones and size.
type UnifiedStatus = (usize, usize, usize);

/// Each host's file at `commit`, and the hosts whose parked commits the
/// branch lacks; unified's counts.
fn read_hosts(
    repo: &crate::git::Repo,
    commit: CommitId,
    now: Timestamp,
    report: &mut Report,
) -> std::result::Result<(BTreeMap<String, HostStatus>, Option<UnifiedStatus>), GitError> {
    let horizon = Timestamp::from_micros(now.micros().saturating_add(FUTURE_MICROS));
    let mut hosts: BTreeMap<String, HostStatus> = BTreeMap::new();
    let mut unified = None;
    let (files, _) = repo.read_files(commit, is_backup_file)?;
    for (name, bytes) in &files {
        if let Some(w) = crate::large_file_warning(name, bytes.len() as u64) {
            report.warn(w);
        }
        let parsed = match entry::parse_stamped(bytes) {
            Ok(p) => p,
            Err(e) => {
                report.warn(format!(
                    "{name}:{}:{} (commit {}): does not parse: {}; `memory-backup verify` lists every problem",
                    e.line,
                    e.column,
                    commit.short(),
                    e.cause
                ));
                continue;
            }
        };
        let live = parsed.entries.iter().filter(|e| !e.meta.deleted).count();
        if name == UNIFIED_FILE {
            unified = Some((live, parsed.entries.len() - live, bytes.len()));
            continue;
        }
        let host = host_of_file_name(name).unwrap_or(name).to_string();
        let st = hosts.entry(host.clone()).or_default();
        st.host = host;
        st.live = live;
        st.tombstones = parsed.entries.len() - live;
        st.bytes = bytes.len();
        st.future = parsed
            .entries
            .iter()
            .map(|e| e.meta.timestamp)
            .filter(|t| *t > horizon)
            .max();
        st.last_backup = repo.last_change_of(commit, name, HISTORY_DEPTH);
    }
    for (host, tip) in repo.parked() {
        if repo.contains(commit, tip).unwrap_or(true) {
            continue;
        }
        let behind = repo.ahead_behind(tip, commit).map(|(a, _)| a).unwrap_or(0);
        let st = hosts.entry(host.clone()).or_default();
        st.host = host;
        st.parked = Some(behind);
    }
    Ok((hosts, unified))
}

/// The table of hosts and unified.
fn host_table(
    hosts: &BTreeMap<String, HostStatus>,
    unified: Option<UnifiedStatus>,
    me: Option<&str>,
) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<28} {:>8} {:>10} {:<22} {:>9}",
        "host", "entries", "tombstones", "last backup", "size"
    )];
    for h in hosts.values() {
        let when = h.last_backup.map_or("-".to_string(), |(_, t)| time_of(t));
        let parked = h
            .parked
            .map(|n| format!("  parked, {n} commit(s) not on the branch yet"))
            .unwrap_or_default();
        let mine = if me == Some(h.host.as_str()) {
            " (this host)"
        } else {
            ""
        };
        lines.push(format!(
            "{:<28} {:>8} {:>10} {:<22} {:>9}{parked}",
            format!("{}{mine}", h.host),
            h.live,
            h.tombstones,
            when,
            size(h.bytes)
        ));
    }
    if let Some((live, dead, bytes)) = unified {
        lines.push(format!(
            "{:<28} {:>8} {:>10} {:<22} {:>9}",
            "(unified)",
            live,
            dead,
            "",
            size(bytes)
        ));
    }
    lines
}

/// The lines of this host's last run (and its last successful one when the
/// last failed, with a warning when it needs a person); the last successful
/// run as recorded.
fn last_run_lines(
    last_run: Option<&Value>,
    cx: &Context,
    has_remote: bool,
    lines: &mut Vec<String>,
    report: &mut Report,
) -> Option<Value> {
    lines.push(match last_run {
        Some(run) => format!("last run here: {}", describe_run(run)),
        None => "last run here: none recorded".to_string(),
    });
    let last_ok = last_run
        .and_then(|r| r.get(crate::logging::LAST_OK))
        .filter(|v| !v.is_null())
        .cloned();
    if let Some(run) = last_run
        && run.get("ok") != Some(&Value::Bool(true))
    {
        lines.push(match &last_ok {
            Some(ok) => format!(
                "last successful run here: {} at {}",
                ok["command"].as_str().unwrap_or("?"),
                ok["finished"].as_str().unwrap_or("?")
            ),
            None => "last successful run here: none recorded".to_string(),
        });
        warn_of_last_run(run, cx, has_remote, report);
    }
    if let Some(held) = last_run
        .and_then(|r| r.get("held_back"))
        .and_then(Value::as_array)
        .filter(|h| !h.is_empty())
    {
        let idents: Vec<&str> = held.iter().filter_map(|h| h["ident"].as_str()).collect();
        lines.push(format!(
            "held back for secrets in the last run: {}",
            idents.join(", ")
        ));
    }
    last_ok
}

/// A warning when this host's last run needs a person: it failed for a reason
/// that the next run does not mend, or it has not pushed for `quiet_hours`.
fn warn_of_last_run(run: &Value, cx: &Context, has_remote: bool, report: &mut Report) {
    let code = run.get("exit_code").and_then(Value::as_i64).unwrap_or(-1);
    let error = run.get("error").and_then(Value::as_str).unwrap_or("");
    let command = run.get("command").and_then(Value::as_str).unwrap_or("?");
    if code == i64::from(crate::error::exit::NOT_PUSHED) {
        if let (true, Some(overdue)) = (has_remote, cx.push_overdue()) {
            report.warn(format!("{overdue}; the last {command} said: {error}"));
        }
    } else if code != i64::from(crate::error::exit::OK) {
        report.warn(format!(
            "the last {command} here failed (exit {code}): {error}"
        ));
    }
}

fn time_of(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
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
