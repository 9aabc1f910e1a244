//! Setting up once (section 14): `init` finds the MCP memory server's file and
//! saves the setup; every command reads it, cron's empty environment included;
//! `config` shows it; `install` and `uninstall` of cron, systemd and Claude Code;
//! `init`'s checks of the remote; `-q` and exit 75; usage errors under `--json`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::servers::http_server;
use crate::support::*;

pub const ADA: &str = "{\"type\":\"entity\",\"name\":\"Ada\",\"entityType\":\"person\",\"observations\":[\"likes Rust\"]}\n";

/// The config file of the test's HOME.
pub fn config_path(env: &Env) -> PathBuf {
    env.path("home/.config/memory-backup/config.toml")
}

/// A program run as cron runs it: `env -i PATH=/usr/bin:/bin HOME=$HOME`, in
/// a folder of its own.
pub fn cron_like(env: &Env, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let dir = env.path("elsewhere");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", env.path("home"))
        .current_dir(dir);
    c
}

/// `~/.claude.json` naming a memory server `name` that keeps its graph in `file`.
pub fn claude_json(env: &Env, name: &str, file: &Path) {
    let v = serde_json::json!({
        "numStartups": 4,
        "mcpServers": {
            name: {
                "type": "stdio",
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-memory"],
                "env": {"MEMORY_FILE_PATH": file}
            },
            "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]}
        }
    });
    env.write("home/.claude.json", v.to_string());
}

fn run(cmd: &mut Command) -> Run {
    cmd.output().expect("run").into()
}

#[track_caller]
fn ok(r: &Run) {
    assert_eq!(r.code, 0, "{r:?}");
}

#[test]
fn init_records_the_file_claude_code_names_and_a_run_in_crons_environment_backs_it_up() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let memory = env.write("home/graph/memory.jsonl", ADA);
    claude_json(&env, "memory", &memory);
    // MEMORY_BACKUP_REPO, _HOST and _LOG_DIR are set only in this shell.
    let r = env.run(&["init", "--remote", &url]);
    ok(&r);
    assert!(
        r.stdout
            .contains(&format!("memory file: {}", memory.display()))
            && r.stdout.contains(".claude.json"),
        "{r:?}"
    );
    let config = std::fs::read_to_string(config_path(&env)).unwrap();
    for line in [
        format!("memory = \"{}\"", memory.display()),
        format!("repo = \"{}\"", env.path("repo").display()),
        "host = \"testhost\"".to_string(),
        format!("remote = \"{url}\""),
        "branch = \"main\"".to_string(),
    ] {
        assert!(config.lines().any(|l| l == line), "no {line:?} in {config}");
    }
    let r = run(cron_like(&env, BIN).args(["-q", "backup"]));
    ok(&r);
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    assert!(
        env.show(&bare, "memory-testhost.json")
            .contains("\"name\":\"Ada\"")
    );
    assert!(
        !env.path("home/.local/share/memory-backup").exists(),
        "a second repository was made"
    );
    // Again on the same setup: nothing changes.
    let before = std::fs::read(config_path(&env)).unwrap();
    let r = env.run(&["init", "--remote", &url]);
    ok(&r);
    assert!(r.stdout.contains("nothing changed"), "{r:?}");
    assert_eq!(std::fs::read(config_path(&env)).unwrap(), before);
}

