"""A client of the tape service, from ``service/PROTOCOL.md``.

The service listens on the Unix stream socket ``<root>/system/service.sock``.
Every message is a 4-byte little-endian length and a JSON object. The first
request is ``hello``; a connection then registers at most one writer or
reader, and the registration lives exactly as long as the connection.

- :class:`Connection`: one connection, for the queries (``find``, ``list``,
  ``count``, ``journals``) and for registering.
- :class:`Lease`: a registration kept for the lifetime of a writer or a
  reader. A thread watches the connection; if the service goes away (a
  restart), it connects again and registers again, and keeps trying until it
  can.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .format import TapeError

#: Protocol version this client speaks.
PROTOCOL_VERSION = 1
#: Largest reply body the service sends.
MAX_REPLY = 16 * 1024 * 1024
#: Largest request body the service accepts.
MAX_REQUEST = 65536

Message = Dict[str, Any]


class ServiceError(TapeError):
    """The service could not be reached, or answered with an error. ``code``
    is the protocol's error code (``None`` when there was no reply)."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        self.code = code
        super().__init__(message)


class NotRunning(ServiceError):
    """No service runs on that root (nothing listens on its socket)."""


class HeldError(TapeError):
    """Another writer holds the journal. ``pid`` is the holder's process id
    (0 when unknown)."""

    def __init__(self, journal: str, pid: int, how: str = "") -> None:
        self.journal = journal
        self.pid = pid
        super().__init__(
            f"journal {journal} is held by another writer (pid {pid}){how}: stop that writer first"
        )


def default_root() -> str:
    """``$TAPE_ROOT``, else ``/tmp/trading``."""
    return os.environ.get("TAPE_ROOT") or "/tmp/trading"


def socket_path(root: str) -> str:
    """``<root>/system/service.sock``."""
    return os.path.join(root, "system", "service.sock")


def journal_dir(root: str) -> str:
    """``<root>/journal``, where journals live by default."""
    return os.path.join(root, "journal")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ServiceError("the service closed the connection")
        buf += chunk
    return bytes(buf)


