//! systemd: a user service that backs up once and a timer that starts it every
//! hour, in `$XDG_CONFIG_HOME/systemd/user/`.

use std::path::{Path, PathBuf};

pub const SERVICE: &str = "memory-backup.service";
pub const TIMER: &str = "memory-backup.timer";
/// The first line of both units: how `uninstall` knows they are this tool's.
pub const MARK: &str =
    "# Written by `memory-backup install systemd`; `memory-backup uninstall systemd` removes it.";

/// `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
pub fn unit_dir(home: &Path) -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map_or_else(|| home.join(".config"), PathBuf::from)
        .join("systemd/user")
}

/// The service: one quiet backup. 75 means committed locally, and the next run
/// pushes it: not a failure of the unit. 77 and 78 are, since they need a person.
pub fn service(exe: &Path, config: &Path) -> String {
    format!(
        "{MARK}
[Unit]
Description=Back up the coding agent's memory file with memory-backup
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={} --config {} -q backup
SuccessExitStatus=75
Nice=10
",
        exec_word(&exe.to_string_lossy()),
        exec_word(&config.to_string_lossy())
    )
}

pub fn timer() -> String {
    format!(
        "{MARK}
[Unit]
Description=Back up the coding agent's memory file every hour

[Timer]
OnCalendar=hourly
RandomizedDelaySec=10m
Persistent=true

[Install]
WantedBy=timers.target
"
    )
}

/// One word of `ExecStart=`: `%` doubled (a specifier otherwise), and in double
/// quotes when it holds spaces, quotes or backslashes.
fn exec_word(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.chars().any(|c| c.is_whitespace() || "\"'\\;".contains(c)) {
        format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_quotes_what_systemd_would_split_or_expand() {
        assert_eq!(
            exec_word("/usr/bin/memory-backup"),
            "/usr/bin/memory-backup"
        );
        assert_eq!(exec_word("/home/a b/m"), "\"/home/a b/m\"");
        assert_eq!(exec_word("/x/100%"), "/x/100%%");
    }
}
