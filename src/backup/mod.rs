//! One run of the pipeline (section 8): read the memory file, fetch, make the
//! state on the remote tip ([`state`]), commit, push as a compare-and-swap, and
//! on a refusal back off ([`retry`]), fetch and make it again. No lock anywhere:
//! every step writes only new objects or moves one ref with a compare-and-swap.
//! `backup`, `sync` and `forget` run it; each step is a function of its own.

pub mod retry;
pub mod state;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::core::base::Base;
use crate::core::record::Record;
use crate::error::{Error, Result};
use crate::git::transport::{self, Fetched, Transport};
use crate::git::{Author, CommitId, Files, GitError, Repo, url};
use crate::output::Report;
use crate::store::files::{host_file_name, is_backup_file};
use crate::store::memory_file::{self, MemoryRead};
use crate::store::state as local_state;
use retry::Retry;
pub use state::Prepared;
use state::{StampInput, Tips};

/// A push that needed more attempts than this gets a warning.
pub const MANY_ATTEMPTS: u32 = 3;
/// A server that refuses every push for a reason of its own (a branch lock a
/// killed git left, a hook) while the branch stays where it is: given this long
/// and this many refusals, then the next run tries again.
pub const REFUSED_PATIENCE: Duration = Duration::from_secs(10);
pub const REFUSED_ATTEMPTS: u32 = 3;
/// Refusals on the branch (others landed first) after which a run parks its
/// commit on its own ref instead (section 8, Contention): chosen with
/// `scripts/contention-model`, see docs/perf.
pub const PARK_AFTER: u32 = 1;
/// Attempts at moving the local branch while concurrent runs move it too.
const LOCAL_MOVES: usize = 8;
/// How many times a run reads the memory file again when another run of this
/// host stamped a newer read of it first.
const STALE_READS: usize = 3;

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
}

/// Runs the pipeline.
pub fn run(opts: &Options<'_>, cx: &Context, report: &mut Report) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = started + opts.max_elapsed;
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
}

type Attempts = (
    Prepared,
    MemoryRead,
    Option<CommitId>,
    bool,
    u32,
    Option<Error>,
);

/// Whether a failure is the run's own time limit, not the remote's doing.
fn is_deadline(message: &str) -> bool {
    message.contains("the run's time limit")
}

/// Why a run gave up: its last failure, and when that was its own deadline,
/// the failure before it that was not.
fn gave_up(last: &str, cause: Option<&str>, attempts: u32) -> String {
    let before = match cause {
        Some(c) if is_deadline(last) && !is_deadline(c) => format!("; before that: {c}"),
        _ => String::new(),
    };
    let noun = if attempts == 1 { "attempt" } else { "attempts" };
    format!("{last}{before} (gave up after {attempts} push {noun})")
}

/// Keeps `e` as the cause a run that ends at its deadline reports.
fn note_cause(cause: &mut Option<String>, e: &GitError) {
    let text = e.to_string();
    if !is_deadline(&text) {
        *cause = Some(text);
    }
}

/// How the pushes of one run have been refused so far.
#[derive(Default)]
struct Refusals {
    /// Pushes to the branch refused because it moved: others landed first.
    rejections: u32,
    /// Since when, on which remote tip and how many times in a row the server
    /// refused every push for a reason of its own.
    refused: Option<(Instant, Option<CommitId>, u32)>,
}

/// What follows a retryable refusal.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    AtOnce,
    AfterPause,
    GiveUp,
}

impl Refusals {
    /// The next push goes to the host's own ref.
    fn park(&self) -> bool {
        self.rejections >= PARK_AFTER
    }

    /// Counts a retryable refusal of a push made on the remote tip `tip`
    /// (`parked`: to the host's own ref) and says what follows.
    fn record(&mut self, e: &GitError, tip: Option<CommitId>, parked: bool) -> Next {
        if matches!(e, GitError::Rejected(_)) && !parked {
            self.rejections += 1;
        }
        self.refused = match (e, self.refused) {
            (GitError::Refused(_), Some((since, t, n))) if t == tip => Some((since, t, n + 1)),
            (GitError::Refused(_), _) => Some((Instant::now(), tip, 1)),
            _ => None,
        };
        let patient = self
            .refused
            .is_none_or(|(since, _, n)| n < REFUSED_ATTEMPTS || since.elapsed() < REFUSED_PATIENCE);
        if !patient {
            Next::GiveUp
        } else if self.park() && !parked && self.refused.is_none() {
            // The second attempt comes at once: parking needs no pause.
            Next::AtOnce
        } else {
            Next::AfterPause
        }
    }
}

