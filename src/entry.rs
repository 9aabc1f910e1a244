//! Entries: the canonical JSON of one record, its `_crdt_metadata`, and the
//! last-writer-wins order between two copies of one `unique_id`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::json::{self, Member, SyntaxError};

/// The key under which an entry carries its metadata.
pub const METADATA_KEY: &str = "_crdt_metadata";
const METADATA_TOKEN: &[u8] = b"\"_crdt_metadata\"";

/// `{host, timestamp, version, unique_id}` of one version of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The host that wrote this version.
    pub host: Arc<str>,
    /// When this version was written.
    pub timestamp: Timestamp,
    /// 1 for a new entry, one more for each change.
    pub version: u64,
    /// `<host>_<ident>_<timestamp>` of the entry's first version; never changes.
    pub unique_id: UniqueId,
    /// Fields of the metadata object that this version does not know, kept as
    /// canonical `"key":value` members in key order.
    pub extra: Box<[Box<str>]>,
}

/// A `unique_id`: a range of a shared text. An entry read from a host or unified
/// file keeps its id in the text that holds its body (unless the id has escapes),
/// so reading such a file allocates nothing per id
/// and writing or hashing an entry reads memory beside its body; any other id
/// has a text of its own. Compared, hashed and ordered as its string.
///
/// It carries the hash of its bytes that the merge's tables use, taken where the id
/// was made: for the ids of a file, by the thread that read it, while the bytes are
/// in the cache.
#[derive(Clone)]
pub struct UniqueId {
    text: Arc<Vec<u8>>,
    start: usize,
    len: usize,
    hash: u64,
}

impl UniqueId {
    /// An id in a text of its own.
    pub fn new(id: &str) -> UniqueId {
        UniqueId::of_utf8(id.as_bytes())
    }

    /// [`UniqueId::new`] of bytes that are UTF-8 (as every canonical text is);
    /// [`UniqueId::as_str`] checks them.
    fn of_utf8(id: &[u8]) -> UniqueId {
        UniqueId::own(id.to_vec())
    }

    fn own(id: Vec<u8>) -> UniqueId {
        UniqueId {
            hash: crate::crdt::id_hash(&id),
            len: id.len(),
            text: Arc::new(id),
            start: 0,
        }
    }

    /// An id of `text` (of [`EntryReader::read_into`], still unfinished) whose
    /// place is not known yet: [`UniqueId::place`] gives it.
    fn unplaced(text: &Arc<Vec<u8>>) -> UniqueId {
        UniqueId {
            text: Arc::clone(text),
            start: 0,
            len: 0,
            hash: 0,
        }
    }

    /// Places an [`UniqueId::unplaced`] id: `id`, the bytes read, to be found at
    /// `start` of its text once the text is finished (see [`Entry::set_text`]).
    fn place(&mut self, start: usize, id: &[u8]) {
        self.start = start;
        self.len = id.len();
        self.hash = crate::crdt::id_hash(id);
    }

    /// The merge's hash of the id's bytes ([`crate::crdt::id_hash`]).
    pub(crate) fn table_hash(&self) -> u64 {
        self.hash
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("a unique_id is UTF-8")
    }

    /// The id's UTF-8 bytes, without checking them again: what the merge hashes,
    /// compares and writes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[self.start..self.start + self.len]
    }
}

impl std::ops::Deref for UniqueId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for UniqueId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for UniqueId {
    fn from(id: &str) -> UniqueId {
        UniqueId::new(id)
    }
}

impl From<String> for UniqueId {
    fn from(id: String) -> UniqueId {
        UniqueId::own(id.into_bytes())
    }
}

