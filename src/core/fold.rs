//! The fold (sections 11 and 12): every lineage of the backup into one memory,
//! one entry per identity. No I/O.
//!
//! Each lineage contributes its head, its writer's newest version. A head that
//! another head has seen (at its version or later) is superseded: the one that
//! saw it was made on top of it. An identity is live while some head is neither
//! a tombstone nor superseded, so a deletion removes what its host had seen and a
//! concurrent edit it had not seen keeps the entry (observed-remove, add-wins).
//! The newest live head gives the entry; an MCP entity holds the observations of
//! every live head, each once, oldest first, except those a head removed: an
//! observation carries the dot (lineage, version) that added it, and a head that
//! has seen that dot but does not hold it removed it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::core::clock::Timestamp;
use crate::core::entry::{Dot, Dots, Entry, Seen, json_items};
use crate::core::merge;
use crate::core::record::{self, Kind};
use crate::core::stamp::minted_by;

/// One host's own file, as the fold reads it.
pub struct HostFile<'a> {
    pub host: &'a str,
    pub entries: &'a [Entry],
    /// Every entry of the file was read: a lineage it lacks was retired.
    pub whole: bool,
}

/// The head of every lineage: its writer's copy (the version in the file of the
/// host that wrote it), else the greatest copy found anywhere. A lineage that a
/// writer's whole file no longer holds was removed by a version before tombstones
/// and is left out.
pub fn heads<'a>(files: &[HostFile<'a>], unified: &'a [Entry]) -> Vec<&'a Entry> {
    // Where two files claim a lineage (a forged copy, or a version made before
    // one writer per unique_id), the file of the host that minted it wins.
    let claim = |e: &Entry| minted_by(e.unique_id(), &e.meta.host);
    let mut written: HashMap<&str, &Entry> = HashMap::new();
    for f in files {
        for e in f.entries.iter().filter(|e| *e.meta.host == *f.host) {
            written
                .entry(e.unique_id())
                .and_modify(|cur| {
                    let better = claim(e)
                        .cmp(&claim(cur))
                        .then_with(|| merge::lww_cmp(e, cur));
                    if better.is_gt() {
                        *cur = e;
                    }
                })
                .or_insert(e);
        }
    }
    let mut others: HashMap<&str, &Entry> = HashMap::new();
    let all = files.iter().flat_map(|f| f.entries.iter()).chain(unified);
    for e in all {
        if written.contains_key(e.unique_id()) {
            continue;
        }
        others
            .entry(e.unique_id())
            .and_modify(|cur| {
                if merge::lww_cmp(e, cur).is_gt() {
                    *cur = e;
                }
            })
            .or_insert(e);
    }
    let retired = |uid: &str| {
        files
            .iter()
            .filter(|f| minted_by(uid, f.host))
            .max_by_key(|f| f.host.len())
            .is_some_and(|f| f.whole)
    };
    let mut out: Vec<&Entry> = written.into_values().collect();
    out.extend(
        others
            .into_iter()
            .filter(|(uid, _)| !retired(uid))
            .map(|(_, e)| e),
    );
    out.sort_by(|a, b| merge::file_cmp(a, b));
    out
}

/// One identity, folded.
#[derive(Debug, Clone)]
pub struct Folded<'a> {
    pub ident: String,
    pub kind: Kind,
    /// The entry as the memory should hold it; `None`: deleted.
    pub body: Option<String>,
    /// Every lineage of the identity and the version of its head.
    pub seen: Seen,
    /// The newest timestamp among the heads.
    pub newest: Timestamp,
    /// The dots of each observation of `body`, lineages named.
    pub dots: Vec<Dots>,
    /// The newest live head (for deleted identities, the newest head).
    pub newest_head: &'a Entry,
}

/// Folds `heads` (one per lineage, as [`heads`] gives them) into one entry per
/// identity, deleted ones included, ordered entities first, then relations, then
/// the rest, each by the time their newest head was written.
pub fn fold<'a>(heads: &[&'a Entry], id_field: &str) -> Vec<Folded<'a>> {
    let mut groups: HashMap<String, Vec<&'a Entry>> = HashMap::new();
    for &h in heads {
        groups
            .entry(record::ident_of_body(h.body(), id_field))
            .or_default()
            .push(h);
    }
    let mut out: Vec<Folded> = groups
        .into_iter()
        .map(|(ident, heads)| fold_one(ident, heads))
        .collect();
    out.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then_with(|| merge::file_cmp(a.newest_head, b.newest_head))
            .then_with(|| a.ident.cmp(&b.ident))
    });
    out
}

