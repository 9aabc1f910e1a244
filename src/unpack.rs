//! Reading a pack, as a fetch receives it, into whole objects: each object
//! inflated, each delta applied to its base (in the pack, or an object this
//! repository has: a "thin" pack), each id hashed. A small pack's objects are
//! then written loose ([`read_pack`]); a larger one is kept as it came, with
//! the ids and bases found here ([`resolve`], for [`crate::index_pack`]).
//! libgit2 would keep every pack, and first append to it every base it lacks,
//! compressed at zlib's default level: for a fetch that brings one new version
//! of a unified file of megabytes, most of that fetch's time.
//!
//! The format (git's `gitformat-pack`): `PACK`, a version, an object count;
//! each object a type and size header, for a delta its base (an offset back in
//! the pack, or an object id), then its zlib stream; the SHA-1 of it all.

use std::borrow::Cow;
use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress, Status};
use git2::{ObjectType, Oid};
use sha1::{Digest, Sha1};

/// The bytes of a pack's header: `PACK`, version, object count.
pub const HEADER_BYTES: usize = 12;
const TRAILER_BYTES: usize = 20;
const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// One object of a pack, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: Oid,
    pub kind: ObjectType,
    pub data: Vec<u8>,
}

/// How many objects the pack whose header is `header` holds; none when it is
/// not the header of a pack of version 2 or 3.
pub fn object_count(header: &[u8]) -> Option<u32> {
    if header.len() < HEADER_BYTES || &header[..4] != b"PACK" {
        return None;
    }
    let version = u32::from_be_bytes(header[4..8].try_into().ok()?);
    if version != 2 && version != 3 {
        return None;
    }
    Some(u32::from_be_bytes(header[8..12].try_into().ok()?))
}

/// Where an object's base is.
enum Base {
    /// The object starting at this offset of the pack.
    At(usize),
    /// The object of this id, in the pack or in the repository.
    Id(Oid),
}

/// One entry as read: a whole object or a delta.
struct Raw {
    offset: usize,
    /// Where the next entry starts.
    end: usize,
    kind: Option<ObjectType>,
    base: Option<Base>,
    data: Vec<u8>,
}

/// Where an entry of a pack lies and what it is, once resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub id: Oid,
    pub kind: ObjectType,
    /// Where its bytes start in the pack, and where the next entry's start.
    pub offset: usize,
    pub end: usize,
}

/// A pack resolved: its entries in the pack's order, and the objects of this
/// repository that its deltas lean on ("thin" bases), in the order first asked.
pub struct Resolved {
    pub entries: Vec<Placed>,
    pub thin_bases: Vec<Object>,
}

/// Every object of `pack`, whole, in the pack's order. `local` gives the kind and
/// data of an object this repository has, the base of a delta the pack does
/// not hold. Checks the pack's checksum, every size and every delta.
pub fn read_pack(
    pack: &[u8],
    local: impl FnMut(Oid) -> Option<(ObjectType, Vec<u8>)>,
) -> Result<Vec<Object>, String> {
    let mut objects: Vec<Option<Object>> = Vec::new();
    resolve(pack, local, |i, id, kind, data| {
        if objects.len() <= i {
            objects.resize(i + 1, None);
        }
        objects[i] = Some(Object {
            id,
            kind,
            data: data.into_owned(),
        });
    })?;
    Ok(objects
        .into_iter()
        .map(|o| o.expect("all resolved"))
        .collect())
}

