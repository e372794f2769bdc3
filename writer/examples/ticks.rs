//! Writes COUNT ticks (default 1000) to journal `md` of the root
//! (`$TAPE_ROOT`, else `/tmp/trading`), one frame each, and says where the
//! last one went. A `tape service` must run on that root.
//!
//! ```text
//! tape service &
//! cargo run -p tape-writer --example ticks -- 1000
//! tape tail md            # tick 1 ... tick 1000
//! ```

use std::error::Error;
use tape_writer::Writer;

fn main() -> Result<(), Box<dyn Error>> {
    let count: u64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {n:?}"))?,
        None => 1000,
    };
    let root = tape_journal::resolve_root(None);
    // The folder names the root: the writer registers with its service.
    let mut w = Writer::create(tape_journal::journal_dir(&root), "md")?;
    let mut last = 0;
    for i in 1..=count {
        // Message type 1; the frame is stamped and published at once.
        last = w.write(1, format!("tick {i}").as_bytes())?;
    }
    println!(
        "wrote {count} frames to md in {}, last seq {last}",
        root.display()
    );
    Ok(())
}
