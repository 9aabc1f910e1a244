//! One thin file per command; each fills a [`Report`] and returns a result that
//! `main` maps to an exit code. Shared helpers are in [`common`].

pub mod backup;
pub mod common;
pub mod config;
pub mod forget;
pub mod hook;
pub mod init;
pub mod install;
pub mod merge;
pub mod restore;
pub mod stamp;
pub mod status;
pub mod sync;
pub mod verify;

use crate::cli::Command;
use crate::context::Context;
use crate::error::Result;
use crate::output::Report;

/// The command's name, for logs and `last-run.json`.
pub fn name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Sync(_) => "sync",
        Command::Forget(_) => "forget",
        Command::Stamp(_) => "stamp",
        Command::Merge(_) => "merge",
        Command::Verify(_) => "verify",
        Command::Status(_) => "status",
        Command::Restore(_) => "restore",
        Command::Config(_) => "config",
        Command::Install(_) => "install",
        Command::Uninstall(_) => "uninstall",
        Command::Hook(_) => "hook",
    }
}

/// Whether the command may run with a `--config` file that does not exist yet:
/// `init` makes it, `config` says it is missing.
pub fn makes_config(command: &Command) -> bool {
    matches!(command, Command::Init(_) | Command::Config(_))
}

/// Whether the command's result goes into `last-run.json`: runs on the
/// repository do; looking (`status`, `config`), setting up and the hook (whose
/// detached run records its own) do not.
pub fn records_last_run(command: &Command) -> bool {
    !matches!(
        command,
        Command::Status(_)
            | Command::Config(_)
            | Command::Install(_)
            | Command::Uninstall(_)
            | Command::Hook(_)
    )
}

/// Runs one command.
pub fn run(command: &Command, cx: &Context, report: &mut Report) -> Result<()> {
    match command {
        Command::Init(args) => init::cmd_init(args, cx, report),
        Command::Backup(args) => backup::cmd_backup(args, cx, report),
        Command::Sync(args) => sync::cmd_sync(args, cx, report),
        Command::Forget(args) => forget::cmd_forget(args, cx, report),
        Command::Stamp(args) => stamp::cmd_stamp(args, cx, report),
        Command::Merge(args) => merge::cmd_merge(args, cx, report),
        Command::Verify(args) => verify::cmd_verify(args, cx, report),
        Command::Status(args) => status::cmd_status(args, cx, report),
        Command::Restore(args) => restore::cmd_restore(args, cx, report),
        Command::Config(args) => config::cmd_config(args, cx, report),
        Command::Install(args) => install::cmd_install(args, cx, report),
        Command::Uninstall(args) => install::cmd_uninstall(args, cx, report),
        Command::Hook(args) => hook::cmd_hook(args, cx, report),
    }
}
