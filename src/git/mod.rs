//! The git layer: the only code that uses git2 or runs `git`. [`Repo`] turns a
//! repository into owned data (a commit's top-level files as name to bytes) and
//! writes commits and moves refs; [`transport`] fetches and pushes; [`worktree`]
//! keeps the working tree showing the branch; [`repack`] packs loose objects.
//! Nothing here knows what an entry is.

pub mod cli;
pub mod error;
pub mod libgit2;
pub mod repack;
pub mod transport;
pub mod url;
pub mod worktree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ErrorCode, ObjectType, Oid, Repository, RepositoryInitOptions, Signature, Time};

pub use error::GitError;
use error::classify_local;

/// The remote's name in the repository's config.
pub const REMOTE_NAME: &str = "origin";
/// The branch a new repository gets.
pub const DEFAULT_BRANCH: &str = "main";
/// A ref's lock file older than this was left by a killed process: git and
/// libgit2 hold one for the milliseconds of an update.
pub const STALE_REF_LOCK: Duration = Duration::from_secs(10);

/// Top-level files of a commit: name to content.
pub type Files = BTreeMap<String, Vec<u8>>;

/// A commit's id, owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(Oid);

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl CommitId {
    /// The first 10 hex digits, for messages.
    pub fn short(&self) -> String {
        self.0.to_string()[..10].to_string()
    }

    pub(crate) fn oid(self) -> Oid {
        self.0
    }

    /// A commit id from its 40 hex digits.
    pub fn parse(hex: &str) -> Option<CommitId> {
        Oid::from_str(hex).ok().map(CommitId)
    }
}

/// A commit's author (and committer).
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// Process-wide libgit2 settings, once: what it writes reaches the disk before it
/// is renamed into place; it may hold half the open-file limit of packs open.
fn settings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        git2::opts::strict_hash_verification(false);
        // SAFETY: sets one of libgit2's global options before any repository is
        // opened; git2 has no wrapper for it.
        unsafe {
            libgit2_sys::init();
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as libc::c_int,
                1,
            );
        }
        // A repository that fetched for months holds many packs, and libgit2
        // keeps every pack it read open unless told a limit.
        let files = crate::sys::raise_open_file_limit(8192);
        let packs = usize::try_from(files / 2).map_or(512, |h| h.clamp(8, 512));
        // SAFETY: as above, before any repository is opened.
        let _ = unsafe { git2::opts::set_mwindow_file_limit(packs) };
    });
}

/// The backup repository: a non-bare repository whose HEAD names the branch.
pub struct Repo {
    repo: Repository,
}

impl Repo {
    /// Opens the repository at `path`; `None` when there is none there.
    pub fn open(path: &Path) -> Result<Option<Repo>, GitError> {
        settings();
        match Repository::open(path) {
            Ok(repo) => {
                let r = Repo { repo };
                cli::remove_stale_locks(r.git_dir(), STALE_REF_LOCK);
                Ok(Some(r))
            }
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(classify_local(&e)),
        }
    }

