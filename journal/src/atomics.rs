//! The atomics of the two lock-free protocols that the loom models in
//! `tests/loom.rs` check: the clock's seqlock ([`crate::clock`]) and the
//! cursor's page slots (`exchange.rs`). Built normally they are std's; with
//! `RUSTFLAGS="--cfg loom"` they are loom's, so the models run the real
//! code with its real orderings (`.ci/loom` runs them).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicI64, AtomicPtr, AtomicU64};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicI64, AtomicPtr, AtomicU64};
