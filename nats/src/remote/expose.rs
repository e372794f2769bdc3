//! `tape rpc expose`: takes calls from NATS and forwards each as a local
//! rpc call.
//!
//! One thread does it all, like the export and the import: it owns the
//! local [`Requester`] and a runtime without a worker, and drives the
//! connection itself. While no call is in flight it waits inside the
//! runtime (for a call, a presence request, a change of who is online, or
//! a 50 ms tick that looks at the stop flag); while calls are in flight
//! it alternates between the connection (taking what came, writing what
//! was published) and the responders' journals (taking replies), so a
//! request goes from the socket into the journal, and a reply from the
//! journal to the socket, without waking another thread. For
//! [`ExposeOptions::busy`] (200 µs) after each call or reply it looks
//! again at once, yielding the core between looks; then it sleeps 20 µs
//! between looks ([`Poller`]) while calls are in flight, and waits inside
//! the runtime when none is.

use super::inbound::{gather, Inbound, BATCH};
use super::presence::{ExposedName, Exposer};
use super::watch::Watcher;
use super::{check_name, header, subject_of, ONLINE_SUBJECT, QUEUE_GROUP};
use crate::conn::{connect_retrying, Server};
use crate::{Log, Poller};
use async_nats::header::HeaderMap;
use async_nats::{Client, Message, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tape_rpc::{CallError, EndpointCreateError, Pending, Requester};
use tape_service::Peer;

/// How `tape rpc expose` exposes.
#[derive(Clone)]
pub struct ExposeOptions {
    /// The root whose responders are exposed.
    pub root: PathBuf,
    /// The server and credentials.
    pub server: Server,
    /// The responders' names.
    pub names: Vec<String>,
    /// Where log lines go.
    pub log: Log,
    /// How long to keep looking at the journals and the connection without
    /// sleeping after a call came or a reply went ([`BUSY`] by default):
    /// an awake responder answers within microseconds, and a sleeping
    /// look adds its wake-up to the call. Longer costs a busier core under
    /// steady load; zero sleeps 20 µs between looks at once.
    pub busy: Duration,
}

impl ExposeOptions {
    /// Exposing `names` of `root` through `server`, logging to standard
    /// error, with the default [`BUSY`].
    pub fn new(root: impl Into<PathBuf>, server: Server, names: Vec<String>) -> ExposeOptions {
        ExposeOptions {
            root: root.into(),
            server,
            names,
            log: crate::stderr_log("tape rpc expose"),
            busy: BUSY,
        }
    }
}

impl std::fmt::Debug for ExposeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExposeOptions")
            .field("root", &self.root)
            .field("server", &self.server)
            .field("names", &self.names)
            .field("busy", &self.busy)
            .finish()
    }
}

