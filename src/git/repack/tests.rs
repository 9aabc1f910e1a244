use super::*;
use git2::ObjectType;

fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::process::{Command, Stdio};
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
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
/// each changing a few of them, as a backup does.
fn history(dir: &Path, versions: usize) {
    git(dir, &["init", "-q", "-b", "main"], None);
    let mut lines: Vec<String> = (0..3000).map(|i| format!("{{\"n\":{i}}}")).collect();
    for v in 0..versions {
        for k in 0..3 {
            lines[(v * 37 + k * 911) % 3000] = format!("{{\"v\":{v},\"k\":{k}}}");
        }
        std::fs::write(dir.join("unified.json"), lines.join("\n")).unwrap();
        std::fs::write(dir.join(format!("host-{}.json", v % 2)), format!("{v}\n")).unwrap();
        git(dir, &["add", "-A"], None);
        git(dir, &["commit", "-q", "-m", &format!("v{v}")], None);
    }
}

fn stored(repo: &Repository, id: Oid) -> Option<(ObjectType, Vec<u8>)> {
    let odb = repo.odb().ok()?;
    let o = odb.read(id).ok()?;
    Some((o.kind(), o.data().to_vec()))
}

/// A zlib stream of `data` (stored blocks: any valid stream will do).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    if chunks.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

fn objects_of(dir: &Path) -> PathBuf {
    dir.join(".git/objects")
}

/// Every object of the repository at `dir`, as git lists them, with its kind
/// and data as libgit2 reads them.
fn everything(dir: &Path) -> Vec<(Oid, ObjectType, Vec<u8>)> {
    let list = git(
        dir,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
        None,
    );
    let repo = Repository::open(dir).unwrap();
    String::from_utf8(list)
        .unwrap()
        .lines()
        .map(|l| {
            let id = Oid::from_str(l).unwrap();
            let (kind, data) = stored(&repo, id).expect("git lists only objects it has");
            (id, kind, data)
        })
        .collect()
}

/// Asserts that `repo` reads every object of `all` as it was.
fn reads_all(repo: &Repository, all: &[(Oid, ObjectType, Vec<u8>)]) {
    for (id, kind, data) in all {
        assert_eq!(
            stored(repo, *id).as_ref(),
            Some(&(*kind, data.clone())),
            "{id}"
        );
    }
}

/// Writes the blob `data` loose with libgit2; its id.
fn loose_blob(repo: &Repository, data: &[u8]) -> Oid {
    repo.blob(data).unwrap()
}

#[test]
fn a_repack_packs_every_loose_object_keeps_each_one_and_finds_deltas_between_versions() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 40);
    let repo = Repository::open(dir.path()).unwrap();
    // Objects that no commit names are kept too.
    let stray = loose_blob(&repo, b"in no commit\n");
    let before = everything(dir.path());
    let loose = all_loose(&objects_of(dir.path()));
    assert!(loose.len() >= 160 && loose.contains_key(&stray));

    let packed = repack(&repo).unwrap().unwrap();
    assert_eq!((packed.objects, packed.left), (loose.len(), 0));
    assert_eq!(packed.loose_bytes, loose.values().sum::<u64>());
    assert!(all_loose(&objects_of(dir.path())).is_empty());
    // The versions of the file went as deltas on each other.
    assert!(
        packed.pack_bytes * 4 < packed.loose_bytes,
        "{} bytes packed of {} loose",
        packed.pack_bytes,
        packed.loose_bytes
    );
    let fresh = Repository::open(dir.path()).unwrap();
    reads_all(&fresh, &before);
    assert_eq!(everything(dir.path()).len(), before.len());
    git(dir.path(), &["fsck", "--strict", "--no-dangling"], None);
    let index = packed.index.as_deref().unwrap().to_str().unwrap();
    git(dir.path(), &["verify-pack", index], None);
}

#[test]
fn a_repository_opened_before_a_repack_still_reads_every_object_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 8);
    let before = everything(dir.path());
    // This reader lists the packs (there are none) before the repack.
    let early = Repository::open(dir.path()).unwrap();
    assert!(stored(&early, before[0].0).is_some());
    repack(&Repository::open(dir.path()).unwrap())
        .unwrap()
        .unwrap();
    assert!(all_loose(&objects_of(dir.path())).is_empty());
    reads_all(&early, &before);
}

