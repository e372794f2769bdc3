#!/usr/bin/env python3
"""Registers request/reply endpoints and watches them come and go with a
tape service, using only the standard library, as section 4a of
service/PROTOCOL.md describes.

usage: protocol_endpoints.py SOCKET JOURNAL_DIR
Prints OK and exits 0 when every step behaved as documented.
"""
import os
import sys

# The framing (4-byte little-endian length, then JSON) and the handshake
# are section 2 and 3's, shared with the writer/reader example.
from protocol_client import call, connect, hello, recv


def endpoint_id(name):
    """FNV-1a, 32 bits, of the UTF-8 name; 1 if that is 0."""
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h or 1


def main():
    sock_path, journal_dir = sys.argv[1], os.path.abspath(sys.argv[2])
    assert endpoint_id("a") == 0xE40C292C and endpoint_id("foobar") == 0xBF9CF968

    # A watcher first: nothing is online yet.
    w = connect(sock_path)
    hello(w)
    r = call(w, {"type": "watch"})
    assert r["type"] == "watching" and r["endpoints"] == [], r

    # A responder.
    e = connect(sock_path)
    hello(e)
    r = call(e, {"type": "register_endpoint", "name": "py-echo", "role": "responder",
                 "dir": journal_dir, "journal": "rpc.py-echo"})
    assert r["type"] == "registered", r
    ev = recv(w)
    assert ev["type"] == "event" and ev["change"] == "up", ev
    assert ev["peer"]["kind"] == "responder" and ev["peer"]["pid"] == os.getpid(), ev

    # Its name is taken; find_endpoint finds it.
    e2 = connect(sock_path)
    hello(e2)
    r = call(e2, {"type": "register_endpoint", "name": "py-echo", "role": "requester",
                  "dir": journal_dir, "journal": "rpc.other"})
    assert r["type"] == "error" and r["code"] == "held" and r["pid"] == os.getpid(), r
    r = call(e2, {"type": "find_endpoint", "name": "py-echo"})
    assert r["type"] == "peer" and r["peer"]["name"] == "py-echo", r
    r = call(e2, {"type": "find_endpoint", "name": "nobody"})
    assert r["type"] == "peer" and r["peer"] is None, r

    # Closing its connection: the watcher sees it go.
    e.close()
    ev = recv(w)
    assert ev["type"] == "event" and ev["change"] == "down", ev
    assert ev["peer"]["name"] == "py-echo", ev
    print("OK")


if __name__ == "__main__":
    main()
