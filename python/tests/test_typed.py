"""Typed messages: ``tape.Struct`` and ``Frame.unpack`` on Python-written
frames, and on what the Rust ``typed-md`` (tape-examples, a
``tape_typed::PlainMessage`` filled in place) writes through a real ``tape
service``: every field of every Rust ``Tick`` read back, and the Rust
``Session`` frames' bincode bytes as journal/FORMAT.md describes them.

No test asserts a duration; every wait has a watchdog.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import helpers
from helpers import WATCHDOG, Root

import tape

MiB = 1 << 20

# examples/src/lib.rs's Tick, field by field.
Tick = tape.Struct("<8sqqqqqIIQ", "sym px qty bid ask exch_ns venue flags level", type=1, name="Tick")


def venue_id(venue: str) -> int:
    h = 0
    for b in venue.encode():
        h = (h * 31 + b) & 0xFFFFFFFF
    return h % 1000


def rust_tick(venue: str, i: int) -> tuple:
    """``tape_examples::tick(venue, i)``, the oracle, in field order."""
    vid = venue_id(venue)
    sym = (b"ESZ6" if i % 2 == 0 else b"NQZ6") + b"\0" * 4
    px = 500_000 + (i % 97) * 25 + vid
    return (sym, px, i % 9 + 1, px - 25, px + 25, 1_700_000_000_000_000_000 + i * 1000, vid, int(i % 3 == 0), i)


class StructOnly(unittest.TestCase):
    """The helper itself, on journal files with no service."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tape-py-typed-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_a_struct_round_trips_through_a_journal(self) -> None:
        with tape.Writer("md", dir=self.dir, service=False, page_size=MiB) as w:
            self.assertEqual(Tick.write(w, *rust_tick("CME", 1)), 1)
            self.assertEqual(Tick.write(w, **dict(zip(Tick.fields, rust_tick("CME", 2))), dest=9), 2)
            w.write(Tick.type, Tick.pack(*rust_tick("CME", 3)))
            w.write(5, b"not a tick")
        r = tape.Reader(service="never", start="start")
        r.add_journal(self.dir, "md")
        for i in (1, 2, 3):
            f = r.next()
            t = Tick.unpack(f)
            self.assertEqual(tuple(t), rust_tick("CME", i))
            self.assertEqual(t.level, i)
            self.assertEqual(f.unpack(Tick), t)
            self.assertEqual(f.unpack("<8sqqqqqIIQ"), rust_tick("CME", i))
            self.assertEqual(f.unpack(struct.Struct("<8s56x")), (rust_tick("CME", i)[0],))
        f = r.next()
        with self.assertRaises(tape.WrongType) as e:
            Tick.unpack(f)
        self.assertIn("type 5 is not a Tick (type 1)", str(e.exception))
        with self.assertRaises(tape.WrongLength) as e:
            f.unpack("<q")
        self.assertIn("8 bytes but the payload is 10", str(e.exception))
        self.assertIsNone(r.next())

    def test_bad_definitions_and_values_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            tape.Struct("qq", "a b", type=1)  # native alignment: not tape's layout
        with self.assertRaises(ValueError):
            tape.Struct("<qq", "a", type=1)  # two values, one name
        with self.assertRaises(ValueError):
            tape.Struct("<q", "a", type=-1)
        with self.assertRaises(ValueError):
            tape.typed.unpack_payload("=q", bytes(8))  # native order: refused too
        two = tape.Struct("<qI4x", "a b", type=3, name="Two")
        self.assertEqual(two.size, 16)
        with self.assertRaises(TypeError):
            two.pack(a=1)
        with self.assertRaises(TypeError):
            two.pack(1, b=2)
        with self.assertRaises(tape.WrongLength):
            two.unpack_payload(b"\0" * 15)
        self.assertTrue(issubclass(tape.WrongType, ValueError))
        with tape.Writer("bad", dir=self.dir, service=False, page_size=MiB) as w:
            with self.assertRaises(struct.error):
                two.write(w, 1, 2**40)  # b is a u32: nothing published
            self.assertEqual(two.write(w, 1, 2), 1)
        r = tape.Reader(service="never", start="start")
        r.add_journal(self.dir, "bad")
        f = r.next()
        self.assertEqual((f.seq, f.type, tuple(two.unpack(f))), (1, 3, (1, 2)))
        self.assertIsNone(r.next())


