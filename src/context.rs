//! What every command needs, resolved from options, the environment and the
//! config file: the repository, this host's name, the clock, where logs go.

use std::path::{Path, PathBuf};

use crate::config::{Settings, Source, env};
pub use crate::config::{default_log_dir, default_repo};
use crate::core::clock::Clock;
use crate::error::{Error, Result};
use crate::git::transport::Transport;

/// The memory file when nothing names one and there is no config file.
pub const DEFAULT_MEMORY_FILE: &str = "memory.json";

#[derive(Debug, Clone)]
pub struct Context {
    pub repo: PathBuf,
    /// The host name as given (`--host`, `MEMORY_BACKUP_HOST`, the config), not
    /// yet sanitised.
    pub host: Option<String>,
    pub clock: Clock,
    /// Where logs and `last-run.json` go.
    pub log_dir: PathBuf,
    /// The memory file the config names.
    pub memory: Option<PathBuf>,
    /// The transport the config or `MEMORY_BACKUP_TRANSPORT` names.
    pub transport: Option<String>,
    /// Identities whose secrets may go (`allow_secrets` in the config).
    pub allow_secrets: Vec<String>,
    /// Whether a config file was read: without one, `./memory.json` is the
    /// memory file of last resort.
    pub configured: bool,
    /// Every setting, with where it came from (`config`, `install`, `-q`).
    pub settings: Settings,
}

impl Context {
    /// The context of a run with these settings.
    pub fn new(settings: Settings, clock: Clock) -> Context {
        Context {
            repo: settings.repo.value.clone(),
            host: settings.host.value.clone(),
            clock,
            log_dir: settings.log_dir.value.clone(),
            memory: settings.loaded.as_ref().and_then(|f| f.memory.clone()),
            transport: Some(settings.transport.value.clone()),
            allow_secrets: settings.allow_secrets.value.clone(),
            configured: settings.configured(),
            settings,
        }
    }

    /// This host's name: as given, else the machine's hostname, sanitised.
    pub fn host(&self) -> Result<String> {
        let raw = match &self.host {
            Some(h) => h.clone(),
            None => hostname::get()
                .map_err(|e| Error::Other(format!("cannot read the hostname: {e}")))?
                .to_string_lossy()
                .into_owned(),
        };
        sanitize_host(&raw)
    }

    /// The memory file: `--memory`, else `MEMORY_BACKUP_MEMORY`, else
    /// `MEMORY_FILE_PATH`, else the configured one, else `memory.json` in the
    /// current folder when there is no config file.
    pub fn memory_path(&self, given: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = given {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = [env::MEMORY, env::MCP_MEMORY]
            .iter()
            .filter_map(std::env::var_os)
            .find(|v| !v.is_empty())
        {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = &self.memory {
            return Ok(p.clone());
        }
        if self.configured {
            return Err(Error::Missing {
                path: PathBuf::from(DEFAULT_MEMORY_FILE),
                cause: "no memory file is configured: give one with --memory, or run \
                        `memory-backup init --memory FILE`"
                    .into(),
            });
        }
        Ok(PathBuf::from(DEFAULT_MEMORY_FILE))
    }

    /// Under `-q`, what to say of a run that did not push: `None` while the
    /// last successful push from this host is younger than `quiet_hours`.
    pub fn push_overdue(&self) -> Option<String> {
        let last = crate::git::Repo::open(&self.repo)
            .ok()
            .flatten()
            .and_then(|r| crate::store::state::last_push(r.git_dir()))
            .and_then(|t| crate::core::clock::Timestamp::parse(&t));
        let Some(last) = last else {
            return Some("no successful push from this host yet".into());
        };
        let age_secs = (self.clock.now().micros() - last.micros()) / 1_000_000;
        let quiet_secs = i64::from(self.settings.quiet_hours.value) * 3600;
        (age_secs >= quiet_secs).then(|| {
            format!(
                "nothing pushed from this host for {} (last push {last})",
                crate::context::age(age_secs)
            )
        })
    }

    /// The transport: the one configured, else `git` when it is on PATH.
    pub fn transport(&self) -> Result<Transport> {
        Transport::pick(self.transport.as_deref()).map_err(|m| {
            match self.settings.transport.source {
                Source::File => Error::Config(format!(
                    "{}: {}: {m}",
                    self.settings.file.value.display(),
                    crate::config::key::TRANSPORT
                )),
                _ => Error::Usage(m),
            }
        })
    }
}

/// Characters outside `A-Za-z0-9._-` become `-`; an empty name is an error.
pub fn sanitize_host(raw: &str) -> Result<String> {
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        return Err(Error::Usage(
            "the host name is empty: give one with --host or MEMORY_BACKUP_HOST".into(),
        ));
    }
    Ok(name)
}

/// `25 hours`, `3 days`: how long ago, for a person.
pub fn age(secs: i64) -> String {
    let hours = secs / 3600;
    match hours {
        h if h < 2 => format!("{} minutes", secs / 60),
        h if h < 48 => format!("{h} hours"),
        h => format!("{} days", h / 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_sanitised() {
        assert_eq!(sanitize_host("my laptop/ü").unwrap(), "my-laptop--");
        assert_eq!(
            sanitize_host("ci_runner-3.local").unwrap(),
            "ci_runner-3.local"
        );
        assert!(matches!(sanitize_host("  "), Err(Error::Usage(_))));
    }
}
