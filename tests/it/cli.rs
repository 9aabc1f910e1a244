//! The `stamp`, `merge` and `verify` commands through the binary: inputs, identity,
//! stamping, bad input, and what `verify` finds.

use crate::support::{Env, entries, meta};

const MCP: &str = r#"{"type":"entity","name":"Ada","entityType":"person","observations":["likes Rust"]}
{"type":"entity","name":"Rust","entityType":"language","observations":[]}
{"type":"relation","from":"Ada","to":"Rust","relationType":"uses"}
"#;

fn uids(path: &std::path::Path) -> Vec<String> {
    entries(path)
        .iter()
        .map(|e| meta(e)["unique_id"].as_str().unwrap().to_string())
        .collect()
}

// ---- inputs and identity ----

#[test]
fn written_files_get_0644_and_keep_an_existing_mode() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.write("m.json", r#"[{"id":"n1"}]"#);
    env.stamp("m.json", "out.json");
    let mode = |p: &str| std::fs::metadata(env.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("out.json") & 0o644, 0o644, "{:o}", mode("out.json"));
    std::fs::set_permissions(env.path("out.json"), std::fs::Permissions::from_mode(0o640)).unwrap();
    env.write("m.json", r#"[{"id":"n1","c":1}]"#);
    env.stamp("m.json", "out.json");
    assert_eq!(mode("out.json"), 0o640);
}

#[test]
fn a_json_array_is_stamped_by_id() {
    let env = Env::new();
    env.write(
        "m.json",
        r#"[{"id": "n1", "content": "a"}, {"id": 7, "content": "b"}]"#,
    );
    let r = env.stamp("m.json", "out.json");
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        uids(&env.path("out.json")),
        [
            "testhost_7_2026-11-21T12:00:00.000000Z",
            "testhost_n1_2026-11-21T12:00:00.000000Z"
        ]
    );
    assert!(r.stdout.contains("2 new, 0 changed"), "{}", r.stdout);
}

#[test]
fn mcp_json_lines_get_entity_and_relation_identities() {
    let env = Env::new();
    env.write("memory.jsonl", MCP);
    assert_eq!(env.stamp("memory.jsonl", "out.json").code, 0);
    let ids = uids(&env.path("out.json"));
    assert!(ids.contains(&"testhost_entity:Ada_2026-11-21T12:00:00.000000Z".to_string()));
    assert!(ids.contains(
        &r#"testhost_relation:["Ada","uses","Rust"]_2026-11-21T12:00:00.000000Z"#.to_string()
    ));
    assert_eq!(ids.len(), 3);
}

#[test]
fn entries_without_id_get_a_content_hash_identity() {
    let env = Env::new();
    env.write("m.json", "{\"note\": \"x\", \"n\": 1}\n");
    assert_eq!(env.stamp("m.json", "out.json").code, 0);
    let uid = &uids(&env.path("out.json"))[0];
    // The hash of the canonical JSON: key order and spacing do not matter.
    env.write("m2.json", "{\"n\":1,\"note\":\"x\"}\n");
    assert_eq!(env.stamp("m2.json", "out2.json").code, 0);
    assert_eq!(uid, &uids(&env.path("out2.json"))[0]);
    assert!(uid.starts_with("testhost_sha256:"), "{uid}");
}

#[test]
fn id_field_picks_another_field() {
    let env = Env::new();
    env.write("m.json", r#"[{"key": "k1", "id": "ignored"}]"#);
    let r = env.run(&[
        "stamp",
        "--memory",
        "m.json",
        "--out",
        "o.json",
        "--id-field",
        "key",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        uids(&env.path("o.json")),
        ["testhost_k1_2026-11-21T12:00:00.000000Z"]
    );
}

#[test]
fn an_empty_file_is_an_empty_memory() {
    let env = Env::new();
    env.write("m.json", " \n\t\n");
    assert_eq!(env.stamp("m.json", "out.json").code, 0);
    assert_eq!(env.read("out.json"), "[]\n");
}

#[test]
fn unknown_fields_numbers_and_strings_are_kept_exactly() {
    let env = Env::new();
    env.write(
        "m.json",
        r#"[{"id":"n1","price":1.50,"big":123456789012345678901234567890,"exp":1E+5,"neg":-0,
             "s":"caf\u00e9 \"q\" \ud83d\ude00 tab\t","x":{"z":[1,{"b":2,"a":1}]}}]"#,
    );
    assert_eq!(env.stamp("m.json", "out.json").code, 0);
    let text = env.read("out.json");
    for kept in [
        r#""price":1.50"#,
        r#""big":123456789012345678901234567890"#,
        r#""exp":1E+5"#,
        r#""neg":-0"#,
        "\"s\":\"café \\\"q\\\" 😀 tab\\t\"",
        r#""x":{"z":[1,{"a":1,"b":2}]}"#,
    ] {
        assert!(text.contains(kept), "{kept} not in {text}");
    }
}

