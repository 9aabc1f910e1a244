//! ssh and https remotes end to end: an sshd and a smart-HTTP server on
//! 127.0.0.1, each started by the test, with the user's own kinds of credentials
//! (an ssh-agent, a key file, git's `store` credential helper, a URL's password).

use std::path::Path;
use std::process::Output;

use crate::common::git::*;
use crate::common::remote::*;

const MEMORY: &str = r#"[{"id":"n1","content":"over the wire"}]"#;

/// `init --remote URL` then `backup --json`, with `extra` environment.
fn init_and_backup(env: &Env, url: &str, extra: &[(&str, &Path)]) -> (Output, Output) {
    let memory = env.memory("memory.json", MEMORY);
    let run = |args: &[&str]| {
        let mut cmd = env.mb("repo", "h1");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.args(args).output().expect("run memory-backup")
    };
    let init = run(&["init", "--remote", url]);
    let backup = run(&[
        "--json",
        "backup",
        "--memory",
        &memory,
        "--max-elapsed",
        "60",
    ]);
    (init, backup)
}

/// The remote's unified file holds the memory's entry.
fn assert_backed_up(env: &Env, bare: &Path) {
    assert_eq!(ids(&env.show(bare, "unified-memory.json")), ["n1"]);
}

/// The remote branch was never written.
fn assert_nothing_pushed(env: &Env, bare: &Path) {
    let out = env.git(&[
        "--git-dir",
        &bare.display().to_string(),
        "rev-parse",
        "--verify",
        "-q",
        "refs/heads/main",
    ]);
    assert!(!out.status.success(), "the remote got a commit");
}

/// An ssh server, a bare repository, and the server's key in known_hosts.
fn ssh_setup(env: &Env) -> (Server, std::path::PathBuf) {
    let server = ssh_server(env);
    let bare = env.bare("ssh-remote.git");
    put_in_ssh_dir(
        env,
        "known_hosts",
        &format!("{}\n", server.info["known_hosts"]),
    );
    (server, bare)
}

fn client_key(server: &Server) -> String {
    std::fs::read_to_string(&server.info["client_key"]).expect("client key")
}

#[test]
fn ssh_backup_with_the_key_from_the_agent() {
    let env = Env::new();
    let (server, bare) = ssh_setup(&env);
    // No key file in ~/.ssh: only the agent can authenticate.
    let agent = Agent::start(&env, &server.info["client_key"]);
    let (init, backup) = init_and_backup(
        &env,
        &server.ssh_url(&bare),
        &[("SSH_AUTH_SOCK", agent.socket.as_path())],
    );
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
    assert!(
        server.log().contains("Accepted publickey"),
        "{}",
        server.log()
    );
}

#[test]
fn ssh_backup_with_a_key_file() {
    let env = Env::new();
    let (server, bare) = ssh_setup(&env);
    put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
    let (init, backup) = init_and_backup(&env, &server.ssh_url(&bare), &[]);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
}

#[test]
fn scp_like_remote_with_a_port_backs_up_over_ssh() {
    let env = Env::new();
    let (server, bare) = ssh_setup(&env);
    put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
    // git's scp-like form; `[user@host:port]:path` is its way to give a port.
    let url = format!(
        "[{}@127.0.0.1:{}]:{}",
        server.info["user"],
        server.port,
        bare.display()
    );
    let (init, backup) = init_and_backup(&env, &url, &[]);
    assert_code(&init, 0);
    assert!(stdout(&init).contains(&format!("remote set to {url}")));
    assert_eq!(
        env.git_in(&env.path("repo"), &["config", "remote.origin.url"])
            .trim(),
        url
    );
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
}

