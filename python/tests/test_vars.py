"""tape.Vars (the ``nats`` extra) against a real ``nats-server -js``
started by each test class, and against the Rust side: the real ``tape
var`` (``$TAPE_BIN``) on another root, standing for another machine.

Needs nats-server (``./test.sh`` installs Debian's package) and nats-py
(``./test.sh`` installs it): a missing one fails the tests, never skips
them. No test asserts a duration; every wait has a watchdog.
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
import threading
import unittest
from typing import Any, List, Optional

import helpers
from helpers import WATCHDOG, Root, wait_until

import tape


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def nats_server_bin() -> str:
    for c in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if c and os.path.exists(c):
            return c
    raise AssertionError("nats-server is not installed: run ./test.sh (it installs Debian's nats-server)")


def js_answers(port: int, token: Optional[str]) -> bool:
    """Whether JetStream on ``port`` answers an account-info request (raw
    NATS protocol, no client library)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return False
    try:
        f = s.makefile("rb")
        f.readline()  # INFO
        auth = f',"auth_token":"{token}"' if token else ""
        s.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true%s}\r\nSUB _T.r 1\r\nPUB $JS.API.INFO _T.r 0\r\n\r\nPING\r\n'
            % auth.encode()
        )
        while True:
            line = f.readline()
            if not line or line.startswith(b"-ERR"):
                return False
            if line.startswith(b"MSG"):
                n = int(line.split()[-1])
                body = f.read(n + 2)
                return b'"memory"' in body and b'"error"' not in body
            if line.startswith(b"HMSG"):
                return False  # 503: no JetStream yet
    except OSError:
        return False
    finally:
        s.close()


class Server:
    """A ``nats-server -js`` on a free port and a store folder of its own;
    killed (SIGKILL) at cleanup."""

    def __init__(self, token: Optional[str] = None) -> None:
        self.bin = nats_server_bin()
        self.dir = tempfile.mkdtemp(prefix="tape-py-nats-")
        self.port = free_port()
        self.token = token
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        args = [self.bin, "-js", "-sd", os.path.join(self.dir, "js"), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.token:
            args += ["--auth", self.token]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until("nats-server to answer JetStream requests", self._up)

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"nats-server exited at start with {self.proc.returncode}")
        return js_answers(self.port, self.token)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=WATCHDOG)
        self.proc = None

    def close(self) -> None:
        self.kill9()
        shutil.rmtree(self.dir, ignore_errors=True)


def need_nats_py(test: unittest.TestCase) -> None:
    try:
        import nats  # noqa: F401

        ok = hasattr(nats, "connect")
    except ImportError:
        ok = False
    if not ok:
        test.fail("nats-py is not installed: run ./test.sh, or pip install './python[nats]'")


class VarsCase(unittest.TestCase):
    """One server for the class; a bucket per test; two roots (machine A
    runs Python, machine B the Rust ``tape var``)."""

    server: Server
    n = 0

    @classmethod
    def setUpClass(cls) -> None:
        cls.server = Server()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.close()

    def setUp(self) -> None:
        need_nats_py(self)
        self.bin = helpers.need_bin(self)
        self.a = Root(self, self.bin)
        self.b = Root(self, self.bin)
        VarsCase.n += 1
        self.bucket = f"py{VarsCase.n}-{os.getpid()}"

    def vars(self, **kw: Any) -> "tape.Vars":
        kw.setdefault("bucket", self.bucket)
        kw.setdefault("timeout", WATCHDOG)
        v = tape.Vars(self.server.url, **kw)
        self.addCleanup(v.close)
        return v

    def tape_var(self, *args: str, check: bool = True, root: Optional[Root] = None) -> subprocess.CompletedProcess:
        """``tape var ARGS --bucket B --server URL`` on machine B."""
        root = root or self.b
        env = dict(os.environ, TAPE_ROOT=root.path)
        env.pop("TAPE_NATS", None)
        r = subprocess.run(
            [self.bin, "var", *args, "--bucket", self.bucket, "--server", self.server.url],
            capture_output=True,
            timeout=WATCHDOG,
            env=env,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"tape var {' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
        return r

    def rust_get(self, name: str) -> Any:
        r = self.tape_var("get", name, check=False)
        if r.returncode == 3:
            return KeyError(name)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)


