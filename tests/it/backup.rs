//! End-to-end tests of `init` and `backup` against remotes by path, `file://`
//! and `git://` (a git daemon on 127.0.0.1 that each test starts and stops).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Three hosts back up to `url`; the remote then holds every host file and a
/// unified file equal to what `merge` makes of them.
fn three_hosts_back_up(env: &Env, bare: &Path, url: &str) {
    let memories = [
        env.memory("m1.json", r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#),
        env.memory(
            "m2.json",
            "{\"type\":\"entity\",\"name\":\"Ada\",\"entityType\":\"person\",\"observations\":[\"likes Rust\"]}\n",
        ),
        env.memory("m3.json", r#"[{"id":"c","content":"three"}]"#),
    ];
    for (i, memory) in memories.iter().enumerate() {
        let (repo, host) = (format!("r{i}"), format!("h{i}"));
        assert_code(&env.run_as(&repo, &host, &["init", "--remote", url]), 0);
        let out = env.run_as(&repo, &host, &["backup", "--memory", memory]);
        assert_code(&out, 0);
        assert!(stdout(&out).contains("pushed"), "{}", stdout(&out));
    }
    // The first host again: it picks up the others' files.
    assert_code(
        &env.run_as("r0", "h0", &["backup", "--memory", &memories[0]]),
        0,
    );

    let check = env.path("check");
    std::fs::create_dir_all(&check).unwrap();
    for h in ["h0", "h1", "h2"] {
        let name = format!("memory-{h}.json");
        std::fs::write(check.join(&name), env.show(bare, &name)).unwrap();
    }
    let merged = env.path("merged.json");
    let out = env.run_as(
        "none",
        "h0",
        &[
            "merge",
            check.to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
        ],
    );
    assert_code(&out, 0);
    let unified = env.show(bare, "unified-memory.json");
    assert_eq!(unified, std::fs::read_to_string(&merged).unwrap());
    assert_eq!(unique_ids(&unified).len(), 4);
    // Every host's working tree shows the same unified file after its last run.
    let local = std::fs::read_to_string(env.path("r0/unified-memory.json")).unwrap();
    assert_eq!(local, unified);
    fsck(env, bare);
}

fn fsck(env: &Env, repo: &Path) {
    let out = env.git(&["--git-dir", repo.to_str().unwrap(), "fsck", "--no-dangling"]);
    assert!(out.status.success(), "fsck: {}", stderr(&out));
    assert!(
        !stderr(&out).contains("error") && !stdout(&out).contains("missing"),
        "fsck: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn hosts_back_up_to_a_bare_repository_by_path() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    three_hosts_back_up(&env, &bare, bare.to_str().unwrap());
}

#[test]
fn hosts_back_up_to_a_file_url() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    three_hosts_back_up(&env, &bare, &format!("file://{}", bare.display()));
}

#[test]
fn hosts_back_up_to_a_git_daemon() {
    let env = Env::new();
    let (daemon, bare, _) = env.served();
    three_hosts_back_up(&env, &bare, &daemon.url("remote.git"));
}

fn commit_count(env: &Env, bare: &Path) -> usize {
    let out = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "rev-list",
        "--count",
        "main",
    ]);
    stdout(&out).trim().parse().unwrap_or(0)
}

