//! Benchmarks of the core, on data made here (nothing is read from disk):
//!
//! - `parse_stamped`: one host file of 10k entries, bytes to entries;
//! - `merge`: `core::merge::merge` of 10 host states, 10k entries in all, ~5% of them
//!   copies of another host's entries (same `unique_id`, another timestamp);
//! - `render`: the merged entries to the canonical bytes of the unified file;
//! - `stamp`: 10k MCP-style memory records (JSON Lines), `record::parse_records`
//!   then `stamp::stamp`, against an empty previous state and an equal one.
//!
//! Run with `cargo bench --bench core` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memory_backup::core::base::Base;
use memory_backup::core::clock::Timestamp;
use memory_backup::core::entry::{self, Entry};
use memory_backup::core::{merge, record, stamp};

const ENTRIES: usize = 10_000;
const HOSTS: usize = 10;
/// The share of a host's entries that copy an earlier host's entry.
const OVERLAP: f64 = 0.05;

const WORDS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "user",
    "prefers",
    "rust",
    "tests",
    "deploy",
    "friday",
    "note",
    "memory",
    "graph",
    "entity",
    "observation",
    "project",
    "build",
];

/// A small deterministic generator (xorshift64*), so that runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn words(&mut self, min: u64, max: u64) -> String {
        let n = min + self.below(max - min + 1);
        let w: Vec<&str> = (0..n)
            .map(|_| WORDS[self.below(WORDS.len() as u64) as usize])
            .collect();
        w.join(" ")
    }
}

/// An RFC 3339 UTC timestamp with microseconds, `secs` after 2026-01-01.
fn timestamp(secs: u64, micros: u64) -> String {
    let (day, rest) = (secs / 86_400, secs % 86_400);
    // 12 months of 28 days keep the calendar trivial and the dates valid.
    let (month, mday) = (day / 28 % 12 + 1, day % 28 + 1);
    format!(
        "2026-{month:02}-{mday:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// One entry in the seed design's shape, as a JSON object with sorted keys.
struct Raw {
    id: String,
    content: String,
    tags: Vec<String>,
    host: String,
    ts: String,
    version: u64,
    unique_id: String,
}

impl Raw {
    fn json(&self) -> String {
        let tags: Vec<String> = self.tags.iter().map(|t| format!("\"{t}\"")).collect();
        format!(
            r#"{{"_crdt_metadata": {{"host": "{}", "timestamp": "{}", "unique_id": "{}", "version": {}}}, "content": "{}", "id": "{}", "tags": [{}]}}"#,
            self.host,
            self.ts,
            self.unique_id,
            self.version,
            self.content,
            self.id,
            tags.join(", ")
        )
    }
}

/// `hosts` host files (as bytes) with `total` entries in all; about `OVERLAP` of
/// each file's entries copy an earlier host's entry with another timestamp.
fn host_files(hosts: usize, total: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut pool: Vec<(String, String, u64, String)> = Vec::new();
    (0..hosts)
        .map(|h| {
            let host = format!("host{h:03}");
            let entries: Vec<String> = (0..total / hosts)
                .map(|i| {
                    let raw = if !pool.is_empty() && rng.chance(OVERLAP) {
                        let (id, content, version, unique_id) =
                            pool[rng.below(pool.len() as u64) as usize].clone();
                        Raw {
                            id,
                            content: format!("{content} (edited on {host})"),
                            tags: vec![],
                            host: host.clone(),
                            ts: timestamp(rng.below(86_400 * 300), rng.below(1_000_000)),
                            version: version + 1,
                            unique_id,
                        }
                    } else {
                        let id = format!("mem-{i}");
                        let ts = timestamp(rng.below(86_400 * 300), rng.below(1_000_000));
                        let tags = (0..rng.below(5)).map(|_| rng.words(1, 1)).collect();
                        let raw = Raw {
                            unique_id: format!("{host}_{id}_{ts}"),
                            id,
                            content: rng.words(8, 40),
                            tags,
                            host: host.clone(),
                            ts,
                            version: 1,
                        };
                        if rng.chance(0.2) {
                            pool.push((
                                raw.id.clone(),
                                raw.content.clone(),
                                raw.version,
                                raw.unique_id.clone(),
                            ));
                        }
                        raw
                    };
                    raw.json()
                })
                .collect();
            format!("[\n{}\n]\n", entries.join(",\n")).into_bytes()
        })
        .collect()
}

/// A memory file as the MCP memory server writes it: JSON Lines of entities, then
/// relations between them.
fn mcp_memory(n: usize) -> Vec<u8> {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut entities, mut relations) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i == 0 || rng.chance(0.7) {
            let kind = ["person", "project", "tool"][rng.below(3) as usize];
            let obs: Vec<String> = (0..1 + rng.below(4))
                .map(|_| format!("\"{}\"", rng.words(4, 16)))
                .collect();
            entities.push(format!(
                r#"{{"type":"entity","name":"E{i}","entityType":"{kind}","observations":[{}]}}"#,
                obs.join(",")
            ));
        } else {
            let rel = ["uses", "knows", "works_at"][rng.below(3) as usize];
            relations.push(format!(
                r#"{{"type":"relation","from":"E{}","to":"E{i}","relationType":"{rel}"}}"#,
                rng.below(i as u64)
            ));
        }
    }
    entities.extend(relations);
    entities.join("\n").into_bytes()
}

