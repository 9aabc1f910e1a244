//! Where the MCP memory server keeps its file, read from the MCP configs its
//! users write: Claude Code (`~/.claude.json`, user and project entries, and a
//! project's `.mcp.json`), Claude Desktop and Cursor. A server is one whose
//! `command` or `args` run `server-memory`; its file is `env.MEMORY_FILE_PATH`,
//! resolved as the server resolves it (a relative path is relative to the
//! package's `dist` folder, not to the current one), else the server's default,
//! `dist/memory.jsonl`, inside its package (for `npx`, in the npx cache).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What names the server package in a command line.
pub const SERVER_MARK: &str = "server-memory";
/// The server's program name once installed.
pub const SERVER_BIN: &str = "mcp-server-memory";
/// The server's file in its `dist` folder when `MEMORY_FILE_PATH` is unset.
pub const DEFAULT_FILE: &str = "memory.jsonl";
/// The server's variable for its file.
pub const FILE_VAR: &str = "MEMORY_FILE_PATH";
/// The package's `dist` folder inside a `node_modules` tree.
const PACKAGE_DIST: &str = "node_modules/@modelcontextprotocol/server-memory/dist";

/// Where to look: the home folder, the current (project) folder, and the
/// folders that environment variables move.
#[derive(Debug, Clone)]
pub struct Places {
    pub home: PathBuf,
    pub cwd: PathBuf,
    /// `$CLAUDE_CONFIG_DIR`, else `~/.claude`.
    pub claude_dir: PathBuf,
    /// `$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`.
    pub claude_json: PathBuf,
    /// `$XDG_CONFIG_HOME`, else `~/.config`.
    pub xdg_config: PathBuf,
    /// `$npm_config_cache`, else `~/.npm`.
    pub npm_cache: PathBuf,
}

impl Places {
    pub fn from_env(home: &Path) -> Places {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let claude_config = var("CLAUDE_CONFIG_DIR");
        Places {
            home: home.to_path_buf(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            claude_dir: claude_config
                .clone()
                .unwrap_or_else(|| home.join(".claude")),
            claude_json: claude_config
                .map_or_else(|| home.join(".claude.json"), |d| d.join(".claude.json")),
            xdg_config: var("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config")),
            npm_cache: var("npm_config_cache").unwrap_or_else(|| home.join(".npm")),
        }
    }

    /// The MCP config files to read, each once.
    fn configs(&self) -> Vec<PathBuf> {
        let mut all = vec![
            self.claude_json.clone(),
            self.cwd.join(".mcp.json"),
            self.xdg_config.join("Claude/claude_desktop_config.json"),
            self.home.join(".config/Claude/claude_desktop_config.json"),
            self.home
                .join("Library/Application Support/Claude/claude_desktop_config.json"),
            self.home.join(".cursor/mcp.json"),
            self.cwd.join(".cursor/mcp.json"),
        ];
        let mut seen = BTreeSet::new();
        all.retain(|p| seen.insert(p.clone()));
        all
    }
}

/// A memory server that a config names, and the file it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The MCP config file, and the scope in it (`user`, `project /p`).
    pub config: PathBuf,
    pub scope: Option<String>,
    /// The server's name as configured: its tools are `mcp__<name>__*`.
    pub name: String,
    /// Its memory file, or why it could not be told.
    pub file: Result<PathBuf, String>,
    /// How the file was told: `MEMORY_FILE_PATH`, or the server's default.
    pub how: String,
}

impl Found {
    /// Why its file cannot be told; empty when it can.
    pub fn why(&self) -> &str {
        self.file.as_ref().err().map_or("", String::as_str)
    }

    /// `server "memory" in /home/me/.claude.json (project /p)`.
    pub fn describe(&self) -> String {
        format!(
            "server {:?} in {}{}",
            self.name,
            self.config.display(),
            self.scope
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        )
    }
}

