//! `verify`: every host entry is in unified with an equal or newer copy, and every
//! file parses and is canonical. Exit 0, or 1 with each problem listed.

use std::collections::HashMap;
use std::path::Path;

use crate::Context;
use crate::cli::VerifyArgs;
use crate::crdt;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::files::{self, ReadError, Stamped, UNIFIED_FILE};
use crate::report::Report;

pub fn cmd_verify(args: &VerifyArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| cx.repo.clone());
    let problems = check_folder(&dir)?;
    report.set("problems", problems.clone());
    if problems.is_empty() {
        report.summary = format!("verified {}: no problems", dir.display());
        return Ok(());
    }
    report.summary = format!("verified {}: {} problem(s)", dir.display(), problems.len());
    report.lines = problems;
    Err(Error::Problems(report.lines.len()))
}

/// Every problem of a backup folder, one line each, naming file and line.
pub fn check_folder(dir: &Path) -> Result<Vec<String>> {
    let paths = files::host_files(dir).map_err(|e| Error::Missing {
        path: dir.to_path_buf(),
        cause: format!("cannot list the folder: {e}"),
    })?;
    let mut problems = Vec::new();
    let hosts: Vec<_> = paths
        .iter()
        .zip(files::read_many(&paths))
        .filter_map(|(p, r)| check_file(p, r, &mut problems).map(|s| (p, s)))
        .collect();
    let unified_path = dir.join(UNIFIED_FILE);
    let unified = match std::fs::metadata(&unified_path) {
        Err(_) if hosts.is_empty() => None,
        Err(_) => {
            problems.push(format!("{}: missing", unified_path.display()));
            None
        }
        Ok(_) => check_file(
            &unified_path,
            files::read_stamped(&unified_path),
            &mut problems,
        ),
    };
    let index: HashMap<&str, &Entry> = unified
        .iter()
        .flat_map(|u| &u.entries)
        .map(|e| (e.unique_id(), e))
        .collect();
    if unified.is_some() {
        for (path, s) in &hosts {
            for (e, line) in s.entries.iter().zip(&s.lines) {
                let at = format!("{}:{line}", path.display());
                match index.get(e.unique_id()) {
                    None => problems.push(format!(
                        "{at}: {} is missing from {UNIFIED_FILE}",
                        e.unique_id()
                    )),
                    Some(u) if u.lww_cmp(e).is_lt() => problems.push(format!(
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
    }
    Ok(problems)
}

/// The entries of a file that parses; its problems otherwise, or besides.
fn check_file(
    path: &Path,
    read: std::result::Result<Stamped, ReadError>,
    problems: &mut Vec<String>,
) -> Option<Stamped> {
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
    let canonical = files::render(crdt::merge(&stamped.entries));
    let same = std::fs::read(path).is_ok_and(|b| b == canonical) && stamped.skipped.is_empty();
    if !same && stamped.skipped.is_empty() {
        problems.push(format!(
            "{}: not in canonical form (one compact entry per line, keys sorted, ordered by timestamp and unique_id, one copy per unique_id)",
            path.display()
        ));
    }
    Some(stamped)
}
