//! tape-tools: the `tape` command line and `journal-bench`.
//!
//! Each `tape` subcommand is a function in [`cmd`]; `src/bin/tape.rs` only
//! parses arguments (clap) and calls it. Errors go to standard error in one
//! sentence with a non-zero exit; a closed pipe (`tape tail md | head`) ends
//! the command quietly.

pub mod bench;
pub mod cmd;
pub mod timefmt;

use std::io;

/// Whether an error is a closed pipe on standard output (not an error for a
/// command whose reader went away).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The one-line message for an error: its chain joined with ": ", leaving
/// out a cause whose text the message already contains.
pub fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
