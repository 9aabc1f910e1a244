//! The binary: parse arguments, set up logging, run the command, map its result
//! to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use serde_json::{Map, Value};

use memory_backup::cli::Cli;
use memory_backup::commands;
use memory_backup::context::{self, Context};
use memory_backup::core::clock::Clock;
use memory_backup::error::{Error, exit};
use memory_backup::logging::{self, Verbosity};
use memory_backup::output::Report;

fn main() -> ExitCode {
    memory_backup::sys::private_umask();
    // A fetch or push through libgit2 runs in a child of this binary.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(memory_backup::git::libgit2::CHILD_ARG))
    {
        return ExitCode::from(memory_backup::git::libgit2::child_main());
    }
    let json = std::env::args().any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            if json && code == exit::USAGE {
                let out = serde_json::json!({
                    "ok": false,
                    "exit_code": code,
                    "error": e.render().to_string().trim(),
                });
                println!("{out}");
            } else {
                let _ = e.print();
            }
            return ExitCode::from(code as u8);
        }
    };
    let g = &cli.global;
    let verbosity = match (g.quiet, g.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let log_dir = g.log_dir.clone().unwrap_or_else(context::default_log_dir);
    logging::init(verbosity, &log_dir);

    let name = commands::name(&cli.command);
    let mut report = Report::default();
    let started = chrono::Utc::now();
    let repo = g.repo.clone().unwrap_or_else(context::default_repo);
    let result = Clock::from_env().map_err(Error::Usage).and_then(|clock| {
        let cx = Context {
            repo: repo.clone(),
            host: g.host.clone(),
            clock,
            log_dir: log_dir.clone(),
            memory: None,
            transport: std::env::var(memory_backup::git::transport::TRANSPORT_ENV).ok(),
            allow_secrets: Vec::new(),
            configured: false,
        };
        commands::run(&cli.command, &cx, &mut report)
    });
    let code = match &result {
        Ok(()) => exit::OK,
        Err(e) => e.exit_code(),
    };

    let mut fields = Map::new();
    fields.insert("command".into(), name.into());
    fields.insert("exit_code".into(), code.into());
    fields.insert("ok".into(), result.is_ok().into());
    if let Err(e) = &result {
        fields.insert("error".into(), e.to_string().into());
    }
    if !report.summary.is_empty() {
        fields.insert("summary".into(), report.summary.clone().into());
    }
    fields.extend(std::mem::take(&mut report.fields));
    fields.insert("warnings".into(), report.warnings.clone().into());
    match &result {
        Ok(()) | Err(Error::Problems(_)) => tracing::info!("{name}: {}", report.summary),
        Err(e) => tracing::error!("{e}"),
    }
    if let Err(e) = print(&report, &fields, g.json, g.quiet)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("memory-backup: error: cannot write to stdout: {e}");
    }
    if name != "status" {
        let mut last = fields;
        last.insert("started".into(), Value::String(started.to_rfc3339()));
        last.insert(
            "finished".into(),
            Value::String(chrono::Utc::now().to_rfc3339()),
        );
        logging::write_last_run(&log_dir, &repo, &last);
    }
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// stdout: the summary line (and any lines the command listed), or one JSON
/// object with `--json`, or nothing with `-q`.
fn print(
    report: &Report,
    fields: &Map<String, Value>,
    json: bool,
    quiet: bool,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, fields)?;
        writeln!(out)?;
    } else if !quiet {
        for line in &report.lines {
            writeln!(out, "{line}")?;
        }
        if !report.summary.is_empty() {
            writeln!(out, "{}", report.summary)?;
        }
    }
    out.flush()
}
