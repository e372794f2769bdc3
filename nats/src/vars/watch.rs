//! Listing the bucket, watching it, and what a delivered message means.
//!
//! Both use an ephemeral push consumer on the bucket's stream, filtered by
//! the pattern (`$KV.<bucket>.<pattern>`), without acks, with flow control
//! and a 1 s idle heartbeat. Listing delivers the last message of each
//! key (`last_per_subject`) and stops when none is pending; watching
//! delivers from a revision on, and checks the consumer sequence of each
//! message: a gap, a reconnection or 4 s without even a heartbeat makes
//! the consumer again from the last revision seen + 1.

use super::text::{delivery, parse_value};
use super::{check_pattern, Change, Entry, VarError, Vars};
use crate::api;
use crate::conn::Fail;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn fail_text(f: Fail) -> String {
    f.text().to_string()
}

impl Vars {
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
            parse_value(&m.payload)
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
    /// those made from now on: after the bucket's last revision when the
    /// watch starts), until `stop` is set or `f` answers `false`. `ready`
    /// is called each time the consumer is (re)made. Rides out the server
    /// going away: a consumer made again starts after the last revision
    /// seen, so nothing is missed or seen twice meanwhile.
    pub fn watch(
        &self,
        pattern: &str,
        from: Option<u64>,
        stop: &AtomicBool,
        ready: &mut dyn FnMut(),
        f: &mut dyn FnMut(&Change) -> Result<bool, VarError>,
    ) -> Result<(), VarError> {
        check_pattern(pattern)?;
        let from = match from {
            Some(r) => r,
            None => self.last_revision()?,
        };
        let last = AtomicU64::new(from);
        let mut n = 0usize;
        while !stop.load(Ordering::Acquire) {
            let r = self.watch_once(pattern, &last, stop, ready, f);
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
        }
        Ok(())
    }

    /// One consumer's life. `Ok(true)`: stopped; `Ok(false)`: `f` said
    /// enough.
    fn watch_once(
        &self,
        pattern: &str,
        last: &AtomicU64,
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
        let cfg = json!({
            "deliver_subject": inbox,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": last.load(Ordering::Acquire) + 1,
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
