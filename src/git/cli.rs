//! Running the user's own `git` for the network (section 8, Transport), as jj
//! and cargo do: their ssh config, agent, credential helpers and `insteadOf`
//! apply unchanged. It never prompts: no terminal (a session of its own), no
//! askpass, ssh in batch mode unless the user set their own ssh command. It never
//! outlives the run: at the deadline, or after a long silence, the whole process
//! group is killed and what it left half-written is removed.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::git::error::GitError;

/// A git that writes nothing for this long is taken to hang (a server that
/// stopped answering): with `--progress`, a transfer reports at least every
/// second. Compressing or indexing a large file says nothing meanwhile (21 s
/// and 15 s for 138 MB on a small machine): each MB of the largest file adds a
/// second.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// The most of each output stream kept: a server can send without end.
const KEEP_BYTES: usize = 256 << 10;
/// The least memory a git child may use, before what its files need: a fetch
/// of thousands of commits of 200 KB files peaks under 30 MB, and a server
/// that sends refs or objects without end stops here, at well under 200 MB
/// for this process and its children together.
const MEMORY_FLOOR: u64 = 128 << 20;

/// The `git` program on PATH, if any.
pub fn find_git() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("git"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The size of the allocation that git said it could not make ("Out of memory,
/// malloc failed (tried to allocate N bytes)"), when that size could be a file
/// of the repository: at most an eighth of this machine's memory (the limit
/// then gets half). A file larger than any here yet needs that (the first fetch
/// of a repository whose unified file is large); a delta that claims 67 GB does
/// not get it, nor a list of refs without end (its message names no size).
pub fn file_that_did_not_fit(said: &str) -> Option<u64> {
    const MARK: &str = "tried to allocate ";
    let wanted = said
        .lines()
        .filter_map(|l| {
            let at = l.find(MARK)? + MARK.len();
            l[at..].split_whitespace().next()?.parse::<u64>().ok()
        })
        .max()?;
    (wanted <= physical_memory() / 8).then_some(wanted)
}

/// The room (the largest file git may have to hold) for another try of a git
/// that said it could not allocate what `file_that_did_not_fit` accepts, after
/// a try with `had`: that size, and at least twice `had` (resolving a chain of
/// deltas of a large file holds several copies), within an eighth of this
/// machine's memory. `None` when it said nothing of the kind or more room would
/// not be more.
pub fn more_room(said: &str, had: u64) -> Option<u64> {
    let wanted = file_that_did_not_fit(said)?;
    let room = wanted.max(had.saturating_mul(2)).min(physical_memory() / 8);
    (room > had).then_some(room)
}

/// Whether a child said it ran out of memory.
pub fn ran_out_of_memory(said: &str) -> bool {
    said.to_lowercase().contains("out of memory")
}

/// This machine's memory, or 4 GiB when it cannot be read.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024)
}

/// What a finished git said.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// When it started: what it left is newer.
    pub started: SystemTime,
}

/// One git to run.
pub struct Git<'a> {
    pub program: &'a Path,
    /// The repository (`-C`), if any.
    pub dir: Option<&'a Path>,
    pub deadline: Instant,
    /// The largest file git may have to hold, for its memory bound.
    pub largest_file: u64,
    /// Whether the URL is reached over ssh (for batch mode).
    pub ssh: bool,
}

