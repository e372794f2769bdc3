//! Loom models of the journal's two lock-free protocols, run on the real
//! code: with `--cfg loom` the crate builds its seqlock
//! (`clock::seqlock`) and its page slots (`exchange::Slot`) on loom's
//! atomics (`src/sync.rs`), and `tape_journal::loom_api` hands them to
//! these models. Loom runs each model under every interleaving (up to a
//! preemption bound) and every value a Relaxed load may return, and fails
//! on a data race on a `loom::cell::UnsafeCell`.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p tape-journal --test loom --release
//! ```
//!
//! (`.ci/loom` runs it with its own target folder.) `LOOM_MAX_PREEMPTIONS`
//! overrides the bound of 4 used here.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use tape_journal::loom_api::{Params, Slot, Values};

/// Runs `f` under loom, with a preemption bound of 4 unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    b.check(f);
}

// ---- The clock's seqlock ----

fn values(k: u64) -> Values {
    // Every field different in every version, so a mixed read shows.
    Values {
        magic: 10 + k,
        tsc0: 20 + k,
        ns0: 30 + k as i64,
        mult: 40 + k,
        stale: 50 + k,
    }
}

/// A reader never gets a mix of two writes: what `read` returns is all of
/// one version (the zeros of a new file, or one of the keeper's writes).
#[test]
fn seqlock_reads_one_version() {
    model(|| {
        let p = Arc::new(Params::zeroed());
        let keeper = {
            let p = Arc::clone(&p);
            loom::thread::spawn(move || {
                p.write(values(1));
                p.write(values(2));
            })
        };
        let ok = [Values::default(), values(1), values(2)];
        if let Some((v, ())) = p.read(|| ()) {
            assert!(ok.contains(&v), "torn read: {v:?}");
        }
        keeper.join().unwrap();
        // Once the keeper is done (joined), the last write reads back.
        assert_eq!(p.read(|| ()).map(|(v, ())| v), Some(values(2)));
    });
}

// ---- The cursor's page slots ----

/// Stands for a mapped page. Its bytes are written by the thread that maps
/// it, read by the cursor that gets it and "unmapped" (written) by whoever
/// drops it, all through a loom `UnsafeCell`, so loom fails the model if
/// any two of these are not ordered by the slots' Release/Acquire. Drops
/// are counted: every page must be unmapped exactly once.
struct Page {
    no: u64,
    bytes: UnsafeCell<u64>,
    drops: Arc<AtomicUsize>,
}

impl Page {
    fn map(no: u64, drops: &Arc<AtomicUsize>) -> Box<Page> {
        let page = Box::new(Page {
            no,
            bytes: UnsafeCell::new(0),
            drops: Arc::clone(drops),
        });
        // SAFETY: the page is not shared yet.
        page.bytes.with_mut(|b| unsafe { *b = no * 100 });
        page
    }

    /// What the cursor does with its page: reads it.
    fn read(&self) {
        // SAFETY: loom checks that no write to the cell races this read.
        let v = self.bytes.with(|b| unsafe { *b });
        assert_eq!(
            v,
            self.no * 100,
            "page {} read before it was mapped",
            self.no
        );
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: loom checks that no access to the cell races this one.
        self.bytes.with_mut(|b| unsafe { *b = 0 });
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exchange's slots, as `PageExchange` has them (fewer retired slots,
/// so that "all full" is reached).
struct Exchange {
    ready: Slot<Page>,
    retired: [Slot<Page>; 2],
}

fn exchange() -> Arc<Exchange> {
    Arc::new(Exchange {
        ready: Slot::new(),
        retired: [Slot::new(), Slot::new()],
    })
}

/// The cursor's side of a page switch (`Cursor::turn_page` with
/// `PageExchange::take_ready` and `give_back`): takes the next page if
/// ready, reads it and hands its old page back (unmapping it itself when
/// every retired slot is full). Returns the page it reads now.
fn cursor_switch(ex: &Exchange, old: Box<Page>, next: u64) -> Box<Page> {
    // It read its old page up to the switch.
    old.read();
    match ex.ready.take() {
        Some(page) if page.no == next => {
            page.read();
            drop(Slot::put_any(&ex.retired, old));
            page
        }
        // Mapped for a page the cursor went past: back to the helper.
        Some(stale) => {
            drop(Slot::put_any(&ex.retired, stale));
            old
        }
        None => old,
    }
}

/// The helper's look (`PageExchange::serve_paced`): unmaps retired pages,
/// drops a stale offer, offers page `next`.
fn helper_look(ex: &Exchange, next: u64, drops: &Arc<AtomicUsize>) {
    for slot in &ex.retired {
        drop(slot.take());
    }
    drop(ex.ready.take());
    // The slot was just emptied and only the helper puts in it.
    assert!(ex.ready.put(Page::map(next, drops)).is_ok());
}

/// The helper maps page 2 and offers it while the cursor switches to it;
/// the helper then looks again (taking back what the cursor retired, or
/// the offer the cursor did not take). The cursor reads only a page mapped
/// before it got it, no page is unmapped while the cursor still reads it,
/// and every page is unmapped exactly once.
#[test]
fn page_hand_over() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let ex = exchange();
        let helper = {
            let (ex, drops) = (Arc::clone(&ex), Arc::clone(&drops));
            loom::thread::spawn(move || {
                helper_look(&ex, 2, &drops);
                for slot in &ex.retired {
                    drop(slot.take());
                }
            })
        };
        let page = Page::map(1, &drops);
        let page = cursor_switch(&ex, page, 2);
        page.read();
        helper.join().unwrap();
        let mapped = 2;
        drop(page);
        drop(ex);
        assert_eq!(drops.load(Ordering::Relaxed), mapped);
    });
}

