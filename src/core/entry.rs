//! Stamped entries: the canonical JSON of one record and its `_crdt_metadata`,
//! and the host and unified files that hold them (section 6).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::clock::Timestamp;
use crate::core::json;
use crate::core::record::{self, METADATA_TOKEN, ParseError, member_cut};
use crate::sys;

/// Versions of other lineages of the same identity that a version was made on
/// top of: `unique_id` to version. Empty for most entries, and then not written.
pub type Seen = BTreeMap<Arc<str>, u64>;

/// One addition of an observation of an MCP entity: the lineage that made it
/// (`None`: the entry's own) and the version of it that added the observation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    pub lineage: Option<Arc<str>>,
    pub version: u64,
}

/// The additions one observation stands on.
pub type Dots = Vec<Dot>;

/// `{host, timestamp, version, unique_id}` of one version of an entry, and what
/// deletions need: `deleted`, `seen` and the observations' `dots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The host that wrote this version.
    pub host: Arc<str>,
    /// When this version was written.
    pub timestamp: Timestamp,
    /// 1 for a new entry, one more for each change.
    pub version: u64,
    /// The name of the lineage, given by its first version; never changes.
    pub unique_id: Arc<str>,
    /// A tombstone: the entry was deleted.
    pub deleted: bool,
    /// The versions of other lineages of this identity that this one has seen.
    pub seen: Seen,
    /// The additions that each observation stands on, one list per item of
    /// `observations` (several when hosts added it concurrently); `None`: every
    /// one was added by this lineage at this version.
    pub dots: Option<Vec<Dots>>,
    /// Fields of the metadata object that this version does not know, kept as
    /// canonical `"key":value` members in key order.
    pub extra: Box<[Box<str>]>,
}

