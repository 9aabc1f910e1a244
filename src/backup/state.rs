//! Step 3 of a run (section 8): the state to commit on the tips at hand. Every
//! host file is the merge of its copies (the remote's, the local branch's, the
//! parked commits'), this host's file is stamped against its own, and unified
//! is the merge of all of them and of every copy of unified.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::base::Base;
use crate::core::entry::{self, Entry, Seen};
use crate::core::fold::HostFile;
use crate::core::merge;
use crate::core::record::Located;
use crate::core::stamp::{self, Notice, StampError};
use crate::error::{Error, Result};
use crate::git::{CommitId, Files, GitError, Repo};
use crate::output::Report;
use crate::store::files::{UNIFIED_FILE, host_file_name, host_of_file_name, is_backup_file};

/// How far back unified is looked for in history, when the tip's is damaged or
/// lost entries.
const HISTORY_DEPTH: usize = 1000;

/// What the commits of this tool's runs begin with.
pub const OWN_COMMIT_PREFIXES: [&str; 2] = ["backup from ", "forget on "];

/// The tips a state is made on.
#[derive(Debug, Clone)]
pub struct Tips {
    /// The remote branch's tip (the first parent), or the local one without a
    /// remote.
    pub base: Option<CommitId>,
    /// The local branch, when it holds commits that `base` lacks.
    pub local: Option<CommitId>,
    /// The local branch contains `base` (a commit an earlier run did not push).
    pub local_ahead: bool,
    /// Parked commits (section 8, Contention) that `base` does not hold yet.
    pub parked: Vec<(String, CommitId)>,
}

impl Tips {
    /// The tips of `local` and `remote` and the parked commits, as they relate.
    pub fn of(
        repo: &Repo,
        local: Option<CommitId>,
        remote: Option<CommitId>,
        parked: &[(String, CommitId)],
    ) -> Result<Tips> {
        let g = |e: GitError| crate::backup::git_error(e, "the backup repository");
        let base = remote.or(local);
        let local = match (local, base) {
            (Some(l), Some(b)) if !repo.contains(b, l).map_err(g)? => Some(l),
            _ => None,
        };
        let local_ahead = match (local, base) {
            (Some(l), Some(b)) => repo.contains(l, b).map_err(g)?,
            _ => false,
        };
        let mut unfolded = Vec::new();
        for (host, tip) in parked {
            let held = [base, local]
                .into_iter()
                .flatten()
                .map(|t| repo.contains(t, *tip))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(g)?;
            if !held.into_iter().any(|h| h) {
                unfolded.push((host.clone(), *tip));
            }
        }
        Ok(Tips {
            base,
            local,
            local_ahead,
            parked: unfolded,
        })
    }

    /// Every commit the state reads, first parent first.
    pub fn parents(&self) -> Vec<CommitId> {
        let mut out: Vec<CommitId> = self.base.into_iter().chain(self.local).collect();
        for (_, p) in &self.parked {
            if !out.contains(p) {
                out.push(*p);
            }
        }
        out
    }
}

/// What stamping needs of a run.
pub struct StampInput<'a> {
    pub host: &'a str,
    pub now: crate::core::clock::Timestamp,
    pub id_field: &'a str,
    /// The memory file's records; `None`: merge only, this host's file as its
    /// copies hold it.
    pub records: Option<&'a [Located]>,
    pub base: &'a Base,
    pub allow_mass_delete: bool,
    /// Identities to tombstone on every host (`forget`), by what they match.
    pub forget: &'a dyn Fn(&str) -> bool,
    pub held_back: &'a dyn Fn(&str, &crate::core::record::Record) -> bool,
    /// Read only this host's own file: the state of a run that parks at once
    /// (unified and the other hosts' files are left as the tips hold them).
    pub own_only: bool,
}

/// The state to commit.
pub struct Prepared {
    pub files: Files,
    /// The files of the first parent, as read.
    pub base_files: Files,
    pub parents: Vec<CommitId>,
    /// The first parent already holds exactly these files, and no other parent
    /// adds anything.
    pub unchanged: bool,
    pub stamped: stamp::Stamped,
    pub unified: usize,
    pub host_files: usize,
    /// Every host's merged file, for the fold (`sync`, `forget`).
    pub hosts: Vec<(String, Vec<Entry>, bool)>,
    pub unified_entries: Vec<Entry>,
    /// Only this host's own file was read and made (`StampInput::own_only`):
    /// `files` holds that file alone, `unified` counts nothing.
    pub partial: bool,
}

