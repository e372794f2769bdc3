//! Status sockets: how a long-running process of a root (a `tape bridge
//! serve` or `pull`, a `tape nats export` or `import`) tells `tape top`,
//! `/metrics` and its own `status` command what it is doing, without a
//! server in between.
//!
//! The process binds a Unix stream socket
//! `<root>/system/<kind>-<pid>-<tag>.sock` (mode 0660, like the service's
//! socket; `tag` tells apart several of one kind in one process). Whoever
//! connects gets one JSON object and a newline, and the connection is
//! closed; nothing is read from it. The object is built when asked, on
//! the socket's own thread, so the process's hot path does nothing for it
//! beyond the counters it keeps anyway.
//!
//! [`query`] reads every socket of one kind. A socket whose process is gone
//! (its pid does not exist, or nobody listens: it was SIGKILLed and could
//! not remove it) is removed on the way; one whose process does not answer
//! within the timeout (stopped, or stuck) is an error, and left alone.
//!
//! ```
//! use tape_service::status_socket::{query, StatusSocket};
//! use std::time::Duration;
//!
//! let root = tempfile::tempdir()?;
//! let sock = StatusSocket::start(root.path(), "demo", "1", || vec![1u64, 2, 3])?;
//! let got: Vec<Vec<u64>> = query(root.path(), "demo", Duration::from_secs(5))
//!     .into_iter()
//!     .map(|r| r.unwrap())
//!     .collect();
//! assert_eq!(got, vec![vec![1, 2, 3]]);
//! drop(sock); // the socket file goes with it
//! assert!(query::<Vec<u64>>(root.path(), "demo", Duration::from_secs(5)).is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const SUFFIX: &str = ".sock";

/// Longest answer [`query`] reads from one socket.
pub const MAX_ANSWER: u64 = 16 << 20;

/// The status socket of the process `pid` for `kind` and `tag`:
/// `<root>/system/<kind>-<pid>-<tag>.sock`.
pub fn socket_path(root: &Path, kind: &str, pid: u32, tag: &str) -> PathBuf {
    root.join("system")
        .join(format!("{kind}-{pid}-{tag}{SUFFIX}"))
}

/// A tag unique within this process (`1`, `2`, ...), for a kind with no
/// natural one.
pub fn next_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The pid in the file name `<kind>-<pid>-<tag>.sock`, if the name is one
/// of `kind` (so `bridge` does not take `bridge-pull-7-1.sock`: `pull` is
/// not a pid).
fn pid_of(file_name: &str, kind: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(kind)?.strip_prefix('-')?;
    let rest = rest.strip_suffix(SUFFIX)?;
    let (pid, tag) = rest.split_once('-')?;
    if tag.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Why a status socket could not be made.
#[derive(Debug)]
pub struct StartError {
    /// The socket's path.
    pub path: PathBuf,
    /// What went wrong.
    pub source: io::Error,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot make the status socket {}: {}",
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StartError {}

/// A published status socket, answered on a thread of its own; dropping
/// it (or [`stop`](StatusSocket::stop)) removes it.
#[derive(Debug)]
pub struct StatusSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StatusSocket {
    /// Binds `<root>/system/<kind>-<pid>-<tag>.sock` (making `system/` if
    /// needed, removing dead sockets of `kind` first) and answers each
    /// connection with `status()` as one JSON line.
    pub fn start<T: Serialize>(
        root: &Path,
        kind: &str,
        tag: &str,
        status: impl Fn() -> T + Send + 'static,
    ) -> Result<StatusSocket, StartError> {
        let path = socket_path(root, kind, std::process::id(), tag);
        let fail = |source: io::Error| StartError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(root.join("system")).map_err(fail)?;
        remove_dead(root, kind);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(fail)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("{kind}-status"))
            .spawn(move || answer(&listener, &flag, &status))
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                fail(e)
            })?;
        Ok(StatusSocket {
            path,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops answering and removes the socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let t = tape_journal::sync::lock(&self.thread).take();
        if let Some(t) = t {
            let _ = t.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The socket's thread: waits for a connection (waking every 200 ms to
/// see whether it should stop), answers it, closes it.
fn answer<T: Serialize>(listener: &UnixListener, stop: &AtomicBool, status: &dyn Fn() -> T) {
    while !stop.load(Ordering::Acquire) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the listener, alive for the call.
        if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
            continue;
        }
        while let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_nonblocking(false);
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            // A status that cannot be encoded (a map with non-string keys)
            // is a bug of its kind; the asker gets an empty answer.
            let mut text = serde_json::to_vec(&status()).unwrap_or_default();
            text.push(b'\n');
            let _ = s.write_all(&text);
        }
    }
}

/// The sockets of `kind` in `<root>/system/`, sorted, with their pids.
fn sockets(root: &Path, kind: &str) -> Vec<(PathBuf, u32)> {
    let Ok(rd) = std::fs::read_dir(root.join("system")) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, u32)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = pid_of(&e.file_name().to_string_lossy(), kind)?;
            Some((e.path(), pid))
        })
        .collect();
    v.sort();
    v
}

