//! Backups over real remotes on 127.0.0.1, each started and stopped by its test:
//! a git daemon, bare repositories by path and `file://`, an sshd reached the
//! ways users set ssh up (a host alias in an ssh config, `core.sshCommand`, a
//! passphrase key in an agent, a key file), and smart HTTPS with a credential
//! helper; through the user's `git` and through libgit2 (also with no `git` on
//! PATH); races of 20 hosts; and what `init` says of remotes that cannot work.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::*;
use crate::support::*;

const MEMORY: &str = r#"[{"id":"n1","content":"over the wire"}]"#;
const GIT: &str = "git";
const LIBGIT2: &str = "libgit2";
const TRANSPORTS: [&str; 2] = [GIT, LIBGIT2];
/// What `init` may take to tell a permanent mistake, or to give up on a server
/// that does not answer.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A run as `host` with the repository `repo`, through `transport`, with the
/// environment `extra` besides the test's own.
fn run(
    env: &Env,
    repo: &str,
    host: &str,
    transport: &str,
    extra: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = env.mb(repo, host);
    cmd.env("MEMORY_BACKUP_TRANSPORT", transport);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run memory-backup")
}

/// [`run`], timed.
fn timed(
    env: &Env,
    repo: &str,
    host: &str,
    transport: &str,
    extra: &[(&str, &str)],
    args: &[&str],
) -> (Output, Duration) {
    let started = Instant::now();
    let out = run(env, repo, host, transport, extra, args);
    (out, started.elapsed())
}

/// `init --remote URL`, timed, on a repository made first without a remote;
/// then the remote is set by hand whatever it said, for the backups that follow.
fn init_remote(
    env: &Env,
    repo: &str,
    transport: &str,
    extra: &[(&str, &str)],
    url: &str,
) -> (Output, Duration) {
    assert_code(&run(env, repo, "h1", transport, extra, &["init"]), 0);
    let (out, took) = timed(
        env,
        repo,
        "h1",
        transport,
        extra,
        &["init", "--remote", url],
    );
    if !out.status.success() {
        env.git_in(&env.path(repo), &["remote", "add", "origin", url]);
    }
    (out, took)
}