#[test]
fn init_asks_for_the_memory_file_when_mcp_configs_name_several_and_saves_nothing() {
    let env = Env::new();
    let a = env.write("home/a/memory.jsonl", ADA);
    claude_json(&env, "memory", &a);
    let project = serde_json::json!({"mcpServers": {"team-memory": {
        "command": "node",
        "args": ["/opt/mcp/node_modules/@modelcontextprotocol/server-memory/dist/index.js"],
        "env": {"MEMORY_FILE_PATH": env.path("home/b/memory.jsonl")}}}});
    env.write(".mcp.json", project.to_string());
    let r = env.run(&["init"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&a.display().to_string())
            && r.stderr.contains("home/b/memory.jsonl")
            && r.stderr.contains("--memory"),
        "{r:?}"
    );
    assert!(!config_path(&env).exists() && !env.path("repo").exists());
    // An npx server that never ran: its file cannot be told, so init asks.
    std::fs::remove_file(env.path(".mcp.json")).unwrap();
    let npx = serde_json::json!({"mcpServers": {"memory": {"command": "npx",
        "args": ["-y", "@modelcontextprotocol/server-memory"]}}});
    env.write("home/.claude.json", npx.to_string());
    let r = env.run(&["init"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("_npx") && r.stderr.contains("--memory"),
        "{r:?}"
    );
    assert!(!config_path(&env).exists());
}

#[test]
fn init_with_a_permanent_mistake_stops_within_seconds_says_the_fix_and_saves_nothing() {
    let env = Env::new();
    for (url, fix) in [
        ("htps://example.org/me/x.git", "https://"),
        ("github.com/me/x.git", "https://github.com/me/x.git"),
        ("nosuchalias:me/x.git", "Host nosuchalias"),
    ] {
        let started = Instant::now();
        let r = env.run(&["init", "--memory", "m.jsonl", "--remote", url]);
        let took = started.elapsed();
        assert!(r.code == 77 || r.code == 78, "{url}: {r:?}");
        assert!(took < Duration::from_secs(5), "{url}: {took:?}");
        assert!(r.stderr.contains(fix), "{url}: {r:?}");
        assert!(
            !config_path(&env).exists() && !env.path("repo").exists(),
            "{url}"
        );
    }
}

#[test]
fn init_with_a_host_that_never_answers_warns_and_saves_the_setup_within_seconds() {
    let env = Env::new();
    // Takes connections and never answers, as a blackholed host.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let url = format!("git://127.0.0.1:{port}/x.git");
    let started = Instant::now();
    let r = env.run(&["init", "--memory", "m.jsonl", "--remote", &url]);
    assert!(started.elapsed() < Duration::from_secs(15), "hangs");
    ok(&r);
    assert!(r.stderr.contains("cannot reach"), "{r:?}");
    let config = std::fs::read_to_string(config_path(&env)).unwrap();
    assert!(config.contains(&url), "{config}");
}

#[test]
fn config_shows_each_setting_and_where_it_came_from_and_a_bad_file_names_its_line() {
    let env = Env::new();
    env.write("m.json", "[]");
    ok(&env.run(&["init", "--memory", "m.json"]));
    let r = env.run(&["--json", "config", "--repo", "/tmp/elsewhere"]);
    ok(&r);
    let v = r.json();
    let s = &v["settings"];
    let source = |k: &str| s[k]["source"].as_str().unwrap().to_string();
    assert_eq!(s["repo"]["value"], "/tmp/elsewhere");
    assert_eq!(source("repo"), "option --repo");
    assert_eq!(source("host"), "environment variable MEMORY_BACKUP_HOST");
    assert_eq!(
        s["memory"]["value"],
        env.path("m.json").display().to_string()
    );
    assert_eq!(source("memory"), "config file");
    assert_eq!(
        (s["quiet_hours"]["value"].as_u64(), source("quiet_hours")),
        (Some(24), "default".into())
    );
    assert_eq!(
        v["config_file"]["path"],
        config_path(&env).display().to_string()
    );
    let mut plain = Command::new(BIN);
    env.hermetic(&mut plain);
    let v = run(plain.args(["--json", "config"])).json();
    assert_eq!(v["settings"]["host"]["value"], "testhost");
    assert_eq!(v["settings"]["host"]["source"], "config file");

    let text = std::fs::read_to_string(config_path(&env)).unwrap();
    std::fs::write(config_path(&env), format!("{text}quiet_hours = \"soon\"\n")).unwrap();
    let r = env.run(&["backup"]);
    assert_eq!(r.code, 78, "{r:?}");
    let line = text.lines().count() + 1;
    assert!(
        r.stderr
            .contains(&format!("{}:{line}:", config_path(&env).display()))
            && r.stderr.contains("quiet_hours"),
        "{r:?}"
    );
}

#[test]
fn quiet_runs_say_nothing_offline_until_nothing_was_pushed_for_a_day() {
    let env = Env::new();
    let (mut daemon, _bare, url) = env.served();
    let memory = env.memory("m.json", r#"[{"id":"1"}]"#);
    ok(&env.run(&["init", "--remote", &url, "--memory", &memory]));
    ok(&env.run(&["backup"]));
    daemon.stop();
    let offline = |now: &str, content: &str| -> Run {
        env.memory("m.json", &format!(r#"[{{"id":"1","c":"{content}"}}]"#));
        env.command()
            .env("MEMORY_BACKUP_NOW", now)
            .args(["-q", "backup", "--max-elapsed", "0.5"])
            .output()
            .unwrap()
            .into()
    };
    let r = offline("2026-11-21T13:00:00Z", "an hour later");
    assert_eq!(r.code, 75, "{r:?}");
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    let r = offline("2026-11-22T13:00:00Z", "25 hours later");
    assert_eq!(r.code, 75, "{r:?}");
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("for 25 hours"), "{r:?}");
}

#[test]
fn an_auth_failure_stops_init_and_keeps_a_backups_local_commit_like_an_offline_run() {
    let env = Env::new();
    let root = env.path("http");
    std::fs::create_dir_all(&root).unwrap();
    let bare = env.bare("http/remote.git");
    let server = http_server(&env, &root, "me", "p-right-7731");
    let url = |password: &str| format!("http://me:{password}@127.0.0.1:{}/remote.git", server.port);
    let memory = env.memory("m.json", r#"[{"id":"1"}]"#);
    let r = env.run(&[
        "init",
        "--memory",
        &memory,
        "--remote",
        &url("p-wrong-7731"),
    ]);
    assert_eq!(r.code, 77, "{r:?}");
    assert!(!config_path(&env).exists() && !env.path("repo").exists());
    ok(&env.run(&[
        "init",
        "--memory",
        &memory,
        "--remote",
        &url("p-right-7731"),
    ]));
    ok(&env.run(&["backup"]));
    let repo = env.path("repo");
    env.git_in(
        &repo,
        &["remote", "set-url", "origin", &url("p-wrong-7731")],
    );
    env.memory("m.json", r#"[{"id":"1"},{"id":"2"}]"#);
    let r = env.run(&["backup"]);
    assert_eq!(r.code, 77, "{r:?}");
    assert!(
        !r.stderr.contains("p-right-7731") && !r.stderr.contains("p-wrong-7731"),
        "{r:?}"
    );
    let subject = env.git_in(&repo, &["log", "-1", "--format=%s", "main"]);
    assert!(
        subject.starts_with("backup from testhost: 1 new"),
        "{subject}"
    );
    env.git_in(
        &repo,
        &["remote", "set-url", "origin", &url("p-right-7731")],
    );
    ok(&env.run(&["backup"]));
    assert_eq!(ids(&env.show(&bare, "memory-testhost.json")), ["1", "2"]);
}

#[test]
fn usage_errors_under_json_print_one_object_with_exit_code_2() {
    let env = Env::new();
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["--json", "bogus"], None),
        (&["--json", "backup", "--max-elapsed", "soon"], None),
        (&["--json", "backup", "--max-elapsed", "0"], None),
        (&["--json", "status"], Some("yesterday")),
    ];
    for (args, now) in cases {
        let mut cmd = env.command();
        if let Some(now) = now {
            cmd.env("MEMORY_BACKUP_NOW", now);
        }
        let r = run(cmd.args(args));
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert_eq!(r.stdout.lines().count(), 1, "{args:?}: {r:?}");
        let v = r.json();
        assert_eq!(
            (v["ok"].as_bool(), v["exit_code"].as_i64()),
            (Some(false), Some(2)),
            "{v}"
        );
    }
}
