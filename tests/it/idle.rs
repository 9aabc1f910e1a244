//! A backup with nothing to do is told apart by the record of the last run
//! (`backup::idle`): it reports what a whole run reports, and any change of the
//! memory file, the remote's refs or the local branch makes a whole run.

use std::path::{Path, PathBuf};

use crate::support::{Env, assert_code, stderr, stdout};

const IDLE: &str = "are as the last run left them: nothing to do";

/// How many runs of `host` took the shortcut, by its log.
fn idle_runs(env: &Env, host: &str) -> usize {
    logged(env, host, IDLE)
}

/// How many times the log of `host` says `what`.
fn logged(env: &Env, host: &str, what: &str) -> usize {
    let dir = env.path(&format!("logs-{host}"));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .map(|text| text.matches(what).count())
        .sum()
}

fn backup_json(env: &Env, host: &str, memory: &str) -> serde_json::Value {
    let out = env.run_as(
        &format!("r-{host}"),
        host,
        &["--json", "backup", "--memory", memory],
    );
    assert_code(&out, 0);
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn tip(env: &Env, git_dir: &Path) -> String {
    let out = env.git(&["--git-dir", git_dir.to_str().unwrap(), "rev-parse", "main"]);
    stdout(&out).trim().to_string()
}

/// A remote, and host `a` with `n` entries in `a.json` set up to back up to it.
fn host_a(env: &Env, n: usize) -> (PathBuf, String) {
    let bare = env.bare("remote.git");
    let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let memory = env.memory_of("a.json", &ids, "note");
    let url = bare.to_str().unwrap();
    assert_code(&env.run_as("r-a", "a", &["init", "--remote", url]), 0);
    (bare, memory)
}

#[test]
fn a_backup_with_nothing_to_do_reports_what_a_whole_run_does_and_any_change_makes_a_whole_run() {
    let env = Env::new();
    let (bare, memory) = host_a(&env, 12);
    let url = bare.to_str().unwrap();
    let first = backup_json(&env, "a", &memory);
    assert_eq!(first["new"], 12);
    assert_eq!(idle_runs(&env, "a"), 0);

    // Nothing new on either side: the shortcut, with a whole run's report.
    let idle = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 1, "the second run made its state");
    let record = env.path("r-a/.git/memory-backup/idle-a.json");
    std::fs::remove_file(&record).unwrap();
    let whole = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 1);
    assert_eq!(
        idle, whole,
        "the shortcut reports otherwise than a whole run"
    );
    assert!(record.exists(), "a settled run leaves its record");

    // Another host lands: a whole run, which takes its entries in.
    let other = env.memory_of("b.json", &["m1".to_string()], "other");
    assert_code(&env.run_as("r-b", "b", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r-b", "b", &["backup", "--memory", &other]), 0);
    let after_b = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 1, "a moved remote was not seen");
    assert_eq!(after_b["unified_entries"], 13);
    assert_eq!(tip(&env, &env.path("r-a/.git")), tip(&env, &bare));
    backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 2);

    // The memory file changed with its size and modification time kept.
    let text = std::fs::read_to_string(&memory).unwrap();
    let modified = std::fs::metadata(&memory).unwrap().modified().unwrap();
    std::fs::write(&memory, text.replace("note n3", "note x3")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let edited = backup_json(&env, "a", &memory);
    assert_eq!(
        idle_runs(&env, "a"),
        2,
        "an edit kept size and time and was missed"
    );
    assert_eq!(edited["changed"], 1);

    // A parked commit on the remote: a whole run, which takes it into the branch.
    let parked = "refs/heads/memory-backup/hosts/c";
    let b_tip = tip(&env, &env.path("r-b/.git"));
    env.git_in(
        &env.path("r-b"),
        &["push", "-q", url, &format!("{b_tip}:{parked}")],
    );
    backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 2, "a parked commit was not seen");

    // A commit on the local branch that the remote lacks: a whole run pushes it.
    let id = ["-c", "user.name=x", "-c", "user.email=x@example.org"];
    let repo_a = env.path("r-a");
    env.git_in(
        &repo_a,
        &[&id[..], &["commit", "-q", "--allow-empty", "-m", "local"]].concat(),
    );
    let local = tip(&env, &repo_a.join(".git"));
    let pushed = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 2, "a local commit was not seen");
    assert_eq!(pushed["pushed"], true, "{pushed}");
    let remote_tip = tip(&env, &bare);
    let contains = env.git(&[
        "--git-dir",
        url,
        "merge-base",
        "--is-ancestor",
        &local,
        &remote_tip,
    ]);
    assert!(
        contains.status.success(),
        "the local commit is not on the remote"
    );
    backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 3);
}

