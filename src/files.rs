//! Host and unified files: finding them, reading them, and writing them in the
//! canonical layout with an atomic replace.

use std::borrow::Borrow;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use crate::entry::{Entry, EntryReader, Placed};
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
    parse_stamped_in(&mut bytes.to_vec())
}

/// [`parse_stamped`] of the bytes in `buf`. The records that are canonical as
/// written, as in every file this tool wrote, keep their bodies and metadata
/// where they are: `buf` becomes their text, and writing such an entry copies
/// what was read. Otherwise `buf` is left to the caller to reuse.
fn parse_stamped_in(buf: &mut Vec<u8>) -> Result<Stamped, ParseError> {
    let mut reader = EntryReader::default();
    // The bodies of records that are not canonical as written. A canonical body
    // is never longer than its record, so this does not grow, and pages never
    // written cost nothing.
    let mut side = Vec::with_capacity(buf.len());
    // The byte that makes each body left in `buf` one range.
    let mut patches = Vec::new();
    // More entries than a stamped entry's shortest text fits in the file: the lists
    // never grow, and capacity never used costs no memory, only addresses.
    let most = buf.len() / SHORTEST_ENTRY + 1;
    let mut out = Stamped {
        entries: Vec::with_capacity(most),
        lines: Vec::with_capacity(most),
        skipped: Vec::new(),
    };
    memory::parse_each(
        buf,
        |src, pos| reader.read_into(src, pos, &mut side),
        |entry, line| match entry {
            Ok((e, placed)) => {
                if let Placed::Source(at, byte) = placed {
                    patches.push((at, byte));
                }
                out.lines.push(line);
                out.entries.push(e);
            }
            Err(e) => out.skipped.push((line, e.0)),
        },
    )?;
    let (text, side_at) = if patches.is_empty() {
        side.shrink_to_fit();
        (side, 0)
    } else {
        let mut text = std::mem::take(buf);
        for (at, byte) in patches {
            text[at] = byte;
        }
        let side_at = text.len();
        text.extend_from_slice(&side);
        (text, side_at)
    };
    let text = Arc::new(text);
    for e in &mut out.entries {
        e.set_text(&text, side_at);
    }
    // The lists keep their capacity: the part never written costs addresses, not
    // memory (about twice the file's size in addresses for the entries, which
    // counts only where the system forbids overcommitting memory), and shrinking
    // a large list below the allocator's mapping threshold would copy it into
    // fresh pages.
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
    parse_stamped_in(buf).map_err(ReadError::Parse)
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
    atomic_write_file(path, Durability::Synced, |f| {
        let mut w = EarlySync {
            file: f,
            written: 0,
            started: 0,
        };
        write_canonical_slice(&mut w, entries)
    })?;
    Ok(true)
}

/// Bytes written between two early starts of writeback. At 1 MiB rather than 4,
/// the final sync of a 35 MB output waits 0.8 ms rather than 1.6 to 2.0 ms
/// (medians of 9 runs each), and the writing takes no longer.
const SYNC_EVERY: u64 = 1 << 20;

/// Writes to a file, and starts the writeback of what is written every
/// [`SYNC_EVERY`] bytes without waiting for it: the disk works while the rest is
/// rendered, and the final sync has little left to do.
struct EarlySync<'f> {
    file: &'f File,
    written: u64,
    /// Where the writeback not yet started begins.
    started: u64,
}

impl Write for EarlySync<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= SYNC_EVERY {
            start_writeback(self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts writing `len` bytes of `file` from `offset` to disk and returns without
/// waiting. Only a head start: the final sync waits, and reports any error.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor that `file` keeps open.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Elsewhere there is no such call: the final sync does all the work.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

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
    let chunk = &entries[start..end];
    for (k, e) in chunk.iter().enumerate() {
        // Entries in file order lie scattered in memory: each is fetched from
        // memory ahead of its turn, its text once it is there, so that the cache
        // misses of several entries overlap instead of following one another.
        if let Some(ahead) = chunk.get(k + 2 * AHEAD) {
            ahead.borrow().prefetch();
        }
        if let Some(ahead) = chunk.get(k + AHEAD) {
            ahead.borrow().prefetch_text();
        }
        buf.extend_from_slice(if start + k == 0 { b"\n" } else { b",\n" });
        e.borrow().write(buf);
    }
}

/// How many entries ahead of the one written its text is fetched (and twice as
/// many ahead, the entry itself).
const AHEAD: usize = 4;

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
    atomic_write_file(path, Durability::Synced, buffered(fill))
}

/// [`atomic_write`] without the syncs, for a file that only reports: a reader
/// sees the old file or the new one, never a part, but after a power cut it
/// may hold either, or nothing.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    atomic_write_file(path, Durability::Unsynced, buffered(|w| w.write_all(bytes)))
}

fn buffered(
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> impl FnOnce(&File) -> io::Result<()> {
    |f| {
        let mut w = BufWriter::with_capacity(1 << 20, f);
        fill(&mut w)?;
        w.flush()
    }
}

/// Whether [`atomic_write_file`] makes the new file durable before it returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Synced,
    Unsynced,
}

