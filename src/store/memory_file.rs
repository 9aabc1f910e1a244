//! The memory file on disk: read only when it holds still (section 2), and
//! written back (`sync`, `restore`) without ever overwriting what another writer
//! put there meanwhile.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use std::hash::BuildHasher;

use crate::core::base::Snapshot;
use crate::core::record::{self, Format, Located};
use crate::error::{Error, Result};
use crate::store::atomic;

/// How long an empty read of a file that held entries must stay as it is
/// before it counts.
const EMPTY_SETTLE: Duration = Duration::from_millis(500);
/// How many times a read starts again when the file changed while it was read.
const READ_TRIES: usize = 6;
/// The pause before reading again: a writer's rewrite takes milliseconds.
const REREAD_PAUSE: Duration = Duration::from_millis(40);
/// A file modified more recently than this may have changed within the file
/// system's clock tick: it is read twice and the bytes compared.
const FRESH: Duration = Duration::from_millis(200);

/// A memory file as read.
#[derive(Debug, Clone)]
pub struct MemoryRead {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub records: Vec<Located>,
    pub snapshot: Snapshot,
}

/// What a read saw of the file before and after reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    size: u64,
    modified_ns: i128,
}

impl Stat {
    fn of(m: &fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            modified_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// The hash of a memory file's content, for telling two reads apart: a change
/// that keeps the size and the modification time. Not a defence against anyone
/// (the base that keeps it is local), so a fast hash with a fixed seed, which
/// reads the bytes many times faster than SHA-256. A base written with another
/// hash only costs one more read of the memory file.
pub fn content_hash(bytes: &[u8]) -> String {
    const SEEDS: [u64; 2] = [0x6d65_6d6f_7279, 0x6261_636b_7570];
    let mut digest = [0u8; 16];
    for (half, seed) in digest.chunks_mut(8).zip(SEEDS) {
        let h = foldhash::quality::FixedState::with_seed(seed).hash_one(bytes);
        half.copy_from_slice(&h.to_le_bytes());
    }
    record::hex(&digest)
}

/// Checks that `path` names a regular file (through symlinks): a FIFO, a device or
/// a folder is exit 66 at once, before anything is read from it.
pub fn check_regular(path: &Path) -> Result<fs::Metadata> {
    let missing = |cause: String| Error::Missing {
        path: path.to_path_buf(),
        cause,
    };
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(m),
        Ok(m) => {
            let t = m.file_type();
            let what = if t.is_dir() {
                "a folder"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() || t.is_block_device() {
                "a device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            Err(missing(format!(
                "is {what}, not a memory file; nothing was read"
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing("no such memory file".into())),
        Err(e) => Err(missing(format!("cannot read the memory file: {e}"))),
    }
}

/// The snapshot of the memory file as [`read`] would take it, without parsing
/// it; `None` when it changed while it was read.
pub fn snapshot(path: &Path) -> Result<Option<Snapshot>> {
    Ok(read_once(path)?.map(|(bytes, stat)| Snapshot {
        modified_ns: stat.modified_ns,
        size: stat.size,
        hash: content_hash(&bytes),
    }))
}

/// Reads the memory file when it holds still: the same file, size and
/// modification time before and after the read (and, for a file changed a
/// moment ago, the same bytes twice). A torn read that does not parse, or an empty
/// read when `expect_entries`, is read again after a pause. Exit 75 when it
/// never holds still; 65 for content that stays invalid.
pub fn read(path: &Path, expect_entries: bool) -> Result<MemoryRead> {
    let mut last: Option<(Vec<u8>, record::ParseError)> = None;
    let mut empty_at: Option<(Stat, std::time::Instant)> = None;
    for attempt in 0..READ_TRIES {
        if attempt > 0 {
            std::thread::sleep(REREAD_PAUSE);
        }
        let Some((bytes, stat)) = read_once(path)? else {
            continue;
        };
        match record::parse_records(&bytes) {
            Ok((format, records)) => {
                // An empty read of a file that held entries: a writer may be
                // between truncating it and writing it again. It counts only
                // when the file stays empty and untouched for a while.
                if records.is_empty() && expect_entries {
                    match empty_at {
                        Some((seen, since)) if seen == stat => {
                            if let Some(rest) = EMPTY_SETTLE.checked_sub(since.elapsed()) {
                                std::thread::sleep(rest);
                                continue;
                            }
                        }
                        _ => {
                            empty_at = Some((stat, std::time::Instant::now()));
                            continue;
                        }
                    }
                }
                let snapshot = Snapshot {
                    modified_ns: stat.modified_ns,
                    size: stat.size,
                    hash: content_hash(&bytes),
                };
                return Ok(MemoryRead {
                    bytes,
                    format,
                    records,
                    snapshot,
                });
            }
            Err(e) => {
                if let Some((prev, prev_err)) = &last
                    && *prev == bytes
                {
                    return Err(invalid(path, prev_err.clone()));
                }
                last = Some((bytes, e));
            }
        }
    }
    match last {
        Some((_, e)) => Err(invalid(path, e)),
        None if empty_at.is_some() => Err(Error::Busy(format!(
            "{}: the file was empty at a read and kept changing after ({READ_TRIES} tries): \
             a writer is busy with it; nothing written",
            path.display()
        ))),
        None => Err(Error::Busy(format!(
            "{}: the file kept changing while it was read ({READ_TRIES} tries)",
            path.display()
        ))),
    }
}

fn invalid(path: &Path, e: record::ParseError) -> Error {
    Error::Invalid {
        path: path.to_path_buf(),
        line: e.line,
        column: e.column,
        cause: e.cause,
    }
}

/// One read; `None` when the file changed while it was read.
fn read_once(path: &Path) -> Result<Option<(Vec<u8>, Stat)>> {
    check_regular(path)?;
    let mut f = File::open(path).map_err(|e| Error::Missing {
        path: path.to_path_buf(),
        cause: format!("cannot read the memory file: {e}"),
    })?;
    let read_err = |e: io::Error| Error::Missing {
        path: path.to_path_buf(),
        cause: format!("cannot read the memory file: {e}"),
    };
    let before = Stat::of(&f.metadata().map_err(read_err)?);
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(check_regular(path)
            .err()
            .unwrap_or_else(|| read_err(io::Error::other("not a regular file"))));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(before.size).unwrap_or(0));
    f.read_to_end(&mut bytes).map_err(read_err)?;
    let after = Stat::of(&f.metadata().map_err(read_err)?);
    let now_at_path = fs::metadata(path).ok().map(|m| Stat::of(&m));
    if before != after || now_at_path != Some(after) || bytes.len() as u64 != after.size {
        return Ok(None);
    }
    if is_fresh(after.modified_ns) {
        // Changed a moment ago: a rewrite within the clock's tick would keep the
        // size and time, and a write still under way (its size grows a page at a
        // time) may have been read in part; the bytes a moment later tell.
        std::thread::sleep(REREAD_PAUSE);
        let again = fs::read(path).map_err(read_err)?;
        if again != bytes {
            return Ok(None);
        }
    }
    Ok(Some((bytes, after)))
}

fn is_fresh(modified_ns: i128) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    now - modified_ns < FRESH.as_nanos() as i128
}

/// How a write into the memory file ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// The file now holds the new content.
    Done,
    /// The file changed since it was read: nothing was written.
    Changed,
}

