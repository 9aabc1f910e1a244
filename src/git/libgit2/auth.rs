//! Who libgit2 says it is, and how its failures are told: the credentials it
//! offers (the ssh-agent, then `~/.ssh` key files, a URL's user and password,
//! git's credential helpers), each once; the server's host key as it saw it; and
//! the messages that name the methods tried or the way to trust a server.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use git2::{Cred, CredentialType, ErrorClass, ErrorCode, Repository};

use crate::git::error::GitError;
use crate::git::url;

/// Key files tried after the ssh-agent, in `~/.ssh`.
pub const SSH_KEY_FILES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

pub(super) const SSH_PORT: u16 = 22;

/// What one connection tried, for the messages of its failures.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) tried: Vec<String>,
    pub(super) host_key: Option<String>,
    /// The server's side-band messages (its error lines), the first few kB.
    pub(super) server: String,
}

/// The most of the server's side-band messages kept: a server can send without end.
pub(super) const SERVER_TEXT: usize = 4096;

pub(super) type SharedSeen = Rc<RefCell<Seen>>;

/// The git config that credential helpers come from: the repository's (which
/// includes the user's), with `GIT_CONFIG_GLOBAL` honoured as git honours it.
pub(super) fn credential_config(repo: Option<&Repository>) -> Option<git2::Config> {
    let mut config = match repo {
        Some(r) => r.config().ok()?,
        None => git2::Config::open_default().ok()?,
    };
    if let Some(path) = std::env::var_os("GIT_CONFIG_GLOBAL") {
        let _ = config.add_file(Path::new(&path), git2::ConfigLevel::Global, true);
    }
    Some(config)
}

/// Adds what the user needs to act on a failure: the methods tried when
/// credentials were refused, how to trust the server when its host key was.
pub(super) fn explain(e: GitError, url: &str, seen: &SharedSeen, deadline: Instant) -> GitError {
    if Instant::now() >= deadline && e.is_retryable() {
        // A callback stopped the transfer ("indexer progress callback returned -1").
        return GitError::Transient(format!(
            "{}: stopped at the run's time limit (--max-elapsed)",
            url::redact(url)
        ));
    }
    let seen = seen.borrow();
    match e {
        GitError::Auth(m) => GitError::Auth(refused(&m, url, &seen.tried)),
        GitError::Other(m) | GitError::Transient(m) if m.contains(NO_MORE_CREDENTIALS) => {
            GitError::Auth(refused(&m, url, &seen.tried))
        }
        GitError::Untrusted(m) => GitError::Untrusted(untrusted(&m, url, seen.host_key.as_deref())),
        e => e,
    }
}

pub(super) const NO_MORE_CREDENTIALS: &str = "no more credentials to try";

pub(super) fn refused(message: &str, url: &str, tried: &[String]) -> String {
    let why = if message.contains(NO_MORE_CREDENTIALS) {
        "the server accepted none".to_string()
    } else {
        message.to_string()
    };
    if tried.is_empty() {
        let how = if ssh_host_port(url).is_some() {
            "load your key into an ssh-agent (SSH_AUTH_SOCK) or put it in ~/.ssh/id_ed25519"
        } else {
            "set a git credential helper (credential.helper) that holds a password or token for it"
        };
        return format!("methods tried: none; {why}; {how}");
    }
    format!("methods tried: {}; {why}", tried.join(", "))
}

pub(super) fn untrusted(message: &str, url: &str, key: Option<&str>) -> String {
    let Some((host, port)) = ssh_host_port(url) else {
        return format!("{message}: the server's TLS certificate does not verify");
    };
    let name = if port == SSH_PORT {
        host.clone()
    } else {
        format!("[{host}]:{port}")
    };
    let file = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".ssh").join("known_hosts"))
        .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
    let known = std::fs::read_to_string(&file).is_ok_and(|text| names_host(&text, &name));
    let key = key.map(|k| format!(" ({k})")).unwrap_or_default();
    let scan = if port == SSH_PORT {
        format!("ssh-keyscan {host}")
    } else {
        format!("ssh-keyscan -p {port} {host}")
    };
    if known {
        format!(
            "the ssh host key of {name}{key} differs from the one for it in {}: refused, it may be \
             an attack; if the server's key really changed, remove the old line (ssh-keygen -R '{name}') \
             and add the new one: {scan} >> ~/.ssh/known_hosts",
            file.display()
        )
    } else {
        format!(
            "the ssh host key of {name}{key} is not in {}: refused; if this is your server, add \
             its key (and check the fingerprint): {scan} >> ~/.ssh/known_hosts",
            file.display()
        )
    }
}