    /// Makes a repository at `path` whose HEAD names `branch` (or opens the one a
    /// concurrent run just made), private to the user.
    pub fn init(path: &Path, branch: &str) -> Result<Repo, GitError> {
        settings();
        let io = |e: std::io::Error| GitError::local(format!("{}: {e}", path.display()));
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head(branch).mkpath(true);
        let occupied = std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            // A folder of the user's: the repository is made inside it.
            let repo = Repository::init_opts(path, &opts).map_err(|e| classify_local(&e))?;
            let r = Repo { repo };
            r.prepare_new();
            return Ok(r);
        }
        // Made complete beside it, then renamed into place: two runs that both
        // find no repository never see each other's half-made one.
        let parent = crate::store::atomic::parent_of(path);
        crate::store::atomic::private_dir(parent).map_err(io)?;
        let tmp = tempfile::Builder::new()
            .prefix(".memory-backup-repo-")
            .tempdir_in(parent)
            .map_err(io)?;
        let made = Repo {
            repo: Repository::init_opts(tmp.path(), &opts).map_err(|e| classify_local(&e))?,
        };
        made.prepare_new();
        drop(made);
        if std::fs::rename(tmp.path(), path).is_ok() {
            let _ = tmp.keep();
        }
        let repo = Repository::open(path).map_err(|e| classify_local(&e))?;
        Ok(Repo { repo })
    }

    /// A new repository: private (its config may hold a URL with a token), and
    /// this tool's temporary files ignored.
    fn prepare_new(&self) {
        if let Some(dir) = self.repo.workdir() {
            let _ = crate::store::atomic::private_dir(dir);
        }
        let _ = crate::store::atomic::private_dir(self.repo.path());
        let info = self.repo.commondir().join("info");
        let path = info.join("exclude");
        let line = format!("{}*", crate::store::atomic::TEMP_PREFIX);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if !old.lines().any(|l| l == line) {
            let _ = std::fs::create_dir_all(&info);
            let _ = std::fs::write(&path, format!("{old}{line}\n"));
        }
    }

    /// The underlying libgit2 repository (for the transports).
    pub(crate) fn raw(&self) -> &Repository {
        &self.repo
    }

    /// The common git folder (`.git`, shared by linked worktrees).
    pub fn git_dir(&self) -> &Path {
        self.repo.commondir()
    }

    /// The working folder.
    pub fn workdir(&self) -> Option<&Path> {
        self.repo.workdir()
    }

    /// The size of the largest file at the branch tip: a bound for what git may
    /// need to hold.
    pub fn largest_file_hint(&self) -> u64 {
        let Some(dir) = self.workdir() else { return 0 };
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    }

    /// The branch that HEAD names.
    pub fn branch(&self) -> Result<String, GitError> {
        let head = self
            .repo
            .find_reference("HEAD")
            .map_err(|e| classify_local(&e))?;
        let target = head
            .symbolic_target()
            .ok()
            .flatten()
            .ok_or_else(|| GitError::Other("HEAD is detached; check out a branch".into()))?;
        Ok(target
            .strip_prefix("refs/heads/")
            .unwrap_or(target)
            .to_string())
    }

    /// Points HEAD at `branch`.
    pub fn set_branch(&self, branch: &str) -> Result<(), GitError> {
        self.repo
            .set_head(&format!("refs/heads/{branch}"))
            .map_err(|e| classify_local(&e))
    }

    /// The remote's URL, if one is set.
    pub fn remote_url(&self) -> Option<String> {
        let remote = self.repo.find_remote(REMOTE_NAME).ok()?;
        remote.url().ok().map(str::to_string)
    }

    /// Sets the remote's URL (adding the remote if there is none).
    pub fn set_remote_url(&self, url: &str) -> Result<(), GitError> {
        let r = if self.repo.find_remote(REMOTE_NAME).is_ok() {
            self.repo.remote_set_url(REMOTE_NAME, url)
        } else {
            self.repo.remote(REMOTE_NAME, url).map(drop)
        };
        r.map_err(|e| classify_local(&e))
    }

    /// A config value of the repository (and the user's git config).
    pub fn config_string(&self, key: &str) -> Option<String> {
        let config = self.repo.config().ok()?;
        config.get_string(key).ok().filter(|s| !s.trim().is_empty())
    }

    fn ref_id(&self, name: &str) -> Result<Option<CommitId>, GitError> {
        match self.repo.refname_to_id(name) {
            Ok(id) => Ok(Some(CommitId(id))),
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => Ok(None),
            Err(e) => Err(classify_local(&e)),
        }
    }

    /// Where the local branch points now.
    pub fn local_tip(&self, branch: &str) -> Result<Option<CommitId>, GitError> {
        self.ref_id(&format!("refs/heads/{branch}"))
    }

    /// The remote's branch as the last fetch saw it.
    pub fn tracking_tip(&self, branch: &str) -> Option<CommitId> {
        self.ref_id(&format!("{}{branch}", transport::TRACKING_PREFIX))
            .ok()
            .flatten()
    }

    /// Forgets the remote's branch (the remote has none).
    pub fn forget_tracking(&self, branch: &str) {
        let name = format!("{}{branch}", transport::TRACKING_PREFIX);
        if let Ok(mut r) = self.repo.find_reference(&name) {
            let _ = r.delete();
        }
    }

    /// Records `tip` as the remote's branch, for `status` and the next fetch.
    pub fn set_tracking(&self, branch: &str, tip: CommitId) {
        let name = format!("{}{branch}", transport::TRACKING_PREFIX);
        if let Err(e) = self
            .repo
            .reference(&name, tip.0, true, "memory-backup: pushed")
        {
            tracing::debug!("{name} not updated: {}", e.message());
        }
    }

    /// Deletes the remote-tracking refs whose commit is not here whole.
    pub fn drop_incomplete_tracking_refs(&self) {
        let Ok(refs) = self
            .repo
            .references_glob(&format!("{}*", transport::TRACKING_PREFIX))
        else {
            return;
        };
        let broken: Vec<String> = refs
            .flatten()
            .filter(|r| r.target().is_none_or(|id| !self.is_complete(CommitId(id))))
            .filter_map(|r| r.name().ok().map(str::to_string))
            .collect();
        for name in broken {
            tracing::warn!(
                "{name} names a commit that is not here whole; it goes, and the next fetch brings it again"
            );
            if let Ok(mut r) = self.repo.find_reference(&name) {
                let _ = r.delete();
            }
        }
    }

    /// The parked hosts' tips as the last fetch saw them (section 8, Contention).
    pub fn parked(&self) -> Vec<(String, CommitId)> {
        let prefix = format!("{}memory-backup/hosts/", transport::TRACKING_PREFIX);
        let Ok(refs) = self.repo.references_glob(&format!("{prefix}*")) else {
            return Vec::new();
        };
        let mut out: Vec<(String, CommitId)> = refs
            .flatten()
            .filter_map(|r| {
                let host = r.name().ok()?.strip_prefix(&prefix)?.to_string();
                Some((host, CommitId(r.target()?)))
            })
            .filter(|(h, _)| crate::store::files::is_plain_name(h))
            .collect();
        out.sort();
        out
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    pub fn contains(&self, commit: CommitId, ancestor: CommitId) -> Result<bool, GitError> {
        if commit == ancestor {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(commit.0, ancestor.0)
            .map_err(|e| classify_local(&e))
    }

    /// The first parent of `commit`, if it has one.
    pub fn first_parent(&self, commit: CommitId) -> Result<Option<CommitId>, GitError> {
        let c = self
            .repo
            .find_commit(commit.0)
            .map_err(|e| classify_local(&e))?;
        Ok(c.parent_ids().next().map(CommitId))
    }

    /// The top-level names whose entries differ between the trees of commits
    /// `a` and `b`: in one only, or another object or mode.
    pub fn changed_names(&self, a: CommitId, b: CommitId) -> Result<Vec<String>, GitError> {
        let entries = |c: CommitId| -> Result<BTreeMap<Vec<u8>, (git2::Oid, i32)>, GitError> {
            let tree = self
                .repo
                .find_commit(c.0)
                .and_then(|c| c.tree())
                .map_err(|e| classify_local(&e))?;
            Ok(tree
                .iter()
                .map(|e| (e.name_bytes().to_vec(), (e.id(), e.filemode())))
                .collect())
        };
        let (ta, tb) = (entries(a)?, entries(b)?);
        let differ = ta
            .iter()
            .filter(|(n, v)| tb.get(*n) != Some(*v))
            .map(|(n, _)| n);
        let only_b = tb.keys().filter(|n| !ta.contains_key(*n));
        Ok(differ
            .chain(only_b)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect())
    }

    /// A commit's message and committer time (seconds since the epoch).
    pub fn commit_info(&self, commit: CommitId) -> Result<(String, i64), GitError> {
        let c = self
            .repo
            .find_commit(commit.0)
            .map_err(|e| classify_local(&e))?;
        Ok((
            c.message().unwrap_or_default().to_string(),
            c.committer().when().seconds(),
        ))
    }

    /// Whether `commit`, its tree and its top-level files are all here: a tip
    /// whose files are missing is never taken (a server that sent the commit
    /// alone).
    pub fn is_complete(&self, commit: CommitId) -> bool {
        let Ok(c) = self.repo.find_commit(commit.0) else {
            return false;
        };
        let Ok(tree) = c.tree() else { return false };
        let Ok(odb) = self.repo.odb() else {
            return false;
        };
        tree.iter().all(|e| odb.exists(e.id()))
    }

    /// The top-level files of a commit whose names `keep` accepts; names that are
    /// not plain file names are left out and returned apart, never written.
    pub fn read_files(
        &self,
        commit: CommitId,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(Files, Vec<String>), GitError> {
        let tree = self
            .repo
            .find_commit(commit.0)
            .and_then(|c| c.tree())
            .map_err(|e| classify_local(&e))?;
        let mut out = Files::new();
        let mut ignored = Vec::new();
        for item in tree.iter() {
            let name = String::from_utf8_lossy(item.name_bytes()).into_owned();
            if !crate::store::files::is_plain_name(&name) {
                ignored.push(name);
                continue;
            }
            if item.kind() != Some(ObjectType::Blob) || !keep(&name) {
                continue;
            }
            let blob = self
                .repo
                .find_blob(item.id())
                .map_err(|e| classify_local(&e))?;
            out.insert(name, blob.content().to_vec());
        }
        Ok((out, ignored))
    }

    /// Writes a commit of `files` (on the first parent's tree, whose other files
    /// stay) with `parents`, moving no ref. An object whose file a power cut left
    /// empty is written again.
    pub fn write_commit(
        &self,
        files: &Files,
        parents: &[CommitId],
        author: &Author,
        message: &str,
    ) -> Result<CommitId, GitError> {
        let local = |e: git2::Error| classify_local(&e);
        let base = match parents.first() {
            Some(p) => Some(
                self.repo
                    .find_commit(p.0)
                    .and_then(|c| c.tree())
                    .map_err(local)?,
            ),
            None => None,
        };
        let mut builder = self.repo.treebuilder(base.as_ref()).map_err(local)?;
        let odb = self.repo.odb().map_err(local)?;
        for (name, bytes) in files {
            let id = self.write_object(&odb, ObjectType::Blob, bytes)?;
            builder.insert(name, id, 0o100_644).map_err(local)?;
        }
        let mut tree_id = builder.write().map_err(local)?;
        if self.remove_if_empty(tree_id) {
            tree_id = builder.write().map_err(local)?;
        }
        let tree = self.repo.find_tree(tree_id).map_err(local)?;
        let sig = Signature::new(&author.name, &author.email, &Time::new(author.time, 0))
            .map_err(local)?;
        let parent_commits: Vec<git2::Commit<'_>> = parents
            .iter()
            .map(|p| self.repo.find_commit(p.0))
            .collect::<Result<_, _>>()
            .map_err(local)?;
        let refs: Vec<&git2::Commit<'_>> = parent_commits.iter().collect();
        let buf = self
            .repo
            .commit_create_buffer(&sig, &sig, message, &tree, &refs)
            .map_err(local)?;
        let id = self.write_object(&odb, ObjectType::Commit, &buf)?;
        Ok(CommitId(id))
    }

    fn write_object(
        &self,
        odb: &git2::Odb<'_>,
        kind: ObjectType,
        data: &[u8],
    ) -> Result<Oid, GitError> {
        let id = odb.write(kind, data).map_err(|e| classify_local(&e))?;
        // libgit2 writes nothing when the object's file exists: an empty one
        // goes, and the object is written again.
        if self.remove_if_empty(id) {
            return odb.write(kind, data).map_err(|e| classify_local(&e));
        }
        Ok(id)
    }

    /// libgit2 and git take an object whose loose file exists as written, even
    /// when a power cut left that file empty: such a file goes. Whether it was.
    fn remove_if_empty(&self, id: Oid) -> bool {
        let hex = id.to_string();
        let loose = self
            .git_dir()
            .join("objects")
            .join(&hex[..2])
            .join(&hex[2..]);
        std::fs::metadata(&loose).is_ok_and(|m| m.len() == 0)
            && std::fs::remove_file(&loose).is_ok()
    }

    /// Removes every empty loose object file (see `Repo::remove_if_empty`);
    /// how many there were.
    pub fn remove_empty_loose_objects(&self) -> usize {
        let objects = self.git_dir().join("objects");
        let mut removed = 0;
        for b in 0..=255u8 {
            let Ok(entries) = std::fs::read_dir(objects.join(format!("{b:02x}"))) else {
                continue;
            };
            for e in entries.flatten() {
                if e.metadata().is_ok_and(|m| m.is_file() && m.len() == 0)
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Moves the local branch from `expected` to `new`, a compare-and-swap:
    /// `Err(Rejected)` when it moved meanwhile or another process holds its lock.
    pub fn move_branch(
        &self,
        branch: &str,
        new: CommitId,
        expected: Option<CommitId>,
    ) -> Result<(), GitError> {
        let name = format!("refs/heads/{branch}");
        let r = match expected {
            Some(old) => self
                .repo
                .reference_matching(&name, new.0, true, old.0, "memory-backup")
                .map(drop),
            None => self
                .repo
                .reference(&name, new.0, false, "memory-backup")
                .map(drop),
        };
        r.map_err(|e| match e.code() {
            ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked => {
                GitError::Rejected(format!("{name} moved: {}", e.message()))
            }
            _ => classify_local(&e),
        })
    }

    /// The commit that a revision names (an id, a branch, `main~2`); `None` when
    /// it names nothing.
    pub fn resolve(&self, rev: &str) -> Result<Option<CommitId>, GitError> {
        match self.repo.revparse_single(rev) {
            Ok(obj) => Ok(obj.peel_to_commit().ok().map(|c| CommitId(c.id()))),
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::InvalidSpec) => Ok(None),
            Err(e) => Err(classify_local(&e)),
        }
    }

    /// Of the commits reachable from `tips`, the newest made at or before `secs`
    /// (committer time).
    pub fn last_commit_at_or_before(
        &self,
        tips: &[CommitId],
        secs: i64,
    ) -> Result<Option<CommitId>, GitError> {
        let local = |e: git2::Error| classify_local(&e);
        let mut walk = self.repo.revwalk().map_err(local)?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(local)?;
        for tip in tips {
            walk.push(tip.0).map_err(local)?;
        }
        let mut best: Option<(i64, Oid)> = None;
        for id in walk {
            let id = id.map_err(local)?;
            let time = self.commit_info(CommitId(id))?.1;
            if time <= secs && best.is_none_or(|(t, _)| time > t) {
                best = Some((time, id));
            }
        }
        Ok(best.map(|(_, id)| CommitId(id)))
    }

    /// Commits that `local` has and `upstream` lacks, and the other way round.
    pub fn ahead_behind(
        &self,
        local: CommitId,
        upstream: CommitId,
    ) -> Result<(usize, usize), GitError> {
        self.repo
            .graph_ahead_behind(local.0, upstream.0)
            .map_err(|e| classify_local(&e))
    }

    /// The newest commit in `tip`'s history whose file `name` differs from its
    /// first parent's, and when it was made (committer time): when a host last
    /// backed up something. At most `depth` commits are looked at.
    pub fn last_change_of(
        &self,
        tip: CommitId,
        name: &str,
        depth: usize,
    ) -> Option<(CommitId, i64)> {
        let blob_at = |c: &git2::Commit<'_>| c.tree().ok()?.get_name(name).map(|e| e.id());
        let mut at = self.repo.find_commit(tip.0).ok()?;
        for _ in 0..depth {
            let here = blob_at(&at)?;
            let parent = at.parents().next();
            match parent {
                Some(p) if blob_at(&p) == Some(here) => at = p,
                _ => return Some((CommitId(at.id()), at.committer().when().seconds())),
            }
        }
        None
    }

    /// Every commit reachable from `tip`.
    pub fn history(&self, tip: CommitId) -> Result<Vec<CommitId>, GitError> {
        let local = |e: git2::Error| classify_local(&e);
        let mut walk = self.repo.revwalk().map_err(local)?;
        walk.push(tip.0).map_err(local)?;
        walk.map(|id| id.map(CommitId).map_err(local)).collect()
    }

    /// The path of the repository's folder.
    pub fn path(&self) -> PathBuf {
        self.workdir()
            .map_or_else(|| self.git_dir().to_path_buf(), Path::to_path_buf)
    }
}