impl PartialEq for UniqueId {
    fn eq(&self, other: &UniqueId) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for UniqueId {}

impl PartialOrd for UniqueId {
    fn partial_cmp(&self, other: &UniqueId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UniqueId {
    fn cmp(&self, other: &UniqueId) -> Ordering {
        // The order of UTF-8 bytes is the order of the strings.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for UniqueId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for UniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for UniqueId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an entry's `_crdt_metadata` is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub String);

impl Metadata {
    /// Reads the canonical JSON of a `_crdt_metadata` value.
    fn from_canonical(text: &[u8], hosts: &mut HostNames) -> Result<Metadata, MetadataError> {
        Metadata::read(text, hosts, &mut UniqueId::of_utf8).map(|(m, _)| m)
    }

    /// [`Metadata::from_canonical`], and whether `text` is exactly what
    /// [`Metadata::write`] writes: canonical JSON that holds its timestamp in the
    /// canonical form too. The `unique_id` is made by `id`, called at most once,
    /// from the UTF-8 bytes of the string as read: a part of `text` where it holds
    /// no escape.
    fn read(
        text: &[u8],
        hosts: &mut HostNames,
        id: &mut impl FnMut(&[u8]) -> UniqueId,
    ) -> Result<(Metadata, bool), MetadataError> {
        match Metadata::read_usual(text, hosts, id) {
            Some(read) => Ok(read),
            None => Metadata::read_any(text, hosts, id),
        }
    }

    /// [`Metadata::read`] of any canonical text.
    fn read_any(
        text: &[u8],
        hosts: &mut HostNames,
        id: &mut impl FnMut(&[u8]) -> UniqueId,
    ) -> Result<(Metadata, bool), MetadataError> {
        let bad = |s: &str| Err(MetadataError(s.to_string()));
        if text.first() != Some(&b'{') {
            return bad("_crdt_metadata is not an object");
        }
        // Checked as UTF-8 once here, rather than string by string below.
        let utf8 = std::str::from_utf8(text).expect("canonical JSON is UTF-8");
        let at = |part: &[u8]| part.as_ptr() as usize - text.as_ptr() as usize;
        let (mut host, mut timestamp, mut version, mut unique_id) = (None, None, None, None);
        let mut extra = Vec::new();
        for (key, value) in json::canonical_members(text) {
            let string = || {
                (value[0] == b'"').then(|| {
                    if value.contains(&b'\\') {
                        json::decode_str(value)
                    } else {
                        let start = at(value);
                        Cow::Borrowed(&utf8[start + 1..start + value.len() - 1])
                    }
                })
            };
            match key {
                b"\"host\"" => host = string(),
                b"\"timestamp\"" => timestamp = string(),
                b"\"unique_id\"" => unique_id = string(),
                b"\"version\"" => version = parse_u64(value),
                _ => {
                    // The member's text: key, colon and value, contiguous in `text`.
                    let start = at(key);
                    extra.push(utf8[start..start + key.len() + 1 + value.len()].into())
                }
            }
        }
        let Some(host) = host.filter(|h| !h.is_empty()) else {
            return bad("_crdt_metadata.host is missing or not a non-empty string");
        };
        let Some(ts) = timestamp else {
            return bad("_crdt_metadata.timestamp is missing or not a string");
        };
        let Some((timestamp, as_written)) = Timestamp::parse_noting_form(&ts) else {
            return Err(MetadataError(format!(
                "_crdt_metadata.timestamp {ts:?} is not an RFC 3339 timestamp"
            )));
        };
        let Some(version) = version.filter(|&v| v >= 1) else {
            return bad("_crdt_metadata.version is missing or not a positive integer");
        };
        let Some(unique_id) = unique_id.filter(|u| !u.is_empty()) else {
            return bad("_crdt_metadata.unique_id is missing or not a non-empty string");
        };
        let meta = Metadata {
            host: hosts.intern(&host),
            timestamp,
            version,
            unique_id: id(unique_id.as_bytes()),
            extra: extra.into_boxed_slice(),
        };
        Ok((meta, as_written))
    }

    /// [`Metadata::read`] of the metadata that this tool writes, whose text it
    /// matches byte by byte: the four known keys in order, strings without
    /// escapes, a canonical timestamp. `None` for any other text, which the
    /// general reading then takes, so this decides nothing on its own.
    fn read_usual(
        text: &[u8],
        hosts: &mut HostNames,
        id: &mut impl FnMut(&[u8]) -> UniqueId,
    ) -> Option<(Metadata, bool)> {
        // Bytes of canonical JSON, which is UTF-8: not checked again here.
        let rest = text.strip_prefix(b"{\"host\":\"")?;
        let (host, rest) = plain_bytes(rest)?;
        let rest = rest.strip_prefix(b",\"timestamp\":\"")?;
        let (ts, rest) = plain_bytes(rest)?;
        let rest = rest.strip_prefix(b",\"unique_id\":\"")?;
        let (unique_id, rest) = plain_bytes(rest)?;
        let digits = rest.strip_prefix(b",\"version\":")?.strip_suffix(b"}")?;
        // Canonical JSON has no leading zeros, so these are the digits written.
        let version = parse_u64(digits).filter(|&v| v >= 1)?;
        if host.is_empty() || unique_id.is_empty() {
            return None;
        }
        // Only the canonical form of a timestamp is read as written.
        let timestamp = Timestamp::parse_canonical(ts)?;
        let meta = Metadata {
            host: hosts.intern_bytes(host)?,
            timestamp,
            version,
            unique_id: id(unique_id),
            extra: Box::default(),
        };
        Some((meta, true))
    }

    /// The canonical JSON of this metadata, appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        // Known keys as canonical tokens, in key order.
        const KEYS: [&[u8]; 4] = [
            b"\"host\"",
            b"\"timestamp\"",
            b"\"unique_id\"",
            b"\"version\"",
        ];
        if self.extra.is_empty() {
            // The usual case, without the merging of unknown fields.
            out.extend_from_slice(b"{\"host\":");
            json::write_str(out, &self.host);
            out.extend_from_slice(b",\"timestamp\":");
            write_timestamp(out, self.timestamp);
            out.extend_from_slice(b",\"unique_id\":");
            json::write_str_bytes(out, self.unique_id.as_bytes());
            out.extend_from_slice(b",\"version\":");
            write_u64(out, self.version);
            out.push(b'}');
            return;
        }
        out.push(b'{');
        let mut extra = self.extra.iter().peekable();
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for (k, token) in KEYS.into_iter().enumerate() {
            while let Some(e) = extra.next_if(|e| {
                let ekey = &e.as_bytes()[..extra_key_len(e)];
                json::cmp_keys(ekey, token) == Ordering::Less
            }) {
                sep(out);
                out.extend_from_slice(e.as_bytes());
            }
            sep(out);
            out.extend_from_slice(token);
            out.push(b':');
            match k {
                0 => json::write_str(out, &self.host),
                1 => write_timestamp(out, self.timestamp),
                2 => json::write_str_bytes(out, self.unique_id.as_bytes()),
                _ => write_u64(out, self.version),
            }
        }
        for e in extra {
            sep(out);
            out.extend_from_slice(e.as_bytes());
        }
        out.push(b'}');
    }
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

/// A timestamp as a canonical JSON string token (its text needs no escapes).
fn write_timestamp(out: &mut Vec<u8>, t: Timestamp) {
    out.push(b'"');
    match t.canonical_bytes() {
        Some(b) => out.extend_from_slice(&b),
        None => out.extend_from_slice(t.to_string().as_bytes()),
    }
    out.push(b'"');
}

/// A JSON number token that is a whole number in `u64` range, as `str::parse`
/// reads it.
fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return std::str::from_utf8(token).ok()?.parse().ok();
    }
    token.iter().try_fold(0u64, |v, &c| {
        c.is_ascii_digit()
            .then_some(())
            .and_then(|()| v.checked_mul(10)?.checked_add(u64::from(c - b'0')))
    })
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
fn extra_key_len(member: &str) -> usize {
    let b = member.as_bytes();
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
        self.intern_bytes(name.as_bytes()).expect("a str is UTF-8")
    }

    /// [`HostNames::intern`] of a name's bytes, checked as UTF-8 only when the name
    /// is new; `None` when they are not UTF-8.
    fn intern_bytes(&mut self, name: &[u8]) -> Option<Arc<str>> {
        if let Some(h) = self.0.iter().find(|h| h.as_bytes() == name) {
            return Some(h.clone());
        }
        let h: Arc<str> = std::str::from_utf8(name).ok()?.into();
        if self.0.len() < 64 {
            self.0.push(h.clone());
        }
        Some(h)
    }
}

/// One record as read from a file: its canonical JSON without the metadata, the
/// metadata if it had any, and its top-level members for identity rules.
#[derive(Debug, Clone)]
pub struct Record {
    /// Canonical JSON object of the record, `_crdt_metadata` left out.
    pub body: String,
    /// The record's own `_crdt_metadata`: absent, valid, or invalid.
    pub metadata: Option<Result<Metadata, MetadataError>>,
    /// Top-level members of `body`, ranges into it, in key order.
    pub members: Vec<Member>,
}

impl Record {
    /// Reads one JSON object at `pos` of `src`; returns it and the offset after it.
    pub fn parse(
        src: &[u8],
        pos: usize,
        scratch: &mut Vec<u8>,
        hosts: &mut HostNames,
    ) -> Result<(Record, usize), SyntaxError> {
        let mut members = Vec::new();
        let end = canonical_record(src, pos, scratch, &mut members)?;
        let mut metadata = None;
        let body = match metadata_index(scratch, &members) {
            Some(i) => {
                let m = members.remove(i);
                metadata = Some(Metadata::from_canonical(
                    &scratch[m.value.0..m.value.1],
                    hosts,
                ));
                let (cut0, cut1) = metadata_cut(&m, i, members.len());
                let width = cut1 - cut0;
                for m in &mut members[i..] {
                    m.key = (m.key.0 - width, m.key.1 - width);
                    m.value = (m.value.0 - width, m.value.1 - width);
                }
                without(scratch, cut0, cut1)
            }
            None => without(scratch, 0, 0),
        };
        let body = String::from_utf8(body).expect("canonical JSON is UTF-8");
        Ok((
            Record {
                body,
                metadata,
                members,
            },
            end,
        ))
    }

    /// The canonical JSON value of a top-level member, if the record has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        json::with_key_token(key, |token| self.find(token))
    }

    fn find(&self, token: &[u8]) -> Option<&str> {
        self.members
            .binary_search_by(|m| json::cmp_keys(&self.body.as_bytes()[m.key.0..m.key.1], token))
            .ok()
            .map(|i| {
                let m = self.members[i];
                &self.body[m.value.0..m.value.1]
            })
    }
}

/// Canonicalizes the object at `pos` of `src` into `scratch`, its members into
/// `members`.
fn canonical_record(
    src: &[u8],
    pos: usize,
    scratch: &mut Vec<u8>,
    members: &mut Vec<Member>,
) -> Result<usize, SyntaxError> {
    scratch.clear();
    json::canonicalize_object(src, pos, scratch, members, "entry is not a JSON object")
}

/// Which member of a canonical object is the metadata (keys are unique there).
fn metadata_index(text: &[u8], members: &[Member]) -> Option<usize> {
    members
        .iter()
        .position(|m| &text[m.key.0..m.key.1] == METADATA_TOKEN)
}

/// The bytes to cut to take member `i` of `n` members (counted before the cut) out
/// of its object: the member and one comma next to it.
fn metadata_cut(m: &Member, i: usize, rest: usize) -> (usize, usize) {
    if i > 0 {
        (m.key.0 - 1, m.value.1)
    } else if rest > 0 {
        (m.key.0, m.value.1 + 1)
    } else {
        (m.key.0, m.value.1)
    }
}

/// `text` without the bytes `cut0..cut1`, in one allocation.
fn without(text: &[u8], cut0: usize, cut1: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() - (cut1 - cut0));
    v.extend_from_slice(&text[..cut0]);
    v.extend_from_slice(&text[cut1..]);
    v
}

/// Reads the entries of host and unified files straight from their text, reusing
/// its buffers from one record to the next.
#[derive(Default)]
pub struct EntryReader {
    members: Vec<Member>,
    hosts: HostNames,
    /// What the bodies of [`EntryReader::read_into`] point to until their text
    /// is finished.
    unfinished: Arc<Vec<u8>>,
    /// The `unique_id` being moved past the body in the side text.
    id: Vec<u8>,
}

/// An entry of [`EntryReader::read_into`], and where its body was left.
pub(crate) type Read = (Entry, Placed);

/// Where [`EntryReader::read_into`] left an entry's body.
pub(crate) enum Placed {
    /// In the source text, once the byte at `.0` is set to `.1`: the record was
    /// canonical as written, and the comma beside its metadata becomes the brace
    /// that ends or opens its body.
    Source(usize, u8),
    /// Appended to the side text.
    Side,
}

impl EntryReader {
    /// Reads one JSON object at `pos` of `src` as a stamped entry; returns it, or
    /// why it has no valid metadata, and the offset after it.
    #[cfg(test)]
    pub fn read(
        &mut self,
        src: &[u8],
        pos: usize,
    ) -> Result<(Result<Entry, MetadataError>, usize), SyntaxError> {
        let mut side = Vec::new();
        let (entry, end) = self.read_into(src, pos, &mut side)?;
        Ok((
            entry.map(|(mut e, placed)| {
                let mut text = src.to_vec();
                if let Placed::Source(at, byte) = placed {
                    text[at] = byte;
                }
                let side_at = text.len();
                text.append(&mut side);
                e.set_text(&Arc::new(text), side_at);
                e
            }),
            end,
        ))
    }

