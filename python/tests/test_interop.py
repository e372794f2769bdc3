"""Python and Rust on the same journals, through real processes: the real
``tape`` binary (``$TAPE_BIN``) and a real ``tape service`` on a temporary
root per test.

No test asserts a duration; every wait has a watchdog (helpers.WATCHDOG).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import unittest

import helpers
from helpers import Root, kill9, payload_of, wait_until

import tape
from tape.reader import Start

MiB = 1 << 20


def random_lines(n: int, seed: int) -> list:
    """``n`` payloads of 1 to 120 bytes, any byte but newline (so
    ``tape write`` takes them one a line), some not UTF-8."""
    rng = random.Random(seed)
    alphabet = bytes(b for b in range(256) if b != 0x0A)
    out = []
    for i in range(n):
        k = rng.randint(1, 120)
        if i % 3:
            out.append(b"%d " % i + bytes(rng.choice(alphabet) for _ in range(k)))
        else:
            out.append(b"line %d %s" % (i, b"x" * k))
    return out


class Interop(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = helpers.need_bin(self)
        self.root = Root(self, self.bin)

    def writer(self, name: str, **kw) -> tape.Writer:  # type: ignore[no-untyped-def]
        kw.setdefault("page_size", MiB)
        w = tape.Writer(name, root=self.root.path, **kw)
        self.addCleanup(w.close)
        return w

    def reader(self, *names: str, start: object = "start") -> tape.Reader:
        r = tape.Reader("py-test", root=self.root.path, start=start, service="never")  # type: ignore[arg-type]
        for n in names:
            r.add_journal(None, n)
        return r

    def assert_same_frames(self, py: list, rust: list) -> None:
        self.assertEqual(len(py), len(rust))
        for f, j in zip(py, rust):
            self.assertEqual(
                (f.journal, f.seq, f.time_ns, f.type, f.source, f.dest, f.corr, bytes(f.payload)),
                (j["journal"], j["seq"], j["time_ns"], j["type"], j["source"], j["dest"], j.get("corr", 0), payload_of(j)),
            )

    # -- Rust writes, Python reads ----------------------------------------

    def test_rust_written_frames_read_byte_for_byte_across_pages(self) -> None:
        """`tape write` (the Rust writer, 1 MiB pages) of 30000 lines, some
        not UTF-8: the Python reader returns the same frames as `tape tail
        --format json`, field for field and byte for byte, across page
        switches, and the payloads are the lines written."""
        self.root.start_service()
        lines = random_lines(30000, seed=8)
        self.root.tape("write", "md", "--type", "9", "--page-size", str(MiB), input=b"\n".join(lines) + b"\n")
        self.assertTrue(os.path.exists(self.root.page("md", 3)), "the frames span at least 3 pages")
        frames = list(self.reader("md", start="start"))
        self.assertEqual([bytes(f.payload) for f in frames], lines)
        self.assertEqual([f.seq for f in frames], list(range(1, 30001)))
        self.assertTrue(all(f.type == 9 for f in frames))
        self.assert_same_frames(frames, self.root.tail_json("md"))
        # With CRC checks on, every Rust checksum agrees with ours.
        r = tape.Reader(root=self.root.path, start="start", service="never", verify_crc=True)
        r.add_journal(None, "md")
        self.assertEqual(sum(1 for _ in r), 30000)

    def test_python_reads_a_grown_rust_journal_and_tape_verifies_a_grown_python_one(self) -> None:
        """FORMAT.md, "Page sizes", both ways: `tape write` with the default
        largest page (pages of 1, 2, 4, 8 MiB) read by the Python reader;
        a Python journal with a skipped page verified by `tape verify` and
        read by `tape tail`."""
        self.root.start_service()
        lines = [b"%060d" % i for i in range(1, 100001)]  # about 11 MiB of frames
        self.root.tape("write", "md", input=b"\n".join(lines) + b"\n")
        sizes = [os.path.getsize(self.root.page("md", n)) for n in range(1, 5)]
        self.assertEqual(sizes, [MiB, 2 * MiB, 4 * MiB, 8 * MiB])
        self.assertEqual([bytes(f.payload) for f in self.reader("md")], lines)
        self.assertEqual(self.reader("md", start=Start.seq(50000)).next().seq, 50000)  # type: ignore[union-attr]
        w = self.writer("py", page_size=16 * MiB)
        w.write(1, b"first")
        w._prepare(2)  # page 2 made ahead, at 2 MiB (as past half of page 1)
        assert w._next is not None
        w._next.join()
        big = bytes(range(256)) * (3 * MiB // 256)
        w.write(2, big)
        w.write(3, b"last")
        w.close()
        v = self.root.tape("verify", "py").stdout.decode()
        self.assertIn("format version 2", v)
        self.assertIn("1 skipped", v)
        tail = self.root.tail_json("py")
        self.assertEqual([payload_of(j) for j in tail], [b"first", big, b"last"])

    def test_tape_prune_keeps_the_pages_a_python_reader_reads(self) -> None:
        """A Python reader holds the shared lock on the page it reads
        (FORMAT.md, "Pruning"): `tape prune` keeps that page and every later
        one, naming this process; once the reader has moved on, the pages
        behind it go, and it read every frame."""
        self.root.start_service()
        lines = [b"%d" % i for i in range(1, 60001)]
        self.root.tape("write", "md", "--page-size", str(MiB), input=b"\n".join(lines) + b"\n")
        self.assertTrue(os.path.exists(self.root.page("md", 4)))
        r = self.reader("md", start="start")
        # Copies: a frame's payload is a view of its page's mapping, and a
        # page stays mapped (and locked) while a view of it lives.
        got = [bytes(r.next().payload) for _ in range(10)]
        out = self.root.tape("prune", "md", "--keep-last", "1").stdout.decode()
        self.assertIn("nothing to delete", out)
        self.assertIn("kept page 1", out)
        self.assertIn("pid %d" % os.getpid(), out)
        self.assertTrue(os.path.exists(self.root.page("md", 1)))
        got += [bytes(f.payload) for f in r]
        self.assertEqual(got, lines)
        out = self.root.tape("prune", "md", "--keep-last", "1").stdout.decode()
        self.assertIn("deleted pages 1..=", out)
        self.assertFalse(os.path.exists(self.root.page("md", 1)))
        # A new reader from the start begins at the first page left (one
        # live reader of a name per journal: the first one goes first).
        r.close()
        first = next(iter(self.reader("md", start="start")))
        self.assertGreater(first.seq, 1)

    def test_python_follows_a_live_rust_writer_from_before_the_journal_exists(self) -> None:
        """A Python reader added before the journal exists waits for it, then
        reads every frame a live `tape write` publishes, in order, across
        page switches."""
        self.root.start_service()
        r = self.reader("live", start="end")
        self.assertIsNone(r.next())
        w = self.root.spawn(
            [self.bin, "write", "live", "--root", self.root.path, "--page-size", str(MiB)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        n = 25000
        assert w.stdin is not None
        w.stdin.write(b"".join(b"%0100d\n" % i for i in range(n)))
        w.stdin.close()
        got: list = []

        def more() -> bool:
            while True:
                f = r.next()
                if f is None:
                    return len(got) == n
                got.append((f.seq, bytes(f.payload)))

        wait_until("the Python reader to see every frame", more)
        self.assertEqual(got, [(i + 1, b"%0100d" % i) for i in range(n)])
        self.assertEqual(w.wait(timeout=helpers.WATCHDOG), 0)

    # -- Python writes, Rust reads ----------------------------------------

    def test_python_written_frames_read_by_tape_tail_and_verified(self) -> None:
        """The Python writer (registered with the service, 1 MiB pages) writes
        30000 frames with all header fields set, text and binary payloads,
        across page switches: `tape tail` prints the same frames, `tape
        verify` passes, and the service names this process as the writer."""
        self.root.start_service()
        w = self.writer("py", source=77)
        self.assertTrue(w.registered)
        with tape.Connection(self.root.path) as c:
            (j,) = c.journals()
            self.assertEqual((j["journal"], j["writer"]["pid"]), ("py", os.getpid()))
        lines = random_lines(30000, seed=9)
        for i, p in enumerate(lines):
            self.assertEqual(w.write(i % 5, p, dest=i % 4, corr=i * 3), i + 1)
        claim = w.claim(4)
        claim.payload[:] = b"last"
        self.assertEqual(claim.commit(1), 30001)
        self.assertGreaterEqual(w.page_no, 3)
        tail = self.root.tail_json("py")
        self.assertEqual(len(tail), 30001)
        for i, j in enumerate(tail[:-1]):
            self.assertEqual(
                (j["journal"], j["seq"], j["type"], j["source"], j["dest"], j.get("corr", 0), payload_of(j)),
                ("py", i + 1, i % 5, 77, i % 4, i * 3, lines[i]),
            )
        self.assertEqual(payload_of(tail[-1]), b"last")
        self.assert_same_frames(list(self.reader("py")), tail)
        v = self.root.tape("verify", "py")
        self.assertIn(b"30001 frames", v.stdout)
        w.close()
        self.root.tape("verify", "py")

    def test_tape_tail_follows_a_live_python_writer_across_pages(self) -> None:
        """`tape tail --follow` (the Rust reader) started before the Python
        writer publishes sees every frame as it comes, across the page
        switches the Python writer makes (1 MiB pages, next page made by its
        thread, end-of-page markers)."""
        self.root.start_service()
        w = self.writer("livepy")
        tail = self.root.spawn(
            [self.bin, "tail", "livepy", "--root", self.root.path, "--follow", "--from", "start"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        )
        assert tail.stdout is not None
        n = 20000
        for i in range(n):
            w.write(1, b"%0100d" % i)
        self.assertGreaterEqual(w.page_no, 3)
        lines = helpers.Lines(tail.stdout)
        got = [lines.next(f"line {i + 1} of {n} from tape tail") for i in range(n)]
        self.assertEqual(got, [b"%0100d" % i for i in range(n)])

    def test_rust_and_python_writers_take_turns_on_one_journal(self) -> None:
        """Python, then Rust, then Python append to one journal: one sequence
        with no gap, verified, each writer continuing after the other."""
        self.root.start_service()
        with tape.Writer("turns", root=self.root.path, page_size=MiB) as w:
            for i in range(10000):
                w.write(1, b"py %d" % i)
        self.root.tape("write", "turns", input=b"".join(b"rust %d\n" % i for i in range(10000)))
        with tape.Writer("turns", root=self.root.path) as w:
            self.assertEqual(w.next_seq, 20001)
            for i in range(10000):
                w.write(1, b"py2 %d" % i)
        self.root.tape("verify", "turns")
        got = [payload_of(j) for j in self.root.tail_json("turns")]
        want = [b"py %d" % i for i in range(10000)] + [b"rust %d" % i for i in range(10000)] + [b"py2 %d" % i for i in range(10000)]
        self.assertEqual(got, want)

    # -- one writer per journal -------------------------------------------

    def test_python_writer_refused_while_rust_writer_holds(self) -> None:
        """While a `tape write` runs (held open on a pipe), a Python writer is
        refused by the service and, with no service asked, by the lock, each
        naming the Rust writer's pid; nothing is written. Once it exits, the
        Python writer gets the journal and continues its sequence."""
        self.root.start_service()
        rust = self.root.spawn(
            [self.bin, "write", "held", "--root", self.root.path, "--page-size", str(MiB)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        assert rust.stdin is not None
        rust.stdin.write(b"from rust\n")
        rust.stdin.flush()
        r = self.reader("held")
        wait_until("the Rust writer's first frame", r.next)
        with self.assertRaises(tape.HeldError) as cm:
            tape.Writer("held", root=self.root.path)
        self.assertEqual(cm.exception.pid, rust.pid)
        with self.assertRaises(tape.HeldError) as cm:
            tape.Writer("held", root=self.root.path, service=False)
        self.assertEqual(cm.exception.pid, rust.pid)
        self.assertEqual(len(self.root.tail_json("held")), 1)
        rust.stdin.close()
        self.assertEqual(rust.wait(timeout=helpers.WATCHDOG), 0)
        w = wait_until("the journal to be free", lambda: self._try_writer("held"))
        self.assertEqual(w.write(1, b"from python"), 2)  # type: ignore[attr-defined]
        self.assertEqual([payload_of(j) for j in self.root.tail_json("held")], [b"from rust", b"from python"])

    def _try_writer(self, name: str):  # type: ignore[no-untyped-def]
        try:
            return self.writer(name)
        except tape.HeldError:
            return None

    def test_rust_writer_refused_while_python_writer_holds(self) -> None:
        """While a Python writer holds a journal, `tape write` fails with a
        message naming its pid and adds nothing; with the service stopped
        the lock alone still refuses it; once the Python writer closes,
        `tape write` appends after it."""
        self.root.start_service()
        w = self.writer("pyheld")
        w.write(1, b"from python")
        r = self.root.tape("write", "pyheld", input=b"intruder\n", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(str(os.getpid()).encode(), r.stderr)
        self.assertEqual(len(self.root.tail_json("pyheld")), 1)
        w.close()
        self.root.tape("write", "pyheld", input=b"from rust\n")
        self.assertEqual([payload_of(j) for j in self.root.tail_json("pyheld")], [b"from python", b"from rust"])
        self.root.tape("verify", "pyheld")

    def test_python_writer_registers_again_after_a_service_restart(self) -> None:
        """The Python writer's registration is kept: after the service is
        killed and restarted it registers again on its own, and in between
        the lock keeps `tape write` out."""
        self.root.start_service()
        w = self.writer("again")
        w.write(1, b"before")
        self.root.stop_service()
        self.root.start_service()

        def writer_pid():  # type: ignore[no-untyped-def]
            with tape.Connection(self.root.path) as c:
                js = [j for j in c.journals() if j["journal"] == "again"]
                return js and js[0]["writer"] and js[0]["writer"]["pid"]

        self.assertEqual(wait_until("the Python writer to register again", writer_pid), os.getpid())
        self.assertTrue(w.registered)
        w.write(1, b"after")
        r = self.root.tape("write", "again", input=b"intruder\n", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual([payload_of(j) for j in self.root.tail_json("again")], [b"before", b"after"])

    def test_python_reader_is_listed_by_the_service(self) -> None:
        """A Python reader registers its name and journals; `find` names it."""
        self.root.start_service()
        r = tape.Reader("py-strategy", root=self.root.path, service="required")
        r.add_journal(None, "a")
        r.add_journal(None, "b")

        def journals():  # type: ignore[no-untyped-def]
            with tape.Connection(self.root.path) as c:
                p = c.find("py-strategy")
                return p and len(p["journals"]) == 2 and p

        peer = wait_until("the reader's journals at the service", journals)
        self.assertEqual(peer["pid"], os.getpid())  # type: ignore[index]
        self.assertEqual(sorted(j["journal"] for j in peer["journals"]), ["a", "b"])  # type: ignore[index]
        r.close()
        with tape.Connection(self.root.path) as c:
            wait_until("the reader to be gone", lambda: c.find("py-strategy") is None)

    def test_no_service_no_writer_and_nothing_created(self) -> None:
        """With no service, the Python writer fails with NotRunning and
        creates nothing (as `tape write` does)."""
        with self.assertRaises(tape.NotRunning) as cm:
            tape.Writer("none", root=self.root.path)
        self.assertIn("tape service", str(cm.exception))
        self.assertFalse(os.path.exists(self.root.journal_dir))

    # -- crashes -----------------------------------------------------------

    CRASHING_WRITER = r"""
