//! Setting up once (section 14): `init` finds the MCP memory server's file and
//! saves the setup; every command reads it, cron's empty environment included;
//! `config` shows it; `install` and `uninstall` of cron, systemd and Claude Code;
//! `init`'s checks of the remote; `-q` and exit 75; usage errors under `--json`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// Fake `crontab` (keeping the table in `crontab.txt`) and `systemctl`
/// (logging its arguments to `systemctl.log`); the PATH that finds them first.
pub fn fake_tools(env: &Env) -> String {
    use std::os::unix::fs::PermissionsExt;
    let table = env.path("crontab.txt");
    let log = env.path("systemctl.log");
    let scripts = [
        (
            "crontab",
            format!(
                "#!/bin/sh\ncase \"$1\" in\n-l) cat '{0}' 2>/dev/null || {{ echo 'no crontab for tester' >&2; exit 1; }} ;;\n-) cat > '{0}' ;;\n*) exit 2 ;;\nesac\n",
                table.display()
            ),
        ),
        (
            "systemctl",
            format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
        ),
    ];
    for (name, text) in scripts {
        let p = env.write(&format!("fakebin/{name}"), text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!(
        "{}:{}",
        env.path("fakebin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
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

/// `init --memory` with a local repository: what `install` needs.
fn set_up(env: &Env) -> PathBuf {
    let memory = env.write("home/graph/memory.jsonl", ADA);
    ok(&env.run(&["init", "--memory", &memory.display().to_string()]));
    memory
}

fn install(env: &Env, path: &str, args: &[&str]) -> Run {
    run(env.command().env("PATH", path).args(args))
}

#[test]
fn install_cron_adds_one_line_with_absolute_paths_that_runs_in_crons_environment() {
    let env = Env::new();
    set_up(&env);
    let path = fake_tools(&env);
    let mine = "MAILTO=me\n0 3 * * * backup-photos\n";
    env.write("crontab.txt", mine);
    ok(&install(&env, &path, &["install", "cron"]));
    let table = env.read("crontab.txt");
    ok(&install(&env, &path, &["install", "cron"]));
    assert_eq!(env.read("crontab.txt"), table);
    assert!(table.starts_with(mine), "{table}");
    let line = table.lines().last().unwrap();
    let fields: Vec<&str> = line.splitn(6, ' ').collect();
    assert!(
        fields[0].parse::<u32>().unwrap() < 60 && fields[1..5] == ["*"; 4],
        "{line}"
    );
    let command = fields[5];
    assert_eq!(
        command,
        format!("{BIN} --config {} -q backup", config_path(&env).display())
    );
    let r = run(cron_like(&env, "sh").args(["-c", command]));
    ok(&r);
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str()),
        ("", ""),
        "cron would mail"
    );
    assert!(
        env.read("repo/memory-testhost.json")
            .contains("\"name\":\"Ada\"")
    );

    ok(&install(&env, &path, &["uninstall", "cron"]));
    assert_eq!(env.read("crontab.txt"), mine);
    // No crontab program: the lines to add, and 78.
    let r = install(&env, "/nonexistent", &["install", "cron"]);
    assert_eq!(r.code, 78, "{r:?}");
    assert!(r.stdout.contains(&format!("{BIN} --config")), "{r:?}");
}

#[test]
fn install_systemd_writes_a_service_and_timer_with_absolute_paths_and_starts_the_timer() {
    let env = Env::new();
    set_up(&env);
    let path = fake_tools(&env);
    ok(&install(&env, &path, &["install", "systemd"]));
    let dir = env.path("home/.config/systemd/user");
    let service = std::fs::read_to_string(dir.join("memory-backup.service")).unwrap();
    let timer = std::fs::read_to_string(dir.join("memory-backup.timer")).unwrap();
    let exec = format!(
        "ExecStart={BIN} --config {} -q backup",
        config_path(&env).display()
    );
    assert!(service.lines().any(|l| l == exec), "{service}");
    assert!(
        service.lines().any(|l| l == "SuccessExitStatus=75"),
        "{service}"
    );
    assert!(timer.contains("OnCalendar=hourly") && timer.contains("WantedBy=timers.target"));
    assert_eq!(
        env.read("systemctl.log"),
        "--user daemon-reload\n--user enable --now memory-backup.timer\n"
    );
    ok(&install(&env, &path, &["install", "systemd"]));
    assert_eq!(
        std::fs::read_to_string(dir.join("memory-backup.service")).unwrap(),
        service
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("memory-backup.timer")).unwrap(),
        timer
    );
    if which("systemd-analyze").is_some() {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.join("memory-backup.service"))
            .arg(dir.join("memory-backup.timer"))
            .output()
            .unwrap();
        assert!(out.status.success(), "systemd-analyze verify: {out:?}");
    } else {
        eprintln!("systemd-analyze is not installed: the units are checked as text only");
    }
    ok(&install(&env, &path, &["uninstall", "systemd"]));
    assert!(
        !dir.join("memory-backup.service").exists() && !dir.join("memory-backup.timer").exists()
    );
    assert!(
        env.read("systemctl.log")
            .ends_with("--user disable --now memory-backup.timer\n--user daemon-reload\n")
    );
}

/// Settings as Claude Code writes them, with hooks and settings of the user's.
pub const SETTINGS: &str = r#"{
  "model": "opus",
  "hooks": {
    "PostToolUse": [
      {
        "matcher": "Edit|Write",
        "hooks": [
          {
            "type": "command",
            "command": "prettier --write"
          }
        ]
      }
    ]
  },
  "permissions": {
    "allow": [
      "Bash(ls:*)"
    ]
  }
}
"#;