/// `init --remote URL` then `backup --json` of [`MEMORY`] as host `h1`.
fn init_and_backup(
    env: &Env,
    url: &str,
    transport: &str,
    extra: &[(&str, &str)],
) -> (Output, Output) {
    let memory = env.memory("memory.json", MEMORY);
    let init = run(
        env,
        "repo",
        "h1",
        transport,
        extra,
        &["init", "--remote", url],
    );
    let backup = run(
        env,
        "repo",
        "h1",
        transport,
        extra,
        &[
            "--json",
            "backup",
            "--memory",
            &memory,
            "--max-elapsed",
            "60",
        ],
    );
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

fn elapsed_within(took: Duration, bound: Duration, what: &str) {
    assert!(took < bound, "{what} took {took:?}, over {bound:?}");
}

// ---------------------------------------------------------------- ssh

/// An sshd, a bare repository, and an ssh config in which `gitbox` is the
/// server, logged into with `key` (the server's own client key when `None`).
fn ssh_alias_setup(env: &Env, key: Option<&Path>) -> (Server, PathBuf, PathBuf) {
    let server = match key {
        Some(k) => ssh_server_authorizing(env, &[&k.with_extension("pub")]),
        None => ssh_server(env),
    };
    let bare = env.bare("ssh-remote.git");
    let own = PathBuf::from(&server.info["client_key"]);
    let config = server.ssh_config(env, "gitbox", key.unwrap_or(&own));
    (server, bare, config)
}

#[test]
fn an_ssh_host_alias_of_the_ssh_config_that_git_ssh_command_names_is_reached() {
    let env = Env::new();
    let (server, bare, config) = ssh_alias_setup(&env, None);
    let ssh = format!("ssh -F {}", config.display());
    let url = format!("gitbox:{}", bare.display());
    let (init, backup) = init_and_backup(&env, &url, GIT, &[("GIT_SSH_COMMAND", &ssh)]);
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
fn an_ssh_host_alias_reached_through_core_ssh_command_is_not_overridden() {
    let env = Env::new();
    let (server, bare, config) = ssh_alias_setup(&env, None);
    // Only the user's ssh command knows `gitbox`: batch mode of the tool's own
    // would not resolve it.
    let gitconfig = env.write(
        "gitconfig",
        format!("[core]\n\tsshCommand = ssh -F {}\n", config.display()),
    );
    let global = gitconfig.display().to_string();
    let url = format!("gitbox:{}", bare.display());
    let (init, backup) = init_and_backup(&env, &url, GIT, &[("GIT_CONFIG_GLOBAL", &global)]);
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
fn a_passphrase_key_works_through_ssh_agent_and_without_an_agent_is_77_at_once() {
    let env = Env::new();
    let key = new_locked_key(&env, "locked_ed25519", "correct horse battery");
    let (server, bare, config) = ssh_alias_setup(&env, Some(&key));
    // The user's own ssh command, without batch mode: the key cannot be
    // unlocked without a terminal, and nothing may ask for its passphrase.
    let ssh = format!("ssh -F {}", config.display());
    let url = format!("gitbox:{}", bare.display());
    let no_agent = [("GIT_SSH_COMMAND", ssh.as_str())];
    let (init, took) = timed(
        &env,
        "repo",
        "h1",
        GIT,
        &no_agent,
        &["init", "--remote", &url],
    );
    assert_code(&init, 77);
    elapsed_within(took, AT_ONCE, "init with a locked key and no agent");
    assert!(
        stderr(&init).contains("authentication refused"),
        "{}",
        stderr(&init)
    );

    let agent = Agent::start_unlocking(&env, key.to_str().unwrap(), Some("correct horse battery"));
    let sock = agent.socket.display().to_string();
    let with_agent = [("GIT_SSH_COMMAND", ssh.as_str()), ("SSH_AUTH_SOCK", &sock)];
    let (init, backup) = init_and_backup(&env, &url, GIT, &with_agent);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
    drop(server);
}

/// An sshd and a bare repository, the server's host key in `~/.ssh/known_hosts`
/// of the test's HOME (where libgit2 reads it).
fn ssh_home_setup(env: &Env) -> (Server, PathBuf) {
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
fn libgit2_backs_up_over_ssh_with_a_key_file_in_home_ssh() {
    let env = Env::new();
    let (server, bare) = ssh_home_setup(&env);
    put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
    let (init, backup) = init_and_backup(&env, &server.ssh_url(&bare), LIBGIT2, &[]);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_eq!(json_of(&backup)["transport"], "libgit2");
    assert_backed_up(&env, &bare);
}

#[test]
fn libgit2_backs_up_over_ssh_with_the_key_from_the_agent() {
    let env = Env::new();
    let (server, bare) = ssh_home_setup(&env);
    // No key file in ~/.ssh: only the agent can authenticate.
    let agent = Agent::start(&env, &server.info["client_key"]);
    let sock = agent.socket.display().to_string();
    let extra = [("SSH_AUTH_SOCK", sock.as_str())];
    let (init, backup) = init_and_backup(&env, &server.ssh_url(&bare), LIBGIT2, &extra);
    assert_code(&init, 0);
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
}

#[test]
fn an_scp_like_remote_with_a_port_backs_up_over_ssh() {
    let env = Env::new();
    let server = ssh_server(&env);
    let bare = env.bare("ssh-remote.git");
    let config = server.ssh_config(&env, "127.0.0.1", Path::new(&server.info["client_key"]));
    let ssh = format!("ssh -F {}", config.display());
    // git's scp-like form; `[user@host:port]:path` is its way to give a port.
    let url = format!(
        "[{}@127.0.0.1:{}]:{}",
        server.info["user"],
        server.port,
        bare.display()
    );
    let (init, backup) = init_and_backup(&env, &url, GIT, &[("GIT_SSH_COMMAND", &ssh)]);
    assert_code(&init, 0);
    assert!(stdout(&init).contains(&format!("remote set to {url}")));
    assert_code(&backup, 0);
    assert_backed_up(&env, &bare);
}

#[test]
fn a_key_the_ssh_server_refuses_is_77_within_5_s_with_either_transport() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (server, bare) = ssh_home_setup(&env);
        let (other, _) = new_key(&env, "not-authorized");
        let key = put_in_ssh_dir(&env, "id_ed25519", &other);
        let config = server.ssh_config(&env, "127.0.0.1", &key);
        let ssh = format!("ssh -F {}", config.display());
        let extra = [("GIT_SSH_COMMAND", ssh.as_str())];
        let url = server.ssh_url(&bare);
        let (init, took) = init_remote(&env, "repo", transport, &extra, &url);
        assert_code(&init, 77);
        elapsed_within(took, AT_ONCE, "init");
        // With the remote set by hand, a backup stops at once too, no retries.
        let memory = env.memory("memory.json", MEMORY);
        let (backup, took) = timed(
            &env,
            "repo",
            "h1",
            transport,
            &extra,
            &["backup", "--memory", &memory],
        );
        assert_code(&backup, 77);
        elapsed_within(took, AT_ONCE, "backup");
        let err = stderr(&backup);
        assert!(err.contains(&url), "{transport}: {err}");
        assert!(err.contains("authentication refused"), "{transport}: {err}");
        if transport == LIBGIT2 {
            assert!(err.contains("~/.ssh/id_ed25519"), "{err}");
        }
        assert_nothing_pushed(&env, &bare);
    }
}

#[test]
fn an_unknown_or_changed_ssh_host_key_is_refused_with_78() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let server = ssh_server(&env);
        let bare = env.bare("ssh-remote.git");
        let key = put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
        let url = server.ssh_url(&bare);
        let port = server.port;
        // The server's key in no known_hosts file: ~/.ssh has none, and the
        // ssh command's is empty.
        let empty = env.write("empty_known_hosts", "");
        let ssh = format!(
            "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
            key.display(),
            empty.display()
        );
        let extra = [("GIT_SSH_COMMAND", ssh.as_str())];
        let (init, took) = init_remote(&env, "repo", transport, &extra, &url);
        assert_code(&init, 78);
        elapsed_within(took, AT_ONCE, "init");
        if transport == LIBGIT2 {
            let err = stderr(&init);
            assert!(err.contains("is not in"), "{err}");
            assert!(
                err.contains(&format!(
                    "ssh-keyscan -p {port} 127.0.0.1 >> ~/.ssh/known_hosts"
                )),
                "{err}"
            );
            assert!(err.contains("ssh-ed25519 SHA256:"), "{err}");
        }

        // A known_hosts line for this server with another key.
        let (_, other) = new_key(&env, "impostor");
        let impostor: String = other
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("[127.0.0.1]:{port} {impostor}\n");
        put_in_ssh_dir(&env, "known_hosts", &line);
        std::fs::write(&empty, &line).unwrap();
        let memory = env.memory("memory.json", MEMORY);
        let (again, took) = timed(
            &env,
            "repo",
            "h1",
            transport,
            &extra,
            &["backup", "--memory", &memory],
        );
        assert_code(&again, 78);
        elapsed_within(took, AT_ONCE, "backup");
        if transport == LIBGIT2 {
            assert!(
                stderr(&again).contains("differs from the one for it in"),
                "{}",
                stderr(&again)
            );
        }
        assert_nothing_pushed(&env, &bare);
        // Refused before any key was offered.
        assert!(!server.log().contains("publickey"), "{}", server.log());
    }
}

