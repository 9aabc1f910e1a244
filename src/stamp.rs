//! Stamping: the entries of a memory file, this host's previous state and the clock
//! in, stamped entries out. No I/O.
//!
//! An entry keeps its metadata while its content is unchanged, so stamping an
//! unchanged memory again gives the same bytes; an edit keeps the `unique_id` and
//! orders after the version it replaces even when this host's clock is behind.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::crdt::IdHasher;

use crate::clock::Timestamp;
use crate::entry::{Entry, Metadata, Record};
use crate::memory::{self, Located};

/// Maps and sets of ids with the merge's fast hash, which SipHash costs several
/// times over on ten thousand entries.
type Map<K, V> = HashMap<K, V, IdHasher>;
type Set<K> = HashSet<K, IdHasher>;

fn map<K, V>(capacity: usize) -> Map<K, V> {
    Map::with_capacity_and_hasher(capacity, IdHasher::default())
}

fn set<K>(capacity: usize) -> Set<K> {
    Set::with_capacity_and_hasher(capacity, IdHasher::default())
}

/// What stamping needs besides the memory file.
pub struct Context<'a> {
    /// This host's name, already sanitised.
    pub host: &'a str,
    pub now: Timestamp,
    pub id_field: &'a str,
    /// P: this host's own file as last known.
    pub previous: &'a [Entry],
    /// Everything else known (the unified file), to find the versions that entries
    /// restored with their metadata came from.
    pub known: &'a [Entry],
}

/// Something stamping noticed that the user should hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Two different entries of one identity; the later one was renamed.
    DuplicateIdent {
        line: usize,
        ident: String,
        renamed: String,
    },
    /// An entry's own `_crdt_metadata` was not valid and was ignored.
    BadMetadata { line: usize, cause: String },
}

/// The result of stamping.
#[derive(Debug, Default)]
pub struct Stamped {
    /// The new host file's entries, in file order.
    pub entries: Vec<Entry>,
    pub new: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Entries of P that the memory file no longer has (they stay in unified).
    pub removed: usize,
    pub notices: Vec<Notice>,
}

/// Stamps the records of a memory file against `cx`.
pub fn stamp(records: Vec<Located>, cx: &Context<'_>) -> Stamped {
    let mut out = Stamped::default();
    let host: Arc<str> = cx.host.into();
    let known: Map<&str, &Entry> = cx.known.iter().chain(cx.previous).fold(
        map(cx.known.len() + cx.previous.len()),
        |mut m, e| {
            m.entry(e.unique_id())
                .and_modify(|cur: &mut &Entry| {
                    if e.lww_cmp(cur).is_gt() {
                        *cur = e;
                    }
                })
                .or_insert(e);
            m
        },
    );
    let mut previous_by_uid: Map<&str, usize> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        previous_by_uid.insert(e.unique_id(), i);
    }
    let mut claimed = vec![false; cx.previous.len()];

    // Entries of one identity: identical copies count once, different ones are
    // all kept under `ident#2`, `ident#3`, ...
    let items = dedupe(records, cx.id_field, &mut out.notices);

    // Entries that carry their own metadata (restored from unified) claim the P
    // entry of their unique_id first; the rest are matched by identity.
    let mut pending: Vec<Item> = Vec::with_capacity(items.len());
    let mut lineages: Set<Arc<str>> = set(0);
    for mut item in items {
        match item.record.metadata.take() {
            // A second, different line of one lineage: an entry of its own.
            Some(Ok(m)) if lineages.contains(&m.unique_id) => pending.push(item),
            Some(Ok(m)) => {
                lineages.insert(m.unique_id.clone());
                let in_p = previous_by_uid.get(&*m.unique_id).copied();
                if let Some(i) = in_p {
                    claimed[i] = true;
                }
                let prior = in_p
                    .map(|i| &cx.previous[i])
                    .or_else(|| known.get(&*m.unique_id).copied());
                let entry = match prior {
                    Some(p) => restamp(item.record, p, Some(&m), &host, cx.now, &mut out),
                    // A version this host has never seen: taken as it is.
                    None => {
                        out.unchanged += 1;
                        Entry::new(m, item.record)
                    }
                };
                out.entries.push(entry);
            }
            Some(Err(e)) => {
                out.notices.push(Notice::BadMetadata {
                    line: item.line,
                    cause: e.0,
                });
                pending.push(item);
            }
            None => pending.push(item),
        }
    }

    // An unchanged entry keeps its own lineage whatever its position: found by
    // its body (the identity is the body's), the oldest lineage of that body
    // first. Only the others need the identity of P's entries, which costs a read
    // of each body.
    let oldest_first = |&a: &usize, &b: &usize| {
        let (a, b) = (&cx.previous[a], &cx.previous[b]);
        created_at(a)
            .cmp(&created_at(b))
            .then_with(|| a.unique_id().cmp(b.unique_id()))
    };
    let mut by_body: Map<&str, Vec<usize>> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        if !claimed[i] {
            by_body.entry(e.body()).or_default().push(i);
        }
    }
    for same in by_body.values_mut().filter(|v| v.len() > 1) {
        same.sort_by(oldest_first);
    }
    let mut rest: Vec<Item> = Vec::with_capacity(pending.len() / 8);
    for item in pending {
        match by_body.get_mut(item.record.body.as_str()) {
            Some(same) if !same.is_empty() => {
                let c = same.remove(0);
                claimed[c] = true;
                out.unchanged += 1;
                out.entries.push(cx.previous[c].clone());
            }
            _ => rest.push(item),
        }
    }
    drop(by_body);
    let pending = rest;

    // The rest pair with P's remaining entries of their identity, oldest lineage
    // first, to pair with the earliest lines of the file.
    let mut by_ident: Map<String, Vec<usize>> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        if !claimed[i] {
            by_ident
                .entry(memory::ident_of_body(e.body(), cx.id_field))
                .or_default()
                .push(i);
        }
    }
    for candidates in by_ident.values_mut().filter(|v| v.len() > 1) {
        candidates.sort_by(oldest_first);
    }
    for item in pending {
        let candidate = by_ident
            .get_mut(&item.base)
            .filter(|c| !c.is_empty())
            .map(|c| c.remove(0));
        let entry = match candidate {
            Some(c) => {
                claimed[c] = true;
                restamp(item.record, &cx.previous[c], None, &host, cx.now, &mut out)
            }
            None => {
                let ident = item.ident.as_deref().unwrap_or(&item.base);
                let uid = format!("{}_{ident}_{}", cx.host, cx.now);
                match known.get(uid.as_str()) {
                    // Re-added within the same instant: an edit of that lineage.
                    Some(p) => restamp(item.record, p, None, &host, cx.now, &mut out),
                    None => {
                        out.new += 1;
                        let meta = Metadata {
                            host: host.clone(),
                            timestamp: cx.now,
                            version: 1,
                            unique_id: uid.into(),
                            extra: Box::default(),
                        };
                        Entry::new(meta, item.record)
                    }
                }
            }
        };
        out.entries.push(entry);
    }
    out.removed = claimed.iter().filter(|c| !**c).count();
    out.entries.sort_by(Entry::file_cmp);
    out
}

