//! Integration tests of `tape bridge`: two "machines" on one box (two
//! roots, each with its own `tape service`), `tape bridge serve` on one and
//! `tape bridge pull` on the other as real processes, over loopback.
//!
//! No test asserts a duration: every wait has a watchdog deadline after
//! which the test fails as hung.

pub mod setup;

mod fuzz;
mod help;
mod kills;
mod proxy;
mod refuse;
mod replicate;
mod stall;
