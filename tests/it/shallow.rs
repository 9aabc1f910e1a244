//! A backup over the network fetches the remote tip alone (a shallow fetch):
//! what that must not change. Against a git daemon on 127.0.0.1, since a local
//! remote's history is always fetched whole.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backup::damaged_unified_loses_nothing;
use crate::common::git::*;

fn rev(env: &Env, bare: &Path, what: &str) -> String {
    let out = env.git(&["--git-dir", bare.to_str().unwrap(), "rev-parse", what]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn parents(env: &Env, bare: &Path, what: &str) -> usize {
    let out = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "log",
        "-1",
        "--format=%P",
        what,
    ]);
    stdout(&out).split_whitespace().count()
}

fn has_object(env: &Env, repo: &Path, id: &str) -> bool {
    env.git(&["-C", repo.to_str().unwrap(), "cat-file", "-e", id])
        .status
        .success()
}

/// `r2` (host h2) backs up `n` edits, each a commit on the remote; the remote's
/// commits made by h2, oldest first.
fn h2_pushes(env: &Env, bare: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let m = env.memory("m2.json", &format!(r#"[{{"id":"b","content":"v{i}"}}]"#));
            // One day each, from 2026-11-22: `restore --at DATE` tells them apart.
            let now = format!("2026-11-{}T12:00:00Z", 22 + i);
            assert_code(
                &env.run_at("r2", "h2", &now, &["backup", "--memory", &m]),
                0,
            );
            rev(env, bare, "main")
        })
        .collect()
}

/// A served remote where h1 (`r1`) backed up `{"a": "one"}`, then h2 (`r2`)
/// pushed `n` commits: the daemon, the bare repository and its URL, h2's commits.
fn h1_then_h2(env: &Env, n: usize) -> (Daemon, PathBuf, String, Vec<String>) {
    let (daemon, bare, url) = env.served();
    let m1 = env.memory("m1.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run("r1", "h1", &["init", "--remote", &url]), 0);
    assert_code(&env.run("r1", "h1", &["backup", "--memory", &m1]), 0);
    assert_code(&env.run("r2", "h2", &["init", "--remote", &url]), 0);
    let pushed = h2_pushes(env, &bare, n);
    (daemon, bare, url, pushed)
}

#[test]
fn a_host_many_commits_behind_fetches_only_the_tip_and_makes_no_merge_commit() {
    let env = Env::new();
    let (_daemon, bare, _, h2) = h1_then_h2(&env, 4);

    let m1 = env.memory("m1.json", r#"[{"id":"a","content":"two"}]"#);
    let later = "2026-11-29T12:00:00Z";
    assert_code(
        &env.run_at("r1", "h1", later, &["backup", "--memory", &m1]),
        0,
    );
    let r1 = env.path("r1");
    // The tip came, the commits between it and h1's last push did not.
    assert!(has_object(&env, &r1, &h2[3]));
    for between in &h2[..3] {
        assert!(!has_object(&env, &r1, between), "{between} was fetched");
    }
    assert!(r1.join(".git/shallow").exists());
    // h1's last commit was on the remote already: no merge commit.
    assert_eq!(parents(&env, &bare, "main"), 1);
    assert_eq!(rev(&env, &bare, "main^"), h2[3]);
    let unified = env.show(&bare, "unified-memory.json");
    assert!(
        unified.contains("\"two\"") && unified.contains("\"v3\""),
        "{unified}"
    );

    // Nothing changed since: no commit, and the local side shows the remote tip.
    let tip = rev(&env, &bare, "main");
    let out = env.run_at("r1", "h1", later, &["backup", "--memory", &m1]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(rev(&env, &bare, "main"), tip);
    assert_eq!(env.git_in(&r1, &["rev-parse", "main"]).trim(), tip);
    assert_eq!(env.git_in(&r1, &["status", "--porcelain"]), "");
    assert_eq!(
        std::fs::read_to_string(r1.join("unified-memory.json")).unwrap(),
        unified
    );
    env.git_in(&r1, &["fsck", "--strict"]);
    env.git_in(&bare, &["fsck", "--strict"]);

    // A date and a revision that the shallow fetch left out still restore: the
    // history is fetched whole first.
    for (at, version) in [("2026-11-23", "v1"), (h2[2].as_str(), "v2")] {
        let out_file = env.path("restored.json");
        let _ = std::fs::remove_file(&out_file);
        let args = ["restore", "--at", at, "--out", out_file.to_str().unwrap()];
        assert_code(&env.run_at("r1", "h1", later, &args), 0);
        let restored = std::fs::read_to_string(&out_file).unwrap();
        let wanted = format!("\"{version}\"");
        assert!(
            restored.contains(&wanted) && restored.contains("\"one\""),
            "{at}: {restored}"
        );
    }
    assert!(has_object(&env, &r1, &h2[0]));
}

#[test]
fn a_local_commit_that_was_not_pushed_stays_in_history_after_a_shallow_fetch() {
    let env = Env::new();
    let (_daemon, bare, _, _) = h1_then_h2(&env, 1);
    // h1 commits without pushing (as a run that could not reach the remote).
    let m1 = env.memory("m1.json", r#"[{"id":"a","content":"two"}]"#);
    assert_code(
        &env.run("r1", "h1", &["backup", "--no-push", "--memory", &m1]),
        0,
    );
    let kept = env.git_in(&env.path("r1"), &["rev-parse", "main"]);
    h2_pushes(&env, &bare, 2);

    assert_code(&env.run("r1", "h1", &["backup", "--memory", &m1]), 0);
    assert_eq!(parents(&env, &bare, "main"), 2, "not a merge commit");
    assert_eq!(rev(&env, &bare, "main^2"), kept.trim());
    env.git_in(&bare, &["fsck", "--strict"]);
}

#[test]
fn a_damaged_unified_file_takes_its_entries_from_history_a_shallow_fetch_left_out() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    // h2 joins while the remote is empty: its first fetch is a shallow one, of
    // the damaged tip, and the unified files before it are left out.
    assert_code(&env.run("r2", "h2", &["init", "--remote", &url]), 0);
    damaged_unified_loses_nothing(&env, &bare, &url, ("r2", "h2"));
}

#[test]
fn a_stale_shallow_lock_left_by_a_killed_run_does_not_block_the_next() {
    let env = Env::new();
    let (_daemon, bare, _, h2) = h1_then_h2(&env, 1);
    // As a run killed while libgit2 rewrote `shallow` leaves it.
    let lock = env.path("r1/.git/shallow.lock");
    let file = std::fs::File::create(&lock).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    drop(file);

    let m1 = env.memory("m1.json", r#"[{"id":"a","content":"two"}]"#);
    let out = env.run("r1", "h1", &["backup", "--memory", &m1]);
    assert_code(&out, 0);
    assert!(!lock.exists(), "the stale lock is still there");
    assert_eq!(rev(&env, &bare, "main^"), h2[0]);
}
