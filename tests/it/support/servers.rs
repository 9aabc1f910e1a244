//! Real ssh and smart-HTTP servers on 127.0.0.1, started through the launchers in
//! `scripts/` (the stress harness uses the same ones) and stopped on drop, and an
//! ssh-agent of the test's own.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Env;

/// A launcher in `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A server that a launcher started: what it printed (`key=value` lines), its log.
pub struct Server {
    child: Child,
    pub port: u16,
    pub info: BTreeMap<String, String>,
    pub log: PathBuf,
}

impl Server {
    fn start(mut cmd: Command, log: PathBuf, keys: &[&str]) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("server log"))
            .spawn()
            .expect("start the server launcher");
        let mut info = BTreeMap::new();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        while !keys.iter().all(|k| info.contains_key(*k)) {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!(
                    "the launcher stopped early: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some((k, v)) = line.split_once('=') {
                info.insert(k.to_string(), v.to_string());
            }
        }
        let port: u16 = info["port"].parse().expect("a port");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            port,
            info,
            log,
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `scripts/serve-ssh`: an sshd of its own, with a host key and a client key.
pub fn ssh_server(env: &Env) -> Server {
    let sshd = std::env::var("SSHD").unwrap_or_else(|_| "/usr/sbin/sshd".into());
    assert!(
        Path::new(&sshd).exists(),
        "{sshd} is missing: install openssh-server (scripts/test does)"
    );
    let mut cmd = Command::new(script("serve-ssh"));
    env.hermetic(&mut cmd);
    cmd.arg(env.path("sshd"));
    Server::start(
        cmd,
        env.path("sshd.log"),
        &["port", "user", "client_key", "known_hosts"],
    )
}

impl Server {
    /// `ssh://USER@127.0.0.1:PORT/<abs path>` of an ssh server.
    pub fn ssh_url(&self, bare: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.info["user"],
            self.port,
            bare.display()
        )
    }

    /// Keys that sshd refused so far (one a line of its log).
    pub fn ssh_refusals(&self) -> usize {
        self.log().matches("Failed publickey").count()
    }
}

/// `scripts/serve-http`: smart HTTP behind Basic auth, serving `root`.
pub fn http_server(env: &Env, root: &Path, user: &str, password: &str) -> Server {
    let mut cmd = Command::new(script("serve-http"));
    env.hermetic(&mut cmd);
    cmd.arg(root).args(["--user", user, "--password", password]);
    Server::start(cmd, env.path("http.log"), &["port"])
}

/// Writes `~/.ssh/<name>` of the test's HOME with owner-only rights.
pub fn put_in_ssh_dir(env: &Env, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = env.path("home/.ssh");
    std::fs::create_dir_all(&dir).expect("~/.ssh");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write into ~/.ssh");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// A new ed25519 key pair; returns the private key's text and the public key line.
pub fn new_key(env: &Env, name: &str) -> (String, String) {
    let path = env.path(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let private = std::fs::read_to_string(&path).expect("private key");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("public key");
    (private, public)
}

/// An ssh-agent on a socket of the test's folder, holding one key; killed on drop.
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start(env: &Env, key: &str) -> Agent {
        let socket = env.path("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        let agent = Agent { child, socket };
        let started = Instant::now();
        while !agent.socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "no agent");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .output()
            .expect("ssh-add");
        assert!(out.status.success(), "ssh-add: {out:?}");
        agent
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir`, as text, for looking for secrets.
pub fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.push_str(&all_text_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}
