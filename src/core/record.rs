//! Memory files as text: the format is told from the content (a JSON array, JSON
//! Lines, or nothing), every entry must be an object, and each gets its identity.

use sha2::{Digest, Sha256};

use crate::core::json::{self, Member};

/// The field that names an entry unless `--id-field` says otherwise.
pub const DEFAULT_ID_FIELD: &str = "id";
/// The key under which a stamped entry carries its metadata.
pub const METADATA_KEY: &str = "_crdt_metadata";
pub(crate) const METADATA_TOKEN: &[u8] = b"\"_crdt_metadata\"";

/// The layout of a memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Empty, or only whitespace.
    Empty,
    /// One JSON array of objects.
    Array,
    /// One JSON object per line, as the MCP memory server writes.
    Lines,
}

/// Where and why a text is not a valid memory file. Lines and columns count from 1;
/// columns count characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub cause: String,
}

/// One record of a memory file: its canonical JSON with any `_crdt_metadata`
/// left out (metadata lives only in the backup), and its top-level members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Canonical JSON object of the record.
    pub body: String,
    /// Top-level members of `body`, ranges into it, in key order.
    pub members: Vec<Member>,
}

impl Record {
    /// Reads one JSON object at `pos` of `src`; returns it and the offset after it.
    pub fn parse(
        src: &[u8],
        pos: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(Record, usize), json::SyntaxError> {
        let mut members = Vec::new();
        scratch.clear();
        let end = json::canonicalize_object(
            src,
            pos,
            scratch,
            &mut members,
            "entry is not a JSON object",
        )?;
        if let Some(i) = members
            .iter()
            .position(|m| &scratch[m.key.0..m.key.1] == METADATA_TOKEN)
        {
            let m = members.remove(i);
            let (cut0, cut1) = member_cut(&m, i, members.len());
            let width = cut1 - cut0;
            scratch.drain(cut0..cut1);
            for m in &mut members[i..] {
                m.key = (m.key.0 - width, m.key.1 - width);
                m.value = (m.value.0 - width, m.value.1 - width);
            }
        }
        let body = String::from_utf8(scratch.clone()).expect("canonical JSON is UTF-8");
        Ok((Record { body, members }, end))
    }

    /// A record of canonical JSON that holds no metadata.
    pub fn from_canonical(body: &str) -> Record {
        let mut scratch = Vec::with_capacity(body.len());
        Record::parse(body.as_bytes(), 0, &mut scratch)
            .expect("a canonical body parses")
            .0
    }

    /// The canonical JSON value of a top-level member, if the record has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        json::with_key_token(key, |token| {
            self.members
                .binary_search_by(|m| {
                    json::cmp_keys(&self.body.as_bytes()[m.key.0..m.key.1], token)
                })
                .ok()
                .map(|i| {
                    let m = self.members[i];
                    &self.body[m.value.0..m.value.1]
                })
        })
    }

    /// The record's identity by the rules of `ident_by`.
    pub fn ident(&self, id_field: &str) -> String {
        ident_by(|k| self.get(k), &self.body, id_field)
    }

    /// The kind of entry, for the MCP server's layout.
    pub fn kind(&self) -> Kind {
        kind_by(|k| self.get(k))
    }
}

/// The bytes to cut to take member `i` (of `rest + 1`) out of its object: the
/// member and one comma next to it.
pub(crate) fn member_cut(m: &Member, i: usize, rest: usize) -> (usize, usize) {
    if i > 0 {
        (m.key.0 - 1, m.value.1)
    } else if rest > 0 {
        (m.key.0, m.value.1 + 1)
    } else {
        (m.key.0, m.value.1)
    }
}

/// What kind of entry, for the MCP server's layout (entities, then relations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Entity,
    Relation,
    Other,
}

