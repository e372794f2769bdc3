"""The on-disk format of a tape journal, version 2 (and 1), as ``journal/FORMAT.md``
gives it: constants, page and frame headers, file names, and the checks a
reader makes on a page.

Everything here is plain data and :mod:`struct`; the mapping and the
publication word are handled in :mod:`tape.reader` and :mod:`tape.writer`.

Publication words (a frame's ``len``) are read and written through a
``memoryview`` cast to ``"I"``: CPython does one aligned native 32-bit load or
store for an element of such a view, which is what the format's
acquire/release rule needs on x86-64 (see :mod:`tape.writer`). Native order
must therefore be little-endian, and the package refuses to load elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import struct
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

if sys.byteorder != "little":  # pragma: no cover - no such box in use
    raise ImportError("tape journals are little-endian: this package needs a little-endian CPU")

#: ``magic`` of every page.
MAGIC = b"TAPEJRNL"
#: Format version this package writes (pages that grow, FORMAT.md "Page
#: sizes"); it also reads and continues journals of :data:`VERSION_1`.
VERSION = 2
#: The first version: every page of a journal has one size; read and
#: continued in that version, never converted.
VERSION_1 = 1
#: Size of the page header, and offset of a page's first frame.
PAGE_HEADER_LEN = 64
#: Size of a frame header.
FRAME_HEADER_LEN = 48
#: ``len`` value of the end-of-page marker.
END_OF_PAGE = 0xFFFFFFFF
#: Bytes the writer keeps free at the end of every page for the marker.
MARKER_ROOM = 8
#: Offset of the page header's ``flags`` word.
PAGE_FLAGS_OFFSET = 44
#: Bit of ``flags`` in page 1: the journal's first frame has a seq above 1
#: on purpose (a replica of a pruned journal); without it page 1 starts at 1.
PAGE_FLAG_FIRST_SEQ_ANY = 1
#: Offset of the page header's ``max_page_size`` (version 2).
MAX_PAGE_SIZE_OFFSET = 48
#: Smallest and largest page size, and the default largest page size.
MIN_PAGE_SIZE = 1 << 20
MAX_PAGE_SIZE = 1 << 30
DEFAULT_PAGE_SIZE = 128 << 20
#: Size of a version-2 journal's page 1; each next page is twice the one
#: before, up to the journal's largest.
FIRST_PAGE_SIZE = MIN_PAGE_SIZE

#: Page header: magic, version, header_len, page_size, page_no, created_ns,
#: frame_header_len, flags, max_page_size (the 8 reserved bytes follow,
#: zeros; in version 1 ``max_page_size`` is reserved too, 0).
PAGE_HEADER = struct.Struct("<8sIIQQqIIQ")
#: Frame header after ``len`` (offset 4 to 48): msg_type, seq, time_ns,
#: source, dest, corr, crc, flags.
FRAME_REST = struct.Struct("<IQqIIQII")
#: The whole frame header, ``len`` first.
FRAME_HEADER = struct.Struct("<IIQqIIQII")

assert PAGE_HEADER.size == 56
assert FRAME_REST.size == FRAME_HEADER_LEN - 4
assert FRAME_HEADER.size == FRAME_HEADER_LEN

_NAME = re.compile(r"^[A-Za-z0-9_\-.]{1,64}$")


class TapeError(Exception):
    """Base of every error this package raises."""


class FormatError(TapeError):
    """A page or frame breaks ``journal/FORMAT.md``: damage, or not a tape
    file. The message names the file and, for a frame, the offset."""

    def __init__(self, path: str, message: str, offset: Optional[int] = None) -> None:
        self.path = path
        self.offset = offset
        where = path if offset is None else f"{path} at offset {offset}"
        super().__init__(f"{where}: {message}")


def align8(n: int) -> int:
    """``n`` rounded up to a multiple of 8."""
    return (n + 7) & ~7


def check_name(name: str) -> None:
    """Raises ``ValueError`` unless ``name`` is a valid journal name: 1 to 64
    of ``A-Z a-z 0-9 _ - .``, not starting with ``.``."""
    if not _NAME.match(name) or name.startswith("."):
        raise ValueError(
            f"bad journal name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ - . and do not start with '.'"
        )


def check_page_size(page_size: int) -> None:
    """Raises ``ValueError`` unless ``page_size`` is a power of two from 1 MiB
    to 1 GiB."""
    if page_size < MIN_PAGE_SIZE or page_size > MAX_PAGE_SIZE or page_size & (page_size - 1):
        raise ValueError(
            f"bad page size {page_size}: use a power of two from {MIN_PAGE_SIZE} (1 MiB) to {MAX_PAGE_SIZE} (1 GiB)"
        )


def max_payload(page_size: int) -> int:
    """The largest payload a page of ``page_size`` bytes holds."""
    return page_size - PAGE_HEADER_LEN - MARKER_ROOM - FRAME_HEADER_LEN


#: A journal's geometry: ``(version, max_page_size)``, the same in every page.
Geometry = Tuple[int, int]


def first_page_size(geo: Geometry) -> int:
    """Size of page 1 of a journal of geometry ``geo`` (FORMAT.md, "Page sizes")."""
    version, top = geo
    return top if version == VERSION_1 else min(FIRST_PAGE_SIZE, top)


def next_page_size(geo: Geometry, before: int) -> int:
    """Size of the page after one of ``before`` bytes, made before the frame
    that goes there is known: twice it, at most the largest."""
    return min(before * 2, geo[1])


def page_size_for(geo: Geometry, size: int, frame: int) -> int:
    """The smallest power of two from ``size`` that holds a frame of
    ``frame`` bytes (header, payload, padding) at offset 64 with the
    marker's room, at most the largest page size."""
    while size < PAGE_HEADER_LEN + frame + MARKER_ROOM and size < geo[1]:
        size *= 2
    return size


