"""Reader positions: ``<journal dir>/<journal>.readers/<reader>.pos``.

Built from ``journal/FORMAT.md``, "Reader positions", the same files and
rules as the Rust reader (``tape_journal::position``), so that a Python
reader and ``tape tail --resume`` of the same name take turns on one
position, and ``tape top`` shows a Python reader's lag:

- 64 bytes, little-endian: ``magic`` ``TPOS``, ``version`` 1, ``pid``,
  ``flags`` (bit 0: resumes), ``seen_seq`` (u64 at 16), ``committed_seq``
  (u64 at 24), ``committed_ns`` (i64 at 32), 24 reserved bytes;
- the reader holds ``flock(LOCK_EX | LOCK_NB)`` on the file for its whole
  life: a second live reader of the same name on the journal is refused,
  naming the holder from ``/proc/locks``;
- each word is stored through a ``memoryview`` of the shared mapping cast
  to ``"Q"`` (one aligned 8-byte store on x86-64, which the package
  requires); a commit stores ``committed_ns`` before ``committed_seq``
  (stores are not reordered with other stores on x86-64): no system call;
- a reader that does not resume deletes its file when it is closed (and
  the files of gone readers that did not resume, when it opens its own);
  one that resumes keeps it.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import time
from typing import List, Optional

from .format import TapeError, check_name

READERS_SUFFIX = ".readers"
POS_SUFFIX = ".pos"
POS_LEN = 64
POS_MAGIC = 0x534F5054  # b"TPOS" little-endian
POS_VERSION = 1
FLAG_RESUME = 1

# Word indexes: u32 view ("I") and u64 view ("Q").
_MAGIC, _VERSION, _PID, _FLAGS = 0, 1, 2, 3
_SEEN, _COMMITTED, _COMMITTED_NS = 2, 3, 4


def readers_dir(directory: str, journal: str) -> str:
    """The folder of journal ``journal``'s reader positions."""
    return os.path.join(directory, journal + READERS_SUFFIX)


def position_path(directory: str, journal: str, reader: str) -> str:
    """The position file of reader ``reader`` on journal ``journal``."""
    return os.path.join(readers_dir(directory, journal), reader + POS_SUFFIX)


class PositionError(TapeError):
    """A reader's position could not be kept or continued. ``path`` is the
    file or folder; ``pid`` the live holder for :attr:`held` (0: unknown)."""

    def __init__(
        self, message: str, path: str, *, held: bool = False, pid: int = 0, read_only: bool = False, bad_name: bool = False
    ) -> None:
        super().__init__(message)
        self.path = path
        self.held = held
        self.pid = pid
        self.read_only = read_only
        self.bad_name = bad_name


def flock_holders(fd: int) -> Optional[List[int]]:
    """Pids holding an exclusive ``flock`` on the open file ``fd``, from
    ``/proc/locks`` (``None`` when it cannot be read)."""
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            text = f.read()
    except OSError:
        return None
    pids = set()
    for line in text.splitlines():
        w = line.split()
        if len(w) >= 6 and w[1] == "FLOCK" and w[3] == "WRITE" and w[5] == want and w[4].isdigit():
            pids.add(int(w[4]))
    return sorted(pids)


def _holder(fd: int, recorded: int) -> int:
    pids = flock_holders(fd)
    if pids is not None:
        return pids[0] if pids else 0
    if recorded:
        try:
            os.kill(recorded, 0)
            return recorded
        except PermissionError:
            return recorded
        except OSError:
            return 0
    return 0


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read_only(e: OSError) -> bool:
    return e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


