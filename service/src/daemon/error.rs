//! Why the service could not start.

use std::io;
use std::path::PathBuf;

/// Why the service could not start (or stopped with an error).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// Another service holds the lock of this root.
    AlreadyRunning {
        /// The root asked for.
        root: PathBuf,
        /// Pid written in the lock file by the running service, if readable.
        pid: Option<u32>,
    },
    /// A folder under the root could not be created.
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The lock file could not be opened, locked or written.
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Something that is not a socket sits where the socket must go.
    SocketInTheWay {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be created, bound or given its mode.
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Installing the signal handlers failed.
    Signals {
        /// The OS error.
        source: io::Error,
    },
    /// The service thread could not be started.
    Spawn {
        /// The OS error.
        source: io::Error,
    },
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::AlreadyRunning { root, pid } => {
                let who = pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}"));
                write!(
                    f,
                    "a tape service is already running on {} ({who}): use that one, stop it first, or pick another --root",
                    root.display()
                )
            }
            ServiceError::CreateDir { path, source } => write!(
                f,
                "cannot create folder {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::Lock { path, source } => write!(
                f,
                "cannot lock {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::SocketInTheWay { path } => write!(
                f,
                "{} exists and is not a socket: move it away and start the service again",
                path.display()
            ),
            ServiceError::Bind { path, source } => write!(
                f,
                "cannot listen on {}: {source}; check the permissions of the root",
                path.display()
            ),
            ServiceError::Signals { source } => {
                write!(f, "cannot install signal handlers: {source}")
            }
            ServiceError::Spawn { source } => {
                write!(f, "cannot start the service thread: {source}")
            }
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::CreateDir { source, .. }
            | ServiceError::Lock { source, .. }
            | ServiceError::Bind { source, .. }
            | ServiceError::Signals { source }
            | ServiceError::Spawn { source } => Some(source),
            _ => None,
        }
    }
}
