//! Packing a repository's loose objects into one pack, the step of
//! `git gc --auto` that packs them, without its pruning: nothing is deleted
//! that the new pack does not hold.
//!
//! Every run of `backup` writes its commit's files as loose objects, each one
//! compressed whole, and so do fetches of a commit or two. Left loose, a
//! memory file of megabytes would grow the repository by megabytes a run; in a
//! pack, a version is a delta on the next of a few kilobytes. libgit2's pack
//! builder finds the deltas (blobs named by their path, so that versions of
//! one file meet) and its indexer writes the pack and its index, each synced to
//! disk before it is renamed into place (the process enables libgit2's fsync).
//! A loose object is removed only once the new index names it.
//!
//! Readers in other processes stay correct: libgit2 looks for new packs when
//! an object it wants is missing, and the pack is in place before any loose
//! object goes. Packs are never removed here: a libgit2 reader that listed a
//! pack before it went would fail to read from it (it drops no pack when it
//! looks again), and git's `gc` is the tool for that.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::{Oid, Repository};

/// Loose objects from which a run packs them into a pack: about 256 runs'
/// worth (a run writes four: two files, a tree, a commit).
pub const REPACK_FROM: usize = 1024;
/// Or their size on disk from which it does: a memory file of megabytes.
pub const REPACK_FROM_BYTES: u64 = 128 << 20;

/// What a repack did.
#[derive(Debug)]
pub struct Repacked {
    /// Loose objects removed: now in the new pack, or in a pack already.
    pub objects: usize,
    /// Their size on disk, loose.
    pub loose_bytes: u64,
    /// The new pack's index, the pack beside it; none when every loose object
    /// was in a pack already (a concurrent repack took them).
    pub index: Option<PathBuf>,
    /// The new pack's size.
    pub pack_bytes: u64,
    /// Loose objects left as they were.
    pub left: usize,
    /// Why, one line for each kind, naming a file: damaged objects (left for a
    /// person to see), or objects that could not be removed.
    pub problems: Vec<String>,
}

/// Packs the loose objects of `repo` into one pack when there are
/// [`REPACK_FROM`] or more that no pack holds, or [`REPACK_FROM_BYTES`] of them;
/// `None` when there are fewer, or when the repository had no folder for packs
/// (see [`repack`]). Listing them takes a few hundred system calls.
pub fn repack_if_many(repo: &Repository) -> Result<Option<Repacked>, git2::Error> {
    repack_from(repo, REPACK_FROM, REPACK_FROM_BYTES)
}

/// [`repack_if_many`] from `count` loose objects or `bytes`.
fn repack_from(
    repo: &Repository,
    count: usize,
    bytes: u64,
) -> Result<Option<Repacked>, git2::Error> {
    let objects = repo.commondir().join("objects");
    let many = |n: usize, b: u64| n >= count || b >= bytes;
    let loose = all_loose(&objects);
    if !many(loose.len(), loose.values().sum()) {
        return Ok(None);
    }
    // Copies of objects that a pack holds (left by a repack killed while it
    // removed them, or written again by a writer that looked only for a loose
    // file) are not counted: packing them again would add a pack a run.
    let packed = packed_ids(&objects.join("pack"));
    let unpacked = loose.iter().filter(|(id, _)| !packed.contains(id));
    let (n, b) = unpacked.fold((0, 0), |(n, b), (_, len)| (n + 1, b + len));
    if !many(n, b) {
        return Ok(None);
    }
    repack_these(repo, &loose)
}

/// Packs every loose object of `repo` that reads whole and hashes to its name
/// into one new pack, then removes those that the pack's index names, and the
/// loose copies of objects that a pack held already. `None` when the
/// repository has no folder for packs: libgit2 looks for new packs only in a
/// folder that was there when it opened a repository, so a run opened before
/// could not find the objects. The folder is made (and synced) for the next
/// repack.
pub fn repack(repo: &Repository) -> Result<Option<Repacked>, git2::Error> {
    repack_these(repo, &all_loose(&repo.commondir().join("objects")))
}

/// What a repository's object database holds on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    pub loose_objects: usize,
    pub loose_bytes: u64,
    /// Packs with their index, and the size of both.
    pub packs: usize,
    pub pack_bytes: u64,
}