def typed_md_bin(test: unittest.TestCase) -> str:
    """tape-examples' ``typed-md``: ``$TAPE_TYPED_MD_BIN``, else beside the
    ``tape`` binary (``cargo test --workspace`` builds both)."""
    b = os.environ.get("TAPE_TYPED_MD_BIN") or os.path.join(os.path.dirname(helpers.need_bin(test)), "typed-md")
    if not os.path.exists(b):
        test.fail(f"typed-md {b!r} does not exist: run `cargo build -p tape-examples`")
    return b


class FromRust(unittest.TestCase):
    def setUp(self) -> None:
        self.root = Root(self, helpers.need_bin(self))
        self.md = typed_md_bin(self)
        self.root.start_service()

    def write(self, journal: str, venue: str, n: int) -> None:
        env = dict(os.environ, TAPE_ROOT=self.root.path)
        r = subprocess.run([self.md, journal, venue, str(n)], capture_output=True, timeout=WATCHDOG, env=env)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        self.assertIn(f"wrote {n} ticks from {venue}".encode(), r.stdout)

    def test_python_reads_the_rust_struct_field_by_field(self) -> None:
        self.write("md.cme", "CME", 500)
        r = tape.Reader("py-typed", root=self.root.path, start="start", service="never")
        r.add_journal(None, "md.cme")
        first = r.next()
        # Session::Open { venue: "CME", symbols: ["ESZ6", "NQZ6"] }: variant
        # 0, then each string as a varint length and its bytes.
        self.assertEqual((first.seq, first.type), (1, 2))
        self.assertEqual(bytes(first.payload), b"\x00\x03CME\x02\x04ESZ6\x04NQZ6")
        for i in range(1, 501):
            f = r.next()
            self.assertEqual((f.seq, f.type, len(f.payload)), (i + 1, 1, 64))
            t = Tick.unpack(f)
            want = rust_tick("CME", i)
            for name, got, exp in zip(Tick.fields, t, want):
                self.assertEqual(got, exp, f"tick {i}, field {name}")
        last = r.next()
        # Session::Closed { ticks: 500, reason: None }: variant 1, 500 as
        # 251 + u16 little-endian, None as 0.
        self.assertEqual((last.seq, last.type, bytes(last.payload)), (502, 2, b"\x01\xfb\xf4\x01\x00"))
        self.assertIsNone(r.next())

    def test_the_python_example_strategy_reads_two_rust_feeds(self) -> None:
        self.write("md.cme", "CME", 300)
        self.write("md.eurex", "EUREX", 200)
        p = self.root.example("typed_strategy.py", "md.cme", "md.eurex", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate(timeout=WATCHDOG)
        self.assertEqual(p.returncode, 0, err.decode(errors="replace"))
        lines = out.decode().splitlines()
        want = []
        for journal, venue, n in (("md.cme", "CME", 300), ("md.eurex", "EUREX", 200)):
            ticks = [rust_tick(venue, i) for i in range(1, n + 1)]
            trades = [t for t in ticks if t[7] & 1]
            volume = sum(t[2] for t in trades)
            vwap = sum(t[1] * t[2] for t in trades) / volume / 100
            last = ticks[-1]
            sym = last[0].rstrip(b"\0").decode()
            want.append(
                f"{journal} ticks={n} trades={len(trades)} volume={volume} vwap={vwap:.2f} "
                f"last={sym}@{last[1] / 100:.2f} sessions=2"
            )
        self.assertEqual(lines, want)


if __name__ == "__main__":
    unittest.main()
