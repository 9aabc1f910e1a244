//! `backup`: stamp the memory file, merge every host's file with the remote's,
//! commit on the remote tip and push; a rejected push backs off, fetches and
//! redoes the merge on the new tip. No lock anywhere: every step either writes
//! only new objects or moves one ref with a compare-and-swap.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::cli::BackupArgs;
use crate::commands::stamp::{read_memory, report_notices};
use crate::crdt;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::files::{self, UNIFIED_FILE};
use crate::git::{self, Author, CommitId, Files, GitError, Repo, Staged};
use crate::memory::Located;
use crate::pack::Known;
use crate::report::Report;
use crate::stamp;
use crate::{Context, commands::merge::warn_if_slow};

/// How far back a damaged unified file is looked for in history.
const HISTORY_DEPTH: usize = 1000;

/// First backoff delay, its growth and its cap (before full jitter).
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_FACTOR: f32 = 2.0;
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A push that needed more attempts than this gets a warning.
pub const MANY_ATTEMPTS: u32 = 3;
/// Attempts at moving the local branch when concurrent runs move it too.
const LOCAL_MOVES: usize = 8;

pub fn cmd_backup(args: &BackupArgs, cx: &Context, report: &mut Report) -> Result<()> {
    let started = Instant::now();
    let max_elapsed = Duration::try_from_secs_f64(args.max_elapsed).map_err(|_| {
        Error::Usage(format!(
            "--max-elapsed {}: not a duration",
            args.max_elapsed
        ))
    })?;
    let host = cx.host()?;
    let memory_path = crate::memory_path(args.memory.as_deref());
    if args.no_push || !git::may_need_tls(&cx.repo, None) {
        // SAFETY: commands run on the main thread, and no other thread has been
        // started yet.
        unsafe { git::skip_tls_setup() };
    }
    let deadline = started + max_elapsed;
    // An existing repository connects to its remote and lists its refs on a
    // thread of its own while the memory file is read here; the fetch downloads
    // only when told that the memory file was read whole. Bad input returns at
    // once: the fetch, left to end by itself, writes nothing.
    let (go, gate) = mpsc::sync_channel::<bool>(1);
    let fetching = (!args.no_push).then(|| {
        let dir = cx.repo.clone();
        std::thread::spawn(move || early_fetch(&dir, deadline, move || gate.recv() == Ok(true)))
    });
    let mut warnings = Report::default();
    let memory = read_memory(&memory_path, &mut warnings).map(|m| (m, warnings.warnings));
    let _ = go.send(memory.is_ok());
    let (memory, warnings) = memory?;
    report.warnings.extend(warnings);
    tracing::debug!("memory read at {:?}", started.elapsed());
    let early = fetching.and_then(|f| f.join().ok().flatten());
    let (repo, early) = match early {
        Some((repo, fetched)) => (repo, Some(fetched)),
        None => {
            let shown = cx.repo.display().to_string();
            let repo = match Repo::open(&cx.repo).map_err(|e| git_error(e, &shown))? {
                Some(r) => r,
                None => {
                    Repo::init(&cx.repo, git::DEFAULT_BRANCH).map_err(|e| git_error(e, &shown))?
                }
            };
            (repo, None)
        }
    };
    let remote = if args.no_push {
        None
    } else {
        repo.remote_url()
    };
    let run = Run {
        repo: &repo,
        branch: repo.branch().map_err(|e| Error::Config(e.to_string()))?,
        shown: remote.as_deref().map(git::redact).unwrap_or_default(),
        remote,
        host: &host,
        records: &memory.records,
        memory_path: &memory_path,
        id_field: &args.id.id_field,
        cx,
        deadline,
        started,
        merging: Cell::new(Duration::ZERO),
        early: Cell::new(early),
    };
    let result = run.run(report);
    // A run that stopped on the way may have written the files of a commit it
    // did not land (see `push_and_prewrite`): the working tree shows the local
    // branch again. A commit kept for the next run (75) was synced when kept.
    if matches!(&result, Err(e) if !matches!(e, Error::NotPushed { .. })) {
        run.sync_worktree(None);
    }
    // The merge alone: the whole run also waits on the network and backs off.
    warn_if_slow(run.merging.get(), report);
    // Not past `--max-elapsed`: a fold takes seconds, and the next run folds.
    if matches!(&result, Ok(()) | Err(Error::NotPushed { .. })) && Instant::now() < deadline {
        run.fold_loose(report);
    }
    result
}

