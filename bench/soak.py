#!/usr/bin/env python3
"""Soak driver for infer-server (bench/soak.sh starts the server and calls it).

Drives one running server for a fixed time with a bounded mix of work over
HTTP and RPC: unary and streaming generations on every route, cancels,
deadlines that expire, client disconnects mid-stream and mid-unary, and bad
inputs (malformed JSON, wrong types, unknown routes, oversized bodies,
garbage frames, NUL characters, stalled requests). Every request is counted
by kind and outcome: ok, expected error (what the API documents for that
input or for a full queue, a deadline, a cancel), unexpected error, or no
answer within the per-request client timeout.

After the load (and a probe of disconnect-cancellation on an idle server, and
a settle time) it checks that the server holds no KV blocks and no calls,
that RSS grew less than 5% after warm-up, that file descriptors and threads
are back to their idle values, that every request was answered as expected,
and that the server is alive. It prints a table and PASS/FAIL, writes a JSON
report (--out) and exits 1 on FAIL.

The pure parts (duration parsing, outcome classification, RSS growth, idle
comparison, the verdict) need no server and no protobuf; tests/python/
test_soak.py checks them. Only 127.0.0.1 is ever contacted.
"""
import argparse
import asyncio
import json
import os
import random
import re
import socket
import struct
import sys
import threading
import time

HOST = "127.0.0.1"
OK, EXPECTED, UNEXPECTED, NO_ANSWER = "ok", "expected_error", "unexpected", "no_answer"
OUTCOMES = (OK, EXPECTED, UNEXPECTED, NO_ANSWER)
TIMEOUT_CODE = "TIMEOUT"  # the code of a request that got no answer in time
RSS_GROWTH_LIMIT = 0.05
WARMUP_CAP_S = 60.0
PROBE_FREE_S = 2.0  # blocks of a disconnected client's request must be free by then

# ---------------------------------------------------------------------------
# Pure logic (tested without a server by tests/python/test_soak.py)
# ---------------------------------------------------------------------------


def parse_duration(text):
    """'90s', '10m', '1h', '1.5m' or bare seconds -> seconds (float > 0)."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"bad duration {text!r}: expected e.g. 60s, 10m, 1h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def warmup_seconds(duration_s):
    """The RSS baseline is taken this long after the load starts."""
    return min(0.1 * duration_s, WARMUP_CAP_S)


def classify(code, ok_codes, expected_codes):
    """A request's outcome from the code it ended with (HTTP status or RPC
    status name as text, 'TIMEOUT' for no answer, anything else for a
    transport failure) and the codes its kind documents as success or as
    an expected error."""
    if code in ok_codes:
        return OK
    if code in expected_codes:
        return EXPECTED
    if code == TIMEOUT_CODE:
        return NO_ANSWER
    return UNEXPECTED


def tally(results):
    """[(kind, outcome, code, detail)] -> {kind: {"outcomes": {..}, "codes": {..}}}."""
    table = {}
    for kind, outcome, code, _ in results:
        row = table.setdefault(kind, {"outcomes": dict.fromkeys(OUTCOMES, 0), "codes": {}})
        row["outcomes"][outcome] += 1
        row["codes"][code] = row["codes"].get(code, 0) + 1
    return table


def totals(table):
    out = dict.fromkeys(OUTCOMES, 0)
    for row in table.values():
        for k, v in row["outcomes"].items():
            out[k] += v
    return out


def rss_growth(samples, warmup_end):
    """samples: [(t, rss_kb, fds, threads, ...)], the last one taken
    after the settle. Base = the first sample at or after warmup_end; max =
    the largest from there on; final = the last. Growths are fractions of
    the base; None when no sample is late enough."""
    after = sorted((s for s in samples if s[0] >= warmup_end), key=lambda s: s[0])
    if not after:
        return None
    base, final = after[0][1], after[-1][1]
    peak = max(s[1] for s in after)
    out = {"base_kb": base, "max_kb": peak, "final_kb": final,
           "max_growth": (peak - base) / base if base else 0.0,
           "final_growth": (final - base) / base if base else 0.0}
    if len(after[0]) >= 6:
        out.update(anon_growth_kb=after[-1][4] - after[0][4],
                   file_growth_kb=after[-1][5] - after[0][5])
    return out


def back_to_idle(idle, final):
    """{name: value} before the load vs after the settle: each final value
    must not exceed the idle one. -> {name: (idle, final, ok)}."""
    return {k: (idle[k], final.get(k), final.get(k) is not None and final[k] <= idle[k])
            for k in idle}


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': float} (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


KV_USED = ('infer_kv_blocks_used{tier="device"}', 'infer_kv_blocks_used{tier="cpu"}')
IDLE_GAUGES = KV_USED + ("infer_active_calls", "infer_sequences_waiting",
                         "infer_sequences_running", "infer_sequences_swapped",
                         "infer_rpc_connections")


def build_checks(table, rss, idle_cmp, metrics, alive, probes):
    """The acceptance criteria -> [{"name", "ok", "detail"}]."""
    checks = []

    def add(name, ok, detail):
        checks.append({"name": name, "ok": bool(ok), "detail": detail})

    t = totals(table)
    add("requests answered as expected", t[UNEXPECTED] == 0 and t[NO_ANSWER] == 0,
        f"{sum(t.values())} requests: {t[OK]} ok, {t[EXPECTED]} expected errors, "
        f"{t[UNEXPECTED]} unexpected, {t[NO_ANSWER]} without answer")
    add("load ran", sum(t.values()) > 0, f"{sum(t.values())} requests")
    for g in IDLE_GAUGES:
        v = metrics.get(g)
        add(f"{g} = 0 after settle", v == 0, "missing from /metrics" if v is None else f"{v:g}")
    if rss is None:
        add("RSS growth < 5% after warm-up", False, "no RSS sample after the warm-up")
    else:
        # the end value decides: memory still held after the load and the
        # settle is what a leak leaves; the peak (working set of the load,
        # returned afterwards) is reported beside it
        add("RSS growth < 5% after warm-up", rss["final_growth"] < RSS_GROWTH_LIMIT,
            f"base {rss['base_kb']} kB, final {rss['final_kb']} kB "
            f"({100 * rss['final_growth']:+.1f}%), peak {rss['max_kb']} kB "
            f"({100 * rss['max_growth']:+.1f}%)" + (
                f"; anonymous {rss['anon_growth_kb']:+d} kB, file {rss['file_growth_kb']:+d} kB"
                if "anon_growth_kb" in rss else ""))
    for name, (before, after, ok) in idle_cmp.items():
        add(f"{name} back to idle", ok, f"idle {before}, after settle {after}")
    for name, (ok, detail) in alive.items():
        add(name, ok, detail)
    for name, (ok, detail) in probes.items():
        add(name, ok, detail)
    return checks


def verdict(checks):
    return "PASS" if checks and all(c["ok"] for c in checks) else "FAIL"


def format_table(table):
    lines = [f"{'kind':28} {'total':>6} {'ok':>6} {'expect':>6} {'unexp':>6} {'noans':>6}  codes"]
    for kind in sorted(table):
        o, codes = table[kind]["outcomes"], table[kind]["codes"]
        cs = " ".join(f"{c}:{n}" for c, n in sorted(codes.items(), key=lambda x: -x[1]))
        lines.append(f"{kind:28} {sum(o.values()):6d} {o[OK]:6d} {o[EXPECTED]:6d} "
                     f"{o[UNEXPECTED]:6d} {o[NO_ANSWER]:6d}  {cs}")
    t = totals(table)
    lines.append(f"{'all':28} {sum(t.values()):6d} {t[OK]:6d} {t[EXPECTED]:6d} "
                 f"{t[UNEXPECTED]:6d} {t[NO_ANSWER]:6d}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Process sampling (/proc)
# ---------------------------------------------------------------------------


def proc_sample(pid):
    """(rss_kb, fds, threads, rss_anon_kb, rss_file_kb) of pid, or None when
    it is gone. The anonymous/file split tells heap growth from pages of
    mapped files (the model) coming and going."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    field = {k: re.search(rf"^{k}:\s+(\S+)", status, re.M)
             for k in ("VmRSS", "Threads", "State", "RssAnon", "RssFile")}
    if not field["VmRSS"] or not field["Threads"] or (
            field["State"] and field["State"].group(1) in "ZX"):
        return None

    def kb(k):
        return int(field[k].group(1)) if field[k] else 0
    return kb("VmRSS"), fds, kb("Threads"), kb("RssAnon"), kb("RssFile")


