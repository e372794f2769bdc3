//! The requester: writes requests into its own journal and reads the
//! replies from each responder's journal.
//!
//! A call is: look the destination up in a small local table (kept current
//! by the registration thread; a changed table is one atomic load away),
//! claim room in the requester's journal, write the timeout and the data,
//! commit with `corr` = the frame's own sequence number, then poll the
//! responder's journal (opened at its end the first time) for the frame
//! with `dest` = this requester's id and that `corr`. Frames for others,
//! events, and late replies to calls that timed out are stepped over;
//! replies to requests sent with [`Requester::send_nowait`] are copied
//! aside until asked for.

mod builder;
mod reply;

pub use builder::RequesterBuilder;
use reply::Inner;
pub use reply::{OwnedReply, Pending, Reply};

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tape_journal::{Appender, Cursor, CursorOptions, FrameMeta, Start};
use tape_reader::Idle;
use tape_service::{endpoint_id, Client, JournalId, Peer, PeerKind, QueryError};

use crate::registration::Registration;
use crate::{nanos, CallError, EndpointCreateError, MAX_WAITING, TIMEOUT_LEN};
use tape_journal::PageHelper;
/// A responder this requester has called.
#[derive(Debug)]
struct Dest {
    name: String,
    id: u32,
    /// Whether the service lists it as a live responder (as of the last
    /// table change seen, or the last time it was asked).
    alive: bool,
    /// Its journal, as registered.
    journal: Option<JournalId>,
    /// Reads its journal from where it was when first called.
    cursor: Option<Cursor>,
}
/// A request sent with `send_nowait` whose reply is not taken yet.
#[derive(Debug)]
struct Waiting {
    dest: usize,
    deadline: Instant,
    timeout: Duration,
    reply: Option<OwnedReply>,
}

/// Deletes an ephemeral requester's journal files; dropped after the
/// appender (fields drop in declaration order).
#[derive(Debug)]
struct Cleanup {
    dir: PathBuf,
    journal: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(pages) = tape_journal::list_pages(&self.dir, &self.journal) {
            for no in pages {
                let _ = std::fs::remove_file(tape_journal::files::page_path(
                    &self.dir,
                    &self.journal,
                    no,
                ));
            }
        }
        let _ = std::fs::remove_file(tape_journal::files::lock_path(&self.dir, &self.journal));
    }
}

/// Sends requests and takes their replies: OK, NO or TIMEOUT.
///
/// Not shared between threads: calls take `&mut self`. For many calls in
/// flight, send them with [`send_nowait`](Self::send_nowait) and take the
/// replies with [`wait_reply`](Self::wait_reply) in any order.
#[derive(Debug)]
pub struct Requester {
    name: String,
    id: u32,
    root: PathBuf,
    /// Table version last applied to `dests`.
    seen: u64,
    dests: Vec<Dest>,
    /// Index of the last destination used (checked first).
    last: usize,
    /// Requests sent with `send_nowait`, by corr.
    waiting: HashMap<u64, Waiting>,
    /// The last reply taken from `waiting`, lent out as a [`Reply`].
    taken: Option<OwnedReply>,
    /// Connection for the questions the table cannot answer.
    query: Option<Client>,
    nowait_timeout: Duration,
    /// Maps the responders' next pages ahead.
    pager: PageHelper,
    // Dropped in this order: the registration (the service sees the
    // requester go), the journal, then its files if ephemeral.
    reg: Registration,
    appender: Appender,
    _cleanup: Option<Cleanup>,
}

/// What one look at a responder's journal found.
enum Step {
    /// Nothing new.
    Empty,
    /// A frame that is not the awaited reply, stepped over.
    Skipped,
    /// The awaited reply, not consumed yet.
    Found,
}

impl Requester {
    /// A requester named `name` on the default root.
    pub fn create(name: &str) -> Result<Requester, EndpointCreateError> {
        Requester::builder(name).create()
    }

    /// A builder for a requester named `name`.
    pub fn builder(name: &str) -> RequesterBuilder {
        RequesterBuilder {
            name: name.to_string(),
            root: None,
            dir: None,
            page_size: crate::DEFAULT_PAGE_SIZE,
            nowait_timeout: Duration::from_secs(60),
            ephemeral: false,
        }
    }