class RoundTrip(VarsCase):
    def test_importing_tape_does_not_need_nats_py(self) -> None:
        code = (
            "import sys, tape\n"
            "assert 'nats' not in sys.modules, 'nats loaded'\n"
            "tape.Reader; tape.Writer\n"
            "assert 'nats' not in sys.modules\n"
            "print(tape.Vars.__name__, 'nats' in sys.modules)\n"
            "tape.Vars('nats://127.0.0.1:1', timeout=0.1)\n"
        )
        env = dict(os.environ, PYTHONPATH=helpers.PYTHON_DIR)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=WATCHDOG, env=env, cwd="/")
        # Even tape.Vars loads nats-py only when one is made (here: one
        # that finds no server, a VarError naming it).
        self.assertEqual(r.stdout.decode().split(), ["Vars", "False"], r.stderr)
        self.assertIn(b"tape.vars.common.VarError: cannot connect to the NATS server nats://127.0.0.1:1", r.stderr)

    def test_values_round_trip_with_tape_var_across_two_roots(self) -> None:
        v = self.vars()
        limit = {"max": 100, "syms": ["IF2406", "rb2410"], "note": 'é€ "q"', "f": 1.5, "n": None, "t": True}
        rev = v.put("risk.limit", limit)
        self.assertGreater(rev, 0)
        self.assertEqual(self.rust_get("risk.limit"), limit)

        self.tape_var("put", "cfg.mode", '"live"')
        e = v.get("cfg.mode")
        assert e is not None
        self.assertEqual((e.name, e.value), ("cfg.mode", "live"))
        self.assertGreater(e.revision, rev)
        self.assertGreater(e.time_ns, 0)
        self.tape_var("put", "cfg.offset", "-5")
        self.assertEqual(v.get("cfg.offset").value, -5)  # type: ignore[union-attr]

        # Lists, from both sides.
        self.tape_var("list-push", "orders", "1")
        v.list_push("orders", {"id": 2})
        self.tape_var("list-push", "orders", "3")
        self.assertEqual(self.rust_get("orders"), [1, {"id": 2}, 3])
        self.assertEqual(v.list_pop("orders", 0), 1)
        self.assertEqual(self.tape_var("list-pop", "orders").stdout.strip(), b"3")
        v.list_push("orders", 4)
        self.tape_var("list-remove", "orders", "4")
        v.list_remove("orders", {"id": 2})
        self.assertEqual(self.rust_get("orders"), [])

        # Objects.
        self.tape_var("dict-set", "pos", "IF2406", "3")
        v.dict_set("pos", "rb2410", -2)
        self.assertEqual(v.dict_del("pos", "IF2406"), 3)
        self.assertEqual(self.tape_var("dict-del", "pos", "rb2410").stdout.strip(), b"-2")
        self.assertEqual(v.get("pos").value, {})  # type: ignore[union-attr]

        # Listing: the same names, values and revisions on both sides.
        rust = [json.loads(line) for line in self.tape_var("ls", "--json").stdout.decode().splitlines()]
        py = v.ls()
        self.assertEqual([r["name"] for r in rust], [e.name for e in py])
        self.assertEqual([r["name"] for r in rust], ["cfg.mode", "cfg.offset", "orders", "pos", "risk.limit"])
        for r, p in zip(rust, py):
            self.assertEqual((r["value"], r["revision"], r["time_ns"]), (p.value, p.revision, p.time_ns))
        self.assertEqual([e.name for e in v.ls("cfg.*")], ["cfg.mode", "cfg.offset"])

        # Deletion, each way.
        v.delete("cfg.mode")
        self.assertIsInstance(self.rust_get("cfg.mode"), KeyError)
        self.tape_var("del", "cfg.offset")
        self.assertIsNone(v.get("cfg.offset"))
        self.assertNotIn("cfg.offset", [e.name for e in v.ls()])

    def test_what_is_not_there_and_bad_input(self) -> None:
        v = self.vars()
        self.assertIsNone(v.get("nope"))
        for f in (
            lambda: v.delete("nope"),
            lambda: v.dict_del("nope", "k"),
            lambda: v.list_pop("nope"),
            lambda: v.list_remove("nope", 1),
        ):
            with self.assertRaises(tape.VarMissing) as c:
                f()
            self.assertIn("nope", str(c.exception))
        v.list_push("l", 1)
        with self.assertRaises(tape.VarMissing):
            v.list_remove("l", True)  # true is not 1, as on the Rust side
        v.list_pop("l")
        with self.assertRaisesRegex(tape.VarMissing, "empty"):
            v.list_pop("l")
        # tape var says the same with exit 3.
        r = self.tape_var("list-pop", "l", check=False)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertEqual(len(r.stderr.decode().splitlines()), 1)

        before = v.last_revision()
        v.put("d", {"k": 1})
        before += 1
        with self.assertRaisesRegex(tape.VarError, "not a list"):
            v.list_push("d", 1)
        with self.assertRaisesRegex(tape.VarError, "not JSON"):
            v.put("x", {1, 2})
        with self.assertRaisesRegex(tape.VarError, "not JSON"):
            v.put("x", float("nan"))
        with self.assertRaisesRegex(tape.VarError, "variable name"):
            v.put("a..b", 1)
        with self.assertRaisesRegex(tape.VarError, "pattern"):
            v.ls("a.>.b")
        with self.assertRaisesRegex(tape.VarError, "more than"):
            v.put("big", "x" * (1 << 20))
        with self.assertRaisesRegex(tape.VarError, "bucket name"):
            tape.Vars(self.server.url, bucket="no.dots")
        self.assertEqual(v.last_revision(), before, "nothing was written")
        self.assertEqual(self.rust_get("d"), {"k": 1})

    def test_python_and_rust_processes_pushing_to_one_list_at_once_lose_nothing(self) -> None:
        # Two Python processes and two shells of `tape var list-push`, 50
        # pushes each, all at once.
        code = (
            "import sys, tape\n"
            "url, bucket, w = sys.argv[1:4]\n"
            "v = tape.Vars(url, bucket=bucket, timeout=60)\n"
            "for i in range(50):\n"
            "    v.list_push('jobs', f'{w}-{i}')\n"
            "print('done', flush=True)\n"
        )
        env = dict(os.environ, PYTHONPATH=helpers.PYTHON_DIR, TAPE_ROOT=self.a.path)
        procs = [
            self.a.spawn([sys.executable, "-c", code, self.server.url, self.bucket, f"py{w}"], env=env, stdout=subprocess.PIPE)
            for w in range(2)
        ]
        loop = 'for i in $(seq 0 49); do "$0" var list-push jobs "\\"rs$1-$i\\"" --bucket "$2" --server "$3" || exit 1; done'
        env_b = dict(os.environ, TAPE_ROOT=self.b.path)
        procs += [
            self.b.spawn(["sh", "-c", loop, self.bin, str(w), self.bucket, self.server.url], env=env_b)
            for w in range(2)
        ]
        for p in procs:
            self.assertEqual(p.wait(timeout=WATCHDOG * 4), 0)
        items = self.vars().get("jobs").value  # type: ignore[union-attr]
        self.assertEqual(len(items), 200)
        self.assertEqual(sorted(items), sorted(f"{w}-{i}" for w in ("py0", "py1", "rs0", "rs1") for i in range(50)))
        for w in ("py0", "py1", "rs0", "rs1"):
            mine = [int(x.split("-")[1]) for x in items if x.startswith(w + "-")]
            self.assertEqual(mine, list(range(50)), f"{w}'s items in the order it pushed them")


