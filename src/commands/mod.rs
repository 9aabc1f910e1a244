//! One module per command; each fills a [`Report`](crate::report::Report).

pub mod backup;
pub mod init;
pub mod merge;
pub mod stamp;
pub mod verify;

use crate::Context;
use crate::cli::Command;
use crate::error::Result;
use crate::report::Report;

/// The command's name, for logs and `last-run.json`.
pub fn name(command: &Command) -> &'static str {
    match command {
        Command::Init(_) => "init",
        Command::Backup(_) => "backup",
        Command::Stamp(_) => "stamp",
        Command::Merge(_) => "merge",
        Command::Verify(_) => "verify",
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
    }
}
