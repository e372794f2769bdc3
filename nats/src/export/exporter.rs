//! The export's loop: frames from the cursor to the server, the
//! journal waited for on its doorbell.

use crate::api::{self, StreamState};
use crate::conn::{backoff, Conn, Fail};
use crate::sleep_driving;
use async_nats::{HeaderMap, Subject};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tape_journal::{Cursor, CursorOptions, OpenError, ReadError, Start};

use super::{acks::Shared, Either, ExportOptions};

/// The longest the export sleeps on the journal's doorbell with nothing in
/// flight before it drives the connection again.
const IDLE_WAIT: Duration = Duration::from_millis(2);

/// How the export waits while acks are due: [`crate::Poller`], or spinning
/// with `--busy-poll`.
enum Wait {
    Poll(crate::Poller),
    Spin,
}

impl Wait {
    fn new(busy: bool) -> Wait {
        if busy {
            Wait::Spin
        } else {
            crate::low_timer_slack();
            Wait::Poll(crate::Poller::new())
        }
    }

    fn idle(&mut self) {
        match self {
            Wait::Poll(p) => p.idle(),
            Wait::Spin => std::hint::spin_loop(),
        }
    }

    fn reset(&mut self) {
        if let Wait::Poll(p) = self {
            p.reset();
        }
    }
}

pub(super) struct Exporter {
    pub(super) opts: ExportOptions,
    pub(super) conn: Conn,
    pub(super) journal: String,
    pub(super) stream: String,
    pub(super) subject: Subject,
    pub(super) inbox: String,
    pub(super) shared: Arc<Shared>,
    pub(super) cursor: Option<Cursor>,
    pub(super) round: u64,
    pub(super) progressed: bool,
    pub(super) said_limits: bool,
}

impl Exporter {
    pub(super) fn run(
        &mut self,
        rt: &tokio::runtime::Runtime,
        stop: &Either<'_>,
    ) -> Result<(), String> {
        let mut n = 0;
        let mut quiet = false;
        loop {
            if stop.is_set() {
                return Ok(());
            }
            self.progressed = false;
            match self.session(rt, stop) {
                Ok(()) => return Ok(()),
                Err(Fail::Fatal(e)) => return Err(e),
                Err(Fail::Retry(why)) => {
                    if self.progressed {
                        n = 0;
                        quiet = false;
                    }
                    if !quiet {
                        (self.opts.log)(&format!("{}: {why}; retrying", self.journal));
                    }
                    quiet = !self.progressed;
                    sleep_driving(rt, stop.0, backoff(n));
                    n += 1;
                }
            }
        }
    }

    /// Finds where to go on from (and whether the stream holds no message
    /// now); leaves the cursor there.
    fn sync(&mut self, rt: &tokio::runtime::Runtime) -> Result<(u64, bool), Fail> {
        let c = &self.conn.client;
        let dir = tape_journal::journal_dir(&self.opts.root);
        let name = &self.journal;
        let copts = CursorOptions {
            verify_crc: true,
            populate: false,
        };
        let damaged = |e: &dyn std::fmt::Display| Fail::Fatal(format!("journal {name}: {e}"));
        let (first, page_size) = match Cursor::open(&dir, name, Start::First, copts) {
            Ok(mut cur) => {
                // The largest page size: the replica's pages grow to it.
                let ps = cur.max_page_size();
                match cur.peek() {
                    Ok(Some(f)) => (f.seq(), ps),
                    Ok(None) => {
                        return Err(Fail::Retry(format!("journal {name} has no frame yet")))
                    }
                    Err(e) => return Err(damaged(&e)),
                }
            }
            Err(OpenError::NotFound { .. }) => {
                return Err(Fail::Retry(format!(
                    "journal {name} does not exist in {} yet",
                    dir.display()
                )))
            }
            Err(e) => return Err(damaged(&e)),
        };
        let info = match rt.block_on(api::stream_info(c, &self.stream))? {
            Some(i) => {
                let l = &self.opts.limits;
                if !self.said_limits
                    && (l.replicas > 0 || l.max_age.is_some() || l.max_bytes.is_some())
                {
                    (self.opts.log)(&format!(
                        "stream {} exists: its replicas and limits stay as they are (--replicas, --max-age and --max-bytes apply when the export creates it)",
                        self.stream
                    ));
                }
                i
            }
            None => {
                let desc = format!("tape journal {name}; page_size={page_size}");
                let i = rt.block_on(api::create_stream(
                    c,
                    &self.stream,
                    self.subject.as_str(),
                    &desc,
                    &self.opts.limits,
                ))?;
                (self.opts.log)(&format!(
                    "created stream {} (subject {}, {} replica{})",
                    self.stream,
                    self.subject,
                    i.replicas,
                    if i.replicas == 1 { "" } else { "s" }
                ));
                i
            }
        };
        self.said_limits = true;
        let next = self.resume_point(rt, &info, first, &dir, copts)?;
        let cur = Cursor::open(&dir, name, Start::Seq(next), copts).map_err(|e| damaged(&e))?;
        self.cursor = Some(cur);
        Ok((next, info.messages == 0))
    }

