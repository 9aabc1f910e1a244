//! Claude Code: hooks merged into `~/.claude/settings.json`, every other
//! setting and hook kept in place, and what the hook does when Claude Code runs
//! it: `SessionStart` syncs, memory tool calls and `SessionEnd` back up.

use serde_json::Value;

use super::json::Json;

pub const SETTINGS_FILE: &str = "settings.json";
pub const SESSION_START: &str = "SessionStart";
pub const POST_TOOL_USE: &str = "PostToolUse";
pub const SESSION_END: &str = "SessionEnd";
/// The subcommand that installed hooks run.
pub const HOOK_ARGS: [&str; 3] = ["-q", "hook", "claude-code"];
/// What the installed command ends with: how an entry is known as this tool's.
const HOOK_TAIL: &str = "hook claude-code";
/// The script that earlier versions' example settings ran: replaced on install,
/// since it backed up whatever `memory.json` the project folder held.
const OLD_HOOK: &str = "memory-backup-hook";
/// Tools of the memory server that change nothing.
const READ_ONLY_TOOLS: [&str; 3] = ["read_", "search_", "open_"];

/// What a hook run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Backup,
    Sync,
}

/// The action for the hook's input (the JSON Claude Code writes on stdin).
pub fn action(input: &Value) -> Action {
    match input.get("hook_event_name").and_then(Value::as_str) {
        Some(SESSION_START) => Action::Sync,
        Some(SESSION_END) => Action::Backup,
        Some(POST_TOOL_USE) => {
            let tool = input.get("tool_name").and_then(Value::as_str).unwrap_or("");
            let name = tool.rsplit("__").next().unwrap_or(tool);
            if READ_ONLY_TOOLS.iter().any(|p| name.starts_with(p)) {
                Action::Nothing
            } else {
                Action::Backup
            }
        }
        _ => Action::Nothing,
    }
}

