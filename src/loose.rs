//! Loose blobs written here rather than by libgit2, which hashes them with
//! SHA-1DC (the collision-detecting SHA-1, several times slower than the CPU's
//! SHA instructions) and compresses them on one thread. A backup writes blobs of
//! megabytes: here their id is hashed with the `sha1` crate, which uses those
//! instructions where the CPU has them, and a large blob is compressed in parts
//! on all cores, joined into one zlib stream as `pigz` does.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, FlushCompress, Status};
use git2::{ObjectType, Oid};
use sha1::{Digest, Sha1};

/// Parts of a blob smaller than this are not worth a thread of their own.
const PART_BYTES: usize = 512 << 10;

/// The object id of a blob of `data`, as git hashes it.
pub fn blob_id(data: &[u8]) -> Oid {
    object_id(ObjectType::Blob, data)
}

/// The object id of an object of `kind` holding `data`, as git hashes it.
pub fn object_id(kind: ObjectType, data: &[u8]) -> Oid {
    let mut sha = Sha1::new();
    sha.update(header(kind, data).as_bytes());
    sha.update(data);
    Oid::from_bytes(&sha.finalize()).expect("a SHA-1 is 20 bytes")
}

fn header(kind: ObjectType, data: &[u8]) -> String {
    format!("{} {}\0", kind.str(), data.len())
}

/// Where the loose object `id` lies under `objects`: `xx/yyyy...`.
pub fn path(objects: &Path, id: Oid) -> PathBuf {
    let hex = id.to_string();
    objects.join(&hex[..2]).join(&hex[2..])
}

/// Whether the loose object `id` under `objects` is an empty file.
pub fn is_empty(objects: &Path, id: Oid) -> bool {
    std::fs::metadata(path(objects, id)).is_ok_and(|m| m.len() == 0)
}

/// Whether the object database `odb`, whose loose objects are under `objects`,
/// holds `id` whole: an empty loose file (a power cut's leftover) is no object.
pub fn is_whole(odb: &git2::Odb<'_>, objects: &Path, id: Oid) -> bool {
    odb.exists(id) && !is_empty(objects, id)
}

/// Writes the blob `data`, whose id is `id`: [`write_object`].
pub fn write_blob(objects: &Path, id: Oid, data: &[u8]) -> io::Result<()> {
    write_object(objects, ObjectType::Blob, id, data)
}

/// Writes the object `data` of `kind`, whose id is `id`, as a loose object under
/// `objects` (the repository's object folder), as git does: compressed, in
/// `objects/xx/yyyy...`, read-only, put in place by a rename so that no reader
/// ever sees a part. A concurrent writer of the same object wins harmlessly.
pub fn write_object(objects: &Path, kind: ObjectType, id: Oid, data: &[u8]) -> io::Result<()> {
    let path = path(objects, id);
    if is_whole_file(&path) {
        return Ok(());
    }
    let compressed = zlib(header(kind, data).as_bytes(), data)?;
    write_once(&path, "tmp_obj_", &[&compressed]).map(drop)
}

/// Whether `path` is a file with something in it: an empty one is what a power
/// cut leaves of a file never synced.
fn is_whole_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// Writes `parts` one after the other as the file `path`, as git writes the
/// files of its object database: read-only, into a temporary file (named
/// `prefix...`) beside it, synced to disk, then renamed into place without
/// replacing a file of that name that is whole, so that no reader ever sees a
/// part and after a power cut the file is whole or absent. An empty file there
/// (a power cut's leftover) is replaced. Whether it wrote the file: a
/// concurrent writer of the same name wins harmlessly (the name is a hash of
/// the bytes).
pub(crate) fn write_once(path: &Path, prefix: &str, parts: &[&[u8]]) -> io::Result<bool> {
    if is_whole_file(path) {
        return Ok(false);
    }
    let dir = path.parent().expect("a file in a folder");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444))
        .tempfile_in(dir)?;
    for part in parts {
        tmp.write_all(part)?;
    }
    tmp.as_file().sync_data()?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists && is_whole_file(path) => {
            Ok(false)
        }
        // An empty file in the way, or a file system with neither `renameat2`
        // nor hard links: a plain rename, as libgit2 does.
        Err(e) => e.file.persist(path).map(|_| true).map_err(|e| e.error),
    }
}

