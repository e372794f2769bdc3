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
//! messages: what `nats kv add` makes. tape makes it itself when missing
//! (with the plain JetStream API), because async-nats 0.51's
//! `create_key_value` first calls `query_account()`, which fails against
//! nats-server 2.9.10; so does its `get_key_value`, which reads the stream
//! info with the typed API. A bucket made by `nats kv add` works too.
//!
//! # Every change is a compare-and-set
//!
//! An operation reads the key's last message (`$JS.API.STREAM.MSG.GET`,
//! `last_by_subj`), computes the new value, and publishes it with the
//! header `Nats-Expected-Last-Subject-Sequence: <revision read>` (0: the key
//! must have no message yet). When another process changed the key in
//! between, the server refuses (error 10071, wrong last sequence) and the
//! operation reads again and recomputes: so `list-push` from many machines
//! at once loses nothing.
//!
//! Each operation also carries a `Nats-Msg-Id` of its own. When the answer
//! is lost (the server went away after storing, the connection broke), the
//! very same message is sent again until the server answers: stored
//! already, it answers "duplicate" (the de-duplication check comes before
//! the sequence check) and the operation is done, once; not stored, it is
//! stored now or refused as a conflict and recomputed. No acknowledged
//! change is lost, and none is applied twice.
//!
//! # Watching and the mirror journal
//!
//! [`Vars::watch`] follows the bucket with an ephemeral push consumer
//! (deliver new, or from a revision), checking the consumer sequence for
//! gaps and re-creating the consumer from the last revision seen + 1 when
//! the connection comes back or the server goes quiet: every change once,
//! in revision order. [`mirror`] writes each change as one frame of the
//! local journal `var.<bucket>` (the frame's `corr` is the revision, the
//! payload the [`Change`] as JSON), resuming after the last revision it
//! holds.

use crate::api;
use crate::conn::Fail;
use crate::conn::{connect, Conn, Server};
use crate::Log;
use async_nats::header::HeaderMap;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bucket without `--bucket`.
pub const DEFAULT_BUCKET: &str = "tape";
/// Values kept per key (older ones are removed by the server).
pub const HISTORY: i64 = 1;
/// Message type of the frames [`mirror`] writes.
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

