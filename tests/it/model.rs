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

fn field(m: &Value, k: &str) -> f64 {
    m[k].as_f64().unwrap_or_else(|| panic!("no {k}: {m}"))
}

#[test]
fn one_host_alone_lands_its_first_attempt_in_the_cost_of_one_attempt() {
    for design in ["park", "retry"] {
        let m = run(&[
            "--design", design, "--hosts", "1", "--rounds", "3", "--client", "0.2", "--server",
            "0.1", "--runs", "1", "--spread", "0",
        ]);
        assert!(close(&m["round1_wall"], 0.3), "{m}");
        assert!(close(&m["later_wall"], 0.3), "{m}");
        assert_eq!(field(&m, "attempts_max"), 1.0, "{m}");
        assert_eq!(field(&m, "parked_share"), 0.0, "{m}");
        // Three rounds and a settling run, one attempt each.
        assert!(close(&m["total"], 3.0 * 0.3 + 0.3), "{m}");
    }
}

#[test]
fn of_two_hosts_sharing_one_core_the_one_refused_parks_at_the_cost_of_a_park_and_a_push() {
    // Both fetch the same tip at 0; sharing one core, both client phases end at
    // 0.4 and both server phases at 0.6. Host 0 lands; host 1 is refused after
    // the server's work and parks at once: 0.05 to commit its own file, 0.1 for
    // the server to take it, alone on the core.
    let m = run(&[
        "--hosts", "2", "--cores", "1", "--client", "0.2", "--server", "0.1", "--park", "0.05",
        "--runs", "1", "--rounds", "1", "--spread", "0",
    ]);
    assert!(close(&m["round1_wall"], 0.75), "{m}");
    assert_eq!(field(&m, "attempts_max"), 2.0, "{m}");
    assert_eq!(field(&m, "attempts_median"), 1.5, "{m}");
    assert_eq!(field(&m, "parked_share"), 0.5, "{m}");
    assert_eq!(field(&m, "gave_up_share"), 0.0, "{m}");
}

#[test]
fn parking_bounds_the_attempts_of_a_run_however_many_hosts_race() {
    // Refused once on the branch, a run parks on its own ref, which no other
    // host pushes to: two attempts at most, and no run gives up.
    for hosts in ["10", "200"] {
        let m = run(&[
            "--hosts", hosts, "--rounds", "3", "--client", "0.02", "--server", "0.005", "--fold",
            "0.001", "--park", "0.005", "--runs", "2",
        ]);
        assert!(field(&m, "attempts_max") <= 2.0, "{m}");
        assert_eq!(field(&m, "gave_up_share"), 0.0, "{m}");
        assert!(field(&m, "parked_share") > 0.0, "{m}");
    }
}

#[test]
fn without_parking_a_round_never_ends_before_its_landings_could_follow_one_another() {
    // Each landing needs a fetch of the one before, and no phase runs faster than
    // one core: N landings in a row, each of at least (1 - spread) (c + s), are a
    // floor whatever the jitter and the number of cores.
    for (hosts, cores, spread) in [("5", "64", "0"), ("20", "64", "0"), ("20", "2", "0.5")] {
        let m = run(&[
            "--design", "retry", "--hosts", hosts, "--cores", cores, "--client", "0.05",
            "--server", "0.02", "--runs", "5", "--rounds", "1", "--spread", spread,
        ]);
        let n: f64 = hosts.parse().unwrap();
        let f: f64 = 1.0 - spread.parse::<f64>().unwrap();
        assert!(field(&m, "round1_wall") >= n * f * 0.07 - 1e-9, "{m}");
        assert_eq!(field(&m, "gave_up_share"), 0.0, "{m}");
    }
}

#[test]
fn without_parking_hosts_that_keep_losing_retry_until_max_elapsed_and_then_give_up() {
    // 30 hosts, attempts of exactly 0.2 s, cores for all: landings follow one
    // another, at most one per 0.2 s, so at most 11 land in 2 s; the others retry
    // until then and give up.
    let m = run(&[
        "--design",
        "retry",
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
    assert!(field(&m, "gave_up_share") >= 19.0 / 30.0 - 1e-9, "{m}");
    assert!(field(&m, "attempts_max") > 1.0, "no host retried: {m}");
    assert!(
        field(&m, "round1_wall") >= 2.0,
        "gave up before --max-elapsed: {m}"
    );
}

#[test]
fn bad_costs_and_spreads_are_refused_with_a_usage_error() {
    for (args, says) in [
        (&["--client", "0,1"][..], "each cost needs A positive"),
        (&["--server", "fast"][..], "not a list of A or A+B seconds"),
        (&["--client", "nan"][..], "each cost needs A positive"),
        (&["--park", "-1"][..], "each cost needs A positive"),
        (&["--spread", "1"][..], "0 <= --spread < 1"),
        (&["--max-elapsed", "0"][..], "must be positive and finite"),
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
