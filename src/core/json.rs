//! Canonical JSON: one validating pass over the input that writes the compact form
//! with object keys sorted, numbers with their exact digits and strings with their
//! exact characters (escapes normalised the way `serde_json` writes them).
//!
//! This is the hot path of every merge, so it works on bytes, allocates only when an
//! object's keys arrive out of order, and never builds a tree.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// serde_json's limit, so that anything one accepts the other accepts too.
const MAX_DEPTH: usize = 128;

/// Why a text is not valid JSON, and at which byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub cause: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cause)
    }
}

/// One member of a canonical object: byte ranges into the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The key with its quotes.
    pub key: (usize, usize),
    /// The value.
    pub value: (usize, usize),
}

impl Member {
    fn start(&self) -> usize {
        self.key.0
    }
    fn end(&self) -> usize {
        self.value.1
    }
}

/// Canonicalizes one JSON value of `src` starting at `pos` (whitespace before it is
/// skipped) onto `out`. Returns the offset just after the value.
pub fn canonicalize(src: &[u8], pos: usize, out: &mut Vec<u8>) -> Result<usize, SyntaxError> {
    let mut members = Vec::new();
    let mut p = Parser {
        src,
        pos,
        out,
        members: &mut members,
    };
    p.skip_ws();
    p.value(0)?;
    Ok(p.pos)
}

/// Canonicalizes one JSON object of `src` starting at `pos` onto `out` and lists its
/// members (ranges into `out`, in key order) in `members`. A value that is not an
/// object is the error `not_object` at its offset.
pub fn canonicalize_object(
    src: &[u8],
    pos: usize,
    out: &mut Vec<u8>,
    members: &mut Vec<Member>,
    not_object: &'static str,
) -> Result<usize, SyntaxError> {
    members.clear();
    let mut p = Parser {
        src,
        pos,
        out,
        members,
    };
    p.skip_ws();
    match p.peek() {
        Some(b'{') => {}
        Some(_) => {
            // Still report a syntax error first if the value is malformed.
            let at = p.pos;
            let mut scratch = Vec::new();
            canonicalize(src, at, &mut scratch)?;
            return Err(SyntaxError {
                offset: at,
                cause: not_object,
            });
        }
        None => return Err(p.err("unexpected end of input")),
    }
    p.object(0, true)?;
    Ok(p.pos)
}

/// Skips JSON whitespace from `pos`.
pub fn skip_ws(src: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = src.get(pos) {
        pos += 1;
    }
    pos
}

/// The text of a canonical JSON string token (with quotes), unescaped.
pub fn decode_str(token: &[u8]) -> Cow<'_, str> {
    let inner = &token[1..token.len() - 1];
    if !inner.contains(&b'\\') {
        // Canonical tokens come from validated UTF-8 input.
        return Cow::Borrowed(std::str::from_utf8(inner).expect("canonical JSON is UTF-8"));
    }
    let mut s = String::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            let start = i;
            while i < inner.len() && inner[i] != b'\\' {
                i += 1;
            }
            s.push_str(std::str::from_utf8(&inner[start..i]).expect("canonical JSON is UTF-8"));
            continue;
        }
        // Canonical escapes are only these.
        let c = match inner[i + 1] {
            b'"' => '"',
            b'\\' => '\\',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = std::str::from_utf8(&inner[i + 2..i + 6]).expect("hex digits");
                let v = u32::from_str_radix(hex, 16).expect("hex digits");
                i += 4;
                char::from_u32(v).expect("canonical escapes are control characters")
            }
            _ => unreachable!("not a canonical escape"),
        };
        s.push(c);
        i += 2;
    }
    Cow::Owned(s)
}

/// Writes `s` as a canonical JSON string token.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_str_bytes(out, s.as_bytes());
}

/// [`write_str`] of a string's UTF-8 bytes.
pub fn write_str_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = plain_end(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        push_escape(out, b);
        start = i + 1;
    }
    out.push(b'"');
}

/// The offset of the first byte at or after `i` that a string cannot hold as it
/// is (`"`, `\\` or a control character), or `b.len()`. Eight bytes at a time:
/// strings are most of the text.
pub(crate) fn plain_end(b: &[u8], mut i: usize) -> usize {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let quote = w ^ (LO * u64::from(b'"'));
        let backslash = w ^ (LO * u64::from(b'\\'));
        // Flags a zero byte (a quote, a backslash) or one below 0x20; a borrow can
        // flag bytes after a match too, but never one before the first.
        let found = (quote.wrapping_sub(LO) & !quote
            | backslash.wrapping_sub(LO) & !backslash
            | w.wrapping_sub(LO * 0x20) & !w)
            & HI;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !ESCAPE[b[i] as usize] {
        i += 1;
    }
    i
}

