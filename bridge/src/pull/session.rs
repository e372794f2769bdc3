//! One session of a pull on its connection: the client's half of the
//! handshake, then taking batches into the replicas and sending acks.

use super::{open_writer, End, PullError, Puller, Replica};
use crate::auth::nonce;
use crate::handshake::{read_message, Expect, MsgError, Refusal};
use crate::net::{send_all, MsgReader, ReadFail, RecvError};
use crate::wire::{
    batch_limit, decode_opened, decode_subscribed, encode_ack, encode_mac, subscribed_limit, Batch,
    Hello, Kind, Subscribe, Want, WireError, HELLO_LEN, MAC_LEN, MAX_ERROR_TEXT, VERSION,
};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tape_journal::format::{max_payload, FRAME_HEADER_LEN};
use tape_journal::{ReplicaError, WriteError};

impl Puller {
    pub(super) fn handshake(&mut self, s: &TcpStream, addr: SocketAddr) -> Result<(), End> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let io_fail = |e: std::io::Error| End::Retry(format!("handshake with {addr} failed: {e}"));
        let retry = |e: ReadFail| End::Retry(format!("handshake with {addr} failed: {e}"));
        let client_nonce = nonce().map_err(io_fail)?;
        let hello = Hello {
            version: VERSION,
            nonce: client_nonce,
        };
        send_all(s, &hello.encode(Kind::Hello)).map_err(io_fail)?;
        let not_bridge = |e: WireError| {
            End::Fatal(PullError::Protocol(format!(
                "{addr} does not answer like a tape bridge ({e}): check --from"
            )))
        };
        let fail = |e: MsgError| match e {
            MsgError::Header(f) | MsgError::Body(f) => retry(f),
            MsgError::Refused { error, .. } => not_bridge(error),
        };
        let (_, body) = read_message(
            s,
            deadline,
            &[Expect::exact(Kind::Challenge, "challenge", HELLO_LEN)],
        )
        .map_err(fail)?;
        let challenge = Hello::decode(&body).map_err(not_bridge)?;
        if challenge.version != VERSION {
            return Err(End::Fatal(PullError::Protocol(format!(
                "the bridge at {addr} speaks protocol version {}, this one {VERSION}: run the same tape version on both machines",
                challenge.version
            ))));
        }
        let proof = self
            .opts
            .token
            .client_proof(&client_nonce, &challenge.nonce);
        send_all(s, &encode_mac(Kind::Auth, &proof)).map_err(io_fail)?;
        let (_, mac) = match read_message(
            s,
            deadline,
            &[Expect::exact(Kind::Welcome, "welcome", MAC_LEN)],
        ) {
            Ok(m) => m,
            // The server closes without a word on a wrong token.
            Err(MsgError::Header(ReadFail::Eof { got: 0 }))
            | Err(MsgError::Header(ReadFail::Io(_))) => {
                return Err(End::Fatal(PullError::Refused(addr)))
            }
            Err(e) => return Err(fail(e)),
        };
        if !self
            .opts
            .token
            .check_server(&client_nonce, &challenge.nonce, &mac)
        {
            return Err(End::Fatal(PullError::Impostor(addr)));
        }
        let sub = Subscribe {
            account: self.opts.account.clone(),
            journals: self
                .replicas
                .iter()
                .map(|r| Want {
                    journal: r.source.clone(),
                    from_seq: match r.last_seq() {
                        0 => 0,
                        n => n + 1,
                    },
                })
                .collect(),
        };
        send_all(s, &sub.encode()).map_err(io_fail)?;
        let (kind, body) = read_message(
            s,
            deadline,
            &[
                Expect::at_most(Kind::Subscribed, "subscribed", subscribed_limit()),
                Expect::at_most(Kind::Error, "error", 4 + MAX_ERROR_TEXT),
            ],
        )
        .map_err(fail)?;
        if kind == Kind::Error {
            return Err(match Refusal::decode(&body) {
                // Full now, maybe not in a moment.
                Refusal::Busy(message) => End::Retry(format!("{addr} is busy: {message}")),
                r => End::Fatal(PullError::Server {
                    code: r.code(),
                    message: r.text().to_string(),
                }),
            });
        }
        let states = decode_subscribed(&body, self.replicas.len()).map_err(not_bridge)?;
        for (i, st) in states.iter().enumerate() {
            let p = &self.replicas[i].progress;
            p.known.fetch_max(st.last_seq, Ordering::Relaxed);
            if st.page_size != 0 {
                self.opened(i, st.page_size)?;
            } else {
                (self.opts.log)(&format!(
                    "journal {} does not exist on {addr} yet: waiting for it",
                    self.replicas[i].source
                ));
            }
        }
        Ok(())
    }

    /// The source journal `i` exists with pages of `page_size`: make its
    /// replica if it does not exist yet.
    fn opened(&mut self, i: usize, page_size: u64) -> Result<(), End> {
        let r = &mut self.replicas[i];
        r.page_size = page_size;
        if r.writer.is_none() {
            r.writer = Some(open_writer(&self.opts, &r.name, Some(page_size))?);
        }
        Ok(())
    }

    pub(super) fn stream(&mut self, s: &TcpStream, stop: &AtomicBool) -> End {
        if let Err(e) = s.set_read_timeout(Some(Duration::from_millis(100))) {
            return End::Retry(e.to_string());
        }
        let mut reader = MsgReader::new(1 << 20);
        let count = self.replicas.len();
        let mut last_heard = Instant::now();
        let mut next_ack = Instant::now();
        loop {
            if stop.load(Ordering::Acquire) {
                return End::Stop;
            }
            let largest = self.replicas.iter().map(|r| r.page_size).max().unwrap_or(0);
            let limit = batch_limit(largest);
            let got = reader.poll(s, false, |h| match Kind::from_u32(h.kind) {
                Some(Kind::Batch) => h.expect(Kind::Batch, "batch", limit, false).map(|_| ()),
                Some(Kind::Heartbeat) => {
                    h.expect(Kind::Heartbeat, "heartbeat", 0, true).map(|_| ())
                }
                Some(Kind::Opened) => h
                    .expect(Kind::Opened, "opened", crate::wire::OPENED_LEN, true)
                    .map(|_| ()),
                Some(Kind::Error) => h
                    .expect(Kind::Error, "error", 4 + MAX_ERROR_TEXT, false)
                    .map(|_| ()),
                _ => Err(WireError::UnexpectedKind {
                    got: h.kind,
                    expected: "a batch, heartbeat, opened or error",
                }),
            });
            let now = Instant::now();
            match got {
                Ok(Some(h)) => {
                    last_heard = now;
                    let body = reader.body(&h);
                    let r = match Kind::from_u32(h.kind) {
                        Some(Kind::Batch) => {
                            let max_frame = FRAME_HEADER_LEN + max_payload(largest.max(1 << 20));
                            match Batch::check(body, count, max_frame) {
                                Ok(b) => self.write(&b),
                                Err(e) => Err(End::Retry(format!(
                                    "{e}: the batch was not written and is fetched again"
                                ))),
                            }
                        }
                        Some(Kind::Opened) => match decode_opened(body, count) {
                            Ok((i, ps)) => self.opened(i, ps),
                            Err(e) => Err(End::Retry(e.to_string())),
                        },
                        Some(Kind::Error) => {
                            let r = Refusal::decode(body);
                            Err(End::Fatal(PullError::Server {
                                code: r.code(),
                                message: r.text().to_string(),
                            }))
                        }
                        _ => Ok(()),
                    };
                    if let Err(end) = r {
                        return end;
                    }
                    reader.consume(&h);
                }
                Ok(None) => {}
                Err(RecvError::Closed { partial }) => {
                    return End::Retry(if partial {
                        "the server closed the connection in the middle of a message".into()
                    } else {
                        "the server closed the connection".into()
                    })
                }
                Err(e) => return End::Retry(e.to_string()),
            }
            if now.duration_since(last_heard) > self.opts.dead_after {
                return End::Retry(format!(
                    "nothing from the server for {} s (not even a heartbeat)",
                    self.opts.dead_after.as_secs_f64()
                ));
            }
            if now >= next_ack {
                next_ack = now + self.opts.ack_every;
                let seqs: Vec<u64> = self.replicas.iter().map(Replica::last_seq).collect();
                if let Err(e) = send_all(s, &encode_ack(&seqs)) {
                    return End::Retry(format!("cannot send an ack: {e}"));
                }
            }
        }
    }

    /// Appends a checked batch to its replica.
    fn write(&mut self, b: &Batch<'_>) -> Result<(), End> {
        let r = &mut self.replicas[b.journal];
        let Some(w) = r.writer.as_mut() else {
            return Err(End::Retry(format!(
                "a batch of {} came before the journal was opened",
                r.source
            )));
        };
        let next = w.next_seq();
        let has_frames = next > 1;
        if has_frames && b.first_seq != next {
            return Err(End::Retry(format!(
                "a batch of {} starts at seq {} where {next} was expected",
                r.source, b.first_seq
            )));
        }
        if b.first_time_ns() < w.appender().last_time_ns() {
            return Err(End::Retry(format!(
                "a batch of {} goes back in time at seq {}",
                r.source, b.first_seq
            )));
        }
        let p = &r.progress;
        p.known.fetch_max(b.last_seq(), Ordering::Relaxed);
        for (h, payload) in b.frames() {
            match w.write_replica_frame(&h, payload) {
                Ok(()) => {
                    p.seq.store(h.seq, Ordering::Relaxed);
                    p.frames.fetch_add(1, Ordering::Relaxed);
                    p.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                }
                Err(e @ ReplicaError::Write(WriteError::TooLarge { .. })) => {
                    return Err(End::Fatal(PullError::Write {
                        journal: r.name.clone(),
                        source: e,
                    }))
                }
                Err(e) => {
                    return Err(End::Retry(format!(
                        "cannot append to the replica {}: {e}",
                        r.name
                    )))
                }
            }
        }
        if let Some(e) = w.sync_stats().new_failure(&mut r.sync_failures) {
            (self.opts.log)(&format!(
                "{e}: frames of the replica {} may not be on disk",
                r.name
            ));
        }
        Ok(())
    }
}
