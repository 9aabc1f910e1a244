//! Stamping (section 4): the records of a memory file, this host's own file P and
//! its base in; this host's new file, what changed and the new base out. No I/O.
//!
//! One writer per `unique_id`: this host versions only the lineages it minted, at
//! most one per identity. An entry that the memory holds as the base says it did
//! (it came from the backup, or was stamped before) makes no version; a change
//! makes the next version of this host's lineage of that identity, or its first;
//! an identity the memory no longer holds makes a tombstone. Every version made
//! carries the context it was made in (`seen`, `dots`), and a timestamp past
//! everything that context holds: a hybrid logical clock.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::core::base::{Base, Held};
use crate::core::clock::Timestamp;
use crate::core::entry::{Dot, Dots, Entry, Metadata, Seen, json_items};
use crate::core::merge;
use crate::core::record::{self, Located, Record};

/// A timestamp further ahead of the clock than this is not trusted to order
/// later edits (section 5): it is kept, and reported.
pub const FUTURE_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A deletion of more than half of this host's live entries, and at least this
/// many, needs `--allow-mass-delete` (section 12).
pub const MASS_DELETE_MIN: usize = 10;

/// What stamping needs besides the memory file.
pub struct Context<'a> {
    /// This host's name, already sanitised.
    pub host: &'a str,
    pub now: Timestamp,
    pub id_field: &'a str,
    /// P: this host's own file as last known, tombstones included.
    pub own: &'a [Entry],
    /// What the memory held at the end of the last run.
    pub base: &'a Base,
    pub allow_mass_delete: bool,
    /// Identities to tombstone whatever the memory holds (`forget`), with the
    /// versions of every lineage of each that the tombstone covers.
    pub forget: &'a HashMap<String, Seen>,
    /// Whether the new version of an identity is held back (a secret): the
    /// memory's change is then left out, and the previous version stays.
    pub held_back: &'a dyn Fn(&str, &Record) -> bool,
    /// Whether to make the new base ([`Stamped::base`]); without a repository
    /// (`stamp`) there is none to keep.
    pub keep_base: bool,
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
}

/// Why stamping refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampError {
    /// Too many entries would be deleted at once (section 12).
    MassDelete { deleting: usize, live: usize },
    /// An identity's version would pass `u64::MAX`.
    VersionOverflow { ident: String },
}

/// The result of stamping.
#[derive(Debug, Default)]
pub struct Stamped {
    /// This host's new file, in file order.
    pub entries: Vec<Entry>,
    pub new: usize,
    pub changed: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Identities whose change was held back.
    pub held_back: Vec<String>,
    pub notices: Vec<Notice>,
    /// The identities new, changed and deleted, for `--json`.
    pub new_idents: Vec<String>,
    pub changed_idents: Vec<String>,
    pub deleted_idents: Vec<String>,
    /// What the memory holds now, for the next run (empty unless
    /// [`Context::keep_base`]).
    pub base: Base,
}

/// The `unique_id` of a lineage that `host` begins at `ts` for `ident`:
/// `<host>_<ident>_<timestamp>`, with `_` in the host written `%5F` so that two
/// different (host, ident, timestamp) never give one name.
pub fn mint_unique_id(host: &str, ident: &str, ts: Timestamp) -> String {
    let mut id = String::with_capacity(host.len() + ident.len() + 32);
    for (i, part) in host.split('_').enumerate() {
        if i > 0 {
            id.push_str("%5F");
        }
        id.push_str(part);
    }
    id.push('_');
    id.push_str(ident);
    id.push('_');
    write!(id, "{ts}").expect("writing to a String cannot fail");
    id
}

/// Whether `host` minted the lineage `unique_id` (by the form
/// [`mint_unique_id`] gives, or the form of versions before it).
pub fn minted_by(unique_id: &str, host: &str) -> bool {
    let escaped = host.replace('_', "%5F");
    [escaped.as_str(), host].iter().any(|h| {
        unique_id
            .strip_prefix(h)
            .is_some_and(|rest| rest.starts_with('_'))
    })
}