/// Counts the loose objects and packs of `repo`.
pub fn census(repo: &Repository) -> Census {
    let objects = repo.commondir().join("objects");
    let loose = all_loose(&objects);
    let mut census = Census {
        loose_objects: loose.len(),
        loose_bytes: loose.values().sum(),
        packs: 0,
        pack_bytes: 0,
    };
    for index in indexes_with_packs(&objects.join("pack")) {
        census.packs += 1;
        census.pack_bytes += [index.clone(), index.with_extension("pack")]
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum::<u64>();
    }
    census
}

/// The loose objects under `objects`, with their sizes.
fn all_loose(objects: &Path) -> HashMap<Oid, u64> {
    (0..=255u8)
        .flat_map(|b| loose_in(&objects.join(format!("{b:02x}"))))
        .collect()
}

/// The indexes in `pack_dir` whose pack is beside them: the packs a reader
/// uses (libgit2 ignores an index without its pack too).
fn indexes_with_packs(pack_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(pack_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx") && p.with_extension("pack").is_file())
        .collect()
}

/// The ids that the packs in `pack_dir` hold.
fn packed_ids(pack_dir: &Path) -> HashSet<Oid> {
    indexes_with_packs(pack_dir)
        .into_iter()
        .filter_map(|p| std::fs::read(p).ok().and_then(|idx| index_ids(&idx)))
        .flatten()
        .collect()
}

/// Temporary files of pack writers older than this belong to a killed run: a
/// repack or a fetch writes one for seconds.
const STALE_PACK_TEMPORARY: Duration = Duration::from_secs(3600);

/// Removes the temporary files that killed pack writers left in `pack_dir`:
/// libgit2's indexer (`pack_git2_*`) and the kept fetches (`tmp_pack_*`).
/// git's own `gc` removes neither.
fn remove_stale_pack_temporaries(pack_dir: &Path) {
    remove_stale_files(pack_dir, &["pack_git2_", "tmp_pack_"], STALE_PACK_TEMPORARY);
}

/// The least memory that the builder's window of objects may take.
const WINDOW_MEMORY_MIN: usize = 16 << 20;

/// Bounds the window of objects among which `repo`'s pack builders look for
/// deltas, for objects of at most `largest` bytes, to six times the largest
/// (at least [`WINDOW_MEMORY_MIN`]). Each object in the window takes its data
/// and an index of about 1.7 times its size, so it holds the version before
/// beside the base it keeps: each version becomes a delta on its neighbour,
/// in chains. Three times holds only the base, and every version a delta on
/// it, which grows with the distance (a pack of 3.0 MB against 1.1 MB for 250
/// versions of an 8.7 MB file); without a bound the builder's window of ten
/// took 285 MB for 62 versions. The bound is git's `pack.windowMemory`, in a
/// configuration file that only this handle of the repository reads, with
/// `pack.deltaCacheSize` at libgit2's default: libgit2 also takes that as the
/// size above which it makes no delta at all. The file, to keep until the
/// builder is made.
fn bound_window(repo: &Repository, largest: usize) -> Result<tempfile::NamedTempFile, git2::Error> {
    let window = WINDOW_MEMORY_MIN.max(largest.saturating_mul(6));
    let mut file =
        tempfile::NamedTempFile::new().map_err(|e| io_error(&std::env::temp_dir(), e))?;
    let text = format!("[pack]\n\twindowMemory = {window}\n\tdeltaCacheSize = {DELTA_CACHE}\n");
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| io_error(file.path(), e))?;
    repo.config()?
        .add_file(file.path(), git2::ConfigLevel::App, true)?;
    Ok(file)
}

/// libgit2's default `pack.deltaCacheSize` (`GIT_PACK_DELTA_CACHE_SIZE`).
const DELTA_CACHE: usize = 256 << 20;

/// One line for problems of one kind (`one` and `many` say what they are):
/// the problem, or the count and the first.
fn summed(one: &str, many: &str, all: &[String]) -> Option<String> {
    match all {
        [] => None,
        [only] => Some(format!("{only}: {one}")),
        [first, ..] => Some(format!("{} {many}, the first: {first}", all.len())),
    }
}

