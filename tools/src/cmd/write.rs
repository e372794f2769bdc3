//! `tape write JOURNAL`: one frame per line of standard input.

use anyhow::{bail, Result};
use std::io::BufRead;
use std::path::Path;
use tape_writer::{SyncPolicy, Writer};

/// How `tape write` writes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Message type of the frames.
    pub msg_type: u32,
    /// Largest page size when the journal is created.
    pub page_size: Option<u64>,
    /// When frames are made durable on disk.
    pub sync: SyncPolicy,
}

/// Appends each line of `input` (without its newline) as one frame,
/// published as soon as it is read. Returns the frames written.
///
/// A sync that fails is reported on stderr when it is seen (after the line
/// that follows it) and makes the command fail at the end of input, after
/// every line was written: the frames are in the journal, their being on
/// disk is what is in doubt.
pub fn run(root: &Path, journal: &str, opts: &Options, input: &mut dyn BufRead) -> Result<u64> {
    let mut b = Writer::builder(journal).root(root).sync(opts.sync);
    if let Some(p) = opts.page_size {
        b = b.page_size(p);
    }
    let mut w = b.create()?;
    let stats = w.sync_stats().clone();
    let mut seen = 0;
    let report = |seen: &mut u64| {
        if let Some(e) = stats.new_failure(seen) {
            eprintln!("tape write: {e}: frames written may not be on disk");
        }
    };
    let mut line = Vec::with_capacity(4096);
    let mut n = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        w.write(opts.msg_type, &line)?;
        n += 1;
        report(&mut seen);
    }
    // The close syncs the last page (page policy) or makes a last sync
    // (interval policy).
    drop(w);
    report(&mut seen);
    if stats.failures() > 0 {
        bail!(
            "{} sync(s) of journal {journal} failed (see above): the {n} frames are in the journal, but not all may be on disk; check the disk",
            stats.failures()
        );
    }
    Ok(n)
}
