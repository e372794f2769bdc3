//! The responder: reads the journals of live requesters, answers each
//! request addressed to it once, and publishes events.
//!
//! # Where it reads, and why nothing is answered twice
//!
//! At start the responder reads its own journal from the first frame and
//! keeps, per requester id (a reply's `dest`), the highest `corr` it
//! replied to: since a request's `corr` is its sequence number in the
//! requester's journal, that is the highest request answered. A reply is
//! one frame, published whole or not at all, so this is exact after any
//! crash.
//!
//! The registration thread opens each requester's journal when the service
//! says it is up (so the serving thread makes no system call for it), at
//! the request after the highest answered one (from the first frame for a
//! requester never answered). The serving thread also skips any request at
//! or below that mark, so two openings of one journal cannot answer one
//! request twice. A request is answered if it is addressed to this
//! responder, well formed, and not past its deadline; the others are
//! stepped over (and counted in [`ResponderStats`]).
//!
//! When a requester goes away, its journal is read to its end and then
//! closed. Requesters are served in turn, one request each per turn.

mod builder;
mod request;

pub use builder::ResponderBuilder;
use request::deadline_of;
pub use request::{ReplyError, Request, Respond};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tape_journal::{
    clock::now_ns, Appender, Cursor, CursorOptions, FrameMeta, OpenError, Start, WriteError,
};
use tape_reader::Idle;
use tape_service::{endpoint_id, JournalId, Peer, PeerKind};

use crate::registration::Registration;
use crate::{EndpointCreateError, ServeError, TIMEOUT_LEN};
use tape_journal::{PageHelper, PageHelperHandle};

/// Empty polls between housekeeping rounds (closing the journals of
/// requesters that left).
const HOUSEKEEPING_EVERY: u32 = 1 << 12;

/// Most frames stepped over in one journal per poll, so that one busy
/// journal full of requests for others does not hold up the rest.
const SKIP_BATCH: usize = 64;

/// Empty polls between two readings of the clock that requests' deadlines
/// are compared with.
const CLOCK_EVERY: u32 = 64;
/// Shared between the responder and its registration thread.
struct Shared {
    /// Requester journals opened by the registration thread, not yet taken
    /// by the serving thread (or why one could not be opened).
    incoming: Mutex<Vec<Result<NewSource, (String, String)>>>,
    /// Highest request answered per requester id, for the journals not
    /// being read now (the serving thread keeps it for the others).
    answered: Mutex<HashMap<u32, u64>>,
    /// Maps the requesters' next pages ahead.
    pager: PageHelperHandle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// How long [`Responder::run`] sleeps at most while idle: the delay of a
/// new requester's first request (an idle responder's requests already
/// known wake it at once).
pub const NEW_REQUESTER_LOOK: Duration = Duration::from_millis(1);

/// A requester journal opened by the registration thread.
struct NewSource {
    name: String,
    id: u32,
    cursor: Cursor,
    /// Highest answered request when it was opened.
    answered: u64,
    /// The journal ends below that mark: it was made anew (seq started at
    /// 1 again), so the mark does not apply to it.
    fresh: bool,
}

impl Shared {
    fn incoming(&self) -> MutexGuard<'_, Vec<Result<NewSource, (String, String)>>> {
        tape_journal::sync::lock(&self.incoming)
    }

    fn answered(&self) -> MutexGuard<'_, HashMap<u32, u64>> {
        tape_journal::sync::lock(&self.answered)
    }

    /// On the registration thread: opens requester `p`'s journal after the
    /// highest request answered.
    fn open(&self, p: &Peer) {
        let Some(j) = p.journals.first() else { return };
        let id = endpoint_id(&p.name);
        let answered = self.answered().get(&id).copied().unwrap_or(0);
        let opened = match open_requests(j, answered) {
            Ok((mut cursor, fresh)) => {
                self.pager.add(&mut cursor);
                Ok(NewSource {
                    name: p.name.clone(),
                    id,
                    cursor,
                    answered,
                    fresh,
                })
            }
            // A requester makes its journal before it registers: none means
            // it has left already and deleted it (`tape call` does).
            Err(OpenError::NotFound { .. }) => return,
            Err(e) => Err((p.name.clone(), e.to_string())),
        };
        self.incoming().push(opened);
    }
}