/// [`repack`] of the loose objects `loose`. The packs are listed again here, as
/// late as can be: a concurrent repack may just have taken these objects.
fn repack_these(
    repo: &Repository,
    loose: &HashMap<Oid, u64>,
) -> Result<Option<Repacked>, git2::Error> {
    let started = Instant::now();
    let objects = repo.commondir().join("objects");
    let pack_dir = objects.join("pack");
    if !pack_dir.is_dir() {
        match std::fs::create_dir(&pack_dir) {
            Ok(()) => std::fs::File::open(&objects)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&objects, e))?,
            // A concurrent run made it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && pack_dir.is_dir() => {}
            Err(e) => return Err(io_error(&pack_dir, e)),
        }
        return Ok(None);
    }
    remove_stale_pack_temporaries(&pack_dir);
    let in_packs = packed_ids(&pack_dir);
    let (copies, unpacked): (Vec<Oid>, Vec<Oid>) =
        loose.keys().partition(|id| in_packs.contains(id));
    // Names only guide the search for deltas: without them the pack is larger.
    let names = names_of(repo, loose).unwrap_or_default();
    let damage = |id: Oid, why: &str| format!("{}: {why}", loose_path(&objects, id).display());
    let (whole, largest, mut damaged) = check_loose(repo, unpacked, damage)?;
    // A handle of its own, whose configuration the bound on the window goes
    // into (and the file that holds it lives as long as the builder).
    let for_packing = Repository::open(repo.path())?;
    // Without a temporary file, the builder's own window: more memory, no loss.
    let _bound = if whole.is_empty() {
        None
    } else {
        bound_window(&for_packing, largest)
            .inspect_err(|e| tracing::warn!("the repack's window is not bounded: {}", e.message()))
            .ok()
    };
    let mut builder = for_packing.packbuilder()?;
    // One thread: each keeps a window of its own.
    builder.set_threads(1);
    let mut inserted = Vec::with_capacity(whole.len());
    for id in whole {
        // A refused insertion leaves the builder as it was.
        match builder.insert_object(id, names.get(&id).map(String::as_str)) {
            Ok(()) => inserted.push(id),
            Err(e) => damaged.push(damage(id, e.message())),
        }
    }
    let mut packed = Repacked {
        objects: 0,
        loose_bytes: 0,
        index: None,
        pack_bytes: 0,
        left: 0,
        problems: Vec::new(),
    };
    let mut removable = copies;
    if !inserted.is_empty() {
        builder.write(&pack_dir, 0)?;
        let name = builder
            .name()?
            .ok_or_else(|| git2::Error::from_str("the pack builder named no pack"))?
            .to_string();
        let index = pack_dir.join(format!("pack-{name}.idx"));
        let in_pack = index_ids(&std::fs::read(&index).map_err(|e| io_error(&index, e))?)
            .ok_or_else(|| {
                git2::Error::from_str(&format!("{}: not a pack index", index.display()))
            })?;
        packed.pack_bytes = std::fs::metadata(index.with_extension("pack")).map_or(0, |m| m.len());
        let (named, unnamed): (Vec<Oid>, Vec<Oid>) =
            inserted.into_iter().partition(|id| in_pack.contains(id));
        // The indexer hashes what it indexes: an object that it does not name
        // was not what its name says, and stays loose.
        let not_in = format!("not in {}", index.display());
        damaged.extend(unnamed.into_iter().map(|id| damage(id, &not_in)));
        removable.extend(named);
        packed.index = Some(index);
    }
    let not_removed = remove_loose(&objects, loose, removable, &mut packed);
    packed.left = damaged.len() + not_removed.len();
    packed.problems.extend(summed(
        "a damaged loose object, left as it is",
        "damaged loose objects left as they are",
        &damaged,
    ));
    packed.problems.extend(summed(
        "a loose object in a pack, not removed",
        "loose objects in a pack but not removed",
        &not_removed,
    ));
    tracing::info!(
        "packed {} loose objects ({} bytes) into {} ({} bytes) in {:?}",
        packed.objects,
        packed.loose_bytes,
        packed.index.as_deref().map_or_else(
            || "packs there already".to_string(),
            |i| i.display().to_string()
        ),
        packed.pack_bytes,
        started.elapsed()
    );
    Ok(Some(packed))
}

