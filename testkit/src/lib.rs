//! tape-testkit: what tape's integration tests share (never published).
//!
//! - [`Deadline`], [`wait_until`], [`eventually`], [`Watchdog`]: every wait
//!   in a test is bounded, and a hang fails with a message instead of
//!   stalling CI. The bounds are generous on purpose: the machine is small
//!   and shared, and they only catch hangs (speed is shown by benchmarks).
//! - [`Kid`], [`harden`]: child processes that die with the test and are
//!   killed and reaped when dropped.
//! - [`role`], [`role_command`]: re-running the current test binary as a
//!   child playing a role (a writer to SIGKILL, a second writer, ...).
//! - [`Root`], [`RunningService`], [`tape_bin`]: a temporary root, the real
//!   `tape` binary, and a real `tape service` on the root.
//! - [`alloc`]: a global allocator counting a thread's live bytes, to bound
//!   what a parser allocates on hostile input.
#![warn(missing_docs)]

pub mod alloc;
mod proc;
mod root;
mod wait;

pub use proc::{harden, role, role_command, Kid};
pub use root::{example, example_bin, stdout_of, tape, tape_bin, Root, RunningService};
pub use wait::{eventually, wait_until, Deadline, Watchdog, WATCHDOG};
