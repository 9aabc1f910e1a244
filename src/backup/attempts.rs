//! Steps 4 and 5 of a run (section 8): fetch, make the state, push it with a
//! compare-and-swap; refused because others landed first, park this host's own
//! file on its own ref (Contention); refused for another reason, back off and
//! try again until the deadline.

use std::time::{Duration, Instant};

use super::retry::Retry;
use super::state::Prepared;
use super::{Attempts, Run, git_error, is_newer, parked_ref};
use crate::core::base::Base;
use crate::error::{Error, Result};
use crate::git::transport::{self, Fetched};
use crate::git::{CommitId, Files, GitError};
use crate::output::Report;
use crate::store::files::host_file_name;
use crate::store::memory_file::{self, MemoryRead};
use crate::store::state as local_state;

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
/// A host that parked this recently (seconds, by its own clock) and finds other
/// hosts' parked commits that the branch lacks is in a burst of many hosts
/// landing (see `Run::park_at_once`).
pub const CONTENDED_SECS: i64 = 120;
/// How many runs of a burst try the branch, on average; the others park at once.
pub const BRANCH_TRIES: usize = 2;
/// How many times a run reads the memory file again when another run of this
/// host stamped a newer read of it first.
const STALE_READS: usize = 3;

/// What the attempts of one run keep from one to the next.
struct Loop {
    retry: Retry,
    attempts: u32,
    refusals: Refusals,
    warned: bool,
    stale_reads: usize,
    /// The last failure that was not the deadline itself: what a run that ends
    /// at its time limit says was wrong.
    cause: Option<String>,
}

/// What making the state of an attempt came to.
enum Made {
    /// A state to push, made on the tips fetched.
    Push(Prepared, Fetched),
    /// The remote was never reached: the state is kept here, `Error` says why.
    Kept(Prepared, Error),
    /// The run is over: its state, its commit, whether it is on the remote.
    Done(Prepared, Option<CommitId>, bool),
    /// Fetch and make it again.
    Again,
}