#[test]
fn an_unchanged_memory_makes_no_commit_and_an_edit_is_a_one_line_change() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    let memory = env.memory_of("m.json", &ids, "note");
    assert_code(&env.run_as("r", "laptop", &["init", "--remote", url]), 0);
    assert_code(
        &env.run_as("r", "laptop", &["backup", "--memory", &memory]),
        0,
    );
    assert_eq!(commit_count(&env, &bare), 1);

    let out = env.run_as("r", "laptop", &["backup", "--memory", &memory]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(
        commit_count(&env, &bare),
        1,
        "an unchanged memory made a commit"
    );

    let text = std::fs::read_to_string(&memory).unwrap();
    std::fs::write(&memory, text.replace("note n7", "edited n7")).unwrap();
    let out = env
        .mb("r", "laptop")
        .env("MEMORY_BACKUP_NOW", "2026-11-21T11:00:00Z")
        .args(["backup", "--memory", &memory])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("0 new, 1 changed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(commit_count(&env, &bare), 2);
    // One entry out, one in; the comma of the line that was last may move.
    let lines = |rev: &str| -> Vec<String> {
        let text = stdout(&env.git(&[
            "--git-dir",
            url,
            "show",
            &format!("{rev}:memory-laptop.json"),
        ]));
        text.lines()
            .map(|l| l.trim_end_matches(',').to_string())
            .collect()
    };
    let (old, new) = (lines("main~1"), lines("main"));
    let gone: Vec<_> = old.iter().filter(|l| !new.contains(l)).collect();
    let added: Vec<_> = new.iter().filter(|l| !old.contains(l)).collect();
    assert_eq!((gone.len(), added.len()), (1, 1), "{gone:?} {added:?}");
    assert!(gone[0].contains("note n7") && added[0].contains("edited n7"));
    let host_file = env.show(&bare, "memory-laptop.json");
    assert!(host_file.contains(r#""version":2},"content":"edited n7""#));
}

#[test]
fn a_first_backup_needs_no_setup_and_a_later_remote_gets_both_sides() {
    let env = Env::new();
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    // No repository, no --repo: the default under XDG_DATA_HOME.
    let data = env.path("data");
    let mut cmd = std::process::Command::new(BIN);
    env.hermetic(&mut cmd);
    let out = cmd
        .env("XDG_DATA_HOME", &data)
        .args(["--host", "h", "--log-dir"])
        .arg(env.path("logs"))
        .args(["backup", "--memory", &memory])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(stdout(&out).contains("no remote set"), "{}", stdout(&out));
    let repo = data.join("memory-backup/repo");
    assert!(repo.join("memory-h.json").is_file());
    assert!(repo.join(".git").is_dir());

    // Another host already backs up to a remote.
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let other = env.memory("o.json", r#"[{"id":"b","content":"two"}]"#);
    assert_code(&env.run_as("o", "other", &["init", "--remote", url]), 0);
    assert_code(
        &env.run_as("o", "other", &["backup", "--memory", &other]),
        0,
    );

    let repo_arg = repo.to_str().unwrap();
    let mut init = std::process::Command::new(BIN);
    env.hermetic(&mut init);
    let out = init
        .args(["--repo", repo_arg, "--host", "h", "--log-dir"])
        .arg(env.path("logs"))
        .args(["init", "--remote", url])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let mut backup = std::process::Command::new(BIN);
    env.hermetic(&mut backup);
    let out = backup
        .args(["--repo", repo_arg, "--host", "h", "--log-dir"])
        .arg(env.path("logs"))
        .args(["backup", "--memory", &memory])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let unified = env.show(&bare, "unified-memory.json");
    assert_eq!(ids(&unified), ["a", "b"]);
    // The local commit made before the remote existed is in the remote's history.
    let log = stdout(&env.git(&["--git-dir", url, "log", "--format=%s", "main"]));
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[test]
fn init_again_changes_nothing_and_a_new_remote_is_set() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let out = env.run_as("r", "h", &["init", "--remote", url]);
    assert_code(&out, 0);
    let config = std::fs::read(env.path("r/.git/config")).unwrap();
    let out = env.run_as("r", "h", &["init", "--remote", url]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("nothing changed"), "{}", stdout(&out));
    assert_eq!(std::fs::read(env.path("r/.git/config")).unwrap(), config);
    let other = env.bare("other.git");
    let out = env.run_as("r", "h", &["init", "--remote", other.to_str().unwrap()]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("remote changed from"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn init_clones_a_remote_that_has_commits() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r1", "h1", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r1", "h1", &["backup", "--memory", &memory]), 0);
    let out = env.run_as("r2", "h2", &["init", "--remote", url]);
    assert_code(&out, 0);
    assert!(env.path("r2/memory-h1.json").is_file());
    let status = env.git_in(&env.path("r2"), &["status", "--porcelain"]);
    assert_eq!(status, "", "the clone's working tree is not clean");
}

#[test]
fn commits_get_an_author_without_any_git_identity() {
    let env = Env::new();
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(
        &env.run_as("r", "ci-runner", &["backup", "--memory", &memory]),
        0,
    );
    let who = env.git_in(&env.path("r"), &["log", "-1", "--format=%an <%ae>|%s"]);
    assert_eq!(
        who.trim(),
        "memory-backup <memory-backup@ci-runner>|backup from ci-runner: 1 new, 0 changed, 0 deleted; unified 1 entries"
    );
    // With an identity set in the repository, that one is used.
    env.git_in(&env.path("r"), &["config", "user.name", "Ada"]);
    env.git_in(&env.path("r"), &["config", "user.email", "ada@example.org"]);
    let memory = env.memory("m.json", r#"[{"id":"a","content":"two"}]"#);
    assert_code(
        &env.run_as("r", "ci-runner", &["backup", "--memory", &memory]),
        0,
    );
    let who = env.git_in(&env.path("r"), &["log", "-1", "--format=%an <%ae>"]);
    assert_eq!(who.trim(), "Ada <ada@example.org>");
    let status = env.git_in(&env.path("r"), &["status", "--porcelain"]);
    assert_eq!(status, "", "the working tree does not show the commit");
}

#[test]
fn a_linked_worktree_of_the_backup_repository_backs_up_and_pushes() {
    // In a `git worktree add` checkout, objects and branch refs live in the
    // common git folder; only HEAD and the index are the worktree's own.
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let (main, wt) = (env.path("r"), env.path("wt"));
    let m = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    env.git_in(
        &main,
        &["worktree", "add", "-q", "-b", "wt", wt.to_str().unwrap()],
    );

    let m = env.memory("m2.json", r#"[{"id":"b","content":"two"}]"#);
    assert_code(
        &env.run_as("wt", "h2", &["backup", "--no-push", "--memory", &m]),
        0,
    );
    let log = env.git_in(&main, &["log", "-1", "--format=%s", "wt"]);
    assert!(log.starts_with("backup from h2: 1 new"), "{log}");
    assert_eq!(env.git_in(&wt, &["status", "--porcelain"]), "");

    assert_code(&env.run_as("wt", "h2", &["backup", "--memory", &m]), 0);
    let pushed = env.git(&["--git-dir", url, "rev-parse", "wt"]);
    assert_eq!(stdout(&pushed), env.git_in(&main, &["rev-parse", "wt"]));
    let file = env.git(&["--git-dir", url, "show", "wt:memory-h2.json"]);
    assert!(stdout(&file).contains("\"two\""), "{}", stderr(&file));
    env.git_in(&main, &["fsck", "--strict"]);
}

#[test]
fn output_summary_json_quiet_log_file_and_last_run() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["-q", "init", "--remote", url]), 0);
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 0);
    let summary = stdout(&out);
    assert_eq!(summary.lines().count(), 1);
    assert!(
        summary
            .starts_with("backup from h: 1 new, 0 changed, 0 deleted; unified 1 entries; pushed "),
        "{summary}"
    );
    assert_eq!(stderr(&out), "");

    let memory = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"x"}]"#,
    );
    let out = env.run_as("r", "h", &["-q", "backup", "--memory", &memory]);
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "", "-q printed on success");
    assert_eq!(stderr(&out), "");

    let out = env.run_as("r", "h", &["--json", "backup", "--memory", &memory]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["command"], "backup");
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["unified_entries"], 2);
    assert_eq!(v["attempts"], 0);

    let logs = env.path("logs-h");
    let last = std::fs::read_dir(&logs)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("last-run"))
        .expect("a last-run file");
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.path()).unwrap()).unwrap();
    assert_eq!(last["command"], "backup");
    assert_eq!(last["ok"], true);
    let log: String = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(".log"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(log.contains("push attempt 1 to"), "{log}");
    assert!(log.contains("backup from h: 1 new"), "{log}");
}

#[test]
fn bad_memory_writes_nothing() {
    let env = Env::new();
    let memory = env.memory("m.json", "[{\"id\":\"a\"},\n 3]");
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 65);
    assert!(!env.path("r").exists(), "a repository was made");
    let out = env.run_as("r", "h", &["backup", "--memory", "/nonexistent/m.json"]);
    assert_code(&out, 66);
}

/// A bare remote and host `h`'s repository `r`, backed up once with entry `a`.
/// Every file below `dir`, each as its path with its size, modification time
/// and a hash of its bytes.
fn every_file_under(dir: &Path) -> Vec<String> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                todo.push(e.path());
                continue;
            }
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap().hash(&mut h);
            let path = e.path().strip_prefix(dir).unwrap().display().to_string();
            let mtime = meta.modified().unwrap();
            out.push(format!("{path} {} {mtime:?} {:x}", meta.len(), h.finish()));
        }
    }
    out.sort();
    out
}

