//! Host and unified files: finding them, reading them, and writing them in the
//! canonical layout with an atomic replace.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::entry::{Entry, EntryReader};
use crate::memory::{self, ParseError};

/// The merged file in a backup folder.
pub const UNIFIED_FILE: &str = "unified-memory.json";
const HOST_PREFIX: &str = "memory-";
const HOST_SUFFIX: &str = ".json";

/// The file name of a host's file.
pub fn host_file_name(host: &str) -> String {
    format!("{HOST_PREFIX}{host}{HOST_SUFFIX}")
}

/// The host a file name belongs to, if it is a host file's.
pub fn host_of_file_name(name: &str) -> Option<&str> {
    name.strip_prefix(HOST_PREFIX)?
        .strip_suffix(HOST_SUFFIX)
        .filter(|h| !h.is_empty())
}

/// Every `memory-*.json` at the top of `dir`, sorted by name.
pub fn host_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let is_host = name.to_str().and_then(host_of_file_name).is_some();
        if is_host && e.file_type()?.is_file() {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Why a stamped file could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Parse(ParseError),
}

/// A stamped file's entries, and those skipped for bad metadata.
#[derive(Debug, Default)]
pub struct Stamped {
    pub entries: Vec<Entry>,
    /// The line each entry starts on.
    pub lines: Vec<usize>,
    /// (line, cause) of each entry without valid metadata.
    pub skipped: Vec<(usize, String)>,
}

/// Reads a host or unified file from its bytes.
pub fn parse_stamped(bytes: &[u8]) -> Result<Stamped, ParseError> {
    let mut reader = EntryReader::default();
    let mut out = Stamped::default();
    memory::parse_each(
        bytes,
        |src, pos| reader.read(src, pos),
        |entry, line| match entry {
            Ok(e) => {
                out.lines.push(line);
                out.entries.push(e);
            }
            Err(e) => out.skipped.push((line, e.0)),
        },
    )?;
    out.entries.shrink_to_fit();
    out.lines.shrink_to_fit();
    Ok(out)
}

/// Reads a host or unified file.
pub fn read_stamped(path: &Path) -> Result<Stamped, ReadError> {
    let bytes = fs::read(path).map_err(ReadError::Io)?;
    parse_stamped(&bytes).map_err(ReadError::Parse)
}

/// Reads many stamped files on all cores; results in the order of `paths`.
pub fn read_many(paths: &[PathBuf]) -> Vec<Result<Stamped, ReadError>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len());
    if workers <= 1 {
        return paths.iter().map(|p| read_stamped(p)).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Stamped, ReadError>>>> =
        Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = read_stamped(path);
                    results.lock().expect("no reader panics")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no reader panics")
        .into_iter()
        .map(|r| r.expect("every path was read"))
        .collect()
}

/// The canonical bytes of a file holding `entries` (already in file order).
pub fn render<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(&mut out, entries).expect("writing to memory cannot fail");
    out
}

/// Writes the canonical layout: a JSON array, one entry per line.
pub fn write_canonical<'a>(
    w: &mut impl Write,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(4096);
    w.write_all(b"[")?;
    let mut first = true;
    for e in entries {
        line.clear();
        line.extend_from_slice(if first { b"\n" } else { b",\n" });
        first = false;
        e.write(&mut line);
        w.write_all(&line)?;
    }
    w.write_all(b"\n]\n")
}

/// Writes `entries` (in file order) to `path` unless it already holds exactly
/// those bytes; says whether it wrote. The comparison streams, so that a large
/// file is never held twice in memory.
pub fn write_if_changed<'a, I>(path: &Path, entries: I) -> io::Result<bool>
where
    I: IntoIterator<Item = &'a Entry> + Clone,
{
    if let Ok(old) = File::open(path) {
        let mut cmp = SameAs {
            old: io::BufReader::with_capacity(1 << 20, old),
            same: true,
        };
        write_canonical(&mut cmp, entries.clone())?;
        if cmp.same && cmp.at_end() {
            return Ok(false);
        }
    }
    write_entries(path, entries)?;
    Ok(true)
}

/// A writer that only checks whether what is written equals a reader's bytes.
struct SameAs<R> {
    old: R,
    same: bool,
}

impl<R: io::BufRead> SameAs<R> {
    fn at_end(&mut self) -> bool {
        self.old.fill_buf().is_ok_and(|b| b.is_empty())
    }
}

impl<R: io::BufRead> Write for SameAs<R> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while self.same && !buf.is_empty() {
            let have = self.old.fill_buf()?;
            if have.is_empty() {
                self.same = false;
                break;
            }
            let k = have.len().min(buf.len());
            self.same = have[..k] == buf[..k];
            self.old.consume(k);
            buf = &buf[k..];
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Replaces `path` with `entries` atomically: a reader or a crash sees the old file
/// or the new one, never a part.
pub fn write_entries<'a>(
    path: &Path,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> io::Result<()> {
    atomic_write(path, |w| write_canonical(w, entries))
}

/// Writes through `fill` into a temporary file beside `path`, syncs it, renames it
/// over `path` and syncs the folder.
pub fn atomic_write(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".memory-backup-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the folder is.
    File::open(dir)?.sync_all()
}