impl Run<'_> {
    /// Fetch, make the state, push; again on a refusal, until it lands, parks, or
    /// the deadline passes.
    pub(super) fn attempts(
        &self,
        mut memory: MemoryRead,
        mut base: Base,
        report: &mut Report,
    ) -> Result<Attempts> {
        let mut l = Loop {
            retry: Retry::new(self.deadline),
            attempts: 0,
            refusals: Refusals::default(),
            warned: false,
            stale_reads: 0,
            cause: None,
        };
        // A state refused on the branch, to park at once without making it again.
        let mut carried: Option<(Prepared, Fetched)> = None;
        loop {
            let (p, fetched) = match carried.take() {
                Some(c) => c,
                None => match self.make_state(&mut l, &mut memory, &mut base, report)? {
                    Made::Push(p, f) => (p, f),
                    Made::Kept(p, e) => return self.keep(p, memory, &base, &mut l, e, report),
                    Made::Done(p, commit, on_remote) => {
                        return Ok((p, memory, commit, on_remote, l.attempts, None));
                    }
                    Made::Again => continue,
                },
            };
            let url = self.remote.expect("a state to push has a remote");
            // Refused on the branch because others landed first (or landing now):
            // this host's own file waits on its own ref, where no other host pushes.
            let park = p.partial || l.refusals.park();
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
            l.attempts += 1;
            let attempts = l.attempts;
            let pushed = transport::push(
                &self.transport,
                self.repo,
                url,
                &refname,
                target,
                expected,
                self.deadline,
            );
            let e = match pushed {
                Ok(()) => {
                    tracing::info!(
                        "push attempt {attempts} to {} {refname}: {} pushed",
                        self.shown,
                        target.short()
                    );
                    self.on_remote(
                        target,
                        &p,
                        &memory,
                        park.then_some(&refname),
                        attempts,
                        report,
                    );
                    return Ok((p, memory, Some(target), true, attempts, None));
                }
                Err(e) => e,
            };
            tracing::info!("push attempt {attempts} to {} {refname}: {e}", self.shown);
            if !e.is_retryable() {
                return self.keep(p, memory, &base, &mut l, git_error(e, url), report);
            }
            let next = l.refusals.record(&e, fetched.tip, park);
            note_cause(&mut l.cause, &e);
            if next == Next::AtOnce {
                carried = Some((p, fetched));
                continue;
            }
            if next == Next::AfterPause && self.pause(&mut l.retry, attempts) {
                continue;
            }
            let e = self.not_pushed(e, attempts, l.cause.as_deref());
            return self.keep(p, memory, &base, &mut l, e, report);
        }
    }

    /// Keeps the state here for the next run (`kept`). A state of this host's own
    /// file alone is made whole first: the local branch only ever holds whole
    /// states, since a parked commit it holds counts as taken in.
    fn keep(
        &self,
        p: Prepared,
        memory: MemoryRead,
        base: &Base,
        l: &mut Loop,
        e: Error,
        report: &mut Report,
    ) -> Result<Attempts> {
        let p = if p.partial {
            let known = self.last_fetched();
            self.prepare(Some(&known), &memory, base, &mut l.warned, report)?
        } else {
            p
        };
        self.kept(p, memory, l.attempts, e, report)
    }

    /// The commit `target` is on the remote after `attempts` pushes: on the
    /// branch, or parked on `parked`. The local branch, the working tree and the
    /// base follow.
    fn on_remote(
        &self,
        target: CommitId,
        p: &Prepared,
        memory: &MemoryRead,
        parked: Option<&String>,
        attempts: u32,
        report: &mut Report,
    ) {
        match parked {
            Some(refname) => {
                // The local branch stays where it is: it only ever holds whole
                // states, since a parked commit it holds counts as taken in, and
                // a parked commit holds the tip's files and this host's alone.
                local_state::set_last_push(self.repo.git_dir(), self.cx.clock.now());
                local_state::set_last_parked(self.repo.git_dir(), self.cx.clock.now());
                self.save_base(p, memory, report);
                report.set("parked", refname.trim_start_matches("refs/heads/"));
            }
            None => self.landed(target, p, memory, report),
        }
        if attempts > MANY_ATTEMPTS {
            report.warn(format!(
                "the push to {} needed {attempts} attempts, over the alert threshold of {MANY_ATTEMPTS}",
                self.shown
            ));
        }
    }

    /// Fetches and makes the state of the next attempt.
    fn make_state(
        &self,
        l: &mut Loop,
        memory: &mut MemoryRead,
        base: &mut Base,
        report: &mut Report,
    ) -> Result<Made> {
        let fetched = match self.remote {
            None => None,
            Some(url) => match self.fetch(url) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::info!("fetch from {}: {e}", self.shown);
                    if e.is_retryable() && self.pause(&mut l.retry, l.attempts) {
                        note_cause(&mut l.cause, &e);
                        return Ok(Made::Again);
                    }
                    let e = self.unfetched(e, url, l.attempts, l.cause.as_deref())?;
                    // Never reached: commit on what this repository knows (the
                    // local tip, and the remote's as last fetched) for the next run.
                    let known = self.last_fetched();
                    let p = self.prepare(Some(&known), memory, base, &mut l.warned, report)?;
                    return Ok(Made::Kept(p, e));
                }
            },
        };
        // Another run of this host stamped a newer read of the memory file: this
        // one's is stale and never replaces it.
        let latest = local_state::load_snapshot(self.repo.git_dir(), self.host);
        if l.stale_reads < STALE_READS && is_newer(latest.as_ref(), memory) {
            l.stale_reads += 1;
            *memory = memory_file::read(self.opts.memory, true)?;
            *base = local_state::load_base(self.repo.git_dir(), self.host).0;
            return Ok(Made::Again);
        }
        let p = match &fetched {
            Some(f) if !l.refusals.park() && self.park_at_once(f) => {
                let mut warned = l.warned;
                let own = self.prepare_in(Some(f), memory, base, true, &mut warned, report)?;
                if self.own_file_is_new(&own, f) {
                    l.warned = warned;
                    own
                } else {
                    // Nothing new of this host's to park: it helps the branch
                    // take the parked commits in instead.
                    self.prepare(fetched.as_ref(), memory, base, &mut l.warned, report)?
                }
            }
            _ => self.prepare(fetched.as_ref(), memory, base, &mut l.warned, report)?,
        };
        if self.opts.dry_run {
            return Ok(Made::Done(p, None, false));
        }
        let (Some(_), Some(fetched)) = (self.remote, fetched) else {
            let commit = self.commit_locally(&p, report)?;
            self.save_base(&p, memory, report);
            return Ok(Made::Done(p, commit, false));
        };
        if p.unchanged && p.parents.first() == fetched.tip.as_ref() {
            let tip = fetched.tip.expect("compared");
            self.landed(tip, &p, memory, report);
            return Ok(Made::Done(p, None, true));
        }
        Ok(Made::Push(p, fetched))
    }

    /// Whether to park without trying the branch (section 8, Contention): this
    /// host parked in the last `CONTENDED_SECS` (by its own clock, which other
    /// hosts' skew does not affect) and n >= `BRANCH_TRIES` parked commits of
    /// others wait for the branch: a burst is under way. This run then tries the
    /// branch with a chance of `BRANCH_TRIES` in n + 1, so that a few runs of a
    /// burst take the others in while the rest park at once, reading and writing
    /// their own file alone. Otherwise it tries the branch.
    fn park_at_once(&self, f: &Fetched) -> bool {
        if !self.opts.park_at_once {
            return false;
        }
        let now = self.cx.clock.now().micros();
        let recent = local_state::last_parked(self.repo.git_dir())
            .is_some_and(|t| (now - t.micros()).abs() <= CONTENDED_SECS * 1_000_000);
        if !recent {
            return false;
        }
        let waiting = f
            .parked
            .iter()
            .filter(|(h, c)| {
                h != self.host
                    && !f
                        .tip
                        .is_some_and(|t| self.repo.contains(t, *c).unwrap_or(true))
            })
            .count();
        waiting >= BRANCH_TRIES && fastrand::usize(..=waiting) >= BRANCH_TRIES
    }

    /// Whether a state of this host's own file alone holds something neither
    /// the branch nor this host's parked commit holds (an empty file where the
    /// branch has none is nothing new).
    fn own_file_is_new(&self, own: &Prepared, fetched: &Fetched) -> bool {
        let name = host_file_name(self.host);
        let file = own.files.get(&name);
        let empty = own.hosts.iter().all(|(_, entries, _)| entries.is_empty());
        match own.base_files.get(&name) {
            Some(b) if Some(b) == file => return false,
            None if empty => return false,
            _ => {}
        }
        let parked = fetched.parked.iter().find(|(h, _)| h == self.host);
        !parked.is_some_and(|(_, c)| {
            self.repo
                .read_files(*c, |n| n == name)
                .is_ok_and(|(f, _)| f.get(&name) == file)
        })
    }

    fn not_pushed(&self, e: GitError, attempts: u32, cause: Option<&str>) -> Error {
        Error::NotPushed {
            remote: self.shown.clone(),
            cause: gave_up(&e.to_string(), cause, attempts),
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
}

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
