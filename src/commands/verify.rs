//! `verify`: every file parses and is canonical; every host entry is in unified
//! with an equal or newer copy; each host file holds only its own host's
//! versions; every tombstone names its identity; no timestamp lies far ahead;
//! no secret sits in the files (with `--history`, in any commit). Exit 0, or 1
//! with each problem listed.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::cli::VerifyArgs;
use crate::context::Context;
use crate::core::clock::Timestamp;
use crate::core::entry::{self, Entry, StampedFile};
use crate::core::merge;
use crate::core::record::{self, Record};
use crate::core::secrets::Scanner;
use crate::core::stamp::{FUTURE_MICROS, minted_by};
use crate::error::{Error, Result};
use crate::output::Report;
use crate::store::files::{self, ReadError, UNIFIED_FILE};

pub fn cmd_verify(args: &VerifyArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| cx.repo.clone());
    let scanner = Scanner::new();
    let mut problems = check_folder(&dir, cx.clock.now(), &args.id.id_field, &scanner)?;
    if args.history {
        problems.extend(secrets_in_history(&dir, &args.id.id_field, &scanner)?);
    }
    report.set("problems", problems.clone());
    if problems.is_empty() {
        report.summary = format!("verified {}: no problems", dir.display());
        return Ok(());
    }
    if problems.iter().any(|p| p.contains("looks like a secret")) {
        problems.push(
            "to remove a secret: `memory-backup forget IDENT` (tombstones on every host), then \
             rewrite git history as the README's \"Purging a secret\" says: forgetting alone \
             leaves it in earlier commits"
                .to_string(),
        );
    }
    report.summary = format!("verified {}: {} problem(s)", dir.display(), problems.len());
    report.lines = problems;
    Err(Error::Problems(report.lines.len()))
}

/// Every problem of a backup folder, one line each, naming file and line.
pub fn check_folder(
    dir: &Path,
    now: Timestamp,
    id_field: &str,
    scanner: &Scanner,
) -> Result<Vec<String>> {
    let paths = files::host_files(dir).map_err(|e| Error::Missing {
        path: dir.to_path_buf(),
        cause: format!("cannot list the folder: {e}"),
    })?;
    let mut problems = Vec::new();
    let hosts: Vec<(&Path, StampedFile)> = paths
        .iter()
        .zip(files::read_many(&paths))
        .filter_map(|(p, r)| check_file(p, r, &mut problems).map(|s| (p.as_path(), s)))
        .collect();
    let unified_path = dir.join(UNIFIED_FILE);
    let unified = match std::fs::metadata(&unified_path) {
        Err(_) if hosts.is_empty() => None,
        Err(_) => {
            problems.push(format!("{}: missing", unified_path.display()));
            None
        }
        Ok(_) => {
            let read = files::read_many(std::slice::from_ref(&unified_path))
                .pop()
                .expect("one result");
            check_file(&unified_path, read, &mut problems)
        }
    };

    // Each lineage's writer: the host whose file holds it as its own.
    let mut writers: HashMap<&str, Vec<&str>> = HashMap::new();
    for (path, s) in &hosts {
        let host = host_of(path);
        for e in &s.entries {
            if *e.meta.host == *host {
                writers.entry(e.unique_id()).or_default().push(host);
            }
        }
    }
    let mut checks = Checks {
        id_field,
        horizon: Timestamp::from_micros(now.micros().saturating_add(FUTURE_MICROS)),
        writers,
        unified: unified.as_ref().map(|u| {
            u.entries
                .iter()
                .map(|e| (e.unique_id(), e))
                .collect::<HashMap<_, _>>()
        }),
        future: HashMap::new(),
        problems,
    };
    for (path, s) in &hosts {
        checks.host_file(path, s);
    }
    if let Some(u) = &unified {
        checks.unified_file(&unified_path, u);
    }
    let mut problems = checks.problems;
    let mut ahead: Vec<_> = checks.future.into_iter().collect();
    ahead.sort();
    for (host, newest) in ahead {
        let days = (newest.micros() - now.micros()) / 86_400_000_000;
        problems.push(format!(
            "host {host}: timestamps up to {newest}, {days} day(s) ahead of this clock (a clock that ran \
             ahead, or a forged copy): they are kept, and the fold orders edits by what each host had seen"
        ));
    }
    for (path, s) in hosts
        .iter()
        .map(|(p, s)| (*p, s))
        .chain(unified.iter().map(|u| (unified_path.as_path(), u)))
    {
        problems.extend(secret_lines(
            &path.display().to_string(),
            s,
            id_field,
            scanner,
        ));
    }
    Ok(problems)
}

