//! One module per command; each fills a [`crate::report::Report`].

pub mod backup;
pub mod init;
pub mod merge;
pub mod restore;
pub mod stamp;
pub mod status;
pub mod verify;

use crate::Context;
use crate::cli::Command;
use crate::error::{Error, Result};
use crate::git::{self, Repo};
use crate::report::Report;

/// The command's name, for logs and `last-run.json`.
pub fn name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Stamp(_) => "stamp",
        Command::Merge(_) => "merge",
        Command::Verify(_) => "verify",
        Command::Status(_) => "status",
        Command::Restore(_) => "restore",
    }
}

/// Runs one command.
pub fn run(command: &Command, cx: &Context, report: &mut Report) -> Result<()> {
    match command {
        Command::Init(args) => init::cmd_init(args, cx, report),
        Command::Backup(args) => backup::cmd_backup(args, cx, report),
        Command::Stamp(args) => stamp::cmd_stamp(args, cx, report),
        Command::Merge(args) => merge::cmd_merge(args, cx, report),
        Command::Verify(args) => verify::cmd_verify(args, cx, report),
        Command::Status(args) => status::cmd_status(args, cx, report),
        Command::Restore(args) => restore::cmd_restore(args, cx, report),
    }
}

/// The backup repository that must exist already (`restore`, `status`) and its
/// branch; 78 when there is none. `network` says whether the run may connect.
pub fn open_existing(cx: &Context, network: bool) -> Result<(Repo, String)> {
    let name = cx.repo.display().to_string();
    if !network || !git::may_need_tls(&cx.repo, None) {
        // SAFETY: commands run on the main thread, before any other starts.
        unsafe { git::skip_tls_setup() };
    }
    let repo = Repo::open(&cx.repo)
        .map_err(|e| backup::git_error(e, &name))?
        .ok_or_else(|| {
            Error::Config(format!(
                "{name}: no backup repository here; `memory-backup backup` makes one, `memory-backup init --remote URL` clones one"
            ))
        })?;
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    Ok((repo, branch))
}
