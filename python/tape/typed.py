"""Zero-copy structs of tape-typed, read and written by a ``struct`` format.

A Rust ``tape_typed::PlainMessage`` is a ``#[repr(C)]`` struct with no
padding whose bytes are the payload, fields in order, little-endian
(journal/FORMAT.md, "Typed payloads"). A ``struct`` format string starting
with ``<`` (little-endian, no alignment padding) describes it byte for
byte; :class:`Struct` pairs one with the message type id and field names::

    # Rust:   #[repr(C)] struct Tick { sym: [u8; 8], px: i64, qty: i64, venue: u32, flags: u32 }
    #         impl PlainMessage for Tick { const TYPE: u32 = 1; }
    Tick = tape.Struct("<8sqqII", "sym px qty venue flags", type=1, name="Tick")

    t = Tick.unpack(frame)        # checks frame.type == 1 and len(payload) == 32
    t.px, t.qty                   # a namedtuple
    Tick.write(writer, sym=b"ESZ6", px=500000, qty=3, venue=1, flags=0)

:meth:`Frame.unpack <tape.Frame.unpack>` reads a payload by a bare format
(length checked, no type check).
"""

from __future__ import annotations

import collections
import struct
from typing import Any, Sequence, Tuple, Union

from .format import TapeError

__all__ = ["Struct", "TypedError", "WrongLength", "WrongType", "unpack_payload"]


class TypedError(TapeError, ValueError):
    """A frame is not the typed message it was read as."""


class WrongType(TypedError):
    """The frame's ``type`` is not the struct's type id."""


class WrongLength(TypedError):
    """The payload's length is not the struct's size."""


def _compile(fmt: Union[str, struct.Struct]) -> struct.Struct:
    s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
    f = s.format if isinstance(s.format, str) else s.format.decode()
    if not f.startswith("<"):
        raise ValueError(
            f"struct format {f!r} must start with '<': tape's structs are little-endian with no padding"
        )
    return s


def unpack_payload(fmt: Union[str, struct.Struct], payload: Any) -> Tuple[Any, ...]:
    """The values of ``payload`` by ``fmt`` (a format starting with ``<``),
    after checking that the payload is exactly the format's size."""
    s = _compile(fmt)
    n = len(payload)
    if n != s.size:
        raise WrongLength(f"format {s.format!r} is {s.size} bytes but the payload is {n}")
    return s.unpack(payload)


class Struct:
    """A zero-copy struct: a ``struct`` format (starting with ``<``), its
    field names (a sequence, or one string split on spaces and commas)
    and the message type id its frames carry.

    :meth:`unpack` reads a frame as a namedtuple named ``name``;
    :meth:`pack` and :meth:`write` make one.
    """

    __slots__ = ("type", "name", "fields", "size", "_s", "_tuple")

    def __init__(self, fmt: Union[str, struct.Struct], fields: Union[str, Sequence[str]], *, type: int, name: str = "Struct") -> None:
        if not isinstance(type, int) or not 0 <= type < 1 << 32:
            raise ValueError(f"message type {type!r} must be an integer in 0..2^32-1")
        self._s = _compile(fmt)
        if isinstance(fields, str):
            fields = fields.replace(",", " ").split()
        values = len(self._s.unpack(bytes(self._s.size)))
        if len(fields) != values:
            raise ValueError(f"format {self._s.format!r} has {values} values but {len(fields)} field names were given")
        #: The frames' message type.
        self.type = type
        #: The struct's name (of the namedtuples).
        self.name = name
        #: The field names, in order.
        self.fields = tuple(fields)
        #: The payload's size in bytes.
        self.size = self._s.size
        self._tuple = collections.namedtuple(name, self.fields)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Struct({self._s.format!r}, {' '.join(self.fields)!r}, type={self.type}, name={self.name!r})"

    def unpack(self, frame: Any) -> Any:
        """The frame's payload as a namedtuple, after checking that its
        ``type`` is this struct's and its payload this struct's size."""
        if frame.type != self.type:
            raise WrongType(f"a frame of type {frame.type} is not a {self.name} (type {self.type})")
        return self.unpack_payload(frame.payload)

    def unpack_payload(self, payload: Any) -> Any:
        """``payload`` (bytes or a memoryview) as a namedtuple, after
        checking its length (no type to check)."""
        n = len(payload)
        if n != self.size:
            raise WrongLength(
                f"a {self.name} is {self.size} bytes but the payload is {n}: the writer and this reader disagree on the layout"
            )
        return self._tuple._make(self._s.unpack(payload))

    def _values(self, values: Tuple[Any, ...], fields: dict) -> Tuple[Any, ...]:
        if not fields:
            return values
        if values:
            raise TypeError("give the values in order or by name, not both")
        missing = [f for f in self.fields if f not in fields]
        extra = [f for f in fields if f not in self.fields]
        if missing or extra:
            raise TypeError(f"{self.name}: missing fields {missing}, unknown fields {extra}")
        return tuple(fields[f] for f in self.fields)

    def pack(self, *values: Any, **fields: Any) -> bytes:
        """The payload of a struct with these values (in order, or by
        field name)."""
        return self._s.pack(*self._values(values, fields))

    def write(self, writer: Any, *values: Any, source: Any = None, dest: Any = None, corr: int = 0, **fields: Any) -> int:
        """Packs the values straight into a frame claimed from ``writer`` (a
        :class:`tape.Writer`) and commits it with this struct's type;
        returns its sequence number. Bad values raise before anything is
        published."""
        vals = self._values(values, fields)
        c = writer.claim(self.size)
        try:
            self._s.pack_into(c.payload, 0, *vals)
        except Exception:
            c.payload[:] = bytes(self.size)  # nothing published: leave zeros
            raise
        return c.commit(self.type, source=source, dest=dest, corr=corr)