class Sampler(threading.Thread):
    """Samples the server's RSS, fds and threads every second until stopped."""

    def __init__(self, pid, t0):
        super().__init__(daemon=True)
        self.pid, self.t0 = pid, t0
        self.samples = []
        self.stop = threading.Event()

    def take(self):
        s = proc_sample(self.pid)
        if s is not None:
            self.samples.append((round(time.monotonic() - self.t0, 2),) + s)
        return s

    def run(self):
        while not self.stop.wait(1.0):
            self.take()


# ---------------------------------------------------------------------------
# Raw HTTP/1.1 and raw RPC frames (full control over disconnects and bytes)
# ---------------------------------------------------------------------------


class NoAnswer(Exception):
    """The per-request client timeout passed."""


class Closed(Exception):
    """The server closed (or reset) the connection before a full answer."""


class Conn:
    """A TCP connection with one deadline for the whole exchange."""

    def __init__(self, port, timeout):
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        try:
            self.sock = socket.create_connection((HOST, port), timeout=timeout)
        except socket.timeout:
            raise NoAnswer("connect timed out")
        except OSError as e:
            raise Closed(f"connect: {e}")

    def send(self, data):
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise NoAnswer("send timed out")
        except OSError as e:
            raise Closed(f"send: {e}")

    def recv_more(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise NoAnswer("no answer within the client timeout")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise NoAnswer("no answer within the client timeout")
        except OSError as e:
            raise Closed(f"recv: {e}")
        if not d:
            raise Closed("connection closed by the server")
        self.buf += d

    def read_until(self, sep):
        while sep not in self.buf:
            self.recv_more()
        head, _, self.buf = self.buf.partition(sep)
        return head

    def read_exact(self, n):
        while len(self.buf) < n:
            self.recv_more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while True:
            try:
                self.recv_more()
            except Closed:
                out, self.buf = self.buf, b""
                return out

    def close(self, reset=False):
        try:
            if reset:  # RST instead of FIN, like a killed client
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError:
            pass


def http_bytes(port, method, path, body=None, headers=(), close=True):
    """An HTTP/1.1 request; body: bytes, or an object sent as JSON."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if close:
        lines.append("Connection: close")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def http_read_head(c):
    head = c.read_until(b"\r\n\r\n").decode("latin-1")
    status_line, *hlines = head.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Closed(f"bad status line {status_line!r}")
    headers = {}
    for h in hlines:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


def http_read_body(c, headers):
    if "content-length" in headers:
        return c.read_exact(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            n = int(c.read_until(b"\r\n").split(b";")[0], 16)
            if n == 0:
                c.read_until(b"\r\n")
                return out
            out += c.read_exact(n)
            c.read_exact(2)
    return c.read_to_eof()


def http_call(port, timeout, method, path, body=None, headers=()):
    """-> (status, headers, body bytes); raises NoAnswer / Closed."""
    c = Conn(port, timeout)
    try:
        c.send(http_bytes(port, method, path, body, headers))
        status, h = http_read_head(c)
        return status, h, http_read_body(c, h)
    finally:
        c.close()


def sse_chunks(c):
    """The data of a chunked response body, chunk by chunk, to the last one."""
    while True:
        n = int(c.read_until(b"\r\n").split(b";")[0], 16)
        if n == 0:
            c.read_until(b"\r\n")
            return
        yield c.read_exact(n)
        c.read_exact(2)


def sse_events(c, headers):
    """Yields the payload of each `data:` event until the body ends (its last
    chunk, or the server closing a body without framing)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        pending = b""
        for data in sse_chunks(c):
            pending += data
            while b"\n\n" in pending:
                block, _, pending = pending.partition(b"\n\n")
                yield from sse_data(block)
        if pending.strip():
            raise Closed("stream ended inside an event")
        return
    while True:
        try:
            block = c.read_until(b"\n\n")
        except Closed:
            if c.buf.strip():
                raise Closed("stream ended inside an event")
            return
        yield from sse_data(block)


def sse_data(block):
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            yield line[5:].strip().decode()


class Rpc:
    """Raw frames (docs/protocol.md) on one connection; the protobuf modules
    come from clients/python (setup.sh generates them)."""

    def __init__(self, port, timeout):
        self.c = Conn(port, timeout)

    def send(self, **fields):
        body = PB.rpc.Frame(**fields).SerializeToString()
        self.c.send(struct.pack("<I", len(body)) + body)

    def call(self, call_id, method, request=None, deadline_ms=None):
        f = {"call_id": call_id, "type": PB.rpc.FRAME_CALL,
             "method": "inference.Inference/" + method}
        if request is not None:
            f["payload"] = request.SerializeToString()
        if deadline_ms:
            f["deadline_ms"] = deadline_ms
        self.send(**f)

    def recv(self):
        (n,) = struct.unpack("<I", self.c.read_exact(4))
        fr = PB.rpc.Frame()
        fr.ParseFromString(self.c.read_exact(n))
        return fr

    def wait_status(self, call_id):
        """-> (status name, [MESSAGE payloads]) of call_id; other calls' frames dropped."""
        msgs = []
        while True:
            fr = self.recv()
            if fr.call_id != call_id:
                continue
            if fr.type == PB.rpc.FRAME_MESSAGE:
                msgs.append(fr.payload)
            elif fr.type == PB.rpc.FRAME_STATUS:
                return PB.rpc.StatusCode.Name(fr.status), msgs

    def close(self, reset=False):
        self.c.close(reset)


class PB:
    """The generated protobuf modules and the asyncio client, loaded once."""
    rpc = inference = client = None

    @classmethod
    def load(cls, root):
        sys.path.insert(0, os.path.join(root, "clients", "python"))
        import infer_client
        from infer_client import inference_pb2, rpc_pb2
        cls.rpc, cls.inference, cls.client = rpc_pb2, inference_pb2, infer_client


# ---------------------------------------------------------------------------
# The load: request kinds
# ---------------------------------------------------------------------------

WORDS = ("the quick brown fox jumps over a lazy dog while small robots count stars above "
         "quiet rivers and old lighthouses watch ships sail toward distant islands").split()
NUL_PREFIX, NUL_SUFFIX = "Tell me a story", " about a dragon and a knight who became friends"
HTTP_GEN_OK = {"200"}
HTTP_BUSY = {"429"}
RPC_BUSY = {"RESOURCE_EXHAUSTED"}


class Ctx:
    """What every request kind needs; shared by the worker threads."""

    def __init__(self, args):
        self.http = int(args.http.rsplit(":", 1)[1])
        self.rpc = int(args.rpc.rsplit(":", 1)[1])
        self.timeout = args.request_timeout
        self.stall_wait = args.stall_wait
        self.nul_prefix_tokens = {}  # route -> prompt tokens of the text before the NUL


def prompt_text(rng):
    n = rng.choice((3, 8, 20, 40, 90))
    return " ".join(rng.choice(WORDS) for _ in range(n))


def gen_params(rng):
    p = {"max_tokens": rng.randint(4, 48), "temperature": rng.choice((0.0, 0.7, 1.0)),
         "seed": rng.randrange(1 << 30)}
    if rng.random() < 0.3:
        p["ignore_eos"] = True
    if rng.random() < 0.1:
        p["n"] = 2
    if rng.random() < 0.1:
        p["stop"] = [rng.choice(WORDS)]
    return p


def result(kind, code, ok, expected, detail=""):
    return (kind, classify(code, ok, expected), code, detail)


def transport(kind, e):
    code = TIMEOUT_CODE if isinstance(e, NoAnswer) else "CLOSED"
    return (kind, classify(code, (), ()), code, str(e))


def check_json_answer(kind, status, body, need):
    """A 200 body must be JSON with the route's fields; else unexpected."""
    if status != 200:
        return result(kind, str(status), HTTP_GEN_OK, HTTP_BUSY, body[:200].decode("utf-8", "replace"))
    try:
        doc = json.loads(body)
        need(doc)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return (kind, UNEXPECTED, "BAD_BODY", f"{e}: {body[:200]!r}")
    return (kind, OK, "200", "")


HTTP_ROUTES = {  # route -> (request builder, check of a unary answer)
    "/generate": (lambda r, p: dict(prompt=prompt_text(r), **_gen_alias(p)),
                  lambda d: (d["text"], d["finish_reason"])),
    "/v1/completions": (lambda r, p: dict(prompt=prompt_text(r), **p),
                        lambda d: d["choices"][0]["text"]),
    "/v1/chat/completions": (lambda r, p: dict(messages=[{"role": "user",
                                                          "content": prompt_text(r)}], **p),
                             lambda d: d["choices"][0]["message"]["content"]),
}


def _gen_alias(p):
    q = dict(p)
    q["max_length"] = q.pop("max_tokens")
    return q


def http_unary(ctx, rng, route):
    kind = "http unary " + route
    build, need = HTTP_ROUTES[route]
    try:
        status, _, body = http_call(ctx.http, ctx.timeout, "POST", route,
                                    build(rng, gen_params(rng)))
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    return check_json_answer(kind, status, body, need)


def http_stream(ctx, rng, route, leave_after=None):
    """A streamed generation, read to [DONE] or left after `leave_after` events."""
    kind = f"http {'stream-disconnect' if leave_after else 'stream'} {route}"
    req = HTTP_ROUTES[route][0](rng, gen_params(rng))
    req["stream"] = True
    try:
        c = Conn(ctx.http, ctx.timeout)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    try:
        c.send(http_bytes(ctx.http, "POST", route, req))
        status, h = http_read_head(c)
        if status != 200:
            return result(kind, str(status), (), HTTP_BUSY,
                          http_read_body(c, h)[:200].decode("utf-8", "replace"))
        done = finished = False
        for n, ev in enumerate(sse_events(c, h), 1):
            if leave_after and n >= leave_after:
                c.close(reset=rng.random() < 0.5)
                return (kind, OK, "left", "")
            if ev == "[DONE]":
                done = True
                continue
            doc = json.loads(ev)
            if "error" in doc:
                return (kind, UNEXPECTED, "STREAM_ERROR", ev[:200])
            finished |= event_finished(doc)
        if leave_after:  # ended before we left: a short generation
            return (kind, OK, "200", "")
        if not (done and finished):
            return (kind, UNEXPECTED, "BAD_STREAM", f"[DONE] {done}, finish_reason {finished}")
        return (kind, OK, "200", "")
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    except ValueError as e:
        return (kind, UNEXPECTED, "BAD_STREAM", str(e))
    finally:
        c.close()


def event_finished(doc):
    """Whether an SSE event ends a completion (/generate or OpenAI shape)."""
    return bool(doc.get("finish_reason")) or any(
        ch.get("finish_reason") for ch in doc.get("choices") or ())


def http_unary_disconnect(ctx, rng):
    kind = "http unary-disconnect"
    route = rng.choice(list(HTTP_ROUTES))
    try:
        c = Conn(ctx.http, ctx.timeout)
        c.send(http_bytes(ctx.http, "POST", route, HTTP_ROUTES[route][0](rng, gen_params(rng))))
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    time.sleep(rng.uniform(0.0, 0.5))
    c.close(reset=rng.random() < 0.5)
    return (kind, OK, "left", "")


def http_keepalive(ctx, rng):
    """Several GETs on one kept-alive connection."""
    kind = "http keep-alive GETs"
    try:
        c = Conn(ctx.http, ctx.timeout)
        try:
            for path in ("/health", "/v1/models", "/metrics", "/health"):
                c.send(http_bytes(ctx.http, "GET", path, close=False))
                status, h = http_read_head(c)
                http_read_body(c, h)
                if status != 200:
                    return (kind, UNEXPECTED, str(status), path)
        finally:
            c.close()
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    return (kind, OK, "200", "")


BIG = 2 << 20  # above the soak config's server.max_message_bytes (1 MiB)
HTTP_BAD = [  # (name, method, path, body, extra headers, expected statuses)
    ("malformed JSON", "POST", "/generate", b'{"prompt": "x", ', (), {"400"}),
    ("not an object", "POST", "/v1/completions", b"[1, 2]", (), {"400"}),
    ("empty body", "POST", "/generate", b"", (), {"400"}),
    ("prompt wrong type", "POST", "/generate", {"prompt": 5}, (), {"400"}),
    ("temperature wrong type", "POST", "/v1/completions",
     {"prompt": "x", "temperature": "hot"}, (), {"400"}),
    ("negative max_tokens", "POST", "/v1/completions", {"prompt": "x", "max_tokens": -1}, (),
     {"400"}),
    ("max_tokens 1e400", "POST", "/generate", b'{"prompt": "x", "max_tokens": 1e400}', (),
     {"400"}),
    ("messages wrong type", "POST", "/v1/chat/completions", {"messages": "hi"}, (), {"400"}),
    ("n too large", "POST", "/generate", {"prompt": "x", "n": 100000}, (), {"400"}),
    ("too many stops", "POST", "/generate",
     {"prompt": "x", "max_tokens": 2, "stop": [f"s{i}" for i in range(100)]}, (), {"400"}),
    ("prompt beyond the KV pool", "POST", "/generate",
     {"prompt_ids": [100] * 700, "max_tokens": 8}, (), {"400"}),
    ("token id outside the vocabulary", "POST", "/generate",
     {"prompt_ids": [1 << 30], "max_tokens": 2}, (), {"400"}),
    ("invalid UTF-8", "POST", "/generate", b'{"prompt": "a\xff\xfeb", "max_tokens": 2}', (),
     {"400"}),
    ("deep nesting", "POST", "/generate", b"[" * 100000, (), {"400"}),
    ("NUL in a stop string", "POST", "/generate",
     {"prompt": "x", "max_tokens": 2, "stop": ["\u0000"]}, (), {"200", "400"}),
    ("lone surrogate", "POST", "/generate", b'{"prompt": "x\\ud800", "max_tokens": 2}', (),
     {"200", "400"}),
    ("unknown route", "GET", "/nope", None, (), {"404"}),
    ("unknown POST route", "POST", "/v1/nope", {"prompt": "x"}, (), {"404"}),
    ("unknown model", "GET", "/v1/models/nope", None, (), {"404"}),
    ("wrong method", "GET", "/v1/completions", None, (), {"405"}),
    ("chunked body, not JSON", "POST", "/generate", b"", ("Transfer-Encoding: chunked",), {"400"}),
]


def http_bad_input(ctx, rng):
    name, method, path, body, headers, expected = rng.choice(HTTP_BAD)
    kind = "http bad: " + name
    if name == "chunked body, not JSON":  # Content-Length would contradict the header
        raw = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
               "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n").encode()
        return http_raw_exchange(ctx, kind, raw, expected)
    try:
        status, _, resp = http_call(ctx.http, ctx.timeout, method, path, body, headers)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    return result(kind, str(status), {"200"} & expected, expected - {"200"},
                  resp[:200].decode("utf-8", "replace"))