    /// [`EntryReader::read`] that leaves the body where the entries of a whole
    /// file can share it: in `src` itself when the record is canonical there with
    /// its metadata first or last (as written files hold it), else appended to
    /// `side`. The body's offset is into whichever holds it; the entry is not
    /// usable until [`Entry::set_text`] gives it the finished text.
    pub(crate) fn read_into(
        &mut self,
        src: &[u8],
        pos: usize,
        side: &mut Vec<u8>,
    ) -> Result<(Result<Read, MetadataError>, usize), SyntaxError> {
        // The canonical text is written at the end of `side`, where it stays
        // unless the record is canonical in `src` already.
        let s0 = side.len();
        let end = json::canonicalize_object(
            src,
            pos,
            side,
            &mut self.members,
            "entry is not a JSON object",
        )
        .inspect_err(|_| side.truncate(s0))?;
        for m in &mut self.members {
            m.key = (m.key.0 - s0, m.key.1 - s0);
            m.value = (m.value.0 - s0, m.value.1 - s0);
        }
        let canon = &side[s0..];
        let clen = canon.len();
        let Some(i) = metadata_index(canon, &self.members) else {
            side.truncate(s0);
            let no = MetadataError("entry has no _crdt_metadata".to_string());
            return Ok((Err(no), end));
        };
        let m = self.members[i];
        let text = &canon[m.value.0..m.value.1];
        // Where the `unique_id` lies in `text`, when it is there as it is.
        let mut id_at = None;
        let unfinished = &self.unfinished;
        let mut id = |uid: &[u8]| {
            let off = (uid.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
            if off < text.len() && uid.len() <= text.len() - off {
                // Placed below, where it is to stay.
                id_at = Some((off, uid.len()));
                UniqueId::unplaced(unfinished)
            } else {
                UniqueId::of_utf8(uid)
            }
        };
        let (mut meta, as_written) = match Metadata::read(text, &mut self.hosts, &mut id) {
            Ok(read) => read,
            Err(e) => {
                side.truncate(s0);
                return Ok((Err(e), end));
            }
        };
        let n = self.members.len();
        let last = i + 1 == n;
        let at = end.saturating_sub(clen);
        let in_place = as_written && n > 1 && (i == 0 || last) && src[at..end] == *canon;
        let (start, len, meta_at, raw_meta, placed) = if in_place {
            side.truncate(s0);
            if let Some((off, len)) = id_at {
                // In the metadata's text, which stays in `src`.
                let start = at + m.value.0 + off;
                meta.unique_id.place(start, &src[start..start + len]);
            }
            // The comma between the metadata and the other members becomes the
            // brace that the body lacks, so the body is one range of `src`, and
            // the metadata's text stays just before or after it.
            let raw_meta = Some((at + m.value.0, (m.value.1 - m.value.0) as u32));
            if last {
                let comma = at + m.key.0 - 1;
                let patch = Placed::Source(comma, b'}');
                (at, comma + 1 - at, comma - at, raw_meta, patch)
            } else {
                let comma = at + m.value.1;
                (
                    comma,
                    at + clen - comma,
                    1,
                    raw_meta,
                    Placed::Source(comma, b'{'),
                )
            }
        } else {
            // The metadata and one comma beside it are cut out of the text, and
            // written again from `meta`: kept, they would make the side text
            // larger by about a third.
            let (cut0, cut1) = metadata_cut(&m, i, n - 1);
            let id = id_at.map(|(off, len)| s0 + m.value.0 + off..s0 + m.value.0 + off + len);
            let id = id.map_or(&[][..], |r| &side[r]);
            self.id.clear();
            self.id.extend_from_slice(id);
            side.copy_within(s0 + cut1.., s0 + cut0);
            side.truncate(s0 + clen - (cut1 - cut0));
            let len = side.len() - s0;
            if id_at.is_some() {
                // The id goes right after the body: the metadata that held it was
                // longer, so the side text still does not grow past its record.
                meta.unique_id.place(side.len(), &self.id);
                side.extend_from_slice(&self.id);
            }
            // The metadata goes back where it was: before the member after it,
            // or before the closing brace.
            let meta_at = if last { len - 1 } else { m.key.0 };
            (s0, len, meta_at, None, Placed::Side)
        };
        let entry = Entry {
            meta,
            body: Body {
                text: Arc::clone(&self.unfinished),
                start,
                len,
            },
            meta_at: meta_at as u32,
            raw_meta,
        };
        Ok((Ok((entry, placed)), end))
    }
}

/// The canonical JSON of an entry without its metadata: a range of a text that
/// may hold the bodies of many entries.
#[derive(Clone)]
struct Body {
    text: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Body {
    fn own(text: Vec<u8>) -> Body {
        Body {
            start: 0,
            len: text.len(),
            text: Arc::new(text),
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.text[self.start..self.start + self.len]
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Body {}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self.bytes()), f)
    }
}

/// A stamped entry: a record with valid metadata, as host and unified files hold it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub meta: Metadata,
    /// Canonical JSON object without the metadata: UTF-8, kept as bytes so that
    /// reading a large file does not check every body a second time.
    body: Body,
    /// Where in `body` the metadata member goes, to keep keys in order.
    meta_at: u32,
    /// (offset, length) in the body's text of the canonical JSON of `meta`, when
    /// the entry was read with it: writing the entry copies it rather than
    /// rendering `meta` again.
    raw_meta: Option<(usize, u32)>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        // `raw_meta` is `meta` as text: the same when the metadata is.
        self.meta == other.meta && self.meta_at == other.meta_at && self.body == other.body
    }
}

