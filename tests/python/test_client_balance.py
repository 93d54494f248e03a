"""The Python client with several endpoints (Client([url, ...])) against
three real infer-servers on loopback, plus one URL where nothing listens.

Run by run_test_client.sh after test_client.py (same environment). Checks:
connecting with a dead endpoint succeeds and leaves it down; sequential
calls rotate over the servers (least in flight, ties round robin);
concurrent calls all use the servers; killing a server while unary calls
run on it fails them over (every call still succeeds, more attempts than
calls); a stream whose server is killed is not retried and says how many
tokens it had received; the heartbeat keeps the dead server down and
calls go on on the rest. Prints "N passed, N failed"; exit 1 on failure.
"""
import asyncio
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
from test_client import (check, free_port, results, start_server,  # noqa: E402
                         wait_ready)

from infer_client import Client, RpcError, StatusCode  # noqa: E402

PROMPT = "The capital of France is"


def by_url(c):
    return {e["url"]: e for e in c.endpoints()}


async def spread(c, urls, dead):
    eps = by_url(c)
    check(not eps[dead]["up"] and eps[dead]["last_error"], f"dead endpoint down: {eps[dead]}")
    check(all(eps[u]["up"] for u in urls), f"live endpoints up: {eps}")
    for _ in range(3 * len(urls)):
        r = await c.generate(PROMPT, max_tokens=2, temperature=0.0, timeout=30)
        check(r.usage.completion_tokens >= 1, "sequential generate")
    eps = by_url(c)
    calls = [eps[u]["calls"] for u in urls]
    # 3 each, give or take a tie that the heartbeat's queue reading moves (a
    # heartbeat that catches a call waiting on a server sends the next tie elsewhere)
    check(sum(calls) == 3 * len(urls) and all(2 <= n <= 4 for n in calls),
          f"sequential calls spread over the servers: {calls}")
    check(eps[dead]["calls"] == 0, "no call to the dead endpoint")

    before = [by_url(c)[u]["calls"] for u in urls]
    rs = await asyncio.gather(*(c.generate(PROMPT, max_tokens=4, temperature=0.0, timeout=60)
                                for _ in range(9)))
    check(len(rs) == 9 and all(r.completions[0].text for r in rs), "concurrent generates")
    after = [by_url(c)[u]["calls"] for u in urls]
    got = [a - b for a, b in zip(after, before)]
    check(sum(got) == 9 and min(got) >= 1, f"concurrent calls spread: {got}")
    check(all(e["in_flight"] == 0 for e in c.endpoints()), "nothing left in flight")


async def unary_failover(c, urls, procs):
    """Kill a server with unary calls running on it: they go elsewhere."""
    n = 6
    tasks = [asyncio.create_task(c.generate(PROMPT, max_tokens=48, ignore_eos=True,
                                            temperature=0.0, timeout=120)) for _ in range(n)]
    victim = None
    for _ in range(200):
        await asyncio.sleep(0.02)
        busy = [u for u in urls if by_url(c)[u]["in_flight"] > 0]
        if len(busy) == len(urls):
            victim = busy[0]
            break
    check(victim is not None, "every server had a call in flight")
    victim = victim or urls[0]
    calls_before = sum(e["calls"] for e in c.endpoints())
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    rs = await asyncio.gather(*tasks, return_exceptions=True)
    errs = [r for r in rs if isinstance(r, BaseException)]
    check(not errs, f"unary calls failed over: {errs[:2]}")
    check(all(r.usage.completion_tokens == 48 for r in rs if not isinstance(r, BaseException)),
          "failed-over calls completed")
    calls_after = sum(e["calls"] for e in c.endpoints())
    check(calls_after > calls_before, f"retries were made ({calls_before} -> {calls_after})")
    check(not by_url(c)[victim]["up"], "the killed server is down")
    return victim


async def stream_loss(c, urls, procs):
    """A stream whose server dies is not retried and reports its tokens."""
    s = c.stream(PROMPT, max_tokens=400, ignore_eos=True, timeout=120)
    got, err, victim = 0, None, urls[0]
    try:
        async for _ in s:
            got += 1
            if got == 3:
                on = [u for u in urls if by_url(c)[u]["in_flight"] == 1]
                check(len(on) == 1, f"the stream is on one server: {c.endpoints()}")
                victim = on[0] if on else urls[0]
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
    except RpcError as e:
        err = e
    check(err is not None and err.code == StatusCode.UNAVAILABLE,
          f"stream ends UNAVAILABLE: {err}")
    msg = err.message if err else ""
    check(f"(the stream had received {s.tokens_received} tokens)" in msg and
          s.tokens_received >= 3, f"tokens reported: {msg!r}, {s.tokens_received}")
    calls = sum(e["calls"] for e in c.endpoints())
    await asyncio.sleep(0.1)
    check(sum(e["calls"] for e in c.endpoints()) == calls, "the stream was not retried")
    return victim


async def main():
    urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    dead = f"tcp://127.0.0.1:{free_port()}"
    procs = {u: start_server(u) for u in urls}
    try:
        await asyncio.gather(*(wait_ready(u, p) for u, p in procs.items()))
        async with Client(urls + [dead], heartbeat=0.5, connect_timeout=2.0) as c:
            await spread(c, urls, dead)
            gone = await unary_failover(c, urls, procs)
            left = [u for u in urls if u != gone]
            gone2 = await stream_loss(c, left, procs)
            last = [u for u in left if u != gone2][0]
            await asyncio.sleep(1.5)  # a few heartbeats: the dead stay down
            eps = by_url(c)
            check(not eps[gone]["up"] and not eps[gone2]["up"] and eps[last]["up"],
                  f"heartbeat state: {eps}")
            for _ in range(3):
                r = await c.generate(PROMPT, max_tokens=2, timeout=30)
                check(r.usage.completion_tokens >= 1, "calls go on on the last server")
        try:
            async with Client([gone, gone2], heartbeat=-1, connect_timeout=1.0):
                check(False, "connecting to dead servers only must fail")
        except RpcError as e:
            check(e.code == StatusCode.UNAVAILABLE and "none of the 2" in e.message,
                  f"no server: {e}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    print(f"test_client_balance: {results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
