//! `tape nats status`: the streams and the running exports and imports.
//!
//! Streams are listed with the JetStream API (`$JS.API.STREAM.LIST`,
//! those whose name starts with `TAPE_`). Every running `tape nats export`
//! and `tape nats import` subscribes to the core NATS subject
//! [`STATUS_SUBJECT`] and answers a request there with a JSON array of
//! [`ConnectorStatus`], one per journal; `status` sends one request and
//! gathers the answers for half a second. That needs no key-value store
//! (which async-nats 0.51 cannot open on 2.9.10) and shows only what runs.
//!
//! The same connectors are also told on the box without a server: each
//! export and import publishes a status socket
//! `<root>/system/nats-export-<pid>-<n>.sock` or `nats-import-…`
//! ([`tape_service::status_socket`]) that answers one [`LocalStatus`];
//! [`query_local`] reads them (`tape top`, `/metrics`). It answers on a
//! thread of its own, so it tells a connector whose server is gone or
//! stopped, and its lag growing.

use crate::api::{self, StreamState};
use crate::conn::{connect, Fail, Server};
use crate::names;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use tape_service::status_socket::StatusError;
use tape_service::status_socket::{next_tag, StatusSocket};

/// The subject exports and imports answer status requests on.
pub const STATUS_SUBJECT: &str = "tape.status";

/// One running export or import of one journal, as it reports itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectorStatus {
    /// `export` or `import`.
    pub kind: String,
    /// The source journal.
    pub journal: String,
    /// The local journal: the source (export) or the replica (import).
    pub replica: String,
    /// The stream.
    pub stream: String,
    /// The `--dest` filter of an import.
    pub dest: Option<u32>,
    /// Host name of the machine it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Export: the stream's last acknowledged seq. Import: the last source
    /// seq it has taken (written, or skipped by `--dest`).
    pub seq: u64,
    /// Export: the journal's last seq. Import: the stream's last seq as
    /// last delivered.
    pub last_seq: u64,
    /// Frames behind.
    pub lag: u64,
    /// Export: frames published since it started (a frame published
    /// again after a failed publish counts again). Import: frames written
    /// to the replica since it started.
    #[serde(default)]
    pub frames: u64,
    /// Payload bytes of those frames.
    #[serde(default)]
    pub bytes: u64,
    /// Times it started over after the first session: the connection was
    /// made again, or a publish, an ack or a message failed and the
    /// stream's or the replica's end was read again.
    #[serde(default)]
    pub reconnects: u64,
}

/// What a connector's progress callback reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// See [`ConnectorStatus::seq`].
    pub seq: u64,
    /// See [`ConnectorStatus::last_seq`].
    pub last_seq: u64,
    /// See [`ConnectorStatus::frames`].
    pub frames: u64,
    /// See [`ConnectorStatus::bytes`].
    pub bytes: u64,
    /// See [`ConnectorStatus::reconnects`].
    pub reconnects: u64,
}

type ProgressFn = Arc<dyn Fn() -> Progress + Send + Sync>;

/// What a running export or import reports.
pub struct Connector {
    kind: &'static str,
    journal: String,
    replica: String,
    stream: String,
    dest: Option<u32>,
    progress: ProgressFn,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("kind", &self.kind)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// `progress` tells how far it is when asked (the lag is `last_seq -
    /// seq`).
    pub fn new(
        kind: &'static str,
        journal: &str,
        replica: &str,
        stream: &str,
        dest: Option<u32>,
        progress: impl Fn() -> Progress + Send + Sync + 'static,
    ) -> Connector {
        Connector {
            kind,
            journal: journal.into(),
            replica: replica.into(),
            stream: stream.into(),
            dest,
            progress: Arc::new(progress),
        }
    }

    fn status(&self, host: &str) -> ConnectorStatus {
        let p = (self.progress)();
        let last_seq = p.last_seq.max(p.seq);
        ConnectorStatus {
            kind: self.kind.into(),
            journal: self.journal.clone(),
            replica: self.replica.clone(),
            stream: self.stream.clone(),
            dest: self.dest,
            host: host.into(),
            pid: std::process::id(),
            seq: p.seq,
            last_seq,
            lag: last_seq - p.seq,
            frames: p.frames,
            bytes: p.bytes,
            reconnects: p.reconnects,
        }
    }
}

/// The status socket kind of `tape nats export`.
pub const EXPORT_KIND: &str = "nats-export";
/// The status socket kind of `tape nats import`.
pub const IMPORT_KIND: &str = "nats-import";

