//! What `sync` and `restore` write into a memory file: the fold of the backup,
//! combined with what the file holds now. Entries keep their place in the file,
//! new ones go at the end, and an entry held back from the backup (a secret) stays
//! as the file has it. No I/O.

use std::collections::{BTreeMap, HashMap};

use crate::core::base::{Base, Held};
use crate::core::fold::Folded;
use crate::core::layout::{self, Layout};
use crate::core::record::{Kind, Located};

/// The new content of a memory file, and how it differs from the old.
#[derive(Debug, Default)]
pub struct Writeback {
    /// The new content (left empty when a base was given and nothing changes).
    pub bytes: Vec<u8>,
    /// Identities the file gains, loses, or holds otherwise.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// What the file holds after the write, for the base: every identity, or,
    /// given a base, those whose record differs from the base's.
    pub held: BTreeMap<String, Held>,
}

impl Writeback {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The memory file's new content: every live identity of `folded`, the
/// identities of `keep` as `current` holds them, in `current`'s order first.
/// With `base`, `held` leaves out what `base` records already.
pub fn writeback(
    folded: &[Folded],
    current: &[Located],
    existing: Option<&[u8]>,
    layout: Option<Layout>,
    id_field: &str,
    keep: &dyn Fn(&str) -> bool,
    base: Option<&Base>,
) -> Writeback {
    let by_ident: HashMap<&str, &Folded> = folded.iter().map(|f| (f.ident.as_str(), f)).collect();
    let mut out = Writeback::default();
    let hold = |held: &mut BTreeMap<String, Held>, ident: &str, f: &Folded| {
        let known = base.and_then(|b| b.held.get(ident));
        if !known.is_some_and(|h| {
            h.body == f.body && h.seen == f.seen && h.newest == f.newest && h.dots == f.dots
        }) {
            held.insert(ident.to_string(), held_of(f));
        }
    };
    let mut entries: Vec<(Kind, &str)> = Vec::with_capacity(folded.len());
    let mut placed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for l in current {
        let ident = l.record.ident(id_field);
        if !placed.insert(ident.clone()) {
            continue;
        }
        if keep(&ident) {
            entries.push((l.record.kind(), &l.record.body));
            continue;
        }
        match by_ident.get(ident.as_str()) {
            Some(f) => match &f.body {
                Some(body) => {
                    if *body != l.record.body {
                        out.changed.push(ident.clone());
                    }
                    entries.push((f.kind, body));
                    hold(&mut out.held, &ident, f);
                }
                None => {
                    hold(&mut out.held, &ident, f);
                    out.removed.push(ident);
                }
            },
            // Not in the backup (nothing of it was backed up yet): it stays.
            None => entries.push((l.record.kind(), &l.record.body)),
        }
    }
    for f in folded {
        if placed.contains(&f.ident) {
            continue;
        }
        hold(&mut out.held, &f.ident, f);
        if let Some(body) = &f.body {
            out.added.push(f.ident.clone());
            entries.push((f.kind, body));
        }
    }
    // Given a base (`sync`), a file that nothing changes is not written: no bytes.
    if base.is_none() || !out.is_empty() {
        let layout =
            layout.unwrap_or_else(|| Layout::of(existing, entries.iter().map(|(k, _)| *k)));
        out.bytes = layout::render(entries.iter().copied(), layout);
    }
    out
}

/// What a memory file holds of a folded identity once written.
pub fn held_of(f: &Folded) -> Held {
    Held {
        body: f.body.clone(),
        seen: f.seen.clone(),
        newest: f.newest,
        dots: f.dots.clone(),
    }
}

/// The base after a write: what the file holds now.
pub fn base_after(old: &Base, written: &Writeback) -> Base {
    let mut base = Base {
        snapshot: None,
        held: old.held.clone(),
    };
    for (ident, held) in &written.held {
        base.held.insert(ident.clone(), held.clone());
    }
    base
}
