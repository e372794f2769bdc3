"""The doorbell (``journal/FORMAT.md``, "The doorbell"): ``<name>.bell``,
64 bytes a reader sleeps on and the writer rings after a frame when a
reader sleeps. The Rust writers and readers use the same file, so a Python
reader wakes on a Rust writer's frame and a Rust reader on a Python
writer's.

Standard library only: the futex and membarrier system calls go through
``ctypes`` (Linux x86-64 and arm64 numbers). Where they are missing the
writer rings on every frame whenever a reader is flagged and the reader
sleeps in short steps: slower, never wrong.
"""

import ctypes
import ctypes.util
import mmap
import os
import platform
import struct
import time
from typing import List, Optional

MAGIC = b"TAPEBEL1"
LEN = 64
_RING = 8
_SLEEPERS = 12

_SYS = {
    "x86_64": {"futex": 202, "membarrier": 324, "futex_waitv": 449},
    "aarch64": {"futex": 98, "membarrier": 283, "futex_waitv": 449},
}.get(platform.machine(), {})
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_MEMBARRIER_CMD_GLOBAL_EXPEDITED = 1 << 1
_MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _syscall(name: str, *args: int) -> int:
    nr = _SYS.get(name)
    if nr is None:
        return -1
    return _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])


_registered: Optional[bool] = None


def register_writer() -> bool:
    """Registers this process for the readers' membarrier (once); returns
    whether it is registered (if not, the writer rings more often)."""
    global _registered
    if _registered is None:
        _registered = _syscall("membarrier", _MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0
    return _registered


def bell_file_name(name: str) -> str:
    """``<name>.bell``: the doorbell."""
    return f"{name}.bell"


def barrier() -> bool:
    """FORMAT.md reader step 2; returns whether it ran (if not, sleep in
    short steps: a writer without membarrier has no barrier of its own)."""
    return _syscall("membarrier", _MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0


class _WaitV(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64), ("uaddr", ctypes.c_uint64), ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_FUTEX2_SIZE_U32 = 0x02
_CLOCK_MONOTONIC = 1


def sleep_on(bells: List["Bell"], values: List[int], timeout: float) -> None:
    """Step 5: sleeps until one of ``bells`` rings (its ring differs from
    ``values``) or ``timeout`` seconds pass; spurious returns allowed."""
    if len(bells) == 1:
        ts = _Timespec(int(timeout), int((timeout - int(timeout)) * 1e9))
        r = _syscall("futex", bells[0]._ring_addr, _FUTEX_WAIT, values[0], ctypes.addressof(ts), 0, 0)
    else:
        waits = (_WaitV * len(bells))(*[_WaitV(v, b._ring_addr, _FUTEX2_SIZE_U32, 0) for b, v in zip(bells, values)])
        end = time.clock_gettime(time.CLOCK_MONOTONIC) + timeout
        ts = _Timespec(int(end), int((end - int(end)) * 1e9))
        r = _syscall("futex_waitv", ctypes.addressof(waits), len(bells), 0, ctypes.addressof(ts), _CLOCK_MONOTONIC)
    if r < 0 and ctypes.get_errno() == 38:  # ENOSYS: no such system call
        time.sleep(min(timeout, 0.001))


class Bell:
    """One journal's doorbell, mapped read-write."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self._u32 = memoryview(mm).cast("I")
        self._ring_addr = ctypes.addressof(ctypes.c_uint32.from_buffer(mm, _RING))

    @classmethod
    def create(cls, directory: str, name: str) -> "Bell":
        """The writer's side: opens or makes the doorbell, never truncated."""
        path = os.path.join(directory, bell_file_name(name))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.fchmod(fd, 0o666)
            if os.fstat(fd).st_size < LEN:
                os.ftruncate(fd, LEN)
            mm = mmap.mmap(fd, LEN)
        finally:
            os.close(fd)
        mm[0:8] = MAGIC
        return cls(mm)

    @classmethod
    def open(cls, directory: str, name: str) -> Optional["Bell"]:
        """A reader's side: the doorbell if it exists and may be written."""
        path = os.path.join(directory, bell_file_name(name))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < LEN:
                return None
            mm = mmap.mmap(fd, LEN)
        finally:
            os.close(fd)
        if mm[0:8] != MAGIC:
            mm.close()
            return None
        return cls(mm)

    # -- writer -----------------------------------------------------------

    def after_publish(self) -> None:
        """After a frame's publication: ring if a reader sleeps."""
        if self._u32[_SLEEPERS >> 2] != 0:
            # The swap of FORMAT.md: a reader flagging meanwhile is woken
            # by the ring below all the same.
            self._u32[_SLEEPERS >> 2] = 0
            self._u32[_RING >> 2] = (self._u32[_RING >> 2] + 1) & 0xFFFFFFFF
            _syscall("futex", self._ring_addr, _FUTEX_WAKE, 0x7FFFFFFF, 0, 0, 0)

    # -- reader -----------------------------------------------------------

    def flag(self) -> None:
        """FORMAT.md reader step 1: a reader may sleep."""
        self._u32[_SLEEPERS >> 2] = 1

    def ring_value(self) -> int:
        """Step 3: the value to sleep on (after :func:`barrier`)."""
        return self._u32[_RING >> 2]

    def close(self) -> None:
        self._u32.release()
        self.mm.close()
