"""Request/reply on one box: :class:`Requester` and :class:`Responder`.

Written from ``journal/FORMAT.md`` ("Request/reply frames") and
``service/PROTOCOL.md`` (section 4a) alone, as the reader and writer were
written from the format: a Python requester calls Rust responders
(``tape-echo``, any ``tape_rpc::Responder``) and a Rust requester (``tape
call``, ``tape_rpc::Requester``) calls a Python responder.

How it works, in short:

- An endpoint named ``N`` writes one journal, ``rpc.N`` (requests for a
  requester, replies and events for a responder), with a
  :class:`~tape.Writer`; its **endpoint id** is the FNV-1a hash of the name
  (:func:`endpoint_id`). It makes (or recovers) that journal, then
  registers with the service (``register_endpoint``), and watches the
  service (``watch``) to know who is online.
- A request's payload is an 8-byte little-endian timeout in ns and the
  application's data; its ``corr`` is its own ``seq``; ``dest`` the
  responder's id. The deadline is the request's ``time_ns`` plus the
  timeout.
- A requester reads the responder's journal from its end as it was before
  the first request to it, and takes as the reply of a call the frame with
  ``dest`` = its own id and ``corr`` = the request's ``seq``. A reply that
  comes after the call's deadline is dropped.
- A responder reads the journal of every requester online, from the request
  after the last one it answered to that requester (learned, on start, from
  its own journal), and answers a request only when it is for it, well
  formed, not answered yet and not past its deadline.

Waiting (for a reply, or for requests) looks for :data:`AWAKE` (200 µs),
yielding the core, then sleeps on the journals' doorbells
(:mod:`tape.bell`): no CPU while nothing comes, woken by the writer's next
frame, Rust's or Python's.

::

    import tape

    with tape.Requester("strategy-1") as r:
        data, typ = r.call("echo", b"hello", timeout=1.0)   # OK
        # tape.No: nobody named "echo" online (at once, nothing sent)
        # tape.Timeout: no reply by the deadline

    def handler(req: tape.Request):
        return req.data.upper(), req.type                   # the reply

    tape.Responder("upper").run(handler)                    # until stopped

Neither class is thread-safe: use one from one thread at a time.
"""

from __future__ import annotations

import heapq
import mmap
import os
import socket
import struct
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

from .bell import Bell, barrier, sleep_on
from .format import TapeError, check_name
from .reader import Frame, Reader, Start, _Cursor, sleep_on_cursors
from .service import Connection, Lease, Message, ServiceError, default_root, journal_dir
from .writer import Writer

Bytes = Union[bytes, bytearray, memoryview]

#: Longest endpoint name: ``rpc.`` and the name make a journal name of at most 64.
MAX_NAME = 60
#: Page size of an endpoint's journal when this package creates it.
DEFAULT_ENDPOINT_PAGE_SIZE = 16 << 20
#: Default timeout of a call, in seconds (``tape call``'s default too).
DEFAULT_TIMEOUT = 5.0
#: Seconds an endpoint keeps looking (yielding its core between looks)
#: after its last frame before it sleeps on the doorbells: ``tape_journal::AWAKE``.
#: A reply or request that comes sooner costs no wake-up.
AWAKE = 200e-6

_TIMEOUT = struct.Struct("<Q")
#: Longest timeout a request can carry: 2^63 - 1 ns, where the Rust
#: responder's deadline saturates (about 292 years).
_MAX_TIMEOUT_S = (2**63 - 1) / 1e9


def endpoint_id(name: str) -> int:
    """The endpoint id of ``name``: the 32-bit FNV-1a hash of its UTF-8
    bytes, or 1 where that is 0 (``journal/FORMAT.md``, "Request/reply
    frames")."""
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h or 1