#[test]
fn init_with_an_ssh_alias_that_nothing_resolves_is_78_within_5_s() {
    let env = Env::new();
    // An ssh config without the alias; a name without a dot is no DNS name.
    let config = env.write("ssh_config", "Host elsewhere\n  HostName 127.0.0.1\n");
    let ssh = format!("ssh -F {}", config.display());
    let extra = [("GIT_SSH_COMMAND", ssh.as_str())];
    let (init, took) = timed(
        &env,
        "repo",
        "h1",
        GIT,
        &extra,
        &["init", "--remote", "gitbox:agent-memory.git"],
    );
    assert_code(&init, 78);
    elapsed_within(took, AT_ONCE, "init");
    assert!(stderr(&init).contains("Host gitbox"), "{}", stderr(&init));
}

// ---------------------------------------------------------------- https

const HTTP_USER: &str = "backup-bot";
const HTTP_PASSWORD: &str = "s3cr3t-Pa55word-4c1d";

/// An HTTPS server over `srv/`, a bare repository `srv/mem.git`, and a git
/// config whose `store` credential helper holds `password` for the server.
fn https_setup(env: &Env, password: &str) -> (Server, PathBuf, PathBuf) {
    let bare = env.bare("srv/mem.git");
    let server = https_server(env, &env.path("srv"), HTTP_USER, HTTP_PASSWORD);
    let store = env.write(
        "credentials",
        format!("https://{HTTP_USER}:{password}@127.0.0.1:{}\n", server.port),
    );
    let config = env.write(
        "gitconfig",
        format!(
            "[credential]\n\thelper = store --file={}\n",
            store.display()
        ),
    );
    (server, bare, config)
}

/// The environment of a run that trusts `server` and reads the git config `config`.
fn https_env(server: &Server, config: Option<&Path>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("GIT_SSL_CAINFO", server.info["ca"].clone()),
        ("SSL_CERT_FILE", server.info["ca"].clone()),
    ];
    if let Some(c) = config {
        out.push(("GIT_CONFIG_GLOBAL", c.display().to_string()));
    }
    out
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The password is in no output, log or report.
fn assert_secret_kept(env: &Env, secret: &str, runs: &[&Output]) {
    for run in runs {
        assert!(!stdout(run).contains(secret), "{}", stdout(run));
        assert!(!stderr(run).contains(secret), "{}", stderr(run));
    }
    let logs = all_text_under(&env.path("logs-h1"));
    assert!(
        logs.contains("last-run") || !logs.is_empty(),
        "no log written"
    );
    assert!(!logs.contains(secret), "{logs}");
}

#[test]
fn https_backs_up_with_the_password_from_a_credential_helper_with_either_transport() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (server, bare, config) = https_setup(&env, HTTP_PASSWORD);
        let url = format!("https://127.0.0.1:{}/mem.git", server.port);
        let extra = https_env(&server, Some(&config));
        let (init, backup) = init_and_backup(&env, &url, transport, &pairs(&extra));
        assert_code(&init, 0);
        assert_code(&backup, 0);
        assert_backed_up(&env, &bare);
        assert!(
            server.log().contains(&format!(
                "POST /mem.git/git-receive-pack 200 user={HTTP_USER}"
            )),
            "{}",
            server.log()
        );
        assert_secret_kept(&env, HTTP_PASSWORD, &[&init, &backup]);
    }
}

#[test]
fn a_wrong_https_password_is_77_at_once_and_never_shown() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (server, bare, config) = https_setup(&env, "not-the-password");
        let url = format!("https://127.0.0.1:{}/mem.git", server.port);
        let extra = https_env(&server, Some(&config));
        let (init, took) = init_remote(&env, "repo", transport, &pairs(&extra), &url);
        assert_code(&init, 77);
        elapsed_within(took, AT_ONCE, "init");
        let memory = env.memory("memory.json", MEMORY);
        let (backup, took) = timed(
            &env,
            "repo",
            "h1",
            transport,
            &pairs(&extra),
            &["--json", "backup", "--memory", &memory],
        );
        assert_code(&backup, 77);
        elapsed_within(took, AT_ONCE, "backup");
        assert_eq!(json_of(&backup)["exit_code"], 77);
        let err = stderr(&backup);
        assert!(err.contains(&url), "{err}");
        assert_secret_kept(&env, "not-the-password", &[&init, &backup]);
        assert_nothing_pushed(&env, &bare);
    }
}

