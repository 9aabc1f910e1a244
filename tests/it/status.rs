//! `status`: per host the last backup, entries, tombstones and parked commits;
//! for this host the last run, the last successful one and the last push;
//! warnings only for what needs a person.

use serde_json::Value;

use crate::support::*;

fn status(env: &Env, repo: &str, host: &str, now: &str, args: &[&str]) -> (Run, Value) {
    let r: Run = env
        .run_at(repo, host, now, &[&["--json", "status"], args].concat())
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    let v = r.json();
    (r, v)
}

/// Hosts a (two entries, then one deleted an hour later) and b (one entry)
/// back up to one bare remote.
fn two_hosts(env: &Env) -> String {
    let url = env.bare("remote.git").display().to_string();
    let a = env.memory("a.json", r#"[{"id":"1"},{"id":"2"}]"#);
    let b = env.memory("b.json", r#"[{"id":"3"}]"#);
    for (repo, host, memory) in [("ra", "a", &a), ("rb", "b", &b)] {
        assert_code(
            &env.run_as(repo, host, &["init", "--remote", &url, "--memory", memory]),
            0,
        );
        assert_code(&env.run_as(repo, host, &["backup", "--memory", memory]), 0);
    }
    env.memory("a.json", r#"[{"id":"1"}]"#);
    let backup = ["backup", "--memory", &a];
    assert_code(&env.run_at("ra", "a", "2026-11-21T13:00:00Z", &backup), 0);
    url
}

#[test]
fn status_shows_each_hosts_last_backup_entries_tombstones_and_this_hosts_last_push() {
    let env = Env::new();
    two_hosts(&env);
    let (r, v) = status(&env, "rb", "b", "2026-11-21T14:00:00Z", &[]);
    let hosts = v["hosts"].as_array().unwrap();
    let a = &hosts[0];
    assert_eq!(
        (
            a["host"].as_str(),
            a["entries"].as_u64(),
            a["tombstones"].as_u64()
        ),
        (Some("a"), Some(1), Some(1))
    );
    assert_eq!(a["last_backup"], "2026-11-21 13:00 UTC");
    assert_eq!(hosts[1]["this_host"], true);
    assert_eq!(hosts[1]["last_backup"], "2026-11-21 12:00 UTC");
    assert!(hosts.iter().all(|h| h["parked_commits"].is_null()));
    assert_eq!(v["last_push"], "2026-11-21T12:00:00.000000Z");
    assert_eq!(v["last_run"]["command"], "backup");
    assert_eq!(v["last_success"]["command"], "backup");
    assert_eq!(v["warnings"], serde_json::json!([]));
    assert!(r.stderr.is_empty(), "{r:?}");
    let text = stdout(&env.run_at("rb", "b", "2026-11-21T14:00:00Z", &["status"]));
    let row = text
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[..5],
        ["a", "1", "1", "2026-11-21", "13:00"]
    );
    assert!(
        text.contains("last successful push from this host: 2026-11-21T12:00:00"),
        "{text}"
    );
}

#[test]
fn status_on_a_host_whose_clock_runs_days_ahead_warns_of_nothing() {
    let env = Env::new();
    two_hosts(&env);
    let (_, v) = status(&env, "rb", "b", "2026-12-01T12:00:00Z", &[]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
}

#[test]
fn status_warns_once_this_host_has_not_pushed_for_a_day_and_shows_its_last_successful_run() {
    let env = Env::new();
    two_hosts(&env);
    std::fs::rename(env.path("remote.git"), env.path("gone.git")).unwrap();
    let b = env.memory("b.json", r#"[{"id":"3","c":"changed"}]"#);
    let offline = |now: &str| {
        let out = env.run_at(
            "rb",
            "b",
            now,
            &["backup", "--memory", &b, "--max-elapsed", "0.3"],
        );
        assert_code(&out, 75);
    };
    offline("2026-11-21T15:00:00Z");
    let (_, v) = status(&env, "rb", "b", "2026-11-21T15:00:00Z", &["--no-fetch"]);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    assert_eq!(v["last_run"]["exit_code"], 75);
    assert_eq!(v["last_success"]["command"], "backup");

    offline("2026-11-22T13:00:00Z");
    let (_, v) = status(&env, "rb", "b", "2026-11-22T13:00:00Z", &["--no-fetch"]);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{v}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("nothing pushed from this host for 25 hours"),
        "{v}"
    );
    let text = stdout(&env.run_at("rb", "b", "2026-11-22T13:00:00Z", &["status", "--no-fetch"]));
    assert!(
        text.contains("last successful run here: backup at"),
        "{text}"
    );
}

#[test]
fn status_without_a_repository_is_a_configuration_error() {
    let env = Env::new();
    let out = env.run_as("nothing-here", "h", &["status"]);
    assert_code(&out, 78);
    assert!(
        stderr(&out).contains("no backup repository"),
        "{}",
        stderr(&out)
    );
}