/// Replaces the memory file at `path` (its target, through symlinks) with
/// `bytes`, only if it still holds what `read` saw: another writer's change is
/// never overwritten. The new file keeps the old one's mode and owner. Where the
/// file system can swap two files in one step, the swap tells for sure; elsewhere
/// the check comes just before the rename.
pub fn replace_if_unchanged(path: &Path, bytes: &[u8], read: &Snapshot) -> Result<Written> {
    let target = atomic::resolve_links(path);
    let write_err = |e: io::Error| Error::write(&target, e);
    let old = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(write_err(e)),
    };
    let unchanged = |m: &fs::Metadata| {
        let s = Stat::of(m);
        s.size == read.size
            && s.modified_ns == read.modified_ns
            // Changed within the clock's tick keeps the time: the bytes tell.
            && (!is_fresh(s.modified_ns)
                || fs::read(&target).is_ok_and(|b| content_hash(&b) == read.hash))
    };
    match &old {
        Some(m) if !unchanged(m) => return Ok(Written::Changed),
        None if read.size != 0 => return Ok(Written::Changed),
        _ => {}
    }
    let mode = old.as_ref().map(|m| m.permissions().mode() & 0o7777);
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = atomic::prepare(&target, atomic::Mode::KeepOr600, |w| {
        io::Write::write_all(w, bytes)
    })
    .map_err(write_err)?;
    if let Some(m) = &old {
        if let Some(mode) = mode {
            let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode));
        }
        keep_owner(tmp.path(), m);
    }
    let Some(old_meta) = old else {
        // No file yet: a rename that would replace one made meanwhile is refused.
        return match tmp.persist_noclobber(&target) {
            Ok(_) => {
                atomic::sync_dir(atomic::parent_of(&target)).map_err(write_err)?;
                Ok(Written::Done)
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(Written::Changed),
            Err(e) => Err(write_err(e.error)),
        };
    };
    let (tmp_file, tmp_path) = tmp.into_parts();
    drop(tmp_file);
    match crate::sys::exchange(&tmp_path, &target) {
        Ok(()) => {
            // What was at the path a moment ago is now at the temporary path.
            let displaced = fs::metadata(&tmp_path).map(|m| Stat::of(&m));
            let same = displaced.is_ok_and(|d| {
                d.ino == Stat::of(&old_meta).ino
                    && d.size == read.size
                    && d.modified_ns == read.modified_ns
            });
            if !same {
                // Another writer replaced the file just before: put its file back.
                crate::sys::exchange(&tmp_path, &target).map_err(write_err)?;
                let _ = tmp_path.close();
                return Ok(Written::Changed);
            }
            let _ = tmp_path.close();
        }
        Err(e) if e.kind() == io::ErrorKind::Unsupported => {
            let now = fs::metadata(&target).map_err(write_err)?;
            if !unchanged(&now) || Stat::of(&now).ino != Stat::of(&old_meta).ino {
                let _ = tmp_path.close();
                return Ok(Written::Changed);
            }
            tmp_path.persist(&target).map_err(|e| write_err(e.error))?;
        }
        Err(e) => {
            let _ = tmp_path.close();
            return Err(write_err(e));
        }
    }
    atomic::sync_dir(atomic::parent_of(&target)).map_err(write_err)?;
    Ok(Written::Done)
}