/// Why an entry's `_crdt_metadata` is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl Metadata {
    /// Metadata of a version this host writes now.
    pub fn new(host: &Arc<str>, timestamp: Timestamp, version: u64, unique_id: Arc<str>) -> Self {
        Metadata {
            host: host.clone(),
            timestamp,
            version,
            unique_id,
            deleted: false,
            seen: Seen::new(),
            dots: None,
            extra: Box::default(),
        }
    }

    /// The dots of observation `i`.
    pub fn dots(&self, i: usize) -> Dots {
        match self.dots.as_ref().and_then(|d| d.get(i)) {
            Some(d) => d.clone(),
            None => vec![Dot {
                lineage: None,
                version: self.version,
            }],
        }
    }

    /// Whether this version has seen `version` of lineage `unique_id` (its own
    /// lineage up to itself, others as `seen` says).
    pub fn has_seen(&self, unique_id: &str, version: u64) -> bool {
        if *self.unique_id == *unique_id {
            return version <= self.version;
        }
        self.seen.get(unique_id).is_some_and(|&v| version <= v)
    }

    /// Reads the canonical JSON of a `_crdt_metadata` value.
    pub fn read(text: &[u8], hosts: &mut HostNames) -> Result<Metadata, MetadataError> {
        match Metadata::read_usual(text, hosts) {
            Some(m) => Ok(m),
            None => Metadata::read_any(text, hosts),
        }
    }

    /// The metadata as this tool writes it for most entries, matched byte by byte:
    /// the four usual keys in order, strings without escapes, a canonical
    /// timestamp. `None` for anything else, which [`Metadata::read_any`] reads.
    fn read_usual(text: &[u8], hosts: &mut HostNames) -> Option<Metadata> {
        let rest = text.strip_prefix(b"{\"host\":\"")?;
        let (host, rest) = plain_bytes(rest)?;
        let rest = rest.strip_prefix(b",\"timestamp\":\"")?;
        let (ts, rest) = plain_bytes(rest)?;
        let rest = rest.strip_prefix(b",\"unique_id\":\"")?;
        let (unique_id, rest) = plain_bytes(rest)?;
        let digits = rest.strip_prefix(b",\"version\":")?.strip_suffix(b"}")?;
        let version = parse_u64(digits).filter(|&v| v >= 1)?;
        if host.is_empty() || unique_id.is_empty() {
            return None;
        }
        Some(Metadata {
            host: hosts.intern(std::str::from_utf8(host).ok()?),
            timestamp: Timestamp::parse_canonical(ts)?,
            version,
            unique_id: std::str::from_utf8(unique_id).ok()?.into(),
            deleted: false,
            seen: Seen::new(),
            dots: None,
            extra: Box::default(),
        })
    }

    fn read_any(text: &[u8], hosts: &mut HostNames) -> Result<Metadata, MetadataError> {
        let bad = |s: &str| Err(MetadataError(format!("_crdt_metadata.{s}")));
        if text.first() != Some(&b'{') {
            return Err(MetadataError("_crdt_metadata is not an object".into()));
        }
        let utf8 = std::str::from_utf8(text).expect("canonical JSON is UTF-8");
        let at = |part: &[u8]| part.as_ptr() as usize - text.as_ptr() as usize;
        let string = |v: &[u8]| (v[0] == b'"').then(|| json::decode_str(v).into_owned());
        let (mut host, mut timestamp, mut version, mut unique_id) = (None, None, None, None);
        let mut deleted = false;
        let mut seen = Seen::new();
        let mut dots = None;
        let mut extra = Vec::new();
        for (key, value) in json::canonical_members(text) {
            match key {
                b"\"host\"" => host = string(value),
                b"\"timestamp\"" => timestamp = string(value),
                b"\"unique_id\"" => unique_id = string(value),
                b"\"version\"" => version = parse_u64(value),
                b"\"deleted\"" => match value {
                    b"true" => deleted = true,
                    b"false" => {}
                    _ => return bad("deleted is not true or false"),
                },
                b"\"seen\"" => match read_seen(value) {
                    Some(s) => seen = s,
                    None => return bad("seen is not an object of unique_ids and versions"),
                },
                b"\"dots\"" => match read_dots(value) {
                    Some(d) => dots = Some(d),
                    None => return bad("dots is not a list of versions"),
                },
                _ => {
                    let start = at(key);
                    extra.push(utf8[start..start + key.len() + 1 + value.len()].into());
                }
            }
        }
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return bad("host is missing or not a non-empty string");
        };
        let Some(ts) = timestamp else {
            return bad("timestamp is missing or not a string");
        };
        let Some(timestamp) = Timestamp::parse(&ts) else {
            return Err(MetadataError(format!(
                "_crdt_metadata.timestamp {ts:?} is not an RFC 3339 timestamp"
            )));
        };
        let Some(version) = version.filter(|&v| v >= 1) else {
            return bad("version is missing or not a whole number from 1 to 18446744073709551615");
        };
        let Some(unique_id) = unique_id.filter(|u| !u.is_empty()) else {
            return bad("unique_id is missing or not a non-empty string");
        };
        Ok(Metadata {
            host: hosts.intern(&host),
            timestamp,
            version,
            unique_id: unique_id.into(),
            deleted,
            seen,
            dots,
            extra: extra.into_boxed_slice(),
        })
    }

    /// The canonical JSON of this metadata, appended to `out`: the members this
    /// version knows, in key order, and the others (`extra`, in key order too)
    /// each where its key falls among them.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut extra = self.extra.iter().map(|e| e.as_bytes()).peekable();
        let mut first = true;
        // Starts the member `key` (a string token), after the others before it.
        let mut member = |out: &mut Vec<u8>, key: &[u8]| {
            while let Some(e) = extra.next_if(|e| json::cmp_keys(&e[..key_len(e)], key).is_lt()) {
                out.push(if first { b'{' } else { b',' });
                first = false;
                out.extend_from_slice(e);
            }
            out.push(if first { b'{' } else { b',' });
            first = false;
            out.extend_from_slice(key);
            out.push(b':');
        };
        if self.deleted {
            member(out, b"\"deleted\"");
            out.extend_from_slice(b"true");
        }
        if let Some(dots) = &self.dots {
            member(out, b"\"dots\"");
            out.push(b'[');
            for (i, d) in dots.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_dots(out, d);
            }
            out.push(b']');
        }
        member(out, b"\"host\"");
        json::write_str(out, &self.host);
        if !self.seen.is_empty() {
            member(out, b"\"seen\"");
            out.push(b'{');
            for (i, (uid, version)) in self.seen.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::write_str(out, uid);
                out.push(b':');
                write_u64(out, *version);
            }
            out.push(b'}');
        }
        member(out, b"\"timestamp\"");
        write_timestamp(out, self.timestamp);
        member(out, b"\"unique_id\"");
        json::write_str(out, &self.unique_id);
        member(out, b"\"version\"");
        write_u64(out, self.version);
        for e in extra {
            out.push(b',');
            out.extend_from_slice(e);
        }
        out.push(b'}');
    }
}

