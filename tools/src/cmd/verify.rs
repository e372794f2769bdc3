//! `tape verify JOURNAL`: check every page and frame.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Verifies journal `name` in `dir`, printing a summary to `out`; an error
/// (naming file and offset) when it is damaged.
pub fn run(dir: &Path, name: &str, out: &mut dyn Write) -> Result<()> {
    let r = tape_journal::verify(dir, name).with_context(|| format!("verify {name} failed"))?;
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(
        out,
        "{name}: ok: {} pages, {} frames (seq {}..={}), {} payload bytes",
        r.pages, r.frames, r.first_seq, r.last_seq, r.payload_bytes
    )?;
    Ok(())
}
