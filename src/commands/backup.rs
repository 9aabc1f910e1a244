//! `backup`: the pipeline of section 8.

use std::time::Instant;

use crate::backup::idle;
use crate::cli::BackupArgs;
use crate::commands::common;
use crate::context::Context;
use crate::error::Result;
use crate::output::Report;

pub fn cmd_backup(args: &BackupArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let started = Instant::now();
    let max_elapsed = common::max_elapsed(args.max_elapsed)?;
    if !args.no_push {
        let memory = cx.memory_path(args.memory.as_deref())?;
        if let Some(idle) = idle::check(
            cx,
            idle::Command::Backup,
            &memory,
            &args.id.id_field,
            started + max_elapsed,
        ) {
            tracing::info!(
                "the memory file, the local branch and the remote's refs are as the last \
                 run left them: nothing to do"
            );
            idle.report(report);
            return Ok(());
        }
    }
    let mut outcome = common::run_backup(
        args,
        common::time_left(started, max_elapsed),
        cx,
        report,
        None,
        false,
        false,
    )?;
    common::report_backup(&outcome, report);
    idle::record(&outcome, &args.id.id_field, report);
    match outcome.not_pushed.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