fn read_seen(value: &[u8]) -> Option<Seen> {
    if value.first() != Some(&b'{') {
        return None;
    }
    let mut seen = Seen::new();
    for (key, v) in json::canonical_members(value) {
        let uid = json::decode_str(key);
        let version = parse_u64(v).filter(|&n| n >= 1)?;
        if uid.is_empty() {
            return None;
        }
        seen.insert(uid.into_owned().into(), version);
    }
    Some(seen)
}

/// The dots of one observation: `n` (this lineage's version `n`), `[uid, n]`, or
/// a list of `[uid, n]` (`null` for this lineage) when there are several.
fn write_dots(v: &mut Vec<u8>, dots: &Dots) {
    let one = |v: &mut Vec<u8>, d: &Dot, own_as_number: bool| match &d.lineage {
        None if own_as_number => write_u64(v, d.version),
        lineage => {
            v.push(b'[');
            match lineage {
                Some(l) => json::write_str(v, l),
                None => v.extend_from_slice(b"null"),
            }
            v.push(b',');
            write_u64(v, d.version);
            v.push(b']');
        }
    };
    match dots.as_slice() {
        [d] => one(v, d, true),
        many => {
            v.push(b'[');
            for (i, d) in many.iter().enumerate() {
                if i > 0 {
                    v.push(b',');
                }
                one(v, d, false);
            }
            v.push(b']');
        }
    }
}

fn read_dots(value: &[u8]) -> Option<Vec<Dots>> {
    let pair = |item: &[u8]| -> Option<Dot> {
        let parts = json_items(item)?;
        let [uid, version] = parts.as_slice() else {
            return None;
        };
        let lineage = match uid.first() {
            Some(b'"') => Some(json::decode_str(uid).into_owned().into()),
            Some(b'n') if *uid == b"null" => None,
            _ => return None,
        };
        Some(Dot {
            lineage,
            version: parse_u64(version).filter(|&n| n >= 1)?,
        })
    };
    json_items(value)?
        .into_iter()
        .map(|item| match item.first() {
            Some(b'[') => match item.get(1) {
                Some(b'[') => json_items(item)?.into_iter().map(pair).collect(),
                _ => pair(item).map(|d| vec![d]),
            },
            _ => Some(vec![Dot {
                lineage: None,
                version: parse_u64(item).filter(|&n| n >= 1)?,
            }]),
        })
        .collect()
}

/// The items of a canonical JSON array, as text; `None` for another value.
pub fn json_items(value: &[u8]) -> Option<Vec<&[u8]>> {
    if value.first() != Some(&b'[') {
        return None;
    }
    let mut items = Vec::new();
    let mut pos = 1;
    while value.get(pos).is_some_and(|&c| c != b']') {
        let end = json::value_end(value, pos);
        items.push(&value[pos..end]);
        pos = end;
        if value.get(pos) == Some(&b',') {
            pos += 1;
        }
    }
    Some(items)
}

/// The bytes of a canonical string token whose opening quote is just before `b`,
/// when it holds no escape, and what follows its closing quote.
fn plain_bytes(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = json::plain_end(b, 0);
    if b.get(end) != Some(&b'"') {
        return None;
    }
    Some((&b[..end], &b[end + 1..]))
}

