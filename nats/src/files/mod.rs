//! Files across machines: a JetStream object store (`tape file`,
//! [`Files`]).
//!
//! # Layout (NATS's own object store, spoken over the plain JetStream API)
//!
//! Bucket `B` is the stream `OBJ_B` on the subjects `$O.B.C.>` (chunks) and
//! `$O.B.M.>` (meta records), with roll-ups allowed, direct get, and
//! discard-new past its limits: what `nats object add` makes. One version
//! of object `NAME` is a random id (a *nuid*) whose chunks are the
//! messages of `$O.B.C.<nuid>`, in order; its meta record is the last
//! message of `$O.B.M.<base64url(NAME)>`, the JSON NATS's object stores
//! write (`name`, `bucket`, `nuid`, `size`, `chunks`, `mtime`,
//! `digest: "SHA-256=<base64url>"`, `options.max_chunk_size`). So the
//! `nats object` tools and the NATS clients read what tape sends, and tape
//! reads what they put. tape adds, where NATS has nothing: each chunk
//! carries its index (`Tape-Chunk`) and its own digest
//! (`Tape-Chunk-Digest`), and the record says so in its `metadata`
//! (`tape-chunk-digests: sha256`), so that a damaged chunk is named.
//!
//! async-nats 0.51's object store (`create_object_store`, `put`, `get`)
//! does work against nats-server 2.9.10 (checked: create, put, get with
//! its digest check, list and delete of a 300 kB object), unlike its
//! key-value store. tape does not use it: it needs the `object-store` and
//! `ring` features (a second crypto library in the build), its `put`
//! waits for each chunk's ack before sending the next (one round trip per
//! chunk), it keeps no digest per chunk, and it publishes the new record
//! without checking which one it replaces. The layout is the same, so the
//! two read each other's objects.
//!
//! # What a receiver can see
//!
//! - **Send**: the chunks go under a new nuid, pipelined ([`FilesOptions::window`]
//!   chunks in flight at most, each acknowledged by the server). Only
//!   when every chunk is acknowledged, and the stream holds exactly that
//!   many on the nuid's subject, is the record published, with a roll-up
//!   (it replaces the record before) and `Nats-Expected-Last-Subject-Sequence`
//!   (it replaces the record it read, not one another sender put in
//!   between: then it reads again). Then the chunks of the version it
//!   replaced are purged. A send that dies half way has published no
//!   record: its chunks are invisible, and the object is what it was
//!   before (absent, or the previous whole version). A send that fails
//!   without dying purges its own chunks.
//! - **Receive** reads the record, checks that the stream holds all its
//!   chunks, and writes them, in order, to a temporary file beside the
//!   target (`.<file>.tape-part`, locked while written), checking each
//!   chunk's index and digest as it comes and the size and SHA-256 of the
//!   whole at the end. Only then is the temporary file synced and renamed
//!   onto the target: an interrupted or refused receive never leaves a
//!   wrong file at the target, nor replaces a file that was there. A
//!   receive killed half way leaves the temporary file, which the next
//!   receive of that target takes over (truncates) and renames or removes.
//! - A chunk whose digest does not match, that is missing, or that comes
//!   where another was expected is refused naming the chunk; nothing is
//!   written at the target.
//!
//! # Memory
//!
//! Both sides hold at most [`FilesOptions::window`] chunks (32 × 128 KiB
//! = 4 MiB by default) besides the one they work on: a send waits for the
//! server's acks once that many are in flight; a receive's consumer is
//! made with `max_ack_pending` = window (ack-all, acknowledged every
//! quarter window), so the server sends no further ahead. (Flow control
//! alone let the server run about 50 MB ahead.) Neither grows with the
//! file: the tests watch the peak memory of both past the middle of a
//! 200 MiB file, and a 2 GiB file takes what a 2 MiB one does.
//!
//! # When the server goes away
//!
//! A receive goes on where it was once the server is back (a new consumer
//! from the stream sequence after the last chunk written), as long as the
//! record still names the version it is receiving. A send does not: it
//! fails, one line, its chunks invisible (purged when the server still
//! answers, else swept later), and the file on the server is what it was.
//!
//! # Parts
//!
//! `layout` (stream, subjects, the record's JSON, names, digests),
//! `bucket` (records: read, replace by compare-and-set, list, remove, the
//! sweep), `send`, `recv`.
//!
//! # Orphans
//!
//! A send that was killed leaves its chunks on the server under a nuid no
//! record names. They are invisible, and [`Files::sweep`] (run after each
//! successful send) purges those whose last chunk is older than
//! [`ORPHAN_AGE`], so that a sender still at work is never touched.

mod bucket;
mod layout;
mod recv;
mod send;

pub use layout::{
    check_bucket, check_name, chunk_subject, hex, local_name, meta_subject, stream_of, ObjectInfo,
    CHUNK_DIGESTS_KEY, CHUNK_DIGEST_HEADER, CHUNK_INDEX_HEADER, DEFAULT_BUCKET, DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
};

