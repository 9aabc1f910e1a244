//! Servers that misbehave (`tests/fake-git-server.py`, over git:// and smart
//! HTTP) and the hardening that holds whatever the transport: each hostile run
//! ends within `--max-elapsed` + 5 s with 75, the tool and its children stay
//! under 200 MB, and nothing is left that stops the next run against an honest
//! server or that `git fsck --strict` finds; remote file names that are not
//! plain names are never written; a token in a URL is never shown; the
//! repository and the logs are private whatever the umask.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::*;
use crate::support::*;

const TRANSPORTS: [&str; 2] = ["git", "libgit2"];
/// The time limit of a run against a hostile server.
const MAX_ELAPSED: u64 = 3;
/// How far past its time limit a run may end (issue 19).
const GRACE: Duration = Duration::from_secs(5);
/// The most memory the tool and its children may hold together, in kB.
const MEMORY_BOUND_KB: u64 = 200_000;

/// A run, timed, with the peak of the memory that it and its children held.
struct Sampled {
    out: Output,
    took: Duration,
    peak_kb: u64,
}

/// Runs `cmd`, adding up the resident memory of it and every process under it
/// every 10 ms.
fn sampled(mut cmd: Command) -> Sampled {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start memory-backup");
    let pid = child.id();
    let mut peak_kb = 0;
    // The pipes are read once it ended: its output is small.
    while child.try_wait().expect("wait").is_none() {
        peak_kb = peak_kb.max(tree_rss_kb(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    Sampled {
        out,
        took: started.elapsed(),
        peak_kb,
    }
}

/// The resident memory of process `root` and its descendants, in kB.
fn tree_rss_kb(root: u32) -> u64 {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// A bare repository `srv/remote.git` that host `other` backed up to.
fn remote_with_a_backup(env: &Env) -> PathBuf {
    let bare = env.bare("srv/remote.git");
    let url = bare.display().to_string();
    let memory = env.memory("other.json", r#"[{"id":"o1","content":"other"}]"#);
    assert_code(
        &env.run_as("other", "other", &["init", "--remote", &url]),
        0,
    );
    assert_code(
        &env.run_as("other", "other", &["backup", "--memory", &memory]),
        0,
    );
    bare
}

/// Files that a killed or failed git or libgit2 leaves and that must not stay:
/// temporary packs and lock files.
fn leftovers(dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            leftovers(&p, out);
        } else if name.starts_with("tmp_")
            || name.starts_with("pack_git2_")
            || name.ends_with(".lock")
            || name.ends_with(".keep")
        {
            out.push(p.display().to_string());
        }
    }
}

/// A backup through `transport` against the fake server in `mode` (over
/// smart HTTP with `http`, else git://): it ends within its time limit and
/// [`GRACE`] with 75, under [`MEMORY_BOUND_KB`], leaving no temporary file;
/// then a backup against an honest git daemon serving the same repository
/// pushes, and fsck of the repository is clean.
fn against(mode: &str, http: bool, transport: &str) {
    let env = Env::new();
    let bare = remote_with_a_backup(&env);
    let fake = fake_server(&env, mode, &bare, http);
    let memory = env.memory("m.json", r#"[{"id":"h1","content":"mine"}]"#);
    assert_code(&env.run_as("r", "h", &["init"]), 0);
    env.git_in(
        &env.path("r"),
        &[
            "remote",
            "add",
            "origin",
            &fake.fake_url("remote.git", http),
        ],
    );

    let mut cmd = env.mb("r", "h");
    cmd.env("MEMORY_BACKUP_TRANSPORT", transport).args([
        "backup",
        "--memory",
        &memory,
        "--max-elapsed",
        &MAX_ELAPSED.to_string(),
    ]);
    let run = sampled(cmd);
    let what = format!(
        "{mode} over {} through {transport}",
        if http { "http" } else { "git://" }
    );
    eprintln!(
        "{what}: exit {:?} in {:.1} s, peak {} MB",
        run.out.status.code(),
        run.took.as_secs_f64(),
        run.peak_kb / 1000
    );
    assert_code(&run.out, 75);
    assert!(
        run.took < Duration::from_secs(MAX_ELAPSED) + GRACE,
        "{what}: took {:?}",
        run.took
    );
    assert!(
        run.peak_kb < MEMORY_BOUND_KB,
        "{what}: {} kB at the peak",
        run.peak_kb
    );
    let mut left = Vec::new();
    leftovers(&env.path("r/.git"), &mut left);
    assert!(left.is_empty(), "{what}: left behind: {left:?}");
    drop(fake);

    let daemon = Daemon::start(&env, &env.path("srv"));
    env.git_in(
        &env.path("r"),
        &["remote", "set-url", "origin", &daemon.url("remote.git")],
    );
    let mut cmd = env.mb("r", "h");
    cmd.env("MEMORY_BACKUP_TRANSPORT", transport)
        .args(["backup", "--memory", &memory]);
    let honest: Output = cmd.output().expect("run memory-backup");
    assert_code(&honest, 0);
    assert_eq!(
        ids(&env.show(&bare, "unified-memory.json")),
        ["h1", "o1"],
        "{what}"
    );
    fsck(&env, &env.path("r"));
}

/// [`against`] for both transports, over git:// and, with `http`, smart HTTP.
fn hostile(mode: &str, http: bool) {
    for transport in TRANSPORTS {
        against(mode, false, transport);
        if http {
            against(mode, true, transport);
        }
    }
}

#[test]
fn a_pack_header_claiming_0xffffffff_objects_ends_the_run_with_75_and_harms_nothing() {
    hostile("count", true);
}

#[test]
fn a_delta_claiming_a_67_gb_result_ends_the_run_with_75_and_harms_nothing() {
    hostile("delta", false);
}

#[test]
fn a_blob_header_claiming_2_5_gib_ends_the_run_with_75_and_harms_nothing() {
    hostile("blob", false);
}

#[test]
fn endless_side_band_progress_ends_the_run_with_75_and_harms_nothing() {
    hostile("progress", false);
}

#[test]
fn a_ref_advertisement_at_one_byte_a_second_ends_the_run_with_75_and_harms_nothing() {
    hostile("slow-refs", true);
}

#[test]
fn a_pack_at_one_byte_a_second_ends_the_run_with_75_and_harms_nothing() {
    hostile("slow-pack", true);
}

#[test]
fn an_endless_ref_advertisement_ends_the_run_with_75_and_harms_nothing() {
    hostile("refs", true);
}

#[test]
fn an_endless_valid_pack_ends_the_run_with_75_and_harms_nothing() {
    hostile("pack", true);
}

#[test]
fn endless_push_reports_end_the_run_with_75_and_harm_nothing() {
    hostile("push-report", true);
}

#[test]
fn the_tip_commit_sent_without_its_tree_is_not_taken_and_harms_nothing() {
    hostile("no-tree", true);
}

#[test]
fn a_repository_wedged_by_a_tip_stored_without_its_tree_heals_on_the_next_run() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = remote_with_a_backup(&env);
        // As an older version left it: the remote's tip commit stored here,
        // loose, without its tree and files.
        assert_code(&env.run_as("r", "h", &["init"]), 0);
        let tip = env.git(&["--git-dir", bare.to_str().unwrap(), "rev-parse", "main"]);
        let tip = stdout(&tip).trim().to_string();
        let commit = env.git(&[
            "--git-dir",
            bare.to_str().unwrap(),
            "cat-file",
            "commit",
            &tip,
        ]);
        let object = env.path("commit-object");
        std::fs::write(&object, &commit.stdout).unwrap();
        let stored = env.git_in(
            &env.path("r"),
            &[
                "hash-object",
                "-t",
                "commit",
                "-w",
                object.to_str().unwrap(),
            ],
        );
        assert_eq!(stored.trim(), tip);

        let daemon = Daemon::start(&env, &env.path("srv"));
        env.git_in(
            &env.path("r"),
            &["remote", "add", "origin", &daemon.url("remote.git")],
        );
        let memory = env.memory("m.json", r#"[{"id":"h1","content":"mine"}]"#);
        let mut cmd = env.mb("r", "h");
        cmd.env("MEMORY_BACKUP_TRANSPORT", transport)
            .args(["backup", "--memory", &memory]);
        let out: Output = cmd.output().expect("run memory-backup");
        assert_code(&out, 0);
        assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["h1", "o1"]);
        fsck(&env, &env.path("r"));
    }
}

// ---------------------------------------------------------------- hardening

/// A commit on `bare`'s main whose tree holds, besides the tip's files, an entry
/// named `name` (which git itself would never write) holding `content`.
fn commit_with_entry(env: &Env, bare: &Path, name: &str, content: &str) {
    let git_dir = bare.to_str().unwrap();
    let blob_file = env.write("evil-blob", content);
    let blob = env.git(&[
        "--git-dir",
        git_dir,
        "hash-object",
        "-w",
        blob_file.to_str().unwrap(),
    ]);
    let blob = stdout(&blob).trim().to_string();
    let listing = env.git(&["--git-dir", git_dir, "ls-tree", "-z", "main"]);
    let mut entries: Vec<(String, String, String)> = stdout(&listing)
        .split('\0')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (meta, name) = l.split_once('\t').expect("a tab");
            let mut f = meta.split(' ');
            let mode = f.next().expect("a mode").to_string();
            let id = f.nth(1).expect("an id").to_string();
            (name.to_string(), mode, id)
        })
        .collect();
    entries.push((name.to_string(), "100644".into(), blob));
    entries.sort();
    let mut tree = Vec::new();
    for (name, mode, id) in entries {
        tree.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        tree.extend((0..20).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()));
    }
    let tree_file = env.path("evil-tree");
    std::fs::write(&tree_file, tree).unwrap();
    let tree = env.git(&[
        "--git-dir",
        git_dir,
        "hash-object",
        "-t",
        "tree",
        "-w",
        "--literally",
        tree_file.to_str().unwrap(),
    ]);
    assert!(tree.status.success(), "{}", stderr(&tree));
    let tree = stdout(&tree).trim().to_string();
    let commit = env.git(&[
        "--git-dir",
        git_dir,
        "-c",
        "user.name=mallory",
        "-c",
        "user.email=m@example.org",
        "commit-tree",
        "-p",
        "main",
        "-m",
        "evil",
        &tree,
    ]);
    let commit = stdout(&commit).trim().to_string();
    let moved = env.git(&[
        "--git-dir",
        git_dir,
        "update-ref",
        "refs/heads/main",
        &commit,
    ]);
    assert!(moved.status.success(), "{}", stderr(&moved));
}