def check_endpoint_name(name: str) -> None:
    """Raises ``ValueError`` unless ``name`` is a valid endpoint name: 1 to
    60 of ``A-Z a-z 0-9 _ - .``, not starting with ``.``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"bad endpoint name {name!r}: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ - . and do not start with '.'")
    try:
        check_name(name)
    except ValueError:
        raise ValueError(
            f"bad endpoint name {name!r}: use 1 to {MAX_NAME} of A-Z a-z 0-9 _ - . and do not start with '.'"
        ) from None


def journal_of(name: str) -> str:
    """The journal endpoint ``name`` writes: ``rpc.<name>``."""
    return f"rpc.{name}"


class No(TapeError):
    """No responder of that name is online: nothing was sent (the broker's
    NO; ``tape call`` exits 3)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no responder {name} is online: start it, or check the name with `tape online`")


class Timeout(TapeError, TimeoutError):
    """No reply came by the call's deadline (the broker's TIMEOUT; ``tape
    call`` exits 4). The call is over: a reply that comes later is dropped."""

    def __init__(self, name: str, call_id: int, timeout: Optional[float]) -> None:
        self.name = name
        self.call_id = call_id
        self.timeout = timeout
        super().__init__(
            f"no reply from {name} within {timeout:g} s (call {call_id}): it may be busy or stopped; try a longer timeout"
            if timeout is not None
            else f"no reply from {name} (call {call_id})"
        )


class Reply(NamedTuple):
    """A reply: its payload and its message type."""

    data: bytes
    type: int


class Request:
    """One request, as a :class:`Responder` hands it to its handler."""

    __slots__ = ("data", "type", "seq", "source", "requester", "time_ns", "timeout_ns", "deadline_ns")

    def __init__(self, f: Frame, requester: str, timeout_ns: int) -> None:
        #: The application's data (the payload after the 8-byte timeout).
        self.data: bytes = bytes(f.payload[8:])
        #: The request's message type.
        self.type: int = f.type
        #: Its ``seq`` in the requester's journal (also its ``corr``).
        self.seq: int = f.seq
        #: The requester's endpoint id (the frame's ``source``).
        self.source: int = f.source
        #: The requester's name.
        self.requester: str = requester
        #: When the requester wrote it (CLOCK_REALTIME ns).
        self.time_ns: int = f.time_ns
        #: Its timeout in ns (0: none).
        self.timeout_ns: int = timeout_ns
        #: ``time_ns + timeout_ns``, or ``None`` without a timeout.
        self.deadline_ns: Optional[int] = f.time_ns + timeout_ns if timeout_ns else None

    def __repr__(self) -> str:
        return (
            f"Request(requester={self.requester!r}, seq={self.seq}, type={self.type}, "
            f"data={self.data[:32]!r}{'...' if len(self.data) > 32 else ''}, deadline_ns={self.deadline_ns})"
        )


#: What a handler returns: the reply's data (message type 0), the data and
#: the type, or ``None`` for no reply (the requester then times out).
HandlerResult = Union[None, Bytes, Tuple[Bytes, int]]
Handler = Callable[[Request], HandlerResult]


class _Wake:
    """A futex word of this process that the watch thread rings when the
    set of endpoints changes, so a responder asleep on doorbells wakes up
    to read a new requester."""

    def __init__(self) -> None:
        self.bell = Bell(mmap.mmap(-1, 64))

    def ring(self) -> None:
        # after_publish rings only while the flag is set: set it first.
        self.bell.flag()
        self.bell.after_publish()

    def close(self) -> None:
        self.bell.close()


