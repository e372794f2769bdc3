//! What `tape top` and the service's `/metrics` show: every journal of a
//! root with its rates, writer and readers (with their lag), and the
//! connectors (bridge subscribers) running on the box.
//!
//! Watching costs the writers and readers nothing: journals are read
//! through a read-only [`Cursor`] per journal that walks the frame headers
//! published since the last sample; reader lag comes from the readers'
//! position files ([`tape_journal::position`]), opened read-only, never
//! locked; writer and registered readers come from the service; the
//! connectors (each `tape bridge serve`'s subscribers, each `tape bridge
//! pull`, `tape nats export` and `tape nats import`) from their status
//! sockets in `<root>/system/` ([`tape_service::status_socket`]).

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tape_journal::{Cursor, CursorOptions, Start};

/// One reader of a journal.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReaderRow {
    /// The reader's name.
    pub name: String,
    /// Its process id (0 when unknown).
    pub pid: u32,
    /// Frames behind the writer (`last_seq - seen_seq`); `null` when the
    /// reader keeps no position file (it reads a folder it cannot write).
    pub lag: Option<u64>,
    /// Whether a live process holds it (a resuming reader that ended keeps
    /// its position, not live).
    pub live: bool,
}

/// One journal.
#[derive(Debug, Clone, Serialize)]
pub struct JournalRow {
    /// Journal name.
    pub name: String,
    /// Last sequence number (0: none): the frames ever written.
    pub last_seq: u64,
    /// Frames per second between the last two samples (0 on the first).
    pub fps: f64,
    /// Payload bytes per second between the last two samples.
    pub bytes_per_s: f64,
    /// Payload bytes this watcher has seen written since it began.
    pub bytes_seen: u64,
    /// Bytes the page files take on disk.
    pub disk_bytes: u64,
    /// The writer's pid, if one runs.
    pub writer_pid: Option<u32>,
    /// Its readers: those registered with the service and those with a
    /// position file.
    pub readers: Vec<ReaderRow>,
}

/// One connector: one journal of a bridge subscriber (seen from its
/// `tape bridge serve`), of a `tape bridge pull`, a `tape nats export` or
/// a `tape nats import`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorRow {
    /// Unique on the box: `account@address/journal` (bridge-serve),
    /// `from/journal` (bridge-pull), `stream@server` (nats-export),
    /// `stream@server` (nats-import); ` into REPLICA` when the replica
    /// has another name.
    pub name: String,
    /// `bridge-serve`, `bridge-pull`, `nats-export` or `nats-import`.
    pub kind: String,
    /// The source journal.
    pub journal: String,
    /// The local journal: the source (serve, export) or the replica (pull,
    /// import).
    pub local: String,
    /// The other end: the subscriber's address, the server's address, the
    /// NATS server.
    pub peer: String,
    /// The connector's process id.
    pub pid: u32,
    /// Last seq done: sent (bridge-serve), written to the replica
    /// (bridge-pull), acknowledged by the stream (nats-export), taken from
    /// the stream (nats-import).
    pub seq: u64,
    /// Last seq of the source as the connector knows it.
    pub last_seq: u64,
    /// Frames behind: `last_seq - seq`.
    pub lag: u64,
    /// Last seq the subscriber's replica acknowledged (bridge-serve only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq_acked: Option<u64>,
    /// Frames moved since the connector (or the subscriber) began.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Times it connected again (or started over) after the first.
    pub reconnects: u64,
}

/// One snapshot of the box.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Every journal of the root.
    pub journals: Vec<JournalRow>,
    /// Bridge and NATS connectors.
    pub connectors: Vec<ConnectorRow>,
    /// Connectors whose status socket did not answer (a stopped or stuck
    /// process), one sentence each.
    pub unanswered: Vec<String>,
}

/// A journal followed between samples.
struct Followed {
    cursor: Option<Cursor>,
    bytes: u64,
    last_seq: u64,
}

/// (last seq, payload bytes seen) of each journal at a sample.
type Counts = HashMap<String, (u64, u64)>;