def http_raw_exchange(ctx, kind, raw, expected, eof_ok=False):
    """Send raw bytes, expect one of `expected` statuses (or, with eof_ok, a close)."""
    try:
        c = Conn(ctx.http, ctx.timeout)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    try:
        c.send(raw)
        status, _ = http_read_head(c)
        return result(kind, str(status), (), expected)
    except Closed as e:
        return result(kind, "CLOSED", (), {"CLOSED"} if eof_ok else (), str(e))
    except NoAnswer as e:
        return transport(kind, e)
    finally:
        c.close()


def http_garbage(ctx, rng):
    choice = rng.randrange(3)
    if choice == 0:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) + b"\r\n\r\n"
        return http_raw_exchange(ctx, "http bad: garbage request", raw,
                                 {"400", "404", "405", "413", "414", "431", "505"}, eof_ok=True)
    if choice == 1:
        raw = f"GET /health HTTP/1.1\r\nHost: a\x00b\r\nConnection: close\r\n\r\n".encode()
        return http_raw_exchange(ctx, "http bad: NUL in a header", raw,
                                 {"200", "400"}, eof_ok=True)
    raw = (f"POST /generate HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
           f"Content-Length: {BIG}\r\n\r\n").encode() + b'{"prompt": "'
    return http_raw_exchange(ctx, "http bad: oversized body", raw, {"413"})