/// Every path under `dir` whose file name is `name`.
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_name() == name {
            out.push(p.clone());
        }
        if p.is_dir() && !p.is_symlink() {
            find_named(&p, name, out);
        }
    }
}

#[test]
fn remote_file_names_that_are_not_plain_names_are_ignored_with_a_warning_and_never_written() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = remote_with_a_backup(&env);
        let evil = "memory-a/../../../evil2.json";
        commit_with_entry(&env, &bare, evil, "[]\n");
        // Deep enough that the name, taken as a path, lands inside the test's folder.
        let repo = "deep/er/r";
        let memory = env.memory("m.json", r#"[{"id":"h1","content":"mine"}]"#);
        let url = bare.display().to_string();
        let mut init = env.mb(repo, "h");
        init.env("MEMORY_BACKUP_TRANSPORT", transport)
            .args(["init", "--remote", &url]);
        let init: Output = init.output().expect("init");
        let mut cmd = env.mb(repo, "h");
        cmd.env("MEMORY_BACKUP_TRANSPORT", transport)
            .args(["backup", "--memory", &memory]);
        let out: Output = cmd.output().expect("backup");
        assert_code(&out, 0);
        let said = format!("{}{}", stderr(&init), stderr(&out));
        assert!(said.contains(evil), "{transport}: no warning: {said}");
        assert!(said.contains("ignored"), "{transport}: {said}");
        let mut found = Vec::new();
        find_named(env.dir.path(), "evil2.json", &mut found);
        assert!(found.is_empty(), "{transport}: written: {found:?}");
        assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["h1", "o1"]);
    }
}

