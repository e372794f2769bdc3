//! Waiting for a journal that does not exist yet, at no cost while it
//! waits: an inotify watch on its folder (or, while the folder itself is
//! missing, on the nearest ancestor that exists), woken when a file is
//! made or renamed into place there (a writer makes page 1 under a `.tmp`
//! name and renames it).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Watches one folder for new files.
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
    dir: PathBuf,
    /// The folder watched now: `dir`, or an ancestor while `dir` is missing.
    watched: Option<PathBuf>,
    wd: i32,
}

const MASK: u32 = libc::IN_CREATE | libc::IN_MOVED_TO;

impl DirWatch {
    /// Starts watching `dir` (which need not exist yet).
    pub fn new(dir: &Path) -> std::io::Result<DirWatch> {
        // SAFETY: inotify_init1 takes flags only and returns a new
        // descriptor (or -1), which is owned from here on.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut w = DirWatch {
            // SAFETY: fd is a fresh descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            dir: dir.to_path_buf(),
            watched: None,
            wd: -1,
        };
        w.arm()?;
        Ok(w)
    }

    /// Watches `dir` if it exists, else its nearest existing ancestor.
    fn arm(&mut self) -> std::io::Result<()> {
        let mut target = self.dir.as_path();
        loop {
            if target.is_dir() || target.parent().is_none() {
                break;
            }
            target = target.parent().expect("checked above");
        }
        if self.watched.as_deref() == Some(target) {
            return Ok(());
        }
        if self.wd >= 0 {
            // SAFETY: removes a watch of our own descriptor.
            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), self.wd) };
            self.wd = -1;
        }
        let c = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path and our own descriptor.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.wd = wd;
        self.watched = Some(target.to_path_buf());
        Ok(())
    }

    /// Blocks until a file appears in the watched folder or `timeout`
    /// passes; returns whether one did (then look for the journal). While
    /// the folder is missing, the events of its ancestors move the watch
    /// down to it.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll over one pollfd that lives for the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0 && self.drain()
    }

    /// Takes the events that came (without blocking); returns whether any
    /// did.
    pub fn drain(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            // SAFETY: reads into a buffer of its own length from our own
            // non-blocking descriptor.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n <= 0 {
                break;
            }
            any = true;
        }
        if any && self.watched.as_deref() != Some(self.dir.as_path()) {
            let _ = self.arm();
        }
        any
    }
}

/// [`DirWatch::wait`] over several watches at once; returns whether any
/// saw a file appear.
pub fn wait_any_dir(watches: &mut [DirWatch], timeout: Duration) -> bool {
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| libc::pollfd {
            fd: w.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll over `fds`, which lives for the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return false;
    }
    let mut any = false;
    for w in watches.iter_mut() {
        any |= w.drain();
    }
    any
}
