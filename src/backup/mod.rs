//! One run of the pipeline (section 8): read the memory file, fetch, make the
//! state on the remote tip ([`state`]), commit, push as a compare-and-swap, and
//! on a refusal back off ([`retry`]), fetch and make it again. No lock anywhere:
//! every step writes only new objects or moves one ref with a compare-and-swap.
//! `backup`, `sync` and `forget` run it; each step is a function of its own.

mod attempts;
pub mod idle;
pub mod retry;
pub mod state;

pub use attempts::{MANY_ATTEMPTS, PARK_AFTER, REFUSED_ATTEMPTS, REFUSED_PATIENCE};

use std::path::Path;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::core::base::Base;
use crate::core::record::Record;
use crate::error::{Error, Result};
use crate::git::transport::{self, Fetched, Transport};
use crate::git::{Author, CommitId, GitError, Repo, url};
use crate::output::Report;
use crate::store::files::is_backup_file;
use crate::store::memory_file::{self, MemoryRead};
use crate::store::state as local_state;
use retry::Retry;
pub use state::Prepared;
use state::{StampInput, Tips};

/// Attempts at moving the local branch while concurrent runs move it too.
const LOCAL_MOVES: usize = 8;
/// A run still going this long after its deadline is stuck where no deadline
/// reaches (libgit2 reading a truncated loose object loops without end).
const STUCK_AFTER: Duration = Duration::from_secs(5);

/// What a run is asked to do.
pub struct Options<'a> {
    pub memory: &'a Path,
    pub id_field: &'a str,
    pub no_push: bool,
    pub max_elapsed: Duration,
    pub allow_mass_delete: bool,
    /// Identities whose secrets may go (`--allow-secret`).
    pub allow_secrets: &'a [String],
    /// `forget`: identities to tombstone on every host.
    pub forget: Option<&'a dyn Fn(&str) -> bool>,
    /// Make the state and stop: no commit, no push, nothing recorded.
    pub dry_run: bool,
    /// Under contention, park this host's own file without making the whole
    /// state (`backup`; `sync` and `forget` need the whole state).
    pub park_at_once: bool,
}

/// What a run did.
pub struct Outcome {
    pub repo: Repo,
    pub host: String,
    pub branch: String,
    /// The remote as messages show it.
    pub remote: Option<String>,
    pub prepared: Prepared,
    pub memory: MemoryRead,
    /// The commit that now holds this run's state (`None`: nothing changed).
    pub commit: Option<CommitId>,
    pub pushed: bool,
    pub attempts: u32,
    /// Why the state is not on the remote, when it is not (75, 77, 78): the
    /// commit is kept on the local branch.
    pub not_pushed: Option<Error>,
    /// The remote's refs as the last fetch that reached it saw them.
    pub fetched: Option<Fetched>,
    /// Whether the working tree shows the local branch's tip.
    pub worktree_synced: bool,
}

/// Runs the pipeline.
pub fn run(opts: &Options<'_>, cx: &Context, report: &mut Report) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = started + opts.max_elapsed;
    watch(deadline, &cx.repo);
    let host = cx.host()?;
    memory_file::check_regular(opts.memory)?;
    let transport = cx.transport()?;
    let shown_repo = cx.repo.display().to_string();
    let existing = Repo::open(&cx.repo).map_err(|e| git_error(e, &shown_repo))?;
    let (base, warning) = match &existing {
        Some(r) => local_state::load_base(r.git_dir(), &host),
        None => (Base::default(), None),
    };
    report.warnings.extend(warning);
    let expect_entries = base.held.values().any(|h| h.body.is_some());
    // Bad input stops the run before anything is made or fetched.
    let memory = memory_file::read(opts.memory, expect_entries)?;
    let repo = match existing {
        Some(r) => r,
        None => Repo::init(&cx.repo, crate::git::DEFAULT_BRANCH)
            .map_err(|e| git_error(e, &shown_repo))?,
    };
    let branch = repo.branch().map_err(|e| Error::Config(e.to_string()))?;
    heal(&repo, &branch)?;
    let remote = if opts.no_push {
        None
    } else {
        repo.remote_url()
    };
    let shown = remote.as_deref().map(url::redact);
    report.set("host", host.as_str());
    report.set("branch", branch.as_str());
    report.set("remote", shown.clone());
    report.set("transport", transport.name());
    if let Some(w) = crate::large_file_warning(
        &opts.memory.display().to_string(),
        memory.bytes.len() as u64,
    ) {
        report.warn(w);
    }
    let run = Run {
        cx,
        opts,
        repo: &repo,
        transport,
        host: &host,
        branch: &branch,
        remote: remote.as_deref(),
        shown: shown.unwrap_or_default(),
        deadline,
        scanner: std::cell::OnceCell::new(),
        held: Default::default(),
        fetched: Default::default(),
        worktree_failed: Default::default(),
        base_at_start: base.clone(),
    };
    let attempted = run.attempts(memory, base, report);
    let held = run.held.take();
    let (prepared, memory, commit, pushed, attempts, not_pushed) = attempted?;
    // Only those still held back by the version stamped last.
    let mut held_list = Vec::new();
    for ident in &prepared.stamped.held_back {
        if let Some((rules, message)) = held.get(ident) {
            report.warn(message.clone());
            held_list.push(serde_json::json!({"ident": ident, "rules": rules}));
        }
    }
    report.set("held_back", held_list);
    if not_pushed.is_none() || matches!(not_pushed, Some(Error::NotPushed { .. })) {
        run.repack(report);
    }
    Ok(Outcome {
        host: host.clone(),
        branch: branch.clone(),
        remote: remote.as_deref().map(url::redact),
        prepared,
        memory,
        commit,
        pushed,
        attempts,
        not_pushed,
        fetched: run.fetched.take(),
        worktree_synced: !run.worktree_failed.get(),
        repo,
    })
}