/// A timestamp as a canonical JSON string token.
fn write_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    out.push(b'"');
    match t.canonical_bytes() {
        Some(b) => out.extend_from_slice(&b),
        None => out.extend_from_slice(t.to_string().as_bytes()),
    }
    out.push(b'"');
}

/// A JSON number token that is a whole number in `u64` range.
fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 || !token.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if token.len() > 1 && token[0] == b'0' {
        return None;
    }
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// The decimal digits of `v`, without allocating.
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Length of the key token at the start of a canonical `"key":value` member.
fn key_len(b: &[u8]) -> usize {
    let mut i = 1;
    while b[i] != b'"' {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// Shares one allocation between the many entries of one host.
#[derive(Default)]
pub struct HostNames(Vec<Arc<str>>);

impl HostNames {
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(h) = self.0.iter().find(|h| &***h == name) {
            return h.clone();
        }
        let h: Arc<str> = name.into();
        if self.0.len() < 64 {
            self.0.push(h.clone());
        }
        h
    }
}

/// One version of one entry: its metadata and its canonical JSON without it.
#[derive(Clone)]
pub struct Entry {
    pub meta: Metadata,
    /// The text that holds the body at `start..end`: the entries read from one
    /// file share one text of all their bodies, and a copy of an entry shares it
    /// too.
    text: Arc<String>,
    start: usize,
    end: usize,
    /// Where the metadata member goes in the body, by key order: the offset of
    /// the member that follows it, or of the closing brace.
    meta_at: usize,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.meta == other.meta && self.meta_at == other.meta_at && self.body() == other.body()
    }
}

impl Eq for Entry {}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("meta", &self.meta)
            .field("body", &self.body())
            .field("meta_at", &self.meta_at)
            .finish()
    }
}

impl Entry {
    /// An entry of `meta` and a canonical object holding no metadata.
    pub fn new(meta: Metadata, body: &str) -> Entry {
        let meta_at = json::canonical_members(body.as_bytes())
            .find(|(k, _)| json::cmp_keys(k, METADATA_TOKEN).is_gt())
            .map_or(body.len() - 1, |(k, _)| {
                k.as_ptr() as usize - body.as_ptr() as usize
            });
        Entry {
            meta,
            text: Arc::new(body.to_owned()),
            start: 0,
            end: body.len(),
            meta_at,
        }
    }

    /// The same body with other metadata.
    pub fn with_meta(&self, meta: Metadata) -> Entry {
        Entry {
            meta,
            text: self.text.clone(),
            start: self.start,
            end: self.end,
            meta_at: self.meta_at,
        }
    }

    /// The same entry with a text of its own: keeping it no longer keeps the
    /// whole text of the file it was read from.
    pub fn detached(self) -> Entry {
        let text = Arc::new(self.body().to_owned());
        Entry {
            start: 0,
            end: text.len(),
            text,
            ..self
        }
    }

    /// The canonical JSON of the record, metadata left out.
    pub fn body(&self) -> &str {
        &self.text[self.start..self.end]
    }

    pub fn unique_id(&self) -> &str {
        &self.meta.unique_id
    }

    /// The canonical JSON of the whole entry, appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let at = self.meta_at;
        let b = self.body().as_bytes();
        out.extend_from_slice(&b[..at]);
        let last = b[at] == b'}';
        if last && at > 1 {
            out.push(b',');
        }
        out.extend_from_slice(METADATA_TOKEN);
        out.push(b':');
        self.meta.write(out);
        if !last {
            out.push(b',');
        }
        out.extend_from_slice(&b[at..]);
    }

    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.end - self.start + 128);
        self.write(&mut out);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }
}

/// Reads the entries of a host or unified file from its text.
#[derive(Default)]
pub struct EntryReader {
    members: Vec<json::Member>,
    hosts: HostNames,
}

/// An entry whose body [`EntryReader::read`] left at `start..end` of the text.
pub struct Placed {
    meta: Metadata,
    start: usize,
    end: usize,
    meta_at: usize,
}

