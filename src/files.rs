//! Host and unified files: finding them, reading them, and writing them in the
//! canonical layout with an atomic replace.

use std::borrow::Borrow;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

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

/// Fewer bytes than the shortest stamped entry with its separator takes, about 95:
/// `{"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00Z",...}}`.
const SHORTEST_ENTRY: usize = 64;

/// Reads a host or unified file from its bytes.
pub fn parse_stamped(bytes: &[u8]) -> Result<Stamped, ParseError> {
    let mut reader = EntryReader::default();
    // One text for the bodies of the whole file: a canonical body is never longer
    // than its record, so this does not grow, and pages never written cost nothing.
    let mut text = Vec::with_capacity(bytes.len());
    // More entries than a stamped entry's shortest text fits in the file: the lists
    // never grow, and capacity never used costs no memory, only addresses.
    let most = bytes.len() / SHORTEST_ENTRY + 1;
    let mut out = Stamped {
        entries: Vec::with_capacity(most),
        lines: Vec::with_capacity(most),
        skipped: Vec::new(),
    };
    memory::parse_each(
        bytes,
        |src, pos| reader.read_into(src, pos, &mut text),
        |entry, line| match entry {
            Ok(e) => {
                out.lines.push(line);
                out.entries.push(e);
            }
            Err(e) => out.skipped.push((line, e.0)),
        },
    )?;
    text.shrink_to_fit();
    let text = Arc::new(text);
    for e in &mut out.entries {
        e.set_text(&text);
    }
    out.entries.shrink_to_fit();
    out.lines.shrink_to_fit();
    Ok(out)
}

/// Reads a host or unified file.
pub fn read_stamped(path: &Path) -> Result<Stamped, ReadError> {
    read_stamped_with(path, &mut Vec::new())
}

/// [`read_stamped`] through the buffer `buf`, which many reads can share: a fresh
/// buffer for every large file costs as much in page faults as reading it.
fn read_stamped_with(path: &Path, buf: &mut Vec<u8>) -> Result<Stamped, ReadError> {
    buf.clear();
    let mut f = File::open(path).map_err(ReadError::Io)?;
    let size = f.metadata().map_or(0, |m| m.len());
    buf.reserve(usize::try_from(size).unwrap_or(0));
    f.read_to_end(buf).map_err(ReadError::Io)?;
    parse_stamped(buf).map_err(ReadError::Parse)
}

/// Reads many stamped files on all cores; results in the order of `paths`.
pub fn read_many(paths: &[PathBuf]) -> Vec<Result<Stamped, ReadError>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = crate::cores().min(paths.len());
    if workers <= 1 {
        let mut buf = Vec::new();
        return paths
            .iter()
            .map(|p| read_stamped_with(p, &mut buf))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Stamped, ReadError>>>> =
        Mutex::new((0..paths.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    let r = read_stamped_with(path, &mut buf);
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

/// How a file with entries ends, and what follows `[` in one without.
const END: &[u8] = b"\n]\n";
const EMPTY_END: &[u8] = b"]\n";

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
    w.write_all(if first { EMPTY_END } else { END })
}

/// Writes `entries` (in file order) to `path` unless it already holds exactly
/// those bytes; says whether it wrote. The comparison streams, so that a large
/// file is never held twice in memory.
pub fn write_if_changed<'a, I>(path: &Path, entries: I) -> io::Result<bool>
where
    I: IntoIterator<Item = &'a Entry> + Clone,
{
    if same_bytes(path, |w| write_canonical(w, entries.clone()))? {
        return Ok(false);
    }
    write_entries(path, entries)?;
    Ok(true)
}

/// [`write_if_changed`] for entries in a slice, rendered on all cores while the
/// calling thread writes (or compares) what is ready.
pub fn write_slice_if_changed<E>(path: &Path, entries: &[E]) -> io::Result<bool>
where
    E: Borrow<Entry> + Sync,
{
    if same_bytes(path, |w| write_canonical_slice(w, entries))? {
        return Ok(false);
    }
    atomic_write_file(path, |f, tmp| {
        // A handle of its own: an error its syncs see is still reported to the
        // final sync through `f`.
        let Ok(syncer) = File::open(tmp) else {
            let mut w: &File = f;
            return write_canonical_slice(&mut w, entries);
        };
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<()>();
            s.spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    // Only a head start: the final sync reports any error.
                    let _ = syncer.sync_data();
                }
            });
            let mut w = EarlySync {
                file: f,
                written: 0,
                tx,
            };
            write_canonical_slice(&mut w, entries)
        })
    })?;
    Ok(true)
}

