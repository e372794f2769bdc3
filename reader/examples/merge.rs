//! Prints every frame of the journals named on the command line, merged in
//! write-time order, from their first frame to their current end:
//! `journal seq time_ns payload` a line. Reads the root's journal folder
//! (`$TAPE_ROOT`, else `/tmp/trading`); registers with its service when one
//! runs, and reads regardless.
//!
//! ```text
//! cargo run -p tape-reader --example merge -- md ticks
//! ```

use std::error::Error;
use tape_reader::{Reader, ServiceMode, Start};

fn main() -> Result<(), Box<dyn Error>> {
    let journals: Vec<String> = std::env::args().skip(1).collect();
    if journals.is_empty() {
        return Err("name one or more journals, e.g. `merge md ticks`".into());
    }
    let root = tape_journal::resolve_root(None);
    let dir = tape_journal::journal_dir(&root);
    let mut r = Reader::builder("merge-example")
        .root(&root)
        .service(ServiceMode::IfRunning)
        // The frames already written (the default, End, waits for new ones).
        .start(Start::First)
        .create()?;
    for j in &journals {
        r.add_journal(&dir, j)?;
    }
    // `next` never blocks: `None` is the current end of every journal.
    while let Some(f) = r.next()? {
        println!(
            "{} {} {} {}",
            f.journal_name,
            f.seq(),
            f.time_ns(),
            String::from_utf8_lossy(f.payload())
        );
    }
    Ok(())
}