def http_stalled(ctx, rng):
    """A request that stops half-way (headers or body): the server must
    answer or close within ctx.stall_wait, not keep the connection forever."""
    if rng.random() < 0.5:
        kind, raw = "http stalled headers", b"POST /generate HTTP/1.1\r\nHost: x\r\n"
    else:
        kind = "http stalled body"
        raw = (f"POST /generate HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n"
               '{"prompt": ').encode()
    try:
        c = Conn(ctx.http, ctx.stall_wait)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    try:
        c.send(raw)
        c.recv_more()
        return (kind, EXPECTED, "ANSWERED", c.buf[:60].decode("utf-8", "replace"))
    except Closed:
        return (kind, EXPECTED, "CLOSED", "")
    except NoAnswer:
        return (kind, NO_ANSWER, TIMEOUT_CODE,
                f"a half-sent request kept open for {ctx.stall_wait:g} s")
    finally:
        c.close()


def nul_tokens_http(ctx, route, text):
    """-> (status, prompt_tokens or None) of a 1-token request with `text`."""
    body = ({"messages": [{"role": "user", "content": text}]} if "chat" in route
            else {"prompt": text})
    body.update(max_tokens=1, temperature=0)
    status, _, resp = http_call(ctx.http, ctx.timeout, "POST", route, body)
    if status != 200:
        return status, None
    return status, json.loads(resp)["usage"]["prompt_tokens"]