/// Bytes written between two early syncs.
const SYNC_EVERY: u64 = 8 << 20;

/// Writes to a file, and asks a helper thread to start syncing what is written
/// every [`SYNC_EVERY`] bytes: the disk works while the rest is rendered, and the
/// final sync has little left to do.
struct EarlySync<'f> {
    file: &'f File,
    written: u64,
    tx: mpsc::Sender<()>,
}

impl Write for EarlySync<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        let before = self.written / SYNC_EVERY;
        self.written += n as u64;
        if self.written / SYNC_EVERY != before {
            // Fails only if the helper stopped; early syncs are optional.
            let _ = self.tx.send(());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `path` holds exactly the bytes that `fill` writes (false when it cannot
/// be opened).
fn same_bytes(
    path: &Path,
    fill: impl FnOnce(&mut SameAs<io::BufReader<File>>) -> io::Result<()>,
) -> io::Result<bool> {
    let Ok(old) = File::open(path) else {
        return Ok(false);
    };
    let mut cmp = SameAs {
        old: io::BufReader::with_capacity(1 << 20, old),
        same: true,
    };
    fill(&mut cmp)?;
    Ok(cmp.same && cmp.at_end())
}

/// Entries per rendered chunk: about 1.5 MB of text, so that a chunk is one large
/// write and the few chunks in flight cost little memory.
const CHUNK: usize = 4096;

/// [`write_canonical`] of a slice: worker threads render chunks of entries (worker
/// `t` of `n` the chunks `t`, `t + n`, ...), and the calling thread writes them in
/// order as they come, so rendering overlaps writing.
pub fn write_canonical_slice<E>(w: &mut impl Write, entries: &[E]) -> io::Result<()>
where
    E: Borrow<Entry> + Sync,
{
    if entries.is_empty() {
        return w.write_all(b"[]\n");
    }
    let chunks = entries.len().div_ceil(CHUNK);
    let workers = crate::cores().min(chunks);
    w.write_all(b"[")?;
    if workers <= 1 {
        let mut buf = Vec::new();
        for i in 0..chunks {
            render_chunk(entries, i, &mut buf);
            w.write_all(&buf)?;
        }
        return w.write_all(END);
    }
    std::thread::scope(|s| {
        let mut lanes = Vec::with_capacity(workers);
        for t in 0..workers {
            // Two buffers per worker: one being rendered while one is written.
            let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
            let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
            for _ in 0..2 {
                empty_tx.send(Vec::new()).expect("the receiver is here");
            }
            s.spawn(move || {
                for i in (t..chunks).step_by(workers) {
                    // Either channel closes only when the writer stopped on an error.
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    render_chunk(entries, i, &mut buf);
                    if full_tx.send(buf).is_err() {
                        return;
                    }
                }
            });
            lanes.push((full_rx, empty_tx));
        }
        for i in 0..chunks {
            let (full, empty) = &lanes[i % workers];
            let buf = full
                .recv()
                .map_err(|_| io::Error::other("a rendering thread stopped"))?;
            w.write_all(&buf)?;
            // The worker may be done with its chunks already.
            let _ = empty.send(buf);
        }
        Ok::<(), io::Error>(())
    })?;
    w.write_all(END)
}

/// Renders chunk `i` of `entries` into `buf`, each entry after its separator.
fn render_chunk<E: Borrow<Entry>>(entries: &[E], i: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let start = i * CHUNK;
    let end = (start + CHUNK).min(entries.len());
    for (b, batch) in entries[start..end].chunks(TOUCH).enumerate() {
        // Entries in file order lie scattered in memory. Touching a batch first
        // lets the cache misses of its entries overlap; writing them one by one
        // would wait for each in turn.
        let touched = batch
            .iter()
            .fold(0usize, |acc, e| acc.wrapping_add(e.borrow().touch()));
        std::hint::black_box(touched);
        for (k, e) in batch.iter().enumerate() {
            let first = start + b * TOUCH + k == 0;
            buf.extend_from_slice(if first { b"\n" } else { b",\n" });
            e.borrow().write(buf);
        }
    }
}

/// Entries touched ahead of writing them.
const TOUCH: usize = 32;

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
    atomic_write_file(path, |f, _| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        fill(&mut w)?;
        w.flush()
    })
}

