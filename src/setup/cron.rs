//! cron: one line in the user's crontab, below a marker comment, edited
//! through the `crontab` program; the rest of the crontab is kept as it is.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

pub const PROGRAM: &str = "crontab";
/// The comment above the line: how `install` finds it again and `uninstall`
/// knows what it added.
pub const MARKER: &str = "# memory-backup: added by `memory-backup install cron`; `memory-backup uninstall cron` removes it";

/// The crontab line: hourly, at a minute of this host's own, so that many hosts
/// do not all push at once.
pub fn line(command: &str, host: &str) -> String {
    // `%` is a newline to cron unless escaped.
    format!("{} * * * * {}", minute(host), command.replace('%', r"\%"))
}

fn minute(host: &str) -> u32 {
    // FNV-1a: stable across versions and machines, unlike std's hasher.
    let hash = host.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % 60
}

/// The crontab with the line installed; `None` when it is there already.
pub fn with_line(crontab: &str, line: &str) -> Option<String> {
    let mut lines: Vec<&str> = crontab.lines().collect();
    match lines.iter().position(|l| l.trim() == MARKER) {
        Some(at) if lines.get(at + 1) == Some(&line) => return None,
        Some(at) => {
            if lines.get(at + 1).is_some_and(|l| is_ours(l)) {
                lines[at + 1] = line;
            } else {
                lines.insert(at + 1, line);
            }
        }
        None => {
            lines.push(MARKER);
            lines.push(line);
        }
    }
    Some(join(&lines))
}

/// The crontab without what `install` added; `None` when it holds nothing of it.
pub fn without_line(crontab: &str) -> Option<String> {
    let mut lines: Vec<&str> = crontab.lines().collect();
    let at = lines.iter().position(|l| l.trim() == MARKER)?;
    let end = if lines.get(at + 1).is_some_and(|l| is_ours(l)) {
        at + 2
    } else {
        at + 1
    };
    lines.drain(at..end);
    Some(join(&lines))
}

/// Lines that run memory-backup but are not the marked one: an older setup.
pub fn other_lines<'a>(crontab: &'a str, line: &str) -> Vec<&'a str> {
    crontab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && is_ours(l) && *l != line)
        .collect()
}

fn is_ours(line: &str) -> bool {
    line.contains("memory-backup")
}

fn join(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// `crontab -l`: the user's crontab, empty when there is none.
pub fn read() -> Result<String> {
    let out = Command::new(PROGRAM)
        .arg("-l")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Config(format!("cannot run `crontab -l`: {e}")))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    if said.to_lowercase().contains("no crontab") {
        return Ok(String::new());
    }
    Err(Error::Config(format!(
        "`crontab -l` failed: {}",
        said.trim()
    )))
}

/// `crontab -`: replaces the user's crontab.
pub fn write(text: &str) -> Result<()> {
    let mut child = Command::new(PROGRAM)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Config(format!("cannot run `crontab -`: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Other(format!("`crontab -`: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Other(format!("`crontab -`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "`crontab -` refused the new crontab: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "17 * * * * /bin/memory-backup --config /c.toml -q backup";

    #[test]
    fn the_line_goes_below_its_marker_once_and_leaves_with_it() {
        let mine = "MAILTO=me\n0 3 * * * backup-photos\n";
        let installed = with_line(mine, LINE).unwrap();
        assert_eq!(installed, format!("{mine}{MARKER}\n{LINE}\n"));
        assert_eq!(with_line(&installed, LINE), None);
        let moved = with_line(&installed, "5 * * * * /new/memory-backup -q backup").unwrap();
        assert!(
            !moved.contains(LINE) && moved.contains("/new/memory-backup"),
            "{moved}"
        );
        assert_eq!(without_line(&installed).unwrap(), mine);
        assert_eq!(without_line(mine), None);
        assert_eq!(with_line("", LINE).unwrap(), format!("{MARKER}\n{LINE}\n"));
    }

    #[test]
    fn each_host_gets_a_minute_of_its_own_and_percent_signs_are_escaped() {
        assert_eq!(line("x", "laptop"), line("x", "laptop"));
        assert!(minute("laptop") < 60);
        assert!(line("/a%b/memory-backup", "h").ends_with(r"/a\%b/memory-backup"));
    }
}
