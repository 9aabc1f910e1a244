//! `stamp`: a memory file to a host file, against that file's current content.

use std::path::Path;

use crate::Context;
use crate::cli::StampArgs;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::files::{self, ReadError};
use crate::memory::{self, MemoryFile};
use crate::report::Report;
use crate::stamp::{self, Notice, Stamped};

pub fn cmd_stamp(args: &StampArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let host = cx.host()?;
    let memory = read_memory(&args.memory, report)?;
    let previous = read_previous(&args.out)?;
    let stamped = stamp::stamp(
        &memory.records,
        &stamp::Context {
            host: &host,
            now: cx.clock.now(),
            id_field: &args.id.id_field,
            previous: &previous,
            known: &[],
        },
    );
    report_notices(&args.memory, &stamped, report);
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
    }
    let written = files::write_if_changed(&args.out, &stamped.entries)
        .map_err(|e| Error::write(&args.out, e))?;
    report.summary = format!(
        "stamped {} as {host}: {} new, {} changed, {} unchanged, {} removed; {} {}",
        args.memory.display(),
        stamped.new,
        stamped.changed,
        stamped.unchanged,
        stamped.removed,
        if written { "wrote" } else { "unchanged" },
        args.out.display(),
    );
    report.set("host", host);
    report.set("new", stamped.new);
    report.set("changed", stamped.changed);
    report.set("unchanged", stamped.unchanged);
    report.set("removed", stamped.removed);
    report.set("entries", stamped.entries.len());
    report.set("written", written);
    Ok(())
}

/// Reads the memory file, warning when it is larger than the alert threshold.
pub fn read_memory(path: &Path, report: &mut Report) -> Result<MemoryFile> {
    let memory = memory::read_memory_file(path)?;
    let what = format!("{} (the memory file)", path.display());
    if let Some(w) = crate::large_file_warning(&what, memory.bytes) {
        report.warn(w);
    }
    Ok(memory)
}

/// The previous content of a host file; none when it does not exist. A file that
/// does not parse is an error: writing over it could lose what it holds.
pub fn read_previous(path: &Path) -> Result<Vec<Entry>> {
    match files::read_stamped(path) {
        // Rewriting would drop the entries that did not parse.
        Ok(s) => match s.skipped.first() {
            Some((line, cause)) => Err(Error::Invalid {
                path: path.to_path_buf(),
                line: *line,
                column: 1,
                cause: format!("{cause} (in the previous host file; mend it or move it away)"),
            }),
            None => Ok(s.entries),
        },
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(ReadError::Io(e)) => Err(Error::Read {
            path: path.to_path_buf(),
            source: e,
        }),
        Err(ReadError::Parse(e)) => Err(Error::Invalid {
            path: path.to_path_buf(),
            line: e.line,
            column: e.column,
            cause: format!(
                "{} (the previous host file; move it away to start anew)",
                e.cause
            ),
        }),
    }
}

pub fn report_notices(memory: &Path, stamped: &Stamped, report: &mut Report) {
    for n in &stamped.notices {
        report.warn(match n {
            Notice::DuplicateIdent {
                line,
                ident,
                renamed,
            } => format!(
                "{}:{line}: another entry has the identity {ident:?}; kept as {renamed:?}",
                memory.display()
            ),
            Notice::BadMetadata { line, cause } => format!(
                "{}:{line}: {cause}; the entry is stamped as if it had none",
                memory.display()
            ),
        });
    }
}