#[test]
fn a_password_in_the_url_works_and_is_never_shown() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (server, bare, _) = https_setup(&env, "unused");
        let url = format!(
            "https://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{}/mem.git",
            server.port
        );
        let extra = https_env(&server, None);
        let (init, backup) = init_and_backup(&env, &url, transport, &pairs(&extra));
        assert_code(&init, 0);
        assert_code(&backup, 0);
        assert_backed_up(&env, &bare);
        let status = run(
            &env,
            "repo",
            "h1",
            transport,
            &pairs(&extra),
            &["--json", "status"],
        );
        assert_code(&status, 0);
        assert!(stdout(&status).contains("127.0.0.1"), "{}", stdout(&status));
        drop(server);
        let offline = run(&env, "repo", "h1", transport, &pairs(&extra), &["status"]);
        assert_secret_kept(&env, HTTP_PASSWORD, &[&init, &backup, &status, &offline]);
    }
}

#[test]
fn a_branch_lock_left_on_an_https_server_is_named_and_the_run_stops_with_75() {
    let env = Env::new();
    let (server, bare, config) = https_setup(&env, HTTP_PASSWORD);
    let url = format!("https://127.0.0.1:{}/mem.git", server.port);
    let extra = https_env(&server, Some(&config));
    let runner = |args: &[&str]| run(&env, "r", "h", GIT, &pairs(&extra), args);
    assert_code(&runner(&["init", "--remote", &url]), 0);
    a_stale_branch_lock_stops_the_run(&env, &bare, &runner);
}

// ---------------------------------------------------------------- git daemon, path, file://

/// A run that the server refuses for a reason of its own ends soon with 75,
/// the server's words quoted and the commit kept.
fn backup_refused(memory: &str, says: &[&str], run: &dyn Fn(&[&str]) -> Output) {
    let started = Instant::now();
    let out = run(&[
        "--json",
        "backup",
        "--memory",
        memory,
        "--max-elapsed",
        "120",
    ]);
    assert_code(&out, 75);
    elapsed_within(
        started.elapsed(),
        Duration::from_secs(60),
        "a refused backup",
    );
    let err = stderr(&out);
    for said in says.iter().chain(&["the next run pushes it"]) {
        assert!(err.contains(said), "{said:?} not in {err}");
    }
    assert_eq!(json_of(&out)["pushed"], false);
}

/// A `refs/heads/main.lock` left in the served `bare` repository, as a git
/// killed on the server leaves it: a backup names the lock and stops; with the
/// lock removed, the next run pushes the commit it kept.
fn a_stale_branch_lock_stops_the_run(env: &Env, bare: &Path, run: &dyn Fn(&[&str]) -> Output) {
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&run(&["backup", "--memory", &memory]), 0);
    let lock = bare.join("refs/heads/main.lock");
    std::fs::write(&lock, "").expect("write the lock");
    let memory = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#,
    );
    backup_refused(&memory, &["refs/heads/main.lock"], run);
    let local = env.git_in(&env.path("r"), &["show", "main:unified-memory.json"]);
    assert_eq!(unique_ids(&local).len(), 2);
    assert_eq!(unique_ids(&env.show(bare, "unified-memory.json")).len(), 1);

    std::fs::remove_file(&lock).expect("remove the lock");
    assert_code(&run(&["backup", "--memory", &memory]), 0);
    assert_eq!(unique_ids(&env.show(bare, "unified-memory.json")).len(), 2);
}

#[test]
fn a_branch_lock_left_on_a_git_daemon_is_named_and_the_run_stops_with_75() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_daemon, bare, url) = env.served();
        let runner = |args: &[&str]| run(&env, "r", "h", transport, &[], args);
        assert_code(&runner(&["init", "--remote", &url]), 0);
        a_stale_branch_lock_stops_the_run(&env, &bare, &runner);
    }
}