class _Watch:
    """The endpoints online, kept up to date by a thread on a ``watch``
    connection (PROTOCOL.md, section 4a). When the service goes away the
    thread connects and watches again (the list it gets replaces what it
    knew); meanwhile the last list stands."""

    def __init__(self, root: str, on_change: Callable[[], None]) -> None:
        self.root = root
        self._on_change = on_change
        self._lock = threading.Lock()
        #: name -> peer object of the live endpoints.
        self.peers: Dict[str, Message] = {}
        #: Bumped at each change (the responder compares it).
        self.version = 0
        self.connected = False
        self._closed = threading.Event()
        self._sock: Optional[socket.socket] = None
        conn = self._connect()  # the first list before anyone asks
        self._thread = threading.Thread(target=self._run, args=(conn,), name="tape-rpc-watch", daemon=True)
        self._thread.start()

    def _connect(self) -> Connection:
        conn = Connection(self.root)
        try:
            reply = conn.call({"type": "watch"})
            if reply.get("type") != "watching":
                raise ServiceError(f"the service answered watch with {reply.get('type')!r}")
        except BaseException:
            conn.close()
            raise
        conn.sock.settimeout(None)
        with self._lock:
            self.peers = {str(p["name"]): p for p in reply.get("endpoints", [])}
            self.version += 1
            self._sock = conn.sock
        self.connected = True
        self._on_change()
        return conn

    def snapshot(self) -> Tuple[int, Dict[str, Message]]:
        """``(version, name -> peer)`` now."""
        with self._lock:
            return self.version, dict(self.peers)

    def get(self, name: str) -> Optional[Message]:
        """The live endpoint ``name`` as last heard of, or ``None``."""
        with self._lock:
            return self.peers.get(name)

    def _run(self, conn: Optional[Connection]) -> None:
        pause = 0.02
        while not self._closed.is_set():
            if conn is None:
                try:
                    conn = self._connect()
                    pause = 0.02
                except (ServiceError, OSError, ValueError):
                    if self._closed.wait(pause):
                        return
                    pause = min(pause * 2, 0.5)
                    continue
            try:
                while True:
                    msg = conn.recv()
                    if msg.get("type") != "event":
                        continue  # no request is sent on this connection
                    change, peer = msg.get("change"), msg.get("peer") or {}
                    name = str(peer.get("name"))
                    with self._lock:
                        if change == "up":
                            self.peers[name] = peer
                        elif change == "down":
                            if self.peers.get(name, {}).get("id") == peer.get("id"):
                                del self.peers[name]
                        else:
                            break  # unknown: watch again on a new connection
                        self.version += 1
                    self._on_change()
            except (ServiceError, OSError, ValueError):
                pass
            self.connected = False
            conn.close()
            conn = None
            with self._lock:
                self._sock = None

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            s = self._sock
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)  # ends the thread's recv
            except OSError:
                pass
        self._thread.join(timeout=5)