impl Prepared {
    /// The host files as the fold reads them.
    pub fn host_files(&self) -> Vec<HostFile<'_>> {
        self.hosts
            .iter()
            .map(|(h, e, whole)| HostFile {
                host: h,
                entries: e,
                whole: *whole,
            })
            .collect()
    }
}

/// The files of every tip, parsed: what `prepare` merges.
struct Read {
    /// The files of the first parent, as read.
    base_files: Files,
    /// The files of the local branch and of each parked commit, labelled.
    sides: Vec<(String, Files)>,
    /// The names of files some copy of which did not parse whole.
    damaged: BTreeSet<String>,
    /// Every distinct copy of each host file.
    host_copies: BTreeMap<String, Vec<Vec<Entry>>>,
    /// The entries of every copy of unified, and of what history gives back.
    unified_copies: Vec<Entry>,
}

/// Reads the files at `tips`, stamps the memory and merges.
pub fn prepare(
    repo: &Repo,
    tips: &Tips,
    input: &StampInput<'_>,
    warned: &mut bool,
    report: &mut Report,
) -> Result<Prepared> {
    let own_name = host_file_name(input.host);
    let only = input.own_only.then_some(own_name.as_str());
    let mut read = read_tips(repo, tips, only, *warned, report)?;
    if only.is_none() {
        recover_lost(repo, tips, &mut read, *warned, report)?;
    }

    let own: Vec<Entry> = read
        .host_copies
        .remove(&own_name)
        .map(|copies| merge::merge_owned(copies.iter().flatten()))
        .unwrap_or_default();
    // Versions of other hosts' lineages in this host's file are not this host's
    // to version: stamping sees only its own.
    let (own, foreign): (Vec<Entry>, Vec<Entry>) =
        own.into_iter().partition(|e| *e.meta.host == *input.host);

    let mut hosts: Vec<(String, Vec<Entry>, bool)> = Vec::new();
    let mut out = Files::new();
    for (name, copies) in &read.host_copies {
        let merged = merge::merge_owned(copies.iter().flatten());
        // A damaged file stays as the remote has it, for its owner to mend and
        // `verify` to report; what parsed of it still goes into unified.
        let whole = !read.damaged.contains(name);
        if whole {
            out.insert(name.clone(), entry::render(&merged));
        }
        let host = host_of_file_name(name).unwrap_or(name).to_string();
        hosts.push((host, merged, whole));
    }

    let (stamped, foreign) = match input.records {
        Some(records) => {
            let forget = forget_contexts(input, &hosts, &own, &read.unified_copies);
            (
                stamp_memory(input, records, &own, &forget, *warned, report)?,
                foreign,
            )
        }
        None => {
            let mut entries = own;
            entries.extend(foreign);
            entries.sort_by(merge::file_cmp);
            let stamped = stamp::Stamped {
                entries,
                base: input.base.clone(),
                ..stamp::Stamped::default()
            };
            (stamped, Vec::new())
        }
    };
    *warned = true;
    if input.own_only {
        return Ok(own_file_only(tips, read, stamped, foreign, own_name));
    }
    finish(repo, tips, read, stamped, foreign, hosts, own_name, out)
}

/// This host's file: what stamping made and the versions of other hosts'
/// lineages it held, in file order, and its text.
fn own_file(stamped: &stamp::Stamped, foreign: Vec<Entry>) -> (Vec<Entry>, Vec<u8>) {
    let mut entries = stamped.entries.clone();
    entries.extend(foreign);
    let entries = merge::into_file_order(entries);
    let text = entry::render(&entries);
    (entries, text)
}