/// An own lineage of P, and whether an entry of the memory took it.
struct Own<'a> {
    entry: &'a Entry,
    claimed: bool,
}

/// P's lineages of one identity: almost always one.
type Lineages<'a> = smallvec::SmallVec<[Own<'a>; 1]>;

/// An identity the memory no longer holds: the lineage its tombstone goes on,
/// and what the base says the memory held.
type Deletion<'a> = (String, Option<&'a Entry>, Option<&'a Held>);

/// Stamps `records` against `cx`.
pub fn stamp(records: &[Located], cx: &Context<'_>) -> Result<Stamped, StampError> {
    let mut s = Stamper::new(cx);
    let bases = idents(records, cx.id_field);
    let mut items = dedupe(records, &bases, &mut s.out.notices);
    // A forgotten identity is deleted whatever the memory holds.
    items.retain(|i| !cx.forget.contains_key(&*i.ident));
    let same = s.pair_unchanged(&items);
    for (item, same) in items.iter().zip(same) {
        s.stamp_item(item, same)?;
    }
    let (deletions, live) = s.deletions(&items);
    let guarded = deletions
        .iter()
        .filter(|(i, _, _)| !cx.forget.contains_key(i))
        .count();
    if !cx.allow_mass_delete && guarded >= MASS_DELETE_MIN && guarded * 2 > live {
        return Err(StampError::MassDelete {
            deleting: guarded,
            live,
        });
    }
    for d in deletions {
        s.tombstone(d)?;
    }
    Ok(s.finish())
}

/// One stamping under way.
struct Stamper<'a, 'c> {
    cx: &'c Context<'a>,
    host: Arc<str>,
    /// P's lineages by the identity of their body, in the order of their names.
    own: Map<String, Lineages<'a>>,
    /// What the base says the memory held, by identity.
    states: Map<&'a str, &'a Held>,
    out: Stamped,
    /// Versions made now: new ones and tombstones.
    entries: Vec<Entry>,
    /// Versions of P that stay as they are.
    kept: Vec<&'a Entry>,
    base: Base,
}

impl<'a, 'c> Stamper<'a, 'c> {
    fn new(cx: &'c Context<'a>) -> Self {
        let mut own: Map<String, Lineages<'a>> =
            Map::with_capacity_and_hasher(cx.own.len(), Default::default());
        for e in cx.own {
            own.entry(record::ident_of_body(e.body(), cx.id_field))
                .or_default()
                .push(Own {
                    entry: e,
                    claimed: false,
                });
        }
        for lineages in own.values_mut() {
            lineages.sort_by(|a, b| a.entry.unique_id().cmp(b.entry.unique_id()));
        }
        Stamper {
            cx,
            host: cx.host.into(),
            own,
            states: cx.base.held.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            out: Stamped::default(),
            entries: Vec::new(),
            kept: Vec::with_capacity(cx.own.len()),
            base: Base::default(),
        }
    }

