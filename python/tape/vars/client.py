"""The connection and the operations: :class:`Vars` (see :mod:`tape.vars`).

nats-py is asyncio; :class:`Vars` is blocking, like the rest of this
package: it runs nats-py on an event loop of its own, in a daemon thread,
and waits for each request there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from typing import Any, Callable, Coroutine, Dict, List, Optional, Tuple, TypeVar

from .common import (
    _ANSWER,
    DEFAULT_BUCKET,
    DEFAULT_SERVER,
    DUPLICATE_WINDOW_NS,
    HISTORY,
    MAX_TIMEOUT,
    MAX_VALUE,
    Entry,
    VarError,
    VarMissing,
    _decode,
    _encode,
    _backoff,
    _Fatal,
    _kind,
    _nats,
    _raw_header,
    _Retry,
    _same,
    _STREAM_NAME_IN_USE,
    _STREAM_NOT_FOUND,
    _WRONG_LAST_SEQUENCE,
    check_bucket,
    check_name,
    parse_rfc3339,
)

from .follow import _Following

T = TypeVar("T")

class _Loop:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tape-vars", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class _Step:
    """What an update function asks for: a new value, or a deletion."""

    __slots__ = ("value", "delete")

    def __init__(self, value: Any = None, delete: bool = False) -> None:
        self.value = value
        self.delete = delete


class Vars(_Following):
    """A connection to one bucket of shared variables (blocking calls; one
    thread at a time).

    :param server: ``nats://HOST:PORT``, comma-separated for the members of
        a cluster (default ``$TAPE_NATS``, else ``nats://127.0.0.1:4222``).
    :param bucket: the bucket (default ``tape``).
    :param token: the server's token; or ``token_file``, a file holding it;
        or ``creds``, a NATS credentials file (not with a token).
    :param timeout: how long one operation keeps retrying while the server
        is away or the key keeps changing, s (at most 100).
    :param log: called with a line on reconnections (default: nothing).

    Connects (retrying until ``timeout`` while the server cannot be
    reached) and makes the bucket's stream when it is missing. Raises
    :class:`~tape.vars.VarError` (refused credentials, no server), or
    ``ImportError`` without nats-py.
    """

    def __init__(
        self,
        server: Optional[str] = None,
        *,
        bucket: str = DEFAULT_BUCKET,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        creds: Optional[str] = None,
        timeout: float = 30.0,
        log: Optional[Callable[[str], None]] = None,
    ) -> None:
        check_bucket(bucket)
        self._nm = _nats()
        self.url = server or os.environ.get("TAPE_NATS", "").strip() or DEFAULT_SERVER
        if token_file is not None:
            if token is not None:
                raise VarError("give token or token_file, not both")
            try:
                with open(token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as e:
                raise VarError(f"cannot read the token file {token_file}: {e}") from None
            if not token:
                raise VarError(f"the token file {token_file} is empty")
        if token is not None and creds is not None:
            raise VarError("give a token or creds, not both")
        if creds is not None and not os.path.exists(creds):
            raise VarError(f"cannot read the credentials file {creds}")
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}."
        # Resend a change only while the server remembers its id (the
        # duplicate window, 2 minutes), as the Rust side does.
        self.timeout = min(float(timeout), MAX_TIMEOUT)
        self._log = log or (lambda line: None)
        self._token = token
        self._creds = creds
        self._epoch = 0
        self._loop = _Loop()
        self._nc: Any = None
        try:
            self._nc = self._loop.run(self._connect())
            self._retrying("open the bucket", self._ensure_stream)
        except BaseException:
            self.close()
            raise

    # -- the connection -----------------------------------------------------

    async def _connect(self) -> Any:
        nm = self._nm
        servers = [u.strip() for u in self.url.split(",") if u.strip()]
        if not servers:
            raise VarError("no server address: give nats://HOST:PORT")
        until = time.monotonic() + self.timeout
        connecting = True
        url = self.url

        async def on_error(e: Exception) -> None:
            # While connecting, an error here ends the attempts (nats-py
            # would otherwise retry for ever, refused credentials too).
            if connecting:
                text = str(e) or type(e).__name__
                if "authorization" in text.lower() or "authentication" in text.lower():
                    raise _Fatal(
                        f"the NATS server {url} refused the credentials ({text}): check the token or credentials"
                    )
                if time.monotonic() > until:
                    raise _Retry(f"cannot connect to the NATS server {url}: {text}: is nats-server running there?")

        async def on_disconnect() -> None:
            self._epoch += 1
            if not connecting:
                self._log(f"lost the connection to {url}; reconnecting")

        async def on_reconnect() -> None:
            self._epoch += 1
            self._log(f"connected again to {url}")

        opts: Dict[str, Any] = dict(
            servers=servers,
            name="tape var (python)",
            connect_timeout=2,
            reconnect_time_wait=0.1,
            max_reconnect_attempts=-1,
            ping_interval=2,
            max_outstanding_pings=2,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        if self._token is not None:
            opts["token"] = self._token
        if self._creds is not None:
            opts["user_credentials"] = self._creds
        nc = nm.NATS()
        try:
            await nc.connect(**opts)
        except Exception as e:
            # _Fatal and _Retry from on_error; anything else is an address
            # nats-py cannot use, ...
            text = str(e) if isinstance(e, (_Fatal, _Retry)) else f"cannot connect to the NATS server {url}: {e}"
            connecting = False
            try:
                await nc.close()
            except Exception:
                pass
            transport = getattr(nc, "_transport", None)
            if transport is not None:  # what close() leaves of a refused attempt
                transport.close()
            raise VarError(text) from None
        connecting = False
        return nc

    def close(self) -> None:
        """Closes the connection."""
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                self._loop.run(nc.close(), timeout=5)
            except Exception:
                pass
        self._loop.close()

    def __enter__(self) -> "Vars":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, what: str, f: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Runs ``f()`` on the loop until it does not raise :class:`_Retry`,
        or the timeout."""
        until = time.monotonic() + self.timeout
        n = 0
        while True:
            try:
                return self._loop.run(f())
            except _Fatal as e:
                raise VarError(str(e)) from None
            except _Retry as e:
                if time.monotonic() >= until:
                    raise VarError(f"cannot {what} within {self.timeout:g} s: {e}") from None
                if n == 2:
                    self._log(f"{e}; retrying")
                time.sleep(_backoff(n))
                n += 1

    async def _api(self, subject: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """One JetStream API request; a transport failure is :class:`_Retry`;
        an error answer is returned as it is (``{"error": ...}``)."""
        nm = self._nm
        try:
            msg = await self._nc.request(subject, json.dumps(body).encode(), timeout=_ANSWER)
        except nm.errors.NoRespondersError:
            raise _Retry(
                f"no JetStream answers {subject} (is the server running with -js, and has it finished starting?)"
            ) from None
        except (nm.errors.Error, asyncio.TimeoutError, OSError) as e:
            raise _Retry(f"{subject}: {e or type(e).__name__}") from None
        try:
            v = json.loads(msg.data)
        except ValueError:
            raise _Retry(f"{subject}: the answer is not JSON") from None
        if not isinstance(v, dict):
            raise _Retry(f"{subject}: the answer is not a JSON object")
        return v

    async def _stream_last_seq(self) -> Optional[int]:
        v = await self._api(f"$JS.API.STREAM.INFO.{self.stream}", {})
        err = v.get("error")
        if err:
            if err.get("err_code") == _STREAM_NOT_FOUND or err.get("code") == 404:
                return None
            raise _Retry(f"cannot read stream {self.stream}: {err.get('description', '?')}")
        return int(v.get("state", {}).get("last_seq", 0))

    async def _ensure_stream(self) -> None:
        if await self._stream_last_seq() is not None:
            return
        cfg = {
            "name": self.stream,
            "subjects": [f"{self.prefix}>"],
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": HISTORY,
            "max_msg_size": -1,
            "storage": "file",
            "discard": "new",
            "num_replicas": 1,
            "duplicate_window": DUPLICATE_WINDOW_NS,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "deny_purge": False,
            "allow_direct": True,
        }
        v = await self._api(f"$JS.API.STREAM.CREATE.{self.stream}", cfg)
        err = v.get("error")
        if err and err.get("err_code") != _STREAM_NAME_IN_USE:
            raise _Fatal(f"cannot make the bucket {self.bucket} (stream {self.stream}): {err.get('description', '?')}")

    def last_revision(self) -> int:
        """The bucket's last revision (0 when nothing was ever written)."""
        return self._retrying("read the bucket", self._stream_last_seq) or 0

    # -- reading a key and the compare-and-set -------------------------------

    async def _last(self, name: str) -> Tuple[int, Optional[Entry]]:
        """``(revision, entry)`` of the key's last message: revision 0 when
        it never had one, entry ``None`` when it is deleted."""
        v = await self._api(f"$JS.API.STREAM.MSG.GET.{self.stream}", {"last_by_subj": self.prefix + name})
        err = v.get("error")
        if err:
            if err.get("code") == 404 and err.get("err_code") != _STREAM_NOT_FOUND:
                return 0, None
            if err.get("err_code") == _STREAM_NOT_FOUND:
                raise _Retry(f"the bucket {self.bucket} has no stream {self.stream} (was it deleted?)")
            raise _Retry(f"cannot read {name}: {err.get('description', '?')}")
        m = v.get("message", {})
        seq = int(m.get("seq", 0))
        hdrs = base64.b64decode(m["hdrs"]) if m.get("hdrs") else b""
        op = (_raw_header(hdrs, "KV-Operation") or "put").lower()
        if op != "put":
            return seq, None
        data = base64.b64decode(m.get("data") or "")
        t = parse_rfc3339(m.get("time", "")) or 0
        return seq, Entry(name, _decode(data), seq, t)

    def _publish_cas(self, name: str, expect: int, step: _Step, msg_id: str) -> Optional[int]:
        """One conditional publish, sent again as it is until the server
        answers: the new revision, or ``None`` on a conflict."""
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expect), "Nats-Msg-Id": msg_id}
        if step.delete:
            headers["KV-Operation"] = "DEL"
            payload = b""
        else:
            try:
                payload = _encode(step.value)
            except (TypeError, ValueError) as e:
                raise VarError(f"the new value of {name} is not JSON ({e}): give dicts, lists, str, int, float, bool or None") from None
            if len(payload) > MAX_VALUE:
                raise VarError(
                    f"the new value of {name} is {len(payload)} bytes, more than {MAX_VALUE}: keep variables small (send files with `tape file send`)"
                )
        nm = self._nm
        subject = self.prefix + name

        async def once() -> Optional[int]:
            try:
                msg = await self._nc.request(subject, payload, timeout=_ANSWER, headers=headers)
            except nm.errors.NoRespondersError:
                raise _Retry(f"no answer for {name}: no JetStream on the server yet") from None
            except (nm.errors.Error, asyncio.TimeoutError, OSError) as e:
                raise _Retry(f"no answer for {name}: {e or type(e).__name__}") from None
            try:
                a = json.loads(msg.data)
            except ValueError:
                raise _Retry(f"the answer for {name} is not JSON") from None
            err = a.get("error") if isinstance(a, dict) else None
            if err:
                d = err.get("description", "?")
                if err.get("err_code") == _WRONG_LAST_SEQUENCE or "wrong last sequence" in d:
                    return None
                if err.get("code") == 503:
                    raise _Retry(f"{name}: {d}")
                raise _Fatal(f"the server refused the change of {name}: {d}")
            return int(a.get("seq", 0))

        return self._retrying(f"change {name}", once)

    def _update(self, name: str, f: Callable[[Any, bool], Tuple[_Step, Any]]) -> Tuple[int, Any]:
        """Reads, applies ``f(value, exists)``, writes the result by
        compare-and-set; again on conflict. Returns the new revision and
        what ``f`` returned beside the step."""
        check_name(name)
        msg_id = uuid.uuid4().hex
        until = time.monotonic() + self.timeout
        while True:
            rev, cur = self._retrying(f"read {name}", lambda: self._last(name))
            step, out = f(cur.value if cur else None, cur is not None)
            got = self._publish_cas(name, rev, step, msg_id)
            if got is not None:
                return got, out
            if time.monotonic() >= until:
                raise VarError(f"{name} kept changing under this update for {self.timeout:g} s: try again")

    # -- the operations -------------------------------------------------------

    def get(self, name: str) -> Optional[Entry]:
        """The variable, ``None`` when it does not exist."""
        check_name(name)
        return self._retrying(f"read {name}", lambda: self._last(name))[1]

    def put(self, name: str, value: Any) -> int:
        """Sets the variable; returns its new revision."""
        return self._update(name, lambda cur, ok: (_Step(value), None))[0]

    def delete(self, name: str) -> int:
        """Deletes the variable (``tape var del``); :class:`VarMissing` when
        it does not exist."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            if not ok:
                raise VarMissing(f"there is no variable {name}")
            return _Step(delete=True), None

        return self._update(name, f)[0]

    def dict_set(self, name: str, key: str, value: Any) -> int:
        """Sets ``key`` of the object ``name`` (made ``{}`` when missing)."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            m = _object_of(name, cur, ok, "dict-set", True)
            m[key] = value
            return _Step(m), None

        return self._update(name, f)[0]

    def dict_del(self, name: str, key: str) -> Any:
        """Removes ``key`` of the object ``name``, returning its value;
        :class:`VarMissing` when it is not there."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            m = _object_of(name, cur, ok, "dict-del", False)
            if key not in m:
                raise VarMissing(f"{name} has no key {json.dumps(key)}")
            old = m.pop(key)
            return _Step(m), old

        return self._update(name, f)[1]

    def list_push(self, name: str, value: Any) -> int:
        """Appends ``value`` to the list ``name`` (made ``[]`` when
        missing); returns the new revision."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            lst = _list_of(name, cur, ok, "list-push", True)
            lst.append(value)
            return _Step(lst), None

        return self._update(name, f)[0]

    def list_pop(self, name: str, index: Optional[int] = None) -> Any:
        """Removes and returns item ``index`` of the list ``name`` (the last
        when ``None``; negative counts from the end)."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            lst = _list_of(name, cur, ok, "list-pop", False)
            n = len(lst)
            if n == 0:
                raise VarMissing(f"the list {name} is empty")
            i = -1 if index is None else index
            at = n + i if i < 0 else i
            if not 0 <= at < n:
                raise VarError(
                    f"the list {name} has {n} items: give an INDEX from 0 to {n - 1} (or -1 to -{n} from the end)"
                )
            item = lst.pop(at)
            return _Step(lst), item

        return self._update(name, f)[1]

    def list_remove(self, name: str, value: Any) -> int:
        """Removes the first item of the list ``name`` equal to ``value``;
        :class:`VarMissing` when there is none."""

        def f(cur: Any, ok: bool) -> Tuple[_Step, Any]:
            lst = _list_of(name, cur, ok, "list-remove", False)
            for i, x in enumerate(lst):
                if _same(x, value):
                    del lst[i]
                    return _Step(lst), None
            raise VarMissing(f"the list {name} holds no {_encode(value).decode()}")

        return self._update(name, f)[0]


def _object_of(name: str, cur: Any, ok: bool, op: str, or_empty: bool) -> Dict[str, Any]:
    if not ok:
        if or_empty:
            return {}
        raise VarMissing(f"there is no variable {name}")
    if isinstance(cur, dict):
        return dict(cur)
    raise _not_a(name, "an object", cur, op)


def _list_of(name: str, cur: Any, ok: bool, op: str, or_empty: bool) -> List[Any]:
    if not ok:
        if or_empty:
            return []
        raise VarMissing(f"there is no variable {name}")
    if isinstance(cur, list):
        return list(cur)
    raise _not_a(name, "a list", cur, op)


def _not_a(name: str, what: str, v: Any, op: str) -> VarError:
    return VarError(
        f"{name} holds {_kind(v)}, not {what}: {op} needs {what} (or no variable); `tape var put` a new value first"
    )