fn backed_up_once(env: &Env) -> (std::path::PathBuf, std::path::PathBuf) {
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let m = env.memory("first.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    (bare, env.path("r"))
}

#[test]
fn a_working_tree_file_edited_to_the_same_size_is_not_taken_for_the_tip() {
    // A file of the working tree stands in for the tip's blob only when its hash
    // is the blob's.
    let env = Env::new();
    let (bare, r) = backed_up_once(&env);
    for name in ["unified-memory.json", "memory-h.json"] {
        let len = std::fs::metadata(r.join(name)).unwrap().len() as usize;
        std::fs::write(r.join(name), "x".repeat(len)).unwrap();
    }
    let m = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"2"}]"#,
    );
    let out = env.run_as("r", "h", &["backup", "--memory", &m]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("1 new, 0 changed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["a", "b"]);
    assert_eq!(ids(&env.show(&bare, "memory-h.json")), ["a", "b"]);
    // And the working tree shows the pushed files again.
    assert_eq!(
        std::fs::read_to_string(r.join("unified-memory.json")).unwrap(),
        env.show(&bare, "unified-memory.json")
    );
}

#[test]
fn bad_memory_moves_nothing_in_a_repository_with_a_remote() {
    // The first fetch runs while the memory file is read; bad input still stops
    // the run before any ref or file changes.
    let env = Env::new();
    let (bare, r) = backed_up_once(&env);
    let url = bare.to_str().unwrap();
    let before = |what: &str| env.git_in(&r, &["rev-parse", what]);
    let (local, remote) = (
        before("main"),
        env.git(&["--git-dir", url, "rev-parse", "main"]),
    );
    let host_file = std::fs::read(r.join("memory-h.json")).unwrap();
    // Another host moves the remote meanwhile: the fetch has something to get.
    let other = env.memory("other.json", r#"[{"id":"b","content":"two"}]"#);
    assert_code(&env.run_as("r2", "h2", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r2", "h2", &["backup", "--memory", &other]), 0);
    let remote_after_h2 = stdout(&env.git(&["--git-dir", url, "rev-parse", "main"]));
    assert_ne!(remote_after_h2, stdout(&remote));

    let bad = env.memory("bad.json", "[{\"id\":\"a\"},\n 3]");
    let snapshot = every_file_under(&r);
    let out = env.run_as("r", "h", &["backup", "--memory", &bad]);
    assert_code(&out, 65);
    assert!(stderr(&out).contains("bad.json:2:"), "{}", stderr(&out));
    // Not even the objects of the fetch: the repository is as it was, file by file.
    let after = every_file_under(&r);
    let changed: Vec<_> = after.iter().filter(|f| !snapshot.contains(f)).collect();
    let gone: Vec<_> = snapshot.iter().filter(|f| !after.contains(f)).collect();
    assert!(
        changed.is_empty() && gone.is_empty(),
        "the repository changed: new or changed {changed:?}, gone {gone:?}"
    );
    assert_eq!(before("main"), local, "the local branch moved");
    assert_eq!(
        stdout(&env.git(&["--git-dir", url, "rev-parse", "main"])),
        remote_after_h2,
        "the remote moved"
    );
    assert_eq!(std::fs::read(r.join("memory-h.json")).unwrap(), host_file);
}

#[test]
fn local_commits_that_the_remote_lacks_stay_in_history() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let m1 = env.memory("m1.json", r#"[{"id":"a","content":"one"}]"#);
    let m2 = env.memory("m2.json", r#"[{"id":"b","content":"two"}]"#);
    assert_code(&env.run_as("r1", "h1", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r2", "h2", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r1", "h1", &["backup", "--memory", &m1]), 0);
    // h2 commits locally (as a run that could not push would), and by hand.
    assert_code(
        &env.run_as("r2", "h2", &["backup", "--no-push", "--memory", &m2]),
        0,
    );
    let r2 = env.path("r2");
    env.commit_by_hand(&r2, &[("notes.txt", b"by hand\n")], "manual");
    let local_tip = env.git_in(&r2, &["rev-parse", "main"]);
    // h1 pushes again meanwhile.
    let m1 = env.memory(
        "m1.json",
        r#"[{"id":"a","content":"one"},{"id":"c","content":"3"}]"#,
    );
    assert_code(&env.run_as("r1", "h1", &["backup", "--memory", &m1]), 0);

    let out = env.run_as("r2", "h2", &["backup", "--memory", &m2]);
    assert_code(&out, 0);
    let parents = stdout(&env.git(&["--git-dir", url, "log", "-1", "--format=%P", "main"]));
    assert_eq!(parents.split_whitespace().count(), 2, "not a merge commit");
    let merged = env.git(&[
        "--git-dir",
        url,
        "merge-base",
        "--is-ancestor",
        local_tip.trim(),
        "main",
    ]);
    assert!(merged.status.success(), "the local commits were dropped");
    assert_eq!(env.show(&bare, "notes.txt"), "by hand\n");
    assert_eq!(
        ids(&env.show(&bare, "unified-memory.json")),
        ["a", "b", "c"]
    );
}

#[test]
fn a_corrupt_host_file_on_the_remote_is_skipped_and_its_entries_survive() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let evil = env.memory("e.json", r#"[{"id":"e1","content":"evil one"}]"#);
    assert_code(&env.run_as("re", "evil", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("re", "evil", &["backup", "--memory", &evil]), 0);
    // Someone pushes a broken memory-evil.json.
    push_by_hand(&env, url, "memory-evil.json", "[{\"broken\": \n");

    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("memory-evil.json"),
        "{}",
        stderr(&out)
    );
    let unified = env.show(&bare, "unified-memory.json");
    assert_eq!(ids(&unified), ["a", "e1"]);
    // The broken file is left as it is, not overwritten.
    assert_eq!(env.show(&bare, "memory-evil.json"), "[{\"broken\": \n");
}

/// Pushes `content` as `name` to the remote from a plain git clone.
fn push_by_hand(env: &Env, url: &str, name: &str, content: &str) {
    let clone = env.path("hand");
    let _ = std::fs::remove_dir_all(&clone);
    let out = env.git(&["clone", "-q", "-b", "main", url, clone.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.commit_by_hand(&clone, &[(name, content.as_bytes())], "by hand");
    env.git_in(&clone, &["push", "-q", "origin", "main"]);
}

#[test]
fn a_damaged_unified_file_on_the_remote_loses_nothing_it_held() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    let m = env.memory("m.json", r#"[{"id":"n1","c":"x"},{"id":"n2","c":"y"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    // n1 leaves the memory file: from now on only unified holds it.
    let m = env.memory("m.json", r#"[{"id":"n2","c":"y"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    push_by_hand(&env, url, "unified-memory.json", "[\n{\"broken\n");
    let m = env.memory("m.json", r#"[{"id":"n2","c":"y"},{"id":"n3","c":"z"}]"#);
    let out = env.run_as("r", "h", &["backup", "--memory", &m]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("unified-memory.json"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        ids(&env.show(&bare, "unified-memory.json")),
        ["n1", "n2", "n3"]
    );
}

#[test]
fn entries_without_metadata_in_another_host_file_are_not_deleted() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    let m = env.memory("m.json", r#"[{"id":"a","c":"x"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    let other = "[\n{\"_crdt_metadata\":{\"host\":\"b\",\"timestamp\":\"2026-11-20T10:00:00.000000Z\",\"unique_id\":\"b_b1_2026-11-20T10:00:00.000000Z\",\"version\":1},\"id\":\"b1\"},\n{\"content\":\"no metadata\",\"id\":\"b2\"}\n]\n";
    push_by_hand(&env, url, "memory-b.json", other);
    let m = env.memory("m.json", r#"[{"id":"a","c":"x2"}]"#);
    let out = env.run_as("r", "h", &["backup", "--memory", &m]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("memory-b.json:3"), "{}", stderr(&out));
    // b's file is left as it is; what parsed of it is in unified.
    assert_eq!(env.show(&bare, "memory-b.json"), other);
    assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["a", "b1"]);
}

/// A memory of 600 entries of random text, which does not compress: about
/// 900 KB of objects.
fn incompressible_memory(env: &Env, name: &str) -> String {
    let mut seed = 1u64;
    let big: Vec<String> = (0..600)
        .map(|i| {
            let text: String = (0..1500)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    char::from(b'a' + (seed >> 59) as u8 % 26)
                })
                .collect();
            format!(r#"{{"id":"n{i}","c":"{text}"}}"#)
        })
        .collect();
    env.memory(name, &format!("[{}]", big.join(",")))
}

#[test]
fn a_full_disk_while_fetching_is_exit_74_at_once_not_a_retry() {
    let env = Env::new();
    let base = env.path("srv");
    std::fs::create_dir_all(&base).unwrap();
    env.bare("srv/remote.git");
    let daemon = Daemon::start(&env, &base);
    let url = daemon.url("remote.git");
    // Another host fills the remote with objects that do not fit on this one.
    let big = incompressible_memory(&env, "b.json");
    assert_code(&env.run_as("other", "o", &["init", "--remote", &url]), 0);
    assert_code(&env.run_as("other", "o", &["backup", "--memory", &big]), 0);
    let Some(_disk) = crate::support::SmallDisk::mount(&env.path("small"), "400k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let small = env.memory("s.json", r#"[{"id":"a","c":"x"}]"#);
    let repo = "small/repo";
    let out = env.run_as(repo, "h", &["init", "--remote", &url]);
    assert_code(&out, 74);
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    let out = env.run_as(
        repo,
        "h",
        &["backup", "--memory", &small, "--max-elapsed", "60"],
    );
    // 74, not 75 after retrying until --max-elapsed: no retry can make room.
    assert_code(&out, 74);
    assert!(stderr(&out).contains("make room"), "{}", stderr(&out));
    // Nothing was committed.
    let log = env.git(&[
        "-C",
        env.path(repo).to_str().unwrap(),
        "rev-parse",
        "--verify",
        "-q",
        "main",
    ]);
    assert!(!log.status.success(), "a commit was made: {}", stdout(&log));
}

/// A first fetch of many commits goes into a pack that libgit2 writes: a full
/// disk there is 74 as well, with the system's reason.
#[test]
fn a_full_disk_while_fetching_many_commits_is_exit_74_too() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let small = env.memory("s.json", r#"[{"id":"a","c":"x"}]"#);
    assert_code(&env.run_as("other", "o", &["init", "--remote", &url]), 0);
    // Ten commits, more objects than a fetch keeps loose, the last large.
    for i in 0..9 {
        let m = env.memory("o.json", &format!(r#"[{{"id":"o","c":"{i}"}}]"#));
        assert_code(&env.run_as("other", "o", &["backup", "--memory", &m]), 0);
    }
    let big = incompressible_memory(&env, "b.json");
    assert_code(&env.run_as("other", "o", &["backup", "--memory", &big]), 0);
    let Some(_disk) = crate::support::SmallDisk::mount(&env.path("small"), "400k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let repo = "small/repo";
    assert_code(&env.run_as(repo, "h", &["init"]), 0);
    let out = env.git_in(&env.path(repo), &["remote", "add", "origin", &url]);
    assert!(out.is_empty());
    let out = env.run_as(
        repo,
        "h",
        &["backup", "--memory", &small, "--max-elapsed", "60"],
    );
    assert_code(&out, 74);
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
}

#[test]
fn a_full_disk_while_committing_is_exit_74_and_the_repository_stays_usable() {
    let env = Env::new();
    let Some(_disk) = crate::support::SmallDisk::mount(&env.path("small"), "400k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let small = env.memory("s.json", r#"[{"id":"a","c":"x"}]"#);
    assert_code(
        &env.run_as("small/repo", "h", &["backup", "--memory", &small]),
        0,
    );
    // Random text does not compress: about 900 KB of objects.
    let big = incompressible_memory(&env, "b.json");
    let out = env.run_as("small/repo", "h", &["backup", "--memory", &big]);
    assert_code(&out, 74);
    assert!(stderr(&out).contains("write failed"), "{}", stderr(&out));
    // With the small memory again, the repository works as before.
    assert_code(
        &env.run_as("small/repo", "h", &["backup", "--memory", &small]),
        0,
    );
}

#[test]
fn an_edit_from_a_host_whose_clock_is_behind_still_wins() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let fast = env.memory("fast.json", r#"[{"id":"n","content":"original"}]"#);
    assert_code(&env.run_as("rf", "fast", &["init", "--remote", url]), 0);
    let at = |repo: &str, host: &str, now: &str, args: &[&str]| {
        let out = env.run_at(repo, host, now, args);
        assert_code(&out, 0);
    };
    at(
        "rf",
        "fast",
        "2026-11-21T12:00:00Z",
        &["backup", "--memory", &fast],
    );
    // The slow host, an hour behind, gets the entry and edits it.
    let slow = env.memory("slow.json", "");
    assert_code(&env.run_as("rs", "slow", &["init", "--remote", url]), 0);
    at(
        "rs",
        "slow",
        "2026-11-21T11:00:00Z",
        &["sync", "--memory", &slow],
    );
    let text = std::fs::read_to_string(&slow).unwrap();
    assert!(text.contains("original"), "{text}");
    env.memory("slow.json", &text.replace("original", "edited"));
    at(
        "rs",
        "slow",
        "2026-11-21T11:00:00Z",
        &["backup", "--memory", &slow],
    );
    // The fast host syncs: the edit, made on top of its version, wins there.
    at(
        "rf",
        "fast",
        "2026-11-21T12:30:00Z",
        &["sync", "--memory", &fast],
    );
    let fast_now = std::fs::read_to_string(&fast).unwrap();
    assert!(
        fast_now.contains("edited") && !fast_now.contains("original"),
        "{fast_now}"
    );
    let unified = env.show(&bare, "unified-memory.json");
    assert!(
        unified.contains("\"host\":\"slow\",\"seen\"")
            && unified.contains("\"timestamp\":\"2026-11-21T12:00:00.000001Z\""),
        "the edit orders after the version it was made on: {unified}"
    );
}

/// Unified on the branch once a run of another host has taken every parked
/// commit into it.
fn settled(env: &Env, url: &str, bare: &std::path::Path) -> String {
    assert_code(
        &env.run_as("settle", "settle", &["init", "--remote", url]),
        0,
    );
    let empty = env.memory("settle.json", "[]");
    assert_code(
        &env.run_as("settle", "settle", &["backup", "--memory", &empty]),
        0,
    );
    env.show(bare, "unified-memory.json")
}

fn spawn_backup(env: &Env, repo: &str, host: &str, memory: &str, extra: &[&str]) -> Child {
    env.mb(repo, host)
        .args(["backup", "--memory", memory])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn runs_at_once_on_one_host_all_succeed() {
    let env = Env::new();
    let (daemon, bare, _) = env.served();
    assert_code(
        &env.run_as("r", "h", &["init", "--remote", &daemon.url("remote.git")]),
        0,
    );
    let mut all = Vec::new();
    for round in 0..3 {
        let children: Vec<Child> = (0..4)
            .map(|i| {
                let id = format!("r{round}-run{i}");
                let memory = env.memory_of(
                    &format!("m{round}-{i}.json"),
                    std::slice::from_ref(&id),
                    "x",
                );
                all.push(id);
                spawn_backup(&env, "r", "h", &memory, &[])
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_code(&out, 0);
        }
    }
    // Runs that others beat parked their commits; a run of another host takes
    // them into the branch. Each run's entry is there, live or, where a later
    // run's memory file lacked it, as a tombstone.
    let mut unified = ids(&settled(&env, &daemon.url("remote.git"), &bare));
    unified.sort();
    all.sort();
    assert_eq!(unified, all, "an entry was lost");
    fsck(&env, &bare);
    fsck(&env, &env.path("r/.git"));
}

/// Lock files that would block a later git operation: those of refs, HEAD, the
/// index, the config. A killed pack indexer leaves a randomly named temporary
/// pack and its `.lock` under `objects/pack`, and a killed run its randomly named
/// temporary index and that one's `.lock`: they block nothing.
fn lock_files(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().is_some_and(|n| n == "objects") {
            continue;
        }
        if p.is_dir() {
            lock_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "lock")
            && !p.to_string_lossy().contains("index.memory-backup-")
        {
            out.push(p.display().to_string());
        }
    }
}

#[test]
fn runs_killed_at_random_instants_leave_a_usable_repository() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    let mut ids_so_far: Vec<String> = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..25 {
        ids_so_far.push(format!("k{i}"));
        let memory = env.memory_of("m.json", &ids_so_far, "x");
        let mut child = spawn_backup(&env, "r", "h", &memory, &[]);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 60_000));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if i % 5 == 4 {
            let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
            assert_code(&out, 0);
            assert_eq!(
                ids(&env.show(&bare, "unified-memory.json")).len(),
                ids_so_far.len()
            );
        }
    }
    // A lock file left by a kill is taken as stale once it is 2 s old and held
    // by no process; the next run that needs it removes it.
    std::thread::sleep(Duration::from_millis(2100));
    let memory = env.memory_of("m.json", &ids_so_far, "x");
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let mut locks = Vec::new();
    lock_files(&env.path("r/.git"), &mut locks);
    lock_files(&bare, &mut locks);
    assert!(locks.is_empty(), "leftover lock files: {locks:?}");
    fsck(&env, &bare);
    fsck(&env, &env.path("r/.git"));
}

/// A repository `r` whose remote is a server on 127.0.0.1 that accepts
/// connections and never answers; returns the memory file to back up.
fn hung_remote(env: &Env) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s); // accepted, never answered
        }
    });
    let url = format!("git://127.0.0.1:{port}/r.git");
    assert_code(&env.run_as("r", "h", &["init"]), 0);
    env.git_in(&env.path("r"), &["remote", "add", "origin", &url]);
    env.memory("m.json", r#"[{"id":"a","content":"one"}]"#)
}

/// Found by scripts/stress: runs that spent minutes backing off under
/// contention warned "the merge took 126.5 s" though merging took milliseconds.
#[test]
fn time_spent_waiting_on_the_network_is_not_reported_as_a_slow_merge() {
    let env = Env::new();
    let memory = hung_remote(&env);
    // Longer than the 5 s alert threshold for a slow merge.
    let out = env.run_as(
        "r",
        "h",
        &["backup", "--memory", &memory, "--max-elapsed", "5.5"],
    );
    assert_code(&out, 75);
    assert!(!stderr(&out).contains("the merge took"), "{}", stderr(&out));
}

#[test]
fn a_run_that_stops_after_a_rejected_push_keeps_its_commit_here_and_the_working_tree_shows_it() {
    // The first push is refused by the server's hook, which also takes the
    // repository away: the retry stops with 78. The commit stays on the local
    // branch for a later run, and the working tree shows the local branch.
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let m = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["init", "--remote", &url]), 0);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &m]), 0);
    let gone = env.path("srv/gone.git");
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nmv '{}' '{}'\nexit 1\n",
            bare.display(),
            gone.display()
        ),
    )
    .unwrap();
    let mut mode = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&hook, mode).unwrap();

    let m = env.memory("m.json", r#"[{"id":"a","content":"two"}]"#);
    let out = env.run_as("r", "h", &["backup", "--memory", &m]);
    assert_code(&out, 78);
    assert!(gone.exists(), "the hook did not run");
    let r = env.path("r");
    assert_eq!(env.git_in(&r, &["status", "--porcelain"]), "");
    let local = std::fs::read_to_string(r.join("memory-h.json")).unwrap();
    assert!(local.contains("\"two\""), "{local}");
    assert_eq!(env.git_in(&r, &["show", "main:memory-h.json"]), local);
}

/// A bare repository served by a git daemon, the remote of `r` (host `h`) by
/// path or by `git://` as `remote` says, with a first backup of one entry
/// made: the daemon, the repository's path and the remote's URL.
fn served_and_backed_up(env: &Env, remote: &str) -> (Daemon, std::path::PathBuf, String) {
    let (daemon, bare, url) = env.served();
    let url = if remote == "path" {
        bare.display().to_string()
    } else {
        url
    };
    assert_code(&env.run_as("r", "h", &["init", "--remote", &url]), 0);
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    (daemon, bare, url)
}

/// `memory-backup <args>` under strace: the file syncs, renames and links of
/// every thread, in the order they ended, as (syscall, paths); none when
/// strace is not installed and `CI` is not set (`scripts/test` installs it).
fn traced(env: &Env, args: &[&str]) -> Option<Vec<(String, Vec<String>)>> {
    let trace = env.path("trace.txt");
    let mut inner = env.mb("r", "h");
    inner.args(args);
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-e"])
        // `?`: a call this architecture does not have is no error.
        .arg("trace=fsync,fdatasync,?rename,?renameat,renameat2,?link,linkat")
        .arg("-o")
        .arg(&trace)
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(env.dir.path());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("strace: {e}");
            return None;
        }
        Err(e) => panic!("strace: {e}"),
    };
    assert_code(&out, 0);
    let text = std::fs::read_to_string(&trace).expect("strace's output");
    // A call split by another thread's: its start kept until it resumes.
    let mut started: std::collections::HashMap<String, String> = Default::default();
    let mut events = Vec::new();
    for line in text.lines() {
        let (pid, rest) = line.split_once(' ').expect("pid first");
        let whole = if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            started.insert(pid.to_string(), head.to_string());
            continue;
        } else if let Some((_, tail)) = rest.split_once(" resumed>") {
            format!(
                "{}{tail}",
                started.remove(pid).expect("a resumed call started")
            )
        } else {
            rest.to_string()
        };
        if !whole.ends_with("= 0") {
            continue;
        }
        let call = whole[..whole.find('(').expect("a call")].to_string();
        let paths: Vec<String> = if call.contains("sync") {
            // fsync(4</path>) = 0
            let at = whole.find('<').expect("-y gives the path") + 1;
            vec![whole[at..whole.rfind('>').unwrap()].to_string()]
        } else {
            whole
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        events.push((call, paths));
    }
    Some(events)
}

