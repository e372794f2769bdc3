//! What `tape top` and the service's `/metrics` show: every journal of a
//! root with its rates, writer and readers (with their lag), and the
//! connectors (bridge subscribers) running on the box.
//!
//! Watching costs the writers and readers nothing: journals are read
//! through a read-only [`Cursor`] per journal that walks the frame headers
//! published since the last sample; reader lag comes from the readers'
//! position files ([`tape_journal::position`]), opened read-only, never
//! locked; writer and registered readers come from the service; bridge
//! subscribers from each `tape bridge serve`'s status socket.

use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
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

/// One connector: a bridge subscriber's journal.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorRow {
    /// `account@address/journal` of a bridge subscriber.
    pub name: String,
    /// `bridge`.
    pub kind: String,
    /// The source journal.
    pub journal: String,
    /// Last seq sent to it.
    pub seq_sent: u64,
    /// Last seq its replica acknowledged.
    pub seq_acked: u64,
    /// Frames behind the source.
    pub lag: u64,
}

/// One snapshot of the box.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Every journal of the root.
    pub journals: Vec<JournalRow>,
    /// Bridge subscribers.
    pub connectors: Vec<ConnectorRow>,
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
        let registered = tape_service::Client::connect(&self.root)
            .ok()
            .and_then(|mut c| c.journals().ok())
            .unwrap_or_default();
        let canon = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
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
            let info = registered
                .iter()
                .find(|j| j.journal == name && j.dir == canon);
            let writer_pid = info
                .and_then(|i| i.writer.as_ref().map(|w| w.pid))
                .or_else(|| tape_journal::lock_holder(&self.dir, &name));
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
        Snapshot {
            journals,
            connectors: bridge_connectors(&self.root),
        }
    }
}

/// The subscribers of every `tape bridge serve` of `root`, one row per
/// subscriber and journal.
fn bridge_connectors(root: &Path) -> Vec<ConnectorRow> {
    let mut out = Vec::new();
    for server in tape_bridge::status::query(root).into_iter().flatten() {
        for s in &server.subscribers {
            for j in &s.journals {
                out.push(ConnectorRow {
                    name: format!("{}@{}/{}", s.account, s.address, j.journal),
                    kind: "bridge".into(),
                    journal: j.journal.clone(),
                    seq_sent: j.seq_sent,
                    seq_acked: j.seq_acked,
                    lag: j.lag,
                });
            }
        }
    }
    out
}