/// The local requester's name: the first of `tape-expose`,
/// `tape-expose-2`, ... that no other exposer on the root holds.
pub const REQUESTER: &str = "tape-expose";
/// Most exposers on one root.
const MAX_EXPOSERS: u32 = 16;
/// How long a stopping exposer still forwards the replies of calls in
/// flight.
const GRACE: Duration = Duration::from_secs(1);
/// How long the exposer keeps looking (journals and connection, without
/// sleeping) after a call came or a reply went, before it sleeps between
/// looks: a local responder that is awake answers within microseconds.
pub const BUSY: Duration = Duration::from_micros(200);
/// The longest local deadline a request may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Exposes the responders `opts.names` of `opts.root` until `stop` is
/// set. Errors are what retrying cannot mend: refused credentials, no
/// local service, a bad name. A server that goes away is waited for.
pub fn expose(opts: &ExposeOptions, stop: &AtomicBool) -> Result<(), String> {
    let mut names: Vec<String> = Vec::new();
    for n in &opts.names {
        check_name(n).map_err(|e| e.to_string())?;
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    if names.is_empty() {
        return Err("name at least one responder to expose".into());
    }
    let rt = crate::runtime_here()?;
    // The server first: refused credentials change nothing on the root.
    let Some(conn) = connect_retrying(&rt, &opts.server, "tape rpc expose", &opts.log, stop)?
    else {
        return Ok(());
    };
    let watch = Watcher::start(&opts.root, &names)?;
    let (requester, requester_name) = local_requester(&opts.root)?;
    let client = conn.client.clone();
    let online_sub = rt
        .block_on(client.subscribe(ONLINE_SUBJECT))
        .map_err(|e| format!("cannot subscribe to {ONLINE_SUBJECT}: {e}"))?;
    (opts.log)(&format!(
        "exposing {} of {} through {} (local requester {requester_name})",
        names.join(", "),
        opts.root.display(),
        opts.server.url
    ));
    let mut f = Forwarder {
        subs: names.iter().map(|_| None).collect(),
        subjects: names.iter().map(|n| subject_of(n)).collect(),
        names,
        rt,
        client,
        online_sub,
        requester,
        me: Exposer {
            host: crate::hostname(),
            root: opts.root.display().to_string(),
            pid: std::process::id(),
            requester: requester_name,
            since_ns: tape_journal::clock::now_ns(),
            names: Vec::new(),
        },
        watch,
        seen: u64::MAX,
        online: HashMap::new(),
        tracked: Vec::new(),
        log: opts.log.clone(),
        busy: opts.busy,
        warned_no_reply: false,
    };
    let r = f.run(stop);
    f.stop();
    r
}

/// Registers the local requester under the first free name.
fn local_requester(root: &std::path::Path) -> Result<(Requester, String), String> {
    for k in 1..=MAX_EXPOSERS {
        let name = if k == 1 {
            REQUESTER.to_string()
        } else {
            format!("{REQUESTER}-{k}")
        };
        match Requester::builder(&name).root(root).create() {
            Ok(r) => return Ok((r, name)),
            Err(EndpointCreateError::Online { .. })
            | Err(EndpointCreateError::Open(tape_journal::OpenError::Locked(_))) => continue,
            Err(e) => return Err(format!("cannot register the exposer's requester: {e}")),
        }
    }
    Err(format!(
        "{MAX_EXPOSERS} exposers already run on {}: stop one",
        root.display()
    ))
}

/// A call taken from NATS, forwarded, its reply not yet sent back.
struct Track {
    pending: Pending,
    reply: Subject,
    id: String,
}

struct Forwarder {
    names: Vec<String>,
    subjects: Vec<String>,
    /// The queue subscription of each name, while its responder is online.
    subs: Vec<Option<Subscriber>>,
    rt: tokio::runtime::Runtime,
    client: Client,
    online_sub: Subscriber,
    requester: Requester,
    me: Exposer,
    watch: Watcher,
    seen: u64,
    online: HashMap<String, Peer>,
    tracked: Vec<Track>,
    log: Log,
    busy: Duration,
    warned_no_reply: bool,
}

impl Forwarder {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), String> {
        crate::low_timer_slack();
        let mut idle = Poller::new();
        let busy = self.busy;
        let mut busy_until = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        while !stop.load(Ordering::Acquire) {
            if self.watch.shared.version() != self.seen {
                self.apply_state();
            }
            let block = self.tracked.is_empty();
            let notify = &self.watch.shared.notify;
            let closed = self.rt.block_on(gather(
                &mut self.subs,
                &mut self.online_sub,
                notify,
                block,
                &mut batch,
            ));
            if closed {
                return Err(format!(
                    "the connection to the NATS server was closed; {} calls in flight are dropped",
                    self.tracked.len()
                ));
            }
            let took = !batch.is_empty();
            for m in batch.drain(..) {
                self.handle(m);
            }
            let replied = self.poll_tracked();
            if took || replied || block {
                idle.reset();
                busy_until = Instant::now() + busy;
            } else if Instant::now() >= busy_until {
                idle.idle();
            } else {
                // Busy, but giving way at once to any thread that waits
                // for this core (the server's, the responder's): two
                // spinning threads on two cores made every hop wait for a
                // scheduler slice (p99 1.5 ms against 0.2 ms, issue 15).
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Subscribes to the names whose responder came online, unsubscribes
    /// from those whose responder went.
    fn apply_state(&mut self) {
        let st = self.watch.shared.state();
        self.seen = st.version;
        self.online = st.online;
        for i in 0..self.names.len() {
            let want = self.online.contains_key(&self.names[i]);
            if want && self.subs[i].is_none() {
                let s = self.rt.block_on(
                    self.client
                        .queue_subscribe(self.subjects[i].clone(), QUEUE_GROUP.to_string()),
                );
                match s {
                    Ok(s) => {
                        self.subs[i] = Some(s);
                        (self.log)(&format!("{}: online here, taking its calls", self.names[i]));
                    }
                    Err(e) => {
                        (self.log)(&format!("cannot subscribe to {}: {e}", self.subjects[i]));
                        // Try again at the next change.
                        self.seen = u64::MAX;
                    }
                }
            } else if !want && self.subs[i].is_some() {
                (self.log)(&format!(
                    "{}: not online here, no longer taking its calls",
                    self.names[i]
                ));
                self.unsubscribe(i);
            }
        }
    }

    /// Ends subscription `i`; the calls it had taken already are answered
    /// (NO, if the responder is gone).
    fn unsubscribe(&mut self, i: usize) {
        let Some(mut s) = self.subs[i].take() else {
            return;
        };
        let _ = self.rt.block_on(async {
            let r = s.unsubscribe().await;
            tokio::task::yield_now().await;
            r
        });
        while let Some(Some(m)) = futures_util::FutureExt::now_or_never(s.next()) {
            self.handle(Inbound::Call(i, m));
        }
    }

    fn handle(&mut self, m: Inbound) {
        match m {
            Inbound::Presence(m) => {
                if let Some(reply) = m.reply {
                    self.me.names = self
                        .names
                        .iter()
                        .map(|n| {
                            let p = self.online.get(n);
                            ExposedName {
                                name: n.clone(),
                                online: p.is_some(),
                                pid: p.map(|p| p.pid),
                                since_ns: p.map(|p| p.since_ns),
                            }
                        })
                        .collect();
                    let body = serde_json::to_vec(&self.me).unwrap_or_default();
                    let _ = self.rt.block_on(self.client.publish(reply, body.into()));
                }
            }
            Inbound::Call(i, m) => self.forward(i, m),
        }
    }

    /// Sends call `m` to the local responder `names[i]`, or answers it at
    /// once (NO, or ERROR for a request that is not well formed).
    fn forward(&mut self, i: usize, m: Message) {
        let Some(reply) = m.reply.clone() else {
            if !self.warned_no_reply {
                (self.log)(&format!(
                    "a message on {} without a reply subject was dropped (send calls with `tape call --server` or RemoteRequester)",
                    m.subject
                ));
                self.warned_no_reply = true;
            }
            return;
        };
        let h = m.headers.as_ref();
        let get = |k: &str| h.and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
        let id = get(header::ID).unwrap_or_default();
        let parsed = parse_call(
            &id,
            get(header::TYPE).as_deref(),
            get(header::TIMEOUT_US).as_deref(),
        );
        let (msg_type, timeout) = match parsed {
            Ok(x) => x,
            Err(e) => return self.answer(&reply, &id, Answer::Error(e)),
        };
        let name = &self.names[i];
        match self
            .requester
            .send_nowait_within(name, msg_type, &m.payload, timeout)
        {
            Ok(pending) => self.tracked.push(Track { pending, reply, id }),
            Err(CallError::No { .. }) => self.answer(&reply, &id, Answer::No),
            Err(e) => self.answer(&reply, &id, Answer::Error(e.to_string())),
        }
    }

    /// Sends back every reply that came; whether any did.
    fn poll_tracked(&mut self) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < self.tracked.len() {
            let answer = match self.requester.poll_reply(&self.tracked[i].pending) {
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Ok(Some(r)) => Answer::Ok(r.msg_type(), Bytes::copy_from_slice(r.data())),
                Err(CallError::Timeout { .. }) => Answer::Timeout,
                Err(e) => Answer::Error(e.to_string()),
            };
            let t = self.tracked.swap_remove(i);
            self.answer(&t.reply, &t.id, answer);
            any = true;
        }
        any
    }

    fn answer(&mut self, to: &Subject, id: &str, a: Answer) {
        let mut h = HeaderMap::new();
        h.insert(header::ID, id);
        h.insert(header::HOST, self.me.host.as_str());
        let body = match a {
            Answer::Ok(t, data) => {
                h.insert(header::OUTCOME, "OK");
                h.insert(header::TYPE, t.to_string().as_str());
                data
            }
            Answer::No => {
                h.insert(header::OUTCOME, "NO");
                Bytes::new()
            }
            Answer::Timeout => {
                h.insert(header::OUTCOME, "TIMEOUT");
                Bytes::new()
            }
            Answer::Error(e) => {
                h.insert(header::OUTCOME, "ERROR");
                h.insert(header::ERROR, one_line(&e).as_str());
                Bytes::new()
            }
        };
        let sent = self
            .rt
            .block_on(self.client.publish_with_headers(to.clone(), h, body));
        if let Err(e) = sent {
            // Too large for the server, most likely: say so instead.
            let mut h = HeaderMap::new();
            h.insert(header::ID, id);
            h.insert(header::HOST, self.me.host.as_str());
            h.insert(header::OUTCOME, "ERROR");
            h.insert(
                header::ERROR,
                one_line(&format!("cannot send the reply back: {e}")).as_str(),
            );
            let _ = self.rt.block_on(
                self.client
                    .publish_with_headers(to.clone(), h, Bytes::new()),
            );
        }
    }

    /// Takes no new calls, forwards the replies of those in flight for
    /// [`GRACE`] at most, and flushes.
    fn stop(&mut self) {
        for i in 0..self.subs.len() {
            self.unsubscribe(i);
        }
        let until = Instant::now() + GRACE;
        let mut idle = Poller::new();
        while !self.tracked.is_empty() && Instant::now() < until {
            if self.poll_tracked() {
                idle.reset();
                self.rt.block_on(tokio::task::yield_now());
            } else {
                idle.idle();
            }
        }
        if !self.tracked.is_empty() {
            (self.log)(&format!(
                "stopped with {} calls in flight: their callers get TIMEOUT",
                self.tracked.len()
            ));
        }
        let c = &self.client;
        let _ = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(1), c.flush()).await });
    }
}

