"""tape.Requester and tape.Responder against the Rust side, through real
processes: the Rust ``tape-echo``, ``tape call`` and ``tape-ping`` (a Rust
``tape_rpc::Requester``), ``tape tail``, a real ``tape service`` on a
temporary root per test, Python children killed with SIGKILL.

No test asserts a duration; every wait has a watchdog (helpers.WATCHDOG).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import time
import unittest
from typing import Dict, List, Tuple

import helpers
from helpers import WATCHDOG, Lines, Root, kill9, payload_of, wait_until

import tape

# A child that makes N calls to DEST as ME, K in flight, each with its own
# data, and checks that every reply is its own request's data in capitals
# (the example responder with --upper).
LOAD = r"""
import sys, tape
root, me, dest, n, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with tape.Requester(me, root=root) as r:
    sent = {}
    done = nxt = most = 0
    while done < n:
        while len(sent) < k and nxt < n:
            data = b"%s:%d" % (me.encode(), nxt)
            nxt += 1
            sent[r.send_nowait(dest, data, timeout=60)] = data
        most = max(most, len(sent))
        cid, out = r.wait_any()
        if isinstance(out, tape.Timeout):
            sys.exit("timeout of call %d" % cid)
        want = sent.pop(cid).upper()
        if out.data != want:
            sys.exit("call %d: reply %r, its request wants %r" % (cid, out.data, want))
        done += 1
    print("ok", done, most, r.late, flush=True)
"""

# A child calling DEST as ME until STOPFILE appears, 8 calls in flight,
# every other one with a long timeout (30 s) and the others a short one
# (0.3 s); NO (while the responder is down) is retried. Prints: long OK,
# short OK, long TIMEOUT, short TIMEOUT, NO.
KILL_LOAD = r"""
import os, sys, time, tape
root, me, dest, stopfile = sys.argv[1:5]
ok_long = ok_short = to_long = to_short = no = 0
with tape.Requester(me, root=root) as r:
    sent = {}
    i = 0
    while sent or not os.path.exists(stopfile):
        while len(sent) < 8 and not os.path.exists(stopfile):
            long = i % 2 == 0
            data = b"%s:%d" % (me.encode(), i)
            try:
                sent[r.send_nowait(dest, data, timeout=30 if long else 0.3)] = (data, long)
                i += 1
            except tape.No:
                no += 1
                time.sleep(0.005)
                break
        got = r.wait_any(timeout=0.05)
        if got is None:
            continue
        cid, out = got
        data, long = sent.pop(cid)
        if isinstance(out, tape.Timeout):
            if long:
                to_long += 1
            else:
                to_short += 1
        elif out.data != data.upper():
            sys.exit("call %d: reply %r to %r" % (cid, out.data, data))
        elif long:
            ok_long += 1
        else:
            ok_short += 1
    print(ok_long, ok_short, to_long, to_short, no, flush=True)
