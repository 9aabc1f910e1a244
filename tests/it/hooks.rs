//! The integrations run as their hosts run them: the Claude Code hook at
//! session start (issue 22, test 7) and the git post-commit hook.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::setup::{ADA, config_path, cron_like, hook_command, run_hook, wait_for_run};
use crate::support::mcp::{self, Server};
use crate::support::*;

const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks");

#[test]
fn at_session_start_the_claude_code_hook_brings_another_hosts_graph_into_this_hosts_memory() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    // Host a, with a setup of its own, backs up Ada.
    let a_memory = env.memory("a.jsonl", ADA);
    let a = |args: &[&str]| {
        let out = env.run_as(
            "ra",
            "a",
            &[
                &["--config", &env.path("a.toml").display().to_string()],
                args,
            ]
            .concat(),
        );
        assert_code(&out, 0);
    };
    a(&["init", "--remote", &url, "--memory", &a_memory]);
    a(&["backup"]);

    // This host has Bob, and the hooks installed.
    let memory = env.write(
        "home/graph/memory.jsonl",
        "{\"type\":\"entity\",\"name\":\"Bob\",\"entityType\":\"person\",\"observations\":[\"likes tea\"]}\n",
    );
    let r: Run = env
        .command()
        .args([
            "init",
            "--remote",
            &url,
            "--memory",
            &memory.display().to_string(),
        ])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{r:?}");
    assert_code(
        &env.command()
            .args(["install", "claude-code", "--server", "memory"])
            .output()
            .unwrap(),
        0,
    );
    let settings: serde_json::Value =
        serde_json::from_str(&env.read("home/.claude/settings.json")).unwrap();
    let command = hook_command(&settings, "SessionStart");
    assert!(
        command.contains(&config_path(&env).display().to_string()),
        "{command}"
    );

    let project = env.path("project");
    env.write("project/memory.json", r#"[{"id":"unrelated"}]"#);
    let input = json!({"hook_event_name": "SessionStart", "source": "startup", "cwd": project});
    let started = Instant::now();
    let out = run_hook(&env, &command, &project, &input);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the session waited"
    );
    assert_code(&out, 0);
    assert!(
        out.stdout.is_empty(),
        "Claude Code would show: {}",
        stdout(&out)
    );
    let result = wait_for_run(&env.path("logs"), "sync");
    assert_eq!(result["exit_code"], 0, "{result}");

    let mut server = Server::start(&memory);
    let (entities, _) = mcp::summary(&server.read_graph());
    let names: Vec<(&str, &[String])> = entities
        .iter()
        .map(|(n, _, o)| (n.as_str(), o.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("Ada", &["likes Rust".to_string()][..]),
            ("Bob", &["likes tea".to_string()][..])
        ]
    );
    assert!(!env.read("home/graph/memory.jsonl").contains("unrelated"));
}

#[test]
fn the_git_post_commit_hook_backs_up_the_tracked_memory_file() {
    let env = Env::new();
    let project = env.path("project");
    std::fs::create_dir_all(&project).unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let git = |args: &[&str]| {
        let out = cron_like(&env, "git")
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("MEMORY_BACKUP_HOST", "hooked")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(&project)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::copy(
        format!("{HOOKS}/git/post-commit"),
        project.join(".git/hooks/post-commit"),
    )
    .unwrap();
    std::fs::write(project.join("memory.json"), ADA).unwrap();
    git(&["add", "memory.json"]);
    git(&["commit", "-q", "-m", "remember Ada"]);
    let result = wait_for_run(&env.path("home/.local/state/memory-backup"), "backup");
    assert_eq!(result["exit_code"], 0, "{result}");
    let repo = env.path("home/.local/share/memory-backup/repo");
    let host_file = std::fs::read_to_string(repo.join("memory-hooked.json")).unwrap();
    assert!(host_file.contains("\"name\":\"Ada\""), "{host_file}");
    let log = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["log", "--format=%s"])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        stdout(&log).starts_with("backup from hooked: 1 new"),
        "{}",
        stdout(&log)
    );
}