fn other(s: impl Into<String>) -> VarError {
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

/// Checks a bucket name: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_bucket(b: &str) -> Result<(), VarError> {
    if b.is_empty()
        || b.len() > 64
        || !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err(other(format!(
            "the bucket name {b:?} is not usable: give 1 to 64 of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

/// Checks a variable name: 1 to 255 of `A-Z a-z 0-9 _ - / = .`, not
/// starting or ending with `.` and without `..` (a `.` separates the
/// tokens that a PATTERN's `*` and `>` match).
pub fn check_name(n: &str) -> Result<(), VarError> {
    let ok = !n.is_empty()
        && n.len() <= 255
        && !n.starts_with('.')
        && !n.ends_with('.')
        && !n.contains("..")
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_-/=.".contains(&c));
    if !ok {
        return Err(other(format!(
            "the variable name {n:?} is not usable: give 1 to 255 of A-Z a-z 0-9 _ - / = . (dots between words)"
        )));
    }
    Ok(())
}

/// Checks a PATTERN: a name whose dot-separated words may be `*` (any one
/// word) and whose last word may be `>` (one or more words).
pub fn check_pattern(p: &str) -> Result<(), VarError> {
    let words: Vec<&str> = p.split('.').collect();
    let bad = p.is_empty()
        || words.iter().enumerate().any(|(i, w)| {
            w.is_empty()
                || (*w == ">" && i + 1 != words.len())
                || (*w != "*"
                    && *w != ">"
                    && !w
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"_-/=".contains(&c)))
        });
    if bad {
        return Err(other(format!(
            "the pattern {p:?} is not usable: give dot-separated words, * for any one word, > at the end for the rest (e.g. md.*, risk.>)"
        )));
    }
    Ok(())
}

/// Options of [`Vars::open`].
#[derive(Clone)]
pub struct VarsOptions {
    /// The server.
    pub server: Server,
    /// The bucket ([`DEFAULT_BUCKET`]).
    pub bucket: String,
    /// How long one operation may keep retrying (server away, conflicts).
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

/// What an update function asks for.
enum Step {
    Put(Value),
    Delete,
}

/// The server's answer to one conditional publish.
enum Ack {
    Stored(u64),
    Conflict,
}

fn fail_text(f: Fail) -> String {
    f.text().to_string()
}

impl Vars {
    /// Connects (retrying until `opts.timeout` while the server cannot be
    /// reached) and makes the bucket's stream when it is missing.
    pub fn open(opts: VarsOptions) -> Result<Vars, VarError> {
        check_bucket(&opts.bucket)?;
        let rt = crate::runtime().map_err(other)?;
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

    /// The connection (for the benchmark and tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.conn.client
    }

    /// Runs `f` until it answers something else than [`Fail::Retry`], or
    /// the timeout.
    fn retrying<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&Self) -> Result<T, Fail>,
    ) -> Result<T, VarError> {
        let until = Instant::now() + self.opts.timeout;
        let mut n = 0;
        loop {
            match f(self) {
                Ok(t) => return Ok(t),
                Err(Fail::Fatal(e)) => return Err(other(e)),
                Err(Fail::Retry(e)) => {
                    if Instant::now() >= until {
                        return Err(other(format!(
                            "cannot {what} within {} s: {e}",
                            self.opts.timeout.as_secs()
                        )));
                    }
                    if n == 2 {
                        (self.opts.log)(&format!("{e}; retrying"));
                    }
                    std::thread::sleep(crate::conn::backoff(n).min(Duration::from_millis(500)));
                    n += 1;
                }
            }
        }
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
            "duplicate_window": 120_000_000_000u64,
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

    /// The last message of `name`: `(revision, entry)`, revision 0 when the
    /// key never had one, entry `None` when it is deleted.
    async fn last(&self, name: &str) -> Result<(u64, Option<Entry>), Fail> {
        let subj = format!("{}{name}", self.prefix);
        let ans = api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.MSG.GET.{}", self.stream),
            &json!({ "last_by_subj": subj }),
        )
        .await?;
        let v = match ans {
            Ok(v) => v,
            Err(e) if e.code == 404 => return Ok((0, None)),
            Err(e) if e.err_code == api::STREAM_NOT_FOUND => {
                return Err(Fail::Retry(format!(
                    "the bucket {} has no stream {} (was it deleted?)",
                    self.opts.bucket, self.stream
                )))
            }
            Err(e) => {
                return Err(Fail::Retry(format!(
                    "cannot read {name}: {}",
                    e.description
                )))
            }
        };
        let m = &v["message"];
        let seq = m["seq"].as_u64().unwrap_or(0);
        let b64 = base64::engine::general_purpose::STANDARD;
        let hdrs = m["hdrs"]
            .as_str()
            .and_then(|h| b64.decode(h).ok())
            .unwrap_or_default();
        let op = op_of_raw_headers(&hdrs);
        if op != "put" {
            return Ok((seq, None));
        }
        let data = b64
            .decode(m["data"].as_str().unwrap_or_default())
            .map_err(|e| Fail::Retry(format!("{name}: bad base64 from the server ({e})")))?;
        let value = parse_value(name, &data);
        let time_ns = m["time"].as_str().and_then(parse_rfc3339).unwrap_or(0);
        Ok((
            seq,
            Some(Entry {
                name: name.to_string(),
                value,
                revision: seq,
                time_ns,
            }),
        ))
    }

    /// One conditional publish, sent again as it is until the server
    /// answers (see the module docs).
    fn publish_cas(&self, name: &str, expect: u64, step: &Step, id: &str) -> Result<Ack, VarError> {
        let subj = format!("{}{name}", self.prefix);
        let mut h = HeaderMap::new();
        h.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expect.to_string().as_str(),
        );
        h.insert("Nats-Msg-Id", id);
        let payload = match step {
            Step::Put(v) => {
                let b = serde_json::to_vec(v).unwrap_or_default();
                if b.len() > MAX_VALUE {
                    return Err(other(format!(
                        "the new value of {name} is {} bytes, more than {MAX_VALUE}: keep variables small (send files with `tape file send`)",
                        b.len()
                    )));
                }
                b
            }
            Step::Delete => {
                h.insert("KV-Operation", "DEL");
                Vec::new()
            }
        };
        self.retrying(&format!("change {name}"), |v| {
            let fut =
                v.conn
                    .client
                    .request_with_headers(subj.clone(), h.clone(), payload.clone().into());
            let msg = match v
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), fut).await })
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return Err(Fail::Retry(format!("no answer for {name}: {e}"))),
                Err(_) => return Err(Fail::Retry(format!("no answer for {name} within 3 s"))),
            };
            let a: Value = serde_json::from_slice(&msg.payload)
                .map_err(|_| Fail::Retry(format!("the answer for {name} is not JSON")))?;
            if let Some(err) = a.get("error") {
                let code = err["err_code"].as_u64().unwrap_or(0);
                let d = err["description"].as_str().unwrap_or("?");
                if code == api::WRONG_LAST_SEQUENCE || d.contains("wrong last sequence") {
                    return Ok(Ack::Conflict);
                }
                if err["code"].as_u64() == Some(503) {
                    return Err(Fail::Retry(format!("{name}: {d}")));
                }
                return Err(Fail::Fatal(format!(
                    "the server refused the change of {name}: {d}"
                )));
            }
            Ok(Ack::Stored(a["seq"].as_u64().unwrap_or(0)))
        })
    }

    /// Reads, applies `f` to the current value (`None`: missing), writes
    /// the result by compare-and-set; again on conflict. Returns the new
    /// revision and what `f` returned beside the step.
    fn update<T>(
        &self,
        name: &str,
        mut f: impl FnMut(Option<&Value>) -> Result<(Step, T), VarError>,
    ) -> Result<(u64, T), VarError> {
        check_name(name)?;
        let id = nuid();
        let until = Instant::now() + self.opts.timeout;
        loop {
            let (rev, cur) =
                self.retrying(&format!("read {name}"), |v| v.rt.block_on(v.last(name)))?;
            let (step, out) = f(cur.as_ref().map(|e| &e.value))?;
            match self.publish_cas(name, rev, &step, &id)? {
                Ack::Stored(seq) => return Ok((seq, out)),
                Ack::Conflict => {
                    if Instant::now() >= until {
                        return Err(other(format!(
                            "{name} kept changing under this update for {} s: try again",
                            self.opts.timeout.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// The variable, `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Entry>, VarError> {
        check_name(name)?;
        let (_, e) = self.retrying(&format!("read {name}"), |v| v.rt.block_on(v.last(name)))?;
        Ok(e)
    }

    /// Sets the variable; returns its new revision.
    pub fn put(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |_| Ok((Step::Put(value.clone()), ())))
            .map(|r| r.0)
    }

    /// Deletes the variable; [`VarError::Missing`] when it does not exist.
    pub fn del(&self, name: &str) -> Result<u64, VarError> {
        self.update(name, |cur| match cur {
            None => Err(VarError::Missing(format!("there is no variable {name}"))),
            Some(_) => Ok((Step::Delete, ())),
        })
        .map(|r| r.0)
    }

    /// Sets `key` of the object `name` (made `{}` when missing).
    pub fn dict_set(&self, name: &str, key: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut m = object_of(name, cur, "dict-set", true)?;
            m.insert(key.to_string(), value.clone());
            Ok((Step::Put(Value::Object(m)), ()))
        })
        .map(|r| r.0)
    }

    /// Removes `key` of the object `name`; [`VarError::Missing`] when it is
    /// not there. Returns the value it had.
    pub fn dict_del(&self, name: &str, key: &str) -> Result<Value, VarError> {
        self.update(name, |cur| {
            let mut m = object_of(name, cur, "dict-del", false)?;
            let old = m
                .remove(key)
                .ok_or_else(|| VarError::Missing(format!("{name} has no key {key:?}")))?;
            Ok((Step::Put(Value::Object(m)), old))
        })
        .map(|r| r.1)
    }

    /// Appends `value` to the list `name` (made `[]` when missing); returns
    /// the new revision.
    pub fn list_push(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-push", true)?;
            l.push(value.clone());
            Ok((Step::Put(Value::Array(l)), ()))
        })
        .map(|r| r.0)
    }

    /// Removes and returns item `index` of the list `name` (the last when
    /// `None`; negative counts from the end).
    pub fn list_pop(&self, name: &str, index: Option<i64>) -> Result<Value, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-pop", false)?;
            if l.is_empty() {
                return Err(VarError::Missing(format!("the list {name} is empty")));
            }
            let n = l.len() as i64;
            let i = index.unwrap_or(-1);
            let at = if i < 0 { n + i } else { i };
            if !(0..n).contains(&at) {
                return Err(other(format!(
                    "the list {name} has {n} items: give an INDEX from 0 to {} (or -1 to -{n} from the end)",
                    n - 1
                )));
            }
            let item = l.remove(at as usize);
            Ok((Step::Put(Value::Array(l)), item))
        })
        .map(|r| r.1)
    }

    /// Removes the first item of the list `name` equal to `value`;
    /// [`VarError::Missing`] when there is none.
    pub fn list_remove(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-remove", false)?;
            let at = l
                .iter()
                .position(|x| x == value)
                .ok_or_else(|| VarError::Missing(format!("the list {name} holds no {value}")))?;
            l.remove(at);
            Ok((Step::Put(Value::Array(l)), ()))
        })
        .map(|r| r.0)
    }

    /// The variables whose names match `pattern` (`>`: all), by name.
    pub fn list(&self, pattern: &str) -> Result<Vec<Entry>, VarError> {
        check_pattern(pattern)?;
        let mut got = self.retrying("list the variables", |v| {
            v.rt.block_on(v.last_per_subject(pattern))
        })?;
        got.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(got)
    }

    async fn last_per_subject(&self, pattern: &str) -> Result<Vec<Entry>, Fail> {
        let c = &self.conn.client;
        let inbox = c.new_inbox();
        let mut sub = c
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Fail::Retry(format!("cannot subscribe: {e}")))?;
        let cfg = json!({
            "deliver_subject": inbox,
            "deliver_policy": "last_per_subject",
            "filter_subject": format!("{}{pattern}", self.prefix),
            "ack_policy": "none",
            "replay_policy": "instant",
            "flow_control": true,
            "idle_heartbeat": 1_000_000_000u64,
            "inactive_threshold": 5_000_000_000u64,
            "mem_storage": true,
            "num_replicas": 1,
        });
        let body = json!({ "stream_name": self.stream, "config": cfg });
        let v = match api::request(c, format!("$JS.API.CONSUMER.CREATE.{}", self.stream), &body)
            .await?
        {
            Ok(v) => v,
            Err(e) => {
                return Err(Fail::Retry(format!(
                    "cannot list the bucket {}: {}",
                    self.opts.bucket, e.description
                )))
            }
        };
        let consumer = v["name"].as_str().unwrap_or_default().to_string();
        let mut pending = v["num_pending"].as_u64().unwrap_or(0);
        let mut out = Vec::new();
        while pending > 0 {
            let m = match tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
                Ok(Some(m)) => m,
                _ => {
                    api::delete_consumer(c, &self.stream, &consumer).await;
                    return Err(Fail::Retry("the listing stopped half way".into()));
                }
            };
            if m.status.is_some() {
                if let Some(r) = &m.reply {
                    let _ = c.publish(r.to_string(), bytes::Bytes::new()).await;
                }
                continue;
            }
            let Some(ch) = self.change_of(&m) else {
                continue;
            };
            pending = ch.1;
            let ch = ch.0;
            if ch.op == "put" {
                out.push(Entry {
                    name: ch.name,
                    value: ch.value,
                    revision: ch.revision,
                    time_ns: ch.time_ns,
                });
            }
        }
        api::delete_consumer(c, &self.stream, &consumer).await;
        Ok(out)
    }

    /// The change a delivered message stands for, with the messages still
    /// pending after it and the consumer sequence.
    fn change_of(&self, m: &async_nats::Message) -> Option<(Change, u64, u64)> {
        let (sseq, cseq, time_ns, pending) = m.reply.as_deref().and_then(delivery)?;
        let name = m.subject.as_str().strip_prefix(&self.prefix)?.to_string();
        let op = m
            .headers
            .as_ref()
            .and_then(|h| h.get("KV-Operation"))
            .map(|o| o.as_str().to_ascii_lowercase())
            .unwrap_or_else(|| "put".into());
        let value = if op == "put" {
            parse_value(&name, &m.payload)
        } else {
            Value::Null
        };
        Some((
            Change {
                name,
                op,
                value,
                revision: sseq,
                time_ns,
            },
            pending,
            cseq,
        ))
    }

    /// Calls `f` with every change of the variables matching `pattern`, in
    /// revision order, each once: those after revision `from` (`None`:
    /// those made from now on), until `stop` is set or `f` answers `false`.
    /// `ready` is called each time the consumer is (re)made. Rides out the
    /// server going away.
    pub fn watch(
        &self,
        pattern: &str,
        from: Option<u64>,
        stop: &AtomicBool,
        ready: &mut dyn FnMut(),
        f: &mut dyn FnMut(&Change) -> Result<bool, VarError>,
    ) -> Result<(), VarError> {
        check_pattern(pattern)?;
        let last = AtomicU64::new(from.unwrap_or(0));
        let mut fresh = from.is_none();
        let mut n = 0usize;
        while !stop.load(Ordering::Acquire) {
            let r = self.watch_once(pattern, &last, fresh, stop, ready, f);
            match r {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(WatchEnd::Fatal(e)) => return Err(e),
                Err(WatchEnd::Retry(e)) => {
                    if n == 0 || n % 20 == 0 {
                        (self.opts.log)(&format!("{e}; watching again"));
                    }
                    crate::sleep_unless(
                        stop,
                        crate::conn::backoff(n).min(Duration::from_millis(500)),
                    );
                    n += 1;
                    continue;
                }
            }
            n = 0;
            fresh = false;
        }
        Ok(())
    }

    /// One consumer's life. `Ok(true)`: stopped; `Ok(false)`: `f` said
    /// enough.
    fn watch_once(
        &self,
        pattern: &str,
        last: &AtomicU64,
        fresh: bool,
        stop: &AtomicBool,
        ready: &mut dyn FnMut(),
        f: &mut dyn FnMut(&Change) -> Result<bool, VarError>,
    ) -> Result<bool, WatchEnd> {
        let c = &self.conn.client;
        let epoch = self.conn.epoch.load(Ordering::Acquire);
        let inbox = c.new_inbox();
        let mut sub = self
            .rt
            .block_on(c.subscribe(inbox.clone()))
            .map_err(|e| WatchEnd::Retry(format!("cannot subscribe: {e}")))?;
        let mut cfg = json!({
            "deliver_subject": inbox,
            "filter_subject": format!("{}{pattern}", self.prefix),
            "ack_policy": "none",
            "replay_policy": "instant",
            "flow_control": true,
            "idle_heartbeat": 1_000_000_000u64,
            "inactive_threshold": 5_000_000_000u64,
            "mem_storage": true,
            "num_replicas": 1,
        });
        if fresh {
            cfg["deliver_policy"] = json!("new");
        } else {
            cfg["deliver_policy"] = json!("by_start_sequence");
            cfg["opt_start_seq"] = json!(last.load(Ordering::Acquire) + 1);
        }
        let body = json!({ "stream_name": self.stream, "config": cfg });
        let v = match self.rt.block_on(api::request(
            c,
            format!("$JS.API.CONSUMER.CREATE.{}", self.stream),
            &body,
        )) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(WatchEnd::Retry(format!(
                    "cannot watch the bucket {}: {}",
                    self.opts.bucket, e.description
                )))
            }
            Err(e) => return Err(WatchEnd::Retry(fail_text(e))),
        };
        let consumer = v["name"].as_str().unwrap_or_default().to_string();
        ready();
        let mut expect_cseq = 1u64;
        let mut heard = Instant::now();
        let end = |e: WatchEnd| {
            self.rt
                .block_on(api::delete_consumer(c, &self.stream, &consumer));
            Err(e)
        };
        loop {
            if stop.load(Ordering::Acquire) {
                self.rt
                    .block_on(api::delete_consumer(c, &self.stream, &consumer));
                return Ok(true);
            }
            if self.conn.epoch.load(Ordering::Acquire) != epoch {
                return end(WatchEnd::Retry("the connection was made again".into()));
            }
            let got = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            });
            let m = match got {
                Err(_) => {
                    if heard.elapsed() > Duration::from_secs(4) {
                        return end(WatchEnd::Retry(
                            "nothing from the server (not even a heartbeat) for 4 s".into(),
                        ));
                    }
                    continue;
                }
                Ok(None) => return end(WatchEnd::Retry("the subscription ended".into())),
                Ok(Some(m)) => m,
            };
            heard = Instant::now();
            if crate::conn::answer_heartbeat(&self.rt, c, &m) {
                continue;
            }
            if let Some(st) = m.status {
                return end(WatchEnd::Retry(format!("the consumer ended ({st})")));
            }
            let Some((ch, _, cseq)) = self.change_of(&m) else {
                continue;
            };
            if cseq != expect_cseq {
                return end(WatchEnd::Retry(format!(
                    "message {cseq} of the consumer came where {expect_cseq} was expected"
                )));
            }
            expect_cseq += 1;
            if ch.revision <= last.load(Ordering::Acquire) {
                continue;
            }
            last.store(ch.revision, Ordering::Release);
            match f(&ch) {
                Ok(true) => {}
                Ok(false) => {
                    self.rt
                        .block_on(api::delete_consumer(c, &self.stream, &consumer));
                    return Ok(false);
                }
                Err(e) => return end(WatchEnd::Fatal(e)),
            }
        }
    }
}

