"""Reader positions (``journal/FORMAT.md``, "Reader positions") from
Python: the file's bytes, ``resume=`` and ``commit()``, who deletes the
files, one live reader of a name per journal; and with the real ``tape``
binary: a Python reader and ``tape tail --resume`` of the same name take
turns on one position, each refusing the other while it is live, and a
Python reader process killed before its commit hands the frame out again.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import helpers
from helpers import Lines, Root, kill9, wait_until

import tape
from tape.position import PositionError, position_path, readers_dir

MiB = 1 << 20


def pos_words(path: str):  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        b = f.read()
    assert len(b) == 64, len(b)
    return struct.unpack("<4sIIIQQq24s", b)


class Local(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tape-py-pos-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.w = tape.Writer("md", dir=self.dir, service=False, page_size=MiB)
        self.addCleanup(self.w.close)

    def write(self, a: int, b: int) -> None:
        for i in range(a, b + 1):
            self.assertEqual(self.w.write(1, str(i).encode()), i)

    def reader(self, name: str, start: str = "start", resume: bool = False) -> tape.Reader:
        r = tape.Reader(name, service="never", start=start, resume=resume)
        r.add_journal(self.dir, "md")
        return r

    def take(self, r: tape.Reader, n: int = 1000) -> list:
        got = []
        while len(got) < n:
            f = r.next()
            if f is None:
                break
            got.append(f.seq)
        return got

    def test_the_file_is_the_one_in_format_md(self) -> None:
        self.write(1, 5)
        r = self.reader("py", resume=True)
        self.assertEqual(self.take(r, 3), [1, 2, 3])
        r.commit()
        self.take(r, 1)
        magic, version, pid, flags, seen, committed, ns, rest = pos_words(position_path(self.dir, "md", "py"))
        self.assertEqual((magic, version, pid, flags), (b"TPOS", 1, os.getpid(), 1))
        self.assertEqual((seen, committed), (4, 3))
        self.assertGreater(ns, 0)
        self.assertEqual(rest, bytes(24))
        r.close()
        mode = os.stat(position_path(self.dir, "md", "py")).st_mode & 0o777
        self.assertEqual(mode & 0o137, 0, oct(mode))  # at most 0640

    def test_resume_continues_after_the_last_commit_and_replays_the_rest(self) -> None:
        self.write(1, 10)
        r = self.reader("strat", resume=True)
        self.assertEqual(self.take(r, 4), [1, 2, 3, 4])
        r.commit()
        self.assertEqual(self.take(r, 2), [5, 6])
        r.close()
        r = self.reader("strat", start="end", resume=True)
        self.assertEqual(self.take(r), [5, 6, 7, 8, 9, 10])
        r.commit()
        r.close()
        self.write(11, 12)
        r = self.reader("strat", resume=True)
        self.assertEqual(self.take(r), [11, 12])
        r.close()

    def test_a_new_resuming_position_counts_its_start_as_committed(self) -> None:
        self.write(1, 5)
        r = self.reader("late", start="end", resume=True)
        self.assertEqual(pos_words(position_path(self.dir, "md", "late"))[4:6], (5, 5))
        self.write(6, 7)
        self.assertEqual(self.take(r, 1), [6])
        r.close()
        r = self.reader("late", resume=True)
        self.assertEqual(self.take(r), [6, 7])
        r.close()

    def test_a_reader_that_does_not_resume_deletes_its_file(self) -> None:
        self.write(1, 3)
        r = self.reader("once")
        self.assertEqual(self.take(r, 2), [1, 2])
        self.assertEqual(pos_words(position_path(self.dir, "md", "once"))[4], 2)
        r.close()
        self.assertFalse(os.path.exists(readers_dir(self.dir, "md")))
        # A kept position is not a non-resuming reader's to delete.
        r = self.reader("kept", resume=True)
        self.take(r, 1)
        r.commit()
        r.close()
        with self.assertRaises(PositionError) as e:
            self.reader("kept")
        self.assertIn("resume", str(e.exception))
        self.assertTrue(os.path.exists(position_path(self.dir, "md", "kept")))

    def test_a_second_live_reader_of_the_name_is_refused_naming_the_holder(self) -> None:
        self.write(1, 1)
        r = self.reader("dup", resume=True)
        with self.assertRaises(PositionError) as e:
            self.reader("dup", resume=True)
        self.assertTrue(e.exception.held)
        self.assertEqual(e.exception.pid, os.getpid())
        self.assertIn(f"pid {os.getpid()}", str(e.exception))
        r.close()

    def test_a_position_the_journal_cannot_continue_is_refused(self) -> None:
        self.write(1, 5)
        r = self.reader("gone", resume=True)
        self.take(r)
        r.commit()
        r.close()
        self.w.close()
        for n in os.listdir(self.dir):
            if n.endswith(".journal"):
                os.unlink(os.path.join(self.dir, n))
        self.w = tape.Writer("md", dir=self.dir, service=False, page_size=MiB)
        self.write(1, 2)
        with self.assertRaises(PositionError) as e:
            self.reader("gone", resume=True)
        self.assertIn("ends at seq 2", str(e.exception))
        self.assertEqual(pos_words(position_path(self.dir, "md", "gone"))[5], 5)


class WithRust(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = helpers.need_bin(self)
        self.root = Root(self, self.bin)
        self.root.start_service()

    def test_python_and_tape_tail_take_turns_on_one_position(self) -> None:
        root = self.root
        root.tape("write", "md", input=b"".join(b"%d\n" % i for i in range(1, 11)))
        out = root.tape("tail", "md", "--resume", "both", "--from", "start").stdout
        self.assertEqual(out.split(), [b"%d" % i for i in range(1, 11)])
        root.tape("write", "md", input=b"11\n12\n13\n")
        r = tape.Reader("both", root=root.path, resume=True)
        r.add_journal(None, "md")
        f = r.next()
        assert f is not None
        self.assertEqual((f.seq, bytes(f.payload)), (11, b"11"))
        r.commit()
        # While the Python reader lives, tape tail of that name is refused.
        t = root.tape("tail", "md", "--resume", "both", check=False)
        self.assertEqual(t.returncode, 1)
        self.assertIn(f"pid {os.getpid()}", t.stderr.decode())
        r.close()
        out = root.tape("tail", "md", "--resume", "both").stdout
        self.assertEqual(out.split(), [b"12", b"13"])

    def test_a_python_reader_killed_before_its_commit_hands_the_frame_out_again(self) -> None:
        root = self.root
        root.tape("write", "md", input=b"1\n2\n3\n")
        code = (
            "import sys, tape\n"
            "r = tape.Reader('victim', root=sys.argv[1], start='start', resume=True)\n"
            "r.add_journal(None, 'md')\n"
            "f = r.next(); r.commit(); print(f.seq, flush=True)\n"
            "f = r.next(); print(f.seq, flush=True)\n"
            "import time; time.sleep(600)\n"
        )
        p = root.python(code, root.path, stdout=subprocess.PIPE)
        lines = Lines(p.stdout)
        self.assertEqual(lines.next("frame 1"), b"1")
        self.assertEqual(lines.next("frame 2"), b"2")
        path = position_path(root.journal_dir, "md", "victim")
        wait_until("its position", lambda: os.path.exists(path) and pos_words(path)[4] == 2)
        self.assertEqual(pos_words(path)[4:6], (2, 1))
        # tape tail refuses the name while it lives, naming it.
        t = root.tape("tail", "md", "--resume", "victim", check=False)
        self.assertIn(f"pid {p.pid}", t.stderr.decode())
        kill9(p)
        # Frame 2 was used, not committed: at least once, so again.
        out = root.tape("tail", "md", "--resume", "victim").stdout
        self.assertEqual(out.split(), [b"2", b"3"])


if __name__ == "__main__":
    unittest.main()