fn fold_one<'a>(ident: String, mut heads: Vec<&'a Entry>) -> Folded<'a> {
    heads.sort_by(|a, b| merge::lww_cmp(a, b));
    let superseded = |h: &Entry| {
        heads
            .iter()
            .any(|g| !std::ptr::eq(*g, h) && g.meta.has_seen(&h.meta.unique_id, h.meta.version))
    };
    let live: Vec<&Entry> = heads
        .iter()
        .copied()
        .filter(|h| !h.meta.deleted && !superseded(h))
        .collect();
    let mut seen = Seen::new();
    for h in &heads {
        let v = seen.entry(h.meta.unique_id.clone()).or_insert(0);
        *v = (*v).max(h.meta.version);
    }
    let newest = heads
        .iter()
        .map(|h| h.meta.timestamp)
        .max()
        .expect("a group has a head");
    let Some(&top) = live.last() else {
        let last = *heads.last().expect("a group has a head");
        return Folded {
            ident,
            kind: record::kind_of_body(last.body()),
            body: None,
            seen,
            newest,
            dots: Vec::new(),
            newest_head: last,
        };
    };
    let kind = record::kind_of_body(top.body());
    let lone = match heads[..] {
        [only] if kind == Kind::Entity => lone_observations(only),
        _ => None,
    };
    let (body, dots) = if let Some(dots) = lone {
        (top.body().to_string(), dots)
    } else if kind == Kind::Entity {
        let (obs, dots) = observations(&heads, &live);
        (with_observations(top.body(), &obs), dots)
    } else {
        let n = crate::core::base::observation_count(top.body());
        let dots = (0..n)
            .map(|i| {
                top.meta
                    .dots(i)
                    .into_iter()
                    .map(|d| named(top, d))
                    .collect()
            })
            .collect();
        (top.body().to_string(), dots)
    };
    Folded {
        ident,
        kind,
        body: Some(body),
        seen,
        newest,
        dots,
        newest_head: top,
    }
}

/// A dot with its lineage named.
fn named(h: &Entry, d: Dot) -> Dot {
    Dot {
        lineage: Some(d.lineage.unwrap_or_else(|| h.meta.unique_id.clone())),
        version: d.version,
    }
}

