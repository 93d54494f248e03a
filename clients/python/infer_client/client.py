"""asyncio client of the inference server's RPC protocol (proto/rpc.proto).

A Connection is one TCP connection. Calls are multiplexed on it by call id:
each call has a queue that the connection's single reader task fills with
the MESSAGE and STATUS frames addressed to it; writes go straight to the
transport (asyncio runs them in order) and `drain()` gives backpressure.

A Client holds one or more endpoints (one Connection each) with the C
client's policy (docs/clients.md, "Several servers"): a heartbeat task calls
Health (and Stats for the queue) on every endpoint each `heartbeat` seconds
and marks it up or down, redialling a down one with backoff from an eighth
of the interval, doubling, capped at the interval; a new call goes to the up
endpoint with the fewest calls in flight from this client (ties: shorter
server queue, then round robin); a unary call that ends UNAVAILABLE is tried
again on another endpoint (each at most once) within its deadline; a stream
is never retried once sent, and one whose server goes away raises
UNAVAILABLE saying how many tokens it had received.

Every call ends with exactly one status; a status other than OK is raised as
RpcError. Deadlines (`timeout`, seconds) count from the call's start across
attempts, are sent in the CALL frame and also enforced here. Leaving a
stream early (break, exception, aclose) sends CANCEL so the server frees the
sequence's KV blocks at once.
"""
from __future__ import annotations

import asyncio
import itertools
import struct
import time
from typing import AsyncIterator, Iterable, Optional, Sequence, Tuple, Union

from ._pb import inference_pb2 as pb
from ._pb import rpc_pb2

DEFAULT_URL = "tcp://127.0.0.1:8700"
DEFAULT_MAX_FRAME = 16 << 20
DEFAULT_HEARTBEAT = 5.0
MAX_ENDPOINTS = 64
_SERVICE = "inference.Inference/"

StatusCode = rpc_pb2.StatusCode


class RpcError(Exception):
    """A call that ended with a status other than OK."""

    def __init__(self, code: int, message: str):
        self.code = int(code)
        self.message = message
        super().__init__(f"{status_name(self.code)}: {message}")

    @property
    def name(self) -> str:
        return status_name(self.code)


def status_name(code: int) -> str:
    try:
        return rpc_pb2.StatusCode.Name(code)
    except ValueError:
        return f"STATUS_{code}"


def parse_url(url: str) -> Tuple[str, int]:
    """tcp://HOST:PORT (HOST may be [v6]) -> (host, port)."""
    if not url.startswith("tcp://"):
        raise ValueError(f"unsupported URL {url!r}: only tcp://HOST:PORT")
    rest = url[len("tcp://"):]
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad URL {url!r}: expected tcp://HOST:PORT")
    return host, int(port)


class _Call:
    __slots__ = ("call_id", "queue", "done")

    def __init__(self, call_id: int):
        self.call_id = call_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.done = False


class _Methods:
    """The RPC methods, over `_unary` and Stream (shared by Connection and
    Client)."""

    async def generate(self, prompt: Optional[str] = None, *, timeout: Optional[float] = None,
                       **params) -> pb.GenerateResponse:
        """Unary Generate; `params` are those of make_request()."""
        req = make_request(prompt, **params)
        return await self._unary("Generate", req, pb.GenerateResponse, timeout)

    def stream(self, prompt: Optional[str] = None, *, timeout: Optional[float] = None,
               **params) -> "Stream":
        """GenerateStream: `async for chunk in client.stream(...)` yields
        GenerateChunk messages as tokens are sampled."""
        return Stream(self, make_request(prompt, **params), timeout)

    async def tokenize(self, text: str, *, add_special: Optional[bool] = None,
                       parse_special: Optional[bool] = None,
                       timeout: Optional[float] = None) -> list[int]:
        req = pb.TokenizeRequest(text=text)
        if add_special is not None:
            req.add_special = add_special
        if parse_special is not None:
            req.parse_special = parse_special
        resp = await self._unary("Tokenize", req, pb.TokenizeResponse, timeout)
        return list(resp.ids)

    async def detokenize(self, ids: Iterable[int], *, render_special: Optional[bool] = None,
                         timeout: Optional[float] = None) -> str:
        req = pb.DetokenizeRequest(ids=list(ids))
        if render_special is not None:
            req.render_special = render_special
        resp = await self._unary("Detokenize", req, pb.DetokenizeResponse, timeout)
        return resp.text

    async def health(self, *, timeout: Optional[float] = None) -> str:
        resp = await self._unary("Health", pb.HealthRequest(), pb.HealthResponse, timeout)
        return resp.status

    async def stats(self, *, timeout: Optional[float] = None) -> pb.StatsResponse:
        return await self._unary("Stats", pb.StatsRequest(), pb.StatsResponse, timeout)

    async def model_info(self, *, timeout: Optional[float] = None) -> pb.ModelInfoResponse:
        return await self._unary("ModelInfo", pb.ModelInfoRequest(), pb.ModelInfoResponse,
                                 timeout)


