//! `status`: per host entries, last change and size; unified; ahead and behind
//! the remote; the last run; warnings. Offline too.

use std::process::Output;

use serde_json::Value;

use crate::common::git::*;

fn status_json(env: &Env, repo: &str, host: &str) -> (Output, Value) {
    let out = env.run(repo, host, &["--json", "status"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    (out, v)
}

/// Hosts a and b back up one entry and two entries to one bare remote.
fn two_hosts(env: &Env) -> String {
    let bare = env.bare("remote.git");
    let url = bare.display().to_string();
    let ma = env.memory("a.json", r#"[{"id":"1","c":"x"}]"#);
    let mb = env.memory("b.json", r#"[{"id":"2","c":"y"},{"id":"3","c":"z"}]"#);
    for (repo, host, memory) in [("ra", "a", &ma), ("rb", "b", &mb)] {
        assert_code(&env.run(repo, host, &["init", "--remote", &url]), 0);
        assert_code(&env.run(repo, host, &["backup", "--memory", memory]), 0);
    }
    url
}

#[test]
fn status_shows_each_host_unified_the_remote_and_the_last_run() {
    let env = Env::new();
    let url = two_hosts(&env);
    let out = env.run("rb", "b", &["status"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let tip = env.git_in(&env.path("rb"), &["rev-parse", "--short=10", "main"]);
    let remote_line = format!("{url} at {}: 0 ahead, 0 behind", tip.trim());
    assert!(text.contains(&remote_line), "no {remote_line:?} in {text}");
    let row = |host: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no row for {host}: {text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("a")[1..3], ["1", "2026-11-21T10:00:00.000000Z"]);
    assert_eq!(row("b")[1], "2");
    assert_eq!(row("(unified)")[1], "3");
    assert!(text.contains("0 ahead, 0 behind"), "{text}");
    assert!(text.contains("last run: backup at"), "{text}");
    assert!(text.contains("exit 0"), "{text}");

    let (_, v) = status_json(&env, "rb", "b");
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0]["host"], "a");
    assert_eq!(hosts[0]["entries"], 1);
    let size = std::fs::metadata(env.path("rb/memory-a.json"))
        .unwrap()
        .len();
    assert_eq!(hosts[0]["bytes"], size);
    assert_eq!(v["unified"]["entries"], 3);
    assert_eq!(v["remote"]["reachable"], true);
    assert_eq!(v["last_run"]["command"], "backup");
    // status leaves last-run.json to the runs it describes.
    let (_, again) = status_json(&env, "rb", "b");
    assert_eq!(again["last_run"]["command"], "backup");
}

#[test]
fn status_counts_commits_ahead_of_and_behind_the_remote() {
    let env = Env::new();
    two_hosts(&env);
    // a commits without pushing; b pushes a change.
    let ma = env.memory("a.json", r#"[{"id":"1","c":"changed"}]"#);
    assert_code(
        &env.run("ra", "a", &["backup", "--no-push", "--memory", &ma]),
        0,
    );
    let mb = env.memory("b.json", r#"[{"id":"2","c":"changed"}]"#);
    assert_code(&env.run("rb", "b", &["backup", "--memory", &mb]), 0);
    let (out, v) = status_json(&env, "ra", "a");
    assert_code(&out, 0);
    // a's local branch: its own commit, and b's first commit behind.
    assert_eq!(v["remote"]["ahead"], 1, "{v}");
    assert_eq!(v["remote"]["behind"], 2, "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains("1 ahead of, 2 behind")
    );
}

#[test]
fn status_works_offline_and_says_the_remote_could_not_be_asked() {
    let env = Env::new();
    two_hosts(&env);
    std::fs::rename(env.path("remote.git"), env.path("gone.git")).unwrap();
    let ma = env.memory("a.json", r#"[{"id":"1","c":"new"}]"#);
    assert_code(
        &env.run(
            "ra",
            "a",
            &["backup", "--memory", &ma, "--max-elapsed", "0.2"],
        ),
        75,
    );
    let (out, v) = status_json(&env, "ra", "a");
    assert_code(&out, 0);
    assert!(stderr(&out).contains("cannot ask"), "{}", stderr(&out));
    assert_eq!(v["remote"]["reachable"], false);
    // As of the last contact: the unpushed commit is ahead.
    assert_eq!(v["remote"]["ahead"], 1);
    assert_eq!(v["last_run"]["command"], "backup");
    assert_eq!(v["last_run"]["exit_code"], 75);
    let text = stdout(&env.run("ra", "a", &["status", "--no-fetch"]));
    assert!(text.contains("not asked now"), "{text}");
    assert!(text.contains("exit 75"), "{text}");
}

#[test]
fn status_warns_of_silent_hosts_files_that_do_not_parse_and_large_files() {
    let env = Env::new();
    let memory = env.memory("m.json", r#"[{"id":"1"}]"#);
    assert_code(&env.run("r", "h", &["backup", "--memory", &memory]), 0);
    let repo = env.path("r");
    // Over 50 MiB, and not JSON: it does not parse either.
    let huge = vec![b'x'; 51 << 20];
    env.commit_by_hand(
        &repo,
        &[
            ("memory-broken.json", b"[{\"id\":"),
            ("memory-huge.json", &huge),
        ],
        "by hand",
    );
    // Eight days after h's last change.
    let out = env
        .mb("r", "h")
        .env("MEMORY_BACKUP_NOW", "2026-11-29T10:00:00Z")
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let has = |s: &str| warnings.iter().any(|w| w.contains(s));
    assert!(has("memory-h.json: no change for 8 days"), "{warnings:?}");
    assert!(has("memory-broken.json:1:"), "{warnings:?}");
    assert!(
        has("memory-huge.json: 51 MiB, over the 50 MiB"),
        "{warnings:?}"
    );
    assert!(stderr(&out).contains("memory-broken.json"));
    // Files that do not parse are warned about, not counted as hosts.
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
}

#[test]
fn status_without_a_repository_is_a_configuration_error() {
    let env = Env::new();
    let out = env.run("nothing-here", "h", &["status"]);
    assert_code(&out, 78);
    assert!(
        stderr(&out).contains("no backup repository"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_counts_the_loose_objects_and_packs_of_the_repository() {
    let env = Env::new();
    two_hosts(&env);
    // A pack beside the loose objects.
    env.git_in(&env.path("rb"), &["repack", "-q"]);
    let objects = env.path("rb/.git/objects");
    // Files of the folders, but of packs only the pack and its index (git also
    // writes a reverse index, which status leaves out).
    let files_in = |dirs: &mut dyn Iterator<Item = std::path::PathBuf>| -> (usize, u64) {
        dirs.filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_none_or(|x| x == "idx" || x == "pack"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .fold((0, 0), |(n, b), len| (n + 1, b + len))
    };
    let (loose, loose_bytes) = files_in(&mut (0..=255u8).map(|b| objects.join(format!("{b:02x}"))));
    let (pack_files, pack_bytes) = files_in(&mut std::iter::once(objects.join("pack")));
    let (out, v) = status_json(&env, "rb", "b");
    assert_code(&out, 0);
    assert_eq!(v["objects"]["loose"], loose);
    assert_eq!(v["objects"]["loose_bytes"], loose_bytes);
    assert_eq!(v["objects"]["packs"], pack_files / 2);
    assert_eq!(v["objects"]["pack_bytes"], pack_bytes);
    assert!(
        loose > 0 && pack_files >= 2,
        "{loose} loose, {pack_files} pack files"
    );
    let text = stdout(&env.run("rb", "b", &["status"]));
    let line = format!("objects: {loose} loose (");
    assert!(text.contains(&line), "{text}");
}
