#!/usr/bin/env python3
"""Request/reply round trips from and to Python, beside the Rust baseline
and ``tape call`` as a subprocess, all measured in the same run:

- ``rust -> rust``: ``tape-ping`` (a ``tape_rpc::Requester``) calling the
  Rust ``tape-echo``: the baseline;
- ``python -> rust``: a ``tape.Requester`` in this process calling
  ``tape-echo``;
- ``rust -> python``: ``tape-ping`` calling the Python example responder
  (``python/examples/responder.py``, ``tape.Responder.run``);
- ``python -> python``: a ``tape.Requester`` calling that responder;
- ``tape call -> rust``: one ``tape call`` process per call to
  ``tape-echo``, timed from spawn to exit (what a Python program had
  before ``tape.Requester``).

One call in flight, 64-byte payloads, each reply checked against its
request. Each run starts its own ``tape service`` on a temporary root in
/dev/shm; nothing is pinned (every process sleeps on the doorbells while it
waits). Prints one JSON line per run, then the median over the runs of
each row's p50 and p99 (ns)::

    cargo build --release -p tape-tools --bins
    python3 python/bench/rpc.py [--runs 5] [--calls 5000] [--spawn-calls 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
sys.path.insert(0, PYTHON_DIR)

import tape  # noqa: E402

REPO = os.path.dirname(PYTHON_DIR)
ROWS = ["rust -> rust", "python -> rust", "rust -> python", "python -> python", "tape call -> rust"]


def pct(ns: List[int], q: float) -> int:
    s = sorted(ns)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_for(what: str, cond, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise SystemExit(f"rpc.py: {what} did not happen within {timeout:g} s")


def online(root: str, name: str) -> bool:
    try:
        with tape.Connection(root) as c:
            return c.call({"type": "find_endpoint", "name": name})["peer"] is not None
    except (tape.TapeError, OSError):
        return False


def ping(bin_dir: str, root: str, dest: str, calls: int) -> Dict[str, int]:
    out = subprocess.run(
        [os.path.join(bin_dir, "tape-ping"), dest, "--root", root, "--calls", str(calls), "--warmup", "200", "--json"],
        capture_output=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"rpc.py: tape-ping {dest} failed: {out.stderr.decode(errors='replace').strip()}")
    j = json.loads(out.stdout)
    return {"p50_ns": j["p50_ns"], "p99_ns": j["p99_ns"]}


def py_calls(r: tape.Requester, dest: str, calls: int) -> Dict[str, int]:
    ns: List[int] = []
    payload = bytearray(64)
    for i in range(200 + calls):
        payload[:8] = i.to_bytes(8, "little")
        data = bytes(payload)
        t0 = time.perf_counter_ns()
        got, _typ = r.call(dest, data, timeout=5.0)
        t1 = time.perf_counter_ns()
        if got != data:
            raise SystemExit(f"rpc.py: the reply to call {i} from {dest} is not its request's bytes")
        if i >= 200:
            ns.append(t1 - t0)
    return {"p50_ns": pct(ns, 0.5), "p99_ns": pct(ns, 0.99)}


def spawned_calls(bin_dir: str, root: str, dest: str, calls: int) -> Dict[str, int]:
    ns: List[int] = []
    tape_bin = os.path.join(bin_dir, "tape")
    for i in range(calls):
        data = b"call %d" % i
        t0 = time.perf_counter_ns()
        out = subprocess.run([tape_bin, "call", dest, data, "--root", root], capture_output=True, timeout=60)
        t1 = time.perf_counter_ns()
        if out.returncode != 0 or out.stdout != data + b"\n":
            raise SystemExit(f"rpc.py: tape call {dest} failed: {out.stderr.decode(errors='replace').strip()}")
        ns.append(t1 - t0)
    return {"p50_ns": pct(ns, 0.5), "p99_ns": pct(ns, 0.99)}


def one_run(bin_dir: str, calls: int, spawn_calls: int) -> Dict[str, Dict[str, int]]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = tempfile.mkdtemp(prefix="tape-py-rpc-", dir=base)
    procs: List[subprocess.Popen] = []  # type: ignore[type-arg]
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    try:
        procs.append(subprocess.Popen([os.path.join(bin_dir, "tape"), "service", "--root", root], **quiet))
        wait_for("tape service", lambda: os.path.exists(os.path.join(root, "system", "service.sock")))
        procs.append(subprocess.Popen([os.path.join(bin_dir, "tape-echo"), "echo", "--root", root], **quiet))
        procs.append(
            subprocess.Popen(
                [sys.executable, os.path.join(PYTHON_DIR, "examples", "responder.py"), "echo-py", "--root", root], **quiet
            )
        )
        wait_for("tape-echo online", lambda: online(root, "echo"))
        wait_for("responder.py online", lambda: online(root, "echo-py"))
        res: Dict[str, Dict[str, int]] = {}
        res["rust -> rust"] = ping(bin_dir, root, "echo", calls)
        with tape.Requester(f"bench-py-{os.getpid()}", root=root) as r:
            res["python -> rust"] = py_calls(r, "echo", calls)
            res["rust -> python"] = ping(bin_dir, root, "echo-py", calls)
            res["python -> python"] = py_calls(r, "echo-py", calls)
        res["tape call -> rust"] = spawned_calls(bin_dir, root, "echo", spawn_calls)
        return res
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs (default 5); medians over them are printed")
    ap.add_argument("--calls", type=int, default=5000, help="timed calls per row (after 200 untimed)")
    ap.add_argument("--spawn-calls", type=int, default=200, help="tape call processes per run")
    ap.add_argument(
        "--bin-dir", default=os.path.join(REPO, "target", "release"), help="where tape, tape-echo and tape-ping are"
    )
    args = ap.parse_args()
    for b in ("tape", "tape-echo", "tape-ping"):
        if not os.path.exists(os.path.join(args.bin_dir, b)):
            print(f"rpc.py: {args.bin_dir}/{b} is missing: run `cargo build --release -p tape-tools --bins`", file=sys.stderr)
            return 1
    runs = []
    for i in range(args.runs):
        res = one_run(args.bin_dir, args.calls, args.spawn_calls)
        runs.append(res)
        print(json.dumps({"run": i + 1, **res}), flush=True)
    print(f"\nmedian of {args.runs} runs ({args.calls} calls a row, {args.spawn_calls} tape call processes);")
    print("the ratios are the medians of each run's own ratios:")
    print(f"{'':20} {'p50 us':>9} {'p99 us':>9} {'p50 / rust->rust':>17} {'tape call p50 / p50':>20}")
    for row in ROWS:
        p50 = statistics.median(r[row]["p50_ns"] for r in runs)
        p99 = statistics.median(r[row]["p99_ns"] for r in runs)
        vs_rust = statistics.median(r[row]["p50_ns"] / r["rust -> rust"]["p50_ns"] for r in runs)
        vs_call = statistics.median(r["tape call -> rust"]["p50_ns"] / r[row]["p50_ns"] for r in runs)
        print(f"{row:20} {p50 / 1e3:9.1f} {p99 / 1e3:9.1f} {vs_rust:16.1f}x {vs_call:19.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