/// Whether process `pid` exists (a zombie counts: its sockets are closed,
/// which a connection attempt then tells).
fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Connects to a socket of process `pid`; `None` (and the file removed)
/// when the process is gone.
fn connect_live(path: &Path, pid: u32) -> Option<io::Result<UnixStream>> {
    if !pid_exists(pid) {
        let _ = std::fs::remove_file(path);
        return None;
    }
    match UnixStream::connect(path) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let _ = std::fs::remove_file(path);
            None
        }
        r => Some(r),
    }
}

/// Removes the sockets of `kind` whose process is gone.
fn remove_dead(root: &Path, kind: &str) {
    for (p, pid) in sockets(root, kind) {
        let _ = connect_live(&p, pid);
    }
}

/// Why one socket's status could not be read.
#[derive(Debug)]
pub struct StatusError {
    /// The socket asked.
    pub path: PathBuf,
    /// The pid in its name.
    pub pid: u32,
    /// What went wrong.
    pub source: io::Error,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read the status of pid {} from {}: {}",
            self.pid,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StatusError {}

/// The status of every running process of `kind` on `root`, in the order
/// of their socket names; each waited for at most `timeout`.
pub fn query<T: DeserializeOwned>(
    root: &Path,
    kind: &str,
    timeout: Duration,
) -> Vec<Result<T, StatusError>> {
    let mut out = Vec::new();
    for (path, pid) in sockets(root, kind) {
        let fail = |source: io::Error| StatusError {
            path: path.clone(),
            pid,
            source,
        };
        let s = match connect_live(&path, pid) {
            None => continue,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                out.push(Err(fail(e)));
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(timeout.max(Duration::from_millis(1))));
        let mut text = Vec::new();
        let r = s
            .take(MAX_ANSWER)
            .read_to_end(&mut text)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no answer within {} ms (the process is stopped or busy)",
                            timeout.as_millis()
                        ),
                    )
                } else {
                    e
                }
            })
            .map_err(fail)
            .and_then(|_| {
                serde_json::from_slice(&text)
                    .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e)))
            });
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_one_kind_only() {
        assert_eq!(pid_of("bridge-12-7470.sock", "bridge"), Some(12));
        assert_eq!(pid_of("bridge-pull-12-1.sock", "bridge"), None);
        assert_eq!(pid_of("bridge-pull-12-1.sock", "bridge-pull"), Some(12));
        assert_eq!(pid_of("bridge-12-.sock", "bridge"), None);
        assert_eq!(pid_of("bridge-12-1.pos", "bridge"), None);
        assert_eq!(pid_of("nats-import-md.pos", "nats-import"), None);
        assert_eq!(pid_of("service.sock", "bridge"), None);
    }

    #[test]
    fn a_socket_nobody_listens_on_is_removed_by_the_reader() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("system")).unwrap();
        // Bound, then the listener closed: what a SIGKILLed process leaves.
        let path = socket_path(root.path(), "demo", std::process::id(), "9");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        // A socket named after a pid that does not exist.
        let gone = socket_path(root.path(), "demo", i32::MAX as u32, "1");
        drop(UnixListener::bind(&gone).unwrap());
        let live = StatusSocket::start(root.path(), "demo", "1", || "here").unwrap();
        let mode = std::fs::metadata(live.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660);
        let got = query::<String>(root.path(), "demo", Duration::from_secs(5));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap(), "here");
        assert!(!path.exists(), "the dead socket is removed");
        assert!(!gone.exists(), "the socket of a gone pid is removed");
    }

    #[test]
    fn a_process_that_does_not_answer_is_an_error_and_stays() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("system")).unwrap();
        // Listening, never accepting: a stopped process.
        let path = socket_path(root.path(), "demo", std::process::id(), "2");
        let _l = UnixListener::bind(&path).unwrap();
        let got = query::<String>(root.path(), "demo", Duration::from_millis(100));
        assert_eq!(got.len(), 1);
        let e = got.into_iter().next().unwrap().unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(path.exists());
    }
}