/// Opens a requester's journal at the request after `answered`; `fresh`
/// when the journal is shorter than that (made anew), then from its start.
fn open_requests(j: &JournalId, answered: u64) -> Result<(Cursor, bool), OpenError> {
    let opts = CursorOptions {
        verify_crc: false,
        populate: true,
    };
    if answered == 0 {
        return Ok((Cursor::open(&j.dir, &j.journal, Start::First, opts)?, false));
    }
    let end = Cursor::open(&j.dir, &j.journal, Start::End, opts)?;
    if end.next_seq().is_none_or(|next| next <= answered) {
        return Ok((Cursor::open(&j.dir, &j.journal, Start::First, opts)?, true));
    }
    drop(end);
    let c = Cursor::open(&j.dir, &j.journal, Start::Seq(answered + 1), opts)?;
    Ok((c, false))
}

/// A requester journal being read.
#[derive(Debug)]
struct Source {
    name: String,
    id: u32,
    cursor: Cursor,
    /// Highest request of this requester answered.
    answered: u64,
    /// The service lists the requester as online.
    live: bool,
    /// Damaged: no longer read.
    broken: bool,
}

/// What the responder has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponderStats {
    /// Requests answered.
    pub answered: u64,
    /// Requests stepped over because their deadline had passed.
    pub expired: u64,
    /// Frames stepped over because they were addressed to another
    /// responder.
    pub foreign: u64,
    /// Requests stepped over because they were answered already (before a
    /// restart).
    pub duplicate: u64,
    /// Frames stepped over because they are not well-formed requests (a
    /// payload shorter than the timeout, or `corr` not equal to `seq`).
    pub malformed: u64,
    /// Requester journals being read now.
    pub requesters: u64,
}
/// What one look at a requester journal found.
enum Scan {
    Empty,
    Skipped,
    Request,
}

/// Answers requests addressed to its name, and publishes events.
#[derive(Debug)]
pub struct Responder {
    name: String,
    id: u32,
    shared: Arc<Shared>,
    /// Table version last applied.
    seen: u64,
    sources: Vec<Source>,
    /// Index of the source whose turn it is.
    turn: usize,
    idle_polls: u32,
    /// The clock (ns since the epoch) that deadlines are compared with:
    /// read every few empty polls, and taken from each reply's write time.
    /// Never ahead of the clock, so a request is never dropped before its
    /// deadline; one that expired a moment ago may still be answered (its
    /// caller drops the reply).
    now: i64,
    stats: ResponderStats,
    /// Maps the requesters' next pages ahead.
    _pager: PageHelper,
    // Dropped in this order: the registration (the service sees the
    // responder go), then the journal.
    reg: Registration,
    appender: Appender,
}

impl Responder {
    /// A responder named `name` on the default root.
    pub fn create(name: &str) -> Result<Responder, EndpointCreateError> {
        Responder::builder(name).create()
    }

    /// A builder for a responder named `name`.
    pub fn builder(name: &str) -> ResponderBuilder {
        ResponderBuilder {
            name: name.to_string(),
            root: None,
            dir: None,
            page_size: crate::DEFAULT_PAGE_SIZE,
        }
    }