/// What the status socket of one running export or import answers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LocalStatus {
    /// Its process id.
    pub pid: u32,
    /// [`EXPORT_KIND`] or [`IMPORT_KIND`].
    pub kind: String,
    /// The server as given (`--server`).
    pub server: String,
    /// Its root.
    pub root: String,
    /// When it started, ns since the Unix epoch.
    pub since_ns: i64,
    /// One per journal.
    pub connectors: Vec<ConnectorStatus>,
}

/// Publishes the status socket of an export or import (`kind`:
/// [`EXPORT_KIND`] or [`IMPORT_KIND`]); `None`, after a log line, when it
/// cannot be made (exporting matters more than being listed).
pub(crate) fn publish_local(
    root: &Path,
    kind: &'static str,
    server: &str,
    connectors: Arc<[Connector]>,
    log: &crate::Log,
) -> Option<StatusSocket> {
    let host = crate::hostname();
    let (server, root_s) = (server.to_string(), root.display().to_string());
    let since_ns = tape_journal::clock::now_ns();
    let status = move || LocalStatus {
        pid: std::process::id(),
        kind: kind.into(),
        server: server.clone(),
        root: root_s.clone(),
        since_ns,
        connectors: connectors.iter().map(|c| c.status(&host)).collect(),
    };
    match StatusSocket::start(root, kind, &next_tag(), status) {
        Ok(s) => Some(s),
        Err(e) => {
            log(&format!("{e}; `tape top` will not list this {kind}"));
            None
        }
    }
}

/// The status sockets of every running export and import of `root`,
/// waiting at most `timeout` for each.
pub fn query_local(root: &Path, timeout: Duration) -> Vec<Result<LocalStatus, StatusError>> {
    let mut v = tape_service::status_socket::query(root, EXPORT_KIND, timeout);
    v.extend(tape_service::status_socket::query(
        root,
        IMPORT_KIND,
        timeout,
    ));
    v
}

/// Answers status requests until the connection closes for good.
pub async fn answer(client: async_nats::Client, connectors: Arc<[Connector]>) {
    let Ok(mut sub) = client.subscribe(STATUS_SUBJECT).await else {
        return;
    };
    let host = crate::hostname();
    while let Some(m) = sub.next().await {
        let Some(reply) = m.reply else { continue };
        let all: Vec<ConnectorStatus> = connectors.iter().map(|c| c.status(&host)).collect();
        let body = serde_json::to_vec(&all).unwrap_or_default();
        let _ = client.publish(reply, body.into()).await;
    }
}

/// One stream made by `tape nats export`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    /// The journal it stands for.
    pub journal: String,
    /// Its state.
    #[serde(flatten)]
    pub state: StreamState,
}

/// What `tape nats status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The server asked.
    pub server: String,
    /// The streams of journals.
    pub streams: Vec<StreamStatus>,
    /// The running exports and imports that answered.
    pub connectors: Vec<ConnectorStatus>,
}

/// Asks the server for its streams and the running exports and imports
/// for their progress, waiting `wait` for answers.
pub fn query(server: &Server, wait: Duration) -> Result<Status, String> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        let conn = connect(server, "tape nats status", crate::quiet_log())
            .await
            .map_err(|e| e.text().to_string())?;
        let c = &conn.client;
        let streams = api::streams(c, names::STREAM_PREFIX)
            .await
            .map_err(|e: Fail| e.text().to_string())?
            .into_iter()
            .filter_map(|s| {
                Some(StreamStatus {
                    journal: names::journal_of(&s.name)?,
                    state: s,
                })
            })
            .collect();
        let inbox = c.new_inbox();
        let mut sub = c
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot subscribe on {}: {e}", server.url))?;
        c.publish_with_reply(STATUS_SUBJECT, inbox, bytes::Bytes::new())
            .await
            .map_err(|e| format!("cannot ask on {}: {e}", server.url))?;
        let _ = c.flush().await;
        let mut connectors: Vec<ConnectorStatus> = Vec::new();
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sub.next()).await {
                Ok(Some(m)) => {
                    if let Ok(v) = serde_json::from_slice::<Vec<ConnectorStatus>>(&m.payload) {
                        connectors.extend(v);
                    }
                }
                _ => break,
            }
        }
        connectors.sort_by(|a, b| {
            (&a.kind, &a.journal, &a.host, a.pid).cmp(&(&b.kind, &b.journal, &b.host, b.pid))
        });
        Ok(Status {
            server: server.url.clone(),
            streams,
            connectors,
        })
    })
}