use crate::conn::{connect, Conn, Fail, Server};
use crate::Log;
use std::time::{Duration, Instant};

/// Chunks of no record older than this are purged by [`Files::sweep`].
pub const ORPHAN_AGE: Duration = Duration::from_secs(15 * 60);

/// Why a file operation failed.
#[derive(Debug, Clone)]
pub enum FileError {
    /// There is no such file in the bucket (`tape file` exits 3).
    Missing(String),
    /// What the server holds is not what was sent: a damaged or missing
    /// chunk, a wrong digest. Nothing was written at the target.
    Damaged(String),
    /// Anything else; the text says what to do.
    Other(String),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Missing(s) | FileError::Damaged(s) | FileError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for FileError {}

pub(crate) fn other(s: impl Into<String>) -> FileError {
    FileError::Other(s.into())
}

/// How far a send or receive is: bytes done, bytes in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Options of [`Files::open`].
#[derive(Clone)]
pub struct FilesOptions {
    /// The server.
    pub server: Server,
    /// The bucket ([`DEFAULT_BUCKET`]).
    pub bucket: String,
    /// Bytes per chunk when sending ([`DEFAULT_CHUNK_SIZE`]).
    pub chunk_size: usize,
    /// Chunks in flight at most: sent and not yet acknowledged by the
    /// server (send), or sent by the server and not yet acknowledged by
    /// the receiver (receive).
    pub window: usize,
    /// How long to keep trying to reach the server, and how long the
    /// server may stay silent in the middle of a transfer.
    pub timeout: Duration,
    /// Log lines (reconnections).
    pub log: Log,
}

impl std::fmt::Debug for FilesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesOptions")
            .field("server", &self.server)
            .field("bucket", &self.bucket)
            .field("chunk_size", &self.chunk_size)
            .field("window", &self.window)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl FilesOptions {
    /// The default bucket, 128 KiB chunks, 32 in flight, a 30 s timeout,
    /// no log.
    pub fn new(server: Server) -> FilesOptions {
        FilesOptions {
            server,
            bucket: DEFAULT_BUCKET.to_string(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            window: 32,
            timeout: Duration::from_secs(30),
            log: crate::quiet_log(),
        }
    }
}

/// A connection to one bucket of files. Blocking calls.
///
/// ```no_run
/// use tape_nats::{Auth, Files, FilesOptions, Server};
/// let files = Files::open(FilesOptions::new(Server::resolve(None, Auth::None)))?;
/// let sent = files.send(std::path::Path::new("ticks.csv"), "ticks.csv", &mut |_, _| {})?;
/// let (got, path) = files.recv("ticks.csv", std::path::Path::new("/tmp"), &mut |_, _| {})?;
/// assert_eq!(sent.sha256, got.sha256);
/// # Ok::<(), tape_nats::FileError>(())
/// ```
pub struct Files {
    rt: tokio::runtime::Runtime,
    conn: Conn,
    opts: FilesOptions,
    stream: String,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").field("opts", &self.opts).finish()
    }
}

impl Files {
    /// Connects (retrying until `opts.timeout` while the server cannot be
    /// reached; refused credentials fail at once). Makes nothing on the
    /// server: the bucket's stream is made by the first send.
    pub fn open(opts: FilesOptions) -> Result<Files, FileError> {
        check_bucket(&opts.bucket)?;
        if opts.chunk_size == 0 || opts.chunk_size > MAX_CHUNK_SIZE {
            return Err(other(format!(
                "a chunk size of {} bytes is not usable: give 1 to {MAX_CHUNK_SIZE}",
                opts.chunk_size
            )));
        }
        let rt = crate::runtime().map_err(other)?;
        let until = Instant::now() + opts.timeout;
        let mut n = 0;
        let conn = loop {
            match rt.block_on(connect(&opts.server, "tape file", opts.log.clone())) {
                Ok(c) => break c,
                Err(Fail::Fatal(e)) => return Err(other(e)),
                Err(Fail::Retry(e)) => {
                    if Instant::now() >= until {
                        return Err(other(format!("{e}: is nats-server running there?")));
                    }
                    std::thread::sleep(crate::conn::backoff(n));
                    n += 1;
                }
            }
        };
        Ok(Files {
            rt,
            conn,
            stream: stream_of(&opts.bucket),
            opts,
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.opts.bucket
    }

    /// The connection (for the benchmark and tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.conn.client
    }

    /// Runs `f` until it answers something else than [`Fail::Retry`], or
    /// the timeout.
    fn retrying<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&Self) -> Result<T, Fail>,
    ) -> Result<T, FileError> {
        crate::conn::retrying(what, self.opts.timeout, &self.opts.log, || f(self)).map_err(other)
    }
}