    /// Answers at most one request: the next one, taking the requesters in
    /// turn, with `handler`, which writes the reply through its
    /// [`Respond`] (an empty reply is sent for it if it writes none).
    /// Returns whether anything was done (a request answered, or frames
    /// stepped over); never blocks.
    ///
    /// An error says that one requester's journal could not be read (it is
    /// no longer read; the others are served) or that a reply could not be
    /// written; the responder stays usable.
    pub fn poll<F>(&mut self, handler: F) -> Result<bool, ServeError>
    where
        F: FnOnce(&Request<'_>, &mut Respond<'_>),
    {
        let v = self.reg.directory().version();
        if v != self.seen {
            self.sync(v)?;
        }
        let n = self.sources.len();
        let mut progressed = false;
        let mut i = self.turn;
        for _ in 0..n {
            if i >= n {
                i = 0;
            }
            match self.scan(i)? {
                Scan::Request => {
                    self.turn = i + 1;
                    self.answer(i, handler)?;
                    return Ok(true);
                }
                Scan::Skipped => progressed = true,
                Scan::Empty => {}
            }
            i += 1;
        }
        if !progressed {
            self.idle_polls += 1;
            if self.idle_polls % CLOCK_EVERY == 0 {
                self.now = now_ns();
            }
            if self.idle_polls >= HOUSEKEEPING_EVERY {
                self.idle_polls = 0;
                self.housekeeping();
            }
        }
        Ok(progressed)
    }

