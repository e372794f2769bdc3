//! tape-bridge: replicates journals over TCP, frame for frame, to other
//! machines (`tape bridge serve` on the source box, `tape bridge pull` on
//! each operation machine).
//!
//! # Map
//!
//! | part | what it is |
//! |---|---|
//! | [`Server`], [`ServeOptions`] | the serving side: accepts subscribers, one thread and one cursor per journal each |
//! | [`pull()`], [`PullHandle`], [`PullOptions`] | the pulling side: keeps local replicas, reconnecting with backoff |
//! | [`status::query`], [`ServerStatus`] | who is subscribed, how far each one is (`tape bridge status`) |
//! | [`status::query_pulls`], [`PullStatus`](status::PullStatus) | how far each pull of a root is (`tape top`, `/metrics`) |
//! | [`Token`] | the shared secret, never sent: HMAC-SHA256 challenge and response |
//! | [`wire`] | the byte format; `bridge/PROTOCOL.md` is its spec |
//!
//! # Decisions
//!
//! - **The journal is the buffer.** Each subscriber has its own thread,
//!   with its own [`Cursor`](tape_journal::Cursor) per journal, and holds
//!   one batch (about 256 KiB) at a time. It reads the source at the pace
//!   its socket takes data, so a slow, stalled or vanished subscriber
//!   slows nobody else and holds no memory that grows. A subscriber whose
//!   socket takes nothing for the stall timeout (5 s) is dropped; it
//!   resumes where it stopped when it reconnects.
//! - **No waiting to fill a batch.** A subscriber thread polls its cursors
//!   ([`Polling`]); whatever is published when it looks goes out at once,
//!   in one batch (up to 256 KiB), on a `TCP_NODELAY` socket. Under load
//!   many frames share a batch and a system call; when idle a frame
//!   travels alone.
//! - **Frames travel as stored.** A batch carries the frames' bytes
//!   exactly as in the source journal (header with sequence, time, type,
//!   source, destination, correlation id, CRC32C, flags; payload; padding)
//!   and a CRC32C over the whole batch. The replica writer
//!   ([`Writer::write_replica_frame`](tape_writer::Writer::write_replica_frame))
//!   keeps every header field, so the replica's frames are byte-identical.
//! - **Checked before written.** The receiver checks a batch's CRC32C,
//!   every frame length (against limits, before anything is allocated),
//!   sequence numbers following on the replica's, and write times; the
//!   appender checks each payload's CRC32C. A batch that fails closes the
//!   connection, and nothing of it is written.
//! - **Resume from the replica.** On every connection the pull asks for
//!   each journal from its replica's last sequence number + 1, as the
//!   writer's recovery found it after whatever crash: nothing lost,
//!   nothing twice, never out of order. A replica that is ahead of its
//!   source, or whose next frame the source no longer has, is refused
//!   with a clear error rather than patched.
//! - **Authentication without the token on the wire.** Both sides send a
//!   32-byte nonce from `getrandom(2)`; the client proves the token with
//!   an HMAC-SHA256 over both, the server answers with its own (so a pull
//!   never takes frames from a server that does not know the token). The
//!   check is constant time. Until a peer has proved the token it gets
//!   nothing but the challenge; a peer refused before that (garbage, a
//!   huge length, silence past the 5 s handshake deadline) gets nothing at
//!   all. Each refusal is one log line with the peer's address. Without a
//!   token a server listens on loopback addresses only.
//! - **Liveness.** An idle server sends a heartbeat every second; the pull
//!   sends an ack (its replicas' last sequence numbers) every 500 ms. Each
//!   side drops a connection that was silent for 5 s.
//! - **Presence.** Each server publishes a Unix socket
//!   `<root>/system/bridge-<pid>-<port>.sock` that answers with its
//!   [`ServerStatus`] (subscribers, their address, account, journals,
//!   sequence sent and acked, lag, frames and bytes sent); `tape bridge
//!   status` reads them all. Each pull publishes
//!   `<root>/system/bridge-pull-<pid>-<n>.sock` with its
//!   [`PullStatus`](status::PullStatus) (replica seq, source seq known,
//!   lag, frames, bytes, reconnects). Both are
//!   [`tape_service::status_socket`]s.
//!   Each subscriber also registers as a reader named
//!   `bridge:<account>@<address>` with the source root's service when one
//!   runs, so `tape ls` lists it.
//!
//! # Example
//!
//! ```
//! use tape_bridge::{PullHandle, PullOptions, ServeOptions, Server, Token};
//! # let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! # let _s1 = tape_service::Service::start(src.path()).unwrap();
//! # let _s2 = tape_service::Service::start(dst.path()).unwrap();
//! let mut w = tape_writer::Writer::builder("md").root(src.path()).page_size(1 << 20).create().unwrap();
//! w.write(1, b"tick").unwrap();
//!
//! let mut opts = ServeOptions::new(src.path());
//! opts.listen = "127.0.0.1:0".into();
//! opts.token = Token::new("s3cret");
//! let server = Server::bind(opts).unwrap().spawn().unwrap();
//!
//! let mut pull = PullOptions::new(dst.path(), &server.local_addr().to_string(), "acct1").journal("md");
//! pull.token = Token::new("s3cret");
//! let puller = PullHandle::spawn(pull).unwrap();
//! let dir = tape_journal::journal_dir(dst.path());
//! while tape_journal::stats(&dir, "md").map_or(0, |s| s.last_seq) < 1 {
//!     std::thread::sleep(std::time::Duration::from_millis(5));
//! }
//! puller.stop().unwrap();
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod addr;
pub mod auth;
pub mod handshake;
pub mod net;
pub mod pull;
pub mod server;
pub mod status;
pub mod wire;

pub use auth::{Token, TokenError};
pub use pull::{pull, PullError, PullHandle, PullOptions};
pub use server::{ServeError, ServeOptions, Server, ServerHandle};
pub use status::{JournalStatus, ServerStatus, SubscriberStatus};

use std::sync::Arc;
use std::time::Duration;

/// The address `tape bridge serve` listens on without `--listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";

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

/// How a subscriber's thread waits for new frames in its journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Polling {
    /// Spin briefly, then yield the CPU for [`tape_reader::AWAKE`]
    /// (200 µs) after the journals went quiet, then sleep on their
    /// doorbells until a frame is published (journal/FORMAT.md, "The
    /// doorbell"): a stream with frames more often than that is followed
    /// without a wake-up per frame, a frame after a quiet spell leaves
    /// within a wake-up (about 10 µs on an idle core here), and an idle
    /// subscriber costs no CPU.
    #[default]
    Backoff,
    /// Spin, then yield the CPU, never sleep: the lowest latency, at the
    /// cost of a busy core per subscriber.
    Busy,
}

impl Polling {
    fn idle(self) -> tape_reader::Idle {
        match self {
            Polling::Backoff => tape_reader::Idle::awake(64, tape_reader::AWAKE),
            Polling::Busy => tape_reader::Idle::with(1000, u32::MAX - 1000, Duration::ZERO),
        }
    }
}
