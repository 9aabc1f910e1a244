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
use crate::entry::{Entry, Metadata, Record, UniqueId};
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
pub fn stamp(records: &[Located], cx: &Context<'_>) -> Stamped {
    let mut out = Stamped::default();
    let host: Arc<str> = cx.host.into();
    // Every known version by unique_id: needed only by entries restored with
    // their metadata, so built only for them.
    let known_map = std::cell::OnceCell::new();
    let known = || known_map.get_or_init(|| newest_by_uid(cx.known.iter().chain(cx.previous)));
    // The versions whose lineage began at `now`: the only ones a new entry's
    // unique_id can be taken by. Found by the end of their unique_id.
    let minted_map = std::cell::OnceCell::new();
    let minted_now = || {
        minted_map.get_or_init(|| {
            let suffix = format!("_{}", cx.now);
            let all = cx.known.iter().chain(cx.previous);
            newest_by_uid(all.filter(|e| e.unique_id().ends_with(&suffix)))
        })
    };
    let mut claimed = vec![false; cx.previous.len()];
    let pending = claim_restored(records, cx, &host, &known, &mut claimed, &mut out);

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
    let mut by_body: Map<&str, Candidates> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        if !claimed[i] {
            by_body.entry(e.body()).or_default().push(i);
        }
    }
    for same in by_body.values_mut() {
        same.sort_by(oldest_first);
    }
    let mut rest: Vec<Item<'_>> = Vec::with_capacity(pending.len() / 8);
    for item in pending {
        match by_body
            .get_mut(item.record.body.as_str())
            .and_then(Candidates::take_first)
        {
            Some(c) => {
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
    let mut by_ident: Map<String, Candidates> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        if !claimed[i] {
            by_ident
                .entry(memory::ident_of_body(e.body(), cx.id_field))
                .or_default()
                .push(i);
        }
    }
    for candidates in by_ident.values_mut() {
        candidates.sort_by(oldest_first);
    }
    for item in pending {
        let candidate = by_ident
            .get_mut(&item.base)
            .and_then(Candidates::take_first);
        let entry = match candidate {
            Some(c) => {
                claimed[c] = true;
                restamp(item.record, &cx.previous[c], None, &host, cx.now, &mut out)
            }
            None => {
                let ident = item.ident.as_deref().unwrap_or(&item.base);
                let uid = format!("{}_{ident}_{}", cx.host, cx.now);
                match minted_now().get(uid.as_str()) {
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
                        Entry::new(meta, bare(item.record))
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

/// Takes the items of `records` (deduplicated) that carry valid metadata of a
/// lineage seen first here as entries of `out`, each claiming the entry of P of
/// its unique_id; returns the others.
fn claim_restored<'r, 'k>(
    records: &'r [Located],
    cx: &Context<'_>,
    host: &Arc<str>,
    known: &impl Fn() -> &'k Map<&'k str, &'k Entry>,
    claimed: &mut [bool],
    out: &mut Stamped,
) -> Vec<Item<'r>> {
    let mut previous_by_uid: Map<&str, usize> = map(cx.previous.len());
    for (i, e) in cx.previous.iter().enumerate() {
        previous_by_uid.insert(e.unique_id(), i);
    }

    // Entries of one identity: identical copies count once, different ones are
    // all kept under `ident#2`, `ident#3`, ...
    let items = dedupe(records, cx.id_field, &mut out.notices);

    // Entries that carry their own metadata (restored from unified) claim the P
    // entry of their unique_id first; the rest are matched by identity.
    let mut pending: Vec<Item<'_>> = Vec::with_capacity(items.len());
    let mut lineages: Set<UniqueId> = set(0);
    for item in items {
        match &item.record.metadata {
            // A second, different line of one lineage: an entry of its own.
            Some(Ok(m)) if lineages.contains(&m.unique_id) => pending.push(item),
            Some(Ok(m)) => {
                let m = m.clone();
                lineages.insert(m.unique_id.clone());
                let in_p = previous_by_uid.get(&*m.unique_id).copied();
                if let Some(i) = in_p {
                    claimed[i] = true;
                }
                let prior = in_p
                    .map(|i| &cx.previous[i])
                    .or_else(|| known().get(&*m.unique_id).copied());
                let entry = match prior {
                    Some(p) => restamp(item.record, p, Some(&m), host, cx.now, out),
                    // A version this host has never seen: taken as it is.
                    None => {
                        out.unchanged += 1;
                        Entry::new(m, bare(item.record))
                    }
                };
                out.entries.push(entry);
            }
            Some(Err(e)) => {
                out.notices.push(Notice::BadMetadata {
                    line: item.line,
                    cause: e.0.clone(),
                });
                pending.push(item);
            }
            None => pending.push(item),
        }
    }

    pending
}

/// The newest of each unique_id among `entries`.
fn newest_by_uid<'e>(entries: impl Iterator<Item = &'e Entry>) -> Map<&'e str, &'e Entry> {
    entries.fold(map(0), |mut m, e| {
        m.entry(e.unique_id())
            .and_modify(|cur: &mut &Entry| {
                if e.lww_cmp(cur).is_gt() {
                    *cur = e;
                }
            })
            .or_insert(e);
        m
    })
}

/// `record` against its prior version `p` (and its own metadata `own`, if it has
/// some): unchanged keeps the prior's metadata, changed gets the next version.
fn restamp(
    record: &Record,
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
    Entry::new(meta, bare(record))
}

/// A copy of `record` without its own metadata, for an entry of new metadata.
fn bare(record: &Record) -> Record {
    Record {
        body: record.body.clone(),
        metadata: None,
        members: record.members.clone(),
    }
}

/// When an entry's lineage began: the timestamp that ends its unique_id, where it
/// has one, else its own.
fn created_at(e: &Entry) -> Timestamp {
    e.unique_id()
        .rsplit_once('_')
        .and_then(|(_, ts)| Timestamp::parse(ts))
        .unwrap_or(e.meta.timestamp)
}

struct Item<'r> {
    record: &'r Record,
    line: usize,
    /// The identity by the rules.
    base: String,
    /// The identity after renaming a duplicate; none: `base`.
    ident: Option<String>,
}

fn dedupe<'r>(records: &'r [Located], id_field: &str, notices: &mut Vec<Notice>) -> Vec<Item<'r>> {
    let bases: Vec<String> = records
        .iter()
        .map(|r| memory::ident(&r.record, id_field))
        .collect();
    // What becomes of each record: left out as a copy of an earlier one, kept
    // under its identity, or kept under a new one.
    enum Fate {
        Copy,
        Kept,
        Renamed(String),
    }
    let mut fates: Vec<Fate> = Vec::with_capacity(records.len());
    {
        // A renamed identity must not be one that another entry has by its own
        // right (an entry with the id `n1#2`), or two new entries would share a
        // unique_id. Built at the first duplicate: most files have none.
        let mut natural: Option<Set<&str>> = None;
        let mut renamed_ones: Set<String> = set(0);
        // The records kept under each identity.
        let mut seen: Map<&str, Candidates> = map(records.len());
        for (i, (base, Located { record, line })) in bases.iter().zip(records).enumerate() {
            let copies = seen.entry(base.as_str()).or_default();
            let same = copies.iter().any(|k| {
                let other = &records[k].record;
                other.body == record.body && same_metadata(other, record)
            });
            if same {
                fates.push(Fate::Copy);
                continue;
            }
            let kept = copies.len();
            copies.push(i);
            if kept == 0 {
                fates.push(Fate::Kept);
                continue;
            }
            let natural = natural.get_or_insert_with(|| bases.iter().map(String::as_str).collect());
            let mut k = kept + 1;
            let renamed = loop {
                let candidate = format!("{base}#{k}");
                if !natural.contains(candidate.as_str()) && !renamed_ones.contains(&candidate) {
                    break candidate;
                }
                k += 1;
            };
            notices.push(Notice::DuplicateIdent {
                line: *line,
                ident: base.clone(),
                renamed: renamed.clone(),
            });
            renamed_ones.insert(renamed.clone());
            fates.push(Fate::Renamed(renamed));
        }
    }
    bases
        .into_iter()
        .zip(records)
        .zip(fates)
        .filter_map(|((base, Located { record, line }), fate)| {
            let ident = match fate {
                Fate::Copy => return None,
                Fate::Kept => None,
                Fate::Renamed(r) => Some(r),
            };
            Some(Item {
                record,
                line: *line,
                base,
                ident,
            })
        })
        .collect()
}

/// Entries that share a key (a body, an identity), taken in order from the
/// front; one of them, the usual case, without an allocation.
#[derive(Default)]
enum Candidates {
    #[default]
    None,
    One(usize),
    Many(Vec<usize>),
}

impl Candidates {
    fn push(&mut self, i: usize) {
        *self = match std::mem::take(self) {
            Candidates::None => Candidates::One(i),
            Candidates::One(a) => Candidates::Many(vec![a, i]),
            Candidates::Many(mut v) => {
                v.push(i);
                Candidates::Many(v)
            }
        };
    }

    fn len(&self) -> usize {
        match self {
            Candidates::None => 0,
            Candidates::One(_) => 1,
            Candidates::Many(v) => v.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        let (one, many) = match self {
            Candidates::None => (None, &[][..]),
            Candidates::One(i) => (Some(*i), &[][..]),
            Candidates::Many(v) => (None, v.as_slice()),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn sort_by(&mut self, cmp: impl FnMut(&usize, &usize) -> std::cmp::Ordering) {
        if let Candidates::Many(v) = self {
            v.sort_by(cmp);
        }
    }

    fn take_first(&mut self) -> Option<usize> {
        match self {
            Candidates::None => None,
            Candidates::One(i) => {
                let i = *i;
                *self = Candidates::None;
                Some(i)
            }
            Candidates::Many(v) if v.is_empty() => None,
            Candidates::Many(v) => Some(v.remove(0)),
        }
    }
}

fn same_metadata(a: &Record, b: &Record) -> bool {
    match (&a.metadata, &b.metadata) {
        (None, None) => true,
        (Some(Ok(x)), Some(Ok(y))) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::parse_stamped;

    const NOW: &str = "2026-11-20T10:00:00.000000Z";

    fn stamp_against(memory: &str, known: &str) -> Stamped {
        let (_, records) = memory::parse_records(memory.as_bytes()).unwrap();
        let known = parse_stamped(known.as_bytes()).unwrap().entries;
        stamp(
            &records,
            &Context {
                host: "h",
                now: Timestamp::parse(NOW).unwrap(),
                id_field: memory::DEFAULT_ID_FIELD,
                previous: &[],
                known: &known,
            },
        )
    }

    #[test]
    fn an_entry_added_again_in_the_instant_its_lineage_began_is_an_edit_of_it() {
        // Unified knows h's entry `a`, made at this very instant and since lost
        // from h's own file: the new `a` would take its unique_id, so it is that
        // lineage's next version instead.
        let known = format!(
            r#"[{{"_crdt_metadata":{{"host":"h","timestamp":"{NOW}","unique_id":"h_a_{NOW}","version":3}},"content":"old","id":"a"}}]"#
        );
        let s = stamp_against(r#"[{"id":"a","content":"new"}]"#, &known);
        assert_eq!((s.new, s.changed), (0, 1));
        let m = &s.entries[0].meta;
        assert_eq!(
            (&*m.unique_id, m.version),
            (format!("h_a_{NOW}").as_str(), 4)
        );
        // A lineage that began at another instant does not stand in the way.
        let earlier = known.replace(
            "10:00:00.000000Z\",\"unique_id\":\"h_a_2026-11-20T10:00:00.000000Z",
            "09:00:00.000000Z\",\"unique_id\":\"h_a_2026-11-20T09:00:00.000000Z",
        );
        assert_ne!(earlier, known);
        let s = stamp_against(r#"[{"id":"a","content":"new"}]"#, &earlier);
        assert_eq!((s.new, s.changed), (1, 0));
        assert_eq!(s.entries[0].meta.version, 1);
        assert_eq!(&*s.entries[0].meta.unique_id, format!("h_a_{NOW}"));
    }
}
