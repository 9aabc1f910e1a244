//! Why a git operation failed, sorted by what the caller should do, and the
//! sorting of what `git` and libgit2 say into those kinds.

use std::fmt;

/// Why a git operation failed. It crosses from the libgit2 child to its parent
/// as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GitError {
    /// Credentials refused or none to try: stop at once (77).
    Auth(String),
    /// The remote repository does not exist (the server answered): stop (78).
    NotFound(String),
    /// The server is not the one we trust (an unknown or changed ssh host key, a
    /// TLS certificate that does not verify): stop (78).
    Untrusted(String),
    /// A URL or host alias that cannot work: stop (78).
    Config(String),
    /// Another host moved the remote branch first: fetch and redo.
    Rejected(String),
    /// The server refused the push for a reason of its own (a lock on the branch,
    /// a hook that declined): retried for a while, then the next run tries.
    Refused(String),
    /// The network, a timeout, a server that misbehaved: back off and retry.
    Transient(String),
    /// Writing into this machine's repository failed for want of room or rights:
    /// stop at once (74).
    LocalWrite(String),
    /// An object of this machine's repository cannot be read.
    Damaged(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitError::Auth(m)
            | GitError::NotFound(m)
            | GitError::Untrusted(m)
            | GitError::Config(m)
            | GitError::Rejected(m)
            | GitError::Refused(m)
            | GitError::Transient(m)
            | GitError::LocalWrite(m)
            | GitError::Damaged(m)
            | GitError::Other(m) => f.write_str(m),
        }
    }
}

impl GitError {
    /// Whether another attempt of this run may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitError::Rejected(_) | GitError::Refused(_) | GitError::Transient(_)
        )
    }

    /// Whether the next run may succeed without a person: what keeps a commit
    /// for later.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            GitError::Auth(_)
                | GitError::NotFound(_)
                | GitError::Untrusted(_)
                | GitError::Config(_)
        )
    }

    /// A local failure: [`GitError::LocalWrite`] when the message is the system's
    /// for a full disk, a read-only file system or an exhausted quota.
    pub fn local(message: String) -> GitError {
        if says_no_room(&message) {
            GitError::LocalWrite(message)
        } else {
            GitError::Other(message)
        }
    }
}

fn says_no_room(message: &str) -> bool {
    const NO_ROOM: [&str; 3] = [
        "no space left on device",
        "read-only file system",
        "disk quota exceeded",
    ];
    let lower = message.to_lowercase();
    NO_ROOM.iter().any(|m| lower.contains(m))
}

/// Sorts what `git fetch`, `git push` or `git ls-remote` wrote on its error
/// stream (in the C locale). `said` is that text; the message kept is its last
/// meaningful lines.
pub fn classify_cli(said: &str) -> GitError {
    let message = summary(said);
    let lower = said.to_lowercase();
    // Lines the server sent are prefixed "remote:"; the rest are this machine's.
    let local: String = lower
        .lines()
        .filter(|l| !l.trim_start().starts_with("remote:"))
        .collect::<Vec<_>>()
        .join("\n");
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let has_local = |needles: &[&str]| needles.iter().any(|n| local.contains(n));
    if let Some(host) = unresolved_host(&lower) {
        let alias =
            !host.contains('.') && host != "localhost" && host.parse::<std::net::IpAddr>().is_err();
        return if alias {
            GitError::Config(format!(
                "{message}: `{host}` is neither a host alias in your ssh config nor a name DNS knows; \
                 add a `Host {host}` entry to ~/.ssh/config or use the full host name"
            ))
        } else {
            GitError::Transient(message)
        };
    }
    if has(&[
        "host key verification failed",
        "remote host identification has changed",
        "server certificate verification failed",
        "ssl certificate problem",
        "certificate verify failed",
    ]) {
        return GitError::Untrusted(message);
    }
    if has(&[
        "permission denied (publickey",
        "permission denied (password",
        "permission denied, please try again",
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "http basic: access denied",
        "invalid username or password",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "no supported authentication methods",
        "too many authentication failures",
    ]) {
        return GitError::Auth(message);
    }
    if has(&[
        "does not appear to be a git repository",
        "repository not found",
        "could not find repository",
        "the requested url returned error: 404",
        "not exported",
        "no such repository",
    ]) {
        return GitError::NotFound(message);
    }
    if has_local(&[
        "unable to find remote helper",
        "protocol '",
        "bad configuration option",
        "is not a valid",
        "invalid url",
        "port number",
    ]) && !has_local(&["connection", "timed out"])
    {
        return GitError::Config(message);
    }
    if says_no_room(&local) {
        return GitError::LocalWrite(message);
    }
    if has_local(&["bad object", "is corrupt", "object file", "loose object"])
        && !has(&["did not send all necessary objects"])
    {
        return GitError::Damaged(message);
    }
    GitError::Transient(message)
}

