//! The real MCP memory server (`@modelcontextprotocol/server-memory` from npm,
//! installed into `tests/mcp` by `scripts/test`), driven over stdio JSON-RPC as an
//! agent drives it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

pub const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/mcp/node_modules/@modelcontextprotocol/server-memory/dist/index.js"
);

/// One running memory server on one memory file.
pub struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

impl Server {
    pub fn start(memory: &Path) -> Server {
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

    pub fn send(&mut self, message: &Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a request and returns its result; panics on an error answer.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
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

    pub fn call(&mut self, tool: &str, arguments: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        assert_ne!(r["isError"], true, "{tool}: {r}");
        r
    }

    /// The graph as the server reads it from its file.
    pub fn read_graph(&mut self) -> Value {
        self.call("read_graph", json!({}))["structuredContent"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn entity(name: &str, kind: &str, observations: &[&str]) -> Value {
    json!({"name": name, "entityType": kind, "observations": observations})
}

pub fn relation(from: &str, to: &str, kind: &str) -> Value {
    json!({"from": from, "to": to, "relationType": kind})
}

/// An entity as (name, entityType, observations).
pub type Entity = (String, String, Vec<String>);

/// Entities by name and relations as `from relationType to`, sorted.
pub fn summary(graph: &Value) -> (Vec<Entity>, Vec<String>) {
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