enum Answer {
    Ok(u32, Bytes),
    No,
    Timeout,
    Error(String),
}

/// The message type and timeout of a call, from its headers.
fn parse_call(
    id: &str,
    ty: Option<&str>,
    timeout: Option<&str>,
) -> Result<(u32, Duration), String> {
    if id.is_empty() {
        return Err(format!("the request has no {} header", header::ID));
    }
    let msg_type = match ty {
        None => 0,
        Some(t) => t.trim().parse::<u32>().map_err(|_| {
            format!(
                "{} {t:?} is not a number from 0 to 4294967295",
                header::TYPE
            )
        })?,
    };
    let Some(t) = timeout else {
        return Err(format!("the request has no {} header", header::TIMEOUT_US));
    };
    let us = t
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|&u| u > 0)
        .ok_or_else(|| {
            format!(
                "{} {t:?} is not a number of microseconds above 0",
                header::TIMEOUT_US
            )
        })?;
    Ok((msg_type, Duration::from_micros(us).min(MAX_TIMEOUT)))
}

/// `s` on one line (header values cannot hold a line break).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_headers_are_checked() {
        assert_eq!(
            parse_call("7", Some("3"), Some("1500")).unwrap(),
            (3, Duration::from_micros(1500))
        );
        assert_eq!(parse_call("7", None, Some("1")).unwrap().0, 0);
        assert!(parse_call("", Some("3"), Some("1")).is_err());
        assert!(parse_call("7", Some("x"), Some("1")).is_err());
        assert!(parse_call("7", Some("-1"), Some("1")).is_err());
        assert!(parse_call("7", Some("1"), None).is_err());
        assert!(parse_call("7", Some("1"), Some("0")).is_err());
        assert!(parse_call("7", Some("1"), Some("soon")).is_err());
        assert_eq!(
            parse_call("7", None, Some("999999999999999")).unwrap().1,
            MAX_TIMEOUT
        );
        assert_eq!(one_line("a\r\nb"), "a  b");
    }
}
