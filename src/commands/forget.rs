//! `forget IDENT...` and `forget --pattern REGEX` (section 12): a tombstone for
//! each identity on this host, covering every host's versions this host has seen,
//! committed and pushed; `sync` then removes the identities from every memory
//! file. A forgotten entity takes the relations that name it along, as the MCP
//! server's `delete_entities` does. Git history keeps what it held: the README
//! says how to purge it.

use crate::cli::{BackupArgs, ForgetArgs, IdArgs};
use crate::commands::common;
use crate::context::Context;
use crate::core::json;
use crate::error::{Error, Result};
use crate::output::Report;

pub fn cmd_forget(args: &ForgetArgs, cx: &Context, report: &mut Report) -> Result<()> {
    if args.idents.is_empty() && args.pattern.is_none() {
        return Err(Error::Usage(
            "forget what? give identities (an id, an entity's name, `entity:NAME`) or --pattern REGEX"
                .into(),
        ));
    }
    let pattern = match &args.pattern {
        Some(p) => {
            Some(regex::Regex::new(p).map_err(|e| Error::Usage(format!("--pattern {p:?}: {e}")))?)
        }
        None => None,
    };
    let wanted = Matcher {
        idents: &args.idents,
        pattern: pattern.as_ref(),
    };
    let matches = |ident: &str| wanted.matches(ident);
    let backup = BackupArgs {
        memory: args.memory.clone(),
        no_push: false,
        max_elapsed: args.max_elapsed,
        // Deleting on purpose: the guard is for a memory file that lost entries.
        allow_mass_delete: false,
        allow_secret: Vec::new(),
        id: IdArgs {
            id_field: args.id.id_field.clone(),
        },
    };
    let mut outcome = common::run_backup(
        &backup,
        common::max_elapsed(backup.max_elapsed)?,
        cx,
        report,
        Some(&matches),
        false,
        true,
    )?;
    let forgotten: Vec<String> = outcome
        .prepared
        .stamped
        .deleted_idents
        .iter()
        .filter(|i| matches(i))
        .cloned()
        .collect();
    common::report_backup(&outcome, report);
    report.set("forgotten", forgotten.clone());
    let rest = report.summary.clone();
    report.summary = if forgotten.is_empty() {
        format!("forget: no identity of the backup matches; {rest}")
    } else {
        format!(
            "forgot {}: {}; run `memory-backup sync` on each host to remove them from its memory file; \
             git history still holds them (see the README to purge it); {rest}",
            common::plural(forgotten.len(), "identity", "identities"),
            forgotten.join(", ")
        )
    };
    match outcome.not_pushed.take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What `forget` was asked to forget.
struct Matcher<'a> {
    idents: &'a [String],
    pattern: Option<&'a regex::Regex>,
}

impl Matcher<'_> {
    fn matches(&self, ident: &str) -> bool {
        let named = |arg: &str| {
            ident == arg
                || ident.strip_prefix("entity:") == Some(arg)
                || ident.strip_prefix("entity:") == arg.strip_prefix("entity:")
                    && arg.starts_with("entity:")
        };
        if self.idents.iter().any(|a| named(a)) || self.pattern.is_some_and(|p| p.is_match(ident)) {
            return true;
        }
        // A relation that names a forgotten entity goes with it.
        relation_ends(ident).is_some_and(|(from, to)| {
            [from, to].iter().any(|end| {
                let entity = format!("entity:{end}");
                self.idents.iter().any(|a| a == end || *a == entity)
                    || self.pattern.is_some_and(|p| p.is_match(&entity))
            })
        })
    }
}

/// The `from` and `to` of a relation's identity, `relation:[from,type,to]`.
fn relation_ends(ident: &str) -> Option<(String, String)> {
    let list = ident.strip_prefix("relation:")?;
    let items = crate::core::entry::json_items(list.as_bytes())?;
    let [from, _, to] = items.as_slice() else {
        return None;
    };
    let text = |b: &[u8]| (b.first() == Some(&b'"')).then(|| json::decode_str(b).into_owned());
    Some((text(from)?, text(to)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_patterns_and_relations_of_forgotten_entities_match() {
        let idents = vec!["E4".to_string(), "n1".to_string()];
        let m = Matcher {
            idents: &idents,
            pattern: None,
        };
        assert!(m.matches("entity:E4"));
        assert!(m.matches("n1"));
        assert!(!m.matches("entity:E40"));
        assert!(m.matches(r#"relation:["A","knows","E4"]"#));
        assert!(!m.matches(r#"relation:["A","knows","B"]"#));
        let re = regex::Regex::new("^entity:secret-").unwrap();
        let p = Matcher {
            idents: &[],
            pattern: Some(&re),
        };
        assert!(p.matches("entity:secret-db"));
        assert!(p.matches(r#"relation:["secret-db","in","prod"]"#));
        assert!(!p.matches("entity:public"));
    }
}
