//! Pack files for a push, written here rather than by libgit2, which compresses
//! every object at zlib's default level and never sends a delta against an
//! object the receiver already has. A backup changes a few lines of files of
//! megabytes, so a blob goes as a delta against the file of the same name in
//! the remote's tip (a "thin" pack) where the receiver takes those, and whole
//! objects go at zlib's fastest level.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use git2::{ObjectType, Oid, Repository};
use sha1::{Digest, Sha1};

use crate::git::Files;

/// File contents the caller already holds, which save reading (and inflating)
/// them back from the object database: the files of the tip being pushed and of
/// the receiver's tip, by path.
#[derive(Default, Clone, Copy)]
pub struct Known<'a> {
    pub new: Option<&'a Files>,
    pub old: Option<&'a Files>,
}

/// A delta is sent only when it is at most this fraction of its target.
const DELTA_WORTH: usize = 2;
/// The most bytes one copy instruction of a delta takes from its base.
const MAX_COPY: usize = 0x10000;
/// The most bytes one insert instruction of a delta carries.
const MAX_INSERT: usize = 0x7f;

/// Why a pack could not be written.
#[derive(Debug)]
pub enum PackError {
    /// Reading the objects from this repository.
    Git(git2::Error),
    /// Writing the pack out.
    Io(io::Error),
}

impl From<git2::Error> for PackError {
    fn from(e: git2::Error) -> Self {
        PackError::Git(e)
    }
}

/// One object of a pack: whole, or a delta against `base`.
struct Item<'a> {
    kind: ObjectType,
    data: Cow<'a, [u8]>,
    base: Option<Oid>,
}

/// The objects that `new` has and `old` (the receiver's tip) lacks, as a pack
/// written to `out`. With `thin`, blobs go as deltas against the blob of the
/// same path in `old`'s tree where that is much smaller. Returns how many
/// objects went as deltas.
pub fn write_pack(
    repo: &Repository,
    new: Oid,
    old: Option<Oid>,
    thin: bool,
    known: Known<'_>,
    out: &mut impl Write,
) -> Result<usize, PackError> {
    let odb = repo.odb()?;
    // What the receiver has: every object of its tip's tree, and the blob at
    // each path there, a delta base.
    let mut theirs: HashSet<Oid> = HashSet::new();
    let mut bases: HashMap<String, Oid> = HashMap::new();
    if let Some(old) = old {
        let tree = repo.find_commit(old)?.tree()?;
        theirs.insert(tree.id());
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            theirs.insert(entry.id());
            if entry.kind() == Some(ObjectType::Blob) {
                bases.insert(format!("{dir}{}", entry.name().unwrap_or("")), entry.id());
            }
            git2::TreeWalkResult::Ok
        })?;
    }
    let mut walk = repo.revwalk()?;
    walk.push(new)?;
    if let Some(old) = old {
        walk.hide(old)?;
    }
    let mut items = Vec::new();
    let mut deltas = 0;
    for commit in walk {
        let commit = repo.find_commit(commit?)?;
        items.push(whole(&odb, commit.id())?);
        let tree = commit.tree()?;
        if !theirs.insert(tree.id()) {
            continue;
        }
        items.push(whole(&odb, tree.id())?);
        let mut wanted: Vec<(String, Oid, ObjectType)> = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let kind = entry.kind();
            // A submodule's commit is not ours to send.
            if kind == Some(ObjectType::Commit) {
                return git2::TreeWalkResult::Skip;
            }
            if !theirs.insert(entry.id()) {
                // The receiver has it, and so everything under it.
                return git2::TreeWalkResult::Skip;
            }
            if let Some(kind) = kind {
                let path = format!("{dir}{}", entry.name().unwrap_or(""));
                wanted.push((path, entry.id(), kind));
            }
            git2::TreeWalkResult::Ok
        })?;
        let at_tip = commit.id() == new;
        for (path, id, kind) in wanted {
            let held = known.new.filter(|_| at_tip && kind == ObjectType::Blob);
            let mut item = match held.and_then(|f| f.get(&path)) {
                Some(bytes) => Item {
                    kind,
                    data: Cow::Borrowed(bytes),
                    base: None,
                },
                None => whole(&odb, id)?,
            };
            if thin && kind == ObjectType::Blob {
                if let Some(d) = as_delta(&odb, &item.data, &path, &bases, known)? {
                    item = d;
                    deltas += 1;
                }
            }
            items.push(item);
        }
    }
    write_items(&items, out).map_err(PackError::Io)?;
    Ok(deltas)
}