fn kind_by<'b>(get: impl Fn(&str) -> Option<&'b str>) -> Kind {
    match get("type") {
        Some(r#""entity""#) if get("name").is_some_and(|n| n.starts_with('"')) => Kind::Entity,
        Some(r#""relation""#) => Kind::Relation,
        _ => Kind::Other,
    }
}

/// One record of a file and the line it starts on.
#[derive(Debug, Clone)]
pub struct Located {
    pub record: Record,
    pub line: usize,
}

/// Reads every record of `bytes`, telling the format from the content.
pub fn parse_records(bytes: &[u8]) -> Result<(Format, Vec<Located>), ParseError> {
    let mut scratch = Vec::with_capacity(1024);
    let mut out = Vec::new();
    let format = parse_each(
        bytes,
        |src, pos| Record::parse(src, pos, &mut scratch),
        |record, line| out.push(Located { record, line }),
    )?;
    Ok((format, out))
}

/// Walks the records of `bytes`, telling the format from the content: `parse`
/// reads the JSON object at an offset of a text (returning it and the offset after
/// it), and `found` gets each result with the line it starts on.
pub fn parse_each<T>(
    bytes: &[u8],
    mut parse: impl FnMut(&[u8], usize) -> Result<(T, usize), json::SyntaxError>,
    mut found: impl FnMut(T, usize),
) -> Result<Format, ParseError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return Err(locate(bytes, e.valid_up_to(), "invalid UTF-8".into())),
    };
    let b = text.as_bytes();
    let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let first = json::skip_ws(b, start);
    match b.get(first) {
        None => Ok(Format::Empty),
        Some(b'[') => parse_array(b, first, &mut parse, &mut found).map(|()| Format::Array),
        Some(_) => parse_lines(b, start, &mut parse, &mut found).map(|()| Format::Lines),
    }
}

fn parse_array<T>(
    b: &[u8],
    open: usize,
    parse: &mut impl FnMut(&[u8], usize) -> Result<(T, usize), json::SyntaxError>,
    found: &mut impl FnMut(T, usize),
) -> Result<(), ParseError> {
    let fail = |at: usize, cause: &str| locate(b, at, cause.to_string());
    let mut pos = json::skip_ws(b, open + 1);
    // Lines are counted as we go, so that a large file is walked once.
    let mut counter = LineCounter::default();
    if b.get(pos) != Some(&b']') {
        loop {
            let (record, end) = parse(b, pos).map_err(|e| fail(e.offset, e.cause))?;
            found(record, counter.line_at(b, pos));
            pos = json::skip_ws(b, end);
            match b.get(pos) {
                Some(b',') => pos = json::skip_ws(b, pos + 1),
                Some(b']') => break,
                Some(_) => return Err(fail(pos, "expected ',' or ']'")),
                None => return Err(fail(pos, "unexpected end of input")),
            }
        }
    }
    let end = json::skip_ws(b, pos + 1);
    if end != b.len() {
        return Err(fail(end, "trailing characters after the JSON array"));
    }
    Ok(())
}

fn parse_lines<T>(
    b: &[u8],
    start: usize,
    parse: &mut impl FnMut(&[u8], usize) -> Result<(T, usize), json::SyntaxError>,
    found: &mut impl FnMut(T, usize),
) -> Result<(), ParseError> {
    let mut line_start = start;
    let mut line_no = 1;
    while line_start < b.len() {
        let line_end = b[line_start..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |i| line_start + i);
        let line = &b[..line_end];
        let pos = json::skip_ws(line, line_start);
        if pos < line_end {
            let column = |at: usize| char_count(&b[line_start..at]) + 1;
            let (record, end) = parse(line, pos).map_err(|e| ParseError {
                line: line_no,
                column: column(e.offset),
                cause: e.cause.to_string(),
            })?;
            let rest = json::skip_ws(line, end);
            if rest != line_end {
                return Err(ParseError {
                    line: line_no,
                    column: column(rest),
                    cause: "more than one JSON value on a line".into(),
                });
            }
            found(record, line_no);
        }
        line_start = line_end + 1;
        line_no += 1;
    }
    Ok(())
}

/// Line and column of a byte offset.
pub fn locate(b: &[u8], offset: usize, cause: String) -> ParseError {
    let offset = offset.min(b.len());
    let before = &b[..offset];
    let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    ParseError {
        line,
        column: char_count(&before[line_start..]) + 1,
        cause,
    }
}

/// Counts characters of UTF-8 bytes (a cut inside one still counts it).
fn char_count(b: &[u8]) -> usize {
    b.iter().filter(|&&c| (c as i8) >= -0x40).count()
}

/// Turns increasing byte offsets into line numbers in one pass over the text.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, b: &[u8], offset: usize) -> usize {
        self.line += memchr_count(&b[self.offset..offset]);
        self.offset = offset;
        self.line + 1
    }
}

/// The number of `\n` bytes in `b`, counted in blocks of byte-wide counters,
/// which the compiler turns into wide vector code.
fn memchr_count(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &x| n + u8::from(x == b'\n'))))
        .sum()
}

