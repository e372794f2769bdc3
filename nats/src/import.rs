//! `tape nats import`: a stream becomes a local replica journal.
//!
//! # The resume rule
//!
//! The replica is appended through a [`Writer`] registered with the local
//! service, like any journal (one writer: a replica held by another
//! process is refused). Each frame is written with
//! [`Writer::write_replica_frame`], which keeps every header field, so a
//! replica's frames are byte-identical to the source's. Each session (at
//! start, and after anything went wrong: the server gone, a consumer
//! lost, a message missing or bad) reads the replica's last seq `L` from
//! the writer's recovery and makes a new ephemeral push consumer starting
//! at stream sequence `L + 1` (an empty replica: at the stream's first
//! message, which is the source journal's first frame exported). Every
//! message must come at the next stream sequence; any other order ends
//! the session and the next one starts again from the replica: nothing
//! lost, nothing twice.
//!
//! # Checked before written
//!
//! Each message is checked by [`crate::wire::decode`]: its length against
//! the frame header's, its seq against the stream sequence it came at, its
//! payload's CRC32C. A bad message is logged and not written; the import
//! retries (with backoff) from the replica's end, so a stream holding a
//! bad message holds the replica before it, whole.
//!
//! # `--dest ID`: the filtered replica's sequence
//!
//! With `--dest ID` only frames whose `dest` is `ID` or 0 are kept. A
//! journal's sequence has no gaps (journal/FORMAT.md), so the filtered
//! replica numbers its frames 1, 2, 3, ... itself; every other header
//! field (time, type, source, dest, corr, crc, flags) and the payload are
//! the source's. The source seq of a kept frame is not in the replica:
//! the import keeps the pair (replica seq `R`, source seq `S`: "the
//! replica's frame `R` and everything before it came from source frames up
//! to `S`") in `<root>/system/nats-import-<replica>.pos`, replaced
//! atomically (write and rename) at most every 100 ms, after the frames it
//! counts were written. On resume with the replica at `L ≥ R`, it reads
//! from source `S + 1` and passes over the first `L − R` frames that the
//! filter keeps (already in the replica), so a kill between a write and
//! the position file loses and repeats nothing.

use crate::api::{self, delivery_info};
use crate::conn::{backoff, connect_retrying, Conn, Fail, Server};
use crate::status::{self, Connector, Progress};
use crate::{names, sleep_driving, wire, Log};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tape_journal::{ReplicaError, WriteError};
use tape_writer::SyncPolicy;
use tape_writer::Writer;

/// How `tape nats import` imports.
#[derive(Clone)]
pub struct ImportOptions {
    /// The local root: its service registers the replicas' writers.
    pub root: PathBuf,
    /// The server and credentials.
    pub server: Server,
    /// (source journal, replica journal) pairs.
    pub journals: Vec<(String, String)>,
    /// Keep only frames with this dest, or 0.
    pub dest: Option<u32>,
    /// With nothing from the server (not even a heartbeat) for this long,
    /// the consumer is made again.
    pub dead_after: Duration,
    /// When the replicas' frames are made durable on disk (default
    /// [`SyncPolicy::None`]; see [`tape_writer::WriterBuilder::sync`]). A
    /// failed sync is logged, once per failure.
    pub sync: SyncPolicy,
    /// Where log lines go.
    pub log: Log,
}

impl std::fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportOptions")
            .field("root", &self.root)
            .field("server", &self.server)
            .field("journals", &self.journals)
            .field("dest", &self.dest)
            .finish_non_exhaustive()
    }
}