    /// Calls responder `dest`: sends the request (`msg_type`, `data`) with a
    /// deadline of now + `timeout`, then waits for its reply.
    ///
    /// - OK: the [`Reply`], borrowed until the next call;
    /// - [`CallError::No`] at once when the service knows no live responder
    ///   named `dest` (nothing is sent);
    /// - [`CallError::Timeout`] when no reply came by the deadline (a reply
    ///   that comes later is dropped; later calls are not disturbed).
    pub fn call(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Reply<'_>, CallError> {
        let d = self.resolve(dest)?;
        let corr = self.send(d, msg_type, data, timeout)?;
        // The deadline is counted from the request's write time; the clock
        // is first read only if the reply is not there at once.
        let sent_ns = self.appender.last_time_ns();
        self.wait_for(
            d,
            corr,
            Deadline::After { sent_ns, timeout },
            timeout,
            false,
        )
    }

    /// Sends a request to responder `dest` and returns once it is published,
    /// with the requester's default deadline (see
    /// [`RequesterBuilder::nowait_timeout`]). Take the reply later with
    /// [`poll_reply`](Self::poll_reply) or [`wait_reply`](Self::wait_reply),
    /// or leave it: it is forgotten after the deadline.
    pub fn send_nowait(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
    ) -> Result<Pending, CallError> {
        self.send_nowait_within(dest, msg_type, data, self.nowait_timeout)
    }

    /// [`send_nowait`](Self::send_nowait) with a deadline of now + `timeout`.
    pub fn send_nowait_within(
        &mut self,
        dest: &str,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<Pending, CallError> {
        let start = Instant::now();
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.retain(|_, w| w.deadline > start);
            if self.waiting.len() >= MAX_WAITING {
                return Err(CallError::TooManyWaiting);
            }
        }
        let d = self.resolve(dest)?;
        let corr = self.send(d, msg_type, data, timeout)?;
        self.waiting.insert(
            corr,
            Waiting {
                dest: d,
                deadline: start + timeout,
                timeout,
                reply: None,
            },
        );
        Ok(Pending { corr, dest: d })
    }

