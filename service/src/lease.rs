//! Registrations that stay alive: [`WriterLease`] and [`ReaderLease`].
//!
//! A lease registers once on the caller's thread (so the caller learns at
//! once whether it may write), then hands its connection to a background
//! thread that watches it. If the service goes away, the thread reconnects
//! with backoff (20 ms doubling to 500 ms) and registers again; the owner
//! never notices. Dropping the lease shuts the connection down (the service
//! frees the journal at once) and joins the thread without waiting for any
//! timeout.
//!
//! The thread sleeps in `poll(2)` on two sockets: the service connection
//! (the service never speaks unasked, so anything readable there means it
//! is gone) and one end of a socket pair that the owner writes a byte to
//! when it has a command or wants the thread to stop.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::client::{Client, ConnectError, QueryError};
use crate::daemon::canonical_dir;
use crate::protocol::{
    validate_dir, validate_journal_name, validate_peer_name, ErrorCode, JournalId, NoSigPipe,
    MAX_READER_JOURNALS,
};
use crate::socket_path;
use crate::Backoff;

/// Why a registration ([`WriterLease::acquire`], [`ReaderLease::acquire`],
/// [`ReaderLease::add_journal`]) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegisterError {
    /// The service could not be reached (most often: none is running).
    Connect(ConnectError),
    /// Another writer holds the journal.
    Held {
        /// The journal's name.
        journal: String,
        /// Pid of the writer holding it.
        pid: u32,
    },
    /// A name or folder is not acceptable; the text says which and why.
    Invalid(String),
    /// The service refused for another reason (a limit, ...) or the
    /// connection broke during the registration.
    Query(QueryError),
    /// The background thread could not be started.
    Spawn(io::Error),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Connect(e) => e.fmt(f),
            RegisterError::Held { journal, pid } => {
                write!(f, "journal {journal} is held by another writer (pid {pid})")
            }
            RegisterError::Invalid(why) => write!(f, "{why}: pick another"),
            RegisterError::Query(e) => e.fmt(f),
            RegisterError::Spawn(e) => write!(
                f,
                "cannot start the registration thread ({e}): the process is out of resources"
            ),
        }
    }
}

impl std::error::Error for RegisterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegisterError::Connect(e) => Some(e),
            RegisterError::Query(e) => Some(e),
            RegisterError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl From<QueryError> for RegisterError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Refused {
                code: ErrorCode::Invalid,
                message,
            } => RegisterError::Invalid(message),
            other => RegisterError::Query(other),
        }
    }
}

/// The registration of the one writer of a journal, kept alive (and renewed
/// after a service restart) until dropped.
#[derive(Debug)]
pub struct WriterLease {
    lease: Lease,
}

impl WriterLease {
    /// Registers as the writer of `journal` in folder `dir` with the service
    /// of `root`. Fails with [`RegisterError::Held`] when another writer
    /// holds it, [`RegisterError::Connect`] when no service runs.
    pub fn acquire(root: &Path, dir: &Path, journal: &str) -> Result<WriterLease, RegisterError> {
        let id = journal_id(dir, journal)?;
        let mut client = Client::connect(root).map_err(RegisterError::Connect)?;
        match client.register_writer(&id)? {
            Ok(_) => {}
            Err(pid) => {
                return Err(RegisterError::Held {
                    journal: journal.into(),
                    pid,
                })
            }
        }
        let lease = Lease::start(root, Role::Writer(id), client)?;
        Ok(WriterLease { lease })
    }

    /// Whether the service currently knows this writer (false for a moment
    /// after the service went away, until the lease has registered again).
    pub fn is_registered(&self) -> bool {
        self.lease.shared.registered.load(Ordering::SeqCst)
    }
}

/// The registration of a reader and the journals it reads, kept alive (and
/// renewed after a service restart) until dropped.
#[derive(Debug)]
pub struct ReaderLease {
    lease: Lease,
}