#[test]
fn a_record_of_another_run_never_stands_for_a_run_that_warns_holds_back_or_uses_libgit2() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.to_str().unwrap();
    // A GitHub token, made here so that no scanner of this source finds one.
    let key: String = "D8looO8Hk0DbjFPEabFCNg6DlXGi0EDpZJ8U_phg"
        .chars()
        .rev()
        .collect();
    let memory = env.memory(
        "a.json",
        &format!(
            r#"[{{"id":"n1","content":"plain"}},{{"id":"n2","content":"export GH_TOKEN={key}"}}]"#
        ),
    );
    assert_code(&env.run_as("r-a", "a", &["init", "--remote", url]), 0);
    let held = backup_json(&env, "a", &memory);
    assert_eq!(
        held["held_back"].as_array().map(Vec::len),
        Some(1),
        "{held}"
    );
    // The warning is said again by every run, never skipped.
    let again = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 0);
    assert_eq!(again["held_back"], held["held_back"]);
    assert!(!again["warnings"].as_array().unwrap().is_empty());

    let clean = env.memory("a.json", r#"[{"id":"n1","content":"plain"}]"#);
    assert_eq!(backup_json(&env, "a", &clean)["deleted"], 0);
    backup_json(&env, "a", &clean);
    assert_eq!(idle_runs(&env, "a"), 1);
    let out = env
        .mb("r-a", "a")
        .env("MEMORY_BACKUP_TRANSPORT", "libgit2")
        .args(["backup", "--memory", &clean])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(
        idle_runs(&env, "a"),
        1,
        "libgit2 took the shortcut through git"
    );

    // A broken host file on the remote: every run says so, none is skipped.
    let clone = env.path("hand");
    env.git_in(&env.path("."), &["clone", "-q", "-b", "main", url, "hand"]);
    env.commit_by_hand(&clone, &[("memory-x.json", b"[{\"broken\": \n")], "by hand");
    env.git_in(&clone, &["push", "-q", "origin", "main"]);
    for _ in 0..2 {
        let warned = backup_json(&env, "a", &clean);
        let warnings = warned["warnings"].to_string();
        assert!(warnings.contains("memory-x.json"), "{warned}");
    }
    assert_eq!(idle_runs(&env, "a"), 1);
}

