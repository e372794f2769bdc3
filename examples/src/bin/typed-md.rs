//! A typed market-data writer: `typed-md JOURNAL VENUE [COUNT]` writes a
//! [`Session::Open`], COUNT (default 1000) [`Tick`]s filled in place in
//! the journal's page, and a [`Session::Closed`] to JOURNAL of the root
//! (`$TAPE_ROOT`, else `/tmp/trading`), where a `tape service` must run.
//! The ticks are [`tape_examples::tick`]`(VENUE, 1..=COUNT)`.

use std::error::Error;
use tape_examples::{tick, Session, Tick};
use tape_writer::Writer;

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (journal, venue) = match (args.first(), args.get(1)) {
        (Some(j), Some(v)) => (j.as_str(), v.as_str()),
        _ => {
            return Err(
                "usage: typed-md JOURNAL VENUE [COUNT], e.g. `typed-md md.cme CME 1000`".into(),
            )
        }
    };
    let count: u64 = match args.get(2) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {n:?}"))?,
        None => 1000,
    };
    let root = tape_journal::resolve_root(None);
    let mut w = Writer::create(tape_journal::journal_dir(&root), journal)?;
    w.write_serde(&Session::Open {
        venue: venue.to_string(),
        symbols: vec!["ESZ6".into(), "NQZ6".into()],
    })?;
    for i in 1..=count {
        // Zero-copy: the struct is built in the page itself, then published.
        let mut t = w.claim_plain::<Tick>()?;
        *t = tick(venue, i);
        t.commit();
    }
    let last = w.write_serde(&Session::Closed {
        ticks: count,
        reason: None,
    })?;
    println!("{journal}: wrote {count} ticks from {venue}, last seq {last}");
    Ok(())
}
