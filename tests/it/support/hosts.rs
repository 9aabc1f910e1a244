//! Hosts of a test: each with its backup repository, its memory file and, where
//! the test wants it, the real MCP memory server running on that file.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};

use super::mcp::{Server, entity};
use super::{Env, assert_code};

pub struct Host<'e> {
    pub env: &'e Env,
    pub name: String,
    pub repo: String,
    pub memory: PathBuf,
    pub server: Option<Server>,
    /// `MEMORY_BACKUP_NOW` of this host's runs (`None`: the fixture's).
    pub now: Option<String>,
}

impl<'e> Host<'e> {
    /// A host whose memory file is `<name>.jsonl`, empty, with no server.
    pub fn new(env: &'e Env, name: &str) -> Host<'e> {
        let memory = env.path(&format!("{name}.jsonl"));
        std::fs::write(&memory, "").unwrap();
        Host {
            env,
            name: name.to_string(),
            repo: format!("repo-{name}"),
            memory,
            server: None,
            now: None,
        }
    }

    /// The same, with the MCP memory server running on its memory file.
    pub fn with_server(env: &'e Env, name: &str) -> Host<'e> {
        let mut h = Host::new(env, name);
        h.server = Some(Server::start(&h.memory));
        h
    }

    /// `memory-backup ARGS` as this host, its memory file configured.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.env.mb(&self.repo, &self.name);
        cmd.env("MEMORY_BACKUP_MEMORY", &self.memory);
        if let Some(now) = &self.now {
            cmd.env("MEMORY_BACKUP_NOW", now);
        }
        cmd.args(args).output().expect("run memory-backup")
    }

    /// Runs `args` and checks the exit code.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_code(&out, 0);
        out
    }

    pub fn init(&self, url: &str) {
        self.ok(&["init", "--remote", url]);
    }

    /// A tool call on this host's MCP server.
    pub fn call(&mut self, tool: &str, arguments: Value) -> Value {
        self.server
            .as_mut()
            .expect("a server")
            .call(tool, arguments)
    }

    pub fn create(&mut self, name: &str, observations: &[&str]) {
        self.call(
            "create_entities",
            json!({"entities": [entity(name, "thing", observations)]}),
        );
    }

    pub fn observe(&mut self, name: &str, observation: &str) {
        self.call(
            "add_observations",
            json!({"observations": [{"entityName": name, "contents": [observation]}]}),
        );
    }

    pub fn unobserve(&mut self, name: &str, observation: &str) {
        self.call(
            "delete_observations",
            json!({"deletions": [{"entityName": name, "observations": [observation]}]}),
        );
    }

    pub fn delete(&mut self, name: &str) {
        self.call("delete_entities", json!({"entityNames": [name]}));
    }

    /// The graph as this host's server reads it from its file.
    pub fn graph(&mut self) -> Value {
        self.server.as_mut().expect("a server").read_graph()
    }

    /// The memory file's text.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.memory).unwrap()
    }
}

/// The entity names and (sorted) observations of a memory file's text.
pub fn entities_of(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).expect("a JSON line");
            (v["type"] == "entity").then(|| {
                let mut obs: Vec<String> = v["observations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o.as_str().unwrap().to_string())
                    .collect();
                obs.sort();
                (v["name"].as_str().unwrap().to_string(), obs)
            })
        })
        .collect();
    out.sort();
    out
}
