"""``tape.Writer(sync=...)``: the durability policies of the Rust writer
(journal/src/durable.rs), counted as the Rust test does
(tools/tests/cli/sync.rs): a real Python writer process under ``strace -f
-c -e trace=msync,fsync,fdatasync`` (its threads included), on a
disk-backed root under /var/tmp (on tmpfs a sync does nothing). What it
wrote is then read back by ``tape tail``.

strace is needed, never skipped: test.sh installs it when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import unittest
from typing import Dict, Tuple

from helpers import PYTHON_DIR, WATCHDOG, Root, need_bin

import tape

#: A Python writer: ``argv[1]`` the root, ``argv[2]`` the policy,
#: ``argv[3]`` "N" frames at once or "N/K/MS": N frames in K chunks with MS
#: ms between them, or "1+MS": one frame, then MS ms idle. Prints its
#: sync_stats as "syncs dir_syncs failures".
WRITER = r"""
import sys, time, tape
root, policy, plan = sys.argv[1:4]
with tape.Writer("md", root=root, page_size=1 << 20, sync=policy) as w:
    if "+" in plan:
        w.write(1, b"first")
        time.sleep(int(plan.split("+")[1]) / 1000)
    else:
        parts = [int(x) for x in plan.split("/")] + [1, 0]
        n, chunks, gap = parts[0], parts[1], parts[2]
        for c in range(chunks):
            for i in range(c * n // chunks, (c + 1) * n // chunks):
                w.write(1, b"%0200d" % i)
            time.sleep(gap / 1000)
s = w.sync_stats
print(s.syncs, s.dir_syncs, s.failures, flush=True)
"""


def disk_tmp() -> str:
    """/var/tmp: disk-backed on a usual Linux (where /tmp may be tmpfs)."""
    return "/var/tmp"


def counts(summary: str) -> Dict[str, int]:
    """Calls per syscall, from ``strace -c -o FILE``'s table."""
    m: Dict[str, int] = {}
    with open(summary) as f:
        for line in f:
            p = line.split()
            if len(p) >= 5:
                try:
                    float(p[0])
                    calls = int(p[3])
                except ValueError:
                    continue
                if p[-1] != "total":
                    m[p[-1]] = calls
    return m


def syncs(c: Dict[str, int]) -> Tuple[int, int, int]:
    return c.get("msync", 0), c.get("fsync", 0), c.get("fdatasync", 0)


class SyncPolicies(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = need_bin(self)
        if shutil.which("strace") is None:
            self.fail("strace is missing: install it (test.sh does: apt-get install strace)")
        self.root = Root(self, self.bin, under=disk_tmp())
        self.root.start_service()
        self.summary = os.path.join(self.root.path, "strace.txt")

    def traced(self, policy: str, plan: str) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
        """Runs the writer under strace; (msync, fsync, fdatasync) that
        strace counted and (syncs, dir_syncs, failures) the writer says."""
        env = dict(os.environ)
        env.pop("TAPE_ROOT", None)
        env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
        r = subprocess.run(
            ["strace", "-f", "-qq", "-c", "-e", "trace=msync,fsync,fdatasync", "-o", self.summary,
             sys.executable, "-c", WRITER, self.root.path, policy, plan],
            capture_output=True, timeout=WATCHDOG, env=env,
        )
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        got = tuple(int(x) for x in r.stdout.split())
        return syncs(counts(self.summary)), got  # type: ignore[return-value]

    def written_pages(self) -> int:
        """Page files of md that hold a frame or an end marker (a page made
        ahead and never written has 0 at offset 64)."""
        n = 0
        for name in os.listdir(self.root.journal_dir):
            if name.startswith("md.") and name.endswith(".journal"):
                with open(os.path.join(self.root.journal_dir, name), "rb") as f:
                    f.seek(64)
                    if f.read(4) != bytes(4):
                        n += 1
        return n

    def read_back(self, n: int) -> None:
        out = self.root.tape("tail", "md").stdout.splitlines()
        self.assertEqual(len(out), n)
        self.assertEqual(out[-1], b"%0200d" % (n - 1))

    def test_sync_none_makes_no_sync_call(self) -> None:
        (sys_counts, stats) = self.traced("none", "20000")
        self.assertGreaterEqual(self.written_pages(), 4)
        self.assertEqual(sys_counts, (0, 0, 0))
        self.assertEqual(stats, (0, 0, 0))
        self.read_back(20000)

    def test_sync_page_makes_one_msync_and_one_folder_fsync_per_page_written(self) -> None:
        (sys_counts, stats) = self.traced("page", "20000")
        pages = self.written_pages()
        self.assertGreaterEqual(pages, 4)
        print(f"\n  page: {sys_counts} (msync, fsync, fdatasync) over {pages} pages", end=" ")
        # Each page left (by the sync thread) and the last (at close), each
        # followed by the folder's fsync; the stats say the same.
        self.assertEqual(sys_counts, (pages, pages, 0))
        self.assertEqual(stats, (pages, pages, 0))
        self.read_back(20000)

    def test_sync_interval_syncs_while_writing_and_nothing_while_idle(self) -> None:
        # One frame, then 200 intervals with nothing written: the header
        # and that frame are synced (one or two looks), then nothing.
        (msync, fsync, fdatasync), stats = self.traced("interval=5", "1+1000")
        print(f"\n  interval=5, one frame, 1 s idle: {msync} msync", end=" ")
        self.assertIn(msync, (1, 2), f"{msync} msyncs for one frame")
        self.assertEqual((fsync, fdatasync), (0, 0))
        self.assertEqual(stats, (msync, 0, 0))

    def test_sync_interval_bounds_syncs_by_the_looks_and_pages(self) -> None:
        start = time.monotonic()
        (msync, fsync, fdatasync), stats = self.traced("interval=20", "20000/20/50")
        elapsed = time.monotonic() - start
        pages = self.written_pages()
        looks = int(elapsed * 1000) // 20 + 2
        print(f"\n  interval=20: {msync} msync, {fsync} fsync in {elapsed:.2f} s over {pages} pages", end=" ")
        # At most one per look plus one per page passed; the folder once
        # per page passed. 20 chunks 50 ms apart: at least one sync each.
        self.assertTrue(20 <= msync <= looks + pages, f"{msync} msyncs in {elapsed:.2f} s over {pages} pages")
        self.assertEqual((fsync, fdatasync), (pages - 1, 0), f"{pages} pages")
        self.assertEqual(stats, (msync, fsync, 0))
        self.read_back(20000)


class SyncValues(unittest.TestCase):
    def test_a_bad_policy_is_refused_before_anything_is_made(self) -> None:
        import tempfile

        d = tempfile.mkdtemp(prefix="tape-py-")
        self.addCleanup(shutil.rmtree, d, True)
        for bad, why in [
            ("interval=0", "at least 1 ms"),
            ("interval=abc", "not a whole number of milliseconds"),
            ("interval=", "not a whole number of milliseconds"),
            ("interval=-5", "not a whole number of milliseconds"),
            ("always", "unknown policy"),
            ("PAGE", "unknown policy"),
        ]:
            with self.assertRaises(ValueError) as cm:
                tape.Writer("md", dir=os.path.join(d, "j"), service=False, sync=bad)
            msg = str(cm.exception)
            self.assertIn(f'bad sync policy "{bad}"', msg)
            self.assertIn(why, msg)
            self.assertIn("use none, page or interval=MS", msg)
            self.assertFalse(os.path.exists(os.path.join(d, "j")), bad)

    def test_the_policy_is_kept_and_stats_readable_after_close(self) -> None:
        import tempfile

        d = tempfile.mkdtemp(prefix="tape-py-", dir=disk_tmp())
        self.addCleanup(shutil.rmtree, d, True)
        for policy in ("none", "page", "interval=7"):
            w = tape.Writer("md-" + policy.replace("=", "-"), dir=d, service=False, page_size=1 << 20, sync=policy)
            self.assertEqual(w.sync, policy)
            w.write(1, b"x")
            w.close()
            s = w.sync_stats
            self.assertEqual(s.failures, 0)
            self.assertEqual(s.syncs > 0, policy != "none", (policy, s))

    def test_the_interval_thread_follows_a_journal_reopened_mid_page(self) -> None:
        import tempfile

        d = tempfile.mkdtemp(prefix="tape-py-", dir=disk_tmp())
        self.addCleanup(shutil.rmtree, d, True)
        with tape.Writer("md", dir=d, service=False, page_size=1 << 20) as w:
            for i in range(100):
                w.write(1, b"%0200d" % i)
        w = tape.Writer("md", dir=d, service=False, page_size=1 << 20, sync="interval=5")
        try:
            s = w.sync_stats
            # What the page held before the tail is synced at the first look.
            deadline = time.monotonic() + WATCHDOG
            while s.syncs < 1:
                self.assertLess(time.monotonic(), deadline, "watchdog: no first sync")
                time.sleep(0.002)
            self.assertEqual((s.syncs, s.dir_syncs), (1, 0))
            # Then on across a page switch: the page to its marker, the
            # folder, and the next page.
            first = w.page_no
            while w.page_no == first:
                w.write(1, b"%0200d" % 0)
            w.write(1, b"last")
        finally:
            w.close()
        self.assertGreaterEqual(s.syncs, 3)
        self.assertEqual((s.dir_syncs, s.failures), (1, 0))

    def test_a_failed_sync_is_counted_not_raised(self) -> None:
        import tempfile

        from tape import durable

        d = tempfile.mkdtemp(prefix="tape-py-", dir=disk_tmp())
        self.addCleanup(shutil.rmtree, d, True)
        real = durable.fsync_dir

        def eio(directory: str) -> None:
            raise OSError(5, "Input/output error")

        durable.fsync_dir = eio
        try:
            with tape.Writer("md", dir=d, service=False, page_size=1 << 20, sync="page") as w:
                for i in range(10000):
                    w.write(1, b"%0200d" % i)  # three page switches: no raise
            s = w.sync_stats
        finally:
            durable.fsync_dir = real
        self.assertGreaterEqual(s.failures, 3)
        self.assertEqual(s.dir_syncs, 0)
        self.assertEqual(s.syncs, s.failures)
        self.assertIn("syncing " + d, s.last_failure or "")
        self.assertIn("Input/output error", s.last_failure or "")
        # The journal is untouched: every frame is read back.
        r = tape.Reader("check", start="start", service="never")
        r.add_journal(d, "md")
        self.assertEqual(sum(1 for _ in r), 10000)
        r.close()


if __name__ == "__main__":
    unittest.main()