struct Run<'a> {
    cx: &'a Context,
    opts: &'a Options<'a>,
    repo: &'a Repo,
    transport: Transport,
    host: &'a str,
    branch: &'a str,
    remote: Option<&'a str>,
    shown: String,
    deadline: Instant,
    scanner: std::cell::OnceCell<crate::core::secrets::Scanner>,
    /// Entries held back for a secret: identity to (rules, warning).
    held: std::cell::RefCell<std::collections::BTreeMap<String, (String, String)>>,
    /// The remote's refs as the last fetch that reached it saw them.
    fetched: std::cell::RefCell<Option<Fetched>>,
    /// Whether the working tree could not be made to show the tip.
    worktree_failed: std::cell::Cell<bool>,
    /// The base as the run found it: one that stays the same is not written again.
    base_at_start: Base,
}

type Attempts = (
    Prepared,
    MemoryRead,
    Option<CommitId>,
    bool,
    u32,
    Option<Error>,
);

impl Run<'_> {
    /// The state is on the remote (pushed, parked, or there already): the local
    /// branch and the working tree follow, and the base is recorded.
    fn landed(&self, commit: CommitId, p: &Prepared, memory: &MemoryRead, report: &mut Report) {
        self.adopt(commit, Some((commit, p)));
        local_state::set_last_push(self.repo.git_dir(), self.cx.clock.now());
        self.save_base(p, memory, report);
    }

    /// The state is not on the remote: its commit stays on the local branch for
    /// the next run, and `e` says why.
    fn kept(
        &self,
        p: Prepared,
        memory: MemoryRead,
        attempts: u32,
        e: Error,
        report: &mut Report,
    ) -> Result<Attempts> {
        let commit = self.keep_local(&p, report)?;
        self.save_base(&p, &memory, report);
        Ok((p, memory, Some(commit), false, attempts, Some(e)))
    }

    fn fetch(&self, url: &str) -> std::result::Result<Fetched, GitError> {
        let f = match transport::fetch(&self.transport, self.repo, url, self.branch, self.deadline)
        {
            // An object file that a power cut left empty makes git take the
            // object for present and then fail to read it: it goes, and the
            // fetch brings the object again.
            Err(e) if !e.is_permanent() && self.repo.remove_empty_loose_objects() > 0 => {
                transport::fetch(&self.transport, self.repo, url, self.branch, self.deadline)?
            }
            r => r?,
        };
        tracing::debug!(
            "fetched: tip {:?}, {} parked",
            f.tip.map(|t| t.short()),
            f.parked.len()
        );
        self.fetched.replace(Some(f.clone()));
        Ok(f)
    }

    /// The remote's refs as the last fetch that reached it saw them.
    fn last_fetched(&self) -> Fetched {
        Fetched {
            tip: self.repo.tracking_tip(self.branch),
            parked: self.repo.parked(),
        }
    }

    /// Sleeps before the next attempt, saying so on a terminal when the wait is
    /// long; false when the deadline has passed.
    fn pause(&self, retry: &mut Retry, attempts: u32) -> bool {
        let Some(pause) = retry.next_pause() else {
            return false;
        };
        crate::output::progress(pause, attempts, retry.remaining());
        std::thread::sleep(pause);
        true
    }

    /// Step 3 on the tips at hand: the local branch, and the remote's as fetched.
    fn prepare(
        &self,
        fetched: Option<&Fetched>,
        memory: &MemoryRead,
        base: &Base,
        warned: &mut bool,
        report: &mut Report,
    ) -> Result<Prepared> {
        self.prepare_in(fetched, memory, base, false, warned, report)
    }

    /// `prepare`, of this host's own file alone when `own_only` (a run that
    /// parks at once).
    fn prepare_in(
        &self,
        fetched: Option<&Fetched>,
        memory: &MemoryRead,
        base: &Base,
        own_only: bool,
        warned: &mut bool,
        report: &mut Report,
    ) -> Result<Prepared> {
        let began = Instant::now();
        let local = self
            .repo
            .local_tip(self.branch)
            .map_err(|e| git_error(e, self.branch))?;
        let (remote_tip, parked) = match fetched {
            Some(f) => (f.tip, f.parked.clone()),
            None => (None, Vec::new()),
        };
        let mut tips = Tips::of(self.repo, local, remote_tip, &parked)?;
        if own_only {
            tips.parked.retain(|(h, _)| h == self.host);
        }
        let forget = |ident: &str| self.opts.forget.is_some_and(|f| f(ident));
        let held_back = |ident: &str, record: &Record| {
            self.held_back(ident, record, report_line(memory, record))
        };
        let p = state::prepare(
            self.repo,
            &tips,
            &StampInput {
                host: self.host,
                now: self.cx.clock.now(),
                id_field: self.opts.id_field,
                records: Some(&memory.records),
                base,
                allow_mass_delete: self.opts.allow_mass_delete,
                forget: &forget,
                held_back: &held_back,
                own_only,
            },
            warned,
            report,
        )?;
        let took = began.elapsed();
        if took.as_secs_f64() > crate::SLOW_MERGE_SECS {
            report.warn(format!(
                "the merge took {:.1} s, over the alert threshold of {} s",
                took.as_secs_f64(),
                crate::SLOW_MERGE_SECS
            ));
        }
        Ok(p)
    }

    /// Whether a new or changed version holds a secret and is held back.
    fn held_back(&self, ident: &str, record: &Record, line: usize) -> bool {
        if self.opts.allow_secrets.iter().any(|a| a == ident) {
            return false;
        }
        let scanner = self.scanner.get_or_init(crate::core::secrets::Scanner::new);
        let findings = scanner.scan(&record.body);
        if findings.is_empty() {
            return false;
        }
        let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        let message = format!(
            "{}:{line}: entry {ident:?} holds what looks like a secret ({}): held back, not backed up; \
             remove it from the memory, or let it through with --allow-secret {ident:?}",
            self.opts.memory.display(),
            rules.join(", ")
        );
        self.held
            .borrow_mut()
            .insert(ident.to_string(), (rules.join(","), message));
        true
    }

    fn author(&self) -> Author {
        Author {
            name: self
                .repo
                .config_string("user.name")
                .unwrap_or_else(|| "memory-backup".to_string()),
            email: self
                .repo
                .config_string("user.email")
                .unwrap_or_else(|| format!("memory-backup@{}", self.host)),
            time: self.cx.clock.now().micros().div_euclid(1_000_000),
        }
    }

    fn message(&self, p: &Prepared) -> String {
        let s = &p.stamped;
        let verb = if self.opts.forget.is_some() {
            "forget on"
        } else {
            "backup from"
        };
        let unified = if p.partial {
            "parked".to_string()
        } else {
            format!("unified {} entries", p.unified)
        };
        format!(
            "{verb} {}: {} new, {} changed, {} deleted; {unified}",
            self.host, s.new, s.changed, s.deleted
        )
    }

    fn write_commit(&self, p: &Prepared) -> Result<CommitId> {
        self.repo
            .write_commit(&p.files, &p.parents, &self.author(), &self.message(p))
            .map_err(|e| self.write_error(e))
    }

    /// Writing objects fails for want of room or rights, never for the remote.
    fn write_error(&self, e: GitError) -> Error {
        let cause = match e.to_string() {
            m if m.trim_end().ends_with("no error") => {
                "cannot write the commit's objects (is the disk full?)".to_string()
            }
            m => format!("cannot write the commit's objects: {m}"),
        };
        match e {
            GitError::Damaged(_) => git_error(e, &self.cx.repo.display().to_string()),
            _ => Error::RepoWrite(format!("{}: write failed: {cause}", self.cx.repo.display())),
        }
    }

    /// Without a remote: the commit goes on the local branch.
    fn commit_locally(&self, p: &Prepared, report: &mut Report) -> Result<Option<CommitId>> {
        if p.unchanged {
            self.sync_worktree(None);
            return Ok(None);
        }
        let commit = self.keep_local(p, report)?;
        let why = if self.opts.no_push && self.repo.remote_url().is_some() {
            "not pushed (--no-push)"
        } else {
            "no remote set (add one with `memory-backup init --remote URL`)"
        };
        report.set("local_only", why);
        Ok(Some(commit))
    }

    /// A commit that is not on the remote goes on the local branch, so that the
    /// next run pushes it; if a concurrent run moved the branch meanwhile, a merge
    /// commit of both goes there instead. Returns what the branch holds.
    fn keep_local(&self, p: &Prepared, report: &mut Report) -> Result<CommitId> {
        let mut commit = if p.unchanged {
            p.parents[0]
        } else {
            self.write_commit(p)?
        };
        let g = |e: GitError| git_error(e, self.branch);
        for _ in 0..LOCAL_MOVES {
            let local = self.repo.local_tip(self.branch).map_err(g)?;
            if let Some(l) = local {
                if self.repo.contains(l, commit).map_err(g)? {
                    break;
                }
                if !self.repo.contains(commit, l).map_err(g)? {
                    // A concurrent run moved the branch: a merge of both goes there.
                    let tips = Tips {
                        base: Some(l),
                        local: Some(commit),
                        local_ahead: false,
                        parked: Vec::new(),
                    };
                    let mut warned = true;
                    let merged = state::prepare(
                        self.repo,
                        &tips,
                        &StampInput {
                            host: self.host,
                            now: self.cx.clock.now(),
                            id_field: self.opts.id_field,
                            records: None,
                            base: &Base::default(),
                            allow_mass_delete: true,
                            forget: &|_| false,
                            held_back: &|_, _| false,
                            own_only: false,
                        },
                        &mut warned,
                        report,
                    )?;
                    commit = self.write_commit(&merged)?;
                }
            }
            match self.repo.move_branch(self.branch, commit, local) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => continue,
                Err(e) => return Err(g(e)),
            }
        }
        self.sync_worktree(None);
        Ok(commit)
    }

    /// After a push: the local branch moves to the pushed commit unless a
    /// concurrent run already moved it past it; then the working tree follows.
    fn adopt(&self, pushed: CommitId, known: Option<(CommitId, &Prepared)>) {
        for _ in 0..LOCAL_MOVES {
            let local = match self.repo.local_tip(self.branch) {
                Ok(l) => l,
                Err(_) => break,
            };
            if local == Some(pushed) {
                break;
            }
            if let Some(l) = local {
                // Past it already, or holding a commit of a run that did not push:
                // that run's next backup merges it.
                if !self.repo.contains(pushed, l).unwrap_or(false) {
                    break;
                }
            }
            match self.repo.move_branch(self.branch, pushed, local) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => continue,
                Err(e) => {
                    tracing::warn!("the local branch {} was not moved: {e}", self.branch);
                    break;
                }
            }
        }
        self.repo.set_tracking(self.branch, pushed);
        self.sync_worktree(known.map(|(c, p)| (c, &p.files)));
    }

    fn sync_worktree(&self, known: Option<(CommitId, &crate::git::Files)>) {
        let synced = self.repo.sync_worktree(self.branch, is_backup_file, known);
        if let Err(e) = &synced {
            tracing::warn!("the working tree was not updated: {e}");
        }
        self.worktree_failed.set(synced.is_err());
    }

    /// Records what the memory file holds now, unless another run recorded a
    /// newer read meanwhile.
    fn save_base(&self, p: &Prepared, memory: &MemoryRead, report: &mut Report) {
        let latest = local_state::load_snapshot(self.repo.git_dir(), self.host);
        if is_newer(latest.as_ref(), memory) {
            return;
        }
        // The same read and the same base as recorded: nothing to write.
        let read = Some(&memory.snapshot);
        if latest.as_ref() == read
            && self.base_at_start.snapshot.as_ref() == read
            && p.stamped.base.held == self.base_at_start.held
        {
            return;
        }
        let mut base = p.stamped.base.clone();
        base.snapshot = Some(memory.snapshot.clone());
        if let Some(forget) = self.opts.forget {
            // The memory still holds what was forgotten until `sync` removes it:
            // until then, holding it is no change (and no new version).
            for l in &memory.records {
                let ident = l.record.ident(self.opts.id_field);
                if let (true, Some(gone)) = (forget(&ident), base.held.get_mut(&ident)) {
                    gone.body = Some(l.record.body.clone());
                    gone.dots.clear();
                }
            }
        }
        if let Err(e) =
            local_state::save_base(self.repo.git_dir(), self.host, &base, self.opts.id_field)
        {
            report.warn(format!(
                "{}: the record of what the memory file holds was not written: {e}",
                self.repo.git_dir().display()
            ));
        }
    }

    /// Packs the loose objects once they are many (a failure is a warning: the
    /// backup is done), while time is left.
    fn repack(&self, report: &mut Report) {
        if Instant::now() >= self.deadline {
            return;
        }
        match crate::git::repack::repack_if_many(self.repo.raw()) {
            Ok(Some(packed)) => {
                for problem in packed.problems {
                    report.warn(problem);
                }
                report.set("packed_objects", packed.objects);
            }
            Ok(None) => {}
            Err(e) => report.warn(format!(
                "{}: loose objects not packed: {}",
                self.cx.repo.display(),
                e.message()
            )),
        }
    }
}

