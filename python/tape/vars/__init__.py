"""Shared variables across machines: JSON values in a NATS JetStream
key-value bucket, each change a compare-and-set on the key's revision.

The same bucket, keys, values and protocol as the Rust ``tape_nats::Vars``
and ``tape var`` (``nats/src/vars/``), so Python and Rust processes on any
machines share one set of variables:

- bucket ``B`` is the stream ``KV_B`` on subjects ``$KV.B.>``; variable
  ``NAME`` is subject ``$KV.B.NAME``, its value the JSON text of the last
  message there, its revision that message's stream sequence; a deletion
  is a message with the header ``KV-Operation: DEL`` and no payload;
- every change reads the key's last message, computes the new value and
  publishes it with ``Nats-Expected-Last-Subject-Sequence: <revision
  read>``; on a conflict (another process changed the key) it reads and
  computes again, so pushes from many machines at once all land;
- every change carries a ``Nats-Msg-Id`` of its own, the same on every
  attempt: a change whose answer was lost is sent again as it was, and the
  server's de-duplication applies it once.

It speaks the JetStream API as plain JSON requests (``$JS.API.*``) over
nats-py's core client, as the Rust side does, which works with
nats-server 2.9 as with later ones.

Needs nats-py: ``pip install './python[nats]'``. Importing :mod:`tape`
does not; :class:`Vars` loads it when first used.

::

    import tape
    v = tape.Vars("nats://10.0.0.5:4222", token_file="/etc/tape/token")
    v.put("risk.limit", {"max": 100})
    v.list_push("orders", {"id": 7})
    print(v.get("risk.limit").value)          # {'max': 100}
    for ch in v.watch("risk.>"):              # every change, in order
        print(ch.name, ch.op, ch.value, ch.revision)
"""

from .common import (
    DEFAULT_BUCKET,
    DEFAULT_SERVER,
    HISTORY,
    MIRROR_MSG_TYPE,
    Change,
    Entry,
    VarError,
    VarMissing,
    check_bucket,
    check_name,
    check_pattern,
    parse_rfc3339,
)
from .client import Vars

__all__ = [
    "DEFAULT_BUCKET",
    "DEFAULT_SERVER",
    "HISTORY",
    "MIRROR_MSG_TYPE",
    "Change",
    "Entry",
    "VarError",
    "VarMissing",
    "Vars",
    "check_bucket",
    "check_name",
    "check_pattern",
    "parse_rfc3339",
]
