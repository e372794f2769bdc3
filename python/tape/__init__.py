"""tape for Python: read and write tape journals with the standard library.

A pure-Python reader and writer of the journals of tape, the shared-memory
journal IPC of the trading box, built from ``journal/FORMAT.md`` (the byte
layout) and ``service/PROTOCOL.md`` (the service's Unix-socket protocol)
alone. Frames it writes are read by ``tape tail`` and the Rust ``Reader``,
and it reads what the Rust ``Writer`` writes. x86-64 Linux, Python 3.8+.

- :class:`Writer`: the one writer of a journal (registered with the service,
  holding the journal's lock), appends frames with ``write`` or
  ``claim``/``commit``.
- :class:`Reader`: reads any number of journals, ``next()`` returns the
  unread frame with the smallest write time, as a :class:`Frame` whose
  ``payload`` is a ``memoryview`` of the mapping.
- :class:`Struct`: a zero-copy struct of tape-typed (a Rust
  ``PlainMessage``) by a ``struct`` format: ``Tick.unpack(frame)`` checks
  the frame's type and length and gives a namedtuple, ``Tick.write(w,
  ...)`` packs one straight into a claimed frame; ``Frame.unpack(fmt)``
  reads a payload by a bare format.
- :class:`Connection`: ask the service who is online.
- :class:`Requester` and :class:`Responder`: request/reply with any tape
  endpoint, Rust's or Python's: ``call`` returns the reply or raises
  :class:`No` (nobody of that name online) or :class:`Timeout`.
- :class:`Vars` (the optional extra ``pip install './python[nats]'``, on
  nats-py): shared variables across machines, the same as ``tape var``;
  loaded on first use, so importing :mod:`tape` does not need nats-py.

::

    import tape
    with tape.Writer("signals") as w:            # needs `tape service` running
        w.write(1, b"buy 100")

    r = tape.Reader("strategy")
    r.add_journal(None, "signals")               # None: <root>/journal
    for f in r:                                  # the frames there are now
        print(f.seq, f.time_ns, f.type, bytes(f.payload))
"""

from .checksum import ACCELERATED, crc32c
from .durable import SyncStats, parse_sync
from .format import DEFAULT_PAGE_SIZE, FormatError, TapeError
from .position import PositionError
from .reader import Frame, Reader, Start
from .service import (
    Connection,
    HeldError,
    NotRunning,
    ServiceError,
    default_root,
    journal_dir,
    socket_path,
)
from .writer import Claim, Writer
from .typed import Struct, TypedError, WrongLength, WrongType
from .rpc import No, Reply, Request, Requester, Responder, Timeout, endpoint_id

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # tape.Vars needs nats-py: loaded when first asked for, not on import.
    if name in ("Vars", "VarError", "VarMissing"):
        from . import vars as _vars

        return getattr(_vars, name)
    raise AttributeError(f"module 'tape' has no attribute {name!r}")


__all__ = [
    "ACCELERATED",
    "Claim",
    "Connection",
    "DEFAULT_PAGE_SIZE",
    "FormatError",
    "Frame",
    "HeldError",
    "No",
    "NotRunning",
    "PositionError",
    "Reader",
    "Reply",
    "Request",
    "Requester",
    "Responder",
    "ServiceError",
    "Start",
    "SyncStats",
    "Struct",
    "TapeError",
    "Timeout",
    "TypedError",
    "Writer",
    "WrongLength",
    "WrongType",
    "crc32c",
    "default_root",
    "endpoint_id",
    "journal_dir",
    "socket_path",
]