/// The observations of `h`, each with each of its dots (lineages named).
fn observations_of(h: &Entry) -> Vec<(&str, Dot)> {
    if h.meta.deleted {
        return Vec::new();
    }
    let Some(items) =
        record::member_of_body(h.body(), "observations").and_then(|o| json_items(o.as_bytes()))
    else {
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .flat_map(|(i, t)| {
            let text = std::str::from_utf8(t).expect("canonical JSON is UTF-8");
            h.meta.dots(i).into_iter().map(move |d| (text, named(h, d)))
        })
        .collect()
}

/// The dots of a lone live head's observations when `observations` would keep
/// its body as it is: every observation listed once, each with a dot (no other
/// head can have removed one). `None`: fold it the general way.
fn lone_observations(h: &Entry) -> Option<Vec<Dots>> {
    let items =
        record::member_of_body(h.body(), "observations").and_then(|o| json_items(o.as_bytes()))?;
    let mut texts = HashSet::with_capacity(items.len());
    let mut dots = Vec::with_capacity(items.len());
    for (i, t) in items.into_iter().enumerate() {
        let mut d: Dots = h.meta.dots(i).into_iter().map(|d| named(h, d)).collect();
        if d.is_empty() || !texts.insert(t) {
            return None;
        }
        d.sort();
        d.dedup();
        dots.push(d);
    }
    Some(dots)
}

/// The observations of the live heads, oldest head first, each once, with the
/// dots that no head removed: a head that has seen a dot but does not hold it
/// removed it. An observation with no dot left is gone.
fn observations(heads: &[&Entry], live: &[&Entry]) -> (Vec<String>, Vec<Dots>) {
    let held: Vec<HashSet<(&str, Dot)>> = heads
        .iter()
        .map(|h| observations_of(h).into_iter().collect())
        .collect();
    let removed = |text: &str, d: &Dot| {
        let lineage: &Arc<str> = d.lineage.as_ref().expect("named");
        heads.iter().zip(&held).any(|(g, holds)| {
            g.meta.has_seen(lineage, d.version) && !holds.contains(&(text, d.clone()))
        })
    };
    let mut out: Vec<String> = Vec::new();
    let mut dots: Vec<Dots> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for h in live {
        for (text, d) in observations_of(h) {
            if removed(text, &d) {
                continue;
            }
            match index.get(text) {
                Some(&i) => {
                    if !dots[i].contains(&d) {
                        dots[i].push(d);
                    }
                }
                None => {
                    index.insert(text.to_string(), out.len());
                    out.push(text.to_string());
                    dots.push(vec![d]);
                }
            }
        }
    }
    // The same list on every host, whatever the order of the heads.
    for d in &mut dots {
        d.sort();
    }
    (out, dots)
}

/// `body` (a canonical object) with its `observations` replaced by `items`.
fn with_observations(body: &str, items: &[String]) -> String {
    const KEY: &[u8] = br#""observations""#;
    let list = format!("[{}]", items.join(","));
    let mut text = String::with_capacity(body.len() + 64);
    text.push('{');
    let mut first = true;
    let mut placed = false;
    let mut push = |text: &mut String, key: &str, value: &str| {
        if !std::mem::take(&mut first) {
            text.push(',');
        }
        text.push_str(key);
        text.push(':');
        text.push_str(value);
    };
    fn utf8(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("canonical JSON is UTF-8")
    }
    for (key, value) in crate::core::json::canonical_members(body.as_bytes()) {
        if key == KEY {
            push(&mut text, utf8(key), &list);
            placed = true;
            continue;
        }
        if !placed && crate::core::json::cmp_keys(key, KEY).is_gt() {
            push(&mut text, utf8(KEY), &list);
            placed = true;
        }
        push(&mut text, utf8(key), utf8(value));
    }
    if !placed {
        push(&mut text, utf8(KEY), &list);
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry {
        let file = crate::core::entry::parse_stamped(format!("[\n{line}\n]\n").as_bytes())
            .expect("a host file");
        assert!(file.skipped.is_empty(), "{:?}", file.skipped);
        file.entries.into_iter().next().expect("one entry")
    }

    #[test]
    fn a_lone_head_folds_as_the_general_fold_does() {
        let meta = |extra: &str| {
            format!(
                r#""_crdt_metadata":{{{extra}"host":"h","timestamp":"2026-01-01T00:00:00.000000Z","unique_id":"h_n_2026","version":3}}"#
            )
        };
        let lines = [
            format!(
                r#"{{{},"name":"n","observations":["a","b"],"type":"entity"}}"#,
                meta("")
            ),
            format!(
                r#"{{{},"name":"n","observations":["a","a"],"type":"entity"}}"#,
                meta("")
            ),
            format!(r#"{{{},"name":"n","type":"entity"}}"#, meta("")),
            format!(
                r#"{{{},"name":"n","observations":[],"type":"entity"}}"#,
                meta("")
            ),
            format!(
                r#"{{{},"name":"n","observations":["a","b"],"type":"entity"}}"#,
                meta(r#""dots":[2,["x_n_2026",1]],"seen":{"x_n_2026":1},"#)
            ),
            format!(
                r#"{{{},"name":"n","observations":["a","b"],"type":"entity"}}"#,
                meta(
                    r#""dots":[[["x_n_2026",1],[null,2],["x_n_2026",1]],3],"seen":{"x_n_2026":1},"#
                )
            ),
        ];
        for line in &lines {
            let e = entry(line);
            let folded = fold(&[&e], "name");
            let [f] = &folded[..] else {
                panic!("one identity: {folded:?}")
            };
            let (obs, dots) = observations(&[&e], &[&e]);
            assert_eq!(
                f.body.as_deref(),
                Some(with_observations(e.body(), &obs).as_str()),
                "{line}"
            );
            assert_eq!(f.dots, dots, "{line}");
        }
        // The shortcut is taken where it applies.
        assert!(lone_observations(&entry(&lines[0])).is_some());
        assert!(lone_observations(&entry(&lines[1])).is_none());
    }
}
