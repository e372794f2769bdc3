"""Helpers for the tests: the package on sys.path, the `tape` binary, a
temporary root with its own `tape service`, watchdog waits.

The binary is ``$TAPE_BIN`` (the Rust test ``tools/tests/python.rs`` sets it
to the one cargo built), else ``target/debug/tape`` of this repository.
Tests that need it are skipped when neither exists, unless
``$TAPE_PY_REQUIRE_BIN`` is set (as the Rust test does): then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Callable, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_DIR)
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

#: How long any one wait may take before the test fails as hung: long,
#: because the machine is small and shared. It only catches hangs.
WATCHDOG = 60.0


def tape_bin() -> Optional[str]:
    b = os.environ.get("TAPE_BIN")
    if b:
        return b
    cand = os.path.join(REPO, "target", "debug", "tape")
    return cand if os.path.exists(cand) else None


def need_bin(test: unittest.TestCase) -> str:
    b = tape_bin()
    if b is None or not os.path.exists(b):
        if os.environ.get("TAPE_PY_REQUIRE_BIN"):
            test.fail(f"TAPE_BIN {b!r} does not exist")
        test.skipTest("no tape binary: set TAPE_BIN or run `cargo build`")
    return b


def sibling_bin(test: unittest.TestCase, name: str, env: str) -> str:
    """Another binary of the build (``tape-echo``, ``tape-ping``): ``$env``
    (the Rust test sets it), else beside the ``tape`` binary."""
    b = os.environ.get(env)
    if not b:
        b = os.path.join(os.path.dirname(need_bin(test)), name)
    if not os.path.exists(b):
        test.fail(f"{name} {b!r} does not exist: run `cargo build -p tape-tools --bins`")
    return b


def wait_until(what: str, cond: Callable[[], object], timeout: float = WATCHDOG) -> object:
    """Polls ``cond`` until it returns something true; fails as hung after
    the watchdog."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"watchdog: gave up waiting for {what}")
        time.sleep(0.01)


def _env() -> dict:
    env = dict(os.environ)
    env.pop("TAPE_ROOT", None)
    return env


class Root:
    """A temporary root, removed at the end; ``start_service`` runs a
    ``tape service`` on it, killed at the end. ``under``: the folder to
    make it in (default the system's; ``/var/tmp`` for a disk-backed one)."""

    def __init__(self, test: unittest.TestCase, binary: Optional[str] = None, under: Optional[str] = None) -> None:
        self.test = test
        self.bin = binary
        self.path = tempfile.mkdtemp(prefix="tape-py-", dir=under)
        self.journal_dir = os.path.join(self.path, "journal")
        self.procs: List[subprocess.Popen] = []
        self.service: Optional[subprocess.Popen] = None
        test.addCleanup(self.cleanup)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=WATCHDOG)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def spawn(self, args: List[str], **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
        kw.setdefault("env", _env())
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def start_service(self) -> subprocess.Popen:
        assert self.bin is not None
        p = self.spawn(
            [self.bin, "service", "--root", self.path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        sock = os.path.join(self.path, "system", "service.sock")

        def up() -> bool:
            if p.poll() is not None:
                raise AssertionError(f"tape service exited at start with {p.returncode}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(sock)
                return True
            except OSError:
                return False
            finally:
                s.close()

        wait_until("the service socket to accept connections", up)
        self.service = p
        return p

    def stop_service(self) -> None:
        assert self.service is not None
        self.service.kill()
        self.service.wait(timeout=WATCHDOG)
        self.service = None

    def tape(self, verb: str, *args: str, input: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
        assert self.bin is not None
        r = subprocess.run(
            [self.bin, verb, *args, "--root", self.path],
            input=input, capture_output=True, timeout=WATCHDOG, env=_env(),
        )
        if check and r.returncode != 0:
            raise AssertionError(f"tape {verb} {' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return r

    def tail_json(self, *journals: str) -> List[dict]:
        out = self.tape("tail", *journals, "--format", "json").stdout
        return [json.loads(line) for line in out.decode().splitlines()]

    def page(self, name: str, page_no: int) -> str:
        return os.path.join(self.journal_dir, f"{name}.{page_no:08d}.journal")

    def python(self, code: str, *args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
        """A Python child running ``code`` (with ``args`` in ``sys.argv[1:]``)
        with the package importable."""
        env = _env()
        env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
        return self.spawn([sys.executable, "-c", code, *args], env=env, **kw)

    def example(self, script: str, *args: str, **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
        """``python/examples/<script>`` with ``args`` and ``--root`` this root."""
        path = os.path.join(PYTHON_DIR, "examples", script)
        return self.spawn([sys.executable, path, *args, "--root", self.path], **kw)


def payload_of(frame_json: dict) -> bytes:
    """The payload bytes of a `tape tail --format json` line."""
    if "payload" in frame_json:
        return frame_json["payload"].encode("utf-8")
    return bytes.fromhex(frame_json["payload_hex"])


def kill9(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=WATCHDOG)


class Lines:
    """The lines of a child's output, read by a thread (a buffered pipe and
    ``select`` do not mix)."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        import queue
        import threading

        self.q: "queue.Queue[bytes]" = queue.Queue()

        def pump() -> None:
            for line in stream:
                self.q.put(line)
            self.q.put(b"")

        threading.Thread(target=pump, daemon=True).start()

    def next(self, what: str, timeout: float = WATCHDOG) -> bytes:
        """The next line without its newline; fails as hung after
        ``timeout`` (the watchdog), or when the output ended."""
        import queue

        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"watchdog: gave up waiting for {what}") from None
        if not line:
            raise AssertionError(f"output ended while waiting for {what}")
        return line.rstrip(b"\n")
