"""Listing the bucket, watching it, and the mirror journal: the part of
:class:`~tape.vars.Vars` that follows the bucket with ephemeral push
consumers (no acks, flow control, a 1 s heartbeat), as
``nats/src/vars/watch.rs`` and ``mirror.rs`` do on the Rust side."""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from .common import (
    _ANSWER,
    _QUIET,
    MIRROR_MSG_TYPE,
    Change,
    Entry,
    VarError,
    _backoff,
    _decode,
    _delivery,
    _Retry,
    check_pattern,
)


class _Following:
    """Mixed into :class:`~tape.vars.Vars`, whose connection, loop and
    requests it uses."""

    # Provided by Vars.
    _nc: Any
    _loop: Any
    _epoch: int
    bucket: str
    stream: str
    prefix: str
    timeout: float
    _log: Callable[[str], None]
    _api: Callable[..., Any]
    last_revision: Callable[[], int]

    # -- listing and watching ----------------------------------------------

    def _consumer(self, pattern: str, policy: Dict[str, Any]) -> Tuple[Any, "queue.Queue[Any]", str, int]:
        """Subscribes an inbox and makes an ephemeral push consumer
        delivering there: (subscription, its queue, consumer name, pending)."""
        q: "queue.Queue[Any]" = queue.Queue()

        async def make() -> Tuple[Any, str, int]:
            inbox = self._nc.new_inbox()

            async def cb(m: Any) -> None:
                q.put(m)

            sub = await self._nc.subscribe(inbox, cb=cb)
            cfg = {
                "deliver_subject": inbox,
                "filter_subject": self.prefix + pattern,
                "ack_policy": "none",
                "replay_policy": "instant",
                "flow_control": True,
                "idle_heartbeat": 1_000_000_000,
                "inactive_threshold": 5_000_000_000,
                "mem_storage": True,
                "num_replicas": 1,
            }
            cfg.update(policy)
            try:
                v = await self._api(
                    f"$JS.API.CONSUMER.CREATE.{self.stream}", {"stream_name": self.stream, "config": cfg}
                )
            except BaseException:
                await sub.unsubscribe()
                raise
            if v.get("error"):
                await sub.unsubscribe()
                raise _Retry(f"cannot watch the bucket {self.bucket}: {v['error'].get('description', '?')}")
            return sub, str(v.get("name", "")), int(v.get("num_pending", 0))

        sub, name, pending = self._loop.run(make())
        return sub, q, name, pending

    def _drop(self, sub: Any, consumer: str) -> None:
        async def drop() -> None:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
            try:
                await self._nc.request(
                    f"$JS.API.CONSUMER.DELETE.{self.stream}.{consumer}", b"", timeout=1
                )
            except Exception:
                pass

        try:
            self._loop.run(drop(), timeout=5)
        except Exception:
            pass

    def _control(self, m: Any) -> bool:
        """Answers a heartbeat or flow-control request; whether ``m`` was
        one (a status message carries nothing else)."""
        h = m.headers or {}
        if h.get("Status") != "100" or m.data:
            return False
        to = [r for r in (m.reply, h.get("Nats-Consumer-Stalled")) if r]
        for r in to:
            try:
                self._loop.run(self._nc.publish(r, b""), timeout=_ANSWER)
            except Exception:
                pass
        return True

    def _change_of(self, m: Any) -> Optional[Tuple[Change, int, int]]:
        """(the change, pending after it, consumer seq) of a delivery."""
        d = _delivery(m.reply or "")
        if d is None or not m.subject.startswith(self.prefix):
            return None
        sseq, cseq, t, pending = d
        h = m.headers or {}
        op = (h.get("KV-Operation") or "put").lower()
        value = _decode(m.data) if op == "put" else None
        return Change(m.subject[len(self.prefix) :], op, value, sseq, t), pending, cseq

    def ls(self, pattern: str = ">") -> List[Entry]:
        """The variables whose names match ``pattern`` (``>``: all), by name."""
        check_pattern(pattern)
        until = time.monotonic() + self.timeout
        n = 0
        while True:
            try:
                return self._ls_once(pattern)
            except _Retry as e:
                if time.monotonic() >= until:
                    raise VarError(f"cannot list the variables within {self.timeout:g} s: {e}") from None
                time.sleep(_backoff(n))
                n += 1

    def _ls_once(self, pattern: str) -> List[Entry]:
        sub, q, consumer, pending = self._consumer(pattern, {"deliver_policy": "last_per_subject"})
        out: List[Entry] = []
        try:
            while pending > 0:
                try:
                    m = q.get(timeout=_ANSWER)
                except queue.Empty:
                    raise _Retry("the listing stopped half way") from None
                if self._control(m):
                    continue
                got = self._change_of(m)
                if got is None:
                    continue
                ch, pending, _ = got
                if ch.op == "put":
                    out.append(Entry(ch.name, ch.value, ch.revision, ch.time_ns))
        finally:
            self._drop(sub, consumer)
        out.sort(key=lambda e: e.name)
        return out

    def watch(
        self,
        pattern: str = ">",
        after: Optional[int] = None,
        stop: Optional[threading.Event] = None,
        ready: Optional[Callable[[], None]] = None,
    ) -> Iterator[Change]:
        """Every change of the variables matching ``pattern``, in revision
        order, each once: those after revision ``after`` (default: those
        made from now on), until ``stop`` is set (checked at least every
        0.1 s). ``ready`` is called each time the consumer is (re)made.
        Rides out the server going away."""
        check_pattern(pattern)
        last = self.last_revision() if after is None else after
        n = 0
        while not (stop is not None and stop.is_set()):
            try:
                for ch in self._watch_once(pattern, last, stop, ready):
                    last = ch.revision
                    n = 0
                    yield ch
                return
            except _Retry as e:
                if n == 0 or n % 20 == 0:
                    self._log(f"{e}; watching again")
                time.sleep(_backoff(n))
                n += 1

    def _watch_once(
        self, pattern: str, last: int, stop: Optional[threading.Event], ready: Optional[Callable[[], None]]
    ) -> Iterator[Change]:
        epoch = self._epoch
        sub, q, consumer, _ = self._consumer(
            pattern, {"deliver_policy": "by_start_sequence", "opt_start_seq": last + 1}
        )
        try:
            if ready is not None:
                ready()
            expect = 1
            heard = time.monotonic()
            while not (stop is not None and stop.is_set()):
                if self._epoch != epoch:
                    raise _Retry("the connection was made again")
                try:
                    m = q.get(timeout=0.1)
                except queue.Empty:
                    if time.monotonic() - heard > _QUIET:
                        raise _Retry(f"nothing from the server (not even a heartbeat) for {_QUIET:g} s")
                    continue
                heard = time.monotonic()
                if self._control(m):
                    continue
                if (m.headers or {}).get("Status"):
                    raise _Retry(f"the consumer ended ({m.headers.get('Status')})")
                got = self._change_of(m)
                if got is None:
                    continue
                ch, _, cseq = got
                if cseq != expect:
                    raise _Retry(f"message {cseq} of the consumer came where {expect} was expected")
                expect += 1
                if ch.revision <= last:
                    continue
                last = ch.revision
                yield ch
        finally:
            self._drop(sub, consumer)

    # -- the mirror journal ---------------------------------------------------

    def mirror(
        self,
        root: Optional[str] = None,
        pattern: str = ">",
        stop: Optional[threading.Event] = None,
        ready: Optional[Callable[[], None]] = None,
    ) -> None:
        """Writes every change of the variables matching ``pattern`` to the
        local journal ``var.<bucket>`` of ``root`` (one frame each: ``corr``
        = revision, payload = the change as ``tape var watch`` prints it,
        type :data:`MIRROR_MSG_TYPE`), until ``stop`` is set: what ``tape
        var mirror`` does, the same frames. A new journal starts with the
        current values; one that exists resumes after the last revision it
        holds. Needs the root's ``tape service``."""
        from ..reader import Reader, Start
        from ..writer import Writer

        check_pattern(pattern)
        journal = f"var.{self.bucket}"
        w = Writer(journal, root=root, page_size=1 << 20)
        try:
            start = 0
            if w.next_seq > 1:
                r = Reader(f"tape-var-mirror-{os.getpid()}", root=w.root, service="never")
                r.add_journal(w.dir, journal, start=Start.seq(w.next_seq - 1))
                f = r.next()
                start = f.corr if f is not None else 0

            def write(ch: Change) -> None:
                w.write(MIRROR_MSG_TYPE, ch.to_json().encode("utf-8"), corr=ch.revision)

            if start == 0:
                end = self.last_revision()
                for e in sorted((e for e in self.ls(pattern) if e.revision <= end), key=lambda e: e.revision):
                    write(Change(e.name, "put", e.value, e.revision, e.time_ns))
                start = end
            for ch in self.watch(pattern, after=start, stop=stop, ready=ready):
                write(ch)
        finally:
            w.close()