enum WatchEnd {
    Retry(String),
    Fatal(VarError),
}

/// The object variable `name` holds (`cur`), copied for `op` to change: an
/// empty one when it does not exist and `or_empty`, else
/// [`VarError::Missing`]; an error when it holds something else.
fn object_of(
    name: &str,
    cur: Option<&Value>,
    op: &str,
    or_empty: bool,
) -> Result<serde_json::Map<String, Value>, VarError> {
    match cur {
        None if or_empty => Ok(serde_json::Map::new()),
        None => Err(VarError::Missing(format!("there is no variable {name}"))),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(v) => Err(not_a(name, "an object", v, op)),
    }
}

/// The list variable `name` holds, as [`object_of`] does for objects.
fn list_of(
    name: &str,
    cur: Option<&Value>,
    op: &str,
    or_empty: bool,
) -> Result<Vec<Value>, VarError> {
    match cur {
        None if or_empty => Ok(Vec::new()),
        None => Err(VarError::Missing(format!("there is no variable {name}"))),
        Some(Value::Array(l)) => Ok(l.clone()),
        Some(v) => Err(not_a(name, "a list", v, op)),
    }
}

fn not_a(name: &str, what: &str, v: &Value, op: &str) -> VarError {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    other(format!(
        "{name} holds {kind}, not {what}: {op} needs {what} (or no variable); `tape var put` a new value first"
    ))
}

