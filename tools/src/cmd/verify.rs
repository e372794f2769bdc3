//! `tape verify JOURNAL`: check every page and frame.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Verifies journal `name` in `dir`, printing a summary to `out`; an error
/// (naming file and offset) when it is damaged.
pub fn run(dir: &Path, name: &str, out: &mut dyn Write) -> Result<()> {
    let r = tape_journal::verify(dir, name).with_context(|| match first_version(dir, name) {
        Some(v) => format!("verify {name} (format version {v}, as its first page says) failed"),
        None => format!("verify {name} failed"),
    })?;
    for note in &r.notes {
        writeln!(out, "note: {note}")?;
    }
    writeln!(
        out,
        "{name}: ok: {}, {} pages{}, {} frames (seq {}..={}), {} payload bytes",
        r.geometry.map_or_else(String::new, |g| version_text(&g)),
        r.pages,
        if r.skipped_pages > 0 {
            format!(
                " ({} skipped as too small for the frame after them)",
                r.skipped_pages
            )
        } else {
            String::new()
        },
        r.frames,
        r.first_seq,
        r.last_seq,
        r.payload_bytes
    )?;
    Ok(())
}

/// The `version` field of the journal's first page file, read as it is
/// (the file may be damaged or of a version this tape does not read).
fn first_version(dir: &Path, name: &str) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let first = *tape_journal::list_pages(dir, name).ok()?.first()?;
    let file = std::fs::File::open(tape_journal::files::page_path(dir, name, first)).ok()?;
    let mut b = [0u8; tape_journal::format::PAGE_HEADER_LEN];
    file.read_exact_at(&mut b, 0).ok()?;
    tape_journal::format::PageHeader::parse(&b).map(|h| h.version)
}

/// Which format version a journal's files are, in words.
pub fn version_text(g: &tape_journal::format::Geometry) -> String {
    let max = crate::cmd::ls::human(g.max_page_size);
    if g.version == tape_journal::format::VERSION_1 {
        format!(
            "format version 1 (every page {max}; written before pages grew, it is read and appended to as version 1)"
        )
    } else {
        format!(
            "format version {} (pages grow from {} to {max})",
            g.version,
            crate::cmd::ls::human(g.first_page_size())
        )
    }
}
