//! `scripts/contention-model`, the model of many hosts pushing at once: its
//! figures in the cases that can be worked out by hand.

use std::process::Command;

use serde_json::Value;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/contention-model");

/// The model's one JSON line for the given arguments.
fn run(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(MODEL)
        .args(args)
        .arg("--json")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    serde_json::from_str(lines[0]).unwrap()
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-9
}

#[test]
fn one_host_alone_lands_its_first_attempt_in_the_cost_of_one_attempt() {
    let m = run(&[
        "--hosts", "1", "--rounds", "3", "--client", "0.2", "--server", "0.1", "--runs", "1",
        "--spread", "0",
    ]);
    let round = &m["round"];
    assert!(close(&round["wall"], 0.3), "{m}");
    assert_eq!(round["attempts"], 1.0);
    assert_eq!(round["landed"], 1.0);
    assert!(close(&m["total"], 3.0 * 0.3 + 0.3), "{m}");
}

#[test]
fn two_hosts_sharing_one_core_take_twice_as_long_and_the_second_is_refused_after_the_server_work() {
    // Both fetch the same tip at 0; sharing one core, both client phases end at
    // 0.4 and both server phases at 0.6. Host 0 lands; host 1 is refused late,
    // backs off at most 100 ms and lands alone in 0.3 more.
    let m = run(&[
        "--hosts", "2", "--cores", "1", "--client", "0.2", "--server", "0.1", "--runs", "1",
        "--rounds", "1", "--spread", "0",
    ]);
    let round = &m["round"];
    assert_eq!(round["attempts"], 3.0, "{m}");
    assert_eq!(round["landed"], 2.0);
    assert_eq!(round["refused_late"], 1.0);
    assert_eq!(round["refused_early"], 0.0);
    let wall = round["wall"].as_f64().unwrap();
    assert!((0.9 - 1e-9..=1.0 + 1e-9).contains(&wall), "{m}");
}

#[test]
fn a_retry_that_fetched_before_a_landing_is_refused_before_the_server_works() {
    // Long client phases and a short server phase. The eight first attempts reach
    // the server together: one lands, seven are refused after the server's work.
    // Their retries start within 100 ms of one another and merge for 0.5 s, so a
    // retry that fetched before another's landing finds the tip moved when its
    // merge is done, and sends nothing.
    let m = run(&[
        "--hosts", "8", "--cores", "8", "--client", "0.5", "--server", "0.01", "--runs", "1",
        "--rounds", "1", "--seed", "1", "--spread", "0",
    ]);
    let round = &m["round"];
    let field = |k: &str| round[k].as_f64().unwrap();
    assert_eq!(field("landed"), 8.0, "{m}");
    assert_eq!(field("gave_up"), 0.0, "{m}");
    assert!(field("refused_early") > 0.0, "{m}");
    assert!(field("refused_late") >= 7.0, "{m}");
    // Each of the seven refused hosts needed at least one more attempt.
    assert!(field("attempts") >= 15.0, "{m}");
}

#[test]
fn a_round_never_ends_before_its_landings_could_follow_one_another() {
    // Each landing needs a fetch of the one before, and no phase runs faster than
    // one core: N landings in a row, each of at least (1 - spread) (c + s), are a
    // floor whatever the jitter and the number of cores.
    for (hosts, cores, spread) in [("5", "64", "0"), ("20", "64", "0"), ("20", "2", "0.5")] {
        let m = run(&[
            "--hosts", hosts, "--cores", cores, "--client", "0.05", "--server", "0.02", "--runs",
            "5", "--rounds", "1", "--spread", spread,
        ]);
        let n: f64 = hosts.parse().unwrap();
        let f: f64 = 1.0 - spread.parse::<f64>().unwrap();
        let wall = m["round"]["wall"].as_f64().unwrap();
        assert!(wall >= n * f * 0.07 - 1e-9, "{m}");
        assert_eq!(m["round"]["landed"].as_f64().unwrap(), n, "{m}");
        assert_eq!(m["round"]["gave_up"], 0.0, "{m}");
    }
}

#[test]
fn hosts_that_keep_losing_retry_until_max_elapsed_and_then_give_up() {
    // 30 hosts, attempts of exactly 0.2 s, cores for all: landings follow one
    // another, at most one per 0.2 s, so at most 11 land in 2 s; the others retry
    // until then and give up at their first refusal after it. Every host either
    // lands or gives up, once.
    let m = run(&[
        "--hosts",
        "30",
        "--cores",
        "64",
        "--client",
        "0.1",
        "--server",
        "0.1",
        "--runs",
        "1",
        "--rounds",
        "1",
        "--max-elapsed",
        "2",
        "--spread",
        "0",
    ]);
    let round = &m["round"];
    let field = |k: &str| round[k].as_f64().unwrap();
    assert!(field("gave_up") > 0.0, "{m}");
    assert!(field("landed") <= 11.0, "{m}");
    assert_eq!(field("landed") + field("gave_up"), 30.0, "{m}");
    assert!(field("attempts") > 30.0, "no host retried: {m}");
    assert!(field("wall") >= 2.0, "gave up before --max-elapsed: {m}");
}

#[test]
fn bad_costs_and_spreads_are_refused_with_a_usage_error() {
    for (args, says) in [
        (&["--client", "0,1"][..], "costs must be positive seconds"),
        (&["--server", "fast"][..], "not a list of seconds"),
        (&["--client", "nan"][..], "costs must be positive seconds"),
        (&["--spread", "1"][..], "0 <= --spread < 1"),
        (&["--max-elapsed", "0"][..], "--max-elapsed > 0"),
    ] {
        let out = Command::new("python3")
            .arg(MODEL)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