impl Eq for Entry {}

impl Entry {
    /// An entry of `meta` and a record's body.
    pub fn new(meta: Metadata, record: Record) -> Entry {
        let meta_at = metadata_position(record.body.as_bytes(), &record.members) as u32;
        Entry {
            meta,
            body: Body::own(record.body.into_bytes()),
            meta_at,
            raw_meta: None,
        }
    }

    /// Points the body of an entry of [`EntryReader::read_into`] to its finished
    /// text: the source it was read from, with the side text appended at `side`.
    pub(crate) fn set_text(&mut self, text: &Arc<Vec<u8>>, side: usize) {
        let id = &mut self.meta.unique_id;
        if Arc::ptr_eq(&id.text, &self.body.text) {
            // Placed beside the body, or in the metadata's text read in place.
            id.text = Arc::clone(text);
            if self.raw_meta.is_none() {
                id.start += side;
            }
        }
        self.body.text = Arc::clone(text);
        // Only an entry read in place has its metadata's text.
        if self.raw_meta.is_none() {
            self.body.start += side;
        }
    }

    /// The same content under other metadata.
    pub fn with_meta(&self, meta: Metadata) -> Entry {
        Entry {
            meta,
            body: self.body.clone(),
            meta_at: self.meta_at,
            raw_meta: None,
        }
    }