fn parse(bytes: &[u8]) -> Vec<Entry> {
    let stamped = entry::parse_stamped(bytes).expect("generated host files parse");
    assert!(stamped.skipped.is_empty(), "generated entries are valid");
    stamped.entries
}

fn bench_parse(c: &mut Criterion) {
    let file = host_files(1, ENTRIES).remove(0);
    let mut g = c.benchmark_group("parse_stamped");
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("10k_entries", |b| {
        b.iter(|| entry::parse_stamped(black_box(&file)).unwrap())
    });
    g.finish();
}

fn bench_merge_and_render(c: &mut Criterion) {
    let inputs = host_files(HOSTS, ENTRIES);
    let input_bytes: usize = inputs.iter().map(Vec::len).sum();
    let states: Vec<Vec<Entry>> = inputs.iter().map(|f| parse(f)).collect();
    let merged = merge::merge(states.iter().flatten());
    assert!(
        merged.len() < ENTRIES && merged.len() > ENTRIES * 9 / 10,
        "about 5% of the entries overlap: {} unique of {ENTRIES}",
        merged.len()
    );

    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Bytes(input_bytes as u64));
    g.bench_function("10_hosts_10k_entries", |b| {
        b.iter(|| merge::merge(black_box(&states).iter().flatten()))
    });
    g.finish();

    let out = entry::render(&merged);
    let mut g = c.benchmark_group("render");
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function("unified_10k_entries", |b| {
        b.iter(|| entry::render(black_box(&merged)))
    });
    g.finish();
}

fn bench_stamp(c: &mut Criterion) {
    let file = mcp_memory(ENTRIES);
    let now = Timestamp::parse("2026-06-01T12:00:00.000000Z").expect("a valid timestamp");
    let run = |bytes: &[u8], previous: &[Entry]| {
        let (_, records) = record::parse_records(bytes).expect("generated memory parses");
        let forget = Default::default();
        let cx = stamp::Context {
            host: "bench",
            now,
            id_field: record::DEFAULT_ID_FIELD,
            own: previous,
            base: &Base::default(),
            allow_mass_delete: true,
            forget: &forget,
            held_back: &|_, _| false,
            keep_base: true,
        };
        stamp::stamp(&records, &cx).expect("stamps")
    };
    let first = run(&file, &[]);
    assert_eq!(first.new, ENTRIES, "every generated record is new");
    let previous = first.entries;
    let again = run(&file, &previous);
    assert_eq!(
        again.unchanged, ENTRIES,
        "an unchanged memory stamps the same"
    );

    let mut g = c.benchmark_group("stamp");
    g.throughput(Throughput::Bytes(file.len() as u64));
    g.bench_function("10k_records_empty_previous", |b| {
        b.iter(|| run(black_box(&file), &[]))
    });
    // The usual case: nothing changed since the last backup.
    g.bench_function("10k_records_equal_previous", |b| {
        b.iter(|| run(black_box(&file), &previous))
    });
    g.finish();
}

criterion_group!(benches, bench_parse, bench_merge_and_render, bench_stamp);
criterion_main!(benches);