/// A value read back: JSON, or (written by something else than tape) the
/// bytes as a JSON string.
fn parse_value(_name: &str, data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// The operation named in raw NATS headers (`NATS/1.0\r\nKV-Operation:
/// DEL\r\n...`): `put` when none.
fn op_of_raw_headers(h: &[u8]) -> String {
    let s = String::from_utf8_lossy(h);
    for line in s.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("KV-Operation") {
                return v.trim().to_ascii_lowercase();
            }
        }
    }
    "put".into()
}

/// Stream seq, consumer seq, time (ns) and pending from a delivery's reply
/// subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`,
/// or with domain and account hash on 2.10+).
fn delivery(reply: &str) -> Option<(u64, u64, i64, u64)> {
    let t: Vec<&str> = reply.split('.').collect();
    if t.len() < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let o = if t.len() == 9 { 5 } else { 7 };
    Some((
        t[o].parse().ok()?,
        t[o + 1].parse().ok()?,
        t[o + 2].parse().ok()?,
        t[o + 3].parse().ok()?,
    ))
}

/// A unique id (time, pid, counter and a random part).
pub(crate) fn nuid() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = tape_journal::clock::now_ns();
    let mut r = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut r));
    format!(
        "{t:x}{:x}{n:x}{:x}",
        std::process::id(),
        u64::from_le_bytes(r)
    )
}