struct Run<'a> {
    repo: &'a Repo,
    branch: String,
    remote: Option<String>,
    /// The remote as messages and logs show it: no password.
    shown: String,
    host: &'a str,
    records: &'a [Located],
    memory_path: &'a Path,
    id_field: &'a str,
    cx: &'a Context,
    deadline: Instant,
    started: Instant,
    /// Time spent in step 3, the merge, over all attempts.
    merging: Cell<Duration>,
    /// The result of a first fetch made while the memory file was read.
    early: Cell<Option<FetchResult>>,
}

type FetchResult = std::result::Result<Option<CommitId>, GitError>;

/// Opens the repository and fetches from its remote, when both exist, writing
/// nothing unless `proceed` says so; the repository and the fetch's result. Any
/// failure is left for the run to meet again in its usual order.
fn early_fetch(
    dir: &Path,
    deadline: Instant,
    proceed: impl FnOnce() -> bool,
) -> Option<(Repo, FetchResult)> {
    let repo = Repo::open(dir).ok().flatten()?;
    let url = repo.remote_url()?;
    let branch = repo.branch().ok()?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let fetched = repo.fetch_if(&url, &branch, remaining, proceed)?;
    Some((repo, fetched))
}

/// The state to commit, computed on a remote tip and a local tip.
struct Prepared {
    files: Files,
    /// The files of the first parent, as read.
    base_files: Files,
    parents: Vec<CommitId>,
    /// The first parent already holds exactly these files and there is no second.
    unchanged: bool,
    new: usize,
    changed: usize,
    unified: usize,
    host_files: usize,
}

