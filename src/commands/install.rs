//! `install` and `uninstall`: cron, a systemd timer, Claude Code hooks. What
//! they write runs this binary by its absolute path with the config file's
//! absolute path, so that it finds the setup the shell has, in an environment
//! that holds nothing else. Installing twice writes the same; `uninstall`
//! removes only what `install` added.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::{InstallArgs, Integration, UninstallArgs};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::Report;
use crate::setup::claude_code::{self, SETTINGS_FILE};
use crate::setup::discover::{self, Places};
use crate::setup::json::Json;
use crate::setup::{self, command_line, cron, systemd};
use crate::store::atomic;

/// The systemd commands that start the timer, for when they cannot be run here.
const SYSTEMCTL_HINT: &str =
    "systemctl --user daemon-reload && systemctl --user enable --now memory-backup.timer";

pub fn cmd_install(args: &InstallArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let config = configured(cx)?;
    let exe = setup::current_exe()?;
    report.set("integration", name(args.integration));
    report.set("binary", exe.display().to_string());
    report.set("config", config.display().to_string());
    match args.integration {
        Integration::Cron => install_cron(&exe, &config, cx, args.dry_run, report),
        Integration::Systemd => install_systemd(&exe, &config, args.dry_run, report),
        Integration::ClaudeCode => install_claude_code(&exe, &config, cx, args, report),
    }
}

pub fn cmd_uninstall(args: &UninstallArgs, _cx: &Context, report: &mut Report) -> Result<()> {
    report.set("integration", name(args.integration));
    match args.integration {
        Integration::Cron => uninstall_cron(report),
        Integration::Systemd => uninstall_systemd(report),
        Integration::ClaudeCode => uninstall_claude_code(report),
    }
}

fn name(i: Integration) -> &'static str {
    match i {
        Integration::Cron => "cron",
        Integration::Systemd => "systemd",
        Integration::ClaudeCode => "claude-code",
    }
}

/// The config file, which must exist and name the memory file: what is
/// installed has nothing else to go by.
fn configured(cx: &Context) -> Result<PathBuf> {
    let file = &cx.settings.file.value;
    let Some(loaded) = &cx.settings.loaded else {
        return Err(Error::Config(format!(
            "{}: no config file yet; run `memory-backup init` first (what is installed reads it)",
            file.display()
        )));
    };
    if loaded.memory.is_none() {
        return Err(Error::Config(format!(
            "{}: no memory file is set; run `memory-backup init --memory FILE` first",
            file.display()
        )));
    }
    Ok(file.clone())
}

fn install_cron(
    exe: &Path,
    config: &Path,
    cx: &Context,
    dry_run: bool,
    report: &mut Report,
) -> Result<()> {
    let line = cron::line(&command_line(exe, config, &["-q", "backup"]), &cx.host()?);
    report.set("line", line.as_str());
    if dry_run {
        report.lines = vec![cron::MARKER.to_string(), line];
        report.summary = "cron: these lines would go into your crontab (--dry-run)".into();
        return Ok(());
    }
    if setup::which(cron::PROGRAM).is_none() {
        report.lines = vec![cron::MARKER.to_string(), line];
        return Err(Error::Config(
            "there is no `crontab` program here: add the two lines above to your scheduler \
             (`crontab -e` where cron runs), or use `memory-backup install systemd`"
                .into(),
        ));
    }
    let current = cron::read()?;
    let new = cron::with_line(&current, &line);
    for other in cron::other_lines(new.as_deref().unwrap_or(&current), &line) {
        report.warn(format!(
            "your crontab also runs memory-backup in `{other}`: an older setup? `crontab -e` removes it"
        ));
    }
    report.set("changed", new.is_some());
    report.summary = match new {
        None => "cron: already installed, nothing changed".into(),
        Some(text) => {
            cron::write(&text)?;
            format!("cron: added to your crontab: {line}")
        }
    };
    Ok(())
}