/// `record` against its prior version `p` (and its own metadata `own`, if it has
/// some): unchanged keeps the prior's metadata, changed gets the next version.
fn restamp(
    record: Record,
    p: &Entry,
    own: Option<&Metadata>,
    host: &Arc<str>,
    now: Timestamp,
    out: &mut Stamped,
) -> Entry {
    if p.body() == record.body {
        out.unchanged += 1;
        return p.clone();
    }
    out.changed += 1;
    let (mut version, mut last) = (p.meta.version, p.meta.timestamp);
    if let Some(m) = own {
        version = version.max(m.version);
        last = last.max(m.timestamp);
    }
    let meta = Metadata {
        host: host.clone(),
        timestamp: now.max(last.next()),
        version: version + 1,
        unique_id: p.meta.unique_id.clone(),
        extra: p.meta.extra.clone(),
    };
    Entry::new(meta, record)
}

/// When an entry's lineage began: the timestamp that ends its unique_id, where it
/// has one, else its own.
fn created_at(e: &Entry) -> Timestamp {
    e.unique_id()
        .rsplit_once('_')
        .and_then(|(_, ts)| Timestamp::parse(ts))
        .unwrap_or(e.meta.timestamp)
}

struct Item {
    record: Record,
    line: usize,
    /// The identity by the rules.
    base: String,
    /// The identity after renaming a duplicate; none: `base`.
    ident: Option<String>,
}

fn dedupe(records: Vec<Located>, id_field: &str, notices: &mut Vec<Notice>) -> Vec<Item> {
    let bases: Vec<String> = records
        .iter()
        .map(|r| memory::ident(&r.record, id_field))
        .collect();
    // A renamed identity must not be one that another entry has by its own right
    // (an entry with the id `n1#2`), or two new entries would share a unique_id.
    let natural: Set<&str> = bases.iter().map(String::as_str).collect();
    let mut renamed_ones: Set<String> = set(0);
    let mut seen: Map<&str, Vec<usize>> = map(records.len());
    let mut items: Vec<Item> = Vec::with_capacity(records.len());
    for (base, Located { record, line }) in bases.iter().zip(records) {
        let copies = seen.entry(base.as_str()).or_default();
        let same = copies.iter().any(|&i| {
            let other = &items[i].record;
            other.body == record.body && same_metadata(other, &record)
        });
        if same {
            continue;
        }
        let ident = if copies.is_empty() {
            None
        } else {
            let mut k = copies.len() + 1;
            let renamed = loop {
                let candidate = format!("{base}#{k}");
                if !natural.contains(candidate.as_str()) && !renamed_ones.contains(&candidate) {
                    break candidate;
                }
                k += 1;
            };
            notices.push(Notice::DuplicateIdent {
                line,
                ident: base.clone(),
                renamed: renamed.clone(),
            });
            renamed_ones.insert(renamed.clone());
            Some(renamed)
        };
        copies.push(items.len());
        items.push(Item {
            record,
            line,
            base: base.clone(),
            ident,
        });
    }
    items
}

fn same_metadata(a: &Record, b: &Record) -> bool {
    match (&a.metadata, &b.metadata) {
        (None, None) => true,
        (Some(Ok(x)), Some(Ok(y))) => x == y,
        _ => false,
    }
}
