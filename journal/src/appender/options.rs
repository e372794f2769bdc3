//! What an appender is opened with, and the header fields a caller sets.

use crate::durable::SyncPolicy;
use crate::format::DEFAULT_PAGE_SIZE;
use crate::page::PrepareOptions;

/// How an [`Appender`] opens its journal.
#[derive(Debug, Clone, Copy)]
pub struct AppendOptions {
    /// Largest page size for a journal that does not exist yet: its pages
    /// grow from 1 MiB to it, each twice the one before (FORMAT.md, "Page
    /// sizes"); an existing journal keeps its own. A power of two from
    /// 1 MiB to 1 GiB.
    pub page_size: u64,
    /// Make the next page ready on a background thread (the normal case).
    /// Without it a page switch creates the page on the caller's thread.
    pub background: bool,
    /// How pages are made ready.
    pub prepare: PrepareOptions,
    /// Pin the background thread to this CPU (e.g. the writer's own core,
    /// so its work never preempts a reader pinned elsewhere).
    pub helper_core: Option<usize>,
    /// How many pages the background thread keeps ready past the current
    /// one (at least 1). More than one lets a writer that outruns the
    /// making of pages (fresh memory runs at 1-2 GB/s on a small VM) write
    /// a burst at full speed; making the day's pages at start-up, as
    /// Chronicle's pretoucher and Aeron's pre-allocated terms do, is this
    /// with a large count. Each ready page holds its own size of memory
    /// (up to `page_size`).
    pub pages_ahead: u32,
    /// When frames are made durable on disk (default
    /// [`SyncPolicy::None`]: never, the kernel's own write-back). See
    /// [`SyncPolicy`] for what each policy guarantees and costs; none adds
    /// anything to the append path.
    pub sync: SyncPolicy,
}

impl Default for AppendOptions {
    fn default() -> Self {
        AppendOptions {
            page_size: DEFAULT_PAGE_SIZE,
            background: true,
            prepare: PrepareOptions {
                prefault: true,
                mlock: false,
            },
            helper_core: None,
            pages_ahead: 1,
            sync: SyncPolicy::None,
        }
    }
}

/// The fields of a frame header the application chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Message type.
    pub msg_type: u32,
    /// Source id.
    pub source: u32,
    /// Destination id, 0 for everyone.
    pub dest: u32,
    /// Correlation id, 0 for none.
    pub corr: u64,
}
