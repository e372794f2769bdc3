#!/usr/bin/env python3
"""Python read throughput: frames per second that ``tape.Reader.next()``
returns from one journal of 64-byte payloads already on disk (tmpfs).

    python3 python/bench/read_throughput.py [--frames 1000000] [--runs 5]

The journal is written once (by the Python writer, ``service=False``, in a
temporary folder in /dev/shm); each run then reads all of it with a new
Reader: ``next()`` alone, ``next()`` plus ``bytes(payload)``, and with
``verify_crc=True``. Prints frames/s per run and the median.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import tape  # noqa: E402


def read_all(d: str, copy: bool, crc: bool) -> tuple:
    r = tape.Reader(service="never", start="start", verify_crc=crc)
    r.add_journal(d, "tp")
    nxt = r.next
    n = 0
    t0 = time.perf_counter()
    if copy:
        while True:
            f = nxt()
            if f is None:
                break
            bytes(f.payload)
            n += 1
    else:
        while nxt() is not None:
            n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--crc-frames", type=int, default=100_000, help="frames read in the verify_crc case")
    a = ap.parse_args()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="tape-py-tp-", dir=base)
    try:
        t0 = time.perf_counter()
        with tape.Writer("tp", dir=d, page_size=64 << 20, service=False) as w:
            payload = bytes(range(a.size))
            for _ in range(a.frames):
                w.write(1, payload)
        wt = time.perf_counter() - t0
        print(f"write: {a.frames} frames of {a.size} B in {wt:.2f} s: {a.frames / wt:,.0f} frames/s "
              f"(checksum: {'crc32c extension' if tape.ACCELERATED else 'pure Python'})")
        for label, copy, crc in (("next()", False, False), ("next() + bytes(payload)", True, False)):
            rates = []
            for _ in range(a.runs):
                n, dt = read_all(d, copy, crc)
                assert n == a.frames, n
                rates.append(n / dt)
            print(f"read {label}: median {statistics.median(rates):,.0f} frames/s "
                  f"(runs: {', '.join(f'{x:,.0f}' for x in rates)})")
        # verify_crc: only the first crc-frames, it is slow in pure Python.
        r = tape.Reader(service="never", start="start", verify_crc=True)
        r.add_journal(d, "tp")
        t0 = time.perf_counter()
        for _ in range(min(a.crc_frames, a.frames)):
            assert r.next() is not None
        dt = time.perf_counter() - t0
        print(f"read next() with verify_crc: {min(a.crc_frames, a.frames) / dt:,.0f} frames/s")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