/// Every object file and every ref that a run puts in place, in this
/// repository and in a path remote, was synced to disk before its rename or
/// link gave it its name: after a power cut a ref never names an object that
/// is an empty file.
#[test]
fn objects_and_refs_reach_the_disk_before_they_get_their_names() {
    for remote in ["path", "git"] {
        let env = Env::new();
        let (_daemon, bare, _) = served_and_backed_up(&env, remote);
        let memory = env.memory(
            "m.json",
            r#"[{"id":"a","content":"two"},{"id":"b","content":"three"}]"#,
        );
        let Some(events) = traced(&env, &["backup", "--memory", &memory]) else {
            eprintln!("skipped: strace is not installed");
            return;
        };
        let mut synced = std::collections::HashSet::new();
        let (mut objects, mut refs) = (0, 0);
        let (mut last_object, mut branch_moved) = (0, 0);
        let branch = env.path("r/.git/refs/heads/main").display().to_string();
        let ours = env.path("r/.git").display().to_string();
        for (at, (call, paths)) in events.iter().enumerate() {
            if call.contains("sync") {
                synced.insert(paths[0].clone());
                continue;
            }
            let [from, to] = &paths[..] else {
                panic!("{call} {paths:?}")
            };
            // This repository's writes; the server's are its own business.
            if !to.starts_with(&ours) {
                continue;
            }
            let object = to.contains("/objects/");
            let git_ref = to.contains("/refs/") && from.ends_with(".lock");
            if object || git_ref {
                assert!(
                    synced.remove(from),
                    "{remote}: {to} named before {from} was synced: {events:?}"
                );
                objects += usize::from(object);
                refs += usize::from(git_ref);
            }
            if object {
                last_object = at;
            }
            if *to == branch {
                branch_moved = at;
            }
        }
        // The local branch moves after every object is in place.
        assert!(last_object < branch_moved, "{remote}: {events:?}");
        // The commit's blobs, tree and commit; the branch.
        assert!(objects >= 3 && refs >= 1, "{remote}: {events:?}");
        assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["a", "b"]);
    }
}