/// Sorts a server's refusal of the update of `refname`: `status` is its reason
/// for that ref ("failed to update ref", "pre-receive hook declined"), `said`
/// what it wrote besides (git's `remote:` lines, libgit2's side-band text). A
/// ref that moved is a race to redo at once; a lock that another process holds
/// (or a killed one left) and a hook are the server's own, waited on a while.
pub fn push_refusal(refname: &str, status: &str, said: &str) -> GitError {
    let lower = said.to_lowercase();
    let server = server_lines(said);
    let server = if server.is_empty() {
        String::new()
    } else {
        format!(": {server}")
    };
    if lower.contains(".lock': file exists") || lower.contains(".lock: file exists") {
        return GitError::Refused(format!("the server cannot lock {refname}{server}"));
    }
    let st = status.to_lowercase();
    if [
        "failed to update ref",
        "failed to lock",
        "stale",
        "fetch first",
        "non-fast-forward",
    ]
    .iter()
    .any(|m| st.contains(m))
    {
        return GitError::Rejected(format!(
            "the remote moved {refname} while the push ran ({status})"
        ));
    }
    GitError::Refused(format!(
        "the server refused the push of {refname} ({status}){server}"
    ))
}

/// What a server wrote (git's `remote:` lines, or side-band text), its
/// boilerplate and empty lines left out, at most three lines.
fn server_lines(said: &str) -> String {
    let lines: Vec<&str> = said
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.strip_prefix("remote:") {
                Some(rest) => Some(rest.trim()),
                // libgit2's side-band text has no prefix; git's own lines do.
                None if !said.contains("remote:") => Some(l),
                None => None,
            }
        })
        .filter(|l| !l.is_empty() && !is_progress(l))
        .filter(|l| !l.starts_with("Another git process") && !l.starts_with("an editor opened"))
        .take(3)
        .collect();
    crate::git::url::redact_text(&lines.join(" / "))
}

/// The host that ssh or curl could not resolve, from their message.
fn unresolved_host(lower: &str) -> Option<String> {
    for marker in ["could not resolve hostname ", "could not resolve host: "] {
        if let Some(at) = lower.find(marker) {
            let rest = &lower[at + marker.len()..];
            let host: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != ';')
                .collect();
            if !host.is_empty() {
                return Some(host);
            }
        }
    }
    None
}

/// The last lines of git's error stream that say something: `fatal:`, `error:`
/// and the server's and ssh's words, without progress lines.
pub fn summary(said: &str) -> String {
    const MAX: usize = 600;
    let lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_progress(l))
        .collect();
    let joined = lines
        .iter()
        .rev()
        .take(4)
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(" / ");
    let joined = crate::git::url::redact_text(&joined);
    match joined.char_indices().rev().nth(MAX) {
        Some((at, _)) => format!("...{}", &joined[at..]),
        None if joined.is_empty() => "git failed without a message".to_string(),
        None => joined,
    }
}

fn is_progress(line: &str) -> bool {
    let l = line.strip_prefix("remote: ").unwrap_or(line);
    [
        "Enumerating objects",
        "Counting objects",
        "Compressing objects",
        "Writing objects",
        "Receiving objects",
        "Resolving deltas",
        "Total ",
        "Unpacking objects",
        "From ",
        "To ",
        "POST ",
    ]
    .iter()
    .any(|p| l.starts_with(p))
}

