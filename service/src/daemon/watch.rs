//! The watcher queue: endpoint changes queued for one watching connection,
//! and that connection's thread sending them.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::conn::Connection;
use super::MAX_WATCH_QUEUE;
use crate::protocol::{ErrorCode, Reply};

/// The event queue of one watching connection.
pub(super) struct Watcher {
    queue: Mutex<WatchQueue>,
    /// An eventfd (non-blocking): incremented when events are queued,
    /// polled and drained by the watcher's connection thread.
    wake: std::os::fd::OwnedFd,
}

#[derive(Default)]
struct WatchQueue {
    events: VecDeque<Reply>,
    /// More than [`MAX_WATCH_QUEUE`] events were waiting: the watcher is
    /// closed.
    overflow: bool,
}

impl Watcher {
    pub(super) fn new() -> io::Result<Watcher> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd takes no pointer; a non-negative result is a new
        // file descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watcher {
            queue: Mutex::new(WatchQueue::default()),
            // SAFETY: fd was just created above and is owned by nobody else.
            wake: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds one to the eventfd (a full counter means a wake-up is pending).
    fn wake(&self) {
        let _ = nix::unistd::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Resets the eventfd to zero.
    fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.wake), &mut buf);
    }

    fn queue(&self) -> MutexGuard<'_, WatchQueue> {
        tape_journal::sync::lock(&self.queue)
    }

    /// Queues events and wakes the watcher's thread; never blocks.
    pub(super) fn push(&self, events: &[Reply]) {
        {
            let mut q = self.queue();
            if q.overflow {
                return;
            }
            if q.events.len() + events.len() > MAX_WATCH_QUEUE {
                q.overflow = true;
                q.events.clear();
            } else {
                q.events.extend(events.iter().cloned());
            }
        }
        self.wake();
    }
}

impl Connection<'_> {
    /// Sleeps until the peer sends something (`Ok(true)`), sending the
    /// watcher's events as they come. An error means: close the connection
    /// (it broke, or its events overflowed).
    pub(super) fn wait_watching(&mut self, w: &Watcher) -> io::Result<bool> {
        loop {
            let (peer_ready, woke) = {
                let mut fds = [
                    PollFd::new(self.stream.as_fd(), PollFlags::POLLIN),
                    PollFd::new(w.wake.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(io::Error::from(e)),
                }
                (fds[0].any().unwrap_or(true), fds[1].any().unwrap_or(true))
            };
            if woke {
                w.drain();
            }
            let (events, overflow) = {
                let mut q = w.queue();
                (std::mem::take(&mut q.events), q.overflow)
            };
            if overflow {
                self.send(&Reply::error(
                    ErrorCode::Limit,
                    format!(
                        "more than {MAX_WATCH_QUEUE} events went unread: connect and watch again"
                    ),
                ));
                return Err(io::Error::other("watcher overflow"));
            }
            for e in &events {
                if !self.send(e) {
                    return Err(io::Error::other("watcher gone"));
                }
            }
            if peer_ready {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_queue_overflows_once_and_wakes() {
        let w = Watcher::new().unwrap();
        let ev = Reply::Count { count: 0 };
        w.push(&vec![ev.clone(); MAX_WATCH_QUEUE - 1]);
        assert!(wait_readable_fd(&w));
        w.drain();
        assert!(!wait_readable_fd(&w), "drained");
        assert!(!w.queue().overflow);
        w.push(&[ev.clone(), ev.clone()]);
        let q = w.queue();
        assert!(q.overflow && q.events.is_empty());
    }

    fn wait_readable_fd(w: &Watcher) -> bool {
        let mut fds = [PollFd::new(w.wake.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }
}
