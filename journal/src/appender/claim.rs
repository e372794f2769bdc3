//! Room claimed in the journal, filled in place, then committed.

use super::{Appender, FrameMeta, Stamp, WriteError};
use crate::format::{checksum, FRAME_HEADER_LEN};

impl Appender {
    /// Claims room for a payload of `len` bytes in the journal, to be
    /// filled in place and published with [`Claim::commit`]. Dropping the
    /// claim without committing publishes nothing.
    #[inline]
    pub fn claim(&mut self, len: usize) -> Result<Claim<'_>, WriteError> {
        let off = self.reserve(len)?;
        Ok(Claim {
            app: self,
            off,
            len,
            committed: false,
        })
    }
}

/// Room for one frame, claimed in the journal and filled in place.
#[derive(Debug)]
pub struct Claim<'a> {
    app: &'a mut Appender,
    off: usize,
    len: usize,
    committed: bool,
}

impl Claim<'_> {
    /// Publishes the frame with `msg_type` and the appender's source and
    /// destination; returns its sequence number.
    #[inline]
    pub fn commit(self, msg_type: u32) -> u64 {
        let meta = FrameMeta {
            msg_type,
            source: self.app.source,
            dest: self.app.dest,
            corr: 0,
        };
        self.commit_meta(&meta)
    }

    /// Publishes the frame with every header field chosen.
    #[inline]
    pub fn commit_meta(mut self, meta: &FrameMeta) -> u64 {
        let crc = checksum(&self);
        let seq = self.app.next_seq;
        self.app
            .publish(self.off, meta, self.len, crc, seq, Stamp::Now);
        self.committed = true;
        seq
    }
}

impl std::ops::Deref for Claim<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: reserve() gave room for len payload bytes after the header
        // inside the mapping; the claim borrows the appender mutably, so only
        // this claim touches these bytes.
        unsafe {
            std::slice::from_raw_parts(self.app.base.add(self.off + FRAME_HEADER_LEN), self.len)
        }
    }
}

impl std::ops::DerefMut for Claim<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; unpublished bytes that no reader reads.
        unsafe {
            std::slice::from_raw_parts_mut(self.app.base.add(self.off + FRAME_HEADER_LEN), self.len)
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // Leave zeros past the tail, as recovery would.
            self.fill(0);
        }
    }
}
