//! The page preparer: a background thread that makes the writer's next
//! page (creates, sizes, maps and pre-faults it) before it is needed, and
//! unmaps the pages the writer is done with, so that a page switch on the
//! hot path is a pointer swap and never a file-system call.

use crate::page::{PageMut, PrepareOptions};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// How often the thread looks for work: the writer never wakes it, so
/// that a page switch makes no system call.
const POLL: std::time::Duration = std::time::Duration::from_micros(500);

#[derive(Debug, Default)]
struct State {
    /// The page number the writer will need next.
    want: Option<u64>,
    /// A page made ready ahead of time.
    ready: Option<PageMut>,
    /// Pages the writer left, to unmap off the hot path.
    retired: Vec<PageMut>,
    /// The page number the last attempt failed to make (the appender then
    /// makes it itself and gets the error).
    failed: Option<u64>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled when a page is ready or failed.
    done: Condvar,
}

/// Handle to the preparer thread of one appender; dropping it stops the
/// thread (and unmaps what it holds).
#[derive(Debug)]
pub struct Preparer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    /// Starts the thread for journal `name` in `dir`, pinned to `core` if
    /// given.
    pub fn spawn(
        dir: PathBuf,
        name: String,
        page_size: u64,
        opts: PrepareOptions,
        core: Option<usize>,
    ) -> std::io::Result<Preparer> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tape-prep-{name}"))
            .spawn(move || {
                if let Some(c) = core {
                    // Best effort: an unpinned helper still works.
                    let _ = crate::exchange::pin_thread(c);
                }
                run(&s, &dir, &name, page_size, opts)
            })?;
        Ok(Preparer {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for page `page_no` to be made ready (the thread sees it within
    /// [`POLL`]; nothing is woken).
    pub fn request(&self, page_no: u64) {
        let mut st = lock(&self.shared.state);
        st.want = Some(page_no);
    }

    /// Takes page `page_no`, waiting while the thread is still making it.
    /// `None` when it was not asked for or making it failed: the page is
    /// then not being touched by the thread, and the caller may make it.
    pub fn take_wait(&self, page_no: u64) -> Option<PageMut> {
        let mut st = lock(&self.shared.state);
        loop {
            if st.ready.as_ref().is_some_and(|p| p.page_no() == page_no) {
                // Handed over: the thread must not make (and pre-fault) it
                // again while the writer fills it.
                st.want = None;
                return st.ready.take();
            }
            if st.want != Some(page_no) || st.failed == Some(page_no) || st.stop {
                return None;
            }
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Hands a page the writer is done with to the thread to unmap.
    pub fn retire(&self, page: PageMut) {
        let mut st = lock(&self.shared.state);
        st.retired.push(page);
    }

    /// Waits until the requested page is ready (tests and benches use it to
    /// measure a switch with the page ready).
    pub fn is_ready(&self, page_no: u64) -> bool {
        lock(&self.shared.state)
            .ready
            .as_ref()
            .is_some_and(|p| p.page_no() == page_no)
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding this lock leaves no broken invariant: every
    // field is valid on its own.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(shared: &Shared, dir: &std::path::Path, name: &str, page_size: u64, opts: PrepareOptions) {
    loop {
        let (job, retired) = {
            let mut st = lock(&shared.state);
            loop {
                if st.stop {
                    return;
                }
                let job = st
                    .want
                    .filter(|&n| st.ready.as_ref().is_none_or(|p| p.page_no() != n))
                    .filter(|&n| st.failed != Some(n));
                if job.is_some() || !st.retired.is_empty() {
                    break (job, std::mem::take(&mut st.retired));
                }
                // Polled, not woken: a page switch on the hot path must not
                // make a futex system call to wake this thread.
                st = shared
                    .wake
                    .wait_timeout(st, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        drop(retired);
        if let Some(no) = job {
            // A failure (a full disk) is not reported here: the appender
            // makes the page itself when it needs it and gets the error.
            match PageMut::create_or_open(dir, name, no, page_size, opts) {
                Ok(page) => {
                    let mut st = lock(&shared.state);
                    st.ready = Some(page);
                    st.failed = None;
                }
                Err(_) => lock(&shared.state).failed = Some(no),
            }
            shared.done.notify_all();
        }
    }
}
