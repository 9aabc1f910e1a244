//! Fetch and push through libgit2, for machines without `git` (or when the
//! config asks for it). libgit2 reads no `~/.ssh/config` and no
//! `GIT_SSH_COMMAND`: it offers the ssh-agent, then `~/.ssh/id_ed25519`,
//! `id_ecdsa` and `id_rsa`; a URL's user and password; and git's credential
//! helpers. The push checks the remote's ref on the connection it pushes on, and
//! libgit2 and the server refuse anything but the expected value; to a path on
//! this machine, the ref is updated with libgit2's compare-and-swap.
//!
//! Each operation runs in a child process of this binary ([`CHILD_ARG`]), watched
//! as a `git` child is ([`cli::supervise`]): libgit2 bounds neither the time a
//! server may take (its timeout is per read: a byte a second keeps it going) nor
//! the memory that an endless list of refs takes; a child is killed at the
//! deadline and has a memory limit.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use git2::{
    CertificateCheckStatus, Direction, ErrorCode, FetchOptions, PushOptions, RemoteCallbacks,
    Repository,
};

use crate::git::error::{GitError, classify_libgit2};
use crate::git::transport::{PARKED_PREFIX, TRACKING_PREFIX};
use crate::git::url::{self, RemoteKind};
use crate::git::{CommitId, Repo, cli};

mod auth;
pub use auth::SSH_KEY_FILES;
use auth::{Credentials, SERVER_TEXT, SharedSeen, base64, credential_config, explain};

/// The first argument that makes this binary run one libgit2 operation for its
/// parent ([`child_main`]).
pub const CHILD_ARG: &str = "__libgit2-transport";
/// The environment variable that holds the operation, as JSON: not an argument,
/// which every user of the machine can read (a URL may hold a password).
const REQUEST_ENV: &str = "MEMORY_BACKUP_LIBGIT2_REQUEST";

/// One operation of the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum Op {
    Fetch {
        git_dir: PathBuf,
        url: String,
        branch: String,
    },
    Push {
        git_dir: PathBuf,
        url: String,
        refname: String,
        new: String,
        expected: Option<String>,
    },
    Probe {
        url: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    op: Op,
    /// The time left to the run's deadline.
    millis: u64,
}

/// Fetches `branch` and the parked refs of `url` into the tracking refs.
pub fn fetch(repo: &Repo, url: &str, branch: &str, deadline: Instant) -> Result<(), GitError> {
    let op = || Op::Fetch {
        git_dir: repo.git_dir().to_path_buf(),
        url: url.to_string(),
        branch: branch.to_string(),
    };
    let hint = repo.largest_file_hint();
    let (result, received) = in_child(op(), Some(repo), hint, deadline);
    match result {
        Err(e) if !e.is_permanent() && cli::ran_out_of_memory(&e.to_string()) && received > 0 => {
            // A file larger than any here yet (the first fetch of a repository
            // whose unified file is large): once more, with room for what a
            // pack of that size may inflate to. An endless list of refs has
            // sent no pack, and gets none.
            let room = received
                .saturating_mul(INFLATION)
                .min(cli::physical_memory() / 8)
                .max(hint);
            in_child(op(), Some(repo), room, deadline).0
        }
        result => result,
    }
}

/// How much larger than its pack a file may be (JSON compresses about 3 to 6
/// times).
const INFLATION: u64 = 8;

/// Pushes `new` to `refname` only if it holds `expected` there.
pub fn push(
    repo: &Repo,
    url: &str,
    refname: &str,
    new: CommitId,
    expected: Option<CommitId>,
    deadline: Instant,
) -> Result<(), GitError> {
    let op = Op::Push {
        git_dir: repo.git_dir().to_path_buf(),
        url: url.to_string(),
        refname: refname.to_string(),
        new: new.to_string(),
        expected: expected.map(|c| c.to_string()),
    };
    in_child(op, Some(repo), repo.largest_file_hint(), deadline).0
}

/// Connects and lists the refs of `url` (for `init`'s check).
pub fn probe(url: &str, deadline: Instant) -> Result<(), GitError> {
    let op = Op::Probe {
        url: url.to_string(),
    };
    in_child(op, None, 0, deadline).0
}

/// What the child answers, as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    result: Result<(), GitError>,
    /// The pack bytes it received.
    received: u64,
}