/// A server where, for 16 s, every push finds the branch's lock held by
/// another push that lands (a pre-receive hook moves the branch and takes its
/// lock for half a second, once the last one's is let go): the refusals name
/// the lock, but the branch moves, so the run goes on past the 10 s it gives a
/// lock that stays, and its push lands once the others let it.
#[test]
fn a_branch_lock_held_by_pushes_that_land_is_waited_out() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    let runner = |args: &[&str]| run(&env, "r", "h", GIT, &[], args);
    assert_code(&runner(&["init", "--remote", &url]), 0);
    let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
    assert_code(&runner(&["backup", "--memory", &memory]), 0);
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\n\
         [ -f first ] || date +%s > first\n\
         [ $(( $(date +%s) - $(cat first) )) -ge 16 ] && exit 0\n\
         unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES\n\
         export GIT_AUTHOR_NAME=o GIT_AUTHOR_EMAIL=o@x GIT_COMMITTER_NAME=o GIT_COMMITTER_EMAIL=o@x\n\
         while [ -e refs/heads/main.lock ]; do sleep 0.05; done\n\
         tip=$(git rev-parse refs/heads/main)\n\
         c=$(git commit-tree -p $tip -m other \"$tip^{tree}\")\n\
         git update-ref refs/heads/main $c $tip\n\
         : > refs/heads/main.lock\n\
         (sleep 0.5; rm -f refs/heads/main.lock) >/dev/null 2>&1 &\n\
         exit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let memory = env.memory(
        "m.json",
        r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#,
    );
    let out = runner(&["-v", "backup", "--memory", &memory, "--max-elapsed", "60"]);
    assert_code(&out, 0);
    let refusals = stderr(&out).matches("the server cannot lock").count();
    assert!(refusals >= 3, "{}", stderr(&out));
    assert_eq!(unique_ids(&env.show(&bare, "unified-memory.json")).len(), 2);
}

#[test]
fn a_server_hook_that_declines_every_push_is_quoted_and_the_run_stops_with_75() {
    use std::os::unix::fs::PermissionsExt;
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_daemon, bare, url) = env.served();
        let runner = |args: &[&str]| run(&env, "r", "h", transport, &[], args);
        assert_code(&runner(&["init", "--remote", &url]), 0);
        let hook = bare.join("hooks/pre-receive");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho 'backups are frozen until Monday' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
        let says: &[&str] = if transport == GIT {
            &[
                "pre-receive hook declined",
                "backups are frozen until Monday",
            ]
        } else {
            &["pre-receive hook declined"]
        };
        backup_refused(&memory, says, &runner);
        let local = env.git_in(&env.path("r"), &["show", "main:unified-memory.json"]);
        assert_eq!(unique_ids(&local).len(), 1);
        assert_nothing_pushed(&env, &bare);
    }
}

#[test]
fn an_unreachable_git_daemon_keeps_the_commit_and_the_next_run_pushes_it() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let srv = env.path("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let bare = env.bare("srv/remote.git");
        let mut daemon = Daemon::start(&env, &srv);
        let port = daemon.port;
        let url = daemon.url("remote.git");
        let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
        assert_code(
            &run(&env, "r", "h", transport, &[], &["init", "--remote", &url]),
            0,
        );
        assert_code(
            &run(
                &env,
                "r",
                "h",
                transport,
                &[],
                &["backup", "--memory", &memory],
            ),
            0,
        );
        daemon.stop();

        let memory = env.memory(
            "m.json",
            r#"[{"id":"a","content":"one"},{"id":"b","content":"two"}]"#,
        );
        let args = ["backup", "--memory", &memory, "--max-elapsed", "1"];
        let (out, took) = timed(&env, "r", "h", transport, &[], &args);
        assert_code(&out, 75);
        elapsed_within(
            took,
            Duration::from_secs(6),
            "a backup with --max-elapsed 1",
        );
        assert!(
            stderr(&out).contains("the next run pushes it"),
            "{}",
            stderr(&out)
        );
        let local = env.git_in(&env.path("r"), &["show", "main:unified-memory.json"]);
        assert_eq!(unique_ids(&local).len(), 2);
        assert_eq!(unique_ids(&env.show(&bare, "unified-memory.json")).len(), 1);
        let kept = env.git_in(&env.path("r"), &["rev-parse", "main"]);

        let _daemon = Daemon::start_on(&env, &srv, port);
        assert_code(
            &run(
                &env,
                "r",
                "h",
                transport,
                &[],
                &["backup", "--memory", &memory],
            ),
            0,
        );
        assert_eq!(unique_ids(&env.show(&bare, "unified-memory.json")).len(), 2);
        // The kept commit itself was pushed: no extra merge commit.
        let pushed = stdout(&env.git(&["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"]));
        assert_eq!(pushed, kept);
    }
}

#[test]
fn a_repository_the_daemon_does_not_have_stops_at_once_with_78() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let srv = env.path("srv");
        std::fs::create_dir_all(&srv).unwrap();
        let daemon = Daemon::start(&env, &srv);
        let url = daemon.url("nothing-here.git");
        let (init, took) = init_remote(&env, "r", transport, &[], &url);
        assert_code(&init, 78);
        elapsed_within(took, AT_ONCE, "init");
        let memory = env.memory("m.json", "[]");
        let (out, took) = timed(
            &env,
            "r",
            "h1",
            transport,
            &[],
            &["backup", "--memory", &memory],
        );
        assert_code(&out, 78);
        elapsed_within(took, AT_ONCE, "backup");
    }
}

#[test]
fn an_ssh_server_that_is_not_there_is_retried_then_75() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = env.bare("ssh-remote.git");
        // A port nobody listens on: connection refused, as when the server is down.
        let url = format!("ssh://git@127.0.0.1:{}{}", free_port(), bare.display());
        let memory = env.memory("memory.json", MEMORY);
        let (init, _) = init_remote(&env, "repo", transport, &[], &url);
        assert_code(&init, 0);
        assert!(stderr(&init).contains("cannot reach"), "{}", stderr(&init));
        let args = ["backup", "--memory", &memory, "--max-elapsed", "1"];
        let (out, took) = timed(&env, "repo", "h1", transport, &[], &args);
        assert_code(&out, 75);
        elapsed_within(
            took,
            Duration::from_secs(6),
            "a backup with --max-elapsed 1",
        );
        assert!(
            stderr(&out).contains("next run pushes it"),
            "{}",
            stderr(&out)
        );
    }
}

