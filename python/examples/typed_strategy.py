#!/usr/bin/env python3
"""A typed strategy in Python: reads the ticks that the Rust market-data
writer ``typed-md`` (``examples/src/bin/typed-md.rs``) writes, a zero-copy
``Tick`` struct a frame, field by field through ``tape.Struct``, from the
journals named, merged in write-time order from their first frame to their
current end; prints one line a journal, as ``typed-strategy`` does::

    md.cme ticks=1000 trades=333 volume=4996 vwap=5012.34 last=ESZ6@5010.50 sessions=2

::

    tape service &
    cargo run -p tape-examples --bin typed-md -- md.cme CME 1000
    cargo run -p tape-examples --bin typed-md -- md.eurex EUREX 1000
    python3 python/examples/typed_strategy.py md.cme md.eurex

The ``Session`` frames (type 2) are bincode through serde, which the
standard library does not read: they are counted, not decoded.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tape  # noqa: E402

# The Rust struct (examples/src/lib.rs), field by field:
#   #[repr(C)] pub struct Tick { sym: [u8; 8], px: i64, qty: i64, bid: i64,
#       ask: i64, exch_ns: i64, venue: u32, flags: u32, level: u64 }
#   impl PlainMessage for Tick { const TYPE: u32 = 1; }
Tick = tape.Struct("<8sqqqqqIIQ", "sym px qty bid ask exch_ns venue flags level", type=1, name="Tick")
SESSION = 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("journals", nargs="+", help="journals to read")
    ap.add_argument("--root", help="root folder (default: $TAPE_ROOT, else /tmp/trading)")
    args = ap.parse_args()
    r = tape.Reader("typed-strategy-py", root=args.root, start="start", service="if_running")
    feeds = {}
    for j in args.journals:
        r.add_journal(None, j)
        feeds[j] = {"ticks": 0, "trades": 0, "volume": 0, "notional": 0, "last": None, "sessions": 0}
    while (f := r.next()) is not None:
        feed = feeds[f.journal]
        if f.type == Tick.type:
            t = Tick.unpack(f)  # the type and the length checked
            feed["ticks"] += 1
            if t.flags & 1:
                feed["trades"] += 1
                feed["volume"] += t.qty
                feed["notional"] += t.px * t.qty
            feed["last"] = (t.sym.rstrip(b"\0").decode(), t.px)
        elif f.type == SESSION:
            feed["sessions"] += 1
    for j, feed in feeds.items():
        vwap = feed["notional"] / feed["volume"] / 100 if feed["volume"] else 0.0
        sym, px = feed["last"] or ("", 0)
        print(
            f"{j} ticks={feed['ticks']} trades={feed['trades']} volume={feed['volume']} "
            f"vwap={vwap:.2f} last={sym}@{px / 100:.2f} sessions={feed['sessions']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
