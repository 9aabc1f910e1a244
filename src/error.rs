//! Typed errors, and the one place that maps them to exit codes (section 9).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Exit codes, as documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const DATA: i32 = 65;
    pub const NO_INPUT: i32 = 66;
    pub const WRITE: i32 = 74;
    pub const NOT_PUSHED: i32 = 75;
    pub const AUTH: i32 = 77;
    pub const CONFIG: i32 = 78;
}

#[derive(Debug)]
pub enum Error {
    /// The command line, an environment variable or the config file is wrong.
    Usage(String),
    /// An input file is missing, or is not a regular file.
    Missing { path: PathBuf, cause: String },
    /// An input file is not valid.
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        cause: String,
    },
    /// The memory file is valid but the run refused it (the deletion guard, a
    /// version past the largest one).
    Refused(String),
    /// Writing failed; nothing was damaged.
    Write { path: PathBuf, source: io::Error },
    /// Writing into the backup repository failed (a full disk, a read-only
    /// folder); what it held is unchanged.
    RepoWrite(String),
    /// Reading something other than the memory file failed.
    Read { path: PathBuf, source: io::Error },
    /// `verify` found problems (already listed).
    Problems(usize),
    /// Committed locally but not pushed; the next run pushes it.
    NotPushed { remote: String, cause: String },
    /// Something that the next run may find otherwise (a memory file that kept
    /// changing while it was read).
    Busy(String),
    /// The remote refused our credentials.
    Auth { remote: String, cause: String },
    /// Not a repository, no such remote, a URL that cannot work, and the like.
    Config(String),
    /// Anything else.
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::Missing { .. } => exit::NO_INPUT,
            Error::Invalid { .. } | Error::Refused(_) => exit::DATA,
            Error::Write { .. } | Error::RepoWrite(_) => exit::WRITE,
            Error::Read { .. } | Error::Problems(_) | Error::Other(_) => exit::FAILURE,
            Error::NotPushed { .. } | Error::Busy(_) => exit::NOT_PUSHED,
            Error::Auth { .. } => exit::AUTH,
            Error::Config(_) => exit::CONFIG,
        }
    }

    /// A failed write of `path`; a full disk or a read-only folder are the usual causes.
    pub fn write(path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Write {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Config(m) | Error::Other(m) | Error::Refused(m) => {
                f.write_str(m)
            }
            Error::Busy(m) => write!(f, "{m}; the next run tries again"),
            Error::Missing { path, cause } => write!(f, "{}: {cause}", path.display()),
            Error::Invalid {
                path,
                line,
                column,
                cause,
            } => write!(
                f,
                "{}:{line}:{column}: {cause}; nothing was written",
                path.display()
            ),
            Error::Write { path, source } => write!(
                f,
                "{}: write failed: {source}; the previous file is unchanged",
                path.display()
            ),
            Error::RepoWrite(m) => write!(f, "{m}; nothing was damaged: make room and run again"),
            Error::Read { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Problems(n) => write!(f, "{n} problem(s) found"),
            Error::NotPushed { remote, cause } => write!(
                f,
                "not pushed to {remote}: {cause}; the commit is kept on the local branch and the next run pushes it"
            ),
            Error::Auth { remote, cause } => write!(
                f,
                "{remote}: authentication refused: {cause}; the commit is kept on the local branch"
            ),
        }
    }
}

impl std::error::Error for Error {}
