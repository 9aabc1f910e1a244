//! `init`: make the backup repository, or bring an existing one to the options
//! given. When the remote already has the branch, the repository starts as a
//! clone of it. Run again with the same options it changes nothing.

use std::time::Duration;

use crate::Context;
use crate::cli::InitArgs;
use crate::commands::backup::{git_error, is_backup_file};
use crate::error::{Error, Result};
use crate::git::{self, GitError, Repo};
use crate::report::Report;

/// How long `init` waits for the remote.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn cmd_init(args: &InitArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let path = cx.repo.display().to_string();
    let g = |e: GitError| git_error(e, &path);
    let mut changes: Vec<String> = Vec::new();
    if !git::may_need_tls(&cx.repo, args.remote.as_deref()) {
        // SAFETY: commands run on the main thread, before any other starts.
        unsafe { git::skip_tls_setup() };
    }
    let repo = match Repo::open(&cx.repo).map_err(g)? {
        Some(r) => r,
        None => {
            let branch = args.branch.as_deref().unwrap_or(git::DEFAULT_BRANCH);
            changes.push(format!("made the repository {path} on branch {branch}"));
            Repo::init(&cx.repo, branch).map_err(g)?
        }
    };
    if let Some(branch) = &args.branch {
        if repo.branch().ok().as_deref() != Some(branch.as_str()) {
            // Commits of the old branch stay on it.
            repo.set_branch(branch).map_err(g)?;
            changes.push(format!("branch set to {branch}"));
        }
    }
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    if let Some(url) = &args.remote {
        match repo.remote_url() {
            Some(old) if &old == url => {}
            old => {
                repo.set_remote_url(url).map_err(g)?;
                changes.push(match old {
                    Some(old) => format!(
                        "remote changed from {} to {}",
                        git::redact(&old),
                        git::redact(url)
                    ),
                    None => format!("remote set to {}", git::redact(url)),
                });
            }
        }
    }
    // A repository with no commits yet starts from the remote's branch.
    if let Some(url) = repo.remote_url() {
        if repo.local_tip(&branch).map_err(g)?.is_none() {
            match repo.fetch(&url, &branch, INIT_TIMEOUT) {
                Ok(Some(tip)) => {
                    repo.move_branch(&branch, tip, None).map_err(g)?;
                    repo.note_remote_tip(&branch, tip);
                    repo.sync_worktree(&branch, is_backup_file, None)
                        .map_err(g)?;
                    changes.push(format!(
                        "checked out {} {branch} at {}",
                        git::redact(&url),
                        tip.short()
                    ));
                }
                Ok(None) => {}
                Err(e) if e.is_retryable() => report.warn(format!(
                    "cannot reach {} now ({e}); the next backup fetches from it",
                    git::redact(&url)
                )),
                Err(e) => return Err(git_error(e, &url)),
            }
        }
    }
    report.set("repo", path.clone());
    report.set("branch", branch.clone());
    report.set("remote", repo.remote_url().as_deref().map(git::redact));
    report.set("changed", !changes.is_empty());
    report.summary = if changes.is_empty() {
        format!("{path}: already set up (branch {branch}), nothing changed")
    } else {
        format!("{path}: {}", changes.join("; "))
    };
    Ok(())
}
