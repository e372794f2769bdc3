"""The :class:`Reader`: reads many journals, merged in write-time order.

Built from ``journal/FORMAT.md`` ("Publication", "Finding a position"):

- pages are mapped read-only; a reader cannot damage a journal;
- the publication word ``len`` is loaded once, through a ``memoryview`` of
  the page cast to ``"I"`` (one aligned 32-bit load: an acquire load on
  x86-64, where loads are not reordered with later loads), and no byte of a
  frame is read before its ``len`` was seen non-zero;
- an end-of-page marker moves to the next page; a journal that has no page
  yet is waited for, and read from its first frame once it appears;
- ``seq`` is checked against the previous frame's ``seq + 1`` and, when
  asked (``verify_crc=True``), the payload's CRC32C and that ``time_ns``
  does not go back; a mismatch is damage (:class:`~tape.FormatError` naming
  the file and offset), and so is an end-of-page marker whose next page
  file is missing, or one at offset 64.

:meth:`Reader.next` never blocks: it returns the unread frame with the
smallest ``time_ns`` among the journals (ties: the journal added first), or
``None``. A :class:`Frame`'s ``payload`` is a read-only ``memoryview`` of the
mapping itself: no copy, and valid for as long as you keep it.

Registration with the service is optional (``service=``): a reader works on
journal files with no service at all.
"""

from __future__ import annotations

import os
import platform
import struct
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from .bell import Bell, barrier, sleep_on
from .checksum import crc32c
from .format import (
    END_OF_PAGE,
    FRAME_HEADER_LEN,
    FRAME_REST,
    MARKER_ROOM,
    PAGE_HEADER_LEN,
    FormatError,
    Geometry,
    map_page,
    TapeError,
    check_name,
    page_file_name,
    page_numbers,
)
from .pace import Pacer, SpeedLike, parse_speed, sleep_until
from .position import Position, PositionError
from .service import Lease, NotRunning, ServiceError, default_root, journal_dir
from .typed import Struct, unpack_payload


class Frame:
    """One frame, as a reader returns it."""

    __slots__ = ("journal", "seq", "time_ns", "type", "source", "dest", "corr", "crc", "payload")

    #: The journal's name.
    journal: str
    #: Sequence number in its journal: 1, 2, 3, ...
    seq: int
    #: Write time, ns since the epoch (CLOCK_REALTIME).
    time_ns: int
    #: Message type (the header's ``msg_type``).
    type: int
    #: Source id.
    source: int
    #: Destination id (0: everyone).
    dest: int
    #: Correlation id (0: none).
    corr: int
    #: CRC32C of the payload, as the writer set it.
    crc: int
    #: The payload: a read-only view of the page itself.
    payload: memoryview

    def unpack(self, fmt: "Union[str, struct.Struct, Struct]") -> Any:
        """The payload's values by a ``struct`` format starting with ``<``
        (a tuple; the payload must be exactly the format's size), or by a
        :class:`tape.Struct` (a namedtuple, the frame's type checked too).
        Raises :class:`tape.WrongLength` or :class:`tape.WrongType`."""
        if isinstance(fmt, Struct):
            return fmt.unpack(self)
        return unpack_payload(fmt, self.payload)

    def __repr__(self) -> str:
        return (
            f"Frame(journal={self.journal!r}, seq={self.seq}, time_ns={self.time_ns}, type={self.type}, "
            f"source={self.source}, dest={self.dest}, corr={self.corr}, payload={bytes(self.payload[:32])!r}"
            f"{'...' if len(self.payload) > 32 else ''})"
        )


