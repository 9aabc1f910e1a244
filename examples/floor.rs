//! The floor that `scripts/bench` measures the merge against: reading every
//! `memory-*.json` of a folder and parsing it on one thread, entries kept as raw
//! JSON with only their metadata decoded. Any merge does at least this much.
//! usage: floor DIR

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    unique_id: Cow<'a, str>,
    version: u64,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, rename = "_crdt_metadata")]
    meta: Metadata<'a>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: floor DIR")?;
    let mut entries = 0usize;
    let mut checksum = 0usize;
    for e in std::fs::read_dir(&dir)? {
        let path = e?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("memory-") && name.ends_with(".json")) {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let raw: Vec<&RawValue> = serde_json::from_slice(&bytes)?;
        for r in raw {
            let e: Entry = serde_json::from_str(r.get())?;
            entries += 1;
            checksum += e.meta.host.len()
                + e.meta.timestamp.len()
                + e.meta.unique_id.len()
                + e.meta.version as usize;
        }
    }
    println!("{entries} {checksum}");
    Ok(())
}
