//! Fetches and pushes over the git protocol (`git://`), spoken here rather than
//! through libgit2. A push's pack can then be thin and quick to make (see
//! [`crate::pack`]); a fetch's pack of about one commit is read in memory, its
//! deltas applied to objects this repository has, and its objects written loose
//! (see [`crate::unpack`]), where libgit2 would first complete the pack with a
//! recompressed copy of every base; a larger one is kept as a pack with an
//! index made here ([`crate::index_pack`]). ssh and https go through libgit2.
//!
//! A push (git's `gitprotocol-pack`): ask the daemon for `git-receive-pack`,
//! read the refs it advertises, send one command `old new ref` and the pack,
//! read its report. The server moves the ref only if it still points at `old`:
//! the compare-and-swap that keeps concurrent pushes honest.
//!
//! A fetch: ask for `git-upload-pack`, read the refs, want the branch's tip,
//! name the commits this repository has, say `done`, read the one-line answer
//! and the pack.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use git2::{Oid, Repository};

use crate::git::GitError;
use crate::pack::{self, Known, PackError};

/// The git daemon's port.
const DEFAULT_PORT: u16 = 9418;
/// The longest pkt-line payload.
const MAX_PKT: usize = 65520 - 4;

/// Off once a server could not unpack a thin pack: later attempts send whole
/// objects.
static THIN: AtomicBool = AtomicBool::new(true);

