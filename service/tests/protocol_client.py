#!/usr/bin/env python3
"""Registers a writer and a reader with a tape service using only the
standard library, exactly as service/PROTOCOL.md describes.

usage: protocol_client.py SOCKET JOURNAL_DIR
Prints OK and exits 0 when every step behaved as documented.
"""
import json
import os
import socket
import struct
import sys


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def send(s, msg):
    body = json.dumps(msg).encode("utf-8")
    s.sendall(struct.pack("<I", len(body)) + body)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("service closed the connection")
        buf += chunk
    return buf


def recv(s):
    (n,) = struct.unpack("<I", recv_exact(s, 4))
    return json.loads(recv_exact(s, n).decode("utf-8"))


def call(s, msg):
    send(s, msg)
    return recv(s)


def hello(s):
    r = call(s, {"type": "hello", "version": 1})
    assert r["type"] == "hello" and r["version"] == 1, r
    return r["service_pid"]


def main():
    sock_path, journal_dir = sys.argv[1], os.path.abspath(sys.argv[2])

    # A writer: the journal is ours while this connection is open.
    w = connect(sock_path)
    hello(w)
    r = call(w, {"type": "register_writer", "dir": journal_dir, "journal": "py"})
    assert r["type"] == "registered" and r["id"] >= 1, r

    # A second writer of the same journal is refused with the holder's pid.
    w2 = connect(sock_path)
    hello(w2)
    r = call(w2, {"type": "register_writer", "dir": journal_dir, "journal": "py"})
    assert r["type"] == "error" and r["code"] == "held", r
    assert r["pid"] == os.getpid(), r

    # A reader of that journal, then one more journal on the same connection.
    rd = connect(sock_path)
    hello(rd)
    r = call(rd, {"type": "register_reader", "name": "py-strategy",
                  "journals": [{"dir": journal_dir, "journal": "py"}]})
    assert r["type"] == "registered", r
    r = call(rd, {"type": "add_journal", "dir": journal_dir, "journal": "other"})
    assert r["type"] == "ok", r

    # Queries, on a connection that registers nothing.
    q = connect(sock_path)
    hello(q)
    assert call(q, {"type": "count"}) == {"type": "count", "count": 2}
    r = call(q, {"type": "find", "name": "py-strategy"})
    assert r["type"] == "peer" and r["peer"]["kind"] == "reader", r
    assert r["peer"]["pid"] == os.getpid(), r
    r = call(q, {"type": "list", "page": 0, "per_page": 10})
    assert r["type"] == "peers" and r["total"] == 2, r
    assert [p["kind"] for p in r["peers"]] == ["writer", "reader"], r
    r = call(q, {"type": "journals"})
    names = [(j["journal"], j["writer"] and j["writer"]["pid"], len(j["readers"]))
             for j in r["journals"]]
    assert names == [("other", None, 1), ("py", os.getpid(), 1)], names

    # Closing the writer's connection frees the journal at once.
    w.close()
    r = call(w2, {"type": "register_writer", "dir": journal_dir, "journal": "py"})
    assert r["type"] == "registered", r

    # An unknown message gets an error and the connection is closed.
    r = call(q, {"type": "no_such_thing"})
    assert r["type"] == "error" and r["code"] == "unknown_type", r
    try:
        recv(q)
        raise AssertionError("connection should be closed")
    except (EOFError, ConnectionResetError):
        pass

    print("OK")


if __name__ == "__main__":
    main()
