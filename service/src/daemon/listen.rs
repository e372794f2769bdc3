//! Listening: the root's lock, the socket, the accept loop and admitting
//! each connection to its own thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::conn::Connection;
use super::state::{ConnEntry, Counters, Shared};
use super::{ServiceError, CONN_STACK, IO_DEADLINE, MAX_CONNECTIONS, SHUTDOWN_POLL};
use crate::protocol::{write_frame, ErrorCode, NoSigPipe, Reply};
use crate::{lock_path, socket_path};

/// A bound, locked, not yet serving service.
pub(super) struct Daemon {
    pub(super) socket: PathBuf,
    listener: UnixListener,
    /// Held for the life of the daemon; released (by close) after the
    /// socket is removed.
    lock: Flock<File>,
}

impl Daemon {
    pub(super) fn bind(root: &Path) -> Result<Daemon, ServiceError> {
        let socket = socket_path(root);
        let lock_file = lock_path(root);
        for dir in [root.join("system"), root.join("journal")] {
            fs::create_dir_all(&dir).map_err(|source| ServiceError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let lock_err = |source| ServiceError::Lock {
            path: lock_file.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_file)
            .map_err(lock_err)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(ServiceError::AlreadyRunning {
                    root: root.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(lock_err(io::Error::from(e))),
        };
        lock.set_len(0).map_err(lock_err)?;
        lock.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
            .map_err(lock_err)?;

        // We hold the lock, so a socket file here was left by a service that
        // died: take it over.
        match fs::symlink_metadata(&socket) {
            Ok(m) if m.file_type().is_socket() => {
                fs::remove_file(&socket).map_err(|source| ServiceError::Bind {
                    path: socket.clone(),
                    source,
                })?;
            }
            Ok(_) => return Err(ServiceError::SocketInTheWay { path: socket }),
            Err(_) => {}
        }
        let bind_err = |source| ServiceError::Bind {
            path: socket.clone(),
            source,
        };
        let listener = UnixListener::bind(&socket).map_err(bind_err)?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Daemon {
            socket,
            listener,
            lock,
        })
    }

    /// The accept loop; returns when `shutdown` is set.
    pub(super) fn serve(self, shutdown: &AtomicBool, counters: Arc<Counters>) {
        let shared = Arc::new(Shared {
            counters,
            ..Shared::default()
        });
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        while !shutdown.load(Ordering::Acquire) {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(SHUTDOWN_POLL).unwrap_or(PollTimeout::NONE);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => {
                    std::thread::sleep(SHUTDOWN_POLL);
                    continue;
                }
            }
            if shutdown.load(Ordering::Acquire) {
                break;
            }
            threads.retain(|t| !t.is_finished());
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Some(t) = shared.admit(stream) {
                        threads.push(t);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of file descriptors or similar: do not spin.
                Err(_) => std::thread::sleep(SHUTDOWN_POLL),
            }
        }
        shared.stopping.store(true, Ordering::Release);
        for conn in shared.lock().conns.values() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
        for t in threads {
            let _ = t.join();
        }
        // Remove the socket while still holding the lock, so that a service
        // that starts next never has its fresh socket removed by us.
        let _ = fs::remove_file(&self.socket);
        drop(self.listener);
        drop(self.lock);
    }
}

impl Shared {
    /// Takes a new connection: refuses it when full, else starts its thread.
    pub(super) fn admit(self: &Arc<Self>, stream: UnixStream) -> Option<JoinHandle<()>> {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(IO_DEADLINE));
        let clone = stream.try_clone().ok()?;
        let conn_id = {
            let mut st = self.lock();
            if st.conns.len() >= MAX_CONNECTIONS {
                drop(st);
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = write_frame(
                    &mut NoSigPipe(&stream),
                    &Reply::error(
                        ErrorCode::Busy,
                        format!(
                            "the tape service already serves {MAX_CONNECTIONS} connections: close some and try again"
                        ),
                    ),
                );
                return None;
            }
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            st.last_conn += 1;
            let id = st.last_conn;
            st.conns.insert(
                id,
                ConnEntry {
                    stream: clone,
                    peer: None,
                },
            );
            id
        };
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tape-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || {
                Connection::new(&shared, conn_id, stream).serve();
                shared.forget_conn(conn_id);
            });
        match spawned {
            Ok(t) => Some(t),
            Err(_) => {
                self.forget_conn(conn_id);
                None
            }
        }
    }
}
