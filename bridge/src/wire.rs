//! The bridge's wire format: message headers, the handshake messages, the
//! subscription, batches of frames. Pure encoding and decoding, no I/O;
//! `bridge/PROTOCOL.md` is the byte-level spec and the constants here are
//! the numbers it gives.
//!
//! Every decoder takes bytes another machine sent, checks every length
//! against a limit before using it, and returns an error for anything it
//! does not accept; none panics on any input (see the property tests;
//! `tools/tests/bridge/fuzz.rs` feeds random and mutated byte streams to a
//! running server and a running pull).

use tape_journal::format::{align_frame, u32_at, u64_at, FrameHeader, FRAME_HEADER_LEN};

/// The eight bytes that open a hello and a challenge.
pub const MAGIC: [u8; 8] = *b"TAPEBRDG";
/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;
/// Size of every message header: `len` u32, `kind` u32.
pub const HEADER_LEN: usize = 8;
/// Size of a nonce.
pub const NONCE_LEN: usize = 32;
/// Size of an HMAC-SHA256.
pub const MAC_LEN: usize = 32;
/// Body size of a hello and of a challenge.
pub const HELLO_LEN: usize = 16 + NONCE_LEN;
/// Largest subscribe body.
pub const MAX_SUBSCRIBE: usize = 64 * 1024;
/// Longest account id.
pub const MAX_ACCOUNT: usize = 64;
/// Most journals in one subscription.
pub const MAX_JOURNALS: usize = 256;
/// Longest error text.
pub const MAX_ERROR_TEXT: usize = 1024;
/// Batch body bytes before the frames: journal u32, count u32, first_seq u64.
pub const BATCH_HEADER_LEN: usize = 16;
/// Batch body bytes after the frames: the CRC32C.
pub const BATCH_TRAILER_LEN: usize = 4;
/// A sender stops adding frames to a batch once its frames reach this
/// many bytes; a batch may pass it by one frame.
pub const BATCH_TARGET: usize = 256 * 1024;

/// Largest batch body a receiver accepts when the largest page among the
/// journals it has been told about (`opened`) is `page_size` bytes: a
/// frame never exceeds its page.
pub const fn batch_limit(page_size: u64) -> usize {
    BATCH_HEADER_LEN + BATCH_TARGET + page_size as usize + BATCH_TRAILER_LEN
}

/// Message kinds (the `kind` word of the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    /// Client → server, first message: magic, version, client nonce.
    Hello = 1,
    /// Server → client: magic, version, server nonce.
    Challenge = 2,
    /// Client → server: HMAC proving the token.
    Auth = 3,
    /// Server → client: HMAC proving the server knows the token too.
    Welcome = 4,
    /// Client → server: account and journals with their start sequences.
    Subscribe = 5,
    /// Server → client: the subscription is accepted; per journal its page
    /// size (0: does not exist yet) and last sequence number.
    Subscribed = 6,
    /// Server → client: a journal that did not exist has appeared.
    Opened = 7,
    /// Server → client: frames of one journal, with a CRC32C.
    Batch = 8,
    /// Server → client: nothing to send for a while.
    Heartbeat = 9,
    /// Client → server: the last sequence number of each replica; also the
    /// client's heartbeat.
    Ack = 10,
    /// Server → client: the subscription cannot be served; the connection
    /// closes after it.
    Error = 11,
}

impl Kind {
    /// The kind with this number.
    pub fn from_u32(k: u32) -> Option<Kind> {
        Some(match k {
            1 => Kind::Hello,
            2 => Kind::Challenge,
            3 => Kind::Auth,
            4 => Kind::Welcome,
            5 => Kind::Subscribe,
            6 => Kind::Subscribed,
            7 => Kind::Opened,
            8 => Kind::Batch,
            9 => Kind::Heartbeat,
            10 => Kind::Ack,
            11 => Kind::Error,
            _ => return None,
        })
    }
}

/// Error codes of an [`Kind::Error`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    /// A journal asked for is not one this server exposes.
    NotServed = 1,
    /// The replica has frames past the source's last one: it was not made
    /// from this journal.
    Ahead = 2,
    /// The source no longer has the frame the replica needs next.
    Gap = 3,
    /// The source journal is damaged where the subscriber reads.
    Damaged = 4,
    /// The server has as many subscribers as it takes.
    Busy = 5,
    /// Anything else.
    Other = 6,
}

