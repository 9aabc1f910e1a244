//! Setting up once: the MCP memory server's file found in the MCP configs
//! ([`discover`]), and the integrations installed with the binary's absolute
//! path and the config file ([`cron`], [`systemd`], [`claude_code`]).

pub mod claude_code;
pub mod cron;
pub mod discover;
pub mod json;
pub mod systemd;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// This binary's absolute path, for what runs it later from elsewhere.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot tell where this program is: {e}")))
}

/// `s` as one word for `sh`: as is when it holds only safe characters, else in
/// single quotes.
pub fn shell_word(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command line that runs `args` of this binary with the config file `config`.
pub fn command_line(exe: &Path, config: &Path, args: &[&str]) -> String {
    let mut words = vec![
        shell_word(&exe.to_string_lossy()),
        "--config".to_string(),
        shell_word(&config.to_string_lossy()),
    ];
    words.extend(args.iter().map(|a| shell_word(a)));
    words.join(" ")
}

/// The home folder, which every integration lives under.
pub fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Error::Config("HOME is not set".into()))
}

/// The same file, by its real path where it exists.
pub fn same_file(a: &Path, b: &Path) -> bool {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| crate::config::absolute(p));
    real(a) == real(b)
}

/// A program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(
            shell_word("/usr/bin/memory-backup"),
            "/usr/bin/memory-backup"
        );
        assert_eq!(shell_word("/home/a b/x"), "'/home/a b/x'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