const TOKEN: &str = "ghp_R3dact3dT0kenAbcdefghijklmnopqrstu";

#[test]
fn a_token_given_as_the_url_user_name_is_never_shown_logged_or_reported() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = env.bare("srv/mem.git");
        let server = https_server(&env, &env.path("srv"), TOKEN, "x-oauth-basic");
        let store = env.write(
            "credentials",
            format!("https://{TOKEN}:x-oauth-basic@127.0.0.1:{}\n", server.port),
        );
        let config = env.write(
            "gitconfig",
            format!(
                "[credential]\n\thelper = store --file={}\n",
                store.display()
            ),
        );
        let url = server.https_url(TOKEN, "mem.git");
        let memory = env.memory("m.json", r#"[{"id":"n1","content":"one"}]"#);
        let ca = server.info["ca"].clone();
        let run = |args: &[&str]| -> Output {
            let mut cmd = env.mb("r", "h1");
            cmd.env("GIT_SSL_CAINFO", &ca).env("SSL_CERT_FILE", &ca);
            cmd.env("MEMORY_BACKUP_TRANSPORT", transport)
                .env("GIT_CONFIG_GLOBAL", &config)
                .args(args)
                .output()
                .expect("run memory-backup")
        };
        let mut outputs = vec![
            run(&["--json", "init", "--remote", &url]),
            run(&["--json", "backup", "--memory", &memory]),
            run(&["status"]),
            run(&["--json", "status"]),
            run(&[
                "-v",
                "restore",
                "--out",
                env.path("restored.json").to_str().unwrap(),
            ]),
        ];
        assert_code(&outputs[0], 0);
        assert_code(&outputs[1], 0);
        assert_eq!(ids(&env.show(&bare, "unified-memory.json")), ["n1"]);
        // Failures quote the URL: a server that is gone, then one that refuses.
        drop(server);
        let memory = env.memory("m.json", r#"[{"id":"n1","content":"two"}]"#);
        outputs.push(run(&[
            "--json",
            "-v",
            "backup",
            "--memory",
            &memory,
            "--max-elapsed",
            "1",
        ]));
        assert_code(&outputs[5], 75);
        outputs.push(run(&["status"]));
        for (i, o) in outputs.iter().enumerate() {
            let text = format!("{}{}", stdout(o), stderr(o));
            assert!(
                !text.contains(TOKEN),
                "{transport}: output {i} shows the token: {text}"
            );
            assert!(!text.contains("ghp_"), "{transport}: output {i}: {text}");
        }
        let logs = env.path("logs-h1");
        let last_runs: Vec<_> = std::fs::read_dir(&logs)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("last-run"))
            .collect();
        assert!(!last_runs.is_empty(), "no last-run file");
        let logged = all_text_under(&logs);
        assert!(
            logged.contains("127.0.0.1"),
            "the logs name no remote: {logged}"
        );
        assert!(!logged.contains("ghp_"), "{transport}: logged: {logged}");
    }
}

