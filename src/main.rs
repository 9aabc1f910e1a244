//! The binary: parse arguments, read the config file, set up logging, run the
//! command, map its result to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use serde_json::{Map, Value};

use memory_backup::cli::Cli;
use memory_backup::commands;
use memory_backup::config::{Given, Globals, Settings};
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
    let (cli, globals) = match parse() {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(e, json),
    };
    let g = &cli.global;
    let verbosity = match (g.quiet, g.verbose) {
        (true, _) => Verbosity::Quiet,
        (_, true) => Verbosity::Verbose,
        _ => Verbosity::Normal,
    };
    let name = commands::name(&cli.command);
    let settings = Settings::resolve(&globals, commands::makes_config(&cli.command));
    let log_dir = match &settings {
        Ok(s) => s.log_dir.value.clone(),
        Err(_) => g.log_dir.clone().unwrap_or_else(context::default_log_dir),
    };
    logging::init(verbosity, &log_dir);

    let mut report = Report::default();
    let started = chrono::Utc::now();
    let made = settings.and_then(|s| {
        let clock = Clock::from_env().map_err(Error::Usage)?;
        Ok(Context::new(s, clock))
    });
    let (cx, result) = match made {
        Ok(cx) => {
            let result = commands::run(&cli.command, &cx, &mut report);
            (Some(cx), result)
        }
        Err(e) => (None, Err(e)),
    };
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
        // Under -q, cron mails only what needs a person: an offline run is news
        // only once nothing has been pushed for `quiet_hours`.
        Err(e) if g.quiet && code == exit::NOT_PUSHED => {
            match cx.as_ref().and_then(Context::push_overdue) {
                Some(overdue) => tracing::error!("{overdue}: {e}"),
                None => tracing::warn!("{e}"),
            }
        }
        Err(e) => tracing::error!("{e}"),
    }
    if let Err(e) = print(&report, &fields, g.json, g.quiet)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("memory-backup: error: cannot write to stdout: {e}");
    }
    if commands::records_last_run(&cli.command) {
        let repo = cx.as_ref().map_or_else(
            || g.repo.clone().unwrap_or_else(context::default_repo),
            |cx| cx.repo.clone(),
        );
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

/// The command line, and for the options that the config file can also set,
/// whether the option or its environment variable gave them.
fn parse() -> Result<(Cli, Globals), clap::Error> {
    let mut matches = Cli::command().try_get_matches()?;
    let globals = {
        // Global options are on the subcommand's matches wherever they were written.
        let m = matches.subcommand().map_or(&matches, |(_, m)| m);
        Globals {
            config: given(m, "config"),
            repo: given(m, "repo"),
            host: given(m, "host"),
            log_dir: given(m, "log_dir"),
        }
    };
    let cli = Cli::from_arg_matches_mut(&mut matches)?;
    Ok((cli, globals))
}

fn given<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Given<T> {
    Given {
        value: m.get_one::<T>(id).cloned(),
        from_env: m.value_source(id) == Some(ValueSource::EnvVariable),
    }
}

/// A command line clap refused: exit 2, and under `--json` one JSON object.
fn usage_error(e: clap::Error, json: bool) -> ExitCode {
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
    ExitCode::from(code as u8)
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