def _sweep_gone(folder: str) -> None:
    """Deletes the files of gone readers that did not resume (FORMAT.md):
    valid, flag bit 0 clear, and lockable; under the lock, if the path
    still names the file."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for n in names:
        if not n.endswith(POS_SUFFIX):
            continue
        path = os.path.join(folder, n)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not (st.st_mode & 0o170000 == 0o100000 and st.st_size == POS_LEN):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live reader's
            magic, version, _pid, flags = struct.unpack_from("<IIII", os.pread(fd, 16, 0))
            if magic == POS_MAGIC and version == POS_VERSION and not flags & FLAG_RESUME and _same_file(fd, path):
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


class Position:
    """A live reader's position on one journal, locked and mapped.

    :attr:`resumed` is the committed seq of the kept position this one
    continues (``resume=True`` and a file a resuming reader kept), else
    ``None``."""

    def __init__(self, directory: str, journal: str, reader: str, resume: bool) -> None:
        check_name(journal)
        try:
            check_name(reader)
        except ValueError:
            raise PositionError(
                f"reader name {reader!r} cannot name a position file: use 1 to 64 characters from A-Z a-z 0-9 _ - . not starting with a dot",
                reader,
                bad_name=True,
            ) from None
        self.resume = resume
        self.resumed: Optional[int] = None
        self._fd = -1
        self._map: Optional[mmap.mmap] = None
        folder = readers_dir(directory, journal)
        try:
            os.mkdir(folder, 0o750)
        except FileExistsError:
            pass
        except OSError as e:
            raise self._io(folder, e) from None
        _sweep_gone(folder)
        self.path = path = position_path(directory, journal, reader)
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
            except OSError as e:
                raise self._io(path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    head = os.pread(fd, 12, 0)
                    recorded = struct.unpack_from("<I", head, 8)[0] if len(head) == 12 and head[:4] == b"TPOS" else 0
                    pid = _holder(fd, recorded)
                finally:
                    os.close(fd)
                who = f"pid {pid}" if pid else "a process the system does not name"
                raise PositionError(
                    f"a reader named {reader!r} already reads journal {journal}: another process ({who}) holds {path}: stop it or wait for it to exit (or give this reader another name)",
                    path,
                    held=True,
                    pid=pid,
                ) from None
            except OSError as e:
                os.close(fd)
                raise self._io(path, e) from None
            if not _same_file(fd, path):
                os.close(fd)
                continue
            try:
                self._take(fd, path, resume)
            except BaseException:
                os.close(fd)
                raise
            return
        raise PositionError(f"cannot keep a reader position in {path}: the file kept being replaced", path)

    @staticmethod
    def _io(path: str, e: OSError) -> PositionError:
        if _read_only(e):
            return PositionError(
                f"cannot keep a reader position in {path}: {e.strerror} (run the reader as a user who may write the journal's folder, or do not ask it to resume)",
                path,
                read_only=True,
            )
        return PositionError(f"cannot keep a reader position in {path}: {e.strerror}", path)

    def _take(self, fd: int, path: str, resume: bool) -> None:
        size = os.fstat(fd).st_size
        if size not in (0, POS_LEN):
            raise PositionError(f"{path} is not a tape reader position file ({size} bytes long, not {POS_LEN}): move it away or delete it", path)
        if size == 0:
            os.ftruncate(fd, POS_LEN)
        m = mmap.mmap(fd, POS_LEN, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        u32 = memoryview(m).cast("I")
        u64 = memoryview(m).cast("Q")
        magic = u32[_MAGIC]
        if magic not in (0, POS_MAGIC):
            raise PositionError(f"{path} is not a tape reader position file (magic {struct.pack('<I', magic)!r}): move it away or delete it", path)
        if magic == POS_MAGIC and u32[_VERSION] != POS_VERSION:
            raise PositionError(
                f"{path} is not a tape reader position file (version {u32[_VERSION]}, this package reads {POS_VERSION}): move it away or delete it",
                path,
            )
        kept = magic == POS_MAGIC and bool(u32[_FLAGS] & FLAG_RESUME)
        if kept and not resume:
            raise PositionError(
                f"{path} is the position a resuming reader of this name keeps (committed seq {u64[_COMMITTED]}): read with resume, give this reader another name, or delete the file to start over",
                path,
            )
        if kept:
            self.resumed = u64[_COMMITTED]
        else:
            u32[_MAGIC] = 0
            for i in range(2, 8):
                u64[i] = 0
            u32[_VERSION] = POS_VERSION
        u32[_PID] = os.getpid()
        u32[_FLAGS] = FLAG_RESUME if resume else 0
        u32[_MAGIC] = POS_MAGIC
        self._fd = fd
        self._map = m
        self._u32 = u32
        #: The u64 words: ``words[2]`` is ``seen_seq`` (the reader stores
        #: into it directly, per frame).
        self.words = u64

    def seen(self, seq: int) -> None:
        """The reader handed out frame ``seq``."""
        self.words[_SEEN] = seq

    @property
    def seen_seq(self) -> int:
        return self.words[_SEEN]

    @property
    def committed_seq(self) -> int:
        return self.words[_COMMITTED]

    def commit(self, seq: int) -> None:
        """Commits ``seq``: ``committed_ns``, then ``committed_seq``."""
        self.words[_COMMITTED_NS] = time.time_ns()
        self.words[_COMMITTED] = seq

    def begin(self, before: int) -> None:
        """The reader starts after seq ``before``: stored as ``seen_seq``,
        and for a new resuming position as ``committed_seq`` too."""
        self.seen(before)
        if self.resume and self.resumed is None:
            self.commit(before)

    def close(self, abandon: bool = False) -> None:
        """Unmaps and unlocks; deletes the file unless it is kept (a
        resuming reader's; with ``abandon``, only a kept one it
        continued)."""
        if self._fd < 0:
            return
        delete = not self.resume or (abandon and self.resumed is None)
        if delete and _same_file(self._fd, self.path):
            try:
                os.unlink(self.path)
            except OSError:
                pass
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass
        self.words.release()
        self._u32.release()
        assert self._map is not None
        self._map.close()
        self._map = None
        os.close(self._fd)
        self._fd = -1

    def __del__(self) -> None:
        # A reader dropped without close(): the lock goes with the
        # descriptor; the file stays, and the next reader sweeps it.
        if getattr(self, "_fd", -1) >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
