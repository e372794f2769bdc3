//! tape-tools: the `tape` command line and `journal-bench`.
//!
//! Each `tape` subcommand is a function in [`cmd`]; `src/bin/tape.rs` only
//! parses arguments (clap) and calls it. Errors go to standard error in one
//! sentence with a non-zero exit; a closed pipe (`tape tail md | head`) ends
//! the command quietly.

pub mod bench;
pub mod cmd;
pub mod timefmt;
pub mod watch;

use std::io;
use std::path::Path;
use std::process::ExitCode;

/// The exit of a binary whose work returned `result`: success, or the
/// error's one-line [`message`] on standard error after `prog: ` and a
/// failing exit code.
pub fn exit_with(prog: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The responder `name` of the demo responders (`tape-echo`,
/// `tape-ticker`), registered with the service of `root` (default
/// `$TAPE_ROOT`, else /tmp/trading), its journal made with `page_size`
/// when it is created.
pub fn demo_responder(
    root: Option<&Path>,
    name: &str,
    page_size: Option<u64>,
) -> anyhow::Result<tape_rpc::Responder> {
    let root = tape_journal::resolve_root(root);
    let mut b = tape_rpc::Responder::builder(name).root(&root);
    if let Some(p) = page_size {
        b = b.page_size(p);
    }
    Ok(b.create()?)
}

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