/// The checks that relate entries across the files of a folder.
struct Checks<'a> {
    id_field: &'a str,
    /// Timestamps past this lie ahead of the clock.
    horizon: Timestamp,
    /// Each lineage's writers: the hosts whose files hold it as their own.
    writers: HashMap<&'a str, Vec<&'a str>>,
    /// Unified's copies by `unique_id`, when it parsed.
    unified: Option<HashMap<&'a str, &'a Entry>>,
    /// The newest timestamp ahead of the clock, by host.
    future: HashMap<String, Timestamp>,
    problems: Vec<String>,
}

impl Checks<'_> {
    fn ahead(&mut self, host: &str, at: Timestamp) {
        if at > self.horizon {
            let newest = self.future.entry(host.to_string()).or_insert(at);
            *newest = (*newest).max(at);
        }
    }

    /// One writer per lineage, tombstones that name their identity, every
    /// entry in unified with an equal or newer copy.
    fn host_file(&mut self, path: &Path, s: &StampedFile) {
        let host = host_of(path);
        for (e, line) in s.entries.iter().zip(&s.lines) {
            let at = format!("{}:{line}", path.display());
            let writers = self.writers.get(e.unique_id());
            if *e.meta.host != *host {
                self.problems.push(format!(
                    "{at}: a version of {} written by {:?}: a host file holds only its own host's \
                     versions (one writer per unique_id); it is not used",
                    e.unique_id(),
                    &*e.meta.host
                ));
            } else if let Some(w) = writers.filter(|w| w.len() > 1)
                && !minted_by(e.unique_id(), host)
            {
                let first = w.iter().find(|h| **h != host).copied();
                self.problems.push(format!(
                    "{at}: {host} versions {}, which {} wrote first: one writer per unique_id",
                    e.unique_id(),
                    first.unwrap_or("another host")
                ));
            }
            if e.meta.deleted && lacks_identity(e, self.id_field) {
                self.problems.push(format!(
                    "{at}: the tombstone of {} does not name its identity",
                    e.unique_id()
                ));
            }
            self.ahead(host, e.meta.timestamp);
            let Some(index) = &self.unified else { continue };
            match index.get(e.unique_id()) {
                None => self.problems.push(format!(
                    "{at}: {} {}is missing from {UNIFIED_FILE}",
                    e.unique_id(),
                    if e.meta.deleted { "(a tombstone) " } else { "" }
                )),
                Some(u) if merge::lww_cmp(u, e).is_lt() => self.problems.push(format!(
                    "{at}: {} is newer here (version {}, {}) than in {UNIFIED_FILE} (version {}, {})",
                    e.unique_id(),
                    e.meta.version,
                    e.meta.timestamp,
                    u.meta.version,
                    u.meta.timestamp
                )),
                Some(_) => {}
            }
        }
    }

    /// Unified copies that their writer never wrote (a forged or hand-made copy).
    fn unified_file(&mut self, path: &Path, u: &StampedFile) {
        for (e, line) in u.entries.iter().zip(&u.lines) {
            self.ahead(&e.meta.host, e.meta.timestamp);
            let Some(w) = self.writers.get(e.unique_id()).filter(|w| w.len() == 1) else {
                continue;
            };
            if *e.meta.host != *w[0] {
                self.problems.push(format!(
                    "{}:{line}: the copy of {} says {:?} wrote it, but it is {}'s lineage: a copy \
                     not made by its writer (the fold uses {}'s own)",
                    path.display(),
                    e.unique_id(),
                    &*e.meta.host,
                    w[0],
                    w[0]
                ));
            }
        }
    }
}