/// [`Record::ident`] of an entry's canonical body, read straight from its text.
pub fn ident_of_body(body: &str, id_field: &str) -> String {
    // One walk over the members keeps every value the rules may ask for.
    const KEYS: [&[u8]; 5] = [
        b"\"type\"",
        b"\"name\"",
        b"\"from\"",
        b"\"relationType\"",
        b"\"to\"",
    ];
    let mut values: [Option<&str>; 6] = [None; 6];
    json::with_key_token(id_field, |id_token| {
        for (k, v) in json::canonical_members(body.as_bytes()) {
            let slot = if k == id_token {
                Some(0)
            } else {
                KEYS.iter().position(|key| k == *key).map(|i| i + 1)
            };
            if let Some(i) = slot {
                let at = v.as_ptr() as usize - body.as_ptr() as usize;
                values[i] = Some(&body[at..at + v.len()]);
            }
        }
    });
    let get = |key: &str| {
        if key == id_field {
            return values[0];
        }
        // A key the walk did not keep is looked up on its own.
        match json::with_key_token(key, |token| KEYS.iter().position(|k| *k == token)) {
            Some(i) => values[i + 1],
            None => member_of_body(body, key),
        }
    };
    ident_by(get, body, id_field)
}

/// [`Record::kind`] of a canonical body.
pub fn kind_of_body(body: &str) -> Kind {
    kind_by(|key| member_of_body(body, key))
}

/// The canonical value of a top-level member of a canonical object. Its members
/// are in key order: the walk stops at the first key past `key`.
pub fn member_of_body<'b>(body: &'b str, key: &str) -> Option<&'b str> {
    json::with_key_token(key, |token| {
        json::canonical_members(body.as_bytes())
            .map(|(k, v)| (json::cmp_keys(k, token), v))
            .find(|(order, _)| order.is_ge())
            .filter(|(order, _)| order.is_eq())
            .map(|(_, v)| {
                let at = v.as_ptr() as usize - body.as_ptr() as usize;
                &body[at..at + v.len()]
            })
    })
}

/// An entry's identity, by the first rule that applies: its id field (a string or
/// an integer), `entity:<name>`, `relation:[from,relationType,to]`, or the SHA-256
/// of its canonical JSON. `get` gives a top-level member's canonical value.
fn ident_by<'b>(get: impl Fn(&str) -> Option<&'b str>, body: &str, id_field: &str) -> String {
    if let Some(id) = get(id_field) {
        if id.starts_with('"') {
            return json::decode_str(id.as_bytes()).into_owned();
        }
        if is_integer(id) {
            return id.to_string();
        }
    }
    // Joined by hand: `format!` costs more than the lookups.
    let joined = |parts: &[&str]| {
        let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        parts.iter().for_each(|p| s.push_str(p));
        s
    };
    match get("type") {
        Some(r#""entity""#) => {
            if let Some(name) = get("name").filter(|n| n.starts_with('"')) {
                return joined(&["entity:", &json::decode_str(name.as_bytes())]);
            }
        }
        Some(r#""relation""#) => {
            let part = |k| get(k).unwrap_or("null");
            return joined(&[
                "relation:[",
                part("from"),
                ",",
                part("relationType"),
                ",",
                part("to"),
                "]",
            ]);
        }
        _ => {}
    }
    joined(&["sha256:", &hex(&Sha256::digest(body.as_bytes()))])
}

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn is_integer(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
}

