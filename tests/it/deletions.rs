//! Deletions that stick, lineage that does not multiply, a clock that cannot pin
//! an entry (issue 21): hosts A, B, C with the real MCP memory server where an
//! agent would use it, and a git daemon on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::support::hosts::{Host, entities_of};
use crate::support::*;

/// Every unique_id of the remote's unified file.
fn unified_ids(env: &Env, bare: &std::path::Path) -> BTreeSet<String> {
    unique_ids(&env.show(bare, "unified-memory.json"))
        .into_iter()
        .collect()
}

/// The names of the entities a fresh host gets from `restore`.
fn restored_names(env: &Env, url: &str, host: &str) -> Vec<String> {
    let d = Host::new(env, host);
    d.init(url);
    d.ok(&["restore"]);
    entities_of(&d.text()).into_iter().map(|(n, _)| n).collect()
}

/// What a fresh host gets from `restore`: entity name to observations.
fn restored(env: &Env, url: &str, host: &str) -> BTreeMap<String, Vec<String>> {
    let d = Host::new(env, host);
    d.init(url);
    d.ok(&["restore"]);
    entities_of(&d.text()).into_iter().collect()
}

#[test]
fn a_host_that_restores_or_syncs_and_backs_up_adds_no_unique_id() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    for i in 1..=5 {
        a.create(&format!("E{i}"), &[&format!("fact {i}")]);
    }
    a.ok(&["backup"]);
    let before = unified_ids(&env, &bare);
    assert_eq!(before.len(), 5);
    let b = Host::new(&env, "b");
    b.init(&url);
    b.ok(&["restore"]);
    b.ok(&["backup"]);
    let c = Host::new(&env, "c");
    c.init(&url);
    c.ok(&["sync"]);
    c.ok(&["backup"]);
    assert_eq!(unified_ids(&env, &bare), before);
    // A memory emptied, backed up, and filled again with the same entries adds
    // nothing either: each entry's lineage goes on.
    drop(a.server.take());
    let text = a.text();
    std::fs::write(&a.memory, "").unwrap();
    a.ok(&["backup"]);
    std::fs::write(&a.memory, text).unwrap();
    a.ok(&["backup"]);
    assert_eq!(unified_ids(&env, &bare), before);
    assert_eq!(restored_names(&env, &url, "d").len(), 5);
}

#[test]
fn a_deletion_through_the_server_sticks_everywhere_and_a_new_entity_of_the_name_comes_back() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    for i in 1..=5 {
        a.create(&format!("E{i}"), &[&format!("fact {i}")]);
    }
    a.ok(&["backup"]);
    let b = Host::new(&env, "b");
    b.init(&url);
    b.ok(&["sync"]);
    assert_eq!(entities_of(&b.text()).len(), 5);

    a.delete("E2");
    let out = a.ok(&["backup"]);
    assert!(stdout(&out).contains("1 deleted"), "{}", stdout(&out));
    assert!(!restored_names(&env, &url, "c1").contains(&"E2".to_string()));
    // B has not synced: its memory still holds E2, as the base says it did.
    b.ok(&["backup"]);
    assert!(!restored_names(&env, &url, "c2").contains(&"E2".to_string()));
    b.ok(&["sync"]);
    assert!(!b.text().contains("\"E2\""), "{}", b.text());

    // Made again later on any host: present again.
    let mut c = Host::with_server(&env, "c");
    c.init(&url);
    c.ok(&["sync"]);
    c.create("E2", &["made again"]);
    c.ok(&["backup"]);
    let now = restored(&env, &url, "c3");
    assert_eq!(now["E2"], ["made again"]);
    b.ok(&["sync"]);
    assert!(b.text().contains("made again"), "{}", b.text());
    // One lineage per host for E2: A's, and C's.
    let e2 = env
        .show(&bare, "unified-memory.json")
        .lines()
        .filter(|l| l.contains("\"name\":\"E2\""))
        .count();
    assert_eq!(e2, 2);
}

#[test]
fn an_observation_removed_by_a_host_that_had_seen_it_is_gone() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    a.create("E1", &["from a"]);
    a.ok(&["backup"]);
    let mut b = Host::with_server(&env, "b");
    b.init(&url);
    b.ok(&["sync"]);
    b.observe("E1", "from b");
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(
        a.graph()["entities"][0]["observations"],
        serde_json::json!(["from a", "from b"])
    );
    a.unobserve("E1", "from b");
    a.ok(&["backup"]);
    assert_eq!(restored(&env, &url, "c")["E1"], ["from a"]);
    b.ok(&["sync"]);
    assert_eq!(
        b.graph()["entities"][0]["observations"],
        serde_json::json!(["from a"])
    );
}