/// Samples a root; keeps a cursor per journal so that each sample walks
/// only the frames published since the one before.
pub struct Watcher {
    root: PathBuf,
    dir: PathBuf,
    followed: HashMap<String, Followed>,
    last: Option<(Instant, Counts)>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("root", &self.root).finish()
    }
}

impl Watcher {
    /// Watches the journals of `root` (`<root>/journal`).
    pub fn new(root: &Path) -> Watcher {
        Watcher {
            root: root.to_path_buf(),
            dir: tape_journal::journal_dir(root),
            followed: HashMap::new(),
            last: None,
        }
    }

    /// Walks `name`'s frames published since the last call; returns its
    /// (last seq, payload bytes seen).
    fn follow(&mut self, name: &str) -> (u64, u64) {
        let dir = self.dir.clone();
        let f = self.followed.entry(name.to_string()).or_insert(Followed {
            cursor: None,
            bytes: 0,
            last_seq: 0,
        });
        if f.cursor.is_none() {
            // Read-only, no helper thread: at the end, then each sample
            // walks what was added.
            f.cursor = Cursor::open(&dir, name, Start::End, CursorOptions::default()).ok();
            if let Ok(s) = tape_journal::stats(&dir, name) {
                f.last_seq = s.last_seq;
            }
        }
        if let Some(c) = f.cursor.as_mut() {
            loop {
                match c.next() {
                    Ok(Some(fr)) => {
                        f.bytes += fr.payload().len() as u64;
                        f.last_seq = fr.seq();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Damage or a page gone: open again next time.
                        f.cursor = None;
                        break;
                    }
                }
            }
        }
        (f.last_seq, f.bytes)
    }

    /// Takes a sample. Rates are those since the previous sample (0 on the
    /// first: take two, a second apart).
    pub fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let names = tape_journal::list_journals(&self.dir).unwrap_or_default();
        let registered = Registrations::fetch(&self.root, &self.dir);
        let mut counts: Counts = HashMap::new();
        let mut journals = Vec::new();
        for name in names {
            let (last_seq, bytes) = self.follow(&name);
            counts.insert(name.clone(), (last_seq, bytes));
            let (fps, bytes_per_s) = match &self.last {
                Some((t, prev)) => {
                    let dt = now.duration_since(*t).as_secs_f64().max(1e-6);
                    let (s0, b0) = prev.get(&name).copied().unwrap_or((last_seq, bytes));
                    (
                        last_seq.saturating_sub(s0) as f64 / dt,
                        bytes.saturating_sub(b0) as f64 / dt,
                    )
                }
                None => (0.0, 0.0),
            };
            let info = registered.get(&name);
            let writer_pid = registered.writer_pid(&name);
            let positions =
                tape_journal::position::list_positions(&self.dir, &name).unwrap_or_default();
            let mut readers: Vec<ReaderRow> = Vec::new();
            for r in info.map(|i| i.readers.as_slice()).unwrap_or_default() {
                let pos = positions.iter().find(|p| p.reader == r.name);
                readers.push(ReaderRow {
                    name: r.name.clone(),
                    pid: r.pid,
                    lag: pos.map(|p| p.lag(last_seq)),
                    live: true,
                });
            }
            for p in &positions {
                if readers.iter().any(|r| r.name == p.reader) {
                    continue;
                }
                readers.push(ReaderRow {
                    name: p.reader.clone(),
                    pid: p.holder.unwrap_or(p.pid),
                    lag: Some(p.lag(last_seq)),
                    live: p.is_live(),
                });
            }
            let disk_bytes = tape_journal::stats(&self.dir, &name).map_or(0, |s| s.disk_bytes);
            journals.push(JournalRow {
                name,
                last_seq,
                fps,
                bytes_per_s,
                bytes_seen: bytes,
                disk_bytes,
                writer_pid,
                readers,
            });
        }
        self.followed.retain(|n, _| counts.contains_key(n));
        self.last = Some((now, counts));
        let (connectors, unanswered) = connectors(&self.root);
        Snapshot {
            journals,
            connectors,
            unanswered,
        }
    }
}

/// The service's registrations of one journal folder, to look journals
/// up in (`tape ls`, `tape top`, `/metrics`).
#[derive(Debug)]
pub struct Registrations {
    dir: PathBuf,
    canon: PathBuf,
    list: Vec<tape_service::JournalInfo>,
}

