//! `restore`: a memory file back from the backup, folded to one entry per
//! identity, at the tip, a revision or a date; it never destroys.

use std::path::Path;
use std::process::Output;

use crate::support::SmallDisk;
use crate::support::*;

const ADA_A: &str =
    r#"{"type":"entity","name":"Ada","entityType":"person","observations":["likes tea"]}"#;
const ADA_B: &str = r#"{"type":"entity","name":"Ada","entityType":"engineer","observations":["writes Rust","likes tea"]}"#;
const RUST: &str = r#"{"type":"entity","name":"Rust","entityType":"language","observations":[]}"#;
const USES: &str = r#"{"type":"relation","from":"Ada","to":"Rust","relationType":"uses"}"#;

/// Hosts a (on Jan 1) and b (on Feb 1) back up MCP graphs that share the entity
/// Ada; a third repository `rc` is set up on the same remote.
fn two_hosts(env: &Env) -> String {
    let bare = env.bare("remote.git");
    let url = bare.display().to_string();
    let ma = env.memory("a.jsonl", &format!("{ADA_A}\n{USES}\n"));
    let mb = env.memory("b.jsonl", &format!("{ADA_B}\n{RUST}\n"));
    for (repo, host, memory, now) in [
        ("ra", "a", &ma, "2026-01-01T10:00:00Z"),
        ("rb", "b", &mb, "2026-02-01T10:00:00Z"),
    ] {
        assert_code(&env.run_at(repo, host, now, &["init", "--remote", &url]), 0);
        assert_code(
            &env.run_at(repo, host, now, &["backup", "--memory", memory]),
            0,
        );
    }
    assert_code(&env.run_as("rc", "c", &["init", "--remote", &url]), 0);
    url
}

fn restore(env: &Env, args: &[&str]) -> Output {
    env.run_as("rc", "c", &[&["restore"], args].concat())
}

fn read(env: &Env, rel: &str) -> String {
    std::fs::read_to_string(env.path(rel)).unwrap()
}

#[test]
fn restore_folds_every_host_into_one_graph_at_the_memory_files_path() {
    let env = Env::new();
    two_hosts(&env);
    // No --out: the memory file is found as backup finds it.
    let out = env
        .mb("rc", "c")
        .env("MEMORY_FILE_PATH", env.path("c.jsonl"))
        .arg("restore")
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("restored 3 entries"),
        "{}",
        stdout(&out)
    );
    // Entities, then relations, in the MCP server's own key order; Ada holds the
    // observations of both hosts, oldest first, and the newest entityType.
    let ada = r#"{"type":"entity","name":"Ada","entityType":"engineer","observations":["likes tea","writes Rust"]}"#;
    // Lines joined as the server joins them: no newline after the last.
    assert_eq!(read(&env, "c.jsonl"), format!("{ada}\n{RUST}\n{USES}"));
}

#[test]
fn restore_from_one_host_gives_only_that_hosts_entries() {
    let env = Env::new();
    two_hosts(&env);
    assert_code(&restore(&env, &["--from", "a", "--out", "a-only.jsonl"]), 0);
    assert_eq!(read(&env, "a-only.jsonl"), format!("{ADA_A}\n{USES}"));

    let out = restore(&env, &["--from", "nobody", "--out", "x.jsonl"]);
    assert_code(&out, 66);
    let err = stderr(&out);
    assert!(
        err.contains("memory-nobody.json") && err.contains("hosts there: a, b"),
        "{err}"
    );
    assert!(!env.path("x.jsonl").exists());
}