/// The state of a run that parks at once: this host's own file alone.
fn own_file_only(
    tips: &Tips,
    read: Read,
    stamped: stamp::Stamped,
    foreign: Vec<Entry>,
    own_name: String,
) -> Prepared {
    let (own_entries, own_text) = own_file(&stamped, foreign);
    let own_whole = !read.damaged.contains(&own_name);
    let own_host = host_of_file_name(&own_name).unwrap_or_default().to_string();
    let parents = tips.parents();
    let unchanged = tips.base.is_some()
        && parents.len() == 1
        && read.base_files.get(&own_name) == Some(&own_text);
    let mut files = Files::new();
    files.insert(own_name, own_text);
    Prepared {
        files,
        base_files: read.base_files,
        parents,
        unchanged,
        stamped,
        unified: 0,
        host_files: 1,
        hosts: vec![(own_host, own_entries, own_whole)],
        unified_entries: Vec::new(),
        partial: true,
    }
}

/// Reads and parses every distinct copy of every file at `tips`, on all cores.
/// `only`: that one file alone.
fn read_tips(
    repo: &Repo,
    tips: &Tips,
    only: Option<&str>,
    warned: bool,
    report: &mut Report,
) -> Result<Read> {
    let g = |e: GitError| crate::backup::git_error(e, "the backup repository");
    let wanted = |n: &str| is_backup_file(n) && only.is_none_or(|o| n == o);
    let mut read = |c: CommitId| -> Result<Files> {
        let (files, ignored) = repo.read_files(c, wanted).map_err(g)?;
        if !warned {
            for name in ignored {
                report.warn(format!(
                    "commit {}: the file name {name:?} is not a plain name; ignored, never written",
                    c.short()
                ));
            }
        }
        Ok(files)
    };
    let base_files = match tips.base {
        Some(b) => read(b)?,
        None => Files::new(),
    };
    let mut sides: Vec<(String, Files)> = Vec::new();
    if let Some(l) = tips.local {
        sides.push(("the local branch".into(), read(l)?));
    }
    for (host, c) in &tips.parked {
        if only.is_some_and(|o| o != host_file_name(host)) {
            continue;
        }
        let files = match parked_file(repo, tips, host, *c).map_err(g)? {
            Some(name) => repo.read_files(*c, |n| n == name).map_err(g)?.0,
            None => read(*c)?,
        };
        sides.push((format!("the parked commit of {host}"), files));
    }

    let mut jobs: Vec<(&str, &str, &[u8])> = Vec::new();
    let names: BTreeSet<&String> = base_files
        .keys()
        .chain(sides.iter().flat_map(|(_, f)| f.keys()))
        .collect();
    for name in names {
        let mut copies: Vec<(&str, &[u8])> = Vec::new();
        let all = std::iter::once(("the branch", &base_files))
            .chain(sides.iter().map(|(l, f)| (l.as_str(), f)));
        for (label, files) in all {
            if let Some(b) = files.get(name)
                && !copies.iter().any(|(_, c)| *c == b.as_slice())
            {
                copies.push((label, b));
            }
        }
        // The local side ahead of the remote holds the newer copy of a host file.
        if tips.local_ahead && copies.len() == 2 && name != UNIFIED_FILE {
            copies.remove(0);
        }
        jobs.extend(copies.into_iter().map(|(l, b)| (name.as_str(), l, b)));
    }
    let slices: Vec<&[u8]> = jobs.iter().map(|j| j.2).collect();
    let results = entry::parse_many(&slices);

    let mut damaged = BTreeSet::new();
    let mut host_copies: BTreeMap<String, Vec<Vec<Entry>>> = BTreeMap::new();
    let mut unified_copies = Vec::new();
    for ((name, label, _), result) in jobs.iter().zip(results) {
        match result {
            Ok(f) => {
                if !f.is_whole() {
                    damaged.insert(name.to_string());
                }
                if !warned {
                    for (line, cause) in &f.skipped {
                        report.warn(format!("{name}:{line} in {label}: entry skipped: {cause}"));
                    }
                }
                if *name == UNIFIED_FILE {
                    unified_copies.extend(f.entries);
                } else {
                    host_copies
                        .entry(name.to_string())
                        .or_default()
                        .push(f.entries);
                }
            }
            Err(e) => {
                damaged.insert(name.to_string());
                if !warned {
                    report.warn(format!(
                        "{name}:{}:{} in {label}: {}; file skipped, its entries kept in {UNIFIED_FILE}",
                        e.line, e.column, e.cause
                    ));
                }
            }
        }
    }
    Ok(Read {
        base_files,
        sides,
        damaged,
        host_copies,
        unified_copies,
    })
}

