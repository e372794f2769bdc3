"""Names, values, errors and what the server hands back, read: the parts
of :mod:`tape.vars` that need no connection (and no nats-py)."""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple, Optional, Tuple

from ..format import TapeError

#: The bucket without ``bucket=``.
DEFAULT_BUCKET = "tape"
#: The server without ``server`` and ``$TAPE_NATS``.
DEFAULT_SERVER = "nats://127.0.0.1:4222"
#: Values kept per key (see ``nats/src/vars/mod.rs`` for why not 1).
HISTORY = 16
#: How long the server remembers an operation's id, ns.
DUPLICATE_WINDOW_NS = 120_000_000_000
#: Message type of the frames :meth:`Vars.mirror` writes.
MIRROR_MSG_TYPE = 0x7661
#: The longest an operation keeps retrying, s (within the duplicate window).
MAX_TIMEOUT = 100.0
#: Largest value accepted.
MAX_VALUE = 1 << 20

_WRONG_LAST_SEQUENCE = 10071
#: One request's wait for its answer, s.
_ANSWER = 3.0
#: How long a watch waits for anything (a heartbeat comes every second).
_QUIET = 4.0
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058


class VarError(TapeError):
    """An operation on a variable failed; the text says what to do."""


class VarMissing(VarError):
    """The variable (or the key, or the item) is not there (``tape var``
    exits 3)."""


class Entry(NamedTuple):
    """A variable's value and revision."""

    name: str
    value: Any
    revision: int
    #: When it was written (ns since the epoch, the server's clock).
    time_ns: int


class Change(NamedTuple):
    """One change, as :meth:`Vars.watch` yields it and ``tape var watch``
    prints it."""

    name: str
    #: ``put`` or ``del`` (or ``purge``).
    op: str
    #: The new value (``None`` for ``del``).
    value: Any
    revision: int
    time_ns: int

    def to_json(self) -> str:
        """One line as ``tape var watch`` prints it."""
        return json.dumps(
            {"name": self.name, "op": self.op, "value": self.value, "revision": self.revision, "time_ns": self.time_ns},
            separators=(",", ":"),
            ensure_ascii=False,
        )


# -- names ------------------------------------------------------------------

_BUCKET = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_NAME_CHARS = re.compile(r"\A[A-Za-z0-9_\-/=.]+\Z")
_WORD = re.compile(r"\A[A-Za-z0-9_\-/=]+\Z")


def check_bucket(b: str) -> None:
    """1 to 64 of ``A-Z a-z 0-9 _ -``."""
    if not _BUCKET.match(b):
        raise VarError(f"the bucket name {b!r} is not usable: give 1 to 64 of A-Z a-z 0-9 _ -")


def check_name(n: str) -> None:
    """1 to 255 of ``A-Z a-z 0-9 _ - / = .``, dots between words."""
    ok = 0 < len(n) <= 255 and _NAME_CHARS.match(n) and not n.startswith(".") and not n.endswith(".") and ".." not in n
    if not ok:
        raise VarError(
            f"the variable name {n!r} is not usable: give 1 to 255 of A-Z a-z 0-9 _ - / = . (dots between words)"
        )


def check_pattern(p: str) -> None:
    """Dot-separated words; ``*`` any one word, ``>`` at the end the rest."""
    words = p.split(".")
    bad = not p or any(
        not w or (w == ">" and i + 1 != len(words)) or (w not in ("*", ">") and not _WORD.match(w))
        for i, w in enumerate(words)
    )
    if bad:
        raise VarError(
            f"the pattern {p!r} is not usable: give dot-separated words, * for any one word, > at the end for the rest (e.g. md.*, risk.>)"
        )


# -- what the server hands back ---------------------------------------------


def _encode(v: Any) -> bytes:
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _decode(data: bytes) -> Any:
    """JSON, or (written by something else than tape) the bytes as a
    string, as the Rust side reads them."""
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


def _same(a: Any, b: Any) -> bool:
    """JSON equality as the Rust side has it: ``1``, ``1.0`` and ``True``
    differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    return "an object"


def parse_rfc3339(s: str) -> Optional[int]:
    """``2024-01-02T03:04:05.123456789Z`` (or with an offset) → ns since
    the epoch; ``None`` when it is not that."""
    m = re.match(r"\A(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)\Z", s)
    if not m:
        return None
    y, mo, d, h, mi, se = (int(m.group(i)) for i in range(1, 7))
    frac = int((m.group(7) or "")[:9].ljust(9, "0"))
    z = m.group(8)
    off = 0 if z == "Z" else (1 if z[0] == "+" else -1) * (int(z[1:3]) * 3600 + int(z[4:6]) * 60)
    # Days from the civil date (Howard Hinnant's algorithm), as the Rust side.
    y2 = y - 1 if mo <= 2 else y
    era = y2 // 400
    yoe = y2 - era * 400
    mp = (mo + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146_097 + doe - 719_468
    return (days * 86_400 + h * 3600 + mi * 60 + se - off) * 1_000_000_000 + frac


def _raw_header(h: bytes, key: str) -> Optional[str]:
    """A header of raw NATS headers (``NATS/1.0\\r\\nK: V\\r\\n...``)."""
    for line in h.decode("utf-8", "replace").split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == key.lower():
            return v.strip()
    return None


def _delivery(reply: str) -> Optional[Tuple[int, int, int, int]]:
    """Stream seq, consumer seq, time (ns), pending from a delivery's
    reply subject (``$JS.ACK.<stream>.<consumer>.<n>.<sseq>.<cseq>.<ns>.<pending>``,
    with domain and account hash on 2.10+)."""
    t = reply.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        return None
    o = 5 if len(t) == 9 else 7
    try:
        return int(t[o]), int(t[o + 1]), int(t[o + 2]), int(t[o + 3])
    except ValueError:
        return None


def _backoff(n: int, cap: float = 0.5) -> float:
    """The pause before try ``n`` (0, 1, ...): 50 ms doubling to ``cap``."""
    return float(min(0.05 * (2 ** min(n, 10)), cap))


class _Retry(Exception):
    """Worth another try after a pause."""


class _Fatal(Exception):
    """Retrying cannot mend it."""


def _nats() -> Any:
    try:
        import nats  # type: ignore[import-not-found]
        import nats.errors  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as e:
        raise ImportError("tape.Vars needs nats-py: pip install './python[nats]' (or pip install nats-py)") from e
    if not hasattr(nats, "connect"):
        raise ImportError(
            f"tape.Vars needs nats-py, but `import nats` found {list(getattr(nats, '__path__', []))}: "
            "pip install nats-py, or run from another folder"
        )
    return nats
