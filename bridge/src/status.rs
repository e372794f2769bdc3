//! Presence: who is subscribed to a `tape bridge serve`, and how far
//! behind each one is.
//!
//! Each server publishes a Unix socket `<root>/system/bridge-<pid>-<port>.sock`
//! (mode 0660, like the service's). A client connects and reads one JSON
//! object ([`ServerStatus`]) followed by a newline; the server then closes.
//! Nothing is sent to it. [`query`] asks every server of a root; sockets
//! left by a server that was killed are removed on the way.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One server and its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// The server's process id.
    pub pid: u32,
    /// The address it listens on.
    pub listen: String,
    /// The root it serves.
    pub root: String,
    /// The journals it exposes; `null`: every journal of the root.
    pub journals: Option<Vec<String>>,
    /// When it started, ns since the Unix epoch.
    pub since_ns: i64,
    /// Who is connected, in order of arrival.
    pub subscribers: Vec<SubscriberStatus>,
}

/// One connected subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberStatus {
    /// Connection id, unique within the server's run.
    pub id: u64,
    /// The account id it gave.
    pub account: String,
    /// Its address and port.
    pub address: String,
    /// When it subscribed, ns since the Unix epoch.
    pub since_ns: i64,
    /// Its journals.
    pub journals: Vec<JournalStatus>,
}

/// One journal of a subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    /// The source journal.
    pub journal: String,
    /// The sequence number it asked to start from (0: the first frame).
    pub from_seq: u64,
    /// Last sequence number sent to it.
    pub seq_sent: u64,
    /// Last sequence number its replica reported holding.
    pub seq_acked: u64,
    /// Last sequence number of the source journal now.
    pub last_seq: u64,
    /// Frames the source has that were not sent yet (`last_seq - seq_sent`).
    pub lag: u64,
}

/// The file name prefix of status sockets in `<root>/system/`.
const PREFIX: &str = "bridge-";
const SUFFIX: &str = ".sock";

/// The status socket of the server with `pid` listening on `port`.
pub fn socket_path(root: &Path, pid: u32, port: u16) -> PathBuf {
    root.join("system")
        .join(format!("{PREFIX}{pid}-{port}{SUFFIX}"))
}

/// A server's status socket, answered on a thread.
#[derive(Debug)]
pub struct StatusSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl StatusSocket {
    /// Binds the socket and answers each connection with `status()`.
    pub fn start(
        root: &Path,
        port: u16,
        status: impl Fn() -> ServerStatus + Send + 'static,
    ) -> Result<StatusSocket, (PathBuf, io::Error)> {
        let path = socket_path(root, std::process::id(), port);
        let fail = |e: io::Error| (path.clone(), e);
        std::fs::create_dir_all(root.join("system")).map_err(fail)?;
        remove_stale(root);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(fail)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bridge-status".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                            let mut text =
                                serde_json::to_vec(&status()).expect("status serializes");
                            text.push(b'\n');
                            let _ = s.write_all(&text);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .map_err(fail)?;
        Ok(StatusSocket {
            path,
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Stops answering and removes the socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let t = tape_journal::sync::lock(&self.thread).take();
        if let Some(t) = t {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

fn sockets(root: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(root.join("system")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(PREFIX) && n.ends_with(SUFFIX)
        })
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Removes status sockets nobody answers on (left by a killed server).
fn remove_stale(root: &Path) {
    for p in sockets(root) {
        if let Err(e) = UnixStream::connect(&p) {
            if e.kind() == io::ErrorKind::ConnectionRefused {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Why a status could not be read.
#[derive(Debug)]
pub struct StatusError {
    /// The socket asked.
    pub path: PathBuf,
    /// What went wrong.
    pub source: io::Error,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read the bridge status from {}: {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StatusError {}

/// The status of every `tape bridge serve` running on `root`.
pub fn query(root: &Path) -> Vec<Result<ServerStatus, StatusError>> {
    let mut out = Vec::new();
    for path in sockets(root) {
        let fail = |source: io::Error| StatusError {
            path: path.clone(),
            source,
        };
        let s = match UnixStream::connect(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            Err(e) => {
                out.push(Err(fail(e)));
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut text = Vec::new();
        let r = s
            .take(16 << 20)
            .read_to_end(&mut text)
            .map_err(fail)
            .and_then(|_| {
                serde_json::from_slice(&text)
                    .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e)))
            });
        out.push(r);
    }
    out
}
