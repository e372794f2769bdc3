//! journal-bench end to end with small counts: every JSON key DESIGN.md
//! fixes is there and no frame is lost. Not timed.

use std::process::Command;

/// Runs journal-bench with small counts plus `extra` and returns its JSON.
fn run_bench(extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_journal-bench"))
        .args([
            "--frames",
            "50000",
            "--latency-secs",
            "0.2",
            "--page-size",
            "1048576",
            "--pingpong",
            "20000",
            "--json",
            "--quiet",
        ])
        .args(extra)
        .output()
        .expect("journal-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "journal-bench failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("journal-bench prints one JSON object")
}

#[test]
fn journal_bench_json_has_every_key_and_loses_nothing() {
    let v = run_bench(&["--rate", "100000"]);
    for key in [
        "frames",
        "size",
        "p50_ns",
        "p99_ns",
        "p999_ns",
        "max_ns",
        "throughput_fps",
        "lost",
        "page_switches",
        "switch_max_ns",
        "floor_ns",
        "pingpong_p50_ns",
        "pingpong_p99_ns",
        "pingpong_p999_ns",
        "pingpong_floor_p50_ns",
        "pingpong_floor_p99_ns",
        "pingpong_floor_p999_ns",
        "ring_fps",
        "stream_fps",
    ] {
        assert!(v.get(key).is_some(), "key {key} missing from {v}");
    }
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["frames"], 50000);
    // Ping-pong: every round trip of both, the floor's and tape's, timed.
    assert_eq!(v["pingpong"]["count"], 20000, "{v}");
    assert_eq!(v["pingpong_floor"]["count"], 20000, "{v}");
    assert_eq!(v["pingpong_round_trips"], 20000, "{v}");
    assert!(v["pingpong_p50_ns"].as_u64().unwrap() > 0, "{v}");
    for key in ["ring_fps", "stream_fps"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert_eq!(v["stream_frames"], 50000, "{v}");
    assert_eq!(v["size"], 64);
    // 20,000 latency frames and 50,000 throughput frames of 112 bytes over
    // 1 MiB pages switch pages several times.
    assert!(v["page_switches"].as_u64().unwrap() >= 5, "{v}");
    assert!(v["p50_ns"].as_u64().unwrap() > 0, "{v}");
    assert!(v["throughput_fps"].as_f64().unwrap() > 0.0, "{v}");
    // 50,000 frames of 112 bytes fill 6 pages of 1 MiB: 6 made ahead.
    assert_eq!(v["pages_ahead"], 6, "{v}");
    // The floor's queued distribution counts every sample, seen or
    // overwritten; its plain one those its reader saw.
    assert_eq!(v["floor_queued"]["count"], 20000, "{v}");
    let seen = v["floor"]["count"].as_u64().unwrap();
    let missed = v["floor_missed"].as_u64().unwrap();
    assert_eq!(seen + missed, 20000, "{v}");
    assert!(v["switch_first_p50_ns"].is_u64(), "{v}");
    let pct = v["floor_missed_pct"].as_f64().unwrap();
    assert!((pct - missed as f64 / 200.0).abs() < 1e-9, "{v}");
}

#[test]
fn journal_bench_four_readers_on_few_cores_lose_nothing() {
    let v = run_bench(&["--readers", "4", "--rate", "50000"]);
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["readers"], 4);
    // Every reader's every frame: 4 x 10,000 latency samples.
    assert_eq!(v["latency"]["count"], 40000, "{v}");
}