impl Registrations {
    /// Asks the service of `root` (none running: no registrations) about
    /// the journals of `dir`.
    pub fn fetch(root: &Path, dir: &Path) -> Registrations {
        let list = tape_service::Client::connect(root)
            .ok()
            .and_then(|mut c| c.journals().ok())
            .unwrap_or_default();
        Registrations {
            dir: dir.to_path_buf(),
            canon: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
            list,
        }
    }

    /// Journal `name` of the folder, as registered.
    pub fn get(&self, name: &str) -> Option<&tape_service::JournalInfo> {
        self.list
            .iter()
            .find(|j| j.journal == name && j.dir == self.canon)
    }

    /// The pid of `name`'s writer: from the service, else from the
    /// journal's lock (a writer that runs while the service does not).
    pub fn writer_pid(&self, name: &str) -> Option<u32> {
        self.get(name)
            .and_then(|i| i.writer.as_ref().map(|w| w.pid))
            .or_else(|| tape_journal::lock_holder(&self.dir, name))
    }
}

/// How long a sample waits for one connector's status socket.
const CONNECTOR_TIMEOUT: Duration = Duration::from_secs(1);

/// `name`, and ` into REPLICA` when the replica is named otherwise.
fn into(name: String, journal: &str, replica: &str) -> String {
    if journal == replica {
        name
    } else {
        format!("{name} into {replica}")
    }
}

/// Every connector running on `root`, one row per journal, and a sentence
/// for each one that did not answer.
fn connectors(root: &Path) -> (Vec<ConnectorRow>, Vec<String>) {
    let mut out = Vec::new();
    let mut unanswered = Vec::new();
    for server in tape_bridge::status::query(root, CONNECTOR_TIMEOUT) {
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                unanswered.push(format!("bridge-serve: {e}"));
                continue;
            }
        };
        for s in &server.subscribers {
            for j in &s.journals {
                out.push(ConnectorRow {
                    name: format!("{}@{}/{}", s.account, s.address, j.journal),
                    kind: "bridge-serve".into(),
                    journal: j.journal.clone(),
                    local: j.journal.clone(),
                    peer: format!("{}@{}", s.account, s.address),
                    pid: server.pid,
                    seq: j.seq_sent,
                    last_seq: j.last_seq,
                    lag: j.lag,
                    seq_acked: Some(j.seq_acked),
                    frames: j.frames,
                    bytes: j.bytes,
                    reconnects: 0,
                });
            }
        }
    }
    for pull in tape_bridge::status::query_pulls(root, CONNECTOR_TIMEOUT) {
        let pull = match pull {
            Ok(p) => p,
            Err(e) => {
                unanswered.push(format!("bridge-pull: {e}"));
                continue;
            }
        };
        for j in &pull.journals {
            out.push(ConnectorRow {
                name: into(
                    format!("{}/{}", pull.from, j.journal),
                    &j.journal,
                    &j.replica,
                ),
                kind: "bridge-pull".into(),
                journal: j.journal.clone(),
                local: j.replica.clone(),
                peer: pull.from.clone(),
                pid: pull.pid,
                seq: j.seq,
                last_seq: j.last_seq,
                lag: j.lag,
                seq_acked: None,
                frames: j.frames,
                bytes: j.bytes,
                reconnects: pull.reconnects,
            });
        }
    }
    for st in tape_nats::status::query_local(root, CONNECTOR_TIMEOUT) {
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                unanswered.push(format!("nats: {e}"));
                continue;
            }
        };
        for c in &st.connectors {
            out.push(ConnectorRow {
                name: into(
                    format!("{}@{}", c.stream, st.server),
                    &c.journal,
                    &c.replica,
                ),
                kind: st.kind.clone(),
                journal: c.journal.clone(),
                local: c.replica.clone(),
                peer: st.server.clone(),
                pid: st.pid,
                seq: c.seq,
                last_seq: c.last_seq,
                lag: c.lag,
                seq_acked: None,
                frames: c.frames,
                bytes: c.bytes,
                reconnects: c.reconnects,
            });
        }
    }
    (out, unanswered)
}