#[test]
fn damaged_and_empty_loose_files_are_left_where_they_are_and_the_rest_packed() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 4);
    let objects = objects_of(dir.path());
    let fake = |hex: &str| Oid::from_str(&format!("17{hex}{}", "0".repeat(36))).unwrap();
    let (unreadable, short, misnamed, empty) = (fake("aa"), fake("bb"), fake("cc"), fake("dd"));
    std::fs::create_dir_all(objects.join("17")).unwrap();
    let put = |id: Oid, bytes: &[u8]| {
        std::fs::write(loose_path(&objects, id), bytes).unwrap();
    };
    put(unreadable, b"not a zlib stream");
    // Its header reads; the rest is shorter than the header says.
    put(short, &deflate(b"blob 100\0short"));
    // Whole, but another object's data.
    let real = all_loose(&objects).into_keys().next().unwrap();
    put(
        misnamed,
        &std::fs::read(loose_path(&objects, real)).unwrap(),
    );
    put(empty, b"");
    let loose = all_loose(&objects);
    // An empty file is no object.
    assert!(!loose.contains_key(&empty) && loose.contains_key(&misnamed));

    let packed = repack(&Repository::open(dir.path()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!((packed.objects, packed.left), (loose.len() - 3, 3));
    let mut after: Vec<Oid> = all_loose(&objects).into_keys().collect();
    after.sort();
    assert_eq!(after, [unreadable, short, misnamed]);
    assert!(loose_path(&objects, empty).exists());
    // One line for all three, naming the first.
    assert_eq!(packed.problems.len(), 1, "{:?}", packed.problems);
    let line = &packed.problems[0];
    let first = line
        .strip_prefix("3 damaged loose objects left as they are, the first: ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        after
            .iter()
            .any(|id| first.starts_with(&format!("{}: ", loose_path(&objects, *id).display()))),
        "{line}"
    );
    let index = packed.index.as_deref().unwrap().to_str().unwrap();
    git(dir.path(), &["verify-pack", index], None);
}

#[test]
fn a_repack_of_objects_that_another_repack_took_first_writes_no_pack_and_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 6);
    let before = everything(dir.path());
    let (a, b) = (
        Repository::open(dir.path()).unwrap(),
        Repository::open(dir.path()).unwrap(),
    );
    // Both listed the same loose objects; `a` packs them first.
    let listed = all_loose(&objects_of(dir.path()));
    repack_these(&a, &listed).unwrap().unwrap();
    let late = repack_these(&b, &listed).unwrap().unwrap();
    assert_eq!((late.objects, late.left, late.index), (0, 0, None));
    assert!(late.problems.is_empty(), "{:?}", late.problems);
    let packs = |d: &Path| {
        std::fs::read_dir(d.join(".git/objects/pack"))
            .unwrap()
            .count()
    };
    assert_eq!(packs(dir.path()), 2, "one pack and its index");
    reads_all(&b, &before);
}

#[test]
fn loose_copies_of_packed_objects_are_removed_not_counted_nor_packed_again() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 6);
    let repo = Repository::open(dir.path()).unwrap();
    let objects = objects_of(dir.path());
    let before = everything(dir.path());
    repack(&repo).unwrap().unwrap();
    // Loose copies again, as a writer that looks only for a loose file
    // (or a repack killed while it removed them) leaves them.
    let odb = repo.odb().unwrap();
    for (id, kind, data) in &before {
        // libgit2 writes no loose copy of an object a pack holds: the
        // file is written as git would, by hand.
        let path = loose_path(&objects, *id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut z = Vec::new();
        let header = format!("{} {}\0", kind.str(), data.len());
        z.extend_from_slice(header.as_bytes());
        z.extend_from_slice(data);
        std::fs::write(&path, deflate(&z)).unwrap();
        assert!(odb.exists(*id));
    }
    assert_eq!(all_loose(&objects).len(), before.len());
    // Not counted: no repack from one object on.
    assert!(repack_from(&repo, 1, u64::MAX).unwrap().is_none());
    // A repack removes them and writes no pack.
    let packed = repack(&repo).unwrap().unwrap();
    assert_eq!((packed.objects, packed.index), (before.len(), None));
    assert!(all_loose(&objects).is_empty());
    let fresh = Repository::open(dir.path()).unwrap();
    reads_all(&fresh, &before);
}

#[test]
fn temporary_pack_files_of_killed_writers_go_once_an_hour_old() {
    let dir = tempfile::tempdir().unwrap();
    let pack_dir = dir.path().join("pack");
    std::fs::create_dir(&pack_dir).unwrap();
    let old = std::time::SystemTime::now() - STALE_PACK_TEMPORARY - Duration::from_secs(60);
    for name in [
        "pack_git2_old",
        "tmp_pack_old",
        "pack_git2_new",
        "pack-x.pack",
    ] {
        let f = std::fs::File::create(pack_dir.join(name)).unwrap();
        if name.ends_with("old") || name.ends_with(".pack") {
            f.set_modified(old).unwrap();
        }
    }
    remove_stale_pack_temporaries(&pack_dir);
    let mut left: Vec<String> = std::fs::read_dir(&pack_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["pack-x.pack", "pack_git2_new"]);
}