/// `2024-01-02T03:04:05.123456789Z` (or with an offset) → ns since the
/// epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let off = match b.get(i) {
        Some(b'Z') => 0,
        Some(&c) if c == b'+' || c == b'-' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = (oh * 60 + om) * 60;
            if c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - off;
    Some(secs * 1_000_000_000 + frac)
}

/// Options of [`mirror`].
#[derive(Clone)]
pub struct MirrorOptions {
    /// The bucket and server.
    pub vars: VarsOptions,
    /// The local root whose service the journal `var.<bucket>` is written
    /// through.
    pub root: PathBuf,
    /// Which variables (`>`: all).
    pub pattern: String,
    /// Called once the mirror follows the bucket.
    pub ready: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for MirrorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorOptions")
            .field("vars", &self.vars)
            .field("root", &self.root)
            .field("pattern", &self.pattern)
            .finish()
    }
}

/// The journal [`mirror`] writes for `bucket`.
pub fn mirror_journal(bucket: &str) -> String {
    format!("var.{bucket}")
}

/// The last revision held by the mirror journal in `root` (0 when empty).
fn mirrored_revision(root: &Path, journal: &str, next_seq: u64) -> Result<u64, VarError> {
    if next_seq <= 1 {
        return Ok(0);
    }
    let dir = tape_journal::journal_dir(root);
    let mut c = tape_journal::Cursor::open(
        &dir,
        journal,
        tape_journal::Start::Seq(next_seq - 1),
        Default::default(),
    )
    .map_err(|e| other(format!("cannot read the journal {journal}: {e}")))?;
    match c.next() {
        Ok(Some(f)) => Ok(f.corr()),
        Ok(None) => Ok(0),
        Err(e) => Err(other(format!("cannot read the journal {journal}: {e}"))),
    }
}

