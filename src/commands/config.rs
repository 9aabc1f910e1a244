//! `config`: the settings in effect and where each came from (an option, an
//! environment variable, the config file, the default), so that what cron,
//! systemd and hooks will do can be checked from the shell.

use serde_json::{Value, json};

use crate::cli::ConfigArgs;
use crate::config::{Setting, key};
use crate::context::{Context, DEFAULT_MEMORY_FILE};
use crate::error::Result;
use crate::output::Report;

pub fn cmd_config(_args: &ConfigArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let s = &cx.settings;
    let path = |p: &std::path::Path| p.display().to_string();
    let host = match &s.host.value {
        Some(h) => h.clone(),
        None => cx.host().unwrap_or_else(|e| format!("({e})")),
    };
    let memory = match (&s.memory.value, cx.configured) {
        (Some(m), _) => Some(path(m)),
        (None, false) => Some(format!("{DEFAULT_MEMORY_FILE} in the current folder")),
        (None, true) => None,
    };
    let rows: Vec<(&str, Value, &crate::config::Source)> = vec![
        (key::REPO, path(&s.repo.value).into(), &s.repo.source),
        (key::REMOTE, s.remote.value.clone().into(), &s.remote.source),
        (key::BRANCH, s.branch.value.clone().into(), &s.branch.source),
        (key::HOST, host.into(), &s.host.source),
        (key::MEMORY, memory.into(), &s.memory.source),
        (
            key::TRANSPORT,
            s.transport.value.clone().into(),
            &s.transport.source,
        ),
        (
            key::QUIET_HOURS,
            s.quiet_hours.value.into(),
            &s.quiet_hours.source,
        ),
        (
            key::ALLOW_SECRETS,
            s.allow_secrets.value.clone().into(),
            &s.allow_secrets.source,
        ),
        (
            key::LOG_DIR,
            path(&s.log_dir.value).into(),
            &s.log_dir.source,
        ),
    ];
    let file = file_line(&s.file, cx.configured);
    report.lines.push(file.clone());
    let mut settings = serde_json::Map::new();
    for (name, value, source) in &rows {
        let shown = match value {
            Value::Null => "(not set)".to_string(),
            Value::String(v) => v.clone(),
            other => other.to_string(),
        };
        report
            .lines
            .push(format!("{name:<13} = {shown}  ({source})"));
        settings.insert(
            name.to_string(),
            json!({"value": value, "source": source.to_string()}),
        );
    }
    if cx.configured && s.memory.value.is_none() {
        report.warn(format!(
            "{}: no memory file set: runs need --memory FILE; `memory-backup init --memory FILE` saves one",
            path(&s.file.value)
        ));
    }
    report.set(
        "config_file",
        json!({"path": path(&s.file.value), "source": s.file.source.to_string(), "exists": cx.configured}),
    );
    report.set("settings", Value::Object(settings));
    Ok(())
}

fn file_line(file: &Setting<std::path::PathBuf>, exists: bool) -> String {
    format!(
        "{:<13} = {}  ({}; {})",
        "config file",
        file.value.display(),
        file.source,
        if exists {
            "read"
        } else {
            "does not exist: `memory-backup init` writes it"
        }
    )
}
