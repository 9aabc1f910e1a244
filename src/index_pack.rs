//! Keeping a fetched pack as a pack, as `git index-pack --fix-thin` does: the
//! deltas stay deltas, the bases that a thin pack leans on are appended to it
//! whole, and an index (`.idx`, version 2) is written beside it.
//!
//! A host many commits behind fetches as many versions of the unified file,
//! each a small delta on the one before. Written loose, every version would be
//! compressed again; libgit2's indexer keeps the deltas but hashes every object
//! with SHA-1DC, the collision-detecting SHA-1, about three times slower than
//! the CPU's SHA instructions that the `sha1` crate uses, and compresses the
//! bases it appends on one thread. Here the objects are hashed with `sha1`,
//! each base is compressed on every core (`loose::zlib`), and of the
//! versions only about two are in memory at a time ([`crate::unpack::resolve`]).
//!
//! The index (git's `gitformat-pack`): a magic and version 2; a fan-out table
//! of 256 counts; the sorted object ids; their CRC-32s; their offsets (31 bits,
//! or an index into a table of 64-bit offsets); the pack's checksum; the
//! index's own checksum.

use std::borrow::Cow;
use std::io;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid};
use sha1::{Digest, Sha1};

use crate::unpack::{self, HEADER_BYTES};

const TRAILER_BYTES: usize = 20;
/// Offsets from this one on go to the index's table of 64-bit offsets.
const LARGE_OFFSET: u64 = 1 << 31;

/// Why a fetched pack was not kept.
#[derive(Debug)]
pub enum KeepError {
    /// The pack itself is wrong.
    Bad(String),
    /// It could not be written.
    Write(io::Error),
}

/// The pack and index files written, in `pack_dir`.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept {
    pub pack: PathBuf,
    pub index: PathBuf,
    /// How many objects the pack holds, the appended bases included.
    pub objects: usize,
    /// How many bases were appended: those of the deltas that lean on objects of
    /// this repository.
    pub appended: usize,
}