/// Resolves every object of `pack`, handing each to `found` with its entry's
/// index, its id, kind and data, the data by value once no delta of the pack
/// needs it as a base: a fetch of many versions of a large file holds about
/// two of them at a time, not all. `local` as for [`read_pack`].
pub fn resolve(
    pack: &[u8],
    mut local: impl FnMut(Oid) -> Option<(ObjectType, Vec<u8>)>,
    mut found: impl FnMut(usize, Oid, ObjectType, Cow<'_, [u8]>),
) -> Result<Resolved, String> {
    let count = object_count(pack).ok_or("not a pack of version 2 or 3")?;
    if pack.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err("the pack ends before its checksum".into());
    }
    let (body, trailer) = pack.split_at(pack.len() - TRAILER_BYTES);
    if Sha1::digest(body).as_slice() != trailer {
        return Err("the pack's checksum does not match its contents".into());
    }
    let mut raws = Vec::with_capacity(count as usize);
    let mut at = HEADER_BYTES;
    for _ in 0..count {
        let raw = read_entry(body, at)?;
        at = raw.end;
        raws.push(raw);
    }
    if at != body.len() {
        return Err(format!("{} bytes after the last object", body.len() - at));
    }

    // Resolved in rounds: a base by offset always comes earlier, a base by id
    // may come anywhere in the pack, or be one the repository has.
    let by_offset: HashMap<usize, usize> = raws
        .iter()
        .enumerate()
        .map(|(i, r)| (r.offset, i))
        .collect();
    // How many deltas still wait on each entry (by offset) and each id.
    let mut waiting_at = vec![0usize; raws.len()];
    let mut waiting_for: HashMap<Oid, usize> = HashMap::new();
    for r in &raws {
        match &r.base {
            Some(Base::At(offset)) => {
                let j = *by_offset
                    .get(offset)
                    .ok_or_else(|| format!("the delta at {} has no base at {offset}", r.offset))?;
                waiting_at[j] += 1;
            }
            Some(Base::Id(id)) => *waiting_for.entry(*id).or_default() += 1,
            None => {}
        }
    }
    let mut placed: Vec<Option<Placed>> = vec![None; raws.len()];
    // The data of resolved entries that deltas still wait on.
    let mut kept: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut by_id: HashMap<Oid, usize> = HashMap::new();
    let mut locals: HashMap<Oid, usize> = HashMap::new();
    let mut thin_bases: Vec<Object> = Vec::new();
    let mut absent: std::collections::HashSet<Oid> = Default::default();
    let mut left = raws.len();
    while left > 0 {
        let mut progressed = false;
        for i in 0..raws.len() {
            if placed[i].is_some() {
                continue;
            }
            // The base: an entry of the pack, or one of this repository's objects.
            let from = match &raws[i].base {
                None => None,
                Some(Base::At(offset)) => Some(From::Entry(by_offset[offset])),
                Some(Base::Id(id)) => match (by_id.get(id), locals.get(id)) {
                    (Some(&j), _) => Some(From::Entry(j)),
                    (None, Some(&t)) => Some(From::Thin(t)),
                    (None, None) => continue,
                },
            };
            let (kind, data) = match from {
                None => match raws[i].kind {
                    Some(k) => (k, std::mem::take(&mut raws[i].data)),
                    None => return Err(format!("the entry at {} has no kind", raws[i].offset)),
                },
                Some(From::Entry(j)) => {
                    let Some(b) = placed[j] else { continue };
                    let base = kept
                        .get(&j)
                        .ok_or_else(|| format!("the base at {} was let go early", b.offset))?;
                    let made = apply(base, &std::mem::take(&mut raws[i].data))?;
                    release(&mut kept, &mut waiting_at, &mut waiting_for, j, b.id);
                    (b.kind, made)
                }
                Some(From::Thin(t)) => {
                    let base = &thin_bases[t];
                    let made = (
                        base.kind,
                        apply(&base.data, &std::mem::take(&mut raws[i].data))?,
                    );
                    // An entry of the pack with the same id need not wait for it.
                    if let Some(n) = waiting_for.get_mut(&base.id) {
                        *n = n.saturating_sub(1);
                    }
                    made
                }
            };
            let id = crate::loose::object_id(kind, &data);
            by_id.entry(id).or_insert(i);
            placed[i] = Some(Placed {
                id,
                kind,
                offset: raws[i].offset,
                end: raws[i].end,
            });
            let wanted = waiting_at[i] + waiting_for.get(&id).copied().unwrap_or(0);
            if wanted == 0 {
                found(i, id, kind, Cow::Owned(data));
            } else {
                found(i, id, kind, Cow::Borrowed(&data));
                kept.insert(i, data);
            }
            left -= 1;
            progressed = true;
        }
        if progressed || left == 0 {
            continue;
        }
        // What is left waits on bases that the pack does not hold.
        let mut asked = false;
        let mut missing = None;
        for (raw, p) in raws.iter().zip(&placed) {
            if let (Some(Base::Id(id)), None) = (&raw.base, p) {
                if by_id.contains_key(id) || locals.contains_key(id) || absent.contains(id) {
                    missing.get_or_insert(*id);
                    continue;
                }
                match local(*id) {
                    Some((kind, data)) => {
                        locals.insert(*id, thin_bases.len());
                        thin_bases.push(Object {
                            id: *id,
                            kind,
                            data,
                        });
                        asked = true;
                    }
                    None => {
                        absent.insert(*id);
                        missing.get_or_insert(*id);
                    }
                }
            }
        }
        if !asked {
            return Err(match missing {
                Some(id) => format!("the base {id} of a delta is neither in the pack nor here"),
                None => "a delta's base is never resolved".into(),
            });
        }
    }
    Ok(Resolved {
        entries: placed
            .into_iter()
            .map(|p| p.expect("all resolved"))
            .collect(),
        thin_bases,
    })
}

