//! The config file (section 14): `init` writes it, every command reads it, and
//! options and environment variables override it, so that cron, systemd, hooks
//! and the shell agree on one setup. [`Settings`] says where each value came from.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variables besides those that clap reads.
pub mod env {
    pub const MEMORY: &str = "MEMORY_BACKUP_MEMORY";
    /// The MCP memory server's own variable for its file.
    pub const MCP_MEMORY: &str = "MEMORY_FILE_PATH";
    pub const XDG_DATA_HOME: &str = "XDG_DATA_HOME";
    pub const XDG_STATE_HOME: &str = "XDG_STATE_HOME";
    pub const XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
}

/// The config file's name, in `$XDG_CONFIG_HOME/memory-backup/`.
pub const FILE_NAME: &str = "config.toml";
/// The environment variable of `--config`.
pub const CONFIG_ENV: &str = "MEMORY_BACKUP_CONFIG";
/// Under `-q`, a 75 stays silent while the last push is younger than this.
pub const DEFAULT_QUIET_HOURS: u32 = 24;
/// The transport when nothing names one: `git` when it is on PATH, else libgit2.
pub const DEFAULT_TRANSPORT: &str = "auto";

/// The keys of the config file.
pub mod key {
    pub const REPO: &str = "repo";
    pub const REMOTE: &str = "remote";
    pub const BRANCH: &str = "branch";
    pub const HOST: &str = "host";
    pub const MEMORY: &str = "memory";
    pub const TRANSPORT: &str = "transport";
    pub const QUIET_HOURS: &str = "quiet_hours";
    pub const ALLOW_SECRETS: &str = "allow_secrets";
    pub const LOG_DIR: &str = "log_dir";
}

/// The file as written. Unknown keys are an error: a misspelt key silently
/// ignored would leave cron on another setup than the one the user meant.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<PathBuf>,
    /// Informational: the repository's own `origin` is what runs use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Informational, like `remote`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_secrets: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
}

const HEADER: &str = "# memory-backup's setup, written by `memory-backup init`; options and \
                      environment variables override it.\n# `memory-backup config` shows what \
                      is in effect and where each value comes from.\n";

impl ConfigFile {
    /// Reads `path`; `None` when there is no such file. Relative paths in it are
    /// relative to its folder, and `~/` is the home folder.
    pub fn load(path: &Path) -> Result<Option<ConfigFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Config(format!(
                    "{}: cannot read the config file: {e}",
                    path.display()
                )));
            }
        };
        let mut file: ConfigFile =
            toml::from_str(&text).map_err(|e| Error::Config(describe(path, &text, &e)))?;
        let dir = crate::store::atomic::parent_of(path).to_path_buf();
        for p in [&mut file.repo, &mut file.memory, &mut file.log_dir]
            .into_iter()
            .flatten()
        {
            *p = resolve_path(p, &dir);
        }
        Ok(Some(file))
    }

    /// The file's text: a header, then the keys.
    pub fn to_text(&self) -> Result<String> {
        let body = toml::to_string(self)
            .map_err(|e| Error::Config(format!("the config cannot be written as TOML: {e}")))?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Writes it atomically, private (folder 0700, file 0600).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_text()?;
        let dir = crate::store::atomic::parent_of(path);
        crate::store::atomic::private_dir(dir).map_err(|e| Error::write(dir, e))?;
        crate::store::atomic::write_bytes(
            path,
            crate::store::atomic::Mode::Private,
            text.as_bytes(),
        )
        .map_err(|e| Error::write(path, e))
    }
}

/// `file:line:column: message (in `the line`)`, one line: the line names the key.
fn describe(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return format!("{}: {message}", path.display());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("").trim();
    format!(
        "{}:{line}:{column}: {message} (in `{source}`); fix the file, or run `memory-backup init` \
         again after moving it away",
        path.display()
    )
}