fn uninstall_cron(report: &mut Report) -> Result<()> {
    if setup::which(cron::PROGRAM).is_none() {
        return Err(Error::Config(
            "there is no `crontab` program here: nothing to remove".into(),
        ));
    }
    let current = cron::read()?;
    report.set("changed", false);
    report.summary = match cron::without_line(&current) {
        None => "cron: nothing of memory-backup's in your crontab".into(),
        Some(text) => {
            cron::write(&text)?;
            report.set("changed", true);
            "cron: removed memory-backup's line from your crontab".into()
        }
    };
    Ok(())
}

fn install_systemd(exe: &Path, config: &Path, dry_run: bool, report: &mut Report) -> Result<()> {
    let dir = systemd::unit_dir(&setup::home()?);
    let units = [
        (dir.join(systemd::SERVICE), systemd::service(exe, config)),
        (dir.join(systemd::TIMER), systemd::timer()),
    ];
    if dry_run {
        for (path, text) in &units {
            report.lines.push(format!("# {}", path.display()));
            report.lines.extend(text.lines().map(str::to_string));
        }
        report.summary = "systemd: these units would be written (--dry-run)".into();
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
    let mut written = Vec::new();
    for (path, text) in &units {
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            atomic::write_bytes(path, atomic::Mode::KeepOr644, text.as_bytes())
                .map_err(|e| Error::write(path, e))?;
            written.push(path.display().to_string());
        }
    }
    report.set("changed", !written.is_empty());
    report.set(
        "units",
        units
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>(),
    );
    let started = systemctl(&["daemon-reload"])
        .and_then(|()| systemctl(&["enable", "--now", systemd::TIMER]));
    report.set("enabled", started.is_ok());
    if let Err(why) = &started {
        report.warn(format!(
            "the timer is not started: {why}; run `{SYSTEMCTL_HINT}` where your user's systemd runs"
        ));
    }
    let what = if written.is_empty() {
        "units already installed, nothing changed".to_string()
    } else {
        format!("wrote {}", written.join(" and "))
    };
    report.summary = format!(
        "systemd: {what}; {}",
        if started.is_ok() {
            "the timer is enabled"
        } else {
            "the timer is not started yet"
        }
    );
    Ok(())
}

