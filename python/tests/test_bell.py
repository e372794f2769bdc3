"""The doorbell (``journal/FORMAT.md``, "The doorbell") across languages,
through real processes: a Python reader asleep in ``Reader.wait`` wakes on
the frame of a Rust writer (``tape write``), and ``tape tail --follow``
(the Rust reader) asleep wakes on a Python writer's frame.

No test asserts a duration. The second relies on behaviour: after its
first look for damage (2 s of quiet), an idle ``tape tail --follow`` sleeps
up to 64 s at a time, so a frame only reaches it well before then when the
writer rings the doorbell.
"""

from __future__ import annotations

import os
import subprocess
import time
import unittest

import helpers
from helpers import Root

import tape

MiB = 1 << 20


class Doorbell(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = helpers.need_bin(self)
        self.root = Root(self, self.bin)
        self.root.start_service()

    def test_python_reader_sleeps_until_a_rust_writers_frame(self) -> None:
        w = self.root.spawn(
            [self.bin, "write", "rb", "--root", self.root.path, "--page-size", str(MiB)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        assert w.stdin is not None
        w.stdin.write(b"first\n")
        w.stdin.flush()
        r = tape.Reader("py-bell", root=self.root.path, start="start", service="never")
        r.add_journal(None, "rb")
        f = r.wait(timeout=helpers.WATCHDOG)
        self.assertIsNotNone(f)
        self.assertEqual(bytes(f.payload), b"first")
        self.assertTrue(os.path.exists(os.path.join(self.root.journal_dir, "rb.bell")))
        for i in range(20):
            # The reader is asleep (its journal quiet) when each comes.
            w.stdin.write(b"frame %d\n" % i)
            w.stdin.flush()
            f = r.wait(timeout=helpers.WATCHDOG)
            self.assertIsNotNone(f, f"frame {i} did not wake the Python reader")
            self.assertEqual(bytes(f.payload), b"frame %d" % i)
        self.assertIsNone(r.wait(timeout=0.05), "nothing more came")
        w.stdin.close()
        self.assertEqual(w.wait(timeout=helpers.WATCHDOG), 0)
        r.close()

    def test_rust_tail_asleep_wakes_on_a_python_writers_frame(self) -> None:
        w = tape.Writer("pb", root=self.root.path, page_size=MiB)
        self.addCleanup(w.close)
        w.write(1, b"one")
        tail = self.root.spawn(
            [self.bin, "tail", "pb", "--root", self.root.path, "--follow", "--from", "start"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )
        assert tail.stdout is not None
        lines = helpers.Lines(tail.stdout)
        self.assertEqual(lines.next("the first frame"), b"one")
        # Past its first look for damage: from now on it sleeps up to 64 s.
        time.sleep(4)
        w.write(1, b"two")
        self.assertEqual(lines.next("the frame after the quiet: the doorbell was not rung", timeout=30), b"two")

    def test_python_reader_of_two_journals_wakes_on_either_rust_writer(self) -> None:
        # Asleep on both doorbells at once (futex_waitv): a frame of either
        # journal wakes it. Were it asleep on one journal's doorbell only, a
        # frame of the other would be seen only when its wait ends (5 s).
        writers = {}
        for name in ("ja", "jb"):
            w = self.root.spawn(
                [self.bin, "write", name, "--root", self.root.path, "--page-size", str(MiB)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            )
            assert w.stdin is not None
            w.stdin.write(b"%s first\n" % name.encode())
            w.stdin.flush()
            writers[name] = w
        r = tape.Reader("py-bell-two", root=self.root.path, start="start", service="never")
        r.add_journal(None, "ja")
        r.add_journal(None, "jb")
        got = set()
        while len(got) < 2:
            f = r.wait(timeout=helpers.WATCHDOG)
            self.assertIsNotNone(f, "the first frames")
            got.add(bytes(f.payload))
        self.assertEqual(got, {b"ja first", b"jb first"})
        late = []
        for i in range(12):
            name = ("jb", "ja")[i % 2]
            w = writers[name]
            assert w.stdin is not None
            # The reader is asleep on both doorbells when each comes.
            time.sleep(0.05)
            w.stdin.write(b"%s %d\n" % (name.encode(), i))
            w.stdin.flush()
            sent = time.monotonic()
            f = r.wait(timeout=5.0)
            late.append(time.monotonic() - sent)
            self.assertIsNotNone(f, f"frame {i} of {name} did not wake the Python reader")
            self.assertEqual(bytes(f.payload), b"%s %d" % (name.encode(), i))
        late.sort()
        # The writer is a process fed through a pipe: its frame comes within
        # milliseconds, against the 5 s of a wait that was not woken.
        self.assertLess(late[-1], 2.5, f"not woken by the doorbell: {late}")
        for w in writers.values():
            assert w.stdin is not None
            w.stdin.close()
            self.assertEqual(w.wait(timeout=helpers.WATCHDOG), 0)
        r.close()


if __name__ == "__main__":
    unittest.main()