/// Writes through `fill` into a temporary file beside `path` and renames it over
/// `path`; with [`Durability::Synced`], syncs the file before and the folder after.
fn atomic_write_file(
    path: &Path,
    sync: Durability,
    fill: impl FnOnce(&File) -> io::Result<()>,
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
    fill(tmp.as_file())?;
    if sync == Durability::Synced {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if sync == Durability::Synced {
        // The rename is durable only once the folder is.
        File::open(dir)?.sync_all()?;
    }
    Ok(())
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
    fn records_canonical_as_written_are_read_in_place_and_written_back_the_same() {
        let meta = |u: &str| {
            format!(
                r#"{{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"{u}","version":1}}"#
            )
        };
        // The metadata first, last, in the middle, alone; bodies without it.
        let cases = [
            (
                format!(r#"{{"_crdt_metadata":{},"a":1}}"#, meta("u1")),
                r#"{"a":1}"#,
            ),
            (
                format!(r#"{{"A":[1],"_crdt_metadata":{}}}"#, meta("u2")),
                r#"{"A":[1]}"#,
            ),
            (
                format!(r#"{{"A":1,"_crdt_metadata":{},"b":"x"}}"#, meta("u3")),
                r#"{"A":1,"b":"x"}"#,
            ),
            (format!(r#"{{"_crdt_metadata":{}}}"#, meta("u4")), "{}"),
        ];
        let lines: Vec<&str> = cases.iter().map(|(l, _)| l.as_str()).collect();
        let canonical = format!("[\n{}\n]\n", lines.join(",\n"));
        // The same records with spaces and keys out of order: not canonical as
        // written, so their bodies are copied; and a file mixing both.
        let loose = canonical
            .replace(":{", ": {")
            .replace(r#""a":1}"#, r#""a": 1}"#);
        let second = loose.lines().nth(2).unwrap().trim_end_matches(',');
        let mixed = format!("[\n{},\n{second}\n]\n", lines[0]);
        for text in [&canonical, &loose] {
            let entries = parse_stamped(text.as_bytes()).unwrap().entries;
            let bodies: Vec<&str> = entries.iter().map(Entry::body).collect();
            let want: Vec<&str> = cases.iter().map(|(_, b)| *b).collect();
            assert_eq!(bodies, want);
            assert_eq!(String::from_utf8(render(&entries)).unwrap(), canonical);
            // Equal to the entries read from the canonical text, whichever way
            // they were read.
            assert_eq!(
                entries,
                parse_stamped(canonical.as_bytes()).unwrap().entries
            );
        }
        let mixed = parse_stamped(mixed.as_bytes()).unwrap().entries;
        let lines_back: Vec<String> = mixed.iter().map(Entry::to_json).collect();
        assert_eq!(lines_back, [lines[0], lines[1]]);
        // Canonical JSON whose timestamp is in another form: written in the
        // canonical one.
        let offset = meta("u5").replace("00:00:00.000000Z", "01:00:00+01:00");
        let text = format!("[\n{{\"_crdt_metadata\":{offset},\"a\":1}}\n]\n");
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        assert_eq!(entries[0].to_json(), cases[0].0.replace("u1", "u5"));
        // New metadata on an entry read in place is written, not the old text.
        let moved = mixed[0].with_meta(crate::entry::Metadata {
            version: 2,
            ..mixed[0].meta.clone()
        });
        assert!(moved.to_json().contains(r#""version":2"#));
    }

    #[test]
    fn unique_ids_read_from_a_file_stay_in_its_text_and_escaped_ones_are_decoded() {
        let meta = |u: &str, ts: &str| {
            format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"{u}","version":1}}"#)
        };
        const TS: &str = "2026-01-01T00:00:00.000000Z";
        let text = [
            // Canonical as written: read in place, the id inside its metadata's text.
            format!(r#"{{"_crdt_metadata":{},"a":1}}"#, meta("in-place", TS)),
            // Not canonical: the body goes to the side text, the id right after it.
            format!(r#"{{"b": 2, "_crdt_metadata": {}}}"#, meta("side", TS)),
            // A timestamp in another form: the side text too.
            format!(
                r#"{{"_crdt_metadata":{},"c":3}}"#,
                meta("other-form", "2026-01-01T01:00:00+01:00")
            ),
            // Escaped: decoded, in a text of its own.
            format!(r#"{{"_crdt_metadata":{},"d":4}}"#, meta(r"e\u0301\\", TS)),
        ]
        .join(",\n");
        let text = format!("[\n{text}\n]\n");
        let entries = parse_stamped(text.as_bytes()).unwrap().entries;
        let ids: Vec<&str> = entries.iter().map(Entry::unique_id).collect();
        assert_eq!(ids, ["in-place", "side", "other-form", "e\u{301}\\"]);
        // Each carries the merge's hash of its bytes, wherever it was made.
        for e in &entries {
            assert_eq!(
                e.meta.unique_id.table_hash(),
                crate::crdt::id_hash(e.id_bytes())
            );
            let own = crate::entry::UniqueId::new(e.unique_id());
            assert_eq!(own.table_hash(), e.meta.unique_id.table_hash());
        }
        let at = |e: &Entry| e.id_bytes().as_ptr() as usize;
        let body = |e: &Entry| e.body().as_ptr() as usize;
        // In place: the id lies in the metadata just before the body.
        assert!(at(&entries[0]) < body(&entries[0]));
        assert!(body(&entries[0]) - at(&entries[0]) < 100);
        for e in &entries[1..3] {
            assert_eq!(at(e), body(e) + e.body().len(), "{}", e.unique_id());
        }
        // All written back as canonical, ids as they were.
        let out = String::from_utf8(render(&entries)).unwrap();
        let again = parse_stamped(out.as_bytes()).unwrap().entries;
        assert_eq!(again, entries);
        assert!(out.contains("\"unique_id\":\"e\u{301}\\\\\""), "{out}");
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