#[test]
fn an_observation_added_where_the_deletion_was_not_seen_keeps_the_entity() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    a.create("E3", &["old"]);
    a.ok(&["backup"]);
    let mut b = Host::with_server(&env, "b");
    b.init(&url);
    b.ok(&["sync"]);
    // A deletes E3 while B, not having seen that, adds an observation.
    a.delete("E3");
    a.ok(&["backup"]);
    b.observe("E3", "added on b");
    b.ok(&["backup"]);
    // Add wins: E3 is there, with B's addition; what A had seen and deleted is not.
    assert_eq!(restored(&env, &url, "c")["E3"], ["added on b"]);
    a.ok(&["sync"]);
    assert_eq!(
        entities_of(&a.text()),
        [("E3".to_string(), vec!["added on b".to_string()])]
    );
}

#[test]
fn a_memory_file_emptied_at_once_is_refused_and_lands_only_when_allowed() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    for i in 0..12 {
        a.create(&format!("E{i}"), &["x"]);
    }
    a.ok(&["backup"]);
    let tip = env.git(&["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"]);
    // The file replaced by an empty server's: nothing in it.
    drop(a.server.take());
    std::fs::write(&a.memory, "").unwrap();
    let out = a.run(&["backup"]);
    assert_code(&out, 65);
    assert!(
        stderr(&out).contains("would delete 12 of this host's 12 entries")
            && stderr(&out).contains("--allow-mass-delete"),
        "{}",
        stderr(&out)
    );
    let still = env.git(&["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"]);
    assert_eq!(stdout(&still), stdout(&tip), "the remote moved");
    let out = a.ok(&["backup", "--allow-mass-delete"]);
    assert!(stdout(&out).contains("12 deleted"), "{}", stdout(&out));
    assert!(restored_names(&env, &url, "c").is_empty());
}

