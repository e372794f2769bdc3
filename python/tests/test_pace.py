"""``tape.Reader(speed=...)``: recorded journals read at their own pace,
without copying them (issue 20 item 2; the Rust reader's ``paced(Speed)``,
reader/src/pace.rs).

The journals are recorded by real ``tape write`` processes fed lines with
known gaps between them (10 ms, 50 ms, 0, ...); the frames' own
``time_ns`` are the recorded pace. Each frame's delivery is measured
against the moment it falls due: ``origin + (time_ns - first time_ns) /
speed`` on ``time.monotonic_ns()``. It is never early, and late by a
median under 2 ms at speed 1 and under 0.5 ms at speed 10 (the box is a
shared 2-vCPU VM; the medians measured here are tens of µs). A reader that
is not paced fails the same assertion, which a control in each test shows.
"""

from __future__ import annotations

import statistics
import subprocess
import time
import unittest
from typing import List, Sequence, Tuple

from helpers import WATCHDOG, Root, need_bin, wait_until

import tape

#: Gaps between the recorded frames, in ms (about 0.2 s in all).
GAPS_MS = [10, 50, 0, 5, 20, 0, 1, 30, 0, 15, 2, 40, 0, 8]

#: The median lateness allowed, in ns, by speed.
TOLERANCE_NS = {1.0: 2_000_000, 10.0: 500_000}


def record(root: Root, name: str, gaps_ms: Sequence[int]) -> None:
    """A ``tape write NAME`` process fed one line, then one more after each
    gap."""
    assert root.bin is not None
    p = root.spawn(
        [root.bin, "write", name, "--root", root.path],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert p.stdin is not None
    p.stdin.write(b"0\n")
    p.stdin.flush()
    # The gaps count from the first frame written (a process starts in its
    # own time).
    r = tape.Reader(None, root=root.path, start="start", service="never")
    r.add_journal(None, name)
    wait_until("the first frame", r.next)
    r.close()
    for i, g in enumerate(gaps_ms, 1):
        time.sleep(g / 1000)
        p.stdin.write(b"%d\n" % i)
        p.stdin.flush()
    p.stdin.close()
    assert p.wait(timeout=WATCHDOG) == 0, p.stderr.read() if p.stderr else b""


def record_merged(root: Root, names: Sequence[str], frames: int, gap_ms: float) -> None:
    """One ``tape write`` per journal, fed in turn, ``gap_ms`` apart."""
    assert root.bin is not None
    procs = [
        root.spawn([root.bin, "write", n, "--root", root.path], stdin=subprocess.PIPE,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for n in names
    ]
    # Each writer running (its warm-up line written) before the gaps
    # count: a process starts in its own time.
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"warm-up\n")
        p.stdin.flush()
    r = tape.Reader(None, root=root.path, start="start", service="never")
    for n in names:
        r.add_journal(None, n)
    seen = []
    wait_until("the writers' warm-up lines", lambda: seen.extend(r) or len(seen) == len(names))
    r.close()
    for i in range(frames):
        p = procs[i % len(procs)]
        assert p.stdin is not None
        p.stdin.write(b"%d\n" % i)
        p.stdin.flush()
        time.sleep(gap_ms / 1000)
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=WATCHDOG) == 0


def read_all(r: tape.Reader, n: int) -> List[Tuple[int, tape.Frame]]:
    """``n`` frames, each with ``time.monotonic_ns()`` at its delivery,
    waiting with ``Reader.wait``."""
    got: List[Tuple[int, tape.Frame]] = []
    deadline = time.monotonic() + WATCHDOG
    while len(got) < n:
        f = r.wait(timeout=1.0)
        if f is not None:
            got.append((time.monotonic_ns(), f))
        elif time.monotonic() > deadline:
            raise AssertionError(f"watchdog: {len(got)} of {n} frames")
    return got


def lateness(got: List[Tuple[int, tape.Frame]], speed: float, origin_mono: int) -> List[int]:
    """Each frame's delivery minus the moment it falls due, in ns."""
    t0 = got[0][1].time_ns
    return [m - (origin_mono + int((f.time_ns - t0) / speed)) for m, f in got]


def paced_ok(late: List[int], speed: float) -> Tuple[bool, str]:
    """Never early, and a median lateness within the tolerance."""
    med = statistics.median(late)
    why = f"speed {speed}: lateness µs min {min(late) / 1e3:.1f} median {med / 1e3:.1f} max {max(late) / 1e3:.1f}"
    return min(late) >= 0 and med <= TOLERANCE_NS[speed], why