impl Git<'_> {
    /// Runs git with `args`; an `Err` when it could not start, hung, or ran past
    /// the deadline (it is killed, with everything it started).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output, GitError> {
        self.run_in(args, self.dir)
    }

    /// [`Git::run`] of a git that writes nothing in the repository: when it is
    /// killed, nothing there is taken for its leftovers (a concurrent run's
    /// lock files stay).
    pub fn run_reading<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output, GitError> {
        self.run_in(args, None)
    }

    fn run_in<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        leftovers_in: Option<&Path>,
    ) -> Result<Output, GitError> {
        let mut cmd = Command::new(self.program);
        if let Some(d) = self.dir {
            cmd.arg("-C").arg(d);
        }
        // Ours: no automatic gc (packs are never removed under a running reader,
        // see `repack`); objects and refs synced to disk before they are named
        // (git 2.36 and later; earlier ones ignore the key).
        cmd.args([
            "-c",
            "core.fsync=committed",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "-c",
            "fetch.writeCommitGraph=false",
        ]);
        cmd.args(args);
        self.environment(&mut cmd);
        let what = format!("git {}", first(args));
        supervise(cmd, &what, self.deadline, self.largest_file, leftovers_in)
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.env("LC_ALL", "C")
            .env("LANGUAGE", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("GCM_INTERACTIVE", "never")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE");
        if self.ssh && !self.user_ssh_command() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
    }

    /// Whether the user chose how git runs ssh (`GIT_SSH_COMMAND`, `GIT_SSH`,
    /// `core.sshCommand`): that stays theirs.
    fn user_ssh_command(&self) -> bool {
        if ["GIT_SSH_COMMAND", "GIT_SSH"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        {
            return true;
        }
        let mut cmd = Command::new(self.program);
        if let Some(d) = self.dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args(["config", "--get", "core.sshCommand"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        cmd.output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
    }
}

fn first<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.first()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `cmd` detached (a session of its own, no terminal), with its memory
/// bounded by what a file of `largest_file` bytes needs, until it ends; an
/// `Err` when it could not start, hung, or ran past the deadline: then it is
/// killed with everything it started, and what it left half-written in the
/// repository at `dir` is removed.
pub fn supervise(
    mut cmd: Command,
    what: &str,
    deadline: Instant,
    largest_file: u64,
    dir: Option<&Path>,
) -> Result<Output, GitError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::sys::detach(&mut cmd);
    crate::sys::limit_memory(&mut cmd, MEMORY_FLOOR + largest_file.saturating_mul(4));
    let started = SystemTime::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| GitError::Other(format!("cannot run {what}: {e}")))?;
    let pid = child.id();
    let silence_limit = SILENCE_LIMIT + Duration::from_secs(largest_file >> 20);
    let activity = Arc::new(Mutex::new(Instant::now()));
    let out = reader(child.stdout.take().expect("piped"), activity.clone(), false);
    let err = reader(child.stderr.take().expect("piped"), activity.clone(), true);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = loop {
        let now = Instant::now();
        let silent = now.duration_since(*activity.lock().unwrap_or_else(|e| e.into_inner()));
        if now >= deadline || silent >= silence_limit {
            crate::sys::kill_group(pid);
            let _ = waiter.join();
            let _ = (out.join(), err.join());
            if let Some(dir) = dir {
                remove_leftovers(dir, started);
            }
            let why = if now >= deadline {
                "stopped at the run's time limit (--max-elapsed)".to_string()
            } else {
                format!(
                    "the server sent nothing for {} seconds",
                    silence_limit.as_secs()
                )
            };
            return Err(GitError::Transient(format!("{what}: {why}")));
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(status) => break status,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break Err(std::io::Error::other("the waiter stopped"));
            }
        }
    };
    // The group may hold children that outlive the leader (an ssh master).
    crate::sys::kill_group(pid);
    let _ = waiter.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let status = status.map_err(|e| GitError::Other(format!("{what}: {e}")))?;
    Ok(Output {
        success: status.success(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        started,
    })
}

/// Reads a stream to its end, keeping its first (stdout) or last (stderr)
/// [`KEEP_BYTES`], and notes the time of each read.
fn reader(
    mut stream: impl Read + Send + 'static,
    activity: Arc<Mutex<Instant>>,
    keep_tail: bool,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    *activity.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    if keep_tail {
                        kept.extend_from_slice(&buf[..n]);
                        if kept.len() > 2 * KEEP_BYTES {
                            kept.drain(..kept.len() - KEEP_BYTES);
                        }
                    } else if kept.len() < KEEP_BYTES {
                        let room = KEEP_BYTES - kept.len();
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
            }
        }
        kept
    })
}