#[test]
fn restore_at_a_commit_or_a_date_gives_the_earlier_graph() {
    let env = Env::new();
    two_hosts(&env);
    let first = env
        .git_in(&env.path("ra"), &["rev-parse", "main"])
        .trim()
        .to_string();
    let earlier = format!("{ADA_A}\n{USES}");
    for at in [first.as_str(), "2026-01-15", "2026-01-01T10:00:00Z"] {
        let out = restore(&env, &["--at", at, "--out", "then.jsonl"]);
        assert_code(&out, 0);
        assert_eq!(read(&env, "then.jsonl"), earlier, "--at {at}");
        std::fs::remove_file(env.path("then.jsonl")).unwrap();
    }
    // The day of the second backup includes it.
    assert_code(
        &restore(&env, &["--at", "2026-02-01", "--out", "now.jsonl"]),
        0,
    );
    assert!(read(&env, "now.jsonl").contains("writes Rust"));

    let out = restore(&env, &["--at", "2025-12-31", "--out", "x.jsonl"]);
    assert_code(&out, 66);
    assert!(stderr(&out).contains("no backup was made at or before"));
    let out = restore(&env, &["--at", "no-such-rev", "--out", "x.jsonl"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--at no-such-rev"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("x.jsonl").exists());
}

#[test]
fn restore_over_a_different_file_keeps_it_as_a_bak_and_over_the_same_writes_nothing() {
    let env = Env::new();
    two_hosts(&env);
    let old = "{\"type\":\"entity\",\"name\":\"Old\",\"entityType\":\"x\",\"observations\":[]}\n";
    env.memory("mine.jsonl", old);
    let out = restore(&env, &["--out", "mine.jsonl"]);
    assert_code(&out, 0);
    // The clock is fixed: the name is known.
    let bak = "mine.jsonl.20261121T120000Z.bak";
    assert!(stdout(&out).contains(bak), "{}", stdout(&out));
    assert_eq!(read(&env, bak), old);
    let restored = read(&env, "mine.jsonl");
    assert!(restored.contains("\"Ada\""));

    // Again: the same content, so nothing is written and no new .bak appears.
    let out = restore(&env, &["--out", "mine.jsonl"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("nothing written"), "{}", stdout(&out));
    let baks = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bak")
        })
        .count();
    assert_eq!(baks, 1);
    assert_eq!(read(&env, "mine.jsonl"), restored);

    // A second different restore in the same second gets a name of its own.
    env.memory("mine.jsonl", old);
    let out = restore(&env, &["--out", "mine.jsonl"]);
    assert_code(&out, 0);
    assert_eq!(read(&env, "mine.jsonl.20261121T120000Z-1.bak"), old);
}

#[test]
fn restore_keeps_the_files_format_and_with_metadata_keeps_each_lineage() {
    let env = Env::new();
    let url = two_hosts(&env);
    // An existing JSON array stays a JSON array.
    env.memory("array.json", "[]");
    assert_code(&restore(&env, &["--out", "array.json"]), 0);
    let v: serde_json::Value = serde_json::from_str(&read(&env, "array.json")).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(v[0].get("_crdt_metadata").is_none());
    // --format overrides.
    assert_code(
        &restore(&env, &["--out", "forced.json", "--format", "json"]),
        0,
    );
    assert!(read(&env, "forced.json").starts_with("[\n{"));

    // With metadata, for reading: each entry shows the lineage it came from.
    assert_code(
        &restore(
            &env,
            &["--out", "kept.json", "--format", "json", "--keep-metadata"],
        ),
        0,
    );
    let kept: serde_json::Value = serde_json::from_str(&read(&env, "kept.json")).unwrap();
    let uids: Vec<&str> = kept
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["_crdt_metadata"]["unique_id"].as_str().unwrap())
        .collect();
    assert_eq!(uids.len(), 3);
    let unified = unique_ids(&env.show(Path::new(&url), "unified-memory.json"));
    for uid in &uids {
        assert!(unified.iter().any(|u| u == uid), "{uid} not in unified");
    }
    // A host that backs up such a file never versions another host's lineage:
    // the metadata in a memory file is ignored.
    let out = env.run_as("rc", "c", &["backup", "--memory", "kept.json"]);
    assert_code(&out, 0);
    let host_c = env.show(Path::new(&url), "memory-c.json");
    assert!(
        unique_ids(&host_c).iter().all(|u| u.starts_with("c_")),
        "{host_c}"
    );
    // Restored into its memory file, a host backs up nothing new.
    let restored = |args: &[&str]| {
        env.mb("rd", "d")
            .env("MEMORY_BACKUP_MEMORY", env.path("d.jsonl"))
            .args(args)
            .output()
            .unwrap()
    };
    assert_code(&restored(&["init", "--remote", &url]), 0);
    assert_code(&restored(&["restore"]), 0);
    assert_code(&restored(&["backup"]), 0);
    assert_eq!(
        unique_ids(&env.show(Path::new(&url), "memory-d.json")),
        Vec::<String>::new()
    );
}

#[test]
fn restore_works_offline_from_the_local_repository() {
    let env = Env::new();
    two_hosts(&env);
    std::fs::rename(env.path("remote.git"), env.path("gone.git")).unwrap();
    let out = restore(&env, &["--out", "offline.jsonl"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("restoring from the local repository"));
    assert!(read(&env, "offline.jsonl").contains("writes Rust"));
}

#[test]
fn restore_without_a_repository_is_a_configuration_error() {
    let env = Env::new();
    let out = env.run_as("nothing-here", "c", &["restore", "--out", "x.jsonl"]);
    assert_code(&out, 78);
    assert!(
        stderr(&out).contains("no backup repository"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("x.jsonl").exists());
}

#[test]
fn restore_refuses_a_source_file_that_does_not_parse_and_writes_nothing() {
    let env = Env::new();
    let memory = env.memory("m.jsonl", &format!("{RUST}\n"));
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let repo = env.path("r");
    env.commit_by_hand(
        &repo,
        &[("unified-memory.json", b"[\n{\"broken\":\n")],
        "damage",
    );
    env.memory("out.jsonl", "keep me\n");
    let out = env.run_as("r", "h", &["restore", "--out", "out.jsonl"]);
    assert_code(&out, 65);
    assert!(
        stderr(&out).contains(":unified-memory.json:3:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&env, "out.jsonl"), "keep me\n");
    // The host's own file still restores.
    assert_code(
        &env.run_as("r", "h", &["restore", "--from", "h", "--out", "h.jsonl"]),
        0,
    );
    assert_eq!(read(&env, "h.jsonl"), RUST);
}

#[test]
fn restore_on_a_full_disk_exits_74_and_keeps_the_old_file() {
    let env = Env::new();
    two_hosts(&env);
    let Some(disk) = SmallDisk::mount(&env.path("small"), "8k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let old = "x".repeat(6000);
    let target = disk.0.join("memory.jsonl");
    std::fs::write(&target, &old).unwrap();
    let out = restore(&env, &["--out", target.to_str().unwrap()]);
    assert_code(&out, 74);
    assert!(stderr(&out).contains("write failed"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), old);
}