class Start:
    """Where a reader starts in a journal: :meth:`first`, :meth:`end`,
    :meth:`seq` or :meth:`time`. The strings ``"start"`` (or ``"first"``)
    and ``"end"`` may be used instead."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: int = 0) -> None:
        if kind not in ("first", "end", "seq", "time"):
            raise ValueError(f"bad start {kind!r}: use first, end, seq or time")
        self.kind = kind
        self.value = value

    @classmethod
    def first(cls) -> "Start":
        """The first frame on disk."""
        return cls("first")

    @classmethod
    def end(cls) -> "Start":
        """After the last frame: only frames written from now on."""
        return cls("end")

    @classmethod
    def seq(cls, n: int) -> "Start":
        """The first frame with ``seq >= n``."""
        return cls("seq", n)

    @classmethod
    def time(cls, t_ns: int) -> "Start":
        """The first frame with ``time_ns >= t_ns``."""
        return cls("time", t_ns)

    @classmethod
    def of(cls, s: "StartLike") -> "Start":
        """A :class:`Start` from a ``Start`` or ``"start"``/``"first"``/``"end"``."""
        if isinstance(s, Start):
            return s
        if s in ("start", "first"):
            return cls.first()
        if s == "end":
            return cls.end()
        raise ValueError(f"bad start {s!r}: use 'start', 'end', Start.seq(n) or Start.time(ns)")

    def __repr__(self) -> str:
        return f"Start.{self.kind}({self.value if self.kind in ('seq', 'time') else ''})"


StartLike = Union[Start, str]


class _Page:
    """One page mapped read-only, holding its shared page lock (FORMAT.md,
    "Pruning") while it is mapped, so that no prune deletes it or a later
    page while this reader reads it. (The ``mmap`` object keeps a duplicate
    of the descriptor, so a frame's payload view, which keeps the mapping,
    keeps the lock too.)"""

    __slots__ = ("path", "page_no", "size", "mv", "u32", "fd", "geometry", "may_be_empty")

    def __init__(self, path: str, page_no: int, geometry: Optional[Geometry]) -> None:
        self.fd = -1
        # Mapped at its own size, as its header says (pages grow).
        self.fd, mm, size, h = map_page(path, page_no, geometry, writable=False)
        self.path = path
        self.page_no = page_no
        self.size = size
        self.geometry = h.geometry
        #: An end-of-page marker at offset 64 is allowed here (FORMAT.md,
        #: "Page sizes": a page too small for the frame after it).
        self.may_be_empty = h.may_be_empty
        # The mmap object lives as long as a view of it does: frames handed
        # out keep their page mapped, and it is unmapped when the last goes.
        self.mv = memoryview(mm)
        self.u32 = self.mv.cast("I")

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def first(self) -> Tuple[int, int, int]:
        """``(len, seq, time_ns)`` of the frame at offset 64 (``len`` 0: none)."""
        ln = self.u32[PAGE_HEADER_LEN >> 2]
        if ln == 0 or ln == END_OF_PAGE:
            return ln, 0, 0
        _t, seq, t, *_ = FRAME_REST.unpack_from(self.mv, PAGE_HEADER_LEN + 4)
        return ln, seq, t


#: ``last_time`` while no frame was read: every time is newer.
_NO_TIME = -(1 << 63)


class _Cursor:
    """One journal being read."""

    __slots__ = (
        "dir", "name", "index", "verify_crc", "start", "page", "geometry", "off", "seq", "head", "head_len",
        "next_look", "bell", "last_time", "position",
    )

    def __init__(self, directory: str, name: str, index: int, start: Start, verify_crc: bool) -> None:
        self.dir = directory
        self.name = name
        self.index = index
        self.verify_crc = verify_crc
        self.start: Optional[Start] = start
        self.page: Optional[_Page] = None
        #: ``(version, max_page_size)`` of the journal, once a page is mapped.
        self.geometry: Optional[Geometry] = None
        self.off = PAGE_HEADER_LEN
        #: Expected seq of the next frame (0: not known yet).
        self.seq = 0
        #: Write time of the frame before (checked with ``verify_crc``).
        self.last_time = _NO_TIME
        self.head: Optional[Frame] = None
        self.head_len = 0
        self.next_look = 0.0
        #: The journal's doorbell, opened by the first wait.
        self.bell: Optional[Bell] = None
        #: The reader's position on this journal, when it keeps one.
        self.position: Optional[Position] = None
        self._open()

    def _path(self, page_no: int) -> str:
        return os.path.join(self.dir, page_file_name(self.name, page_no))

    def _map(self, page_no: int) -> _Page:
        p = _Page(self._path(page_no), page_no, self.geometry)
        self.geometry = p.geometry
        return p

    def _open(self) -> None:
        """Positions the cursor per its start once the journal has a page;
        lists the pages again when one was pruned meanwhile."""
        for _ in range(1000):
            try:
                return self._open_once()
            except FileNotFoundError:
                continue
        self._open_once()

    def _open_once(self) -> None:
        start = self.start
        assert start is not None
        pages = page_numbers(self.dir, self.name)
        if not pages:
            # Not there yet: read it from its first frame once it appears.
            self.start = Start.first()
            return
        if start.kind == "first":
            self._goto(self._map(pages[0]), PAGE_HEADER_LEN)
        elif start.kind == "end":
            self._seek_end(pages)
        else:
            self._seek(pages, start.kind, start.value)
        self.start = None

    def _goto(self, page: _Page, off: int, seq: int = 0, last_time: Optional[int] = None) -> None:
        self.page = page
        self.off = off
        self.seq = seq
        self.last_time = _NO_TIME if last_time is None else last_time

    def _seek_end(self, pages: List[int]) -> None:
        i = len(pages) - 1
        while True:
            page = self._map(pages[i])
            if i == 0 or page.u32[PAGE_HEADER_LEN >> 2] != 0:
                break
            i -= 1
        page, off, seq, t = self._walk(page, lambda s, t: False)
        self._goto(page, off, seq, t)

    def _seek(self, pages: List[int], kind: str, target: int) -> None:
        # Binary search: the last page whose first frame is before the
        # target; spares (no frame yet) count as after it.
        # A page skipped as too small (a marker at 64) counts as the page
        # after it.
        lo, hi = 0, len(pages) - 1
        best = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            j = mid
            while True:
                p = self._map(pages[j])
                ln, seq, t = p.first()
                if ln != END_OF_PAGE or j + 1 == len(pages):
                    break
                j += 1
            key = seq if kind == "seq" else t
            if ln != 0 and ln != END_OF_PAGE and key < target:
                best = mid
                lo = mid + 1
            else:
                hi = mid - 1
        page = self._map(pages[best])
        if kind == "seq":
            page, off, seq, last_t = self._walk(page, lambda s, t: s >= target)
        else:
            page, off, seq, last_t = self._walk(page, lambda s, t: t >= target)
        self._goto(page, off, seq, last_t)

    def _walk(self, page: _Page, stop: Callable[[int, int], bool]) -> Tuple[_Page, int, int, Optional[int]]:
        """Walks from offset 64 of ``page`` to the first frame for which
        ``stop(seq, time_ns)`` holds, or to the end (``len`` 0), following
        end-of-page markers. Returns ``(page, offset, expected seq, time of
        the frame before)`` (0 and ``None``: not known)."""
        off = PAGE_HEADER_LEN
        expect = 0
        last_t: Optional[int] = None
        while True:
            ln = page.u32[off >> 2]
            if ln == 0:
                break
            if ln == END_OF_PAGE:
                page = self._next_page(page, off)
                off = PAGE_HEADER_LEN
                continue
            self._check_len(page, off, ln)
            _t, seq, t, *_ = FRAME_REST.unpack_from(page.mv, off + 4)
            if stop(seq, t):
                expect = seq
                break
            expect = seq + 1
            last_t = t
            off += (ln + 7) & ~7
        return page, off, expect, last_t

    def _next_page(self, page: _Page, off: int) -> _Page:
        """The page after ``page``, whose end-of-page marker is at ``off``:
        FORMAT.md says the writer makes it before the marker, so a missing
        one is damage (frames may be lost), and so is a marker at 64 unless
        the page is smaller than the journal's largest (FORMAT.md, "Page
        sizes")."""
        if off == PAGE_HEADER_LEN and not page.may_be_empty:
            raise FormatError(
                page.path,
                "an end-of-page marker where the page's first frame belongs (every frame fits a page of the journal's largest size)",
                off,
            )
        nxt = page.page_no + 1
        if not os.path.exists(self._path(nxt)):
            lost = f"frames after seq {self.seq - 1} may be lost" if self.seq > 1 else "frames may be lost"
            raise FormatError(
                page.path, f"an end-of-page marker, but the next page {page_file_name(self.name, nxt)} is missing: {lost}", off
            )
        return self._map(nxt)

    @staticmethod
    def _check_len(page: _Page, off: int, ln: int) -> None:
        if ln < FRAME_HEADER_LEN or off + ((ln + 7) & ~7) + MARKER_ROOM > page.size:
            raise FormatError(page.path, f"damaged frame: len {ln} does not fit the page", off)

    def poll(self) -> Optional[Frame]:
        """The next frame of this journal, without consuming it; ``None`` when
        there is none yet."""
        if self.head is not None:
            return self.head
        page = self.page
        if page is None:
            now = time.monotonic()
            if now < self.next_look:
                return None
            self.next_look = now + 0.001
            self._open()
            if self.page is None:
                return None
            # A journal made after the reader began, read from its first
            # frame (not always seq 1: a replica).
            f = self.poll()
            if self.position is not None:
                self.position.begin(f.seq - 1 if f is not None else max(self.seq - 1, 0))
            return f
        off = self.off
        ln = page.u32[off >> 2]
        if ln == 0:
            return None
        while ln == END_OF_PAGE:
            # (Again when the next page was skipped as too small.)
            page = self.page = self._next_page(page, off)
            off = self.off = PAGE_HEADER_LEN
            ln = page.u32[off >> 2]
            if ln == 0:
                return None
        if ln < FRAME_HEADER_LEN or off + ((ln + 7) & ~7) + MARKER_ROOM > page.size:
            raise FormatError(page.path, f"damaged frame: len {ln} does not fit the page", off)
        f = Frame()
        (f.type, seq, f.time_ns, f.source, f.dest, f.corr, f.crc, _flags) = FRAME_REST.unpack_from(page.mv, off + 4)
        if self.seq and seq != self.seq:
            raise FormatError(page.path, f"damaged frame: seq {seq}, expected {self.seq}", off)
        f.seq = seq
        f.journal = self.name
        f.payload = page.mv[off + FRAME_HEADER_LEN : off + ln]
        if self.verify_crc:
            if f.time_ns < self.last_time:
                raise FormatError(page.path, f"damaged frame: time {f.time_ns} is older than the frame before ({self.last_time})", off)
            got = crc32c(f.payload)
            if got != f.crc:
                raise FormatError(page.path, f"damaged frame: crc {got:#010x}, header says {f.crc:#010x}", off)
        self.head = f
        self.head_len = ln
        return f

    def seq_before(self) -> Optional[int]:
        """The seq just before the frame this cursor hands out next (0 at
        the beginning of a journal with no frame yet); ``None`` while the
        journal has no page."""
        if self.page is None:
            return None
        f = self.poll()
        if f is not None:
            return max(f.seq - 1, 0)
        return self.seq - 1 if self.seq else 0

    def take(self) -> Optional[Frame]:
        """The next frame of this journal, consumed; ``None`` when there is
        none yet. (:meth:`poll` and :meth:`advance` in one, for a reader of
        one journal.)"""
        f = self.head
        if f is None:
            page = self.page
            if page is not None:
                off = self.off
                ln = page.u32[off >> 2]
                if ln == 0:
                    return None
                if ln != END_OF_PAGE and not self.verify_crc and off + ((ln + 7) & ~7) + MARKER_ROOM <= page.size and ln >= FRAME_HEADER_LEN:
                    # The common case inline: a frame in the current page.
                    f = Frame()
                    (f.type, seq, f.time_ns, f.source, f.dest, f.corr, f.crc, _fl) = FRAME_REST.unpack_from(page.mv, off + 4)
                    if self.seq and seq != self.seq:
                        raise FormatError(page.path, f"damaged frame: seq {seq}, expected {self.seq}", off)
                    f.seq = seq
                    f.journal = self.name
                    f.payload = page.mv[off + FRAME_HEADER_LEN : off + ln]
                    self.off = off + ((ln + 7) & ~7)
                    self.seq = seq + 1
                    return f
            f = self.poll()
            if f is None:
                return None
        self.advance()
        return f

    def advance(self) -> None:
        """Consumes the frame :meth:`poll` returned."""
        f = self.head
        assert f is not None
        self.off += (self.head_len + 7) & ~7
        self.seq = f.seq + 1
        self.last_time = f.time_ns
        self.head = None