/// Gives `path` the owner of `like` where it differs (only a superuser can).
fn keep_owner(path: &Path, like: &fs::Metadata) {
    if let Ok(m) = fs::metadata(path)
        && (m.uid() != like.uid() || m.gid() != like.gid())
    {
        let _ = std::os::unix::fs::chown(path, Some(like.uid()), Some(like.gid()));
    }
}

/// The path of `path`'s `.bak` copy at `now` (`FILE.20261122T010203Z.bak`, or with
/// `-1`, `-2`, ... when taken).
pub fn bak_path(path: &Path, stamp: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "memory".into());
    let mut n = 0;
    loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = path.with_file_name(format!("{name}.{stamp}{suffix}.bak"));
        if fs::symlink_metadata(&candidate).is_err() {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_content_hash_is_fixed_and_tells_contents_apart() {
        let h = content_hash(b"{\"a\":1}");
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, content_hash(b"{\"a\":1}"));
        assert_ne!(h, content_hash(b"{\"a\":2}"));
        assert_ne!(content_hash(b""), content_hash(b"\0"));
    }

    #[test]
    fn an_empty_read_of_a_file_that_held_entries_counts_once_it_stays_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.jsonl");
        fs::write(&path, "").unwrap();
        let started = std::time::Instant::now();
        let read = read(&path, true).unwrap();
        assert!(read.records.is_empty());
        assert!(started.elapsed() >= EMPTY_SETTLE);
    }

    #[test]
    fn a_file_emptied_again_and_again_is_busy_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.jsonl");
        fs::write(&path, "").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (stop, path) = (stop.clone(), path.clone());
            std::thread::spawn(move || {
                // Each rewrite makes a new file: a new inode at every read.
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let temp = path.with_extension(format!("tmp{n}"));
                    fs::write(&temp, "").unwrap();
                    fs::rename(&temp, &path).unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let got = read(&path, true);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        match got {
            Err(Error::Busy(m)) => assert!(m.contains("was empty"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_fifo_a_device_and_a_folder_are_refused_before_any_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(matches!(read(&fifo, false), Err(Error::Missing { .. })));
        }
        assert!(matches!(
            read(Path::new("/dev/zero"), false),
            Err(Error::Missing { .. })
        ));
        assert!(matches!(
            read(dir.path(), false),
            Err(Error::Missing { .. })
        ));
    }

    #[test]
    fn a_write_never_replaces_a_file_changed_since_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        fs::write(&p, "{\"a\":1}").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let r = read(&p, false).unwrap();
        assert_eq!(
            replace_if_unchanged(&p, b"{\"b\":2}", &r.snapshot).unwrap(),
            Written::Done
        );
        assert_eq!(fs::read(&p).unwrap(), b"{\"b\":2}");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // The snapshot is now stale.
        assert_eq!(
            replace_if_unchanged(&p, b"{\"c\":3}", &r.snapshot).unwrap(),
            Written::Changed
        );
        assert_eq!(fs::read(&p).unwrap(), b"{\"b\":2}");
    }

    #[test]
    fn a_write_through_a_symlink_replaces_its_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.jsonl");
        let link = dir.path().join("link.jsonl");
        fs::write(&target, "{\"a\":1}").unwrap();
        std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
        let r = read(&link, false).unwrap();
        replace_if_unchanged(&link, b"{\"b\":2}", &r.snapshot).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"{\"b\":2}");
    }
}