/// Keeps `pack` in `pack_dir` (a repository's `objects/pack`) with an index, the
/// bases that its deltas lean on appended from `local` (which gives the kind and
/// data of an object of this repository); each object made whole is handed to
/// `found` as [`unpack::resolve`] hands it. The pack goes in place before its
/// index, each by a rename after being synced to disk: a reader finds a pack
/// by its index, so it sees the whole pack or none (`loose::write_once`).
/// A pack already there (the same fetch by a concurrent run) is left as it is.
pub fn keep(
    pack: &[u8],
    pack_dir: &Path,
    local: impl FnMut(Oid) -> Option<(ObjectType, Vec<u8>)>,
    mut found: impl FnMut(Oid, ObjectType, Cow<'_, [u8]>),
) -> Result<Kept, KeepError> {
    let resolved = unpack::resolve(pack, local, |_, id, kind, data| found(id, kind, data))
        .map_err(KeepError::Bad)?;
    let body = &pack[..pack.len() - TRAILER_BYTES];
    let mut rows: Vec<Row> = resolved
        .entries
        .iter()
        .map(|e| Row {
            id: e.id,
            crc: crc32fast::hash(&body[e.offset..e.end]),
            offset: e.offset as u64,
        })
        .collect();
    // A base that the pack turns out to hold as well is not appended again.
    let held: std::collections::HashSet<Oid> = rows.iter().map(|r| r.id).collect();
    let bases: Vec<_> = resolved
        .thin_bases
        .iter()
        .filter(|b| !held.contains(&b.id))
        .collect();
    let appended: Vec<Vec<u8>> = bases
        .iter()
        .map(|b| whole_entry(b.kind, &b.data))
        .collect::<io::Result<_>>()
        .map_err(KeepError::Write)?;
    let objects = rows.len() + appended.len();
    let count = u32::try_from(objects)
        .map_err(|_| KeepError::Bad(format!("{objects} objects are too many for a pack")))?;

    // The pack: its header with the new count, its entries, the bases, a new checksum.
    let mut sha = Sha1::new();
    let mut header = body[..HEADER_BYTES].to_vec();
    header[8..12].copy_from_slice(&count.to_be_bytes());
    sha.update(&header);
    sha.update(&body[HEADER_BYTES..]);
    let mut at = body.len() as u64;
    for (base, entry) in bases.iter().zip(&appended) {
        sha.update(entry);
        rows.push(Row {
            id: base.id,
            crc: crc32fast::hash(entry),
            offset: at,
        });
        at += entry.len() as u64;
    }
    let checksum: [u8; 20] = sha.finalize().into();
    let index = index_bytes(&mut rows, &checksum).map_err(KeepError::Bad)?;

    let name = format!("pack-{}", Oid::from_bytes(&checksum).expect("20 bytes"));
    let pack_path = pack_dir.join(format!("{name}.pack"));
    let index_path = pack_dir.join(format!("{name}.idx"));
    let write = |path: &Path, parts: &[&[u8]]| crate::loose::write_once(path, "tmp_pack_", parts);
    let mut parts: Vec<&[u8]> = vec![&header, &body[HEADER_BYTES..]];
    parts.extend(appended.iter().map(Vec::as_slice));
    parts.push(&checksum);
    let made = write(&pack_path, &parts).map_err(KeepError::Write)?;
    if let Err(e) = write(&index_path, &[&index]) {
        // A pack without its index is never read: it would only take room, on
        // what may be a full disk.
        if made {
            let _ = std::fs::remove_file(&pack_path);
        }
        return Err(KeepError::Write(e));
    }
    Ok(Kept {
        pack: pack_path,
        index: index_path,
        objects,
        appended: appended.len(),
    })
}

/// One object in the index.
struct Row {
    id: Oid,
    crc: u32,
    offset: u64,
}

/// A pack entry of the whole object `data` of `kind`: its type and size, then
/// its zlib stream.
fn whole_entry(kind: ObjectType, data: &[u8]) -> io::Result<Vec<u8>> {
    let code = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        ObjectType::Tag => 4,
        other => return Err(io::Error::other(format!("cannot pack a {other} object"))),
    };
    let mut entry = crate::pack::object_header(code, data.len());
    entry.extend(crate::loose::zlib(&[], data)?);
    Ok(entry)
}