impl EntryReader {
    /// Reads the JSON object at `pos` of `src`, appending its body (its canonical
    /// JSON without the metadata) to `text`: where it lies, or why its metadata is
    /// not valid (then nothing is appended), and the offset after it.
    pub fn read(
        &mut self,
        src: &[u8],
        pos: usize,
        text: &mut Vec<u8>,
    ) -> Result<(Result<Placed, MetadataError>, usize), json::SyntaxError> {
        let start = text.len();
        let end = json::canonicalize_object(
            src,
            pos,
            text,
            &mut self.members,
            "entry is not a JSON object",
        )?;
        let Some(i) = self
            .members
            .iter()
            .position(|m| &text[m.key.0..m.key.1] == METADATA_TOKEN)
        else {
            text.truncate(start);
            let no = MetadataError("entry has no _crdt_metadata".into());
            return Ok((Err(no), end));
        };
        let m = self.members[i];
        let meta = match Metadata::read(&text[m.value.0..m.value.1], &mut self.hosts) {
            Ok(meta) => meta,
            Err(e) => {
                text.truncate(start);
                return Ok((Err(e), end));
            }
        };
        let rest = self.members.len() - 1;
        let (cut0, cut1) = member_cut(&m, i, rest);
        text.drain(cut0..cut1);
        let meta_at = if i > 0 && i < rest { cut0 + 1 } else { cut0 };
        let placed = Placed {
            meta,
            start,
            end: text.len(),
            meta_at: meta_at - start,
        };
        Ok((Ok(placed), end))
    }
}

/// A stamped file's entries, and those skipped for bad metadata.
#[derive(Debug, Default)]
pub struct StampedFile {
    pub entries: Vec<Entry>,
    /// The line each entry starts on.
    pub lines: Vec<usize>,
    /// (line, cause) of each entry without valid metadata.
    pub skipped: Vec<(usize, String)>,
}

impl StampedFile {
    /// Whether every entry of the file was read.
    pub fn is_whole(&self) -> bool {
        self.skipped.is_empty()
    }
}

/// Reads a host or unified file from its bytes.
pub fn parse_stamped(bytes: &[u8]) -> Result<StampedFile, ParseError> {
    let mut reader = EntryReader::default();
    // Canonical JSON is never longer than the text it comes from.
    let mut text = Vec::with_capacity(bytes.len());
    // What the entries point to until their text is whole.
    let unfinished = Arc::new(String::new());
    let mut out = StampedFile {
        entries: Vec::with_capacity(bytes.len() / 256 + 1),
        ..StampedFile::default()
    };
    record::parse_each(
        bytes,
        |src, pos| reader.read(src, pos, &mut text),
        |entry, line| match entry {
            Ok(p) => {
                out.lines.push(line);
                out.entries.push(Entry {
                    meta: p.meta,
                    text: unfinished.clone(),
                    start: p.start,
                    end: p.end,
                    meta_at: p.meta_at,
                });
            }
            Err(e) => out.skipped.push((line, e.0)),
        },
    )?;
    let text = Arc::new(String::from_utf8(text).expect("canonical JSON of UTF-8 is UTF-8"));
    for e in &mut out.entries {
        e.text = text.clone();
    }
    Ok(out)
}

/// Parses many files' bytes on all cores; results in the order given.
pub fn parse_many(files: &[&[u8]]) -> Vec<Result<StampedFile, ParseError>> {
    on_all_cores(files.len(), |i| files[i].len(), |i| parse_stamped(files[i]))
}

/// `work(i)` for every `i` below `n`, on all cores, the largest (by `size`)
/// first and dealt out in turn so that the workers finish together; results in
/// the order of `i`.
pub fn on_all_cores<T: Send>(
    n: usize,
    size: impl Fn(usize) -> usize,
    work: impl Fn(usize) -> T + Sync,
) -> Vec<T> {
    let workers = crate::core::cores().min(n);
    if workers <= 1 {
        return (0..n).map(work).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(i)));
    let mut results: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let mine: Vec<usize> = order.iter().copied().skip(w).step_by(workers).collect();
                scope.spawn(move || mine.into_iter().map(|i| (i, work(i))).collect::<Vec<_>>())
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("a worker does not panic") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every item was done"))
        .collect()
}