    /// The reply to `p` if it has come, without waiting. After the
    /// request's deadline with no reply: [`CallError::Timeout`], and the
    /// request is forgotten.
    pub fn poll_reply(&mut self, p: &Pending) -> Result<Option<Reply<'_>>, CallError> {
        let (deadline, timeout) = self.waiting_entry(p)?;
        if self.waiting.get(&p.corr).is_some_and(|w| w.reply.is_some()) {
            return Ok(Some(self.take_kept(p.corr)));
        }
        loop {
            match self.step(p.dest, p.corr)? {
                Step::Found => {
                    self.waiting.remove(&p.corr);
                    return Ok(Some(self.take_found(p.dest)?));
                }
                Step::Skipped => {}
                Step::Empty => break,
            }
        }
        if Instant::now() >= deadline {
            self.waiting.remove(&p.corr);
            return Err(CallError::Timeout {
                dest: self.dests[p.dest].name.clone(),
                after: timeout,
            });
        }
        Ok(None)
    }

    /// Waits for the reply to `p` until its deadline.
    pub fn wait_reply(&mut self, p: &Pending) -> Result<Reply<'_>, CallError> {
        let (deadline, timeout) = self.waiting_entry(p)?;
        self.wait_for(p.dest, p.corr, Deadline::At(deadline), timeout, true)
    }

    /// Number of requests sent with `send_nowait` whose replies are not
    /// taken yet (including those past their deadline not yet forgotten).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// This requester's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This requester's endpoint id (the `dest` of its replies).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether the service knows this requester right now (false for a
    /// moment while a restarted service is reconnected to).
    pub fn is_registered(&self) -> bool {
        self.reg.directory().is_registered()
    }

    /// The live endpoint named `name` (responder or requester), asked of
    /// the service.
    pub fn find(&mut self, name: &str) -> Result<Option<Peer>, QueryError> {
        self.ask(|c| c.find_endpoint(name))
    }

    /// Page `page` (from 0) of `per_page` (1 to 1000) registered peers of
    /// every kind (writers, readers, responders, requesters), in
    /// registration order, with pid and registration time.
    pub fn list(&mut self, page: u64, per_page: u32) -> Result<Vec<Peer>, QueryError> {
        self.ask(|c| c.list(page, per_page))
    }

    /// Number of registered peers of every kind.
    pub fn count(&mut self) -> Result<u64, QueryError> {
        self.ask(|c| c.count())
    }

    /// Runs `q` on the query connection, connecting (once more after a
    /// broken connection) as needed.
    fn ask<T>(
        &mut self,
        mut q: impl FnMut(&mut Client) -> Result<T, QueryError>,
    ) -> Result<T, QueryError> {
        for attempt in 0..2 {
            if self.query.is_none() {
                let c = Client::connect(&self.root)
                    .map_err(|e| QueryError::Io(std::io::Error::other(e.to_string())))?;
                self.query = Some(c);
            }
            let c = self.query.as_mut().expect("connected above");
            match q(c) {
                Err(QueryError::Io(e)) => {
                    self.query = None;
                    if attempt == 1 {
                        return Err(QueryError::Io(e));
                    }
                }
                other => return other,
            }
        }
        unreachable!("the loop returns")
    }

    /// The index of destination `dest`, known to be a live responder with
    /// its journal open; [`CallError::No`] otherwise.
    #[inline]
    fn resolve(&mut self, dest: &str) -> Result<usize, CallError> {
        let v = self.reg.directory().version();
        if v != self.seen {
            self.refresh(v);
        }
        let i = match self.dests.get(self.last) {
            Some(d) if d.name == dest => self.last,
            _ => self.index_of(dest),
        };
        self.last = i;
        let d = &self.dests[i];
        if !d.alive || d.cursor.is_none() {
            self.prepare(i)?;
        }
        Ok(i)
    }

    fn index_of(&mut self, dest: &str) -> usize {
        if let Some(i) = self.dests.iter().position(|d| d.name == dest) {
            return i;
        }
        self.dests.push(Dest {
            name: dest.to_string(),
            id: endpoint_id(dest),
            alive: false,
            journal: None,
            cursor: None,
        });
        self.dests.len() - 1
    }

    /// Applies the registration thread's table to every destination.
    #[cold]
    fn refresh(&mut self, v: u64) {
        self.seen = v;
        let table = self.reg.directory().table();
        for d in &mut self.dests {
            match table.get(&d.name) {
                Some(p) if p.kind == PeerKind::Responder => {
                    d.alive = true;
                    set_journal(d, p);
                }
                _ => d.alive = false,
            }
        }
    }

    /// The slow path: asks the service whether `dests[i]` is a live
    /// responder (the table may not have heard yet), and opens its journal
    /// at its end the first time.
    #[cold]
    fn prepare(&mut self, i: usize) -> Result<(), CallError> {
        if !self.dests[i].alive {
            let name = self.dests[i].name.clone();
            match self.ask(|c| c.find_endpoint(&name)) {
                Ok(Some(p)) if p.kind == PeerKind::Responder => {
                    let d = &mut self.dests[i];
                    d.alive = true;
                    set_journal(d, &p);
                }
                _ => return Err(CallError::No { dest: name }),
            }
        }
        let d = &mut self.dests[i];
        if d.cursor.is_none() {
            let Some(j) = &d.journal else {
                return Err(CallError::No {
                    dest: d.name.clone(),
                });
            };
            let opts = CursorOptions {
                verify_crc: false,
                populate: true,
            };
            let mut c = Cursor::open(&j.dir, &j.journal, Start::End, opts).map_err(|error| {
                CallError::Open {
                    dest: d.name.clone(),
                    error,
                }
            })?;
            self.pager.handle().add(&mut c);
            d.cursor = Some(c);
        }
        Ok(())
    }

    /// Publishes a request to `dests[d]`; returns its corr (= its seq).
    #[inline]
    fn send(
        &mut self,
        d: usize,
        msg_type: u32,
        data: &[u8],
        timeout: Duration,
    ) -> Result<u64, CallError> {
        let corr = self.appender.next_seq();
        // The deadline is the frame's own write time plus this: no clock
        // read here.
        let timeout_ns = nanos(timeout).max(1) as u64;
        let meta = FrameMeta {
            msg_type,
            source: self.id,
            dest: self.dests[d].id,
            corr,
        };
        let mut claim = self
            .appender
            .claim(TIMEOUT_LEN + data.len())
            .map_err(CallError::Send)?;
        claim[..TIMEOUT_LEN].copy_from_slice(&timeout_ns.to_le_bytes());
        claim[TIMEOUT_LEN..].copy_from_slice(data);
        let seq = claim.commit_meta(&meta);
        debug_assert_eq!(seq, corr);
        Ok(corr)
    }

    /// Looks at the next frame of `dests[d]`'s journal: the reply `corr`
    /// (left in place), or a frame stepped over (a reply to a `send_nowait`
    /// request is copied aside on the way).
    #[inline]
    fn step(&mut self, d: usize, corr: u64) -> Result<Step, CallError> {
        let me = self.id;
        let dest = &mut self.dests[d];
        let cursor = dest
            .cursor
            .as_mut()
            .expect("resolved destinations have a cursor");
        let f = match cursor.peek() {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(Step::Empty),
            Err(error) => {
                return Err(CallError::Read {
                    dest: dest.name.clone(),
                    error,
                })
            }
        };
        if f.dest() == me && f.corr() != 0 {
            if f.corr() == corr {
                return Ok(Step::Found);
            }
            if let Some(w) = self.waiting.get_mut(&f.corr()) {
                if w.dest == d && w.reply.is_none() {
                    w.reply = Some(OwnedReply::of(&f));
                }
            }
            // Otherwise: a late reply to a call that timed out, or to a
            // request of an earlier run of this requester. Dropped.
        }
        let _ = cursor.next();
        Ok(Step::Skipped)
    }

    /// Consumes the reply [`step`](Self::step) found.
    #[inline]
    fn take_found(&mut self, d: usize) -> Result<Reply<'_>, CallError> {
        let dest = &mut self.dests[d];
        match dest.cursor.as_mut().expect("open").next() {
            Ok(Some(f)) => Ok(Reply(Inner::Frame(f))),
            Ok(None) => unreachable!("a peeked frame is still there"),
            Err(error) => Err(CallError::Read {
                dest: dest.name.clone(),
                error,
            }),
        }
    }

    /// Moves the reply kept for `corr` to `taken` and lends it out.
    fn take_kept(&mut self, corr: u64) -> Reply<'_> {
        let w = self.waiting.remove(&corr).expect("kept reply");
        self.taken = w.reply;
        Reply(Inner::Owned(self.taken.as_ref().expect("kept reply")))
    }

    fn waiting_entry(&self, p: &Pending) -> Result<(Instant, Duration), CallError> {
        match self.waiting.get(&p.corr) {
            Some(w) => Ok((w.deadline, w.timeout)),
            None => Err(CallError::NotWaiting { corr: p.corr }),
        }
    }

    /// Polls `dests[d]`'s journal for reply `corr` until `deadline`,
    /// spinning, then yielding, then asleep on the journal's doorbell.
    fn wait_for(
        &mut self,
        d: usize,
        corr: u64,
        mut deadline: Deadline,
        timeout: Duration,
        kept: bool,
    ) -> Result<Reply<'_>, CallError> {
        if kept && self.waiting.get(&corr).is_some_and(|w| w.reply.is_some()) {
            return Ok(self.take_kept(corr));
        }
        let mut idle = Idle::with(1000, 100, Duration::ZERO);
        let mut empty = 0u32;
        loop {
            match self.step(d, corr)? {
                Step::Found => {
                    if kept {
                        self.waiting.remove(&corr);
                    }
                    return self.take_found(d);
                }
                Step::Skipped => idle.reset(),
                Step::Empty => {
                    // The clock is read every few empty polls while
                    // spinning (a few hundred ns apart), at each one once
                    // yielding or parking.
                    empty = empty.wrapping_add(1);
                    let look = empty % 8 == 0 || idle.is_parking();
                    if look && deadline.passed() {
                        if kept {
                            self.waiting.remove(&corr);
                        }
                        return Err(CallError::Timeout {
                            dest: self.dests[d].name.clone(),
                            after: timeout,
                        });
                    }
                    if idle.is_parking() {
                        // Asleep on the responder journal's doorbell until
                        // its next frame (or the deadline).
                        if let Some(c) = self.dests[d].cursor.as_mut() {
                            c.wait(deadline.left());
                        }
                        idle.reset();
                    } else {
                        idle.idle();
                    }
                }
            }
        }
    }
}