    fn resume_point(
        &self,
        rt: &tokio::runtime::Runtime,
        info: &StreamState,
        first: u64,
        dir: &std::path::Path,
        copts: CursorOptions,
    ) -> Result<u64, Fail> {
        let c = &self.conn.client;
        let (name, stream) = (&self.journal, &self.stream);
        let last = info.last_seq;
        if last == 0 {
            if first > 1 {
                self.start_at(rt, first)?;
                (self.opts.log)(&format!(
                    "journal {name} starts at seq {first} (older pages were pruned): stream {stream} starts there too"
                ));
            }
            return Ok(first);
        }
        let next = last + 1;
        if first > next {
            return Err(Fail::Fatal(format!(
                "frames {next} to {} of journal {name} were pruned before they were exported to stream {stream}: delete the stream to export the journal from its first frame on disk",
                first - 1
            )));
        }
        if first <= last && info.messages > 0 && last >= info.first_seq {
            let mut cur = Cursor::open(dir, name, Start::Seq(last), copts)
                .map_err(|e| Fail::Fatal(format!("journal {name}: {e}")))?;
            let frame: Option<Vec<u8>> = match cur.peek() {
                Ok(Some(f)) if f.seq() == last => Some(f.raw().to_vec()),
                Ok(_) => None,
                Err(e) => return Err(Fail::Fatal(format!("journal {name}: {e}"))),
            };
            let Some(frame) = frame else {
                return Err(Fail::Fatal(format!(
                    "stream {stream} holds seq {last} but journal {name} ends before it: the stream was exported from another journal of that name (delete the stream to start again)"
                )));
            };
            match rt.block_on(api::message(c, stream, last))? {
                Some(m) if m == frame => {}
                Some(_) => {
                    return Err(Fail::Fatal(format!(
                        "message {last} of stream {stream} is not frame {last} of journal {name}: another journal or publisher wrote to {} (delete the stream to start again)",
                        self.subject
                    )))
                }
                None => {}
            }
        }
        Ok(next)
    }