/// The one file to read of the parked commit `c` of `host`, when it is a parked
/// commit as `backup` makes them: on a first parent that the branch (or the
/// local branch) holds, changing nothing but the host's own file. All else in
/// it is that parent's, already read; reading it again would cost each run as
/// much as reading unified once per parked host. `None`: read it all.
fn parked_file(
    repo: &Repo,
    tips: &Tips,
    host: &str,
    c: CommitId,
) -> std::result::Result<Option<String>, GitError> {
    let Some(parent) = repo.first_parent(c)? else {
        return Ok(None);
    };
    let mut held = false;
    for t in tips.base.into_iter().chain(tips.local) {
        held = held || repo.contains(t, parent)?;
    }
    if !held {
        return Ok(None);
    }
    let name = host_file_name(host);
    let changed = repo.changed_names(c, parent)?;
    Ok(changed.iter().all(|n| *n == name).then_some(name))
}

/// Entries that only unified held must not go with a damaged or shortened
/// unified file: they are taken back from the newest whole one in history.
fn recover_lost(
    repo: &Repo,
    tips: &Tips,
    read: &mut Read,
    warned: bool,
    report: &mut Report,
) -> Result<()> {
    let damaged = read.damaged.contains(UNIFIED_FILE);
    for tip in tips.base.into_iter().chain(tips.local) {
        let Some((from, entries)) = recover_unified(repo, tip, damaged, &read.unified_copies)?
        else {
            continue;
        };
        if !warned {
            report.warn(format!(
                "{UNIFIED_FILE} at {} lacks {} entries that commit {} held (a commit not made by \
                 memory-backup, or damage); they are taken back from history",
                tip.short(),
                entries.len(),
                from.short()
            ));
        }
        read.unified_copies.extend(entries);
    }
    Ok(())
}

/// Stamps the memory file's records against this host's own entries.
fn stamp_memory(
    input: &StampInput<'_>,
    records: &[Located],
    own: &[Entry],
    forget: &std::collections::HashMap<String, Seen>,
    warned: bool,
    report: &mut Report,
) -> Result<stamp::Stamped> {
    let stamped = stamp::stamp(
        records,
        &stamp::Context {
            host: input.host,
            now: input.now,
            id_field: input.id_field,
            own,
            base: input.base,
            allow_mass_delete: input.allow_mass_delete,
            forget,
            held_back: input.held_back,
            keep_base: true,
        },
    )
    .map_err(|e| match e {
        StampError::MassDelete { deleting, live } => Error::Refused(format!(
            "this run would delete {deleting} of this host's {live} entries (more than half): \
             refused, nothing written; if the memory file really lost them, run again with \
             --allow-mass-delete"
        )),
        StampError::VersionOverflow { ident } => Error::Refused(format!(
            "{ident}: its version would pass 18446744073709551615; nothing written"
        )),
    })?;
    if !warned {
        for n in &stamped.notices {
            match n {
                Notice::DuplicateIdent {
                    line,
                    ident,
                    renamed,
                } => report.warn(format!(
                    "line {line}: a second, different entry of identity {ident:?}; kept as {renamed:?}"
                )),
            }
        }
    }
    Ok(stamped)
}

