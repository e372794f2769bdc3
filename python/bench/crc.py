#!/usr/bin/env python3
"""Speed of the payload checksum: ``python3 python/bench/crc.py``."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tape.checksum import ACCELERATED, crc32c, crc32c_pure  # noqa: E402


def main() -> None:
    small = bytes(range(64))
    n = 50_000
    t0 = time.perf_counter()
    for _ in range(n):
        crc32c_pure(small)
    dt = time.perf_counter() - t0
    print(f"pure Python, 64 B: {dt / n * 1e6:.2f} us each")
    big = os.urandom(4 << 20)
    t0 = time.perf_counter()
    crc32c_pure(big)
    dt = time.perf_counter() - t0
    print(f"pure Python, 4 MiB: {len(big) / dt / 1e6:.1f} MB/s")
    if ACCELERATED:
        t0 = time.perf_counter()
        crc32c(big)
        dt = time.perf_counter() - t0
        print(f"crc32c extension, 4 MiB: {len(big) / dt / 1e6:.1f} MB/s")


if __name__ == "__main__":
    main()
