//! Per-subscriber streaming: checking a subscription against what is
//! served, then sending each journal's frames in batches, heartbeats and
//! `opened` messages, and reading the subscriber's acks.

use super::presence::{source_last_seq, JournalPresence, Presence};
use super::{lock, Shared};
use crate::handshake::Refusal;
use crate::net::{send_all, tight_timer_slack, MsgReader, RecvError};
use crate::wire::{
    ack_limit, decode_ack, encode_heartbeat, encode_opened, encode_subscribed, BatchBuilder,
    JournalState, Kind, Subscribe, BATCH_TARGET,
};
use crate::Polling;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tape_journal::{Cursor, CursorOptions, OpenError, Start};

/// One journal of a subscriber.
struct Feed {
    index: u32,
    name: String,
    /// First sequence number to send (0: whatever comes first).
    from_seq: u64,
    cursor: Option<Cursor>,
    /// Whether the first frame has been checked against `from_seq`.
    started: bool,
    next_try: Instant,
}

/// A subscriber's thread state.
pub(super) struct Subscriber {
    presence: Arc<Presence>,
    feeds: Vec<Feed>,
    batch: BatchBuilder,
    acks: MsgReader,
    _lease: Option<tape_service::ReaderLease>,
}

impl Subscriber {
    /// Checks the subscription against what is served, registers the
    /// subscriber and answers `subscribed`.
    pub(super) fn start(
        sh: &Shared,
        s: &TcpStream,
        peer: SocketAddr,
        id: u64,
        sub: Subscribe,
    ) -> Result<Subscriber, Refusal> {
        let served = &sh.opts.journals;
        for w in &sub.journals {
            if !served.is_empty() && !served.contains(&w.journal) {
                return Err(Refusal::NotServed(format!(
                    "journal {} is not served here (served: {})",
                    w.journal,
                    served.join(", ")
                )));
            }
        }
        let mut feeds = Vec::with_capacity(sub.journals.len());
        let mut states = Vec::with_capacity(sub.journals.len());
        for (i, w) in sub.journals.iter().enumerate() {
            let last = source_last_seq(&sh.dir, &w.journal);
            if w.from_seq > last + 1 {
                return Err(Refusal::Ahead(
                    format!(
                        "the replica of {} holds seq {} but the source ends at seq {last}: it was not made from this journal; move it aside",
                        w.journal,
                        w.from_seq - 1
                    ),
                ));
            }
            let mut feed = Feed {
                index: i as u32,
                name: w.journal.clone(),
                from_seq: w.from_seq,
                cursor: None,
                started: false,
                next_try: Instant::now(),
            };
            let page_size = feed.open(&sh.dir)?.unwrap_or(0);
            states.push(JournalState {
                page_size,
                last_seq: last,
            });
            feeds.push(feed);
        }
        let presence = Arc::new(Presence {
            id,
            account: sub.account.clone(),
            addr: peer,
            since_ns: tape_journal::clock::now_ns(),
            journals: sub
                .journals
                .iter()
                .map(|w| JournalPresence {
                    name: w.journal.clone(),
                    from_seq: w.from_seq,
                    seq_sent: AtomicU64::new(w.from_seq.saturating_sub(1)),
                    seq_acked: AtomicU64::new(w.from_seq.saturating_sub(1)),
                    frames: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                })
                .collect(),
        });
        {
            let mut subs = lock(&sh.subscribers);
            if subs.len() >= sh.opts.max_subscribers {
                return Err(Refusal::Busy(format!(
                    "this server already has {} subscribers",
                    sh.opts.max_subscribers
                )));
            }
            subs.push(Arc::clone(&presence));
        }
        let lease = if sh.opts.register_readers {
            let js: Vec<(PathBuf, String)> = sub
                .journals
                .iter()
                .map(|w| (sh.dir.clone(), w.journal.clone()))
                .collect();
            tape_service::ReaderLease::acquire(
                &sh.opts.root,
                &format!("bridge:{}@{peer}", sub.account),
                &js,
            )
            .ok()
        } else {
            None
        };
        let me = Subscriber {
            presence,
            feeds,
            batch: BatchBuilder::new(),
            acks: MsgReader::new(4096),
            _lease: lease,
        };
        if let Err(e) = send_all(s, &encode_subscribed(&states)) {
            lock(&sh.subscribers).retain(|p| p.id != id);
            return Err(Refusal::Other(format!("cannot answer: {e}")));
        }
        let list: Vec<String> = sub
            .journals
            .iter()
            .map(|w| match w.from_seq {
                0 => format!("{} from its first frame", w.journal),
                n => format!("{} from seq {n}", w.journal),
            })
            .collect();
        sh.log(&format!(
            "subscriber {}@{peer} connected: {}",
            sub.account,
            list.join(", ")
        ));
        Ok(me)
    }

