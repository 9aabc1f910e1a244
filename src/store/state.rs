//! What a repository keeps on this machine only, in `.git/memory-backup/`: each
//! host's base (what its memory file held at the end of the last run).

use std::path::{Path, PathBuf};

use crate::core::base::Base;
use crate::core::entry;
use crate::store::atomic;

/// The folder, inside a repository's git folder.
pub fn dir(git_dir: &Path) -> PathBuf {
    git_dir.join("memory-backup")
}

fn base_path(git_dir: &Path, host: &str) -> PathBuf {
    dir(git_dir).join(format!("base-{host}.json"))
}

/// The base of `host`, or an empty one where there is none yet (a new host, or
/// a repository made by a version before bases). One that cannot be read is
/// taken as empty too, with a warning: the next run writes it whole.
pub fn load_base(git_dir: &Path, host: &str) -> (Base, Option<String>) {
    let path = base_path(git_dir, host);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Base::default(), None),
        Err(e) => {
            return (
                Base::default(),
                Some(format!("{}: {e}; taken as empty", path.display())),
            );
        }
    };
    match entry::parse_stamped(&bytes) {
        Ok(f) => (Base::from_entries(&f.entries), None),
        Err(e) => (
            Base::default(),
            Some(format!(
                "{}:{}:{}: {}; taken as empty",
                path.display(),
                e.line,
                e.column,
                e.cause
            )),
        ),
    }
}

/// The snapshot of `host`'s base alone (its first entry, as `save_base` writes
/// it), without reading the rest: what a run checks to see whether another run
/// recorded a newer read of the memory file.
pub fn load_snapshot(git_dir: &Path, host: &str) -> Option<crate::core::base::Snapshot> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(base_path(git_dir, host))
        .ok()?
        .take(4096)
        .read_to_end(&mut head)
        .ok()?;
    let first = head.strip_prefix(b"[\n")?;
    let line = &first[..first.iter().position(|&b| b == b'\n')?];
    let line = line.strip_suffix(b",").unwrap_or(line);
    let mut one = b"[\n".to_vec();
    one.extend_from_slice(line);
    one.extend_from_slice(b"\n]\n");
    let f = entry::parse_stamped(&one).ok()?;
    Base::from_entries(&f.entries).snapshot
}

/// Writes the base of `host`, atomically and private. What the last `sync`
/// and the last settled backup ended on no longer holds once the base changes:
/// their records go first.
pub fn save_base(git_dir: &Path, host: &str, base: &Base, id_field: &str) -> std::io::Result<()> {
    atomic::private_dir(&dir(git_dir))?;
    match std::fs::remove_file(dir(git_dir).join(synced_name(host))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    crate::backup::idle::forget(git_dir, host)?;
    let entries = base.to_entries(id_field);
    atomic::write(&base_path(git_dir, host), atomic::Mode::Private, |w| {
        entry::write_file(w, &entries)
    })
}

/// When this host last pushed to the remote with success (this machine's clock).
pub fn last_push(git_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir(git_dir).join("last-push")).ok()?;
    let t = text.trim();
    crate::core::clock::Timestamp::parse(t).map(|ts| ts.to_string())
}

/// Records a successful push at `when`.
pub fn set_last_push(git_dir: &Path, when: crate::core::clock::Timestamp) {
    set_time(git_dir, "last-push", when);
}

/// When this host last parked a commit (section 8, Contention), by its clock.
pub fn last_parked(git_dir: &Path) -> Option<crate::core::clock::Timestamp> {
    let text = std::fs::read_to_string(dir(git_dir).join("last-parked")).ok()?;
    crate::core::clock::Timestamp::parse(text.trim())
}

/// Records that this host parked a commit at `when`.
pub fn set_last_parked(git_dir: &Path, when: crate::core::clock::Timestamp) {
    set_time(git_dir, "last-parked", when);
}

/// What the last `sync` of `host` ended on (see `commands::sync`), if recorded.
pub fn last_synced(git_dir: &Path, host: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir(git_dir).join(synced_name(host))).ok()?;
    Some(text.trim_end().to_string())
}

/// What a `sync` ends on: the commit whose files it folded, the memory file's
/// content hash, the id field and this version of the tool.
pub fn synced_key(commit: &str, memory_hash: &str, id_field: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!("{commit} {memory_hash} {id_field} {version}")
}

/// Records what a `sync` of `host` ended on.
pub fn set_last_synced(git_dir: &Path, host: &str, key: &str) {
    set_note(git_dir, &synced_name(host), key);
}

fn synced_name(host: &str) -> String {
    format!("last-synced-{host}")
}

fn set_time(git_dir: &Path, name: &str, when: crate::core::clock::Timestamp) {
    set_note(git_dir, name, &when.to_string());
}

/// Writes a one-line record; one that cannot be written is only logged (a
/// missing record costs the next run some work, never data).
fn set_note(git_dir: &Path, name: &str, text: &str) {
    let write = atomic::private_dir(&dir(git_dir)).and_then(|()| {
        atomic::write_bytes(
            &dir(git_dir).join(name),
            atomic::Mode::Private,
            format!("{text}\n").as_bytes(),
        )
    });
    if let Err(e) = write {
        tracing::debug!("{name} was not recorded: {e}");
    }
}
