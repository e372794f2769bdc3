//! The messages of the examples, shared by the market-data writer
//! (`typed-md`) and the strategy (`typed-strategy`) as a desk's own
//! messages crate would be, and read from Python by
//! `python/examples/typed_strategy.py`.
//!
//! ```text
//! tape service &
//! cargo run -p tape-examples --bin typed-md -- md.cme CME 1000 &
//! cargo run -p tape-examples --bin typed-md -- md.eurex EUREX 1000 &
//! cargo run -p tape-examples --bin typed-strategy -- md.cme md.eurex
//! python3 python/examples/typed_strategy.py md.cme md.eurex
//! ```
//!
//! - [`Tick`]: a zero-copy plain struct (64 bytes), filled in place in the
//!   page by the writer and read in place by the strategy.
//! - [`Session`]: a serde enum (bincode), sent when a feed opens and
//!   closes.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use tape_typed::{PlainMessage, SerdeMessage};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// One trade or quote update: 64 bytes, prices in ticks of 0.01.
///
/// The same struct from Python (`python/examples/typed_strategy.py`):
///
/// ```text
/// Tick = tape.Struct("<8sqqqqqIIQ",
///     "sym px qty bid ask exch_ns venue flags level", type=1, name="Tick")
/// ```
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Tick {
    /// Symbol, ASCII, zero-padded.
    pub sym: [u8; 8],
    /// Last trade price, in 0.01.
    pub px: i64,
    /// Last trade quantity.
    pub qty: i64,
    /// Best bid, in 0.01.
    pub bid: i64,
    /// Best ask, in 0.01.
    pub ask: i64,
    /// Exchange time, ns since the epoch.
    pub exch_ns: i64,
    /// Venue id ([`venue_id`]).
    pub venue: u32,
    /// Bit 0: a trade (else a quote only).
    pub flags: u32,
    /// The feed's own count of updates, 1, 2, 3, ...
    pub level: u64,
}

impl PlainMessage for Tick {
    const TYPE: u32 = 1;
}

const _: () = assert!(std::mem::size_of::<Tick>() == 64);

/// A feed's session state (bincode through serde).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Session {
    /// The feed opened: its venue and the symbols it sends.
    Open {
        /// Venue name.
        venue: String,
        /// Symbols.
        symbols: Vec<String>,
    },
    /// The feed closed after `ticks` ticks; `reason` when not a normal end.
    Closed {
        /// Ticks sent.
        ticks: u64,
        /// Why, when not a normal end.
        reason: Option<String>,
    },
}

impl SerdeMessage for Session {
    const TYPE: u32 = 2;
}

/// A venue's id: a small stable number from its name.
pub fn venue_id(venue: &str) -> u32 {
    venue
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32))
        % 1000
}

/// The `i`-th tick (from 1) a feed of `venue` sends: a function of both, so
/// a reader can check every field.
pub fn tick(venue: &str, i: u64) -> Tick {
    let id = venue_id(venue);
    let mut sym = [0u8; 8];
    sym[..4].copy_from_slice(if i % 2 == 0 { b"ESZ6" } else { b"NQZ6" });
    let px = 500_000 + (i % 97) as i64 * 25 + id as i64;
    Tick {
        sym,
        px,
        qty: (i % 9) as i64 + 1,
        bid: px - 25,
        ask: px + 25,
        exch_ns: 1_700_000_000_000_000_000 + i as i64 * 1000,
        venue: id,
        flags: (i % 3 == 0) as u32,
        level: i,
    }
}

/// The symbol of a tick, without its zero padding.
pub fn symbol(t: &Tick) -> &str {
    let end = t.sym.iter().position(|&b| b == 0).unwrap_or(t.sym.len());
    std::str::from_utf8(&t.sym[..end]).unwrap_or("?")
}
