//! One module per `tape` subcommand.

pub mod bridge;
pub mod call;
pub mod file;
pub mod ls;
pub mod metrics;
pub mod nats;
pub mod online;
pub mod prune;
pub mod replay;
pub mod rpc;
pub mod service;
pub mod tail;
pub mod top;
pub mod var;
pub mod verify;
pub mod write;

/// `--sync none|page|interval=MS`, for the commands that write journals
/// (`tape write`, and the replicas of `tape bridge pull` and `tape nats
/// import`).
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArg {
    /// When frames are made durable on disk: none, page or interval=MS.
    ///
    /// none (default): never synced, safe against any process crash; a
    /// power cut loses what the kernel had not written back yet (up to
    /// ~30 s). page: each page is synced (msync + fsync of the folder) when
    /// the writer leaves it, and the last one at exit: a power cut loses at
    /// most the page being written. interval=MS: a thread syncs every MS
    /// milliseconds what was published since: a power cut loses at most
    /// the last MS ms of frames (plus one sync's time). Neither adds a
    /// system call to an append; each sync makes the writer's next store
    /// into that 4 KiB block take a page fault. On tmpfs (/dev/shm, often
    /// /tmp) syncing does nothing: there is no disk. A failed sync (EIO) is
    /// reported on stderr (tape write then exits 1 at the end of its
    /// input); nothing is lost from the journal.
    #[arg(long, value_name = "POLICY", default_value = "none")]
    pub sync: tape_journal::SyncPolicy,
}