/// `~/x` is in the home folder; a relative path is relative to `dir`.
fn resolve_path(p: &Path, dir: &Path) -> PathBuf {
    if let (Ok(rest), Some(home)) = (p.strip_prefix("~"), std::env::var_os("HOME")) {
        return Path::new(&home).join(rest);
    }
    if p.is_relative() {
        return dir.join(p);
    }
    p.to_path_buf()
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "option {flag}"),
            Source::Env(var) => write!(f, "environment variable {var}"),
            Source::File => f.write_str("config file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Setting<T> {
        Setting { value, source }
    }
}

/// A global option as the command line gave it: its value and whether it came
/// from the option itself or its environment variable.
#[derive(Debug, Clone, Default)]
pub struct Given<T> {
    pub value: Option<T>,
    /// The environment variable that gave it, when not the option.
    pub from_env: bool,
}

/// The global options that the config file can also set.
#[derive(Debug, Clone, Default)]
pub struct Globals {
    pub config: Given<PathBuf>,
    pub repo: Given<PathBuf>,
    pub host: Given<String>,
    pub log_dir: Given<PathBuf>,
}

/// Every setting in effect, with its source.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file in effect (absolute), and whether it was read.
    pub file: Setting<PathBuf>,
    pub loaded: Option<ConfigFile>,
    pub repo: Setting<PathBuf>,
    pub host: Setting<Option<String>>,
    pub log_dir: Setting<PathBuf>,
    /// The memory file, as far as settings name it (`--memory` of a command
    /// comes first).
    pub memory: Setting<Option<PathBuf>>,
    pub transport: Setting<String>,
    pub quiet_hours: Setting<u32>,
    pub allow_secrets: Setting<Vec<String>>,
    pub remote: Setting<Option<String>>,
    pub branch: Setting<Option<String>>,
}

/// `$XDG_CONFIG_HOME/memory-backup/config.toml`, else `~/.config/...`.
pub fn default_path() -> PathBuf {
    xdg_dir(env::XDG_CONFIG_HOME, ".config").join(FILE_NAME)
}

fn flag_or_env<T>(given: &Given<T>, flag: &'static str, var: &'static str) -> Option<(T, Source)>
where
    T: Clone,
{
    given.value.clone().map(|v| {
        let source = if given.from_env {
            Source::Env(var)
        } else {
            Source::Flag(flag)
        };
        (v, source)
    })
}

/// An environment variable that is set and not empty.
fn env_var(var: &'static str) -> Option<(String, Source)> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| (v, Source::Env(var)))
}

