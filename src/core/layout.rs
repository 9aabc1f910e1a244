//! Memory files as `restore` and `sync` write them: the MCP memory server's JSON
//! Lines layout, byte for byte as the server writes it (entities, then relations,
//! its keys in its order, lines joined by newlines without a final one), or a
//! JSON array with one entry per line.

use crate::core::json;
use crate::core::record::Kind;

/// The layout of a written memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One entry per line, as the MCP memory server writes.
    Lines,
    /// One JSON array.
    Array,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Lines => "jsonl",
            Layout::Array => "json",
        }
    }

    /// The existing file's layout (its first character), else JSON Lines when
    /// every entry is an MCP entity or relation, else a JSON array.
    pub fn of(existing: Option<&[u8]>, kinds: impl IntoIterator<Item = Kind>) -> Layout {
        let first = existing.and_then(|b| b.iter().find(|c| !c.is_ascii_whitespace()));
        match first {
            Some(b'[') => Layout::Array,
            Some(_) => Layout::Lines,
            None if kinds.into_iter().all(|k| k != Kind::Other) => Layout::Lines,
            None => Layout::Array,
        }
    }
}

/// The keys the MCP memory server writes, in its order.
const ENTITY_KEYS: [&str; 4] = ["type", "name", "entityType", "observations"];
const RELATION_KEYS: [&str; 4] = ["type", "from", "to", "relationType"];

/// An entity or relation with the MCP server's keys first, in its order, then any
/// others in canonical order; anything else as it is.
pub fn in_server_order(kind: Kind, body: &str) -> String {
    let order: &[&str] = match kind {
        Kind::Entity => &ENTITY_KEYS,
        Kind::Relation => &RELATION_KEYS,
        Kind::Other => return body.to_string(),
    };
    let mut members: Vec<(&[u8], &[u8])> = json::canonical_members(body.as_bytes()).collect();
    let rank = |key: &[u8]| {
        order
            .iter()
            .position(|k| key.len() == k.len() + 2 && &key[1..key.len() - 1] == k.as_bytes())
            .unwrap_or(order.len())
    };
    // Stable: keys outside the server's order keep their canonical order.
    members.sort_by_key(|(k, _)| rank(k));
    let mut text = Vec::with_capacity(body.len());
    text.push(b'{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(k);
        text.push(b':');
        text.extend_from_slice(v);
    }
    text.push(b'}');
    String::from_utf8(text).expect("canonical JSON is UTF-8")
}

/// The bytes of a memory file holding `entries` (kind and canonical body), in
/// the order given; in JSON Lines entities go before relations and the rest, as
/// the server keeps them.
pub fn render<'a>(entries: impl IntoIterator<Item = (Kind, &'a str)>, layout: Layout) -> Vec<u8> {
    let mut texts: Vec<(Kind, String)> = entries
        .into_iter()
        .map(|(k, b)| (k, in_server_order(k, b)))
        .collect();
    let mut out = Vec::new();
    match layout {
        Layout::Lines => {
            texts.sort_by_key(|(k, _)| *k);
            for (i, (_, t)) in texts.iter().enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(t.as_bytes());
            }
        }
        Layout::Array if texts.is_empty() => out.extend_from_slice(b"[]\n"),
        Layout::Array => {
            out.extend_from_slice(b"[\n");
            for (i, (_, t)) in texts.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n");
                }
                out.extend_from_slice(t.as_bytes());
            }
            out.extend_from_slice(b"\n]\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_entries_are_written_as_the_server_writes_them() {
        let e = r#"{"entityType":"person","name":"Ada","observations":["x"],"type":"entity"}"#;
        let r = r#"{"from":"Ada","relationType":"uses","to":"Rust","type":"relation"}"#;
        let out = render([(Kind::Relation, r), (Kind::Entity, e)], Layout::Lines);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"type\":\"entity\",\"name\":\"Ada\",\"entityType\":\"person\",\"observations\":[\"x\"]}\n{\"type\":\"relation\",\"from\":\"Ada\",\"to\":\"Rust\",\"relationType\":\"uses\"}"
        );
        assert_eq!(render([], Layout::Array), b"[]\n");
        assert_eq!(
            render([(Kind::Other, r#"{"id":"n1"}"#)], Layout::Array),
            b"[\n{\"id\":\"n1\"}\n]\n"
        );
    }

    #[test]
    fn the_layout_follows_the_existing_file_then_the_entries() {
        assert_eq!(Layout::of(Some(b" [ ]"), [Kind::Entity]), Layout::Array);
        assert_eq!(Layout::of(Some(b"{}"), [Kind::Other]), Layout::Lines);
        assert_eq!(
            Layout::of(None, [Kind::Entity, Kind::Relation]),
            Layout::Lines
        );
        assert_eq!(Layout::of(Some(b"  "), [Kind::Other]), Layout::Array);
    }
}
