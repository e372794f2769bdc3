#!/usr/bin/env python3
"""An example responder: answers as NAME (default ``echo-py``) with each
request's own data and type (an echo, like the Rust ``tape-echo``), or with
the data in capitals (``--upper``), and publishes an event every
``--tick-ms`` milliseconds if asked. SIGINT or SIGTERM stop it; it then says
what it did on standard error.

::

    tape service &
    python3 python/examples/responder.py echo-py &
    tape call echo-py hello                 # prints hello (the Rust requester)
    python3 python/examples/requester.py echo-py hello
    tape tail rpc.echo-py --format json     # its replies and events
"""

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tape  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", nargs="?", default="echo-py", help="name to answer as (its journal is rpc.NAME)")
    ap.add_argument("--root", help="root folder (default: $TAPE_ROOT, else /tmp/trading)")
    ap.add_argument("--upper", action="store_true", help="reply with the data in capitals")
    ap.add_argument("--tick-ms", type=float, default=0, help="publish an event 'tick N' this often")
    args = ap.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        r = tape.Responder(args.name, root=args.root)
    except (tape.TapeError, ValueError) as e:
        print(f"responder.py: {e}", file=sys.stderr)
        return 1

    def handler(req: tape.Request):
        return (req.data.upper() if args.upper else req.data), req.type

    print(f"responder.py: answering as {args.name} (pid {os.getpid()})", file=sys.stderr, flush=True)
    print("ready", flush=True)
    ticks = 0
    next_tick = time.monotonic()
    with r:
        if args.tick_ms <= 0:
            r.run(handler, stop)
        else:
            while not stop.is_set():
                if time.monotonic() >= next_tick:
                    ticks += 1
                    r.publish(f"tick {ticks}".encode(), type=1)
                    next_tick += args.tick_ms / 1000
                if r.poll(handler) == 0:
                    r.wait(max(0.0, min(1.0, next_tick - time.monotonic())))
        print(f"responder.py: stopped: {r.stats}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
