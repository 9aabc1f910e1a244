//! `init`: make the backup repository, or bring an existing one to the options
//! given, after checking that the remote can work: a permanent mistake (a URL,
//! a key, an unknown host alias) stops it at once; an unreachable server is a
//! warning. When the remote already has the branch, the repository starts as a
//! clone of it. Without `--memory` it finds the MCP memory server's file in
//! the MCP configs. Then it saves the setup in the config file (section 14), so
//! that cron, systemd and hooks use the same. A failure saves nothing. Run again
//! with the same options it changes nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backup::git_error;
use crate::cli::InitArgs;
use crate::config::env;
use crate::config::{ConfigFile, absolute};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::git::{self, GitError, Repo, transport, url};
use crate::output::Report;
use crate::setup::discover::{self, Places};
use crate::store::files::is_backup_file;

/// How long `init` waits for the remote: it answers within 5 s, a server that
/// never answers included, on a loaded machine too.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(3);

pub fn cmd_init(args: &InitArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let path = cx.repo.display().to_string();
    let g = |e: GitError| git_error(e, &path);
    let existing = cx.settings.loaded.clone().unwrap_or_default();
    // Asked first: a question about the memory file stops init with nothing done.
    let memory = memory_file(args, &existing, report)?;
    let host = cx.host()?;
    let transport = cx.transport()?;
    let opened = Repo::open(&cx.repo).map_err(g)?;
    let remote = args.remote.clone();
    let deadline = Instant::now() + INIT_TIMEOUT;
    let mut reachable = true;
    if let Some(remote) = &remote {
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
    let repo = match opened {
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
    if let Some(remote) = &remote {
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
    let mut file = existing;
    file.repo = Some(absolute(&cx.repo));
    // Informational, and shown by `config`: never with a password or token.
    file.remote = repo.remote_url().as_deref().map(url::redact);
    file.branch = Some(branch.clone());
    file.host = Some(host.clone());
    file.memory = memory.clone();
    file.log_dir = Some(absolute(&cx.log_dir));
    let config = &cx.settings.file.value;
    if cx.settings.loaded.as_ref() != Some(&file) {
        file.save(config)?;
        changes.push(format!("saved the setup in {}", config.display()));
    }
    report.set("repo", path.clone());
    report.set("branch", branch.clone());
    report.set("remote", repo.remote_url().as_deref().map(url::redact));
    report.set("transport", transport.name());
    report.set("host", host);
    report.set("memory", memory.map(|m| m.display().to_string()));
    report.set("config", config.display().to_string());
    report.set("changed", !changes.is_empty());
    report.summary = if changes.is_empty() {
        format!("{path}: already set up (branch {branch}), nothing changed")
    } else {
        format!("{path}: {}", changes.join("; "))
    };
    Ok(())
}

/// The memory file to save: `--memory`, else the environment's, else the one
/// saved before, else the MCP memory server's as its configs tell. Several
/// different ones, or a server whose file cannot be told: exit 2 with what was
/// found. None at all: a warning, and runs need `--memory`.
fn memory_file(
    args: &InitArgs,
    existing: &ConfigFile,
    report: &mut Report,
) -> Result<Option<PathBuf>> {
    let given = args.memory.clone().or_else(|| {
        [env::MEMORY, env::MCP_MEMORY]
            .iter()
            .filter_map(std::env::var_os)
            .find(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(m) = given {
        let m = absolute(&m);
        if !m.exists() {
            report.warn(format!(
                "{}: no such file yet; backups exit 66 until it exists",
                m.display()
            ));
        }
        return Ok(Some(m));
    }
    if let Some(m) = &existing.memory {
        return Ok(Some(m.clone()));
    }
    let home = crate::setup::home()?;
    let (found, warnings) = discover::find(&Places::from_env(&home));
    for w in warnings {
        report.warn(w);
    }
    let mut files: Vec<(&PathBuf, &discover::Found)> = Vec::new();
    for f in &found {
        if let Ok(file) = &f.file
            && !files
                .iter()
                .any(|(seen, _)| crate::setup::same_file(seen, file))
        {
            files.push((file, f));
        }
    }
    let unknown: Vec<&discover::Found> = found.iter().filter(|f| f.file.is_err()).collect();
    match files.as_slice() {
        [] if unknown.is_empty() => {
            report.warn(
                "no MCP memory server found (looked in ~/.claude.json, .mcp.json, the Claude Desktop and Cursor configs): no memory file saved; give it with `memory-backup init --memory FILE`",
            );
            Ok(None)
        }
        [] => Err(Error::Usage(format!(
            "found the MCP memory server but not its file: {}; give the file with --memory FILE",
            unknown
                .iter()
                .map(|f| format!("{}: {}", f.describe(), f.why()))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
        [(file, f)] => {
            for u in &unknown {
                report.warn(format!(
                    "also found {}, whose file cannot be told ({}); saved {} instead",
                    u.describe(),
                    u.why(),
                    file.display()
                ));
            }
            let note = if file.exists() {
                ""
            } else {
                "; it does not exist yet: the server makes it on its first write"
            };
            report.lines.push(format!(
                "memory file: {} ({}, {}){note}",
                file.display(),
                f.describe(),
                f.how
            ));
            Ok(Some((*file).clone()))
        }
        several => Err(Error::Usage(format!(
            "found {} different memory files; give the one to back up with --memory FILE: {}",
            several.len(),
            several
                .iter()
                .map(|(file, f)| format!("{} ({})", file.display(), f.describe()))
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
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
