//! `merge`: a folder's host files and the previous unified file into the unified
//! file. No git.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::MergeArgs;
use crate::crdt;
use crate::error::{Error, Result};
use crate::files::{self, ReadError, Stamped, UNIFIED_FILE};
use crate::report::Report;
use crate::{Context, SLOW_MERGE_SECS};

pub fn cmd_merge(args: &MergeArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| cx.repo.clone());
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join(UNIFIED_FILE));
    let started = Instant::now();
    let (hosts, previous) = load_both(&dir, &output, report)?;
    tracing::debug!("read {} host files in {:?}", hosts.len(), started.elapsed());
    let merged = crdt::merge(
        hosts
            .iter()
            .flat_map(|(_, s)| &s.entries)
            .chain(previous.iter().flat_map(|s| &s.entries)),
    );
    tracing::debug!("merged {} entries at {:?}", merged.len(), started.elapsed());
    let written =
        files::write_slice_if_changed(&output, &merged).map_err(|e| Error::write(&output, e))?;
    tracing::debug!("written at {:?}", started.elapsed());
    warn_if_slow(started.elapsed(), report);
    report.summary = format!(
        "merged {} host files into {}: {} entries{}",
        hosts.len(),
        output.display(),
        merged.len(),
        if written { "" } else { " (unchanged)" }
    );
    report.set("host_files", hosts.len());
    report.set("entries", merged.len());
    report.set("output", output.display().to_string());
    report.set("written", written);
    drop(merged);
    // Freeing a million entries one by one takes a noticeable while; nothing waits
    // for it, and the process may end before it is done.
    std::thread::spawn(move || drop((hosts, previous)));
    Ok(())
}

/// The host files read, with their paths.
type Hosts = Vec<(PathBuf, Stamped)>;

/// [`load_hosts`] and [`load_unified`], the files read side by side.
fn load_both(dir: &Path, output: &Path, report: &mut Report) -> Result<(Hosts, Option<Stamped>)> {
    let paths = host_paths(dir)?;
    // The previous unified first: it is the largest file, and read beside the host
    // files rather than after them it keeps every core busy.
    let mut all = Vec::with_capacity(paths.len() + 1);
    all.push(output.to_path_buf());
    all.extend(paths.iter().cloned());
    let mut results = files::read_many(&all).into_iter();
    let unified = results.next().expect("one result per path");
    let hosts = take_hosts(&paths, results, report);
    Ok((hosts, take_unified(output, unified)?))
}

/// Every host file of `dir` that parses; the others are skipped with a warning
/// that names them (their entries survive through the previous unified).
pub fn load_hosts(dir: &Path, report: &mut Report) -> Result<Vec<(PathBuf, Stamped)>> {
    let paths = host_paths(dir)?;
    Ok(take_hosts(&paths, files::read_many(&paths), report))
}

fn host_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    files::host_files(dir).map_err(|e| Error::Missing {
        path: dir.to_path_buf(),
        cause: format!("cannot list the folder: {e}"),
    })
}

/// The host files of `paths` that were read, warning about the others.
fn take_hosts(
    paths: &[PathBuf],
    results: impl IntoIterator<Item = std::result::Result<Stamped, ReadError>>,
    report: &mut Report,
) -> Vec<(PathBuf, Stamped)> {
    let mut out = Vec::with_capacity(paths.len());
    for (path, result) in paths.iter().zip(results) {
        match result {
            Ok(stamped) => {
                for (line, cause) in &stamped.skipped {
                    report.warn(format!("{}:{line}: entry skipped: {cause}", path.display()));
                }
                out.push((path.clone(), stamped));
            }
            Err(ReadError::Parse(e)) => report.warn(format!(
                "{}:{}:{}: {}; host file skipped, its entries kept from the previous unified",
                path.display(),
                e.line,
                e.column,
                e.cause
            )),
            Err(ReadError::Io(e)) => report.warn(format!(
                "{}: {e}; host file skipped, its entries kept from the previous unified",
                path.display()
            )),
        }
    }
    out
}

/// The previous unified file; none when it does not exist. One that does not
/// parse, or holds an entry without valid metadata, stops the merge: writing over
/// it could lose what it holds.
pub fn load_unified(path: &Path) -> Result<Option<Stamped>> {
    take_unified(path, files::read_stamped(path))
}

/// [`load_unified`] of what reading `path` gave.
fn take_unified(
    path: &Path,
    read: std::result::Result<Stamped, ReadError>,
) -> Result<Option<Stamped>> {
    let invalid = |line, column, cause: String| Error::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        cause: format!(
            "{cause} (the previous unified file; restore it from git history or move it away)"
        ),
    };
    match read {
        Ok(s) => match s.skipped.first() {
            Some((line, cause)) => Err(invalid(*line, 1, cause.clone())),
            None => Ok(Some(s)),
        },
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(ReadError::Io(e)) => Err(Error::Read {
            path: path.to_path_buf(),
            source: e,
        }),
        Err(ReadError::Parse(e)) => Err(invalid(e.line, e.column, e.cause)),
    }
}

/// Warns when merging took `took`, over the alert threshold.
pub fn warn_if_slow(took: Duration, report: &mut Report) {
    let secs = took.as_secs_f64();
    if secs > SLOW_MERGE_SECS {
        report.warn(format!(
            "the merge took {secs:.1} s, over the {SLOW_MERGE_SECS} s alert threshold"
        ));
    }
}