/// A port on 127.0.0.1 that takes connections and never answers (a listening
/// socket nobody accepts from); open until the listener is dropped.
fn blackhole() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

#[test]
fn a_server_that_never_answers_ends_the_backup_within_max_elapsed_with_75() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_hole, port) = blackhole();
        assert_code(&run(&env, "r", "h", transport, &[], &["init"]), 0);
        let url = format!("git://127.0.0.1:{port}/r.git");
        env.git_in(&env.path("r"), &["remote", "add", "origin", &url]);
        let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
        let args = ["backup", "--memory", &memory, "--max-elapsed", "2"];
        let (out, took) = timed(&env, "r", "h", transport, &[], &args);
        assert_code(&out, 75);
        elapsed_within(
            took,
            Duration::from_secs(7),
            "a backup with --max-elapsed 2",
        );
        let local = env.git_in(&env.path("r"), &["show", "main:memory-h.json"]);
        assert_eq!(unique_ids(&local).len(), 1);
    }
}

#[test]
fn init_with_a_server_that_never_answers_warns_and_exits_0_within_5_s() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_hole, port) = blackhole();
        for url in [
            format!("git://127.0.0.1:{port}/r.git"),
            format!("https://127.0.0.1:{port}/r.git"),
        ] {
            let (init, took) = timed(&env, "r", "h", transport, &[], &["init", "--remote", &url]);
            assert_code(&init, 0);
            elapsed_within(took, AT_ONCE, "init");
            assert!(stderr(&init).contains("cannot reach"), "{}", stderr(&init));
        }
    }
}

#[test]
fn init_with_a_misspelt_scheme_or_a_url_without_its_scheme_is_78_within_5_s() {
    for transport in TRANSPORTS {
        let env = Env::new();
        for (url, says) in [
            ("htps://x/y.git", "htps"),
            ("github.com/me/x.git", "https://github.com/me/x.git"),
        ] {
            let (init, took) = timed(&env, "r", "h", transport, &[], &["init", "--remote", url]);
            assert_code(&init, 78);
            elapsed_within(took, AT_ONCE, "init");
            assert!(stderr(&init).contains(says), "{}", stderr(&init));
        }
    }
}

#[test]
fn a_remote_path_that_is_gone_gives_75_and_keeps_the_commit() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = env.bare("remote.git");
        let url = bare.to_str().unwrap().to_string();
        let memory = env.memory("m.json", r#"[{"id":"a","content":"one"}]"#);
        assert_code(
            &run(&env, "r", "h", transport, &[], &["init", "--remote", &url]),
            0,
        );
        let moved = env.path("moved.git");
        std::fs::rename(&bare, &moved).unwrap();
        let args = ["backup", "--memory", &memory, "--max-elapsed", "0.5"];
        let out = run(&env, "r", "h", transport, &[], &args);
        assert_code(&out, 75);
        assert!(
            stderr(&out).contains("the next run pushes it"),
            "{}",
            stderr(&out)
        );
        let local = env.git_in(&env.path("r"), &["show", "main:memory-h.json"]);
        assert_eq!(unique_ids(&local).len(), 1);
        std::fs::rename(&moved, &bare).unwrap();
        assert_code(
            &run(
                &env,
                "r",
                "h",
                transport,
                &[],
                &["backup", "--memory", &memory],
            ),
            0,
        );
        assert_eq!(unique_ids(&env.show(&bare, "memory-h.json")).len(), 1);
    }
}

#[test]
fn a_remote_path_that_is_not_a_repository_gives_78_at_once() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let folder = env.path("just-a-folder");
        std::fs::create_dir_all(&folder).unwrap();
        let args = ["init", "--remote", folder.to_str().unwrap()];
        let (init, took) = timed(&env, "r", "h", transport, &[], &args);
        assert_code(&init, 78);
        elapsed_within(took, AT_ONCE, "init");
        assert!(stderr(&init).contains("just-a-folder"), "{}", stderr(&init));
    }
}

/// Two hosts back up to `url` in turn; the remote's unified file holds both
/// hosts' entries, each host's working tree shows it, and fsck is clean.
fn two_hosts_back_up(env: &Env, bare: &Path, url: &str, transport: &str, extra: &[(&str, &str)]) {
    let used = if transport == "auto" {
        LIBGIT2
    } else {
        transport
    };
    for (i, host) in ["h0", "h1"].iter().enumerate() {
        let memory = env.memory_of(&format!("{host}.json"), &[format!("{host}-a")], "x");
        assert_code(
            &run(
                env,
                host,
                host,
                transport,
                extra,
                &["init", "--remote", url],
            ),
            0,
        );
        let out = run(
            env,
            host,
            host,
            transport,
            extra,
            &["--json", "backup", "--memory", &memory],
        );
        assert_code(&out, 0);
        assert_eq!(json_of(&out)["pushed"], true, "{}", stdout(&out));
        assert_eq!(json_of(&out)["transport"], used);
        assert_eq!(ids(&env.show(bare, "unified-memory.json")).len(), i + 1);
    }
    let memory = env.path("h0.json").display().to_string();
    assert_code(
        &run(
            env,
            "h0",
            "h0",
            transport,
            extra,
            &["backup", "--memory", &memory],
        ),
        0,
    );
    let unified = env.show(bare, "unified-memory.json");
    assert_eq!(ids(&unified), ["h0-a", "h1-a"]);
    assert_eq!(
        std::fs::read_to_string(env.path("h0/unified-memory.json")).unwrap(),
        unified
    );
    fsck(env, bare);
    fsck(env, &env.path("h0"));
}

