//! tape-nats: journals across machines on NATS JetStream (`tape nats
//! export` where journals are written, `tape nats import` where they are
//! read, a `nats-server -js` or a cluster of them between).
//!
//! The mmap journal stays the nanosecond path on each box; this is the
//! only crate of tape with an async runtime (tokio, for async-nats). The
//! journal side of each export and import runs on a plain thread of its
//! own (the cursor or the writer), which hands each publish to the client
//! and waits for each message with `Handle::block_on`; the runtime's one
//! worker drives the connection, the acks and the status answers.
//!
//! # Map
//!
//! | part | what |
//! |---|---|
//! | [`names`] | journal name → stream and subject, one to one |
//! | [`wire`] | one frame as one message: header layout, checks |
//! | [`export()`], [`ExportOptions`] | journal → stream; the resume rule |
//! | [`import()`], [`ImportOptions`] | stream → replica journal; `--dest` |
//! | [`status`] | streams, and the running exports' and imports' lag |
//! | [`api`] | the JetStream API requests used, and why these |
//! | [`conn`] | server address, credentials, reconnection |
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
pub mod import;
pub mod names;
pub mod status;
pub mod vars;
pub mod wire;

pub use conn::{Auth, Server, DEFAULT_SERVER};
pub use export::{export, ExportOptions};
pub use import::{import, ImportOptions};
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
