#!/usr/bin/env python3
"""An example requester: calls responder NAME with DATA and prints the
reply, like ``tape call``; with ``--count N`` it makes N calls, keeping
``--in-flight K`` of them in flight at once, and checks that each reply is
the echo of its own request. Exit status as ``tape call``: 0 OK, 3 NO (no
responder of that name online; nothing sent), 4 TIMEOUT, 1 any other
error.

::

    tape service & tape-echo &
    python3 python/examples/requester.py echo hello           # prints hello
    python3 python/examples/requester.py echo x --count 10000 --in-flight 8
    python3 python/examples/requester.py nobody hello; echo $?  # 3
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tape  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="the responder to call")
    ap.add_argument("data", nargs="?", default="", help="the request's data")
    ap.add_argument("--root", help="root folder (default: $TAPE_ROOT, else /tmp/trading)")
    ap.add_argument("--type", type=int, default=0, help="message type of the request")
    ap.add_argument("--timeout", type=float, default=5000, help="milliseconds to wait for each reply")
    ap.add_argument("--count", type=int, default=0, help="make this many calls (an echo is expected)")
    ap.add_argument("--in-flight", type=int, default=1, help="with --count: calls in flight at once")
    ap.add_argument("--as", dest="me", default=f"requester-py-{os.getpid()}", help="this requester's name")
    args = ap.parse_args()

    try:
        with tape.Requester(args.me, root=args.root) as r:
            if not args.count:
                data, typ = r.call(args.name, args.data.encode(), type=args.type, timeout=args.timeout / 1000)
                sys.stdout.buffer.write(data + b"\n")
                return 0
            sent = {}  # call id -> the data sent
            done = 0
            while done < args.count:
                while len(sent) < args.in_flight and done + len(sent) < args.count:
                    data = f"{args.data}{done + len(sent)}".encode()
                    sent[r.send_nowait(args.name, data, type=args.type, timeout=args.timeout / 1000)] = data
                call_id, out = r.wait_any()
                if isinstance(out, tape.Timeout):
                    raise out
                if out.data != sent.pop(call_id):
                    print(f"requester.py: the reply to call {call_id} is not its request's echo", file=sys.stderr)
                    return 1
                done += 1
            print(f"{done} calls, every reply matched")
            return 0
    except tape.No as e:
        print(f"requester.py: {e}", file=sys.stderr)
        return 3
    except tape.Timeout as e:
        print(f"requester.py: {e}", file=sys.stderr)
        return 4
    except (tape.TapeError, ValueError) as e:
        print(f"requester.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