    /// The canonical JSON of the entry without its metadata: what "same content" means.
    pub fn body(&self) -> &str {
        std::str::from_utf8(self.body.bytes()).expect("canonical JSON is UTF-8")
    }

    pub fn unique_id(&self) -> &str {
        self.meta.unique_id.as_str()
    }

    /// [`Entry::unique_id`] as bytes, not checked as UTF-8 again.
    pub fn id_bytes(&self) -> &[u8] {
        self.meta.unique_id.as_bytes()
    }

    /// The entry's canonical JSON line, metadata included, appended to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        if let Some((record, comma)) = self.record_as_read() {
            let from = out.len();
            out.extend_from_slice(&self.body.text[record]);
            out[from + comma] = b',';
            return;
        }
        self.write_parts(out);
    }

    /// The range of the body's text that holds the entry's whole record as it
    /// was read, and the offset in it of the one byte that differs: the comma
    /// beside the metadata, which the body's brace took (see
    /// [`EntryReader::read_into`]). `None` for an entry that was not read so.
    fn record_as_read(&self) -> Option<(std::ops::Range<usize>, usize)> {
        let (meta, len) = self.raw_meta?;
        let meta_end = meta + len as usize;
        let (start, end) = (self.body.start, self.body.start + self.body.len);
        // `{"_crdt_metadata":` before the metadata, or `"_crdt_metadata":` after
        // the body.
        let (record, comma) = if meta_end == start {
            let open = meta - METADATA_TOKEN.len() - 2;
            (open..end, start - open)
        } else if end + METADATA_TOKEN.len() + 1 == meta {
            (start..meta_end + 1, end - 1 - start)
        } else {
            return None;
        };
        debug_assert!({
            let mut parts = Vec::new();
            self.write_parts(&mut parts);
            let mut whole = self.body.text[record.clone()].to_vec();
            whole[comma] = b',';
            parts == whole
        });
        Some((record, comma))
    }

    /// [`Entry::write`] piece by piece: the body around the metadata.
    fn write_parts(&self, out: &mut Vec<u8>) {
        let at = self.meta_at as usize;
        let b = self.body.bytes();
        out.extend_from_slice(&b[..at]);
        let last = b[at] == b'}';
        if last && at > 1 {
            out.push(b',');
        }
        out.extend_from_slice(METADATA_TOKEN);
        out.push(b':');
        match self.raw_meta {
            Some((start, len)) => {
                out.extend_from_slice(&self.body.text[start..start + len as usize]);
            }
            None => self.meta.write(out),
        }
        if !last {
            out.push(b',');
        }
        out.extend_from_slice(&b[at..]);
    }

    /// Asks the CPU to bring the text that [`Entry::write`] reads into the cache,
    /// without waiting for it: the start of the body, and of the metadata's text or
    /// the `unique_id`.
    pub(crate) fn prefetch_text(&self) {
        prefetch(self.body.text.as_ptr().wrapping_add(self.body.start));
        match self.raw_meta {
            Some((start, _)) => prefetch(self.body.text.as_ptr().wrapping_add(start)),
            None => prefetch(self.meta.unique_id.as_bytes().as_ptr()),
        }
    }

    /// Asks the CPU to bring the entry itself into the cache, without waiting for
    /// it: the lines of its first and last bytes. An entry is 136 bytes on x86-64,
    /// so it spans three lines when it does not start a line; the middle one is
    /// not asked for (as measured, see the README's Speed section).
    pub(crate) fn prefetch(&self) {
        let p = (self as *const Entry).cast::<u8>();
        prefetch(p);
        prefetch(p.wrapping_add(std::mem::size_of::<Entry>() - 1));
    }

    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.body.len + 128);
        self.write(&mut out);
        String::from_utf8(out).expect("canonical JSON is UTF-8")
    }

    /// The last-writer-wins order between two copies of one `unique_id`: timestamp
    /// instant, then version, then host, then canonical bytes. Total, so that every
    /// host picks the same winner.
    pub fn lww_cmp(&self, other: &Entry) -> Ordering {
        self.meta
            .timestamp
            .cmp(&other.meta.timestamp)
            .then_with(|| self.meta.version.cmp(&other.meta.version))
            .then_with(|| self.meta.host.cmp(&other.meta.host))
            .then_with(|| {
                if self == other {
                    Ordering::Equal
                } else {
                    self.to_json().cmp(&other.to_json())
                }
            })
    }

    /// The order of entries in a written file: timestamp instant, then unique_id.
    pub fn file_cmp(&self, other: &Entry) -> Ordering {
        self.meta
            .timestamp
            .cmp(&other.meta.timestamp)
            .then_with(|| self.meta.unique_id.cmp(&other.meta.unique_id))
            .then_with(|| self.lww_cmp(other))
    }
}

