//! End to end with the real MCP memory server (`@modelcontextprotocol/server-memory`
//! from npm, installed into `tests/mcp` by `scripts/test`), driven over stdio
//! JSON-RPC as an agent drives it: hosts write their graphs through it, back up,
//! and a third host restores and reads the folded graph back through it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

use crate::common::git::*;

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mcp/node_modules/@modelcontextprotocol/server-memory/dist/index.js"
);

/// One running memory server on one memory file.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    fn start(memory: &Path) -> Server {
        assert!(
            Path::new(SERVER).exists(),
            "the MCP memory server is not installed: run scripts/test, or `npm ci --prefix tests/mcp`"
        );
        let mut child = Command::new("node")
            .arg(SERVER)
            .env("MEMORY_FILE_PATH", memory)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Server {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        s.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "memory-backup-tests", "version": "1"}
            }),
        );
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a request and returns its result; panics on an error answer.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the memory server closed its output");
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        assert_ne!(r["isError"], true, "{tool}: {r}");
        r
    }

    /// The graph as the server reads it from its file.
    fn read_graph(&mut self) -> Value {
        self.call("read_graph", json!({}))["structuredContent"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn entity(name: &str, kind: &str, observations: &[&str]) -> Value {
    json!({"name": name, "entityType": kind, "observations": observations})
}

fn relation(from: &str, to: &str, kind: &str) -> Value {
    json!({"from": from, "to": to, "relationType": kind})
}

/// An entity as (name, entityType, observations).
type Entity = (String, String, Vec<String>);

/// Entities by name and relations as `from relationType to`, sorted.
fn summary(graph: &Value) -> (Vec<Entity>, Vec<String>) {
    let mut entities: Vec<Entity> = graph["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let obs = e["observations"].as_array().unwrap();
            (
                e["name"].as_str().unwrap().to_string(),
                e["entityType"].as_str().unwrap().to_string(),
                obs.iter()
                    .map(|o| o.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    entities.sort();
    let mut relations: Vec<String> = graph["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {}", r["from"], r["relationType"], r["to"]))
        .collect();
    relations.sort();
    (entities, relations)
}

/// Lines of a host file that are not in the other, commas at line ends aside.
fn lines_only_in(a: &str, b: &str) -> Vec<String> {
    let trim = |s: &str| s.trim_end_matches(',').to_string();
    let theirs: Vec<String> = b.lines().map(trim).collect();
    a.lines()
        .map(trim)
        .filter(|l| !theirs.contains(l))
        .collect()
}

struct Hosts {
    env: Env,
    remote: PathBuf,
    url: String,
}

/// Hosts a (on Jan 1) and b (on Feb 1) write their graphs through their own
/// servers, each with an entity Ada of different observations, and back up.
fn two_hosts_write_and_back_up() -> Hosts {
    let env = Env::new();
    let remote = env.bare("remote.git");
    let url = remote.display().to_string();
    let (ma, mb) = (env.path("a.jsonl"), env.path("b.jsonl"));
    {
        let mut a = Server::start(&ma);
        a.call(
            "create_entities",
            json!({"entities": [entity("Ada", "person", &["likes tea"]), entity("Rust", "language", &["memory safe"])]}),
        );
        a.call(
            "create_relations",
            json!({"relations": [relation("Ada", "Rust", "uses")]}),
        );
    }
    {
        let mut b = Server::start(&mb);
        b.call(
            "create_entities",
            json!({"entities": [entity("Ada", "engineer", &["writes Rust", "likes tea"]), entity("Babbage", "person", &[])]}),
        );
        b.call(
            "create_relations",
            json!({"relations": [relation("Babbage", "Ada", "works with")]}),
        );
    }
    for (repo, host, memory, now) in [
        ("ra", "a", &ma, "2026-01-01T10:00:00Z"),
        ("rb", "b", &mb, "2026-02-01T10:00:00Z"),
    ] {
        assert_code(&env.run_at(repo, host, now, &["init", "--remote", &url]), 0);
        let out = env.run_at(
            repo,
            host,
            now,
            &["backup", "--memory", memory.to_str().unwrap()],
        );
        assert_code(&out, 0);
    }
    Hosts { env, remote, url }
}

#[test]
fn two_hosts_graphs_come_back_as_one_graph_through_the_real_server() {
    let Hosts { env, remote, url } = two_hosts_write_and_back_up();

    // a adds an observation: the server rewrites its file, with no metadata.
    let before = env.show(&remote, "memory-a.json");
    {
        let mut a = Server::start(&env.path("a.jsonl"));
        a.call(
            "add_observations",
            json!({"observations": [{"entityName": "Rust", "contents": ["fast"]}]}),
        );
    }
    let out = env.run_at(
        "ra",
        "a",
        "2026-03-01T10:00:00Z",
        &["backup", "--memory", env.path("a.jsonl").to_str().unwrap()],
    );
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("0 new, 1 changed"),
        "{}",
        stdout(&out)
    );
    // One entry's line changed; it moved to the end (files are ordered by time).
    let after = env.show(&remote, "memory-a.json");
    let (gone, came) = (
        lines_only_in(&before, &after),
        lines_only_in(&after, &before),
    );
    assert_eq!((gone.len(), came.len()), (1, 1), "{before}\n{after}");
    let (old, new): (Value, Value) = (
        serde_json::from_str(&gone[0]).unwrap(),
        serde_json::from_str(&came[0]).unwrap(),
    );
    assert_eq!(old["name"], "Rust");
    assert_eq!(new["observations"], json!(["memory safe", "fast"]));
    assert_eq!(
        old["_crdt_metadata"]["unique_id"],
        new["_crdt_metadata"]["unique_id"]
    );
    assert_eq!(new["_crdt_metadata"]["version"], 2);

    // A third host restores into a new file and reads it through the server.
    assert_code(&env.run("rc", "c", &["init", "--remote", &url]), 0);
    // Into a folder that does not exist yet, as on a new machine.
    let restored = env.path("c/mcp/memory.jsonl");
    let out = env
        .mb("rc", "c")
        .env("MEMORY_FILE_PATH", &restored)
        .arg("restore")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let graph = Server::start(&restored).read_graph();
    let (entities, relations) = summary(&graph);
    assert_eq!(
        entities,
        [
            (
                "Ada".to_string(),
                "engineer".to_string(),
                vec!["likes tea".to_string(), "writes Rust".to_string()]
            ),
            ("Babbage".into(), "person".into(), vec![]),
            (
                "Rust".into(),
                "language".into(),
                vec!["memory safe".into(), "fast".into()]
            ),
        ]
    );
    assert_eq!(
        relations,
        [r#""Ada" "uses" "Rust""#, r#""Babbage" "works with" "Ada""#]
    );

    // The server's own rewrite of the restored file changes no byte of it.
    let text = std::fs::read_to_string(&restored).unwrap();
    {
        let mut c = Server::start(&restored);
        c.call("create_relations", json!({"relations": []}));
    }
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        text.trim_end_matches('\n')
    );
}

#[test]
fn restore_at_a_commit_or_a_date_gives_the_earlier_graph_and_keeps_a_bak() {
    let Hosts { env, url, .. } = two_hosts_write_and_back_up();
    let first = env
        .git_in(&env.path("ra"), &["rev-parse", "main"])
        .trim()
        .to_string();
    assert_code(&env.run("rc", "c", &["init", "--remote", &url]), 0);
    let file = env.path("c.jsonl");
    // The host's server has a graph of its own.
    {
        let mut c = Server::start(&file);
        c.call(
            "create_entities",
            json!({"entities": [entity("Mine", "note", &["local only"])]}),
        );
    }
    let mine = std::fs::read_to_string(&file).unwrap();
    for at in [first.as_str(), "2026-01-15"] {
        let out = env.run(
            "rc",
            "c",
            &["restore", "--at", at, "--out", file.to_str().unwrap()],
        );
        assert_code(&out, 0);
        let graph = Server::start(&file).read_graph();
        let (entities, relations) = summary(&graph);
        let names: Vec<&str> = entities.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["Ada", "Rust"], "--at {at}");
        assert_eq!(entities[0].2, ["likes tea"], "--at {at}");
        assert_eq!(relations, [r#""Ada" "uses" "Rust""#], "--at {at}");
    }
    // The first restore kept the host's own graph in a .bak.
    let bak = env.path("c.jsonl.20261121T100000Z.bak");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), mine);
    let graph = Server::start(&bak).read_graph();
    assert_eq!(summary(&graph).0[0].0, "Mine");
}