/// The pack of a commit made in memory on the receiver's tip `old` (its only
/// parent): the commit, its tree and its changed files, the files as deltas
/// against those of the same name in `old` with `thin`, as [`write_pack`] sends
/// them. Returns how many objects went as deltas.
pub fn write_staged_pack(
    repo: &Repository,
    staged: &crate::git::Staged<'_>,
    old: Option<Oid>,
    thin: bool,
    known: Known<'_>,
    out: &mut impl Write,
) -> Result<usize, PackError> {
    let odb = repo.odb()?;
    let mut bases: HashMap<String, Oid> = HashMap::new();
    if let Some(old) = old {
        for entry in repo.find_commit(old)?.tree()?.iter() {
            if let (Some(ObjectType::Blob), Ok(name)) = (entry.kind(), entry.name()) {
                bases.insert(name.to_string(), entry.id());
            }
        }
    }
    let mut items = Vec::new();
    let mut deltas = 0;
    for (kind, _, data, name) in staged.objects() {
        let item = Item {
            kind,
            data: Cow::Borrowed(data),
            base: None,
        };
        let delta = match name.filter(|_| thin) {
            Some(name) => as_delta(&odb, data, name, &bases, known)?,
            None => None,
        };
        deltas += usize::from(delta.is_some());
        items.push(delta.unwrap_or(item));
    }
    write_items(&items, out).map_err(PackError::Io)?;
    Ok(deltas)
}

/// `data`, the file at `path`, as a delta against the receiver's file there,
/// where there is one and the delta is much smaller.
fn as_delta(
    odb: &git2::Odb<'_>,
    data: &[u8],
    path: &str,
    bases: &HashMap<String, Oid>,
    known: Known<'_>,
) -> Result<Option<Item<'static>>, git2::Error> {
    let Some(&base) = bases.get(path) else {
        return Ok(None);
    };
    let read;
    let base_data = match known.old.and_then(|f| f.get(path)) {
        Some(bytes) => bytes.as_slice(),
        None => {
            read = odb.read(base)?;
            read.data()
        }
    };
    let d = delta(base_data, data);
    Ok((d.len() * DELTA_WORTH <= data.len()).then_some(Item {
        kind: ObjectType::Blob,
        data: Cow::Owned(d),
        base: Some(base),
    }))
}

