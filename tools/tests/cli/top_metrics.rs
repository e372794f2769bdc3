//! `tape top --once --json` and `tape service --metrics`: one writer at a
//! known rate, two readers, one of them SIGSTOPped (issue 19, parts 1, 2).

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Frames per second the feeder writes.
const RATE: u64 = 200;
/// Payload of each frame: 15 bytes and the newline `tape write` drops.
const LINE: &[u8] = b"0123456789abcde\n";

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Parses the text format: every sample's family has HELP and TYPE;
/// returns (name{labels}, value, type).
fn parse(body: &str) -> Vec<(String, f64, String)> {
    let mut help = std::collections::HashSet::new();
    let mut types = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in body.lines() {
        if let Some(r) = line.strip_prefix("# HELP ") {
            help.insert(r.split(' ').next().unwrap().to_string());
        } else if let Some(r) = line.strip_prefix("# TYPE ") {
            let mut p = r.split(' ');
            types.insert(p.next().unwrap().to_string(), p.next().unwrap().to_string());
        } else if !line.is_empty() {
            let (key, v) = line.rsplit_once(' ').expect("name value");
            let name = key.split('{').next().unwrap();
            assert!(help.contains(name), "no HELP for {name}");
            let t = types
                .get(name)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            out.push((key.to_string(), v.parse().expect("a number"), t.clone()));
        }
    }
    out
}

fn value(m: &[(String, f64, String)], key: &str) -> f64 {
    m.iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
}

#[test]
fn top_and_metrics_show_rates_and_a_stopped_readers_growing_lag() {
    let root = Root::new();
    let mut svc = Kid::spawn(
        "tape service --metrics",
        root.tape("service", &["--metrics", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut err = BufReader::new(svc.child.stderr.take().unwrap());
    let mut addr = String::new();
    while addr.is_empty() {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "service ended");
        if let Some(a) = line.trim().strip_prefix("tape service: metrics on http://") {
            addr = a.trim_end_matches("/metrics").to_string();
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let mut writer = Kid::spawn(
        "tape write",
        root.tape("write", &["md"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut stdin = writer.stdin();
    let feeder = std::thread::spawn(move || {
        let t0 = Instant::now();
        for i in 0..RATE * 30 {
            let at = t0 + Duration::from_micros(i * 1_000_000 / RATE);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if stdin.write_all(LINE).and_then(|_| stdin.flush()).is_err() {
                return;
            }
        }
    });
    let dir = root.journal_dir();
    wait_until("md to exist", || tape_journal::stats(&dir, "md").is_ok());
    let mut readers = Vec::new();
    for name in ["fast", "stopped"] {
        readers.push(Kid::spawn(
            name,
            root.tape("tail", &["md", "--follow", "--resume", name])
                .stdout(Stdio::null()),
        ));
    }
    wait_until("both positions", || {
        tape_journal::position::list_positions(&dir, "md")
            .unwrap()
            .len()
            == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(readers[1].pid() as i32, libc::SIGSTOP) };
    let top = || -> serde_json::Value {
        serde_json::from_slice(&ok(&mut root.tape("top", &["--once", "--json"]), b"")).unwrap()
    };
    let lag_of = |v: &serde_json::Value, r: &str| -> u64 {
        let md = &v["journals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "md")
            .unwrap();
        md["readers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == r)
            .unwrap()["lag"]
            .as_u64()
            .unwrap()
    };
    let first = top();
    let m1 = parse(&scrape(&addr));
    let second = top();
    let m2 = parse(&scrape(&addr));
    for v in [&first, &second] {
        let md = v["journals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "md")
            .unwrap();
        let fps = md["fps"].as_f64().unwrap();
        let bps = md["bytes_per_s"].as_f64().unwrap();
        assert!(
            (fps - RATE as f64).abs() <= RATE as f64 * 0.1,
            "fps {fps}: {v}"
        );
        let want = (RATE * (LINE.len() as u64 - 1)) as f64;
        assert!((bps - want).abs() <= want * 0.1, "bytes/s {bps}: {v}");
        assert_eq!(md["writer_pid"].as_u64(), Some(writer.pid() as u64));
        assert!(v["connectors"].is_array());
    }
    assert!(
        lag_of(&second, "stopped") > lag_of(&first, "stopped"),
        "{first} {second}"
    );
    assert!(lag_of(&second, "fast") < RATE, "{second}");
    let lag = r#"tape_reader_lag_frames{journal="md",reader="stopped"}"#;
    assert!(value(&m2, lag) > value(&m1, lag));
    for (k, v, t) in &m1 {
        if t == "counter" {
            assert!(value(&m2, k) >= *v, "{k} went down");
        }
    }
    assert!(
        value(&m2, r#"tape_journal_frames_total{journal="md"}"#)
            > value(&m1, r#"tape_journal_frames_total{journal="md"}"#)
    );
    assert!(value(&m2, "tape_service_registrations_total") >= 3.0);
    assert_eq!(value(&m2, r#"tape_journal_readers{journal="md"}"#), 2.0);
    // A malformed request: an error answer, and the service goes on.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    s.write_all(b"\x00\xffgarbage\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(svc.exited().is_none());
    parse(&scrape(&addr));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(readers[1].pid() as i32, libc::SIGCONT) };
    drop(readers);
    drop(writer);
    let _ = feeder.join();
}