def http_nul(ctx, rng):
    """A NUL inside a JSON string: refused (400) or kept (more prompt tokens
    than the text before it), never silently cut."""
    route = rng.choice(("/generate", "/v1/chat/completions"))
    kind = "http NUL in prompt " + route
    try:
        status, n = nul_tokens_http(ctx, route, NUL_PREFIX + "\u0000" + NUL_SUFFIX)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    return judge_nul(kind, str(status), n, ctx.nul_prefix_tokens.get(route), {"400"}, HTTP_BUSY)


def judge_nul(kind, code, n, prefix_n, refused, busy):
    if code in refused or code in busy:
        return result(kind, code, (), refused | busy)
    if n is None or prefix_n is None:
        return (kind, UNEXPECTED, code, "no prompt token count")
    if n <= prefix_n:
        return (kind, UNEXPECTED, "NUL_TRUNCATED",
                f"prompt_tokens {n} = those of the text before the NUL ({prefix_n})")
    return (kind, OK, code, "")


# --- RPC with the asyncio client ------------------------------------------------


def rpc_async(ctx, kind, body):
    """Run `body(client)` on a fresh connection with the client timeout."""
    async def main():
        async with PB.client.Client(f"tcp://{HOST}:{ctx.rpc}") as c:
            return await body(c)

    try:
        return asyncio.run(asyncio.wait_for(main(), ctx.timeout))
    except asyncio.TimeoutError:
        return (kind, NO_ANSWER, TIMEOUT_CODE, "no answer within the client timeout")
    except PB.client.RpcError as e:
        return result(kind, e.name, (), RPC_BUSY, e.message)


def rpc_req_params(rng):
    p = gen_params(rng)
    if rng.random() < 0.3:
        p["messages"] = [("user", prompt_text(rng))]
        return None, p
    return prompt_text(rng), p


def check_completions(kind, completions, n):
    reasons = [c.finish_reason for c in completions]
    if len(reasons) != n or any(r not in ("length", "eos", "stop") for r in reasons):
        return (kind, UNEXPECTED, "BAD_RESPONSE", f"n {n}, finish_reasons {reasons}")
    return (kind, OK, "OK", "")


def rpc_generate(ctx, rng):
    kind = "rpc Generate"
    prompt, p = rpc_req_params(rng)

    async def body(c):
        r = await c.generate(prompt, **p)
        return check_completions(kind, r.completions, p.get("n", 1))
    return rpc_async(ctx, kind, body)


def rpc_stream(ctx, rng, leave_after=None):
    kind = "rpc GenerateStream" + (" break (CANCEL)" if leave_after else "")
    prompt, p = rpc_req_params(rng)

    async def body(c):
        final, seen = {}, 0
        async with c.stream(prompt, **p) as s:
            async for chunk in s:
                seen += 1
                if chunk.finish_reason:
                    final[chunk.index] = chunk
                if leave_after and seen >= leave_after:
                    break
        if leave_after:
            await c.health(timeout=ctx.timeout)  # the connection still serves
            return (kind, OK, "left" if seen >= leave_after else "OK", "")
        return check_completions(kind, [final[i] for i in sorted(final)], p.get("n", 1))
    return rpc_async(ctx, kind, body)


def rpc_multiplex(ctx, rng):
    """Several calls at once on one connection."""
    kind = "rpc multiplexed calls"
    reqs = [rpc_req_params(rng) for _ in range(3)]

    async def body(c):
        rs = await asyncio.gather(*(c.generate(pr, **p) for pr, p in reqs),
                                  return_exceptions=True)
        for r, (_, p) in zip(rs, reqs):
            if isinstance(r, PB.client.RpcError):
                return result(kind, r.name, (), RPC_BUSY, r.message)
            if isinstance(r, BaseException):
                raise r
            res = check_completions(kind, r.completions, p.get("n", 1))
            if res[1] != OK:
                return res
        return (kind, OK, "OK", "")
    return rpc_async(ctx, kind, body)


# --- RPC with raw frames ------------------------------------------------------------


def gen_request(rng, **over):
    prompt, p = rpc_req_params(rng)
    p.update(over)
    return PB.client.make_request(prompt, **p)


def rpc_raw(ctx, kind, fn):
    try:
        r = Rpc(ctx.rpc, ctx.timeout)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    try:
        return fn(r)
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    finally:
        r.close()


def rpc_deadline(ctx, rng):
    """A server-side deadline that expires while the request runs (or queues)."""
    kind = "rpc deadline"
    method = rng.choice(("Generate", "GenerateStream"))

    def fn(r):
        r.call(1, method, gen_request(rng, max_tokens=48, ignore_eos=True),
               deadline_ms=rng.randint(20, 400))
        code, _ = r.wait_status(1)
        return result(kind, code, {"OK"}, {"DEADLINE_EXCEEDED"} | RPC_BUSY)
    return rpc_raw(ctx, kind, fn)


def rpc_cancel_method(ctx, rng):
    """Cancel(call_id) on the same connection ends a running stream CANCELLED."""
    kind = "rpc Cancel method"

    def fn(r):
        r.call(1, "GenerateStream", gen_request(rng, max_tokens=48, ignore_eos=True))
        first = r.recv()
        if first.type == PB.rpc.FRAME_STATUS:  # refused before it ran
            return result(kind, PB.rpc.StatusCode.Name(first.status), (), RPC_BUSY)
        r.call(2, "Cancel", PB.inference.CancelRequest(call_id=1))
        codes = {}
        while len(codes) < 2:
            fr = r.recv()
            if fr.type == PB.rpc.FRAME_STATUS:
                codes[fr.call_id] = PB.rpc.StatusCode.Name(fr.status)
        if codes.get(2) != "OK":
            return (kind, UNEXPECTED, codes.get(2), "Cancel call failed")
        return result(kind, codes.get(1), {"OK"}, {"CANCELLED"})
    return rpc_raw(ctx, kind, fn)


