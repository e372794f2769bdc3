//! A request as a handler sees it, and where the handler writes its
//! reply.

use tape_journal::{Appender, Frame, FrameMeta, WriteError};

use crate::TIMEOUT_LEN;

/// One request, borrowed from the requester's journal.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub(super) frame: Frame<'a>,
    pub(super) requester: &'a str,
}

impl<'a> Request<'a> {
    /// The request's data (its payload after the timeout).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.frame.payload()[TIMEOUT_LEN..]
    }

    /// Message type the requester chose.
    #[inline]
    pub fn msg_type(&self) -> u32 {
        self.frame.msg_type()
    }

    /// Sequence number of the request in the requester's journal (also its
    /// `corr`).
    #[inline]
    pub fn seq(&self) -> u64 {
        self.frame.seq()
    }

    /// Deadline, CLOCK_REALTIME ns since the epoch: the request's write
    /// time plus its timeout (`i64::MAX`: none).
    pub fn deadline_ns(&self) -> i64 {
        deadline_of(&self.frame)
    }

    /// Write time of the request, ns since the epoch.
    pub fn time_ns(&self) -> i64 {
        self.frame.time_ns()
    }

    /// The requester's name.
    pub fn requester(&self) -> &'a str {
        self.requester
    }

    /// The requester's endpoint id.
    pub fn requester_id(&self) -> u32 {
        self.frame.source()
    }

    /// The whole frame.
    pub fn frame(&self) -> &Frame<'a> {
        &self.frame
    }
}

/// A request's deadline: its write time plus its timeout (`i64::MAX` for
/// none). The payload must hold the timeout.
#[inline(always)]
pub(super) fn deadline_of(f: &Frame<'_>) -> i64 {
    let mut b = [0u8; TIMEOUT_LEN];
    b.copy_from_slice(&f.payload()[..TIMEOUT_LEN]);
    match u64::from_le_bytes(b) {
        0 => i64::MAX,
        t => f
            .time_ns()
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX)),
    }
}

/// Why [`Respond::reply`] did not write a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// This request has its reply already: one reply per request.
    AlreadySent,
    /// Writing it failed; [`Responder::poll`](super::Responder::poll)
    /// returns why ([`ServeError::Reply`](crate::ServeError::Reply)) and the
    /// request is not counted as answered.
    Failed,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::AlreadySent => write!(
                f,
                "this request has its reply already: send one reply per request"
            ),
            ReplyError::Failed => write!(
                f,
                "the reply could not be written: the responder's poll reports why"
            ),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Where a handler writes its reply (once). A handler that writes none
/// gets an empty reply of the request's message type sent for it, so that
/// every request handled is answered.
#[derive(Debug)]
pub struct Respond<'a> {
    pub(super) appender: &'a mut Appender,
    pub(super) meta: FrameMeta,
    pub(super) sent: bool,
    pub(super) failed: Option<WriteError>,
}

impl Respond<'_> {
    /// Publishes the reply: `msg_type` and `data`, with the request's
    /// `corr` and the requester's id in `dest`. Returns its sequence number
    /// in the responder's journal.
    pub fn reply(&mut self, msg_type: u32, data: &[u8]) -> Result<u64, ReplyError> {
        if self.failed.is_some() {
            return Err(ReplyError::Failed);
        }
        if self.sent {
            return Err(ReplyError::AlreadySent);
        }
        let meta = FrameMeta {
            msg_type,
            ..self.meta
        };
        match self.appender.write_meta(&meta, data) {
            Ok(seq) => {
                self.sent = true;
                Ok(seq)
            }
            Err(e) => {
                self.failed = Some(e);
                Err(ReplyError::Failed)
            }
        }
    }

    /// Whether the reply was sent.
    pub fn is_sent(&self) -> bool {
        self.sent
    }
}
