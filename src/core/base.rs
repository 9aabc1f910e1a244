//! The base: what this host's memory file held at the end of the last run, per
//! identity, and which versions of every lineage that content reflects. Stamping
//! reads it to tell an entry that came from the backup (no new version) from a
//! local change, and to give a change or a deletion the context it was made in;
//! `sync` reads it for the three-way merge. It lives on this machine only.
//!
//! It is kept as entries, in the host file layout: one entry per identity whose
//! `unique_id` is `held:<ident>` (its body what the memory held, or a tombstone of
//! its identity fields when the memory did not hold it), `seen` every lineage it
//! reflects (its own included), `dots` the origin of each observation, and
//! `timestamp` the newest version it reflects.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core::clock::Timestamp;
use crate::core::entry::{Dots, Entry, Metadata, Seen};
use crate::core::record;

const HELD: &str = "held:";
const SNAPSHOT: &str = "snapshot";
/// The host name that base entries carry.
const BASE_HOST: &str = "base";

/// What the memory file held of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The canonical body; `None`: the memory did not hold the identity.
    pub body: Option<String>,
    /// Every lineage of the identity that this state reflects, and its version.
    pub seen: Seen,
    /// The newest timestamp among the versions it reflects.
    pub newest: Timestamp,
    /// The additions each observation of `body` stands on, by position, their
    /// lineages named.
    pub dots: Vec<Dots>,
}

impl Held {
    /// The dots of observation `text` (canonical JSON), if this state holds it.
    pub fn dots_of(&self, text: &str) -> Option<&Dots> {
        let body = self.body.as_deref()?;
        let obs = record::member_of_body(body, "observations")?;
        let items = crate::core::entry::json_items(obs.as_bytes())?;
        items
            .iter()
            .position(|i| *i == text.as_bytes())
            .and_then(|i| self.dots.get(i))
    }
}

/// Identity of the memory file's content when it was read: changes that keep
/// the size and the modification time (within the clock's tick) are told apart by
/// the hash of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub modified_ns: i128,
    pub size: u64,
    pub hash: String,
}

/// The base of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Base {
    pub snapshot: Option<Snapshot>,
    pub held: BTreeMap<String, Held>,
}

impl Base {
    /// Reads a base from its entries; `None` entries of another shape are ignored.
    pub fn from_entries(entries: &[Entry]) -> Base {
        let mut base = Base::default();
        for e in entries {
            let uid = e.unique_id();
            if uid == SNAPSHOT {
                base.snapshot = snapshot_of(e.body());
            } else if let Some(ident) = uid.strip_prefix(HELD) {
                base.held.insert(ident.to_string(), held_of(e));
            }
        }
        base
    }

    /// The base as entries, for the host file layout.
    pub fn to_entries(&self, id_field: &str) -> Vec<Entry> {
        let host: Arc<str> = BASE_HOST.into();
        let mut out = Vec::with_capacity(self.held.len() + 1);
        if let Some(s) = &self.snapshot {
            let body = serde_json::json!({
                "hash": s.hash,
                "modified_ns": s.modified_ns.to_string(),
                "size": s.size,
            })
            .to_string();
            let meta = Metadata::new(&host, Timestamp::from_micros(0), 1, SNAPSHOT.into());
            // serde_json writes a map's keys in order: canonical JSON.
            out.push(Entry::new(meta, &body));
        }
        for (ident, h) in &self.held {
            out.push(entry_of(
                &host,
                &format!("{HELD}{ident}"),
                ident,
                h,
                id_field,
            ));
        }
        out
    }
}

fn snapshot_of(body: &str) -> Option<Snapshot> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(Snapshot {
        modified_ns: v["modified_ns"].as_str()?.parse().ok()?,
        size: v["size"].as_u64()?,
        hash: v["hash"].as_str()?.to_string(),
    })
}

fn held_of(e: &Entry) -> Held {
    let dots = (0..observation_count(e.body()))
        .map(|i| e.meta.dots(i))
        .collect();
    Held {
        body: (!e.meta.deleted).then(|| e.body().to_string()),
        seen: e.meta.seen.clone(),
        newest: e.meta.timestamp,
        dots,
    }
}

fn entry_of(host: &Arc<str>, uid: &str, ident: &str, h: &Held, id_field: &str) -> Entry {
    let mut meta = Metadata::new(host, h.newest, 1, uid.into());
    meta.seen = h.seen.clone();
    match &h.body {
        Some(body) => {
            if !h.dots.is_empty() {
                meta.dots = Some(h.dots.clone());
            }
            Entry::new(meta, body)
        }
        None => {
            meta.deleted = true;
            // The identity alone, as a tombstone keeps it: a body that names it
            // (one key, as serde_json writes it: canonical JSON).
            Entry::new(meta, &serde_json::json!({ id_field: ident }).to_string())
        }
    }
}

/// The number of items of a canonical body's `observations` array.
pub fn observation_count(body: &str) -> usize {
    record::member_of_body(body, "observations")
        .and_then(|o| crate::core::entry::json_items(o.as_bytes()))
        .map_or(0, |i| i.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::entry::Dot;

    #[test]
    fn a_base_round_trips_through_its_entries() {
        let mut base = Base {
            snapshot: Some(Snapshot {
                modified_ns: 1_700_000_000_123_456_789,
                size: 42,
                hash: "ab".into(),
            }),
            ..Base::default()
        };
        let mut seen = Seen::new();
        seen.insert("a_entity:E_2026".into(), 3);
        base.held.insert(
            "entity:E".into(),
            Held {
                body: Some(
                    r#"{"entityType":"t","name":"E","observations":["x","y"],"type":"entity"}"#
                        .into(),
                ),
                seen: seen.clone(),
                newest: Timestamp::from_micros(5),
                dots: vec![
                    vec![Dot {
                        lineage: Some("a_entity:E_2026".into()),
                        version: 1,
                    }],
                    vec![
                        Dot {
                            lineage: Some("a_entity:E_2026".into()),
                            version: 3,
                        },
                        Dot {
                            lineage: Some("b_entity:E_2026".into()),
                            version: 1,
                        },
                    ],
                ],
            },
        );
        base.held.insert(
            // A tombstone's body names its identity, whatever its characters.
            "n\u{1}\"é/\u{2028}1".into(),
            Held {
                body: None,
                seen,
                newest: Timestamp::from_micros(9),
                dots: Vec::new(),
            },
        );
        let entries = base.to_entries("id");
        assert_eq!(Base::from_entries(&entries), base);
        // Their bodies are canonical: a file of them reads back as the same entries.
        let reread = crate::core::entry::parse_stamped(&crate::core::entry::render(&entries));
        assert_eq!(reread.unwrap().entries, entries);
        let held = &base.held["entity:E"];
        assert_eq!(held.dots_of(r#""y""#).map(Vec::len), Some(2));
        assert_eq!(held.dots_of(r#""z""#), None);
    }
}
