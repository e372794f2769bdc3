//! The daemon: the socket, the one-service-per-root lock, and one thread per
//! connection.
//!
//! # Why a thread per connection
//!
//! The service is on no hot path: a connection sends a handful of requests
//! in its life (handshake, register, perhaps some `add_journal`) and then
//! sits idle until its process exits. Blocking code on one thread per
//! connection reads top to bottom, needs no per-connection buffer state
//! machine, and a slow or hostile peer can only stall its own thread. The
//! cost is bounded: at most [`MAX_CONNECTIONS`] threads with a 256 KiB stack
//! each, sleeping in `poll(2)`. The shared state is one
//! [`Registry`](crate::registry::Registry) behind one mutex, held only for
//! in-memory bookkeeping (never across I/O on a peer's socket).
//!
//! # Liveness
//!
//! A registration lives as long as its connection. When a process exits or
//! is killed the kernel closes its socket; the connection thread then reads
//! end-of-file and drops the registration. So that "free at once" holds even
//! before that thread has run, every request that reads or changes the
//! registry first polls the sockets of all registered peers (one `poll(2)`
//! with a zero timeout) and drops those whose peer has hung up (`POLLHUP`:
//! the peer closed its socket or shut down both directions).
//!
//! # Watchers
//!
//! A connection that sent `watch` gets an `event` each time an endpoint
//! registers or goes away. The registry records those changes; whoever
//! releases the state lock after making them
//! ([`StateGuard`](state::StateGuard)'s drop) puts them on each watcher's
//! queue and adds one to the watcher's wake-up eventfd, without blocking
//! (no I/O on a peer's socket under the lock).
//! The watcher's own connection thread, which sleeps in `poll(2)` on its
//! peer's socket and that eventfd, sends them. Changes reach every
//! watcher in the order they were made; a watcher more than
//! [`MAX_WATCH_QUEUE`] events behind is sent error `limit` and closed, so
//! that it reconnects and starts again from a fresh list.

mod conn;
mod dispatch;
mod error;
mod listen;
mod state;
mod watch;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub(crate) use dispatch::canonical_dir;
pub use error::ServiceError;
use listen::Daemon;
pub use state::Counters;

/// Most connections served at once; one more is answered `busy` and closed.
pub const MAX_CONNECTIONS: usize = 1024;

/// A peer must send its `hello` within this time after connecting.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Once a frame has begun, each read of the rest must complete within this
/// time; each reply must be written within it too.
const IO_DEADLINE: Duration = Duration::from_secs(5);

/// How often the accept loop looks at the shutdown flag when nothing
/// happens.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Most events queued for one watcher; one more and it is closed.
pub const MAX_WATCH_QUEUE: usize = 4096;

/// Stack of a connection thread: JSON nesting is bounded (128 levels) by
/// serde_json, so a small stack is enough.
const CONN_STACK: usize = 256 * 1024;

/// Runs the service on `root` until `shutdown` becomes true (checked at
/// least every 100 ms). Blocks. Used by `tape service`; see
/// [`shutdown_on_signals`] for a flag that SIGINT/SIGTERM/SIGHUP set.
///
/// On return every connection has been closed (so writers and readers start
/// reconnecting), the socket is removed and the lock released.
pub fn run(root: &Path, shutdown: &AtomicBool) -> Result<(), ServiceError> {
    let daemon = Daemon::bind(root)?;
    // The box's shared TSC clock gets a keeper that lives as long as the
    // service (a no-op where the machine has no such clock).
    tape_journal::clock::keep();
    daemon.serve(shutdown, Arc::default());
    Ok(())
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP that set the returned
/// flag, for [`run`]. Calling it again returns the same flag.
pub fn shutdown_on_signals() -> Result<&'static AtomicBool, ServiceError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    static FLAG: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        // An atomic store is async-signal-safe.
        FLAG.store(true, Ordering::Release);
    }
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only performs an atomic store on a static,
        // which is async-signal-safe, and it does not replace a handler that
        // Rust's runtime relies on (it only sets SIGPIPE, not these).
        unsafe { sigaction(sig, &action) }.map_err(|e| ServiceError::Signals {
            source: io::Error::from(e),
        })?;
    }
    Ok(&FLAG)
}

/// A service running on a thread of this process; dropping it stops it,
/// closes every connection and removes its socket.
///
/// For tests, benchmarks and single-process setups; `tape service` uses
/// [`run`].
#[derive(Debug)]
pub struct Service {
    root: PathBuf,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Service {
    /// Takes the root's lock, binds the socket and serves on a background
    /// thread. Fails with [`ServiceError::AlreadyRunning`] when another
    /// service runs on `root`.
    pub fn start(root: &Path) -> Result<Service, ServiceError> {
        let daemon = Daemon::bind(root)?;
        // As `tape service` does (see [`run`]): the box's shared clock gets
        // a keeper, so the first writer does not find it stale. The keeper
        // thread lives as long as this process.
        tape_journal::clock::keep();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let socket = daemon.socket.clone();
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("tape-service".into())
            .spawn(move || daemon.serve(&flag, c))
            .map_err(|source| ServiceError::Spawn { source })?;
        Ok(Service {
            root: root.to_path_buf(),
            socket,
            stop,
            thread: Some(thread),
            counters,
        })
    }

    /// Its counters: connections, registrations, refusals since it started.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Its counters, shared (for a metrics thread that outlives a borrow).
    pub fn counters_arc(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The root it serves.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its socket, `<root>/system/service.sock`.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop at once rather than at its next poll timeout.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
