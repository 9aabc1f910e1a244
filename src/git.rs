//! The only module that sees git2. It turns git objects into owned data (a
//! commit's top-level files as a map of name to bytes) and offers what `backup`
//! and `init` need without writing any local ref while fetching, merging or
//! pushing: objects go straight into the object database, a commit is pushed by
//! its id, and the local branch moves afterwards with a compare-and-swap.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::pack::Known;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions,
    ObjectType, Oid, PushOptions, RemoteCallbacks, Repository, RepositoryInitOptions, Signature,
    Time,
};

/// The remote's name in the repository's config.
pub const REMOTE_NAME: &str = "origin";
/// The branch a new repository gets.
pub const DEFAULT_BRANCH: &str = "main";
/// A local ref's lock file older than this was left by a killed process: taking
/// and releasing a ref lock takes microseconds.
pub const STALE_REF_LOCK: Duration = Duration::from_secs(600);
/// Cap on one network read or connect, so that no run hangs.
pub const MAX_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time a network step is given, however little of the run is left.
const MIN_NETWORK_TIMEOUT: Duration = Duration::from_millis(200);
/// Key files tried after the ssh-agent, in `~/.ssh`.
pub const SSH_KEY_FILES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];
const FILE_MODE_BLOB: i32 = 0o100_644;

/// Top-level files of a commit: name to content.
pub type Files = BTreeMap<String, Vec<u8>>;

/// A commit made in memory ([`Repo::stage_commit`]): its id, its objects.
pub struct Staged<'f> {
    pub id: CommitId,
    commit: Vec<u8>,
    tree: (Oid, Vec<u8>),
    /// The files the first parent's tree does not hold as they are: name, id, bytes.
    blobs: Vec<(&'f str, Oid, &'f [u8])>,
}

impl Staged<'_> {
    /// Every object of the commit that its first parent lacks: kind, id, bytes,
    /// and for a blob its file's name.
    pub fn objects(&self) -> Vec<(ObjectType, Oid, &[u8], Option<&str>)> {
        let mut out = vec![
            (ObjectType::Commit, self.id.0, self.commit.as_slice(), None),
            (ObjectType::Tree, self.tree.0, self.tree.1.as_slice(), None),
        ];
        for &(name, id, bytes) in &self.blobs {
            if !out.iter().any(|&(_, i, _, _)| i == id) {
                out.push((ObjectType::Blob, id, bytes, Some(name)));
            }
        }
        out
    }
}

/// The writing of a [`Staged`] commit's objects, loose, in order.
pub struct StagedWriter<'s> {
    dir: PathBuf,
    objects: Vec<(ObjectType, Oid, &'s [u8], Option<&'s str>)>,
}

impl StagedWriter<'_> {
    pub fn write(&self) -> Result<(), GitError> {
        for &(kind, id, data, name) in &self.objects {
            crate::loose::write_object(&self.dir, kind, id, data).map_err(|e| {
                GitError::local(format!(
                    "{}: cannot write the object of {}: {e}",
                    self.dir.display(),
                    name.unwrap_or(kind.str())
                ))
            })?;
        }
        Ok(())
    }
}

/// A tree object of `entries` (name, mode, id), in git's order: by name, a
/// folder's name as if it ended in `/`.
fn tree_object(mut entries: Vec<(Vec<u8>, i32, Oid)>) -> Vec<u8> {
    const FOLDER: i32 = 0o040_000;
    let key = |(name, mode, _): &(Vec<u8>, i32, Oid)| {
        let mut k = name.clone();
        if *mode == FOLDER {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_key(key);
    let mut out = Vec::with_capacity(entries.len() * 64);
    for (name, mode, id) in entries {
        out.extend_from_slice(format!("{mode:o} ").as_bytes());
        out.extend_from_slice(&name);
        out.push(0);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// A commit object, as libgit2 writes one: author and committer the same.
fn commit_object(tree: Oid, parents: &[CommitId], sig: &Signature<'_>, message: &str) -> Vec<u8> {
    let who = format!(
        "{} <{}> {} +0000",
        String::from_utf8_lossy(sig.name_bytes()),
        String::from_utf8_lossy(sig.email_bytes()),
        sig.when().seconds()
    );
    let mut out = format!("tree {tree}\n");
    for p in parents {
        out.push_str(&format!("parent {}\n", p.0));
    }
    out.push_str(&format!("author {who}\ncommitter {who}\n\n{message}"));
    out.into_bytes()
}

/// A commit's id, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitId(Oid);

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl CommitId {
    /// The object id.
    pub(crate) fn oid(self) -> Oid {
        self.0
    }

    /// The first 10 hex digits, for messages.
    pub fn short(&self) -> String {
        self.0.to_string()[..10].to_string()
    }
}

/// Why a git operation failed, sorted by what the caller should do.
#[derive(Debug, Clone)]
pub enum GitError {
    /// Credentials refused or none left to try: stop at once.
    Auth(String),
    /// The remote repository does not exist (the server answered): stop at once.
    NotFound(String),
    /// The server is not the one we trust (an ssh host key not in known_hosts, or
    /// changed; a TLS certificate that does not verify): stop at once.
    Untrusted(String),
    /// Another host moved the remote branch first: fetch and redo.
    Rejected(String),
    /// The server refused the push for a reason of its own, not another push:
    /// it could not take the branch's lock, or a hook declined. Retried, as a
    /// lock may be held for a while by a push that is running, but a run stops
    /// after [`REFUSED_ATTEMPTS`] such refusals in a row, over
    /// [`REFUSED_PATIENCE`], on a remote tip that did not move.
    Refused(String),
    /// The network, a timeout, an unreachable path: back off and retry.
    Transient(String),
    /// Writing into this machine's repository failed for want of room or rights
    /// (a full disk, a read-only folder): stop at once; retrying cannot help.
    LocalWrite(String),
    /// An object of this machine's repository cannot be read: stop, and say
    /// how to get a whole repository again.
    Damaged(String),
    /// Anything else (a local failure): stop.
    Other(String),
}

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GitError::Auth(m)
            | GitError::NotFound(m)
            | GitError::Untrusted(m)
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
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GitError::Rejected(_) | GitError::Refused(_) | GitError::Transient(_)
        )
    }
}

/// How long a run goes on pushing when the server refuses every push for a
/// reason of its own ([`GitError::Refused`]) while the remote branch stays where
/// it is: a branch lock that a push holds while it runs is let go, and the
/// branch moves; one left by a git process killed on the server stays until
/// someone removes it.
pub const REFUSED_PATIENCE: Duration = Duration::from_secs(10);
/// ... and how many refused pushes that takes at least.
pub const REFUSED_ATTEMPTS: u32 = 3;

/// The most of the server's messages that a refusal keeps: the last ones,
/// where git's own error is.
pub(crate) const SAID_MAX: usize = 64 << 10;
/// The most of a declining hook's words that a message quotes.
const QUOTED_MAX: usize = 600;

/// Appends `text` to `said`, keeping its last [`SAID_MAX`] bytes.
pub(crate) fn keep_said(said: &mut Vec<u8>, text: &[u8]) {
    said.extend_from_slice(text);
    if said.len() > 2 * SAID_MAX {
        said.drain(..said.len() - SAID_MAX);
    }
}

/// Sorts the server's refusal of `refname`, `why` in its report, with what it
/// printed on the way (`said`, its side-band messages).
pub(crate) fn refusal(refname: &str, why: &str, said: &str) -> GitError {
    if let Some(lock) = lock_in(refname, said) {
        return GitError::Refused(format!(
            "the server cannot lock {refname}: {lock} exists; when it stays while the branch \
             does not move, a git process killed on the server left it: if no push is running \
             there, remove that file"
        ));
    }
    if why.contains("hook declined") {
        let said = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        let said = match said.char_indices().rev().nth(QUOTED_MAX) {
            Some((at, _)) => format!(" (the server said: ...{})", &said[at..]),
            None if said.is_empty() => String::new(),
            None => format!(" (the server said: {said})"),
        };
        return GitError::Refused(format!(
            "the server declined the push of {refname}: {why}{said}"
        ));
    }
    GitError::Rejected(format!("the remote refused the push: {refname}: {why}"))
}

/// The lock file of `refname` that git on the server says it could not create,
/// in its "cannot lock ref '<refname>': Unable to create '<path>': File
/// exists." message.
fn lock_in(refname: &str, said: &str) -> Option<String> {
    let before = format!("cannot lock ref '{refname}': Unable to create '");
    const AFTER: &str = "': File exists";
    let start = said.find(&before)? + before.len();
    let len = said[start..].find(AFTER)?;
    let lock = &said[start..start + len];
    lock.ends_with(&format!("{refname}.lock"))
        .then(|| lock.replace("/./", "/"))
}

impl GitError {
    /// A local failure: [`GitError::LocalWrite`] when the message is the system's
    /// for a full disk, a read-only file system or an exhausted quota.
    pub(crate) fn local(message: String) -> GitError {
        const NO_ROOM: [&str; 3] = [
            "no space left on device",
            "read-only file system",
            "disk quota exceeded",
        ];
        let lower = message.to_lowercase();
        if NO_ROOM.iter().any(|m| lower.contains(m)) {
            GitError::LocalWrite(message)
        } else {
            GitError::Other(message)
        }
    }
}

/// Whether libgit2's error says that an object of the repository cannot be
/// read (an empty or cut object file, a missing one that a ref or a tree
/// names): a damaged repository, which no other run would find whole.
fn is_damage(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Zlib | ErrorClass::Object
    ) && !matches!(e.code(), ErrorCode::Ambiguous | ErrorCode::InvalidSpec)
}