/// One zlib stream (at the fastest level) of `head` followed by `data`. Parts
/// of the input are deflated on their own threads; every part but the last ends
/// with a sync flush (byte-aligned, not final), so their raw streams concatenate
/// into one, and their checksums combine into the stream's.
pub(crate) fn zlib(head: &[u8], data: &[u8]) -> io::Result<Vec<u8>> {
    let parts = crate::cores().min(data.len() / PART_BYTES).max(1);
    let size = data.len().div_ceil(parts).max(1);
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![data]
    } else {
        data.chunks(size).collect()
    };
    let last = chunks.len() - 1;
    let deflated: Vec<io::Result<(Vec<u8>, u32)>> = std::thread::scope(|s| {
        let workers: Vec<_> = chunks
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, &c)| s.spawn(move || deflate_part(&[c], i == last)))
            .collect();
        let mut out = vec![deflate_part(&[head, chunks[0]], last == 0)];
        out.extend(workers.into_iter().map(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("a compressing thread panicked")))
        }));
        out
    });
    // CMF 0x78 (deflate, 32 KiB window) and FLG 0x01 (fastest level, check bits).
    let mut out = Vec::with_capacity(data.len() / 3 + 64);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut sum = 1;
    for (part, (i, chunk)) in deflated.into_iter().zip(chunks.iter().enumerate()) {
        let (bytes, adler) = part?;
        out.extend_from_slice(&bytes);
        let len = chunk.len() + if i == 0 { head.len() } else { 0 };
        sum = adler32_combine(sum, adler, len);
    }
    out.extend_from_slice(&sum.to_be_bytes());
    Ok(out)
}

/// The raw deflate stream of `pieces` one after the other, ended with a sync
/// flush, or as the final block when `last`; and their Adler-32.
fn deflate_part(pieces: &[&[u8]], last: bool) -> io::Result<(Vec<u8>, u32)> {
    let mut z = Compress::new(Compression::fast(), false);
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(total / 3 + 1024);
    let mut adler = 1;
    for (k, piece) in pieces.iter().enumerate() {
        adler = adler32_combine(adler, adler32(piece), piece.len());
        let flush = match (k + 1 == pieces.len(), last) {
            (false, _) => FlushCompress::None,
            (true, false) => FlushCompress::Sync,
            (true, true) => FlushCompress::Finish,
        };
        let start = z.total_in();
        loop {
            let done = usize::try_from(z.total_in() - start).map_err(io::Error::other)?;
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            let status = z
                .compress_vec(&piece[done..], &mut out, flush)
                .map_err(io::Error::other)?;
            let all_in = z.total_in() - start == piece.len() as u64;
            // Finished once all is in and the flush had room to complete.
            let room = out.capacity() - out.len() >= 1024;
            match (status, flush) {
                (Status::StreamEnd, _) => break,
                (_, FlushCompress::Finish) => {}
                _ if all_in && room => break,
                _ => {}
            }
        }
    }
    Ok((out, adler))
}

const ADLER_BASE: u32 = 65521;
/// The most bytes summed before the sums must be reduced, as zlib has it.
const ADLER_NMAX: usize = 5552;

/// The Adler-32 checksum of `data`.
fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(ADLER_NMAX) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= ADLER_BASE;
        b %= ADLER_BASE;
    }
    (b << 16) | a
}