#[test]
fn an_ssh_key_the_server_refuses_gives_77_at_once() {
    let env = Env::new();
    let (server, bare) = ssh_setup(&env);
    let (other, _) = new_key(&env, "not-authorized");
    put_in_ssh_dir(&env, "id_ed25519", &other);
    let url = server.ssh_url(&bare);
    let (_, backup) = init_and_backup(&env, &url, &[]);
    assert_code(&backup, 77);
    let err = stderr(&backup);
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("authentication refused"), "{err}");
    assert!(err.contains("~/.ssh/id_ed25519"), "{err}");
    // The key was offered once by init's fetch and once by the backup: no retries.
    assert_eq!(server.ssh_refusals(), 2, "{}", server.log());
    assert_nothing_pushed(&env, &bare);
}

#[test]
fn an_unknown_or_changed_ssh_host_key_is_refused_with_78() {
    let env = Env::new();
    let server = ssh_server(&env);
    let bare = env.bare("ssh-remote.git");
    put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
    let url = server.ssh_url(&bare);
    let port = server.port;

    // No known_hosts at all.
    let (init, backup) = init_and_backup(&env, &url, &[]);
    assert_code(&init, 78);
    assert_code(&backup, 78);
    let err = stderr(&backup);
    assert!(err.contains("known_hosts"), "{err}");
    assert!(err.contains("is not in"), "{err}");
    assert!(
        err.contains(&format!(
            "ssh-keyscan -p {port} 127.0.0.1 >> ~/.ssh/known_hosts"
        )),
        "{err}"
    );
    assert!(err.contains("ssh-ed25519 SHA256:"), "{err}");

    // A known_hosts line for this server with another key.
    let (_, other) = new_key(&env, "impostor");
    let key = other
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    put_in_ssh_dir(&env, "known_hosts", &format!("[127.0.0.1]:{port} {key}\n"));
    let memory = env.memory("memory.json", MEMORY);
    let again = env.run("repo", "h1", &["backup", "--memory", &memory]);
    assert_code(&again, 78);
    let err = stderr(&again);
    assert!(err.contains("differs from the one for it in"), "{err}");
    assert!(err.contains("known_hosts"), "{err}");
    assert_nothing_pushed(&env, &bare);
    // Refused before any key was offered.
    assert!(!server.log().contains("publickey"), "{}", server.log());
}

const HTTP_USER: &str = "backup-bot";
const HTTP_PASSWORD: &str = "s3cr3t-Pa55word-4c1d";

/// A smart-HTTP server over `srv/`, a bare repository in it, and a git config
/// whose `store` credential helper holds `password` for the server.
fn http_setup(env: &Env, password: &str) -> (Server, std::path::PathBuf, std::path::PathBuf) {
    let bare = env.bare("srv/mem.git");
    let server = http_server(env, &env.path("srv"), HTTP_USER, HTTP_PASSWORD);
    let store = env.path("credentials");
    std::fs::write(
        &store,
        format!("http://{HTTP_USER}:{password}@127.0.0.1:{}\n", server.port),
    )
    .expect("store file");
    let config = env.path("gitconfig");
    std::fs::write(
        &config,
        format!(
            "[credential]\n\thelper = store --file={}\n",
            store.display()
        ),
    )
    .expect("git config");
    (server, bare, config)
}

/// The password is in no output, log or report.
fn assert_secret_kept(env: &Env, runs: &[&Output]) {
    for run in runs {
        assert!(!stdout(run).contains(HTTP_PASSWORD), "{}", stdout(run));
        assert!(!stderr(run).contains(HTTP_PASSWORD), "{}", stderr(run));
    }
    assert!(
        env.path("logs-h1/last-run.json").is_file(),
        "no report written"
    );
    let logs = all_text_under(&env.path("logs-h1"));
    assert!(!logs.contains(HTTP_PASSWORD), "{logs}");
}

#[test]
fn http_backup_with_the_password_from_the_store_helper() {
    let env = Env::new();
    let (server, bare, config) = http_setup(&env, HTTP_PASSWORD);
    let url = format!("http://127.0.0.1:{}/mem.git", server.port);
    let (init, backup) = init_and_backup(&env, &url, &[("GIT_CONFIG_GLOBAL", config.as_path())]);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
    assert!(server.log().contains(&format!(
        "POST /mem.git/git-receive-pack 200 user={HTTP_USER}"
    )));
    assert_secret_kept(&env, &[&init, &backup]);
}