/// The loose objects of `ids` that read whole and are what their names say,
/// the size of the largest, and a line for each of the others.
fn check_loose(
    repo: &Repository,
    ids: Vec<Oid>,
    damage: impl Fn(Oid, &str) -> String,
) -> Result<(Vec<Oid>, usize, Vec<String>), git2::Error> {
    let odb = repo.odb()?;
    let mut whole = Vec::with_capacity(ids.len());
    let mut damaged = Vec::new();
    let mut largest = 0;
    for id in ids {
        // Only an object that reads whole and is what its name says goes in:
        // the builder reads the rest of an object only while it writes (one
        // damaged object would stop every repack), and it could take a wrong
        // one as the base of a delta, which its indexer copies in unhashed.
        let checked = odb.read(id).and_then(|o| {
            if Oid::hash_object(o.kind(), o.data()).is_ok_and(|h| h == id) {
                Ok(o.len())
            } else {
                Err(git2::Error::from_str("its data does not hash to its name"))
            }
        });
        match checked {
            Ok(len) => {
                largest = largest.max(len);
                whole.push(id);
            }
            Err(e) => damaged.push(damage(id, e.message())),
        }
    }
    Ok((whole, largest, damaged))
}

/// Removes the loose copies of `ids`, which a pack holds, counting them in
/// `packed`; a line for each that could not be removed.
fn remove_loose(
    objects: &Path,
    sizes: &HashMap<Oid, u64>,
    ids: Vec<Oid>,
    packed: &mut Repacked,
) -> Vec<String> {
    let mut not_removed = Vec::new();
    for id in ids {
        let path = loose_path(objects, id);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                packed.objects += 1;
                packed.loose_bytes += sizes[&id];
            }
            // A concurrent repack took it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => not_removed.push(format!("{}: {e}", path.display())),
        }
    }
    not_removed
}

/// The loose objects in one of the 256 folders of `objects`, with their sizes:
/// files named by the rest of a hex id, not empty (an empty one is a power
/// cut's leftover, no object).
fn loose_in(dir: &Path) -> Vec<(Oid, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let Some(prefix) = dir.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let rest = name.to_str()?;
            if rest.len() != 38 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let id = Oid::from_str(&format!("{prefix}{rest}")).ok()?;
            let len = e.metadata().ok().filter(|m| m.is_file())?.len();
            (len > 0).then_some((id, len))
        })
        .collect()
}

/// The path of every loose blob that a commit of the repository's history
/// names in its tree, for the pack builder, which looks for deltas between
/// objects of one name.
fn names_of(
    repo: &Repository,
    loose: &HashMap<Oid, u64>,
) -> Result<HashMap<Oid, String>, git2::Error> {
    let mut walk = repo.revwalk()?;
    for glob in ["refs/heads/*", "refs/remotes/*"] {
        walk.push_glob(glob)?;
    }
    let mut names = HashMap::new();
    let mut seen_trees = HashSet::new();
    for commit in walk {
        let Ok(commit) = repo.find_commit(commit?) else {
            continue;
        };
        let tree = commit.tree_id();
        if !seen_trees.insert(tree) {
            continue;
        }
        let Ok(tree) = repo.find_tree(tree) else {
            continue;
        };
        for entry in tree.iter() {
            if loose.contains_key(&entry.id())
                && let Ok(name) = entry.name()
            {
                names.entry(entry.id()).or_insert_with(|| name.to_string());
            }
        }
    }
    Ok(names)
}

/// The object ids that a pack index (version 2) lists; `None` for a file that
/// is not one.
fn index_ids(idx: &[u8]) -> Option<HashSet<Oid>> {
    const HEAD: usize = 8 + 256 * 4;
    if idx.get(..8)? != b"\xfftOc\0\0\0\x02" {
        return None;
    }
    let count = u32::from_be_bytes(idx.get(HEAD - 4..HEAD)?.try_into().ok()?) as usize;
    let ids = idx.get(HEAD..HEAD + count * 20)?;
    ids.chunks_exact(20)
        .map(|b| Oid::from_bytes(b).ok())
        .collect()
}

/// An error of the file `path` as libgit2's errors are, with its name.
fn io_error(path: &Path, e: std::io::Error) -> git2::Error {
    git2::Error::from_str(&format!("{}: {e}", path.display()))
}

/// The path of a loose object.
fn loose_path(objects: &Path, id: Oid) -> PathBuf {
    let hex = id.to_string();
    objects.join(&hex[..2]).join(&hex[2..])
}

/// Removes the files of `dir` whose names begin with one of `prefixes` and that
/// are older than `age`: temporary files whose writer was killed.
fn remove_stale_files(dir: &Path, prefixes: &[&str], age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|old| old > age);
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests;
