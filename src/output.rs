//! What a command tells its user: one summary line, fields for `--json`, extra
//! lines for stdout, and warnings. Commands fill it; `main` prints it.

use serde_json::{Map, Value};

#[derive(Debug, Default)]
pub struct Report {
    /// The one line printed on stdout.
    pub summary: String,
    /// Extra stdout lines before the summary (problems found, a table).
    pub lines: Vec<String>,
    /// The result as data, for `--json` and `last-run.json`.
    pub fields: Map<String, Value>,
    /// Warnings, each already logged.
    pub warnings: Vec<String>,
}

impl Report {
    /// Logs a warning (stderr and the log file) and keeps it for the result.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.insert(key.to_string(), value.into());
    }
}

/// On a terminal, a line on stderr for a wait of more than two seconds: which
/// attempt comes next and how much of the run's time is left. Nothing elsewhere
/// (cron, hooks, logs).
pub fn progress(pause: std::time::Duration, attempts: u32, left: std::time::Duration) {
    if pause.as_secs_f64() > 2.0 && crate::sys::stderr_is_terminal() {
        eprintln!(
            "memory-backup: waiting {:.0} s before push attempt {} ({:.0} s left)",
            pause.as_secs_f64(),
            attempts + 1,
            left.as_secs_f64()
        );
    }
}