/// A hint to load the cache line at `p`; it never faults, whatever `p` is.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing and cannot fault, on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The offset in a canonical object where the `_crdt_metadata` member belongs:
/// before the first key that sorts after it.
fn metadata_position(b: &[u8], members: &[Member]) -> usize {
    members
        .iter()
        .find(|m| json::cmp_keys(&b[m.key.0..m.key.1], METADATA_TOKEN) == Ordering::Greater)
        .map_or(b.len() - 1, |m| m.key.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(s: &str) -> Record {
        Record::parse(s.as_bytes(), 0, &mut Vec::new(), &mut HostNames::default())
            .unwrap()
            .0
    }

    fn entry(s: &str) -> Entry {
        let mut r = record(s);
        let e = Entry::new(r.metadata.take().unwrap().unwrap(), r);
        let (direct, end) = EntryReader::default().read(s.as_bytes(), 0).unwrap();
        assert_eq!((direct.unwrap(), end), (e.clone(), s.len()));
        e
    }

    #[test]
    fn metadata_is_split_off_and_written_back_in_key_order() {
        let line = r#"{"Z":0,"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":2},"a":1}"#;
        let e = entry(line);
        assert_eq!(e.body(), r#"{"Z":0,"a":1}"#);
        assert_eq!(e.to_json(), line);
        let only = r#"{"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1}}"#;
        assert_eq!(entry(only).body(), "{}");
        assert_eq!(entry(only).to_json(), only);
        let last = r#"{"A":[{"b":1}],"_crdt_metadata":{"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1}}"#;
        assert_eq!(entry(last).body(), r#"{"A":[{"b":1}]}"#);
        assert_eq!(entry(last).to_json(), last);
    }

    #[test]
    fn the_entry_reader_says_why_an_entry_is_skipped() {
        let mut r = EntryReader::default();
        let (e, _) = r.read(br#" {"a":1} "#, 0).unwrap();
        assert_eq!(e.unwrap_err().0, "entry has no _crdt_metadata");
        let (e, end) = r.read(br#"{"_crdt_metadata":{"host":""}} ,"#, 0).unwrap();
        assert!(e.unwrap_err().0.contains("host"));
        assert_eq!(end, 30);
        assert!(r.read(b"[1]", 0).is_err());
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
    fn unknown_metadata_fields_are_kept_in_order() {
        let line = r#"{"_crdt_metadata":{"a":1,"host":"h","i":[2],"timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"u","version":1,"z":null},"id":1}"#;
        assert_eq!(entry(line).to_json(), line);
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
                r#"{"host":"h","timestamp":"2026-01-01T00:00:00Z","version":1}"#,
                "unique_id",
            ),
        ] {
            let r = record(&format!(r#"{{"_crdt_metadata":{m}}}"#));
            let err = r.metadata.unwrap().unwrap_err();
            assert!(err.0.contains(why), "{m}: {}", err.0);
        }
    }

    #[test]
    fn the_usual_metadata_reads_as_any_metadata_does() {
        let ts = "2026-01-01T00:00:00.000000Z";
        // (canonical metadata text, whether the fast path takes it)
        let cases = [
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u","version":1}}"#), true),
            (format!(r#"{{"host":"hé","timestamp":"{ts}","unique_id":"h_é_x","version":18446744073709551615}}"#), true),
            (format!(r#"{{"host":"h\u0000","timestamp":"{ts}","unique_id":"u","version":1}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u\"q","version":1}}"#), false),
            (r#"{"host":"h","timestamp":"2026-01-01T00:00:00Z","unique_id":"u","version":1}"#.into(), false),
            (r#"{"host":"h","timestamp":"2016-12-31T23:59:60.000000Z","unique_id":"u","version":1}"#.into(), false),
            (format!(r#"{{"host":"h","i":1,"timestamp":"{ts}","unique_id":"u","version":1}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u","version":1,"z":2}}"#), false),
            (format!(r#"{{"a":0,"host":"h","timestamp":"{ts}","unique_id":"u","version":1}}"#), false),
            (format!(r#"{{"host":"","timestamp":"{ts}","unique_id":"u","version":1}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"","version":1}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u","version":0}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u","version":1.0}}"#), false),
            (format!(r#"{{"host":"h","timestamp":"{ts}","unique_id":"u","version":18446744073709551616}}"#), false),
        ];
        for (text, fast) in cases {
            let mut hosts = HostNames::default();
            let id = &mut UniqueId::of_utf8;
            let usual = Metadata::read_usual(text.as_bytes(), &mut hosts, id);
            let any = Metadata::read_any(text.as_bytes(), &mut hosts, id);
            assert_eq!(usual.is_some(), fast, "{text}");
            if let Some(usual) = usual {
                assert_eq!(Ok(usual), any, "{text}");
            }
            // Read "as written" exactly when writing the metadata gives its text.
            if let Ok((meta, as_written)) = &any {
                let mut again = Vec::new();
                meta.write(&mut again);
                assert_eq!(*as_written, again == text.as_bytes(), "{text}");
            }
            assert_eq!(
                Metadata::read(text.as_bytes(), &mut hosts, id),
                any,
                "{text}"
            );
        }
    }

    #[test]
    fn versions_are_read_like_str_parse() {
        for t in [
            "0",
            "1",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1.0",
            "1e3",
            "",
            "00000000000000000000001",
        ] {
            assert_eq!(parse_u64(t.as_bytes()), t.parse::<u64>().ok(), "{t}");
        }
    }

    #[test]
    fn versions_are_written_in_decimal() {
        for v in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn members_are_found_by_key() {
        let r = record(r#"{"name":"Ada","type":"entity","id":7}"#);
        assert_eq!(r.get("id"), Some("7"));
        assert_eq!(r.get("name"), Some(r#""Ada""#));
        assert_eq!(r.get("nope"), None);
    }
}