class _Endpoint:
    """What both ends share: the journal, the registration, the watch, and
    the questions about who is online."""

    _role = ""

    def __init__(self, name: str, root: Optional[str], dir: Optional[str], page_size: int, awake: float) -> None:
        check_endpoint_name(name)
        if not 0 <= awake <= 1:
            raise ValueError(f"awake {awake!r}: use 0 to 1 seconds")
        self._awake_ns = int(awake * 1e9)
        self.name = name
        #: This endpoint's id in frames (:func:`endpoint_id`).
        self.id = endpoint_id(name)
        self.root = root or default_root()
        #: The folder of this endpoint's journal.
        self.dir = os.path.abspath(dir or journal_dir(self.root))
        #: This endpoint's journal: ``rpc.<name>``.
        self.journal = journal_of(name)
        self._writer: Optional[Writer] = None
        self._lease: Optional[Lease] = None
        self._watch: Optional[_Watch] = None
        self._query: Optional[Connection] = None
        self._wake = _Wake()
        self._closed = False
        try:
            # The journal first (lock, then pages): whoever learns that this
            # endpoint is up may open its journal at once.
            self._writer = Writer(self.journal, root=self.root, dir=self.dir, page_size=page_size, service=False, source=self.id)
            self._opened()
            self._lease = Lease(
                self.root,
                {"type": "register_endpoint", "name": name, "role": self._role, "dir": self.dir, "journal": self.journal},
            )
            self._watch = _Watch(self.root, self._wake.ring)
        except BaseException:
            self.close()
            raise

    def _opened(self) -> None:
        """Called with the journal open, before registering."""

    @property
    def registered(self) -> bool:
        """Whether the service has this endpoint registered now."""
        return self._lease is not None and self._lease.registered

    def _ask(self, msg: Message) -> Message:
        """One question on the query connection (opened on first use, and
        again once if the service restarted meanwhile)."""
        for attempt in (0, 1):
            if self._query is None:
                self._query = Connection(self.root)
            try:
                return self._query.call(msg)
            except ServiceError as e:
                if e.code is not None or attempt:
                    raise
                self._query.close()
                self._query = None
        raise AssertionError("unreachable")

    def find(self, name: str) -> Optional[Message]:
        """The endpoint ``name`` if it is online (a peer object:
        ``id``, ``kind`` ``"responder"`` or ``"requester"``, ``name``,
        ``pid``, ``since_ns``, ``journals``), else ``None`` (the broker's
        ``find``)."""
        peer: Optional[Message] = self._ask({"type": "find_endpoint", "name": name})["peer"]
        return peer

    def list(self, page: int = 0, per_page: int = 100) -> Tuple[int, List[Message]]:
        """``(total, peers)``: page ``page`` (from 0) of everyone registered
        with the service, ``per_page`` (1 to 1000) a page, in registration
        order, as ``tape online`` shows them (the broker's ``getlist``)."""
        r = self._ask({"type": "list", "page": page, "per_page": per_page})
        return int(r["total"]), list(r["peers"])

    def count(self) -> int:
        """How many are registered with the service (the broker's
        ``gettotal``; ``tape online --count``)."""
        return int(self._ask({"type": "count"})["count"])

    def close(self) -> None:
        """Ends the registration and closes the journal (its frames stay)."""
        if self._closed:
            return
        self._closed = True
        for part in (self._watch, self._lease, self._query, self._writer):
            if part is not None:
                try:
                    part.close()
                except Exception:
                    pass
        self._watch = self._lease = self._query = self._writer = None
        self._close_cursors()
        self._wake.close()

    def _close_cursors(self) -> None:
        pass

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class _Call:
    __slots__ = ("id", "dest", "dest_id", "key", "deadline_ns", "timeout")

    def __init__(self, call_id: int, dest: str, key: Tuple[str, str], deadline_ns: Optional[int], timeout: Optional[float]) -> None:
        self.id = call_id
        self.dest = dest
        self.dest_id = endpoint_id(dest)
        self.key = key
        self.deadline_ns = deadline_ns
        self.timeout = timeout


Outcome = Union[Reply, Timeout]