/// Every memory server in the MCP configs, and a warning for each config that
/// does not parse.
pub fn find(places: &Places) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    for config in places.configs() {
        let Ok(text) = std::fs::read(&config) else {
            continue;
        };
        let v: Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!(
                    "{}: not JSON ({e}); its MCP servers were not looked at",
                    config.display()
                ));
                continue;
            }
        };
        let is_claude_json = config == places.claude_json;
        let scopes = servers_of(&v, is_claude_json);
        for (scope, servers) in scopes {
            let Some(servers) = servers.as_object() else {
                continue;
            };
            for (name, server) in servers {
                if let Some(file) = memory_file_of(server, places) {
                    found.push(Found {
                        config: config.clone(),
                        scope: scope.clone(),
                        name: name.clone(),
                        file: file.0,
                        how: file.1,
                    });
                }
            }
        }
    }
    (found, warnings)
}

/// The `mcpServers` objects of a config and their scopes: in `~/.claude.json`
/// the user's and each project's.
fn servers_of(v: &Value, is_claude_json: bool) -> Vec<(Option<String>, &Value)> {
    let mut out = Vec::new();
    if let Some(s) = v.get("mcpServers") {
        out.push((is_claude_json.then(|| "user".to_string()), s));
    }
    if is_claude_json && let Some(projects) = v.get("projects").and_then(Value::as_object) {
        for (path, project) in projects {
            if let Some(s) = project.get("mcpServers") {
                out.push((Some(format!("project {path}")), s));
            }
        }
    }
    out
}

type Told = (Result<PathBuf, String>, String);