#: Readers made without a name in this process so far.
_unnamed = 0


class Reader:
    """Reads frames from many journals, merged by write time.

    :param name: the reader's name for the service (``find``, ``tape ls``)
        and its position files; default ``python-<pid>`` for the first
        reader of the process made without one, ``python-<pid>-<n>`` for
        the n-th.
    :param root: the tape root (default ``$TAPE_ROOT``, else ``/tmp/trading``).
    :param start: where each journal added starts, unless ``add_journal``
        says otherwise (default ``"end"``: frames written from now on, as the
        Rust reader; ``"start"`` for everything on disk).
    :param service: ``"if_running"`` (default: register when a service runs,
        read regardless), ``"required"`` (raise :class:`~tape.NotRunning`
        without one) or ``"never"``.
    :param verify_crc: check each frame's CRC32C (pure Python: a few µs a
        frame) and that write times never go back; damage raises
        :class:`~tape.FormatError`.
    :param speed: read recorded journals at their own pace (``None`` or
        ``"max"``, the default: as fast as they can be read): ``1`` the
        pace at which they were written, ``10`` ten times faster, ``0.5``
        half as fast. The first frame :meth:`next` returns sets the pace; a
        frame recorded ``d`` ns after it is returned no earlier than ``d /
        speed`` ns later (``time.monotonic_ns``, each moment from the first,
        so errors do not add up). Until then :meth:`next` returns ``None``,
        :meth:`due_in` says how long is left and :meth:`wait` sleeps until
        then (a spin only for the last ~150 µs). Merged journals are paced
        together, in write-time order. Nothing is copied.
    :param resume: keep this reader's position on each journal when it
        ends, and start each journal after the position committed there
        (:meth:`commit`) by the last reader of this name, Python or Rust
        (``tape tail --resume``), or at ``start`` where there is none.

    **Positions** (``journal/FORMAT.md``, "Reader positions"): the reader
    keeps its position on each journal in ``<journal>.readers/<name>.pos``
    beside it; :meth:`next` stores the seq of each frame it hands out there
    (``seen_seq``: what ``tape top`` computes the lag from). A second live
    reader of the same name on a journal is refused
    (:class:`~tape.position.PositionError` naming the holder). Where the
    reader may not write the folder, or its name is not a valid file name,
    it keeps no position, unless it resumes (then it raises). :meth:`close`
    deletes the files of a reader that does not resume.

    **When a position is committed**: at :meth:`commit`, and only then:
    the last frame :meth:`next` handed out from each journal, two stores,
    no system call. A resuming reader restarted after a crash hands out
    again every frame after its last commit: each frame **at least once**;
    a frame used after the last commit, before the crash, twice; none
    skipped. A new resuming position counts its start as committed.

    ::

        r = Reader("strategy")
        r.add_journal(journal_dir(r.root), "md")
        while True:
            f = r.next()
            if f is None:
                continue          # or sleep, or do other work
            print(f.seq, bytes(f.payload))
    """

    def __init__(
        self,
        name: Optional[str] = None,
        *,
        root: Optional[str] = None,
        start: StartLike = "end",
        service: str = "if_running",
        verify_crc: bool = False,
        resume: bool = False,
        speed: SpeedLike = None,
    ) -> None:
        x = parse_speed(speed)
        #: The pace of a paced reader (``speed``), ``None`` when not paced.
        self.pacer: Optional[Pacer] = None if x is None else Pacer(x)
        if platform.machine() not in ("x86_64", "amd64", "AMD64"):
            raise TapeError(
                f"the Python reader relies on x86-64 ordering of plain loads; this CPU is {platform.machine()}"
            )
        if service not in ("if_running", "required", "never"):
            raise ValueError(f"bad service mode {service!r}: use if_running, required or never")
        if not name:
            # Unnamed readers of one process each get a name of their own
            # (a name is one live reader per journal: "Positions").
            global _unnamed
            _unnamed += 1
            name = f"python-{os.getpid()}" + (f"-{_unnamed}" if _unnamed > 1 else "")
        self.name = name
        self.root = root or default_root()
        self.start = Start.of(start)
        self.verify_crc = verify_crc
        self.resume = resume
        self._cursors: List[_Cursor] = []
        self._lease: Optional[Lease] = None
        if service != "never":
            try:
                self._lease = Lease.reader(self.root, self.name, [])
            except NotRunning:
                if service == "required":
                    raise
            except ServiceError:
                if service == "required":
                    raise

    @property
    def registered(self) -> bool:
        """Whether the service has this reader registered now."""
        return self._lease is not None and self._lease.registered

    def add_journal(self, dir: Optional[str], name: str, start: Optional[StartLike] = None) -> int:
        """Reads journal ``name`` in folder ``dir`` (``None``: ``<root>/journal``)
        too, from ``start`` (default: the reader's). Returns its index. A
        journal with no page yet is read from its first frame once it
        appears."""
        check_name(name)
        directory = os.path.abspath(dir or journal_dir(self.root))
        begin = Start.of(start) if start is not None else self.start
        pos = self._position(directory, name)
        if pos is not None and pos.resumed is not None:
            # 0: nothing committed, the journal had no frame: its first.
            begin = Start.first() if pos.resumed == 0 else Start.seq(pos.resumed + 1)
        try:
            c = _Cursor(directory, name, len(self._cursors), begin, self.verify_crc)
            before = c.seq_before()
            if pos is not None:
                _check_resume(pos, name, before)
                pos.begin(before or 0)
                c.position = pos
            if self._lease is not None:
                self._lease.add_journal(directory, name)
        except BaseException:
            if pos is not None:
                pos.close(abandon=True)
            raise
        self._cursors.append(c)
        return c.index

    def _position(self, directory: str, name: str) -> Optional[Position]:
        """The reader's position on journal ``name`` in ``directory``;
        ``None`` where it keeps none (a resuming reader raises instead)."""
        if not self.resume and not os.path.isdir(directory):
            return None
        if self.resume:
            os.makedirs(directory, exist_ok=True)
        try:
            return Position(directory, name, self.name, self.resume)
        except PositionError as e:
            if not self.resume and (e.read_only or e.bad_name):
                return None
            raise

    def commit(self) -> None:
        """Commits the position on every journal: the last frame
        :meth:`next` handed out from each (``committed_ns``, then
        ``committed_seq``; no system call). Call it once the frames handed
        out so far are done with. Journals without a position are
        skipped."""
        for c in self._cursors:
            p = c.position
            if p is not None:
                s = p.words[2]
                if s != p.words[3]:
                    p.commit(s)

    def position(self, journal: int) -> Optional[Position]:
        """The position kept on journal ``journal`` (its index), if any."""
        return self._cursors[journal].position

    def next(self) -> Optional[Frame]:
        """The unread frame with the smallest ``time_ns`` among the journals
        (ties: the journal added first), or ``None`` when none has a new
        frame. Never blocks. A paced reader (``speed``) returns ``None``
        while that frame is not due yet."""
        cursors = self._cursors
        if len(cursors) == 1 and self.pacer is None:
            c = cursors[0]
            f = c.take()
            if f is not None and c.position is not None:
                c.position.words[2] = f.seq  # seen_seq
            return f
        best: Optional[_Cursor] = None
        best_t = 0
        for c in cursors:
            f = c.poll()
            if f is not None and (best is None or f.time_ns < best_t):
                best, best_t = c, f.time_ns
        if best is None:
            return None
        if self.pacer is not None and not self.pacer.is_due(best_t):
            return None
        f = best.head
        best.advance()
        if best.position is not None:
            best.position.words[2] = f.seq  # seen_seq
        return f

    def wait(self, timeout: Optional[float] = None, pause: Optional[float] = None) -> Optional[Frame]:
        """:meth:`next`, waiting until a frame comes or ``timeout`` seconds
        pass (``None``: forever). By default it sleeps on the journals'
        doorbells (``journal/FORMAT.md``, "The doorbell"): no CPU while it
        waits, woken by the writer's next frame, Rust's or Python's. With
        ``pause`` it polls instead, sleeping ``pause`` seconds between polls
        (0: spin, yielding the GIL)."""
        if self.pacer is not None:
            return self._wait_paced(timeout, pause)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            f = self.next()
            if f is not None:
                return f
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if pause is not None:
                time.sleep(pause)
                continue
            self._sleep(1.0 if deadline is None else deadline - now)

    def _head(self) -> Optional[Frame]:
        """The frame :meth:`next` returns next, due or not; reads past
        nothing."""
        best: Optional[Frame] = None
        for c in self._cursors:
            f = c.poll()
            if f is not None and (best is None or f.time_ns < best.time_ns):
                best = f
        return best

    def next_time(self) -> Optional[int]:
        """The write time of the frame :meth:`next` returns next, whether
        or not it is due yet; ``None`` when no journal has an unread
        frame."""
        f = self._head()
        return None if f is None else f.time_ns

    def due_in(self) -> Optional[float]:
        """Seconds until the frame :meth:`next` returns next falls due (0
        when it is due, always on a reader that is not paced); ``None``
        when no journal has an unread frame."""
        f = self._head()
        if f is None:
            return None
        if self.pacer is None:
            return 0.0
        return max(0, self.pacer.due_at(f.time_ns) - time.monotonic_ns()) / 1e9

    def _wait_paced(self, timeout: Optional[float], pause: Optional[float]) -> Optional[Frame]:
        """:meth:`wait` of a paced reader: for a frame to be there, then
        until it falls due (:func:`~tape.pace.sleep_until`), or until the
        timeout if that comes first."""
        pacer = self.pacer
        assert pacer is not None
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        while True:
            f = self._head()
            if f is not None:
                at = pacer.due_at(f.time_ns)
                sleep_until(at if deadline is None else min(at, deadline))
                return self.next()
            now = time.monotonic_ns()
            if deadline is not None and now >= deadline:
                return None
            if pause is not None:
                time.sleep(pause)
            else:
                self._sleep(1.0 if deadline is None else (deadline - now) / 1e9)

    def _sleep(self, left: float) -> None:
        """Sleeps on every journal's doorbell at once, at most ``left`` s."""
        sleep_on_cursors(self._cursors, [], left)

    def __iter__(self) -> Iterator[Frame]:
        """The frames there are now, until none is left (does not wait)."""
        while True:
            f = self.next()
            if f is None:
                return
            yield f

    def close(self) -> None:
        """Ends the registration and drops the mappings (frames already
        returned stay valid)."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        for c in self._cursors:
            if c.position is not None:
                c.position.close()
                c.position = None
        self._cursors = []

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_resume(pos: Position, journal: str, before: Optional[int]) -> None:
    """Raises unless a kept position continues where the journal is."""
    c = pos.resumed
    if not c or before == c:
        return
    if before is not None and before > c:
        why = f"its frames up to seq {before} were pruned, so resuming would skip them"
    else:
        why = f"the journal ends at seq {before or 0}, so it is not the journal this position was taken on"
    raise PositionError(
        f"cannot resume journal {journal} after seq {c} ({pos.path}): {why}; delete the position file to start over", pos.path
    )


#: ``futex_waitv`` waits on at most this many words at once.
MAX_WAITV = 128


def sleep_on_cursors(cursors: List[_Cursor], extra: List[Bell], left: float) -> None:
    """Sleeps until a frame comes in one of ``cursors`` (or one of ``extra``
    rings) or ``left`` seconds pass: the reader's steps of FORMAT.md, "The
    doorbell", over every journal at once. Where a journal has no doorbell
    (or no page yet), in steps of 1 ms: slower, never a hot loop."""
    if left <= 0:
        return
    bells: List[Bell] = list(extra)
    exact = True
    for c in cursors:
        if c.bell is None and c.page is not None:
            c.bell = Bell.open(c.dir, c.name)
        if c.bell is None:
            exact = False
        else:
            bells.append(c.bell)
    if len(bells) > MAX_WAITV:
        bells = bells[:MAX_WAITV]
        exact = False
    if not bells:
        time.sleep(min(left, 0.001))
        return
    for b in bells:
        b.flag()
    fenced = barrier()
    values = [b.ring_value() for b in bells]
    if any(c.poll() is not None for c in cursors):
        return
    sleep_on(bells, values, left if exact and fenced else min(left, 0.001))