/// Where a `git://` URL points.
#[derive(Debug, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// `git://host[:port]/path`; IPv6 hosts in brackets.
pub fn parse_url(url: &str) -> Option<Address> {
    let rest = url.strip_prefix("git://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let (host, port) = crate::git::host_port(authority, DEFAULT_PORT)?;
    (!host.is_empty()).then(|| Address {
        host,
        port,
        path: path.to_string(),
    })
}

/// Pushes `new` to `refs/heads/{branch}` of the `git://` `url` if that ref
/// still points at `expected` (none: does not exist).
pub fn push(
    repo: &Repository,
    url: &str,
    branch: &str,
    new: Oid,
    expected: Option<Oid>,
    known: Known<'_>,
    timeout: Duration,
) -> Result<(), GitError> {
    push_pack(url, branch, new, expected, timeout, |out, thin| {
        pack::write_pack(repo, new, expected, thin, known, out)
    })
}

/// [`push`] of a commit made in memory on `expected`, its only parent: its
/// objects need not be in the repository yet.
pub fn push_staged(
    repo: &Repository,
    url: &str,
    branch: &str,
    staged: &crate::git::Staged<'_>,
    expected: Option<Oid>,
    known: Known<'_>,
    timeout: Duration,
) -> Result<(), GitError> {
    push_pack(
        url,
        branch,
        staged.id.oid(),
        expected,
        timeout,
        |out, thin| pack::write_staged_pack(repo, staged, expected, thin, known, out),
    )
}

/// The exchange of a push, with `pack` writing the pack (thin or not).
fn push_pack(
    url: &str,
    branch: &str,
    new: Oid,
    expected: Option<Oid>,
    timeout: Duration,
    pack: impl FnOnce(&mut BufWriter<TcpStream>, bool) -> Result<usize, PackError>,
) -> Result<(), GitError> {
    let began = std::time::Instant::now();
    let net = |e: io::Error| GitError::Transient(format!("{url}: {e}"));
    let Session {
        mut reader,
        mut writer,
        advertised,
    } = Session::open(url, Service::ReceivePack, timeout)?;
    tracing::debug!("{url}: refs advertised at {:?}", began.elapsed());

    let refname = format!("refs/heads/{branch}");
    let current = advertised.refs.get(&refname).copied();
    if current != expected {
        // Nothing to send: say so, as git does, and let the caller fetch again.
        let _ = writer.write_all(b"0000").and_then(|()| writer.flush());
        return Err(GitError::Rejected(format!(
            "the remote refused the push: {refname} moved to {} meanwhile",
            current.map_or_else(|| "nothing".to_string(), |c| c.to_string())
        )));
    }
    let caps = &advertised.capabilities;
    if !caps.iter().any(|c| c == "report-status") {
        return Err(GitError::Other(format!(
            "{url}: the server does not report the result of a push"
        )));
    }
    let side_band = caps.iter().any(|c| c == "side-band-64k");
    let mut wanted = vec!["report-status".to_string()];
    if side_band {
        wanted.push("side-band-64k".to_string());
    }
    wanted.push(format!("agent=memory-backup/{}", env!("CARGO_PKG_VERSION")));
    let old = expected.unwrap_or(Oid::ZERO_SHA1);
    let command = format!("{old} {new} {refname}\0{}", wanted.join(" "));
    write_pkt(&mut writer, command.as_bytes()).map_err(net)?;
    writer.write_all(b"0000").map_err(net)?;
    let thin = THIN.load(Ordering::Relaxed) && !caps.iter().any(|c| c == "no-thin");
    let deltas = pack(&mut writer, thin).map_err(|e| match e {
        PackError::Io(e) => GitError::Transient(format!("{url}: sending the pack: {e}")),
        PackError::Git(e) => match crate::git::other(e) {
            GitError::Damaged(m) => GitError::Damaged(format!("cannot pack the push: {m}")),
            e => GitError::Other(format!("cannot pack the push: {e}")),
        },
    })?;
    writer.flush().map_err(net)?;
    tracing::debug!(
        "{url}: pack sent at {:?}, {deltas} object(s) as deltas",
        began.elapsed()
    );

    let (report, said) = if side_band {
        demultiplex(&mut reader, url)?
    } else {
        (read_until_flush(&mut reader).map_err(net)?, Vec::new())
    };
    let mut lines = report.iter().map(|l| String::from_utf8_lossy(l));
    match lines.next().as_deref().map(str::trim_end) {
        Some("unpack ok") => {}
        other => {
            if thin {
                THIN.store(false, Ordering::Relaxed);
            }
            return Err(GitError::Transient(format!(
                "{url}: the server could not take the pack: {}",
                other.unwrap_or("no report")
            )));
        }
    }
    for line in lines {
        let line = line.trim_end();
        if line == format!("ok {refname}") {
            return Ok(());
        }
        if let Some(why) = line.strip_prefix(&format!("ng {refname} ")) {
            return Err(crate::git::refusal(
                &refname,
                why,
                &String::from_utf8_lossy(&said),
            ));
        }
    }
    Err(GitError::Transient(format!(
        "{url}: the server's report does not mention {refname}"
    )))
}

/// The service asked of the daemon.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

/// A connection to a daemon's service, past its ref advertisement.
struct Session {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    advertised: Advertised,
}

impl Session {
    fn open(url: &str, service: Service, timeout: Duration) -> Result<Session, GitError> {
        let address =
            parse_url(url).ok_or_else(|| GitError::Other(format!("{url}: not a git:// URL")))?;
        let net = |e: io::Error| GitError::Transient(format!("{url}: {e}"));
        let stream = connect(&address, timeout).map_err(net)?;
        let mut reader = BufReader::with_capacity(1 << 16, stream.try_clone().map_err(net)?);
        let mut writer = BufWriter::with_capacity(1 << 16, stream);
        let host = if address.port == DEFAULT_PORT {
            address.host.clone()
        } else if address.host.contains(':') {
            format!("[{}]:{}", address.host, address.port)
        } else {
            format!("{}:{}", address.host, address.port)
        };
        let name = match service {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        };
        let request = format!("{name} {}\0host={host}\0", address.path);
        write_pkt(&mut writer, request.as_bytes()).map_err(net)?;
        writer.flush().map_err(net)?;
        let advertised = read_advertisement(&mut reader, url, service)?;
        Ok(Session {
            reader,
            writer,
            advertised,
        })
    }

    /// Ends the exchange without asking for anything, as git does.
    fn close(mut self) {
        let _ = self
            .writer
            .write_all(b"0000")
            .and_then(|()| self.writer.flush());
    }
}

/// A pack with at most this many objects (about one commit's) is read here,
/// each object written loose; a larger one (a host some commits behind) is kept
/// as a pack with an index made here ([`crate::index_pack`]): its deltas take
/// less room and less time than as many whole objects compressed again.
const LOOSE_MAX_OBJECTS: u32 = 6;
/// A pack that grows past this many bytes (a host very far behind) goes to
/// libgit2's indexer, which writes it to disk as it comes: the memory a fetch
/// holds stays bounded.
const MEMORY_MAX_BYTES: usize = 64 << 20;

/// Fetches `refs/heads/{branch}` of the `git://` `url` into `repo`'s object
/// database, writing no ref, telling the server of the commits `haves`; the
/// remote tip, none when the remote has no such branch. `proceed` is asked,
/// once the refs are listed, before anything is written: `Err(None)` when it
/// says no.
pub fn fetch(
    repo: &Repository,
    url: &str,
    branch: &str,
    haves: &[Oid],
    timeout: Duration,
    proceed: impl FnOnce() -> bool,
    fetched: &mut Fetched,
) -> Result<Option<Oid>, Option<GitError>> {
    let began = std::time::Instant::now();
    let net = |e: io::Error| GitError::Transient(format!("{url}: {e}"));
    let session = Session::open(url, Service::UploadPack, timeout)?;
    let refname = format!("refs/heads/{branch}");
    let Some(tip) = session.advertised.refs.get(&refname).copied() else {
        session.close();
        return Ok(None);
    };
    if repo.find_commit(tip).is_ok() {
        session.close();
        return Ok(Some(tip));
    }
    if !proceed() {
        session.close();
        return Err(None);
    }
    let caps = &session.advertised.capabilities;
    let offered = |c: &str| caps.iter().any(|a| a == c);
    let band = if offered("side-band-64k") {
        Some("side-band-64k")
    } else if offered("side-band") {
        Some("side-band")
    } else {
        None
    };
    let mut wanted: Vec<String> = band.into_iter().map(str::to_string).collect();
    for c in ["ofs-delta", "thin-pack", "no-progress"] {
        if offered(c) {
            wanted.push(c.to_string());
        }
    }
    wanted.push(format!("agent=memory-backup/{}", env!("CARGO_PKG_VERSION")));
    let Session {
        mut reader,
        mut writer,
        ..
    } = session;
    let want = format!("want {tip} {}\n", wanted.join(" "));
    write_pkt(&mut writer, want.as_bytes()).map_err(net)?;
    writer.write_all(b"0000").map_err(net)?;
    for have in haves {
        write_pkt(&mut writer, format!("have {have}\n").as_bytes()).map_err(net)?;
    }
    write_pkt(&mut writer, b"done\n").map_err(net)?;
    writer.flush().map_err(net)?;
    // Without multi_ack, one line: the first common commit, or none.
    let answer = read_pkt(&mut reader).map_err(net)?.unwrap_or_default();
    if !(answer.starts_with(b"ACK ") || answer.starts_with(b"NAK")) {
        let text = String::from_utf8_lossy(&answer);
        let text = text.trim_end();
        return Err(Some(match text.strip_prefix("ERR ") {
            Some(msg) => GitError::Other(format!("{url}: {msg}")),
            None => GitError::Transient(format!("{url}: not an answer to a fetch: {text:?}")),
        }));
    }
    let odb = repo.odb().map_err(|e| Some(crate::git::other(e)))?;
    // A first fetch (nothing here to name) brings the whole history: libgit2
    // writes it to disk as it comes, and nothing in it leans on objects here.
    let mut sink = if haves.is_empty() {
        PackSink::Writer(odb.packwriter().map_err(|e| Some(crate::git::other(e)))?)
    } else {
        PackSink::Memory(repo, &odb, Vec::new())
    };
    match band {
        Some(_) => {
            while let Some(pkt) = read_pkt(&mut reader).map_err(net)? {
                match pkt.split_first() {
                    Some((1, data)) => sink.write(data)?,
                    Some((3, msg)) => {
                        return Err(Some(GitError::Transient(format!(
                            "{url}: {}",
                            String::from_utf8_lossy(msg).trim_end()
                        ))));
                    }
                    _ => {}
                }
            }
        }
        None => {
            let mut buf = vec![0; 1 << 16];
            loop {
                let n = reader.read(&mut buf).map_err(net)?;
                if n == 0 {
                    break;
                }
                sink.write(&buf[..n])?;
            }
        }
    }
    tracing::debug!("{url}: pack received at {:?}", began.elapsed());
    sink.finish(url, fetched)?;
    tracing::debug!("{url}: pack stored at {:?}", began.elapsed());
    if repo.find_commit(tip).is_err() {
        return Err(Some(GitError::Transient(format!(
            "the fetch of {refname} did not bring its tip {tip}"
        ))));
    }
    Ok(Some(tip))
}

/// Where a fetched pack goes: into memory while it is small, to libgit2's
/// pack writer once its header says it is large.
enum PackSink<'o> {
    Memory(&'o Repository, &'o git2::Odb<'o>, Vec<u8>),
    Writer(git2::OdbPackwriter<'o>),
}

impl<'o> PackSink<'o> {
    fn write(&mut self, data: &[u8]) -> Result<(), GitError> {
        match self {
            PackSink::Memory(_, odb, buf) => {
                let odb: &'o git2::Odb<'o> = odb;
                buf.extend_from_slice(data);
                if buf.len() > MEMORY_MAX_BYTES {
                    let mut writer = odb.packwriter().map_err(crate::git::other)?;
                    writer.write_all(buf).map_err(|_| pack_writer_error())?;
                    *self = PackSink::Writer(writer);
                }
                Ok(())
            }
            PackSink::Writer(w) => w.write_all(data).map_err(|_| pack_writer_error()),
        }
    }

    fn finish(self, url: &str, fetched: &mut Fetched) -> Result<(), GitError> {
        match self {
            PackSink::Memory(repo, odb, pack) => {
                if pack.is_empty() {
                    return Ok(());
                }
                let few =
                    crate::unpack::object_count(&pack).is_some_and(|n| n <= LOOSE_MAX_OBJECTS);
                let stored = if few {
                    store_loose(repo, odb, &pack, fetched)
                } else {
                    // A pack it cannot index (one that holds an object twice) is
                    // still stored, loose.
                    keep_pack(repo, odb, &pack, fetched).or_else(|e| match e {
                        Stored::Bad(m) => {
                            tracing::debug!("the pack is stored loose: {m}");
                            store_loose(repo, odb, &pack, fetched)
                        }
                        e => Err(e),
                    })
                };
                stored.map_err(|e| match e {
                    Stored::Bad(m) => GitError::Transient(format!("{url}: a bad pack: {m}")),
                    Stored::Write(e) => e,
                })
            }
            PackSink::Writer(mut w) => w.commit().map(drop).map_err(|e| stored_pack_error(&e)),
        }
    }
}

enum Stored {
    Bad(String),
    Write(GitError),
}

/// Blobs that a fetch made whole, by id, up to a bound.
#[derive(Debug)]
pub struct Fetched {
    blobs: HashMap<Oid, Vec<u8>>,
    bytes: usize,
    /// At most this many bytes of blobs are kept.
    max_bytes: usize,
}

impl Default for Fetched {
    fn default() -> Fetched {
        Fetched::new()
    }
}

impl Fetched {
    pub fn new() -> Fetched {
        Fetched::at_most(256 << 20)
    }

    fn at_most(max_bytes: usize) -> Fetched {
        Fetched {
            blobs: HashMap::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Keeps `data`, a blob of id `id`, unless that goes past the bound.
    fn keep(&mut self, id: Oid, data: Vec<u8>) {
        if self.bytes + data.len() <= self.max_bytes && !self.blobs.contains_key(&id) {
            self.bytes += data.len();
            self.blobs.insert(id, data);
        }
    }

    pub fn get(&self, id: &Oid) -> Option<&Vec<u8>> {
        self.blobs.get(id)
    }

    pub fn extend(&mut self, other: Fetched) {
        for (id, data) in other.blobs {
            self.keep(id, data);
        }
    }
}

/// The kind and data of the object `id` of `odb`: a fetched delta's base.
fn here<'o>(odb: &'o git2::Odb<'_>) -> impl FnMut(Oid) -> Option<(git2::ObjectType, Vec<u8>)> + 'o {
    |id| odb.read(id).ok().map(|o| (o.kind(), o.data().to_vec()))
}

/// Every object of the small `pack` written as a loose object, commits last;
/// its blobs go to `fetched`.
fn store_loose(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    pack: &[u8],
    fetched: &mut Fetched,
) -> Result<(), Stored> {
    let objects = crate::unpack::read_pack(pack, here(odb)).map_err(Stored::Bad)?;
    let dir = repo.commondir().join("objects");
    for object in crate::unpack::write_order(&objects) {
        if crate::loose::is_whole(odb, &dir, object.id) {
            continue;
        }
        crate::loose::write_object(&dir, object.kind, object.id, &object.data).map_err(|e| {
            Stored::Write(GitError::local(format!(
                "{}: cannot write a fetched object: {e}",
                dir.display()
            )))
        })?;
    }
    for o in objects {
        if o.kind == git2::ObjectType::Blob {
            fetched.keep(o.id, o.data);
        }
    }
    Ok(())
}

/// The pack kept as it came, with the bases it leans on appended and an index;
/// the blobs that no delta of it leans on go to `fetched`.
fn keep_pack(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    pack: &[u8],
    fetched: &mut Fetched,
) -> Result<(), Stored> {
    let dir = repo.commondir().join("objects").join("pack");
    // libgit2 looks for new packs only in a folder that was there when it
    // opened the repository.
    if !dir.is_dir() {
        return store_loose(repo, odb, pack, fetched);
    }
    let mut made = Fetched::new();
    let kept = crate::index_pack::keep(pack, &dir, here(odb), |id, kind, data| {
        if let (git2::ObjectType::Blob, std::borrow::Cow::Owned(data)) = (kind, data) {
            made.keep(id, data);
        }
    })
    .map_err(|e| match e {
        crate::index_pack::KeepError::Bad(m) => Stored::Bad(m),
        crate::index_pack::KeepError::Write(e) => Stored::Write(GitError::local(format!(
            "{}: cannot write a fetched pack: {e}",
            dir.display()
        ))),
    })?;
    tracing::debug!(
        "kept {} ({} objects, {} bases appended)",
        kept.pack.display(),
        kept.objects,
        kept.appended
    );
    // Only once the pack is in place: what is read from here is also there.
    fetched.extend(made);
    Ok(())
}

/// libgit2's own account of why its pack writer failed: git2's `Write` for it
/// says only "Write error".
fn pack_writer_error() -> GitError {
    stored_pack_error(&git2::Error::last_error(-1))
}

/// A full disk is this machine's to mend ([`GitError::LocalWrite`]); anything
/// else (a pack that does not index) is worth fetching again.
fn stored_pack_error(e: &git2::Error) -> GitError {
    match GitError::local(format!("cannot store the fetched pack: {}", e.message())) {
        GitError::Other(m) => GitError::Transient(m),
        no_room => no_room,
    }
}

fn connect(address: &Address, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (address.host.as_str(), address.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{}: no address", address.host))))
}

/// The refs a server advertises and its capabilities.
#[derive(Debug, Default)]
struct Advertised {
    refs: HashMap<String, Oid>,
    capabilities: Vec<String>,
}

fn read_advertisement(
    r: &mut impl BufRead,
    url: &str,
    service: Service,
) -> Result<Advertised, GitError> {
    let net = |e: io::Error| GitError::Transient(format!("{url}: {e}"));
    let mut out = Advertised::default();
    let mut first = true;
    while let Some(line) = read_pkt(r).map_err(net)? {
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(msg) = line.strip_prefix(b"ERR ") {
            let msg = String::from_utf8_lossy(msg);
            let lower = msg.to_lowercase();
            return Err(
                if lower.contains("not exported") || lower.contains("no such repository") {
                    GitError::NotFound(match service {
                        // The fetch just read it: more likely pushes are not enabled.
                        Service::ReceivePack => format!(
                            "{url}: {msg} (for pushes, git daemon needs --enable=receive-pack)"
                        ),
                        Service::UploadPack => format!("{url}: {msg}"),
                    })
                } else {
                    GitError::Other(format!("{url}: {msg}"))
                },
            );
        }
        if line.starts_with(b"shallow ") {
            // A shallow server repository: says nothing about refs.
            continue;
        }
        let (refpart, caps) = match line.iter().position(|&b| b == 0) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        if first {
            if let Some(caps) = caps {
                out.capabilities = String::from_utf8_lossy(caps)
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            first = false;
        }
        let text = String::from_utf8_lossy(refpart);
        let bad = || GitError::Transient(format!("{url}: not a ref advertisement: {text:?}"));
        let (oid, name) = text.split_once(' ').ok_or_else(bad)?;
        let oid = Oid::from_str(oid).map_err(|_| bad())?;
        if !oid.is_zero() {
            out.refs.insert(name.to_string(), oid);
        }
    }
    if first {
        return Err(GitError::Transient(format!(
            "{url}: the server closed the connection without a word"
        )));
    }
    Ok(out)
}

/// The data of band 1 until the flush, as pkt-lines; band 2 is progress, band 3
/// an error from the server.
/// Returns as soon as the report inside is whole: the server sends the outer flush
/// only after its hooks have run, and the push has landed by then.
fn demultiplex(r: &mut impl BufRead, url: &str) -> Result<(Vec<Vec<u8>>, Vec<u8>), GitError> {
    let net = |e: io::Error| GitError::Transient(format!("{url}: {e}"));
    let mut data = Vec::new();
    let mut said = Vec::new();
    while let Some(pkt) = read_pkt(r).map_err(net)? {
        match pkt.split_first() {
            Some((1, rest)) => {
                data.extend_from_slice(rest);
                if let Some(report) = whole_report(&data) {
                    return Ok((report, said));
                }
            }
            // What the server prints: its last words kept, for a refusal to quote.
            Some((2, msg)) => crate::git::keep_said(&mut said, msg),
            Some((3, msg)) => {
                return Err(GitError::Transient(format!(
                    "{url}: {}",
                    String::from_utf8_lossy(msg).trim_end()
                )));
            }
            _ => {}
        }
    }
    whole_report(&data)
        .map(|report| (report, said))
        .ok_or_else(|| GitError::Transient(format!("{url}: the server's report ended early")))
}

/// The pkt-lines of `data` up to a flush, if the flush is there.
fn whole_report(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    read_until_flush(&mut &data[..]).ok()
}

fn read_until_flush(r: &mut impl Read) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while let Some(line) = read_pkt(r)? {
        out.push(line);
    }
    Ok(out)
}

/// One pkt-line's payload; none for a flush (`0000`).
fn read_pkt(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = std::str::from_utf8(&len)
        .ok()
        .and_then(|s| usize::from_str_radix(s, 16).ok())
        .ok_or_else(|| io::Error::other(format!("not a pkt-line length: {len:?}")))?;
    if len < 4 {
        return Ok(None);
    }
    let mut buf = vec![0; len - 4];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

fn write_pkt(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PKT {
        return Err(io::Error::other("a pkt-line too long"));
    }
    write!(w, "{:04x}", payload.len() + 4)?;
    w.write_all(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetched_pack_that_holds_an_object_twice_is_stored_loose() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let odb = repo.odb().unwrap();
        let blobs: Vec<Vec<u8>> = (0..7).map(|i| format!("blob {i}\n").into_bytes()).collect();
        let mut listed: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        listed.push(&blobs[0]);
        let entries: Vec<_> = listed.iter().map(|b| (3, None, b.len(), *b)).collect();
        let pack = crate::unpack::tests::pack_of(&entries);
        let mut fetched = Fetched::new();
        PackSink::Memory(&repo, &odb, pack)
            .finish("git://127.0.0.1/r.git", &mut fetched)
            .unwrap();
        for b in &blobs {
            let id = crate::loose::blob_id(b);
            assert!(
                crate::loose::path(&dir.path().join("objects"), id).exists(),
                "{id} not loose"
            );
            assert_eq!(odb.read(id).unwrap().data(), b.as_slice());
            assert_eq!(fetched.get(&id), Some(b));
        }
        let packs = std::fs::read_dir(dir.path().join("objects/pack"))
            .unwrap()
            .count();
        assert_eq!(packs, 0, "a pack was left");
    }

    #[test]
    fn fetched_blobs_are_kept_up_to_their_bound_and_once_each() {
        let id = |b: u8| Oid::from_bytes(&[b; 20]).unwrap();
        let mut f = Fetched::at_most(100);
        f.keep(id(1), vec![1; 90]);
        f.keep(id(2), vec![2; 11]);
        assert!(f.get(&id(2)).is_none(), "kept past the bound");
        f.keep(id(3), vec![3; 10]);
        assert_eq!(f.get(&id(3)), Some(&vec![3; 10]));
        f.keep(id(3), vec![4; 0]);
        assert_eq!(f.get(&id(3)), Some(&vec![3; 10]), "replaced");
        assert_eq!(f.bytes, 100);
        // Room for one of the two only, whichever comes first.
        let mut g = Fetched::at_most(95);
        g.extend(f);
        assert_eq!(g.blobs.len(), 1);
        assert!(g.bytes == 90 || g.bytes == 10, "{}", g.bytes);
    }

    #[test]
    fn git_urls_give_host_port_and_path() {
        let a = |host: &str, port, path: &str| {
            Some(Address {
                host: host.into(),
                port,
                path: path.into(),
            })
        };
        assert_eq!(
            parse_url("git://example.org/r.git"),
            a("example.org", 9418, "/r.git")
        );
        assert_eq!(
            parse_url("git://127.0.0.1:9419/a/b.git"),
            a("127.0.0.1", 9419, "/a/b.git")
        );
        assert_eq!(parse_url("git://[::1]:9/r"), a("::1", 9, "/r"));
        assert_eq!(parse_url("git://[::1]/~u/r"), a("::1", 9418, "/~u/r"));
        assert_eq!(parse_url("git://host:port/r"), None);
        assert_eq!(parse_url("git://host"), None);
        assert_eq!(parse_url("ssh://host/r"), None);
    }

    #[test]
    fn pkt_lines_round_trip_and_end_at_a_flush() {
        let mut buf = Vec::new();
        write_pkt(&mut buf, b"hello\n").unwrap();
        write_pkt(&mut buf, b"").unwrap();
        buf.extend_from_slice(b"0000");
        assert_eq!(&buf[..10], b"000ahello\n");
        let lines = read_until_flush(&mut buf.as_slice()).unwrap();
        assert_eq!(lines, vec![b"hello\n".to_vec(), Vec::new()]);
        assert!(read_pkt(&mut &b"zzzz"[..]).is_err());
        assert!(read_pkt(&mut &b"0009ab"[..]).is_err(), "a short line");
    }

    #[test]
    fn advertisements_give_refs_capabilities_and_errors() {
        let mut buf = Vec::new();
        let a = "1".repeat(40);
        write_pkt(
            &mut buf,
            format!("{a} refs/heads/main\0report-status side-band-64k\n").as_bytes(),
        )
        .unwrap();
        write_pkt(
            &mut buf,
            format!("{} refs/heads/x\n", "2".repeat(40)).as_bytes(),
        )
        .unwrap();
        // A shallow server repository says so among the refs.
        write_pkt(&mut buf, format!("shallow {}\n", "3".repeat(40)).as_bytes()).unwrap();
        buf.extend_from_slice(b"0000");
        let adv =
            read_advertisement(&mut buf.as_slice(), "git://h/r", Service::ReceivePack).unwrap();
        assert_eq!(adv.refs["refs/heads/main"].to_string(), a);
        assert_eq!(adv.refs.len(), 2);
        assert_eq!(adv.capabilities, vec!["report-status", "side-band-64k"]);

        let mut empty = Vec::new();
        write_pkt(
            &mut empty,
            format!("{} capabilities^{{}}\0report-status\n", "0".repeat(40)).as_bytes(),
        )
        .unwrap();
        empty.extend_from_slice(b"0000");
        let adv =
            read_advertisement(&mut empty.as_slice(), "git://h/r", Service::ReceivePack).unwrap();
        assert!(adv.refs.is_empty());
        assert_eq!(adv.capabilities, vec!["report-status"]);

        let mut err = Vec::new();
        write_pkt(
            &mut err,
            b"ERR access denied or repository not exported: /r",
        )
        .unwrap();
        let e =
            read_advertisement(&mut err.as_slice(), "git://h/r", Service::ReceivePack).unwrap_err();
        assert!(matches!(e, GitError::NotFound(_)), "{e:?}");

        let e =
            read_advertisement(&mut &b"0000"[..], "git://h/r", Service::UploadPack).unwrap_err();
        assert!(e.is_retryable(), "{e:?}");
    }

    #[test]
    fn side_band_data_is_joined_and_messages_kept_apart() {
        let mut inner = Vec::new();
        write_pkt(&mut inner, b"unpack ok\n").unwrap();
        write_pkt(&mut inner, b"ok refs/heads/main\n").unwrap();
        inner.extend_from_slice(b"0000");
        let mut buf = Vec::new();
        write_pkt(&mut buf, &[&[2u8][..], b"Resolving deltas\r"].concat()).unwrap();
        let (a, b) = inner.split_at(7);
        write_pkt(&mut buf, &[&[1u8][..], a].concat()).unwrap();
        write_pkt(&mut buf, &[&[1u8][..], b].concat()).unwrap();
        buf.extend_from_slice(b"0000");
        let (lines, said) = demultiplex(&mut buf.as_slice(), "git://h/r").unwrap();
        assert_eq!(
            lines,
            vec![b"unpack ok\n".to_vec(), b"ok refs/heads/main\n".to_vec()]
        );
        assert_eq!(said, b"Resolving deltas\r");

        // The report is whole before the server's last flush, which comes only
        // after its hooks: it is taken without waiting.
        let mut early = Vec::new();
        write_pkt(&mut early, &[&[1u8][..], &inner].concat()).unwrap();
        let (lines, _) = demultiplex(&mut early.as_slice(), "git://h/r").unwrap();
        assert_eq!(lines.len(), 2);

        let mut fatal = Vec::new();
        write_pkt(&mut fatal, &[&[3u8][..], b"disk full\n"].concat()).unwrap();
        let e = demultiplex(&mut fatal.as_slice(), "git://h/r").unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
    }
}
