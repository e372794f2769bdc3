//! The caller's side: [`RemoteRequester`], the same outcomes as a local
//! [`tape_rpc::Requester`] (OK, NO, TIMEOUT) for a name exposed on any
//! machine.

use super::{check_name, header, subject_of, RemoteError};
use crate::conn::{connect, Conn, Fail, Server};
use crate::Log;
use async_nats::header::HeaderMap;
use async_nats::{Message, StatusCode, Subscriber};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most requests sent with [`RemoteRequester::send_nowait`] whose replies
/// are not taken yet; those past their deadline are forgotten to make
/// room.
pub const MAX_WAITING: usize = 65536;

/// A reply that came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReply {
    /// The request's id (from the reply, checked against the request's).
    pub id: u64,
    /// The message type the responder chose.
    pub msg_type: u32,
    /// The reply's payload.
    pub data: Vec<u8>,
    /// The host name of the exposer that forwarded it.
    pub host: String,
}

/// A request sent with [`RemoteRequester::send_nowait`], to take its reply
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemotePending {
    id: u64,
}

impl RemotePending {
    /// The request's id (its `Tape-Id`).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// What a requester has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Requests sent.
    pub sent: u64,
    /// Replies (or no-responder answers) matched to a waiting request.
    pub matched: u64,
    /// Replies to a request of this requester that was no longer waiting:
    /// answered already (a second reply) or past its deadline.
    pub late: u64,
    /// Messages on the inbox that name no request of this requester, or
    /// whose `Tape-Id` differs from their subject's: dropped.
    pub stray: u64,
}

struct Waiting {
    dest: String,
    deadline: Instant,
    timeout: Duration,
    outcome: Option<Result<RemoteReply, RemoteError>>,
}

/// Calls names exposed with `tape rpc expose` on any machine, through a
/// NATS server.
///
/// Like [`tape_rpc::Requester`]: [`call`](Self::call) sends and waits;
/// [`send_nowait`](Self::send_nowait) sends and returns, and
/// [`wait_reply`](Self::wait_reply) / [`poll_reply`](Self::poll_reply)
/// take replies in any order, many in flight. Calls take `&mut self`: one
/// requester per thread.
///
/// The connection runs on a runtime without a worker thread, driven by
/// the calling thread inside the calls (a reply goes from the socket to
/// the caller without waking another thread). A requester left idle for
/// minutes finds its connection closed by the server and reconnects in
/// its next call.
///
/// ```no_run
/// use std::time::Duration;
/// use tape_nats::{remote::RemoteRequester, Auth, Server};
///
/// let server = Server::resolve(Some("nats://127.0.0.1:4222"), Auth::None);
/// let mut r = RemoteRequester::connect(&server)?;
/// let reply = r.call("echo", 1, b"hello", Duration::from_secs(5))?;
/// println!("{} answered {:?}", reply.host, reply.data);
/// # Ok::<(), tape_nats::remote::RemoteError>(())
/// ```
pub struct RemoteRequester {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    inbox: String,
    sub: Subscriber,
    next: u64,
    waiting: HashMap<u64, Waiting>,
    stats: RemoteStats,
}

