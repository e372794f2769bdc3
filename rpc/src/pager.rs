//! The page helper of an endpoint: one thread that maps the next page of
//! each journal the endpoint reads before its cursor gets there, and unmaps
//! the pages it left (through the cursor's
//! [`PageExchange`](tape_journal::PageExchange)), so that a page switch on
//! the serving thread is a pointer swap, never an `open` or `mmap`. It wakes
//! every millisecond and has nothing to do most of the time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tape_journal::{Cursor, PageExchange};

#[derive(Debug, Default)]
struct Shared {
    exchanges: Mutex<Vec<Arc<PageExchange>>>,
    stop: AtomicBool,
}

impl Shared {
    fn list(&self) -> MutexGuard<'_, Vec<Arc<PageExchange>>> {
        self.exchanges.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The helper thread; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Pager {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A handle to give cursors to the helper from another thread.
#[derive(Debug, Clone)]
pub(crate) struct PagerHandle(Arc<Shared>);

impl PagerHandle {
    /// The helper serves `cursor`'s pages from now on, until the cursor is
    /// dropped.
    pub fn add(&self, cursor: &mut Cursor) {
        let ex = cursor.exchange(true);
        self.0.list().push(ex);
    }
}

impl Pager {
    pub fn spawn() -> std::io::Result<Pager> {
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tape-rpc-pages".into())
            .spawn(move || {
                while !s.stop.load(Ordering::Acquire) {
                    let list = {
                        let mut l = s.list();
                        // A cursor that was dropped left only our handle.
                        l.retain(|ex| Arc::strong_count(ex) > 1);
                        l.clone()
                    };
                    let worked = list.iter().fold(false, |w, ex| ex.serve() | w);
                    if !worked {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })?;
        Ok(Pager {
            shared,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> PagerHandle {
        PagerHandle(Arc::clone(&self.shared))
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
