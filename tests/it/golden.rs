//! Golden files pin the bytes of host and unified files: a change here is a change
//! of the file format.

use crate::support::Env;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

fn golden(name: &str) -> Vec<u8> {
    std::fs::read(format!("{GOLDEN}/{name}")).unwrap()
}

fn stamp_as(host: &str, now: &str, input: &str) -> Vec<u8> {
    let mut env = Env::new();
    env.host = host.into();
    env.now = Some(now.into());
    env.write("in", golden(input));
    let r = env.stamp("in", "out.json");
    assert_eq!(r.code, 0, "{r:?}");
    std::fs::read(env.path("out.json")).unwrap()
}

#[test]
fn host_file_bytes_from_mcp_json_lines() {
    let out = stamp_as("laptop", "2026-11-21T22:12:04.123456Z", "laptop.jsonl");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        String::from_utf8(golden("memory-laptop.json")).unwrap()
    );
}

#[test]
fn host_file_bytes_from_a_json_array() {
    let out = stamp_as("desktop", "2026-11-21T22:15:00Z", "desktop.json");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        String::from_utf8(golden("memory-desktop.json")).unwrap()
    );
}

#[test]
fn unified_file_bytes() {
    let env = Env::new();
    for name in ["memory-laptop.json", "memory-desktop.json"] {
        env.write(&format!("d/{name}"), golden(name));
    }
    assert_eq!(env.run(&["merge", "d"]).code, 0);
    assert_eq!(
        env.read("d/unified-memory.json"),
        String::from_utf8(golden("unified-memory.json")).unwrap()
    );
    // The golden folder itself verifies clean.
    assert_eq!(env.run(&["verify", GOLDEN]).code, 0);
}
