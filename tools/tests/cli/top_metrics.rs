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

pub fn scrape(addr: &str) -> String {
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
pub fn parse(body: &str) -> Vec<(String, f64, String)> {
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

pub fn value(m: &[(String, f64, String)], key: &str) -> f64 {
    m.iter()
        .find(|(k, _, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
}

/// `tape service --metrics 127.0.0.1:0` on `root`; returns it and the
/// address it serves `/metrics` on.
pub fn metrics_service(root: &Root) -> (Kid, String) {
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
    (svc, addr)
}

#[test]
fn top_and_metrics_show_rates_and_a_stopped_readers_growing_lag() {
    let root = Root::new();
    let (mut svc, addr) = metrics_service(&root);
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
    counters_only_grow(&m1, &m2);
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

/// Every counter of the `earlier` scrape is at least as high in `later`.
fn counters_only_grow(earlier: &[(String, f64, String)], later: &[(String, f64, String)]) {
    for (k, v, t) in earlier {
        if t == "counter" {
            assert!(value(later, k) >= *v, "{k} went down");
        }
    }
}

/// `tape top --once --json` on `root`.
fn top_of(root: &Root) -> serde_json::Value {
    serde_json::from_slice(&ok(&mut root.tape("top", &["--once", "--json"]), b"")).unwrap()
}

/// The connector rows of `kind` in a `tape top` snapshot.
fn rows(v: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    v["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == kind)
        .cloned()
        .collect()
}

/// The one connector row of `kind`.
fn row(v: &serde_json::Value, kind: &str) -> serde_json::Value {
    let r = rows(v, kind);
    assert_eq!(r.len(), 1, "one {kind} in {v}");
    r[0].clone()
}

/// Payload bytes of `lines(range)` as frames (without the newlines).
fn payload_bytes(range: std::ops::RangeInclusive<u64>) -> u64 {
    range.map(|i| i.to_string().len() as u64).sum()
}

/// The status sockets of `kind` in `root`.
fn sockets(root: &Root, kind: &str) -> Vec<String> {
    std::fs::read_dir(root.path().join("system"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix(kind)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| {
                    r.starts_with(|c: char| c.is_ascii_digit()) && r.ends_with(".sock")
                })
        })
        .collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

#[test]
fn nats_export_and_import_show_in_top_and_metrics_with_their_lag() {
    use crate::bridge::setup::Side;
    use crate::nats::engine::{Engine, Nats};
    let (a, a_metrics) = Side::with_metrics();
    let (b, b_metrics) = Side::with_metrics();
    let mut engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let mut w = LiveWriter::start(&a.root, "md");
    w.send(&lines(1..=1000));
    let export = Nats::start(&a, "export", &url, &["md"]);
    export.log.wait_for("the stream to be created", |l| {
        l.contains("created stream TAPE_md")
    });
    let mut import = Nats::start(&b, "import", &url, &["md", "--into", "md2"]);
    b.wait_seq("md2", 1000);
    let name = format!("TAPE_md@{url}");
    wait_until("the export's ack of seq 1000", || {
        row(&top_of(&a.root), "nats-export")["seq"] == 1000
    });
    let ta = top_of(&a.root);
    let e = row(&ta, "nats-export");
    assert_eq!(e["name"], name, "{ta}");
    assert_eq!(e["journal"], "md");
    assert_eq!(e["pid"].as_u64(), Some(export.kid.pid() as u64));
    assert_eq!(
        (e["last_seq"].as_u64(), e["lag"].as_u64()),
        (Some(1000), Some(0))
    );
    // Published: a frame published again after a failed publish counts
    // again.
    assert!(e["frames"].as_u64().unwrap() >= 1000, "{e}");
    assert!(
        e["bytes"].as_u64().unwrap() >= payload_bytes(1..=1000),
        "{e}"
    );
    let tb = top_of(&b.root);
    let i = row(&tb, "nats-import");
    assert_eq!(i["name"], format!("{name} into md2"), "{tb}");
    assert_eq!(i["local"], "md2");
    assert_eq!(i["pid"].as_u64(), Some(import.kid.pid() as u64));
    assert_eq!(
        (i["seq"].as_u64(), i["lag"].as_u64()),
        (Some(1000), Some(0))
    );
    assert_eq!(i["frames"].as_u64(), Some(1000));
    assert_eq!(i["bytes"].as_u64(), Some(payload_bytes(1..=1000)));
    assert!(rows(&ta, "nats-import").is_empty() && rows(&tb, "nats-export").is_empty());
    let labels =
        |kind: &str, n: &str| format!("{{connector=\"{n}\",kind=\"{kind}\",journal=\"md\"}}");
    let el = labels("nats-export", &name);
    let il = labels("nats-import", &format!("{name} into md2"));
    let m1 = parse(&scrape(&a_metrics));
    assert_eq!(value(&m1, &format!("tape_connector_seq{el}")), 1000.0);
    assert!(value(&m1, &format!("tape_connector_frames_total{el}")) >= 1000.0);
    let mb = parse(&scrape(&b_metrics));
    assert_eq!(value(&mb, &format!("tape_connector_seq{il}")), 1000.0);
    assert_eq!(value(&mb, &format!("tape_connector_lag_frames{il}")), 0.0);

    // The server stopped: the writer goes on, the export cannot publish,
    // its lag grows.
    let server_pid = engine.kid.as_ref().unwrap().pid();
    signal(server_pid, libc::SIGSTOP);
    w.send(&lines(1001..=1500));
    wait_until("the export to see 1500", || {
        row(&top_of(&a.root), "nats-export")["last_seq"] == 1500
    });
    let lag1 = row(&top_of(&a.root), "nats-export")["lag"]
        .as_u64()
        .unwrap();
    let m2 = parse(&scrape(&a_metrics));
    w.send(&lines(1501..=2000));
    wait_until("the export to see 2000", || {
        row(&top_of(&a.root), "nats-export")["last_seq"] == 2000
    });
    let e2 = row(&top_of(&a.root), "nats-export");
    let m3 = parse(&scrape(&a_metrics));
    signal(server_pid, libc::SIGCONT);
    assert!(lag1 >= 1, "lag {lag1} with the server stopped");
    assert!(
        e2["lag"].as_u64().unwrap() >= lag1 + 500,
        "{e2} after lag {lag1}"
    );
    let lag = format!("tape_connector_lag_frames{el}");
    assert!(value(&m3, &lag) >= value(&m2, &lag) + 500.0);
    counters_only_grow(&m2, &m3);
    b.wait_seq("md2", 2000);
    wait_until("the lag back to 0", || {
        let t = top_of(&a.root);
        row(&t, "nats-export")["lag"] == 0
    });

    // SIGKILLed: its socket stays behind until a reader finds it dead.
    assert_eq!(sockets(&b.root, "nats-import").len(), 1);
    import.kid.kill9();
    assert_eq!(sockets(&b.root, "nats-import").len(), 1, "left by the kill");
    let tb = top_of(&b.root);
    assert!(rows(&tb, "nats-import").is_empty(), "{tb}");
    assert!(
        sockets(&b.root, "nats-import").is_empty(),
        "removed by tape top"
    );
    let mb = parse(&scrape(&b_metrics));
    assert!(mb.iter().all(|(k, _, _)| !k.contains("nats-import")));
    w.finish();
    drop(export);
    engine.kill9();
}

#[test]
fn bridge_serve_and_pull_show_in_top_and_metrics_with_their_lag() {
    use crate::bridge::setup::{wide_lines, Pull, Serve, Side};
    let (src, src_metrics) = Side::with_metrics();
    let (dst, dst_metrics) = Side::with_metrics();
    // The subscriber is stopped below: a long stall timeout keeps it
    // connected (and the serve blocked on its full socket).
    let serve = Serve::with_token(&src, &["--stall-timeout", "600"]);
    let mut w = LiveWriter::start(&src.root, "md");
    w.send(&lines(1..=1000));
    let mut pull = Pull::with_token(&dst, &serve.addr, "acct-1", &["md"]);
    dst.wait_seq("md", 1000);
    wait_until("the serve to have sent 1000", || {
        row(&top_of(&src.root), "bridge-serve")["seq"] == 1000
    });
    let ts = top_of(&src.root);
    let s = row(&ts, "bridge-serve");
    assert_eq!(s["pid"].as_u64(), Some(serve.pid() as u64), "{ts}");
    assert!(
        s["name"].as_str().unwrap().starts_with("acct-1@127.0.0.1:"),
        "{s}"
    );
    assert_eq!(
        (s["last_seq"].as_u64(), s["lag"].as_u64()),
        (Some(1000), Some(0))
    );
    assert_eq!(s["frames"].as_u64(), Some(1000));
    assert_eq!(s["bytes"].as_u64(), Some(payload_bytes(1..=1000)));
    let td = top_of(&dst.root);
    let p = row(&td, "bridge-pull");
    assert_eq!(p["name"], format!("{}/md", serve.addr), "{td}");
    assert_eq!(p["pid"].as_u64(), Some(pull.kid.pid() as u64));
    assert_eq!(
        (p["seq"].as_u64(), p["lag"].as_u64()),
        (Some(1000), Some(0))
    );
    assert_eq!(p["frames"].as_u64(), Some(1000));
    assert_eq!(p["bytes"].as_u64(), Some(payload_bytes(1..=1000)));
    let pl = format!(
        "{{connector=\"{}/md\",kind=\"bridge-pull\",journal=\"md\"}}",
        serve.addr
    );
    let md = parse(&scrape(&dst_metrics));
    assert_eq!(value(&md, &format!("tape_connector_seq{pl}")), 1000.0);
    assert_eq!(
        value(&md, &format!("tape_connector_frames_total{pl}")),
        1000.0
    );
    let sl = format!(
        "{{connector=\"{}\",kind=\"bridge-serve\",journal=\"md\"}}",
        s["name"].as_str().unwrap()
    );
    let ms = parse(&scrape(&src_metrics));
    assert_eq!(value(&ms, &format!("tape_connector_seq{sl}")), 1000.0);

    // The pull stopped: its socket fills (tens of MB on loopback), the
    // serve blocks on it, and its lag grows while the writer goes on.
    signal(pull.kid.pid(), libc::SIGSTOP);
    w.send(&wide_lines(1001..=400_000, 200));
    wait_until("the serve to fall behind", || {
        row(&top_of(&src.root), "bridge-serve")["lag"]
            .as_u64()
            .unwrap()
            > 0
    });
    let lag1 = row(&top_of(&src.root), "bridge-serve")["lag"]
        .as_u64()
        .unwrap();
    let m1 = parse(&scrape(&src_metrics));
    w.send(&wide_lines(400_001..=401_000, 200));
    src.wait_seq("md", 401_000);
    let s2 = row(&top_of(&src.root), "bridge-serve");
    let m2 = parse(&scrape(&src_metrics));
    // The stopped pull does not answer: tape top says so, and goes on.
    let td = top_of(&dst.root);
    assert!(rows(&td, "bridge-pull").is_empty(), "{td}");
    assert_eq!(td["unanswered"].as_array().unwrap().len(), 1, "{td}");
    signal(pull.kid.pid(), libc::SIGCONT);
    assert!(
        s2["lag"].as_u64().unwrap() >= lag1 + 1000,
        "{s2} after lag {lag1}"
    );
    let lag = format!("tape_connector_lag_frames{sl}");
    assert!(value(&m2, &lag) >= value(&m1, &lag) + 1000.0);
    counters_only_grow(&m1, &m2);
    dst.wait_seq("md", 401_000);

    // SIGKILLed: the pull's socket is left behind, then removed by the
    // first reader; the serve loses its subscriber.
    assert_eq!(sockets(&dst.root, "bridge-pull").len(), 1);
    pull.kid.kill9();
    assert_eq!(
        sockets(&dst.root, "bridge-pull").len(),
        1,
        "left by the kill"
    );
    let md = parse(&scrape(&dst_metrics));
    assert!(md.iter().all(|(k, _, _)| !k.contains("bridge-pull")));
    assert!(
        sockets(&dst.root, "bridge-pull").is_empty(),
        "removed by /metrics"
    );
    wait_until("the serve to drop the killed subscriber", || {
        rows(&top_of(&src.root), "bridge-serve").is_empty()
    });
    w.finish();
    drop(serve);
}
