//! Crash campaigns: a part of the system is killed with SIGKILL again and
//! again, at random moments, while frames flow; afterwards every reader
//! must have seen every frame exactly once, in order, with the content its
//! sequence number gives it, and `tape verify` must pass.
//!
//! Each campaign is a module with a short form in the normal test run and
//! a long form marked `#[ignore]` (`cargo test -p tape-tools --test cli
//! campaign -- --ignored --nocapture`). Each prints one summary line,
//! `campaign NAME: runs R, frames F, faults injected K, lost 0, ...`.
//!
//! | module | what is killed |
//! |---|---|
//! | [`writer_kill`] | the writer, 100 times over one journal, a new one taking over at once |
//! | [`service_kill`] | the service, 20 times, while a writer and two readers run and an intruder tries to write |
//! | [`bridge_kill`] | `tape bridge serve` and `tape bridge pull`, 20 times in all, at random, while a writer streams frames; the replica is then compared with the source frame by frame |
//! | [`reader_kill`] | a resuming reader, `tape tail --follow --resume NAME`, 20 times while a writer streams; here a frame may be printed twice, only when the reader was killed between its line and its commit (at least once) |
//!
//! Each prints its seed on stderr; `TAPE_CAMPAIGN_SEED=N` repeats the
//! same choices of what to kill and when (the processes' own timing still
//! varies from run to run).

mod bridge_kill;
mod reader_kill;
mod service_kill;
mod writer_kill;

use crate::common::{Deadline, Kid, Lines};
use std::io::Write;

/// The `ROLE` lines of a child, and its stdin when piped.
pub struct Talk {
    pub out: Lines,
    pub stdin: Option<std::process::ChildStdin>,
}

impl Talk {
    /// Takes the child's stdout (and stdin, if piped).
    pub fn of(kid: &mut Kid) -> Talk {
        Talk {
            out: Lines::of(kid.child.stdout.take().expect("stdout piped")),
            stdin: kid.child.stdin.take(),
        }
    }

    /// The next `ROLE` line, `None` once the child's output has ended.
    pub fn next(&self, d: &Deadline, what: &str) -> Option<String> {
        loop {
            let l = self.out.next(d, what)?;
            if let Some(m) = l.strip_prefix("ROLE ") {
                return Some(m.to_string());
            }
        }
    }

    /// The next `ROLE` line, which must come.
    pub fn expect(&self, what: &str) -> String {
        self.next(&Deadline::new(), what)
            .unwrap_or_else(|| panic!("the child ended before {what}"))
    }

    /// Sends one line.
    pub fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").expect("talk to the child");
        stdin.flush().expect("talk to the child");
    }
}

/// A small deterministic generator for the random moments (seeded from the
/// clock; the seed is printed so a failing run can be repeated).
pub struct Rng(u64);

impl Rng {
    pub fn new(campaign: &str) -> Rng {
        let seed = match std::env::var("TAPE_CAMPAIGN_SEED") {
            Ok(s) => s.parse().expect("TAPE_CAMPAIGN_SEED is a number"),
            Err(_) => tape_journal::clock::now_ns() as u64,
        };
        eprintln!("campaign {campaign}: seed {seed} (set TAPE_CAMPAIGN_SEED to repeat)");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = crate::roles::mix(self.0);
        self.0 % n
    }
}