/// Calls `f` with `key` as a canonical string token, built on the stack when it
/// is short and needs no escapes (object keys usually are).
pub fn with_key_token<T>(key: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    let b = key.as_bytes();
    let mut buf = [0u8; 64];
    if b.len() + 2 <= buf.len() && plain_end(b, 0) == b.len() {
        buf[0] = b'"';
        buf[1..=b.len()].copy_from_slice(b);
        buf[b.len() + 1] = b'"';
        return f(&buf[..b.len() + 2]);
    }
    let mut token = Vec::with_capacity(b.len() + 2);
    write_str(&mut token, key);
    f(&token)
}

/// Orders two canonical key tokens (with quotes) by their unescaped text, as a
/// sorted map of strings would.
pub fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    let (ia, ib) = (&a[1..a.len() - 1], &b[1..b.len() - 1]);
    // Up to the first difference outside any escape, the raw bytes order as the
    // text does; escapes need decoding (`\n` sorts after `\t` as text).
    let d = ia.iter().zip(ib).take_while(|(x, y)| x == y).count();
    if ia[..d].contains(&b'\\') {
        return decode_str(a).as_bytes().cmp(decode_str(b).as_bytes());
    }
    match (ia.get(d), ib.get(d)) {
        (Some(b'\\'), _) | (_, Some(b'\\')) => {
            decode_str(a).as_bytes().cmp(decode_str(b).as_bytes())
        }
        (Some(x), Some(y)) => x.cmp(y),
        _ => ia.len().cmp(&ib.len()),
    }
}

/// The members of a canonical JSON object (as [`canonicalize`] writes it), in order:
/// each key token with its quotes, and the value's text. Reads the already
/// validated text without checking or copying it again.
pub fn canonical_members(object: &[u8]) -> CanonicalMembers<'_> {
    CanonicalMembers { b: object, pos: 1 }
}

/// The iterator of [`canonical_members`].
#[derive(Debug, Clone)]
pub struct CanonicalMembers<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for CanonicalMembers<'a> {
    /// (key token, value).
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.b;
        match b.get(self.pos) {
            Some(b'"') => {}
            Some(b',') => self.pos += 1,
            _ => return None,
        }
        let k0 = self.pos;
        let k1 = string_end(b, k0);
        let v1 = value_end(b, k1 + 1);
        self.pos = v1;
        Some((&b[k0..k1], &b[k1 + 1..v1]))
    }
}

/// The offset after the canonical string token opened at `open`.
fn string_end(b: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    loop {
        // Canonical strings hold no raw control characters: this stops at a quote
        // or at an escape.
        i = plain_end(b, i);
        match b.get(i) {
            Some(b'"') => return i + 1,
            Some(_) => i += 2,
            None => return b.len(),
        }
    }
}

