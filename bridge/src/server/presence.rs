//! The status listing: what each subscriber's thread publishes about it,
//! and the server's status built from it.

use super::{lock, Shared};
use crate::status::{JournalStatus, ServerStatus, SubscriberStatus};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tape_journal::{Cursor, CursorOptions, Start};

/// What a subscriber's thread publishes about it, for the status.
#[derive(Debug)]
pub(super) struct Presence {
    pub(super) id: u64,
    pub(super) account: String,
    pub(super) addr: SocketAddr,
    pub(super) since_ns: i64,
    pub(super) journals: Vec<JournalPresence>,
}

#[derive(Debug)]
pub(super) struct JournalPresence {
    pub(super) name: String,
    pub(super) from_seq: u64,
    /// Last sequence number sent (0: none yet).
    pub(super) seq_sent: AtomicU64,
    /// Last sequence number the replica reported (0: none).
    pub(super) seq_acked: AtomicU64,
    /// Frames sent since it subscribed.
    pub(super) frames: AtomicU64,
    /// Payload bytes of those frames.
    pub(super) bytes: AtomicU64,
}
impl Shared {
    pub(super) fn status(&self) -> ServerStatus {
        let subs: Vec<Arc<Presence>> = lock(&self.subscribers).clone();
        let mut lasts: Vec<(String, u64)> = Vec::new();
        let mut last_seq = |name: &str| -> u64 {
            if let Some((_, s)) = lasts.iter().find(|(n, _)| n == name) {
                return *s;
            }
            let s = source_last_seq(&self.dir, name);
            lasts.push((name.to_string(), s));
            s
        };
        let subscribers = subs
            .iter()
            .map(|p| SubscriberStatus {
                id: p.id,
                account: p.account.clone(),
                address: p.addr.to_string(),
                since_ns: p.since_ns,
                journals: p
                    .journals
                    .iter()
                    .map(|j| {
                        let last = last_seq(&j.name);
                        let sent = j.seq_sent.load(Ordering::Relaxed);
                        JournalStatus {
                            journal: j.name.clone(),
                            from_seq: j.from_seq,
                            seq_sent: sent,
                            seq_acked: j.seq_acked.load(Ordering::Relaxed),
                            last_seq: last,
                            lag: last.saturating_sub(sent),
                            frames: j.frames.load(Ordering::Relaxed),
                            bytes: j.bytes.load(Ordering::Relaxed),
                        }
                    })
                    .collect(),
            })
            .collect();
        ServerStatus {
            pid: std::process::id(),
            listen: self.listen.to_string(),
            root: self.opts.root.display().to_string(),
            journals: if self.opts.journals.is_empty() {
                None
            } else {
                Some(self.opts.journals.clone())
            },
            since_ns: self.started_ns,
            subscribers,
        }
    }
}

/// The last sequence number of a source journal (0: none, or no journal).
pub(super) fn source_last_seq(dir: &Path, name: &str) -> u64 {
    Cursor::open(dir, name, Start::End, CursorOptions::default())
        .ok()
        .and_then(|c| c.next_seq())
        .map_or(0, |n| n - 1)
}