class Connection:
    """One connection to the service of ``root``, past the ``hello``.

    Raises :class:`NotRunning` when nothing listens on the socket, and
    :class:`ServiceError` when the service refuses the handshake.
    """

    def __init__(self, root: Optional[str] = None, timeout: float = 10.0) -> None:
        self.root = root or default_root()
        self.path = socket_path(self.root)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            s.close()
            raise NotRunning(
                f"no tape service runs on {self.root} ({e.strerror}): start one with `tape service --root {self.root}`"
            ) from None
        except OSError as e:
            s.close()
            raise ServiceError(f"cannot connect to the service at {self.path}: {e}") from None
        self.sock = s
        try:
            reply = self.call({"type": "hello", "version": PROTOCOL_VERSION})
        except BaseException:
            s.close()
            raise
        if reply.get("type") != "hello":
            s.close()
            raise ServiceError(f"the service answered hello with {reply!r}")
        #: The service's process id.
        self.service_pid: int = int(reply.get("service_pid", 0))

    def send(self, msg: Message) -> None:
        """Sends one request frame."""
        body = json.dumps(msg, separators=(",", ":")).encode("utf-8")
        if not 1 <= len(body) <= MAX_REQUEST:
            raise ValueError(f"request of {len(body)} bytes: the service takes 1 to {MAX_REQUEST}")
        self.sock.sendall(struct.pack("<I", len(body)) + body)

    def recv(self) -> Message:
        """Receives one reply frame."""
        (n,) = struct.unpack("<I", _recv_exact(self.sock, 4))
        if n > MAX_REPLY:
            raise ServiceError(f"reply of {n} bytes, more than the protocol's {MAX_REPLY}")
        msg = json.loads(_recv_exact(self.sock, n).decode("utf-8"))
        if not isinstance(msg, dict):
            raise ServiceError(f"reply is not a JSON object: {msg!r}")
        return msg

    def call(self, msg: Message) -> Message:
        """Sends ``msg`` and returns the reply; an error reply raises
        :class:`ServiceError` (:class:`HeldError` for ``held``)."""
        try:
            self.send(msg)
            reply = self.recv()
        except OSError as e:
            raise ServiceError(f"lost the connection to the service: {e}") from None
        if reply.get("type") == "error":
            code = reply.get("code")
            if code == "held":
                raise HeldError(str(msg.get("journal", "?")), int(reply.get("pid", 0)))
            raise ServiceError(f"the service refused {msg.get('type')}: {reply.get('message')}", code)
        return reply

    def find(self, name: str) -> Optional[Message]:
        """The oldest peer named ``name`` (a peer object), or ``None``."""
        peer: Optional[Message] = self.call({"type": "find", "name": name})["peer"]
        return peer

    def list(self, page: int = 0, per_page: int = 50) -> Tuple[int, List[Message]]:
        """``(total, peers)`` for page ``page``."""
        r = self.call({"type": "list", "page": page, "per_page": per_page})
        return int(r["total"]), list(r["peers"])

    def count(self) -> int:
        """Number of registered peers."""
        return int(self.call({"type": "count"})["count"])

    def journals(self) -> List[Message]:
        """Every registered journal with its writer and readers."""
        return list(self.call({"type": "journals"})["journals"])

    def close(self) -> None:
        """Closes the connection (ending any registration on it)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def writer_request(directory: str, journal: str) -> Message:
    """The ``register_writer`` request for a journal."""
    return {"type": "register_writer", "dir": os.path.abspath(directory), "journal": journal}


def reader_request(name: str, journals: List[Tuple[str, str]]) -> Message:
    """The ``register_reader`` request for a reader and its journals."""
    return {
        "type": "register_reader",
        "name": name,
        "journals": [{"dir": d, "journal": j} for d, j in journals],
    }


class Lease:
    """A registration held for as long as this object lives.

    ``Lease.writer(root, dir, journal)`` registers a writer, and
    ``Lease.reader(root, name, journals)`` a reader; both raise at once if
    the first registration fails (:class:`NotRunning`, :class:`HeldError`,
    :class:`ServiceError`). After that a daemon thread keeps it: when the
    connection ends (the service stopped or restarted), it connects and
    registers again until it succeeds (pausing ``retry`` seconds, doubled
    after each failed try up to ``max_retry``), and says so once on standard
    error if the service refuses. :meth:`close` ends the
    registration.
    """

    def __init__(self, root: str, request: Message, retry: float = 0.02, max_retry: float = 0.5) -> None:
        self.root = root
        self._request = request
        self._retry = retry
        self._max_retry = max_retry
        self._lock = threading.Lock()
        self._pending: List[Tuple[str, str]] = []
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._conn: Optional[Connection] = self._register()
        self.id: int = self._last_id
        self._thread = threading.Thread(target=self._run, name=f"tape-lease-{request.get('journal') or request.get('name')}", daemon=True)
        self._thread.start()

    @classmethod
    def writer(cls, root: str, directory: str, journal: str) -> "Lease":
        """Registers the writer of ``journal`` in ``directory``."""
        return cls(root, writer_request(directory, journal))

    @classmethod
    def reader(cls, root: str, name: str, journals: List[Tuple[str, str]]) -> "Lease":
        """Registers a reader ``name`` of ``journals`` (``(dir, name)`` pairs)."""
        return cls(root, reader_request(name, journals))

    @property
    def registered(self) -> bool:
        """Whether the registration is in force now."""
        return self._conn is not None

    def add_journal(self, directory: str, journal: str) -> None:
        """Tells the service that this reader reads one more journal (sent by
        the lease's thread; also part of every later re-registration)."""
        with self._lock:
            self._request["journals"].append({"dir": directory, "journal": journal})
            self._pending.append((directory, journal))
        os.write(self._wake_w, b"x")

    def _register(self) -> Connection:
        conn = Connection(self.root)
        try:
            with self._lock:
                req = json.loads(json.dumps(self._request))
                self._pending.clear()
            reply = conn.call(req)
        except BaseException:
            conn.close()
            raise
        self._last_id = int(reply.get("id", 0))
        # Registered: nothing is sent unasked from now on, so no timeout.
        conn.sock.settimeout(None)
        return conn

    def _run(self) -> None:
        complained = False
        pause = self._retry
        while not self._closed.is_set():
            conn = self._conn
            if conn is None:
                if self._closed.wait(pause):
                    return
                pause = min(pause * 2, self._max_retry)
                try:
                    self._conn = self._register()
                    pause = self._retry
                    if complained:
                        print(f"tape: registered again with the service on {self.root}", file=sys.stderr)
                    complained = False
                except (ServiceError, HeldError, OSError) as e:
                    if not complained and not isinstance(e, NotRunning):
                        print(f"tape: cannot register again with the service: {e}; retrying", file=sys.stderr)
                        complained = True
                continue
            if not self._watch(conn):
                conn.close()
                self._conn = None

    def _watch(self, conn: Connection) -> bool:
        """Waits on the connection and the wake pipe; False when the
        connection is gone."""
        sel = selectors.DefaultSelector()
        try:
            sel.register(conn.sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in sel.select():
                    if key.fileobj is conn.sock:
                        # Nothing comes unasked on a registered connection:
                        # data or end of file both mean it is over.
                        return False
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        todo, self._pending = self._pending, []
                    for d, j in todo:
                        try:
                            conn.sock.settimeout(10)
                            conn.call({"type": "add_journal", "dir": d, "journal": j})
                            conn.sock.settimeout(None)
                        except ServiceError as e:
                            if e.code is None:
                                return False
                            print(f"tape: the service did not take journal {j}: {e}", file=sys.stderr)
            return True
        finally:
            sel.close()

    def close(self) -> None:
        """Ends the registration (closes the connection) and stops the thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