/// The file of a server entry, when the entry runs the memory server.
fn memory_file_of(server: &Value, places: &Places) -> Option<Told> {
    let command = server.get("command").and_then(Value::as_str).map(expand);
    let args: Vec<String> = server
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(expand).collect())
        .unwrap_or_default();
    let words: Vec<&str> = command
        .iter()
        .map(String::as_str)
        .chain(args.iter().map(String::as_str))
        .collect();
    if !words.iter().any(|w| w.contains(SERVER_MARK)) {
        return None;
    }
    let set = server
        .get("env")
        .and_then(|e| e.get(FILE_VAR))
        .and_then(Value::as_str)
        .map(expand)
        .filter(|p| !p.is_empty());
    if let Some(p) = &set
        && Path::new(p).is_absolute()
    {
        return Some((Ok(PathBuf::from(p)), format!("its env.{FILE_VAR}")));
    }
    let dists = match dist_folders(&words, places) {
        Ok(d) => d,
        Err(why) => {
            let what = match &set {
                Some(p) => format!(
                    "its {FILE_VAR} {p:?} is relative to the server's package folder, and {why}"
                ),
                None => format!("it keeps its file in its package folder, and {why}"),
            };
            return Some((Err(what), String::new()));
        }
    };
    let rel = set.clone().unwrap_or_else(|| DEFAULT_FILE.to_string());
    let how = match &set {
        Some(p) => format!("its env.{FILE_VAR} {p:?}, relative to the server's package"),
        None => format!("the server's default, {DEFAULT_FILE} in its package"),
    };
    // Several npx caches: the one whose file exists, if only one has it.
    let files: Vec<PathBuf> = dists.iter().map(|d| d.join(&rel)).collect();
    let existing: Vec<PathBuf> = files.iter().filter(|f| f.exists()).cloned().collect();
    let file = match (files.as_slice(), existing.as_slice()) {
        ([one], _) | (_, [one]) => Ok(one.clone()),
        _ => Err(format!(
            "several copies of the server hold a file: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    Some((file, how))
}

/// The server package's `dist` folders: from a path to its script, from its
/// program on PATH, or from the npx cache.
fn dist_folders(words: &[&str], places: &Places) -> Result<Vec<PathBuf>, String> {
    for w in words {
        if w.contains(SERVER_MARK) && w.contains('/') && !w.starts_with('@') {
            let p = Path::new(w);
            let p = if p.is_relative() {
                places.cwd.join(p)
            } else {
                p.to_path_buf()
            };
            if let Ok(real) = std::fs::canonicalize(&p) {
                return Ok(vec![if real.is_dir() {
                    real.join("dist")
                } else {
                    crate::store::atomic::parent_of(&real).to_path_buf()
                }]);
            }
        }
    }
    if words.contains(&SERVER_BIN)
        && let Some(real) = super::which(SERVER_BIN).and_then(|p| std::fs::canonicalize(p).ok())
    {
        return Ok(vec![crate::store::atomic::parent_of(&real).to_path_buf()]);
    }
    let npx = places.npm_cache.join("_npx");
    let mut dists: Vec<PathBuf> = std::fs::read_dir(&npx)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(PACKAGE_DIST))
        .filter(|d| d.is_dir())
        .collect();
    dists.sort();
    if dists.is_empty() {
        return Err(format!(
            "the package was not found (looked in {}/*/{PACKAGE_DIST}: has the server run once?)",
            npx.display()
        ));
    }
    Ok(dists)
}

/// `${VAR}`, `${VAR:-default}` and `${env:VAR}`, as Claude Code and Cursor
/// expand them in MCP configs.
fn expand(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            break;
        };
        let inner = &rest[at + 2..at + end];
        let inner = inner.strip_prefix("env:").unwrap_or(inner);
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {}
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places(dir: &Path) -> Places {
        Places {
            home: dir.join("home"),
            cwd: dir.join("project"),
            claude_dir: dir.join("home/.claude"),
            claude_json: dir.join("home/.claude.json"),
            xdg_config: dir.join("home/.config"),
            npm_cache: dir.join("home/.npm"),
        }
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn claude_code_user_and_project_servers_are_found_by_their_command() {
        let dir = tempfile::tempdir().unwrap();
        let p = places(dir.path());
        write(
            &p.claude_json,
            r#"{"numStartups": 3,
                "mcpServers": {"my-mem": {"type": "stdio", "command": "npx",
                   "args": ["-y", "@modelcontextprotocol/server-memory"],
                   "env": {"MEMORY_FILE_PATH": "/data/memory.jsonl"}},
                 "other": {"command": "npx", "args": ["some-server"]}},
                "projects": {"/work/p": {"mcpServers": {"memory": {"command": "npx",
                   "args": ["@modelcontextprotocol/server-memory@latest"],
                   "env": {"MEMORY_FILE_PATH": "${HOME}/m.jsonl"}}}}}}"#,
        );
        let (found, warnings) = find(&p);
        assert!(warnings.is_empty());
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].name, "my-mem");
        assert_eq!(found[0].scope.as_deref(), Some("user"));
        assert_eq!(found[0].file, Ok(PathBuf::from("/data/memory.jsonl")));
        assert_eq!(found[1].scope.as_deref(), Some("project /work/p"));
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(found[1].file, Ok(PathBuf::from(format!("{home}/m.jsonl"))));
    }

    #[test]
    fn an_npx_server_keeps_its_file_in_the_npx_cache_and_relative_paths_are_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        let p = places(dir.path());
        write(
            &p.cwd.join(".mcp.json"),
            r#"{"mcpServers": {"memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"]}}}"#,
        );
        let (found, _) = find(&p);
        let why = found[0].file.clone().unwrap_err();
        assert!(why.contains("_npx"), "{why}");

        let dist = p.npm_cache.join("_npx/0a1b/").join(PACKAGE_DIST);
        write(&dist.join("index.js"), "");
        let (found, _) = find(&p);
        assert_eq!(found[0].file, Ok(dist.join(DEFAULT_FILE)));

        write(
            &p.home.join(".cursor/mcp.json"),
            r#"{"mcpServers": {"mem": {"command": "npx", "args": ["@modelcontextprotocol/server-memory"],
                "env": {"MEMORY_FILE_PATH": "graphs/g.jsonl"}}}}"#,
        );
        let (found, _) = find(&p);
        assert_eq!(found[1].name, "mem");
        assert_eq!(found[1].file, Ok(dist.join("graphs/g.jsonl")));
    }

    #[test]
    fn a_server_run_by_node_from_a_path_keeps_its_file_beside_its_script() {
        let dir = tempfile::tempdir().unwrap();
        let p = places(dir.path());
        let script = dir
            .path()
            .join("lib/node_modules/@modelcontextprotocol/server-memory/dist/index.js");
        write(&script, "");
        write(
            &p.xdg_config.join("Claude/claude_desktop_config.json"),
            &format!(
                r#"{{"mcpServers": {{"memory": {{"command": "node", "args": [{:?}]}}}}}}"#,
                script.display().to_string()
            ),
        );
        let (found, _) = find(&p);
        let dist = std::fs::canonicalize(script.parent().unwrap()).unwrap();
        assert_eq!(found[0].file, Ok(dist.join(DEFAULT_FILE)));
    }
}
