//! Frames copied from another journal (a bridge's or a NATS import's
//! replica): their sequence numbers and write times are kept, so the
//! order is checked here before anything is written.

use super::{Appender, FrameMeta, ReplicaError, Stamp};
use crate::format::{
    checksum, FrameHeader, FRAME_HEADER_LEN, PAGE_FLAGS_OFFSET, PAGE_FLAG_FIRST_SEQ_ANY,
};
use std::sync::atomic::{AtomicU32, Ordering};

impl Appender {
    /// Appends a frame copied from another journal, keeping its sequence
    /// number and write time (the bridge's replicas). `seq` must be the
    /// next sequence number (any, for a journal with no frame yet) and
    /// `time_ns` no older than the last frame.
    pub fn write_replica(
        &mut self,
        seq: u64,
        time_ns: i64,
        meta: &FrameMeta,
        payload: &[u8],
    ) -> Result<(), ReplicaError> {
        self.check_order(seq, time_ns)?;
        let off = self.copy_in(payload)?;
        self.mark_first_seq(seq);
        self.publish(
            off,
            meta,
            payload.len(),
            checksum(payload),
            seq,
            Stamp::Given(time_ns),
        );
        Ok(())
    }

    /// Appends a frame copied whole from another journal (the bridge's
    /// replicas): every header field of `header` is kept (sequence number,
    /// write time, type, source, destination, correlation id, checksum and
    /// flags), so the stored frame is byte-identical to the original.
    /// `header.len` must be 48 + `payload.len()`, and `header.crc` the
    /// payload's CRC32C (else [`ReplicaError::Corrupt`], nothing written);
    /// sequence and time follow the rules of
    /// [`write_replica`](Self::write_replica).
    pub fn write_replica_frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
    ) -> Result<(), ReplicaError> {
        let seq = header.seq;
        if header.len as usize != FRAME_HEADER_LEN + payload.len()
            || checksum(payload) != header.crc
        {
            return Err(ReplicaError::Corrupt { seq });
        }
        self.check_order(seq, header.time_ns)?;
        let meta = FrameMeta {
            msg_type: header.msg_type,
            source: header.source,
            dest: header.dest,
            corr: header.corr,
        };
        let off = self.copy_in(payload)?;
        self.mark_first_seq(seq);
        self.publish_flags(
            off,
            &meta,
            payload.len(),
            header.crc,
            seq,
            Stamp::Given(header.time_ns),
            header.flags,
        );
        Ok(())
    }

    /// Before the journal's first frame is published with a sequence
    /// number above 1: page 1's header says that the journal starts there
    /// on purpose ([`PAGE_FLAG_FIRST_SEQ_ANY`]; FORMAT.md, "The first
    /// sequence number"). The frame's Release store of `len` publishes the
    /// flag with it.
    fn mark_first_seq(&mut self, seq: u64) {
        if self.has_frames || seq == 1 || self.page.page_no() != 1 {
            return;
        }
        // SAFETY: offset 44 of the mapping is the header's 4-aligned flags
        // word (the mapping is page-aligned), inside the page; only this
        // writer (holder of the journal lock) writes it, atomically here.
        let flags =
            unsafe { AtomicU32::from_ptr(self.page.base().add(PAGE_FLAGS_OFFSET).cast::<u32>()) };
        flags.fetch_or(PAGE_FLAG_FIRST_SEQ_ANY.to_le(), Ordering::Relaxed);
    }

    /// A replicated frame must carry the next sequence number (any but 0
    /// for a journal with no frame yet) and a time no older than the last
    /// frame's.
    fn check_order(&self, seq: u64, time_ns: i64) -> Result<(), ReplicaError> {
        if (self.has_frames && seq != self.next_seq) || seq == 0 || time_ns < self.last_time {
            return Err(ReplicaError::OutOfOrder {
                expected_seq: self.next_seq,
                seq,
                last_time_ns: self.last_time,
                time_ns,
            });
        }
        Ok(())
    }
}
