//! Fetch and push (section 8, Transport): through the user's own `git` when it
//! is on PATH, else through libgit2. Either way the push is a compare-and-swap:
//! it lands only if the ref still holds the commit it was made on.

use std::path::PathBuf;
use std::time::Instant;

use crate::git::error::{GitError, classify_cli};
use crate::git::url::{self, RemoteKind};
use crate::git::{CommitId, Repo, cli, libgit2};

/// The setting that picks a transport.
pub const TRANSPORT_ENV: &str = "MEMORY_BACKUP_TRANSPORT";

/// Where parked commits live (section 8, Contention): one branch per host.
pub const PARKED_PREFIX: &str = "refs/heads/memory-backup/hosts/";
/// Where this repository keeps the remote's refs.
pub const TRACKING_PREFIX: &str = "refs/remotes/origin/";

/// How fetch and push reach a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The `git` program at this path.
    Git(PathBuf),
    /// libgit2, linked in.
    Libgit2,
}

impl Transport {
    /// `git` when it is on PATH, else libgit2; or the one `choice` names
    /// (`git`, `libgit2`).
    pub fn pick(choice: Option<&str>) -> Result<Transport, String> {
        match choice.map(str::trim).filter(|c| !c.is_empty()) {
            None | Some("auto") => Ok(cli::find_git().map_or(Transport::Libgit2, Transport::Git)),
            Some("git") => cli::find_git()
                .map(Transport::Git)
                .ok_or_else(|| "transport = \"git\", but there is no git on PATH".to_string()),
            Some("libgit2") => Ok(Transport::Libgit2),
            Some(other) => Err(format!(
                "transport {other:?}: use \"git\", \"libgit2\" or \"auto\""
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Transport::Git(_) => "git",
            Transport::Libgit2 => "libgit2",
        }
    }
}

/// What a fetch found on the remote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The branch's tip; `None` when the remote has no such branch.
    pub tip: Option<CommitId>,
    /// Each parked host's tip.
    pub parked: Vec<(String, CommitId)>,
}

/// Fetches `branch` and the parked refs of `url` into `repo`. A tip is taken only
/// when its commit and files are all here (git checks that itself; for libgit2
/// it is checked here).
pub fn fetch(
    transport: &Transport,
    repo: &Repo,
    url: &str,
    branch: &str,
    deadline: Instant,
) -> Result<Fetched, GitError> {
    check_url(url)?;
    match transport {
        Transport::Git(program) => fetch_cli(program, repo, url, branch, deadline),
        Transport::Libgit2 => libgit2::fetch(repo, url, branch, deadline),
    }?;
    let tip = repo.tracking_tip(branch);
    let tip = match tip {
        Some(t) if !repo.is_complete(t) => {
            return Err(GitError::Transient(format!(
                "{}: the fetched tip {} lacks some of its files; not taken",
                url::redact(url),
                t.short()
            )));
        }
        t => t,
    };
    let parked = repo
        .parked()
        .into_iter()
        .filter(|(_, c)| repo.is_complete(*c))
        .collect();
    Ok(Fetched { tip, parked })
}

/// How many times a fetch that ran out of memory tries again with more room.
const ROOM_TRIES: usize = 4;

fn fetch_cli(
    program: &std::path::Path,
    repo: &Repo,
    url: &str,
    branch: &str,
    deadline: Instant,
) -> Result<(), GitError> {
    let branch_spec = format!("+refs/heads/{branch}:{TRACKING_PREFIX}{branch}");
    let parked_spec = format!("+{PARKED_PREFIX}*:{TRACKING_PREFIX}memory-backup/hosts/*");
    let run_with = |largest_file: u64, specs: &[&str]| {
        let git = cli::Git {
            program,
            dir: Some(repo.git_dir()),
            deadline,
            largest_file,
            ssh: is_ssh(url),
        };
        let mut args = vec![
            "fetch",
            "--no-tags",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
            "--prune",
            "--progress",
            "--",
            url,
        ];
        args.extend_from_slice(specs);
        git.run(&args)
    };
    let run = |specs: &[&str]| {
        let mut room = repo.largest_file_hint();
        let mut out = run_with(room, specs)?;
        // A file larger than any here yet (a host far behind a state that grew,
        // or the first fetch of a large one): again, with room for it.
        for _ in 0..ROOM_TRIES {
            match cli::more_room(&out.stderr, room) {
                Some(more) if !out.success => {
                    cli::remove_temporary_objects(repo.git_dir(), out.started);
                    room = more;
                    out = run_with(room, specs)?;
                }
                _ => break,
            }
        }
        Ok(out)
    };
    let out = run(&[&branch_spec, &parked_spec])?;
    if out.success {
        return Ok(());
    }
    cli::remove_temporary_objects(repo.git_dir(), out.started);
    if out
        .stderr
        .contains(&format!("couldn't find remote ref refs/heads/{branch}"))
    {
        // A remote without the branch yet: only the parked refs, if any; the
        // tracking ref of a branch that went away goes too.
        repo.forget_tracking(branch);
        let out = run(&[&parked_spec])?;
        if out.success {
            return Ok(());
        }
        return Err(classify_cli(&out.stderr));
    }
    Err(classify_cli(&out.stderr))
}

/// Pushes `new` to `refname` of `url` only if that ref still holds `expected`
/// (`None`: only if it does not exist).
pub fn push(
    transport: &Transport,
    repo: &Repo,
    url: &str,
    refname: &str,
    new: CommitId,
    expected: Option<CommitId>,
    deadline: Instant,
) -> Result<(), GitError> {
    check_url(url)?;
    match transport {
        Transport::Git(program) => {
            let git = cli::Git {
                program,
                dir: Some(repo.git_dir()),
                deadline,
                largest_file: repo.largest_file_hint(),
                ssh: is_ssh(url),
            };
            let lease = format!(
                "--force-with-lease={refname}:{}",
                expected.map(|c| c.to_string()).unwrap_or_default()
            );
            let spec = format!("{new}:{refname}");
            let out = git.run(&[
                "push",
                "--porcelain",
                "--no-verify",
                "--progress",
                &lease,
                "--",
                url,
                &spec,
            ])?;
            push_result(&out, refname)
        }
        Transport::Libgit2 => libgit2::push(repo, url, refname, new, expected, deadline),
    }
}

/// Reads `git push --porcelain`: a line `<flag>\t<from>:<to>\t<summary>` for
/// the ref.
fn push_result(out: &cli::Output, refname: &str) -> Result<(), GitError> {
    let line = out
        .stdout
        .lines()
        .find(|l| l.split('\t').nth(1).is_some_and(|s| s.ends_with(refname)));
    let Some(line) = line else {
        return if out.success {
            Ok(())
        } else {
            Err(classify_cli(&out.stderr))
        };
    };
    let flag = line.chars().next().unwrap_or('!');
    if flag != '!' {
        return Ok(());
    }
    // `[remote rejected] (reason)`, or `[rejected] (stale info)` from git itself.
    let summary = line.split('\t').nth(2).unwrap_or("");
    Err(crate::git::error::push_refusal(
        refname,
        summary,
        &out.stderr,
    ))
}

/// Lists the refs of `url` (`git ls-remote`): what `init` asks to tell a
/// permanent mistake (a URL, a key, a host alias) from an unreachable server.
pub fn probe(transport: &Transport, url: &str, deadline: Instant) -> Result<(), GitError> {
    check_url(url)?;
    match transport {
        Transport::Git(program) => {
            let git = cli::Git {
                program,
                dir: None,
                deadline,
                largest_file: 0,
                ssh: is_ssh(url),
            };
            let out = git.run(&["ls-remote", "--heads", "--", url])?;
            if out.success {
                Ok(())
            } else {
                Err(classify_cli(&out.stderr))
            }
        }
        Transport::Libgit2 => libgit2::probe(url, deadline),
    }
}

/// The refs of `url` that a fetch of `branch` takes (the branch and the parked
/// commits) with `git ls-remote` run in the repository at `git_dir`, as
/// [`listed`] gives them. Nothing is checked first and nothing is classified:
/// what fails here is left to the fetch that follows.
pub fn list(
    program: &std::path::Path,
    git_dir: &std::path::Path,
    url: &str,
    branch: &str,
    deadline: Instant,
) -> Result<Vec<(String, String)>, GitError> {
    let git = cli::Git {
        program,
        dir: Some(git_dir),
        deadline,
        largest_file: 0,
        ssh: is_ssh(url),
    };
    let branch_ref = format!("refs/heads/{branch}");
    let parked = format!("{PARKED_PREFIX}*");
    let out = git.run_reading(&["ls-remote", "--", url, &branch_ref, &parked])?;
    if !out.success {
        return Err(classify_cli(&out.stderr));
    }
    let mut refs: Vec<(String, String)> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, name)| {
            // As a fetch keeps them: a parked ref of a host name that is not plain
            // is left out (`Repo::parked`).
            *name == branch_ref
                || name
                    .strip_prefix(PARKED_PREFIX)
                    .is_some_and(crate::store::files::is_plain_name)
        })
        .map(|(id, name)| (name.to_string(), id.to_string()))
        .collect();
    refs.sort();
    Ok(refs)
}