/// Whether a known_hosts text has a plain (not hashed) line for `name`.
pub(super) fn names_host(known_hosts: &str, name: &str) -> bool {
    known_hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let mut hosts = fields.next().unwrap_or("");
        if hosts.starts_with('@') {
            hosts = fields.next().unwrap_or("");
        }
        hosts.split(',').any(|h| h == name)
    })
}

/// Host and port of an ssh remote: `ssh://[user@]host[:port]/path` or scp-like.
pub(super) fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "ssh" | "ssh+git" | "git+ssh") {
            return None;
        }
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']')?;
                (h, after.strip_prefix(':'))
            }
            None => match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => SSH_PORT,
        };
        return Some((host.to_string(), port));
    }
    url::scp_host(url).map(|h| (h.to_string(), SSH_PORT))
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// libgit2 calls the credentials callback again after each refused attempt; this
/// remembers what was tried and gives each method once.
pub(super) struct Credentials {
    url: String,
    config: Option<git2::Config>,
    seen: SharedSeen,
    username: bool,
    agent: bool,
    key_files: usize,
    url_userpass: bool,
    helper: bool,
    default: bool,
}

impl Credentials {
    pub(super) fn new(url: &str, config: Option<git2::Config>, seen: SharedSeen) -> Credentials {
        Credentials {
            url: url.to_string(),
            config,
            seen,
            username: false,
            agent: false,
            key_files: 0,
            url_userpass: false,
            helper: false,
            default: false,
        }
    }

    pub(super) fn callback(
        mut self,
    ) -> impl FnMut(&str, Option<&str>, CredentialType) -> Result<Cred, git2::Error> {
        move |_url, username, allowed| self.next(username, allowed)
    }

    fn tried(&self, method: impl Into<String>) {
        self.seen.borrow_mut().tried.push(method.into());
    }

    fn next(
        &mut self,
        username: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = username.unwrap_or("git").to_string();
        if allowed.contains(CredentialType::USERNAME) && !self.username {
            self.username = true;
            return Cred::username(&user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if !self.agent {
                self.agent = true;
                if std::env::var_os("SSH_AUTH_SOCK").is_some() {
                    self.tried("ssh-agent");
                    return Cred::ssh_key_from_agent(&user);
                }
            }
            let home = std::env::var_os("HOME").map(PathBuf::from);
            while let Some(name) = SSH_KEY_FILES.get(self.key_files) {
                self.key_files += 1;
                let Some(home) = &home else { break };
                let key = home.join(".ssh").join(name);
                if key.is_file() {
                    self.tried(format!("~/.ssh/{name}"));
                    return Cred::ssh_key(&user, None, &key, None);
                }
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if !self.url_userpass {
                self.url_userpass = true;
                if let Some((u, p)) = url::userpass_of(&self.url) {
                    self.tried("the URL's user and password");
                    return Cred::userpass_plaintext(&u, &p);
                }
            }
            if !self.helper {
                self.helper = true;
                if let Some(config) = &self.config {
                    match Cred::credential_helper(config, &self.url, username) {
                        Ok(c) => {
                            self.tried("git credential helper");
                            return Ok(c);
                        }
                        Err(_) if config.get_string("credential.helper").is_ok() => {
                            self.tried("git credential helper (it had nothing for this URL)");
                        }
                        Err(_) => {}
                    }
                }
            }
        }
        if allowed.contains(CredentialType::DEFAULT) && !self.default {
            self.default = true;
            self.tried("default");
            return Cred::default();
        }
        Err(git2::Error::new(
            ErrorCode::Auth,
            ErrorClass::Callback,
            format!("authentication refused, {NO_MORE_CREDENTIALS}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_hosts_and_ports_of_urls() {
        assert_eq!(
            ssh_host_port("ssh://git@h:2222/r"),
            Some(("h".into(), 2222))
        );
        assert_eq!(ssh_host_port("ssh://[::1]:22/r"), Some(("::1".into(), 22)));
        assert_eq!(
            ssh_host_port("git@github.com:me/r"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(ssh_host_port("https://h/r"), None);
    }

    #[test]
    fn known_hosts_lines_name_hosts_with_their_port() {
        let text = "h1,h2 ssh-ed25519 AAA\n@cert-authority [h3]:2222 ssh-rsa BBB\n";
        assert!(names_host(text, "h2"));
        assert!(names_host(text, "[h3]:2222"));
        assert!(!names_host(text, "h3"));
    }

    #[test]
    fn fingerprints_are_base64_without_padding() {
        assert_eq!(base64(b"hello"), "aGVsbG8");
        assert_eq!(base64(b"hel"), "aGVs");
    }

    #[test]
    fn credentials_end_instead_of_looping() {
        let mut c = Credentials::new("https://h/r", None, SharedSeen::default());
        assert!(c.next(None, CredentialType::USER_PASS_PLAINTEXT).is_err());
    }
}