class Requester(_Endpoint):
    """Sends requests as ``name`` and waits for their replies.

    :param name: the endpoint name (1 to 60 of ``A-Z a-z 0-9 _ - .``);
        unique among the endpoints online. Its journal is ``rpc.<name>``.
    :param root: the tape root (default ``$TAPE_ROOT``, else ``/tmp/trading``).
    :param dir: the folder of its journal (default ``<root>/journal``).
    :param page_size: page size of its journal when it is created.
    :param awake: seconds it keeps looking, yielding its core, after its last
        frame before it sleeps on the doorbells (default :data:`AWAKE`,
        200 µs; 0: sleep at once).

    Raises :class:`~tape.NotRunning` without a service,
    :class:`~tape.HeldError` when an endpoint of that name is online (or a
    writer holds its journal), :class:`~tape.ServiceError` (code
    ``invalid``) when the name's id equals a live endpoint's.

    ::

        r = tape.Requester("client")
        data, typ = r.call("echo", b"hi")             # one call
        ids = [r.send_nowait("echo", b"%d" % i) for i in range(8)]
        replies = [r.wait_reply(i) for i in ids]      # many in flight
    """

    _role = "requester"

    def __init__(
        self,
        name: str,
        *,
        root: Optional[str] = None,
        dir: Optional[str] = None,
        page_size: int = DEFAULT_ENDPOINT_PAGE_SIZE,
        awake: float = AWAKE,
    ) -> None:
        self._cursors: Dict[Tuple[str, str], _Cursor] = {}
        self._pending: Dict[int, _Call] = {}
        self._deadlines: List[Tuple[int, int]] = []
        #: Finished calls not collected yet, in the order they finished.
        self._finished: Dict[int, Outcome] = {}
        #: Replies dropped because their call was over (or not ours).
        self.late = 0
        super().__init__(name, root, dir, page_size, awake)

    def _close_cursors(self) -> None:
        self._cursors = {}

    @property
    def in_flight(self) -> int:
        """Calls sent and not finished (neither replied nor timed out)."""
        return len(self._pending)

    def _responder(self, dest: str) -> Message:
        """The responder ``dest`` online, or :class:`No`. The watch answers
        at once; a name it does not know (yet) is asked of the service, so
        a responder that has just come up is found."""
        assert self._watch is not None
        peer = self._watch.get(dest)
        if peer is None or peer.get("kind") != "responder":
            try:
                peer = self.find(dest)
            except ServiceError:
                if peer is None:
                    raise
        if peer is None or peer.get("kind") != "responder" or not peer.get("journals"):
            raise No(dest)
        return peer

    def send_nowait(self, dest: str, data: Bytes = b"", *, type: int = 0, timeout: Optional[float] = DEFAULT_TIMEOUT) -> int:
        """Sends one request to responder ``dest`` and returns the call's id
        (the request's ``seq``) at once; collect the outcome with
        :meth:`wait_reply` or :meth:`wait_any`.

        ``timeout`` seconds (``None``: no deadline) count from the request's
        write time. Raises :class:`No` at once, sending nothing, when no
        responder ``dest`` is online.
        """
        if self._closed or self._writer is None:
            raise TapeError("this requester is closed")
        if timeout is not None and not 0 < timeout < _MAX_TIMEOUT_S:
            raise ValueError(
                f"timeout {timeout!r}: use a number of seconds above 0 and below {_MAX_TIMEOUT_S:g}, or None for no deadline"
            )
        if not isinstance(type, int) or not 0 <= type <= 0xFFFFFFFF:
            raise ValueError(f"message type {type!r}: use 0 to 4294967295")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"request data {data!r:.40}: use bytes (encode a str first)")
        check_endpoint_name(dest)
        peer = self._responder(dest)
        j = peer["journals"][0]
        key = (str(j["dir"]), str(j["journal"]))
        if key not in self._cursors:
            # From the journal's end now, before the first request: every
            # reply to it comes after.
            self._cursors[key] = _Cursor(key[0], key[1], len(self._cursors), Start.end(), False)
        timeout_ns = 0 if timeout is None else max(1, int(timeout * 1e9))
        w = self._writer
        c = w.claim(8 + len(data))
        _TIMEOUT.pack_into(c.payload, 0, timeout_ns)
        c.payload[8:] = data
        seq = w.next_seq
        c.commit(type, source=self.id, dest=endpoint_id(dest), corr=seq)
        t = w._last_time  # the request's time_ns, which the deadline counts from
        deadline = t + timeout_ns if timeout_ns else None
        self._pending[seq] = _Call(seq, dest, key, deadline, timeout)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, seq))
        return seq

    def call(self, dest: str, data: Bytes = b"", *, type: int = 0, timeout: Optional[float] = DEFAULT_TIMEOUT) -> Reply:
        """Sends one request to responder ``dest`` and waits for its reply:
        ``(data, type)`` (OK), or raises :class:`No` (nobody of that name
        online: at once, nothing sent) or :class:`Timeout` (at the deadline,
        ``timeout`` seconds after the request; ``None``: wait for ever)."""
        return self.wait_reply(self.send_nowait(dest, data, type=type, timeout=timeout))

    def _pump(self) -> None:
        """Takes every reply there is now, then ends the calls whose
        deadline has passed."""
        me = self.id
        pending = self._pending
        for key, c in self._cursors.items():
            while True:
                f = c.take()
                if f is None:
                    break
                if f.corr == 0 or f.dest != me:
                    continue  # an event, or a reply to someone else
                call = pending.get(f.corr)
                if call is None or call.key != key or call.dest_id != f.source:
                    self.late += 1  # rule 1: its call is over
                    continue
                del pending[f.corr]
                self._finished[f.corr] = Reply(bytes(f.payload), f.type)
        if self._deadlines:
            now = time.time_ns()
            dl = self._deadlines
            while dl and dl[0][0] < now:
                _d, seq = heapq.heappop(dl)
                call = pending.pop(seq, None)
                if call is not None:
                    self._finished[seq] = Timeout(call.dest, seq, call.timeout)

    def _sleep(self, until_ns: Optional[int]) -> None:
        left = 1.0 if until_ns is None else min(1.0, (until_ns - time.time_ns()) / 1e9)
        if self._deadlines:
            left = min(left, (self._deadlines[0][0] - time.time_ns()) / 1e9 + 1e-6)
        keys = {call.key for call in self._pending.values()}
        sleep_on_cursors([c for k, c in self._cursors.items() if k in keys], [], max(left, 1e-6))

    def wait_reply(self, call_id: int) -> Reply:
        """Waits for the outcome of call ``call_id`` (from
        :meth:`send_nowait`): returns its reply, or raises :class:`Timeout`
        at its deadline. Replies to other calls that come meanwhile are kept
        for them."""
        awake_end = time.perf_counter_ns() + self._awake_ns
        while True:
            out = self._finished.pop(call_id, None)
            if out is None:
                if call_id not in self._pending:
                    raise KeyError(f"no call {call_id} in flight: its outcome was taken already, or it was never sent")
                self._pump()
                out = self._finished.pop(call_id, None)
            if out is not None:
                if isinstance(out, Timeout):
                    raise out
                return out
            if time.perf_counter_ns() < awake_end:
                os.sched_yield()
                continue
            self._sleep(self._pending[call_id].deadline_ns)

    def wait_any(self, timeout: Optional[float] = None) -> Optional[Tuple[int, Outcome]]:
        """The next call to finish: ``(call_id, Reply)`` or ``(call_id,
        Timeout)`` (not raised), in the order they finished; ``None`` when
        no call is in flight, or none finished within ``timeout`` seconds
        (``None``: until one does)."""
        end = None if timeout is None else time.time_ns() + int(timeout * 1e9)
        awake_end = time.perf_counter_ns() + self._awake_ns
        while True:
            if not self._finished:
                self._pump()
            if self._finished:
                call_id = next(iter(self._finished))
                return call_id, self._finished.pop(call_id)
            if not self._pending or (end is not None and time.time_ns() >= end):
                return None
            if time.perf_counter_ns() < awake_end:
                os.sched_yield()
                continue
            self._sleep(end)

    def __enter__(self) -> "Requester":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResponderStats:
    """What a :class:`Responder` did with the requests it read."""

    __slots__ = ("answered", "expired", "foreign", "malformed", "already", "unanswered")

    def __init__(self) -> None:
        #: Requests answered (one reply each).
        self.answered = 0
        #: Requests skipped because their deadline had passed.
        self.expired = 0
        #: Requests for another responder (``dest`` not this one's id).
        self.foreign = 0
        #: Frames that are not requests (payload under 8 bytes, or ``corr``
        #: not ``seq``).
        self.malformed = 0
        #: Requests answered before (by this responder before a restart).
        self.already = 0
        #: Requests whose handler returned ``None``.
        self.unanswered = 0

    def __repr__(self) -> str:
        return "ResponderStats(" + ", ".join(f"{k}={getattr(self, k)}" for k in self.__slots__) + ")"