/// The helper discards a stale offer (for page 2, which the cursor went
/// past) while the cursor, now wanting page 3, takes the slot too: exactly
/// one of them gets it, and the cursor, finding it stale, hands it back
/// through a retired slot.
#[test]
fn stale_offer_goes_to_one_taker() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let ex = exchange();
        let helper = {
            let (ex, drops) = (Arc::clone(&ex), Arc::clone(&drops));
            loom::thread::spawn(move || {
                assert!(ex.ready.put(Page::map(2, &drops)).is_ok());
                drop(ex.ready.take());
            })
        };
        let page = Page::map(1, &drops);
        let page = cursor_switch(&ex, page, 3);
        assert_eq!(page.no, 1);
        page.read();
        helper.join().unwrap();
        drop(page);
        drop(ex);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    });
}

/// With every retired slot full the cursor unmaps its old page itself;
/// racing a helper that drains the slots, no page is lost or unmapped
/// twice.
#[test]
fn retired_slots_full() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let ex = exchange();
        for no in [10, 11] {
            assert!(ex.retired[no as usize - 10]
                .put(Page::map(no, &drops))
                .is_ok());
        }
        let helper = {
            let ex = Arc::clone(&ex);
            loom::thread::spawn(move || {
                for slot in &ex.retired {
                    drop(slot.take());
                }
            })
        };
        let old = Page::map(1, &drops);
        old.read();
        drop(Slot::put_any(&ex.retired, old));
        helper.join().unwrap();
        drop(ex);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

// ---- The doorbell's handshake (journal/FORMAT.md, "The doorbell") ----

/// The Dekker pair of the doorbell, as the protocol (the bell's file is a
/// mapping, which loom's atomics cannot live in, so this models the steps
/// rather than driving bell.rs). The writer's `fence` stands for the
/// barrier the reader's `membarrier(GLOBAL_EXPEDITED)` runs on the
/// writer's CPU (and is the fence a writer without membarrier runs). The
/// reader sleeps on the ring value it read when its second look finds no
/// frame; a lost wake-up is that value still in the ring once the writer
/// is done (nobody will ring again).
#[test]
fn doorbell_loses_no_wake_up() {
    use loom::sync::atomic::{fence, AtomicU32};
    model(|| {
        let len = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let ring = Arc::new(AtomicU32::new(0));
        let (l2, s2, r2) = (Arc::clone(&len), Arc::clone(&sleepers), Arc::clone(&ring));
        let writer = loom::thread::spawn(move || {
            l2.store(1, Ordering::Release);
            fence(Ordering::SeqCst);
            if s2.load(Ordering::Relaxed) != 0 && s2.swap(0, Ordering::AcqRel) != 0 {
                r2.fetch_add(1, Ordering::Release);
            }
        });
        sleepers.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let v = ring.load(Ordering::Acquire);
        let seen = len.load(Ordering::Acquire) != 0;
        writer.join().unwrap();
        if !seen {
            assert_ne!(ring.load(Ordering::Relaxed), v, "a lost wake-up");
        }
    });
}
