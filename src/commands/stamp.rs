//! `stamp`: a memory file to a host file, against that file's current content,
//! without a repository (and so without a base: an entry the file no longer
//! holds is a deletion).

use std::path::Path;

use crate::cli::StampArgs;
use crate::context::Context;
use crate::core::base::Base;
use crate::core::entry::{self, Entry};
use crate::core::stamp::{self, Notice, StampError};
use crate::error::{Error, Result};
use crate::output::Report;
use crate::store::{atomic, memory_file};

pub fn cmd_stamp(args: &StampArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let host = cx.host()?;
    let memory = memory_file::read(&args.memory, false)?;
    if let Some(w) = crate::large_file_warning(
        &args.memory.display().to_string(),
        memory.bytes.len() as u64,
    ) {
        report.warn(w);
    }
    let (old_text, previous) = read_previous(&args.out)?;
    let forget = Default::default();
    let stamped = stamp::stamp(
        &memory.records,
        &stamp::Context {
            host: &host,
            now: cx.clock.now(),
            id_field: &args.id.id_field,
            own: &previous,
            base: &Base::default(),
            allow_mass_delete: args.allow_mass_delete,
            forget: &forget,
            held_back: &|_, _| false,
            keep_base: false,
        },
    )
    .map_err(|e| match e {
        StampError::MassDelete { deleting, live } => Error::Refused(format!(
            "{}: stamping would delete {deleting} of {live} entries (more than half): refused, \
             nothing written; run again with --allow-mass-delete if that is right",
            args.memory.display()
        )),
        StampError::VersionOverflow { ident } => Error::Refused(format!(
            "{ident}: its version would pass 18446744073709551615; nothing written"
        )),
    })?;
    for n in &stamped.notices {
        let Notice::DuplicateIdent {
            line,
            ident,
            renamed,
        } = n;
        report.warn(format!(
            "{}:{line}: another entry has the identity {ident:?}; kept as {renamed:?}",
            args.memory.display()
        ));
    }
    let text = entry::render(&stamped.entries);
    let written = old_text.is_none_or(|old| old != text);
    if written {
        if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
        }
        atomic::write_bytes(&args.out, atomic::Mode::KeepOr644, &text)
            .map_err(|e| Error::write(&args.out, e))?;
    }
    report.summary = format!(
        "stamped {} as {host}: {} new, {} changed, {} unchanged, {} deleted; {} {}",
        args.memory.display(),
        stamped.new,
        stamped.changed,
        stamped.unchanged,
        stamped.deleted,
        if written { "wrote" } else { "unchanged" },
        args.out.display(),
    );
    report.set("host", host);
    report.set("new", stamped.new);
    report.set("changed", stamped.changed);
    report.set("unchanged", stamped.unchanged);
    report.set("deleted", stamped.deleted);
    report.set("entries", stamped.entries.len());
    report.set("written", written);
    // Freeing every entry one by one takes a while, and the process ends here.
    std::mem::forget((memory, previous, stamped, text));
    Ok(())
}

/// The previous text of a host file and its entries; none when it does not exist.
/// A file that does not parse is an error: writing over it could lose what it
/// holds.
fn read_previous(path: &Path) -> Result<(Option<Vec<u8>>, Vec<Entry>)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new())),
        Err(e) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    match entry::parse_stamped(&bytes) {
        Ok(s) => match s.skipped.first() {
            Some((line, cause)) => Err(Error::Invalid {
                path: path.to_path_buf(),
                line: *line,
                column: 1,
                cause: format!("{cause} (in the previous host file; mend it or move it away)"),
            }),
            None => Ok((Some(bytes), s.entries)),
        },
        Err(e) => Err(Error::Invalid {
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