impl ReaderLease {
    /// Registers reader `name` reading `journals` (folder, journal name)
    /// with the service of `root`.
    pub fn acquire(
        root: &Path,
        name: &str,
        journals: &[(PathBuf, String)],
    ) -> Result<ReaderLease, RegisterError> {
        validate_peer_name(name).map_err(RegisterError::Invalid)?;
        let mut ids: Vec<JournalId> = Vec::with_capacity(journals.len());
        for (dir, journal) in journals {
            let id = journal_id(dir, journal)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() > MAX_READER_JOURNALS {
            return Err(too_many_journals());
        }
        let mut client = Client::connect(root).map_err(RegisterError::Connect)?;
        client.register_reader(name, &ids)?;
        let role = Role::Reader {
            name: name.into(),
            journals: ids,
        };
        let lease = Lease::start(root, role, client)?;
        Ok(ReaderLease { lease })
    }

    /// Adds a journal to this reader's registration. While the service is
    /// away the journal is remembered and registered with the rest when the
    /// lease reconnects, and this returns `Ok`.
    pub fn add_journal(&self, dir: &Path, journal: &str) -> Result<(), RegisterError> {
        let id = journal_id(dir, journal)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let gone = || {
            RegisterError::Query(QueryError::Io(io::Error::other(
                "the registration thread has stopped",
            )))
        };
        self.lease
            .commands
            .send(Command::AddJournal(id, tx))
            .map_err(|_| gone())?;
        self.lease.wake();
        rx.recv().map_err(|_| gone())?
    }

    /// Whether the service currently knows this reader (false for a moment
    /// after the service went away, until the lease has registered again).
    pub fn is_registered(&self) -> bool {
        self.lease.shared.registered.load(Ordering::SeqCst)
    }
}

fn too_many_journals() -> RegisterError {
    RegisterError::Invalid(format!(
        "a reader may read at most {MAX_READER_JOURNALS} journals; open another reader for the rest"
    ))
}

/// Checks a journal and makes its folder absolute and canonical.
fn journal_id(dir: &Path, journal: &str) -> Result<JournalId, RegisterError> {
    validate_journal_name(journal).map_err(RegisterError::Invalid)?;
    let abs = std::path::absolute(dir).map_err(|e| {
        RegisterError::Invalid(format!(
            "journal folder {} cannot be made absolute ({e})",
            dir.display()
        ))
    })?;
    let dir = canonical_dir(&abs);
    if dir.to_str().is_none() {
        return Err(RegisterError::Invalid(format!(
            "journal folder {} is not valid utf-8",
            dir.display()
        )));
    }
    validate_dir(&dir).map_err(RegisterError::Invalid)?;
    Ok(JournalId {
        dir,
        journal: journal.into(),
    })
}

/// What a lease registers.
#[derive(Debug, Clone)]
enum Role {
    Writer(JournalId),
    Reader {
        name: String,
        journals: Vec<JournalId>,
    },
}

/// A request from the owner to the lease thread.
#[derive(Debug)]
enum Command {
    AddJournal(JournalId, mpsc::SyncSender<Result<(), RegisterError>>),
}

/// State shared by a lease and its thread.
#[derive(Debug)]
struct Shared {
    /// Set while the service knows this registration.
    registered: AtomicBool,
    /// The connection the thread is using, and the stop flag, under one
    /// lock so that the owner's drop can never miss a connection the thread
    /// is about to use.
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    stop: bool,
    /// A clone of the thread's current connection.
    stream: Option<UnixStream>,
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        tape_journal::sync::lock(&self.slot)
    }

    /// Records the thread's current connection; false when stopping (the
    /// thread must then return).
    fn publish(&self, stream: Option<&UnixStream>) -> bool {
        let mut slot = self.slot();
        slot.stream = stream.and_then(|s| s.try_clone().ok());
        !slot.stop
    }

    fn stopping(&self) -> bool {
        self.slot().stop
    }
}

