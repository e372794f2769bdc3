//! Batches of frames: building one in a reused buffer, and checking one
//! from the wire before any of it is written.

use super::{Kind, WireError, BATCH_HEADER_LEN, BATCH_TARGET, BATCH_TRAILER_LEN, HEADER_LEN};
use tape_journal::format::{align_frame, u32_at, u64_at, FrameHeader, FRAME_HEADER_LEN};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Header;
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

    proptest! {
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