/// The files of the state: this host's, the unified file, and what else the
/// sides hold; and whether it changes anything.
#[allow(clippy::too_many_arguments)]
fn finish(
    repo: &Repo,
    tips: &Tips,
    read: Read,
    stamped: stamp::Stamped,
    foreign: Vec<Entry>,
    mut hosts: Vec<(String, Vec<Entry>, bool)>,
    own_name: String,
    mut out: Files,
) -> Result<Prepared> {
    let g = |e: GitError| crate::backup::git_error(e, "the backup repository");
    let Read {
        base_files,
        sides,
        damaged,
        unified_copies,
        ..
    } = read;
    let (own_entries, own_text) = own_file(&stamped, foreign);
    let own_whole = !damaged.contains(&own_name);
    let own_host = host_of_file_name(&own_name).unwrap_or_default().to_string();
    let unified = merge::merge(
        hosts
            .iter()
            .flat_map(|(_, e, _)| e.iter())
            .chain(&own_entries)
            .chain(&unified_copies),
    );
    let unified_len = unified.len();
    out.insert(UNIFIED_FILE.to_string(), entry::render(&unified));
    let unified_entries: Vec<Entry> = unified.into_iter().cloned().collect();
    out.insert(own_name.clone(), own_text);
    hosts.push((own_host, own_entries, own_whole));

    // Files of the other sides that are not backup files (added by hand) and
    // that the remote lacks go into the merge too.
    if tips.base.is_some() {
        let theirs = match tips.base {
            Some(b) => repo.read_files(b, |_| true).map_err(g)?.0,
            None => Files::new(),
        };
        for c in tips.local.into_iter() {
            for (name, bytes) in repo.read_files(c, |n| !is_backup_file(n)).map_err(g)?.0 {
                if !theirs.contains_key(&name) {
                    out.insert(name, bytes);
                }
            }
        }
    }

    let mut parents = tips.parents();
    let mut unchanged = tips.base.is_some()
        && parents.len() == 1
        && out.iter().all(|(k, v)| base_files.get(k) == Some(v));
    // The local tip, ahead of the remote, already holds this state (a commit an
    // earlier run could not push): it is pushed as it is, history stays linear.
    if tips.local_ahead && tips.parked.is_empty() {
        let local_files = sides
            .first()
            .map(|(_, f)| f)
            .expect("the local side is read when it is ahead");
        if out.iter().all(|(k, v)| local_files.get(k) == Some(v)) {
            parents = tips.local.into_iter().collect();
            unchanged = true;
        }
    }
    Ok(Prepared {
        host_files: hosts.len(),
        unified: unified_len,
        files: out,
        base_files,
        parents,
        unchanged,
        stamped,
        hosts,
        unified_entries,
        partial: false,
    })
}

/// For each identity `forget` matches: the versions of every lineage of it
/// that this host has seen, which its tombstone covers.
fn forget_contexts(
    input: &StampInput<'_>,
    hosts: &[(String, Vec<Entry>, bool)],
    own: &[Entry],
    unified: &[Entry],
) -> std::collections::HashMap<String, Seen> {
    let mut out: std::collections::HashMap<String, Seen> = std::collections::HashMap::new();
    let all = hosts
        .iter()
        .flat_map(|(_, e, _)| e.iter())
        .chain(own)
        .chain(unified);
    for e in all {
        let ident = crate::core::record::ident_of_body(e.body(), input.id_field);
        if !(input.forget)(&ident) {
            continue;
        }
        let seen = out.entry(ident).or_default();
        let v = seen.entry(e.meta.unique_id.clone()).or_insert(0);
        *v = (*v).max(e.meta.version);
    }
    out
}

/// When the unified file at `tip` is damaged, or was made by a commit not of
/// this tool: the entries of the newest whole unified file of a commit of this
/// tool in `tip`'s first-parent history whose `unique_id`s the tip's lacks.
fn recover_unified(
    repo: &Repo,
    tip: CommitId,
    damaged: bool,
    have: &[Entry],
) -> Result<Option<(CommitId, Vec<Entry>)>> {
    let g = |e: GitError| crate::backup::git_error(e, "the backup repository");
    let own = |c: CommitId| -> Result<bool> {
        let (message, _) = repo.commit_info(c).map_err(g)?;
        Ok(OWN_COMMIT_PREFIXES.iter().any(|p| message.starts_with(p)))
    };
    if !damaged && own(tip)? {
        return Ok(None);
    }
    let mut at = Some(tip);
    for _ in 0..HISTORY_DEPTH {
        let Some(c) = at else { break };
        if c != tip && own(c)? {
            let (files, _) = repo.read_files(c, |n| n == UNIFIED_FILE).map_err(g)?;
            if let Some(Ok(f)) = files.get(UNIFIED_FILE).map(|b| entry::parse_stamped(b))
                && f.is_whole()
            {
                let known: std::collections::HashSet<&str> =
                    have.iter().map(Entry::unique_id).collect();
                // Detached: the old file's text goes once they are taken.
                let lost: Vec<Entry> = f
                    .entries
                    .into_iter()
                    .filter(|e| !known.contains(e.unique_id()))
                    .map(Entry::detached)
                    .collect();
                return Ok((!lost.is_empty()).then_some((c, lost)));
            }
        }
        at = repo.first_parent(c).ok().flatten();
    }
    Ok(None)
}