/// When a wait ends.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    /// At this instant.
    At(Instant),
    /// `timeout` after the request's write time `sent_ns` (CLOCK_REALTIME):
    /// turned into an instant the first time it is looked at, so that a
    /// reply that comes at once costs no clock read.
    After { sent_ns: i64, timeout: Duration },
}

impl Deadline {
    fn passed(&mut self) -> bool {
        let now = Instant::now();
        if let Deadline::After { sent_ns, timeout } = *self {
            let since = tape_journal::clock::now_ns().saturating_sub(sent_ns).max(0);
            let left = timeout.saturating_sub(Duration::from_nanos(since as u64));
            *self = Deadline::At(now + left);
        }
        match *self {
            Deadline::At(t) => now >= t,
            Deadline::After { .. } => unreachable!("turned into At above"),
        }
    }

    /// Time left (after [`passed`](Self::passed) turned it into an instant).
    fn left(&self) -> Duration {
        match *self {
            Deadline::At(t) => t.saturating_duration_since(Instant::now()),
            Deadline::After { timeout, .. } => timeout,
        }
    }
}

/// Records responder `p`'s journal for `d`; a journal other than the one
/// open is opened afresh (at its end) on the next call. (The service sends
/// canonical folders, so one journal has one spelling.)
fn set_journal(d: &mut Dest, p: &Peer) {
    let Some(j) = p.journals.first() else { return };
    if d.journal.as_ref() != Some(j) {
        d.journal = Some(j.clone());
        d.cursor = None;
    }
}