fn uninstall_systemd(report: &mut Report) -> Result<()> {
    let dir = systemd::unit_dir(&setup::home()?);
    let ours: Vec<PathBuf> = [systemd::TIMER, systemd::SERVICE]
        .iter()
        .map(|u| dir.join(u))
        .filter(|p| match std::fs::read_to_string(p) {
            Ok(text) if text.starts_with(systemd::MARK) => true,
            Ok(_) => {
                report.warn(format!(
                    "{}: not written by `memory-backup install systemd`; left as it is",
                    p.display()
                ));
                false
            }
            Err(_) => false,
        })
        .collect();
    report.set("changed", !ours.is_empty());
    if ours.is_empty() {
        report.summary = "systemd: no units of memory-backup's installed".into();
        return Ok(());
    }
    let stopped = systemctl(&["disable", "--now", systemd::TIMER]);
    for p in &ours {
        std::fs::remove_file(p).map_err(|e| Error::write(p, e))?;
    }
    let reloaded = stopped.and_then(|()| systemctl(&["daemon-reload"]));
    if let Err(why) = reloaded {
        report.warn(format!(
            "systemctl --user: {why}; run `systemctl --user disable --now {}` where your user's systemd runs",
            systemd::TIMER
        ));
    }
    report.summary = format!(
        "systemd: removed {}",
        ours.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    Ok(())
}

/// `systemctl --user ARGS`; why not, when it fails.
fn systemctl(args: &[&str]) -> std::result::Result<(), String> {
    let Some(program) = setup::which("systemctl") else {
        return Err("there is no systemctl here".into());
    };
    let out = Command::new(program)
        .arg("--user")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`systemctl --user {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn settings_path() -> Result<PathBuf> {
    Ok(Places::from_env(&setup::home()?)
        .claude_dir
        .join(SETTINGS_FILE))
}

/// `~/.claude/settings.json`, or an empty object when there is none.
fn read_settings(path: &Path) -> Result<Option<Json>> {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text).map(Some).map_err(|e| {
            Error::Config(format!(
                "{}:{}:{}: not JSON ({e}); nothing was changed",
                path.display(),
                e.line(),
                e.column()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Read {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn write_settings(path: &Path, settings: &Json) -> Result<()> {
    // A settings file linked from a dotfiles folder stays a link.
    let path = &atomic::resolve_links(path);
    let dir = atomic::parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    atomic::write_bytes(
        path,
        atomic::Mode::KeepOr644,
        settings.to_pretty().as_bytes(),
    )
    .map_err(|e| Error::write(path, e))
}

fn install_claude_code(
    exe: &Path,
    config: &Path,
    cx: &Context,
    args: &InstallArgs,
    report: &mut Report,
) -> Result<()> {
    let path = settings_path()?;
    let servers = if args.server.is_empty() {
        memory_servers(cx, report)?
    } else {
        args.server.clone()
    };
    let matcher = claude_code::matcher(&servers);
    let command = command_line(exe, config, &claude_code::HOOK_ARGS);
    let mut settings = read_settings(&path)?.unwrap_or_else(Json::object);
    let changed = claude_code::install(&mut settings, &command, &matcher)
        .map_err(|why| Error::Config(format!("{}: {why}; nothing was changed", path.display())))?;
    report.set("settings", path.display().to_string());
    report.set("command", command.as_str());
    report.set("matcher", matcher.as_str());
    report.set("changed", changed);
    if args.dry_run {
        report.lines = settings.to_pretty().lines().map(str::to_string).collect();
        report.summary = format!("claude-code: {} would read so (--dry-run)", path.display());
        return Ok(());
    }
    if !changed {
        report.summary = format!(
            "claude-code: hooks already in {}, nothing changed",
            path.display()
        );
        return Ok(());
    }
    write_settings(&path, &settings)?;
    report.summary = format!(
        "claude-code: hooks added to {}: SessionStart syncs; PostToolUse {matcher} and SessionEnd back up",
        path.display()
    );
    Ok(())
}

/// The names of the memory servers that use the configured file, as the MCP
/// configs name them: the matcher of their tools is built from these.
fn memory_servers(cx: &Context, report: &mut Report) -> Result<Vec<String>> {
    let places = Places::from_env(&setup::home()?);
    let (found, warnings) = discover::find(&places);
    for w in warnings {
        report.warn(w);
    }
    let memory = cx.settings.loaded.as_ref().and_then(|f| f.memory.clone());
    let same = |f: &&discover::Found| matches!((&f.file, &memory), (Ok(a), Some(b)) if setup::same_file(a, b));
    let mut names: Vec<String> = found.iter().filter(same).map(|f| f.name.clone()).collect();
    if names.is_empty() {
        names = found.iter().map(|f| f.name.clone()).collect();
    }
    if names.is_empty() {
        report.warn(
            "no MCP memory server found in your MCP configs: the hooks match the tools of a \
             server named \"memory\"; give its name with --server NAME if it has another",
        );
        names.push("memory".into());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn uninstall_claude_code(report: &mut Report) -> Result<()> {
    let path = settings_path()?;
    report.set("changed", false);
    let Some(mut settings) = read_settings(&path)? else {
        report.summary = format!("claude-code: no {}, nothing to remove", path.display());
        return Ok(());
    };
    let removed = claude_code::uninstall(&mut settings)
        .map_err(|why| Error::Config(format!("{}: {why}; nothing was changed", path.display())))?;
    if removed == 0 {
        report.summary = format!(
            "claude-code: no hooks of memory-backup's in {}",
            path.display()
        );
        return Ok(());
    }
    write_settings(&path, &settings)?;
    report.set("changed", true);
    report.summary = format!(
        "claude-code: removed memory-backup's {removed} hook(s) from {}",
        path.display()
    );
    Ok(())
}