impl Settings {
    /// Reads the config file and lays the options and environment over it. An
    /// explicit `--config` that does not exist is an error, except for `init`
    /// (which makes it) and `config` (which says so).
    pub fn resolve(g: &Globals, may_be_missing: bool) -> Result<Settings> {
        let (path, file_source) = flag_or_env(&g.config, "--config", CONFIG_ENV)
            .unwrap_or_else(|| (default_path(), Source::Default));
        let path = absolute(&path);
        let loaded = ConfigFile::load(&path)?;
        if loaded.is_none() && file_source != Source::Default && !may_be_missing {
            return Err(Error::Config(format!(
                "{}: no such config file (named by {file_source}); `memory-backup --config {} init` \
                 makes it",
                path.display(),
                path.display()
            )));
        }
        let f = loaded.clone().unwrap_or_default();
        let from_file = |v: Option<PathBuf>| v.map(|v| (v, Source::File));
        let repo = flag_or_env(&g.repo, "--repo", "MEMORY_BACKUP_REPO")
            .or_else(|| from_file(f.repo.clone()))
            .unwrap_or_else(|| (default_repo(), Source::Default));
        let log_dir = flag_or_env(&g.log_dir, "--log-dir", "MEMORY_BACKUP_LOG_DIR")
            .or_else(|| from_file(f.log_dir.clone()))
            .unwrap_or_else(|| (default_log_dir(), Source::Default));
        let host = flag_or_env(&g.host, "--host", "MEMORY_BACKUP_HOST")
            .map(|(h, s)| (Some(h), s))
            .or_else(|| f.host.clone().map(|h| (Some(h), Source::File)))
            .unwrap_or((None, Source::Default));
        let memory = env_var(env::MEMORY)
            .or_else(|| env_var(env::MCP_MEMORY))
            .map(|(m, s)| (Some(PathBuf::from(m)), s))
            .or_else(|| f.memory.clone().map(|m| (Some(m), Source::File)))
            .unwrap_or((None, Source::Default));
        let transport = env_var(crate::git::transport::TRANSPORT_ENV)
            .or_else(|| f.transport.clone().map(|t| (t, Source::File)))
            .unwrap_or_else(|| (DEFAULT_TRANSPORT.to_string(), Source::Default));
        let quiet_hours = f
            .quiet_hours
            .map(|q| (q, Source::File))
            .unwrap_or((DEFAULT_QUIET_HOURS, Source::Default));
        let allow_secrets = if f.allow_secrets.is_empty() {
            (Vec::new(), Source::Default)
        } else {
            (f.allow_secrets.clone(), Source::File)
        };
        let informational = |v: Option<String>| match v {
            Some(v) => Setting::new(Some(v), Source::File),
            None => Setting::new(None, Source::Default),
        };
        Ok(Settings {
            file: Setting::new(path, file_source),
            repo: Setting::new(repo.0, repo.1),
            host: Setting::new(host.0, host.1),
            log_dir: Setting::new(log_dir.0, log_dir.1),
            memory: Setting::new(memory.0, memory.1),
            transport: Setting::new(transport.0, transport.1),
            quiet_hours: Setting::new(quiet_hours.0, quiet_hours.1),
            allow_secrets: Setting::new(allow_secrets.0, allow_secrets.1),
            remote: informational(f.remote.clone()),
            branch: informational(f.branch.clone()),
            loaded,
        })
    }

    /// Whether a config file was read.
    pub fn configured(&self) -> bool {
        self.loaded.is_some()
    }
}

/// `path` made absolute against the current folder (installed integrations
/// name the file by its absolute path).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `$VAR/memory-backup`, else `$HOME/<fallback>/memory-backup`.
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    let base = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("memory-backup")
}

/// The default repository: `$XDG_DATA_HOME/memory-backup/repo`.
pub fn default_repo() -> PathBuf {
    xdg_dir(env::XDG_DATA_HOME, ".local/share").join("repo")
}

/// The default log folder: `$XDG_STATE_HOME/memory-backup`.
pub fn default_log_dir() -> PathBuf {
    xdg_dir(env::XDG_STATE_HOME, ".local/state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let file = ConfigFile {
            repo: Some(dir.path().join("repo")),
            remote: Some("ssh://git@example.org/me/memory.git".into()),
            branch: Some("main".into()),
            host: Some("laptop".into()),
            memory: Some(dir.path().join("memory.jsonl")),
            transport: None,
            quiet_hours: Some(12),
            allow_secrets: vec!["entity:Keys".into()],
            log_dir: None,
        };
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), Some(file));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn relative_paths_in_the_config_are_relative_to_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "memory = \"m/memory.jsonl\"\n").unwrap();
        let file = ConfigFile::load(&path).unwrap().unwrap();
        assert_eq!(file.memory, Some(dir.path().join("m/memory.jsonl")));
    }

    #[test]
    fn a_bad_config_names_the_file_the_line_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, line, needle) in [
            (
                "host = \"a\"\nquiet_hours = \"soon\"\n",
                2,
                "quiet_hours = \"soon\"",
            ),
            ("host = \"a\"\n\nquiet_hour = 3\n", 3, "quiet_hour"),
            ("host = \n", 1, "host ="),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = ConfigFile::load(&path).unwrap_err();
            let m = e.to_string();
            assert!(matches!(e, Error::Config(_)), "{m}");
            assert!(m.starts_with(&format!("{}:{line}:", path.display())), "{m}");
            assert!(m.contains(needle), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }
}
