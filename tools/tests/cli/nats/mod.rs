//! Integration tests of `tape nats`: two "machines" on one box (two roots,
//! each with its own `tape service`), a real `nats-server -js` (Debian's
//! 2.9.10 here; `./test.sh` installs it when missing) or a cluster of
//! three, and `tape nats export` / `tape nats import` as real processes.
//!
//! No test asserts a duration: every wait has a watchdog deadline after
//! which the test fails as hung.

#[allow(dead_code)]
pub mod engine;

mod cluster;
mod dest;
mod files;
mod kills;
mod refuse;
mod remote;
pub mod remote_roles;
mod replicate;
mod vars;