pub(crate) fn other(e: git2::Error) -> GitError {
    // A full disk first: libgit2 reports a write that found no room in the
    // object database under the same classes as damage.
    match GitError::local(e.message().to_string()) {
        GitError::Other(m) if is_damage(&e) => GitError::Damaged(m),
        sorted => sorted,
    }
}

/// Sorts an error from talking to a remote.
fn classify(e: &git2::Error) -> GitError {
    let msg = e.message().to_string();
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
    if e.code() == ErrorCode::NotFastForward
        || e.code() == ErrorCode::Modified
        || e.code() == ErrorCode::Exists
        || e.code() == ErrorCode::Locked
        || lower.contains("rejected")
    {
        return GitError::Rejected(msg);
    }
    if lower.contains("not exported")
        || lower.contains("repository not found")
        || lower.contains("not appear to be a git repository")
        || lower.contains("could not find repository")
        || lower.contains("status code: 404")
    {
        return GitError::NotFound(msg);
    }
    // A fetched pack that finds no room on this machine: no retry helps. Anything
    // else from talking to a remote (an object the push expected to find missing
    // because the tip moved, a reset connection) is worth another try.
    match GitError::local(msg) {
        GitError::Other(m) => GitError::Transient(m),
        no_room => no_room,
    }
}

/// Where a remote is: a folder on this machine, or a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    /// A path or `file://` URL. libgit2 would write such a remote's refs without
    /// the check a server makes, so pushes to it are done here, as a compare-and-swap.
    Local(PathBuf),
    /// `git://`, `ssh://`, `https://`, scp-like `user@host:path`.
    Network,
}

/// Tells a local remote from a network one.
pub fn remote_kind(url: &str) -> RemoteKind {
    if let Some(rest) = url.strip_prefix("file://") {
        return RemoteKind::Local(PathBuf::from(rest));
    }
    if url.contains("://") {
        return RemoteKind::Network;
    }
    // scp-like: a colon before any slash, and not a Windows drive letter.
    if let Some(colon) = url.find(':') {
        let slash = url.find('/').unwrap_or(usize::MAX);
        if colon < slash && colon > 1 {
            return RemoteKind::Network;
        }
    }
    RemoteKind::Local(PathBuf::from(url))
}

/// libgit2 starts OpenSSL at its first use, and OpenSSL then parses the whole CA
/// bundle: about 35 ms, most of a small run, even when no TLS connection follows.
/// Whether this run may connect over TLS: the remote (`url`, else the one in the
/// repository's config) is `http(s)://`, or some git config could rewrite URLs
/// (`insteadOf`, includes) or cannot be read. A run that makes no TLS connection
/// does not need the bundle, whichever one the user chose.
pub fn may_need_tls(repo: &Path, url: Option<&str>) -> bool {
    let repo_config = repo.join(".git").join("config");
    let mut configs = vec![repo_config.clone()];
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match std::env::var_os("GIT_CONFIG_GLOBAL") {
        Some(g) => configs.push(PathBuf::from(g)),
        None => {
            if let Some(h) = &home {
                configs.push(h.join(".gitconfig"));
            }
            let xdg = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".config")));
            if let Some(x) = xdg {
                configs.push(x.join("git").join("config"));
            }
        }
    }
    if std::env::var_os("GIT_CONFIG_NOSYSTEM").is_none() {
        configs.push(PathBuf::from("/etc/gitconfig"));
    }
    let mut own = String::new();
    for path in &configs {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return true,
        };
        let lower = text.to_lowercase();
        if lower.contains("insteadof") || lower.contains("[include") {
            return true;
        }
        if *path == repo_config {
            own = text;
        }
    }
    let url = url.map(str::to_string).or_else(|| origin_url(&own));
    url.is_some_and(|u| {
        let u = u.to_lowercase();
        u.starts_with("https://") || u.starts_with("http://")
    })
}

/// The `url` of `[remote "origin"]` in a git config file's text.
fn origin_url(config: &str) -> Option<String> {
    let mut in_origin = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_origin =
                line.replace(char::is_whitespace, "") == format!("[remote\"{REMOTE_NAME}\"]");
            continue;
        }
        if in_origin {
            if let Some((key, value)) = line.split_once('=') {
                if key.trim().eq_ignore_ascii_case("url") {
                    return Some(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// Points OpenSSL at an empty CA bundle, so that starting libgit2 costs nothing.
/// Only for runs that [`may_need_tls`] says make no TLS connection.
///
/// # Safety
/// No other thread may be running: it changes the process's environment.
pub unsafe fn skip_tls_setup() {
    // SAFETY: the caller guarantees that this process runs one thread.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
}

/// Process-wide libgit2 settings, once. Objects read back are not hashed again:
/// they were hashed when written, and a fetched pack is checked when indexed.
fn settings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // What libgit2 writes into a repository (packs and their indexes, refs)
        // reaches the disk before it is renamed into place, so that a power
        // cut never leaves a ref that names objects it lost.
        // SAFETY: sets one of libgit2's global options, before any
        // repository is opened; git2 has no wrapper for it.
        unsafe {
            libgit2_sys::init();
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as libc::c_int,
                1,
            );
        }
        // A repository that fetched for months holds a pack per fetch, and
        // libgit2 keeps every pack it has read open, with no limit by default:
        // a walk of the whole history (the fold's) ran out of file descriptors
        // at 1,141 packs under the usual limit of 1,024. With a limit it closes
        // the pack it used longest ago instead, and opens it again when it is
        // needed: this tool never removes a pack (see `repack`).
        // libgit2 may go over that limit (it closes only packs with no part in
        // use), so the process's own limit is raised first.
        let packs = packs_for_open_files(raise_open_file_limit());
        // SAFETY: as above, before any repository is opened.
        let _ = unsafe { git2::opts::set_mwindow_file_limit(packs) };
    });
}

/// Raises the process's soft limit of open files toward the hard one (cron and
/// systemd start a process at 1,024 under a hard limit of thousands); returns
/// the soft limit now in force, or 1,024 when it cannot be read.
fn raise_open_file_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let wanted = raised_open_files(limit.rlim_cur, limit.rlim_max);
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; a soft limit up to
        // the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return wanted;
        }
    }
    limit.rlim_cur
}

/// The soft limit of open files to raise `soft` to, under the hard limit `hard`.
fn raised_open_files(soft: libc::rlim_t, hard: libc::rlim_t) -> libc::rlim_t {
    soft.max(hard.min(RAISE_OPEN_FILES_TO))
}