/// The refs a fetch saw, as [`list`] gives them: `(name, id)`, sorted.
pub fn listed(branch: &str, f: &Fetched) -> Vec<(String, String)> {
    let mut refs: Vec<(String, String)> = f
        .tip
        .map(|t| (format!("refs/heads/{branch}"), t.to_string()))
        .into_iter()
        .chain(
            f.parked
                .iter()
                .map(|(h, c)| (format!("{PARKED_PREFIX}{h}"), c.to_string())),
        )
        .collect();
    refs.sort();
    refs
}

/// A URL that cannot work, and a local path that is not a repository, fail
/// before any connection.
fn check_url(url: &str) -> Result<(), GitError> {
    if let Some(why) = url::mistake(url) {
        return Err(GitError::Config(why));
    }
    if let RemoteKind::Local(path) = url::remote_kind(url) {
        if !path.exists() {
            // A folder that went away (an unmounted disk) may come back; a path
            // that looks like a URL without its scheme will not.
            let looks_like_url = path.components().next().is_some_and(|c| {
                let s = c.as_os_str().to_string_lossy();
                s.contains('.') && !s.starts_with('.')
            }) && !path.is_absolute();
            if looks_like_url {
                return Err(GitError::Config(format!(
                    "{url}: no such folder; for a server, write the URL with its scheme \
                     (https://{url} or ssh://git@{url}) or as host:path"
                )));
            }
            return Err(GitError::Transient(format!("{url}: no such folder")));
        }
        if git2::Repository::open_bare(&path).is_err() && git2::Repository::open(&path).is_err() {
            return Err(GitError::NotFound(format!(
                "{url}: not a git repository (make one with `git init --bare {url}`)"
            )));
        }
    }
    Ok(())
}

/// Whether git reaches `url` over ssh.
fn is_ssh(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("ssh://") || lower.starts_with("git+ssh://") || url::scp_host(url).is_some()
}