/// The members that name an entry: what a tombstone keeps of it (section 12).
/// For an entry named by a hash of its content, all of it.
pub fn identity_fields(record: &Record, id_field: &str) -> String {
    let ident = record.ident(id_field);
    if ident.starts_with("sha256:") {
        return record.body.clone();
    }
    let keep: &[&str] = if record
        .get(id_field)
        .is_some_and(|v| v.starts_with('"') || is_integer(v))
    {
        &[id_field]
    } else if ident.starts_with("entity:") {
        &["name", "type"]
    } else {
        &["from", "relationType", "to", "type"]
    };
    let mut out = Vec::with_capacity(64);
    out.push(b'{');
    let mut first = true;
    for m in &record.members {
        let key = &record.body.as_bytes()[m.key.0..m.key.1];
        let wanted = keep.iter().any(|k| json::with_key_token(k, |t| t == key));
        if wanted {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(&record.body.as_bytes()[m.key.0..m.value.1]);
        }
    }
    out.push(b'}');
    String::from_utf8(out).expect("canonical JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(s: &str) -> Vec<Located> {
        parse_records(s.as_bytes()).unwrap().1
    }

    #[test]
    fn formats_are_told_from_content() {
        assert_eq!(parse_records(b" \n\t ").unwrap().0, Format::Empty);
        assert_eq!(parse_records(b"\n [ ] ").unwrap().0, Format::Array);
        assert_eq!(
            parse_records(b"{\"a\":1}\n\n{\"b\":2}\n").unwrap().0,
            Format::Lines
        );
        let lines = records("\n{\"a\":1}\n\n{\"b\":2}");
        assert_eq!(lines.iter().map(|l| l.line).collect::<Vec<_>>(), [2, 4]);
        let arr = records("[\n{\"a\":1},\n\n {\"b\":2}]");
        assert_eq!(arr.iter().map(|l| l.line).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse_records("{\"a\":1}\n{\"é\":tru}\n".as_bytes()).unwrap_err();
        assert_eq!((e.line, e.column), (2, 6));
        let e = parse_records(b"{\"a\":1}\n{\"b\":[1,2").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.cause.as_str()),
            (2, 10, "unexpected end of input")
        );
        let e = parse_records(b"[{\"a\":1},\n 42]").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.cause.as_str()),
            (2, 2, "entry is not a JSON object")
        );
        let e = parse_records(b"{\"a\":1} {\"b\":1}").unwrap_err();
        assert_eq!((e.line, e.column), (1, 9));
        let e = parse_records(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.cause.as_str()),
            (1, 7, "invalid UTF-8")
        );
        let e = parse_records(b"[{\"a\":1}] x").unwrap_err();
        assert_eq!((e.line, e.column), (1, 11));
    }

    #[test]
    fn identity_rules_apply_in_order() {
        let id = |s: &str| {
            let record = &records(s)[0].record;
            let by_members = record.ident(DEFAULT_ID_FIELD);
            assert_eq!(ident_of_body(&record.body, DEFAULT_ID_FIELD), by_members);
            by_members
        };
        assert_eq!(id(r#"{"id":"n1","type":"entity","name":"A"}"#), "n1");
        assert_eq!(
            id(r#"{"id":12345678901234567890123}"#),
            "12345678901234567890123"
        );
        assert_eq!(
            id(r#"{"type":"entity","name":"Ada","entityType":"person"}"#),
            "entity:Ada"
        );
        assert_eq!(
            id(r#"{"type":"relation","from":"Ada","to":"Rust","relationType":"uses"}"#),
            r#"relation:["Ada","uses","Rust"]"#
        );
        let h = id(r#"{"id":1.5, "b":1, "a":2}"#);
        assert_eq!(h, id(r#"{"a":2,"b":1,"id":1.5}"#));
        assert!(h.starts_with("sha256:") && h.len() == 71, "{h}");
        assert_eq!(
            records(r#"{"key":"k9","id":"n1"}"#)[0].record.ident("key"),
            "k9"
        );
        assert_eq!(id(r#"{"a":{"id":"no"},"i\u0065":"x","id":"n\"2"}"#), "n\"2");
        // The one walk of a body gives what the members' lookups give, whatever
        // the id field (one of the rules' own keys included).
        for body in [
            r#"{"type":"entity","name":"Ada","entityType":"person","observations":["x"]}"#,
            r#"{"type":"relation","from":"Ada","to":"Rust","relationType":"uses"}"#,
            r#"{"type":"relation","from":1,"relationType":"uses"}"#,
            r#"{"key":"k9","id":"n1","to":7,"name":["no"]}"#,
            r#"{"type":"entity","name":3,"id":"x"}"#,
        ] {
            let record = &records(body)[0].record;
            for field in ["id", "name", "type", "key", "to", "relationType", "absent"] {
                assert_eq!(
                    ident_of_body(&record.body, field),
                    record.ident(field),
                    "{body} by {field}"
                );
            }
        }
    }

    #[test]
    fn metadata_in_a_memory_file_is_left_out() {
        let r =
            &records(r#"{"z":1,"_crdt_metadata":{"host":"h","unique_id":"u","version":3},"a":2}"#)
                [0]
            .record;
        assert_eq!(r.body, r#"{"a":2,"z":1}"#);
        assert_eq!(r.get("z"), Some("1"));
        let only = &records(r#"{"_crdt_metadata":{}}"#)[0].record;
        assert_eq!(only.body, "{}");
    }

    #[test]
    fn tombstones_keep_only_the_fields_of_the_identity() {
        let keep = |s: &str| identity_fields(&Record::from_canonical(s), DEFAULT_ID_FIELD);
        assert_eq!(
            keep(r#"{"content":"x","id":"n1","tags":[]}"#),
            r#"{"id":"n1"}"#
        );
        assert_eq!(
            keep(r#"{"entityType":"person","name":"Ada","observations":["a"],"type":"entity"}"#),
            r#"{"name":"Ada","type":"entity"}"#
        );
        assert_eq!(
            keep(r#"{"from":"a","relationType":"uses","to":"b","type":"relation","x":1}"#),
            r#"{"from":"a","relationType":"uses","to":"b","type":"relation"}"#
        );
        assert_eq!(keep(r#"{"a":1,"b":2}"#), r#"{"a":1,"b":2}"#);
    }
}