impl ErrorCode {
    /// The code with this number (unknown numbers are [`ErrorCode::Other`]).
    pub fn from_u32(c: u32) -> ErrorCode {
        match c {
            1 => ErrorCode::NotServed,
            2 => ErrorCode::Ahead,
            3 => ErrorCode::Gap,
            4 => ErrorCode::Damaged,
            5 => ErrorCode::Busy,
            _ => ErrorCode::Other,
        }
    }
}

/// Why bytes from the wire were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A message of a kind not expected here (or of no kind at all).
    UnexpectedKind {
        /// The kind word received.
        got: u32,
        /// What was expected.
        expected: &'static str,
    },
    /// A length beyond its limit (or not the fixed size of its kind).
    BadLength {
        /// The message kind.
        what: &'static str,
        /// The length announced.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The body's content is not acceptable; the text says why.
    Malformed(String),
    /// A batch whose CRC32C does not match its bytes.
    Checksum {
        /// CRC32C carried by the batch.
        carried: u32,
        /// CRC32C of the bytes received.
        computed: u32,
    },
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::UnexpectedKind { got, expected } => {
                write!(
                    f,
                    "got a message of kind {got} where {expected} was expected"
                )
            }
            WireError::BadLength { what, len, limit } => {
                write!(f, "a {what} of {len} bytes was announced (limit {limit})")
            }
            WireError::Malformed(why) => f.write_str(why),
            WireError::Checksum { carried, computed } => write!(
                f,
                "batch checksum mismatch (carried {carried:08x}, computed {computed:08x})"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length in bytes.
    pub len: u32,
    /// Kind word (see [`Kind`]).
    pub kind: u32,
}

impl Header {
    /// Parses the 8 header bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            kind: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Checks that this is a `kind` message of at most `limit` bytes (or
    /// exactly `limit` when `exact`).
    pub fn expect(
        &self,
        kind: Kind,
        what: &'static str,
        limit: usize,
        exact: bool,
    ) -> Result<usize, WireError> {
        if self.kind != kind as u32 {
            return Err(WireError::UnexpectedKind {
                got: self.kind,
                expected: what,
            });
        }
        let len = self.len as usize;
        if len > limit || (exact && len != limit) {
            return Err(WireError::BadLength {
                what,
                len: self.len as u64,
                limit: limit as u64,
            });
        }
        Ok(len)
    }
}

/// Appends a message header.
pub fn put_header(out: &mut Vec<u8>, kind: Kind, len: usize) {
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
}

/// A hello or a challenge: the version its sender speaks and its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u32,
    /// The sender's nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// The whole message (header and body) as `kind` (hello or challenge).
    pub fn encode(&self, kind: Kind) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + HELLO_LEN);
        put_header(&mut out, kind, HELLO_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Parses a body of [`HELLO_LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Hello, WireError> {
        if body.len() != HELLO_LEN || body[..8] != MAGIC {
            return Err(WireError::Malformed(
                "the hello does not start with the bridge's magic".into(),
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[16..]);
        Ok(Hello {
            version: u32_at(body, 8),
            nonce,
        })
    }
}

/// A whole auth or welcome message carrying `mac`.
pub fn encode_mac(kind: Kind, mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + MAC_LEN);
    put_header(&mut out, kind, MAC_LEN);
    out.extend_from_slice(mac);
    out
}

/// One journal of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The source journal's name.
    pub journal: String,
    /// First sequence number wanted; 0: from the first frame the source
    /// has (the replica is empty).
    pub from_seq: u64,
}

/// The subscribe message: who asks, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Account id of the subscriber (1 to 64 bytes of
    /// `A-Z a-z 0-9 _ - . @ :`).
    pub account: String,
    /// The journals, 1 to [`MAX_JOURNALS`], no name twice.
    pub journals: Vec<Want>,
}

/// Checks an account id: 1 to 64 bytes of `A-Z a-z 0-9 _ - . @ :`.
pub fn check_account(account: &str) -> Result<(), String> {
    let ok = !account.is_empty()
        && account.len() <= MAX_ACCOUNT
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad account id {account:?}: use 1 to {MAX_ACCOUNT} characters from A-Z a-z 0-9 _ - . @ :"
        ))
    }
}

impl Subscribe {
    /// The whole message.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(self.account.len() as u8);
        body.extend_from_slice(self.account.as_bytes());
        body.extend_from_slice(&(self.journals.len() as u16).to_le_bytes());
        for w in &self.journals {
            body.push(w.journal.len() as u8);
            body.extend_from_slice(w.journal.as_bytes());
            body.extend_from_slice(&w.from_seq.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        put_header(&mut out, Kind::Subscribe, body.len());
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks a subscribe body.
    pub fn decode(body: &[u8]) -> Result<Subscribe, WireError> {
        let mut r = Bytes(body);
        let bad = |why: &str| WireError::Malformed(format!("bad subscribe: {why}"));
        let n = r.u8().ok_or_else(|| bad("empty"))? as usize;
        let account = r.str(n).ok_or_else(|| bad("account cut short"))?;
        check_account(&account).map_err(WireError::Malformed)?;
        let count = r.u16().ok_or_else(|| bad("no journal count"))? as usize;
        if count == 0 || count > MAX_JOURNALS {
            return Err(bad(&format!(
                "{count} journals (1 to {MAX_JOURNALS} allowed)"
            )));
        }
        let mut journals: Vec<Want> = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u8().ok_or_else(|| bad("journal cut short"))? as usize;
            let journal = r.str(n).ok_or_else(|| bad("journal name cut short"))?;
            tape_journal::check_name(&journal).map_err(|e| WireError::Malformed(e.to_string()))?;
            let from_seq = r.u64().ok_or_else(|| bad("start sequence cut short"))?;
            if journals.iter().any(|w| w.journal == journal) {
                return Err(bad(&format!("journal {journal} named twice")));
            }
            journals.push(Want { journal, from_seq });
        }
        if !r.0.is_empty() {
            return Err(bad("bytes after the last journal"));
        }
        Ok(Subscribe { account, journals })
    }
}

/// What the server says about one journal of an accepted subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalState {
    /// Page size of the source journal; 0: it does not exist yet (an
    /// [`Kind::Opened`] message follows when it appears).
    pub page_size: u64,
    /// Its last sequence number (0: none).
    pub last_seq: u64,
}

/// The whole subscribed message.
pub fn encode_subscribed(states: &[JournalState]) -> Vec<u8> {
    let len = 4 + 16 * states.len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    put_header(&mut out, Kind::Subscribed, len);
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for s in states {
        out.extend_from_slice(&s.page_size.to_le_bytes());
        out.extend_from_slice(&s.last_seq.to_le_bytes());
    }
    out
}

/// Body limit of a subscribed message.
pub const fn subscribed_limit() -> usize {
    4 + 16 * MAX_JOURNALS
}

/// Parses a subscribed body for a subscription of `count` journals.
pub fn decode_subscribed(body: &[u8], count: usize) -> Result<Vec<JournalState>, WireError> {
    let mut r = Bytes(body);
    let n = r.u32().unwrap_or(u32::MAX) as usize;
    if n != count || body.len() != 4 + 16 * count {
        return Err(WireError::Malformed(format!(
            "subscribed names {n} journals where {count} were asked for"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let page_size = r.u64().unwrap_or(0);
        let last_seq = r.u64().unwrap_or(0);
        check_page_size(page_size, true)?;
        out.push(JournalState {
            page_size,
            last_seq,
        });
    }
    Ok(out)
}

fn check_page_size(page_size: u64, zero_ok: bool) -> Result<(), WireError> {
    if (zero_ok && page_size == 0) || tape_journal::format::valid_page_size(page_size) {
        Ok(())
    } else {
        Err(WireError::Malformed(format!(
            "page size {page_size} is not one a journal can have"
        )))
    }
}

/// Body size of an opened message.
pub const OPENED_LEN: usize = 16;

/// The whole opened message: journal `index` now exists, with pages of
/// `page_size` bytes.
pub fn encode_opened(index: u32, page_size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + OPENED_LEN);
    put_header(&mut out, Kind::Opened, OPENED_LEN);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&page_size.to_le_bytes());
    out
}

/// Parses an opened body: (journal index, page size).
pub fn decode_opened(body: &[u8], count: usize) -> Result<(usize, u64), WireError> {
    if body.len() != OPENED_LEN {
        return Err(WireError::Malformed("opened of the wrong size".into()));
    }
    let index = u32_at(body, 0) as usize;
    let page_size = u64_at(body, 8);
    if index >= count {
        return Err(WireError::Malformed(format!(
            "opened names journal {index} of {count}"
        )));
    }
    check_page_size(page_size, false)?;
    Ok((index, page_size))
}

/// The whole heartbeat message.
pub fn encode_heartbeat() -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[4..].copy_from_slice(&(Kind::Heartbeat as u32).to_le_bytes());
    b
}

/// The whole ack message: the last sequence number of each replica (0:
/// none), in subscription order.
pub fn encode_ack(last_seqs: &[u64]) -> Vec<u8> {
    let len = 8 + 8 * last_seqs.len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    put_header(&mut out, Kind::Ack, len);
    out.extend_from_slice(&(last_seqs.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for s in last_seqs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Body limit of an ack.
pub const fn ack_limit() -> usize {
    8 + 8 * MAX_JOURNALS
}

/// Parses an ack body for a subscription of `count` journals.
pub fn decode_ack(body: &[u8], count: usize) -> Result<Vec<u64>, WireError> {
    if body.len() != 8 + 8 * count || u32_at(body, 0) as usize != count {
        return Err(WireError::Malformed(format!(
            "an ack of {} bytes for {count} journals",
            body.len()
        )));
    }
    Ok((0..count).map(|i| u64_at(body, 8 + 8 * i)).collect())
}

/// The whole error message.
pub fn encode_error(code: ErrorCode, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + text.len());
    put_header(&mut out, Kind::Error, 4 + text.len());
    out.extend_from_slice(&(code as u32).to_le_bytes());
    out.extend_from_slice(text);
    out
}

/// Parses an error body.
pub fn decode_error(body: &[u8]) -> (ErrorCode, String) {
    if body.len() < 4 {
        return (ErrorCode::Other, "an error message cut short".into());
    }
    (
        ErrorCode::from_u32(u32_at(body, 0)),
        String::from_utf8_lossy(&body[4..]).into_owned(),
    )
}

/// Builds batch messages in one reused buffer.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    first_seq: u64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    /// An empty builder with room for one batch of [`BATCH_TARGET`].
    pub fn new() -> BatchBuilder {
        let mut buf = Vec::with_capacity(HEADER_LEN + BATCH_HEADER_LEN + BATCH_TARGET + 64 * 1024);
        buf.resize(HEADER_LEN + BATCH_HEADER_LEN, 0);
        BatchBuilder {
            buf,
            count: 0,
            first_seq: 0,
        }
    }

    /// Starts a new batch (forgets what was added).
    #[inline]
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN + BATCH_HEADER_LEN);
        self.count = 0;
    }

    /// Adds one frame as stored in its journal (header and payload,
    /// `raw.len()` equal to its `len` word); pads it to 8 bytes.
    #[inline]
    pub fn push(&mut self, seq: u64, raw: &[u8]) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.buf.extend_from_slice(raw);
        let pad = align_frame(raw.len()) - raw.len();
        self.buf.extend_from_slice(&[0u8; 8][..pad]);
        self.count += 1;
    }

    /// Frames added.
    #[inline]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of frames added.
    #[inline]
    pub fn frame_bytes(&self) -> usize {
        self.buf.len() - HEADER_LEN - BATCH_HEADER_LEN
    }

    /// Sequence number of the first frame added.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Seals the batch for journal `index` and returns the whole message.
    /// Call [`clear`](Self::clear) before adding the next batch's frames.
    pub fn finish(&mut self, index: u32) -> &[u8] {
        let body_len = self.buf.len() - HEADER_LEN + BATCH_TRAILER_LEN;
        self.buf[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
        self.buf[4..8].copy_from_slice(&(Kind::Batch as u32).to_le_bytes());
        self.buf[8..12].copy_from_slice(&index.to_le_bytes());
        self.buf[12..16].copy_from_slice(&self.count.to_le_bytes());
        self.buf[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let crc = crc32c::crc32c(&self.buf[HEADER_LEN..]);
        self.buf.extend_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// A batch that passed its checks: checksum, frame lengths, sequence
/// numbers following on, write times never decreasing.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Index of the journal in the subscription.
    pub journal: usize,
    /// Number of frames.
    pub count: u32,
    /// Sequence number of the first frame.
    pub first_seq: u64,
    /// The frames, each as stored in a journal, padded to 8 bytes.
    frames: &'a [u8],
}

impl<'a> Batch<'a> {
    /// Checks a batch body for a subscription of `journals` journals whose
    /// largest frame may be `max_frame` bytes: the checksum first, then
    /// every frame's length, sequence number (`first_seq`, +1, ...), and
    /// write time (never decreasing). The payload checksums are left to
    /// the appender, which checks each before writing it.
    pub fn check(
        body: &'a [u8],
        journals: usize,
        max_frame: usize,
    ) -> Result<Batch<'a>, WireError> {
        let bad = |why: String| WireError::Malformed(format!("bad batch: {why}"));
        if body.len() < BATCH_HEADER_LEN + BATCH_TRAILER_LEN {
            return Err(bad(format!("{} bytes is too short", body.len())));
        }
        let (data, trailer) = body.split_at(body.len() - BATCH_TRAILER_LEN);
        let carried = u32_at(trailer, 0);
        let computed = crc32c::crc32c(data);
        if carried != computed {
            return Err(WireError::Checksum { carried, computed });
        }
        let journal = u32_at(data, 0) as usize;
        let count = u32_at(data, 4);
        let first_seq = u64_at(data, 8);
        if journal >= journals {
            return Err(bad(format!("journal {journal} of {journals}")));
        }
        if count == 0 || first_seq == 0 {
            return Err(bad("no frame, or sequence 0".into()));
        }
        let frames = &data[BATCH_HEADER_LEN..];
        let mut off = 0usize;
        let mut n = 0u32;
        let mut last_time = i64::MIN;
        while off < frames.len() {
            let h = FrameHeader::parse(&frames[off..])
                .ok_or_else(|| bad(format!("frame header cut short at {off}")))?;
            let len = h.len as usize;
            if len < FRAME_HEADER_LEN || len > max_frame || off + align_frame(len) > frames.len() {
                return Err(bad(format!("frame length {len} at {off}")));
            }
            let want = first_seq.wrapping_add(n as u64);
            if h.seq != want {
                return Err(bad(format!("sequence {} where {want} was expected", h.seq)));
            }
            if h.time_ns < last_time {
                return Err(bad(format!("write time going back at seq {}", h.seq)));
            }
            last_time = h.time_ns;
            off += align_frame(len);
            n += 1;
        }
        if n != count {
            return Err(bad(format!("{n} frames where {count} were announced")));
        }
        Ok(Batch {
            journal,
            count,
            first_seq,
            frames,
        })
    }

    /// Write time of the first frame.
    pub fn first_time_ns(&self) -> i64 {
        u64_at(self.frames, 16) as i64
    }

    /// Sequence number of the last frame.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.count as u64 - 1
    }

    /// The frames: each header and its payload.
    pub fn frames(&self) -> BatchFrames<'a> {
        BatchFrames { rest: self.frames }
    }
}

/// Iterator over the frames of a checked [`Batch`].
#[derive(Debug, Clone)]
pub struct BatchFrames<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for BatchFrames<'a> {
    type Item = (FrameHeader, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Batch::check has walked these bytes: every length is in bounds.
        let h = FrameHeader::parse(self.rest)?;
        let len = h.len as usize;
        let payload = self.rest.get(FRAME_HEADER_LEN..len)?;
        self.rest = self.rest.get(align_frame(len)..).unwrap_or(&[]);
        Some((h, payload))
    }
}

/// A reader over bytes that never reads past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32_at(b, 0))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64_at(b, 0))
    }
    fn str(&mut self, n: usize) -> Option<String> {
        self.take(n)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(seq: u64, time: i64, payload: &[u8]) -> Vec<u8> {
        let h = FrameHeader {
            len: (FRAME_HEADER_LEN + payload.len()) as u32,
            msg_type: 3,
            seq,
            time_ns: time,
            source: 5,
            dest: 6,
            corr: 7,
            crc: crc32c::crc32c(payload),
            flags: 0,
        };
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn batch(index: u32, first: u64, n: u64) -> Vec<u8> {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            let p = format!("payload {i}");
            b.push(first + i, &frame(first + i, 100 + i as i64, p.as_bytes()));
        }
        b.finish(index).to_vec()
    }

    #[test]
    fn batch_round_trips() {
        let msg = batch(1, 41, 10);
        let h = Header::parse(msg[..8].try_into().unwrap());
        assert_eq!(h.kind, Kind::Batch as u32);
        assert_eq!(h.len as usize, msg.len() - 8);
        let b = Batch::check(&msg[8..], 2, 1 << 20).unwrap();
        assert_eq!(
            (b.journal, b.count, b.first_seq, b.last_seq()),
            (1, 10, 41, 50)
        );
        let frames: Vec<_> = b.frames().collect();
        assert_eq!(frames.len(), 10);
        assert_eq!(frames[3].0.seq, 44);
        assert_eq!(frames[3].1, b"payload 3");
        assert_eq!(b.first_time_ns(), 100);
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let msg = batch(0, 1, 5);
        for i in 8..msg.len() {
            let mut m = msg.clone();
            m[i] ^= 0x20;
            assert!(Batch::check(&m[8..], 1, 1 << 20).is_err(), "byte {i}");
        }
    }

    #[test]
    fn batch_checks_sequence_and_lengths() {
        // Sequence gap: frames 1, 2, 4.
        let mut b = BatchBuilder::new();
        for s in [1u64, 2, 4] {
            b.push(s, &frame(s, 1, b"x"));
        }
        let m = b.finish(0).to_vec();
        let e = Batch::check(&m[8..], 1, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("sequence 4"), "{e}");
        // A frame longer than allowed.
        let m = batch(0, 1, 1);
        assert!(Batch::check(&m[8..], 1, 50).is_err());
        // Unknown journal.
        assert!(Batch::check(&m[8..], 0, 1 << 20).is_err());
    }

    #[test]
    fn subscribe_round_trips_and_checks() {
        let s = Subscribe {
            account: "acct-7@desk".into(),
            journals: vec![
                Want {
                    journal: "md".into(),
                    from_seq: 0,
                },
                Want {
                    journal: "orders.fb".into(),
                    from_seq: 123,
                },
            ],
        };
        let m = s.encode();
        let h = Header::parse(m[..8].try_into().unwrap());
        assert_eq!(
            h.expect(Kind::Subscribe, "subscribe", MAX_SUBSCRIBE, false),
            Ok(m.len() - 8)
        );
        assert_eq!(Subscribe::decode(&m[8..]).unwrap(), s);
        let mut twice = s.clone();
        twice.journals[1].journal = "md".into();
        assert!(Subscribe::decode(&twice.encode()[8..]).is_err());
        let mut bad = s.clone();
        bad.account = "a b".into();
        assert!(Subscribe::decode(&bad.encode()[8..]).is_err());
        let mut bad = s;
        bad.journals[0].journal = "../etc".into();
        assert!(Subscribe::decode(&bad.encode()[8..]).is_err());
    }

    #[test]
    fn small_messages_round_trip() {
        let hello = Hello {
            version: 1,
            nonce: [9; 32],
        };
        let m = hello.encode(Kind::Hello);
        assert_eq!(Hello::decode(&m[8..]).unwrap(), hello);
        let st = [
            JournalState {
                page_size: 1 << 20,
                last_seq: 9,
            },
            JournalState {
                page_size: 0,
                last_seq: 0,
            },
        ];
        assert_eq!(
            decode_subscribed(&encode_subscribed(&st)[8..], 2).unwrap(),
            st
        );
        assert_eq!(
            decode_opened(&encode_opened(1, 1 << 21)[8..], 2).unwrap(),
            (1, 1 << 21)
        );
        assert!(decode_opened(&encode_opened(1, 12345)[8..], 2).is_err());
        assert_eq!(
            decode_ack(&encode_ack(&[3, 4])[8..], 2).unwrap(),
            vec![3, 4]
        );
        let e = encode_error(ErrorCode::Ahead, "replica ahead");
        assert_eq!(
            decode_error(&e[8..]),
            (ErrorCode::Ahead, "replica ahead".into())
        );
    }

    #[test]
    fn header_limits() {
        let h = Header {
            len: u32::MAX,
            kind: Kind::Hello as u32,
        };
        assert!(matches!(
            h.expect(Kind::Hello, "hello", HELLO_LEN, true),
            Err(WireError::BadLength { .. })
        ));
        let h = Header { len: 48, kind: 99 };
        assert!(matches!(
            h.expect(Kind::Hello, "hello", HELLO_LEN, true),
            Err(WireError::UnexpectedKind { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), n in 0usize..4) {
            let _ = Batch::check(&body, n, 1 << 20).map(|b| b.frames().count());
            let _ = Subscribe::decode(&body);
            let _ = Hello::decode(&body);
            let _ = decode_subscribed(&body, n);
            let _ = decode_opened(&body, n);
            let _ = decode_ack(&body, n);
            let _ = decode_error(&body);
        }

        #[test]
        fn batches_with_a_valid_crc_but_random_frames_never_panic(
            frames in proptest::collection::vec(any::<u8>(), 0..600), count in 0u32..8, first in 0u64..4)
        {
            let mut body = Vec::new();
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(&count.to_le_bytes());
            body.extend_from_slice(&first.to_le_bytes());
            body.extend_from_slice(&frames);
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            if let Ok(b) = Batch::check(&body, 1, 1 << 20) {
                prop_assert_eq!(b.frames().count(), b.count as usize);
            }
        }
    }
}
