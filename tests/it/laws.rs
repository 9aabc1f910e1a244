//! The merge's laws, property-tested over generated host states, and the canonical
//! JSON writer checked against serde_json.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use memory_backup::cli::MergeArgs;
use memory_backup::clock::Clock;
use memory_backup::entry::Entry;
use memory_backup::report::Report;
use memory_backup::{Context, commands, crdt, files, json, memory};
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
fn entry() -> impl Strategy<Value = Entry> {
    (0u8..6, 0u8..3, timestamp(), 1u64..3, 0u8..3, any::<bool>()).prop_map(
        |(uid, host, ts, version, content, extra)| {
            let extra = if extra { r#","tags":["t",1.50]"# } else { "" };
            let line = format!(
                r#"{{"_crdt_metadata":{{"host":"h{host}","timestamp":"{ts}","unique_id":"u{uid}","version":{version}}},"content":"c{content}","id":"n{uid}"{extra}}}"#
            );
            parse_one(&line)
        },
    )
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
    files::render(crdt::merge(states.iter().flat_map(|s| s.iter())))
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
            std::fs::write(dir_a.path().join(format!("memory-h{i}.json")), files::render(merged.iter().copied())).unwrap();
            std::fs::write(dir_b.path().join(format!("memory-{}.json", names[i])), files::render(merged.iter().copied())).unwrap();
        }
        let run = |dir: &std::path::Path| {
            let cx = Context { repo: dir.to_path_buf(), host: None, clock: Clock::System, log_dir: dir.join("logs") };
            let args = MergeArgs { dir: Some(dir.to_path_buf()), output: None };
            commands::merge::cmd_merge(&args, &cx, &mut Report::default()).unwrap();
            std::fs::read(dir.join(files::UNIFIED_FILE)).unwrap()
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
    assert_eq!(
        memory::ident(&a[0].record, "id"),
        memory::ident(&b[0].record, "id")
    );
}