def rpc_disconnect(ctx, rng):
    """Close the connection mid-call (FIN or RST), without CANCEL."""
    method = rng.choice(("Generate", "GenerateStream"))
    kind = f"rpc disconnect mid-{method}"
    try:
        r = Rpc(ctx.rpc, ctx.timeout)
        r.call(1, method, gen_request(rng))
        if method == "GenerateStream" and rng.random() < 0.7:
            r.recv()
        else:
            time.sleep(rng.uniform(0.0, 0.5))
    except (NoAnswer, Closed) as e:
        return transport(kind, e)
    r.close(reset=rng.random() < 0.5)
    return (kind, OK, "left", "")


def rpc_bad_request(ctx, rng):
    """Well-framed calls with bad contents: each must end INVALID_ARGUMENT or
    UNIMPLEMENTED, and the connection must still answer Health afterwards."""
    inf = PB.inference
    cases = [
        ("bad top_p", "Generate", lambda: gen_request(rng, top_p=1.5), "INVALID_ARGUMENT"),
        ("empty prompt", "Generate", lambda: inf.GenerateRequest(prompt=""), "INVALID_ARGUMENT"),
        ("no prompt", "GenerateStream", lambda: inf.GenerateRequest(max_tokens=2),
         "INVALID_ARGUMENT"),
        ("id outside vocabulary", "Generate",
         lambda: inf.GenerateRequest(prompt_ids=[1 << 30]), "INVALID_ARGUMENT"),
        ("n = 0", "Generate", lambda: gen_request(rng, n=0), "INVALID_ARGUMENT"),
        ("prompt beyond the KV pool", "Generate",
         lambda: inf.GenerateRequest(prompt_ids=[100] * 700, max_tokens=8), "INVALID_ARGUMENT"),
        ("unknown method", "Frobnicate", lambda: None, "UNIMPLEMENTED"),
    ]
    name, method, build, want = rng.choice(cases)
    kind = "rpc bad: " + name

    def fn(r):
        r.call(7, method, build())
        code, _ = r.wait_status(7)
        r.call(8, "Health")
        health, _ = r.wait_status(8)
        if health != "OK":
            return (kind, UNEXPECTED, "HEALTH_" + health, "connection unusable afterwards")
        return result(kind, code, (), {want})
    return rpc_raw(ctx, kind, fn)


def rpc_bad_frame(ctx, rng):
    """Frames the framing layer must refuse: garbage bodies and payloads keep
    the connection, an oversized or truncated frame closes it after a STATUS."""
    choice = rng.randrange(6)
    if choice == 0:
        kind, want, keeps = "rpc bad: garbage frame body", "INVALID_ARGUMENT", True
        body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        raw = struct.pack("<I", len(body)) + body
    elif choice == 1:
        kind, want, keeps = "rpc bad: oversized frame", "RESOURCE_EXHAUSTED", False
        raw = struct.pack("<I", BIG) + b"\x08\x01"
    elif choice == 2:
        kind, want, keeps = "rpc bad: HTTP on the RPC port", "RESOURCE_EXHAUSTED", False
        raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    elif choice == 3:
        kind, want, keeps = "rpc bad: truncated frame", "INVALID_ARGUMENT", False
        raw = struct.pack("<I", 100) + b"\x08\x01"
    elif choice == 4:
        kind, want, keeps = "rpc bad: garbage payload", "INVALID_ARGUMENT", True
        fr = PB.rpc.Frame(call_id=3, type=PB.rpc.FRAME_CALL,
                          method="inference.Inference/Generate", payload=b"\xff\xff\xff\x0f")
        body = fr.SerializeToString()
        raw = struct.pack("<I", len(body)) + body
    else:
        kind, want, keeps = "rpc bad: MESSAGE from a client", "INVALID_ARGUMENT", True
        body = PB.rpc.Frame(call_id=4, type=PB.rpc.FRAME_MESSAGE).SerializeToString()
        raw = struct.pack("<I", len(body)) + body

    def fn(r):
        r.c.send(raw)
        fr = r.recv()
        code = PB.rpc.StatusCode.Name(fr.status) if fr.type == PB.rpc.FRAME_STATUS else "MESSAGE"
        if keeps:
            r.call(9, "Health")
            health, _ = r.wait_status(9)
            if health != "OK":
                return (kind, UNEXPECTED, "HEALTH_" + health, "connection unusable afterwards")
        return result(kind, code, (), {want})
    return rpc_raw(ctx, kind, fn)


def rpc_duplicate_call_id(ctx, rng):
    kind = "rpc bad: call_id in use"

    def fn(r):
        r.call(5, "GenerateStream", gen_request(rng, max_tokens=48, ignore_eos=True))
        r.call(5, "Generate", gen_request(rng, max_tokens=4))
        codes = []
        while len(codes) < 2:
            fr = r.recv()
            if fr.type == PB.rpc.FRAME_STATUS:
                codes.append(PB.rpc.StatusCode.Name(fr.status))
                if len(codes) == 1 and codes[0] == "INVALID_ARGUMENT":
                    r.send(call_id=5, type=PB.rpc.FRAME_CANCEL)
        # one INVALID_ARGUMENT for the duplicate; the stream ends OK or CANCELLED
        # (or both calls are plain OK when the stream ended before the second CALL)
        if "INVALID_ARGUMENT" in codes:
            rest = [c for c in codes if c != "INVALID_ARGUMENT"]
            return result(kind, rest[0] if rest else "INVALID_ARGUMENT",
                          (), {"OK", "CANCELLED", "INVALID_ARGUMENT"} | RPC_BUSY)
        return result(kind, codes[0], {"OK"}, RPC_BUSY, f"{codes}")
    return rpc_raw(ctx, kind, fn)


def rpc_nul(ctx, rng):
    kind = "rpc NUL in prompt"

    def fn(r):
        r.call(1, "Generate", PB.client.make_request(NUL_PREFIX + "\u0000" + NUL_SUFFIX,
                                                     max_tokens=1, temperature=0))
        code, msgs = r.wait_status(1)
        n = None
        if code == "OK" and msgs:
            resp = PB.inference.GenerateResponse()
            resp.ParseFromString(msgs[-1])
            n = resp.usage.prompt_tokens
        return judge_nul(kind, code, n, ctx.nul_prefix_tokens.get("rpc"),
                         {"INVALID_ARGUMENT"}, RPC_BUSY)
    return rpc_raw(ctx, kind, fn)