class Follow(VarsCase):
    def test_python_watch_sees_rust_changes_and_tape_var_watch_sees_python_changes(self) -> None:
        v = self.vars()
        v.put("before", 0)
        # `tape var watch` on machine B, the Python watch on machine A.
        env = dict(os.environ, TAPE_ROOT=self.b.path)
        rust = self.b.spawn(
            [self.bin, "var", "watch", "--bucket", self.bucket, "--server", self.server.url],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        rust_lines = helpers.Lines(rust.stdout)
        rust_err = helpers.Lines(rust.stderr)
        self.assertIn(b"watching", rust_err.next("tape var watch to start"))
        stop = threading.Event()
        seen: List[tape.vars.Change] = []
        started = threading.Event()
        w = self.vars()

        def follow() -> None:
            for ch in w.watch(stop=stop, ready=started.set):
                seen.append(ch)

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        wait_until("the Python watch to start", started.is_set)

        made = []
        made.append(("risk.limit", "put", 1, v.put("risk.limit", 1)))
        self.tape_var("list-push", "orders", '"a"')
        made.append(("orders", "put", ["a"], None))
        made.append(("orders", "put", ["a", "b"], v.list_push("orders", "b")))
        self.tape_var("dict-set", "pos", "k", "2")
        made.append(("pos", "put", {"k": 2}, None))
        made.append(("orders", "del", None, v.delete("orders")))
        self.tape_var("del", "pos")
        made.append(("pos", "del", None, None))
        made.append(("end", "put", True, v.put("end", True)))

        wait_until("the Python watch to see every change", lambda: len(seen) >= len(made))
        rust_seen = [json.loads(rust_lines.next("a tape var watch line")) for _ in made]
        stop.set()
        t.join(timeout=WATCHDOG)
        self.assertFalse(t.is_alive(), "the watch stops when asked")
        self.assertEqual(len(seen), len(made), "each change once")
        for ch, r, (name, op, value, rev) in zip(seen, rust_seen, made):
            self.assertEqual((ch.name, ch.op, ch.value), (name, op, value))
            if rev is not None:
                self.assertEqual(ch.revision, rev)
            # Python and Rust see the very same change.
            self.assertEqual(json.loads(ch.to_json()), r)
        revs = [c.revision for c in seen]
        self.assertEqual(revs, sorted(set(revs)), "revisions increase")

    def test_python_mirror_and_tape_var_mirror_share_one_journal(self) -> None:
        self.a.start_service()
        v = self.vars()
        r1 = v.put("cfg.mode", "live")
        stop = threading.Event()
        started = threading.Event()
        m = self.vars()
        t = threading.Thread(target=m.mirror, kwargs=dict(root=self.a.path, stop=stop, ready=started.set), daemon=True)
        t.start()
        wait_until("the Python mirror to start", started.is_set)
        revs = [r1, v.list_push("jobs", 1)]
        self.tape_var("list-push", "jobs", "2", root=self.a)
        revs.append(v.get("jobs").revision)  # type: ignore[union-attr]
        journal = f"var.{self.bucket}"

        def frames() -> List[dict]:
            return self.a.tail_json(journal)

        wait_until("3 frames in the mirror journal", lambda: len(frames()) >= 3)
        stop.set()
        t.join(timeout=WATCHDOG)
        self.assertFalse(t.is_alive())
        # The Rust mirror takes over the same journal and resumes after the
        # last revision Python wrote.
        revs.append(v.put("cfg.mode", "paper"))
        env = dict(os.environ, TAPE_ROOT=self.a.path)
        rust = self.a.spawn(
            [self.bin, "var", "mirror", "--bucket", self.bucket, "--server", self.server.url, "--root", self.a.path],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.assertIn(b"mirroring", helpers.Lines(rust.stderr).next("tape var mirror to start"))
        revs.append(v.delete("jobs"))
        wait_until("5 frames in the mirror journal", lambda: len(frames()) >= 5)
        got = frames()
        self.assertEqual([f["seq"] for f in got], [1, 2, 3, 4, 5])
        self.assertEqual([f["corr"] for f in got], revs)
        changes = [json.loads(f["payload"]) for f in got]
        self.assertEqual([c["revision"] for c in changes], revs)
        self.assertEqual(
            [(c["name"], c["op"], c["value"]) for c in changes],
            [("cfg.mode", "put", "live"), ("jobs", "put", [1]), ("jobs", "put", [1, 2]), ("cfg.mode", "put", "paper"), ("jobs", "del", None)],
        )


class Faults(unittest.TestCase):
    def setUp(self) -> None:
        need_nats_py(self)

    def test_a_wrong_token_is_one_clear_error_and_changes_nothing(self) -> None:
        s = Server(token="right-token-9")
        self.addCleanup(s.close)
        good = tape.Vars(s.url, token="right-token-9", bucket="t", timeout=WATCHDOG)
        self.addCleanup(good.close)
        good.put("x", 1)
        rev = good.last_revision()
        for kw in (dict(token="wrong"), dict()):
            with self.assertRaises(tape.VarError) as c:
                tape.Vars(s.url, bucket="t", timeout=WATCHDOG, **kw)
            text = str(c.exception)
            self.assertIn(s.url, text)
            self.assertIn("refused the credentials", text)
            self.assertNotIn("\n", text)
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        tf = os.path.join(d, "token")
        with open(tf, "w") as f:
            f.write("right-token-9\n")
        with tape.Vars(s.url, token_file=tf, bucket="t", timeout=WATCHDOG) as v:
            self.assertEqual(v.get("x").value, 1)  # type: ignore[union-attr]
        self.assertEqual(good.last_revision(), rev)

    def test_server_killed_and_restarted_mid_way_loses_no_acknowledged_push(self) -> None:
        s = Server()
        self.addCleanup(s.close)
        v = tape.Vars(s.url, bucket="k", timeout=WATCHDOG)
        self.addCleanup(v.close)
        acked: List[str] = []
        failed: List[str] = []

        def push() -> None:
            p = tape.Vars(s.url, bucket="k", timeout=WATCHDOG)
            try:
                for i in range(150):
                    item = f"p-{i}"
                    try:
                        p.list_push("jobs", item)
                        acked.append(item)
                    except tape.VarError:
                        failed.append(item)
            finally:
                p.close()

        t = threading.Thread(target=push, daemon=True)
        t.start()
        wait_until("50 pushes acknowledged", lambda: len(acked) >= 50)
        s.kill9()
        s.start()
        t.join(timeout=WATCHDOG * 2)
        self.assertFalse(t.is_alive())
        items = v.get("jobs").value  # type: ignore[union-attr]
        self.assertEqual(len(items), len(set(items)), "no item twice")
        for a in acked:
            self.assertIn(a, items)
        self.assertTrue(set(items) <= set(acked) | set(failed))
        self.assertEqual(len(acked) + len(failed), 150)


if __name__ == "__main__":
    unittest.main()