/// Writes the canonical layout of a host or unified file: a JSON array, one
/// entry per line, and a final newline. A long list is rendered on all cores,
/// in chunks written in order as they come, so that rendering overlaps writing;
/// a few chunks are in memory at a time.
pub fn write_file<W, E>(w: &mut W, entries: &[E]) -> std::io::Result<()>
where
    W: std::io::Write,
    E: Borrow<Entry> + Sync,
{
    use std::sync::mpsc;
    if entries.is_empty() {
        return w.write_all(b"[]\n");
    }
    let chunks = entries.len().div_ceil(CHUNK);
    // Threads pay off from a few megabytes of text on: below, starting them costs
    // more than they save.
    let workers = if chunks < PARALLEL_CHUNKS {
        1
    } else {
        crate::core::cores().min(chunks)
    };
    w.write_all(b"[")?;
    if workers <= 1 {
        let mut buf = Vec::new();
        for i in 0..chunks {
            render_chunk(entries, i, &mut buf);
            w.write_all(&buf)?;
        }
        return w.write_all(b"\n]\n");
    }
    std::thread::scope(|scope| {
        // Worker `t` renders chunks `t`, `t + workers`, ... into one buffer while
        // the other waits to be written; a worker stops when its channels close.
        let lanes: Vec<_> = (0..workers)
            .map(|t| {
                let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
                let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    for i in (t..chunks).step_by(workers) {
                        render_chunk(entries, i, &mut buf);
                        if full_tx.send(buf).is_err() {
                            return;
                        }
                        match empty_rx.recv() {
                            Ok(b) => buf = b,
                            Err(_) => return,
                        }
                    }
                });
                empty_tx.send(Vec::new()).expect("the worker is running");
                (full_rx, empty_tx)
            })
            .collect();
        for i in 0..chunks {
            let (full, empty) = &lanes[i % workers];
            let buf = full
                .recv()
                .map_err(|_| std::io::Error::other("a rendering thread stopped"))?;
            w.write_all(&buf)?;
            // The worker may have no chunk left to render.
            let _ = empty.send(buf);
        }
        Ok::<(), std::io::Error>(())
    })?;
    w.write_all(b"\n]\n")
}

/// Entries per chunk of [`write_file`]: about a megabyte of text.
const CHUNK: usize = 4096;

/// Chunks from which [`write_file`] renders on all cores.
const PARALLEL_CHUNKS: usize = 8;

/// Chunk `i` of `entries`, each entry after its separator, into `buf`.
fn render_chunk<E: Borrow<Entry>>(entries: &[E], i: usize, buf: &mut Vec<u8>) {
    buf.clear();
    let start = i * CHUNK;
    let chunk = &entries[start..(start + CHUNK).min(entries.len())];
    for (k, e) in chunk.iter().enumerate() {
        // Entries in file order lie scattered in memory: each one, then its text,
        // is asked for ahead of its turn, so that their cache misses overlap.
        if let Some(ahead) = chunk.get(k + 2 * AHEAD) {
            sys::prefetch(ahead.borrow());
        }
        if let Some(ahead) = chunk.get(k + AHEAD) {
            let ahead = ahead.borrow();
            sys::prefetch(&ahead.body().as_bytes()[..1]);
            sys::prefetch(ahead.meta.unique_id.as_bytes());
        }
        buf.extend_from_slice(if start + k == 0 { b"\n" } else { b",\n" });
        e.borrow().write(buf);
    }
}

/// How many entries ahead of the one rendered its text is fetched (and twice as
/// many ahead, the entry itself).
const AHEAD: usize = 4;