/// The index of version 2 of the pack whose checksum is `checksum` and whose
/// objects are `rows` (sorted here by id).
fn index_bytes(rows: &mut [Row], checksum: &[u8; 20]) -> Result<Vec<u8>, String> {
    rows.sort_unstable_by_key(|r| r.id);
    if let Some(w) = rows.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(format!("the pack holds the object {} twice", w[0].id));
    }
    let mut out = Vec::with_capacity(8 + 256 * 4 + rows.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for r in rows.iter() {
        fanout[usize::from(r.id.as_bytes()[0])] += 1;
    }
    let mut total = 0;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for r in rows.iter() {
        out.extend_from_slice(r.id.as_bytes());
    }
    for r in rows.iter() {
        out.extend_from_slice(&r.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for r in rows.iter() {
        let small = if r.offset < LARGE_OFFSET {
            r.offset as u32
        } else {
            large.push(r.offset);
            (LARGE_OFFSET as u32) | (large.len() as u32 - 1)
        };
        out.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(checksum);
    let own: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&own);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::{git, history, pack_of, stored, thin_pack};

    /// A thin pack of `history`'s last version over its `since`-th, and a bare
    /// repository that holds the history up to `since` and nothing after it: as
    /// a fetch finds it.
    fn thin_fetch(
        versions: usize,
        since: usize,
    ) -> (tempfile::TempDir, Vec<u8>, PathBuf, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir(&source).unwrap();
        let ids = history(&source, versions);
        git(&source, &["branch", "old", &ids[since]], None);
        let pack = thin_pack(&source, &ids[versions - 1], &ids[since]);
        let here = dir.path().join("here.git");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                // Not a copy of the source's objects: only the history up to `since`.
                "--no-local",
                "--single-branch",
                "-b",
                "old",
                "source",
                "here.git",
            ],
            None,
        );
        (dir, pack, here, ids)
    }

    fn keep_in(here: &Path, pack: &[u8]) -> Kept {
        let repo = git2::Repository::open(here).unwrap();
        keep(
            pack,
            &here.join("objects/pack"),
            |id| stored(&repo, id),
            |_, _, _| {},
        )
        .unwrap()
    }

    #[test]
    fn a_kept_thin_pack_has_the_index_that_git_index_pack_makes_of_it() {
        let (_dir, pack, here, ids) = thin_fetch(9, 2);
        let kept = keep_in(&here, &pack);
        assert!(kept.appended > 0, "the pack was not thin: no base appended");
        let ours = std::fs::read(&kept.index).unwrap();
        let theirs = here.join("theirs.idx");
        git(
            &here,
            &[
                "index-pack",
                "-o",
                theirs.to_str().unwrap(),
                kept.pack.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            ours == std::fs::read(&theirs).unwrap(),
            "the index differs from git's"
        );
        let verified = git(
            &here,
            &["verify-pack", "-v", kept.index.to_str().unwrap()],
            None,
        );
        let listed = String::from_utf8(verified).unwrap();
        assert!(
            listed.contains(&format!("{}: ok", kept.pack.display())),
            "{listed}"
        );
        // Every object of the new history is there, and the repository is whole.
        git(&here, &["update-ref", "refs/heads/new", &ids[8]], None);
        git(&here, &["fsck", "--strict", "--no-dangling"], None);
        let all = git(&here, &["rev-list", "--objects", "new", "^old"], None);
        let repo = git2::Repository::open(&here).unwrap();
        for line in String::from_utf8(all).unwrap().lines() {
            let id = Oid::from_str(line.split(' ').next().unwrap()).unwrap();
            assert!(stored(&repo, id).is_some(), "{id} is missing");
        }
    }

    #[test]
    fn keeping_a_pack_twice_leaves_one_pack_and_no_temporary_file() {
        let (_dir, pack, here, _) = thin_fetch(5, 1);
        let first = keep_in(&here, &pack);
        let second = keep_in(&here, &pack);
        assert_eq!(first, second);
        let names: Vec<String> = std::fs::read_dir(here.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("pack-") || n.contains(&hex_of(&first.pack)))
            .collect();
        // The clone's own pack, and this one: its .pack and .idx.
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("pack-")), "{names:?}");
    }

    fn hex_of(pack: &Path) -> String {
        let name = pack.file_stem().unwrap().to_string_lossy();
        name.trim_start_matches("pack-").to_string()
    }

    #[test]
    fn a_pack_that_cannot_be_resolved_or_written_is_refused_and_nothing_is_left() {
        let (_dir, pack, here, _) = thin_fetch(5, 1);
        let pack_dir = here.join("objects/pack");
        let before = std::fs::read_dir(&pack_dir).unwrap().count();
        // Its bases are not here.
        match keep(&pack, &pack_dir, |_| None, |_, _, _| {}) {
            Err(KeepError::Bad(m)) => assert!(m.contains("neither in the pack nor here"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut flipped = pack.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        let repo = git2::Repository::open(&here).unwrap();
        match keep(&flipped, &pack_dir, |id| stored(&repo, id), |_, _, _| {}) {
            Err(KeepError::Bad(m)) => assert!(m.contains("checksum"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(&pack_dir).unwrap().count(), before);
        // A folder that is a file.
        let file = here.join("a-file");
        std::fs::write(&file, b"").unwrap();
        match keep(&pack, &file, |id| stored(&repo, id), |_, _, _| {}) {
            Err(KeepError::Write(_)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_base_that_is_both_here_and_in_the_pack_is_not_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let (y, x, t) = (
            &b"line 1\nline 2\n"[..],
            &b"line 1\nline 2\nline 3\n"[..],
            &b"line 3\n"[..],
        );
        let y_id = repo.blob(y).unwrap();
        let x_id = repo.blob(x).unwrap();
        // The pack holds x as a delta on y, and t as a delta on x, named first:
        // t waits on x, x on y, and only then is x asked of the repository.
        let (d1, d2) = (crate::pack::delta(x, t), crate::pack::delta(y, x));
        let pack = pack_of(&[
            (7, Some(x_id), d1.len(), &d1),
            (7, Some(y_id), d2.len(), &d2),
        ]);
        let pack_dir = dir.path().join("objects/pack");
        let mut lent = Vec::new();
        let kept = keep(
            &pack,
            &pack_dir,
            |id| stored(&repo, id),
            |id, _, data| {
                if matches!(data, Cow::Borrowed(_)) {
                    lent.push(id);
                }
            },
        )
        .unwrap();
        assert_eq!((kept.objects, kept.appended), (3, 1));
        // t was made from x as this repository has it: x waits for no delta.
        assert!(lent.is_empty(), "{lent:?}");
        let theirs = dir.path().join("theirs.idx");
        git(
            dir.path(),
            &[
                "index-pack",
                "-o",
                theirs.to_str().unwrap(),
                kept.pack.to_str().unwrap(),
            ],
            None,
        );
        assert!(std::fs::read(&kept.index).unwrap() == std::fs::read(&theirs).unwrap());
        let t_id = crate::loose::blob_id(t);
        let shown = git(dir.path(), &["cat-file", "-p", &t_id.to_string()], None);
        assert_eq!(shown, t);
    }

    #[test]
    fn a_pack_whose_index_cannot_be_written_is_taken_away_again() {
        let (_dir, pack, here, _) = thin_fetch(5, 1);
        let pack_dir = here.join("objects/pack");
        // The names it will take, from a keep into a scratch folder.
        let scratch = here.join("scratch");
        let repo = git2::Repository::open(&here).unwrap();
        let named = keep(&pack, &scratch, |id| stored(&repo, id), |_, _, _| {}).unwrap();
        let index = pack_dir.join(named.index.file_name().unwrap());
        let packed = pack_dir.join(named.pack.file_name().unwrap());
        // A folder where the index goes: it cannot be written there.
        std::fs::create_dir(&index).unwrap();
        std::fs::write(index.join("x"), b"x").unwrap();
        match keep(&pack, &pack_dir, |id| stored(&repo, id), |_, _, _| {}) {
            Err(KeepError::Write(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(!packed.exists(), "a pack without its index was left");
        let left: Vec<_> = std::fs::read_dir(&pack_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tmp_"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn offsets_past_two_gibibytes_go_to_the_table_of_large_offsets() {
        let id = |b: u8| Oid::from_bytes(&[b; 20]).unwrap();
        let mut rows = vec![
            Row {
                id: id(3),
                crc: 7,
                offset: (5 << 32) + 9,
            },
            Row {
                id: id(1),
                crc: 8,
                offset: 12,
            },
        ];
        let idx = index_bytes(&mut rows, &[0xaa; 20]).unwrap();
        let at = |pos: usize, n: usize| &idx[pos..pos + n];
        let names = 8 + 256 * 4;
        assert_eq!(at(8 + 4, 4), 1u32.to_be_bytes(), "fan-out of 0x01");
        assert_eq!(at(8 + 255 * 4, 4), 2u32.to_be_bytes(), "fan-out total");
        assert_eq!(at(names, 20), id(1).as_bytes());
        let crcs = names + 40;
        assert_eq!(at(crcs, 4), 8u32.to_be_bytes());
        let offsets = crcs + 8;
        assert_eq!(at(offsets, 4), 12u32.to_be_bytes());
        assert_eq!(at(offsets + 4, 4), 0x8000_0000u32.to_be_bytes());
        assert_eq!(at(offsets + 8, 8), ((5u64 << 32) + 9).to_be_bytes());
        assert_eq!(at(offsets + 16, 20), [0xaa; 20]);
        assert_eq!(idx.len(), offsets + 16 + 40);
        assert_eq!(
            &idx[idx.len() - 20..],
            Sha1::digest(&idx[..idx.len() - 20]).as_slice()
        );
        // The same object twice is refused.
        let mut twice = vec![
            Row {
                id: id(2),
                crc: 0,
                offset: 12,
            },
            Row {
                id: id(2),
                crc: 0,
                offset: 40,
            },
        ];
        assert!(
            index_bytes(&mut twice, &[0; 20])
                .unwrap_err()
                .contains("twice")
        );
    }
}