// ---- stamping ----

#[test]
fn unchanged_memory_gives_byte_identical_output() {
    let mut env = Env::new();
    env.write("memory.jsonl", MCP);
    assert_eq!(env.stamp("memory.jsonl", "out.json").code, 0);
    let first = env.read("out.json");
    // Another instant: nothing changed, so nothing is restamped.
    env.now = Some("2026-11-22T08:00:00Z".into());
    let r = env.stamp("memory.jsonl", "out.json");
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("0 new, 0 changed, 3 unchanged"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("; unchanged "), "{}", r.stdout);
    assert_eq!(env.read("out.json"), first);
}

#[test]
fn a_changed_entry_keeps_its_unique_id_and_gets_the_next_version() {
    let mut env = Env::new();
    env.write("m.json", r#"[{"id":"n1","c":"a"},{"id":"n2","c":"b"}]"#);
    env.stamp("m.json", "out.json");
    let before = env.read("out.json");
    env.now = Some("2026-11-21T13:00:00Z".into());
    env.write(
        "m.json",
        r#"[{"id":"n1","c":"A"},{"id":"n2","c":"b"},{"id":"n3","c":"c"}]"#,
    );
    let r = env.stamp("m.json", "out.json");
    assert!(
        r.stdout.contains("1 new, 1 changed, 1 unchanged"),
        "{}",
        r.stdout
    );
    let after = entries(&env.path("out.json"));
    let n1 = after.iter().find(|e| e["id"] == "n1").unwrap();
    assert_eq!(
        meta(n1)["unique_id"],
        "testhost_n1_2026-11-21T12:00:00.000000Z"
    );
    assert_eq!(meta(n1)["version"], 2);
    assert_eq!(meta(n1)["timestamp"], "2026-11-21T13:00:00.000000Z");
    // The unchanged entry's line is untouched: a change is a one-line diff.
    // (The separating comma may move with the last line.)
    let line = |text: &str, id: &str| {
        let needle = format!(r#""id":"{id}""#);
        text.lines()
            .find(|l| l.contains(&needle))
            .map(|l| l.trim_end_matches(',').to_string())
    };
    assert_eq!(line(&before, "n2"), line(&env.read("out.json"), "n2"));
}

#[test]
fn an_edit_on_a_host_whose_clock_is_behind_orders_after_the_prior_version() {
    let mut env = Env::new();
    env.write("m.json", r#"[{"id":"n1","c":"a"}]"#);
    env.stamp("m.json", "out.json");
    env.now = Some("2026-11-21T11:00:00Z".into()); // an hour earlier
    env.write("m.json", r#"[{"id":"n1","c":"b"}]"#);
    env.stamp("m.json", "out.json");
    let e = &entries(&env.path("out.json"))[0];
    assert_eq!(meta(e)["timestamp"], "2026-11-21T12:00:00.000001Z");
    assert_eq!(meta(e)["version"], 2);
}

#[test]
fn removed_entries_become_tombstones_that_keep_only_their_identity() {
    let env = Env::new();
    env.write("m.json", r#"[{"id":"n1","c":"secret"},{"id":"n2"}]"#);
    env.stamp("m.json", "out.json");
    env.write("m.json", r#"[{"id":"n2"}]"#);
    let r = env.stamp("m.json", "out.json");
    assert!(r.stdout.contains("1 deleted"), "{}", r.stdout);
    let after = entries(&env.path("out.json"));
    assert_eq!(after.len(), 2);
    let n1 = after.iter().find(|e| e["id"] == "n1").unwrap();
    assert_eq!(meta(n1)["deleted"], true);
    assert_eq!(meta(n1)["version"], 2);
    assert!(n1.get("c").is_none(), "{n1}");
}

#[test]
fn duplicate_identities_count_once_when_identical_and_are_renamed_when_not() {
    let env = Env::new();
    env.write(
        "m.json",
        "{\"id\":\"a\",\"c\":1}\n{\"id\":\"a\",\"c\":1}\n{\"id\":\"a\",\"c\":2}\n{\"id\":\"a\",\"c\":3}\n",
    );
    let r = env.stamp("m.json", "out.json");
    assert_eq!(r.code, 0);
    let mut ids = uids(&env.path("out.json"));
    ids.sort();
    assert_eq!(
        ids,
        [
            "testhost_a#2_2026-11-21T12:00:00.000000Z",
            "testhost_a#3_2026-11-21T12:00:00.000000Z",
            "testhost_a_2026-11-21T12:00:00.000000Z"
        ]
    );
    assert_eq!(r.stderr.lines().count(), 2, "{}", r.stderr);
    assert!(r.stderr.contains("m.json:3:"), "{}", r.stderr);
    assert!(r.stderr.contains("m.json:4:"), "{}", r.stderr);
    // Stamping the same file again changes nothing.
    let before = env.read("out.json");
    env.stamp("m.json", "out.json");
    assert_eq!(env.read("out.json"), before);
}

#[test]
fn a_renamed_duplicate_never_takes_an_identity_another_entry_has() {
    let env = Env::new();
    env.write(
        "m.json",
        r#"[{"id":"n1#2","c":"a"},{"id":"n1","c":"b"},{"id":"n1","c":"c"}]"#,
    );
    assert_eq!(env.stamp("m.json", "d/memory-testhost.json").code, 0);
    let mut ids = uids(&env.path("d/memory-testhost.json"));
    ids.sort();
    assert_eq!(
        ids,
        [
            "testhost_n1#2_2026-11-21T12:00:00.000000Z",
            "testhost_n1#3_2026-11-21T12:00:00.000000Z",
            "testhost_n1_2026-11-21T12:00:00.000000Z"
        ]
    );
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    assert_eq!(entries(&env.path("d/unified-memory.json")).len(), 3);
}

#[test]
fn metadata_in_a_memory_file_is_ignored_so_no_host_versions_another_hosts_lineage() {
    let env = Env::new();
    let restored = r#"[{"_crdt_metadata":{"host":"other","timestamp":"2026-11-20T10:00:00.000000Z","unique_id":"other_n1_2026-11-20T10:00:00.000000Z","version":3},"id":"n1","c":"x"}]"#;
    env.write("m.json", restored);
    assert_eq!(env.stamp("m.json", "out.json").code, 0);
    let e = &entries(&env.path("out.json"))[0];
    assert_eq!(
        meta(e)["unique_id"],
        "testhost_n1_2026-11-21T12:00:00.000000Z"
    );
    assert_eq!(meta(e)["version"], 1);
    assert_eq!(meta(e)["host"], "testhost");
    assert!(
        e.get("c").is_some() && !e.to_string().contains("other_n1"),
        "{e}"
    );
}

#[test]
fn two_different_lines_with_one_lineage_s_metadata_are_two_entries_of_this_host() {
    let env = Env::new();
    let m = r#""_crdt_metadata":{"host":"other","timestamp":"2026-11-20T10:00:00.000000Z","unique_id":"other_n1_2026-11-20T10:00:00.000000Z","version":1}"#;
    env.write("m.json", format!("{{{m},\"id\":\"n1\",\"c\":\"x\"}}\n{{{m},\"id\":\"n1\",\"c\":\"y\"}}\n{{{m},\"id\":\"n1\",\"c\":\"x\"}}\n"));
    let r = env.stamp("m.json", "d/memory-testhost.json");
    assert_eq!(r.code, 0, "{r:?}");
    let mut ids = uids(&env.path("d/memory-testhost.json"));
    ids.sort();
    assert_eq!(
        ids,
        [
            "testhost_n1#2_2026-11-21T12:00:00.000000Z",
            "testhost_n1_2026-11-21T12:00:00.000000Z"
        ]
    );
    // One copy per unique_id: the host file is canonical.
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    assert_eq!(env.run(&["verify", "d"]).code, 0);
}

#[test]
fn stamp_refuses_to_rewrite_a_host_file_with_entries_it_cannot_read() {
    let env = Env::new();
    env.write("m.json", r#"[{"id":"n1"}]"#);
    let damaged = "[\n{\"id\":\"hand-added\"}\n]\n";
    env.write("out.json", damaged);
    let r = env.stamp("m.json", "out.json");
    assert_eq!(r.code, 65, "{r:?}");
    assert!(
        r.stderr
            .contains("out.json:2:1: entry has no _crdt_metadata"),
        "{}",
        r.stderr
    );
    assert_eq!(env.read("out.json"), damaged);
}

#[test]
fn memory_backup_now_sets_the_clock_and_a_bad_value_is_a_usage_error() {
    let mut env = Env::new();
    env.now = Some("2030-01-02T03:04:05.5+02:00".into());
    env.write("m.json", r#"[{"id":"n1"}]"#);
    env.stamp("m.json", "out.json");
    let e = &entries(&env.path("out.json"))[0];
    assert_eq!(meta(e)["timestamp"], "2030-01-02T01:04:05.500000Z");
    env.now = Some("soon".into());
    let r = env.stamp("m.json", "out2.json");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("MEMORY_BACKUP_NOW"), "{}", r.stderr);
}

#[test]
fn the_host_name_is_sanitised_and_an_empty_one_refused() {
    let mut env = Env::new();
    env.host = "my laptop/1".into();
    env.write("m.json", r#"[{"id":"n1"}]"#);
    env.stamp("m.json", "out.json");
    assert_eq!(
        meta(&entries(&env.path("out.json"))[0])["host"],
        "my-laptop-1"
    );
    env.host = " ".into();
    let r = env.stamp("m.json", "o2.json");
    assert_eq!(r.code, 2, "{r:?}");
    assert!(!env.path("o2.json").exists());
}

// ---- bad input ----

/// Each kind of bad memory file: exit code, one stderr line naming file:line:col,
/// nothing written.
#[test]
fn bad_memory_files_are_refused_with_location_and_nothing_is_written() {
    let cases: &[(&str, &[u8], i32, &str)] = &[
        (
            "invalid.json",
            b"[{\"id\": 1,}]",
            65,
            "invalid.json:1:11: expected a string key",
        ),
        (
            "torn.jsonl",
            b"{\"id\":\"a\"}\n{\"id\":\"b\",\"observations\":[\"x",
            65,
            "torn.jsonl:2:29: unterminated string",
        ),
        (
            "scalar.jsonl",
            b"{\"id\":\"a\"}\n42\n",
            65,
            "scalar.jsonl:2:1: entry is not a JSON object",
        ),
        (
            "nested.json",
            b"[{\"id\":1}, [2]]",
            65,
            "nested.json:1:12: entry is not a JSON object",
        ),
        (
            "latin1.json",
            b"[{\"id\":\"caf\xe9\"}]",
            65,
            "latin1.json:1:12: invalid UTF-8",
        ),
    ];
    for (name, content, code, message) in cases {
        let env = Env::new();
        env.write(name, content);
        env.write("out.json", "[\n]\n");
        let r = env.stamp(name, "out.json");
        assert_eq!(r.code, *code, "{name}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{name}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{name}: {}", r.stderr);
        assert_eq!(r.stdout, "", "{name}");
        assert_eq!(env.read("out.json"), "[\n]\n", "{name}: output touched");
        let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

#[test]
fn a_missing_memory_file_or_a_folder_is_exit_66() {
    let env = Env::new();
    std::fs::create_dir(env.path("adir")).unwrap();
    for (name, cause) in [
        ("nope.json", "no such memory file"),
        ("adir", "is a folder"),
    ] {
        let r = env.stamp(name, "out.json");
        assert_eq!(r.code, 66, "{r:?}");
        assert!(
            r.stderr.contains(name) && r.stderr.contains(cause),
            "{}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1);
        assert!(!env.path("out.json").exists());
    }
}

#[test]
fn json_output_is_one_object_and_quiet_prints_nothing() {
    let env = Env::new();
    env.write("m.json", r#"[{"id":"n1"}]"#);
    let r = env.run(&["--json", "stamp", "--memory", "m.json", "--out", "o.json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["new"], 1);
    assert_eq!(r.stdout.lines().count(), 1);
    let r = env.run(&["-q", "stamp", "--memory", "m.json", "--out", "o.json"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    let r = env.run(&[
        "--json",
        "stamp",
        "--memory",
        "missing.json",
        "--out",
        "o.json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["exit_code"].as_i64()),
        (Some(false), Some(66))
    );
}

#[test]
fn runs_are_logged_and_the_last_run_recorded() {
    let env = Env::new();
    env.write("m.json", r#"[{"id":"n1"}]"#);
    env.stamp("m.json", "o.json");
    // One last-run file per repository.
    let last = std::fs::read_dir(env.path("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("last-run"))
        .expect("a last-run file");
    let last: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.path()).unwrap()).unwrap();
    assert_eq!(last["command"], "stamp");
    assert_eq!(last["exit_code"], 0);
    let log = std::fs::read_dir(env.path("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("memory-backup.")
        })
        .expect("a log file");
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(text.contains("stamp: stamped m.json"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    assert_eq!(env.run(&["stamp"]).code, 2);
    assert_eq!(env.run(&["frobnicate"]).code, 2);
    assert_eq!(env.run(&["--help"]).code, 0);
}

// ---- merge ----

fn host_line(host: &str, id: &str, ts: &str, version: u64, content: &str) -> String {
    format!(
        r#"{{"_crdt_metadata":{{"host":"{host}","timestamp":"{ts}","unique_id":"{host}_{id}_{ts}","version":{version}}},"c":"{content}","id":"{id}"}}"#
    )
}

/// Writes `path` as host `host`'s file holding one entry, version 1, at [`T`].
fn write_host(env: &Env, path: &str, host: &str, id: &str, content: &str) {
    env.write(path, host_file(&[host_line(host, id, T, 1, content)]));
}

/// The instant of the entries those tests write.
const T: &str = "2026-11-20T10:00:00.000000Z";

fn host_file(lines: &[String]) -> String {
    if lines.is_empty() {
        return "[]\n".into();
    }
    format!("[\n{}\n]\n", lines.join(",\n"))
}

#[test]
fn merge_unites_host_files_and_keeps_the_previous_unified() {
    let env = Env::new();
    write_host(&env, "d/memory-a.json", "a", "n1", "x");
    write_host(&env, "d/memory-b.json", "b", "n2", "y");
    // An entry only the previous unified still has (its host dropped it).
    write_host(&env, "d/unified-memory.json", "c", "n3", "z");
    env.write("d/notes.json", "not a host file");
    let r = env.run(&["merge", "d"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("merged 2 host files") && r.stdout.contains("3 entries"));
    assert_eq!(entries(&env.path("d/unified-memory.json")).len(), 3);
    // Again: nothing to do, the file is left as it is.
    let r = env.run(&["merge", "d"]);
    assert!(r.stdout.contains("(unchanged)"), "{}", r.stdout);
    assert_eq!(env.run(&["verify", "d"]).code, 0);
}

#[test]
fn merge_output_goes_where_o_says_and_defaults_to_the_repository() {
    let env = Env::new();
    write_host(&env, "repo/memory-a.json", "a", "n1", "x");
    assert_eq!(env.run(&["merge"]).code, 0);
    assert!(env.path("repo/unified-memory.json").exists());
    assert_eq!(env.run(&["merge", "repo", "-o", "elsewhere.json"]).code, 0);
    assert_eq!(
        env.read("elsewhere.json"),
        env.read("repo/unified-memory.json")
    );
}

#[test]
fn a_corrupt_host_file_is_skipped_with_a_warning_and_its_entries_survive() {
    let env = Env::new();
    let t = T;
    write_host(&env, "d/memory-a.json", "a", "n1", "x");
    write_host(&env, "d/memory-b.json", "b", "n2", "y");
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    // b's file is damaged, and a has a new entry.
    env.write(
        "d/memory-b.json",
        "[\n{\"_crdt_metadata\": {\"host\": \"b\"",
    );
    env.write(
        "d/memory-a.json",
        host_file(&[
            host_line("a", "n1", t, 1, "x"),
            host_line("a", "n4", t, 1, "w"),
        ]),
    );
    let r = env.run(&["merge", "d"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("memory-b.json:2:"), "{}", r.stderr);
    assert!(r.stderr.contains("skipped"), "{}", r.stderr);
    let ids: Vec<_> = entries(&env.path("d/unified-memory.json"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&"n2".to_string()), "b's entry was lost");
    let v = env.run(&["verify", "d"]);
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("memory-b.json:2:") && v.stdout.contains("does not parse"));
}

#[test]
fn an_entry_without_metadata_in_a_host_file_is_skipped_and_named() {
    let env = Env::new();
    let t = T;
    env.write(
        "d/memory-a.json",
        format!(
            "[\n{},\n{{\"id\":\"bare\"}}\n]\n",
            host_line("a", "n1", t, 1, "x")
        ),
    );
    let r = env.run(&["merge", "d"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("memory-a.json:3: entry skipped"),
        "{}",
        r.stderr
    );
    assert_eq!(entries(&env.path("d/unified-memory.json")).len(), 1);
}

#[test]
fn a_corrupt_previous_unified_stops_the_merge_and_is_left_alone() {
    let env = Env::new();
    write_host(&env, "d/memory-a.json", "a", "n1", "x");
    env.write("d/unified-memory.json", "[\n{\"oops\"\n");
    let r = env.run(&["merge", "d"]);
    assert_eq!(r.code, 65, "{r:?}");
    assert!(
        r.stderr.contains("unified-memory.json:3:1:"),
        "{}",
        r.stderr
    );
    assert_eq!(env.read("d/unified-memory.json"), "[\n{\"oops\"\n");
}

// ---- verify ----

#[test]
fn verify_lists_every_kind_of_problem() {
    let env = Env::new();
    let t1 = "2026-11-20T10:00:00.000000Z";
    let t2 = "2026-11-20T11:00:00.000000Z";
    env.write(
        "d/memory-a.json",
        host_file(&[host_line("a", "n1", t1, 1, "x")]),
    );
    env.write(
        "d/memory-b.json",
        host_file(&[host_line("b", "n2", t1, 1, "y")]),
    );
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    let healthy = env.run(&["verify", "d"]);
    assert_eq!(healthy.code, 0, "{healthy:?}");
    assert!(healthy.stdout.contains("no problems"));

    // a: a newer version than unified has; a new entry unified lacks.
    let mut newer = host_line("a", "n1", t1, 2, "x2");
    newer = newer.replacen(
        &format!("\"timestamp\":\"{t1}\""),
        &format!("\"timestamp\":\"{t2}\""),
        1,
    );
    env.write(
        "d/memory-a.json",
        host_file(&[newer, host_line("a", "n9", t2, 1, "new")]),
    );
    // b: valid but not canonical (spaces).
    let b = env.read("d/memory-b.json").replace(",\"c\"", ", \"c\"");
    env.write("d/memory-b.json", b);
    env.write("d/memory-c.json", "[{");
    let r = env.run(&["verify", "d"]);
    assert_eq!(r.code, 1, "{r:?}");
    let out = &r.stdout;
    assert!(
        out.contains("memory-a.json:2: a_n1_") && out.contains("is newer here"),
        "{out}"
    );
    assert!(
        out.contains("memory-a.json:3: a_n9_") && out.contains("missing from"),
        "{out}"
    );
    assert!(
        out.contains("memory-b.json: not in canonical form"),
        "{out}"
    );
    assert!(out.contains("memory-c.json:1:3: does not parse"), "{out}");
    assert!(out.contains("4 problem(s)"), "{out}");
}

#[test]
fn verify_reports_a_missing_unified_file() {
    let env = Env::new();
    write_host(&env, "d/memory-a.json", "a", "n1", "x");
    let r = env.run(&["verify", "d"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("unified-memory.json: missing"),
        "{}",
        r.stdout
    );
}