/// Where a delta's base is, once found.
enum From {
    /// The entry of this index.
    Entry(usize),
    /// The thin base of this index.
    Thin(usize),
}

/// One delta less waits on entry `j` (of id `id`): its data goes once none does.
fn release(
    kept: &mut HashMap<usize, Vec<u8>>,
    waiting_at: &mut [usize],
    waiting_for: &mut HashMap<Oid, usize>,
    j: usize,
    id: Oid,
) {
    // A delta names its base by offset or by id; either count goes down.
    if waiting_at[j] > 0 {
        waiting_at[j] -= 1;
    } else if let Some(n) = waiting_for.get_mut(&id) {
        *n = n.saturating_sub(1);
    }
    if waiting_at[j] == 0 && waiting_for.get(&id).is_none_or(|&n| n == 0) {
        kept.remove(&j);
    }
}

/// The entry at `at` of `body`, and where the next one starts.
fn read_entry(body: &[u8], at: usize) -> Result<Raw, String> {
    let short = || format!("the pack ends inside the object at {at}");
    let mut pos = at;
    let mut byte = *body.get(pos).ok_or_else(short)?;
    pos += 1;
    let type_code = (byte >> 4) & 7;
    let mut size = usize::from(byte & 0x0f);
    let mut shift = 4;
    while byte & 0x80 != 0 {
        byte = *body.get(pos).ok_or_else(short)?;
        pos += 1;
        if shift > 60 {
            return Err(format!("the size of the object at {at} is too large"));
        }
        size |= usize::from(byte & 0x7f) << shift;
        shift += 7;
    }
    let (kind, base) = match type_code {
        1 => (Some(ObjectType::Commit), None),
        2 => (Some(ObjectType::Tree), None),
        3 => (Some(ObjectType::Blob), None),
        4 => (Some(ObjectType::Tag), None),
        OFS_DELTA => {
            let mut c = *body.get(pos).ok_or_else(short)?;
            pos += 1;
            let mut back = usize::from(c & 0x7f);
            while c & 0x80 != 0 {
                c = *body.get(pos).ok_or_else(short)?;
                pos += 1;
                back = back
                    .checked_add(1)
                    .and_then(|b| b.checked_mul(128))
                    .ok_or_else(|| format!("the delta at {at} has a base offset too large"))?
                    | usize::from(c & 0x7f);
            }
            let base = at
                .checked_sub(back)
                .filter(|&b| back > 0 && b >= HEADER_BYTES)
                .ok_or_else(|| format!("the delta at {at} points before the pack"))?;
            (None, Some(Base::At(base)))
        }
        REF_DELTA => {
            let id = body.get(pos..pos + 20).ok_or_else(short)?;
            pos += 20;
            let id = Oid::from_bytes(id).map_err(|e| e.message().to_string())?;
            (None, Some(Base::Id(id)))
        }
        other => return Err(format!("the object at {at} has the unknown type {other}")),
    };
    let (data, used) =
        inflate(&body[pos..], size).map_err(|e| format!("the object at {at}: {e}"))?;
    Ok(Raw {
        offset: at,
        end: pos + used,
        kind,
        base,
        data,
    })
}

