//! The one hermetic fixture of the tests: a temporary folder with its own HOME,
//! no git config of the developer's (`GIT_CONFIG_GLOBAL=/dev/null`), no
//! MEMORY_BACKUP_* or XDG_* from outside, a fixed host name and one fixed clock
//! ([`NOW`], which a test may move), and the servers a test starts on 127.0.0.1
//! and stops on drop ([`servers`]).

#![allow(dead_code)]

pub mod hosts;
pub mod mcp;
pub mod servers;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_memory-backup");
/// The clock every run sees unless a test sets another.
pub const NOW: &str = "2026-11-21T12:00:00.000000Z";

pub struct Env {
    pub dir: tempfile::TempDir,
    /// `MEMORY_BACKUP_NOW`; `None`: the system clock.
    pub now: Option<String>,
    /// `MEMORY_BACKUP_HOST` of [`Env::run`].
    pub host: String,
}

/// What a run gave.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The `--json` object printed.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {self:?}"))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        Env {
            dir,
            now: Some(NOW.into()),
            host: "testhost".into(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Sets the hermetic environment on a command: nothing of the developer's.
    pub fn hermetic(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("LANG", "C.UTF-8")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_DATA_HOME", self.path("home/.local/share"))
            .env("XDG_STATE_HOME", self.path("home/.local/state"))
            .current_dir(self.dir.path());
        if let Some(now) = &self.now {
            cmd.env("MEMORY_BACKUP_NOW", now);
        }
    }

    /// `memory-backup` as host [`Env::host`] with the repository `repo/` and
    /// the logs in `logs/` of the test's folder.
    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        self.hermetic(&mut c);
        c.env("MEMORY_BACKUP_HOST", &self.host)
            .env("MEMORY_BACKUP_LOG_DIR", self.path("logs"))
            .env("MEMORY_BACKUP_REPO", self.path("repo"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.command()
            .args(args)
            .output()
            .expect("run the binary")
            .into()
    }

    /// `stamp --memory M --out O` relative to the test folder.
    pub fn stamp(&self, memory: &str, out: &str) -> Run {
        self.run(&["stamp", "--memory", memory, "--out", out])
    }

    /// `memory-backup --repo <repo> --host <host> --log-dir logs-<host> ...`: one
    /// of several hosts of a test.
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

    /// A run as host `host` with the repository `repo`.
    pub fn run_as(&self, repo: &str, host: &str, args: &[&str]) -> Output {
        self.mb(repo, host)
            .args(args)
            .output()
            .expect("run memory-backup")
    }

    /// [`Env::run_as`] with the clock at `now`.
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
        self.write(name, text).display().to_string()
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
        let out = self.git(&[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &p.display().to_string(),
        ]);
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

    /// The loose object file of `file` at the tip of the repository `repo`,
    /// made writable, for a test that damages it as a disk can.
    pub fn loose_object_of(&self, repo: &Path, file: &str) -> PathBuf {
        let id = self.git_in(repo, &["rev-parse", &format!("HEAD:{file}")]);
        let id = id.trim();
        let object = repo.join(format!(".git/objects/{}/{}", &id[..2], &id[2..]));
        let mut perms = std::fs::metadata(&object)
            .expect("a loose object")
            .permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&object, perms).expect("make it writable");
        object
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

/// Entries of a written host or unified file, as JSON values, in file order.
pub fn entries(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn meta(e: &serde_json::Value) -> &serde_json::Value {
    &e["_crdt_metadata"]
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

/// The `id`s of a host or unified file's text, sorted.
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

/// A PATH without `git` (for runs through libgit2): a folder of links to the
/// programs a run may start, `ssh` among them.
pub fn path_without_git(env: &Env) -> PathBuf {
    let dir = env.path("bin-without-git");
    std::fs::create_dir_all(&dir).unwrap();
    for tool in ["ssh", "sh", "env", "true"] {
        if let Some(p) = which(tool) {
            let _ = std::os::unix::fs::symlink(p, dir.join(tool));
        }
    }
    dir
}

/// The path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Mounts a small tmpfs and unmounts it when dropped (a full disk, for tests
/// that run as root; `None` elsewhere).
pub struct SmallDisk(pub PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
