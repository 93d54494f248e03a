"""asyncio client of the inference server's RPC protocol (proto/rpc.proto).

One Client is one TCP connection. Calls are multiplexed on it by call id:
each call has a queue that the connection's single reader task fills with
the MESSAGE and STATUS frames addressed to it; writes go straight to the
transport (asyncio runs them in order) and `drain()` gives backpressure.

Every call ends with exactly one status; a status other than OK is raised as
RpcError. Deadlines (`timeout`, seconds) are sent in the CALL frame and also
enforced here. Leaving a stream early (break, exception, aclose) sends
CANCEL so the server frees the sequence's KV blocks at once. There are no
automatic retries: a lost connection fails its calls with UNAVAILABLE.
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


class Client:
    """A connection to infer-server. Use as `async with Client(url) as c:`."""

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
    async def connect(self) -> "Client":
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

    async def __aenter__(self) -> "Client":
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

    # -- API ------------------------------------------------------------------
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


class Stream:
    """One GenerateStream call: an async iterator of GenerateChunk and an
    async context manager (leaving the block early cancels the call)."""

    def __init__(self, client: Client, request: pb.GenerateRequest, timeout: Optional[float]):
        self._client = client
        self._request = request
        self._timeout = timeout
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._call: Optional[_Call] = None
        self._finished = False

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> pb.GenerateChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._call is None:
                self._call = await self._client._start("GenerateStream", self._request,
                                                       self._timeout)
            while True:
                frame = await self._client._next(self._call, self._deadline)
                if frame.type == rpc_pb2.FRAME_MESSAGE:
                    chunk = pb.GenerateChunk()
                    chunk.ParseFromString(frame.payload)
                    return chunk
                if frame.type == rpc_pb2.FRAME_STATUS:
                    self._finished = True
                    raise StopAsyncIteration
        except asyncio.CancelledError:
            self.cancel()
            raise
        except RpcError:
            self._finished = True
            raise

    def cancel(self) -> None:
        """End the call now (sends CANCEL; the server frees its sequence)."""
        if not self._finished:
            self._finished = True
            if self._call is not None and not self._call.done:
                self._client._send_cancel(self._call.call_id)

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