class Connection(_Methods):
    """One connection to one infer-server (no heartbeat, no failover); Client
    is the usual entry point."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: Optional[str] = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME, connect_timeout: float = 5.0):
        self.url = url
        self.api_key = api_key
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._reader_task: Optional[asyncio.Task] = None
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._closed_reason: Optional[RpcError] = None

    # -- connection -----------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self._writer is not None and self._closed_reason is None

    async def connect(self) -> "Connection":
        host, port = parse_url(self.url)
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise RpcError(StatusCode.UNAVAILABLE, f"connect {self.url}: {e or 'timed out'}")
        self._closed_reason = None
        self._reader_task = asyncio.create_task(self._read_loop())
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass
            self._reader_task = None
        self._fail_all(RpcError(StatusCode.UNAVAILABLE, "connection closed by the client"))
        self._writer = None

    async def __aenter__(self) -> "Connection":
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _fail_all(self, err: RpcError) -> None:
        self._closed_reason = err
        for call in self._calls.values():
            call.queue.put_nowait(err)
        self._calls.clear()

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        err = RpcError(StatusCode.UNAVAILABLE, "connection closed by the server")
        try:
            while True:
                head = await reader.readexactly(4)
                (n,) = struct.unpack("<I", head)
                if n > self.max_frame_bytes:
                    err = RpcError(StatusCode.RESOURCE_EXHAUSTED,
                                   f"frame of {n} bytes exceeds the limit of "
                                   f"{self.max_frame_bytes}")
                    break
                frame = rpc_pb2.Frame()
                frame.ParseFromString(await reader.readexactly(n))
                call = self._calls.get(frame.call_id)
                if call is None:
                    continue  # a call we already ended (deadline, cancel)
                if frame.type == rpc_pb2.FRAME_STATUS:
                    del self._calls[frame.call_id]
                    call.done = True
                call.queue.put_nowait(frame)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception as e:  # undecodable frame: the stream cannot resync
            err = RpcError(StatusCode.INTERNAL, f"bad frame from the server: {e}")
        if self._writer is not None:
            self._writer.close()
        self._fail_all(err)

    # -- frames ---------------------------------------------------------------
    def _send(self, frame: rpc_pb2.Frame) -> None:
        if self._writer is None or self._closed_reason is not None:
            raise self._closed_reason or RpcError(StatusCode.UNAVAILABLE, "not connected")
        body = frame.SerializeToString()
        self._writer.write(struct.pack("<I", len(body)) + body)

    def _send_cancel(self, call_id: int) -> None:
        """Synchronous, so that it can run from cleanup paths."""
        self._calls.pop(call_id, None)
        try:
            self._send(rpc_pb2.Frame(call_id=call_id, type=rpc_pb2.FRAME_CANCEL))
        except RpcError:
            pass

    async def _start(self, method: str, request, timeout: Optional[float]) -> _Call:
        call = _Call(next(self._ids))
        frame = rpc_pb2.Frame(call_id=call.call_id, type=rpc_pb2.FRAME_CALL,
                              method=_SERVICE + method,
                              payload=request.SerializeToString())
        if timeout is not None:
            frame.deadline_ms = max(1, int(timeout * 1000))
        if self.api_key:
            frame.api_key = self.api_key
        self._calls[call.call_id] = call
        try:
            self._send(frame)
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            self._calls.pop(call.call_id, None)
            raise RpcError(StatusCode.UNAVAILABLE, f"send: {e}")
        except RpcError:
            self._calls.pop(call.call_id, None)
            raise
        return call

    async def _next(self, call: _Call, deadline: Optional[float]):
        """The call's next frame; raises RpcError for a failed status, the
        client-side deadline or a lost connection."""
        try:
            if deadline is None:
                item = await call.queue.get()
            else:
                item = await asyncio.wait_for(call.queue.get(),
                                              max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self._send_cancel(call.call_id)
            call.done = True
            raise RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded (client)")
        if isinstance(item, RpcError):
            call.done = True
            raise item
        if item.type == rpc_pb2.FRAME_STATUS and item.status != StatusCode.OK:
            raise RpcError(item.status, item.message)
        return item

    async def _unary(self, method: str, request, response_cls, timeout: Optional[float]):
        deadline = None if timeout is None else time.monotonic() + timeout
        call = await self._start(method, request, timeout)
        response = None
        try:
            while True:
                frame = await self._next(call, deadline)
                if frame.type == rpc_pb2.FRAME_MESSAGE:
                    response = response_cls()
                    response.ParseFromString(frame.payload)
                elif frame.type == rpc_pb2.FRAME_STATUS:
                    break
        except asyncio.CancelledError:
            if not call.done:
                self._send_cancel(call.call_id)
            raise
        if response is None:
            raise RpcError(StatusCode.INTERNAL, f"{method}: OK status without a response")
        return response

    async def _open_stream(self, request, deadline: Optional[float]):
        left = None if deadline is None else deadline - time.monotonic()
        return self, await self._start("GenerateStream", request, left), None


class Stream:
    """One GenerateStream call: an async iterator of GenerateChunk and an
    async context manager (leaving the block early cancels the call).
    `tokens_received` counts the token chunks delivered so far."""

    def __init__(self, owner, request: pb.GenerateRequest, timeout: Optional[float]):
        self._owner = owner  # a Connection or a Client: it opens the call
        self._request = request
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._conn: Optional[Connection] = None
        self._call: Optional[_Call] = None
        self._endpoint: Optional[_Endpoint] = None
        self._finished = False
        self.tokens_received = 0

    def __aiter__(self) -> "Stream":
        return self

    def _end(self) -> None:
        self._finished = True
        if self._endpoint is not None:
            self._endpoint.inflight -= 1
            self._endpoint = None

    async def __anext__(self) -> pb.GenerateChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._call is None:
                self._conn, self._call, self._endpoint = await self._owner._open_stream(
                    self._request, self._deadline)
            while True:
                frame = await self._conn._next(self._call, self._deadline)
                if frame.type == rpc_pb2.FRAME_MESSAGE:
                    chunk = pb.GenerateChunk()
                    chunk.ParseFromString(frame.payload)
                    if not chunk.finish_reason:
                        self.tokens_received += 1  # the server sends one chunk per token
                    return chunk
                if frame.type == rpc_pb2.FRAME_STATUS:
                    self._end()
                    raise StopAsyncIteration
        except asyncio.CancelledError:
            self.cancel()
            raise
        except RpcError as e:
            self._end()
            if self._call is not None and e.code == StatusCode.UNAVAILABLE:
                # not retried: tokens may already have been delivered
                raise RpcError(e.code, f"{e.message} (the stream had received "
                                       f"{self.tokens_received} tokens)") from None
            raise

    def cancel(self) -> None:
        """End the call now (sends CANCEL; the server frees its sequence)."""
        if not self._finished:
            self._end()
            if self._call is not None and not self._call.done:
                self._conn._send_cancel(self._call.call_id)

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> "Stream":
        return self

    async def __aexit__(self, *exc) -> None:
        self.cancel()

    def __del__(self):
        # An abandoned iterator (break without aclose) still frees the server
        # side. Only possible while the loop that owns the writer runs.
        try:
            self.cancel()
        except Exception:
            pass


class _Endpoint:
    """What a Client knows of one server. Touched only on the event loop."""

    def __init__(self, url: str):
        self.url = url
        self.conn: Optional[Connection] = None
        self.up = False
        self.inflight = 0
        self.calls = 0
        self.waiting = -1  # server queue at the last heartbeat; -1 unknown
        self.fails = 0  # consecutive failed heartbeats: the backoff exponent
        self.next_beat = 0.0  # time.monotonic() of the next heartbeat visit
        self.last_error = ""

    def info(self) -> dict:
        return {"url": self.url, "up": self.up and self.conn is not None and self.conn.is_up,
                "in_flight": self.inflight, "calls": self.calls, "waiting": self.waiting,
                "last_error": self.last_error}


class Client(_Methods):
    """infer-server at one or several endpoints:
    `async with Client(url) as c:` or `async with Client([url1, url2]) as c:`.

    heartbeat: seconds between Health visits of each endpoint (default 5;
    negative: none, and an endpoint that goes down stays down). Connecting
    succeeds when at least one endpoint accepts the connection; the others
    start down and are redialled by the heartbeat.
    """

    def __init__(self, url: Union[str, Sequence[str]] = DEFAULT_URL, *,
                 api_key: Optional[str] = None, max_frame_bytes: int = DEFAULT_MAX_FRAME,
                 connect_timeout: float = 5.0, heartbeat: float = DEFAULT_HEARTBEAT):
        urls = [url] if isinstance(url, str) else list(url)
        if not 1 <= len(urls) <= MAX_ENDPOINTS:
            raise ValueError(f"between 1 and {MAX_ENDPOINTS} server URLs are needed")
        for u in urls:
            parse_url(u)  # a bad URL is the caller's error, not a down server
        self.url = urls[0]
        self.urls = urls
        self.api_key = api_key
        self.max_frame_bytes = max_frame_bytes
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat if heartbeat != 0 else DEFAULT_HEARTBEAT
        self._eps = [_Endpoint(u) for u in urls]
        self._rr = 0
        self._wake: Optional[asyncio.Event] = None
        self._hb_task: Optional[asyncio.Task] = None

    # -- connection -----------------------------------------------------------
    def _new_conn(self, url: str, timeout: float) -> Connection:
        return Connection(url, api_key=self.api_key, max_frame_bytes=self.max_frame_bytes,
                          connect_timeout=timeout)

    def _backoff(self, fails: int) -> float:
        """An eighth of the interval, doubling per failure, capped at it."""
        d = max(self.heartbeat / 8, 0.05)
        for _ in range(1, fails):
            if d >= self.heartbeat:
                break
            d *= 2
        return min(d, self.heartbeat) if self.heartbeat > 0 else d

    async def connect(self) -> "Client":
        async def dial(ep: _Endpoint) -> None:
            try:
                ep.conn = await self._new_conn(ep.url, self.connect_timeout).connect()
                ep.up = True
                ep.next_beat = time.monotonic() + self.heartbeat
            except RpcError as e:
                ep.last_error = e.message
                ep.fails = 1
                ep.next_beat = time.monotonic() + self._backoff(1)

        await asyncio.gather(*(dial(ep) for ep in self._eps))
        if not any(ep.up for ep in self._eps):
            first = self._eps[0]
            msg = first.last_error if len(self._eps) == 1 else (
                f"none of the {len(self._eps)} servers answered ({first.url}: {first.last_error})")
            raise RpcError(StatusCode.UNAVAILABLE, msg)
        self._wake = asyncio.Event()
        if self.heartbeat > 0:
            self._hb_task = asyncio.create_task(self._heartbeat_main())
        return self

    async def close(self) -> None:
        if self._hb_task is not None:
            self._hb_task.cancel()
            try:
                await self._hb_task
            except (asyncio.CancelledError, Exception):
                pass
            self._hb_task = None
        for ep in self._eps:
            if ep.conn is not None:
                await ep.conn.close()
                ep.conn = None
            ep.up = False

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def endpoints(self) -> list:
        """A snapshot per endpoint: url, up, in_flight, calls (started by this
        client), waiting (server queue at the last heartbeat), last_error."""
        return [ep.info() for ep in self._eps]

    def connected(self) -> bool:
        return any(ep.info()["up"] for ep in self._eps)

    # -- heartbeat ------------------------------------------------------------
    def _mark_down(self, ep: _Endpoint, why: str) -> None:
        """Its connection is gone: no new calls until the heartbeat redials."""
        if not ep.up:
            return
        ep.up = False
        ep.last_error = why
        ep.next_beat = time.monotonic()
        if self._wake is not None:
            self._wake.set()

    @staticmethod
    async def _probe(conn: Connection, timeout: float) -> Tuple[str, int]:
        health = await conn.health(timeout=timeout)
        try:
            waiting = (await conn.stats(timeout=timeout)).waiting
        except RpcError:
            waiting = -1  # a failed Stats only leaves the queue unknown
        return health, waiting

    async def _beat(self, ep: _Endpoint) -> None:
        timeout = min(max(self.heartbeat, 0.5), 5.0)
        fresh = None
        try:
            if ep.conn is None:
                fresh = await self._new_conn(ep.url, min(self.connect_timeout, timeout)).connect()
                conn = fresh
            else:
                conn = ep.conn
                if not conn.is_up:
                    raise RpcError(StatusCode.UNAVAILABLE, "connection lost")
            health, waiting = await self._probe(conn, timeout)
        except RpcError as e:
            ep.up = False
            ep.fails += 1
            ep.last_error = f"Health: {e}"
            ep.next_beat = time.monotonic() + self._backoff(ep.fails)
            if fresh is not None:
                await fresh.close()
            elif ep.conn is not None and not ep.conn.is_up:
                # a closed connection is dropped; an open one that failed
                # Health is kept (its calls go on within their deadlines)
                old, ep.conn = ep.conn, None
                await old.close()
            return
        if fresh is not None:
            ep.conn = fresh
        ep.up = health == "SERVING"
        if not ep.up:
            ep.last_error = f"server is {health}"
        ep.waiting = waiting
        ep.fails = 0
        ep.next_beat = time.monotonic() + self.heartbeat

    async def _heartbeat_main(self) -> None:
        while True:
            wake = time.monotonic() + self.heartbeat
            for ep in self._eps:
                if ep.next_beat <= time.monotonic():
                    await self._beat(ep)
                wake = min(wake, ep.next_beat)
            left = wake - time.monotonic()
            if left > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    pass

    # -- choice and failover --------------------------------------------------
    def _pick(self, tried: set) -> Optional[_Endpoint]:
        """The up endpoint not in tried with the fewest calls in flight (ties:
        shorter server queue, then round robin); counts the call there."""
        best, best_key, best_i, n = None, None, 0, len(self._eps)
        for k in range(n):
            i = (self._rr + k) % n
            ep = self._eps[i]
            if i in tried or not ep.up or ep.conn is None:
                continue
            if not ep.conn.is_up:
                self._mark_down(ep, "connection lost")
                continue
            key = (ep.inflight, max(ep.waiting, 0))
            if best is None or key < best_key:
                best, best_key, best_i = ep, key, i
        if best is not None:
            self._rr = best_i + 1
            tried.add(best_i)
            best.calls += 1
            best.inflight += 1
        return best

    def _attempt_failed(self, ep: _Endpoint, conn: Connection, err: RpcError) -> None:
        if not conn.is_up and ep.conn is conn:
            self._mark_down(ep, err.message)

    @staticmethod
    def _left(deadline: Optional[float]) -> Optional[float]:
        return None if deadline is None else deadline - time.monotonic()

    async def _unary(self, method: str, request, response_cls, timeout: Optional[float]):
        """Unary methods change nothing on the server but their answer, so an
        UNAVAILABLE attempt may be repeated elsewhere."""
        deadline = None if timeout is None else time.monotonic() + timeout
        err = RpcError(StatusCode.UNAVAILABLE,
                       f"{method}: no server is up ({len(self._eps)} endpoints)")
        tried: set = set()
        attempts = 0
        while True:
            left = self._left(deadline)
            if left is not None and left <= 0:
                raise RpcError(StatusCode.DEADLINE_EXCEEDED,
                               f"deadline of {timeout:g} s exceeded after {attempts} attempts "
                               f"(last: {err.message})")
            ep = self._pick(tried)
            if ep is None:
                raise err  # every endpoint up has been tried: the last status stands
            attempts += 1
            conn = ep.conn
            try:
                return await conn._unary(method, request, response_cls, left)
            except RpcError as e:
                if e.code != StatusCode.UNAVAILABLE:
                    raise
                err = e
                self._attempt_failed(ep, conn, e)
            finally:
                ep.inflight -= 1

    async def _open_stream(self, request, deadline: Optional[float]):
        """Start a GenerateStream on a chosen endpoint: (connection, call,
        endpoint). Only a call that never left this process goes elsewhere."""
        err = RpcError(StatusCode.UNAVAILABLE,
                       f"GenerateStream: no server is up ({len(self._eps)} endpoints)")
        tried: set = set()
        while True:
            left = self._left(deadline)
            if left is not None and left <= 0:
                raise RpcError(StatusCode.DEADLINE_EXCEEDED, "deadline exceeded (client)")
            ep = self._pick(tried)
            if ep is None:
                raise err
            conn = ep.conn
            try:
                return conn, await conn._start("GenerateStream", request, left), ep
            except RpcError as e:
                ep.inflight -= 1
                if e.code != StatusCode.UNAVAILABLE or conn.is_up:
                    raise
                err = e
                self._attempt_failed(ep, conn, e)


def make_request(prompt: Optional[str] = None, *,
                 prompt_ids: Optional[Sequence[int]] = None,
                 messages: Optional[Sequence[Union[dict, Tuple[str, str]]]] = None,
                 max_tokens: Optional[int] = None, min_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None,
                 repeat_last_n: Optional[int] = None, seed: Optional[int] = None,
                 stop: Optional[Sequence[str]] = None,
                 stop_ids: Optional[Sequence[int]] = None,
                 ignore_eos: Optional[bool] = None, n: Optional[int] = None,
                 add_special: Optional[bool] = None,
                 return_token_ids: Optional[bool] = None) -> pb.GenerateRequest:
    """A GenerateRequest; parameters left as None take the server's default.
    Exactly one of prompt, prompt_ids, messages ({"role", "content"} dicts or
    (role, content) pairs)."""
    req = pb.GenerateRequest()
    if prompt is not None:
        req.prompt = prompt
    if prompt_ids is not None:
        req.prompt_ids.extend(prompt_ids)
    for m in messages or ():
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else m
        req.messages.add(role=role, content=content)
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "min_p": min_p,
                "repetition_penalty": repetition_penalty, "repeat_last_n": repeat_last_n,
                "seed": seed}
    for k, v in sampling.items():
        if v is not None:
            setattr(req.sampling, k, v)
    scalars = {"max_tokens": max_tokens, "min_tokens": min_tokens, "ignore_eos": ignore_eos,
               "n": n, "add_special": add_special, "return_token_ids": return_token_ids}
    for k, v in scalars.items():
        if v is not None:
            setattr(req, k, v)
    if stop:
        req.stop.extend(stop)
    if stop_ids:
        req.stop_ids.extend(stop_ids)
    return req
