"""The :class:`Writer`: appends frames to a journal, the only one doing so.

A ``Writer`` follows ``journal/FORMAT.md`` ("The writer lock", "Recovery",
"Publication") and registers with the service as ``service/PROTOCOL.md``
says, so Rust writers, readers and ``tape`` treat it as one of their own:

1. It registers the journal with the service of its root (``register_writer``)
   and keeps that connection open for its whole life (a thread registers
   again if the service restarts). Another writer: :class:`~tape.HeldError`
   naming its pid, and nothing is created.
2. It takes the exclusive ``flock`` on ``<name>.lock`` (the lock the Rust
   writer takes too: the kernel drops it when the process dies, even by
   SIGKILL) and writes its pid there.
3. It finds the tail, checking the last page's frames, zeroes whatever a
   crashed writer left past it, and continues the sequence (recovery).

Publication: :meth:`Writer.write` fills every header field but ``len`` and
the payload, then stores ``len`` last, through a ``memoryview`` of the page
cast to ``"I"``. CPython turns that element assignment into one aligned
32-bit store. On x86-64 (TSO) stores become visible to other cores in
program order, and the interpreter cannot move the store of ``len`` before
the earlier ones: each is a separate call into C on memory the C compiler
cannot see through. So that plain store is a release store, and a reader
that sees ``len`` sees the whole frame. This holds only on x86-64; on a CPU
with a weaker memory order (ARM, POWER) a frame could be seen before its
payload, so the writer refuses to start there.

Speed: a 64-byte frame costs 8 to 10 µs on the development box (0.1 M
frames/s), more than half of it the pure-Python CRC32C (install the
``crc32c`` package to speed that up). The clock is read after the checksum,
right before the header is written and ``len`` published. The next page is
made by a thread once the writer is half way through the current one, so a
page switch normally finds it ready.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import platform
import struct
import threading
import time
from typing import Optional, Tuple, Union

from .bell import Bell, register_writer
from .checksum import crc32c
from .format import (
    DEFAULT_PAGE_SIZE,
    END_OF_PAGE,
    VERSION,
    VERSION_1,
    FRAME_HEADER_LEN,
    FRAME_REST,
    MARKER_ROOM,
    PAGE_FLAG_FIRST_SEQ_ANY,
    PAGE_FLAGS_OFFSET,
    PAGE_HEADER_LEN,
    FormatError,
    Geometry,
    PageHeader,
    TapeError,
    align8,
    check_name,
    check_page_size,
    lock_file_name,
    first_page_size,
    map_page,
    max_payload,
    next_page_size,
    page_size_for,
    page_file_name,
    page_numbers,
    tmp_file_name,
)
from .durable import IntervalSyncer, PageSyncer, SyncStats, parse_sync, sync_page
from .service import HeldError, Lease, default_root, journal_dir

Bytes = Union[bytes, bytearray, memoryview]

#: Linux ``MADV_POPULATE_WRITE`` (5.14+): pre-fault a new page file.
_MADV_POPULATE_WRITE = 23

_X86_64 = ("x86_64", "amd64", "AMD64")


def _check_cpu() -> None:
    if platform.machine() not in _X86_64:
        raise TapeError(
            f"the Python writer publishes frames with plain stores, a release store only on x86-64; "
            f"this CPU is {platform.machine()}: use the Rust writer here"
        )


def create_page(directory: str, name: str, page_no: int, geometry: Geometry, page_size: int) -> str:
    """Makes page ``page_no`` of ``page_size`` bytes in a journal of
    ``geometry`` (its version and largest page size) as FORMAT.md says:
    build it under its ``.tmp``
    name (sized with ``posix_fallocate``, header written, memory pre-faulted),
    then rename it into place. Returns its path. Only the lock holder may
    call this. On failure (e.g. a full disk) nothing is left behind."""
    final = os.path.join(directory, page_file_name(name, page_no))
    tmp = os.path.join(directory, tmp_file_name(name, page_no))
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        try:
            os.posix_fallocate(fd, 0, page_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, page_size)
        version, top = geometry
        header = PageHeader(
            page_size=page_size,
            page_no=page_no,
            created_ns=time.time_ns(),
            version=version,
            max_page_size=0 if version == VERSION_1 else top,
        ).pack()
        os.pwrite(fd, header, 0)
        try:
            with mmap.mmap(fd, page_size) as mm:
                mm.madvise(_MADV_POPULATE_WRITE)
        except (OSError, ValueError):
            pass  # an old kernel: the pages fault in on first write instead
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)
    return final


class _Page:
    """One page mapped read-write."""

    __slots__ = ("path", "page_no", "size", "mm", "mv", "u32", "fd", "geometry", "may_be_empty")

    def __init__(self, path: str, page_no: int, geometry: Optional[Geometry]) -> None:
        self.fd = -1
        # Holds the shared page lock (FORMAT.md, "Pruning") while mapped.
        self.fd, mm, size, h = map_page(path, page_no, geometry, writable=True)
        self.path = path
        self.page_no = page_no
        self.size = size
        self.geometry = h.geometry
        self.may_be_empty = h.may_be_empty
        self.mm = mm
        self.mv = memoryview(mm)
        #: The page as 32-bit words: ``u32[off >> 2]`` is one aligned load
        #: or store, for the publication word.
        self.u32 = self.mv.cast("I")

    def release(self) -> None:
        """Unmaps the page, or leaves that to the garbage collector while a
        view of it is still alive somewhere; drops the page lock."""
        try:
            self.u32.release()
            self.mv.release()
            self.mm.close()
        except BufferError:
            pass
        self._unlock()

    def _unlock(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self._unlock()


class Claim:
    """Room for one frame's payload, filled in place, published by
    :meth:`commit`. From :meth:`Writer.claim`."""

    __slots__ = ("_writer", "payload", "_off", "_n", "_done")

    def __init__(self, writer: "Writer", off: int, n: int) -> None:
        self._writer = writer
        self._off = off
        self._n = n
        self._done = False
        page = writer._page
        assert page is not None
        #: The payload bytes, writable, straight in the page.
        self.payload: memoryview = page.mv[off + FRAME_HEADER_LEN : off + FRAME_HEADER_LEN + n]

    def commit(self, msg_type: int, *, source: Optional[int] = None, dest: Optional[int] = None, corr: int = 0) -> int:
        """Publishes the frame; returns its sequence number."""
        if self._done:
            raise TapeError("this claim was already committed")
        w = self._writer
        if w._claim is not self:
            raise TapeError("this claim was given up: a later claim or write took its place")
        self._done = True
        w._claim = None
        try:
            return w._publish(self._off, msg_type, self.payload, source, dest, corr)
        finally:
            self.payload.release()


class Writer:
    """The one writer of journal ``name``.

    :param name: the journal name (1 to 64 of ``A-Z a-z 0-9 _ - .``).
    :param root: the tape root (default ``$TAPE_ROOT``, else ``/tmp/trading``).
    :param dir: the journal's folder (default ``<root>/journal``).
    :param page_size: the largest page size when this writer creates the
        journal (a power of two, 1 MiB to 1 GiB): its pages grow from 1 MiB
        to it, each twice the one before (FORMAT.md, "Page sizes"); an
        existing journal keeps its own.
    :param service: register with the service of ``root`` (default). Without
        it only the lock keeps other writers out and the service does not
        know this writer.
    :param source: ``source`` field of frames written without one.
    :param dest: ``dest`` field of frames written without one (0: everyone).
    :param recover_crc: check the CRC of every frame of the last page when
        opening (FORMAT.md recovery step 2). Pure-Python CRC takes seconds on
        a full 128 MiB page; ``False`` checks bounds and sequence only.
    :param sync: the durability policy, as ``tape write --sync``:
        ``"none"`` (default: the kernel writes back in its own time; safe
        against any process crash), ``"page"`` (each page synced when the
        writer leaves it, and the last at :meth:`close`) or
        ``"interval=MS"`` (what was published synced every MS ms; nothing
        when idle). See :mod:`tape.durable`; :attr:`sync_stats` counts the
        syncs and failures. Nothing is added to :meth:`write`.

    Raises :class:`~tape.NotRunning` when no service runs,
    :class:`~tape.HeldError` when another writer holds the journal,
    :class:`~tape.FormatError` when the journal is damaged where it would be
    continued, ``ValueError`` for a bad name, page size or sync policy.
    """

    def __init__(
        self,
        name: str,
        *,
        root: Optional[str] = None,
        dir: Optional[str] = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        service: bool = True,
        source: int = 0,
        dest: int = 0,
        recover_crc: bool = True,
        sync: str = "none",
    ) -> None:
        _check_cpu()
        check_name(name)
        check_page_size(page_size)
        self._sync_kind, sync_ms = parse_sync(sync)
        #: What this writer's syncs did (:class:`~tape.durable.SyncStats`).
        self.sync_stats = SyncStats()
        self._page_syncer: Optional[PageSyncer] = None
        self._interval: Optional[IntervalSyncer] = None
        self.name = name
        self.root = root or default_root()
        self.dir = os.path.abspath(dir or journal_dir(self.root))
        self.source = source
        self.dest = dest
        self._lease: Optional[Lease] = None
        self._lock_fd = -1
        self._page: Optional[_Page] = None
        self._claim: Optional[Claim] = None
        self._bell: Optional[Bell] = None
        self._next: Optional[threading.Thread] = None
        self._closed = False
        try:
            if service:
                self._lease = Lease.writer(self.root, self.dir, name)
            os.makedirs(self.dir, exist_ok=True)
            self._lock()
            self._recover(page_size, recover_crc)
            assert self._page is not None
            if self._sync_kind == "page":
                self._page_syncer = PageSyncer(name, self.dir, self.sync_stats)
            elif self._sync_kind == "interval":
                self._interval = IntervalSyncer(
                    name, self.dir, lambda path, no, g=self._geometry: _Page(path, no, g),
                    self._page.page_no, self._off, sync_ms, self.sync_stats,
                )
            register_writer()
            try:
                self._bell = Bell.create(self.dir, name)
            except OSError:
                self._bell = None  # readers poll: FORMAT.md, "The doorbell"

        except BaseException:
            self.close()
            raise

    # -- opening ----------------------------------------------------------

    def _lock(self) -> None:
        path = os.path.join(self.dir, lock_file_name(self.name))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                pid = int(text) if text.isdigit() else 0
            finally:
                os.close(fd)
            raise HeldError(self.name, pid, f", which holds {path}") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _path(self, page_no: int) -> str:
        return os.path.join(self.dir, page_file_name(self.name, page_no))

    def _recover(self, page_size: int, check_crc: bool) -> None:
        pages = page_numbers(self.dir, self.name)
        for i, no in enumerate(pages):
            if no != pages[0] + i:
                missing = self._path(pages[0] + i)
                raise FormatError(missing, "page file is missing from the middle of the journal: refusing to append")
        if not pages:
            self._geometry: Geometry = (VERSION, page_size)
            create_page(self.dir, self.name, 1, self._geometry, first_page_size(self._geometry))
            self._page = _Page(self._path(1), 1, self._geometry)
            self._page_size = self._page.size
            self._off = PAGE_HEADER_LEN
            self._seq = 1
            self._last_time = 0
            return
        first = _Page(self._path(pages[0]), pages[0], None)
        # An existing journal keeps its version and largest page size (a
        # version-1 journal goes on in version 1, with pages of its size).
        self._geometry = first.geometry
        # Step 1: from the last page, skip spares (first len 0).
        i = len(pages) - 1
        page = None
        while True:
            page = first if i == 0 else _Page(self._path(pages[i]), pages[i], self._geometry)
            if i == 0 or page.u32[PAGE_HEADER_LEN >> 2] != 0:
                break
            page.release()
            i -= 1
        if page is not first:
            first.release()
        # Step 2 and 3: walk the frames of that page, checking them.
        off = PAGE_HEADER_LEN
        seq = 0
        last_time = 0
        size = page.size
        while True:
            ln = page.u32[off >> 2]
            if ln == 0:
                break
            if ln == END_OF_PAGE:
                # The writer makes the next page before it writes the
                # marker, so it exists: if it does not, someone deleted it
                # and whatever frames it held.
                nxt = page.page_no + 1
                path = self._path(nxt)
                if off == PAGE_HEADER_LEN and not page.may_be_empty:
                    raise FormatError(
                        page.path,
                        "an end-of-page marker where the page's first frame belongs (every frame fits a page of the journal's largest size): refusing to append",
                        off,
                    )
                if not os.path.exists(path):
                    lost = f"frames after seq {seq} may be lost" if seq else "frames may be lost"
                    raise FormatError(
                        page.path,
                        f"an end-of-page marker, but the next page {page_file_name(self.name, nxt)} is missing: {lost}: refusing to append",
                        off,
                    )
                page.release()
                page = _Page(path, nxt, self._geometry)
                off = PAGE_HEADER_LEN
                if page.u32[off >> 2] != 0:
                    raise FormatError(page.path, "page after an end-of-page marker already has frames and was not found as the tail", off)
                break
            if ln < FRAME_HEADER_LEN or off + align8(ln) + MARKER_ROOM > size:
                raise FormatError(page.path, f"damaged frame: len {ln} does not fit the page: refusing to append", off)
            _t, fseq, ftime, _s, _d, _c, fcrc, _f = FRAME_REST.unpack_from(page.mm, off + 4)
            if seq and fseq != seq + 1:
                raise FormatError(page.path, f"damaged frame: seq {fseq} after {seq}: refusing to append", off)
            if seq and ftime < last_time:
                raise FormatError(page.path, f"damaged frame: time {ftime} older than the frame before ({last_time}): refusing to append", off)
            if check_crc:
                got = crc32c(page.mv[off + FRAME_HEADER_LEN : off + ln])
                if got != fcrc:
                    raise FormatError(page.path, f"damaged frame: crc {got:#010x}, header says {fcrc:#010x}: refusing to append", off)
            seq = fseq
            last_time = ftime
            off += align8(ln)
        if seq == 0 and page.page_no > pages[0]:
            # The tail is at the start of a page after an end-of-page marker:
            # the sequence goes on from the last frame of the page before.
            seq, last_time = self._last_of(page.page_no - 1)
        if seq == 0 and pages[0] > 1:
            page.release()
            raise FormatError(
                self._path(pages[0]),
                f"the first page on disk is page {pages[0]} but no page has a frame: the pages before it, which held the journal's last frames, were deleted, so its next sequence number is unknown: refusing to append",
                PAGE_HEADER_LEN,
            )
        self._check_first_seq(pages[0])
        # The pages after the tail page (spares): no frame may be there past
        # a hole (FORMAT.md, "Holes"), and whatever else is there goes.
        for no in pages:
            if no > page.page_no:
                spare = _Page(self._path(no), no, self._geometry)
                try:
                    _refuse_frame_past_hole(spare, seq + 1 if seq else 0, last_time if seq else None, page.path, off)
                    _zero_tail(spare, PAGE_HEADER_LEN)
                finally:
                    spare.release()
        # Step 4: zero whatever a killed writer left past the tail.
        _zero_tail(page, off)
        self._page = page
        self._page_size = page.size
        self._off = off
        self._seq = seq + 1
        self._last_time = last_time

    def _check_first_seq(self, first_no: int) -> None:
        """FORMAT.md, "The first sequence number": no frame has seq 0, and
        page 1's first frame has seq 1 unless page 1's header has flag bit
        0 (a replica's writer sets it). The first frame is in a later page
        when the first was skipped as too small for it."""
        p = _Page(self._path(first_no), first_no, self._geometry)
        try:
            flags = p.u32[PAGE_FLAGS_OFFSET >> 2]
            q, no = p, first_no
            while q.u32[PAGE_HEADER_LEN >> 2] == END_OF_PAGE:
                no += 1
                if not os.path.exists(self._path(no)):
                    return
                if q is not p:
                    q.release()
                q = _Page(self._path(no), no, self._geometry)
            ln = q.u32[PAGE_HEADER_LEN >> 2]
            if ln == 0:
                return
            _t, fseq, *_ = FRAME_REST.unpack_from(q.mm, PAGE_HEADER_LEN + 4)
            if q is not p:
                q.release()
            if fseq == 0:
                raise FormatError(p.path, "sequence 0: sequence numbers start at 1: refusing to append", PAGE_HEADER_LEN)
            if first_no == 1 and fseq != 1 and not flags & PAGE_FLAG_FIRST_SEQ_ANY:
                raise FormatError(
                    p.path,
                    f"the journal's first frame has sequence {fseq} where 1 was expected (page 1's header does not say that the journal starts later, as a replica's may): refusing to append",
                    PAGE_HEADER_LEN,
                )
        finally:
            p.release()

    def _last_of(self, page_no: int) -> Tuple[int, int]:
        """``(seq, time_ns)`` of the last frame of page ``page_no``, or of
        the page before when it was skipped as too small (no frame)."""
        p = _Page(self._path(page_no), page_no, self._geometry)
        if p.u32[PAGE_HEADER_LEN >> 2] == END_OF_PAGE and page_no > 1 and os.path.exists(self._path(page_no - 1)):
            p.release()
            return self._last_of(page_no - 1)
        try:
            off = PAGE_HEADER_LEN
            seq = t = 0
            while True:
                ln = p.u32[off >> 2]
                if ln == 0 or ln == END_OF_PAGE:
                    return seq, t
                if ln < FRAME_HEADER_LEN or off + align8(ln) + MARKER_ROOM > p.size:
                    raise FormatError(p.path, f"damaged frame: len {ln} does not fit the page", off)
                _t, seq, t, *_ = FRAME_REST.unpack_from(p.mm, off + 4)
                off += align8(ln)
        finally:
            p.release()

    # -- appending --------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The sequence number the next frame gets."""
        return self._seq

    @property
    def page_size(self) -> int:
        """Size of the page the writer writes now (pages grow to
        :attr:`max_page_size`)."""
        return self._page_size

    @property
    def max_page_size(self) -> int:
        """The journal's largest page size."""
        return self._geometry[1]

    @property
    def page_no(self) -> int:
        """The page the next frame goes to (or the one before it, at a switch)."""
        assert self._page is not None
        return self._page.page_no

    @property
    def sync(self) -> str:
        """The durability policy (``"none"``, ``"page"``, ``"interval=MS"``)."""
        if self._sync_kind == "interval":
            assert self._interval is not None
            return f"interval={round(self._interval.every * 1000)}"
        return self._sync_kind

    @property
    def registered(self) -> bool:
        """Whether the service has this writer registered now."""
        return self._lease is not None and self._lease.registered

    def _room(self, n: int) -> int:
        """Offset where a frame with an ``n``-byte payload goes, switching
        pages first if it does not fit."""
        if self._closed:
            raise TapeError("this writer is closed")
        if self._claim is not None:
            self._abandon()
        size = align8(FRAME_HEADER_LEN + n)
        off = self._off
        if off + size + MARKER_ROOM > self._page_size:
            top = self._geometry[1]
            if n > max_payload(top):
                raise ValueError(
                    f"payload of {n} bytes does not fit the journal's largest page of {top}: at most {max_payload(top)}"
                )
            self._switch(size)
            off = self._off
        elif off >= self._page_size >> 1 and self._next is None:
            self._prepare(self._page.page_no + 1)  # type: ignore[union-attr]
        return off

    def write(
        self,
        msg_type: int,
        payload: Bytes,
        *,
        source: Optional[int] = None,
        dest: Optional[int] = None,
        corr: int = 0,
        not_after: Optional[int] = None,
    ) -> int:
        """Appends one frame and publishes it; returns its sequence number.

        ``source`` and ``dest`` default to the writer's; ``corr`` is the
        correlation id (0: none). ``time_ns`` is the clock
        (``CLOCK_REALTIME``) read just before publication, never older than
        the previous frame's. With ``not_after`` (ns), the frame is published
        only if that ``time_ns`` is at most ``not_after``; else nothing is
        written and the result is 0 (a reply never written past its
        request's deadline).
        """
        n = len(payload)
        off = self._room(n)
        page = self._page
        assert page is not None
        page.mm[off + FRAME_HEADER_LEN : off + FRAME_HEADER_LEN + n] = payload
        return self._publish(off, msg_type, payload, source, dest, corr, not_after)

    def claim(self, n: int) -> Claim:
        """Room for an ``n``-byte payload in the page: fill
        ``claim.payload`` in place, then ``claim.commit(msg_type)``. A claim
        not committed before the next ``claim`` or ``write`` is given up and
        its bytes zeroed."""
        off = self._room(n)
        c = Claim(self, off, n)
        self._claim = c
        return c

    def _abandon(self) -> None:
        c = self._claim
        assert c is not None and self._page is not None
        self._claim = None
        c._done = True
        c.payload.release()
        start = c._off + FRAME_HEADER_LEN
        self._page.mm[start : start + c._n] = bytes(c._n)

    def _publish(
        self,
        off: int,
        msg_type: int,
        payload: Bytes,
        source: Optional[int],
        dest: Optional[int],
        corr: int,
        not_after: Optional[int] = None,
    ) -> int:
        page = self._page
        assert page is not None
        crc = crc32c(payload)
        seq = self._seq
        t = time.time_ns()
        if t < self._last_time:
            t = self._last_time
        if not_after is not None and t > not_after:
            # Too late: keep every byte past the tail zero, publish nothing.
            start = off + FRAME_HEADER_LEN
            page.mm[start : start + len(payload)] = bytes(len(payload))
            return 0
        try:
            FRAME_REST.pack_into(
                page.mm,
                off + 4,
                msg_type,
                seq,
                t,
                self.source if source is None else source,
                self.dest if dest is None else dest,
                corr,
                crc,
                0,
            )
        except struct.error:
            # A field out of range: nothing is published, and the payload
            # already copied is zeroed (left there, the next frame's `len`
            # could fall on it and readers take it for a frame).
            page.mm[off : off + FRAME_HEADER_LEN + len(payload)] = bytes(FRAME_HEADER_LEN + len(payload))
            raise ValueError(
                f"frame header out of range (msg_type {msg_type}, source {source}, dest {dest}: 0 to 4294967295; "
                f"corr {corr}: 0 to 2^64-1): nothing was written"
            ) from None
        ln = FRAME_HEADER_LEN + len(payload)
        # Publication: one aligned 32-bit store, after every other store of
        # the frame (the module docstring says why that is a release store).
        page.u32[off >> 2] = ln
        self._off = off + align8(ln)
        self._seq = seq + 1
        self._last_time = t
        if self._bell is not None:
            self._bell.after_publish()
        return seq

    def _prepare(self, page_no: int) -> None:
        """Starts a thread that makes page ``page_no`` if it does not exist.
        If it fails (a full disk), the page switch tries again and raises."""

        def run() -> None:
            try:
                if not os.path.exists(self._path(page_no)):
                    size = next_page_size(self._geometry, self._page_size)
                    create_page(self.dir, self.name, page_no, self._geometry, size)
            except OSError:
                pass

        t = threading.Thread(target=run, name=f"tape-page-{self.name}-{page_no}", daemon=True)
        t.start()
        self._next = t

    def _switch(self, frame: int) -> None:
        """Moves to the next page: make it (unless made already), then write
        the end-of-page marker, then continue at its offset 64; until a page
        holds a frame of ``frame`` bytes there. A page made earlier at the
        growth rule's size may be too small for it: it gets its marker at
        offset 64 and stays empty, and the page after it is made large
        enough (FORMAT.md, "Page sizes")."""
        if self._next is not None:
            self._next.join()
            self._next = None
        while True:
            page = self._page
            assert page is not None
            nxt = page.page_no + 1
            path = self._path(nxt)
            if not os.path.exists(path):
                size = page_size_for(self._geometry, next_page_size(self._geometry, self._page_size), frame)
                create_page(self.dir, self.name, nxt, self._geometry, size)
            new = _Page(path, nxt, self._geometry)
            if new.u32[PAGE_HEADER_LEN >> 2] != 0:
                new.release()
                raise FormatError(path, "the next page already has frames: another writer was here", PAGE_HEADER_LEN)
            page.u32[self._off >> 2] = END_OF_PAGE
            self._page = new
            self._page_size = new.size
            self._off = PAGE_HEADER_LEN
            if self._page_syncer is not None:
                self._page_syncer.hand(page)  # synced, then released, by its thread
            else:
                page.release()
            if PAGE_HEADER_LEN + frame + MARKER_ROOM <= new.size:
                return

    # -- closing ----------------------------------------------------------

    def close(self) -> None:
        """Unmaps, releases the lock and ends the registration. Frames
        already written stay; the next writer continues after them."""
        if self._closed:
            return
        self._closed = True
        if self._claim is not None and self._page is not None:
            self._abandon()
        if self._next is not None:
            self._next.join()
            self._next = None
        if self._page_syncer is not None:
            # The pages left, then the last one (a clean close).
            self._page_syncer.close()
            self._page_syncer = None
            if self._page is not None:
                # The page being written up to its tail, as the Rust
                # writer's clean close.
                p = self._page
                sync_page(self.sync_stats, p.mm, min(self._off + MARKER_ROOM, p.size), p.path, self.dir)
        if self._interval is not None:
            self._interval.close()  # a last look: everything published
            self._interval = None
        if self._page is not None:
            self._page.release()
            self._page = None
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        if self._lease is not None:
            self._lease.close()
            self._lease = None

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _refuse_frame_past_hole(page: _Page, next_seq: int, min_time: Optional[int], tail_path: str, tail: int) -> None:
    """FORMAT.md, "Holes", in a page after the tail page: a frame at any
    8-aligned offset past 64 whose ``len`` is from 48 and fits the page,
    whose CRC32C is right, whose ``time_ns`` is not older than ``min_time``
    and whose ``seq`` is ``next_seq`` or more (any from 1 when ``next_seq``
    is 0) was published after frames that are gone: refuse to append,
    naming the tail (``tail_path`` at ``tail``), where they stop."""
    mm = page.mm
    end = _nonzero_end(page, PAGE_HEADER_LEN)
    off = PAGE_HEADER_LEN + 8
    while off + MARKER_ROOM <= end:
        ln = page.u32[off >> 2]
        if FRAME_HEADER_LEN <= ln != END_OF_PAGE and off + align8(ln) + MARKER_ROOM <= page.size:
            _t, fseq, ftime, _s, _d, _c, fcrc, _f = FRAME_REST.unpack_from(mm, off + 4)
            if fseq >= max(next_seq, 1) and (min_time is None or ftime >= min_time):
                if crc32c(page.mv[off + FRAME_HEADER_LEN : off + ln]) == fcrc:
                    raise FormatError(
                        tail_path,
                        f"a hole of zeros: frames were published after it (seq {fseq} at offset {off} of {os.path.basename(page.path)}), so frames here were lost: refusing to append",
                        tail,
                    )
        off += 8


def _nonzero_end(page: _Page, start: int) -> int:
    """One past the last byte from ``start`` on that is not zero (``start``
    when all are), read from the end in chunks."""
    mm = page.mm
    chunk = 1 << 16
    end = page.size
    while end > start:
        lo = max(start, end - chunk)
        if mm[lo:end].count(0) != end - lo:
            return lo + len(mm[lo:end].rstrip(b"\0"))
        end = lo
    return start


def _zero_tail(page: _Page, tail: int) -> None:
    """Zeroes the page from ``tail`` to its last non-zero byte (recovery
    step 4, and a spare page after the tail from 64)."""
    mm = page.mm
    last = _nonzero_end(page, tail)
    pos = tail
    while pos < last:
        stop = min(last, pos + (1 << 20))
        mm[pos:stop] = bytes(stop - pos)
        pos = stop
