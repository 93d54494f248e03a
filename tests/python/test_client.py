"""The Python client (clients/python, package infer_client) against a real
infer-server started on a free loopback port.

Run by run_test_client.sh under ctest (ENGINE_SOURCE_DIR, ENGINE_BUILD_DIR,
ENGINE_MODEL set). Checks unary and streaming Generate (same greedy text,
exact token counts, pushed chunk by chunk), concurrency on one connection,
Tokenize/Detokenize, Health/Stats/ModelInfo, deadlines, leaving a stream
early (the server frees the sequence), INVALID_ARGUMENT, and that
example.py runs. Prints "N passed, N failed"; exit 1 on any failure.
"""
import asyncio
import os
import socket
import subprocess
import sys
import time

SRC = os.environ.get("ENGINE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ENGINE_BUILD_DIR", os.path.join(SRC, "build"))
MODEL = os.environ.get("ENGINE_MODEL",
                       os.path.join(SRC, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
sys.path.insert(0, os.path.join(SRC, "clients", "python"))

from infer_client import Client, RpcError, StatusCode  # noqa: E402

PROMPT = "The capital of France is"
results = {"passed": 0, "failed": 0}


def check(cond, what):
    if cond:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print(f"FAILED: {what}", file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url):
    env = dict(os.environ)
    env.pop("ENGINE_API_KEY", None)
    return subprocess.Popen(
        [os.path.join(BUILD, "infer-server"), "-m", MODEL, "--listen", url, "--http", "",
         "--set", "cache_config.num_blocks=1024"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_ready(url, proc, limit=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"infer-server exited with {proc.returncode}: "
                               f"{proc.stderr.read().decode(errors='replace')}")
        try:
            async with Client(url, connect_timeout=1.0) as c:
                if await c.health(timeout=2.0) == "SERVING":
                    return
        except RpcError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("infer-server did not answer Health in time")


async def run_tests(url):
    async with Client(url) as c:
        check(await c.health(timeout=5) == "SERVING", "health SERVING")
        info = await c.model_info(timeout=5)
        check(info.n_vocab > 1000 and info.n_layer > 0, f"model info {info}")

        text = "Hello world, this is a test: caf\u00e9 123!"
        ids = await c.tokenize(text, add_special=False, timeout=5)
        check(5 < len(ids) < len(text), f"tokenize {ids}")
        check(await c.detokenize(ids, timeout=5) == text, "detokenize round trip")

        # unary == streamed (greedy), exact counts with ignore_eos
        params = dict(max_tokens=16, temperature=0.0, ignore_eos=True, return_token_ids=True)
        r = await c.generate(PROMPT, timeout=60, **params)
        comp = r.completions[0]
        check(r.usage.completion_tokens == 16 and len(comp.token_ids) == 16,
              f"unary counts {r.usage} {len(comp.token_ids)}")
        check(comp.finish_reason == "length", f"unary finish {comp.finish_reason}")
        pieces, n_ids, last = [], 0, None
        async for chunk in c.stream(PROMPT, timeout=60, **params):
            pieces.append(chunk.text)
            n_ids += len(chunk.token_ids)
            last = chunk
        check("".join(pieces) == comp.text, f"streamed {''.join(pieces)!r} vs {comp.text!r}")
        check(len(pieces) >= 2 and n_ids == 16, f"chunks {len(pieces)} ids {n_ids}")
        check(last is not None and last.finish_reason == "length"
              and last.usage.completion_tokens == 16, f"last chunk {last}")

        # chat messages
        r = await c.generate(messages=[{"role": "user", "content": "Say hi."}], max_tokens=8,
                             temperature=0.0, timeout=60)
        check(r.usage.completion_tokens >= 1, "chat generate")

        # many concurrent streams on one connection
        async def one(i):
            n = 0
            async for ch in c.stream(f"Story number {i}:", max_tokens=8, ignore_eos=True,
                                     return_token_ids=True, seed=i, timeout=120):
                n += len(ch.token_ids)
            return n
        counts = await asyncio.gather(*(one(i) for i in range(24)))
        check(all(n == 8 for n in counts), f"concurrent counts {counts}")

        # deadline
        t0 = time.monotonic()
        try:
            async for _ in c.stream("Write a long story.", max_tokens=2000, ignore_eos=True,
                                    temperature=0.0, timeout=0.3):
                pass
            check(False, "deadline: stream ended OK")
        except RpcError as e:
            check(e.code == StatusCode.DEADLINE_EXCEEDED, f"deadline code {e}")
        check(time.monotonic() - t0 < 5, "deadline promptly")

        # leaving a stream early cancels it on the server
        async with c.stream("Write a long story.", max_tokens=2000, ignore_eos=True) as s:
            n = 0
            async for _ in s:
                n += 1
                if n == 3:
                    break
        check(n == 3, "early exit")

        # invalid argument
        try:
            await c.generate("Hello", temperature=-1.0, max_tokens=4, timeout=10)
            check(False, "temperature -1 accepted")
        except RpcError as e:
            check(e.code == StatusCode.INVALID_ARGUMENT and "temperature" in e.message,
                  f"invalid argument {e}")

        # the cancelled and timed-out sequences are gone, every block free
        t0, settled, st = time.monotonic(), False, None
        while time.monotonic() - t0 < 10:
            st = await c.stats(timeout=5)
            if st.running == 0 and st.waiting == 0 and st.blocks_free == st.blocks_total:
                settled = True
                break
            await asyncio.sleep(0.05)
        check(settled, f"stats after the tests: {st}")

    # example.py
    ex = subprocess.run([sys.executable, os.path.join(SRC, "clients", "python", "example.py"),
                         "--url", url, "--max-tokens", "8"],
                        capture_output=True, text=True, timeout=120)
    check(ex.returncode == 0 and "SERVING" in ex.stdout,
          f"example.py rc {ex.returncode}: {ex.stdout[-500:]} {ex.stderr[-500:]}")


def main():
    if not os.path.exists(MODEL) or not os.access(os.path.join(BUILD, "infer-server"), os.X_OK):
        print("SKIP: needs the model and infer-server")
        return 77
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = start_server(url)
    try:
        asyncio.run(wait_ready(url, proc))
        asyncio.run(asyncio.wait_for(run_tests(url), 400))
    except Exception as e:  # a crash is a failure, not a skip
        check(False, f"exception: {type(e).__name__}: {e}")
    finally:
        proc.kill()
        proc.wait()
    print(f"{results['passed']} passed, {results['failed']} failed")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