/// The command of the installed hook for `event`.
pub fn hook_command(settings: &Value, event: &str) -> String {
    let list = settings["hooks"][event].as_array().unwrap();
    list.last().unwrap()["hooks"][0]["command"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs an installed hook command as Claude Code does: through `sh`, the
/// hook's JSON on stdin, the project folder as the working directory, an
/// environment with little more than PATH and HOME.
pub fn run_hook(env: &Env, command: &str, project: &Path, input: &Value) -> Output {
    let mut child = cron_like(env, "sh")
        .args(["-c", command])
        .current_dir(project)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The result in `last-run.json` of the first run of `command` to finish in
/// `log_dir`, waited for (the hooks' runs are detached).
pub fn wait_for_run(log_dir: &Path, command: &str) -> Value {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("last-run-")
                && let Ok(text) = std::fs::read_to_string(entry.path())
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["command"] == command
            {
                return v;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {command} finished within 60 s in {}", log_dir.display());
}

#[test]
fn install_claude_code_keeps_the_users_settings_and_its_hook_backs_up_only_the_configured_file() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let memory = env.write("home/graph/memory.jsonl", ADA);
    claude_json(&env, "my-mem", &memory);
    ok(&env.run(&["init", "--remote", &url]));
    let settings_path = env.write("home/.claude/settings.json", SETTINGS);
    ok(&env.run(&["install", "claude-code"]));
    let installed = std::fs::read_to_string(&settings_path).unwrap();
    ok(&env.run(&["install", "claude-code"]));
    assert_eq!(std::fs::read_to_string(&settings_path).unwrap(), installed);

    let v: Value = serde_json::from_str(&installed).unwrap();
    assert_eq!(v["model"], "opus");
    assert_eq!(v["permissions"]["allow"][0], "Bash(ls:*)");
    let post = v["hooks"]["PostToolUse"].as_array().unwrap();
    assert_eq!(post[0]["hooks"][0]["command"], "prettier --write");
    assert_eq!(post[1]["matcher"], "mcp__my-mem__.*");
    let command = hook_command(&v, "PostToolUse");
    assert_eq!(
        command,
        format!(
            "{BIN} --config {} -q hook claude-code",
            config_path(&env).display()
        )
    );
    for event in ["SessionStart", "SessionEnd"] {
        assert_eq!(hook_command(&v, event), command);
    }

    let project = env.path("project");
    env.write(
        "project/memory.json",
        r#"[{"id":"unrelated","content":"not mine"}]"#,
    );
    let input = serde_json::json!({
        "hook_event_name": "PostToolUse",
        "tool_name": "mcp__my-mem__create_entities",
        "cwd": project,
    });
    let out = run_hook(&env, &command, &project, &input);
    assert_code(&out, 0);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let result = wait_for_run(&env.path("logs"), "backup");
    assert_eq!(result["exit_code"], 0, "{result}");
    let backed_up = env.show(&bare, "memory-testhost.json");
    assert!(
        backed_up.contains("\"name\":\"Ada\"") && !backed_up.contains("unrelated"),
        "{backed_up}"
    );
    let tree = env.git(&[
        "--git-dir",
        &bare.display().to_string(),
        "ls-tree",
        "--name-only",
        "main",
    ]);
    assert_eq!(stdout(&tree), "memory-testhost.json\nunified-memory.json\n");

    ok(&env.run(&["uninstall", "claude-code"]));
    assert_eq!(std::fs::read_to_string(&settings_path).unwrap(), SETTINGS);
}
