//! `init`: make the backup repository, or bring an existing one to the options
//! given, after checking that the remote can work: a permanent mistake (a URL,
//! a key, an unknown host alias) stops it at once; an unreachable server is a
//! warning. When the remote already has the branch, the repository starts as a
//! clone of it. Run again with the same options it changes nothing.

use std::time::{Duration, Instant};

use crate::backup::git_error;
use crate::cli::InitArgs;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::git::{self, GitError, Repo, transport, url};
use crate::output::Report;
use crate::store::files::is_backup_file;

/// How long `init` waits for the remote: it answers within 5 s, a server that
/// never answers included, on a loaded machine too.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn cmd_init(args: &InitArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let path = cx.repo.display().to_string();
    let g = |e: GitError| git_error(e, &path);
    let transport = cx.transport()?;
    let deadline = Instant::now() + INIT_TIMEOUT;
    let mut reachable = true;
    if let Some(remote) = &args.remote {
        match transport::probe(&transport, remote, deadline) {
            Ok(()) => {}
            Err(e) if e.is_permanent() => return Err(explain(git_error(e, remote))),
            Err(e) => {
                reachable = false;
                report.warn(format!(
                    "cannot reach {} now ({e}); it is saved, and the next backup tries it",
                    url::redact(remote)
                ));
            }
        }
    }
    let mut changes: Vec<String> = Vec::new();
    let repo = match Repo::open(&cx.repo).map_err(g)? {
        Some(r) => r,
        None => {
            let branch = args.branch.as_deref().unwrap_or(git::DEFAULT_BRANCH);
            changes.push(format!("made the repository {path} on branch {branch}"));
            Repo::init(&cx.repo, branch).map_err(g)?
        }
    };
    if let Some(branch) = &args.branch
        && repo.branch().ok().as_deref() != Some(branch.as_str())
    {
        // Commits of the old branch stay on it.
        repo.set_branch(branch).map_err(g)?;
        changes.push(format!("branch set to {branch}"));
    }
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    if let Some(remote) = &args.remote {
        match repo.remote_url() {
            Some(old) if &old == remote => {}
            old => {
                repo.set_remote_url(remote).map_err(g)?;
                changes.push(match old {
                    Some(old) => format!(
                        "remote changed from {} to {}",
                        url::redact(&old),
                        url::redact(remote)
                    ),
                    None => format!("remote set to {}", url::redact(remote)),
                });
            }
        }
    }
    // A repository with no commits yet starts from the remote's branch.
    if let (Some(remote), true) = (repo.remote_url(), reachable)
        && repo.local_tip(&branch).map_err(g)?.is_none()
    {
        match transport::fetch(&transport, &repo, &remote, &branch, deadline + INIT_TIMEOUT) {
            Ok(f) => {
                if let Some(tip) = f.tip {
                    repo.move_branch(&branch, tip, None).map_err(g)?;
                    repo.sync_worktree(&branch, is_backup_file, None)
                        .map_err(g)?;
                    changes.push(format!(
                        "checked out {} {branch} at {}",
                        url::redact(&remote),
                        tip.short()
                    ));
                }
            }
            Err(e) if e.is_retryable() => report.warn(format!(
                "cannot fetch from {} now ({e}); the next backup does",
                url::redact(&remote)
            )),
            Err(e) => return Err(explain(git_error(e, &remote))),
        }
    }
    report.set("repo", path.clone());
    report.set("branch", branch.clone());
    report.set("remote", repo.remote_url().as_deref().map(url::redact));
    report.set("transport", transport.name());
    report.set("changed", !changes.is_empty());
    report.summary = if changes.is_empty() {
        format!("{path}: already set up (branch {branch}), nothing changed")
    } else {
        format!("{path}: {}", changes.join("; "))
    };
    Ok(())
}

/// Adds the way out to an error `init` stops on.
fn explain(e: Error) -> Error {
    match e {
        Error::Auth { remote, cause } => Error::Auth {
            remote,
            cause: format!(
                "{cause}; load the key into ssh-agent (`ssh-add`), check `ssh -T` to the host, or set a \
                 git credential helper for https"
            ),
        },
        e => e,
    }
}
