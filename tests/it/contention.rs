//! Contention (issue 25): a run whose push the branch keeps refusing parks its
//! commit on a ref only its host writes, exits 0, and every later run of any
//! host takes the parked commits into the branch; nothing waiting there is
//! invisible to `restore`, `sync` or `status`.

use crate::support::hosts::{Host, entities_of};
use crate::support::*;

/// The remote's `main` moves under the next push once, as when a host lands a
/// moment earlier: a `git` first on PATH sets it to `to` just before the push.
/// Returns the PATH to run with.
fn move_main_under_the_next_push(env: &Env, bare: &std::path::Path, to: &str) -> String {
    let real = which("git").expect("git on PATH");
    let shim = env.path("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let flag = env.path("move-once");
    std::fs::write(&flag, to).unwrap();
    let script = shim.join("git");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \" $* \" in *\" push \"*) if [ -f '{f}' ]; then '{git}' --git-dir '{bare}' update-ref refs/heads/main \"$(cat '{f}')\"; rm '{f}'; fi;; esac\nexec '{git}' \"$@\"\n",
            f = flag.display(),
            git = real.display(),
            bare = bare.display()
        ),
    )
    .unwrap();
    let mut mode = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&script, mode).unwrap();
    format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn rev(env: &Env, bare: &std::path::Path, name: &str) -> String {
    let out = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "rev-parse",
        "--verify",
        "-q",
        name,
    ]);
    stdout(&out).trim().to_string()
}

#[test]
fn a_refused_run_parks_its_commit_and_the_next_run_of_any_host_folds_it_in() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    let b = Host::new(&env, "b");
    a.init(&url);
    b.init(&url);
    std::fs::write(
        &a.memory,
        r#"{"type":"entity","name":"A1","entityType":"t","observations":["a"]}"#,
    )
    .unwrap();
    a.ok(&["backup"]);
    let t1 = rev(&env, &bare, "main");
    std::fs::write(
        &b.memory,
        r#"{"type":"entity","name":"B1","entityType":"t","observations":["b"]}"#,
    )
    .unwrap();
    b.ok(&["backup"]);
    let t2 = rev(&env, &bare, "main");
    // The remote goes back to T1; A's next push finds it moved to T2 meanwhile.
    env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "update-ref",
        "refs/heads/main",
        &t1,
    ]);
    let path = move_main_under_the_next_push(&env, &bare, &t2);
    std::fs::write(
        &a.memory,
        "{\"type\":\"entity\",\"name\":\"A1\",\"entityType\":\"t\",\"observations\":[\"a\"]}\n{\"type\":\"entity\",\"name\":\"A2\",\"entityType\":\"t\",\"observations\":[\"parked\"]}",
    )
    .unwrap();
    let out = env
        .mb(&a.repo, "a")
        .env("MEMORY_BACKUP_MEMORY", &a.memory)
        .env("PATH", &path)
        .args(["--json", "backup"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["parked"], "memory-backup/hosts/a", "{v}");
    assert_eq!(v["attempts"], 2, "{v}");
    assert!(v["summary"].as_str().unwrap().contains("parked"), "{v}");
    assert_eq!(
        rev(&env, &bare, "main"),
        t2,
        "the branch kept the other host's tip"
    );
    let parked = rev(&env, &bare, "refs/heads/memory-backup/hosts/a");
    assert!(!parked.is_empty());
    // The parked commit is the tip A fetched with A's own file changed, and
    // nothing else: the runs that take it in read that one file.
    assert_eq!(rev(&env, &bare, &format!("{parked}^")), t1);
    let changed = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "diff-tree",
        "--name-only",
        "--no-commit-id",
        &format!("{parked}^"),
        &parked,
    ]);
    assert_eq!(stdout(&changed).trim(), "memory-a.json");
    // Waiting there, A2 is not invisible: restore, sync and status see it.
    let c = Host::new(&env, "c");
    c.init(&url);
    c.ok(&["restore"]);
    let names: Vec<String> = entities_of(&c.text()).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["A1", "A2", "B1"]);
    let status = b.ok(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    let a_row = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "a")
        .unwrap()
        .clone();
    assert!(
        a_row["parked_commits"].as_u64().is_some_and(|n| n >= 1),
        "{v}"
    );
    // B's next run takes it in: the branch holds A2, and nothing waits.
    b.ok(&["sync"]);
    assert!(b.text().contains("A2"), "{}", b.text());
    let main = rev(&env, &bare, "main");
    let contains = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "merge-base",
        "--is-ancestor",
        &parked,
        &main,
    ]);
    assert!(
        contains.status.success(),
        "the branch does not contain the parked commit"
    );
    assert!(
        env.show(&bare, "unified-memory.json")
            .contains("\"parked\"")
    );
    let status = b.ok(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["parked_commits"].is_null()),
        "{v}"
    );
}