fn whole(odb: &git2::Odb<'_>, id: Oid) -> Result<Item<'static>, git2::Error> {
    let object = odb.read(id)?;
    Ok(Item {
        kind: object.kind(),
        data: Cow::Owned(object.data().to_vec()),
        base: None,
    })
}

/// The pack format, version 2: a header, the objects, the SHA-1 of it all.
fn write_items(items: &[Item<'_>], out: &mut impl Write) -> io::Result<()> {
    let mut out = Hashing {
        inner: out,
        sha: Sha1::new(),
    };
    out.write_all(b"PACK")?;
    out.write_all(&2u32.to_be_bytes())?;
    let count = u32::try_from(items.len()).map_err(io::Error::other)?;
    out.write_all(&count.to_be_bytes())?;
    for item in items {
        let kind = match (item.base, item.kind) {
            (Some(_), _) => 7,
            (None, ObjectType::Commit) => 1,
            (None, ObjectType::Tree) => 2,
            (None, ObjectType::Blob) => 3,
            (None, ObjectType::Tag) => 4,
            (None, other) => {
                return Err(io::Error::other(format!("cannot pack a {other} object")));
            }
        };
        out.write_all(&object_header(kind, item.data.len()))?;
        if let Some(base) = item.base {
            out.write_all(base.as_bytes())?;
        }
        let mut z = ZlibEncoder::new(&mut out, Compression::fast());
        z.write_all(&item.data)?;
        z.finish()?;
    }
    let sum = out.sha.finalize();
    out.inner.write_all(&sum)
}

/// An object's type and size: 3 bits of type and 4 of size in the first byte,
/// 7 more bits of size in each next one.
pub(crate) fn object_header(kind: u8, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    let mut rest = size >> 4;
    while rest > 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// A writer that hashes what passes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    sha: Sha1,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A git delta that makes `target` from `base`: the lines of `target` that
/// `base` has are copied from it, the others inserted. Backup files hold one
/// entry per line, so an edit costs about its own lines.
pub fn delta(base: &[u8], target: &[u8]) -> Vec<u8> {
    // Keyed with the merge's fast hash: the base is megabytes of lines.
    let mut index: HashMap<&[u8], usize, crate::crdt::IdHasher> =
        HashMap::with_capacity_and_hasher(base.len() / 256 + 1, Default::default());
    let mut at = 0;
    for line in base.split_inclusive(|&b| b == b'\n') {
        index.entry(line).or_insert(at);
        at += line.len();
    }
    let mut out = Vec::new();
    varint(base.len(), &mut out);
    varint(target.len(), &mut out);
    // The copy being built (offset in base, length) and the bytes to insert.
    let mut copy: Option<(usize, usize)> = None;
    let mut insert: &[u8] = &[];
    let mut insert_start = 0;
    let mut pos = 0;
    for line in target.split_inclusive(|&b| b == b'\n') {
        let continues = copy.is_some_and(|(off, len)| base[off + len..].starts_with(line));
        let found = if continues {
            copy.map(|(off, len)| off + len)
        } else {
            index.get(line).copied()
        };
        match found {
            Some(off) => {
                if !insert.is_empty() {
                    emit_insert(insert, &mut out);
                    insert = &[];
                }
                copy = match copy {
                    Some((o, len)) if o + len == off => Some((o, len + line.len())),
                    Some(c) => {
                        emit_copy(c, &mut out);
                        Some((off, line.len()))
                    }
                    None => Some((off, line.len())),
                };
            }
            None => {
                if let Some(c) = copy.take() {
                    emit_copy(c, &mut out);
                }
                if insert.is_empty() {
                    insert_start = pos;
                }
                insert = &target[insert_start..pos + line.len()];
            }
        }
        pos += line.len();
    }
    if let Some(c) = copy {
        emit_copy(c, &mut out);
    }
    emit_insert(insert, &mut out);
    out
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn emit_insert(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(MAX_INSERT) {
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

/// Copy instructions: a command byte saying which bytes of the offset (4) and
/// the size (3) follow, zero bytes left out.
fn emit_copy((mut off, mut len): (usize, usize), out: &mut Vec<u8>) {
    while len > 0 {
        let n = len.min(MAX_COPY);
        let mut cmd = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for (i, shift) in [0, 8, 16, 24].into_iter().enumerate() {
            let b = ((off >> shift) & 0xff) as u8;
            if b != 0 {
                cmd |= 1 << i;
                args.push(b);
            }
        }
        for (i, shift) in [0, 8, 16].into_iter().enumerate() {
            let b = ((n >> shift) & 0xff) as u8;
            if b != 0 {
                cmd |= 0x10 << i;
                args.push(b);
            }
        }
        out.push(cmd);
        out.extend_from_slice(&args);
        off += n;
        len -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A delta read back as a fetch reads one ([`crate::unpack::apply`]).
    fn apply(base: &[u8], delta: &[u8]) -> Vec<u8> {
        crate::unpack::apply(base, delta).expect("a delta this writer made applies")
    }

    fn lines() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec!["a\n", "bb\n", "{\"x\":1}\n", "", "\n", "c"]),
            0..40,
        )
        .prop_map(|v| v.concat().into_bytes())
    }

    proptest! {
        #[test]
        fn prop_delta_applied_to_its_base_gives_the_target(base in lines(), target in lines()) {
            prop_assert_eq!(apply(&base, &delta(&base, &target)), target);
        }
    }

    #[test]
    fn a_delta_of_one_changed_line_is_small_and_exact() {
        let base: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{{\"name\":\"E{i}\",\"observations\":[\"x\"]}}\n").into_bytes())
            .collect();
        let mut target = base.clone();
        let at = base.len() / 2;
        let end = at + target[at..].iter().position(|&b| b == b'\n').unwrap();
        target.splice(at..end, b"changed".iter().copied());
        let d = delta(&base, &target);
        assert_eq!(apply(&base, &d), target);
        assert!(d.len() < 300, "a delta of {} bytes", d.len());
    }

    #[test]
    fn long_copies_are_split_and_offsets_above_16_mib_are_encoded() {
        let base: Vec<u8> = (0..2_000_000u32)
            .flat_map(|i| format!("{i:08}\n").into_bytes())
            .collect();
        assert!(base.len() > 1 << 24);
        let mut target = base[base.len() - 900_000..].to_vec();
        target.extend_from_slice(b"new\n");
        target.extend_from_slice(&base[..90]);
        let d = delta(&base, &target);
        assert_eq!(apply(&base, &d), target);
        assert!(d.len() < 100, "a delta of {} bytes", d.len());
    }

    #[test]
    fn object_headers_carry_type_and_size() {
        assert_eq!(object_header(3, 5), vec![0x35]);
        assert_eq!(object_header(1, 16), vec![0x90, 0x01]);
        assert_eq!(object_header(7, 0x1234), vec![0xf4, 0xa3, 0x02]);
    }
}