/// Ends the process with 75 if it is still running [`STUCK_AFTER`] past the
/// first run's `deadline`: `--max-elapsed` bounds the whole run, and a run
/// killed at any instant leaves the repository usable (section 8).
fn watch(deadline: Instant, repo: &Path) {
    static ARMED: std::sync::Once = std::sync::Once::new();
    ARMED.call_once(|| {
        let repo = repo.display().to_string();
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()) + STUCK_AFTER);
            tracing::error!(
                "{repo}: the run did not end within --max-elapsed and {} s more: stopped, \
                 nothing lost; if every run stops so, an object of the repository may be \
                 damaged: check it with `git -C {repo} fsck`",
                STUCK_AFTER.as_secs()
            );
            std::process::exit(crate::error::exit::NOT_PUSHED);
        });
    });
}

/// A remote-tracking ref whose commit lacks some of its files (left by a version
/// that took a tip without checking it) goes: git would take the commit for
/// present and never fetch its files again. A local branch in that state is
/// damage: its commits may be nowhere else.
fn heal(repo: &Repo, branch: &str) -> Result<()> {
    repo.drop_incomplete_tracking_refs();
    if let Some(tip) = repo.local_tip(branch).map_err(|e| git_error(e, branch))?
        && !repo.is_complete(tip)
    {
        return Err(git_error(
            GitError::Damaged(format!(
                "the commit {} of branch {branch} cannot be read whole",
                tip.short()
            )),
            branch,
        ));
    }
    Ok(())
}

