#!/usr/bin/env python3
"""Python-to-Rust one-way latency: a Python ``tape.Writer`` pinned to one
core writes 64-byte frames at a steady pace; the Rust example
``latency_reader`` pinned to the other core polls the journal and records
its receipt clock minus each frame's ``time_ns`` (both CLOCK_REALTIME).

    cargo build --release --example latency_reader
    python3 python/bench/latency.py [--frames 100000] [--rate 20000] [--runs 3]

The journal lives on a temporary folder in /dev/shm, written with
``service=False`` (the service is not on the data path). Prints one JSON
line per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import tape  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))


def one_run(reader_bin: str, frames: int, rate: float, size: int, writer_core: int, reader_core: int) -> dict:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="tape-py-lat-", dir=base)
    try:
        rd = subprocess.Popen(
            [reader_bin, d, "lat", str(frames), "--core", str(reader_core), "--warmup", str(min(1000, frames // 10))],
            stdout=subprocess.PIPE,
        )
        assert rd.stdout is not None
        if rd.stdout.readline().strip() != b"ready":
            raise SystemExit("latency_reader did not start")
        os.sched_setaffinity(0, {writer_core})
        payload = bytes(range(size % 256)) * (size // 256) + bytes(size % 256) if size >= 256 else bytes(size)
        with tape.Writer("lat", dir=d, page_size=64 << 20, service=False) as w:
            gap = 1e9 / rate
            t0 = time.perf_counter_ns()
            for i in range(frames):
                due = t0 + int(i * gap)
                while time.perf_counter_ns() < due:
                    pass
                w.write(1, payload)
            out, _ = rd.communicate(timeout=120)
        return json.loads(out.decode().strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=20_000, help="frames per second the writer paces itself to")
    ap.add_argument("--size", type=int, default=64, help="payload bytes")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reader", default=os.path.join(REPO, "target", "release", "examples", "latency_reader"))
    ap.add_argument("--writer-core", type=int, default=0)
    ap.add_argument("--reader-core", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(a.reader):
        raise SystemExit(f"{a.reader} not found: run `cargo build --release --example latency_reader`")
    print(f"checksum: {'crc32c extension' if tape.ACCELERATED else 'pure Python'}", file=sys.stderr)
    runs = []
    for _ in range(a.runs):
        r = one_run(a.reader, a.frames, a.rate, a.size, a.writer_core, a.reader_core)
        print(json.dumps(r))
        runs.append(r)
    med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in ("p50_ns", "p99_ns", "p999_ns", "max_ns")}
    med["lost"] = sum(r["lost"] for r in runs)
    print("median of runs:", json.dumps(med))


if __name__ == "__main__":
    main()
