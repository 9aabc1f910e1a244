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