/// Removes what a killed git left in the repository at `repo` since `since`:
/// half-written packs and indexes, and lock files, which would stop the next
/// git.
pub fn remove_leftovers(repo: &Path, since: SystemTime) {
    let Some(git_dir) = git_dir_of(repo) else {
        return;
    };
    remove_temporary_objects(&git_dir, since);
    remove_locks(&git_dir, |p| newer(p, since));
}

fn newer(p: &Path, since: SystemTime) -> bool {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since)
}

/// Removes the temporary files made since `since` in the objects of the
/// repository at `repo`: packs and indexes being received, a large object
/// being streamed, and the `.keep` files that a fetch holds while it runs. A
/// fetch that died (out of memory on a hostile pack) leaves them; a concurrent
/// fetch of this repository whose file goes fails and is retried.
pub fn remove_temporary_objects(repo: &Path, since: SystemTime) {
    let Some(git_dir) = git_dir_of(repo) else {
        return;
    };
    let objects = git_dir.join("objects");
    let Ok(top) = std::fs::read_dir(&objects) else {
        return;
    };
    // objects/ itself, objects/pack and the loose objects' folders.
    let folders = std::iter::once(objects.clone()).chain(
        top.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path()),
    );
    for dir in folders {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // git's `tmp_pack_*`, `tmp_idx_*`, `tmp_obj_*`; libgit2's `pack_git2_*`.
            let temporary = name.starts_with("tmp_") || name.starts_with("pack_git2_");
            if (temporary || name.ends_with(".keep")) && newer(&e.path(), since) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Removes lock files older than `age` in a git folder: a process killed while
/// it held one leaves it, and git refuses to take a lock that exists. A live
/// process holds a lock for milliseconds.
pub fn remove_stale_locks(git_dir: &Path, age: Duration) {
    let old = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > age)
    };
    remove_locks(git_dir, old);
}

fn remove_locks(git_dir: &Path, which: impl Fn(&Path) -> bool) {
    for name in [
        "index.lock",
        "packed-refs.lock",
        "HEAD.lock",
        "config.lock",
        "shallow.lock",
    ] {
        let p = git_dir.join(name);
        if p.exists() && which(&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
    let mut stack = vec![git_dir.join("refs")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "lock") && which(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn git_dir_of(repo: &Path) -> Option<PathBuf> {
    let dot = repo.join(".git");
    if dot.is_dir() {
        return Some(dot);
    }
    if repo.join("objects").is_dir() {
        return Some(repo.to_path_buf());
    }
    // A linked worktree: `.git` is a file naming the git folder.
    let text = std::fs::read_to_string(&dot).ok()?;
    let linked = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    let common = std::fs::read_to_string(linked.join("commondir")).ok();
    Some(match common {
        Some(c) => linked.join(c.trim()),
        None => linked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_git_that_ran_out_again_gets_at_least_twice_the_room_within_bounds() {
        let said =
            |n: u64| format!("fatal: Out of memory, malloc failed (tried to allocate {n} bytes)");
        assert_eq!(more_room(&said(27 << 20), 1 << 20), Some(27 << 20));
        assert_eq!(more_room(&said(28 << 20), 27 << 20), Some(54 << 20));
        let cap = physical_memory() / 8;
        assert_eq!(more_room(&said(cap / 2), cap * 3 / 4), Some(cap));
        assert_eq!(more_room(&said(cap / 2), cap), None);
        assert_eq!(
            more_room("fatal: fetch-pack: invalid index-pack output", 1 << 20),
            None
        );
    }

    #[test]
    fn a_file_that_did_not_fit_is_told_from_a_hostile_allocation() {
        let big =
            "remote: fatal: Out of memory, malloc failed (tried to allocate 138488897 bytes)\n";
        assert_eq!(file_that_did_not_fit(big), Some(138_488_897));
        let bomb = "fatal: Out of memory, malloc failed (tried to allocate 67000000001000 bytes)";
        assert_eq!(file_that_did_not_fit(bomb), None);
        assert_eq!(
            file_that_did_not_fit("fatal: Out of memory, realloc failed"),
            None
        );
    }
}
