//! Shared variables: JSON values in a JetStream key-value bucket, changed
//! by compare-and-set on each key's revision (`tape var`, [`Vars`]).
//!
//! # Layout (the same as NATS's own key-value store)
//!
//! Bucket `B` is the stream `KV_B` on subjects `$KV.B.>`; variable `NAME`
//! is the subject `$KV.B.NAME`, its value the payload of the last message
//! there (JSON text), its *revision* that message's stream sequence. A
//! deletion is a message with the header `KV-Operation: DEL` and no
//! payload. The stream keeps [`HISTORY`] values per key, discards new
//! messages past its limits, allows roll-ups and denies deleting single
//! messages: what `nats kv add --history 16` makes. tape makes it itself
//! when missing (with the plain JetStream API), because async-nats 0.51's
//! `create_key_value` first calls `query_account()`, which fails against
//! nats-server 2.9.10; so does its `get_key_value`, which reads the stream
//! info with the typed API. A bucket made by `nats kv add` works too. The
//! Python `tape.Vars` (`python/tape/vars.py`) speaks the same layout and
//! the same protocol.
//!
//! # Every change is a compare-and-set
//!
//! An operation reads the key's last message (`$JS.API.STREAM.MSG.GET`,
//! `last_by_subj`), computes the new value, and publishes it with the
//! header `Nats-Expected-Last-Subject-Sequence: <revision read>` (0: the key
//! must have no message yet). When another process changed the key in
//! between, the server refuses (error 10071, wrong last sequence) and the
//! operation reads again and recomputes: so `list-push` from many machines
//! at once loses nothing ([`ops`]).
//!
//! Each operation also carries a `Nats-Msg-Id` of its own, the same on
//! every attempt. When the answer is lost (the server went away after
//! storing, the connection broke), the very same message is sent again
//! until the server answers: stored already, it answers "duplicate" (the
//! server checks the id before the expected sequence) and the operation is
//! done, once; not stored, it is stored now or refused as a conflict and
//! recomputed. No acknowledged change is lost, and none is applied twice.
//!
//! Why [`HISTORY`] is 16 and not 1: the server keeps the ids it has seen in
//! memory for two minutes (the stream's duplicate window), and when it
//! restarts it rebuilds them from the messages it still stores, at the
//! first publish with an id. A value superseded before the crash (with one
//! value per key, by the very next change of that key) would take its id
//! with it, and the resend of a change whose answer the crash swallowed
//! would be refused as a conflict and applied a second time. Keeping 16
//! values per key makes that need 16 changes of the same key between the
//! lost answer and the crash.
//!
//! # Watching and the mirror journal
//!
//! [`Vars::watch`] follows the bucket with an ephemeral push consumer from
//! a revision (from the bucket's end when none is given), checking the
//! consumer sequence for gaps and re-creating the consumer from the last
//! revision seen + 1 when the connection comes back or the server goes
//! quiet: every change once, in revision order ([`watch`]). [`mirror()`]
//! writes each change as one frame of the local journal `var.<bucket>`
//! (the frame's `corr` is the revision, the payload the [`Change`] as
//! JSON), resuming after the last revision it holds.
//!
//! # Map
//!
//! | part | what |
//! |---|---|
//! | [`names`] | bucket, variable and pattern names, checked |
//! | this module | [`Vars`]: the connection, the bucket's stream, retrying |
//! | [`ops`] | reading a key, the compare-and-set, the operations |
//! | [`watch`] | listing, watching, what a delivered message means |
//! | [`mirror()`](mirror::mirror) | the journal `var.<bucket>` |
//! | [`text`] | headers, time stamps, ids, values read back |

pub mod mirror;
pub mod names;
pub mod ops;
pub mod text;
pub mod watch;

pub use mirror::{mirror, mirror_journal, MirrorOptions};
pub use names::{check_bucket, check_name, check_pattern};

use crate::api;
use crate::conn::{connect, Conn, Fail, Server};
use crate::Log;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The bucket without `--bucket`.
pub const DEFAULT_BUCKET: &str = "tape";
/// Values kept per key (older ones are removed by the server); see the
/// module docs for why more than one.
pub const HISTORY: i64 = 16;
/// The stream's duplicate window: how long the server remembers an
/// operation's id (2 minutes, as NATS's key-value store).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The longest an operation keeps retrying ([`VarsOptions::timeout`] is
/// cut to it): well within [`DUPLICATE_WINDOW`].
pub const MAX_TIMEOUT: Duration = Duration::from_secs(100);
/// Message type of the frames [`mirror()`] writes.
pub const MIRROR_MSG_TYPE: u32 = 0x7661;
/// Largest value accepted (the server's default maximum payload is 1 MiB).
pub const MAX_VALUE: usize = 1 << 20;

/// Why an operation on a variable failed.
#[derive(Debug, Clone)]
pub enum VarError {
    /// The variable (or the key, or the item) is not there.
    Missing(String),
    /// Anything else; the text says what to do.
    Other(String),
}

impl std::fmt::Display for VarError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarError::Missing(s) | VarError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for VarError {}

pub(crate) fn other(s: impl Into<String>) -> VarError {
    VarError::Other(s.into())
}

/// A variable's value and revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// The value.
    pub value: Value,
    /// Its revision: the stream sequence of the message holding it.
    pub revision: u64,
    /// When it was written (ns since the epoch, the server's clock).
    pub time_ns: i64,
}

