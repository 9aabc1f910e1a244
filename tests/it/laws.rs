//! The merge's laws, property-tested over generated host states (tombstones and
//! contexts among them), the fold's and stamping's laws, and the canonical JSON
//! writer checked against serde_json.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use memory_backup::core::entry::{self as files, Entry};
use memory_backup::core::merge as crdt;
use memory_backup::core::{json, record as memory};
use proptest::prelude::*;

/// One instant written in several RFC 3339 forms, so that ties between forms occur.
fn timestamp() -> impl Strategy<Value = String> {
    (0u32..4, 0u32..3, 0usize..5).prop_map(|(sec, us, form)| {
        let utc = format!("2026-11-20T10:00:0{sec}");
        match form {
            0 => format!("{utc}.00000{us}Z"),
            1 => format!("{utc}.00000{us}+00:00"),
            2 => format!("2026-11-20T11:00:0{sec}.00000{us}+01:00"),
            3 => format!("{utc}.00000{us}000Z"),
            _ => format!("2026-11-20T09:30:0{sec}.00000{us}-00:30"),
        }
    })
}

/// A stamped entry from small pools of unique_ids, hosts, versions and contents,
/// so that copies of one unique_id collide often and exact ties happen.
/// Tombstones, contexts (`seen`) and observation dots come along.
fn entry() -> impl Strategy<Value = Entry> {
    (
        (0u8..6, 0u8..3, timestamp(), 1u64..3, 0u8..3, any::<bool>()),
        (any::<bool>(), 0u8..3, 0u64..3),
    )
        .prop_map(|((uid, host, ts, version, content, extra), (deleted, seen, dot))| {
            let extra = if extra { r#","tags":["t",1.50]"# } else { "" };
            let deleted = if deleted { r#""deleted":true,"# } else { "" };
            let dots = if dot > 0 { format!(r#""dots":[{dot}],"#) } else { String::new() };
            let seen = if seen > 0 { format!(r#","seen":{{"u{seen}":{seen}}}"#) } else { String::new() };
            let line = format!(
                r#"{{"_crdt_metadata":{{{deleted}{dots}"host":"h{host}"{seen},"timestamp":"{ts}","unique_id":"u{uid}","version":{version}}},"content":"c{content}","id":"n{uid}","observations":["o"]{extra}}}"#
            );
            parse_one(&line)
        })
}

fn parse_one(line: &str) -> Entry {
    let mut s = files::parse_stamped(line.as_bytes()).expect("a generated entry parses");
    assert!(s.skipped.is_empty());
    s.entries.remove(0)
}

fn state() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(entry(), 0..12)
}

/// The bytes of the join of some states.
fn join(states: &[&[Entry]]) -> Vec<u8> {
    files::render(&crdt::merge(states.iter().flat_map(|s| s.iter())))
}

fn joined(states: &[&[Entry]]) -> Vec<Entry> {
    crdt::merge_owned(states.iter().flat_map(|s| s.iter()))
}

/// The join of two single-entry states.
fn pair(x: &Entry, y: &Entry) -> Vec<Entry> {
    joined(&[std::slice::from_ref(x), std::slice::from_ref(y)])
}

fn micros(ts: &str) -> i64 {
    DateTime::parse_from_rfc3339(ts).unwrap().timestamp_micros()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_merge_commutative(a in state(), b in state()) {
        prop_assert_eq!(join(&[&a, &b]), join(&[&b, &a]));
    }

    #[test]
    fn prop_merge_associative(a in state(), b in state(), c in state()) {
        let ab = joined(&[&a, &b]);
        let bc = joined(&[&b, &c]);
        prop_assert_eq!(join(&[&ab, &c]), join(&[&a, &bc]));
    }

    #[test]
    fn prop_merge_idempotent(a in state(), b in state()) {
        let once = joined(&[&a, &b]);
        prop_assert_eq!(join(&[&once]), files::render(&once));
        prop_assert_eq!(join(&[&once, &once]), files::render(&once));
        prop_assert_eq!(join(&[&a, &a, &b]), join(&[&a, &b]));
    }

    #[test]
    fn prop_merge_keeps_every_unique_id(states in prop::collection::vec(state(), 0..5)) {
        let refs: Vec<&[Entry]> = states.iter().map(Vec::as_slice).collect();
        let out: BTreeSet<String> =
            joined(&refs).iter().map(|e| e.unique_id().to_string()).collect();
        let input: BTreeSet<String> =
            states.iter().flatten().map(|e| e.unique_id().to_string()).collect();
        prop_assert_eq!(out, input);
    }

    /// The winner of every unique_id is its greatest copy by (timestamp instant,
    /// version, host, canonical bytes), computed here independently of the crate's
    /// comparison.
    #[test]
    fn prop_merge_picks_the_last_writer(states in prop::collection::vec(state(), 1..5)) {
        let mut expected: BTreeMap<String, (i64, u64, String, String)> = BTreeMap::new();
        for e in states.iter().flatten() {
            let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            let m = &v["_crdt_metadata"];
            let key = (
                micros(m["timestamp"].as_str().unwrap()),
                m["version"].as_u64().unwrap(),
                m["host"].as_str().unwrap().to_string(),
                e.to_json(),
            );
            let slot = expected.entry(e.unique_id().to_string()).or_insert(key.clone());
            if key > *slot {
                *slot = key;
            }
        }
        let refs: Vec<&[Entry]> = states.iter().map(Vec::as_slice).collect();
        for e in joined(&refs) {
            prop_assert_eq!(&e.to_json(), &expected[e.unique_id()].3);
        }
    }

    /// Host files written under any names, in any order, and merged by the command:
    /// the same bytes, whichever host computes it.
    #[test]
    fn prop_merge_output_independent_of_input_order_and_file_names(
        states in prop::collection::vec(state(), 1..5),
        names in Just(()).prop_perturb(|_, mut rng| {
            let mut names: Vec<String> = (0..5).map(|i| format!("host{i}")).collect();
            for i in (1..names.len()).rev() {
                let j = (rng.next_u32() as usize) % (i + 1);
                names.swap(i, j);
            }
            names
        }),
    ) {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        for (i, s) in states.iter().enumerate() {
            let merged = crdt::merge(s);
            std::fs::write(dir_a.path().join(format!("memory-h{i}.json")), files::render(&merged)).unwrap();
            std::fs::write(dir_b.path().join(format!("memory-{}.json", names[i])), files::render(&merged)).unwrap();
        }
        let env = crate::support::Env::new();
        let run = |dir: &std::path::Path| {
            let r = env.run(&["merge", dir.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{r:?}");
            std::fs::read(dir.join("unified-memory.json")).unwrap()
        };
        prop_assert_eq!(run(dir_a.path()), run(dir_b.path()));
    }

    /// The canonical writer produces what serde_json writes for the same value
    /// (sorted keys, its string escapes), whatever the input layout.
    #[test]
    fn prop_canonical_json_matches_serde_json(v in json_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
        let mut out = Vec::new();
        json::canonicalize(text.as_bytes(), 0, &mut out).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&v).unwrap());
    }

    /// Any text the canonicaliser accepts, serde_json accepts, and the other way
    /// round (over an alphabet without exponents, whose overflow serde_json refuses).
    #[test]
    fn prop_canonical_json_accepts_exactly_what_json_accepts(s in "[\\[\\]{}\",:0-9.\\- tfrunlsa\\\\/]{0,16}") {
        let mut out = Vec::new();
        let ours = json::canonicalize(s.as_bytes(), 0, &mut out)
            .map(|end| json::skip_ws(s.as_bytes(), end) == s.len())
            .unwrap_or(false);
        let theirs = serde_json::from_str::<serde_json::Value>(&s).is_ok();
        prop_assert_eq!(ours, theirs, "{:?}", s);
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "(?s).{0,8}".prop_map(Value::String),
        "[\"\\\\\u{0}-\u{1f}\u{7f}é😀a]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-c\"\\\\_ é]{0,3}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

// Cases worth keeping by name.

#[test]
fn exact_ties_are_broken_by_canonical_bytes_in_both_orders() {
    let t = "2026-11-20T10:00:00.000000Z";
    let a = parse_one(&format!(
        r#"{{"_crdt_metadata":{{"host":"h","timestamp":"{t}","unique_id":"u","version":1}},"c":"a"}}"#
    ));
    let b = parse_one(&format!(
        r#"{{"_crdt_metadata":{{"host":"h","timestamp":"{t}","unique_id":"u","version":1}},"c":"b"}}"#
    ));
    assert_eq!(pair(&a, &b), std::slice::from_ref(&b));
    assert_eq!(pair(&b, &a), [b]);
}

#[test]
fn one_instant_in_two_forms_is_a_tie_decided_by_version_then_host() {
    let line = |ts: &str, v: u64, h: &str| {
        parse_one(&format!(
            r#"{{"_crdt_metadata":{{"host":"{h}","timestamp":"{ts}","unique_id":"u","version":{v}}},"c":"{h}{v}"}}"#
        ))
    };
    let z = line("2026-11-20T10:00:00Z", 1, "b");
    let offset = line("2026-11-20T11:00:00.000000+01:00", 2, "a");
    assert_eq!(pair(&z, &offset), std::slice::from_ref(&offset));
    let same_version = line("2026-11-20T11:00:00+01:00", 1, "a");
    assert_eq!(pair(&same_version, &z), [z]);
    // Written back in the one canonical form.
    assert!(
        offset
            .to_json()
            .contains(r#""timestamp":"2026-11-20T10:00:00.000000Z""#)
    );
}

#[test]
fn a_later_instant_wins_over_a_greater_string() {
    // "…T09:…+00:00" sorts after "…T10:…-05:00" as text but is the earlier instant.
    let e = |ts: &str, c: &str| {
        parse_one(&format!(
            r#"{{"_crdt_metadata":{{"host":"h","timestamp":"{ts}","unique_id":"u","version":1}},"c":"{c}"}}"#
        ))
    };
    let early = e("2026-11-20T09:00:00+00:00", "early");
    let late = e("2026-11-20T10:00:00-05:00", "late");
    assert_eq!(pair(&early, &late), [late]);
}

#[test]
fn identity_is_independent_of_key_order() {
    let (_, a) = memory::parse_records(br#"{"b":1,"a":[1,{"y":2,"x":1}]}"#).unwrap();
    let (_, b) = memory::parse_records(br#"{"a":[1,{"x":1,"y":2}],"b":1}"#).unwrap();
    assert_eq!(a[0].record.ident("id"), b[0].record.ident("id"));
}

// The fold and stamping, over simulated hosts.

mod simulated {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use memory_backup::core::base::Base;
    use memory_backup::core::clock::Timestamp;
    use memory_backup::core::entry::Entry;
    use memory_backup::core::fold::{self, HostFile};
    use memory_backup::core::record::parse_records;
    use memory_backup::core::{stamp, writeback};
    use proptest::prelude::*;

    /// One host: its memory (entity name to observations), its own file, its base.
    #[derive(Default, Clone)]
    struct Host {
        name: String,
        memory: BTreeMap<String, Vec<String>>,
        base: Base,
    }

    /// The hosts' files as pushed: host name to its entries.
    type Remote = BTreeMap<String, Vec<Entry>>;

    fn text(memory: &BTreeMap<String, Vec<String>>) -> String {
        memory
            .iter()
            .map(|(name, obs)| {
                serde_json::json!({"type": "entity", "name": name, "entityType": "t", "observations": obs})
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn backup(h: &mut Host, remote: &mut Remote, now: &mut i64) {
        *now += 1_000_000;
        let (_, records) = parse_records(text(&h.memory).as_bytes()).unwrap();
        let own = remote.get(&h.name).cloned().unwrap_or_default();
        let forget = HashMap::new();
        let stamped = stamp::stamp(
            &records,
            &stamp::Context {
                host: &h.name,
                now: Timestamp::from_micros(*now),
                id_field: "id",
                own: &own,
                base: &h.base,
                allow_mass_delete: true,
                forget: &forget,
                held_back: &|_, _| false,
                keep_base: true,
            },
        )
        .unwrap();
        h.base = stamped.base;
        remote.insert(h.name.clone(), stamped.entries);
    }

    fn sync(h: &mut Host, remote: &mut Remote, now: &mut i64) {
        backup(h, remote, now);
        let files: Vec<HostFile<'_>> = remote
            .iter()
            .map(|(host, entries)| HostFile {
                host,
                entries,
                whole: true,
            })
            .collect();
        let heads = fold::heads(&files, &[]);
        let folded = fold::fold(&heads, "id");
        let (_, records) = parse_records(text(&h.memory).as_bytes()).unwrap();
        let written = writeback::writeback(&folded, &records, None, None, "id", &|_| false, None);
        h.base = writeback::base_after(&h.base, &written);
        let (_, now_held) = parse_records(&written.bytes).unwrap();
        h.memory = now_held
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l.record.body).unwrap();
                let obs = v["observations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap().to_string())
                    .collect();
                (v["name"].as_str().unwrap().to_string(), obs)
            })
            .collect();
    }

    /// The OR-set that the fold must agree with: every observation added by a
    /// backup gets a tag; a backup that no longer holds an observation removes
    /// the tags it saw; a sync sees every tag pushed.
    /// The entity's existence is such a set too, whose elements are its versions:
    /// a backup that changes the entity adds one, a deletion removes those seen.
    #[derive(Default, Clone)]
    struct Reference {
        adds: BTreeSet<(String, u32)>,
        removes: BTreeSet<u32>,
        next: u32,
    }

    /// What one host has seen: `None` for the entity's observations when it
    /// does not exist there.
    #[derive(Default, Clone)]
    struct View {
        /// Observation to its visible tags (`""`: the entity's existence).
        tags: BTreeMap<String, BTreeSet<u32>>,
        adds: BTreeSet<(String, u32)>,
        removes: BTreeSet<u32>,
        /// The observations in the order the memory held them when last backed
        /// up or synced: a new order is an edit too.
        order: Vec<String>,
    }

    const EXISTS: &str = "";

    impl Reference {
        fn backup(&mut self, v: &mut View, memory: &Option<Vec<String>>) {
            let had = v.tags.contains_key(EXISTS);
            let reordered = memory.as_ref().is_some_and(|m| *m != v.order);
            v.order = memory.clone().unwrap_or_default();
            let memory: Option<BTreeSet<String>> =
                memory.as_ref().map(|m| m.iter().cloned().collect());
            let memory = &memory;
            let seen: BTreeSet<String> = v.tags.keys().filter(|k| !k.is_empty()).cloned().collect();
            match memory {
                None => {
                    // Deleted here: every tag seen goes.
                    for (_, tags) in std::mem::take(&mut v.tags) {
                        v.removes.extend(tags);
                    }
                }
                Some(m) => {
                    for o in m {
                        if !v.tags.contains_key(o) {
                            self.next += 1;
                            v.tags.insert(o.clone(), [self.next].into());
                            v.adds.insert((o.clone(), self.next));
                        }
                    }
                    for o in seen.difference(m) {
                        let tags = v.tags.remove(o).expect("seen");
                        v.removes.extend(tags);
                    }
                    if !had || *m != seen || reordered {
                        // A new version: it supersedes the versions seen.
                        if let Some(tags) = v.tags.remove(EXISTS) {
                            v.removes.extend(tags);
                        }
                        self.next += 1;
                        v.tags.insert(EXISTS.to_string(), [self.next].into());
                        v.adds.insert((EXISTS.to_string(), self.next));
                    }
                }
            }
            self.adds.extend(v.adds.iter().cloned());
            self.removes.extend(v.removes.iter().copied());
        }

        fn sync(&mut self, v: &mut View, memory: &Option<Vec<String>>) -> Option<BTreeSet<String>> {
            self.backup(v, memory);
            v.adds = self.adds.clone();
            v.removes = self.removes.clone();
            v.tags.clear();
            for (o, t) in &self.adds {
                if !self.removes.contains(t) {
                    v.tags.entry(o.clone()).or_default().insert(*t);
                }
            }
            if !v.tags.contains_key(EXISTS) {
                // Deleted: its observations went with it.
                v.tags.clear();
                return None;
            }
            Some(v.tags.keys().filter(|k| !k.is_empty()).cloned().collect())
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(usize, u8),
        Remove(usize, u8),
        Delete(usize),
        Backup(usize),
        Sync(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0usize..3, 0u8..4).prop_map(|(h, o)| Op::Add(h, o)),
            3 => (0usize..3, 0u8..4).prop_map(|(h, o)| Op::Remove(h, o)),
            1 => (0usize..3).prop_map(Op::Delete),
            2 => (0usize..3).prop_map(Op::Backup),
            3 => (0usize..3).prop_map(Op::Sync),
        ]
    }

    fn observations(h: &Host) -> Option<BTreeSet<String>> {
        h.memory.get("E").map(|o| o.iter().cloned().collect())
    }

    fn sequence(h: &Host) -> Option<Vec<String>> {
        h.memory.get("E").cloned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// An entity's observations added and removed, and the entity deleted and
        /// made again, on three hosts, backed up and synced in any order: once
        /// every host has synced twice, each holds exactly what an observed-remove,
        /// add-wins set holds.
        #[test]
        fn prop_observations_follow_an_observed_remove_add_wins_set(ops in prop::collection::vec(op(), 0..24)) {
            let mut now = 1_800_000_000_000_000i64;
            let mut remote = Remote::new();
            let mut hosts: Vec<Host> = (0..3).map(|i| Host { name: format!("h{i}"), ..Host::default() }).collect();
            let mut reference = Reference::default();
            let mut views: Vec<View> = vec![View::default(); 3];
            hosts[0].memory.insert("E".into(), vec!["o0".into()]);
            for i in 0..3 {
                let mem = sequence(&hosts[i]);
                sync(&mut hosts[i], &mut remote, &mut now);
                reference.sync(&mut views[i], &mem);
                views[i].order = sequence(&hosts[i]).unwrap_or_default();
            }
            for op in ops {
                match op {
                    Op::Add(h, o) => {
                        let obs = hosts[h].memory.entry("E".into()).or_default();
                        let o = format!("o{o}");
                        if !obs.contains(&o) {
                            obs.push(o);
                        }
                    }
                    Op::Remove(h, o) => {
                        if let Some(obs) = hosts[h].memory.get_mut("E") {
                            obs.retain(|x| *x != format!("o{o}"));
                        }
                    }
                    Op::Delete(h) => {
                        hosts[h].memory.remove("E");
                    }
                    Op::Backup(h) => {
                        let mem = sequence(&hosts[h]);
                        backup(&mut hosts[h], &mut remote, &mut now);
                        reference.backup(&mut views[h], &mem);
                    }
                    Op::Sync(h) => {
                        let mem = sequence(&hosts[h]);
                        sync(&mut hosts[h], &mut remote, &mut now);
                        reference.sync(&mut views[h], &mem);
                        views[h].order = sequence(&hosts[h]).unwrap_or_default();
                    }
                }
            }
            for _ in 0..2 {
                for i in 0..3 {
                    let mem = sequence(&hosts[i]);
                    sync(&mut hosts[i], &mut remote, &mut now);
                    let want = reference.sync(&mut views[i], &mem);
                    views[i].order = sequence(&hosts[i]).unwrap_or_default();
                    prop_assert_eq!(observations(&hosts[i]), want, "host h{}", i);
                }
            }
        }

        /// Stamping a memory twice against what the first stamping gave changes
        /// nothing: the same bytes, the same base.
        #[test]
        fn prop_stamping_twice_is_stamping_once(ops in prop::collection::vec(op(), 0..12)) {
            let mut now = 1_800_000_000_000_000i64;
            let mut remote = Remote::new();
            let mut h = Host { name: "h0".into(), ..Host::default() };
            for op in ops {
                match op {
                    Op::Add(_, o) => h.memory.entry(format!("E{}", o % 2)).or_default().push(format!("o{o}")),
                    Op::Remove(_, o) => { h.memory.remove(&format!("E{}", o % 2)); }
                    Op::Delete(_) => { h.memory.clear(); }
                    Op::Backup(_) | Op::Sync(_) => backup(&mut h, &mut remote, &mut now),
                }
            }
            backup(&mut h, &mut remote, &mut now);
            let (once, base) = (remote["h0"].clone(), h.base.clone());
            backup(&mut h, &mut remote, &mut now);
            prop_assert_eq!(&remote["h0"], &once);
            prop_assert_eq!(h.base, base);
        }

        /// Whatever the clock says at each backup, even far behind, every version
        /// of a lineage orders after the one before it.
        #[test]
        fn prop_the_hybrid_clock_never_goes_backwards(clock in prop::collection::vec(-5i64..5, 1..10)) {
            let mut remote = Remote::new();
            let mut h = Host { name: "h0".into(), ..Host::default() };
            let mut last: Option<(Timestamp, u64)> = None;
            for (i, step) in clock.iter().enumerate() {
                let mut now = 1_800_000_000_000_000i64 + step * 3_600_000_000 - 1_000_000;
                h.memory.insert("E".into(), vec![format!("o{i}")]);
                backup(&mut h, &mut remote, &mut now);
                let e = &remote["h0"][0];
                if let Some((ts, v)) = last {
                    prop_assert!(e.meta.timestamp > ts && e.meta.version == v + 1);
                }
                last = Some((e.meta.timestamp, e.meta.version));
            }
        }
    }
}