    /// Makes an empty stream's next sequence `first`: publishes `first − 1`
    /// empty placeholders (never a valid frame: an import passes over
    /// none of them, it refuses them), then purges below `first`. (A purge
    /// of an empty stream would set its first sequence too, but 2.9.10 then
    /// checks `Nats-Expected-Last-Sequence` against 0 for ever after.)
    fn start_at(&self, rt: &tokio::runtime::Runtime, first: u64) -> Result<(), Fail> {
        let c = &self.conn.client;
        let stream = &self.stream;
        rt.block_on(async {
            for _ in 1..first {
                c.publish(self.subject.clone(), bytes::Bytes::new())
                    .await
                    .map_err(|e| Fail::Retry(format!("cannot publish a placeholder: {e}")))?;
            }
            let _ = c.flush().await;
            Ok::<(), Fail>(())
        })?;
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let st = rt
                .block_on(api::stream_info(c, stream))?
                .ok_or_else(|| Fail::Retry(format!("stream {stream} went away")))?;
            if st.last_seq == first - 1 {
                break;
            }
            if st.last_seq >= first {
                return Err(Fail::Fatal(format!(
                    "stream {stream} got messages from another publisher while the export set it to start at seq {first}: delete it and start again"
                )));
            }
            if Instant::now() > until {
                return Err(Fail::Retry(format!(
                    "stream {stream} took only {} of {} placeholders",
                    st.last_seq,
                    first - 1
                )));
            }
            rt.block_on(tokio::time::sleep(Duration::from_millis(20)));
        }
        rt.block_on(api::purge_below(c, stream, first))
    }

    fn session(&mut self, rt: &tokio::runtime::Runtime, stop: &Either<'_>) -> Result<(), Fail> {
        let epoch = self.conn.epoch.load(Ordering::Acquire);
        let (mut next, _) = self.sync(rt)?;
        self.round += 1;
        self.shared.acked.store(next - 1, Ordering::Release);
        self.shared.failed.store(false, Ordering::Release);
        self.shared.round.store(self.round, Ordering::Release);
        self.shared.sessions.fetch_add(1, Ordering::Relaxed);
        self.progressed = true;
        (self.opts.log)(&format!(
            "exporting {} to stream {} on {} from seq {next}",
            self.journal, self.stream, self.opts.server.url
        ));
        let mut last_acked = next - 1;
        let mut last_progress = Instant::now();
        let mut idle = Wait::new(self.opts.busy_poll);
        let mut quiet = tape_journal::Idle::awake(64, tape_journal::AWAKE);
        let mut driven = Instant::now();
        let window = self.opts.window.max(1);
        let stream_hdr = async_nats::HeaderValue::from(self.stream.as_str());
        let Some(mut cursor) = self.cursor.take() else {
            return Err(Fail::Retry("no cursor".into()));
        };
        let client = self.conn.client.clone();
        loop {
            if stop.is_set() {
                // Let what is in flight be acknowledged (not needed for
                // correctness: the next start reads the stream's end).
                let until = Instant::now() + Duration::from_secs(1);
                while self.shared.acked.load(Ordering::Acquire) < next - 1 && Instant::now() < until
                {
                    rt.block_on(tokio::time::sleep(Duration::from_millis(1)));
                }
                return Ok(());
            }
            if self.shared.failed.load(Ordering::Acquire) {
                let why = self
                    .shared
                    .why
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                return Err(Fail::Retry(format!(
                    "{why}: reading the stream's last sequence again"
                )));
            }
            if self.conn.epoch.load(Ordering::Acquire) != epoch {
                return Err(Fail::Retry(
                    "the connection was made again: reading the stream's last sequence again"
                        .into(),
                ));
            }
            let acked = self.shared.acked.load(Ordering::Acquire);
            let now = Instant::now();
            if acked != last_acked {
                last_acked = acked;
                last_progress = now;
            }
            let inflight = next - 1 - acked;
            if inflight == 0 {
                last_progress = now;
            } else if now.duration_since(last_progress) > Duration::from_secs(3) {
                return Err(Fail::Retry(format!(
                    "no acknowledgement of seq {} for 3 s",
                    acked + 1
                )));
            }
            let mut sent = 0u64;
            while inflight + sent < window && sent < 512 {
                let f = match cursor.next() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(ReadError::Damaged(d)) => {
                        return Err(Fail::Fatal(format!("journal {}: {d}", self.journal)))
                    }
                    Err(e) => return Err(Fail::Retry(format!("journal {}: {e}", self.journal))),
                };
                if f.seq() != next {
                    return Err(Fail::Fatal(format!(
                        "journal {} continues at seq {} where {next} was expected: frames were pruned before they were exported",
                        self.journal,
                        f.seq()
                    )));
                }
                let mut h = HeaderMap::new();
                h.insert("Nats-Expected-Stream", stream_hdr.clone());
                h.insert(
                    "Nats-Expected-Last-Sequence",
                    (next - 1).to_string().as_str(),
                );
                let reply = Subject::from(format!("{}.{}.{next}", self.inbox, self.round));
                let body = bytes::Bytes::copy_from_slice(f.raw());
                let payload_len = f.payload().len() as u64;
                let publish =
                    client.publish_with_reply_and_headers(self.subject.clone(), reply, h, body);
                match rt.block_on(tokio::time::timeout(Duration::from_secs(2), publish)) {
                    Ok(Ok(())) => {
                        self.shared.frames.fetch_add(1, Ordering::Relaxed);
                        self.shared.bytes.fetch_add(payload_len, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        return Err(Fail::Retry(format!("cannot publish seq {next}: {e}")))
                    }
                    Err(_) => {
                        return Err(Fail::Retry(format!(
                            "cannot publish seq {next}: the client's queue stayed full for 2 s"
                        )))
                    }
                }
                next += 1;
                sent += 1;
            }
            // The runtime runs on this thread only inside `block_on`, and
            // a publish that finds room returns at once: let the connection
            // write what was queued and read the acks now, after a burst,
            // while acks are due, and at least every millisecond (pings,
            // status answers).
            if sent > 0 || inflight > 0 || driven.elapsed() > Duration::from_millis(1) {
                rt.block_on(tokio::task::yield_now());
                driven = Instant::now();
            }
            if sent > 0 {
                idle.reset();
                quiet.reset();
            } else if self.opts.busy_poll {
                idle.idle();
            } else if !quiet.is_parking() {
                // For AWAKE after the last frame sent, the core is yielded
                // to whatever else runs at each empty look: a stream with
                // frames more often than that (and acks due meanwhile) is
                // followed without a wake-up or a sleep per frame.
                quiet.idle();
            } else if inflight == 0 {
                // Nothing to send, nothing to hear back: asleep on the
                // journal's doorbell, woken by the writer's next frame;
                // back within IDLE_WAIT to drive the connection (pings,
                // status answers).
                cursor.wait(IDLE_WAIT);
                // The next turn drives the connection, whatever it sends.
                driven = Instant::now() - Duration::from_millis(2);
            } else {
                // Acks still due after AWAKE: short sleeps.
                idle.idle();
            }
        }
    }
}