def page_file_name(name: str, page_no: int) -> str:
    """``<name>.<page_no:08>.journal``."""
    return f"{name}.{page_no:08d}.journal"


def tmp_file_name(name: str, page_no: int) -> str:
    """``.<name>.<page_no:08>.journal.tmp``: a page being built."""
    return f".{name}.{page_no:08d}.journal.tmp"


def lock_file_name(name: str) -> str:
    """``<name>.lock``: the writer lock."""
    return f"{name}.lock"


def page_numbers(directory: str, name: str) -> List[int]:
    """The page numbers of journal ``name`` in ``directory``, ascending
    (empty when the folder or the journal does not exist)."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    prefix = name + "."
    out = []
    for e in entries:
        if not e.startswith(prefix) or not e.endswith(".journal"):
            continue
        mid = e[len(prefix) : -len(".journal")]
        # Only the canonical name is a page: the number, from 1, zero-padded
        # to 8 digits (md.17.journal and md.00000000.journal are not pages).
        if mid and mid.isdigit() and mid.isascii() and int(mid) >= 1 and mid == f"{int(mid):08d}":
            out.append(int(mid))
    out.sort()
    return out


@dataclass(frozen=True)
class PageHeader:
    """The 64-byte header at offset 0 of every page file."""

    page_size: int
    page_no: int
    created_ns: int
    version: int = VERSION
    header_len: int = PAGE_HEADER_LEN
    frame_header_len: int = FRAME_HEADER_LEN
    flags: int = 0
    #: Version 2: the journal's largest page size (0 when made here: the
    #: page's own size). Version 1: 0.
    max_page_size: int = 0

    @property
    def geometry(self) -> Geometry:
        """``(version, largest page size)``; in version 1 the page's own size."""
        if self.version == VERSION_1:
            return (self.version, self.page_size)
        return (self.version, self.max_page_size or self.page_size)

    @property
    def may_be_empty(self) -> bool:
        """Whether this page may end at offset 64 with no frame (a version-2
        page smaller than the journal's largest: it was too small for the
        frame after it)."""
        return self.version != VERSION_1 and self.page_size < self.geometry[1]

    def pack(self) -> bytes:
        """The 64 bytes of this header."""
        return (
            PAGE_HEADER.pack(
                MAGIC,
                self.version,
                self.header_len,
                self.page_size,
                self.page_no,
                self.created_ns,
                self.frame_header_len,
                self.flags,
                0 if self.version == VERSION_1 else self.geometry[1],
            )
            + bytes(8)
        )

    @staticmethod
    def parse(buf: bytes, path: str) -> "PageHeader":
        """Parses and checks the fields that do not depend on the file (magic,
        version, header and frame header sizes, page size)."""
        if len(buf) < PAGE_HEADER_LEN:
            raise FormatError(path, f"file is {len(buf)} bytes, shorter than a page header: not a tape page")
        magic, version, header_len, page_size, page_no, created_ns, fhl, flags, top = PAGE_HEADER.unpack_from(buf, 0)
        if magic != MAGIC:
            raise FormatError(path, f"bad magic {magic!r}, expected {MAGIC!r}: not a tape page")
        if version not in (VERSION_1, VERSION):
            newer = " or a newer one" if version > VERSION else ""
            raise FormatError(
                path,
                f"journal format version {version}, this reader reads versions {VERSION_1} and {VERSION}: read it with the tape that wrote it{newer}",
            )
        if header_len != PAGE_HEADER_LEN:
            raise FormatError(path, f"header_len {header_len}, expected {PAGE_HEADER_LEN}")
        if fhl != FRAME_HEADER_LEN:
            raise FormatError(path, f"frame_header_len {fhl}, expected {FRAME_HEADER_LEN}")
        try:
            check_page_size(page_size)
        except ValueError as e:
            raise FormatError(path, str(e)) from None
        if version == VERSION_1:
            top = 0
        else:
            try:
                check_page_size(top)
            except ValueError as e:
                raise FormatError(path, f"max_page_size: {e}") from None
            if page_size > top:
                raise FormatError(path, f"page_size {page_size} is larger than the journal's max_page_size {top}")
        return PageHeader(page_size, page_no, created_ns, version, header_len, fhl, flags, top)


