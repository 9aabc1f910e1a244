//! The fold that `restore` does: many hosts' copies of the backup into one memory,
//! one entry per identity. MCP entities of one name become one entity holding the
//! observations of every copy (each once, oldest first) and the newest
//! `entityType`; everything else is its newest copy. No I/O.

use std::collections::HashMap;

use crate::entry::{Entry, HostNames, Record};
use crate::json;
use crate::memory;

/// What kind of entry, for the MCP server's layout (entities, then relations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Entity,
    Relation,
    Other,
}

/// One restored entry: its canonical JSON without metadata, and the entry it came
/// from (the newest copy of its identity), whose metadata `--keep-metadata` keeps.
#[derive(Debug, Clone)]
pub struct Folded {
    pub kind: Kind,
    pub ident: String,
    pub body: String,
    pub newest: Entry,
}

impl Folded {
    /// The entry as restored with its metadata.
    pub fn with_metadata(&self) -> String {
        let mut scratch = Vec::new();
        let (record, _) = Record::parse(
            self.body.as_bytes(),
            0,
            &mut scratch,
            &mut HostNames::default(),
        )
        .expect("a folded body is a canonical object");
        Entry::new(self.newest.meta.clone(), record).to_json()
    }
}

/// Folds `entries` (any order, any number of copies) into one entry per identity,
/// ordered entities first, then relations, then the rest, each by the time their
/// newest copy was written.
pub fn fold(entries: &[Entry], id_field: &str) -> Vec<Folded> {
    let mut groups: HashMap<String, Vec<(&Entry, Record)>> = HashMap::new();
    let mut scratch = Vec::new();
    let mut hosts = HostNames::default();
    for e in entries {
        let (record, _) = Record::parse(e.body().as_bytes(), 0, &mut scratch, &mut hosts)
            .expect("an entry body is a canonical object");
        groups
            .entry(memory::ident(&record, id_field))
            .or_default()
            .push((e, record));
    }
    let mut out: Vec<Folded> = groups
        .into_iter()
        .map(|(ident, mut copies)| {
            copies.sort_by(|a, b| a.0.lww_cmp(b.0));
            let (newest, newest_record) = copies.last().expect("a group has a copy");
            let kind = kind_of(newest_record);
            let body = if kind == Kind::Entity && copies.len() > 1 {
                with_observations(newest_record, &union_of_observations(&copies))
            } else {
                newest_record.body.clone()
            };
            Folded {
                kind,
                ident,
                body,
                newest: (*newest).clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then_with(|| a.newest.file_cmp(&b.newest))
            .then_with(|| a.ident.cmp(&b.ident))
    });
    out
}

fn kind_of(r: &Record) -> Kind {
    match r.get("type") {
        Some(r#""entity""#) if r.get("name").is_some_and(|n| n.starts_with('"')) => Kind::Entity,
        Some(r#""relation""#) => Kind::Relation,
        _ => Kind::Other,
    }
}

/// Every observation of every copy, each once, oldest copy first.
fn union_of_observations(copies: &[(&Entry, Record)]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, r) in copies {
        let Some(obs) = r.get("observations") else {
            continue;
        };
        for item in array_items(obs) {
            if seen.insert(item.clone()) {
                out.push(item);
            }
        }
    }
    out
}

/// The canonical items of a canonical JSON array; nothing for another value.
fn array_items(canonical: &str) -> Vec<String> {
    let b = canonical.as_bytes();
    if b.first() != Some(&b'[') {
        return Vec::new();
    }
    let mut items = Vec::new();
    let mut pos = 1;
    let mut out = Vec::new();
    while b.get(pos).is_some_and(|&c| c != b']') {
        out.clear();
        pos = json::canonicalize(b, pos, &mut out).expect("canonical JSON parses");
        items.push(String::from_utf8(out.clone()).expect("canonical JSON is UTF-8"));
        if b.get(pos) == Some(&b',') {
            pos += 1;
        }
    }
    items
}

/// `record`'s canonical JSON with its `observations` replaced.
fn with_observations(record: &Record, observations: &[String]) -> String {
    let mut text = String::with_capacity(record.body.len() + 64);
    text.push('{');
    let mut first = true;
    let mut replaced = false;
    let mut push = |text: &mut String, key: &str, value: &str| {
        if !std::mem::take(&mut first) {
            text.push(',');
        }
        text.push_str(key);
        text.push(':');
        text.push_str(value);
    };
    let list = format!("[{}]", observations.join(","));
    const KEY: &str = r#""observations""#;
    let mut canonical = Vec::with_capacity(record.body.len());
    let mut members = Vec::new();
    json::canonicalize_object(
        record.body.as_bytes(),
        0,
        &mut canonical,
        &mut members,
        "object",
    )
    .expect("a record body is a canonical object");
    let slice = |r: (usize, usize)| std::str::from_utf8(&canonical[r.0..r.1]).expect("UTF-8");
    for m in &members {
        let (key, value) = (slice(m.key), slice(m.value));
        if key == KEY {
            push(&mut text, key, &list);
            replaced = true;
        } else {
            if !replaced && json::cmp_keys(key.as_bytes(), KEY.as_bytes()).is_gt() {
                push(&mut text, KEY, &list);
                replaced = true;
            }
            push(&mut text, key, value);
        }
    }
    if !replaced {
        push(&mut text, KEY, &list);
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files;

    fn entry(host: &str, ts: &str, uid: &str, body: &str) -> Entry {
        let meta = format!(
            r#""_crdt_metadata":{{"host":"{host}","timestamp":"{ts}","unique_id":"{uid}","version":1}}"#
        );
        let line = format!("{{{meta},{}", &body[1..]);
        files::parse_stamped(line.as_bytes())
            .unwrap()
            .entries
            .remove(0)
    }

    #[test]
    fn entities_of_one_name_unite_their_observations_oldest_first() {
        let a = entry(
            "a",
            "2026-01-01T00:00:00Z",
            "a1",
            r#"{"entityType":"person","name":"Ada","observations":["x","y"],"type":"entity"}"#,
        );
        let b = entry(
            "b",
            "2026-01-02T00:00:00Z",
            "b1",
            r#"{"entityType":"engineer","name":"Ada","observations":["y","z"],"type":"entity"}"#,
        );
        for input in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
            let f = fold(&input, "id");
            assert_eq!(f.len(), 1);
            assert_eq!(
                f[0].body,
                r#"{"entityType":"engineer","name":"Ada","observations":["x","y","z"],"type":"entity"}"#
            );
            assert_eq!(&*f[0].newest.meta.host, "b");
        }
    }

    #[test]
    fn relations_once_each_and_entities_first() {
        let rel = r#"{"from":"Ada","relationType":"uses","to":"Rust","type":"relation"}"#;
        let r1 = entry("a", "2026-01-01T00:00:00Z", "r1", rel);
        let r2 = entry("b", "2026-01-03T00:00:00Z", "r2", rel);
        let e = entry(
            "a",
            "2026-01-05T00:00:00Z",
            "e1",
            r#"{"entityType":"language","name":"Rust","type":"entity"}"#,
        );
        let n = entry("a", "2026-01-01T00:00:00Z", "n1", r#"{"id":"n1","c":1}"#);
        let f = fold(&[r1, r2, e, n], "id");
        let kinds: Vec<Kind> = f.iter().map(|x| x.kind).collect();
        assert_eq!(kinds, [Kind::Entity, Kind::Relation, Kind::Other]);
        assert_eq!(f[1].body, rel);
    }

    #[test]
    fn a_missing_observations_field_is_added_in_key_order() {
        let a = entry(
            "a",
            "2026-01-01T00:00:00Z",
            "a1",
            r#"{"name":"Ada","observations":["x"],"type":"entity"}"#,
        );
        let b = entry(
            "b",
            "2026-01-02T00:00:00Z",
            "b1",
            r#"{"name":"Ada","type":"entity","zz":1}"#,
        );
        let f = fold(&[a, b], "id");
        assert_eq!(
            f[0].body,
            r#"{"name":"Ada","observations":["x"],"type":"entity","zz":1}"#
        );
        assert!(f[0].with_metadata().contains(r#""unique_id":"b1""#));
    }
}
