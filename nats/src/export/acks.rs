//! The acknowledgements of the pipelined publishes: one subscription for
//! all of them, and what the export's loop reads of them.

use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What one journal's export shares with its ack task and the status
/// responder.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) round: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) failed: AtomicBool,
    pub(super) why: Mutex<String>,
    /// Frames published (for the status).
    pub(super) frames: AtomicU64,
    /// Their payload bytes.
    pub(super) bytes: AtomicU64,
    /// Sessions started (each reads the stream's end).
    pub(super) sessions: AtomicU64,
}

impl Shared {
    pub(super) fn fail(&self, why: String) {
        if !self.failed.swap(true, Ordering::AcqRel) {
            *tape_journal::sync::lock(&self.why) = why;
        }
    }
}

/// Reads the acks of one journal's publishes: reply subject
/// `<inbox>.<round>.<seq>`; a JSON `{"stream":..,"seq":N}` or an error.
pub(super) async fn acks(mut sub: async_nats::Subscriber, shared: Arc<Shared>) {
    #[derive(serde::Deserialize)]
    struct Ack {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    while let Some(m) = sub.next().await {
        let mut t = m.subject.rsplit('.');
        let (Some(seq), Some(round)) = (t.next(), t.next()) else {
            continue;
        };
        let (Ok(seq), Ok(round)) = (seq.parse::<u64>(), round.parse::<u64>()) else {
            continue;
        };
        if round != shared.round.load(Ordering::Acquire) {
            continue;
        }
        if let Some(st) = m.status {
            shared.fail(format!("publishing seq {seq} got status {st}"));
            continue;
        }
        match serde_json::from_slice::<Ack>(&m.payload) {
            Ok(Ack { error: Some(e), .. }) => {
                let d = e["description"].as_str().unwrap_or("an error");
                shared.fail(format!("the server refused seq {seq}: {d}"));
            }
            Ok(a) if a.seq == seq => {
                shared.acked.fetch_max(seq, Ordering::AcqRel);
            }
            Ok(a) => shared.fail(format!(
                "the server stored frame {seq} at stream seq {}",
                a.seq
            )),
            Err(e) => shared.fail(format!("the ack of seq {seq} is not JSON ({e})")),
        }
    }
}