KINDS = [  # (weight, function)
    (6, lambda c, r: http_unary(c, r, "/generate")),
    (6, lambda c, r: http_unary(c, r, "/v1/completions")),
    (6, lambda c, r: http_unary(c, r, "/v1/chat/completions")),
    (4, lambda c, r: http_stream(c, r, "/generate")),
    (5, lambda c, r: http_stream(c, r, "/v1/completions")),
    (5, lambda c, r: http_stream(c, r, "/v1/chat/completions")),
    (5, lambda c, r: http_stream(c, r, r.choice(list(HTTP_ROUTES)), r.randint(1, 4))),
    (4, http_unary_disconnect),
    (2, http_keepalive),
    (8, http_bad_input),
    (3, http_garbage),
    (2, http_nul),
    (8, rpc_generate),
    (7, lambda c, r: rpc_stream(c, r)),
    (5, lambda c, r: rpc_stream(c, r, r.randint(1, 4))),
    (3, rpc_multiplex),
    (5, rpc_deadline),
    (3, rpc_cancel_method),
    (5, rpc_disconnect),
    (5, rpc_bad_request),
    (5, rpc_bad_frame),
    (2, rpc_duplicate_call_id),
    (2, rpc_nul),
]


def worker(ctx, seed, end, max_requests, results, lock, kinds=KINDS):
    rng = random.Random(seed)
    weights = [w for w, _ in kinds]
    for _ in range(max_requests):
        if time.monotonic() >= end:
            return
        fn = rng.choices(kinds, weights)[0][1]
        try:
            res = fn(ctx, rng)
        except Exception as e:  # a bug of the driver, reported as such
            res = ("driver exception", UNEXPECTED, type(e).__name__, repr(e)[:300])
        if res is not None:
            with lock:
                results.append(res)


# ---------------------------------------------------------------------------
# Before and after the load
# ---------------------------------------------------------------------------


def get_metrics(ctx):
    status, _, body = http_call(ctx.http, ctx.timeout, "GET", "/metrics")
    if status != 200:
        raise Closed(f"/metrics answered {status}")
    return parse_metrics(body.decode())


def kv_used(ctx):
    m = get_metrics(ctx)
    return sum(m.get(k, 0) for k in KV_USED)


def wait_server(ctx, pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc_sample(pid) is None:
            raise SystemExit("soak: the server exited during start-up")
        try:
            if http_call(ctx.http, 5, "GET", "/health")[0] == 200:
                return
        except (NoAnswer, Closed):
            pass
        time.sleep(0.2)
    raise SystemExit(f"soak: the server did not answer /health within {timeout:g} s")


def prime_burst(ctx, workers):
    """Requests at once on both front ends, one of them long enough to use
    most of the device pool: memory the server touches on first use (pool
    pages, per-thread allocator arenas and stacks) is touched before the idle
    sample, so that the RSS check measures growth, not first use."""
    rng = random.Random(0)
    long_req = {"prompt_ids": [100] * 400, "max_tokens": 64, "ignore_eos": True}
    jobs = [lambda: http_call(ctx.http, ctx.timeout, "POST", "/generate", long_req)]
    kinds = [lambda: http_stream(ctx, rng, "/v1/completions"), lambda: rpc_generate(ctx, rng),
             lambda: http_unary(ctx, rng, "/v1/chat/completions"),
             lambda: rpc_stream(ctx, rng)]
    jobs += [kinds[i % len(kinds)] for i in range(workers - 1)]
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ctx.timeout + 5)


def prime(ctx, workers):
    """The prompt token counts the NUL checks compare with, then a burst of
    requests (prime_burst)."""
    for route in ("/generate", "/v1/chat/completions"):
        status, n = nul_tokens_http(ctx, route, NUL_PREFIX)
        if status != 200:
            raise SystemExit(f"soak: priming {route} answered {status}")
        ctx.nul_prefix_tokens[route] = n
    r = Rpc(ctx.rpc, ctx.timeout)
    try:
        r.call(1, "Generate", PB.client.make_request(NUL_PREFIX, max_tokens=1, temperature=0))
        code, msgs = r.wait_status(1)
        if code != "OK":
            raise SystemExit(f"soak: priming RPC Generate ended {code}")
        resp = PB.inference.GenerateResponse()
        resp.ParseFromString(msgs[-1])
        ctx.nul_prefix_tokens["rpc"] = resp.usage.prompt_tokens
    finally:
        r.close()
    prime_burst(ctx, workers)


def wait_for(pred, timeout, step=0.1):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)


PROBE_BODY = {"prompt": "Write a long story about the sea.", "max_tokens": 256,
              "ignore_eos": True, "temperature": 0}


def probe_disconnect(ctx, how):
    """On an idle server: start a long request, wait until it holds KV blocks,
    drop the client, and check the blocks are free within PROBE_FREE_S.
    -> (ok, detail)."""
    if kv_used(ctx) != 0:
        wait_for(lambda: kv_used(ctx) == 0, 60, 0.5)
    if how.startswith("http"):
        body = dict(PROBE_BODY, stream=how == "http stream")
        c = Conn(ctx.http, ctx.timeout)
        c.send(http_bytes(ctx.http, "POST", "/v1/completions", body))
        close = c.close
    else:
        r = Rpc(ctx.rpc, ctx.timeout)
        r.call(1, "GenerateStream" if how == "rpc stream" else "Generate",
               PB.client.make_request(PROBE_BODY["prompt"], max_tokens=256, ignore_eos=True,
                                      temperature=0))
        close = r.close
    if not wait_for(lambda: kv_used(ctx) > 0, 20):
        close()
        return False, "the request never held KV blocks"
    t0 = time.monotonic()
    close()
    freed = wait_for(lambda: kv_used(ctx) == 0, PROBE_FREE_S, 0.05)
    dt = time.monotonic() - t0
    if freed:
        return True, f"blocks free {dt:.2f} s after the disconnect"
    return False, f"blocks still held {dt:.1f} s after the client disconnected"


# The server's HTTP workers exit after 5 s without work (http/httpd.c), so
# thread counts are compared only after this long without HTTP requests.
QUIET_S = 7.0