/// Sorts a libgit2 error from talking to a remote.
pub fn classify_libgit2(e: &git2::Error) -> GitError {
    use git2::ErrorCode;
    let msg = crate::git::url::redact_text(e.message());
    let lower = msg.to_lowercase();
    if e.code() == ErrorCode::Auth
        || lower.contains("authentication")
        || lower.contains("status code: 401")
        || lower.contains("status code: 403")
    {
        return GitError::Auth(msg);
    }
    if e.code() == ErrorCode::Certificate {
        return GitError::Untrusted(msg);
    }
    if matches!(
        e.code(),
        ErrorCode::NotFastForward | ErrorCode::Modified | ErrorCode::Exists
    ) || lower.contains("rejected")
    {
        return GitError::Rejected(msg);
    }
    if e.code() == ErrorCode::Locked {
        return GitError::Refused(msg);
    }
    if lower.contains("not exported")
        || lower.contains("repository not found")
        || lower.contains("not appear to be a git repository")
        || lower.contains("could not find repository")
        || lower.contains("status code: 404")
    {
        return GitError::NotFound(msg);
    }
    if lower.contains("unsupported url protocol") || lower.contains("malformed url") {
        return GitError::Config(msg);
    }
    if let Some(host) = unresolved_host(&lower).or_else(|| {
        lower.find("failed to resolve address for ").map(|at| {
            lower[at + 30..]
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
    }) && !host.is_empty()
        && !host.contains('.')
        && host != "localhost"
    {
        return GitError::Config(format!(
            "{msg}: `{host}` is not a host name DNS knows (libgit2 reads no ssh config; \
                 install git to use host aliases)"
        ));
    }
    match GitError::local(msg) {
        GitError::Other(m) => GitError::Transient(m),
        no_room => no_room,
    }
}

/// Sorts a libgit2 error from this machine's repository.
pub fn classify_local(e: &git2::Error) -> GitError {
    use git2::{ErrorClass, ErrorCode};
    let damage = matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Zlib | ErrorClass::Object
    ) && !matches!(e.code(), ErrorCode::Ambiguous | ErrorCode::InvalidSpec);
    match GitError::local(e.message().to_string()) {
        GitError::Other(m) if damage => GitError::Damaged(m),
        sorted => sorted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_git_says_is_sorted_by_what_to_do() {
        let kind = |s: &str| std::mem::discriminant(&classify_cli(s));
        let d = |e: GitError| std::mem::discriminant(&e);
        let cases = [
            (
                "git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.",
                d(GitError::Auth(String::new())),
            ),
            (
                "fatal: Authentication failed for 'https://h/r.git/'",
                d(GitError::Auth(String::new())),
            ),
            (
                "fatal: could not read Username for 'https://h': terminal prompts disabled",
                d(GitError::Auth(String::new())),
            ),
            (
                "Host key verification failed.\nfatal: Could not read from remote repository.",
                d(GitError::Untrusted(String::new())),
            ),
            (
                "ssh: Could not resolve hostname gitbox: Name or service not known\nfatal: Could not read from remote repository.",
                d(GitError::Config(String::new())),
            ),
            (
                "ssh: Could not resolve hostname git.example.org: Temporary failure in name resolution",
                d(GitError::Transient(String::new())),
            ),
            (
                "fatal: unable to find remote helper for 'htps'",
                d(GitError::Config(String::new())),
            ),
            (
                "fatal: 'github.com/me/x.git' does not appear to be a git repository",
                d(GitError::NotFound(String::new())),
            ),
            (
                "fatal: remote error: access denied or repository not exported: /x.git",
                d(GitError::NotFound(String::new())),
            ),
            (
                "ssh: connect to host 127.0.0.1 port 1: Connection refused",
                d(GitError::Transient(String::new())),
            ),
            (
                "error: RPC failed; curl 28 Operation timed out",
                d(GitError::Transient(String::new())),
            ),
            (
                "error: unable to write file: No space left on device",
                d(GitError::LocalWrite(String::new())),
            ),
            (
                "remote: error: No space left on device",
                d(GitError::Transient(String::new())),
            ),
        ];
        for (said, want) in cases {
            assert_eq!(kind(said), want, "{said}");
        }
    }

    #[test]
    fn refusals_tell_a_moved_ref_from_a_held_lock_and_a_hook() {
        let lock = "remote: error: cannot lock ref 'refs/heads/main': Unable to create \
                    '/srv/b.git/./refs/heads/main.lock': File exists.\nremote: \n\
                    remote: Another git process seems to be running in this repository, e.g.\n";
        let e = push_refusal("refs/heads/main", "failed to update ref", lock);
        assert!(
            matches!(&e, GitError::Refused(m) if m.contains("main.lock': File exists")),
            "{e:?}"
        );
        let e = push_refusal("refs/heads/main", "failed to update ref", "");
        assert!(matches!(e, GitError::Rejected(_)), "{e:?}");
        let e = push_refusal(
            "refs/heads/main",
            "pre-receive hook declined",
            "remote: frozen until Monday\n",
        );
        assert!(
            matches!(&e, GitError::Refused(m) if m.contains("frozen until Monday")),
            "{e:?}"
        );
    }

    #[test]
    fn summaries_leave_out_progress_and_passwords() {
        let s = summary(
            "Counting objects: 3\nremote: Total 3\nfatal: Authentication failed for 'https://u:pw@h/r/'\n",
        );
        assert_eq!(s, "fatal: Authentication failed for 'https://***@h/r/'");
    }
}