class PacedReader(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = need_bin(self)
        self.root = Root(self, self.bin)
        self.root.start_service()

    def reader(self, speed: object, *names: str) -> tape.Reader:
        r = tape.Reader(None, root=self.root.path, start="start", service="never", speed=speed)  # type: ignore[arg-type]
        self.addCleanup(r.close)
        for n in names:
            r.add_journal(None, n)
        return r

    def check_pace(self, speed: float) -> None:
        record(self.root, "md", GAPS_MS)
        n = len(GAPS_MS) + 1
        r = self.reader(speed, "md")
        wall0, cpu0 = time.monotonic(), time.process_time()
        got = read_all(r, n)
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        assert r.pacer is not None and r.pacer.origin is not None
        self.assertEqual(r.pacer.origin[0], got[0][1].time_ns, "the first frame sets the pace")
        self.assertEqual([bytes(f.payload) for _, f in got], [b"%d" % i for i in range(n)])
        ok, why = paced_ok(lateness(got, speed, r.pacer.origin[1]), speed)
        print(f"\n  {why}; cpu {cpu * 1e3:.1f} ms of {wall * 1e3:.1f} ms", end=" ")
        self.assertTrue(ok, why)
        # It sleeps between frames: no hot loop over the gaps.
        self.assertLess(cpu, 0.5 * wall, f"cpu {cpu:.3f} s in {wall:.3f} s")
        # The control: the same journal read without a pace fails the
        # same assertion (every frame at once, early).
        plain = self.reader(None, "md")
        fast = [(time.monotonic_ns(), f) for f in plain]
        self.assertEqual(len(fast), n)
        ok, why = paced_ok(lateness(fast, speed, fast[0][0]), speed)
        self.assertFalse(ok, f"not paced, yet: {why}")

    def test_speed_1_hands_out_frames_at_the_recorded_pace(self) -> None:
        self.check_pace(1.0)

    def test_speed_10_hands_out_frames_at_ten_times_the_recorded_pace(self) -> None:
        self.check_pace(10.0)

    def test_three_journals_merged_in_time_order_at_their_pace(self) -> None:
        names = ["md.a", "md.b", "md.c"]
        record_merged(self.root, names, 30, 4)
        r = self.reader(10, *names)
        warm = [r.wait(timeout=WATCHDOG) for _ in names]
        self.assertEqual([bytes(f.payload) for f in warm if f is not None], [b"warm-up"] * 3)
        assert r.pacer is not None
        r.pacer.restart()  # the pace from the first frame after the warm-up
        got = read_all(r, 30)
        times = [f.time_ns for _, f in got]
        self.assertEqual(times, sorted(times), "merged in write-time order")
        self.assertEqual([f.journal for _, f in got], [names[i % 3] for i in range(30)])
        self.assertEqual([bytes(f.payload) for _, f in got], [b"%d" % i for i in range(30)])
        assert r.pacer is not None and r.pacer.origin is not None
        ok, why = paced_ok(lateness(got, 10.0, r.pacer.origin[1]), 10.0)
        print(f"\n  merged {why}", end=" ")
        self.assertTrue(ok, why)

    def test_next_returns_none_until_a_frame_is_due(self) -> None:
        record(self.root, "md", [200, 200])
        r = self.reader("1", "md")
        first = r.next()
        self.assertIsNotNone(first, "the first frame is due at once")
        # The next is 200 ms away: not handed out yet, but known.
        self.assertIsNone(r.next())
        left = r.due_in()
        gap = ((r.next_time() or 0) - first.time_ns) / 1e9  # type: ignore[union-attr]
        assert left is not None
        self.assertGreaterEqual(gap, 0.2)
        self.assertTrue(0 < left <= gap, (left, gap))
        # A wait shorter than that returns nothing, and hands out nothing.
        self.assertIsNone(r.wait(timeout=0.01))
        self.assertEqual(bytes(r.wait(timeout=WATCHDOG).payload), b"1")  # type: ignore[union-attr]
        self.assertEqual(bytes(r.wait(timeout=WATCHDOG).payload), b"2")  # type: ignore[union-attr]
        self.assertIsNone(r.due_in(), "no unread frame")

    def test_speed_max_reads_at_full_speed(self) -> None:
        record(self.root, "md", GAPS_MS)
        n = len(GAPS_MS) + 1
        for speed in ("max", None, "MAX"):
            r = self.reader(speed, "md")
            self.assertIsNone(r.pacer)
            # Every frame at once: next() never holds one back.
            self.assertEqual(len(list(r)), n, speed)
        # Paced, only the first is due at once.
        self.assertEqual(len(list(self.reader(1, "md"))), 1)
        # Throughput of a max-speed merged read (a figure, not a limit):
        # 20000 frames written at once.
        lines = b"".join(b"%d\n" % i for i in range(20000))
        self.root.tape("write", "big", input=lines)
        r = self.reader("max", "big", "md")
        t = time.perf_counter()
        self.assertEqual(sum(1 for _ in r), 20000 + n)
        dt = time.perf_counter() - t
        print(f"\n  speed max: {(20000 + n) / dt / 1e3:.0f} k frames/s merged from 2 journals", end=" ")


class Speeds(unittest.TestCase):
    def test_bad_speeds_are_refused(self) -> None:
        for bad in ["0", "-1", "nan", "inf", "", "fast", "1x", 0, -2.5, float("nan"), float("inf"), True, b"1"]:
            with self.assertRaises(ValueError, msg=repr(bad)) as cm:
                tape.Reader(None, service="never", speed=bad)  # type: ignore[arg-type]
            self.assertIn("is not a speed: give a positive number", str(cm.exception))
            self.assertIn("or max", str(cm.exception))

    def test_good_speeds(self) -> None:
        for s, x in [("1", 1.0), ("0.5", 0.5), ("1e3", 1000.0), (10, 10.0), (2.5, 2.5), (" 4 ", 4.0)]:
            r = tape.Reader(None, service="never", speed=s)  # type: ignore[arg-type]
            assert r.pacer is not None
            self.assertEqual(r.pacer.speed, x)
            r.close()

    def test_pacer_moments_follow_the_first_frame(self) -> None:
        from tape.pace import Pacer, sleep_until

        t0 = 1_000_000_000_000
        p = Pacer(2.0)
        m0 = p.due_at(t0)
        self.assertEqual(p.due_at(t0 + 10_000_000), m0 + 5_000_000)
        self.assertEqual(p.due_at(t0 - 1), m0, "an older frame is due at once")
        p.start_at(t0, 5_000)
        self.assertEqual(p.due_at(t0 + 2_000), 6_000)
        p.restart()
        self.assertIsNone(p.origin)
        for gap in (0, 20_000, 300_000, 2_000_000):
            at = time.monotonic_ns() + gap
            sleep_until(at)
            self.assertGreaterEqual(time.monotonic_ns(), at, "woke before the moment")


if __name__ == "__main__":
    unittest.main()