    fn state(&self, ident: &str) -> Option<&'a Held> {
        self.states.get(ident).copied()
    }

    /// The own lineage each entry holds exactly, where the base does not say
    /// otherwise: this pass pairs those first, so that a renamed duplicate keeps
    /// its lineage whichever line it is on. Where the base knows the identity, it
    /// alone says what the memory held: the memory may hold an old version of
    /// this host's own again (an observation from another host, removed here).
    fn pair_unchanged(&mut self, items: &[Item<'_>]) -> Vec<Option<&'a Entry>> {
        let mut same = vec![None; items.len()];
        for (k, item) in items.iter().enumerate() {
            let known = self
                .state(&item.ident)
                .is_some_and(|s| s.body.as_deref() != Some(&item.record.body));
            if known {
                continue;
            }
            if let Some(lineages) = self.own.get_mut(item.base_ident)
                && let Some(o) = lineages.iter_mut().find(|o| {
                    !o.claimed && !o.entry.meta.deleted && o.entry.body() == item.record.body
                })
            {
                o.claimed = true;
                same[k] = Some(o.entry);
            }
        }
        same
    }

    /// One entry of the memory: unchanged (as its own lineage or the base holds
    /// it), held back, or the next version of this host's lineage of it.
    fn stamp_item(&mut self, item: &Item<'_>, same: Option<&'a Entry>) -> Result<(), StampError> {
        let state = self.state(&item.ident);
        let body = &item.record.body;
        if let Some(prior) = same {
            self.out.unchanged += 1;
            self.kept.push(prior);
            self.hold(&item.ident, || {
                let mut held = held_of_version(prior);
                if let Some(s) = state.filter(|s| s.body.as_deref() == Some(body)) {
                    merge_seen(&mut held.seen, &s.seen);
                    held.newest = held.newest.max(s.newest);
                }
                held
            });
            return Ok(());
        }
        let prior = self.own.get_mut(item.base_ident).and_then(|l| {
            let o = l.iter_mut().find(|o| !o.claimed)?;
            o.claimed = true;
            Some(o.entry)
        });
        let holds_it = state.filter(|s| s.body.as_deref() == Some(body));
        let held_back = holds_it.is_none() && (self.cx.held_back)(&item.ident, item.record);
        if held_back {
            self.out.held_back.push(item.ident.to_string());
        }
        if holds_it.is_some() || held_back {
            // As the base says (it came from the backup, or was stamped before),
            // or a change held back: no version.
            if !held_back {
                self.out.unchanged += 1;
            }
            self.kept.extend(prior);
            if let Some(s) = holds_it.or(state) {
                self.hold(&item.ident, || s.clone());
            }
            return Ok(());
        }
        let was_live =
            prior.is_some_and(|p| !p.meta.deleted) || state.is_some_and(|s| s.body.is_some());
        let version = next_version(prior, &item.ident)?;
        let entry = new_version(
            self.cx,
            &self.host,
            &item.ident,
            prior,
            state,
            version,
            body,
            false,
        );
        if was_live {
            self.out.changed += 1;
            self.out.changed_idents.push(item.ident.to_string());
        } else {
            self.out.new += 1;
            self.out.new_idents.push(item.ident.to_string());
        }
        self.hold(&item.ident, || held_of_version(&entry));
        self.entries.push(entry);
        Ok(())
    }

    /// The identities the memory held and no longer holds (or that `forget`
    /// names), and how many it held; lineages no entry claimed stay as they are.
    fn deletions(&mut self, items: &[Item<'_>]) -> (Vec<Deletion<'a>>, usize) {
        let in_memory: std::collections::HashSet<&str, foldhash::fast::RandomState> =
            items.iter().map(|i| &*i.ident).collect();
        // An identity the memory holds matters here only with a lineage no entry
        // took.
        let forced = |ident: &str| self.cx.forget.contains_key(ident);
        let mut idents: Vec<String> = self
            .own
            .iter()
            .filter(|(ident, lineages)| {
                !in_memory.contains(ident.as_str())
                    || forced(ident)
                    || lineages.iter().any(|o| !o.claimed)
            })
            .map(|(ident, _)| ident.as_str())
            .chain(
                self.states
                    .keys()
                    .copied()
                    .filter(|ident| !in_memory.contains(ident) || forced(ident)),
            )
            .map(str::to_string)
            .collect();
        idents.sort();
        idents.dedup();
        let mut live = in_memory.len();
        let mut deletions = Vec::new();
        for ident in idents {
            let state = self.state(&ident);
            let unclaimed: Vec<&'a Entry> = self
                .own
                .get(&ident)
                .into_iter()
                .flatten()
                .filter(|o| !o.claimed)
                .map(|o| o.entry)
                .collect();
            let forced = self.cx.forget.contains_key(&ident);
            if in_memory.contains(ident.as_str()) && !forced {
                self.kept.extend(unclaimed);
                continue;
            }
            // The lineage a tombstone goes on: a live one first. Older lineages of
            // the identity (made before one writer per identity) stay as they are.
            let prior = unclaimed
                .iter()
                .copied()
                .find(|p| !p.meta.deleted)
                .or_else(|| unclaimed.first().copied());
            self.kept.extend(
                unclaimed
                    .iter()
                    .copied()
                    .filter(|p| prior.is_none_or(|q| !std::ptr::eq(*p, q))),
            );
            let held_before = match state {
                Some(s) => s.body.is_some(),
                None => prior.is_some_and(|p| !p.meta.deleted),
            };
            if held_before && !in_memory.contains(ident.as_str()) {
                live += 1;
            }
            if held_before || forced {
                deletions.push((ident, prior, state));
            } else {
                self.kept.extend(prior);
                if let Some(s) = state {
                    self.hold(&ident, || s.clone());
                }
            }
        }
        (deletions, live)
    }

    /// A tombstone: the next version of this host's lineage of the identity (its
    /// first, without one), keeping only the fields that name it.
    fn tombstone(&mut self, (ident, prior, state): Deletion<'a>) -> Result<(), StampError> {
        let cx = self.cx;
        let version = next_version(prior, &ident)?;
        let named_by = state
            .and_then(|s| s.body.clone())
            .or_else(|| prior.map(|p| p.body().to_string()));
        let identity = match named_by {
            Some(body) => record::identity_fields(&Record::from_canonical(&body), cx.id_field),
            None => serde_json::json!({ cx.id_field: ident }).to_string(),
        };
        let mut entry = new_version(
            cx, &self.host, &ident, prior, state, version, &identity, true,
        );
        if let Some(extra) = cx.forget.get(&ident) {
            merge_seen(&mut entry.meta.seen, extra);
            let own = entry.meta.unique_id.clone();
            entry.meta.seen.remove(&own);
        }
        self.out.deleted += 1;
        self.out.deleted_idents.push(ident.clone());
        self.hold(&ident, || held_of_version(&entry));
        self.entries.push(entry);
        Ok(())
    }

    /// Records what the memory holds of `ident` in the new base, when one is kept.
    fn hold(&mut self, ident: &str, held: impl FnOnce() -> Held) {
        if self.cx.keep_base {
            self.base.held.insert(ident.to_string(), held());
        }
    }

    fn finish(mut self) -> Stamped {
        // P is in file order (this tool wrote it): what stays of it keeps that
        // order (its place in P is its address in the slice), and only the
        // versions made now are sorted, then merged in.
        self.kept
            .sort_unstable_by_key(|e| std::ptr::from_ref::<Entry>(e) as usize);
        let made = merge::into_file_order(self.entries);
        let in_order = self.kept.is_sorted_by(|a, b| merge::file_cmp(a, b).is_le());
        let kept = self.kept.into_iter().cloned();
        self.out.entries = if in_order {
            merge::merge_sorted(kept, made.into_iter())
        } else {
            merge::into_file_order(kept.chain(made).collect())
        };
        self.out.base = self.base;
        self.out
    }
}

fn next_version(prior: Option<&Entry>, ident: &str) -> Result<u64, StampError> {
    match prior {
        None => Ok(1),
        Some(p) => p
            .meta
            .version
            .checked_add(1)
            .ok_or_else(|| StampError::VersionOverflow {
                ident: ident.to_string(),
            }),
    }
}

/// The next version of this host's lineage of `ident` (its first without a
/// prior), holding `body`, made in the context of `prior` and `state`.
#[allow(clippy::too_many_arguments)]
fn new_version(
    cx: &Context<'_>,
    host: &Arc<str>,
    ident: &str,
    prior: Option<&Entry>,
    state: Option<&Held>,
    version: u64,
    body: &str,
    deleted: bool,
) -> Entry {
    let horizon = Timestamp::from_micros(cx.now.micros().saturating_add(FUTURE_MICROS));
    let mut ts = cx.now;
    if let Some(p) = prior {
        ts = ts.max(p.meta.timestamp.next());
    }
    if let Some(s) = state.filter(|s| s.newest <= horizon) {
        ts = ts.max(s.newest.next());
    }
    let unique_id: Arc<str> = match prior {
        Some(p) => p.meta.unique_id.clone(),
        None => mint_unique_id(cx.host, ident, ts).into(),
    };
    let mut meta = Metadata::new(host, ts, version, unique_id.clone());
    meta.deleted = deleted;
    if let Some(p) = prior {
        meta.seen = p.meta.seen.clone();
        meta.extra = p.meta.extra.clone();
    }
    if let Some(s) = state {
        merge_seen(&mut meta.seen, &s.seen);
    }
    meta.seen.remove(&unique_id);
    if !deleted {
        meta.dots = dots_for(body, &unique_id, version, prior, state);
    }
    Entry::new(meta, body)
}

/// The dot of each observation of `body`: kept from what the memory held (the
/// base state, else the prior version) where it held the observation, else added
/// now. The prior version alone does not say: the memory may have lost an
/// observation since (a removal that came from another host) and got it again.
fn dots_for(
    body: &str,
    own: &Arc<str>,
    version: u64,
    prior: Option<&Entry>,
    state: Option<&Held>,
) -> Option<Vec<Dots>> {
    if state.is_none() && prior.is_none_or(|p| p.meta.deleted) {
        // Every observation is added now.
        return None;
    }
    let items = json_items(record::member_of_body(body, "observations")?.as_bytes())?;
    let prior_items: Vec<(&[u8], Dots)> = prior
        .filter(|p| !p.meta.deleted && state.is_none())
        .and_then(|p| {
            let obs = record::member_of_body(p.body(), "observations")?;
            let items = json_items(obs.as_bytes())?;
            Some(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (t, p.meta.dots(i)))
                    .collect(),
            )
        })
        .unwrap_or_default();
    let here = vec![Dot {
        lineage: None,
        version,
    }];
    // A dot of this lineage is written as this lineage's (no name).
    let unnamed = |d: &Dot| match &d.lineage {
        Some(l) if l == own => Dot {
            lineage: None,
            version: d.version,
        },
        _ => d.clone(),
    };
    let dots: Vec<Dots> = items
        .iter()
        .map(|item| {
            if let Some((_, d)) = prior_items.iter().find(|(t, _)| t == item) {
                return d.clone();
            }
            let text = std::str::from_utf8(item).expect("canonical JSON is UTF-8");
            match state.and_then(|s| s.dots_of(text)) {
                // Dots whose lineage is unknown (a base before lineages were
                // named) do not count: the observation is added now.
                Some(d) if !d.is_empty() && d.iter().all(|d| d.lineage.is_some()) => {
                    d.iter().map(unnamed).collect()
                }
                _ => here.clone(),
            }
        })
        .collect();
    (!dots.iter().all(|d| *d == here)).then_some(dots)
}

/// Pointwise maximum of two contexts.
pub fn merge_seen(into: &mut Seen, other: &Seen) {
    for (uid, &v) in other {
        let e = into.entry(uid.clone()).or_insert(v);
        *e = (*e).max(v);
    }
}

/// What the memory holds when it holds version `e` of a lineage.
pub fn held_of_version(e: &Entry) -> Held {
    let mut seen = e.meta.seen.clone();
    seen.insert(e.meta.unique_id.clone(), e.meta.version);
    let n = crate::core::base::observation_count(e.body());
    let named = |lineage: &Option<Arc<str>>| {
        Some(lineage.clone().unwrap_or_else(|| e.meta.unique_id.clone()))
    };
    // As [`Metadata::dots`] gives them, lineages named.
    let dots = (0..n)
        .map(|i| match e.meta.dots.as_ref().and_then(|d| d.get(i)) {
            Some(d) => d
                .iter()
                .map(|d| Dot {
                    lineage: named(&d.lineage),
                    version: d.version,
                })
                .collect(),
            None => vec![Dot {
                lineage: named(&None),
                version: e.meta.version,
            }],
        })
        .collect();
    Held {
        body: (!e.meta.deleted).then(|| e.body().to_string()),
        seen,
        newest: e.meta.timestamp,
        dots,
    }
}

struct Item<'r> {
    record: &'r Record,
    /// The identity by the rules.
    base_ident: &'r str,
    /// The identity stamped: `base_ident`, or a renamed duplicate's.
    ident: Cow<'r, str>,
}