def settle(ctx, sampler, idle, max_s, min_s=2.0):
    """Wait (at most max_s) for the server to drop back to idle: its gauges
    at zero, then QUIET_S without requests before the final sample."""
    t0 = time.monotonic()

    def idle_now():
        if time.monotonic() - t0 < min_s:
            return False
        s = sampler.take()
        if s is None:
            return True  # dead: nothing to wait for
        try:
            m = get_metrics(ctx)
        except (NoAnswer, Closed):
            return False
        return all(m.get(g, 1) == 0 for g in IDLE_GAUGES) and s[1] <= idle["fds"]
    wait_for(idle_now, max_s, 0.5)
    time.sleep(QUIET_S)
    return time.monotonic() - t0


def liveness(ctx, pid):
    out = {"server process alive": (proc_sample(pid) is not None, f"pid {pid}")}
    try:
        status, _, body = http_call(ctx.http, ctx.timeout, "GET", "/health")
        text = body[:60].decode("utf-8", "replace")
        out["/health answers 200"] = (status == 200, f"{status} {text}")
    except (NoAnswer, Closed) as e:
        out["/health answers 200"] = (False, str(e))
    try:
        r = Rpc(ctx.rpc, ctx.timeout)
        try:
            r.call(1, "Health")
            code, msgs = r.wait_status(1)
        finally:
            r.close()
        resp = PB.inference.HealthResponse()
        if msgs:
            resp.ParseFromString(msgs[-1])
        out["RPC Health SERVING"] = (code == "OK" and resp.status == "SERVING",
                                     f"{code} {resp.status}")
    except (NoAnswer, Closed) as e:
        out["RPC Health SERVING"] = (False, str(e))
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", required=True, help="e.g. 60s, 10m, 1h")
    ap.add_argument("--http", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--rpc", required=True, help="tcp://127.0.0.1:PORT")
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--request-timeout", type=float, default=60.0,
                    help="seconds a request may take before it counts as no answer")
    ap.add_argument("--stall-wait", type=float, default=45.0,
                    help="seconds the server has to give up on a half-sent HTTP request")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="at most this long to wait for idle after the load")
    ap.add_argument("--max-requests", type=int, default=100000, help="per worker")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    ap.add_argument("--out", help="JSON report")
    args = ap.parse_args(argv)
    for url, scheme in ((args.http, "http://"), (args.rpc, "tcp://")):
        if not re.fullmatch(re.escape(scheme) + r"127\.0\.0\.1:\d+", url):
            ap.error(f"{url}: only {scheme}127.0.0.1:PORT is allowed")
    try:
        args.duration_s = parse_duration(args.duration)
    except ValueError as e:
        ap.error(str(e))
    return args


def run_load(ctx, args, sampler):
    results, lock = [], threading.Lock()
    end = time.monotonic() + args.duration_s
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(ctx, args.seed * 1000 + i, end, args.max_requests,
                                      results, lock))
               for i in range(args.workers)]
    # one more client that only sends half requests, one at a time: each
    # holds a connection for up to --stall-wait and uses no CPU
    threads.append(threading.Thread(target=worker, daemon=True,
                                    args=(ctx, args.seed * 1000 - 1, end, args.max_requests,
                                          results, lock, [(1, http_stalled)])))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        if time.monotonic() > end + 10:  # report progress while the tail drains
            print(f"soak: load over, waiting for {sum(t.is_alive() for t in threads)} "
                  "request(s) in flight", file=sys.stderr)
            end += 10
    return results


def main(argv=None):
    args = parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    PB.load(root)
    ctx = Ctx(args)
    wait_server(ctx, args.pid, args.startup_timeout)
    prime(ctx, args.workers)
    time.sleep(QUIET_S)
    t0 = time.monotonic()
    sampler = Sampler(args.pid, t0)
    s = sampler.take()
    if s is None:
        raise SystemExit("soak: cannot read /proc of the server")
    idle = {"rss_kb": s[0], "fds": s[1], "threads": s[2]}
    print(f"soak: idle: RSS {s[0]} kB, {s[1]} fds, {s[2]} threads; load for "
          f"{args.duration_s:g} s with {args.workers} workers", file=sys.stderr)
    sampler.start()
    metrics_before = get_metrics(ctx)
    results = run_load(ctx, args, sampler)
    load_s = time.monotonic() - t0
    metrics_load = get_metrics(ctx)

    probes = {}
    for how in ("http stream", "rpc stream", "rpc unary", "http unary"):
        try:
            probes[f"{how}: disconnect frees KV blocks"] = probe_disconnect(ctx, how)
        except (NoAnswer, Closed) as e:
            probes[f"{how}: disconnect frees KV blocks"] = (False, str(e))
    settle_s = settle(ctx, sampler, idle, args.settle)
    sampler.stop.set()
    sampler.join()
    final = sampler.take()
    try:
        metrics = get_metrics(ctx)
    except (NoAnswer, Closed):
        metrics = {}
    idle_cmp = back_to_idle({"fds": idle["fds"], "threads": idle["threads"]},
                            {"fds": final[1], "threads": final[2]} if final else {})
    rss = rss_growth(sampler.samples, warmup_seconds(args.duration_s))
    table = tally(results)
    checks = build_checks(table, rss, idle_cmp, metrics, liveness(ctx, args.pid), probes)
    v = verdict(checks)

    print(format_table(table))
    pre = {k: metrics_load.get(k, 0) - metrics_before.get(k, 0)
           for k in ('infer_preemptions_total{mode="swap"}',
                     'infer_preemptions_total{mode="recompute"}')}
    print(f"\nload {load_s:.0f} s, settle {settle_s:.1f} s; preemptions during the load: "
          + ", ".join(f"{k} {v:g}" for k, v in pre.items())
          + f"; KV peak blocks used {metrics_load.get('infer_kv_peak_blocks_used', 0):g}")
    for c in checks:
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    examples = [r for r in results if r[1] in (UNEXPECTED, NO_ANSWER)]
    for kind, outcome, code, detail in examples[:15]:
        print(f"  {outcome}: {kind} -> {code} {detail}")
    failed = [c["name"] for c in checks if not c["ok"]]
    print(f"soak: {v}" + (f" ({len(failed)} of {len(checks)} checks failed)" if failed else ""))

    if args.out:
        report = {"verdict": v, "duration_s": args.duration_s, "load_s": load_s,
                  "settle_s": settle_s, "workers": args.workers, "seed": args.seed,
                  "warmup_s": warmup_seconds(args.duration_s), "idle": idle,
                  "rss": rss, "checks": checks, "requests": table,
                  "preemptions": pre, "metrics_after_settle": metrics,
                  "problems": [list(r) for r in examples[:200]],
                  "samples": sampler.samples}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if v == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