def check_page_header(buf: bytes, path: str, page_no: int, size: int, geometry: Optional[Geometry] = None) -> PageHeader:
    """Checks the header bytes ``buf`` of page file ``path``, ``size`` bytes
    long: every rule of FORMAT.md's page header section, including
    ``page_no`` equal to the file name's, ``page_size`` equal to the file's
    length, and (when given) the journal's ``(version, max_page_size)``."""
    h = PageHeader.parse(buf, path)
    if h.page_no != page_no:
        raise FormatError(path, f"page_no {h.page_no} in the header, {page_no} in the file name")
    if h.page_size != size:
        raise FormatError(path, f"page_size {h.page_size} in the header, file is {size} bytes")
    if geometry is not None and h.geometry != geometry:
        if geometry[0] != h.version:
            raise FormatError(path, f"format version {h.version}, the journal's other pages are version {geometry[0]}")
        if h.version == VERSION_1:
            raise FormatError(path, f"page_size {h.page_size}, the journal's other pages are {geometry[1]}")
        raise FormatError(path, f"max_page_size {h.geometry[1]}, the journal's other pages say {geometry[1]}")
    return h


def read_page_header(path: str, page_no: int, geometry: Optional[Geometry] = None) -> Tuple[PageHeader, int]:
    """Reads and checks the header of page file ``path`` (see
    :func:`check_page_header`). Returns the header and the file's length."""
    with open(path, "rb") as f:
        buf = f.read(PAGE_HEADER_LEN)
        size = os.fstat(f.fileno()).st_size
    return check_page_header(buf, path, page_no, size, geometry), size


def map_page(path: str, page_no: int, geometry: Optional[Geometry], writable: bool) -> Tuple[int, mmap.mmap, int, PageHeader]:
    """Opens page file ``path``, takes its shared page lock (FORMAT.md,
    "Pruning"; held while the descriptor stays open), maps it shared,
    read-only or read-write, at the size the file (and its header) has,
    and checks its header (see :func:`check_page_header`). Returns the
    descriptor, which the caller closes when it unmaps, the mapping, the
    file's length and the header."""
    fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)
    try:
        hold_page(fd, path)
        size = os.fstat(fd).st_size
        if size < PAGE_HEADER_LEN:
            raise FormatError(path, f"file is {size} bytes, shorter than a page header: not a tape page")
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    except BaseException:
        os.close(fd)
        raise
    try:
        h = check_page_header(mm[:PAGE_HEADER_LEN], path, page_no, size, geometry)
    except BaseException:
        mm.close()
        os.close(fd)
        raise
    return fd, mm, size, h


def hold_page(fd: int, path: str) -> None:
    """Takes the shared page lock on an open page file, as FORMAT.md
    ("Pruning") asks of every program that maps a page: ``flock(LOCK_SH)``,
    waiting up to 2 s while a pruner holds the exclusive one, kept for as
    long as the descriptor stays open. Raises :class:`FileNotFoundError`
    when the page was deleted meanwhile (list the pages again)."""
    give_up = time.monotonic() + 2.0
    pause = 0.00005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > give_up:
                raise TapeError(f"{path}: another process holds the page's exclusive lock (a prune that does not finish)")
            time.sleep(pause)
            pause = min(pause * 2, 0.01)
    if os.fstat(fd).st_nlink == 0:
        raise FileNotFoundError(errno.ENOENT, "the page was pruned", path)
