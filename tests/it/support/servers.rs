//! Real ssh and smart-HTTP(S) servers on 127.0.0.1, started through the
//! launchers in `scripts/` (the stress harness uses the same ones), the hostile
//! git server of `tests/fake-git-server.py`, all stopped on drop; an ssh-agent
//! of the test's own; and ssh config files that name a server by an alias.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Env, stderr, stdout};

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
    ssh_server_authorizing(env, &[])
}

/// [`ssh_server`] that also accepts the public keys in the files `keys`.
pub fn ssh_server_authorizing(env: &Env, keys: &[&Path]) -> Server {
    let sshd = std::env::var("SSHD").unwrap_or_else(|_| "/usr/sbin/sshd".into());
    assert!(
        Path::new(&sshd).exists(),
        "{sshd} is missing: install openssh-server (scripts/test does)"
    );
    let mut cmd = Command::new(script("serve-ssh"));
    env.hermetic(&mut cmd);
    cmd.arg(env.path("sshd"));
    for k in keys {
        cmd.arg("--authorize").arg(k);
    }
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

    /// The `known_hosts` line of an ssh server, in a file of the test's own.
    pub fn known_hosts_file(&self, env: &Env) -> PathBuf {
        let path = env.path(&format!("known_hosts-{}", self.port));
        std::fs::write(&path, format!("{}\n", self.info["known_hosts"])).expect("known_hosts");
        path
    }

    /// An ssh config file (for `ssh -F`) in which `alias` is this ssh server,
    /// logged into with `key` only, its host key known from a file of the test:
    /// nothing of the machine's own ssh setup is read.
    pub fn ssh_config(&self, env: &Env, alias: &str, key: &Path) -> PathBuf {
        let path = env.path(&format!("ssh_config-{alias}"));
        let text = format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n",
            self.port,
            self.info["user"],
            key.display(),
            self.known_hosts_file(env).display()
        );
        std::fs::write(&path, text).expect("ssh config");
        path
    }

    /// `https://USER@127.0.0.1:PORT/<name>` of an HTTPS server (no password).
    pub fn https_url(&self, user: &str, name: &str) -> String {
        format!("https://{user}@127.0.0.1:{}/{name}", self.port)
    }
}

/// `scripts/serve-http`: smart HTTP behind Basic auth, serving `root`.
pub fn http_server(env: &Env, root: &Path, user: &str, password: &str) -> Server {
    let mut cmd = Command::new(script("serve-http"));
    env.hermetic(&mut cmd);
    cmd.arg(root).args(["--user", user, "--password", password]);
    Server::start(cmd, env.path("http.log"), &["port"])
}

/// [`http_server`] over TLS, with a self-signed certificate whose file is
/// `info["ca"]` (see [`trust`]).
pub fn https_server(env: &Env, root: &Path, user: &str, password: &str) -> Server {
    let mut cmd = Command::new(script("serve-http"));
    env.hermetic(&mut cmd);
    cmd.arg(root)
        .args(["--user", user, "--password", password, "--tls"])
        .arg(env.path("tls"));
    Server::start(cmd, env.path("https.log"), &["port", "ca"])
}

/// Makes a command trust an HTTPS server's certificate: git through
/// `GIT_SSL_CAINFO`, libgit2 (OpenSSL) through `SSL_CERT_FILE`.
pub fn trust(cmd: &mut Command, server: &Server) {
    cmd.env("GIT_SSL_CAINFO", &server.info["ca"])
        .env("SSL_CERT_FILE", &server.info["ca"]);
}

/// `tests/fake-git-server.py MODE REPO`: a git:// server (or smart HTTP with
/// `http`) that answers with the misbehaviour `mode` and serves what it leaves
/// alone from the bare repository `repo`.
pub fn fake_server(env: &Env, mode: &str, repo: &Path, http: bool) -> Server {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-git-server.py");
    let mut cmd = Command::new("python3");
    env.hermetic(&mut cmd);
    cmd.arg(script).arg(mode).arg(repo);
    if http {
        cmd.arg("--http");
    }
    Server::start(cmd, env.path(&format!("fake-{mode}.log")), &["port"])
}

impl Server {
    /// The URL of the repository `name` on a fake server.
    pub fn fake_url(&self, name: &str, http: bool) -> String {
        let scheme = if http { "http" } else { "git" };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }
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

/// A new ed25519 key whose private file is locked with `passphrase`; returns
/// its path (the public key is beside it, `.pub`).
pub fn new_locked_key(env: &Env, name: &str, passphrase: &str) -> PathBuf {
    let path = env.path(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    path
}

/// An ssh-agent on a socket of the test's folder, holding one key; killed on drop.
pub struct Agent {
    child: Child,
    pub socket: PathBuf,
}

impl Agent {
    pub fn start(env: &Env, key: &str) -> Agent {
        Agent::start_unlocking(env, key, None)
    }

    /// An agent holding `key`, unlocked with `passphrase` (given to `ssh-add`
    /// by an askpass program, as a desktop does).
    pub fn start_unlocking(env: &Env, key: &str, passphrase: Option<&str>) -> Agent {
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
        let mut add = Command::new("ssh-add");
        add.arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdin(Stdio::null());
        if let Some(phrase) = passphrase {
            use std::os::unix::fs::PermissionsExt;
            let askpass = env.path("askpass");
            std::fs::write(&askpass, format!("#!/bin/sh\necho '{phrase}'\n")).expect("askpass");
            std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            add.env("SSH_ASKPASS", &askpass)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env("DISPLAY", ":0");
        }
        let out = add.output().expect("ssh-add");
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

/// `git fsck --strict` finds nothing wrong with the repository at `repo`.
pub fn fsck(env: &Env, repo: &Path) {
    let out = env.git(&[
        "--git-dir",
        &git_dir(repo).display().to_string(),
        "fsck",
        "--strict",
        "--no-dangling",
    ]);
    assert!(
        out.status.success() && stdout(&out).is_empty(),
        "fsck of {}: {}{}",
        repo.display(),
        stdout(&out),
        stderr(&out)
    );
}

/// The git folder of a repository with a working tree, or of a bare one.
fn git_dir(repo: &Path) -> PathBuf {
    if repo.join(".git").is_dir() {
        repo.join(".git")
    } else {
        repo.to_path_buf()
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
