//! `merge`: a folder's host files and the previous unified file into the unified
//! file. No git.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::MergeArgs;
use crate::context::Context;
use crate::core::entry::{self, StampedFile};
use crate::core::merge;
use crate::error::{Error, Result};
use crate::output::Report;
use crate::store::atomic;
use crate::store::files::{self, ReadError, UNIFIED_FILE};

pub fn cmd_merge(args: &MergeArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| cx.repo.clone());
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join(UNIFIED_FILE));
    let started = Instant::now();
    let paths = host_paths(&dir)?;
    // The previous unified first: it is the largest file, and read beside the host
    // files it keeps every core busy.
    let mut all = Vec::with_capacity(paths.len() + 1);
    all.push(output.clone());
    all.extend(paths.iter().cloned());
    let mut results = files::read_many(&all).into_iter();
    let previous = take_unified(&output, results.next().expect("one result per path"))?;
    let hosts = take_hosts(&paths, results, report);
    let merged = merge::merge(
        hosts
            .iter()
            .flat_map(|(_, s)| &s.entries)
            .chain(previous.iter().flat_map(|s| &s.entries)),
    );
    // Written straight to the file when there is none to compare with.
    let written = if output.exists() {
        let text = entry::render(&merged);
        let changed = std::fs::read(&output).map_or(true, |old| old != text);
        if changed {
            atomic::write_bytes(&output, atomic::Mode::KeepOr644, &text)
                .map_err(|e| Error::write(&output, e))?;
        }
        changed
    } else {
        atomic::write(&output, atomic::Mode::KeepOr644, |w| {
            entry::write_file(w, &merged)
        })
        .map_err(|e| Error::write(&output, e))?;
        true
    };
    let took = started.elapsed().as_secs_f64();
    if took > crate::SLOW_MERGE_SECS {
        report.warn(format!(
            "the merge took {took:.1} s, over the {} s alert threshold",
            crate::SLOW_MERGE_SECS
        ));
    }
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
    // Freeing a million entries one by one takes a while; nothing waits for it.
    std::thread::spawn(move || drop((hosts, previous)));
    Ok(())
}

pub fn host_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    files::host_files(dir).map_err(|e| Error::Missing {
        path: dir.to_path_buf(),
        cause: format!("cannot list the folder: {e}"),
    })
}

/// The host files that were read, warning about the others (their entries
/// survive through the previous unified).
pub fn take_hosts(
    paths: &[PathBuf],
    results: impl IntoIterator<Item = std::result::Result<StampedFile, ReadError>>,
    report: &mut Report,
) -> Vec<(PathBuf, StampedFile)> {
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
/// parse, or holds an entry without valid metadata, stops the merge.
fn take_unified(
    path: &Path,
    read: std::result::Result<StampedFile, ReadError>,
) -> Result<Option<StampedFile>> {
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
