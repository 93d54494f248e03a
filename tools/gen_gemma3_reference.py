#!/usr/bin/env python3
"""gen_gemma3_reference.py - greedy continuations of the Gemma 3 file from
independent implementations, for tests/unit/test_model_gemma3.c.

    --source hf        HF transformers (loads the GGUF, dequantized to float32;
                       needs torch, transformers, gguf, accelerate)
    --source llamacpp  a running llama-server (--url, default
                       http://127.0.0.1:8099) started with --temp 0 on the file;
                       the prompt is sent as token ids from its /tokenize (BOS
                       prepended), so both see the same ids

Writes tests/reference/gemma3_greedy_<source>.jsonl: one JSON object per
prompt, {"prompt": str, "ids": [int] (BOS included), "gen": [int]}.
"""
import argparse
import json
import sys
import urllib.request

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1969, the first humans landed on",
    "The quick brown fox",
    "My favorite recipe for chocolate cake is",
]


def gen_hf(model, n):
    import os
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.split(os.path.abspath(model))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    m.eval()
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            g = m.generate(ids, max_new_tokens=n, do_sample=False)
        yield {"prompt": p, "ids": ids[0].tolist(), "gen": g[0, ids.shape[1]:].tolist()}


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def gen_llamacpp(url, n, bos):
    for p in PROMPTS:
        ids = [bos] + post(url + "/tokenize", {"content": p})["tokens"]
        r = post(url + "/completion", {"prompt": ids, "n_predict": n, "temperature": 0,
                                       "cache_prompt": False, "return_tokens": True,
                                       "ignore_eos": True})
        yield {"prompt": p, "ids": ids, "gen": r["tokens"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", choices=["hf", "llamacpp"], required=True)
    ap.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--url", default="http://127.0.0.1:8099")
    ap.add_argument("--bos", type=int, default=2)
    ap.add_argument("-n", type=int, default=32)
    a = ap.parse_args()
    recs = gen_hf(a.model, a.n) if a.source == "hf" else gen_llamacpp(a.url, a.n, a.bos)
    out = f"tests/reference/gemma3_greedy_{a.source}.jsonl"
    with open(out, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
            print(r["prompt"], "->", len(r["gen"]), "tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
