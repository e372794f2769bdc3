//! Integration tests of the `tape` command line: each test starts its own
//! `tape service` (when it needs one) on its own temporary root, drives the
//! real `tape` binary, and kills every child it started, even when it fails.
//!
//! No test asserts a duration: every wait has a watchdog deadline after
//! which the test fails as hung.

mod bridge;
mod common;
mod nats;

mod abuse;
mod campaign;
mod child;
mod contrib;
mod damage;
mod follow;
mod format_rules;
mod full_disk;
mod help;
mod lock_holder;
mod ls_verify;
mod no_service;
mod one_writer;
mod other_user;
mod page_sizes;
mod pipe;
mod prune;
mod readonly;
mod replay;
mod restart;
mod resume;
mod roles;
mod rpc;
mod rpc_roles;
mod sync;
mod top_metrics;
mod write_tail;
