//! Helpers for the backup tests: a hermetic environment (temporary HOME, no git
//! config, no MEMORY_BACKUP_* from outside, a fixed clock), bare remotes, and a
//! git daemon on 127.0.0.1 that the test starts and stops.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use super::BIN;
pub const NOW: &str = "2026-11-21T10:00:00Z";

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Env { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Sets the hermetic environment on a command.
    pub fn hermetic(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("MEMORY_BACKUP_")
                || k.starts_with("GIT_")
                || k.starts_with("XDG_")
                || k == "MEMORY_FILE_PATH"
                || k == "SSH_AUTH_SOCK"
            {
                cmd.env_remove(&k);
            }
        }
        cmd.env("HOME", self.path("home"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("MEMORY_BACKUP_NOW", NOW)
            .current_dir(self.dir.path());
    }

    /// `memory-backup --repo <repo> --host <host> --log-dir logs-<host> ...`.
    pub fn mb(&self, repo: &str, host: &str) -> Command {
        let mut cmd = Command::new(BIN);
        self.hermetic(&mut cmd);
        cmd.arg("--repo")
            .arg(self.path(repo))
            .arg("--host")
            .arg(host)
            .arg("--log-dir")
            .arg(self.path(&format!("logs-{host}")));
        cmd
    }

    pub fn run(&self, repo: &str, host: &str, args: &[&str]) -> Output {
        self.mb(repo, host)
            .args(args)
            .output()
            .expect("run memory-backup")
    }

    /// [`Env::run`] with the clock at `now`.
    pub fn run_at(&self, repo: &str, host: &str, now: &str, args: &[&str]) -> Output {
        self.mb(repo, host)
            .env("MEMORY_BACKUP_NOW", now)
            .args(args)
            .output()
            .expect("run memory-backup")
    }

    /// A git daemon serving the empty bare repository `srv/remote.git`: the
    /// daemon (stopped on drop), the repository's path and its URL.
    pub fn served(&self) -> (Daemon, PathBuf, String) {
        let srv = self.path("srv");
        std::fs::create_dir_all(&srv).expect("make srv");
        let bare = self.bare("srv/remote.git");
        let daemon = Daemon::start(self, &srv);
        let url = daemon.url("remote.git");
        (daemon, bare, url)
    }

    /// Writes a memory file and returns its path as a string.
    pub fn memory(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write memory");
        p.display().to_string()
    }

    /// A JSON-array memory of `ids` with `content` each.
    pub fn memory_of(&self, name: &str, ids: &[String], content: &str) -> String {
        let items: Vec<String> = ids
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"content\":\"{content} {id}\"}}"))
            .collect();
        self.memory(name, &format!("[{}]", items.join(",")))
    }

    /// A bare repository, empty.
    pub fn bare(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        let out = self.git(&["init", "-q", "--bare", &p.display().to_string()]);
        assert!(out.status.success(), "git init: {out:?}");
        p
    }

    pub fn git(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("git");
        self.hermetic(&mut cmd);
        cmd.args(args).output().expect("run git")
    }

    /// A file of a bare repository's `main` branch.
    pub fn show(&self, bare: &Path, file: &str) -> String {
        let out = self.git(&[
            "--git-dir",
            &bare.display().to_string(),
            "show",
            &format!("main:{file}"),
        ]);
        assert!(out.status.success(), "git show {file}: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Writes `files` (name, content) into the work tree `dir` and commits them by
    /// hand, as a person with git would.
    pub fn commit_by_hand(&self, dir: &Path, files: &[(&str, &[u8])], message: &str) {
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
            self.git_in(dir, &["add", name]);
        }
        let id = [
            "-c",
            "user.name=someone",
            "-c",
            "user.email=someone@example.org",
        ];
        self.git_in(dir, &[&id[..], &["commit", "-qm", message]].concat());
    }

    pub fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["-C", dir.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let out = self.git(&all);
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).expect("utf-8")
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// The `unique_id`s of a host or unified file's text.
pub fn unique_ids(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).expect("a JSON array");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            e["_crdt_metadata"]["unique_id"]
                .as_str()
                .expect("uid")
                .to_string()
        })
        .collect()
}

/// The `id`s of a host or unified file's text.
pub fn ids(text: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(text).expect("a JSON array");
    let mut out: Vec<String> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `git daemon --enable=receive-pack` serving a folder; killed on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(env: &Env, base: &Path) -> Daemon {
        Daemon::start_on(env, base, free_port())
    }

    pub fn start_on(env: &Env, base: &Path, port: u16) -> Daemon {
        // git-daemon itself, not `git daemon`, whose child would outlive a kill.
        let exec_path = env.git(&["--exec-path"]);
        let exec_path = String::from_utf8(exec_path.stdout).expect("utf-8");
        let mut cmd = Command::new(Path::new(exec_path.trim()).join("git-daemon"));
        env.hermetic(&mut cmd);
        let child = cmd
            .args([
                "--enable=receive-pack",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "git daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, port }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A backup of `memory` (`run` runs the tool in the repository `r` of host
/// `h`) to a server that refuses every push for a reason of its own: it exits
/// 75 well before its `--max-elapsed` of 120 s, with a message that says each
/// of `says` and that the commit is kept for the next run.
pub fn backup_refused(memory: &str, says: &[&str], run: &dyn Fn(&[&str]) -> Output) {
    let started = Instant::now();
    let out = run(&[
        "--json",
        "backup",
        "--memory",
        memory,
        "--max-elapsed",
        "120",
    ]);
    assert_code(&out, 75);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run waited for --max-elapsed"
    );
    let err = stderr(&out);
    for said in says.iter().chain(&["the next run pushes it"]) {
        assert!(err.contains(said), "{said:?} not in {err}");
    }
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("--json");
    assert_eq!(report["pushed"], false, "{report}");
}

/// A `refs/heads/main.lock` left in the served `bare` repository, as a git
/// process killed on the server leaves it: a backup names the lock file and
/// stops ([`backup_refused`]); with the lock removed, the next run pushes the
/// commit it kept.
pub fn a_stale_branch_lock_stops_the_run(env: &Env, bare: &Path, run: &dyn Fn(&[&str]) -> Output) {
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&run(&["backup", "--memory", &memory]), 0);
    let lock = bare.join("refs/heads/main.lock");
    std::fs::write(&lock, "").expect("write the lock");

    let memory = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#,
    );
    let says = [
        "the server cannot lock refs/heads/main",
        "refs/heads/main.lock exists",
    ];
    backup_refused(&memory, &says, run);
    let local = env.git_in(&env.path("r"), &["show", "main:unified-memory.json"]);
    assert_eq!(unique_ids(&local).len(), 2);
    assert_eq!(unique_ids(&env.show(bare, "unified-memory.json")).len(), 1);

    std::fs::remove_file(&lock).expect("remove the lock");
    assert_code(&run(&["backup", "--memory", &memory]), 0);
    assert_eq!(unique_ids(&env.show(bare, "unified-memory.json")).len(), 2);
}