/// Claude Code's name of a server inside tool names (`mcp__<name>__<tool>`):
/// characters other than letters, digits, `_` and `-` become `_`.
fn tool_name_part(server: &str) -> String {
    server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The `PostToolUse` matcher for every tool of these servers.
pub fn matcher(servers: &[String]) -> String {
    let mut names: Vec<String> = servers.iter().map(|s| tool_name_part(s)).collect();
    names.sort();
    names.dedup();
    match names.as_slice() {
        [one] => format!("mcp__{one}__.*"),
        many => format!("mcp__({})__.*", many.join("|")),
    }
}

/// Whether a hook entry (`{"type": "command", "command": ...}`) is this tool's.
fn is_ours(hook: &Json) -> bool {
    let Some(command) = hook.get("command").and_then(Json::as_str) else {
        return false;
    };
    let command = command.trim();
    let first = command.split_whitespace().next().unwrap_or("");
    (command.ends_with(HOOK_TAIL) && command.contains("memory-backup"))
        || first.rsplit('/').next() == Some(OLD_HOOK)
}

/// The groups to install: event, and the matcher group.
fn groups(command: &str, matcher: &str) -> Vec<(&'static str, Json)> {
    let group = |matcher: Option<&str>| {
        let mut g = Json::object();
        if let Some(m) = matcher {
            g.set("matcher", Json::str(m));
        }
        let mut hook = Json::object();
        hook.set("type", Json::str("command"));
        hook.set("command", Json::str(command));
        g.set("hooks", Json::Array(vec![hook]));
        g
    };
    vec![
        (SESSION_START, group(None)),
        (POST_TOOL_USE, group(Some(matcher))),
        (SESSION_END, group(None)),
    ]
}

/// Merges the hooks into `settings`; false when they were there already. A
/// `hooks` that is not an object, or an event that is not a list, is left
/// alone and refused: it is not this tool's to repair.
pub fn install(settings: &mut Json, command: &str, matcher: &str) -> Result<bool, String> {
    check_shape(settings)?;
    let mut changed = false;
    let hooks = settings.entry_object("hooks");
    for (event, group) in groups(command, matcher) {
        if !matches!(hooks.get(event), Some(Json::Array(_))) {
            hooks.set(event, Json::Array(Vec::new()));
        }
        let Some(Json::Array(list)) = hooks.get_mut(event) else {
            unreachable!("just made a list");
        };
        let ours: Vec<&Json> = list
            .iter()
            .filter(|g| group_hooks(g).iter().any(is_ours))
            .collect();
        if ours.len() == 1 && *ours[0] == group {
            continue;
        }
        remove_ours(list);
        list.push(group);
        changed = true;
    }
    Ok(changed)
}

/// Removes this tool's hooks, and the groups and events left empty by that;
/// how many hook entries went.
pub fn uninstall(settings: &mut Json) -> Result<usize, String> {
    check_shape(settings)?;
    let Some(Json::Object(events)) = settings.get_mut("hooks") else {
        return Ok(0);
    };
    let mut removed = 0;
    for (_, list) in events.iter_mut() {
        if let Json::Array(list) = list {
            removed += remove_ours(list);
        }
    }
    if removed == 0 {
        return Ok(0);
    }
    events.retain(|(_, list)| !matches!(list, Json::Array(l) if l.is_empty()));
    if events.is_empty() {
        settings.remove("hooks");
    }
    Ok(removed)
}

fn check_shape(settings: &Json) -> Result<(), String> {
    if !matches!(settings, Json::Object(_)) {
        return Err("not a JSON object".into());
    }
    match settings.get("hooks") {
        None | Some(Json::Object(_)) => Ok(()),
        Some(_) => Err("`hooks` is not an object".into()),
    }
}

fn group_hooks(group: &Json) -> &[Json] {
    match group.get("hooks") {
        Some(Json::Array(h)) => h,
        _ => &[],
    }
}

/// Removes this tool's entries from an event's groups, and the groups they
/// leave empty; how many went.
fn remove_ours(list: &mut Vec<Json>) -> usize {
    let mut removed = 0;
    list.retain_mut(|group| {
        let Some(Json::Array(hooks)) = group.get_mut("hooks") else {
            return true;
        };
        let before = hooks.len();
        hooks.retain(|h| !is_ours(h));
        removed += before - hooks.len();
        !(hooks.is_empty() && before > 0)
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CMD: &str = "/opt/memory-backup --config /home/me/.config/memory-backup/config.toml -q hook claude-code";

    fn parse(text: &str) -> Json {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn install_keeps_other_hooks_and_settings_and_uninstall_restores_them() {
        let original = parse(
            r#"{"model": "opus", "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [{"type": "command", "command": "fmt"}]}],
                "Stop": [{"hooks": [{"type": "command", "command": "notify"}]}]}, "env": {"A": "1"}}"#,
        );
        let mut s = original.clone();
        assert_eq!(install(&mut s, CMD, "mcp__memory__.*"), Ok(true));
        let text = s.to_pretty();
        assert!(text.find("\"model\"") < text.find("\"hooks\""), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "Edit");
        assert_eq!(v["hooks"]["PostToolUse"][1]["matcher"], "mcp__memory__.*");
        assert_eq!(v["hooks"]["SessionStart"][0]["hooks"][0]["command"], CMD);
        assert_eq!(v["hooks"]["Stop"][0]["hooks"][0]["command"], "notify");
        assert_eq!(install(&mut s, CMD, "mcp__memory__.*"), Ok(false));
        assert_eq!(s.to_pretty(), text);
        assert_eq!(uninstall(&mut s), Ok(3));
        assert_eq!(s, original);
    }

    #[test]
    fn a_new_binary_path_or_matcher_replaces_the_old_entry_and_the_old_script_goes() {
        let mut s = parse(
            r#"{"hooks": {"SessionEnd": [{"hooks": [{"type": "command", "command": "memory-backup-hook"}]}]}}"#,
        );
        install(&mut s, CMD, "mcp__memory__.*").unwrap();
        install(
            &mut s,
            "/new/memory-backup -q hook claude-code",
            "mcp__mem__.*",
        )
        .unwrap();
        let v: Value = serde_json::from_str(&s.to_pretty()).unwrap();
        for event in ["SessionStart", "PostToolUse", "SessionEnd"] {
            assert_eq!(v["hooks"][event].as_array().unwrap().len(), 1, "{v}");
        }
        assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "mcp__mem__.*");
    }

    #[test]
    fn matchers_name_each_server_as_claude_code_names_its_tools() {
        assert_eq!(matcher(&["memory".into()]), "mcp__memory__.*");
        assert_eq!(
            matcher(&["my-mem".into(), "team memory".into()]),
            "mcp__(my-mem|team_memory)__.*"
        );
    }

    #[test]
    fn memory_changes_and_session_ends_back_up_and_session_starts_sync() {
        let a = |v: Value| action(&v);
        assert_eq!(
            a(json!({"hook_event_name": "SessionStart", "source": "startup"})),
            Action::Sync
        );
        assert_eq!(a(json!({"hook_event_name": "SessionEnd"})), Action::Backup);
        let tool = |t: &str| a(json!({"hook_event_name": "PostToolUse", "tool_name": t}));
        assert_eq!(tool("mcp__memory__create_entities"), Action::Backup);
        assert_eq!(tool("mcp__memory__delete_observations"), Action::Backup);
        assert_eq!(tool("mcp__memory__read_graph"), Action::Nothing);
        assert_eq!(tool("mcp__memory__search_nodes"), Action::Nothing);
        assert_eq!(a(json!({"hook_event_name": "Stop"})), Action::Nothing);
        assert_eq!(a(json!(null)), Action::Nothing);
    }
}
