//! A reply as a call returns it (borrowed or copied aside), and a request
//! sent without waiting.

use tape_journal::Frame;

/// A reply copied aside: it came while another was awaited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedReply {
    /// Message type the responder chose.
    pub msg_type: u32,
    /// Sequence number of the reply in the responder's journal.
    pub seq: u64,
    /// Write time of the reply, ns since the epoch.
    pub time_ns: i64,
    /// The request's correlation id (its sequence number).
    pub corr: u64,
    /// Endpoint id of the responder.
    pub source: u32,
    /// The reply's payload.
    pub data: Vec<u8>,
}

impl OwnedReply {
    pub(super) fn of(f: &Frame<'_>) -> OwnedReply {
        OwnedReply {
            msg_type: f.msg_type(),
            seq: f.seq(),
            time_ns: f.time_ns(),
            corr: f.corr(),
            source: f.source(),
            data: f.payload().to_vec(),
        }
    }
}

/// A reply: borrowed from the responder's journal, or from the copy kept
/// for a request sent with [`Requester::send_nowait`](super::Requester::send_nowait). Valid until the next
/// call on the requester.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a>(pub(super) Inner<'a>);

#[derive(Debug, Clone, Copy)]
pub(super) enum Inner<'a> {
    Frame(Frame<'a>),
    Owned(&'a OwnedReply),
}

impl<'a> Reply<'a> {
    /// The reply's payload.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        match self.0 {
            Inner::Frame(f) => f.payload(),
            Inner::Owned(o) => &o.data,
        }
    }

    /// Message type the responder chose.
    #[inline]
    pub fn msg_type(&self) -> u32 {
        match self.0 {
            Inner::Frame(f) => f.msg_type(),
            Inner::Owned(o) => o.msg_type,
        }
    }

    /// Sequence number of the reply in the responder's journal.
    pub fn seq(&self) -> u64 {
        match self.0 {
            Inner::Frame(f) => f.seq(),
            Inner::Owned(o) => o.seq,
        }
    }

    /// Write time of the reply, ns since the epoch.
    pub fn time_ns(&self) -> i64 {
        match self.0 {
            Inner::Frame(f) => f.time_ns(),
            Inner::Owned(o) => o.time_ns,
        }
    }

    /// The request's correlation id: its sequence number in the
    /// requester's journal.
    pub fn corr(&self) -> u64 {
        match self.0 {
            Inner::Frame(f) => f.corr(),
            Inner::Owned(o) => o.corr,
        }
    }

    /// A copy that outlives the requester's next call.
    pub fn to_owned(&self) -> OwnedReply {
        match self.0 {
            Inner::Frame(f) => OwnedReply::of(&f),
            Inner::Owned(o) => o.clone(),
        }
    }
}

/// A request sent with [`Requester::send_nowait`](super::Requester::send_nowait), to take its reply later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pending {
    pub(super) corr: u64,
    pub(super) dest: usize,
}

impl Pending {
    /// The request's correlation id: its sequence number in the requester's
    /// journal.
    pub fn corr(&self) -> u64 {
        self.corr
    }
}
