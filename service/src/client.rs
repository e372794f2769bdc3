//! The client side of the protocol: connect and handshake, and the
//! who-is-online queries.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{
    decode_reply, read_frame, write_frame, Change, EndpointRole, ErrorCode, JournalId, JournalInfo,
    NoSigPipe, Peer, Reply, Request, MAX_REPLY, PROTOCOL_VERSION,
};
use crate::socket_path;

/// How long the client waits for a reply (or to send a request) before
/// giving up on the connection.
pub(crate) const REPLY_DEADLINE: Duration = Duration::from_secs(5);

/// Why [`Client::connect`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// No service listens on the root's socket (no socket file, or nobody
    /// accepts on it).
    NotRunning {
        /// The root asked for.
        root: PathBuf,
        /// Its socket path.
        socket: PathBuf,
    },
    /// The socket exists but connecting or the handshake failed for another
    /// reason (permissions, a service that does not answer, ...).
    Io {
        /// The socket path.
        socket: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The service speaks another protocol version.
    Version {
        /// The socket path.
        socket: PathBuf,
        /// The service's explanation.
        message: String,
    },
    /// The service answered the handshake with something unexpected.
    Protocol {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NotRunning { root, socket } => write!(
                f,
                "no tape service is running on {} (socket {}): start one with `tape service --root {}`",
                root.display(),
                socket.display(),
                root.display()
            ),
            ConnectError::Io { socket, source }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                write!(
                    f,
                    "this user may not talk to the tape service at {}: {source}; its socket is open to the service's user and group only (mode 0660), so run as one of them",
                    socket.display()
                )
            }
            ConnectError::Io { socket, source } => write!(
                f,
                "cannot talk to the tape service at {}: {source}; check that it runs and that you may use its socket",
                socket.display()
            ),
            ConnectError::Version { socket, message } => write!(
                f,
                "the tape service at {} refused this client: {message}",
                socket.display()
            ),
            ConnectError::Protocol { socket, detail } => write!(
                f,
                "the tape service at {} answered the handshake oddly ({detail}): use a service and client of the same tape version",
                socket.display()
            ),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a query ([`Client::find`], [`Client::list`], ...) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueryError {
    /// The connection broke or timed out; connect again.
    Io(io::Error),
    /// The service refused the request.
    Refused {
        /// The error code it sent.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The service sent a reply this client does not understand.
    Protocol(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::Io(e) => write!(
                f,
                "lost the connection to the tape service ({e}): check that it is still running and connect again"
            ),
            QueryError::Refused { message, .. } => {
                write!(f, "the tape service refused the request: {message}")
            }
            QueryError::Protocol(d) => write!(
                f,
                "the tape service sent a reply this client does not understand ({d}): use a service and client of the same tape version"
            ),
        }
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A connection to the service of one root, for queries.
///
/// Requests are answered in order, one reply each; a `Client` is not shared
/// between threads (its methods take `&mut self`).
#[derive(Debug)]
pub struct Client {
    pub(crate) stream: UnixStream,
    socket: PathBuf,
    service_pid: u32,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to the service of `root` (socket `<root>/system/service.sock`)
    /// and performs the handshake.
    pub fn connect(root: &Path) -> Result<Client, ConnectError> {
        let socket = socket_path(root);
        let stream = match UnixStream::connect(&socket) {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ConnectError::NotRunning {
                    root: root.to_path_buf(),
                    socket,
                })
            }
            Err(source) => return Err(ConnectError::Io { socket, source }),
        };
        Client::handshake(stream, socket)
    }

    /// The handshake on a fresh connection.
    pub(crate) fn handshake(stream: UnixStream, socket: PathBuf) -> Result<Client, ConnectError> {
        let io_err = |socket: &PathBuf, source| ConnectError::Io {
            socket: socket.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(REPLY_DEADLINE))
            .and_then(|()| stream.set_write_timeout(Some(REPLY_DEADLINE)))
            .map_err(|e| io_err(&socket, e))?;
        let mut client = Client {
            stream,
            socket,
            service_pid: 0,
            buf: Vec::new(),
        };
        let reply = client.request(&Request::Hello {
            version: PROTOCOL_VERSION,
        });
        match reply {
            Ok(Reply::Hello { service_pid, .. }) => {
                client.service_pid = service_pid;
                Ok(client)
            }
            Ok(other) => Err(ConnectError::Protocol {
                socket: client.socket,
                detail: format!("expected hello, got {other:?}"),
            }),
            Err(QueryError::Refused {
                code: ErrorCode::Version,
                message,
            }) => Err(ConnectError::Version {
                socket: client.socket,
                message,
            }),
            Err(QueryError::Refused { message, .. }) => Err(ConnectError::Protocol {
                socket: client.socket,
                detail: message,
            }),
            Err(QueryError::Io(e)) => Err(io_err(&client.socket, e)),
            Err(QueryError::Protocol(detail)) => Err(ConnectError::Protocol {
                socket: client.socket,
                detail,
            }),
        }
    }

    /// Pid of the service process.
    pub fn service_pid(&self) -> u32 {
        self.service_pid
    }

    /// The socket this client is connected to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The oldest registered peer named `name` (a reader's name, or a
    /// writer's journal name), if any.
    pub fn find(&mut self, name: &str) -> Result<Option<Peer>, QueryError> {
        match self.request(&Request::Find { name: name.into() })? {
            Reply::Peer { peer } => Ok(peer),
            other => Err(unexpected(other)),
        }
    }

    /// Page `page` (zero-based) of `per_page` registered peers (1 to 1000),
    /// ordered by registration id. A page past the end is empty.
    pub fn list(&mut self, page: u64, per_page: u32) -> Result<Vec<Peer>, QueryError> {
        match self.request(&Request::List { page, per_page })? {
            Reply::Peers { peers, .. } => Ok(peers),
            other => Err(unexpected(other)),
        }
    }

    /// Number of registered peers.
    pub fn count(&mut self) -> Result<u64, QueryError> {
        match self.request(&Request::Count)? {
            Reply::Count { count } => Ok(count),
            other => Err(unexpected(other)),
        }
    }

    /// Every registered journal with its writer and readers, ordered by
    /// folder then name.
    pub fn journals(&mut self) -> Result<Vec<JournalInfo>, QueryError> {
        match self.request(&Request::Journals)? {
            Reply::Journals { journals } => Ok(journals),
            other => Err(unexpected(other)),
        }
    }

    /// The live request/reply endpoint (responder or requester) named
    /// `name`, if any.
    pub fn find_endpoint(&mut self, name: &str) -> Result<Option<Peer>, QueryError> {
        match self.request(&Request::FindEndpoint { name: name.into() })? {
            Reply::Peer { peer } => Ok(peer),
            other => Err(unexpected(other)),
        }
    }

    /// Registers this connection as request/reply endpoint `name` holding
    /// `journal` for writing. Returns the registration id, or the pid of
    /// the process that holds the name or the journal (`held`). The
    /// registration lives as long as the connection.
    pub fn register_endpoint(
        &mut self,
        name: &str,
        role: EndpointRole,
        journal: &JournalId,
    ) -> Result<Result<u64, u32>, QueryError> {
        let req = Request::RegisterEndpoint {
            name: name.into(),
            role,
            dir: journal.dir.clone(),
            journal: journal.journal.clone(),
        };
        registered_or_held(self.call(&req)?)
    }

    /// Sends `watch` and turns this connection into a stream of endpoint
    /// events. Returns the endpoints live now (by registration id) and the
    /// stream, whose [`Watch::next_event`] gives every change after that
    /// list.
    /// A registration made on this connection lives on with the stream.
    pub fn watch(mut self) -> Result<(Vec<Peer>, Watch), QueryError> {
        match self.request(&Request::Watch)? {
            Reply::Watching { endpoints } => {
                // Events come when they come: no read timeout.
                self.stream.set_read_timeout(None).map_err(QueryError::Io)?;
                Ok((endpoints, Watch { client: self }))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Registers this connection as the writer of `journal`; returns the
    /// registration id, or the holder's pid when another writer holds it.
    pub(crate) fn register_writer(
        &mut self,
        journal: &JournalId,
    ) -> Result<Result<u64, u32>, QueryError> {
        let req = Request::RegisterWriter {
            dir: journal.dir.clone(),
            journal: journal.journal.clone(),
        };
        registered_or_held(self.call(&req)?)
    }

    /// Registers this connection as reader `name`.
    pub(crate) fn register_reader(
        &mut self,
        name: &str,
        journals: &[JournalId],
    ) -> Result<u64, QueryError> {
        let req = Request::RegisterReader {
            name: name.into(),
            journals: journals.to_vec(),
        };
        match self.request(&req)? {
            Reply::Registered { id } => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Adds a journal to this connection's reader registration.
    pub(crate) fn add_journal(&mut self, journal: &JournalId) -> Result<(), QueryError> {
        let req = Request::AddJournal {
            dir: journal.dir.clone(),
            journal: journal.journal.clone(),
        };
        match self.request(&req)? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends one request and reads its reply; an `error` reply becomes
    /// [`QueryError::Refused`].
    fn request(&mut self, req: &Request) -> Result<Reply, QueryError> {
        match self.call(req)? {
            Reply::Error { code, message, .. } => Err(QueryError::Refused { code, message }),
            reply => Ok(reply),
        }
    }

    /// Sends one request and reads its reply, whatever it is.
    fn call(&mut self, req: &Request) -> Result<Reply, QueryError> {
        write_frame(&mut NoSigPipe(&self.stream), req).map_err(QueryError::Io)?;
        let frame = read_frame(&mut self.stream, MAX_REPLY, &mut self.buf);
        frame.map_err(|e| QueryError::Io(frame_io_error(e)))?;
        decode_reply(&self.buf).map_err(|e| QueryError::Protocol(e.to_string()))
    }
}

/// The answer to a registration that one holder at a time may have: the
/// registration id, or the holder's pid when someone else holds it.
fn registered_or_held(reply: Reply) -> Result<Result<u64, u32>, QueryError> {
    match reply {
        Reply::Registered { id } => Ok(Ok(id)),
        Reply::Error {
            code: ErrorCode::Held,
            pid: Some(pid),
            ..
        } => Ok(Err(pid)),
        Reply::Error { code, message, .. } => Err(QueryError::Refused { code, message }),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> QueryError {
    QueryError::Protocol(format!("unexpected reply {reply:?}"))
}

fn frame_io_error(e: crate::protocol::FrameError) -> io::Error {
    use crate::protocol::FrameError;
    match e {
        FrameError::Eof | FrameError::Truncated => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the service closed the connection",
        ),
        FrameError::TooLarge(n) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the service sent a reply of {n} bytes"),
        ),
        FrameError::Timeout => io::Error::new(
            io::ErrorKind::TimedOut,
            "the service did not answer within 5 s",
        ),
        FrameError::Io(e) => e,
    }
}

/// A connection that watches endpoints (from [`Client::watch`]): each
/// [`next_event`](Watch::next_event) blocks until an endpoint registers or
/// goes away.
#[derive(Debug)]
pub struct Watch {
    client: Client,
}

impl Watch {
    /// The next change: `Up` or `Down` and the endpoint. Blocks. An error
    /// means the connection is over (the service stopped, or this watcher
    /// fell too far behind): connect and watch again.
    pub fn next_event(&mut self) -> Result<(Change, Peer), QueryError> {
        let frame = read_frame(&mut self.client.stream, MAX_REPLY, &mut self.client.buf);
        frame.map_err(|e| QueryError::Io(frame_io_error(e)))?;
        match decode_reply(&self.client.buf).map_err(|e| QueryError::Protocol(e.to_string()))? {
            Reply::Event { change, peer } => Ok((change, peer)),
            Reply::Error { code, message, .. } => Err(QueryError::Refused { code, message }),
            other => Err(unexpected(other)),
        }
    }

    /// A handle on the socket: shutting it down (from another thread)
    /// makes a blocked [`next_event`](Watch::next_event) return an error,
    /// and ends a registration made on this connection.
    pub fn socket(&self) -> io::Result<UnixStream> {
        self.client.stream.try_clone()
    }
}