/// How many pack files libgit2 may hold open at once in a process that may open
/// `files` files: half of them, so that the rest stay for everything else, and
/// from 8 to 512.
fn packs_for_open_files(files: libc::rlim_t) -> usize {
    usize::try_from(files / 2).map_or(512, |half| half.clamp(8, 512))
}

/// How far [`raise_open_file_limit`] raises the limit of open files: more than the
/// packs and everything else need, short of a hard limit of millions.
const RAISE_OPEN_FILES_TO: libc::rlim_t = 8192;

/// A commit author.
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// The backup repository: a non-bare repository whose HEAD names the branch.
pub struct Repo {
    repo: Repository,
    /// Blobs that this run's last fetch made whole and that no delta of its pack
    /// leans on, by id (from a server that keeps its packs, the newest
    /// versions). Reading them here saves libgit2 applying their chains of
    /// deltas again (or inflating them).
    fetched: std::sync::Mutex<crate::wire::Fetched>,
}

impl Repo {
    /// Opens the repository at `path`; `None` when there is none there.
    pub fn open(path: &Path) -> Result<Option<Repo>, GitError> {
        settings();
        match Repository::open(path) {
            Ok(repo) => Ok(Some(Repo::of(repo))),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// What the object database holds on disk ([`crate::repack::census`]).
    pub fn census(&self) -> crate::repack::Census {
        crate::repack::census(&self.repo)
    }

    /// Folds the loose objects into one pack when they are many
    /// ([`crate::repack`]); `None` when there are few.
    pub fn fold_loose_if_many(&self) -> Result<Option<crate::repack::Folded>, GitError> {
        crate::repack::fold_if_many(&self.repo).map_err(other)
    }

    /// Makes a repository at `path` whose HEAD names `branch` (or opens the one
    /// that a concurrent run just made).
    pub fn init(path: &Path, branch: &str) -> Result<Repo, GitError> {
        settings();
        let io = |e: std::io::Error| GitError::local(format!("{}: {e}", path.display()));
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head(branch).mkpath(true);
        let occupied = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            // A folder of the user's: the repository is made inside it.
            let repo = Repository::init_opts(path, &opts).map_err(other)?;
            let r = Repo::of(repo);
            r.exclude_temporary_files();
            return Ok(r);
        }
        // Made complete beside it, then renamed into place: two runs that both
        // find no repository never see each other's half-made one.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        let tmp = tempfile::Builder::new()
            .prefix(".memory-backup-repo-")
            .tempdir_in(parent)
            .map_err(io)?;
        let made = Repo::of(Repository::init_opts(tmp.path(), &opts).map_err(other)?);
        made.exclude_temporary_files();
        drop(made);
        if std::fs::rename(tmp.path(), path).is_ok() {
            let _ = tmp.keep();
        }
        // Ours, or the one another run put there first.
        let repo = Repository::open(path).map_err(other)?;
        Ok(Repo::of(repo))
    }

    fn of(repo: Repository) -> Repo {
        Repo {
            repo,
            fetched: Default::default(),
        }
    }

    /// Temporary files of an interrupted atomic write are not the user's business.
    fn exclude_temporary_files(&self) {
        let info = self.repo.commondir().join("info");
        let path = info.join("exclude");
        let line = ".memory-backup-*";
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if !old.lines().any(|l| l == line) {
            let _ = std::fs::create_dir_all(&info);
            let _ = std::fs::write(&path, format!("{old}{line}\n"));
        }
    }

    /// The working folder.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The branch that HEAD names.
    pub fn branch(&self) -> Result<String, GitError> {
        let head = self.repo.find_reference("HEAD").map_err(other)?;
        let target = head
            .symbolic_target()
            .ok()
            .flatten()
            .ok_or_else(|| GitError::Other("HEAD is detached; check out a branch".into()))?;
        Ok(target
            .strip_prefix("refs/heads/")
            .unwrap_or(target)
            .to_string())
    }

    /// Points HEAD at `branch`.
    pub fn set_branch(&self, branch: &str) -> Result<(), GitError> {
        self.repo
            .set_head(&format!("refs/heads/{branch}"))
            .map_err(other)
    }

    /// The remote's URL, if one is set.
    pub fn remote_url(&self) -> Option<String> {
        let remote = self.repo.find_remote(REMOTE_NAME).ok()?;
        remote.url().ok().map(str::to_string)
    }

    /// Sets the remote's URL (adding the remote if there is none).
    pub fn set_remote_url(&self, url: &str) -> Result<(), GitError> {
        if self.repo.find_remote(REMOTE_NAME).is_ok() {
            self.repo.remote_set_url(REMOTE_NAME, url).map_err(other)
        } else {
            self.repo.remote(REMOTE_NAME, url).map(drop).map_err(other)
        }
    }

    /// A config value of the repository (and the user's git config).
    pub fn config_string(&self, key: &str) -> Option<String> {
        let config = self.repo.config().ok()?;
        config.get_string(key).ok().filter(|s| !s.trim().is_empty())
    }

    /// Where the local branch points now.
    pub fn local_tip(&self, branch: &str) -> Result<Option<CommitId>, GitError> {
        match self.repo.refname_to_id(&format!("refs/heads/{branch}")) {
            Ok(id) => Ok(Some(CommitId(id))),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    pub fn contains(&self, commit: CommitId, ancestor: CommitId) -> Result<bool, GitError> {
        if commit == ancestor {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(commit.0, ancestor.0)
            .map_err(other)
    }

    /// The first parent of `commit`, if it has one.
    pub fn first_parent(&self, commit: CommitId) -> Result<Option<CommitId>, GitError> {
        let c = self.repo.find_commit(commit.0).map_err(other)?;
        Ok(c.parent_ids().next().map(CommitId))
    }

    /// The top-level files of a commit whose names `keep` accepts.
    pub fn read_files(
        &self,
        commit: CommitId,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Files, GitError> {
        let tree = self
            .repo
            .find_commit(commit.0)
            .and_then(|c| c.tree())
            .map_err(other)?;
        let mut out = Files::new();
        // With one host, its file and the unified file are the same blob.
        let mut seen: std::collections::HashMap<Oid, String> = Default::default();
        let odb = self.repo.odb().map_err(other)?;
        let workdir = self.repo.workdir();
        for item in tree.iter() {
            let Ok(name) = item.name() else { continue };
            if item.kind() != Some(ObjectType::Blob) || !keep(name) {
                continue;
            }
            let fetched = || {
                let fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
                fetched.get(&item.id()).cloned()
            };
            let bytes = match seen.get(&item.id()).and_then(|n| out.get(n)) {
                Some(b) => b.clone(),
                None => match fetched()
                    .or_else(|| workdir.and_then(|d| same_in_worktree(&odb, d, name, item.id())))
                {
                    Some(b) => b,
                    None => self
                        .repo
                        .find_blob(item.id())
                        .map_err(other)?
                        .content()
                        .to_vec(),
                },
            };
            seen.insert(item.id(), name.to_string());
            out.insert(name.to_string(), bytes);
        }
        Ok(out)
    }

    /// A commit made in memory, nothing written: the tree of the first parent
    /// (or an empty one) with `files` put in, and `parents`; its objects and
    /// their ids. `first_parents_files` are files as read from the first
    /// parent's tree: those of `files` equal to them (and plain files there) are
    /// left as that tree has them, not hashed again. [`Repo::write_staged`]
    /// writes it, while a push may send it.
    pub fn stage_commit<'f>(
        &self,
        files: &'f Files,
        first_parents_files: &Files,
        parents: &[CommitId],
        author: &Author,
        message: &str,
    ) -> Result<Staged<'f>, GitError> {
        let base = match parents.first() {
            Some(p) => Some(
                self.repo
                    .find_commit(p.0)
                    .and_then(|c| c.tree())
                    .map_err(other)?,
            ),
            None => None,
        };
        let mut entries: Vec<(Vec<u8>, i32, Oid)> = base
            .iter()
            .flat_map(|t| t.iter())
            .map(|e| (e.name_bytes().to_vec(), e.filemode_raw(), e.id()))
            .collect();
        // Left as the first parent has it only where that is a plain file too.
        let kept = |name: &str| {
            entries
                .iter()
                .any(|(n, mode, _)| n == name.as_bytes() && *mode == FILE_MODE_BLOB)
        };
        let changed: Vec<(&'f str, &'f [u8])> = files
            .iter()
            .filter(|&(name, bytes)| first_parents_files.get(name) != Some(bytes) || !kept(name))
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        // Files with the same bytes (with one host, its file and the unified file)
        // are one blob: hashed once.
        let mut blobs: Vec<(&'f str, Oid, &'f [u8])> = Vec::new();
        for (name, bytes) in changed {
            let id = match blobs.iter().find(|(_, _, b)| *b == bytes) {
                Some(&(_, id, _)) => id,
                None => crate::loose::blob_id(bytes),
            };
            blobs.push((name, id, bytes));
            match entries.iter_mut().find(|(n, _, _)| n == name.as_bytes()) {
                Some(e) => *e = (name.as_bytes().to_vec(), FILE_MODE_BLOB, id),
                None => entries.push((name.as_bytes().to_vec(), FILE_MODE_BLOB, id)),
            }
        }
        let tree = tree_object(entries);
        let tree_id = crate::loose::object_id(ObjectType::Tree, &tree);
        let sig = Signature::new(&author.name, &author.email, &Time::new(author.time, 0))
            .map_err(other)?;
        let commit = commit_object(tree_id, parents, &sig, message);
        Ok(Staged {
            id: CommitId(crate::loose::object_id(ObjectType::Commit, &commit)),
            commit,
            tree: (tree_id, tree),
            blobs,
        })
    }

    /// Writes the objects of `staged`: its blobs first, then its tree, its commit
    /// last, so that no reader finds the commit before what it names.
    pub fn write_staged(&self, staged: &Staged<'_>) -> Result<CommitId, GitError> {
        self.staged_writer(staged)?.write()?;
        Ok(staged.id)
    }

    /// What [`Repo::write_staged`] does, ready to run on another thread: the
    /// objects that this repository lacks, and where they go.
    pub fn staged_writer<'s>(&self, staged: &'s Staged<'s>) -> Result<StagedWriter<'s>, GitError> {
        let odb = self.repo.odb().map_err(other)?;
        let mut objects = staged.objects();
        // The common git folder: a linked worktree's own holds only HEAD and the index.
        let dir = self.repo.commondir().join("objects");
        objects.retain(|&(_, id, _, _)| !crate::loose::is_whole(&odb, &dir, id));
        // Blobs, the tree, the commit: the reverse of the pack's order.
        objects.reverse();
        Ok(StagedWriter { dir, objects })
    }

    /// Fetches `branch` of `url` into the object database, writing no ref; returns
    /// the remote tip (none when the remote has no such branch).
    pub fn fetch(
        &self,
        url: &str,
        branch: &str,
        timeout: Duration,
    ) -> Result<Option<CommitId>, GitError> {
        self.fetch_if(url, branch, timeout, || true)
            .expect("a fetch that may always proceed finishes")
    }

    /// [`Repo::fetch`], asking `proceed` once the remote's refs are listed and
    /// before anything is written here: `None` when it says no. The connection
    /// and the listing, the network's round trips, overlap the caller's work.
    pub fn fetch_if(
        &self,
        url: &str,
        branch: &str,
        timeout: Duration,
        proceed: impl FnOnce() -> bool,
    ) -> Option<Result<Option<CommitId>, GitError>> {
        self.fetch_asking(url, branch, timeout, proceed)
            .map_or_else(|e| e.map(Err), |tip| Some(Ok(tip)))
    }

    /// The fetch itself; `Err(None)` when `proceed` said no.
    fn fetch_asking(
        &self,
        url: &str,
        branch: &str,
        timeout: Duration,
        proceed: impl FnOnce() -> bool,
    ) -> Result<Option<CommitId>, Option<GitError>> {
        if let RemoteKind::Local(path) = remote_kind(url) {
            check_local_remote(&path)?;
        }
        if crate::wire::parse_url(url).is_some() {
            let haves = self.haves(branch);
            let limit = network_timeout(timeout);
            let mut fetched = crate::wire::Fetched::new();
            let tip = crate::wire::fetch(
                &self.repo,
                url,
                branch,
                &haves,
                limit,
                proceed,
                &mut fetched,
            );
            // The tips read next are this fetch's: its blobs replace the last one's.
            *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) = fetched;
            return tip.map(|tip| tip.map(CommitId));
        }
        set_timeouts(timeout);
        let refname = format!("refs/heads/{branch}");
        let mut remote = self.repo.remote_anonymous(url).map_err(other)?;
        let seen = SharedSeen::default();
        let callbacks = remote_callbacks(url, self.credential_config(), &seen);
        let wrap = |e: git2::Error| explain(classify(&e), url, &seen);
        let mut conn = remote
            .connect_auth(Direction::Fetch, Some(callbacks), None)
            .map_err(wrap)?;
        let tip = conn
            .list()
            .map_err(wrap)?
            .iter()
            .find(|h| h.name() == refname)
            .map(|h| h.oid());
        let Some(tip) = tip else { return Ok(None) };
        if !self.has_commit(tip) {
            // libgit2 wants no object that has a file here, even an empty one.
            let objects = self.repo.commondir().join("objects");
            if crate::loose::is_empty(&objects, tip) {
                let _ = std::fs::remove_file(crate::loose::path(&objects, tip));
            }
            if !proceed() {
                return Err(None);
            }
            // On the same connection: one round of the server's start-up less.
            let callbacks = remote_callbacks(url, self.credential_config(), &seen);
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(callbacks)
                .update_fetchhead(false)
                .download_tags(git2::AutotagOption::None);
            conn.remote()
                .download(&[format!("+{refname}")], Some(&mut opts))
                .map_err(wrap)?;
            drop(conn);
            if !self.has_commit(tip) {
                return Err(Some(GitError::Transient(format!(
                    "the fetch of {refname} did not bring its tip {tip}"
                ))));
            }
        }
        Ok(Some(CommitId(tip)))
    }

    /// The git config that credential helpers come from: the repository's, with
    /// `GIT_CONFIG_GLOBAL` honoured as git honours it (libgit2 alone reads
    /// `~/.gitconfig` whatever it says).
    fn credential_config(&self) -> Option<git2::Config> {
        let mut config = self.repo.config().ok()?;
        if let Some(path) = std::env::var_os("GIT_CONFIG_GLOBAL") {
            let _ = config.add_file(Path::new(&path), git2::ConfigLevel::Global, true);
        }
        Some(config)
    }

    /// The commits a fetch tells the server this repository has: the remote
    /// tip last seen, the local tip, and their nearest ancestors.
    fn haves(&self, branch: &str) -> Vec<Oid> {
        const HAVES: usize = 32;
        let tips: Vec<Oid> = [
            self.noted_remote_tip(branch),
            self.local_tip(branch).ok().flatten(),
        ]
        .into_iter()
        .flatten()
        .map(|c| c.0)
        .collect();
        let mut out = Vec::new();
        let Ok(mut walk) = self.repo.revwalk() else {
            return tips;
        };
        for &t in &tips {
            // A tip that cannot be walked is still named below.
            let _ = walk.push(t);
        }
        for id in walk.take(HAVES).flatten() {
            out.push(id);
        }
        for t in tips {
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    fn has_commit(&self, id: Oid) -> bool {
        self.repo.find_commit(id).is_ok()
    }

    /// Pushes `new` to `branch` of `url`, only if that branch still points at
    /// `expected` (none: only if it does not exist). `known` holds the files of
    /// `new` and `expected` where the caller has them.
    pub fn push(
        &self,
        url: &str,
        branch: &str,
        new: CommitId,
        expected: Option<CommitId>,
        known: Known<'_>,
        timeout: Duration,
    ) -> Result<(), GitError> {
        match remote_kind(url) {
            RemoteKind::Local(path) => self.push_local(&path, branch, new, expected, known),
            RemoteKind::Network if url.starts_with("git://") => crate::wire::push(
                &self.repo,
                url,
                branch,
                new.0,
                expected.map(|c| c.0),
                known,
                network_timeout(timeout),
            ),
            RemoteKind::Network => self.push_network(url, branch, new, timeout),
        }
    }

    /// Whether [`Repo::push_staged`] pushes to `url`: a `git://` remote.
    pub fn pushes_staged(url: &str) -> bool {
        crate::wire::parse_url(url).is_some()
    }

    /// [`Repo::push`] of a commit made in memory on `expected`, its only parent,
    /// to a `git://` remote: its objects need not be written here yet.
    pub fn push_staged(
        &self,
        url: &str,
        branch: &str,
        staged: &Staged<'_>,
        expected: Option<CommitId>,
        known: Known<'_>,
        timeout: Duration,
    ) -> Result<(), GitError> {
        crate::wire::push_staged(
            &self.repo,
            url,
            branch,
            staged,
            expected.map(|c| c.0),
            known,
            network_timeout(timeout),
        )
    }

    /// Over the git protocol the server compares the ref with the old id we send
    /// and refuses if it moved; libgit2 refuses a non-fast-forward before that.
    fn push_network(
        &self,
        url: &str,
        branch: &str,
        new: CommitId,
        timeout: Duration,
    ) -> Result<(), GitError> {
        set_timeouts(timeout);
        let mut remote = self.repo.remote_anonymous(url).map_err(other)?;
        let seen = SharedSeen::default();
        let refused: Rc<RefCell<Option<GitError>>> = Rc::default();
        let said: Rc<RefCell<Vec<u8>>> = Rc::default();
        let (refused_cb, said_cb) = (refused.clone(), said.clone());
        let mut callbacks = remote_callbacks(url, self.credential_config(), &seen);
        callbacks.sideband_progress(move |text| {
            keep_said(&mut said_cb.borrow_mut(), text);
            true
        });
        callbacks.push_update_reference(move |refname, status| {
            if let Some(why) = status {
                let said = String::from_utf8_lossy(&said.borrow()).into_owned();
                *refused_cb.borrow_mut() = Some(refusal(refname, why, &said));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(callbacks);
        let spec = format!("{}:refs/heads/{branch}", new.0);
        remote
            .push(&[spec], Some(&mut opts))
            .map_err(|e| explain(classify(&e), url, &seen))?;
        if let Some(e) = refused.borrow_mut().take() {
            return Err(e);
        }
        Ok(())
    }

    /// A compare-and-swap on a repository on this machine: copy the objects,
    /// then move the ref only if it still points where we saw it.
    fn push_local(
        &self,
        path: &Path,
        branch: &str,
        new: CommitId,
        expected: Option<CommitId>,
        known: Known<'_>,
    ) -> Result<(), GitError> {
        check_local_remote(path)?;
        let remote = Repository::open(path).map_err(|e| classify_open(&e, path))?;
        let gone = |e: git2::Error| remote_write_error(path, &e);
        let odb = remote.odb().map_err(gone)?;
        let mut writer = odb.packwriter().map_err(gone)?;
        // Whole objects: the receiving side would store a delta's base again.
        let old = expected.map(|c| c.0);
        crate::pack::write_pack(&self.repo, new.0, old, false, known, &mut writer).map_err(
            |e| match e {
                crate::pack::PackError::Git(e) => other(e),
                crate::pack::PackError::Io(e) => {
                    GitError::Transient(format!("{}: cannot write objects: {e}", path.display()))
                }
            },
        )?;
        writer.commit().map_err(gone)?;
        let expect = match expected {
            Some(old) => Expect::Is(old.0),
            None => Expect::Absent,
        };
        swap_ref(&remote, &format!("refs/heads/{branch}"), new.0, expect).map_err(|e| match e {
            GitError::Rejected(m) | GitError::Transient(m) | GitError::Other(m) => {
                GitError::Rejected(format!("{}: {m}", path.display()))
            }
            g => g,
        })
    }

    /// Moves the local branch from `expected` to `new`. Err(Rejected) when the
    /// branch moved meanwhile, or another process holds its lock.
    pub fn move_branch(
        &self,
        branch: &str,
        new: CommitId,
        expected: Option<CommitId>,
    ) -> Result<(), GitError> {
        let expect = match expected {
            Some(old) => Expect::Is(old.0),
            None => Expect::Absent,
        };
        swap_ref(&self.repo, &format!("refs/heads/{branch}"), new.0, expect)
    }

    /// Best effort: records the remote tip as `refs/remotes/origin/<branch>`, for
    /// `status`. A concurrent run holding its lock costs nothing.
    pub fn note_remote_tip(&self, branch: &str, tip: CommitId) {
        let refname = format!("refs/remotes/{REMOTE_NAME}/{branch}");
        if let Err(e) = swap_ref(&self.repo, &refname, tip.0, Expect::Any) {
            tracing::debug!("{refname} not updated: {e}");
        }
    }

    /// Makes the working tree and the index show the branch tip. Each file is
    /// replaced atomically and the index by a rename, so no lock file is taken;
    /// it repeats until the tip did not move while writing, so that of two
    /// concurrent runs the last to finish leaves the newest tip.
    /// `known` saves reading back the files of a commit this run just wrote.
    /// The files are a view of the commit, rebuilt by every run: they are
    /// replaced by a rename but not synced to disk.
    pub fn sync_worktree(
        &self,
        branch: &str,
        keep: impl Fn(&str) -> bool + Copy,
        known: Option<(CommitId, &Files)>,
    ) -> Result<(), GitError> {
        let Some(dir) = self.repo.workdir().map(Path::to_path_buf) else {
            return Ok(());
        };
        remove_stale_temporaries(self.repo.path(), TEMP_INDEX_PREFIX);
        remove_stale_temporaries(&dir, TEMP_FILE_PREFIX);
        for _ in 0..5 {
            let Some(tip) = self.local_tip(branch)? else {
                return Ok(());
            };
            let read;
            let files = match known {
                Some((id, files)) if id == tip => files,
                _ => {
                    read = self.read_files(tip, keep)?;
                    &read
                }
            };
            write_files(&dir, files)?;
            self.write_index(tip)?;
            if self.local_tip(branch)? == Some(tip) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn write_index(&self, tip: CommitId) -> Result<(), GitError> {
        let tree = self
            .repo
            .find_commit(tip.0)
            .and_then(|c| c.tree())
            .map_err(other)?;
        let gitdir = self.repo.path();
        // A fresh name: libgit2 writes it through its own `.lock`, which no one
        // else takes, and the rename puts it in place without `index.lock`.
        let tmp = gitdir.join(format!(
            "{TEMP_INDEX_PREFIX}{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let written = git2::Index::open(&tmp)
            .and_then(|mut index| {
                index.read_tree(&tree)?;
                index.write()
            })
            .map_err(other)
            .and_then(|()| {
                std::fs::rename(&tmp, gitdir.join("index"))
                    .map_err(|e| GitError::local(format!("{}: {e}", gitdir.display())))
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// What a ref must hold for [`swap_ref`] to move it.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    Absent,
    Is(Oid),
}

/// A lock file that no memory-backup process holds and that is older than this
/// was left by a killed process: git and libgit2 hold a ref's lock for the
/// milliseconds of one update.
pub const STALE_UNHELD_LOCK: Duration = Duration::from_secs(2);

/// Moves a ref with git's own protocol, so that git and libgit2 respect it:
/// create `<ref>.lock` exclusively, check the ref's value, write the new one into
/// the lock and rename it over the ref. The lock file is also `flock`ed while it
/// exists, so a later run can tell one left by a killed run (nobody holds it)
/// from one in use, and remove it: a kill -9 never blocks later runs.
fn swap_ref(repo: &Repository, refname: &str, new: Oid, expect: Expect) -> Result<(), GitError> {
    use std::fs::OpenOptions;
    use std::io::ErrorKind;
    // Branches and remote-tracking refs live in the common git folder, also for a
    // linked worktree.
    let path = repo.commondir().join(refname);
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    let io = |e: std::io::Error| GitError::local(format!("{}: {e}", lock.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let create = || OpenOptions::new().write(true).create_new(true).open(&lock);
    let mut file = match create() {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if !take_stale_lock(&lock) {
                return Err(GitError::Rejected(format!(
                    "{} is held by another process",
                    lock.display()
                )));
            }
            create().map_err(|e| GitError::Rejected(format!("{}: {e}", lock.display())))?
        }
        Err(e) => return Err(io(e)),
    };
    let mut held = LockFile {
        path: &lock,
        armed: true,
    };
    hold(&file);
    let current = match repo.refname_to_id(refname) {
        Ok(id) => Some(id),
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(other(e)),
    };
    let expected = match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Is(old) => current == Some(old),
    };
    if !expected {
        return Err(GitError::Rejected(format!(
            "{refname} moved: it is now {}",
            current.map_or("absent".to_string(), |c| c.to_string())
        )));
    }
    file.write_all(format!("{new}\n").as_bytes()).map_err(io)?;
    // Durable before it is the ref: the objects it names were synced first.
    file.sync_data().map_err(io)?;
    std::fs::rename(&lock, &path).map_err(io)?;
    held.armed = false;
    Ok(())
}

/// Removes the lock file on every way out but success (where it became the ref).
struct LockFile<'a> {
    path: &'a Path,
    armed: bool,
}

impl Drop for LockFile<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(self.path);
        }
    }
}

/// Takes an advisory lock on a lock file we created, for as long as it is open.
#[cfg(unix)]
fn hold(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor that `file` owns for this whole call.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn hold(_file: &std::fs::File) -> bool {
    true
}

/// Removes `lock` if it is stale: older than [`STALE_UNHELD_LOCK`] and held by no
/// process. Says whether it is gone.
fn take_stale_lock(lock: &Path) -> bool {
    let Ok(file) = std::fs::File::open(lock) else {
        return true;
    };
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_UNHELD_LOCK);
    if !old || !hold(&file) {
        return false;
    }
    // Remove it only if the path still names the file we hold.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let same = match (file.metadata(), std::fs::metadata(lock)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        };
        if !same {
            return false;
        }
    }
    if std::fs::remove_file(lock).is_ok() {
        tracing::warn!(
            "{}: removed a lock file left by a killed process",
            lock.display()
        );
    }
    true
}

/// The file `name` of the working tree `dir` when it holds the blob `id`: the
/// working tree shows the last tip a run wrote, and reading a file and hashing
/// it costs less than inflating the blob. The size is compared first, from the
/// object's header; the hash decides.
fn same_in_worktree(odb: &git2::Odb<'_>, dir: &Path, name: &str, id: Oid) -> Option<Vec<u8>> {
    let path = dir.join(name);
    let size = std::fs::symlink_metadata(&path).ok()?;
    if !size.is_file() || odb.read_header(id).ok()?.0 as u64 != size.len() {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    (crate::loose::blob_id(&bytes) == id).then_some(bytes)
}

/// Writes `files` into the working tree `dir`, each unless it holds those bytes
/// already. Only files: the index follows in [`Repo::sync_worktree`].
pub fn write_files(dir: &Path, files: &Files) -> Result<(), GitError> {
    for (name, bytes) in files {
        let path = dir.join(name);
        // A file of another size differs: no need to read it.
        let same_size = std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if same_size && std::fs::read(&path).is_ok_and(|b| &b == bytes) {
            continue;
        }
        replace_file(dir, &path, bytes)
            .map_err(|e| GitError::local(format!("{}: write failed: {e}", path.display())))?;
    }
    Ok(())
}

/// Replaces `path` by a rename: a reader sees the old file or the new one.
fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A file of the working tree has git's mode for a regular blob.
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_FILE_PREFIX)
        .suffix(".tmp")
        .permissions(mode)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

/// Names of this tool's temporary files: an index being written, and a file of
/// the working tree being replaced (see `files::atomic_write`).
const TEMP_INDEX_PREFIX: &str = "index.memory-backup-";
const TEMP_FILE_PREFIX: &str = ".memory-backup-";

/// Removes this tool's temporary files (and their lock files) that a killed run
/// left behind: a run holds one for milliseconds, so one older than
/// [`STALE_REF_LOCK`] belongs to no running process.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    remove_stale_files(dir, &[prefix], STALE_REF_LOCK);
}

/// Removes the files of `dir` whose names begin with one of `prefixes` and
/// that are older than `age`: temporary files whose writer was killed.
pub(crate) fn remove_stale_files(dir: &Path, prefixes: &[&str], age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|old| old > age);
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A local remote that is not there is unreachable (an unmounted disk): worth a
/// retry. One that is there but is not a repository is a configuration error.
/// A failure to write into a local remote's object database: when the remote
/// is no longer there (moved or unmounted while the push ran), it is out of
/// reach, as a server that went down is, and worth another try.
fn remote_write_error(path: &Path, e: &git2::Error) -> GitError {
    if path.exists() {
        GitError::local(e.message().to_string())
    } else {
        GitError::Transient(format!(
            "{}: the remote went away during the push: {}",
            path.display(),
            e.message()
        ))
    }
}

fn check_local_remote(path: &Path) -> Result<(), GitError> {
    if !path.exists() {
        return Err(GitError::Transient(format!(
            "{}: no such folder",
            path.display()
        )));
    }
    Ok(())
}

fn classify_open(e: &git2::Error, path: &Path) -> GitError {
    if e.code() == ErrorCode::NotFound {
        GitError::NotFound(format!("{}: not a git repository", path.display()))
    } else {
        GitError::Transient(format!("{}: {}", path.display(), e.message()))
    }
}

/// One network step's timeout when `limit` is what is left of the run.
fn network_timeout(limit: Duration) -> Duration {
    limit.min(MAX_NETWORK_TIMEOUT).max(MIN_NETWORK_TIMEOUT)
}

/// Sets libgit2's connect and read timeouts. They are process-wide; git
/// operations run on one thread only, so nothing else reads them meanwhile.
fn set_timeouts(limit: Duration) {
    let ms = network_timeout(limit).as_millis();
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    // SAFETY: no other thread uses libgit2 while these are set.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

/// What one connection to a remote tried, for the messages of its failures.
#[derive(Default)]
struct Seen {
    /// The credential methods offered to the server, in order.
    tried: Vec<String>,
    /// The server's ssh host key: its type and SHA-256 fingerprint.
    host_key: Option<String>,
}

type SharedSeen = Rc<RefCell<Seen>>;

/// The callbacks of one connection: credentials, each method once, and a look at
/// the ssh host key, which libgit2 itself checks against `$HOME/.ssh/known_hosts`.
fn remote_callbacks(
    url: &str,
    config: Option<git2::Config>,
    seen: &SharedSeen,
) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(Credentials::new(url, config, seen.clone()).callback());
    let seen = seen.clone();
    callbacks.certificate_check(move |cert, _host| {
        if let Some(key) = cert.as_hostkey() {
            if let Some(hash) = key.hash_sha256() {
                let kind = key.hostkey_type().map_or("unknown", |t| t.name());
                seen.borrow_mut().host_key = Some(format!("{kind} SHA256:{}", base64(hash)));
            }
        }
        // libgit2's own verdict stands: known_hosts for ssh, the CA bundle for TLS.
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    callbacks
}

/// Adds what the user needs to act on a failure: the methods tried when
/// credentials were refused, how to trust the server when its host key was.
fn explain(e: GitError, url: &str, seen: &SharedSeen) -> GitError {
    let seen = seen.borrow();
    match e {
        GitError::Auth(m) => GitError::Auth(refused(&m, url, &seen.tried)),
        // Credentials were asked for, all tried, and the server still said no.
        GitError::Other(m) | GitError::Transient(m) if m.contains(NO_MORE_CREDENTIALS) => {
            GitError::Auth(refused(&m, url, &seen.tried))
        }
        GitError::Untrusted(m) => GitError::Untrusted(untrusted(&m, url, seen.host_key.as_deref())),
        e => e,
    }
}

const NO_MORE_CREDENTIALS: &str = "no more credentials to try";

/// Why credentials were refused, and what was tried.
fn refused(message: &str, url: &str, tried: &[String]) -> String {
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

/// Why the server was not trusted, and how to trust it if it is the right one.
fn untrusted(message: &str, url: &str, key: Option<&str>) -> String {
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

const SSH_PORT: u16 = 22;

/// Whether a known_hosts text has a plain (not hashed) line for `name`.
fn names_host(known_hosts: &str, name: &str) -> bool {
    known_hosts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let mut hosts = fields.next().unwrap_or("");
        if hosts.starts_with('@') {
            hosts = fields.next().unwrap_or("");
        }
        hosts.split(',').any(|h| h == name)
    })
}

/// Host and port of an ssh remote: `ssh://[user@]host[:port]/path`, scp-like
/// `[user@]host:path` (port 22), or `[user@host:port]:path`.
fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    let split_port = |userhost: &str, default: u16| {
        host_port(
            userhost.rsplit_once('@').map_or(userhost, |(_, h)| h),
            default,
        )
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "ssh" | "ssh+git" | "git+ssh") {
            return None;
        }
        return split_port(rest.split('/').next()?, SSH_PORT);
    }
    if remote_kind(url) != RemoteKind::Network {
        return None;
    }
    if let Some(inner) = url.strip_prefix('[') {
        let (inside, _) = inner.split_once("]:")?;
        return split_port(inside, SSH_PORT);
    }
    let (userhost, _) = url.split_once(':')?;
    let host = userhost.rsplit_once('@').map_or(userhost, |(_, h)| h);
    Some((host.to_string(), SSH_PORT))
}

/// A URL's `host[:port]`, IPv6 hosts in brackets (`[::1]:9418`); `default` where
/// no port is given. None for a port that is not a number.
pub(crate) fn host_port(hostport: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match hostport.split_once(':') {
            // More than one colon: an IPv6 address without brackets.
            Some((_, p)) if p.contains(':') => (hostport, None),
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_string(), port))
}

/// Standard base64 without padding, as OpenSSH prints fingerprints.
fn base64(bytes: &[u8]) -> String {
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
struct Credentials {
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
    fn new(url: &str, config: Option<git2::Config>, seen: SharedSeen) -> Credentials {
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

    fn callback(
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
                if let Some((u, p)) = userpass_of(&self.url) {
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

/// `scheme://user:password@host/...` with the password replaced by `***`, for
/// messages and logs: nothing secret is ever printed.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_string(),
    }
}

/// `user:password` given in a URL, percent-decoded.
fn userpass_of(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (u, p) = userinfo.split_once(':')?;
    Some((percent_decode(u), percent_decode(p)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// History lookups for `restore` and `status`: they read, and write no ref.
impl Repo {
    /// The commit that a revision names (an id, a branch, a tag, `main~2`);
    /// `None` when it names nothing.
    pub fn resolve(&self, rev: &str) -> Result<Option<CommitId>, GitError> {
        match self.repo.revparse_single(rev) {
            Ok(obj) => match obj.peel_to_commit() {
                Ok(c) => Ok(Some(CommitId(c.id()))),
                Err(_) => Ok(None),
            },
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    /// When `commit` was made, in seconds since the epoch (its committer time).
    pub fn commit_time(&self, commit: CommitId) -> Result<i64, GitError> {
        let c = self.repo.find_commit(commit.0).map_err(other)?;
        Ok(c.committer().when().seconds())
    }

    /// Of the commits reachable from `tips`, the newest one made at or before
    /// `secs` (committer time); the first in history order on a tie.
    pub fn last_commit_at_or_before(
        &self,
        tips: &[CommitId],
        secs: i64,
    ) -> Result<Option<CommitId>, GitError> {
        let mut walk = self.repo.revwalk().map_err(other)?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(other)?;
        for tip in tips {
            walk.push(tip.0).map_err(other)?;
        }
        let mut best: Option<(i64, Oid)> = None;
        for id in walk {
            let id = id.map_err(other)?;
            let time = self.commit_time(CommitId(id))?;
            if time <= secs && best.is_none_or(|(t, _)| time > t) {
                best = Some((time, id));
            }
        }
        Ok(best.map(|(_, id)| CommitId(id)))
    }

    /// Commits that `local` has and `upstream` lacks, and the other way round.
    pub fn ahead_behind(
        &self,
        local: CommitId,
        upstream: CommitId,
    ) -> Result<(usize, usize), GitError> {
        self.repo
            .graph_ahead_behind(local.0, upstream.0)
            .map_err(other)
    }

    /// The remote tip that the last contact saw (`refs/remotes/origin/<branch>`).
    pub fn noted_remote_tip(&self, branch: &str) -> Option<CommitId> {
        let refname = format!("refs/remotes/{REMOTE_NAME}/{branch}");
        self.repo.refname_to_id(&refname).ok().map(CommitId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_rises_to_the_hard_one_within_bounds_and_packs_get_half() {
        // cron's and systemd's usual 1,024 under a hard limit of 524,288.
        assert_eq!(raised_open_files(1024, 524_288), RAISE_OPEN_FILES_TO);
        assert_eq!(raised_open_files(1024, 4096), 4096);
        // Never lowered, and never above the hard limit.
        assert_eq!(raised_open_files(20_000, 524_288), 20_000);
        assert_eq!(raised_open_files(64, 64), 64);
        assert_eq!(
            raised_open_files(1024, libc::RLIM_INFINITY),
            RAISE_OPEN_FILES_TO
        );
        assert_eq!(packs_for_open_files(64), 32);
        assert_eq!(packs_for_open_files(4096), 512);
        assert_eq!(packs_for_open_files(10), 8);
        assert_eq!(packs_for_open_files(libc::RLIM_INFINITY), 512);
    }

    /// A full disk is a full disk whatever libgit2's class; an object that
    /// cannot be read is damage; anything else stays a plain failure.
    #[test]
    fn local_failures_are_sorted_by_class_and_by_the_system_s_words() {
        let err = |class, msg| git2::Error::new(ErrorCode::GenericError, class, msg);
        let full = err(
            ErrorClass::Odb,
            "failed to write object: No space left on device",
        );
        assert!(matches!(other(full), GitError::LocalWrite(_)));
        let empty = err(
            ErrorClass::Object,
            "failed to parse loose object: invalid header",
        );
        assert!(matches!(other(empty), GitError::Damaged(_)));
        let path = err(
            ErrorClass::Config,
            "failed to parse config file /x/corrupt-disk/r",
        );
        assert!(matches!(other(path), GitError::Other(_)));
        let prefix = git2::Error::new(ErrorCode::Ambiguous, ErrorClass::Odb, "ambiguous id");
        assert!(matches!(other(prefix), GitError::Other(_)));
    }

    /// A server's refusal is another push's doing only when git says the
    /// branch moved; a lock it cannot take, or a hook, is the server's own.
    #[test]
    fn a_refusal_is_sorted_by_what_the_server_said() {
        let lock = "error: cannot lock ref 'refs/heads/main': Unable to create \
                    '/srv/r.git/./refs/heads/main.lock': File exists.\n\nAnother git process";
        let e = refusal("refs/heads/main", "failed to update ref", lock);
        assert!(matches!(e, GitError::Refused(_)), "{e:?}");
        assert!(
            e.to_string()
                .contains("/srv/r.git/refs/heads/main.lock exists"),
            "{e}"
        );

        let moved = "error: cannot lock ref 'refs/heads/main': is at 1111 but expected 2222";
        let e = refusal("refs/heads/main", "failed to update ref", moved);
        assert!(matches!(e, GitError::Rejected(_)), "{e:?}");
        let e = refusal("refs/heads/main", "failed to update ref", "");
        assert!(matches!(e, GitError::Rejected(_)), "{e:?}");

        // Another lock in the same messages (a `gc --auto` after the refusal)
        // is not the branch's.
        let gc = "error: cannot lock ref 'refs/heads/main': is at 1111 but expected 2222\n\
                  fatal: Unable to create '/srv/r.git/gc.pid.lock': File exists.";
        let e = refusal("refs/heads/main", "failed to update ref", gc);
        assert!(matches!(e, GitError::Rejected(_)), "{e:?}");

        let hook = "hook: no pushes on Fridays\n";
        let e = refusal("refs/heads/main", "pre-receive hook declined", hook);
        assert!(matches!(e, GitError::Refused(_)), "{e:?}");
        assert!(e.to_string().contains("no pushes on Fridays"), "{e}");
        assert!(e.is_retryable());
        let chatty = format!("{}the reason\n", "noise\n".repeat(10_000));
        let e = refusal("refs/heads/main", "pre-receive hook declined", &chatty);
        assert!(e.to_string().len() < 1000, "{e}");
        assert!(e.to_string().ends_with("the reason)"), "{e}");

        let mut said = Vec::new();
        for _ in 0..3 * SAID_MAX / 4 {
            keep_said(&mut said, b"....");
        }
        keep_said(&mut said, b"the end");
        assert!(said.len() <= 2 * SAID_MAX && said.ends_with(b"the end"));
    }

    /// A commit made in memory is the one libgit2 makes of the same files:
    /// the same tree (git's order, a folder sorting as if its name ended in
    /// `/`) and the same commit bytes.
    #[test]
    fn a_commit_made_in_memory_is_byte_for_byte_the_one_libgit2_makes() {
        let dir = tempfile::tempdir().unwrap();
        let raw = Repository::init(dir.path()).unwrap();
        let blob = |b: &[u8]| raw.blob(b).unwrap();
        let mut sub = raw.treebuilder(None).unwrap();
        sub.insert("x", blob(b"in a folder"), FILE_MODE_BLOB)
            .unwrap();
        let sub = sub.write().unwrap();
        let mut root = raw.treebuilder(None).unwrap();
        root.insert("a", sub, 0o040_000).unwrap();
        root.insert("a.b", blob(b"old"), FILE_MODE_BLOB).unwrap();
        root.insert("a-c", blob(b"kept"), FILE_MODE_BLOB).unwrap();
        root.insert("run.sh", blob(b"#!/bin/sh"), 0o100_755)
            .unwrap();
        let tree = raw.find_tree(root.write().unwrap()).unwrap();
        let sig =
            Signature::new("Some One", "one@example.org", &Time::new(1_700_000_000, 0)).unwrap();
        let parent = raw.commit(None, &sig, &sig, "first", &tree, &[]).unwrap();

        let repo = Repo::of(Repository::open(dir.path()).unwrap());
        let before: Files = [("a-c".to_string(), b"kept".to_vec())].into();
        let files: Files = [
            ("a-c".to_string(), b"kept".to_vec()),
            ("a.b".to_string(), b"new".to_vec()),
            ("a0".to_string(), b"added".to_vec()),
            ("run.sh".to_string(), b"#!/bin/sh".to_vec()),
        ]
        .into();
        let author = Author {
            name: "Some One".into(),
            email: "one@example.org".into(),
            time: 1_700_000_100,
        };
        let parents = [CommitId(parent)];
        let staged = repo
            .stage_commit(&files, &before, &parents, &author, "backup from h: 1 new")
            .unwrap();
        let id = repo.write_staged(&staged).unwrap();

        // The same through libgit2's tree builder and commit writer.
        let mut expected = raw.treebuilder(Some(&tree)).unwrap();
        for (name, bytes) in &files {
            if name != "a-c" {
                expected.insert(name, blob(bytes), FILE_MODE_BLOB).unwrap();
            }
        }
        let expected_tree = raw.find_tree(expected.write().unwrap()).unwrap();
        let when =
            Signature::new("Some One", "one@example.org", &Time::new(1_700_000_100, 0)).unwrap();
        let parent = raw.find_commit(parent).unwrap();
        let want = raw
            .commit(
                None,
                &when,
                &when,
                "backup from h: 1 new",
                &expected_tree,
                &[&parent],
            )
            .unwrap();
        assert_eq!(id.0, want);
        let made = repo.repo.find_commit(id.0).unwrap();
        assert_eq!(made.tree_id(), expected_tree.id());
        // The folder and the file left as they were are still there.
        assert_eq!(made.tree().unwrap().get_name("a").unwrap().id(), sub);
    }

    #[test]
    fn a_local_remote_that_went_away_during_a_push_is_worth_another_try() {
        let dir = tempfile::tempdir().unwrap();
        let e = git2::Error::from_str("failed to create locked file 'objects/pack/x.lock'");
        let here = remote_write_error(dir.path(), &e);
        assert!(!here.is_retryable(), "{here:?}");
        let gone = remote_write_error(&dir.path().join("moved-away.git"), &e);
        assert!(matches!(gone, GitError::Transient(_)), "{gone:?}");
        assert!(gone.to_string().contains("went away"), "{gone}");
    }

    #[test]
    fn remote_kinds() {
        assert_eq!(
            remote_kind("/srv/backup.git"),
            RemoteKind::Local("/srv/backup.git".into())
        );
        assert_eq!(
            remote_kind("file:///srv/backup.git"),
            RemoteKind::Local("/srv/backup.git".into())
        );
        assert_eq!(
            remote_kind("relative/dir"),
            RemoteKind::Local("relative/dir".into())
        );
        assert_eq!(
            remote_kind("git://127.0.0.1:9418/r.git"),
            RemoteKind::Network
        );
        assert_eq!(
            remote_kind("git@github.com:me/mem.git"),
            RemoteKind::Network
        );
        assert_eq!(remote_kind("https://h/x.git"), RemoteKind::Network);
    }

    #[test]
    fn origin_urls_from_config_text() {
        let text = "[core]\n\tbare = false\n[remote \"up\"]\n\turl = https://x\n[remote \"origin\"]\n\turl = git://h/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n";
        assert_eq!(origin_url(text).as_deref(), Some("git://h/r.git"));
        assert_eq!(origin_url("[core]\n"), None);
    }

    #[test]
    fn userpass_from_urls() {
        assert_eq!(
            userpass_of("https://me:p%40ss@h/x.git"),
            Some(("me".into(), "p@ss".into()))
        );
        assert_eq!(userpass_of("https://me@h/x.git"), None);
        assert_eq!(userpass_of("https://h/x.git"), None);
    }

    #[test]
    fn ssh_hosts_and_ports_of_urls() {
        let hp = |u: &str| ssh_host_port(u);
        assert_eq!(
            hp("ssh://git@h.example:2222/r.git"),
            Some(("h.example".into(), 2222))
        );
        assert_eq!(hp("ssh://h.example/r.git"), Some(("h.example".into(), 22)));
        assert_eq!(
            hp("git@github.com:me/mem.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(
            hp("[me@127.0.0.1:2200]:/srv/r.git"),
            Some(("127.0.0.1".into(), 2200))
        );
        assert_eq!(hp("ssh://[::1]:2222/r"), Some(("::1".into(), 2222)));
        assert_eq!(hp("https://h/x.git"), None);
        assert_eq!(hp("/srv/backup.git"), None);
    }

    #[test]
    fn known_hosts_lines_name_hosts_with_their_port() {
        let text = "github.com,140.82.121.4 ssh-ed25519 AAAA\n[127.0.0.1]:2200 ssh-ed25519 AAAA\n@cert-authority gl.example ssh-rsa AAAA\n";
        assert!(names_host(text, "github.com"));
        assert!(names_host(text, "[127.0.0.1]:2200"));
        assert!(names_host(text, "gl.example"));
        assert!(!names_host(text, "127.0.0.1"));
    }

    #[test]
    fn fingerprints_are_base64_without_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg");
        assert_eq!(base64(b"fo"), "Zm8");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar!"), "Zm9vYmFyIQ");
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("https://me:t0ken@h/x.git"), "https://me:***@h/x.git");
        assert_eq!(redact("https://me@h/x.git"), "https://me@h/x.git");
        assert_eq!(redact("git@github.com:me/m.git"), "git@github.com:me/m.git");
        assert_eq!(redact("https://h/a:b@c"), "https://h/a:b@c");
    }

    #[test]
    fn credentials_end_instead_of_looping() {
        let mut c = Credentials::new("https://h/x.git", None, SharedSeen::default());
        let mut n = 0;
        while c
            .next(Some("me"), CredentialType::USER_PASS_PLAINTEXT)
            .is_ok()
        {
            n += 1;
            assert!(n < 10, "the callback never gives up");
        }
    }
}