/// The Adler-32 of two inputs one after the other, from their own checksums and
/// the second one's length (zlib's `adler32_combine`).
fn adler32_combine(first: u32, second: u32, second_len: usize) -> u32 {
    let base = u64::from(ADLER_BASE);
    let rem = second_len as u64 % base;
    let (a1, b1) = (u64::from(first & 0xffff), u64::from(first >> 16));
    let (a2, b2) = (u64::from(second & 0xffff), u64::from(second >> 16));
    let a = (a1 + a2 + base - 1) % base;
    let b = (rem * a1 % base + b1 + b2 + base - rem) % base;
    ((b << 16) | a) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize, seed: u64) -> Vec<u8> {
        // Text-like: lines of words, some repeated, as backup files are.
        let mut rng = fastrand::Rng::with_seed(seed);
        let words = [
            "alpha",
            "beta",
            "{\"name\":",
            "\"entity\"",
            ",",
            "\n",
            "0123",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
            if rng.u8(..) < 8 {
                out.push(rng.u8(..));
            }
        }
        out.truncate(len);
        out
    }

    #[test]
    fn adler32_matches_known_values() {
        assert_eq!(adler32(b""), 1);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
        // Long enough to need the reductions.
        let ones = vec![0xffu8; 100_000];
        let (mut a, mut b) = (1u64, 0u64);
        for &x in &ones {
            a = (a + u64::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(adler32(&ones), ((b << 16) | a) as u32);
    }

    proptest! {
        #[test]
        fn prop_adler32_of_two_parts_combines_to_that_of_the_whole(
            a in proptest::collection::vec(any::<u8>(), 0..20_000),
            b in proptest::collection::vec(any::<u8>(), 0..20_000),
        ) {
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            prop_assert_eq!(adler32_combine(adler32(&a), adler32(&b), b.len()), adler32(&whole));
        }
    }

    #[test]
    fn blob_ids_are_git_s() {
        for len in [0, 1, 100, (1 << 20) + 17] {
            let data = sample(len, len as u64);
            assert_eq!(
                blob_id(&data),
                Oid::hash_object(git2::ObjectType::Blob, &data).unwrap(),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn written_blobs_read_back_through_libgit2_whole_and_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        // Small (one part), and large enough for several parts with an odd split.
        for (len, seed) in [
            (0, 1),
            (10, 2),
            (PART_BYTES - 1, 3),
            (3 * PART_BYTES + 12_345, 4),
        ] {
            let data = sample(len, seed);
            let id = blob_id(&data);
            write_blob(&dir.path().join("objects"), id, &data).unwrap();
            let blob = repo.find_blob(id).unwrap();
            assert_eq!(blob.content(), &data[..], "{len} bytes");
            // Written again: already there, left alone.
            write_blob(&dir.path().join("objects"), id, &data).unwrap();
        }
    }

    /// An empty object file (a power cut's leftover) is replaced when the
    /// object is written again; a whole one is left as it is.
    #[test]
    fn an_empty_object_file_is_replaced_and_a_whole_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let objects = dir.path().join("objects");
        let data = b"the memory of a host";
        let id = blob_id(data);
        let path = path(&objects, id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"").unwrap();
        let read_only = std::os::unix::fs::PermissionsExt::from_mode(0o444);
        std::fs::set_permissions(&path, read_only).unwrap();
        assert!(repo.find_blob(id).is_err());
        write_blob(&objects, id, data).unwrap();
        assert_eq!(repo.find_blob(id).unwrap().content(), data);
        // Written again: left alone (a rename would give it another inode).
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(&path).unwrap().ino();
        write_blob(&objects, id, data).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), written);
    }

    #[test]
    fn the_zlib_stream_inflates_to_its_input() {
        use std::io::Read;
        let head = b"blob 5\0";
        for len in [0, 7, 2 * PART_BYTES + 3] {
            let data = sample(len, 9);
            let z = zlib(head, &data).unwrap();
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(&z[..])
                .read_to_end(&mut back)
                .unwrap();
            let want: Vec<u8> = head.iter().chain(&data).copied().collect();
            assert_eq!(back, want, "{len} bytes");
        }
    }
}