#[test]
fn hosts_back_up_over_git_daemon_path_and_file_url_with_either_transport() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_daemon, bare, url) = env.served();
        two_hosts_back_up(&env, &bare, &url, transport, &[]);

        let env = Env::new();
        let bare = env.bare("remote.git");
        two_hosts_back_up(&env, &bare, bare.to_str().unwrap(), transport, &[]);

        let env = Env::new();
        let bare = env.bare("remote.git");
        two_hosts_back_up(
            &env,
            &bare,
            &format!("file://{}", bare.display()),
            transport,
            &[],
        );
    }
}

#[test]
fn without_git_on_path_libgit2_backs_up_over_git_daemon_path_file_url_https_and_ssh() {
    let env = Env::new();
    let no_git = path_without_git(&env).display().to_string();
    let path = [("PATH", no_git.as_str())];
    let (_daemon, bare, url) = env.served();
    two_hosts_back_up(&env, &bare, &url, "auto", &path);
    assert!(env.path("h0/.git").is_dir());

    let env = Env::new();
    let no_git = path_without_git(&env).display().to_string();
    let path = [("PATH", no_git.as_str())];
    let bare = env.bare("remote.git");
    two_hosts_back_up(
        &env,
        &bare,
        &format!("file://{}", bare.display()),
        "auto",
        &path,
    );

    let env = Env::new();
    let no_git = path_without_git(&env).display().to_string();
    let bare = env.bare("srv/mem.git");
    let server = https_server(&env, &env.path("srv"), HTTP_USER, HTTP_PASSWORD);
    let url = format!(
        "https://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:{}/mem.git",
        server.port
    );
    let mut extra = https_env(&server, None);
    extra.push(("PATH", no_git.clone()));
    two_hosts_back_up(&env, &bare, &url, "auto", &pairs(&extra));

    let env = Env::new();
    let no_git = path_without_git(&env).display().to_string();
    let (server, bare) = ssh_home_setup(&env);
    put_in_ssh_dir(&env, "id_ed25519", &client_key(&server));
    two_hosts_back_up(
        &env,
        &bare,
        &server.ssh_url(&bare),
        "auto",
        &[("PATH", &no_git)],
    );
}

#[test]
fn with_git_on_path_the_transport_is_git_unless_the_setting_names_libgit2() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    let url = bare.display().to_string();
    let memory = env.memory("m.json", MEMORY);
    assert_code(
        &run(&env, "r", "h", "auto", &[], &["init", "--remote", &url]),
        0,
    );
    for (setting, used) in [("auto", "git"), ("git", "git"), ("libgit2", "libgit2")] {
        let out = run(
            &env,
            "r",
            "h",
            setting,
            &[],
            &["--json", "backup", "--memory", &memory],
        );
        assert_code(&out, 0);
        assert_eq!(json_of(&out)["transport"], used);
    }
    let out = run(
        &env,
        "r",
        "h",
        "carrier-pigeon",
        &[],
        &["backup", "--memory", &memory],
    );
    assert_code(&out, 2);
}

/// Runs of one host read one memory file; between rounds it gains an entry.
#[test]
fn runs_at_once_on_one_host_all_succeed_and_leave_no_temporary_file() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let (_daemon, bare, url) = env.served();
        assert_code(
            &run(&env, "r", "h", transport, &[], &["init", "--remote", &url]),
            0,
        );
        let mut all = Vec::new();
        for round in 0..3 {
            all.push(format!("r{round}"));
            let memory = env.memory_of("m.json", &all, "x");
            let extra = [("MEMORY_BACKUP_TRANSPORT", transport)];
            let children: Vec<Child> = (0..4)
                .map(|_| spawn_backup(&env, "r", "h", &memory, &extra, &[]))
                .collect();
            for c in children {
                assert_code(&c.wait_with_output().unwrap(), 0);
            }
        }
        assert_eq!(
            ids(&env.show(&bare, "unified-memory.json")),
            all,
            "{transport}"
        );
        fsck(&env, &bare);
        fsck(&env, &env.path("r"));
        let objects = env.path("r/.git/objects/pack");
        let temporary: Vec<_> = std::fs::read_dir(&objects)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with("tmp_") || n.starts_with("pack_git2_") || n.ends_with(".keep")
            })
            .collect();
        assert!(temporary.is_empty(), "{transport}: {temporary:?}");
    }
}