impl Run<'_> {
    fn run(&self, report: &mut Report) -> Result<()> {
        let url = self.remote.clone();
        let shown = &self.shown;
        report.set("host", self.host);
        report.set("branch", self.branch.clone());
        report.set("remote", url.as_ref().map(|_| shown.clone()));
        report.set("attempts", 0);
        let mut retry = Retry::new(self.deadline);
        let mut attempts: u32 = 0;
        let mut noticed = false;
        let mut seen_tip = self.repo.noted_remote_tip(&self.branch);
        // Since when, on which remote tip and how many times in a row, the
        // server itself has refused every push: a tip that moves means that
        // pushes land, and the lock was a running push's.
        let mut refused: Option<(Instant, Option<CommitId>, u32)> = None;
        let result: std::result::Result<(), (Prepared, CommitId, GitError)> = loop {
            let local = self.local_tip()?;
            let fetched = |url: &str| match self.early.take() {
                Some(early) => early,
                None => self.repo.fetch(url, &self.branch, retry.remaining()),
            };
            let remote_tip = match &url {
                None => None,
                Some(url) => match fetched(url) {
                    Ok(tip) => tip,
                    Err(e) if e.is_retryable() => {
                        tracing::info!("fetch from {shown} failed: {e}");
                        if retry.wait() {
                            continue;
                        }
                        // Never reached: commit on the local tip for the next run.
                        let p = self.prepare(local, None, &mut noticed, report)?;
                        let commit = self.keep_local(&p, local, report)?;
                        break Err((p, commit, e));
                    }
                    Err(e) => return Err(git_error(e, url)),
                },
            };
            tracing::debug!("fetched at {:?}", self.started.elapsed());
            if let Some(tip) = remote_tip.filter(|&t| Some(t) != seen_tip) {
                // The next fetch, of this run or another, tells the server it has
                // this tip, and gets only what came after.
                self.repo.note_remote_tip(&self.branch, tip);
                seen_tip = Some(tip);
            }
            let p = self.prepare(local, remote_tip, &mut noticed, report)?;
            tracing::debug!("merged at {:?}", self.started.elapsed());
            let staged = match (p.unchanged, p.parents.first()) {
                (true, Some(_)) => None,
                _ => Some(self.stage(&p)?),
            };
            let target = staged.as_ref().map_or_else(|| p.parents[0], |s| s.id);
            // A commit on the remote tip alone, for a `git://` remote, is written
            // here while the push sends it; any other before anything else.
            let deferred = staged.as_ref().filter(|_| {
                url.as_deref().is_some_and(Repo::pushes_staged)
                    && remote_tip.is_some_and(|t| p.parents == [t])
            });
            if let (Some(s), None) = (&staged, deferred) {
                self.repo.write_staged(s).map_err(|e| self.write_error(e))?;
            }
            tracing::debug!("committed at {:?}", self.started.elapsed());
            let Some(url) = &url else {
                if local == Some(target) {
                    self.sync_worktree(None);
                    self.finish(&p, None, report, "nothing changed");
                    return Ok(());
                }
                match self.repo.move_branch(&self.branch, target, local) {
                    Ok(()) => {
                        self.sync_worktree(Some((target, &p.files)));
                        let how = format!(
                            "committed {} locally; {}",
                            target.short(),
                            if self.remote.is_none() && self.repo.remote_url().is_none() {
                                "no remote set (add one with `memory-backup init --remote URL`)"
                            } else {
                                "not pushed (--no-push)"
                            }
                        );
                        self.finish(&p, Some(target), report, &how);
                        return Ok(());
                    }
                    // A concurrent run moved the branch: redo on its tip.
                    Err(e) if e.is_retryable() => {
                        if retry.wait() {
                            continue;
                        }
                        return Err(Error::Other(format!("the local branch kept moving: {e}")));
                    }
                    Err(e) => return Err(git_error(e, &self.branch)),
                }
            };
            if remote_tip == Some(target) {
                self.adopt(target, local, &p.files);
                report.set("attempts", attempts);
                self.finish(&p, None, report, "nothing changed");
                return Ok(());
            }
            attempts += 1;
            let (pushed, written) =
                self.push_and_prewrite(url, target, remote_tip, &p, deferred, retry.remaining());
            if let Err(e) = written {
                // The local branch cannot show a commit that is not here.
                if pushed.is_ok() {
                    report.warn(format!(
                        "pushed {} to {shown}, but could not keep it here",
                        target.short()
                    ));
                }
                return Err(self.write_error(e));
            }
            match pushed {
                Ok(()) => {
                    tracing::info!(
                        "push attempt {attempts} to {shown}: {} pushed",
                        target.short()
                    );
                    tracing::debug!("pushed at {:?}", self.started.elapsed());
                    self.adopt(target, local, &p.files);
                    tracing::debug!("working tree at {:?}", self.started.elapsed());
                    report.set("attempts", attempts);
                    if attempts > MANY_ATTEMPTS {
                        report.warn(format!(
                            "the push to {shown} needed {attempts} attempts, over the alert threshold of {MANY_ATTEMPTS}"
                        ));
                    }
                    let how = format!("pushed {} to {shown}", target.short());
                    self.finish(&p, Some(target), report, &how);
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!("push attempt {attempts} to {shown}: {e}");
                    refused = match (&e, refused) {
                        (GitError::Refused(_), Some((since, tip, n))) if tip == remote_tip => {
                            Some((since, tip, n + 1))
                        }
                        (GitError::Refused(_), _) => Some((Instant::now(), remote_tip, 1)),
                        _ => None,
                    };
                    // Retrying cannot help a server that refuses every push on
                    // one tip for git::REFUSED_PATIENCE: the next run tries again.
                    let patient = refused.is_none_or(|(since, _, n)| {
                        n < git::REFUSED_ATTEMPTS || since.elapsed() < git::REFUSED_PATIENCE
                    });
                    if patient && retry.wait() {
                        continue;
                    }
                    let commit = self.keep_local(&p, local, report)?;
                    break Err((p, commit, e));
                }
                Err(e) => {
                    tracing::info!("push attempt {attempts} to {shown}: {e}");
                    report.set("attempts", attempts);
                    if local != Some(target) {
                        let _ = self.keep_local(&p, local, report);
                    }
                    return Err(git_error(e, url));
                }
            }
        };
        report.set("attempts", attempts);
        let (p, commit, cause) = result.expect_err("the loop only breaks when not pushed");
        let remote = shown.clone();
        let how = format!("committed {} locally, not pushed", commit.short());
        self.finish(&p, Some(commit), report, &how);
        report.set("pushed", false);
        Err(Error::NotPushed {
            remote,
            cause: format!("{cause} (gave up after {attempts} push attempt(s))"),
        })
    }

    /// Pushes `target` and, while the server takes it, writes its files into
    /// the working tree: the files a landed push shows there (what a run shows
    /// on the way does not matter; [`Run::sync_worktree`] has the last word).
    /// A `deferred` commit is pushed from memory while its objects are written
    /// here, before those files. The push's result, and the writing's.
    fn push_and_prewrite(
        &self,
        url: &str,
        target: CommitId,
        remote_tip: Option<CommitId>,
        p: &Prepared,
        deferred: Option<&Staged<'_>>,
        timeout: Duration,
    ) -> (
        std::result::Result<(), GitError>,
        std::result::Result<(), GitError>,
    ) {
        let known = Known {
            new: Some(&p.files),
            old: remote_tip.map(|_| &p.base_files),
        };
        let push = || match deferred {
            Some(staged) => {
                self.repo
                    .push_staged(url, &self.branch, staged, remote_tip, known, timeout)
            }
            None => self
                .repo
                .push(url, &self.branch, target, remote_tip, known, timeout),
        };
        let dir = self.repo.workdir().map(Path::to_path_buf);
        if dir.is_none() && deferred.is_none() {
            return (push(), Ok(()));
        }
        let writer = match deferred.map(|s| self.repo.staged_writer(s)).transpose() {
            Ok(w) => w,
            Err(e) => {
                let not = GitError::Other(format!("not pushed: {e}"));
                return (Err(not), Err(e));
            }
        };
        std::thread::scope(|s| {
            let files = &p.files;
            let writing = s.spawn(move || {
                if let Some(writer) = writer {
                    writer.write()?;
                }
                if let Some(dir) = dir {
                    if let Err(e) = git::write_files(&dir, files) {
                        tracing::debug!("the working tree was not written ahead: {e}");
                    }
                }
                Ok(())
            });
            let pushed = push();
            let written = writing.join().unwrap_or_else(|_| {
                Err(GitError::Other(
                    "the thread writing the commit panicked".to_string(),
                ))
            });
            (pushed, written)
        })
    }

    fn local_tip(&self) -> Result<Option<CommitId>> {
        self.repo
            .local_tip(&self.branch)
            .map_err(|e| git_error(e, &self.branch))
    }

    /// Step 3 of the pipeline: the state on `remote` (the first parent) and
    /// `local` (a second parent when it holds commits the remote lacks).
    fn prepare(
        &self,
        local: Option<CommitId>,
        remote: Option<CommitId>,
        noticed: &mut bool,
        report: &mut Report,
    ) -> Result<Prepared> {
        let began = Instant::now();
        let prepared = self.merge_state(local, remote, noticed, report);
        self.merging.set(self.merging.get() + began.elapsed());
        prepared
    }

    fn merge_state(
        &self,
        local: Option<CommitId>,
        remote: Option<CommitId>,
        noticed: &mut bool,
        report: &mut Report,
    ) -> Result<Prepared> {
        let repo = self.repo;
        let g = |e: GitError| git_error(e, &self.branch);
        let base = remote.or(local);
        let other = match (local, base) {
            (Some(l), Some(b)) if !repo.contains(b, l).map_err(g)? => Some(l),
            _ => None,
        };
        // Local ahead of the remote: its copies are the newer ones.
        let other_ahead = match (other, base) {
            (Some(o), Some(b)) => repo.contains(o, b).map_err(g)?,
            _ => false,
        };
        let keep = is_backup_file;
        let base_files = match base {
            Some(b) => repo.read_files(b, keep).map_err(g)?,
            None => Files::new(),
        };
        let other_files = match other {
            Some(o) => repo.read_files(o, keep).map_err(g)?,
            None => Files::new(),
        };
        tracing::debug!("read trees at {:?}", self.started.elapsed());
        let base_label = if remote.is_some() {
            format!("the remote {}", self.shown)
        } else {
            "the local branch".to_string()
        };
        let sides = [
            (base_label.as_str(), &base_files),
            ("the local branch", &other_files),
        ];

        // Every copy that parses, by file name.
        let mut parsed: BTreeMap<&str, Vec<Vec<Entry>>> = BTreeMap::new();
        let mut unified_copies: Vec<Entry> = Vec::new();
        let names: std::collections::BTreeSet<&str> = base_files
            .keys()
            .chain(other_files.keys())
            .map(String::as_str)
            .collect();
        let mut jobs: Vec<(&str, &str, &[u8])> = Vec::new();
        for name in names {
            let mut copies: Vec<(&str, &[u8])> = Vec::new();
            for (label, files) in sides {
                if let Some(b) = files.get(name) {
                    if !copies.iter().any(|(_, c)| *c == b.as_slice()) {
                        copies.push((label, b));
                    }
                }
            }
            if other_ahead && copies.len() == 2 && name != UNIFIED_FILE {
                copies.remove(0);
            }
            jobs.extend(
                copies
                    .into_iter()
                    .map(|(label, bytes)| (name, label, bytes)),
            );
        }
        let results = parse_all(&jobs);
        // Files with a copy that does not parse or holds entries without valid
        // metadata: never rewritten from what did parse, which would drop the rest.
        let mut damaged: std::collections::BTreeSet<&str> = Default::default();
        for ((name, _, _), result) in jobs.iter().zip(&results) {
            if result.as_ref().map_or(true, |s| !s.skipped.is_empty()) {
                damaged.insert(name);
            }
        }
        for ((name, label, _), result) in jobs.iter().zip(results) {
            match result {
                Ok(s) => {
                    if !*noticed {
                        for (line, cause) in &s.skipped {
                            report
                                .warn(format!("{name}:{line} in {label}: entry skipped: {cause}"));
                        }
                    }
                    if *name == UNIFIED_FILE {
                        unified_copies.extend(s.entries);
                    } else {
                        parsed.entry(name).or_default().push(s.entries);
                    }
                }
                Err(e) if !*noticed => report.warn(format!(
                    "{name}:{}:{} in {label}: {}; file skipped, its entries kept in {UNIFIED_FILE}",
                    e.line, e.column, e.cause
                )),
                Err(_) => {}
            }
        }
        tracing::debug!("parsed at {:?}", self.started.elapsed());
        if damaged.contains(UNIFIED_FILE) {
            // Entries that only unified still holds must not go with the damage:
            // take them from the newest earlier unified file that parses whole.
            for tip in base.into_iter().chain(other) {
                unified_copies.extend(self.unified_from_history(tip, report)?);
            }
        }
        let own = files::host_file_name(self.host);
        let previous = parsed
            .get(own.as_str())
            .map(|copies| crdt::merge_owned(copies.iter().flatten()))
            .unwrap_or_default();
        let stamped = stamp::stamp(
            self.records,
            &stamp::Context {
                host: self.host,
                now: self.cx.clock.now(),
                id_field: self.id_field,
                previous: &previous,
                // Every copy: stamping takes the newest of each unique_id.
                known: &unified_copies,
            },
        );
        tracing::debug!("stamped at {:?}", self.started.elapsed());
        if !*noticed {
            report_notices(self.memory_path, &stamped, report);
        }
        *noticed = true;

        let mut out = Files::new();
        let mut hosts: Vec<Vec<&Entry>> = Vec::new();
        for (name, copies) in &parsed {
            if *name != own {
                let merged = crdt::merge(copies.iter().flatten());
                // A damaged file stays as the remote has it, for its owner to mend
                // and `verify` to report; what parsed of it still goes into unified.
                if !damaged.contains(name) {
                    out.insert(name.to_string(), files::render(merged.iter().copied()));
                }
                hosts.push(merged);
            }
        }
        // This host's file is rendered while the unified file is merged and
        // rendered: two files of about the same size.
        let (own_text, unified) = std::thread::scope(|s| {
            let own_text = s.spawn(|| files::render(&stamped.entries));
            let unified = crdt::merge(
                hosts
                    .iter()
                    .flatten()
                    .copied()
                    .chain(&stamped.entries)
                    .chain(&unified_copies),
            );
            let text = files::render(unified.iter().copied());
            let own_text = own_text.join().expect("rendering does not panic");
            (own_text, (unified.len(), text))
        });
        out.insert(own.clone(), own_text);
        let (unified_len, unified_text) = unified;
        out.insert(UNIFIED_FILE.to_string(), unified_text);
        if let (Some(o), Some(b)) = (other, base) {
            // Files of the local side that are not backup files (added by hand)
            // and that the remote lacks go into the merge too.
            let theirs = repo.read_files(b, |_| true).map_err(g)?;
            for (name, bytes) in repo.read_files(o, |n| !is_backup_file(n)).map_err(g)? {
                if !theirs.contains_key(&name) {
                    out.insert(name, bytes);
                }
            }
        }
        let mut parents: Vec<CommitId> = base.into_iter().chain(other).collect();
        let mut unchanged = base.is_some()
            && other.is_none()
            && out.iter().all(|(k, v)| base_files.get(k) == Some(v));
        // The local tip, ahead of the remote, already holds this state (a commit
        // an earlier run could not push): it is pushed as it is, history stays linear.
        if other_ahead && out.iter().all(|(k, v)| other_files.get(k) == Some(v)) {
            parents = other.into_iter().collect();
            unchanged = true;
        }
        Ok(Prepared {
            host_files: hosts.len() + 1,
            unified: unified_len,
            files: out,
            parents,
            unchanged,
            new: stamped.new,
            changed: stamped.changed,
            // Last: what came before borrows from it.
            base_files,
        })
    }

    /// The entries of the newest unified file in `tip`'s first-parent history
    /// that parses whole (none within [`HISTORY_DEPTH`] commits: none).
    fn unified_from_history(&self, tip: CommitId, report: &mut Report) -> Result<Vec<Entry>> {
        let g = |e: GitError| git_error(e, &self.branch);
        let mut at = self.repo.first_parent(tip).map_err(g)?;
        for _ in 0..HISTORY_DEPTH {
            let Some(commit) = at else { break };
            let files = self
                .repo
                .read_files(commit, |n| n == UNIFIED_FILE)
                .map_err(g)?;
            if let Some(bytes) = files.get(UNIFIED_FILE) {
                if let Ok(s) = files::parse_stamped(bytes) {
                    if s.skipped.is_empty() {
                        report.warn(format!(
                            "{UNIFIED_FILE} is damaged; its entries are taken from commit {}",
                            commit.short()
                        ));
                        return Ok(s.entries);
                    }
                }
            }
            at = self.repo.first_parent(commit).map_err(g)?;
        }
        Ok(Vec::new())
    }

    /// The commit of `p`, made in memory ([`Repo::stage_commit`]).
    fn stage<'p>(&self, p: &'p Prepared) -> Result<Staged<'p>> {
        let message = format!(
            "backup from {}: {} new, {} changed; unified {} entries",
            self.host, p.new, p.changed, p.unified
        );
        self.repo
            // The base files are those of the first parent (none without one).
            .stage_commit(
                &p.files,
                &p.base_files,
                &p.parents,
                &self.author(),
                &message,
            )
            .map_err(|e| self.write_error(e))
    }

    /// The commit of `p`, written here.
    fn commit(&self, p: &Prepared) -> Result<CommitId> {
        let staged = self.stage(p)?;
        self.repo
            .write_staged(&staged)
            .map_err(|e| self.write_error(e))
    }

    /// Writing objects fails for want of room or rights, never for the remote:
    /// a write failure, and what is in the repository already is untouched.
    fn write_error(&self, e: GitError) -> Error {
        let cause = match e.to_string() {
            m if m.trim_end().ends_with("no error") => {
                "cannot write the commit's objects (is the disk full?)".to_string()
            }
            m => format!("cannot write the commit's objects: {m}"),
        };
        Error::write(&self.cx.repo, std::io::Error::other(cause))
    }

    /// git's `user.name` and `user.email` where set, else one made of the host.
    fn author(&self) -> Author {
        let name = self.repo.config_string("user.name");
        let email = self.repo.config_string("user.email");
        Author {
            name: name.unwrap_or_else(|| "memory-backup".to_string()),
            email: email.unwrap_or_else(|| format!("memory-backup@{}", self.host)),
            time: self.cx.clock.now().micros().div_euclid(1_000_000),
        }
    }

    /// After a push: the local branch moves to the pushed commit unless a
    /// concurrent run already moved it past it; then the working tree follows.
    fn adopt(&self, pushed: CommitId, mut local: Option<CommitId>, files: &Files) {
        for _ in 0..LOCAL_MOVES {
            if local == Some(pushed) {
                break;
            }
            if let Some(l) = local {
                // Already past it, or holding a commit of a run that did not push:
                // that run's next backup merges it.
                if !self.repo.contains(pushed, l).unwrap_or(false) {
                    break;
                }
            }
            match self.repo.move_branch(&self.branch, pushed, local) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => match self.repo.local_tip(&self.branch) {
                    Ok(l) => local = l,
                    Err(_) => break,
                },
                Err(e) => {
                    tracing::warn!("the local branch {} was not moved: {e}", self.branch);
                    break;
                }
            }
        }
        self.repo.note_remote_tip(&self.branch, pushed);
        self.sync_worktree(Some((pushed, files)));
    }

    /// A commit that could not be pushed goes on the local branch, so that the
    /// next run pushes it; if a concurrent run moved the branch meanwhile, a merge
    /// commit of both goes there instead. Returns what the branch holds.
    fn keep_local(
        &self,
        p: &Prepared,
        mut local: Option<CommitId>,
        report: &mut Report,
    ) -> Result<CommitId> {
        let mut commit = match (p.unchanged, p.parents.first()) {
            (true, Some(&base)) => base,
            _ => self.commit(p)?,
        };
        let mut noticed = true;
        for _ in 0..LOCAL_MOVES {
            if local == Some(commit) {
                break;
            }
            match self.repo.move_branch(&self.branch, commit, local) {
                Ok(()) => break,
                Err(e) if e.is_retryable() => {
                    local = self.local_tip()?;
                    if let Some(l) = local {
                        if !self
                            .repo
                            .contains(commit, l)
                            .map_err(|e| git_error(e, &self.branch))?
                        {
                            let merged =
                                self.prepare(Some(l), Some(commit), &mut noticed, report)?;
                            commit = self.commit(&merged)?;
                        }
                    }
                }
                Err(e) => return Err(git_error(e, &self.branch)),
            }
        }
        self.sync_worktree(None);
        Ok(commit)
    }

    fn sync_worktree(&self, known: Option<(CommitId, &Files)>) {
        if let Err(e) = self.repo.sync_worktree(&self.branch, is_backup_file, known) {
            tracing::warn!("the working tree was not updated: {e}");
        }
    }

    /// Folds the repository's loose objects into a pack once they are many
    /// (`repack`). A failure is only a warning: the backup is done.
    fn fold_loose(&self, report: &mut Report) {
        match self.repo.fold_loose_if_many() {
            Ok(Some(folded)) => {
                for problem in folded.problems {
                    report.warn(problem);
                }
                report.set("folded_objects", folded.objects);
            }
            Ok(None) => {}
            Err(e) => report.warn(format!(
                "{}: loose objects not folded into a pack: {e}",
                self.cx.repo.display()
            )),
        }
    }

    fn finish(&self, p: &Prepared, commit: Option<CommitId>, report: &mut Report, how: &str) {
        let changes = if commit.is_none() {
            "nothing changed".to_string()
        } else {
            format!("{} new, {} changed", p.new, p.changed)
        };
        let how = if how == "nothing changed" {
            String::new()
        } else {
            format!("; {how}")
        };
        report.summary = format!(
            "backup from {}: {changes}; unified {} entries{how}",
            self.host, p.unified
        );
        report.set("new", p.new);
        report.set("changed", p.changed);
        report.set("unified_entries", p.unified);
        report.set("host_files", p.host_files);
        report.set("commit", commit.map(|c| c.to_string()));
        report.set("pushed", self.remote.is_some() && commit.is_some());
    }
}

