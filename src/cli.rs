//! The command line: one Args struct per command; doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Back up coding agents' memory files from many hosts into one git repository,
/// merged as a CRDT, and sync what every host learned back into each: lock-free,
/// and no entry is ever lost.
#[derive(Debug, Parser)]
#[command(name = "memory-backup", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The config file [default: $XDG_CONFIG_HOME/memory-backup/config.toml]
    #[arg(long, global = true, env = "MEMORY_BACKUP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The backup repository [default: the config's, else $XDG_DATA_HOME/memory-backup/repo]
    #[arg(long, global = true, env = "MEMORY_BACKUP_REPO", value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// This host's name [default: the config's, else the machine's hostname]
    #[arg(long, global = true, env = "MEMORY_BACKUP_HOST", value_name = "NAME")]
    pub host: Option<String>,
    /// Where logs and last-run.json go [default: $XDG_STATE_HOME/memory-backup]
    #[arg(long, global = true, env = "MEMORY_BACKUP_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Print nothing on success (errors still go to stderr)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more on stderr
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the result as one JSON object
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the backup repository (a clone of the remote when it has commits) and save the setup
    Init(InitArgs),
    /// Stamp the memory file, merge every host's file, commit and push
    Backup(BackupArgs),
    /// Back up, then write what every host learned and forgot into the memory file
    Sync(SyncArgs),
    /// Delete identities on every host: tombstones, committed and pushed
    Forget(ForgetArgs),
    /// Stamp a memory file into a host file, against that file's previous content
    Stamp(StampArgs),
    /// Merge a folder's host files into the unified file (no git)
    Merge(MergeArgs),
    /// Check that every host entry is in the unified file and every file is canonical
    Verify(VerifyArgs),
    /// Show each host's entries and last backup, the remote's state and the last run
    Status(StatusArgs),
    /// Write a memory file back from the backup (one entry per identity)
    Restore(RestoreArgs),
    /// Show the settings in effect and where each comes from
    Config(ConfigArgs),
    /// Set up cron, a systemd timer or Claude Code hooks to run memory-backup
    Install(InstallArgs),
    /// Remove what `install` set up
    Uninstall(UninstallArgs),
    /// What an installed hook runs (Claude Code: reads the hook's JSON on stdin)
    Hook(HookArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {}

/// What `install` and `uninstall` set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Integration {
    /// A line in your crontab: a quiet backup every hour
    Cron,
    /// A systemd user service and timer: a quiet backup every hour
    Systemd,
    /// Hooks in ~/.claude/settings.json: sync at session start, back up after
    /// memory tool calls and at session end
    ClaudeCode,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[arg(value_enum)]
    pub integration: Integration,
    /// claude-code: the memory server's name as configured in your MCP config
    /// (repeatable) [default: the servers found that use the configured memory file]
    #[arg(long, value_name = "NAME")]
    pub server: Vec<String>,
    /// Show what would be written, and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(value_enum)]
    pub integration: Integration,
}

/// The integrations whose hooks run `memory-backup hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    ClaudeCode,
}

#[derive(Debug, Args)]
pub struct HookArgs {
    #[arg(value_enum)]
    pub kind: HookKind,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The field that holds an entry's id
    #[arg(long, value_name = "NAME", default_value = crate::core::record::DEFAULT_ID_FIELD)]
    pub id_field: String,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    /// The memory file to stamp
    #[arg(long, value_name = "FILE")]
    pub memory: PathBuf,
    /// The host file to write (its current content is the previous state)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Let a deletion of more than half of the entries through
    #[arg(long)]
    pub allow_mass_delete: bool,
    #[command(flatten)]
    pub id: IdArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The folder of host files [default: the repository]
    pub dir: Option<PathBuf>,
    /// The unified file to write [default: DIR/unified-memory.json]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The folder to check [default: the repository]
    pub dir: Option<PathBuf>,
    /// Also look for secrets in every commit of the branch
    #[arg(long)]
    pub history: bool,
    #[command(flatten)]
    pub id: IdArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Do not ask the remote; show what the last contact saw
    #[arg(long)]
    pub no_fetch: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// `unified` (every host merged) or one host's name
    #[arg(long, value_name = "unified|HOST")]
    pub from: Option<String>,
    /// A revision of the backup repository, or a date (RFC 3339, or YYYY-MM-DD for
    /// the end of that day, UTC): the last backup at or before it [default: the tip]
    #[arg(long, value_name = "REV|DATE")]
    pub at: Option<String>,
    /// The file to write [default: the memory file, as for backup]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// auto: the existing file's format, else JSON Lines for MCP entities and
    /// relations, else a JSON array
    #[arg(long, value_enum, default_value_t = RestoreFormat::Auto)]
    pub format: RestoreFormat,
    /// Write each entry's `_crdt_metadata` too, for reading (stamping ignores it)
    #[arg(long)]
    pub keep_metadata: bool,
    #[command(flatten)]
    pub id: IdArgs,
}

/// The layout `restore` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestoreFormat {
    Auto,
    Jsonl,
    Json,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The remote to push to: an ssh, https, git:// or file:// URL, host:path, or a path
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// The branch to use [default: main, or the existing repository's]
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// The memory file to back up [default: the MCP memory server's, found in your MCP configs]
    #[arg(long, value_name = "FILE")]
    pub memory: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The memory file [default: $MEMORY_BACKUP_MEMORY, else $MEMORY_FILE_PATH, else the configured one]
    #[arg(long, value_name = "FILE")]
    pub memory: Option<PathBuf>,
    /// Commit locally only: no fetch, no push
    #[arg(long)]
    pub no_push: bool,
    /// Give up pushing after this many seconds of wall time (the commit stays local)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_ELAPSED_SECS)]
    pub max_elapsed: f64,
    /// Let a deletion of more than half of this host's entries through
    #[arg(long)]
    pub allow_mass_delete: bool,
    /// Back up this entry even though it looks like it holds a secret (repeatable)
    #[arg(long, value_name = "IDENT")]
    pub allow_secret: Vec<String>,
    #[command(flatten)]
    pub id: IdArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub backup: BackupArgs,
    /// Show what would change in the memory file, and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Identities to forget: an id, `entity:NAME` (or just the entity's name), a relation's identity
    #[arg(value_name = "IDENT")]
    pub idents: Vec<String>,
    /// Also forget every identity this regular expression matches
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
    /// The memory file [default: as for backup]
    #[arg(long, value_name = "FILE")]
    pub memory: Option<PathBuf>,
    /// Give up pushing after this many seconds of wall time (the commit stays local)
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_MAX_ELAPSED_SECS)]
    pub max_elapsed: f64,
    #[command(flatten)]
    pub id: IdArgs,
}

/// How long `backup` keeps retrying a push.
pub const DEFAULT_MAX_ELAPSED_SECS: f64 = 120.0;