#[test]
fn a_sync_with_nothing_new_since_the_last_sync_reports_what_a_whole_sync_does() {
    let env = Env::new();
    let (bare, memory) = host_a(&env, 5);
    let url = bare.to_str().unwrap();
    let sync = || {
        let out = env.run_as("r-a", "a", &["--json", "sync", "--memory", &memory]);
        assert_code(&out, 0);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let synced = |env: &Env| logged(env, "a", "as the last sync left them");
    sync();
    let whole = sync();
    assert_eq!(synced(&env), 0);
    let idle = sync();
    assert_eq!(
        synced(&env),
        1,
        "a third sync with nothing new made its state"
    );
    assert_eq!(
        idle, whole,
        "the shortcut reports otherwise than a whole sync"
    );

    // Another host lands: the next sync brings its entry in.
    let other = env.memory_of("b.json", &["m1".to_string()], "other");
    assert_code(&env.run_as("r-b", "b", &["init", "--remote", url]), 0);
    assert_code(&env.run_as("r-b", "b", &["backup", "--memory", &other]), 0);
    let came = sync();
    assert_eq!(synced(&env), 1);
    assert_eq!(came["added"].as_array().map(Vec::len), Some(1), "{came}");
    assert!(
        std::fs::read_to_string(&memory)
            .unwrap()
            .contains("other m1")
    );
}

#[test]
fn what_a_whole_run_repairs_or_reports_is_never_skipped() {
    let env = Env::new();
    let (bare, memory) = host_a(&env, 4);
    let url = bare.to_str().unwrap();
    let repo = env.path("r-a");
    let at = |now: &str| {
        let out = env.run_at("r-a", "a", now, &["backup", "--memory", &memory]);
        assert_code(&out, 0);
        stdout(&out)
    };
    at("2026-12-01T00:00:00Z");
    // A shortcut reached the remote and found this host's state there: a push
    // that succeeded, for `status` and for what `-q` says when offline.
    at("2026-12-02T06:00:00Z");
    assert_eq!(idle_runs(&env, "a"), 1);
    let status = env.run_as("r-a", "a", &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["last_push"], "2026-12-02T06:00:00.000000Z",
        "{status}"
    );

    // A file of the working tree removed by hand: a whole run puts it back.
    std::fs::remove_file(repo.join("unified-memory.json")).unwrap();
    at("2026-12-02T07:00:00Z");
    assert_eq!(idle_runs(&env, "a"), 1);
    assert!(repo.join("unified-memory.json").exists());
    at("2026-12-02T07:10:00Z");
    assert_eq!(idle_runs(&env, "a"), 2);

    // A parked ref whose host name is not plain, which no fetch takes: nothing
    // to do, still.
    let tip = env.git_in(&repo, &["rev-parse", "HEAD"]);
    let odd = format!("{}:refs/heads/memory-backup/hosts/x/y", tip.trim());
    env.git_in(&repo, &["push", "-q", url, &odd]);
    at("2026-12-02T07:20:00Z");
    at("2026-12-02T07:30:00Z");
    assert_eq!(
        idle_runs(&env, "a"),
        4,
        "an odd ref on the remote stopped the shortcut"
    );

    // The index or the remote's branch as last fetched changed by hand: a whole
    // run puts them back.
    env.git_in(&repo, &["rm", "-q", "--cached", "unified-memory.json"]);
    at("2026-12-02T07:40:00Z");
    assert_eq!(idle_runs(&env, "a"), 4);
    // (`git diff --cached` leaves the index as it is; `git status` would write it.)
    let staged = env.git_in(&repo, &["diff", "--cached", "--name-only"]);
    assert!(staged.trim().is_empty(), "{staged}");
    env.git_in(&repo, &["update-ref", "-d", "refs/remotes/origin/main"]);
    at("2026-12-02T07:50:00Z");
    assert_eq!(idle_runs(&env, "a"), 4);
    env.git_in(
        &repo,
        &["rev-parse", "--verify", "refs/remotes/origin/main"],
    );
    at("2026-12-02T08:00:00Z");
    assert_eq!(idle_runs(&env, "a"), 5);

    // A remote of two URLs: a whole run, which pushes where libgit2 says.
    let other = env.bare("other.git");
    let other_url = other.to_str().unwrap();
    env.git_in(&repo, &["remote", "set-url", "--add", "origin", other_url]);
    at("2026-12-02T08:10:00Z");
    assert_eq!(
        idle_runs(&env, "a"),
        5,
        "a remote of two URLs took the shortcut"
    );
    env.git_in(
        &repo,
        &["remote", "set-url", "--delete", "origin", other_url],
    );

    // An object of the tip emptied by a power cut: the whole run says so.
    // An object of the tip emptied by a power cut.
    let object = env.loose_object_of(&repo, "unified-memory.json");
    std::fs::write(&object, b"").unwrap();
    let out = env.run_as("r-a", "a", &["backup", "--memory", &memory]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    assert_eq!(idle_runs(&env, "a"), 5);
}

#[test]
fn the_shortcut_names_the_remote_as_a_whole_run_does_through_instead_of() {
    let env = Env::new();
    let (bare, memory) = host_a(&env, 3);
    backup_json(&env, "a", &memory);
    let repo = env.path("r-a");
    let base = format!("{}/", bare.parent().unwrap().display());
    env.git_in(
        &repo,
        &["config", &format!("url.{base}.insteadOf"), "mine:"],
    );
    env.git_in(&repo, &["remote", "set-url", "origin", "mine:remote.git"]);
    let idle = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 1);
    std::fs::remove_file(repo.join(".git/memory-backup/idle-a.json")).unwrap();
    let whole = backup_json(&env, "a", &memory);
    assert_eq!(idle_runs(&env, "a"), 1);
    assert_eq!(idle, whole);
    assert_eq!(whole["remote"], bare.display().to_string());
}