fn host_of(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(files::host_of_file_name)
        .unwrap_or("")
}

/// Whether a tombstone's body lacks the fields that name its identity.
fn lacks_identity(e: &Entry, id_field: &str) -> bool {
    let body = e.body();
    if body == "{}" {
        return true;
    }
    let r = Record::from_canonical(body);
    r.get(id_field).is_none()
        && r.get("type").is_none()
        && record::ident_of_body(body, id_field).starts_with("sha256:")
        && r.members.is_empty()
}

/// A line for each entry of `file` that holds what looks like a secret.
fn secret_lines(file: &str, s: &StampedFile, id_field: &str, scanner: &Scanner) -> Vec<String> {
    let mut out = Vec::new();
    for (e, line) in s.entries.iter().zip(&s.lines) {
        let findings = scanner.scan(e.body());
        if findings.is_empty() {
            continue;
        }
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        out.push(format!(
            "{file}:{line}: entry {:?} holds what looks like a secret ({})",
            record::ident_of_body(e.body(), id_field),
            rules.join(", ")
        ));
    }
    out
}

/// Secrets in the backup files of every commit of the branch (each file
/// version once).
fn secrets_in_history(dir: &Path, id_field: &str, scanner: &Scanner) -> Result<Vec<String>> {
    let repo = match crate::git::Repo::open(dir) {
        Ok(Some(r)) => r,
        _ => {
            return Err(Error::Config(format!(
                "{}: --history needs a backup repository here",
                dir.display()
            )));
        }
    };
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    let Some(tip) = repo
        .local_tip(&branch)
        .map_err(|e| Error::Other(format!("git: {e}")))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for commit in repo
        .history(tip)
        .map_err(|e| Error::Other(format!("git: {e}")))?
    {
        let (files, _) = repo
            .read_files(commit, files::is_backup_file)
            .map_err(|e| Error::Other(format!("git: {e}")))?;
        for (name, bytes) in files {
            if !seen.insert(sha_of(&bytes)) {
                continue;
            }
            if let Ok(s) = entry::parse_stamped(&bytes) {
                let at = format!("commit {}: {name}", commit.short());
                out.extend(secret_lines(&at, &s, id_field, scanner));
            }
        }
    }
    Ok(out)
}

fn sha_of(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// The entries of a file that parses; its problems otherwise, or besides.
fn check_file(
    path: &Path,
    read: std::result::Result<StampedFile, ReadError>,
    problems: &mut Vec<String>,
) -> Option<StampedFile> {
    let stamped = match read {
        Ok(s) => s,
        Err(ReadError::Parse(e)) => {
            problems.push(format!(
                "{}:{}:{}: does not parse: {}",
                path.display(),
                e.line,
                e.column,
                e.cause
            ));
            return None;
        }
        Err(ReadError::Io(e)) => {
            problems.push(format!("{}: cannot be read: {e}", path.display()));
            return None;
        }
    };
    for (line, cause) in &stamped.skipped {
        problems.push(format!("{}:{line}: {cause}", path.display()));
    }
    if stamped.skipped.is_empty() {
        let canonical = entry::render(&merge::merge(&stamped.entries));
        if !std::fs::read(path).is_ok_and(|b| b == canonical) {
            problems.push(format!(
                "{}: not in canonical form (one compact entry per line, keys sorted, ordered by \
                 timestamp and unique_id, one copy per unique_id)",
                path.display()
            ));
        }
    }
    Some(stamped)
}
