//! `tape service --metrics ADDR`: `/metrics` in the Prometheus text format
//! (version 0.0.4), served over HTTP/1.x by a small blocking server on one
//! thread of the service process.
//!
//! Why a `std::net::TcpListener` and not a crate: the server answers one
//! GET a scrape, closes the connection after each answer, and must never
//! panic or stall the service on a malformed request; a hundred lines of
//! std do that with no new dependency, and the text format is a few lines
//! per metric. Each connection gets 2 s to send its request head (at most
//! 8 KiB); anything that is not `GET /metrics` gets a 4xx and is closed.
//! Metric names are in service/PROTOCOL.md ("Metrics").

use crate::watch::{Snapshot, Watcher};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tape_service::Counters;

/// Longest request head accepted.
const MAX_HEAD: usize = 8192;

/// The metrics server; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves the metrics of `root` (and the service's
    /// `counters`) on a thread.
    pub fn start(addr: &str, root: &Path, counters: Arc<CountersRef>) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let mut watcher = Watcher::new(root);
        let thread = std::thread::Builder::new()
            .name("tape-metrics".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = serve(s, &mut watcher, &*counters);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(MetricsServer {
            stop,
            addr: local,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the service's counters are read from.
pub type CountersRef = dyn Fn() -> (u64, u64, u64) + Send + Sync;

/// Reads the service counters (connections, registrations, refusals).
pub fn read_counters(c: &Counters) -> (u64, u64, u64) {
    (
        c.connections.load(Ordering::Relaxed),
        c.registrations.load(Ordering::Relaxed),
        c.refusals.load(Ordering::Relaxed),
    )
}

/// Answers one connection.
fn serve(mut s: TcpStream, watcher: &mut Watcher, counters: &CountersRef) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let (status, body) = if !complete {
        (
            "400 Bad Request",
            "a request head of at most 8 KiB ending in a blank line was expected\n".to_string(),
        )
    } else {
        route(&head, watcher, counters)
    };
    let ctype = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes())?;
    let _ = s.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// The status and body for a complete request head.
fn route(head: &[u8], watcher: &mut Watcher, counters: &CountersRef) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let ok_version = version.is_some_and(|v| v.starts_with("HTTP/1.")) && parts.next().is_none();
    match (method, target) {
        _ if !ok_version => (
            "400 Bad Request",
            "expected: GET /metrics HTTP/1.1\n".into(),
        ),
        (Some("GET"), Some(t)) if t == "/metrics" || t.starts_with("/metrics?") => {
            ("200 OK", render(&watcher.sample(), counters()))
        }
        (Some("GET"), _) => ("404 Not Found", "only /metrics is served\n".into()),
        _ => (
            "405 Method Not Allowed",
            "only GET /metrics is served\n".into(),
        ),
    }
}

/// A label value escaped for the text format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP, TYPE and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The text exposition of a snapshot and the service counters.
pub fn render(snap: &Snapshot, (conns, regs, refusals): (u64, u64, u64)) -> String {
    let mut out = String::new();
    let per = |f: &dyn Fn(&crate::watch::JournalRow) -> f64| -> Vec<(String, f64)> {
        snap.journals
            .iter()
            .map(|j| (format!("journal=\"{}\"", esc(&j.name)), f(j)))
            .collect()
    };
    family(
        &mut out,
        "tape_journal_frames_total",
        "counter",
        "Frames written to the journal (its last sequence number).",
        &per(&|j| j.last_seq as f64),
    );
    family(
        &mut out,
        "tape_journal_bytes_total",
        "counter",
        "Payload bytes written to the journal since the service began watching it.",
        &per(&|j| j.bytes_seen as f64),
    );
    family(
        &mut out,
        "tape_journal_last_seq",
        "gauge",
        "Sequence number of the journal's last frame (0: none).",
        &per(&|j| j.last_seq as f64),
    );
    family(
        &mut out,
        "tape_journal_disk_bytes",
        "gauge",
        "Bytes the journal's page files take on disk.",
        &per(&|j| j.disk_bytes as f64),
    );
    family(
        &mut out,
        "tape_journal_readers",
        "gauge",
        "Live readers of the journal.",
        &per(&|j| j.readers.iter().filter(|r| r.live).count() as f64),
    );
    let lags: Vec<(String, f64)> = snap
        .journals
        .iter()
        .flat_map(|j| {
            j.readers.iter().filter_map(move |r| {
                r.lag.map(|lag| {
                    (
                        format!("journal=\"{}\",reader=\"{}\"", esc(&j.name), esc(&r.name)),
                        lag as f64,
                    )
                })
            })
        })
        .collect();
    family(
        &mut out,
        "tape_reader_lag_frames",
        "gauge",
        "Frames a reader is behind the journal's writer (from its position file).",
        &lags,
    );
    family(
        &mut out,
        "tape_service_connections_total",
        "counter",
        "Connections the service accepted.",
        &[(String::new(), conns as f64)],
    );
    family(
        &mut out,
        "tape_service_registrations_total",
        "counter",
        "Registrations (writers, readers, endpoints) the service accepted.",
        &[(String::new(), regs as f64)],
    );
    family(
        &mut out,
        "tape_service_refusals_total",
        "counter",
        "Registrations the service refused (journal held, name taken, limits, invalid).",
        &[(String::new(), refusals as f64)],
    );
    let conn = |f: &dyn Fn(&crate::watch::ConnectorRow) -> Option<u64>| -> Vec<(String, f64)> {
        snap.connectors
            .iter()
            .filter_map(|c| {
                let labels = format!(
                    "connector=\"{}\",kind=\"{}\",journal=\"{}\"",
                    esc(&c.name),
                    esc(&c.kind),
                    esc(&c.journal)
                );
                f(c).map(|v| (labels, v as f64))
            })
            .collect()
    };
    family(
        &mut out,
        "tape_connector_seq",
        "gauge",
        "Last sequence number a connector has done: sent (bridge-serve), written (bridge-pull), acknowledged by the stream (nats-export), taken (nats-import).",
        &conn(&|c| Some(c.seq)),
    );
    family(
        &mut out,
        "tape_connector_last_seq",
        "gauge",
        "Last sequence number of the connector's source journal, as the connector knows it.",
        &conn(&|c| Some(c.last_seq)),
    );
    family(
        &mut out,
        "tape_connector_lag_frames",
        "gauge",
        "Frames a connector is behind its source journal.",
        &conn(&|c| Some(c.lag)),
    );
    family(
        &mut out,
        "tape_connector_seq_acked",
        "gauge",
        "Last sequence number a bridge subscriber's replica acknowledged (bridge-serve).",
        &conn(&|c| c.seq_acked),
    );
    family(
        &mut out,
        "tape_connector_frames_total",
        "counter",
        "Frames a connector moved since it (or its subscriber) began.",
        &conn(&|c| Some(c.frames)),
    );
    family(
        &mut out,
        "tape_connector_bytes_total",
        "counter",
        "Payload bytes a connector moved since it (or its subscriber) began.",
        &conn(&|c| Some(c.bytes)),
    );
    family(
        &mut out,
        "tape_connector_reconnects_total",
        "counter",
        "Times a connector connected again (or started over) after its first connection.",
        &conn(&|c| Some(c.reconnects)),
    );
    family(
        &mut out,
        "tape_connectors_unanswered",
        "gauge",
        "Connector status sockets that did not answer within 1 s (a stopped or stuck process).",
        &[(String::new(), snap.unanswered.len() as f64)],
    );
    out
}
