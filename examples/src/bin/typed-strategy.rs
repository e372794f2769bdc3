//! A typed strategy: `typed-strategy JOURNAL...` reads the journals of the
//! root (`$TAPE_ROOT`, else `/tmp/trading`) merged in write-time order
//! from their first frame, dispatching on the message type: each
//! [`Tick`] viewed in place (`&Tick`, no copy), each [`Session`] decoded.
//! It waits (sleeping between frames) until every journal has sent
//! `Session::Closed`, then prints one line a journal:
//!
//! ```text
//! md.cme venue=CME ticks=1000 trades=333 volume=4996 vwap=5012.34 last=ESZ6@5010.50 checked=1000
//! ```
//!
//! `checked` counts the ticks equal to what `typed-md` wrote
//! ([`tape_examples::tick`]); `in_order=false` would say a journal's write
//! times went back. It registers with the root's service when one runs.

use std::error::Error;
use std::time::Duration;
use tape_examples::{symbol, tick, Session, Tick};
use tape_reader::{Dispatch, Reader, ReaderFrame, ServiceMode, Start};

#[derive(Default, Clone)]
struct Feed {
    venue: Option<String>,
    ticks: u64,
    trades: u64,
    volume: i64,
    notional: i128,
    last: Option<(String, i64)>,
    checked: u64,
    closed: Option<u64>,
    last_time: i64,
    in_order: bool,
}

struct Strategy {
    feeds: Vec<Feed>,
}

impl Strategy {
    fn on_tick(&mut self, f: &ReaderFrame<'_>, t: &Tick) {
        self.step(f);
        let feed = &mut self.feeds[f.journal];
        feed.ticks += 1;
        if t.flags & 1 != 0 {
            feed.trades += 1;
            feed.volume += t.qty;
            feed.notional += t.px as i128 * t.qty as i128;
        }
        feed.last = Some((symbol(t).to_string(), t.px));
        if let Some(v) = &feed.venue {
            if *t == tick(v, feed.ticks) {
                feed.checked += 1;
            }
        }
    }

    fn on_session(&mut self, f: &ReaderFrame<'_>, s: Session) {
        self.step(f);
        let feed = &mut self.feeds[f.journal];
        match s {
            Session::Open { venue, .. } => feed.venue = Some(venue),
            Session::Closed { ticks, .. } => feed.closed = Some(ticks),
        }
    }

    /// Within a journal, write times never go back. (Across journals a
    /// live merge is in order among the frames published so far: a frame
    /// stamped earlier but published later comes when it is published.)
    fn step(&mut self, f: &ReaderFrame<'_>) {
        let feed = &mut self.feeds[f.journal];
        feed.in_order &= f.time_ns() >= feed.last_time;
        feed.last_time = f.time_ns();
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let journals: Vec<String> = std::env::args().skip(1).collect();
    if journals.is_empty() {
        return Err("name one or more journals, e.g. `typed-strategy md.cme md.eurex`".into());
    }
    let root = tape_journal::resolve_root(None);
    let dir = tape_journal::journal_dir(&root);
    let mut r = Reader::builder("typed-strategy")
        .root(&root)
        .service(ServiceMode::IfRunning)
        .start(Start::First)
        .create()?;
    for j in &journals {
        r.add_journal(&dir, j)?;
    }
    let mut d = Dispatch::new()
        .on(|s: &mut Strategy, f, t: &Tick| s.on_tick(f, t))
        .on_serde(|s: &mut Strategy, f, m: Session| s.on_session(f, m))
        .otherwise(|_, f| {
            eprintln!(
                "{} seq {}: type {} skipped",
                f.journal_name,
                f.seq(),
                f.msg_type()
            )
        });
    let feed = Feed {
        in_order: true,
        ..Feed::default()
    };
    let mut s = Strategy {
        feeds: vec![feed; journals.len()],
    };
    while s.feeds.iter().any(|f| f.closed.is_none()) {
        if !r.dispatch(&mut d, &mut s)? {
            // Nothing new in any journal: sleep until a writer publishes.
            r.wait(Duration::from_millis(100));
        }
    }
    for (name, f) in journals.iter().zip(&s.feeds) {
        let vwap = if f.volume > 0 {
            f.notional as f64 / f.volume as f64 / 100.0
        } else {
            0.0
        };
        let (sym, px) = f.last.clone().unwrap_or_default();
        println!(
            "{name} venue={} ticks={} trades={} volume={} vwap={vwap:.2} last={sym}@{:.2} checked={} closed_after={}{}",
            f.venue.as_deref().unwrap_or("?"),
            f.ticks,
            f.trades,
            f.volume,
            px as f64 / 100.0,
            f.checked,
            f.closed.unwrap_or(0),
            if f.in_order { "" } else { " in_order=false" },
        );
    }
    Ok(())
}