/// Runs `op` in a child process of this binary, with memory for a file of
/// `largest_file` bytes, and returns what it answered and the pack bytes it
/// received.
fn in_child(
    op: Op,
    repo: Option<&Repo>,
    largest_file: u64,
    deadline: Instant,
) -> (Result<(), GitError>, u64) {
    let left = deadline.saturating_duration_since(Instant::now());
    let request = Request {
        op,
        millis: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
    };
    let mut cmd = Command::new(this_program());
    cmd.arg(CHILD_ARG).env(
        REQUEST_ENV,
        serde_json::to_string(&request).expect("a request serialises"),
    );
    let dir = repo.map(Repo::git_dir);
    let out = match cli::supervise(cmd, "libgit2", deadline, largest_file, dir) {
        Ok(out) => out,
        Err(e) => return (Err(e), 0),
    };
    let reply = out
        .stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<Reply>(l).ok());
    match reply {
        Some(r) => (r.result, r.received),
        None => {
            // It died (out of memory on a hostile pack): what it was writing stays.
            if let Some(r) = repo {
                cli::remove_temporary_objects(r.git_dir(), out.started);
            }
            let e = GitError::Transient(format!(
                "libgit2 stopped without an answer: {}",
                crate::git::error::summary(&out.stderr)
            ));
            (Err(e), 0)
        }
    }
}

/// This binary, as the kernel knows it (so an upgrade that replaced the file
/// meanwhile still runs the same program).
fn this_program() -> PathBuf {
    let proc = Path::new("/proc/self/exe");
    if proc.exists() {
        return proc.to_path_buf();
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("memory-backup"))
}

/// The child's side: runs the operation that `REQUEST_ENV` names and prints
/// its result as one JSON line. Returns the exit code.
pub fn child_main() -> u8 {
    let request = std::env::var(REQUEST_ENV)
        .ok()
        .and_then(|a| serde_json::from_str::<Request>(&a).ok());
    let result = match request {
        None => Err(GitError::Other(format!("{CHILD_ARG}: a malformed request"))),
        Some(r) => run_op(r.op, Instant::now() + Duration::from_millis(r.millis)),
    };
    let reply = Reply {
        result,
        received: RECEIVED.load(std::sync::atomic::Ordering::Relaxed),
    };
    println!(
        "{}",
        serde_json::to_string(&reply).expect("a reply serialises")
    );
    0
}

/// The pack bytes the child received so far.
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run_op(op: Op, deadline: Instant) -> Result<(), GitError> {
    let open = |git_dir: &Path| {
        Repo::open(git_dir)?
            .ok_or_else(|| GitError::Other(format!("{}: no repository there", git_dir.display())))
    };
    let id = |hex: &str| {
        CommitId::parse(hex).ok_or_else(|| GitError::Other(format!("{hex}: not a commit id")))
    };
    match op {
        Op::Fetch {
            git_dir,
            url,
            branch,
        } => fetch_here(&open(&git_dir)?, &url, &branch, deadline),
        Op::Push {
            git_dir,
            url,
            refname,
            new,
            expected,
        } => {
            let expected = expected.as_deref().map(id).transpose()?;
            push_here(
                &open(&git_dir)?,
                &url,
                &refname,
                id(&new)?,
                expected,
                deadline,
            )
        }
        Op::Probe { url } => probe_here(&url, deadline),
    }
}

/// Cap on one network read or connect.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets libgit2's connect and read timeouts to what is left of the run (at most
/// [`NETWORK_TIMEOUT`], at least 200 ms).
fn set_timeouts(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left
        .min(NETWORK_TIMEOUT)
        .max(Duration::from_millis(200))
        .as_millis();
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    // SAFETY: libgit2's global options; this process talks to remotes from one
    // thread at a time, so nothing else reads them while they change.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
    }
}

/// How often the child says how far a transfer got.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

