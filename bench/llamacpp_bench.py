#!/usr/bin/env python3
"""Time llama.cpp (llama-cpp-python) on a GGUF model, llama-bench style.

    .venv-ref/bin/python bench/llamacpp_bench.py [--model M] [-p 512] [-n 128] [-r 5] [-t 2]

Tests (same definitions as build/infer-bench):
  pp<P>  prompt processing: eval of P prompt tokens in one batch (n_batch =
         n_ubatch = P) from an empty KV cache; only the last token's logits are
         computed. t/s = P / seconds.
  tg<N>  text generation: after a short prompt (--tg-prompt tokens, untimed),
         N single-token evals, each appending one token to the KV cache.
         t/s = N / seconds. No sampling is timed: like llama-bench, the fed
         tokens are fixed pseudo-random ids, not the model's predictions.

Token ids are deterministic pseudo-random non-special ids. The KV cache is
cleared before every run; one warm-up run of each test is done and excluded.
Prints a JSON array on stdout:

  [{"test": "pp512", "n_prompt": 512, "n_gen": 0, "avg_ts": .., "median_ts": ..,
    "stddev_ts": .., "samples_ts": [..], ...}, {"test": "tg128", ...}]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(REPO_ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def stats(test, n_prompt, n_gen, samples, extra):
    return dict({
        "test": test,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "avg_ts": statistics.fmean(samples),
        "median_ts": statistics.median(samples),
        "stddev_ts": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "samples_ts": samples,
    }, **extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=DEFAULT_MODEL)
    ap.add_argument("-p", "--n-prompt", type=int, default=512, help="pp test size (0 = skip)")
    ap.add_argument("-n", "--n-gen", type=int, default=128, help="tg test size (0 = skip)")
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=2, help="n_threads and n_threads_batch")
    ap.add_argument("--tg-prompt", type=int, default=8, help="untimed prompt length before tg (default 8)")
    ap.add_argument("--flash-attn", action="store_true")
    args = ap.parse_args()

    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        sys.exit("error: llama_cpp not importable; run tools/setup-reference-env and use its python")
    if not os.path.isfile(args.model):
        sys.exit(f"error: model not found: {args.model}")

    n_batch = max(args.n_prompt, args.tg_prompt, 1)
    n_ctx = max(args.n_prompt, args.tg_prompt + args.n_gen) + 16
    llm = Llama(model_path=args.model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=args.threads, n_threads_batch=args.threads, logits_all=False,
                flash_attn=args.flash_attn, seed=0, verbose=False)
    n_vocab = llm.n_vocab()
    rng = random.Random(1234)
    first_normal = 17 if n_vocab > 1000 else 0   # skip control tokens (SmolLM2: ids 0..16)

    def rand_tokens(n):
        return [rng.randrange(first_normal, n_vocab) for _ in range(n)]

    def clear():
        llm.reset()  # n_tokens = 0; eval() then removes every cached position
        try:
            mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
            llama_cpp.llama_memory_clear(mem, True)
        except Exception:
            pass

    def run_pp():
        toks = rand_tokens(args.n_prompt)
        clear()
        t0 = time.perf_counter()
        llm.eval(toks)
        dt = time.perf_counter() - t0
        return args.n_prompt / dt

    def run_tg():
        prompt = rand_tokens(args.tg_prompt)
        toks = rand_tokens(args.n_gen)
        clear()
        if prompt:
            llm.eval(prompt)
        t0 = time.perf_counter()
        for tok in toks:
            llm.eval([tok])
        dt = time.perf_counter() - t0
        return args.n_gen / dt

    extra = {"impl": "llama.cpp", "llama_cpp_python": llama_cpp.__version__,
             "n_threads": args.threads, "model": os.path.basename(args.model)}
    results = []
    if args.n_prompt > 0:
        run_pp()  # warm-up
        samples = [run_pp() for _ in range(args.repetitions)]
        results.append(stats(f"pp{args.n_prompt}", args.n_prompt, 0, samples, extra))
    if args.n_gen > 0:
        run_tg()  # warm-up
        samples = [run_tg() for _ in range(args.repetitions)]
        results.append(stats(f"tg{args.n_gen}", 0, args.n_gen, samples, extra))
    llm.close()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
