//! A hermetic environment for running the binary: a temporary HOME, no global or
//! system git config, none of the developer's MEMORY_BACKUP_* settings, a fixed
//! host name and, where a test asks, a fixed clock.

pub mod git;
pub mod remote;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_memory-backup");

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub now: Option<String>,
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

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        TestEnv {
            dir,
            now: Some("2026-11-21T12:00:00.000000Z".into()),
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

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("MEMORY_BACKUP_HOST", &self.host)
            .env("MEMORY_BACKUP_LOG_DIR", self.path("logs"))
            .env("MEMORY_BACKUP_REPO", self.path("repo"))
            .current_dir(self.dir.path());
        if let Some(now) = &self.now {
            c.env("MEMORY_BACKUP_NOW", now);
        }
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
}

/// Entries of a written host or unified file, as JSON values, in file order.
pub fn entries(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn meta(e: &serde_json::Value) -> &serde_json::Value {
    &e["_crdt_metadata"]
}

/// Mounts a small tmpfs and unmounts it when dropped.
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