/// Entities `E0..E{n-1}` in the MCP server's layout.
fn graph_text(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(r#"{{"type":"entity","name":"E{i}","entityType":"thing","observations":["fact {i}"]}}"#)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn overlapping_backups_of_a_growing_memory_leave_the_newest_snapshot_and_no_false_tombstone() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    std::fs::write(&a.memory, graph_text(3)).unwrap();
    a.ok(&["backup"]);
    let mut runs = Vec::new();
    for n in 4..9 {
        let mut cmd = env.mb(&a.repo, "a");
        cmd.env("MEMORY_BACKUP_MEMORY", &a.memory)
            .arg("backup")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        runs.push(cmd.spawn().unwrap());
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(&a.memory, graph_text(n)).unwrap();
    }
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    a.ok(&["backup"]);
    let host = env.show(&bare, "memory-a.json");
    let live: Vec<&str> = host.lines().filter(|l| l.contains("\"name\"")).collect();
    assert_eq!(live.len(), 8, "{host}");
    assert!(
        !host.contains("\"deleted\":true"),
        "a tombstone of an entry still in the memory: {host}"
    );
    assert_eq!(unified_ids(&env, &bare).len(), 8);
}

#[test]
fn a_memory_rewritten_every_20_ms_while_four_backups_run_keeps_one_lineage_per_entity() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    std::fs::write(&a.memory, graph_text(20)).unwrap();
    a.ok(&["backup"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(20));
    let writer = {
        let (stop, written, path) = (stop.clone(), written.clone(), a.memory.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 20;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Truncate, then write: a reader may find it empty or cut.
                let mut f = std::fs::File::create(&path).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                f.write_all(graph_text(n).as_bytes()).unwrap();
                drop(f);
                if n < 60 {
                    n += 1;
                    written.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(20);
    let runners: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = env.mb(&a.repo, "a");
            cmd.env("MEMORY_BACKUP_MEMORY", &a.memory)
                .args(["backup", "--max-elapsed", "30"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            std::thread::spawn(move || {
                let mut codes = Vec::new();
                while Instant::now() < until {
                    codes.push(cmd.status().unwrap().code());
                }
                codes
            })
        })
        .collect();
    for r in runners {
        for code in r.join().unwrap() {
            // 0, or 75 when the file never held still long enough to be read.
            assert!(matches!(code, Some(0) | Some(75)), "{code:?}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    a.ok(&["backup"]);
    let n = written.load(std::sync::atomic::Ordering::Relaxed);
    let unified = env.show(&bare, "unified-memory.json");
    let mut per_name: BTreeMap<String, usize> = BTreeMap::new();
    for e in serde_json::from_str::<serde_json::Value>(&unified)
        .unwrap()
        .as_array()
        .unwrap()
    {
        *per_name
            .entry(e["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_name.len(), n, "every entity ever written: {per_name:?}");
    assert!(
        per_name.values().all(|&c| c == 1),
        "one lineage each: {per_name:?}"
    );
    assert!(
        !env.show(&bare, "memory-a.json")
            .contains("\"deleted\":true")
    );
}

#[test]
fn a_clock_a_year_ahead_once_does_not_pin_the_entity_and_is_named() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    a.now = Some("2027-11-21T12:00:00Z".into());
    a.create("E", &["from the future"]);
    a.ok(&["backup"]);
    a.now = None;
    let mut b = Host::with_server(&env, "b");
    b.init(&url);
    b.ok(&["sync"]);
    b.unobserve("E", "from the future");
    b.observe("E", "edited on b");
    b.ok(&["backup"]);
    assert_eq!(restored(&env, &url, "c")["E"], ["edited on b"]);
    for (args, shown) in [(&["status"][..], "stderr"), (&["verify"][..], "stdout")] {
        let out = b.run(args);
        let said = if shown == "stderr" {
            stderr(&out)
        } else {
            stdout(&out)
        };
        assert!(
            said.contains("host a") && said.contains("ahead"),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn a_forged_copy_of_a_lineage_in_another_host_s_file_does_not_win_and_is_reported() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let mut b = Host::with_server(&env, "b");
    b.init(&url);
    b.create("E", &["b1"]);
    b.ok(&["backup"]);
    // A third host's file gets a year-9999 copy of B's lineage, by hand.
    let host_b = env.show(&bare, "memory-b.json");
    let line = host_b.lines().find(|l| l.contains("\"b1\"")).unwrap();
    let forged = line
        .replace("\"host\":\"b\"", "\"host\":\"c\"")
        .replace(
            "2026-11-21T12:00:00.000000Z\",\"unique_id",
            "9999-12-31T23:59:59.999999Z\",\"unique_id",
        )
        .replace("\"b1\"", "\"forged\"");
    let work = env.path("work");
    env.git(&["clone", "-q", &url, work.to_str().unwrap()]);
    env.commit_by_hand(
        &work,
        &[("memory-c.json", format!("[\n{forged}\n]\n").as_bytes())],
        "forge",
    );
    env.git_in(&work, &["push", "-q", "origin", "main"]);
    b.ok(&["sync"]);
    b.observe("E", "b2");
    b.ok(&["backup"]);
    assert_eq!(restored(&env, &url, "d")["E"], ["b1", "b2"]);
    let out = b.run(&["verify"]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("memory-c.json") && stdout(&out).contains("one writer per unique_id"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_hand_commit_that_deletes_unified_loses_nothing_and_is_named() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    a.create("E1", &["x"]);
    a.create("E2", &["y"]);
    a.ok(&["backup"]);
    let before = unified_ids(&env, &bare);
    let work = env.path("work");
    env.git(&["clone", "-q", &url, work.to_str().unwrap()]);
    env.git_in(&work, &["rm", "-q", "unified-memory.json"]);
    env.git_in(
        &work,
        &[
            "-c",
            "user.name=x",
            "-c",
            "user.email=x@x",
            "commit",
            "-qm",
            "tidy up",
        ],
    );
    env.git_in(&work, &["push", "-q", "origin", "main"]);
    a.create("E3", &["z"]);
    let out = a.ok(&["backup"]);
    assert!(
        stderr(&out).contains("taken back from history"),
        "{}",
        stderr(&out)
    );
    let after = unified_ids(&env, &bare);
    assert!(after.is_superset(&before) && after.len() == 3, "{after:?}");
}

#[test]
fn a_forgotten_entity_is_in_no_restore_and_no_host_brings_it_back() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let mut a = Host::with_server(&env, "a");
    a.init(&url);
    a.create("E4", &["password was hunter2"]);
    a.create("E5", &["fine"]);
    a.create("E6", &["also fine"]);
    a.call(
        "create_relations",
        serde_json::json!({"relations": [{"from": "E4", "to": "E5", "relationType": "knows"}]}),
    );
    a.ok(&["backup"]);
    let b = Host::new(&env, "b");
    b.init(&url);
    b.ok(&["sync"]);
    let c = Host::new(&env, "c");
    c.init(&url);
    c.ok(&["sync"]);
    let out = c.ok(&["forget", "E4"]);
    assert!(stdout(&out).contains("forgot"), "{}", stdout(&out));
    assert_eq!(restored_names(&env, &url, "d1"), ["E5", "E6"]);
    // B still holds E4 in its memory file until it syncs: its backup does not
    // bring E4 back, and its sync removes it and the relation that named it.
    b.ok(&["backup"]);
    assert_eq!(restored_names(&env, &url, "d2"), ["E5", "E6"]);
    b.ok(&["sync"]);
    assert!(!b.text().contains("E4"), "{}", b.text());
    c.ok(&["backup"]);
    c.ok(&["sync"]);
    assert!(!c.text().contains("E4"), "{}", c.text());
    a.ok(&["sync"]);
    assert!(!a.text().contains("E4"), "{}", a.text());
}
