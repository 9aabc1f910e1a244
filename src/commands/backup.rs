//! `backup`: the pipeline of section 8.

use crate::cli::BackupArgs;
use crate::commands::common;
use crate::context::Context;
use crate::error::Result;
use crate::output::Report;

pub fn cmd_backup(args: &BackupArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let mut outcome = common::run_backup(args, cx, report, None, false, false)?;
    common::report_backup(&outcome, report);
    match outcome.not_pushed.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