/// The `size` bytes of the zlib stream at the start of `input`, and the bytes
/// that stream took.
fn inflate(input: &[u8], size: usize) -> Result<(Vec<u8>, usize), String> {
    let mut z = Decompress::new(true);
    // The size is the server's word: room for what this input can inflate to at
    // most (deflate's limit is about 1032 to 1), never more.
    let mut out = Vec::with_capacity(size.min(input.len().saturating_mul(1032)));
    loop {
        let consumed = usize::try_from(z.total_in()).map_err(|e| e.to_string())?;
        // Room for one byte more than promised, to notice a stream that runs over.
        if out.capacity() == out.len() {
            out.reserve(1);
        }
        let status = z
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::None)
            .map_err(|e| format!("cannot inflate: {e}"))?;
        if out.len() > size {
            return Err(format!("it inflates to more than its size {size}"));
        }
        match status {
            Status::StreamEnd => break,
            Status::Ok => {}
            Status::BufError => {
                if usize::try_from(z.total_in()).map_err(|e| e.to_string())? == input.len() {
                    return Err("the pack ends inside its zlib stream".into());
                }
            }
        }
    }
    if out.len() != size {
        return Err(format!(
            "it inflates to {} bytes, not its size {size}",
            out.len()
        ));
    }
    let used = usize::try_from(z.total_in()).map_err(|e| e.to_string())?;
    Ok((out, used))
}

/// A size of a delta's header: little-endian groups of seven bits.
fn delta_size(delta: &[u8], pos: &mut usize) -> Result<usize, String> {
    let mut size = 0usize;
    let mut shift = 0;
    loop {
        let byte = *delta.get(*pos).ok_or("a delta ends inside its header")?;
        *pos += 1;
        if shift > 60 {
            return Err("a delta's size is too large".into());
        }
        size |= usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(size);
        }
    }
}

/// The object that `delta` makes of `base`: its copies from the base and its
/// inserts, checked against the sizes the delta states.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    let mut pos = 0;
    let base_size = delta_size(delta, &mut pos)?;
    if base_size != base.len() {
        return Err(format!(
            "a delta for a base of {base_size} bytes, given one of {}",
            base.len()
        ));
    }
    let size = delta_size(delta, &mut pos)?;
    // Room for about the base's size: the stated size is the sender's word, and
    // the checks below hold the delta to it.
    let mut out = Vec::with_capacity(size.min(base.len().saturating_add(delta.len())));
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset = 0usize;
            let mut len = 0usize;
            for (bit, shift) in [(0x01, 0), (0x02, 8), (0x04, 16), (0x08, 24)] {
                if op & bit != 0 {
                    offset |=
                        usize::from(*delta.get(pos).ok_or("a delta ends inside a copy")?) << shift;
                    pos += 1;
                }
            }
            for (bit, shift) in [(0x10, 0), (0x20, 8), (0x40, 16)] {
                if op & bit != 0 {
                    len |=
                        usize::from(*delta.get(pos).ok_or("a delta ends inside a copy")?) << shift;
                    pos += 1;
                }
            }
            if len == 0 {
                len = 0x10000;
            }
            let piece = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or("a delta copies from beyond its base")?;
            out.extend_from_slice(piece);
        } else if op != 0 {
            let piece = delta
                .get(pos..pos + usize::from(op))
                .ok_or("a delta ends inside an insert")?;
            out.extend_from_slice(piece);
            pos += usize::from(op);
        } else {
            return Err("a delta holds the reserved instruction 0".into());
        }
        if out.len() > size {
            return Err("a delta makes more than its stated size".into());
        }
    }
    if out.len() != size {
        return Err(format!(
            "a delta makes {} bytes, not its stated {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// The parents named in the commit object `data`.
pub fn commit_parents(data: &[u8]) -> Vec<Oid> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        if let Some(hex) = line.strip_prefix(b"parent ") {
            if let Some(id) = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| Oid::from_str(h).ok())
            {
                out.push(id);
            }
        }
    }
    out
}

