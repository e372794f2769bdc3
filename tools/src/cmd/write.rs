//! `tape write JOURNAL`: one frame per line of standard input.

use anyhow::Result;
use std::io::BufRead;
use std::path::Path;
use tape_writer::Writer;

/// Appends each line of `input` (without its newline) as one frame of
/// `msg_type`, published as soon as it is read. Returns the frames written.
pub fn run(
    root: &Path,
    journal: &str,
    msg_type: u32,
    page_size: Option<u64>,
    input: &mut dyn BufRead,
) -> Result<u64> {
    let mut b = Writer::builder(journal).root(root);
    if let Some(p) = page_size {
        b = b.page_size(p);
    }
    let mut w = b.create()?;
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
        w.write(msg_type, &line)?;
        n += 1;
    }
    Ok(n)
}