/// [`atomic_write`] with the temporary file itself, for writers that write in
/// large pieces already.
fn atomic_write_file(
    path: &Path,
    fill: impl FnOnce(&File, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The replaced file keeps its mode; a new one gets the usual 0644 (less umask),
    // not the temporary file's 0600.
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let tmp = tempfile::Builder::new()
        .prefix(".memory-backup-")
        .suffix(".tmp")
        .permissions(mode)
        .tempfile_in(dir)?;
    fill(tmp.as_file(), tmp.path())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the folder is.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_render_like_iterators() {
        let line = |i: usize| {
            format!(
                r#"{{"_crdt_metadata":{{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u{i}","version":1}},"n":{i}}}"#
            )
        };
        for n in [0, 1, 2, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let text = format!("[{}]", (0..n).map(line).collect::<Vec<_>>().join(","));
            let entries = parse_stamped(text.as_bytes()).unwrap().entries;
            let mut par = Vec::new();
            write_canonical_slice(&mut par, &entries).unwrap();
            assert_eq!(par, render(&entries), "{n}");
            let refs: Vec<&Entry> = entries.iter().collect();
            let mut par = Vec::new();
            write_canonical_slice(&mut par, &refs).unwrap();
            assert_eq!(par, render(&entries), "{n}");
        }
    }

    #[test]
    fn unchanged_files_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.json");
        let text = r#"[{"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1}}]"#;
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        assert!(write_slice_if_changed(&path, &entries).unwrap());
        assert_eq!(fs::read(&path).unwrap(), render(&entries));
        assert!(!write_slice_if_changed(&path, &entries).unwrap());
        assert!(!write_if_changed(&path, &entries).unwrap());
        fs::write(&path, b"[\n]\n").unwrap();
        assert!(write_slice_if_changed(&path, &entries).unwrap());
        assert_eq!(fs::read(&path).unwrap(), render(&entries));
    }

    #[test]
    fn an_empty_file_is_brackets_and_a_newline() {
        let none: [&Entry; 0] = [];
        assert_eq!(render(none), b"[]\n");
        let mut out = Vec::new();
        write_canonical_slice::<Entry>(&mut out, &[]).unwrap();
        assert_eq!(out, b"[]\n");
        assert!(parse_stamped(b"[]\n").unwrap().entries.is_empty());
    }

    #[test]
    fn large_files_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.json");
        // Several early syncs' worth of text.
        let big = "x".repeat(1 << 20);
        let text = format!(
            "[{}]",
            (0..3 * (SYNC_EVERY >> 20) + 1)
                .map(|i| format!(
                    r#"{{"_crdt_metadata":{{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u{i}","version":1}},"big":"{big}"}}"#
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        assert!(write_slice_if_changed(&path, &entries).unwrap());
        assert_eq!(fs::read(&path).unwrap(), render(&entries));
    }
}
