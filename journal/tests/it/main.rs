//! Integration tests of tape-journal: one test binary (as ripgrep does), each
//! test in its own temporary folder. Tests that are about two processes spawn
//! real processes by re-executing this binary with `--exact <test>` and the
//! role to play in the `TAPE_IT_ROLE` environment variable (see
//! [`common::spawn_role`]). No test asserts on timing: a `Deadline`
//! fails a test that hangs instead.

/// The hostile-input tests bound what parsing allocates.
#[global_allocator]
static ALLOC: tape_testkit::alloc::Counting = tape_testkit::alloc::Counting;

mod bell;
mod common;
mod damage;
mod exchange;
mod hostile;
mod positions;
mod processes;
mod props;
mod prune;
mod recovery;
mod rules;
mod sizes;