"""


def all_frames(root: Root, journal: str) -> List[tape.Frame]:
    r = tape.Reader("py-test", root=root.path, start="start", service="never")
    r.add_journal(None, journal)
    return list(r)


def count_replies(root: Root, journal: str) -> int:
    if not os.path.exists(root.page(journal, 1)):
        return 0
    return sum(1 for f in all_frames(root, journal) if f.corr)


class Rpc(unittest.TestCase):
    def setUp(self) -> None:
        self.bin = helpers.need_bin(self)
        self.root = Root(self, self.bin)
        self.root.start_service()

    def requester(self, name: str) -> tape.Requester:
        r = tape.Requester(name, root=self.root.path)
        self.addCleanup(r.close)
        return r

    def responder(self, name: str) -> tape.Responder:
        r = tape.Responder(name, root=self.root.path)
        self.addCleanup(r.close)
        return r

    def rust_echo(self, name: str = "echo") -> subprocess.Popen:
        echo = helpers.sibling_bin(self, "tape-echo", "TAPE_ECHO_BIN")
        p = self.root.spawn([echo, name, "--root", self.root.path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with tape.Connection(self.root.path) as c:
            wait_until(f"{name} online", lambda: c.call({"type": "find_endpoint", "name": name})["peer"])
        return p

    def py_responder(self, name: str, *args: str) -> Tuple[subprocess.Popen, Lines]:
        p = self.root.example("responder.py", name, *args, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = Lines(p.stdout)
        self.assertEqual(out.next(f"{name} ready"), b"ready")
        return p, out

    # -- a Python requester, the Rust responder -----------------------------

    def test_python_requester_calls_rust_echo_ok_no_timeout_then_ok(self) -> None:
        echo = self.rust_echo()
        r = self.requester("py-client")
        self.assertEqual(r.call("echo", b"hello", type=7), tape.Reply(b"hello", 7))
        data, typ = r.call("echo", bytes(range(256)) * 40)  # 10 KiB, any byte
        self.assertEqual((data, typ), (bytes(range(256)) * 40, 0))

        # NO: at once, and nothing was written.
        before = len(all_frames(self.root, "rpc.py-client"))
        with self.assertRaises(tape.No) as no:
            r.call("nobody", b"x")
        self.assertEqual(no.exception.name, "nobody")
        self.assertEqual(len(all_frames(self.root, "rpc.py-client")), before)

        # TIMEOUT at the deadline, not before, with the echo stopped.
        os.kill(echo.pid, signal.SIGSTOP)
        try:
            t0 = time.time_ns()
            with self.assertRaises(tape.Timeout) as to:
                r.call("echo", b"while stopped", timeout=0.3)
            self.assertGreaterEqual(time.time_ns() - t0, 300_000_000)
            self.assertEqual(to.exception.name, "echo")
            self.assertIsInstance(to.exception, TimeoutError)
        finally:
            os.kill(echo.pid, signal.SIGCONT)
        # OK again, and the reply is this call's, never the stopped one's.
        for i in range(20):
            self.assertEqual(r.call("echo", b"again %d" % i).data, b"again %d" % i)
        self.assertEqual(r.in_flight, 0)
        # The Rust echo compares deadlines with a clock it reads every few
        # polls, so woken by SIGCONT it may still answer the expired request
        # (rpc/src/responder: "its caller drops the reply"): if it did, that
        # reply was dropped as late, never taken for another call's.
        replies = [bytes(f.payload) for f in all_frames(self.root, "rpc.echo") if f.corr]
        late = replies.count(b"while stopped")
        self.assertEqual(len(replies), 22 + late)
        self.assertEqual(r.late, late)

    def test_the_example_requester_calls_rust_echo_with_tape_calls_exit_codes(self) -> None:
        echo = self.rust_echo()

        def run(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
            p = self.root.example("requester.py", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = p.communicate(timeout=WATCHDOG)
            return subprocess.CompletedProcess(p.args, p.returncode, out, err)

        self.assertEqual(run("echo", "hello").stdout, b"hello\n")
        many = run("echo", "n", "--count", "500", "--in-flight", "8")
        self.assertEqual((many.returncode, many.stdout), (0, b"500 calls, every reply matched\n"))
        no = run("nobody", "hello")
        self.assertEqual(no.returncode, 3)
        self.assertIn(b"no responder nobody is online", no.stderr)
        os.kill(echo.pid, signal.SIGSTOP)
        try:
            self.assertEqual(run("echo", "x", "--timeout", "200").returncode, 4)
        finally:
            os.kill(echo.pid, signal.SIGCONT)

    def test_many_calls_in_flight_to_rust_echo_match_their_replies(self) -> None:
        self.rust_echo()
        r = self.requester("py-many")
        ids = {r.send_nowait("echo", b"call %d" % i, type=i): i for i in range(64)}
        self.assertEqual(r.in_flight, 64)
        # Collected in reverse order: each reply waits for its own call.
        for cid, i in sorted(ids.items(), reverse=True):
            self.assertEqual(r.wait_reply(cid), tape.Reply(b"call %d" % i, i))
        with self.assertRaises(KeyError):
            r.wait_reply(next(iter(ids)))  # taken already
        self.assertIsNone(r.wait_any(timeout=0.01))  # none in flight

    def test_find_list_and_count_of_who_is_online(self) -> None:
        echo = self.rust_echo()
        r = self.requester("py-asker")
        peer = r.find("echo")
        assert peer is not None
        self.assertEqual((peer["kind"], peer["pid"]), ("responder", echo.pid))
        self.assertEqual(r.find("py-asker")["kind"], "requester")  # type: ignore[index]
        self.assertIsNone(r.find("nobody"))
        self.assertEqual(r.count(), 2)
        total, page0 = r.list(0, 1)
        _, page1 = r.list(1, 1)
        self.assertEqual(total, 2)
        self.assertEqual([p["name"] for p in page0 + page1], ["echo", "py-asker"])
        self.assertEqual(r.list(2, 1), (2, []))
        # What `tape online` says too, the endpoint id included.
        self.assertEqual(self.root.tape("online", "--count").stdout.strip(), b"2")
        j = json.loads(self.root.tape("online", "echo", "--json").stdout)
        self.assertEqual(j["endpoint_id"], tape.endpoint_id("echo"))
        j = json.loads(self.root.tape("online", "py-asker", "--json").stdout)
        self.assertEqual(j["endpoint_id"], r.id)

    def test_waiting_for_a_reply_sleeps_on_the_doorbell(self) -> None:
        echo = self.rust_echo()
        r = self.requester("py-sleeper")
        r.call("echo", b"warm up")
        os.kill(echo.pid, signal.SIGSTOP)
        try:
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            with self.assertRaises(tape.Timeout):
                r.call("echo", b"x", timeout=1.0)
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            os.kill(echo.pid, signal.SIGCONT)
        used = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        # A spinning wait would burn the whole second.
        self.assertLess(used, 0.25, f"the wait used {used:.3f} s of CPU in 1 s")

    def test_a_late_reply_is_dropped_never_handed_to_another_call(self) -> None:
        resp = self.responder("py-late")
        r = self.requester("py-waiter")
        first = r.send_nowait("py-late", b"first", timeout=0.2)
        with self.assertRaises(tape.Timeout):
            r.wait_reply(first)
        # Its reply comes now, late (written straight into the journal).
        assert resp._writer is not None
        resp._writer.write(0, b"late reply", source=resp.id, dest=r.id, corr=first)
        second = r.send_nowait("py-late", b"second")
        resp.poll(lambda q: (q.data.upper(), 0))
        self.assertEqual(r.wait_reply(second), tape.Reply(b"SECOND", 0))
        self.assertEqual(r.late, 1)

    # -- Rust requesters, a Python responder --------------------------------

    def test_tape_call_and_rust_requester_call_a_python_responder(self) -> None:
        p, _ = self.py_responder("py-echo")
        r = self.root.tape("call", "py-echo", "hello from rust", "--type", "9")
        self.assertEqual(r.stdout, b"hello from rust\n")
        self.assertEqual(self.root.tape("call", "py-nobody", "x", check=False).returncode, 3)
        # tape-ping: a tape_rpc::Requester, 2000 calls, each reply checked.
        ping = helpers.sibling_bin(self, "tape-ping", "TAPE_PING_BIN")
        out = subprocess.run([ping, "py-echo", "--root", self.root.path, "--calls", "2000", "--warmup", "0", "--json"],
                             capture_output=True, timeout=WATCHDOG)
        self.assertEqual(out.returncode, 0, out.stderr.decode(errors="replace"))
        self.assertEqual(json.loads(out.stdout)["calls"], 2000)
        # The reply frames: one per call, typed as the request, to its requester.
        replies = [f for f in all_frames(self.root, "rpc.py-echo") if f.corr]
        self.assertEqual(len(replies), 2001)
        self.assertEqual((replies[0].type, bytes(replies[0].payload)), (9, b"hello from rust"))
        self.assertEqual(len({(f.dest, f.corr) for f in replies}), 2001)
        # TIMEOUT (exit 4) from tape call while the Python responder is stopped.
        os.kill(p.pid, signal.SIGSTOP)
        try:
            self.assertEqual(self.root.tape("call", "py-echo", "x", "--timeout", "200", check=False).returncode, 4)
        finally:
            os.kill(p.pid, signal.SIGCONT)
        self.assertEqual(self.root.tape("call", "py-echo", "back").stdout, b"back\n")

    def test_python_responder_asleep_uses_no_cpu(self) -> None:
        p, _ = self.py_responder("py-idle")
        self.root.tape("call", "py-idle", "x")

        def cpu() -> float:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        c0 = cpu()
        time.sleep(1.0)
        used = cpu() - c0
        self.assertLess(used, 0.25, f"the idle responder used {used:.3f} s of CPU in 1 s")
        self.assertEqual(self.root.tape("call", "py-idle", "still there").stdout, b"still there\n")

    def test_10000_calls_from_4_python_processes_8_in_flight_each(self) -> None:
        self.py_responder("py-upper", "--upper")
        kids = [self.root.python(LOAD, self.root.path, f"load-{i}", "py-upper", "2500", "8",
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(4)]
        for k in kids:
            out, err = k.communicate(timeout=WATCHDOG * 5)
            self.assertEqual(k.returncode, 0, err.decode(errors="replace"))
            ok, done, most, late = out.split()
            self.assertEqual((ok, done, most, late), (b"ok", b"2500", b"8", b"0"))
        replies = [f for f in all_frames(self.root, "rpc.py-upper") if f.corr]
        self.assertEqual(len(replies), 10_000)
        self.assertEqual(len({(f.dest, f.corr) for f in replies}), 10_000)
        self.assertEqual({f.dest for f in replies}, {tape.endpoint_id(f"load-{i}") for i in range(4)})

    def test_python_responder_sigkilled_and_restarted_under_load(self) -> None:
        name = "py-phoenix"
        stopfile = os.path.join(self.root.path, "stop")
        starts = [time.time_ns()]
        p, _ = self.py_responder(name, "--upper")
        loaders = [self.root.python(KILL_LOAD, self.root.path, f"kl-{i}", name, stopfile,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
        seen = 0
        for _round in range(2):
            wait_until("replies under load", lambda: count_replies(self.root, f"rpc.{name}") >= seen + 300)
            kill9(p)
            time.sleep(1.0)  # the short calls in flight expire meanwhile
            starts.append(time.time_ns())
            p, _ = self.py_responder(name, "--upper")
            seen = count_replies(self.root, f"rpc.{name}")
        wait_until("replies after the last restart", lambda: count_replies(self.root, f"rpc.{name}") >= seen + 300)
        open(stopfile, "w").close()
        counts = []
        for k in loaders:
            out, err = k.communicate(timeout=WATCHDOG)
            self.assertEqual(k.returncode, 0, err.decode(errors="replace"))
            counts.append([int(x) for x in out.split()])
        for ok_long, ok_short, to_long, to_short, no in counts:
            self.assertGreater(ok_long, 0)
            self.assertEqual(to_long, 0, "a 30 s call was lost across a restart")
            self.assertGreater(no, 0, "the loaders never saw the responder down")

        # The journals say what happened, request by request.
        requests: Dict[Tuple[int, int], Tuple[int, int]] = {}
        for i in range(2):
            for f in all_frames(self.root, f"rpc.kl-{i}"):
                (timeout_ns,) = struct.unpack_from("<Q", f.payload, 0)
                requests[(f.source, f.seq)] = (f.time_ns, f.time_ns + timeout_ns)
        replies = [f for f in all_frames(self.root, f"rpc.{name}") if f.corr]
        keys = [(f.dest, f.corr) for f in replies]
        self.assertEqual(len(keys), len(set(keys)), "a request was answered twice")
        across = 0  # requests answered by a responder started after them
        for f in replies:
            sent, deadline = requests[(f.dest, f.corr)]
            self.assertLessEqual(f.time_ns, deadline, "a reply written past its request's deadline")
            start = max(s for s in starts if s <= f.time_ns)
            self.assertGreaterEqual(deadline, start, "an instance answered a request expired before it started")
            across += sent < start
        self.assertGreater(across, 0, "no call in flight was answered by the restarted responder")
        answered = set(keys)
        expired_unanswered = sum(
            1 for k, (sent, deadline) in requests.items()
            if k not in answered and any(sent < s and deadline < s for s in starts[1:])
        )
        self.assertGreater(expired_unanswered, 0, "no request expired while the responder was down")

    def test_events_of_a_python_responder_read_by_tape_tail(self) -> None:
        resp = self.responder("py-ticker")
        seqs = [resp.publish(b"tick %d" % i, type=1) for i in range(3)]
        resp.publish(b"to one", type=2, dest=tape.endpoint_id("py-one"))
        r = self.requester("py-one")
        cid = r.send_nowait("py-ticker", b"question")
        resp.poll(lambda q: (b"answer", 5))
        self.assertEqual(r.wait_reply(cid), tape.Reply(b"answer", 5))
        lines = self.root.tail_json("rpc.py-ticker")
        events = [j for j in lines if "corr" not in j]
        self.assertEqual([payload_of(j) for j in events], [b"tick 0", b"tick 1", b"tick 2", b"to one"])
        self.assertEqual([j["seq"] for j in events[:3]], seqs)
        self.assertEqual({j["source"] for j in lines}, {tape.endpoint_id("py-ticker")})
        self.assertEqual([j["dest"] for j in events], [0, 0, 0, tape.endpoint_id("py-one")])
        reply = [j for j in lines if "corr" in j]
        self.assertEqual(len(reply), 1)
        self.assertEqual((payload_of(reply[0]), reply[0]["type"], reply[0]["dest"], reply[0]["corr"]),
                         (b"answer", 5, r.id, cid))
        # And live: tape tail --follow sees an event published after it started.
        tail = self.root.spawn([self.bin, "tail", "rpc.py-ticker", "--follow", "--root", self.root.path],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = Lines(tail.stdout)
        deadline = time.monotonic() + WATCHDOG
        n = 0
        while True:  # publish until the tail, which starts at the end, shows one
            n += 1
            resp.publish(b"live %d" % n)
            try:
                line = out.next("a live event", timeout=0.2)
                break
            except AssertionError:
                self.assertLess(time.monotonic(), deadline, "watchdog: tape tail --follow showed no event")
        self.assertTrue(line.startswith(b"live "))

    def test_endpoint_names_and_one_endpoint_per_name(self) -> None:
        for bad in ("", ".hidden", "a b", "x" * 61, "ümlaut"):
            with self.assertRaises(ValueError):
                tape.Requester(bad, root=self.root.path)
        self.responder("py-once")
        with self.assertRaises(tape.HeldError):
            tape.Responder("py-once", root=self.root.path)
        with self.assertRaises(tape.HeldError):
            tape.Requester("py-once", root=self.root.path)

    def test_bad_calls_and_bad_handler_replies_get_clear_errors(self) -> None:
        self.rust_echo()
        r = self.requester("py-careless")
        with self.assertRaises(ValueError):
            r.call("bad name", b"x")
        with self.assertRaises(ValueError):
            r.call("echo", b"x", type=1 << 32)
        for bad in (0, -1, float("nan"), float("inf"), 1e12):
            with self.assertRaises(ValueError):
                r.call("echo", b"x", timeout=bad)
        with self.assertRaises(TypeError):
            r.call("echo", "a str")  # type: ignore[arg-type]
        self.assertEqual(r.call("echo", b"fine"), tape.Reply(b"fine", 0))
        # A handler's bad reply raises out of poll, naming what to return,
        # and nothing is written; the responder answers the next request.
        resp = self.responder("py-sloppy")
        for bad in (lambda q: "a str", lambda q: (b"x", -1), lambda q: (b"x", 1, 2)):
            cid = r.send_nowait("py-sloppy", b"q", timeout=0.1)
            with self.assertRaises(TypeError) as e:
                resp.poll(bad)  # type: ignore[arg-type]
            self.assertIn("return the reply's bytes", str(e.exception))
            with self.assertRaises(tape.Timeout):
                r.wait_reply(cid)
        self.assertEqual(count_replies(self.root, "rpc.py-sloppy"), 0)
        cid = r.send_nowait("py-sloppy", b"q2")
        resp.poll(lambda q: q.data)
        self.assertEqual(r.wait_reply(cid), tape.Reply(b"q2", 0))


if __name__ == "__main__":
    unittest.main()