/// The mode bits of every file and folder under `dir` (itself included) that
/// others than the user may read, write or enter.
fn not_private(dir: &Path, out: &mut Vec<String>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if meta.permissions().mode() & 0o077 != 0 {
        out.push(format!(
            "{:o} {}",
            meta.permissions().mode() & 0o777,
            dir.display()
        ));
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            not_private(&e.path(), out);
        }
    }
}

#[test]
fn the_repository_logs_and_last_run_are_private_whatever_the_umask() {
    for transport in TRANSPORTS {
        let env = Env::new();
        let bare = env.bare("remote.git");
        let memory = env.memory("m.json", r#"[{"id":"n1","content":"one"}]"#);
        let run = |args: &[&str]| -> Output {
            // The umask of a careless shell, then the tool itself.
            let mut cmd = Command::new("sh");
            env.hermetic(&mut cmd);
            cmd.args(["-c", "umask 000; exec \"$@\"", "sh", BIN])
                .env("MEMORY_BACKUP_TRANSPORT", transport)
                .arg("--repo")
                .arg(env.path("r"))
                .arg("--host")
                .arg("h")
                .arg("--log-dir")
                .arg(env.path("state/logs"))
                .args(args)
                .output()
                .expect("run memory-backup")
        };
        assert_code(&run(&["init", "--remote", bare.to_str().unwrap()]), 0);
        assert_code(&run(&["backup", "--memory", &memory]), 0);
        let memory = env.memory("m.json", r#"[{"id":"n1","content":"two"}]"#);
        assert_code(&run(&["backup", "--memory", &memory]), 0);
        let mut open = Vec::new();
        not_private(&env.path("r"), &mut open);
        not_private(&env.path("state/logs"), &mut open);
        assert!(open.is_empty(), "{transport}: not private: {open:#?}");
    }
}
