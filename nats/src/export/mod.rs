//! `tape nats export`: each journal becomes a stream whose sequence is the
//! journal's seq.
//!
//! # The resume rule
//!
//! Frame `s` is published with `Nats-Expected-Last-Sequence: s − 1`: the
//! server stores it only if the stream's last sequence is `s − 1`, so it
//! gets sequence `s`, and a frame can neither be skipped nor stored twice,
//! whatever died when. Each time the export (re)starts, and each time a
//! publish fails or the connection is made again, it reads the stream's
//! last sequence `L` and goes on from journal frame `L + 1`.
//!
//! - Up to `window` frames (default 4096) are in flight, their acks
//!   coming back on one wildcard subscription (`<inbox>.<round>.<seq>`).
//!   When one publish fails, every later pipelined one fails too (each
//!   expected the one before): the export stops, reads `L` again and
//!   resumes. An ack that does not come within 3 s counts as a failure.
//! - Before resuming after `L`, message `L` of the stream is compared with
//!   frame `L` of the journal, byte for byte (while both still hold it): a
//!   stream written from another journal of the same name, or by another
//!   publisher, is refused rather than continued.
//! - A stream that never held a message starts at the journal's first
//!   frame on disk. When old pages were pruned before the export first
//!   ran, that is not seq 1 but `F`: the export publishes `F − 1` empty
//!   placeholders (which no import writes: they are not frames) and purges
//!   the stream below `F` (`$JS.API.STREAM.PURGE` with `seq`), so the
//!   stream's first sequence is `F` and stream and journal sequences stay
//!   equal. (Purging the empty stream below `F` alone sets its first
//!   sequence too, but 2.9.10 then compares `Nats-Expected-Last-Sequence`
//!   with a counter left at 0, and every publish fails.)
//! - A journal whose frames after `L` were pruned before they were
//!   exported (the export was stopped too long) is refused: those frames
//!   are gone, and a stream with a hole would break the rule above.

use crate::api::StreamLimits;
use crate::conn::{connect_retrying, Server};
use crate::status::{self, Connector, Progress};
use crate::{names, Log};
use async_nats::Subject;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod acks;
mod exporter;

use acks::{acks, Shared};
use exporter::Exporter;

/// How `tape nats export` exports.
#[derive(Clone)]
pub struct ExportOptions {
    /// The local root holding the journals.
    pub root: PathBuf,
    /// The server and credentials.
    pub server: Server,
    /// The journals to export.
    pub journals: Vec<String>,
    /// Replication and limits of the streams the export creates.
    pub limits: StreamLimits,
    /// Frames in flight at most (published, not yet acknowledged).
    pub window: u64,
    /// Poll the journals without ever sleeping.
    pub busy_poll: bool,
    /// Where log lines go.
    pub log: Log,
}

impl std::fmt::Debug for ExportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportOptions")
            .field("root", &self.root)
            .field("server", &self.server)
            .field("journals", &self.journals)
            .finish_non_exhaustive()
    }
}

impl ExportOptions {
    /// Defaults: a window of 4096, backoff polling, log to stderr.
    pub fn new(root: impl Into<PathBuf>, server: Server) -> ExportOptions {
        ExportOptions {
            root: root.into(),
            server,
            journals: Vec::new(),
            limits: StreamLimits::default(),
            window: 4096,
            busy_poll: false,
            log: crate::stderr_log("tape nats export"),
        }
    }
}

/// Exports until `stop` becomes true (`Ok`) or something retrying cannot
/// mend happens (the error, one sentence).
pub fn export(opts: &ExportOptions, stop: &AtomicBool) -> Result<(), String> {
    if opts.journals.is_empty() {
        return Err("no journal to export: name at least one".into());
    }
    for (i, j) in opts.journals.iter().enumerate() {
        tape_journal::check_name(j).map_err(|e| e.to_string())?;
        if opts.journals[..i].contains(j) {
            return Err(format!("journal {j} is named twice"));
        }
    }
    if opts.limits.replicas > 5 {
        return Err(format!(
            "--replicas {}: JetStream keeps 1 to 5 replicas",
            opts.limits.replicas
        ));
    }
    opts.server.addrs()?;
    let rt = crate::runtime_here()?;
    let shareds: Vec<Arc<Shared>> = opts.journals.iter().map(|_| Arc::default()).collect();
    let connectors: Arc<[Connector]> = opts
        .journals
        .iter()
        .zip(&shareds)
        .map(|(j, shared)| {
            let shared = Arc::clone(shared);
            let dir = tape_journal::journal_dir(&opts.root);
            let journal = j.clone();
            Connector::new("export", j, j, &names::stream_of(j), None, move || {
                Progress {
                    seq: shared.acked.load(Ordering::Acquire),
                    last_seq: tape_journal::stats(&dir, &journal).map_or(0, |s| s.last_seq),
                    frames: shared.frames.load(Ordering::Relaxed),
                    bytes: shared.bytes.load(Ordering::Relaxed),
                    reconnects: shared.sessions.load(Ordering::Relaxed).saturating_sub(1),
                }
            })
        })
        .collect();
    // Before connecting: a box whose server is unreachable lists the export
    // (and its lag growing) all the same.
    let _local = status::publish_local(
        &opts.root,
        status::EXPORT_KIND,
        &opts.server.url,
        Arc::clone(&connectors),
        &opts.log,
    );
    let Some(conn) = connect_retrying(&rt, &opts.server, "tape nats export", &opts.log, stop)?
    else {
        return Ok(());
    };
    let quit = AtomicBool::new(false);
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let mut exporters = Vec::new();
    for (j, shared) in opts.journals.iter().zip(shareds) {
        let inbox = conn.client.new_inbox();
        let sub = rt
            .block_on(conn.client.subscribe(format!("{inbox}.>")))
            .map_err(|e| format!("cannot subscribe to the acks on {}: {e}", opts.server.url))?;
        rt.spawn(acks(sub, Arc::clone(&shared)));
        exporters.push(Exporter {
            opts: opts.clone(),
            conn: conn.clone(),
            journal: j.clone(),
            stream: names::stream_of(j),
            subject: Subject::from(names::subject_of(j)),
            inbox,
            shared,
            cursor: None,
            round: 0,
            progressed: false,
            said_limits: false,
        });
    }
    rt.spawn(status::answer(conn.client.clone(), connectors));
    let rt = &rt;
    std::thread::scope(|s| {
        for mut e in exporters {
            let (quit, fatal) = (&quit, &fatal);
            std::thread::Builder::new()
                .name(format!("export-{}", e.journal))
                .spawn_scoped(s, move || {
                    let _rt = rt.enter();
                    let either = Either(stop, quit);
                    if let Err(err) = e.run(rt, &either) {
                        fatal
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                        quit.store(true, Ordering::Release);
                    }
                })
                .map(|_| ())
                .unwrap_or_else(|err| {
                    fatal
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(format!("cannot start a thread: {err}"));
                    quit.store(true, Ordering::Release);
                });
        }
    });
    let fatal = fatal.into_inner().unwrap_or_else(|p| p.into_inner());
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.client.flush()).await;
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Stops when either flag is set.
pub(super) struct Either<'a>(pub(super) &'a AtomicBool, pub(super) &'a AtomicBool);

impl Either<'_> {
    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire) || self.1.load(Ordering::Acquire)
    }
}