#[test]
fn a_repository_without_a_pack_folder_gets_one_and_its_objects_wait_for_the_next_repack() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 3);
    let objects = objects_of(dir.path());
    std::fs::remove_dir_all(objects.join("pack")).unwrap();
    let loose = all_loose(&objects).len();
    assert!(
        repack(&Repository::open(dir.path()).unwrap())
            .unwrap()
            .is_none()
    );
    assert!(objects.join("pack").is_dir());
    assert_eq!(all_loose(&objects).len(), loose);
    let packed = repack(&Repository::open(dir.path()).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(packed.objects, loose);
}

#[test]
fn loose_objects_are_packed_from_the_threshold_on_and_not_below() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"], None);
    let repo = Repository::open(dir.path()).unwrap();
    for i in 0..REPACK_FROM - 1 {
        loose_blob(&repo, format!("blob {i}\n").as_bytes());
    }
    assert!(repack_if_many(&repo).unwrap().is_none());
    assert_eq!(all_loose(&objects_of(dir.path())).len(), REPACK_FROM - 1);

    loose_blob(&repo, b"one more\n");
    let packed = repack_if_many(&repo)
        .unwrap()
        .expect("packed at the threshold");
    assert_eq!(packed.objects, REPACK_FROM);
    assert!(all_loose(&objects_of(dir.path())).is_empty());
}

#[test]
fn a_few_loose_objects_of_many_bytes_are_packed_too() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"], None);
    let repo = Repository::open(dir.path()).unwrap();
    // Bytes that hardly compress: a fixed sequence of noise.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for _ in 0..3 {
        loose_blob(&repo, &noise(100_000));
    }
    let on_disk: u64 = all_loose(&objects_of(dir.path())).values().sum();
    assert!(repack_from(&repo, 100, on_disk + 1).unwrap().is_none());
    loose_blob(&repo, &noise(100));
    let packed = repack_from(&repo, 100, on_disk + 1)
        .unwrap()
        .expect("packed");
    assert_eq!(packed.objects, 4);
    assert!(all_loose(&objects_of(dir.path())).is_empty());
}

#[test]
fn a_census_counts_loose_objects_and_packs_before_and_after_a_repack() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 5);
    let repo = Repository::open(dir.path()).unwrap();
    let loose = all_loose(&objects_of(dir.path()));
    let before = census(&repo);
    assert_eq!((before.loose_objects, before.packs), (loose.len(), 0));
    assert_eq!(before.loose_bytes, loose.values().sum::<u64>());
    let packed = repack(&repo).unwrap().unwrap();
    let after = census(&repo);
    assert_eq!(
        (after.loose_objects, after.loose_bytes, after.packs),
        (0, 0, 1)
    );
    let index = packed.index.unwrap();
    let on_disk = std::fs::metadata(&index).unwrap().len() + packed.pack_bytes;
    assert_eq!(after.pack_bytes, on_disk);
}

#[test]
fn the_window_bound_is_seen_by_the_repacking_handle_alone_and_not_written_to_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"], None);
    let config = std::fs::read(dir.path().join(".git/config")).unwrap();
    let (repacking, other) = (
        Repository::open(dir.path()).unwrap(),
        Repository::open(dir.path()).unwrap(),
    );
    let bound = |r: &Repository| r.config().unwrap().get_i64("pack.windowMemory").ok();
    let elsewhere = bound(&other);
    let file = bound_window(&repacking, 1000).unwrap();
    assert_eq!(bound(&repacking), Some(WINDOW_MEMORY_MIN as i64));
    drop(file);
    let repacking = Repository::open(dir.path()).unwrap();
    let _file = bound_window(&repacking, 9_000_000).unwrap();
    assert_eq!(bound(&repacking), Some(54_000_000));
    let cache = repacking
        .config()
        .unwrap()
        .get_i64("pack.deltaCacheSize")
        .unwrap();
    assert_eq!(cache, DELTA_CACHE as i64);
    assert_eq!(bound(&other), elsewhere);
    assert_eq!(
        std::fs::read(dir.path().join(".git/config")).unwrap(),
        config
    );
}

#[test]
fn a_pack_index_lists_its_ids_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    history(dir.path(), 2);
    let packed = repack(&Repository::open(dir.path()).unwrap())
        .unwrap()
        .unwrap();
    let ids = index_ids(&std::fs::read(packed.index.unwrap()).unwrap()).unwrap();
    assert_eq!(ids.len(), everything(dir.path()).len());
    assert!(index_ids(b"PACK").is_none());
    assert!(index_ids(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]).is_none());
}