impl std::fmt::Debug for RemoteRequester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRequester")
            .field("inbox", &self.inbox)
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl RemoteRequester {
    /// Connects to `server` (once: a server that cannot be reached or
    /// refuses the credentials is an error, naming it).
    pub fn connect(server: &Server) -> Result<RemoteRequester, RemoteError> {
        RemoteRequester::connect_logging(server, crate::quiet_log())
    }

    /// [`connect`](Self::connect), logging reconnections to `log`.
    pub fn connect_logging(server: &Server, log: Log) -> Result<RemoteRequester, RemoteError> {
        let rt = crate::runtime_here().map_err(RemoteError::Other)?;
        let conn = rt
            .block_on(connect(server, "tape call", log))
            .map_err(|f| match f {
                Fail::Fatal(e) => RemoteError::Other(e),
                Fail::Retry(e) => RemoteError::Other(format!("{e}: is nats-server running there?")),
            })?;
        let inbox = conn.client.new_inbox();
        let sub = rt
            .block_on(conn.client.subscribe(format!("{inbox}.*")))
            .map_err(|e| RemoteError::Other(format!("cannot subscribe to the reply inbox: {e}")))?;
        Ok(RemoteRequester {
            rt,
            conn,
            inbox,
            sub,
            next: 1,
            waiting: HashMap::new(),
            stats: RemoteStats::default(),
        })
    }

    /// Calls `dest` with (`msg_type`, `data`) and waits at most `timeout`:
    /// the reply, [`RemoteError::No`] at once when no machine has `dest`
    /// online, [`RemoteError::Timeout`] at the deadline.
    pub fn call(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<RemoteReply, RemoteError> {
        let p = self.send(dest, msg_type, data, timeout)?;
        self.wait_reply(&p)
    }

    /// Sends a request to `dest` with a deadline of now + `timeout` and
    /// returns once it is handed to the connection.
    pub fn send_nowait(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<RemotePending, RemoteError> {
        let p = self.send(dest, msg_type, data, timeout)?;
        // Let the connection write it now (the runtime runs only here).
        self.rt.block_on(tokio::task::yield_now());
        Ok(p)
    }

    fn send(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<RemotePending, RemoteError> {
        check_name(dest)?;
        if self.waiting.len() >= MAX_WAITING {
            let now = Instant::now();
            self.waiting.retain(|_, w| w.deadline > now);
            if self.waiting.len() >= MAX_WAITING {
                return Err(RemoteError::Other(format!(
                    "{MAX_WAITING} requests are waiting for replies: take some replies before sending more"
                )));
            }
        }
        let id = self.next;
        self.next += 1;
        let mut h = HeaderMap::new();
        h.insert(header::ID, id.to_string().as_str());
        h.insert(header::TYPE, msg_type.to_string().as_str());
        let us = timeout.as_micros().clamp(1, u64::MAX as u128) as u64;
        h.insert(header::TIMEOUT_US, us.to_string().as_str());
        let reply = format!("{}.{id}", self.inbox);
        let body = bytes::Bytes::copy_from_slice(data);
        let c = &self.conn.client;
        self.rt
            .block_on(c.publish_with_reply_and_headers(subject_of(dest), reply, h, body))
            .map_err(|e| RemoteError::Failed {
                dest: dest.to_string(),
                message: format!("cannot send the request: {e}"),
            })?;
        self.stats.sent += 1;
        self.waiting.insert(
            id,
            Waiting {
                dest: dest.to_string(),
                deadline: Instant::now() + timeout,
                timeout,
                outcome: None,
            },
        );
        Ok(RemotePending { id })
    }

    /// Waits for the reply to `p` until its deadline.
    pub fn wait_reply(&mut self, p: &RemotePending) -> Result<RemoteReply, RemoteError> {
        let deadline = self.deadline_of(p)?;
        loop {
            if let Some(r) = self.take(p.id) {
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.expire(p.id));
            }
            let sub = &mut self.sub;
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(left, sub.next()).await });
            match got {
                Ok(Some(m)) => self.sort(m),
                Ok(None) => {
                    self.waiting.remove(&p.id);
                    return Err(RemoteError::Other(
                        "the connection to the NATS server was closed".into(),
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// The reply to `p` if it has come, without waiting; after its
    /// deadline [`RemoteError::Timeout`].
    pub fn poll_reply(&mut self, p: &RemotePending) -> Result<Option<RemoteReply>, RemoteError> {
        let deadline = self.deadline_of(p)?;
        // Let the connection read what came.
        self.rt.block_on(async {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        });
        while let Some(Some(m)) = futures_util::FutureExt::now_or_never(self.sub.next()) {
            self.sort(m);
        }
        if let Some(r) = self.take(p.id) {
            return r.map(Some);
        }
        if Instant::now() >= deadline {
            return Err(self.expire(p.id));
        }
        Ok(None)
    }

    /// Requests sent with [`send_nowait`](Self::send_nowait) whose replies
    /// are not taken yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// What this requester has seen.
    pub fn stats(&self) -> RemoteStats {
        self.stats
    }

    fn deadline_of(&self, p: &RemotePending) -> Result<Instant, RemoteError> {
        self.waiting.get(&p.id).map(|w| w.deadline).ok_or_else(|| {
            RemoteError::Other(format!(
                "request {} is not waiting for a reply: its reply was taken already or it expired",
                p.id
            ))
        })
    }

    fn take(&mut self, id: u64) -> Option<Result<RemoteReply, RemoteError>> {
        if self.waiting.get(&id)?.outcome.is_some() {
            return self.waiting.remove(&id)?.outcome;
        }
        None
    }

    fn expire(&mut self, id: u64) -> RemoteError {
        let w = self.waiting.remove(&id).expect("waiting");
        RemoteError::Timeout {
            dest: w.dest,
            after: w.timeout,
        }
    }

    /// Files a message of the inbox with the request it answers.
    fn sort(&mut self, m: Message) {
        let id = m
            .subject
            .as_str()
            .strip_prefix(self.inbox.as_str())
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.parse::<u64>().ok());
        let Some(id) = id else {
            self.stats.stray += 1;
            return;
        };
        let Some(w) = self.waiting.get_mut(&id) else {
            if id < self.next {
                self.stats.late += 1;
            } else {
                self.stats.stray += 1;
            }
            return;
        };
        if w.outcome.is_some() {
            self.stats.late += 1;
            return;
        }
        match outcome_of(&m, id, &w.dest, w.timeout) {
            Some(o) => {
                w.outcome = Some(o);
                self.stats.matched += 1;
            }
            None => self.stats.stray += 1,
        }
    }
}

fn text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.as_str().to_string())
}

/// The outcome a reply carries; `None` when its `Tape-Id` is not `id`.
fn outcome_of(
    m: &Message,
    id: u64,
    dest: &str,
    timeout: Duration,
) -> Option<Result<RemoteReply, RemoteError>> {
    let failed = |message: String| {
        Some(Err(RemoteError::Failed {
            dest: dest.to_string(),
            message,
        }))
    };
    match m.status {
        Some(StatusCode::NO_RESPONDERS) => {
            return Some(Err(RemoteError::No {
                dest: dest.to_string(),
                host: None,
            }))
        }
        Some(s) if s != StatusCode::OK => {
            return failed(format!(
                "the NATS server answered status {s} {}",
                m.description.as_deref().unwrap_or("")
            ))
        }
        _ => {}
    }
    let Some(h) = m.headers.as_ref() else {
        return failed("the answer is not a tape exposer's reply (no headers)".into());
    };
    if text(h, header::ID).and_then(|s| s.parse::<u64>().ok()) != Some(id) {
        return None;
    }
    let host = text(h, header::HOST).unwrap_or_default();
    match text(h, header::OUTCOME).as_deref() {
        Some("OK") => {
            let msg_type = text(h, header::TYPE)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Some(Ok(RemoteReply {
                id,
                msg_type,
                data: m.payload.to_vec(),
                host,
            }))
        }
        Some("NO") => Some(Err(RemoteError::No {
            dest: dest.to_string(),
            host: Some(host),
        })),
        Some("TIMEOUT") => Some(Err(RemoteError::Timeout {
            dest: dest.to_string(),
            after: timeout,
        })),
        Some("ERROR") => failed(format!(
            "the exposer on {host} could not forward it: {}",
            text(h, header::ERROR).unwrap_or_else(|| "no reason given".into())
        )),
        other => failed(format!(
            "the answer is not a tape exposer's reply (outcome {other:?})"
        )),
    }
}
