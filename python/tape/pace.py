"""Reading recorded frames at the pace at which they were written (the
Rust reader's ``paced(Speed)``, ``reader/src/pace.rs``).

The pace is set by the first frame: it falls due at once, and a frame
recorded ``d`` ns after it falls due ``d / speed`` ns after that moment on
``CLOCK_MONOTONIC``. Each moment is computed from that one origin, never
from the frame before, so a late wake-up delays one frame and the errors
do not add up over a day. :func:`sleep_until` sleeps (``time.sleep``:
``clock_nanosleep`` in CPython 3.11+, ``select`` before) until
:data:`SPIN_NS` before the moment and spins on the clock only for that
last stretch: no hot loop over a long gap.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Tuple, Union

#: How long before a frame's moment :func:`sleep_until` stops sleeping and
#: spins: the Rust reader's 50 µs plus the default timer slack (50 µs) and
#: the interpreter's own wake-up cost.
SPIN_NS = 150_000

SpeedLike = Union[str, int, float, None]


def parse_speed(speed: SpeedLike) -> Optional[float]:
    """``None`` (as fast as they can be read) for ``None`` or ``"max"``,
    else the positive finite number ``speed`` is (``1``: the recorded
    pace, ``10``: ten times faster, ``"0.5"``: half as fast); ValueError
    otherwise, in the words of ``tape replay --speed``."""
    if speed is None:
        return None
    if isinstance(speed, str):
        if speed.strip().lower() == "max":
            return None
        try:
            x = float(speed.strip())
        except ValueError:
            x = math.nan
    elif isinstance(speed, (int, float)) and not isinstance(speed, bool):
        x = float(speed)
    else:
        x = math.nan
    if not (math.isfinite(x) and x > 0):
        raise ValueError(
            f"{str(speed)!r} is not a speed: give a positive number (1 = the recorded pace, 10 = ten times faster) or max"
        )
    return x


def sleep_until(at_ns: int) -> None:
    """Waits until ``time.monotonic_ns()`` reads ``at_ns``: asleep until
    :data:`SPIN_NS` before it, then spinning on the clock. Returns at once
    when it has passed; never early."""
    mono = time.monotonic_ns
    now = mono()
    if now >= at_ns:
        return
    left = at_ns - now - SPIN_NS
    if left > 0:
        time.sleep(left / 1e9)
    while mono() < at_ns:
        pass


class Pacer:
    """Maps recorded write times onto ``time.monotonic_ns()`` at a speed."""

    __slots__ = ("speed", "_scale", "origin")

    def __init__(self, speed: float) -> None:
        #: Times the recorded pace.
        self.speed = speed
        self._scale = 1.0 / speed
        #: The first frame's recorded time and the monotonic ns it fell due
        #: at; ``None`` until a frame was asked about.
        self.origin: Optional[Tuple[int, int]] = None

    def due_at(self, time_ns: int) -> int:
        """The ``time.monotonic_ns()`` at which a frame recorded at
        ``time_ns`` falls due. The first call sets the pace: that frame is
        due now. A frame recorded before the first is due at once."""
        o = self.origin
        if o is None:
            o = self.origin = (time_ns, time.monotonic_ns())
        d = time_ns - o[0]
        return o[1] + (int(d * self._scale) if d > 0 else 0)

    def is_due(self, time_ns: int) -> bool:
        return self.due_at(time_ns) <= time.monotonic_ns()

    def start_at(self, time_ns: int, mono_ns: int) -> None:
        """Sets the pace: a frame recorded at ``time_ns`` falls due when
        ``time.monotonic_ns()`` reads ``mono_ns``."""
        self.origin = (time_ns, mono_ns)

    def restart(self) -> None:
        """Forgets the pace: the next frame asked about sets it again."""
        self.origin = None