class Responder(_Endpoint):
    """Answers requests to ``name``, and publishes events.

    :param name: the endpoint name (1 to 60 of ``A-Z a-z 0-9 _ - .``);
        unique among the endpoints online. Its journal is ``rpc.<name>``.
    :param root: the tape root (default ``$TAPE_ROOT``, else ``/tmp/trading``).
    :param dir: the folder of its journal (default ``<root>/journal``).
    :param page_size: page size of its journal when it is created.
    :param awake: seconds it keeps looking, yielding its core, after its last
        frame before it sleeps on the doorbells (default :data:`AWAKE`,
        200 µs; 0: sleep at once).

    On start it reads its own journal and takes, per requester, the last
    request it answered: after a restart under the same name it answers
    nothing twice, and it never answers a request past its deadline.
    Raises as :class:`Requester` does.

    ::

        def handler(req):                 # a Request
            return req.data, req.type     # reply data and type; None: no reply

        tape.Responder("echo-py").run(handler)
    """

    _role = "responder"

    def __init__(
        self,
        name: str,
        *,
        root: Optional[str] = None,
        dir: Optional[str] = None,
        page_size: int = DEFAULT_ENDPOINT_PAGE_SIZE,
        awake: float = AWAKE,
    ) -> None:
        #: requester id -> the highest ``corr`` (request seq) answered.
        self._answered: Dict[int, int] = {}
        #: requester id -> the highest request seq read in this run, whatever
        #: became of it (so a requester seen again is not read twice).
        self._read: Dict[int, int] = {}
        #: requester name -> ((dir, journal), cursor on its journal).
        self._cursors: Dict[str, Tuple[Tuple[str, str], _Cursor]] = {}
        self._seen_version = -1
        self.stats = ResponderStats()
        super().__init__(name, root, dir, page_size, awake)

    def _opened(self) -> None:
        # FORMAT.md rule 2: per requester (dest of the replies), the highest
        # corr this responder replied to. The lock is held: nobody else
        # writes this journal meanwhile.
        r = Reader(f"{self.name}-recover", root=self.root, start="start", service="never")
        try:
            r.add_journal(self.dir, self.journal)
            answered = self._answered
            for f in r:
                if f.corr and f.corr > answered.get(f.dest, 0):
                    answered[f.dest] = f.corr
        finally:
            r.close()

    def _close_cursors(self) -> None:
        self._cursors = {}

    def answered_up_to(self, requester: str) -> int:
        """The ``seq`` of the last request of ``requester`` answered (0: none)."""
        return self._answered.get(endpoint_id(requester), 0)

    def _follow(self) -> None:
        """Reads the journal of every requester online, and only theirs."""
        assert self._watch is not None
        if self._watch.version == self._seen_version:
            return  # nobody came or went (an int read: no lock needed)
        version, peers = self._watch.snapshot()
        self._seen_version = version
        live: Dict[str, Tuple[str, str]] = {}
        for n, p in peers.items():
            if p.get("kind") == "requester" and p.get("journals"):
                j = p["journals"][0]
                live[n] = (str(j["dir"]), str(j["journal"]))
        for n in list(self._cursors):
            if live.get(n) != self._cursors[n][0]:
                del self._cursors[n]  # gone: nobody waits for its replies now
        for n, key in live.items():
            if n not in self._cursors:
                self._cursors[n] = (key, self._open(key[0], key[1], endpoint_id(n)))

    def _open(self, directory: str, journal: str, rid: int) -> _Cursor:
        """A cursor on a requester's journal at the request after the last
        one answered (FORMAT.md rule 3), or after the last one read in this
        run; from its first frame when it ends below that (made anew) or
        when none was answered."""
        mark = max(self._answered.get(rid, 0), self._read.get(rid, 0))
        if mark:
            c = _Cursor(directory, journal, 0, Start.seq(mark + 1), False)
            if c.page is not None and c.seq > mark:
                return c
        return _Cursor(directory, journal, 0, Start.first(), False)

    def poll(self, handler: Handler) -> int:
        """Answers the requests there are now (never waits), oldest first
        across requesters; returns how many it read."""
        self._follow()
        cursors = [c for _id, c in self._cursors.values()]
        n = 0
        if len(cursors) == 1:
            c = cursors[0]
            name = next(iter(self._cursors))
            while True:
                f = c.take()
                if f is None:
                    return n
                self._serve(f, name, handler)
                n += 1
        names = list(self._cursors)
        while True:
            best = -1
            best_t = 0
            for i, c in enumerate(cursors):
                f = c.poll()
                if f is not None and (best < 0 or f.time_ns < best_t):
                    best, best_t = i, f.time_ns
            if best < 0:
                return n
            c = cursors[best]
            f = c.head
            c.advance()
            assert f is not None
            self._serve(f, names[best], handler)
            n += 1

    def _serve(self, f: Frame, requester: str, handler: Handler) -> None:
        """FORMAT.md rule 2, in its order: for this responder, well formed,
        not answered yet, not past its deadline; then at most one reply."""
        st = self.stats
        if f.seq > self._read.get(f.source, 0):
            self._read[f.source] = f.seq
        if f.dest != self.id:
            st.foreign += 1
            return
        if len(f.payload) < 8 or f.corr != f.seq:
            st.malformed += 1
            return
        if f.seq <= self._answered.get(f.source, 0):
            st.already += 1
            return
        (timeout_ns,) = _TIMEOUT.unpack_from(f.payload, 0)
        deadline = f.time_ns + timeout_ns if timeout_ns else None
        if deadline is not None and time.time_ns() > deadline:
            st.expired += 1
            return
        out = handler(Request(f, requester, timeout_ns))
        if out is None:
            st.unanswered += 1
            return
        if isinstance(out, tuple) and len(out) == 2:
            data, typ = out
        else:
            data, typ = out, 0
        if not isinstance(data, (bytes, bytearray, memoryview)) or not isinstance(typ, int) or not 0 <= typ <= 0xFFFFFFFF:
            raise TypeError(
                f"the handler returned {out!r:.80}: return the reply's bytes, (bytes, message type 0 to 4294967295), "
                "or None for no reply"
            )
        assert self._writer is not None
        # Published only if its time_ns is not past the deadline: a handler
        # that took too long writes nothing (the requester has given up).
        if not self._writer.write(typ, data, source=self.id, dest=f.source, corr=f.seq, not_after=deadline):
            st.expired += 1
            return
        self._answered[f.source] = f.seq
        st.answered += 1

    def wait(self, timeout: float) -> None:
        """Sleeps until a request may have come (a frame in a requester's
        journal, or a requester came up) or ``timeout`` seconds pass."""
        self._follow()
        sleep_on_cursors([c for _id, c in self._cursors.values()], [self._wake.bell], timeout)

    def run(self, handler: Handler, stop: Optional[threading.Event] = None) -> None:
        """Answers requests until ``stop`` is set (checked at least once a
        second) or the handler raises (then that exception, and the request
        it was handling is not answered). Sleeps on the doorbells while no
        request comes, after :data:`AWAKE` of looking (yielding the core)
        since the last one."""
        awake_end = 0
        while stop is None or not stop.is_set():
            if self.poll(handler):
                awake_end = time.perf_counter_ns() + self._awake_ns
            elif time.perf_counter_ns() < awake_end:
                os.sched_yield()
            else:
                self.wait(1.0)

    def publish(self, data: Bytes, *, type: int = 0, dest: int = 0) -> int:
        """Writes an event (``corr`` 0) to this responder's journal, for
        everyone (``dest`` 0) or one endpoint id; returns its ``seq``.
        ``tape tail rpc.<name>`` shows it."""
        if self._writer is None:
            raise TapeError("this responder is closed")
        return self._writer.write(type, data, source=self.id, dest=dest, corr=0)

    def __enter__(self) -> "Responder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AWAKE",
    "DEFAULT_TIMEOUT",
    "No",
    "Reply",
    "Request",
    "Requester",
    "Responder",
    "ResponderStats",
    "Timeout",
    "endpoint_id",
]
