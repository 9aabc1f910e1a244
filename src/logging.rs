//! Logging: warnings and errors on stderr, one line each; info and up in a daily
//! log file (14 kept); and `last-run.json`, the last run's result, for `status`.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};
use tracing::{Event, Level, Subscriber};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter::LevelFilter};

pub const LOG_PREFIX: &str = "memory-backup";
pub const LOG_SUFFIX: &str = "log";
pub const LOG_FILES_KEPT: usize = 14;
pub const LAST_RUN_FILE: &str = "last-run.json";

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Sets up the subscriber. A log folder that cannot be made costs only the log
/// file: the run goes on, and says so.
pub fn init(verbosity: Verbosity, log_dir: &Path) {
    let stderr_level = match verbosity {
        Verbosity::Quiet => LevelFilter::ERROR,
        Verbosity::Normal => LevelFilter::WARN,
        Verbosity::Verbose => LevelFilter::DEBUG,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(StderrFormat)
        .with_filter(stderr_level);
    let (file, file_err) = match file_appender(log_dir) {
        Ok(appender) => {
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(appender)
                .with_ansi(false)
                .with_target(false)
                .with_filter(LevelFilter::INFO);
            (Some(layer), None)
        }
        Err(e) => (None, Some(e)),
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
    if let Some(e) = file_err {
        tracing::debug!("no log file in {}: {e}", log_dir.display());
    }
}

fn file_appender(dir: &Path) -> Result<RollingFileAppender, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(LOG_PREFIX)
        .filename_suffix(LOG_SUFFIX)
        .max_log_files(LOG_FILES_KEPT)
        .build(dir)
        .map_err(|e| e.to_string())
}

/// `memory-backup: warning: ...`, one line.
struct StderrFormat;

impl<S, N> FormatEvent<S, N> for StderrFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            _ => "debug",
        };
        write!(writer, "memory-backup: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Writes `last-run.json` atomically; a failure costs only that file. It is a
/// report, not data: it is not synced, which every run would wait for.
pub fn write_last_run(log_dir: &Path, result: &Map<String, Value>) {
    let path = log_dir.join(LAST_RUN_FILE);
    let mut text = serde_json::to_vec_pretty(result).expect("a JSON map serialises");
    text.push(b'\n');
    let written = std::fs::create_dir_all(log_dir)
        .and_then(|()| crate::files::replace_unsynced(&path, &text));
    if let Err(e) = written {
        tracing::debug!("cannot write {}: {e}", path.display());
    }
}
