//! Atomic writes: a write that fails, or a run killed mid-write, leaves the old
//! file whole.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Env, SmallDisk, entries};

/// `n` entries of a host, about 300 bytes each.
fn host_file(host: &str, n: usize) -> String {
    let mut s = String::from("[");
    for i in 0..n {
        let ts = format!("2026-11-20T10:{:02}:{:02}.{:06}Z", (i / 60) % 60, i % 60, i);
        s.push_str(if i == 0 { "\n" } else { ",\n" });
        s.push_str(&format!(
            r#"{{"_crdt_metadata":{{"host":"{host}","timestamp":"{ts}","unique_id":"{host}_n{i}_{ts}","version":1}},"content":"entry {i} of {host}, with some words to give it the size of a real memory entry of a coding agent","id":"n{i}","tags":["a","b"]}}"#
        ));
    }
    s.push_str("\n]\n");
    s
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_full_disk_is_exit_74_and_the_old_file_stays_whole() {
    let env = Env::new();
    let Some(disk) = SmallDisk::mount(&env.path("disk"), "512k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let d = &disk.0;
    std::fs::write(d.join("memory-a.json"), host_file("a", 10)).unwrap();
    assert_eq!(env.run(&["merge", d.to_str().unwrap()]).code, 0);
    let old = std::fs::read(d.join("unified-memory.json")).unwrap();
    // About 330 KB more: the host file fits, the new unified does not.
    std::fs::write(d.join("memory-b.json"), host_file("b", 1000)).unwrap();
    let r = env.run(&["merge", d.to_str().unwrap()]);
    assert_eq!(r.code, 74, "{r:?}");
    assert!(
        r.stderr.contains("unified-memory.json: write failed"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("unchanged"), "{}", r.stderr);
    assert_eq!(std::fs::read(d.join("unified-memory.json")).unwrap(), old);
    assert!(temp_files(d).is_empty(), "{:?}", temp_files(d));
    // The same with stamping.
    let big: Vec<String> = (0..3000)
        .map(|i| format!(r#"{{"id":"n{i}","c":"{}"}}"#, "w".repeat(100)))
        .collect();
    env.write("m.json", format!("[{}]", big.join(",")));
    let host = d.join("memory-a.json");
    let before = std::fs::read(&host).unwrap();
    let r = env.stamp("m.json", host.to_str().unwrap());
    assert_eq!(r.code, 74, "{r:?}");
    assert_eq!(std::fs::read(&host).unwrap(), before);
}

#[test]
fn a_run_killed_mid_write_leaves_the_old_file_or_the_new_one() {
    let env = Env::new();
    let d = env.path("d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("memory-a.json"), host_file("a", 20)).unwrap();
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    let old = std::fs::read(d.join("unified-memory.json")).unwrap();
    for h in ["b", "c", "d", "e"] {
        std::fs::write(d.join(format!("memory-{h}.json")), host_file(h, 8_000)).unwrap();
    }
    // What a whole run writes.
    let copy = env.path("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&d).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    assert_eq!(env.run(&["merge", "copy"]).code, 0);
    let new = std::fs::read(copy.join("unified-memory.json")).unwrap();
    assert_ne!(old, new);

    // Kill each run once its temporary file exists (it is writing), a little later
    // each time, so that the kills land all through the write.
    let (mut mid_write, mut old_left, mut new_left) = (0, 0, 0);
    for k in 0..10u64 {
        let before: Vec<String> = temp_files(&d);
        let mut child = env
            .command()
            .args(["merge", "d"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while temp_files(&d).len() == before.len()
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(k * 3));
        let writing = child.try_wait().unwrap().is_none();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        mid_write += usize::from(writing);
        let now = std::fs::read(d.join("unified-memory.json")).unwrap();
        if now == old {
            old_left += 1;
        } else {
            assert!(
                now == new,
                "kill {k}: the unified file is neither the old nor the new one"
            );
            new_left += 1;
            std::fs::write(d.join("unified-memory.json"), &old).unwrap();
        }
        assert_eq!(entries(&d.join("unified-memory.json")).len(), 20);
    }
    eprintln!(
        "kills while writing: {mid_write}; left the old file: {old_left}, the new one: {new_left}"
    );
    assert!(
        mid_write > 0,
        "no kill landed while the file was being written"
    );
    // Leftover temporary files from killed runs block nothing.
    let r = env.run(&["merge", "d"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(d.join("unified-memory.json")).unwrap(), new);
}