/// A commit of the local branch whose object file is empty, as a power cut
/// leaves a file that was never synced: the run stops with 1, says that the
/// repository is damaged and how to get a whole one again, and that way
/// works: nothing pushed is lost.
#[test]
fn a_damaged_repository_is_named_with_the_way_out() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.display().to_string();
    assert_code(&env.run_as("r", "h", &["init", "--remote", &url]), 0);
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let memory = env.memory("m.json", r#"[{"id":"a","content":"two"}]"#);
    assert_code(
        &env.run_as("r", "h", &["backup", "--memory", &memory, "--no-push"]),
        0,
    );
    let tip = env.git_in(&env.path("r"), &["rev-parse", "main"]);
    let tip = tip.trim();
    let object = env.path(&format!("r/.git/objects/{}/{}", &tip[..2], &tip[2..]));
    let mut perms = std::fs::metadata(&object).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&object, perms).unwrap();
    std::fs::write(&object, "").unwrap();

    let memory = env.memory("m.json", r#"[{"id":"a","content":"three"}]"#);
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("the backup repository is damaged")
            && err.contains("memory-backup init")
            && err.contains("--remote URL"),
        "{err}"
    );

    std::fs::rename(env.path("r"), env.path("r.damaged")).unwrap();
    assert_code(&env.run_as("r", "h", &["init", "--remote", &url]), 0);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let unified = env.show(&bare, "unified-memory.json");
    assert!(unified.contains("three"), "{unified}");
    assert_eq!(unique_ids(&unified).len(), 1);
}