/// The canonical bytes of a file holding `entries`, in the order given.
pub fn render<E: Borrow<Entry> + Sync>(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    write_file(&mut out, entries).expect("writing to memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> Entry {
        let mut file = parse_stamped(s.as_bytes()).unwrap();
        assert_eq!((file.entries.len(), file.skipped), (1, vec![]));
        file.entries.remove(0)
    }

    #[test]
    fn metadata_keys_unknown_to_this_version_are_written_back_where_their_keys_fall() {
        let lines = [
            r#"{"_crdt_metadata":{"a":1,"dots":[1,["u2",3]],"e":{},"host":"h","m":[2],"seen":{"u2":3},"timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":2,"zz":null},"id":"x","observations":["o","p"]}"#,
            r#"{"_crdt_metadata":{"deleted":true,"host":"h","timestamp":"2026-01-01T00:00:00.000001Z","unique_id":"v","version":3,"w":"x"},"id":"y"}"#,
        ];
        let text = format!("[\n{}\n]\n", lines.join(",\n"));
        let file = parse_stamped(text.as_bytes()).unwrap();
        assert_eq!(file.skipped, []);
        assert_eq!(file.entries[0].meta.extra.len(), 4);
        assert_eq!(String::from_utf8(render(&file.entries)).unwrap(), text);
    }

    #[test]
    fn entries_of_a_file_share_one_text_that_holds_only_their_bodies() {
        let meta = |u: &str| {
            format!(
                r#""_crdt_metadata":{{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"{u}","version":1}}"#
            )
        };
        let text = format!(
            "{{{},\"n\":1}}\n{{\"_crdt_metadata\":{{\"host\":\"h\"}},\"n\":2}}\n{{ \"z\" : 3, {}, \"a\":[ 1 ] }}\n",
            meta("a"),
            meta("c")
        );
        let file = parse_stamped(text.as_bytes()).unwrap();
        assert_eq!(file.skipped.len(), 1);
        assert_eq!(file.lines, [1, 3]);
        let [a, c] = &file.entries[..] else {
            panic!("two entries: {:?}", file.entries)
        };
        assert_eq!((a.body(), c.body()), (r#"{"n":1}"#, r#"{"a":[1],"z":3}"#));
        assert!(Arc::ptr_eq(&a.text, &c.text));
        assert_eq!(*a.text, r#"{"n":1}{"a":[1],"z":3}"#);
        assert_eq!(c.to_json(), format!(r#"{{{},"a":[1],"z":3}}"#, meta("c")));
        assert_eq!(c.with_meta(a.meta.clone()).body(), c.body());
        let alone = c.clone().detached();
        assert_eq!(alone, *c);
        assert_eq!(*alone.text, alone.body());
    }

    #[test]
    fn metadata_is_split_off_and_written_back_in_key_order() {
        let line = r#"{"Z":0,"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":2},"a":1}"#;
        let e = entry(line);
        assert_eq!(e.body(), r#"{"Z":0,"a":1}"#);
        assert_eq!(e.to_json(), line);
        assert_eq!(Entry::new(e.meta.clone(), e.body()), e);
        let only = r#"{"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1}}"#;
        assert_eq!(entry(only).body(), "{}");
        assert_eq!(entry(only).to_json(), only);
        let last = r#"{"A":[{"b":1}],"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1}}"#;
        assert_eq!(entry(last).body(), r#"{"A":[{"b":1}]}"#);
        assert_eq!(entry(last).to_json(), last);
        let first = r#"{"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1},"z":[1]}"#;
        assert_eq!(entry(first).to_json(), first);
        assert_eq!(
            Entry::new(entry(first).meta, r#"{"z":[1]}"#).to_json(),
            first
        );
    }

    #[test]
    fn tombstones_seen_and_dots_round_trip_in_key_order() {
        let line = r#"{"_crdt_metadata":{"a":0,"deleted":true,"dots":[1,["x_n_2026",3],[["x_n_2026",1],[null,2]]],"host":"h","seen":{"x_n_2026":3,"y\"q":1},"timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":2,"zz":null},"id":"n"}"#;
        let e = entry(line);
        assert!(e.meta.deleted);
        assert_eq!(e.meta.seen.len(), 2);
        let own = |version| Dot {
            lineage: None,
            version,
        };
        assert_eq!(e.meta.dots(0), [own(1)]);
        assert_eq!(e.meta.dots(1)[0].lineage.as_deref(), Some("x_n_2026"));
        assert_eq!(e.meta.dots(2).len(), 2);
        assert_eq!(e.meta.dots(2)[1], own(2));
        assert_eq!(e.meta.dots(7), [own(2)]);
        assert!(e.meta.has_seen("x_n_2026", 3) && !e.meta.has_seen("x_n_2026", 4));
        assert!(e.meta.has_seen("u", 2) && !e.meta.has_seen("u", 3));
        assert_eq!(e.to_json(), line);
    }

    #[test]
    fn timestamps_are_written_in_the_canonical_form() {
        let e = entry(
            r#"{"_crdt_metadata":{"version":1,"unique_id":"u","host":"h","timestamp":"2026-01-01T01:00:00+01:00"}}"#,
        );
        assert!(
            e.to_json()
                .contains(r#""timestamp":"2026-01-01T00:00:00.000000Z""#)
        );
    }

    #[test]
    fn invalid_metadata_is_reported() {
        for (m, why) in [
            (r#"1"#, "not an object"),
            (
                r#"{"timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":1}"#,
                "host",
            ),
            (
                r#"{"host":"h","timestamp":"yesterday","unique_id":"u","version":1}"#,
                "RFC 3339",
            ),
            (
                r#"{"host":"h","timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":0}"#,
                "version",
            ),
            (
                r#"{"host":"h","timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":18446744073709551616}"#,
                "version",
            ),
            (
                r#"{"host":"h","timestamp":"2026-01-01T00:00:00Z","version":1}"#,
                "unique_id",
            ),
            (
                r#"{"deleted":1,"host":"h","timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":1}"#,
                "deleted",
            ),
            (
                r#"{"host":"h","seen":{"a":0},"timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":1}"#,
                "seen",
            ),
            (
                r#"{"dots":[[1,2]],"host":"h","timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":1}"#,
                "dots",
            ),
        ] {
            let file = parse_stamped(format!(r#"{{"_crdt_metadata":{m}}}"#).as_bytes()).unwrap();
            let (_, err) = &file.skipped[0];
            assert!(err.contains(why), "{m}: {err}");
        }
    }

    /// A writer that fails once it has taken `left` bytes.
    struct FailsAfter {
        left: usize,
    }

    impl std::io::Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.left {
                return Err(std::io::Error::other("disk full"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_long_list_is_written_in_order_and_a_failed_write_stops_the_rendering() {
        let host: Arc<str> = "h".into();
        let entries: Vec<Entry> = (0..PARALLEL_CHUNKS * CHUNK + 7)
            .map(|i| {
                let meta = Metadata::new(
                    &host,
                    Timestamp::from_micros(i as i64),
                    1,
                    format!("u{i}").into(),
                );
                Entry::new(meta, &format!("{{\"n\":{i}}}"))
            })
            .collect();
        let mut expected = b"[".to_vec();
        for (i, e) in entries.iter().enumerate() {
            expected.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
            e.write(&mut expected);
        }
        expected.extend_from_slice(b"\n]\n");
        assert_eq!(render(&entries), expected);
        let refs: Vec<&Entry> = entries.iter().collect();
        assert_eq!(render(&refs), expected);
        let mut w = FailsAfter {
            left: expected.len() / 2,
        };
        let err = write_file(&mut w, &entries).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }

    #[test]
    fn files_render_one_entry_per_line() {
        let text = "[\n{\"_crdt_metadata\":{\"host\":\"h\",\"timestamp\":\"2026-01-01T00:00:00.000000Z\",\"unique_id\":\"u\",\"version\":1},\"n\":1}\n]\n";
        let f = parse_stamped(text.as_bytes()).unwrap();
        assert_eq!(f.lines, [2]);
        assert_eq!(render(&f.entries), text.as_bytes());
        assert_eq!(render::<Entry>(&[]), b"[]\n");
        let skipped = parse_stamped(b"[{\"a\":1}]").unwrap();
        assert_eq!(skipped.skipped.len(), 1);
        assert!(!skipped.is_whole());
    }
}