/// The offset after the canonical value that starts at `at`.
pub(crate) fn value_end(b: &[u8], at: usize) -> usize {
    let mut depth = 0usize;
    let mut i = at;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i = string_end(b, i);
                if depth == 0 {
                    return i;
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return i,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Bytes that a canonical string escapes.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn push_escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        }
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    let s = c.encode_utf8(&mut buf);
    if s.len() == 1 && ESCAPE[s.as_bytes()[0] as usize] {
        push_escape(out, s.as_bytes()[0]);
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

struct Parser<'s, 'o> {
    src: &'s [u8],
    pos: usize,
    out: &'o mut Vec<u8>,
    /// A stack of the members of the objects being read, innermost last.
    members: &'o mut Vec<Member>,
}

impl Parser<'_, '_> {
    fn err(&self, cause: &'static str) -> SyntaxError {
        SyntaxError {
            offset: self.pos,
            cause,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        self.pos = skip_ws(self.src, self.pos);
    }

    fn value(&mut self, depth: usize) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'{') => self.object(depth, false),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(_) => Err(self.err("expected a JSON value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        let s = self.src;
        let mut i = self.pos;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = s.get(i) {
                    i += 1;
                }
            }
            _ => {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(s.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            while let Some(b'0'..=b'9') = s.get(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = s.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = s.get(i) {
                i += 1;
            }
            if !matches!(s.get(i), Some(b'0'..=b'9')) {
                self.pos = i;
                return Err(self.err("invalid number"));
            }
            while let Some(b'0'..=b'9') = s.get(i) {
                i += 1;
            }
        }
        self.out.extend_from_slice(&s[start..i]);
        self.pos = i;
        Ok(())
    }

    fn string(&mut self) -> Result<(), SyntaxError> {
        let s = self.src;
        self.pos += 1; // opening quote
        self.out.push(b'"');
        loop {
            let start = self.pos;
            let i = plain_end(s, start);
            self.out.extend_from_slice(&s[start..i]);
            self.pos = i;
            match s.get(i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    self.out.push(b'"');
                    return Ok(());
                }
                Some(b'\\') => self.escape()?,
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn escape(&mut self) -> Result<(), SyntaxError> {
        let c = match self.src.get(self.pos + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let hi = self.hex4(self.pos + 2)?;
                self.pos += 6;
                let c = match hi {
                    0xD800..=0xDBFF => {
                        if self.src.get(self.pos) != Some(&b'\\')
                            || self.src.get(self.pos + 1) != Some(&b'u')
                        {
                            return Err(self.err("lone surrogate in \\u escape"));
                        }
                        let lo = self.hex4(self.pos + 2)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.err("lone surrogate in \\u escape"));
                        }
                        self.pos += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        self.pos -= 6;
                        return Err(self.err("lone surrogate in \\u escape"));
                    }
                    _ => hi,
                };
                push_char(
                    self.out,
                    char::from_u32(c).expect("surrogates are handled above"),
                );
                return Ok(());
            }
            None => return Err(self.err("unterminated string")),
            Some(_) => return Err(self.err("invalid escape")),
        };
        push_char(self.out, c);
        self.pos += 2;
        Ok(())
    }

    fn hex4(&mut self, at: usize) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for k in 0..4 {
            let d = match self.src.get(at + k) {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => {
                    self.pos = at + k;
                    return Err(self.err("invalid \\u escape"));
                }
            };
            v = v * 16 + u32::from(d);
        }
        Ok(v)
    }

    fn array(&mut self, depth: usize) -> Result<(), SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.pos += 1;
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.out.push(b']');
            return Ok(());
        }
        loop {
            self.value(depth + 1)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.out.push(b',');
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                Some(_) => return Err(self.err("expected ',' or ']'")),
                None => return Err(self.err("unexpected end of input")),
            }
        }
    }

    /// Reads an object. With `keep`, its members stay on the member stack for the
    /// caller (only the outermost object may ask for that).
    fn object(&mut self, depth: usize, keep: bool) -> Result<(), SyntaxError> {
        if depth >= MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.pos += 1;
        let open = self.out.len();
        self.out.push(b'{');
        let base = self.members.len();
        let mut sorted = true;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.out.push(b'}');
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            if self.members.len() > base {
                self.out.push(b',');
            }
            let k0 = self.out.len();
            self.string()?;
            let k1 = self.out.len();
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.pos += 1;
            self.out.push(b':');
            self.skip_ws();
            let v0 = self.out.len();
            self.value(depth + 1)?;
            let m = Member {
                key: (k0, k1),
                value: (v0, self.out.len()),
            };
            if let Some(prev) = self.members[base..].last() {
                let o = cmp_keys(
                    &self.out[prev.key.0..prev.key.1],
                    &self.out[m.key.0..m.key.1],
                );
                sorted &= o == Ordering::Less;
            }
            self.members.push(m);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => return Err(self.err("expected ',' or '}'")),
                None => return Err(self.err("unexpected end of input")),
            }
        }
        if !sorted {
            self.sort_members(open, base);
        }
        self.out.push(b'}');
        if !keep {
            self.members.truncate(base);
        }
        Ok(())
    }

    /// Rewrites the members of the object opened at `open` in key order; of
    /// duplicate keys the last one wins, as in a map built from the text.
    fn sort_members(&mut self, open: usize, base: usize) {
        let mut ms: Vec<Member> = self.members.drain(base..).collect();
        let text = self.out[open + 1..].to_vec();
        let shift = open + 1;
        let key = |m: &Member| &text[m.key.0 - shift..m.key.1 - shift];
        // Stable, so that among equal keys the later stays later.
        ms.sort_by(|a, b| cmp_keys(key(a), key(b)));
        let mut kept: Vec<Member> = Vec::with_capacity(ms.len());
        for m in ms {
            match kept.last_mut() {
                Some(last) if cmp_keys(key(last), key(&m)) == Ordering::Equal => *last = m,
                _ => kept.push(m),
            }
        }
        self.out.truncate(open + 1);
        for (i, m) in kept.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let k0 = self.out.len();
            self.out
                .extend_from_slice(&text[m.start() - shift..m.end() - shift]);
            let delta = k0 as isize - m.start() as isize;
            let at = |x: usize| (x as isize + delta) as usize;
            self.members.push(Member {
                key: (at(m.key.0), at(m.key.1)),
                value: (at(m.value.0), at(m.value.1)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Result<String, SyntaxError> {
        let mut out = Vec::new();
        let end = canonicalize(s.as_bytes(), 0, &mut out)?;
        if skip_ws(s.as_bytes(), end) != s.len() {
            return Err(SyntaxError {
                offset: end,
                cause: "trailing text",
            });
        }
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn compacts_and_sorts_keys() {
        assert_eq!(
            canon(r#" { "b" : [1, 2 ,{"z":1,"a":2}], "a" : null } "#).unwrap(),
            r#"{"a":null,"b":[1,2,{"a":2,"z":1}]}"#
        );
    }

    #[test]
    fn numbers_keep_their_digits() {
        assert_eq!(
            canon("[1.50, -0, 1E+5, 123456789012345678901234567890]").unwrap(),
            "[1.50,-0,1E+5,123456789012345678901234567890]"
        );
    }

    #[test]
    fn escapes_are_normalised_like_serde_json() {
        let s = r#""\u00e9\/\u0041\n\u001f\ud83d\ude00\"\\""#;
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(canon(s).unwrap(), serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        assert_eq!(canon(r#"{"b":1,"a":1,"b":2}"#).unwrap(), r#"{"a":1,"b":2}"#);
    }

    #[test]
    fn keys_sort_by_text_not_by_escapes() {
        // '"' (0x22) sorts before 'a', although its escape starts with '\' (0x5c).
        assert_eq!(canon(r#"{"a":1,"\"":2}"#).unwrap(), r#"{"\"":2,"a":1}"#);
        // A key sorts before the keys it is a prefix of.
        assert_eq!(canon(r#"{"a!":1,"a":2}"#).unwrap(), r#"{"a":2,"a!":1}"#);
    }

    #[test]
    fn rejects_what_json_rejects() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\"}",
            "01",
            "1.",
            "-",
            "tru",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\tb\"",
            "{\"a\":1,}",
            "nul",
            "[1 2]",
        ] {
            assert!(canon(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn keys_compare_as_their_text() {
        let keys = [
            "",
            "a",
            "ab",
            "b",
            "\"",
            "\\",
            "\n",
            "\t",
            "\u{1f}",
            "a\n",
            "a\t",
            "a\"b",
            "é",
            "z",
            "\\a",
            "\\b",
            "_crdt_metadata",
            "_crdt",
            "a\\",
            "a\\\n",
        ];
        for x in keys {
            for y in keys {
                let (mut tx, mut ty) = (Vec::new(), Vec::new());
                write_str(&mut tx, x);
                write_str(&mut ty, y);
                assert_eq!(cmp_keys(&tx, &ty), x.cmp(y), "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn plain_runs_end_at_the_first_special_byte() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&k| ESCAPE[b[k] as usize])
                .unwrap_or(b.len())
        };
        let alphabet = [
            b'a', b'"', b'\\', 0, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            for _ in 0..500 {
                let b: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly plain bytes, so that runs are long.
                        if x.is_multiple_of(4) {
                            alphabet[(x >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (x >> 16) as u8 % 26
                        }
                    })
                    .collect();
                for i in 0..=len {
                    assert_eq!(plain_end(&b, i), naive(&b, i), "{b:?} from {i}");
                }
            }
        }
    }

    #[test]
    fn canonical_members_agree_with_the_member_list() {
        for text in [
            r#"{}"#,
            r#"{"a":1}"#,
            r#"{"\"}":"x\\\"","\\":[1,{"}":"]"}],"a\n":{"b":{}},"z":-1.5e3,"zz":true}"#,
            r#"{"k":[[],[[]],{}],"l":"\u001f,","m":null}"#,
        ] {
            let mut out = Vec::new();
            let mut ms = Vec::new();
            canonicalize_object(text.as_bytes(), 0, &mut out, &mut ms, "no").unwrap();
            let want: Vec<_> = ms
                .iter()
                .map(|m| (&out[m.key.0..m.key.1], &out[m.value.0..m.value.1]))
                .collect();
            let got: Vec<_> = canonical_members(&out).collect();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn object_members_are_listed_in_key_order() {
        let mut out = Vec::new();
        let mut ms = Vec::new();
        canonicalize_object(br#"{"z":[1],"a":{"q":2}}"#, 0, &mut out, &mut ms, "no").unwrap();
        let keys: Vec<_> = ms.iter().map(|m| &out[m.key.0..m.key.1]).collect();
        assert_eq!(keys, [&b"\"a\""[..], b"\"z\""]);
        assert_eq!(&out[ms[0].value.0..ms[0].value.1], br#"{"q":2}"#);
        let err = canonicalize_object(b" [1]", 0, &mut out, &mut ms, "not an object").unwrap_err();
        assert_eq!(
            err,
            SyntaxError {
                offset: 1,
                cause: "not an object"
            }
        );
    }
}