/// Makes the object `id` of the repository `repo` an empty file, as a power
/// cut leaves one that was never synced.
fn empty_object(env: &Env, repo: &str, id: &str) {
    let dir = env.path(&format!("{repo}/.git/objects/{}", &id[..2]));
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join(&id[2..]);
    if object.exists() {
        let mut perms = std::fs::metadata(&object).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&object, perms).unwrap();
    }
    std::fs::write(&object, "").unwrap();
}

/// Empty object files that no ref names (left by a power cut before the ref
/// moved) are written again when a commit holds those objects, not trusted:
/// over `git://` and a path, the run exits 0 and leaves `git fsck` clean.
#[test]
fn empty_object_files_are_written_again_not_trusted() {
    for remote in ["git", "path"] {
        let env = Env::new();
        let (_daemon, bare, _) = served_and_backed_up(&env, remote);
        // The objects the next backup makes, learnt from a copy of the
        // repository, are empty files here.
        let memory = env.memory("m.json", r#"[{"id":"a","content":"two"}]"#);
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(env.path("r"))
            .arg(env.path("copy"))
            .status()
            .unwrap();
        assert!(copied.success());
        let later = "2030-01-01T00:00:00Z";
        let backup = ["backup", "--memory", &memory];
        assert_code(
            &env.run_at("copy", "h", later, &[&backup[..], &["--no-push"]].concat()),
            0,
        );
        let copy = env.path("copy");
        let tree = env.git_in(&copy, &["ls-tree", "main"]);
        let made = env.git_in(&copy, &["rev-parse", "main^{tree}", "main"]);
        let ids = tree.lines().map(|l| l.split_whitespace().nth(2).unwrap());
        for id in ids.chain(made.lines()) {
            empty_object(&env, "r", id);
        }

        assert_code(&env.run_at("r", "h", later, &backup), 0);
        let fsck = env.git_in(&env.path("r"), &["fsck", "--full", "--no-dangling"]);
        assert_eq!(fsck.trim(), "", "{remote}");
        assert!(
            env.show(&bare, "unified-memory.json").contains("two"),
            "{remote}"
        );
    }
}

/// The remote tip's commit is an empty file here (a power cut after a fetch,
/// with a version that did not sync): it is fetched again, and the backup is
/// pushed, over `git://` and a path.
#[test]
fn an_empty_remote_tip_here_is_fetched_again() {
    for remote in ["git", "path"] {
        let env = Env::new();
        let (_daemon, bare, url) = served_and_backed_up(&env, remote);
        assert_code(&env.run_as("r2", "h2", &["init", "--remote", &url]), 0);
        let other = env.memory("m2.json", r#"[{"id":"b","content":"two"}]"#);
        assert_code(&env.run_as("r2", "h2", &["backup", "--memory", &other]), 0);
        let tip = env.git_in(&bare, &["rev-parse", "main"]);
        empty_object(&env, "r", tip.trim());

        let memory = env.memory("m.json", r#"[{"id":"a","content":"three"}]"#);
        let out = env.run_as(
            "r",
            "h",
            &["backup", "--memory", &memory, "--max-elapsed", "10"],
        );
        assert_code(&out, 0);
        let unified = env.show(&bare, "unified-memory.json");
        assert!(
            unified.contains("three") && unified.contains("two"),
            "{remote}: {unified}"
        );
    }
}

/// Every object id of the repository `dir`, as git lists them.
fn object_ids(env: &Env, dir: &Path) -> Vec<String> {
    let out = env.git(&[
        "-C",
        dir.to_str().unwrap(),
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname)",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

/// The loose objects of the repository `dir`: files of `objects/xx/`.
fn loose_count(dir: &Path) -> usize {
    let objects = dir.join(".git/objects");
    (0..=255u8)
        .filter_map(|b| std::fs::read_dir(objects.join(format!("{b:02x}"))).ok())
        .map(|entries| entries.count())
        .sum()
}

/// A repository `r` backed up once, then given `extra` loose blobs that no
/// commit names (a killed run's, say); the memory file to back up again.
fn many_loose_objects(env: &Env, extra: usize) -> String {
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let repo = git2::Repository::open(env.path("r")).unwrap();
    for i in 0..extra {
        repo.blob(format!("stray {i}\n").as_bytes()).unwrap();
    }
    env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#,
    )
}

#[test]
fn a_backup_packs_many_loose_objects_into_one_pack_and_keeps_every_object() {
    let env = Env::new();
    let memory = many_loose_objects(&env, memory_backup::git::repack::REPACK_FROM);
    let before = object_ids(&env, &env.path("r"));
    let out = env.run_as("r", "h", &["--json", "backup", "--memory", &memory]);
    assert_code(&out, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    // This run's commit, its tree and its file (one blob: with one host, the
    // unified file is the host file) are in the pack too.
    let folded = report["packed_objects"]
        .as_u64()
        .expect("a repack was made");
    assert_eq!(folded as usize, before.len() + 3);
    assert_eq!(loose_count(&env.path("r")), 0);
    let after = object_ids(&env, &env.path("r"));
    assert!(before.iter().all(|id| after.contains(id)));
    assert_eq!(after.len(), before.len() + 3);
    fsck(&env, &env.path("r/.git"));
    // The next run reads its tip from the pack.
    let memory = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"2"}]"#,
    );
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("0 new, 1 changed"),
        "{}",
        stdout(&out)
    );
}

/// Gives the repository `dir` a history of `n` commits on `refs/heads/history`,
/// each commit with its tree and file in a pack of its own, as months of fetches
/// leave it.
fn history_in_many_packs(dir: &Path, n: usize) {
    let repo = git2::Repository::open(dir).unwrap();
    // The objects are made in a scratch repository, and each commit's three
    // are written from there as one pack, so that none is loose here.
    let scratch_dir = tempfile::tempdir().unwrap();
    let scratch = git2::Repository::init_bare(scratch_dir.path()).unwrap();
    let who = git2::Signature::new("t", "t@example.com", &git2::Time::new(1, 0)).unwrap();
    let mut parent: Option<git2::Oid> = None;
    for i in 0..n {
        let blob = scratch.blob(format!("version {i}\n").as_bytes()).unwrap();
        let mut tree = scratch.treebuilder(None).unwrap();
        tree.insert("f", blob, 0o100644).unwrap();
        let tree = scratch.find_tree(tree.write().unwrap()).unwrap();
        let parents: Vec<git2::Commit> = parent
            .map(|p| scratch.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let commit = scratch
            .commit(None, &who, &who, &format!("c{i}"), &tree, &parents)
            .unwrap();
        let mut pack = scratch.packbuilder().unwrap();
        for id in [blob, tree.id(), commit] {
            pack.insert_object(id, None).unwrap();
        }
        pack.write(&dir.join(".git/objects/pack"), 0o444).unwrap();
        parent = Some(commit);
    }
    repo.reference("refs/heads/history", parent.unwrap(), true, "test")
        .unwrap();
}

/// Many packs and a low limit of open files: libgit2 would keep every pack of
/// the fold's walk of the history open, and run out of file descriptors.
#[test]
fn a_repack_over_more_packs_than_the_process_may_open_files_succeeds() {
    use std::os::unix::process::CommandExt;
    const OPEN_FILES: u64 = 64;
    let env = Env::new();
    let memory = many_loose_objects(&env, memory_backup::git::repack::REPACK_FROM);
    history_in_many_packs(&env.path("r"), 150);
    let mut cmd = env.mb("r", "h");
    cmd.args(["backup", "--memory", &memory]);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The hard limit too: a run raises its soft limit to the hard one.
            limit.rlim_cur = OPEN_FILES.min(limit.rlim_max);
            limit.rlim_max = limit.rlim_cur;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    assert_eq!(stderr(&out), "", "no warning of a fold that failed");
    assert_eq!(loose_count(&env.path("r")), 0);
    fsck(&env, &env.path("r/.git"));
}

#[test]
fn a_repack_that_fails_is_a_warning_and_the_backup_and_every_object_stand() {
    let env = Env::new();
    let memory = many_loose_objects(&env, memory_backup::git::repack::REPACK_FROM);
    // No folder for packs can be made where a file is.
    let pack = env.path("r/.git/objects/pack");
    if pack.exists() {
        std::fs::remove_dir_all(&pack).unwrap();
    }
    std::fs::write(&pack, "in the way").unwrap();
    let before = loose_count(&env.path("r"));
    let out = env.run_as("r", "h", &["backup", "--memory", &memory]);
    assert_code(&out, 0);
    let said = stderr(&out);
    assert!(
        said.contains("loose objects not packed") && said.contains(".git/objects"),
        "{said}"
    );
    assert_eq!(said.lines().count(), 1, "{said}");
    assert_eq!(loose_count(&env.path("r")), before + 3);
    std::fs::remove_file(&pack).unwrap();
    fsck(&env, &env.path("r/.git"));
}

#[test]
fn runs_at_once_on_one_host_that_pack_the_same_loose_objects_all_succeed() {
    let env = Env::new();
    let (daemon, bare, _) = env.served();
    assert_code(
        &env.run_as("r", "h", &["init", "--remote", &daemon.url("remote.git")]),
        0,
    );
    let repo = git2::Repository::open(env.path("r")).unwrap();
    for i in 0..memory_backup::git::repack::REPACK_FROM {
        repo.blob(format!("stray {i}\n").as_bytes()).unwrap();
    }
    let before = object_ids(&env, &env.path("r"));
    let wanted: Vec<String> = (0..4).map(|i| format!("run{i}")).collect();
    let children: Vec<Child> = wanted
        .iter()
        .map(|id| {
            let memory = env.memory_of(&format!("{id}.json"), std::slice::from_ref(id), "x");
            spawn_backup(&env, "r", "h", &memory, &["--json"])
        })
        .collect();
    let mut folds = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_code(&out, 0);
        // Pushes that others beat may be warned of; a fold that failed not.
        assert!(!stderr(&out).contains("not packed"), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        folds += usize::from(v["packed_objects"].as_u64().is_some());
    }
    assert!(folds >= 1);
    let mut unified = ids(&settled(&env, &daemon.url("remote.git"), &bare));
    unified.sort();
    assert_eq!(unified, wanted, "an entry was lost");
    let after = object_ids(&env, &env.path("r"));
    assert!(
        before.iter().all(|id| after.contains(id)),
        "an object was lost"
    );
    fsck(&env, &env.path("r/.git"));
    fsck(&env, &bare);
}

#[test]
fn runs_killed_while_they_repack_lose_no_object_and_the_next_run_packs_again() {
    let env = Env::new();
    let memory = many_loose_objects(&env, 0);
    let repo = git2::Repository::open(env.path("r")).unwrap();
    let mut strays = 0;
    let mut add_strays = |repo: &git2::Repository| {
        for _ in 0..memory_backup::git::repack::REPACK_FROM {
            repo.blob(format!("stray {strays}\n").as_bytes()).unwrap();
            strays += 1;
        }
    };
    // How long a run that folds takes, to kill the others at instants all
    // through it.
    add_strays(&repo);
    let began = Instant::now();
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    let whole = began.elapsed();
    assert!(loose_count(&env.path("r")) < 10);
    for k in 1..=12u32 {
        add_strays(&repo);
        let kept = object_ids(&env, &env.path("r"));
        let mut child = spawn_backup(&env, "r", "h", &memory, &[]);
        std::thread::sleep(whole * k / 12);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let now = object_ids(&env, &env.path("r"));
        assert!(
            kept.iter().all(|id| now.contains(id)),
            "a kill at {k}/12 lost an object"
        );
    }
    // Whatever the kills left, the next run that has many loose objects folds.
    add_strays(&repo);
    let kept = object_ids(&env, &env.path("r"));
    let out = env.run_as("r", "h", &["--json", "backup", "--memory", &memory]);
    assert_code(&out, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let folded = report["packed_objects"]
        .as_u64()
        .expect("a repack was made");
    assert!(folded as usize >= memory_backup::git::repack::REPACK_FROM);
    let after = object_ids(&env, &env.path("r"));
    assert!(
        kept.iter().all(|id| after.contains(id)),
        "an object was lost"
    );
    assert_eq!(loose_count(&env.path("r")), 0);
    fsck(&env, &env.path("r/.git"));
}

#[test]
fn a_loose_object_that_is_not_what_its_name_says_is_left_with_a_warning_and_the_rest_packed() {
    let env = Env::new();
    let memory = many_loose_objects(&env, memory_backup::git::repack::REPACK_FROM);
    // Another object's bytes under this name: what a disk fault or a bad copy
    // can leave, and what reading an object back does not check.
    let objects = env.path("r/.git/objects");
    let some_object = (0..=255u8)
        .find_map(|b| {
            std::fs::read_dir(objects.join(format!("{b:02x}")))
                .ok()?
                .next()
        })
        .unwrap()
        .unwrap()
        .path();
    std::fs::create_dir_all(objects.join("17")).unwrap();
    let misnamed = objects.join(format!("17/aa{}", "0".repeat(36)));
    std::fs::copy(&some_object, &misnamed).unwrap();
    let out = env.run_as("r", "h", &["--json", "backup", "--memory", &memory]);
    assert_code(&out, 0);
    let said = stderr(&out);
    let warned = format!(
        "{}: its data does not hash to its name: a damaged loose object, left as it is",
        misnamed.display()
    );
    assert!(said.contains(&warned), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(misnamed.exists());
    assert_eq!(loose_count(&env.path("r")), 1);
    // git names it too; without it, all is clean.
    std::fs::remove_file(&misnamed).unwrap();
    fsck(&env, &env.path("r/.git"));
}

#[test]
fn a_run_stuck_on_a_truncated_object_ends_after_max_elapsed_with_75() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    let ids: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
    let memory = env.memory_of("m.json", &ids, "note");
    assert_code(&env.run_as("r", "h", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r", "h", &["backup", "--memory", &memory]), 0);
    // A loose object cut short, as a disk can leave it: libgit2 reading it loops.
    let repo = env.path("r");
    let object = env.loose_object_of(&repo, "unified-memory.json");
    let bytes = std::fs::read(&object).unwrap();
    std::fs::write(&object, &bytes[..bytes.len() - 10]).unwrap();
    let _ = std::fs::remove_file(repo.join(".git/memory-backup/idle-h.json"));

    let mut child = env
        .mb("r", "h")
        .args(["backup", "--memory", &memory, "--max-elapsed", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Far more than the 2 s it has and the 5 s of grace: stuck, it is killed here.
    let until = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("a run stuck on a truncated object did not end");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 75);
    assert!(stderr(&out).contains("fsck"), "{}", stderr(&out));
}