impl Run<'_> {
    /// Fetch, make the state, push; again on a refusal, until it lands, parks, or
    /// the deadline passes.
    fn attempts(
        &self,
        mut memory: MemoryRead,
        mut base: Base,
        report: &mut Report,
    ) -> Result<Attempts> {
        let mut retry = Retry::new(self.deadline);
        let mut attempts: u32 = 0;
        let mut refusals = Refusals::default();
        let mut warned = false;
        let mut stale_reads = 0;
        // The last failure that was not the deadline itself: what a run that ends
        // at its time limit says was wrong.
        let mut cause: Option<String> = None;
        // A state refused on the branch, to park at once without making it again.
        let mut carried: Option<(Prepared, Fetched)> = None;
        loop {
            let (p, fetched) = match carried.take() {
                Some(c) => c,
                None => {
                    let fetched = match self.remote {
                        None => None,
                        Some(url) => match self.fetch(url) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                tracing::info!("fetch from {}: {e}", self.shown);
                                if e.is_retryable() && self.pause(&mut retry, attempts) {
                                    note_cause(&mut cause, &e);
                                    continue;
                                }
                                let e = self.unfetched(e, url, attempts, cause.as_deref())?;
                                // Never reached: commit on what this repository knows (the
                                // local tip, and the remote's as last fetched) for the next run.
                                let known = self.last_fetched();
                                let p = self.prepare(
                                    Some(&known),
                                    &memory,
                                    &base,
                                    &mut warned,
                                    report,
                                )?;
                                return self.kept(p, memory, attempts, e, report);
                            }
                        },
                    };
                    // Another run of this host stamped a newer read of the memory file:
                    // this one's is stale and never replaces it.
                    let (latest, _) = local_state::load_base(self.repo.git_dir(), self.host);
                    if stale_reads < STALE_READS && is_newer(latest.snapshot.as_ref(), &memory) {
                        stale_reads += 1;
                        memory = memory_file::read(self.opts.memory, true)?;
                        base = latest;
                        continue;
                    }
                    let p = self.prepare(fetched.as_ref(), &memory, &base, &mut warned, report)?;
                    if self.opts.dry_run {
                        return Ok((p, memory, None, false, attempts, None));
                    }
                    let (Some(_), Some(fetched)) = (self.remote, fetched) else {
                        let commit = self.commit_locally(&p, report)?;
                        self.save_base(&p, &memory, report);
                        return Ok((p, memory, commit, false, attempts, None));
                    };
                    if p.unchanged && p.parents.first() == fetched.tip.as_ref() {
                        let tip = fetched.tip.expect("compared");
                        self.landed(tip, &p, &memory, report);
                        return Ok((p, memory, None, true, attempts, None));
                    }
                    (p, fetched)
                }
            };
            let url = self.remote.expect("a state to push has a remote");
            // Refused on the branch because others landed first: this host's own
            // file waits on its own ref instead, where no other host pushes.
            let park = refusals.park();
            let (refname, expected, target) = if park {
                let own = fetched.parked.iter().find(|(h, _)| h == self.host);
                let own = own.map(|(_, c)| *c);
                (
                    parked_ref(self.host),
                    own,
                    self.write_parked(&p, &fetched, own)?,
                )
            } else if p.unchanged {
                (self.branch_ref(), fetched.tip, p.parents[0])
            } else {
                (self.branch_ref(), fetched.tip, self.write_commit(&p)?)
            };
            attempts += 1;
            let pushed = transport::push(
                &self.transport,
                self.repo,
                url,
                &refname,
                target,
                expected,
                self.deadline,
            );
            match pushed {
                Ok(()) => {
                    tracing::info!(
                        "push attempt {attempts} to {} {refname}: {} pushed",
                        self.shown,
                        target.short()
                    );
                    self.landed(target, &p, &memory, report);
                    if park {
                        report.set("parked", refname.trim_start_matches("refs/heads/"));
                    }
                    if attempts > MANY_ATTEMPTS {
                        report.warn(format!(
                            "the push to {} needed {attempts} attempts, over the alert threshold of {MANY_ATTEMPTS}",
                            self.shown
                        ));
                    }
                    return Ok((p, memory, Some(target), true, attempts, None));
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!("push attempt {attempts} to {} {refname}: {e}", self.shown);
                    let next = refusals.record(&e, fetched.tip, park);
                    note_cause(&mut cause, &e);
                    if next == Next::AtOnce {
                        carried = Some((p, fetched));
                        continue;
                    }
                    if next == Next::AfterPause && self.pause(&mut retry, attempts) {
                        continue;
                    }
                    let e = self.not_pushed(e, attempts, cause.as_deref());
                    return self.kept(p, memory, attempts, e, report);
                }
                Err(e) => {
                    tracing::info!("push attempt {attempts} to {} {refname}: {e}", self.shown);
                    let e = git_error(e, url);
                    return self.kept(p, memory, attempts, e, report);
                }
            }
        }
    }

    fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// The error of a fetch that failed for good: a failure no retry can mend (a
    /// full disk, a refused key, a path that is no repository) before any commit
    /// was made stops the run before it writes (`Err`); any other is the run's
    /// outcome once its state is kept here.
    fn unfetched(
        &self,
        e: GitError,
        url: &str,
        attempts: u32,
        cause: Option<&str>,
    ) -> Result<Error> {
        if e.is_retryable() {
            Ok(self.not_pushed(e, attempts, cause))
        } else if attempts == 0 {
            Err(git_error(e, url))
        } else {
            Ok(git_error(e, url))
        }
    }

    /// The commit a run parks (section 8, Contention): the fetched branch tip's
    /// files with this host's own file as `p` made it, on that tip and on the
    /// host's parked commit `own` that the tip does not hold, so that the push
    /// is a fast-forward of the host's ref. It changes nothing but the host's
    /// own file: a run that takes it in reads that file alone (see `state`).
    fn write_parked(
        &self,
        p: &Prepared,
        fetched: &Fetched,
        own: Option<CommitId>,
    ) -> Result<CommitId> {
        let g = |e: GitError| git_error(e, "the backup repository");
        let name = host_file_name(self.host);
        let mut files = Files::new();
        if let Some(bytes) = p.files.get(&name) {
            files.insert(name, bytes.clone());
        }
        let mut parents: Vec<CommitId> = fetched.tip.into_iter().collect();
        if let Some(o) = own {
            let held = match fetched.tip {
                Some(t) => self.repo.contains(t, o).map_err(g)?,
                None => false,
            };
            if !held {
                parents.push(o);
            }
        }
        self.repo
            .write_commit(&files, &parents, &self.author(), &self.message(p))
            .map_err(g)
    }

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

    fn not_pushed(&self, e: GitError, attempts: u32, cause: Option<&str>) -> Error {
        Error::NotPushed {
            remote: self.shown.clone(),
            cause: gave_up(&e.to_string(), cause, attempts),
        }
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
        let began = Instant::now();
        let local = self
            .repo
            .local_tip(self.branch)
            .map_err(|e| git_error(e, self.branch))?;
        let (remote_tip, parked) = match fetched {
            Some(f) => (f.tip, f.parked.clone()),
            None => (None, Vec::new()),
        };
        let tips = Tips::of(self.repo, local, remote_tip, &parked)?;
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
        format!(
            "{verb} {}: {} new, {} changed, {} deleted; unified {} entries",
            self.host, s.new, s.changed, s.deleted, p.unified
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
        if let Err(e) = self.repo.sync_worktree(self.branch, is_backup_file, known) {
            tracing::warn!("the working tree was not updated: {e}");
        }
    }

    /// Records what the memory file holds now, unless another run recorded a
    /// newer read meanwhile.
    fn save_base(&self, p: &Prepared, memory: &MemoryRead, report: &mut Report) {
        let (latest, _) = local_state::load_base(self.repo.git_dir(), self.host);
        if is_newer(latest.snapshot.as_ref(), memory) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_ends_at_its_deadline_names_the_failure_before_it() {
        let deadline = "git fetch: stopped at the run's time limit (--max-elapsed)";
        let refused = "git://h/r: cannot connect: Connection refused";
        assert_eq!(
            gave_up(deadline, Some(refused), 3),
            format!("{deadline}; before that: {refused} (gave up after 3 push attempts)")
        );
        assert_eq!(
            gave_up(refused, Some("an earlier one"), 1),
            format!("{refused} (gave up after 1 push attempt)")
        );
        assert_eq!(
            gave_up(deadline, None, 0),
            format!("{deadline} (gave up after 0 push attempts)")
        );
    }
}