#[test]
fn first_runs_at_once_make_one_repository_and_all_succeed() {
    let env = Env::new();
    let memory = env.memory_of("m.json", &["x0".into(), "x1".into(), "x2".into()], "x");
    let children: Vec<Child> = (0..4)
        .map(|_| spawn_backup(&env, "new/repo", "h", &memory, &[], &[]))
        .collect();
    for c in children {
        assert_code(&c.wait_with_output().unwrap(), 0);
    }
    let unified = env.git_in(&env.path("new/repo"), &["show", "main:unified-memory.json"]);
    assert_eq!(ids(&unified), ["x0", "x1", "x2"]);
    let left: Vec<_> = std::fs::read_dir(env.path("new"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["repo"], "temporary repositories left behind");
}

// ---------------------------------------------------------------- races

fn spawn_backup(
    env: &Env,
    repo: &str,
    host: &str,
    memory: &str,
    extra: &[(&str, &str)],
    args: &[&str],
) -> Child {
    let mut cmd = env.mb(repo, host);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.args(["backup", "--memory", memory])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start memory-backup")
}

/// `HOSTS` hosts, `ROUNDS` rounds, every round started at once, through git:
/// every run exits 0 and nothing is lost (every entry of every host in the
/// remote's unified file once a last run took the parked commits in), and fsck
/// is clean.
fn race<const HOSTS: usize, const ROUNDS: usize>(
    env: &Env,
    bare: &Path,
    url: &str,
    extra: &[(&str, &str)],
) {
    let inits: Vec<Child> = (0..HOSTS)
        .map(|h| {
            let host = format!("h{h}");
            let mut cmd = env.mb(&host, &host);
            for (k, v) in extra {
                cmd.env(k, v);
            }
            cmd.args(["-q", "init", "--remote", url])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start memory-backup")
        })
        .collect();
    for c in inits {
        assert_code(&c.wait_with_output().unwrap(), 0);
    }
    let mut attempts = Vec::new();
    for round in 0..ROUNDS {
        let children: Vec<Child> = (0..HOSTS)
            .map(|h| {
                let host = format!("h{h}");
                let ids: Vec<String> = (0..=round).map(|r| format!("{host}-r{r}")).collect();
                let memory = env.memory_of(&format!("{host}.json"), &ids, "x");
                let mut extra = extra.to_vec();
                extra.push(("MEMORY_BACKUP_TRANSPORT", GIT));
                spawn_backup(env, &host, &host, &memory, &extra, &["--json"])
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_code(&out, 0);
            attempts.push(json_of(&out)["attempts"].as_u64().unwrap_or(0));
        }
    }
    // A run that kept losing parked its commit on its own ref: every entry is on
    // the remote, and the next run of any host folds it into the branch.
    let parked = env.git(&[
        "--git-dir",
        bare.to_str().unwrap(),
        "for-each-ref",
        "--format=%(refname)",
        "refs/heads/memory-backup/hosts/",
    ]);
    let mut settle = env.mb("settle", "settle");
    for (k, v) in extra {
        settle.env(k, v);
    }
    assert_code(
        &settle
            .args(["-q", "init", "--remote", url])
            .output()
            .unwrap(),
        0,
    );
    let empty = env.memory("settle.json", "[]");
    let out = spawn_backup(env, "settle", "settle", &empty, extra, &[])
        .wait_with_output()
        .unwrap();
    assert_code(&out, 0);
    let unified: serde_json::Value =
        serde_json::from_str(&env.show(bare, "unified-memory.json")).expect("unified parses");
    let mut found: Vec<String> = unified
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["id"].as_str().expect("an id").to_string())
        .collect();
    found.sort();
    let mut all: Vec<String> = (0..HOSTS)
        .flat_map(|h| (0..ROUNDS).map(move |r| format!("h{h}-r{r}")))
        .collect();
    all.sort();
    assert_eq!(found, all, "an entry was lost");
    fsck(env, bare);
    eprintln!(
        "push attempts per run: {attempts:?}; parked refs: {}",
        stdout(&parked).lines().count()
    );
}

#[test]
fn race_of_20_hosts_over_git_daemon_loses_nothing() {
    let env = Env::new();
    let (_daemon, bare, url) = env.served();
    race::<20, 3>(&env, &bare, &url, &[]);
}

#[test]
fn race_of_20_hosts_over_a_path_loses_nothing() {
    let env = Env::new();
    let bare = env.bare("remote.git");
    race::<20, 3>(&env, &bare, bare.to_str().unwrap(), &[]);
}

#[test]
fn race_of_20_hosts_over_ssh_loses_nothing() {
    let env = Env::new();
    let (_server, bare, config) = ssh_alias_setup(&env, None);
    let ssh = format!("ssh -F {}", config.display());
    let url = format!("gitbox:{}", bare.display());
    race::<20, 3>(&env, &bare, &url, &[("GIT_SSH_COMMAND", &ssh)]);
}

#[test]
fn race_of_20_hosts_over_https_loses_nothing() {
    let env = Env::new();
    let (server, bare, config) = https_setup(&env, HTTP_PASSWORD);
    let url = format!("https://127.0.0.1:{}/mem.git", server.port);
    let extra = https_env(&server, Some(&config));
    race::<20, 3>(&env, &bare, &url, &pairs(&extra));
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", stdout(o)))
}