/// Writes every change of the bucket's variables matching the pattern to
/// the local journal `var.<bucket>` (one frame each: `corr` = revision,
/// payload = the [`Change`] as JSON, type [`MIRROR_MSG_TYPE`]), until
/// `stop`. A new journal starts with the current value of each variable;
/// a journal that exists resumes after the last revision it holds.
pub fn mirror(opts: &MirrorOptions, stop: &AtomicBool) -> Result<(), VarError> {
    check_pattern(&opts.pattern)?;
    let journal = mirror_journal(&opts.vars.bucket);
    let mut w = tape_writer::Writer::builder(&journal)
        .root(&opts.root)
        .page_size(1 << 20)
        .create()
        .map_err(|e| {
            other(format!(
                "cannot write the journal {journal} in {}: {e}",
                opts.root.display()
            ))
        })?;
    let from = mirrored_revision(&opts.root, &journal, w.next_seq())?;
    let vars = Vars::open(opts.vars.clone())?;
    let mut write = |ch: &Change| -> Result<bool, VarError> {
        let payload = serde_json::to_vec(ch).unwrap_or_default();
        let meta = tape_journal::FrameMeta {
            msg_type: MIRROR_MSG_TYPE,
            source: 0,
            dest: 0,
            corr: ch.revision,
        };
        w.write_meta(&meta, &payload)
            .map_err(|e| other(format!("cannot append to the journal {journal}: {e}")))?;
        Ok(true)
    };
    let mut start = from;
    if from == 0 {
        // A new journal: the current values first, then every change after.
        let now = vars.list(&opts.pattern)?;
        let mut ents: Vec<&Entry> = now.iter().collect();
        ents.sort_by_key(|e| e.revision);
        for e in ents {
            write(&Change {
                name: e.name.clone(),
                op: "put".into(),
                value: e.value.clone(),
                revision: e.revision,
                time_ns: e.time_ns,
            })?;
            start = start.max(e.revision);
        }
        if start == 0 {
            // Nothing yet: follow from the stream's current end.
            start = vars
                .retrying("read the bucket", |v| {
                    v.rt.block_on(api::stream_info(&v.conn.client, &v.stream))
                })?
                .map_or(0, |s| s.last_seq);
        }
    }
    let ready = opts.ready.clone();
    vars.watch(
        &opts.pattern,
        Some(start),
        stop,
        &mut || ready(),
        &mut write,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        assert!(check_name("risk.limit").is_ok());
        assert!(check_name("a/b=c_d-e").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in [">", "*", "md.*", "risk.>", "a.*.c"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "a.>.b", "a..b", "a b"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        assert!(check_bucket("tape").is_ok());
        assert!(check_bucket("a.b").is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-01T12:34:56.123456789Z"),
            Some(1_709_296_496_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T13:34:56.5+01:00"),
            Some(1_709_296_496_500_000_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn raw_headers() {
        assert_eq!(
            op_of_raw_headers(b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n"),
            "del"
        );
        assert_eq!(op_of_raw_headers(b""), "put");
        assert_eq!(
            delivery("$JS.ACK.KV_tape.c.1.42.7.1700000000000000000.3"),
            Some((42, 7, 1_700_000_000_000_000_000, 3))
        );
    }
}
