//! The integrations in `hooks/`, each run as its host would run it (the binary on
//! PATH, a temporary HOME, nothing configured but the memory file), and checked by
//! the backup they made.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::BIN;

const HOOKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hooks");
const MEMORY: &str = "{\"type\":\"entity\",\"name\":\"Ada\",\"entityType\":\"person\",\"observations\":[\"likes Rust\"]}\n";

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A shell command as a scheduler or hook runner would start it.
    fn command(&self, program: &str) -> Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let path = format!(
            "{}:{}:{}",
            bin_dir.display(),
            Path::new(HOOKS).join("claude-code").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", path)
            .env("HOME", self.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("MEMORY_BACKUP_HOST", "hooked")
            .current_dir(self.path());
        c
    }

    fn repo(&self) -> PathBuf {
        self.path().join(".local/share/memory-backup/repo")
    }

    /// Waits for the backup that a hook started (detached) to finish; its result.
    fn wait_for_backup(&self) -> serde_json::Value {
        let last = self.path().join(".local/state/memory-backup/last-run.json");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(text) = std::fs::read_to_string(&last) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if v["command"] == "backup" {
                        return v;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no backup finished within 60 s");
    }

    /// The backup repository holds this host's file, with the memory's entity, in a
    /// commit.
    fn assert_backed_up(&self) {
        let host_file = std::fs::read_to_string(self.repo().join("memory-hooked.json"))
            .expect("the host file is in the backup repository");
        assert!(host_file.contains(r#""name":"Ada""#), "{host_file}");
        let log = Command::new("git")
            .args(["-C"])
            .arg(self.repo())
            .args(["log", "--format=%s"])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        let subjects = String::from_utf8_lossy(&log.stdout);
        assert!(
            subjects.starts_with("backup from hooked: 1 new"),
            "{subjects}"
        );
    }
}

#[test]
fn the_crontab_line_backs_up_quietly() {
    let home = Home::new();
    let memory = home.path().join(".local/share/mcp-memory/memory.jsonl");
    std::fs::create_dir_all(memory.parent().unwrap()).unwrap();
    std::fs::write(&memory, MEMORY).unwrap();
    let crontab = std::fs::read_to_string(format!("{HOOKS}/cron")).unwrap();
    let line = crontab
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a crontab line");
    // Five time fields, then the command, which cron gives to sh.
    let command: String = line
        .split_whitespace()
        .skip(5)
        .collect::<Vec<_>>()
        .join(" ");
    let out = home.command("sh").args(["-c", &command]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "cron would mail: {out:?}"
    );
    home.assert_backed_up();
}

#[test]
fn the_systemd_service_runs_a_backup() {
    let home = Home::new();
    let unit = std::fs::read_to_string(format!("{HOOKS}/systemd/memory-backup.service")).unwrap();
    let timer = std::fs::read_to_string(format!("{HOOKS}/systemd/memory-backup.timer")).unwrap();
    assert!(timer.contains("OnCalendar=") && timer.contains("WantedBy=timers.target"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("{HOOKS}/systemd/memory-backup.service"))
            .arg(format!("{HOOKS}/systemd/memory-backup.timer"))
            .output()
            .unwrap();
        assert!(out.status.success(), "systemd-analyze verify: {out:?}");
    } else {
        eprintln!("systemd-analyze is not installed: the units are only run, not verified");
    }
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"))
            .replace("%h", home.path().to_str().unwrap())
    };
    let (var, memory) = value("Environment=")
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .unwrap();
    std::fs::create_dir_all(Path::new(&memory).parent().unwrap()).unwrap();
    std::fs::write(&memory, MEMORY).unwrap();
    let exec = value("ExecStart=");
    let mut argv = exec.split_whitespace();
    let out = home
        .command(argv.next().unwrap())
        .args(argv)
        .env(var, &memory)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    home.assert_backed_up();
}

#[test]
fn the_claude_code_hook_detaches_prints_nothing_and_backs_up() {
    let home = Home::new();
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{HOOKS}/claude-code/settings.json")).unwrap(),
    )
    .unwrap();
    let post = &settings["hooks"]["PostToolUse"][0];
    let matcher = post["matcher"].as_str().unwrap();
    for tool in ["create_entities", "add_observations", "create_relations"] {
        assert!(
            matcher.starts_with("mcp__memory__") && matcher.contains(tool),
            "{matcher}"
        );
    }
    let command = post["hooks"][0]["command"].as_str().unwrap();
    assert_eq!(
        settings["hooks"]["SessionEnd"][0]["hooks"][0]["command"],
        command
    );

    let memory = home.path().join("graph/memory.jsonl");
    std::fs::create_dir_all(memory.parent().unwrap()).unwrap();
    std::fs::write(&memory, MEMORY).unwrap();
    let mut child = home
        .command("sh")
        .args(["-c", command])
        .env("MEMORY_FILE_PATH", &memory)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(
            br#"{"hook_event_name":"PostToolUse","tool_name":"mcp__memory__create_entities"}"#,
        );
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    let result = home.wait_for_backup();
    assert_eq!(result["exit_code"], 0, "{result}");
    home.assert_backed_up();
}

#[test]
fn the_git_post_commit_hook_backs_up_the_tracked_memory_file() {
    let home = Home::new();
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let git = |args: &[&str]| {
        let out = home
            .command("git")
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
    std::fs::write(project.join("memory.json"), MEMORY).unwrap();
    git(&["add", "memory.json"]);
    git(&["commit", "-q", "-m", "remember Ada"]);
    let result = home.wait_for_backup();
    assert_eq!(result["exit_code"], 0, "{result}");
    home.assert_backed_up();
}
