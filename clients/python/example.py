"""Example: query infer-server from Python.

    clients/python/setup.sh                      # once: venv + generated messages
    .venv-client/bin/python clients/python/example.py [--url tcp://127.0.0.1:8700]
"""
import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from infer_client import Client, RpcError  # noqa: E402


async def main(url: str, max_tokens: int) -> int:
    async with Client(url, api_key=os.environ.get("ENGINE_API_KEY")) as c:
        print("health:", await c.health(timeout=5))
        info = await c.model_info(timeout=5)
        print(f"model: {info.name} ({info.architecture}, {info.n_layer} layers, "
              f"context {info.context_length})")

        # unary: the whole answer at once
        r = await c.generate("The three primary colors are", max_tokens=max_tokens,
                             temperature=0.0, timeout=60)
        print("generate:", repr(r.completions[0].text),
              f"[{r.completions[0].finish_reason}, {r.usage.completion_tokens} tokens, "
              f"ttft {r.timings.ttft_ms:.1f} ms]")

        # streaming: text as each token is sampled; a chat conversation
        print("stream: ", end="", flush=True)
        async for chunk in c.stream(messages=[{"role": "user", "content": "Name a fruit."}],
                                    max_tokens=max_tokens, timeout=60):
            print(chunk.text, end="", flush=True)
            if chunk.finish_reason:
                print(f"  [{chunk.finish_reason}]")

        print("tokenize:", await c.tokenize("Hello world", timeout=5))
        st = await c.stats(timeout=5)
        print(f"stats: running {st.running}, waiting {st.waiting}, "
              f"KV blocks free {st.blocks_free}/{st.blocks_total}")

        # errors come back as RpcError with the gRPC status
        try:
            await c.generate("Hello", temperature=-1.0, timeout=5)
        except RpcError as e:
            print("bad request ->", e)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="tcp://127.0.0.1:8700")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    try:
        sys.exit(asyncio.run(main(args.url, args.max_tokens)))
    except RpcError as e:
        print(f"example.py: {e}", file=sys.stderr)
        sys.exit(1)