    /// Sleeps until a request is published in a requester journal (on
    /// their doorbells) or `timeout` passes; returns whether one was. A
    /// requester that registers meanwhile is seen at the next
    /// [`poll`](Self::poll) after the sleep.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let mut cursors: Vec<&mut Cursor> =
            self.sources.iter_mut().map(|s| &mut s.cursor).collect();
        if cursors.is_empty() {
            std::thread::sleep(timeout);
            return false;
        }
        tape_journal::wait_any(&mut cursors, timeout)
    }

    /// Serves until `stop` is set: [`poll`](Self::poll) in a loop, spinning,
    /// then yielding, then asleep on the requester journals' doorbells
    /// (at most [`NEW_REQUESTER_LOOK`] at a time, to take in new requesters). A requester journal that
    /// cannot be read is reported on stderr and the others are served; an
    /// error writing a reply ends the loop.
    pub fn run<F>(&mut self, stop: &AtomicBool, mut handler: F) -> Result<(), ServeError>
    where
        F: FnMut(&Request<'_>, &mut Respond<'_>),
    {
        let mut idle = Idle::new();
        while !stop.load(Ordering::Acquire) {
            match self.poll(&mut handler) {
                Ok(true) => idle.reset(),
                Ok(false) if idle.is_parking() => {
                    self.wait(NEW_REQUESTER_LOOK);
                    idle.reset();
                }
                Ok(false) => idle.idle(),
                Err(e @ ServeError::Requester { .. }) => eprintln!("tape-rpc: {}: {e}", self.name),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Publishes an event for every reader of this responder's journal
    /// (`dest` 0, `corr` 0). Returns its sequence number.
    pub fn publish(&mut self, msg_type: u32, data: &[u8]) -> Result<u64, WriteError> {
        self.publish_to(0, msg_type, data)
    }

    /// Publishes an event addressed to endpoint id `dest` (`corr` 0).
    pub fn publish_to(&mut self, dest: u32, msg_type: u32, data: &[u8]) -> Result<u64, WriteError> {
        let meta = FrameMeta {
            msg_type,
            source: self.id,
            dest,
            corr: 0,
        };
        self.appender.write_meta(&meta, data)
    }

    /// What it has done so far.
    pub fn stats(&self) -> ResponderStats {
        ResponderStats {
            requesters: self.sources.len() as u64,
            ..self.stats
        }
    }

    /// This responder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This responder's endpoint id (the `dest` of requests to it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Whether the service knows this responder right now (false for a
    /// moment while a restarted service is reconnected to).
    pub fn is_registered(&self) -> bool {
        self.reg.directory().is_registered()
    }

    /// Takes the journals the registration thread opened and marks the
    /// requesters that left.
    #[cold]
    fn sync(&mut self, v: u64) -> Result<(), ServeError> {
        self.seen = v;
        let incoming = std::mem::take(&mut *self.shared.incoming());
        let mut failed = None;
        for item in incoming {
            match item {
                Ok(ns) => {
                    // A journal read already (its requester came back
                    // before it was closed) stays as it is.
                    if self.sources.iter().any(|s| s.name == ns.name) {
                        continue;
                    }
                    let answered = if ns.fresh {
                        0
                    } else {
                        let now = self.shared.answered().get(&ns.id).copied().unwrap_or(0);
                        now.max(ns.answered)
                    };
                    self.sources.push(Source {
                        name: ns.name,
                        id: ns.id,
                        cursor: ns.cursor,
                        answered,
                        live: true,
                        broken: false,
                    });
                }
                Err((name, message)) => failed = Some(ServeError::Requester { name, message }),
            }
        }
        {
            let table = self.reg.directory().table();
            for s in &mut self.sources {
                s.live = table
                    .get(&s.name)
                    .is_some_and(|p| p.kind == PeerKind::Requester);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Steps over what is not to be answered in source `i`, up to the next
    /// request to answer.
    #[inline]
    fn scan(&mut self, i: usize) -> Result<Scan, ServeError> {
        let me = self.id;
        let now = self.now;
        let src = &mut self.sources[i];
        if src.broken {
            return Ok(Scan::Empty);
        }
        let mut skipped = false;
        for _ in 0..SKIP_BATCH {
            let f = match src.cursor.peek() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    src.broken = true;
                    return Err(ServeError::Requester {
                        name: src.name.clone(),
                        message: e.to_string(),
                    });
                }
            };
            let counter = if f.dest() != me {
                &mut self.stats.foreign
            } else if f.payload().len() < TIMEOUT_LEN || f.corr() != f.seq() {
                &mut self.stats.malformed
            } else if f.seq() <= src.answered {
                &mut self.stats.duplicate
            } else {
                if deadline_of(&f) < now {
                    &mut self.stats.expired
                } else {
                    return Ok(Scan::Request);
                }
            };
            *counter += 1;
            skipped = true;
            let _ = src.cursor.next();
        }
        Ok(if skipped { Scan::Skipped } else { Scan::Empty })
    }

    /// Hands the request [`scan`](Self::scan) found to `handler` and sends
    /// its reply.
    fn answer<F>(&mut self, i: usize, handler: F) -> Result<(), ServeError>
    where
        F: FnOnce(&Request<'_>, &mut Respond<'_>),
    {
        let Responder {
            sources,
            appender,
            id,
            stats,
            ..
        } = &mut *self;
        let src = &mut sources[i];
        let frame = match src.cursor.next() {
            Ok(Some(f)) => f,
            Ok(None) => unreachable!("a peeked frame is still there"),
            Err(e) => {
                src.broken = true;
                return Err(ServeError::Requester {
                    name: src.name.clone(),
                    message: e.to_string(),
                });
            }
        };
        let seq = frame.seq();
        let req = Request {
            frame,
            requester: &src.name,
        };
        let mut out = Respond {
            appender,
            meta: FrameMeta {
                msg_type: 0,
                source: *id,
                dest: frame.source(),
                corr: seq,
            },
            sent: false,
            failed: None,
        };
        handler(&req, &mut out);
        if !out.sent && out.failed.is_none() {
            let _ = out.reply(req.msg_type(), &[]);
        }
        if let Some(error) = out.failed {
            return Err(ServeError::Reply {
                requester: src.name.clone(),
                seq,
                error,
            });
        }
        src.answered = seq;
        stats.answered += 1;
        self.now = self.now.max(self.appender.last_time_ns());
        Ok(())
    }

    /// Closes the journals of requesters that left once read to their
    /// end.
    #[cold]
    fn housekeeping(&mut self) {
        let shared = &self.shared;
        self.sources.retain_mut(|s| {
            let done = s.broken || (!s.live && matches!(s.cursor.peek(), Ok(None)));
            if done {
                let mut a = shared.answered();
                let e = a.entry(s.id).or_insert(0);
                *e = s.answered.max(*e);
                return false;
            }
            true
        });
        if self.turn >= self.sources.len() {
            self.turn = 0;
        }
    }
}