fn callbacks(
    url: &str,
    config: Option<git2::Config>,
    seen: &SharedSeen,
    deadline: Instant,
) -> RemoteCallbacks<'static> {
    let mut cb = RemoteCallbacks::new();
    cb.credentials(Credentials::new(url, config, seen.clone()).callback());
    let host_seen = seen.clone();
    cb.certificate_check(move |cert, _host| {
        if let Some(key) = cert.as_hostkey()
            && let Some(hash) = key.hash_sha256()
        {
            let kind = key.hostkey_type().map_or("unknown", |t| t.name());
            host_seen.borrow_mut().host_key = Some(format!("{kind} SHA256:{}", base64(hash)));
        }
        // libgit2's own verdict stands: known_hosts for ssh, the CA bundle for TLS.
        Ok(CertificateCheckStatus::CertificatePassthrough)
    });
    // A transfer past the deadline stops. Progress goes to stderr, as git's
    // does: the parent takes a child that says nothing for long to hang.
    let mut said_at = Instant::now();
    cb.transfer_progress(move |p| {
        RECEIVED.store(
            u64::try_from(p.received_bytes()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        if said_at.elapsed() >= PROGRESS_EVERY {
            said_at = Instant::now();
            eprintln!(
                "Receiving objects: {}/{}, {} bytes, resolving deltas: {}/{}",
                p.received_objects(),
                p.total_objects(),
                p.received_bytes(),
                p.indexed_deltas(),
                p.total_deltas()
            );
        }
        Instant::now() < deadline
    });
    let said = seen.clone();
    cb.sideband_progress(move |text| {
        let text = String::from_utf8_lossy(text);
        eprintln!("remote: {}", text.trim_end());
        let kept = &mut said.borrow_mut().server;
        if kept.len() < SERVER_TEXT {
            kept.push_str(&text);
        }
        Instant::now() < deadline
    });
    cb.push_transfer_progress(|_, _, _| {});
    cb
}

/// The fetch itself, in the child.
fn fetch_here(repo: &Repo, url: &str, branch: &str, deadline: Instant) -> Result<(), GitError> {
    set_timeouts(deadline);
    let r = repo.raw();
    let seen = SharedSeen::default();
    let wrap = |e: git2::Error| explain(classify_libgit2(&e), url, &seen, deadline);
    let mut remote = r.remote_anonymous(url).map_err(wrap)?;
    let mut conn = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(url, credential_config(Some(r)), &seen, deadline)),
            None,
        )
        .map_err(wrap)?;
    let heads: Vec<(String, git2::Oid)> = conn
        .list()
        .map_err(wrap)?
        .iter()
        .map(|h| (h.name().to_string(), h.oid()))
        .collect();
    let branch_ref = format!("refs/heads/{branch}");
    let wanted: Vec<&(String, git2::Oid)> = heads
        .iter()
        .filter(|(n, _)| *n == branch_ref || n.starts_with(PARKED_PREFIX))
        .collect();
    let complete = |id: git2::Oid| repo.is_complete(CommitId(id));
    let missing: Vec<git2::Oid> = wanted
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| !complete(*id))
        .collect();
    if !missing.is_empty() {
        // libgit2 asks for no object it has: a commit here without its files (a
        // server sent it alone to an older version) would never be completed.
        for id in &missing {
            remove_loose(repo, *id);
        }
        let before = pack_files(repo);
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(callbacks(url, credential_config(Some(r)), &seen, deadline))
            .update_fetchhead(false)
            .download_tags(git2::AutotagOption::None);
        let specs: Vec<String> = wanted.iter().map(|(n, _)| n.clone()).collect();
        conn.remote()
            .download(&specs, Some(&mut opts))
            .map_err(wrap)?;
        if let Some(id) = missing.iter().find(|id| !complete(**id)) {
            // Nothing refers to what this server sent: it goes, so that an
            // honest server is asked for the whole commit next time.
            for p in pack_files(repo).difference(&before) {
                let _ = std::fs::remove_file(p);
            }
            return Err(GitError::Transient(format!(
                "{}: the server sent {id} without all its files; not taken",
                url::redact(url)
            )));
        }
    }
    drop(conn);
    // The tracking refs follow the remote: set, and removed where it has none.
    let tracking = |name: &str| {
        format!(
            "{TRACKING_PREFIX}{}",
            name.trim_start_matches("refs/heads/")
        )
    };
    let mut keep = std::collections::HashSet::new();
    for (name, id) in &wanted {
        let local = tracking(name);
        if complete(*id) {
            r.reference(&local, *id, true, "memory-backup: fetch")
                .map_err(|e| match e.code() {
                    // A concurrent run of this host is updating it: fetch again.
                    ErrorCode::Locked => GitError::Transient(e.message().to_string()),
                    _ => GitError::local(e.message().to_string()),
                })?;
        }
        keep.insert(local);
    }
    let stale: Vec<String> = r
        .references()
        .map_err(|e| GitError::local(e.message().to_string()))?
        .flatten()
        .filter_map(|rf| rf.name().ok().map(str::to_string))
        .filter(|n| {
            (*n == tracking(&branch_ref) || n.starts_with(&tracking(PARKED_PREFIX)))
                && !keep.contains(n)
        })
        .collect();
    for n in stale {
        if let Ok(mut rf) = r.find_reference(&n) {
            let _ = rf.delete();
        }
    }
    Ok(())
}

/// Removes the loose file of object `id`, if it is one.
fn remove_loose(repo: &Repo, id: git2::Oid) {
    let hex = id.to_string();
    let path = repo
        .git_dir()
        .join("objects")
        .join(&hex[..2])
        .join(&hex[2..]);
    let _ = std::fs::remove_file(path);
}