/// A hash map keyed by identities: they come from the user's own file, and a
/// fast hasher is enough.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The identity of every record, by the rules.
fn idents(records: &[Located], id_field: &str) -> Vec<String> {
    records.iter().map(|r| r.record.ident(id_field)).collect()
}

/// Entries of one identity (`bases`: each record's): identical copies count once,
/// different ones are all kept under `ident#2`, `ident#3`, ...
fn dedupe<'r>(
    records: &'r [Located],
    bases: &'r [String],
    notices: &mut Vec<Notice>,
) -> Vec<Item<'r>> {
    // A renamed identity must not be one that another entry has by its own right
    // (made when the first is renamed).
    let mut natural: Option<std::collections::HashSet<&str, foldhash::fast::RandomState>> = None;
    // The first body of each identity, and the different ones after it.
    let mut kept: Map<&str, (&str, Vec<&str>)> = Map::default();
    kept.reserve(records.len());
    let mut renames: std::collections::HashSet<String, foldhash::fast::RandomState> =
        Default::default();
    let mut out = Vec::with_capacity(records.len());
    for (base, Located { record, line }) in bases.iter().zip(records) {
        let body = record.body.as_str();
        let ident = match kept.entry(base.as_str()) {
            MapEntry::Vacant(v) => {
                v.insert((body, Vec::new()));
                Cow::Borrowed(base.as_str())
            }
            MapEntry::Occupied(mut o) => {
                let (first, more) = o.get_mut();
                if *first == body || more.contains(&body) {
                    continue;
                }
                more.push(body);
                let natural =
                    natural.get_or_insert_with(|| bases.iter().map(String::as_str).collect());
                let mut n = more.len() + 1;
                let renamed = loop {
                    let candidate = format!("{base}#{n}");
                    if !natural.contains(candidate.as_str()) && !renames.contains(&candidate) {
                        break candidate;
                    }
                    n += 1;
                };
                notices.push(Notice::DuplicateIdent {
                    line: *line,
                    ident: base.clone(),
                    renamed: renamed.clone(),
                });
                renames.insert(renamed.clone());
                Cow::Owned(renamed)
            }
        };
        out.push(Item {
            record,
            base_ident: base,
            ident,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_memory(memory: &str, own: &[Entry], keep_base: bool) -> Stamped {
        let (_, records) = record::parse_records(memory.as_bytes()).unwrap();
        let forget = HashMap::new();
        stamp(
            &records,
            &Context {
                host: "h",
                now: Timestamp::from_micros(1_700_000_000_000_000),
                id_field: "id",
                own,
                base: &Base::default(),
                allow_mass_delete: false,
                forget: &forget,
                held_back: &|_, _| false,
                keep_base,
            },
        )
        .unwrap()
    }

    #[test]
    fn without_a_base_to_keep_stamping_gives_the_same_entries_and_no_base() {
        let memory = "{\"id\":\"a\",\"n\":1}\n{\"id\":\"b\",\"n\":2}\n{\"id\":\"a\",\"n\":3}\n{\"id\":\"b\",\"n\":2}\n";
        let kept = stamp_memory(memory, &[], true);
        let not = stamp_memory(memory, &[], false);
        assert_eq!(kept.entries, not.entries);
        assert_eq!(kept.new, 3);
        let held: Vec<&str> = kept.base.held.keys().map(String::as_str).collect();
        assert_eq!(held, ["a", "a#2", "b"]);
        assert!(not.base.held.is_empty());
        let again = stamp_memory(memory, &kept.entries, false);
        assert_eq!(again.entries, kept.entries);
        assert_eq!((again.unchanged, again.new, again.deleted), (3, 0, 0));
    }
}
