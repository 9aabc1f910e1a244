//! Secrets never leave the machine (SPEC section 15): a version that holds a
//! credential goes into no host file, commit or push; the memory file stays as
//! it is; `verify` finds what is already in the repository.
//!
//! The credentials are made at run time from a seeded generator: none is
//! written in this file, so no scanner of this repository takes them for real.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::hosts::Host;
use crate::support::*;

/// A fixed pseudo-random string of `n` characters of `alphabet`.
fn fake(alphabet: &str, n: usize, seed: u64) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chars[(z % chars.len() as u64) as usize]
        })
        .collect()
}

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const UPPER_DIGITS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// One credential per rule the scanner knows: (rule, the secret, the text of
/// an observation that holds it).
fn credentials() -> Vec<(&'static str, String, String)> {
    let key_lines: Vec<String> = (0..6).map(|i| fake(BASE64, 64, 100 + i)).collect();
    let pem = format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----",
        key_lines.join("\n")
    );
    let aws_id = format!("AKIA{}", fake(UPPER_DIGITS, 16, 1));
    let aws_secret = fake(BASE64, 40, 2);
    let jwt = format!(
        "{}.{}.{}",
        base64url(br#"{"alg":"HS256","typ":"JWT"}"#),
        base64url(br#"{"sub":"1234567890","name":"deploy"}"#),
        fake(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            43,
            3
        )
    );
    let one = |rule, secret: String, text: String| (rule, secret, text);
    vec![
        one(
            "private-key",
            key_lines[0].clone(),
            format!("the deploy key:\n{pem}"),
        ),
        one(
            "aws-access-key",
            aws_secret.clone(),
            format!("aws_access_key_id = {aws_id}\naws_secret_access_key = {aws_secret}"),
        ),
        {
            let t = format!("ghp_{}", fake(BASE62, 36, 4));
            one("github-token", t.clone(), format!("export GH_TOKEN={t}"))
        },
        {
            let t = format!("github_pat_{}_{}", fake(BASE62, 22, 5), fake(BASE62, 59, 6));
            one(
                "github-fine-grained-token",
                t.clone(),
                format!("token {t} for CI"),
            )
        },
        {
            let t = format!("glpat-{}", fake(BASE62, 20, 7));
            one("gitlab-token", t.clone(), format!("gitlab: {t}"))
        },
        {
            let t = format!("xoxb-123456789012-1234567890123-{}", fake(BASE62, 24, 8));
            one("slack-token", t.clone(), format!("slack bot {t}"))
        },
        {
            let t = format!("sk_live_{}", fake(BASE62, 24, 9));
            one("stripe-secret-key", t.clone(), format!("stripe key {t}"))
        },
        {
            let t = format!("AIza{}", fake(BASE62, 35, 10));
            one("google-api-key", t.clone(), format!("maps key {t} (prod)"))
        },
        one("jwt", jwt.clone(), format!("Authorization: Bearer {jwt}")),
        {
            let t = fake(BASE62, 24, 11);
            one("secret-assignment", t.clone(), format!("db password={t}"))
        },
    ]
}

fn entity(name: &str, observations: &[&str]) -> String {
    json!({"type": "entity", "name": name, "entityType": "note", "observations": observations})
        .to_string()
}

/// Every blob of every commit the bare repository `bare` holds.
fn every_blob(env: &Env, bare: &Path) -> Vec<String> {
    let dir = bare.display().to_string();
    let listed = env.git(&["--git-dir", &dir, "rev-list", "--objects", "--all"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let mut blobs = Vec::new();
    for line in stdout(&listed).lines() {
        let id = line.split(' ').next().unwrap();
        let kind = env.git(&["--git-dir", &dir, "cat-file", "-t", id]);
        if stdout(&kind).trim() == "blob" {
            let out = env.git(&["--git-dir", &dir, "cat-file", "blob", id]);
            blobs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
    }
    blobs
}

/// A secret as it may sit in a file: as it is, or with its newlines escaped.
fn appears(secret: &str, text: &str) -> bool {
    text.contains(secret) || text.contains(&secret.replace('\n', "\\n"))
}

#[test]
fn no_blob_of_any_commit_on_the_remote_holds_a_secret_and_every_other_entry_lands() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    let creds = credentials();
    let mut lines: Vec<String> = creds
        .iter()
        .map(|(rule, _, text)| entity(&format!("Cred-{rule}"), &[text, "kept with it"]))
        .collect();
    lines.push(entity("Ada", &["likes Rust"]));
    lines.push(entity("Grace", &["wrote a compiler"]));
    let text = lines.join("\n") + "\n";
    std::fs::write(&a.memory, &text).unwrap();

    let out = a.ok(&["backup"]);
    let said = stderr(&out);
    for (rule, secret, _) in &creds {
        let ident = format!("entity:Cred-{rule}");
        assert!(
            said.lines().any(|l| l.contains(&ident) && l.contains(rule)),
            "no warning names {ident} and {rule}: {said}"
        );
        assert!(!appears(secret, &said), "stderr shows the {rule} secret");
        assert!(!appears(secret, &stdout(&out)));
    }
    assert_eq!(std::fs::read_to_string(&a.memory).unwrap(), text);

    for blob in every_blob(&env, &bare) {
        for (rule, secret, _) in &creds {
            assert!(
                !appears(secret, &blob),
                "the {rule} secret is on the remote"
            );
        }
    }
    let unified = env.show(&bare, "unified-memory.json");
    assert!(unified.contains("likes Rust") && unified.contains("wrote a compiler"));
    assert!(!unified.contains("Cred-"), "{unified}");

    // status, its --json and last-run.json list what is held back.
    let status = a.ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    let held = v["last_run"]["held_back"].as_array().expect("held_back");
    assert_eq!(held.len(), creds.len(), "{v}");
    assert!(
        held.iter()
            .any(|h| h["ident"] == "entity:Cred-jwt" && h["rules"] == "jwt")
    );
    let shown = stdout(&a.ok(&["status"]));
    assert!(
        shown.contains("held back for secrets") && shown.contains("entity:Cred-gitlab-token"),
        "{shown}"
    );

    // Nothing new: the next run holds them back again, and says so again.
    let again = a.ok(&["backup"]);
    assert!(stderr(&again).contains("entity:Cred-slack-token"));
    for blob in every_blob(&env, &bare) {
        for (_, secret, _) in &creds {
            assert!(!appears(secret, &blob));
        }
    }
}

#[test]
fn text_that_only_mentions_secret_formats_is_not_held_back() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    let image = format!("data:image/png;base64,{}", fake(BASE64, 2048, 20));
    let notes = [
        "AWS access keys start with AKIA and are 20 characters long".to_string(),
        "a uuid: 3f2b8c1e-4d5a-4f6b-9c7d-0e1f2a3b4c5d".to_string(),
        "fixed in commit 9fceb02d0ae598e95dc970b74767f19372d61af8".to_string(),
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".to_string(),
        "GitHub tokens look like ghp_ followed by 36 characters".to_string(),
        "set password=changeme-in-production in the example config".to_string(),
        "the token field is named api_key".to_string(),
        "-----BEGIN PRIVATE KEY----- marks the start of a PEM key".to_string(),
        image,
    ];
    let lines: Vec<String> = notes
        .iter()
        .enumerate()
        .map(|(i, n)| entity(&format!("Note{i}"), &[n]))
        .collect();
    std::fs::write(&a.memory, lines.join("\n") + "\n").unwrap();
    let out = a.ok(&["backup"]);
    assert!(!stderr(&out).contains("secret"), "{}", stderr(&out));
    let unified = env.show(&bare, "unified-memory.json");
    for i in 0..notes.len() {
        assert!(
            unified.contains(&format!("\"Note{i}\"")),
            "Note{i} not backed up"
        );
    }
}

#[test]
fn a_held_version_leaves_the_previous_one_and_lands_once_its_secret_is_gone() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    let (_, token, with_token) = credentials().swap_remove(2);
    std::fs::write(&a.memory, entity("Deploy", &["uses the CI runner"]) + "\n").unwrap();
    a.ok(&["backup"]);
    let first = env.show(&bare, "memory-a.json");

    // An edit that adds a token: held back, the backed-up version stays.
    let edited = entity("Deploy", &["uses the CI runner", &with_token]) + "\n";
    std::fs::write(&a.memory, &edited).unwrap();
    let out = a.ok(&["backup"]);
    assert!(stderr(&out).contains("entity:Deploy"), "{}", stderr(&out));
    assert_eq!(env.show(&bare, "memory-a.json"), first);
    assert_eq!(std::fs::read_to_string(&a.memory).unwrap(), edited);
    // sync keeps it in the memory file as it is.
    a.ok(&["sync"]);
    assert_eq!(std::fs::read_to_string(&a.memory).unwrap(), edited);

    // The secret removed: the edit lands.
    std::fs::write(
        &a.memory,
        entity("Deploy", &["uses the CI runner", "token in the vault"]) + "\n",
    )
    .unwrap();
    let out = a.ok(&["backup"]);
    assert!(!stderr(&out).contains("secret"), "{}", stderr(&out));
    let now = env.show(&bare, "memory-a.json");
    assert!(
        now.contains("token in the vault") && !now.contains(&token),
        "{now}"
    );
    let v = a.ok(&["status", "--json"]);
    let v: Value = serde_json::from_str(stdout(&v).trim()).unwrap();
    assert_eq!(v["last_run"]["held_back"], json!([]), "{v}");
}

#[test]
fn allow_secret_on_the_command_line_or_in_the_config_lets_one_entry_through() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    let creds = credentials();
    let (_, gitlab, gitlab_text) = &creds[4];
    let (_, stripe, stripe_text) = &creds[6];
    let (_, slack, slack_text) = &creds[5];
    std::fs::write(
        &a.memory,
        [
            entity("Gitlab", &[gitlab_text]),
            entity("Stripe", &[stripe_text]),
            entity("Slack", &[slack_text]),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let out = a.ok(&["backup", "--allow-secret", "entity:Gitlab"]);
    let said = stderr(&out);
    assert!(
        !said.contains("entity:Gitlab") && said.contains("entity:Stripe"),
        "{said}"
    );
    let unified = env.show(&bare, "unified-memory.json");
    assert!(unified.contains(gitlab.as_str()));
    assert!(!unified.contains(stripe.as_str()) && !unified.contains(slack.as_str()));

    let config = env.write("config.toml", "allow_secrets = [\"entity:Stripe\"]\n");
    let mut cmd = env.mb(&a.repo, "a");
    cmd.env("MEMORY_BACKUP_MEMORY", &a.memory)
        .arg("--config")
        .arg(&config)
        .arg("backup");
    let out = cmd.output().unwrap();
    assert_code(&out, 0);
    let unified = env.show(&bare, "unified-memory.json");
    assert!(unified.contains(stripe.as_str()), "{}", stderr(&out));
    assert!(!unified.contains(slack.as_str()));
}

#[test]
fn verify_names_file_line_and_rule_of_a_secret_already_in_the_repository_and_exits_1() {
    let env = Env::new();
    let (_daemon, _bare, url) = env.served();
    let a = Host::new(&env, "a");
    a.init(&url);
    std::fs::write(&a.memory, entity("Ada", &["likes Rust"]) + "\n").unwrap();
    a.ok(&["backup"]);
    let repo = env.path(&a.repo);
    let clean = verify(&env, &repo, &[]);
    assert_code(&clean, 0);

    // A secret committed by hand (or by an older version), on line 3 of a file.
    let (_, token, text) = credentials().swap_remove(3);
    let file = |obs: &str| {
        let e = |name: &str, o: &str, t: &str| {
            json!({"_crdt_metadata":{"host":"old","timestamp":t,"unique_id":format!("old_entity:{name}_1"),"version":1},"entityType":"note","name":name,"observations":[o],"type":"entity"}).to_string()
        };
        format!(
            "[\n{},\n{}\n]\n",
            e("Plain", "nothing", "2026-01-01T00:00:00.000000Z"),
            e("Creds", obs, "2026-01-02T00:00:00.000000Z")
        )
    };
    let with = file(&text);
    env.commit_by_hand(&repo, &[("memory-old.json", with.as_bytes())], "by hand");
    let out = verify(&env, &repo, &[]);
    assert_code(&out, 1);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("memory-old.json:3:") && said.contains("github-fine-grained-token"),
        "{said}"
    );
    assert!(said.contains("forget"), "the fix is named: {said}");
    assert!(!said.contains(&token));

    // Gone from the files, still in history: only --history finds it.
    let without = file("token rotated");
    env.commit_by_hand(&repo, &[("memory-old.json", without.as_bytes())], "fixed");
    let out = verify(&env, &repo, &[]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!said.contains("looks like a secret"), "{said}");
    let out = verify(&env, &repo, &["--history"]);
    assert_code(&out, 1);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("memory-old.json:3:") && said.contains("commit "),
        "{said}"
    );
    assert!(!said.contains(&token));
}

fn verify(env: &Env, repo: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = env.command();
    cmd.arg("verify").arg(repo).args(extra);
    cmd.output().unwrap()
}