impl ImportOptions {
    /// Defaults: no filter, dead after 3 s, log to stderr.
    pub fn new(root: impl Into<PathBuf>, server: Server) -> ImportOptions {
        ImportOptions {
            root: root.into(),
            server,
            journals: Vec::new(),
            dest: None,
            dead_after: Duration::from_secs(3),
            sync: SyncPolicy::None,
            log: crate::stderr_log("tape nats import"),
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    seq: AtomicU64,
    last: AtomicU64,
    /// Frames written to the replica, their payload bytes, and the
    /// sessions (consumers made), for the status.
    frames: AtomicU64,
    bytes: AtomicU64,
    sessions: AtomicU64,
}

/// The filtered replica's position (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Pos {
    dest: u32,
    replica_seq: u64,
    source_seq: u64,
}

/// Imports until `stop` becomes true (`Ok`) or something retrying cannot
/// mend happens (the error, one sentence).
pub fn import(opts: &ImportOptions, stop: &AtomicBool) -> Result<(), String> {
    if opts.journals.is_empty() {
        return Err("no journal to import: name at least one".into());
    }
    for (i, (s, r)) in opts.journals.iter().enumerate() {
        for n in [s, r] {
            tape_journal::check_name(n).map_err(|e| e.to_string())?;
        }
        if opts.journals[..i].iter().any(|(s2, r2)| s2 == s || r2 == r) {
            return Err(format!("journal {s} or replica {r} is named twice"));
        }
    }
    opts.server.addrs()?;
    // The replicas' writers register with the local service: say at once
    // when there is none.
    tape_service::Client::connect(&opts.root).map_err(|e| e.to_string())?;
    let mut importers = Vec::new();
    for (s, r) in &opts.journals {
        let mut imp = Importer {
            opts: opts.clone(),
            source: s.clone(),
            replica: r.clone(),
            stream: names::stream_of(s),
            writer: None,
            sync_failures: 0,
            pos: None,
            pos_file: opts
                .root
                .join("system")
                .join(format!("nats-import-{r}.pos")),
            pos_saved: None,
            shared: Arc::new(Shared::default()),
            progressed: false,
        };
        imp.open_existing()?;
        importers.push(imp);
    }
    let connectors: Arc<[Connector]> = importers
        .iter()
        .map(|i| {
            let sh = Arc::clone(&i.shared);
            Connector::new(
                "import",
                &i.source,
                &i.replica,
                &i.stream,
                opts.dest,
                move || Progress {
                    seq: sh.seq.load(Ordering::Acquire),
                    last_seq: sh.last.load(Ordering::Acquire),
                    frames: sh.frames.load(Ordering::Relaxed),
                    bytes: sh.bytes.load(Ordering::Relaxed),
                    reconnects: sh.sessions.load(Ordering::Relaxed).saturating_sub(1),
                },
            )
        })
        .collect();
    // Before connecting: listed even while the server cannot be reached.
    let _local = status::publish_local(
        &opts.root,
        status::IMPORT_KIND,
        &opts.server.url,
        Arc::clone(&connectors),
        &opts.log,
    );
    let rt = crate::runtime_here()?;
    let Some(conn) = connect_retrying(&rt, &opts.server, "tape nats import", &opts.log, stop)?
    else {
        return Ok(());
    };
    rt.spawn(status::answer(conn.client.clone(), connectors));
    let quit = AtomicBool::new(false);
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let rt = &rt;
    std::thread::scope(|s| {
        for mut imp in importers {
            let (quit, fatal, conn) = (&quit, &fatal, conn.clone());
            let started = std::thread::Builder::new()
                .name(format!("import-{}", imp.replica))
                .spawn_scoped(s, move || {
                    let _rt = rt.enter();
                    let stopping = || stop.load(Ordering::Acquire) || quit.load(Ordering::Acquire);
                    if let Err(err) = imp.run(rt, &conn, &stopping, stop) {
                        fatal
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                        quit.store(true, Ordering::Release);
                    }
                });
            if let Err(err) = started {
                fatal
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(format!("cannot start a thread: {err}"));
                quit.store(true, Ordering::Release);
            }
        }
    });
    match fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Importer {
    opts: ImportOptions,
    source: String,
    replica: String,
    stream: String,
    writer: Option<Writer>,
    /// Sync failures of `writer` already logged.
    sync_failures: u64,
    pos: Option<Pos>,
    pos_file: PathBuf,
    pos_saved: Option<(Pos, Instant)>,
    shared: Arc<Shared>,
    progressed: bool,
}

enum Next {
    /// The stream's first message (an empty replica).
    First,
    /// This stream sequence, passing over `skip` kept frames first.
    At { seq: u64, skip: u64 },
}

impl Importer {
    fn last_seq(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.next_seq() - 1)
    }

    /// Opens (and holds) a replica that exists; loads its position file.
    fn open_existing(&mut self) -> Result<(), String> {
        let dir = tape_journal::journal_dir(&self.opts.root);
        if tape_journal::list_pages(&dir, &self.replica).is_ok_and(|p| !p.is_empty()) {
            self.open_writer(None).map_err(|e| e.text().to_string())?;
        }
        let pos = match std::fs::read(&self.pos_file) {
            Ok(b) => Some(serde_json::from_slice::<Pos>(&b).map_err(|e| {
                format!(
                    "the position file {} is damaged ({e}): remove it with the replica {} to import again",
                    self.pos_file.display(),
                    self.replica
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", self.pos_file.display())),
        };
        let last = self.last_seq();
        match (self.opts.dest, pos) {
            (None, Some(p)) => {
                return Err(format!(
                    "the replica {} holds only the frames for --dest {}: import it with --dest {} (or into another replica)",
                    self.replica, p.dest, p.dest
                ))
            }
            (Some(d), Some(p)) if p.dest != d => {
                return Err(format!(
                    "the replica {} holds only the frames for --dest {}, not {d}: import into another replica",
                    self.replica, p.dest
                ))
            }
            (Some(_), Some(p)) if p.replica_seq > last => {
                return Err(format!(
                    "the position file {} counts {} frames but the replica {} has {last}: remove both to import again",
                    self.pos_file.display(),
                    p.replica_seq,
                    self.replica
                ))
            }
            (Some(d), None) if last > 0 => {
                return Err(format!(
                    "the replica {} has frames but no position file {}: it was not imported with --dest {d}; import into another replica",
                    self.replica,
                    self.pos_file.display()
                ))
            }
            (None, None) if last > 0 && self.writer.is_some() => {}
            _ => {}
        }
        self.pos = pos;
        if let Some(p) = pos {
            self.pos_saved = Some((p, Instant::now()));
            self.shared.seq.store(p.source_seq, Ordering::Release);
        } else {
            self.shared.seq.store(last, Ordering::Release);
        }
        Ok(())
    }

    fn open_writer(&mut self, page_size: Option<u64>) -> Result<(), Fail> {
        let mut b = Writer::builder(&self.replica)
            .root(&self.opts.root)
            .sync(self.opts.sync);
        if let Some(ps) = page_size {
            b = b.page_size(ps);
        }
        let w = b.create().map_err(|e| {
            Fail::Fatal(format!(
                "cannot open the replica {} for writing: {e}",
                self.replica
            ))
        })?;
        self.writer = Some(w);
        Ok(())
    }

    fn run(
        &mut self,
        rt: &tokio::runtime::Runtime,
        conn: &Conn,
        stopping: &dyn Fn() -> bool,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let mut n = 0;
        let mut quiet = false;
        loop {
            if stopping() {
                self.save_pos(true);
                return Ok(());
            }
            self.progressed = false;
            let r = self.session(rt, conn, stopping);
            self.save_pos(true);
            match r {
                Ok(()) => return Ok(()),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(why)) => {
                    if self.progressed {
                        n = 0;
                        quiet = false;
                    }
                    if !quiet {
                        (self.opts.log)(&format!("{}: {why}; retrying", self.replica));
                    }
                    quiet = !self.progressed;
                    sleep_driving(rt, stop, backoff(n));
                    n += 1;
                }
            }
        }
    }

    /// Writes the position file when it changed (at most every 100 ms
    /// unless `now`).
    fn save_pos(&mut self, now: bool) {
        let Some(p) = self.pos else { return };
        if let Some((saved, at)) = self.pos_saved {
            if saved == p || (!now && at.elapsed() < Duration::from_millis(100)) {
                return;
            }
        }
        let tmp = self.pos_file.with_extension("pos.tmp");
        let ok = std::fs::write(&tmp, serde_json::to_vec(&p).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &self.pos_file));
        match ok {
            Ok(()) => self.pos_saved = Some((p, Instant::now())),
            Err(e) => (self.opts.log)(&format!(
                "cannot write the position file {}: {e}",
                self.pos_file.display()
            )),
        }
    }

    fn next(&self) -> Next {
        let last = self.last_seq();
        match (self.opts.dest, self.pos) {
            (None, _) if last == 0 => Next::First,
            (None, _) => Next::At {
                seq: last + 1,
                skip: 0,
            },
            (Some(_), None) => Next::First,
            (Some(_), Some(p)) => Next::At {
                seq: p.source_seq + 1,
                skip: last - p.replica_seq,
            },
        }
    }

    fn session(
        &mut self,
        rt: &tokio::runtime::Runtime,
        conn: &Conn,
        stopping: &dyn Fn() -> bool,
    ) -> Result<(), Fail> {
        let c = &conn.client;
        let url = &self.opts.server.url;
        let Some(info) = rt.block_on(api::stream_info(c, &self.stream))? else {
            return Err(Fail::Fatal(format!(
                "there is no stream {} (journal {}) on the NATS server {url}: run `tape nats export {}` on the source machine first",
                self.stream, self.source, self.source
            )));
        };
        if self.writer.is_none() {
            self.open_writer(info.page_size())?;
        }
        let (start, mut expect, mut skip) = match self.next() {
            Next::First => (None, None, 0),
            Next::At { seq, skip } => (Some(seq), Some(seq), skip),
        };
        let inbox = c.new_inbox();
        let mut sub = rt
            .block_on(c.subscribe(inbox.clone()))
            .map_err(|e| Fail::Retry(format!("cannot subscribe: {e}")))?;
        let consumer = rt.block_on(api::push_consumer(
            c,
            &self.stream,
            &inbox,
            start,
            Duration::from_secs(1),
            Duration::from_secs(10),
        ))?;
        self.progressed = true;
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        (self.opts.log)(&format!(
            "importing stream {} from {} into {} {}",
            self.stream,
            self.opts.server.url,
            self.replica,
            match start {
                None => "from its first message".to_string(),
                Some(s) => format!("from seq {s}"),
            }
        ));
        let r = self.stream(rt, conn, &mut sub, &mut expect, &mut skip, stopping);
        let stream = self.stream.clone();
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                let _ = sub.unsubscribe().await;
                api::delete_consumer(c, &stream, &consumer).await;
            })
            .await;
        });
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn stream(
        &mut self,
        rt: &tokio::runtime::Runtime,
        conn: &Conn,
        sub: &mut async_nats::Subscriber,
        expect: &mut Option<u64>,
        skip: &mut u64,
        stopping: &dyn Fn() -> bool,
    ) -> Result<(), Fail> {
        let c = &conn.client;
        let tick = Duration::from_millis(200);
        let mut last_heard = Instant::now();
        loop {
            if stopping() {
                return Ok(());
            }
            let got = rt.block_on(tokio::time::timeout(tick, sub.next()));
            let m = match got {
                Err(_) => {
                    if last_heard.elapsed() > self.opts.dead_after {
                        return Err(Fail::Retry(format!(
                            "nothing from the server (not even a heartbeat) for {} s",
                            self.opts.dead_after.as_secs_f64()
                        )));
                    }
                    self.save_pos(false);
                    continue;
                }
                Ok(None) => return Err(Fail::Retry("the subscription ended".into())),
                Ok(Some(m)) => m,
            };
            last_heard = Instant::now();
            if crate::conn::answer_heartbeat(rt, c, &m) {
                continue;
            }
            if let Some(st) = m.status {
                return Err(Fail::Retry(format!(
                    "the consumer ended ({st}{})",
                    m.description.map(|d| format!(" {d}")).unwrap_or_default()
                )));
            }
            let Some((sseq, pending)) = m.reply.as_deref().and_then(delivery_info) else {
                (self.opts.log)(&format!(
                    "{}: a message without JetStream delivery information: not written",
                    self.replica
                ));
                continue;
            };
            self.shared.last.store(sseq + pending, Ordering::Release);
            match *expect {
                Some(e) if sseq < e => continue,
                Some(e) if sseq > e => {
                    let first = rt
                        .block_on(api::stream_info(c, &self.stream))?
                        .map_or(0, |i| i.first_seq);
                    if first > e {
                        return Err(Fail::Fatal(format!(
                            "frames {e} to {} of stream {} were removed (its --max-age or --max-bytes) before they were imported into {}: import into a new replica",
                            first - 1,
                            self.stream,
                            self.replica
                        )));
                    }
                    return Err(Fail::Retry(format!(
                        "stream seq {sseq} came where {e} was expected"
                    )));
                }
                _ => {}
            }
            let (mut h, payload) = match wire::decode(&m.payload, sseq) {
                Ok(x) => x,
                Err(bad) => {
                    return Err(Fail::Retry(format!(
                        "message {sseq} of stream {} is not a valid frame ({bad}): not written",
                        self.stream
                    )))
                }
            };
            let Some(w) = self.writer.as_mut() else {
                return Err(Fail::Retry("the replica is not open".into()));
            };
            let keep = match self.opts.dest {
                None => true,
                Some(d) => h.dest == d || h.dest == 0,
            };
            let write = keep && *skip == 0;
            if keep && *skip > 0 {
                *skip -= 1;
            }
            if write {
                if self.opts.dest.is_some() {
                    h.seq = w.next_seq().max(1);
                }
                match w.write_replica_frame(&h, payload) {
                    Ok(()) => {
                        self.shared.frames.fetch_add(1, Ordering::Relaxed);
                        let n = payload.len() as u64;
                        self.shared.bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e @ ReplicaError::Write(WriteError::TooLarge { .. })) => {
                        return Err(Fail::Fatal(format!(
                            "cannot write to the replica {}: {e}",
                            self.replica
                        )))
                    }
                    Err(e) => {
                        return Err(Fail::Retry(format!(
                            "message {sseq} of stream {} not written to {}: {e}",
                            self.stream, self.replica
                        )))
                    }
                }
                if let Some(e) = w.sync_stats().new_failure(&mut self.sync_failures) {
                    (self.opts.log)(&format!(
                        "{e}: frames of the replica {} may not be on disk",
                        self.replica
                    ));
                }
            }
            *expect = Some(sseq + 1);
            self.shared.seq.store(sseq, Ordering::Release);
            if let Some(d) = self.opts.dest {
                if *skip == 0 {
                    self.pos = Some(Pos {
                        dest: d,
                        replica_seq: w.next_seq() - 1,
                        source_seq: sseq,
                    });
                    self.save_pos(false);
                }
            }
        }
    }
}