/// `objects` in an order to write them in, so that no reader ever finds a
/// commit whose tree, files or parents are not there yet: everything but
/// commits first, then the commits, each after its parents.
pub fn write_order(objects: &[Object]) -> Vec<&Object> {
    let mut out: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind != ObjectType::Commit)
        .collect();
    let commits: HashMap<Oid, &Object> = objects
        .iter()
        .filter(|o| o.kind == ObjectType::Commit)
        .map(|o| (o.id, o))
        .collect();
    let mut placed: std::collections::HashSet<Oid> = Default::default();
    for o in objects.iter().filter(|o| o.kind == ObjectType::Commit) {
        // Depth first, parents before children, without recursion.
        let mut stack = vec![(o, false)];
        while let Some((c, expanded)) = stack.pop() {
            if placed.contains(&c.id) {
                continue;
            }
            if expanded {
                placed.insert(c.id);
                out.push(c);
                continue;
            }
            stack.push((c, true));
            for p in commit_parents(&c.data) {
                if let Some(parent) = commits.get(&p) {
                    if !placed.contains(&p) {
                        stack.push((parent, false));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    pub(crate) fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("git runs");
        if let Some(input) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?} failed");
        out.stdout
    }

    /// A repository with `versions` commits of a file of a few thousand lines,
    /// each changing a few of them, as a backup does; their ids, oldest first.
    pub(crate) fn history(dir: &Path, versions: usize) -> Vec<String> {
        git(dir, &["init", "-q", "-b", "main"], None);
        let mut lines: Vec<String> = (0..3000).map(|i| format!("{{\"n\":{i}}}")).collect();
        let mut ids = Vec::new();
        for v in 0..versions {
            for k in 0..3 {
                lines[(v * 37 + k * 911) % 3000] = format!("{{\"v\":{v},\"k\":{k}}}");
            }
            std::fs::write(dir.join("unified.json"), lines.join("\n")).unwrap();
            std::fs::write(dir.join(format!("host-{}.json", v % 2)), format!("{v}\n")).unwrap();
            git(dir, &["add", "-A"], None);
            git(dir, &["commit", "-q", "-m", &format!("v{v}")], None);
            let id = git(dir, &["rev-parse", "HEAD"], None);
            ids.push(String::from_utf8(id).unwrap().trim().to_string());
        }
        ids
    }

    /// git's pack of the objects `revs` names (`git pack-objects --revs`), made
    /// with `flags` besides.
    pub(crate) fn pack_objects(dir: &Path, revs: &str, flags: &[&str]) -> Vec<u8> {
        let mut args = vec!["pack-objects", "--revs", "--stdout", "-q"];
        args.extend_from_slice(flags);
        git(dir, &args, Some(revs.as_bytes()))
    }

    /// git's thin pack of the commits from `old` (left out) to `new`, with
    /// deltas on bases by offset, as a fetch receives it.
    pub(crate) fn thin_pack(dir: &Path, new: &str, old: &str) -> Vec<u8> {
        let revs = format!("{new}\n^{old}\n");
        pack_objects(dir, &revs, &["--thin", "--delta-base-offset"])
    }

    /// A pack of `entries` made by hand, each a type code, the base id of a delta
    /// by id, the size its header states, and the data to compress.
    pub(crate) fn pack_of(entries: &[(u8, Option<Oid>, usize, &[u8])]) -> Vec<u8> {
        let mut pack = b"PACK\0\0\0\x02".to_vec();
        pack.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for &(kind, base, size, data) in entries {
            pack.extend(crate::pack::object_header(kind, size));
            if let Some(base) = base {
                pack.extend_from_slice(base.as_bytes());
            }
            pack.extend(crate::loose::zlib(&[], data).unwrap());
        }
        let sum = Sha1::digest(&pack);
        pack.extend_from_slice(&sum);
        pack
    }

    /// What git has for `id`: its kind and data.
    pub(crate) fn stored(repo: &git2::Repository, id: Oid) -> Option<(ObjectType, Vec<u8>)> {
        let odb = repo.odb().ok()?;
        let o = odb.read(id).ok()?;
        Some((o.kind(), o.data().to_vec()))
    }

    #[test]
    fn a_thin_pack_from_git_with_offset_deltas_reads_into_git_s_own_objects() {
        let dir = tempfile::tempdir().unwrap();
        let ids = history(dir.path(), 6);
        let pack = thin_pack(dir.path(), &ids[5], &ids[1]);
        let repo = git2::Repository::open(dir.path()).unwrap();
        let mut asked = Vec::new();
        let objects = read_pack(&pack, |id| {
            asked.push(id);
            stored(&repo, id)
        })
        .unwrap();
        let listed = git(
            dir.path(),
            &["rev-list", "--objects", &ids[5], &format!("^{}", ids[1])],
            None,
        );
        let mut want: Vec<String> = String::from_utf8(listed)
            .unwrap()
            .lines()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        want.sort();
        let mut got: Vec<String> = objects.iter().map(|o| o.id.to_string()).collect();
        got.sort();
        assert_eq!(got, want);
        for o in &objects {
            assert_eq!(
                stored(&repo, o.id),
                Some((o.kind, o.data.clone())),
                "{}",
                o.id
            );
        }
        assert!(
            !asked.is_empty(),
            "the pack was not thin: no base asked of the repository"
        );
    }

    #[test]
    fn resolving_hands_over_by_value_every_object_that_no_delta_leans_on() {
        let dir = tempfile::tempdir().unwrap();
        let ids = history(dir.path(), 8);
        let pack = pack_objects(
            dir.path(),
            &format!("{}\n", ids[7]),
            &["--delta-base-offset"],
        );
        let file = dir.path().join("all.pack");
        std::fs::write(&file, &pack).unwrap();
        git(dir.path(), &["index-pack", file.to_str().unwrap()], None);
        let listed = git(
            dir.path(),
            &["verify-pack", "-v", file.to_str().unwrap()],
            None,
        );
        // git's word on each delta's base: "id type size packed offset depth base".
        let bases: std::collections::HashSet<String> = String::from_utf8(listed)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
            .filter(|b| b.len() == 40)
            .collect();
        assert!(bases.len() > 2, "too few deltas to tell: {bases:?}");
        let mut lent = std::collections::HashSet::new();
        let mut given = 0;
        let resolved = resolve(
            &pack,
            |_| None,
            |_, id, _, data| match data {
                Cow::Borrowed(_) => {
                    lent.insert(id.to_string());
                }
                Cow::Owned(_) => given += 1,
            },
        )
        .unwrap();
        assert_eq!(lent, bases);
        assert_eq!(given + lent.len(), resolved.entries.len());
        assert!(resolved.thin_bases.is_empty());
    }

    #[test]
    fn a_pack_that_this_crate_writes_for_a_push_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let ids = history(dir.path(), 3);
        let repo = git2::Repository::open(dir.path()).unwrap();
        let (new, old) = (
            Oid::from_str(&ids[2]).unwrap(),
            Oid::from_str(&ids[1]).unwrap(),
        );
        let mut pack = Vec::new();
        let deltas =
            crate::pack::write_pack(&repo, new, Some(old), true, Default::default(), &mut pack)
                .unwrap();
        assert!(deltas > 0, "no delta to read");
        let objects = read_pack(&pack, |id| stored(&repo, id)).unwrap();
        assert!(objects.iter().any(|o| o.id == new));
        for o in &objects {
            assert_eq!(stored(&repo, o.id), Some((o.kind, o.data.clone())));
        }
    }

    #[test]
    fn damaged_packs_are_refused_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let ids = history(dir.path(), 3);
        let repo = git2::Repository::open(dir.path()).unwrap();
        let revs = format!("{}\n^{}\n", ids[2], ids[0]);
        let pack = pack_objects(dir.path(), &revs, &["--thin"]);
        let err = |p: &[u8]| read_pack(p, |id| stored(&repo, id)).unwrap_err();

        let mut flipped = pack.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert!(err(&flipped).contains("checksum"), "{}", err(&flipped));
        assert!(err(&pack[..pack.len() - 30]).contains("checksum"));
        assert!(err(b"PACK\0\0\0\x09\0\0\0\0").contains("version"));
        // The bases it leans on are not here.
        let missing = read_pack(&pack, |_| None).unwrap_err();
        assert!(
            missing.contains("neither in the pack nor here"),
            "{missing}"
        );
    }

    /// A pack of one blob whose header states `size`, its data `data`.
    fn one_blob_pack(size: u64, data: &[u8]) -> Vec<u8> {
        pack_of(&[(3, None, size as usize, data)])
    }

    #[test]
    fn sizes_that_the_data_does_not_have_are_refused_without_reserving_them() {
        let ok = read_pack(&one_blob_pack(5, b"hello"), |_| None).unwrap();
        assert_eq!(ok[0].data, b"hello");
        assert_eq!(ok[0].id, crate::loose::blob_id(b"hello"));
        // 32 TiB promised: an error, not an allocation that aborts the process.
        let e = read_pack(&one_blob_pack(1 << 45, b"hello"), |_| None).unwrap_err();
        assert!(e.contains("not its size"), "{e}");
        let e = read_pack(&one_blob_pack(3, b"hello"), |_| None).unwrap_err();
        assert!(e.contains("more than its size"), "{e}");
        // A delta promising a huge result.
        let e = apply(b"base", &[4, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, b'x']).unwrap_err();
        assert!(e.contains("not its stated"), "{e}");
    }

    #[test]
    fn deltas_that_do_not_fit_their_base_are_refused() {
        let base = b"0123456789";
        // Base size 10, target 4: copy 4 bytes from offset 8 runs past the end.
        assert!(
            apply(base, &[10, 4, 0x91, 8, 4])
                .unwrap_err()
                .contains("beyond")
        );
        assert!(
            apply(base, &[11, 4, 0x90, 4])
                .unwrap_err()
                .contains("base of 11")
        );
        assert!(
            apply(base, &[10, 5, 0x90, 4])
                .unwrap_err()
                .contains("not its stated")
        );
        assert!(apply(base, &[10, 1, 0]).unwrap_err().contains("reserved"));
        assert_eq!(
            apply(base, &[10, 6, 0x91, 2, 3, 3, b'a', b'b', b'c']).unwrap(),
            b"234abc"
        );
    }

    #[test]
    fn commits_are_written_after_everything_else_and_after_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let ids = history(dir.path(), 4);
        let pack = pack_objects(dir.path(), &format!("{}\n", ids[3]), &[]);
        let objects = read_pack(&pack, |_| None).unwrap();
        let order = write_order(&objects);
        assert_eq!(order.len(), objects.len());
        let first_commit = order
            .iter()
            .position(|o| o.kind == ObjectType::Commit)
            .unwrap();
        assert!(
            order[first_commit..]
                .iter()
                .all(|o| o.kind == ObjectType::Commit)
        );
        let at = |hex: &str| order.iter().position(|o| o.id.to_string() == hex).unwrap();
        assert!(
            at(&ids[0]) < at(&ids[1]) && at(&ids[1]) < at(&ids[2]) && at(&ids[2]) < at(&ids[3])
        );
    }
}
