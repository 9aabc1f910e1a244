//! `hook claude-code`: what the installed Claude Code hooks run. It reads the
//! hook's JSON on stdin and starts a backup (or at session start a sync) of the
//! configured memory file in a process of its own, with no terminal and no
//! output, so that Claude Code never waits long and shows nothing. Only the
//! configured file: never a `memory.json` that the project folder happens to hold.

use std::io::{IsTerminal, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{HookArgs, HookKind};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::Report;
use crate::setup::claude_code::{self, Action};

/// How long a session start waits for its sync before leaving it to finish in
/// the background.
pub const SYNC_WAIT: Duration = Duration::from_secs(3);
/// The most of stdin read (a tool's response can be large; it is not needed).
const STDIN_LIMIT: u64 = 64 << 20;

pub fn cmd_hook(args: &HookArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let HookKind::ClaudeCode = args.kind;
    // Any failure is exit 1: Claude Code takes exit 2 as "block this".
    run(cx, report).map_err(|e| match e {
        Error::Usage(m) => Error::Other(m),
        e => e,
    })
}

fn run(cx: &Context, report: &mut Report) -> Result<()> {
    let input = read_input();
    let action = claude_code::action(&input);
    report.set("action", format!("{action:?}").to_lowercase());
    let command = match action {
        Action::Nothing => return Ok(()),
        Action::Backup => "backup",
        Action::Sync => "sync",
    };
    let Some(memory) = cx.settings.loaded.as_ref().and_then(|f| f.memory.clone()) else {
        return Err(Error::Config(format!(
            "{}: no memory file is configured, so the hook backs up nothing; run \
             `memory-backup init --memory FILE`",
            cx.settings.file.value.display()
        )));
    };
    let exe = crate::setup::current_exe()?;
    let mut child = Command::new(exe);
    child
        .arg("--config")
        .arg(&cx.settings.file.value)
        .args(["-q", command, "--memory"])
        .arg(&memory)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A process group of its own: Claude Code ending the hook's group, or the
    // session, does not end the backup.
    std::os::unix::process::CommandExt::process_group(&mut child, 0);
    let mut child = child
        .spawn()
        .map_err(|e| Error::Other(format!("cannot start memory-backup {command}: {e}")))?;
    if action == Action::Sync {
        let until = Instant::now() + SYNC_WAIT;
        while Instant::now() < until {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }
    // Not waited for: it finishes on its own and records its result in
    // last-run.json.
    Ok(())
}

/// The hook's JSON; `null` when there is none (a terminal, or not JSON).
fn read_input() -> serde_json::Value {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return serde_json::Value::Null;
    }
    let mut text = Vec::new();
    if stdin
        .lock()
        .take(STDIN_LIMIT)
        .read_to_end(&mut text)
        .is_err()
    {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null)
}