import sys, tape
w = tape.Writer("crash", root=sys.argv[1], page_size=1 << 20)
for i in range(int(sys.argv[2])):
    w.write(1, b"before %d" % i)
c = w.claim(3000)                       # a frame filled but never published
c.payload[:] = b"\xee" * 3000
print(w._off, flush=True)               # the tail
sys.stdin.read()                        # wait to be killed
"""

    def crash(self, frames: int) -> int:
        """A Python writer in a child process writes ``frames`` frames, fills
        an unpublished one, and is killed with SIGKILL. Returns the tail
        offset it had."""
        p = self.root.spawn(
            [sys.executable, "-c", self.CRASHING_WRITER, self.root.path, str(frames)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=helpers.PYTHON_DIR),
        )
        assert p.stdout is not None
        tail = int(helpers.Lines(p.stdout).next("the crashing writer to be ready"))
        with open(self.root.page("crash", 1), "rb") as f:
            f.seek(tail + 48)
            self.assertEqual(f.read(8), b"\xee" * 8, "the unpublished frame is in the page")
        kill9(p)
        return tail

    def test_python_writer_killed_then_rust_writer_recovers(self) -> None:
        """kill -9 of a Python writer holding an unpublished frame: the
        journal is free at once, `tape write` continues the sequence after
        the last published frame, the unpublished bytes are gone, and `tape
        verify` passes."""
        self.root.start_service()
        self.crash(500)
        self.root.tape("write", "crash", input=b"after 0\nafter 1\n")
        got = [(j["seq"], payload_of(j)) for j in self.root.tail_json("crash")]
        self.assertEqual(got, [(i + 1, b"before %d" % i) for i in range(500)] + [(501, b"after 0"), (502, b"after 1")])
        self.root.tape("verify", "crash")
        with open(self.root.page("crash", 1), "rb") as f:
            self.assertNotIn(b"\xee" * 8, f.read())

    def test_python_writer_killed_then_python_writer_recovers(self) -> None:
        """The same crash, recovered by a Python writer: every byte past the
        tail is zero before it publishes, and the sequence continues."""
        self.root.start_service()
        tail = self.crash(300)
        w = wait_until("the journal to be free", lambda: self._try_writer("crash"))
        self.assertEqual(w._off, tail)  # type: ignore[attr-defined]
        with open(self.root.page("crash", 1), "rb") as f:
            f.seek(tail)
            rest = f.read()
        self.assertEqual(rest, bytes(len(rest)))
        self.assertEqual(w.write(1, b"after"), 301)  # type: ignore[attr-defined]
        self.root.tape("verify", "crash")
        self.assertEqual(payload_of(self.root.tail_json("crash")[-1]), b"after")

    def test_rust_writer_leftovers_are_zeroed_by_the_python_writer(self) -> None:
        """Bytes past the tail of a Rust-written journal (what a killed Rust
        writer can leave) are zeroed by the Python writer before it
        publishes; `tape verify` and `tape tail` agree afterwards."""
        self.root.start_service()
        self.root.tape("write", "rz", "--page-size", str(MiB), input=b"".join(b"r%d\n" % i for i in range(100)))
        tail = 64 + 100 * 56  # frames of 48 + 2..3 bytes take 56 each
        with open(self.root.page("rz", 1), "r+b") as f:
            f.seek(tail)
            self.assertEqual(f.read(8), bytes(8), "the tail is where 100 frames of 56 bytes end")
            f.seek(tail + 4)
            f.write(b"\x11" * 500)
        with tape.Writer("rz", root=self.root.path) as w:
            with open(self.root.page("rz", 1), "rb") as f:
                f.seek(tail)
                self.assertEqual(f.read(600), bytes(600))
            w.write(1, b"py")
        self.root.tape("verify", "rz")
        self.assertEqual(payload_of(self.root.tail_json("rz")[-1]), b"py")


if __name__ == "__main__":
    unittest.main()
