//! Why a frame was not written: a plain write's errors, and a replica's.

use crate::page::PageError;

/// Why a frame was not written. Nothing was written when this is returned.
#[derive(Debug)]
pub enum WriteError {
    /// The payload does not fit in one page.
    TooLarge {
        /// Payload length asked for.
        len: usize,
        /// Largest payload a page of this journal holds.
        max: usize,
    },
    /// The next page could not be made (a full disk, a permission); the
    /// frames already written are intact and a later write retries.
    NewPage(PageError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::TooLarge { len, max } => write!(
                f,
                "frame payload of {len} bytes is larger than the {max} bytes a page holds: use a larger page size"
            ),
            WriteError::NewPage(e) => write!(f, "cannot make the next page: {e}"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::NewPage(e) => Some(e),
            WriteError::TooLarge { .. } => None,
        }
    }
}

/// Why a frame replicated from another journal was not written (a bridge's
/// or a NATS import's replica). Nothing was written when this is returned.
#[derive(Debug)]
pub enum ReplicaError {
    /// Writing failed as a plain write can ([`WriteError`]).
    Write(WriteError),
    /// A frame copied from another journal does not match its own header
    /// (length or CRC32C): it was damaged on the way.
    Corrupt {
        /// Sequence number in its header.
        seq: u64,
    },
    /// A replicated frame does not continue the journal.
    OutOfOrder {
        /// Sequence number the journal expects next.
        expected_seq: u64,
        /// Sequence number given.
        seq: u64,
        /// Time of the last frame.
        last_time_ns: i64,
        /// Time given.
        time_ns: i64,
    },
}

impl From<WriteError> for ReplicaError {
    fn from(e: WriteError) -> Self {
        ReplicaError::Write(e)
    }
}

impl std::fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaError::Write(e) => e.fmt(f),
            ReplicaError::Corrupt { seq } => write!(
                f,
                "copied frame seq {seq} does not match its checksum or length: it was damaged on the way"
            ),
            ReplicaError::OutOfOrder {
                expected_seq,
                seq,
                last_time_ns,
                time_ns,
            } => write!(
                f,
                "replicated frame seq {seq} time {time_ns} does not follow seq {} time {last_time_ns}",
                expected_seq.saturating_sub(1)
            ),
        }
    }
}

impl std::error::Error for ReplicaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplicaError::Write(e) => Some(e),
            _ => None,
        }
    }
}