/// Parses the copies of host and unified files on all cores, in the order given.
fn parse_all(
    jobs: &[(&str, &str, &[u8])],
) -> Vec<std::result::Result<files::Stamped, crate::memory::ParseError>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    if workers <= 1 {
        return jobs.iter().map(|j| files::parse_stamped(j.2)).collect();
    }
    // Largest first, dealt out in turn, so that the workers finish together.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].2.len()));
    let mut results: Vec<Option<_>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<usize> = order.iter().copied().skip(w).step_by(workers).collect();
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|i| (i, files::parse_stamped(jobs[i].2)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("a parser does not panic") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every job was parsed"))
        .collect()
}

/// The files a backup reads and writes: host files and the unified file.
pub fn is_backup_file(name: &str) -> bool {
    name == UNIFIED_FILE || files::host_of_file_name(name).is_some()
}

/// Maps a git failure to the exit codes of section 9.
pub fn git_error(e: GitError, remote: &str) -> Error {
    let remote = &git::redact(remote);
    match e {
        GitError::Auth(cause) => Error::Auth {
            remote: remote.to_string(),
            cause,
        },
        GitError::NotFound(m) => Error::Config(format!("{remote}: repository not found: {m}")),
        GitError::Untrusted(m) => Error::Config(format!("{remote}: {m}")),
        GitError::Rejected(m) | GitError::Refused(m) | GitError::Transient(m) => Error::NotPushed {
            remote: remote.to_string(),
            cause: m,
        },
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

/// Exponential backoff from 100 ms, factor 2, capped at 10 s, with full jitter,
/// within a wall-clock deadline. backon gives the capped exponential; its own
/// jitter adds up to one more delay on top, so the full jitter (a uniform draw
/// between zero and the delay) is drawn here. The deadline is wall time, not the
/// sum of sleeps that backon's `with_total_delay` counts.
struct Retry {
    deadline: Instant,
    delays: ExponentialBackoff,
    rng: fastrand::Rng,
}

impl Retry {
    fn new(deadline: Instant) -> Retry {
        Retry {
            deadline,
            delays: ExponentialBuilder::default()
                .with_min_delay(BACKOFF_MIN)
                .with_factor(BACKOFF_FACTOR)
                .with_max_delay(BACKOFF_MAX)
                .without_max_times()
                .build(),
            rng: fastrand::Rng::new(),
        }
    }

    /// What is left of the deadline.
    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sleeps before the next attempt; false when the deadline has passed.
    fn wait(&mut self) -> bool {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return false;
        }
        let envelope = self.delays.next().unwrap_or(BACKOFF_MAX);
        std::thread::sleep(envelope.mul_f64(self.rng.f64()).min(remaining));
        true
    }
}