#[test]
fn a_branch_lock_left_on_an_http_server_is_named_and_the_run_stops_with_75() {
    let env = Env::new();
    let (server, bare, config) = http_setup(&env, HTTP_PASSWORD);
    let url = format!("http://127.0.0.1:{}/mem.git", server.port);
    let run = |args: &[&str]| {
        let mut cmd = env.mb("r", "h");
        cmd.env("GIT_CONFIG_GLOBAL", &config);
        cmd.args(args).output().expect("run memory-backup")
    };
    assert_code(&run(&["init", "--remote", &url]), 0);
    a_stale_branch_lock_stops_the_run(&env, &bare, &run);
}

#[test]
fn a_wrong_http_password_gives_77_at_once_and_is_never_shown() {
    let env = Env::new();
    let (server, bare, config) = http_setup(&env, "not-the-password");
    let url = format!("http://127.0.0.1:{}/mem.git", server.port);
    let (_, backup) = init_and_backup(&env, &url, &[("GIT_CONFIG_GLOBAL", config.as_path())]);
    assert_code(&backup, 77);
    let err = stderr(&backup);
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("git credential helper"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    // The helper's password was sent once by init and once by the backup.
    let tries = server
        .log()
        .matches(&format!("401 user={HTTP_USER}"))
        .count();
    assert_eq!(tries, 2, "{}", server.log());
    let report: serde_json::Value = serde_json::from_str(&stdout(&backup)).expect("--json");
    assert_eq!(report["exit_code"], 77);
    assert!(!stdout(&backup).contains("not-the-password"));
    assert_nothing_pushed(&env, &bare);
}

#[test]
fn a_password_in_the_url_works_and_is_never_shown() {
    let env = Env::new();
    let (server, bare, _) = http_setup(&env, "unused");
    let url = format!(
        "http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{}/mem.git",
        server.port
    );
    let (init, backup) = init_and_backup(&env, &url, &[]);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
    assert!(stdout(&backup).contains(&format!("{HTTP_USER}:***@127.0.0.1")));
    // status and restore show the remote too, and warn when it cannot be asked.
    let status = env.run("repo", "h1", &["--json", "status"]);
    assert_code(&status, 0);
    assert!(stdout(&status).contains(&format!("{HTTP_USER}:***@127.0.0.1")));
    let restore = env.run("repo", "h1", &["restore", "--out", "restored.json"]);
    assert_code(&restore, 0);
    drop(server);
    let offline = env.run("repo", "h1", &["status"]);
    assert!(
        stderr(&offline).contains("cannot ask"),
        "{}",
        stderr(&offline)
    );
    let offline_restore = env.run("repo", "h1", &["restore", "--out", "again.json"]);
    assert!(stderr(&offline_restore).contains("cannot fetch"));
    assert_secret_kept(
        &env,
        &[
            &init,
            &backup,
            &status,
            &restore,
            &offline,
            &offline_restore,
        ],
    );
}

#[test]
fn an_ssh_server_that_is_not_there_is_retried_then_75() {
    let env = Env::new();
    let bare = env.bare("ssh-remote.git");
    // A port nobody listens on: connection refused, as when the server is down.
    let url = format!("ssh://git@127.0.0.1:{}{}", free_port(), bare.display());
    let memory = env.memory("memory.json", MEMORY);
    assert_code(&env.run("repo", "h1", &["init", "--remote", &url]), 0);
    let out = env.run(
        "repo",
        "h1",
        &["backup", "--memory", &memory, "--max-elapsed", "1"],
    );
    assert_code(&out, 75);
    assert!(
        stderr(&out).contains("next run pushes it"),
        "{}",
        stderr(&out)
    );
}
