"""The durability policy of a :class:`~tape.Writer`: when its frames reach
the disk. The same policies as the Rust writer (``journal/src/durable.rs``,
``--sync`` of ``tape write``), with the same guarantees:

- ``"none"``: never sync (the kernel's own write-back). Safe against any
  process crash; a power cut loses what the kernel had not written.
- ``"page"``: each page is synced when the writer leaves it
  (``msync(MS_SYNC)`` of the whole page, then ``fsync`` of the journal's
  folder so that the page file's name is durable too), by a thread of its
  own to which the page switch hands the page; at a clean close, the page
  being written up to its tail. A power cut loses at most the frames of the page
  being written plus a page left and not synced yet.
- ``"interval=MS"``: a daemon thread looks every MS ms for frames published
  since its last look (it follows the journal's ``len`` words like a
  reader) and syncs the dirty range of the page they are in (from the last
  synced 4 KiB block to the last published frame; a finished page up to
  its end marker, then the folder, when it moves to the next page). A
  power cut loses at most the frames of the last MS ms plus the time a
  sync takes; an idle writer makes no sync at all.

Neither adds anything to ``write``: no system call, no extra store. A sync
that fails (``EIO``, ``ENOSPC``) is counted in :class:`SyncStats` and its
error kept; nothing is raised from the append path and the journal is not
touched. ``mmap.flush`` is ``msync(MS_SYNC)``; on tmpfs or ``/dev/shm`` it
does nothing (there is no disk).
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Optional, Tuple

from .format import END_OF_PAGE, MARKER_ROOM, PAGE_HEADER_LEN, page_file_name

#: The kernel's page size: ``msync`` starts at a multiple of it.
_BLOCK = 4096


def parse_sync(policy: str) -> Tuple[str, int]:
    """``("none", 0)``, ``("page", 0)`` or ``("interval", MS)`` from
    ``"none"``, ``"page"`` or ``"interval=MS"`` (MS a whole number of
    milliseconds, at least 1); ``ValueError`` in the words of ``tape write
    --sync`` otherwise."""

    def bad(why: str) -> ValueError:
        return ValueError(
            f"bad sync policy \"{policy}\": {why}; use none, page or interval=MS "
            "(MS a whole number of milliseconds, at least 1)"
        )

    if not isinstance(policy, str):
        raise bad("not a string")
    if policy in ("none", "page"):
        return policy, 0
    if not policy.startswith("interval="):
        raise bad("unknown policy")
    ms = policy[len("interval="):]
    if not ms.isdigit() or not ms.isascii():
        raise bad("the interval is not a whole number of milliseconds")
    if int(ms) == 0:
        raise bad("the interval must be at least 1 ms")
    return "interval", int(ms)


class SyncStats:
    """What a writer's syncs did (``Writer.sync_stats``); updated by its
    sync threads, readable at any time, after the writer closed too."""

    __slots__ = ("syncs", "dir_syncs", "failures", "last_failure", "_lock")

    def __init__(self) -> None:
        #: Data syncs (``msync`` of a page range) that succeeded.
        self.syncs = 0
        #: Syncs of the journal's folder (``fsync``) that succeeded.
        self.dir_syncs = 0
        #: Syncs of either kind that failed: what they covered may not be
        #: on disk (Linux reports a write-back error once).
        self.failures = 0
        #: The last failure, as a sentence naming the file.
        self.last_failure: Optional[str] = None
        self._lock = threading.Lock()

    def _record(self, what: str, op: Callable[[], None], folder: bool) -> None:
        try:
            op()
        except (OSError, ValueError) as e:
            with self._lock:
                self.failures += 1
                self.last_failure = f"syncing {what} failed: {e}"
            return
        with self._lock:
            if folder:
                self.dir_syncs += 1
            else:
                self.syncs += 1

    def __repr__(self) -> str:
        return f"SyncStats(syncs={self.syncs}, dir_syncs={self.dir_syncs}, failures={self.failures})"


def fsync_dir(directory: str) -> None:
    """``fsync`` of a folder: the names of the files made in it durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_range(stats: SyncStats, mm, path: str, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
    """``msync(MS_SYNC)`` of ``[start, end)`` of a read-write mapping, its
    start rounded down to the 4 KiB block it is in."""
    lo = start & ~(_BLOCK - 1)
    stats._record(path, lambda: mm.flush(lo, end - lo), False)


def sync_page(stats: SyncStats, mm, size: int, path: str, directory: str) -> None:  # type: ignore[no-untyped-def]
    """The ``page`` policy's sync of one page: its first ``size`` bytes
    (all of a page left, up to the tail at a close), then the folder."""
    sync_range(stats, mm, path, 0, size)
    stats._record(directory, lambda: fsync_dir(directory), True)


class PageSyncer:
    """The thread of the ``page`` policy: syncs each page handed to it
    (:meth:`hand`), then lets it go (``release``). A thread apart, so that
    a sync waiting for the device never delays the writer."""

    def __init__(self, name: str, directory: str, stats: SyncStats) -> None:
        self.dir = directory
        self.stats = stats
        self._q: "queue.Queue[object]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"tape-sync-{name}", daemon=True)
        self._thread.start()

    def hand(self, page) -> None:  # type: ignore[no-untyped-def]
        """A page the writer left (a ``writer._Page``): synced, then
        released, by the thread."""
        self._q.put(page)

    def _run(self) -> None:
        while True:
            page = self._q.get()
            if page is None:
                return
            try:
                sync_page(self.stats, page.mm, page.size, page.path, self.dir)  # type: ignore[attr-defined]
            finally:
                page.release()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Syncs what was handed and not synced yet, then ends the thread."""
        self._q.put(None)
        self._thread.join()


class IntervalSyncer:
    """The thread of the ``interval=MS`` policy. It maps the pages itself,
    with ``open_page`` (read-write: ``mmap.flush`` of a read-only mapping
    is a no-op in CPython)
    and reads only the ``len`` words the writer publishes anyway.
    :meth:`close` makes a last look (a clean close syncs everything
    published) and ends the thread."""

    def __init__(
        self,
        name: str,
        directory: str,
        open_page: Callable[[str, int], Any],
        page_no: int,
        tail: int,
        every_ms: int,
        stats: SyncStats,
    ) -> None:
        self.name = name
        self.dir = directory
        #: Maps a page read-write (the writer's ``_Page``): ``(path, page_no)``.
        self.open_page = open_page
        self.stats = stats
        self.every = every_ms / 1000.0
        self._page_no = page_no
        self._scan = max(tail, PAGE_HEADER_LEN)
        self._synced = 0
        self._page: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"tape-sync-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        nxt = time.monotonic() + self.every
        try:
            while True:
                stopped = self._stop.wait(max(0.0, nxt - time.monotonic()))
                self._look()
                if stopped:
                    return
                # A sync slower than the interval: the next look at once,
                # not a pile-up.
                nxt = max(nxt + self.every, time.monotonic())
        finally:
            self._unmap()

    def _open(self) -> bool:
        path = os.path.join(self.dir, page_file_name(self.name, self._page_no))
        try:
            self._page = self.open_page(path, self._page_no)
        except FileNotFoundError:
            nxt = os.path.join(self.dir, page_file_name(self.name, self._page_no + 1))
            if os.path.exists(nxt):
                # Pruned before this thread got there: on to the next page.
                self._page_no += 1
                self._scan = PAGE_HEADER_LEN
                self._synced = 0
                return self._open()
            return False
        except (OSError, ValueError):
            return False  # looked at again next time
        return True

    def _unmap(self) -> None:
        if self._page is not None:
            self._page.release()
            self._page = None

    def _look(self) -> None:
        """Follows the published frames from where it stopped and syncs
        the range it passed."""
        while True:
            if self._page is None and not self._open():
                return
            page = self._page
            u32 = page.u32
            size = page.size
            ended = False
            scan = self._scan
            while scan + MARKER_ROOM <= size:
                ln = u32[scan >> 2]
                if ln == 0:
                    break
                if ln == END_OF_PAGE:
                    ended = True
                    scan += MARKER_ROOM
                    break
                nxt = scan + ((ln + 7) & ~7)
                if nxt > size:
                    break  # not a frame this writer published: verify's business
                scan = nxt
            self._scan = scan
            if scan > self._synced:
                sync_range(self.stats, page.mm, page.path, self._synced, scan)
                self._synced = scan
            if not ended:
                return
            # The page after a marker exists before the marker is
            # published: its name is made durable before its frames are.
            d = self.dir
            self.stats._record(d, lambda: fsync_dir(d), True)
            self._unmap()
            self._page_no += 1
            self._scan = PAGE_HEADER_LEN
            self._synced = 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
