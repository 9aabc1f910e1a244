//! Reading memory files: the format is told from the content (a JSON array, JSON
//! Lines, or nothing), every entry must be an object, and each gets its identity.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::entry::{HostNames, Record};
use crate::error::{Error, Result};
use crate::json;

/// The field that names an entry unless `--id-field` says otherwise.
pub const DEFAULT_ID_FIELD: &str = "id";

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

/// One record of a file and the line it starts on.
#[derive(Debug, Clone)]
pub struct Located {
    pub record: Record,
    pub line: usize,
}

/// A memory file as read.
#[derive(Debug)]
pub struct MemoryFile {
    pub format: Format,
    pub records: Vec<Located>,
    pub bytes: u64,
}

/// Reads and checks a memory file: missing (or a folder) is exit 66, anything
/// invalid is exit 65 naming the line and column.
pub fn read_memory_file(path: &Path) -> Result<MemoryFile> {
    let missing = |cause: String| Error::Missing {
        path: path.to_path_buf(),
        cause,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(missing("no such memory file".into()));
        }
        Err(_) if path.is_dir() => return Err(missing("is a folder, not a memory file".into())),
        Err(e) => return Err(missing(format!("cannot read the memory file: {e}"))),
    };
    let (format, records) = parse_records(&bytes).map_err(|e| Error::Invalid {
        path: path.to_path_buf(),
        line: e.line,
        column: e.column,
        cause: e.cause,
    })?;
    Ok(MemoryFile {
        format,
        records,
        bytes: bytes.len() as u64,
    })
}

/// Reads every record of `bytes`, telling the format from the content.
pub fn parse_records(bytes: &[u8]) -> Result<(Format, Vec<Located>), ParseError> {
    let mut hosts = HostNames::default();
    let mut scratch = Vec::with_capacity(1024);
    let mut out = Vec::new();
    let format = parse_each(
        bytes,
        |src, pos| Record::parse(src, pos, &mut scratch, &mut hosts),
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
        Err(e) => {
            return Err(locate(bytes, e.valid_up_to(), "invalid UTF-8".into()));
        }
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
        self.line += count_newlines(&b[self.offset..offset]);
        self.offset = offset;
        self.line + 1
    }
}

/// The number of `\n` bytes in `b`, counted in blocks of byte-wide counters,
/// which the compiler turns into wide vector code.
fn count_newlines(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|c| {
            let n = c.iter().fold(0u8, |n, &x| n + u8::from(x == b'\n'));
            usize::from(n)
        })
        .sum()
}

/// An entry's identity, by the first rule that applies: its id field (a string or
/// an integer), `entity:<name>`, `relation:[from,relationType,to]`, or the SHA-256
/// of its canonical JSON.
pub fn ident(record: &Record, id_field: &str) -> String {
    ident_by(|k| record.get(k), &record.body, id_field)
}

/// [`ident`] of an entry's canonical body (metadata left out), read straight
/// from its text: no parse, no copy.
pub fn ident_of_body(body: &str, id_field: &str) -> String {
    let get = |key: &str| {
        json::with_key_token(key, |token| {
            json::canonical_members(body.as_bytes())
                .find(|(k, _)| *k == token)
                .map(|(_, v)| {
                    let at = v.as_ptr() as usize - body.as_ptr() as usize;
                    &body[at..at + v.len()]
                })
        })
    };
    ident_by(get, body, id_field)
}

/// The identity rules over `get`, which gives a top-level member's canonical
/// value, and `body`, the canonical object.
fn ident_by<'b>(get: impl Fn(&str) -> Option<&'b str>, body: &str, id_field: &str) -> String {
    if let Some(id) = get(id_field) {
        if id.starts_with('"') {
            return json::decode_str(id.as_bytes()).into_owned();
        }
        if is_integer(id) {
            return id.to_string();
        }
    }
    match get("type") {
        Some(r#""entity""#) => {
            if let Some(name) = get("name").filter(|n| n.starts_with('"')) {
                return format!("entity:{}", json::decode_str(name.as_bytes()));
            }
        }
        Some(r#""relation""#) => {
            let part = |k| get(k).unwrap_or("null");
            return format!(
                "relation:[{},{},{}]",
                part("from"),
                part("relationType"),
                part("to")
            );
        }
        _ => {}
    }
    let digest = Sha256::digest(body.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for byte in digest {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn is_integer(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
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
    fn newlines_are_counted() {
        for len in [0, 1, 254, 255, 256, 1000] {
            for every in [1, 2, 7, 300] {
                let b: Vec<u8> = (0..len)
                    .map(|i| if i % every == 0 { b'\n' } else { b'x' })
                    .collect();
                let want = b.iter().filter(|&&c| c == b'\n').count();
                assert_eq!(count_newlines(&b), want, "{len} {every}");
            }
        }
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
        let e = parse_records(b"{\"a\":1}\n\"x\"").unwrap_err();
        assert_eq!(
            (e.line, e.cause.as_str()),
            (2, "entry is not a JSON object")
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
        // Read from the record's members, and straight from its canonical body.
        let id = |s: &str| {
            let record = &records(s)[0].record;
            let by_members = ident(record, DEFAULT_ID_FIELD);
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
        let custom = ident(&records(r#"{"key":"k9","id":"n1"}"#)[0].record, "key");
        assert_eq!(custom, "k9");
        assert_eq!(ident_of_body(r#"{"id":"n1","key":"k9"}"#, "key"), "k9");
        // Keys with escapes, and values that hold what looks like a key.
        assert_eq!(id(r#"{"a":{"id":"no"},"i\u0065":"x","id":"n\"2"}"#), "n\"2");
        assert_eq!(
            id(r#"{"type":"entity","name":"A\u00e9\n"}"#),
            "entity:A\u{e9}\n"
        );
    }
}