/// The ref where `host` parks a commit that the branch refused.
pub fn parked_ref(host: &str) -> String {
    format!("{}{host}", transport::PARKED_PREFIX)
}

/// The line of the memory file a record starts on.
fn report_line(memory: &MemoryRead, record: &Record) -> usize {
    memory
        .records
        .iter()
        .find(|l| std::ptr::eq(&l.record, record))
        .map_or(0, |l| l.line)
}

/// Whether `recorded` is a newer read of the memory file than `memory`.
fn is_newer(recorded: Option<&crate::core::base::Snapshot>, memory: &MemoryRead) -> bool {
    recorded.is_some_and(|s| {
        s.modified_ns > memory.snapshot.modified_ns
            || (s.modified_ns == memory.snapshot.modified_ns
                && s.hash != memory.snapshot.hash
                && s.size != memory.snapshot.size)
    })
}

/// Maps a git failure to the exit codes of section 9.
pub fn git_error(e: GitError, remote: &str) -> Error {
    let remote = url::redact(remote);
    match e {
        GitError::Auth(cause) => Error::Auth { remote, cause },
        GitError::NotFound(m) => Error::Config(format!("{remote}: repository not found: {m}")),
        GitError::Untrusted(m) | GitError::Config(m) => Error::Config(format!("{remote}: {m}")),
        GitError::Rejected(m) | GitError::Refused(m) | GitError::Transient(m) => {
            Error::NotPushed { remote, cause: m }
        }
        GitError::LocalWrite(m) => Error::RepoWrite(format!("git: {m}")),
        GitError::Damaged(m) => Error::Other(format!(
            "git: {m}: the backup repository is damaged (an object cannot be read: a file \
             left empty by a power cut, or a disk fault); what was pushed is safe on the remote, \
             if one is set: move the repository away and run `memory-backup init` (with \
             `--remote URL`, to clone it again); commits never pushed are only in the moved \
             copy, whose working tree still holds their files"
        )),
        GitError::Other(m) => Error::Other(format!("git: {m}")),
    }
}