#[test]
fn hosts_racing_at_once_all_land_or_park_in_at_most_two_attempts_most_at_once_and_lose_nothing() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let hosts: Vec<Host<'_>> = (0..8).map(|i| Host::new(&env, &format!("h{i}"))).collect();
    for h in &hosts {
        h.init(&url);
    }
    let mut at_once = 0;
    for round in 0..3 {
        for h in &hosts {
            let lines: Vec<String> = (0..=round)
                .map(|r| format!(r#"{{"type":"entity","name":"{}-{r}","entityType":"t","observations":["x"]}}"#, h.name))
                .collect();
            std::fs::write(&h.memory, lines.join("\n")).unwrap();
        }
        let children: Vec<_> = hosts
            .iter()
            .map(|h| {
                let mut cmd = env.mb(&h.repo, &h.name);
                cmd.env("MEMORY_BACKUP_MEMORY", &h.memory)
                    .args(["--json", "backup"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_code(&out, 0);
            let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
            assert!(v["attempts"].as_u64().unwrap() <= 2, "{v}");
            // Parked at once: one attempt, this host's file alone read and made.
            if v["attempts"] == 1 && v["parked"].is_string() {
                assert!(v["unified_entries"].is_null(), "{v}");
                at_once += 1;
            }
        }
    }
    // After the first round, the parked commits of the others say that a burst
    // is under way: most runs park at once (each tries the branch with a
    // chance of 2 in 1 + the number of fresh parked commits).
    assert!(at_once > 0, "no run parked at once");
    // Each host once more, one after another: the branch holds everything.
    for h in &hosts {
        h.ok(&["backup"]);
    }
    let unified = env.show(&bare, "unified-memory.json");
    for h in &hosts {
        for r in 0..3 {
            assert!(
                unified.contains(&format!("\"{}-{r}\"", h.name)),
                "{}-{r} lost",
                h.name
            );
        }
    }
}

/// A parked commit that changes more than its host's own file (made by another
/// tool, or by hand) is read whole: what only its unified file holds reaches
/// the branch too.
#[test]
fn a_parked_commit_that_changes_other_files_too_is_read_whole() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let b = Host::new(&env, "b");
    b.init(&url);
    std::fs::write(
        &b.memory,
        r#"{"type":"entity","name":"B1","entityType":"t","observations":["b"]}"#,
    )
    .unwrap();
    b.ok(&["backup"]);
    // Host z's parked commit adds Z1 to unified, not to a file of its own.
    let wt = env.path("by-hand");
    let out = env.git(&["clone", "-q", &url, wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let unified = std::fs::read_to_string(wt.join("unified-memory.json")).unwrap();
    let z1 = r#"{"_crdt_metadata":{"host":"z","timestamp":"2026-11-21T12:00:00.000000Z","unique_id":"z_entity:Z1_2026-11-21T12:00:00.000000Z","version":1},"entityType":"t","name":"Z1","observations":["z"],"type":"entity"}"#;
    let with_z1 = unified.replacen("[\n", &format!("[\n{z1},\n"), 1);
    std::fs::write(wt.join("unified-memory.json"), with_z1).unwrap();
    for args in [
        &[
            "-c",
            "user.name=z",
            "-c",
            "user.email=z@z",
            "commit",
            "-qam",
            "by hand",
        ][..],
        &[
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/memory-backup/hosts/z",
        ][..],
    ] {
        env.git_in(&wt, args);
    }
    b.ok(&["backup"]);
    let unified = env.show(&bare, "unified-memory.json");
    assert!(unified.contains("\"Z1\""), "{unified}");
    assert!(unified.contains("\"B1\""), "{unified}");
}
