"""CRC32C (Castagnoli), the checksum of a frame's payload.

The iSCSI CRC: polynomial 0x1EDC6F41 (0x82F63B78 reflected), reflected input
and output, initial value and final xor 0xFFFFFFFF. ``crc32c(b"123456789")``
is ``0xE3069283``.

Pure Python, table-driven ("slice-by-8": eight 256-entry tables, eight bytes
per loop turn). It is slow next to the SSE4.2 instruction the Rust side uses
(hundreds of times slower): on the 2-vCPU development box, under load,
4 to 6 µs for a 64-byte payload and 10 to 20 MB/s on large ones
(``python3 python/bench/crc.py``). When the optional
`crc32c` package from PyPI is installed, :func:`crc32c` uses it instead
(:data:`ACCELERATED` tells which one is in use); nothing else needs it.
"""

from __future__ import annotations

from typing import Callable, List, Union

Bytes = Union[bytes, bytearray, memoryview]

_POLY = 0x82F63B78


def _tables() -> List[List[int]]:
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(p >> 8) ^ t0[p & 0xFF] for p in prev])
    return tables


_T = _tables()


def crc32c_pure(data: Bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` in pure Python.

    ``crc`` continues a previous result (``crc32c_pure(b, crc32c_pure(a))``
    equals ``crc32c_pure(a + b)``).
    """
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    mv = memoryview(data).cast("B")
    crc ^= 0xFFFFFFFF
    n = len(mv)
    end = n & ~7
    if end:
        # Native order is little-endian on every platform tape supports
        # (the package refuses others, see tape.format).
        for w in mv[:end].cast("Q"):
            x = crc ^ (w & 0xFFFFFFFF)
            y = w >> 32
            crc = (
                t7[x & 0xFF]
                ^ t6[(x >> 8) & 0xFF]
                ^ t5[(x >> 16) & 0xFF]
                ^ t4[x >> 24]
                ^ t3[y & 0xFF]
                ^ t2[(y >> 8) & 0xFF]
                ^ t1[(y >> 16) & 0xFF]
                ^ t0[y >> 24]
            )
    for b in mv[end:]:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _accelerated() -> "Callable[[Bytes], int] | None":
    try:
        import crc32c as _ext  # type: ignore[import-not-found]
    except ImportError:
        return None
    fn = getattr(_ext, "crc32c", None)
    if fn is None or fn(b"123456789") != 0xE3069283:
        return None
    return fn  # type: ignore[no-any-return]


_EXT = _accelerated()

#: True when the optional ``crc32c`` extension module is in use.
ACCELERATED: bool = _EXT is not None


def crc32c(data: Bytes) -> int:
    """CRC32C of ``data``: the extension module's when installed, else
    :func:`crc32c_pure`."""
    if _EXT is not None:
        return int(_EXT(data))
    return crc32c_pure(data)
