//! Logging: warnings and errors on stderr, one line each; info and up in a daily
//! log file (14 kept); and `last-run.json`, the last run's result, for `status`.

use std::fmt;
use std::path::{Path, PathBuf};

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
    crate::store::atomic::private_dir(dir).map_err(|e| e.to_string())?;
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

/// `last-run.json` of the repository at `repo`: one per repository, so that
/// two repositories of one user do not overwrite each other's.
pub fn last_run_path(log_dir: &Path, repo: &Path) -> PathBuf {
    use sha2::Digest;
    let full = std::fs::canonicalize(repo).unwrap_or_else(|_| repo.to_path_buf());
    let digest = sha2::Sha256::digest(full.as_os_str().as_encoded_bytes());
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    log_dir.join(format!(
        "last-run-{name}-{}.json",
        crate::core::record::hex(&digest[..4])
    ))
}

/// The field of `last-run.json` that keeps the last run that succeeded
/// (`command` and `finished`), carried over by runs that fail.
pub const LAST_OK: &str = "last_ok";

/// Writes the repository's `last-run.json`, private; a failure costs only that
/// file. It is a report, not data: it is not synced.
pub fn write_last_run(log_dir: &Path, repo: &Path, result: &Map<String, Value>) {
    let path = last_run_path(log_dir, repo);
    let mut result = result.clone();
    let last_ok = if result.get("ok") == Some(&Value::Bool(true)) {
        Some(
            serde_json::json!({"command": result.get("command"), "finished": result.get("finished")}),
        )
    } else {
        read_last_run(log_dir, repo).and_then(|prev| prev.get(LAST_OK).cloned())
    };
    result.insert(LAST_OK.into(), last_ok.unwrap_or(Value::Null));
    let mut text = serde_json::to_vec_pretty(&result).expect("a JSON map serialises");
    text.push(b'\n');
    let written = crate::store::atomic::private_dir(log_dir).and_then(|()| {
        let tmp = crate::store::atomic::prepare(&path, crate::store::atomic::Mode::Private, |w| {
            std::io::Write::write_all(w, &text)
        })?;
        tmp.persist(&path).map(drop).map_err(|e| e.error)
    });
    if let Err(e) = written {
        tracing::debug!("cannot write {}: {e}", path.display());
    }
}

/// The repository's `last-run.json`, if there is one that parses.
pub fn read_last_run(log_dir: &Path, repo: &Path) -> Option<Value> {
    let text = std::fs::read(last_run_path(log_dir, repo)).ok()?;
    serde_json::from_slice(&text).ok()
}