/// The files in the repository's pack folder.
fn pack_files(repo: &Repo) -> std::collections::BTreeSet<PathBuf> {
    std::fs::read_dir(repo.git_dir().join("objects").join("pack"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The push itself, in the child.
fn push_here(
    repo: &Repo,
    url: &str,
    refname: &str,
    new: CommitId,
    expected: Option<CommitId>,
    deadline: Instant,
) -> Result<(), GitError> {
    if let RemoteKind::Local(path) = url::remote_kind(url) {
        return push_local(repo, &path, refname, new, expected);
    }
    set_timeouts(deadline);
    let r = repo.raw();
    let seen = SharedSeen::default();
    let wrap = |e: git2::Error| explain(classify_libgit2(&e), url, &seen, deadline);
    let mut remote = r.remote_anonymous(url).map_err(wrap)?;
    let mut conn = remote
        .connect_auth(
            Direction::Push,
            Some(callbacks(url, credential_config(Some(r)), &seen, deadline)),
            None,
        )
        .map_err(wrap)?;
    let now = conn
        .list()
        .map_err(wrap)?
        .iter()
        .find(|h| h.name() == refname)
        .map(|h| h.oid());
    if now != expected.map(|c| c.oid()) {
        return Err(GitError::Rejected(format!(
            "the remote moved {refname} since it was fetched"
        )));
    }
    let refused: Rc<RefCell<Option<String>>> = Rc::default();
    let refused_cb = refused.clone();
    let mut cb = callbacks(url, credential_config(Some(r)), &seen, deadline);
    cb.push_update_reference(move |_name, status| {
        if let Some(why) = status {
            *refused_cb.borrow_mut() = Some(why.to_string());
        }
        Ok(())
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cb);
    conn.remote()
        .push(&[format!("{new}:{refname}")], Some(&mut opts))
        .map_err(wrap)?;
    if let Some(why) = refused.borrow_mut().take() {
        return Err(crate::git::error::push_refusal(
            refname,
            &why,
            &seen.borrow().server,
        ));
    }
    Ok(())
}

/// A compare-and-swap on a repository on this machine: copy the objects the
/// remote lacks, then move the ref only if it still holds `expected`.
fn push_local(
    repo: &Repo,
    path: &Path,
    refname: &str,
    new: CommitId,
    expected: Option<CommitId>,
) -> Result<(), GitError> {
    let gone = |e: git2::Error| GitError::Transient(format!("{}: {}", path.display(), e.message()));
    let remote = Repository::open(path).map_err(|e| {
        if e.code() == ErrorCode::NotFound {
            GitError::NotFound(format!("{}: not a git repository", path.display()))
        } else {
            gone(e)
        }
    })?;
    let r = repo.raw();
    let mut builder = r
        .packbuilder()
        .map_err(|e| GitError::local(e.message().to_string()))?;
    let mut walk = r
        .revwalk()
        .map_err(|e| GitError::local(e.message().to_string()))?;
    walk.push(new.oid())
        .map_err(|e| GitError::local(e.message().to_string()))?;
    let remote_odb = remote.odb().map_err(gone)?;
    // Commits the remote has end the walk.
    for id in remote
        .references()
        .map_err(gone)?
        .flatten()
        .filter_map(|rf| rf.target())
    {
        if r.find_commit(id).is_ok() {
            let _ = walk.hide(id);
        }
    }
    for id in walk {
        let id = id.map_err(|e| GitError::local(e.message().to_string()))?;
        if remote_odb.exists(id) {
            continue;
        }
        builder
            .insert_commit(id)
            .map_err(|e| GitError::local(e.message().to_string()))?;
    }
    if builder.object_count() > 0 {
        let mut writer = remote_odb.packwriter().map_err(gone)?;
        builder
            .foreach(|chunk| std::io::Write::write_all(&mut writer, chunk).is_ok())
            .map_err(gone)?;
        writer.commit().map_err(gone)?;
    }
    let moved = |e: git2::Error| {
        if matches!(
            e.code(),
            ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
        ) {
            GitError::Rejected(format!(
                "{}: {refname} moved: {}",
                path.display(),
                e.message()
            ))
        } else {
            gone(e)
        }
    };
    match expected {
        Some(old) => remote
            .reference_matching(refname, new.oid(), true, old.oid(), "memory-backup: push")
            .map(drop)
            .map_err(moved),
        None => remote
            .reference(refname, new.oid(), false, "memory-backup: push")
            .map(drop)
            .map_err(moved),
    }
}

/// The probe itself, in the child.
fn probe_here(url: &str, deadline: Instant) -> Result<(), GitError> {
    if let RemoteKind::Local(path) = url::remote_kind(url) {
        return Repository::open(&path)
            .map(drop)
            .map_err(|e| GitError::NotFound(format!("{}: {}", path.display(), e.message())));
    }
    set_timeouts(deadline);
    let seen = SharedSeen::default();
    let wrap = |e: git2::Error| explain(classify_libgit2(&e), url, &seen, deadline);
    let mut remote = git2::Remote::create_detached(url).map_err(wrap)?;
    let conn = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(url, credential_config(None), &seen, deadline)),
            None,
        )
        .map_err(wrap)?;
    conn.list().map_err(wrap)?;
    Ok(())
}