/// One change of a variable, as [`Vars::watch`] sees it and `tape var
/// watch` prints it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The variable.
    pub name: String,
    /// `put` or `del` (or `purge`).
    pub op: String,
    /// The new value (`null` for `del`).
    pub value: Value,
    /// The revision of the change.
    pub revision: u64,
    /// When it was written (ns since the epoch, the server's clock).
    pub time_ns: i64,
}

/// Options of [`Vars::open`].
#[derive(Clone)]
pub struct VarsOptions {
    /// The server.
    pub server: Server,
    /// The bucket ([`DEFAULT_BUCKET`]).
    pub bucket: String,
    /// How long one operation may keep retrying (server away, conflicts);
    /// at most [`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Log lines (reconnections).
    pub log: Log,
}

impl std::fmt::Debug for VarsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarsOptions")
            .field("server", &self.server)
            .field("bucket", &self.bucket)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl VarsOptions {
    /// The default bucket, a 30 s timeout, no log.
    pub fn new(server: Server) -> VarsOptions {
        VarsOptions {
            server,
            bucket: DEFAULT_BUCKET.to_string(),
            timeout: Duration::from_secs(30),
            log: crate::quiet_log(),
        }
    }
}

/// A connection to one bucket of shared variables. Blocking calls; safe to
/// share between threads (`&self`).
///
/// The connection runs on a runtime without a worker thread of its own:
/// whichever thread is inside a call drives it (as the export and import
/// do, see the crate docs), so a change reaches [`Vars::watch`]'s callback
/// without waking another thread (`benches/benches/vars.rs` measures it).
/// Between calls nothing is
/// driven; a connection the server dropped meanwhile is made again by the
/// next call.
///
/// ```no_run
/// use tape_nats::{Server, Auth, Vars, VarsOptions};
/// let vars = Vars::open(VarsOptions::new(Server::resolve(None, Auth::None)))?;
/// vars.put("risk.limit", &serde_json::json!(100))?;
/// vars.list_push("orders", &serde_json::json!({"id": 1}))?;
/// assert_eq!(vars.get("risk.limit")?.unwrap().value, 100);
/// # Ok::<(), tape_nats::VarError>(())
/// ```
pub struct Vars {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    opts: VarsOptions,
    stream: String,
    prefix: String,
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vars").field("opts", &self.opts).finish()
    }
}

impl Vars {
    /// Connects (retrying until `opts.timeout` while the server cannot be
    /// reached) and makes the bucket's stream when it is missing.
    pub fn open(mut opts: VarsOptions) -> Result<Vars, VarError> {
        check_bucket(&opts.bucket)?;
        // A change sent again after the server forgot its id (the
        // duplicate window) could be applied twice: resend within it.
        opts.timeout = opts.timeout.min(MAX_TIMEOUT);
        let rt = crate::runtime_here().map_err(other)?;
        let until = Instant::now() + opts.timeout;
        let mut n = 0;
        let conn = loop {
            match rt.block_on(connect(&opts.server, "tape var", opts.log.clone())) {
                Ok(c) => break c,
                Err(Fail::Fatal(e)) => return Err(other(e)),
                Err(Fail::Retry(e)) => {
                    if Instant::now() >= until {
                        return Err(other(format!("{e}: is nats-server running there?")));
                    }
                    std::thread::sleep(crate::conn::backoff(n));
                    n += 1;
                }
            }
        };
        let vars = Vars {
            rt,
            conn,
            stream: format!("KV_{}", opts.bucket),
            prefix: format!("$KV.{}.", opts.bucket),
            opts,
        };
        vars.retrying("open the bucket", |v| v.rt.block_on(v.ensure_stream()))?;
        Ok(vars)
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.opts.bucket
    }

    /// The bucket's stream (`KV_<bucket>`).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The connection (for the benchmark and tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.conn.client
    }

    /// The last revision of the whole bucket: the stream's last sequence
    /// (0 when nothing was ever written).
    pub fn last_revision(&self) -> Result<u64, VarError> {
        Ok(self
            .retrying("read the bucket", |v| {
                v.rt.block_on(api::stream_info(&v.conn.client, &v.stream))
            })?
            .map_or(0, |s| s.last_seq))
    }

    /// Runs `f` until it answers something else than [`Fail::Retry`], or
    /// the timeout.
    fn retrying<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&Self) -> Result<T, Fail>,
    ) -> Result<T, VarError> {
        crate::conn::retrying(what, self.opts.timeout, &self.opts.log, || f(self)).map_err(other)
    }

    async fn ensure_stream(&self) -> Result<(), Fail> {
        let c = &self.conn.client;
        if api::stream_info(c, &self.stream).await?.is_some() {
            return Ok(());
        }
        let cfg = json!({
            "name": self.stream,
            "subjects": [format!("{}>", self.prefix)],
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": HISTORY,
            "max_msg_size": -1,
            "storage": "file",
            "discard": "new",
            "num_replicas": 1,
            "duplicate_window": DUPLICATE_WINDOW.as_nanos() as u64,
            "allow_rollup_hdrs": true,
            "deny_delete": true,
            "deny_purge": false,
            "allow_direct": true,
        });
        match api::request(c, format!("$JS.API.STREAM.CREATE.{}", self.stream), &cfg).await? {
            Ok(_) => Ok(()),
            // Made by another process at the same moment, or by `nats kv
            // add` with other settings: use it as it is.
            Err(e) if e.err_code == 10058 => Ok(()),
            Err(e) => Err(Fail::Fatal(format!(
                "cannot make the bucket {} (stream {}): {}",
                self.opts.bucket, self.stream, e.description
            ))),
        }
    }
}