/// The owner's side of a lease: dropping it stops the thread.
#[derive(Debug)]
struct Lease {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    /// Owner's end of the wake-up socket pair (non-blocking).
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl Lease {
    fn start(root: &Path, role: Role, client: Client) -> Result<Lease, RegisterError> {
        let (wake, wake_rx) = UnixStream::pair().map_err(RegisterError::Spawn)?;
        wake.set_nonblocking(true).map_err(RegisterError::Spawn)?;
        wake_rx
            .set_nonblocking(true)
            .map_err(RegisterError::Spawn)?;
        let shared = Arc::new(Shared {
            registered: AtomicBool::new(true),
            slot: Mutex::new(Slot::default()),
        });
        shared.publish(Some(&client.stream));
        let (commands, rx) = mpsc::channel();
        let worker = Worker {
            socket: socket_path(root),
            shared: Arc::clone(&shared),
            role,
            wake: wake_rx,
            commands: rx,
            logged: false,
        };
        let thread = std::thread::Builder::new()
            .name("tape-lease".into())
            .spawn(move || worker.run(client))
            .map_err(RegisterError::Spawn)?;
        Ok(Lease {
            shared,
            commands,
            wake,
            thread: Some(thread),
        })
    }

    fn wake(&self) {
        // A full buffer means a wake-up is already pending.
        let _ = NoSigPipe(&self.wake).write(&[1]);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut slot = self.shared.slot();
            slot.stop = true;
            if let Some(s) = slot.stream.take() {
                // Interrupts any blocking read or write of the thread, and
                // tells the service at once that the registration is gone.
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lease thread.
struct Worker {
    socket: PathBuf,
    shared: Arc<Shared>,
    role: Role,
    wake: UnixStream,
    commands: mpsc::Receiver<Command>,
    /// Whether a refusal was already logged since the last registration.
    logged: bool,
}

/// Why [`Worker::watch`] returned.
enum Watch {
    Stop,
    Lost,
}

impl Worker {
    fn run(mut self, first: Client) {
        let mut client = Some(first);
        let mut backoff = Backoff::SERVICE;
        loop {
            if let Some(c) = client.take() {
                self.shared.registered.store(true, Ordering::SeqCst);
                self.logged = false;
                backoff.reset();
                let why = self.watch(c);
                self.shared.registered.store(false, Ordering::SeqCst);
                if !self.shared.publish(None) || matches!(why, Watch::Stop) {
                    return;
                }
            }
            if !self.pause(backoff.next_wait()) {
                return;
            }
            match self.register() {
                Ok(c) => client = Some(c),
                Err(None) => {}
                Err(Some(e)) => {
                    if !self.logged {
                        eprintln!(
                            "tape: registering again with the tape service failed: {e}; retrying"
                        );
                        self.logged = true;
                    }
                }
            }
            if self.shared.stopping() {
                return;
            }
        }
    }

    /// Waits on a live, registered connection until it breaks or the owner
    /// stops the lease, serving commands meanwhile.
    fn watch(&mut self, mut client: Client) -> Watch {
        loop {
            let (conn_event, _) = match self.poll(Some(&client.stream), PollTimeout::NONE) {
                Ok(r) => r,
                Err(_) => return Watch::Lost,
            };
            if self.shared.stopping() {
                return Watch::Stop;
            }
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::AddJournal(id, reply) => match client.add_journal(&id) {
                        Ok(()) => {
                            self.remember(id);
                            let _ = reply.send(Ok(()));
                        }
                        Err(QueryError::Refused { code, message }) => {
                            let _ = reply.send(Err(QueryError::Refused { code, message }.into()));
                        }
                        Err(_) => {
                            // Registered with the rest after reconnecting.
                            self.remember(id);
                            let _ = reply.send(Ok(()));
                            return Watch::Lost;
                        }
                    },
                }
            }
            // The service never speaks unasked: readable means it is gone.
            if conn_event {
                return Watch::Lost;
            }
        }
    }

    /// Sleeps `d` while disconnected, serving commands; false when stopping.
    fn pause(&mut self, d: Duration) -> bool {
        let timeout = PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX);
        let _ = self.poll(None, timeout);
        while let Ok(Command::AddJournal(id, reply)) = self.commands.try_recv() {
            let result = match &self.role {
                Role::Reader { journals, .. }
                    if !journals.contains(&id) && journals.len() >= MAX_READER_JOURNALS =>
                {
                    Err(too_many_journals())
                }
                _ => {
                    self.remember(id);
                    Ok(())
                }
            };
            let _ = reply.send(result);
        }
        !self.shared.stopping()
    }

    fn remember(&mut self, id: JournalId) {
        if let Role::Reader { journals, .. } = &mut self.role {
            if !journals.contains(&id) {
                journals.push(id);
            }
        }
    }

    /// Polls the wake-up socket (draining it) and optionally the service
    /// connection; returns whether the connection had an event.
    fn poll(&self, conn: Option<&UnixStream>, timeout: PollTimeout) -> io::Result<(bool, bool)> {
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        if let Some(c) = conn {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
        loop {
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let woke = fds[0].any().unwrap_or(true);
        let conn_event = fds.get(1).is_some_and(|f| f.any().unwrap_or(true));
        if woke {
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        Ok((conn_event, woke))
    }

    /// One attempt to connect and register. `Err(None)`: no service (or it
    /// went away again), not worth a log line; `Err(Some)`: refused.
    fn register(&mut self) -> Result<Client, Option<RegisterError>> {
        let stream = UnixStream::connect(&self.socket).map_err(|_| None)?;
        if !self.shared.publish(Some(&stream)) {
            return Err(None);
        }
        let mut client = Client::handshake(stream, self.socket.clone()).map_err(|e| match e {
            ConnectError::Version { .. } | ConnectError::Protocol { .. } => {
                Some(RegisterError::Connect(e))
            }
            _ => None,
        })?;
        let result = match &self.role {
            Role::Writer(id) => match client.register_writer(id) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(pid)) => Err(Some(RegisterError::Held {
                    journal: id.journal.clone(),
                    pid,
                })),
                Err(QueryError::Refused { code, message }) => {
                    Err(Some(QueryError::Refused { code, message }.into()))
                }
                Err(_) => Err(None),
            },
            Role::Reader { name, journals } => match client.register_reader(name, journals) {
                Ok(_) => Ok(()),
                Err(QueryError::Refused { code, message }) => {
                    Err(Some(QueryError::Refused { code, message }.into()))
                }
                Err(_) => Err(None),
            },
        };
        match result {
            Ok(()) => Ok(client),
            Err(e) => {
                self.shared.publish(None);
                Err(e)
            }
        }
    }
}