    /// Asleep on the doorbells of the subscriber's journals until one has a
    /// frame or the chores are due (every 10 ms at most while a journal
    /// does not exist yet).
    fn sleep_until_frame(&mut self, chores_at: Instant) {
        let mut missing = false;
        let mut cursors: Vec<&mut Cursor> = Vec::with_capacity(self.feeds.len());
        for f in self.feeds.iter_mut() {
            match f.cursor.as_mut() {
                Some(c) => cursors.push(c),
                None => missing = true,
            }
        }
        let mut left = chores_at.saturating_duration_since(Instant::now());
        if missing {
            left = left.min(Duration::from_millis(10));
        }
        if cursors.is_empty() {
            std::thread::sleep(left);
        } else {
            tape_journal::wait_any(&mut cursors, left);
        }
    }

    /// Streams until the connection ends; returns why it ended.
    pub(super) fn stream(&mut self, sh: &Shared, s: &TcpStream) -> String {
        tight_timer_slack();
        let mut idle = sh.opts.polling.idle();
        let heartbeat = encode_heartbeat();
        let mut last_sent = Instant::now();
        let mut last_heard = Instant::now();
        let mut next_chores = Instant::now();
        let mut rr = 0usize;
        let n = self.feeds.len();
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return "the server is stopping".into();
            }
            let mut sent = false;
            for k in 0..n {
                let i = (rr + k) % n;
                match self.send_batch(i, s, sh.opts.stall_timeout) {
                    Ok(true) => sent = true,
                    Ok(false) => {}
                    Err(why) => return why,
                }
            }
            rr = (rr + 1) % n.max(1);
            let now = if sent {
                idle.reset();
                let now = Instant::now();
                last_sent = now;
                now
            } else if sh.opts.polling == Polling::Backoff && idle.is_parking() {
                self.sleep_until_frame(next_chores);
                idle.reset();
                Instant::now()
            } else {
                idle.idle();
                Instant::now()
            };
            if now < next_chores {
                continue;
            }
            next_chores = now + Duration::from_millis(50);
            // Acks: the subscriber's heartbeat and progress.
            loop {
                let count = n;
                let got = self.acks.poll(s, true, |h| {
                    h.expect(Kind::Ack, "ack", ack_limit(), false).map(|_| ())
                });
                match got {
                    Ok(Some(h)) => {
                        match decode_ack(self.acks.body(&h), count) {
                            Ok(seqs) => {
                                for (j, seq) in self.presence.journals.iter().zip(seqs) {
                                    j.seq_acked.store(seq, Ordering::Relaxed);
                                }
                            }
                            Err(e) => return format!("sent a bad ack: {e}"),
                        }
                        self.acks.consume(&h);
                        last_heard = now;
                    }
                    Ok(None) => break,
                    Err(RecvError::Closed { .. }) => return "it closed the connection".into(),
                    Err(RecvError::Io(e)) => return format!("connection lost: {e}"),
                    Err(e) => return format!("protocol error: {e}"),
                }
            }
            if now.duration_since(last_heard) > sh.opts.dead_after {
                return format!(
                    "no ack for {} s (dead peer): dropped",
                    sh.opts.dead_after.as_secs_f64()
                );
            }
            if !sent && now.duration_since(last_sent) >= sh.opts.heartbeat {
                if let Err(e) = send_all(s, &heartbeat) {
                    return send_failed(sh.opts.stall_timeout, e);
                }
                last_sent = now;
            }
            for f in &mut self.feeds {
                if f.cursor.is_none() && now >= f.next_try {
                    match f.open(&sh.dir) {
                        Ok(Some(page_size)) => {
                            if let Err(e) = send_all(s, &encode_opened(f.index, page_size)) {
                                return send_failed(sh.opts.stall_timeout, e);
                            }
                        }
                        Ok(None) => f.next_try = now + Duration::from_millis(100),
                        Err(e) => {
                            let _ = send_all(s, &e.encode());
                            return e.to_string();
                        }
                    }
                } else if let Some(c) = &mut f.cursor {
                    let _ = c.prefetch();
                }
            }
        }
    }

    /// Sends what journal `i` has ready, up to one batch. Returns whether
    /// it sent anything.
    #[inline]
    fn send_batch(&mut self, i: usize, s: &TcpStream, stall: Duration) -> Result<bool, String> {
        let feed = &mut self.feeds[i];
        let Some(cursor) = &mut feed.cursor else {
            return Ok(false);
        };
        self.batch.clear();
        let mut payload_bytes = 0u64;
        while self.batch.frame_bytes() < BATCH_TARGET {
            match cursor.next() {
                Ok(Some(f)) => {
                    if !feed.started {
                        feed.started = true;
                        if feed.from_seq != 0 && f.seq() != feed.from_seq {
                            let why = Refusal::Gap(format!(
                                "the source no longer has seq {} of {} (its first is {}): the replica cannot follow on",
                                feed.from_seq,
                                feed.name,
                                f.seq()
                            ));
                            let _ = send_all(s, &why.encode());
                            return Err(why.to_string());
                        }
                    }
                    payload_bytes += f.payload().len() as u64;
                    self.batch.push(f.seq(), f.raw());
                }
                Ok(None) => break,
                Err(e) => {
                    if self.batch.count() > 0 {
                        // Send what was good; the damage is reported on the
                        // next call.
                        break;
                    }
                    let why = Refusal::Damaged(format!("cannot read journal {}: {e}", feed.name));
                    let _ = send_all(s, &why.encode());
                    return Err(why.to_string());
                }
            }
        }
        let count = self.batch.count();
        if count == 0 {
            return Ok(false);
        }
        let last = self.batch.first_seq() + count as u64 - 1;
        let msg = self.batch.finish(feed.index);
        if let Err(e) = send_all(s, msg) {
            return Err(send_failed(stall, e));
        }
        let p = &self.presence.journals[i];
        p.seq_sent.store(last, Ordering::Relaxed);
        p.frames.fetch_add(count as u64, Ordering::Relaxed);
        p.bytes.fetch_add(payload_bytes, Ordering::Relaxed);
        Ok(true)
    }
}

/// Why a send failed, for the log.
fn send_failed(stall: Duration, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::TimedOut {
        format!(
            "its socket took no data for {} s (stalled subscriber): dropped; it resumes where it stopped when it reconnects",
            stall.as_secs_f64()
        )
    } else {
        format!("connection lost: {e}")
    }
}

impl Feed {
    /// Opens the cursor if the journal exists: `Ok(Some(max_page_size))`
    /// (the source's largest page size, which the replica gets and which
    /// bounds a frame); `Ok(None)` when it does not exist yet.
    fn open(&mut self, dir: &Path) -> Result<Option<u64>, Refusal> {
        let start = match self.from_seq {
            0 => Start::First,
            n => Start::Seq(n),
        };
        match Cursor::open(dir, &self.name, start, CursorOptions::default()) {
            Ok(c) => {
                let size = c.max_page_size();
                self.cursor = Some(c);
                Ok(Some(size))
            }
            Err(OpenError::NotFound { .. }) => Ok(None),
            Err(e) => Err(Refusal::Damaged(format!(
                "cannot read journal {}: {e}",
                self.name
            ))),
        }
    }
}
