//! tape-nats: journals across machines on NATS JetStream (`tape nats
//! export` where journals are written, `tape nats import` where they are
//! read, a `nats-server -js` or a cluster of them between).
//!
//! The mmap journal stays the nanosecond path on each box; this is the
//! only crate of tape with an async runtime (tokio, for async-nats). The
//! journal side of each export and import runs on a plain thread of its
//! own (the cursor or the writer), and the runtime has no worker of its
//! own (a current-thread runtime): that thread drives the connection, the
//! acks and the status answers whenever it is inside `Runtime::block_on`
//! (waiting for a message; after a burst of publishes, while acks are
//! due and at least every millisecond). A frame thus goes from the cursor
//! to the socket, and a message from the socket to the replica's writer,
//! without waking another thread. Waiting for the journal is
//! [`Poller`]: short sleeps, never a spinning core.
//!
//! # Map
//!
//! | part | what |
//! |---|---|
//! | [`names`] | journal name → stream and subject, one to one |
//! | [`wire`] | one frame as one message: header layout, checks |
//! | [`export()`], [`ExportOptions`] | journal → stream; the resume rule |
//! | [`import()`], [`ImportOptions`] | stream → replica journal; `--dest` |
//! | [`status`] | streams, and the running exports' and imports' lag (over NATS, and on the box through their status sockets) |
//! | [`files`], [`Files`] | files in a JetStream object store (`tape file`) |
//! | [`api`] | the JetStream API requests used, and why these |
//! | [`conn`] | server address, credentials, reconnection |
//! | [`vars`] | shared variables on a key-value bucket (`tape var`) |
//! | [`remote`] | remote calls: `tape rpc expose`, [`RemoteRequester`], who exposes what |
//!
//! # What async-nats is used for (and what not), against nats-server 2.9.10
//!
//! - Core client only: `ConnectOptions` (token or credentials file,
//!   reconnect with backoff, event callback), `publish_with_reply_and_headers`,
//!   `subscribe`, `request`, `flush`. The client reconnects by itself;
//!   tape counts each reconnection and re-reads the stream's end.
//! - The JetStream API is spoken as plain requests with JSON bodies
//!   ([`api`]): async-nats 0.51's typed calls expect fields that 2.9.10
//!   does not send (`query_account` fails, and so does
//!   `create_key_value`), and with default features off they silently
//!   drop settings of 2.10+. Stream create, info, list, purge, message get
//!   and consumer create/delete are the same JSON on 2.9.10 and later.
//! - Publishing: a plain publish with the `Nats-Expected-Last-Sequence`
//!   header and a reply subject per frame under one wildcard subscription
//!   for all acks (about 1.3× the client's own JetStream `publish` here,
//!   issue 14), pipelined up to a window.
//! - Consuming: an ephemeral push consumer (`deliver_subject` = an inbox,
//!   `ack_policy: none`, flow control, 1 s idle heartbeat), the lowest
//!   latency the issue measured; tape answers its flow-control requests
//!   and checks each message's stream sequence from its reply subject.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod api;
pub mod conn;
pub mod export;
pub mod files;
pub mod import;
pub mod names;
pub mod remote;
pub mod status;
pub mod vars;
pub mod wire;

pub use conn::{Auth, Server, DEFAULT_SERVER};
pub use export::{export, ExportOptions};
pub use files::{FileError, Files, FilesOptions, ObjectInfo};
pub use import::{import, ImportOptions};
pub use remote::{RemoteError, RemoteReply, RemoteRequester};
pub use vars::{mirror, Change, Entry, MirrorOptions, VarError, Vars, VarsOptions};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where log lines go: one line per call, without a newline.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// A [`Log`] that prints `<prefix>: <line>` on standard error.
pub fn stderr_log(prefix: &'static str) -> Log {
    Arc::new(move |line| eprintln!("{prefix}: {line}"))
}

/// A [`Log`] that drops every line.
pub fn quiet_log() -> Log {
    Arc::new(|_| {})
}

/// The runtime of one command: one worker thread for the connection.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tape-nats")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// How a thread waits for the next frame of a journal it polls (the
/// export's cursor; a reader of a replica may wait the same way), on a box
/// where more threads wait than there are cores.
///
/// The export yields its core for [`tape_journal::AWAKE`] after each frame
/// ([`tape_journal::Idle::awake`]), then, while acks are still due, waits
/// with this: spinning steals the core the writer, the server and the
/// client's runtime need (with two cores, two spinning threads made every
/// hop wait for a scheduler slice: p50 about 2 ms, issue 14), and a long
/// run of `sched_yield` keeps a core busy for nothing. So: a few spins,
/// then short sleeps (`SHORT`, 20 µs) for the first ~20 ms without a
/// frame, then sleeps growing to 1 ms while the journal stays quiet.
/// Call [`low_timer_slack`] once on the polling thread: Linux adds 50 µs
/// to every sleep by default.
#[derive(Debug, Clone)]
pub struct Poller {
    n: u32,
}

impl Poller {
    const SPINS: u32 = 64;
    const SHORT: Duration = Duration::from_micros(20);
    const SHORT_SLEEPS: u32 = 1000;

    /// A poller.
    pub const fn new() -> Poller {
        Poller { n: 0 }
    }

    /// Waits a little after an empty poll, longer the longer nothing came.
    #[inline]
    pub fn idle(&mut self) {
        self.n = self.n.saturating_add(1);
        if self.n <= Self::SPINS {
            std::hint::spin_loop();
        } else if self.n <= Self::SPINS + Self::SHORT_SLEEPS {
            std::thread::sleep(Self::SHORT);
        } else {
            let k = (self.n - Self::SPINS - Self::SHORT_SLEEPS).min(20);
            std::thread::sleep(Duration::from_micros(50 * k as u64));
        }
    }

    /// After a frame came.
    #[inline]
    pub fn reset(&mut self) {
        self.n = 0;
    }
}

impl Default for Poller {
    fn default() -> Self {
        Poller::new()
    }
}

/// Makes this thread's sleeps end when asked (timer slack 1 µs instead of
/// 50 µs); best effort.
pub fn low_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches
    // only the calling thread's scheduling attributes.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// A runtime without a worker: the connection, its acks and the status
/// answers run on whichever thread is inside [`Runtime::block_on`]
/// (`tokio::runtime::Runtime`), the export's or import's own thread. A
/// message then goes from the socket to the import's writer, and a frame
/// from the export's cursor to the socket, on one thread: no wake-up of
/// another thread per message (about 40 µs each here, issue 14). Only
/// `Runtime::block_on` drives it (`Handle::block_on` would not).
pub(crate) fn runtime_here() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// [`sleep_unless`] that keeps driving the runtime (the connection's
/// pings, reconnection, the status answers) while it waits.
pub(crate) fn sleep_driving(rt: &tokio::runtime::Runtime, stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    rt.block_on(async {
        while !stop.load(Ordering::Acquire) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Duration::from_millis(10))).await;
        }
    });
}

/// Sleeps `d`, waking early when `stop` is set.
pub(crate) fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// This machine's host name ("" when it has none).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length, which is passed.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
