#!/usr/bin/env python3
"""Automatic prefix caching on and off (cache_config.enable_prefix_caching),
offline through build/infer-generate, on two workloads:

  shared    N requests that begin with the same long system text (--prefix-chars
            of tools/ref_corpus/prose.txt, ~1000 tokens by default) followed
            by a short question of their own; each generates --tokens tokens
            (ignore_eos). All are submitted at once; the step token budget
            (batch_max_tokens) prefills them a few at a time, so later ones
            can find the earlier ones' blocks.
  distinct  N requests with nothing in common but the first words: cut from
            different places of the same text (--distinct-chars each). What
            caching costs when it cannot help.

Each workload runs with caching on and off, alternating run by run. For each
run: wall time of the generation (model load excluded: infer-generate's
"total time" line), time to first token p50 and p99 over the requests, prompt
tokens found cached, and the completions (which must be identical on and off,
greedy). The report gives the medians over the runs and on/off ratios.

Usage: bench/prefix_cache.py [-m MODEL] [-t THREADS] [-r RUNS] [-N REQUESTS]
                             [--tokens 16] [--prefix-chars 4000] [--bin build/infer-generate]
                             [--json OUT]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

QUESTIONS = ["What is the main idea?", "Who is speaking?", "Summarize it in one line.",
             "Which place is described?", "What happens next?", "Name one object in it.",
             "Is the tone happy or sad?", "Give it a title."]


def corpus():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "tools", "ref_corpus", "prose.txt")) as f:
        return f.read()


def workload(kind, n, tokens, prefix_chars, text):
    lines = []
    for i in range(n):
        if kind == "shared":
            prompt = text[:prefix_chars] + "\n\nQuestion %d: %s\nAnswer:" % (i, QUESTIONS[i % len(QUESTIONS)])
        else:
            start = (i * 997) % max(1, len(text) - prefix_chars)
            prompt = "Text: " + text[start:start + prefix_chars // 4]
        lines.append(json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0,
                                 "ignore_eos": True}))
    return "\n".join(lines) + "\n"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def run_once(args, kind, on, workdir):
    prompts = os.path.join(workdir, kind + ".jsonl")
    out = os.path.join(workdir, "%s-%d.out" % (kind, on))
    cmd = [args.bin, "-m", args.model, "-t", str(args.threads), "--prompts-file", prompts,
           "-o", out, "--set", "cache_config.enable_prefix_caching=%s" % ("true" if on else "false")]
    report = subprocess.run(cmd, check=True, stderr=subprocess.PIPE, text=True).stderr
    gen = re.search(r"generation ([0-9.]+) s\)", report)
    hit = re.search(r"prefix cache: +([0-9]+) of ([0-9]+) prompt tokens", report)
    if not gen or not hit:
        sys.exit("no report from %s:\n%s" % (args.bin, report))
    rows = [json.loads(line) for line in open(out)]
    ttft = [r["timings"]["ttft_ms"] for r in rows]
    return {"gen_s": float(gen.group(1)), "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
            "hit_tokens": int(hit.group(1)), "queried_tokens": int(hit.group(2)),
            "completions": [r["completion"] for r in rows]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-r", "--runs", type=int, default=3)
    ap.add_argument("-N", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--prefix-chars", type=int, default=4000)
    ap.add_argument("--bin", default="build/infer-generate")
    ap.add_argument("--json")
    args = ap.parse_args()
    text = corpus()
    res = {}
    with tempfile.TemporaryDirectory() as workdir:
        for kind in ("shared", "distinct"):
            with open(os.path.join(workdir, kind + ".jsonl"), "w") as f:
                f.write(workload(kind, args.N, args.tokens, args.prefix_chars, text))
            res[kind] = {True: [], False: []}
            for i in range(args.runs):
                for on in (False, True):
                    r = run_once(args, kind, on, workdir)
                    res[kind][on].append(r)
                    print("%s run %d caching %-3s: generation %.2f s, TTFT p50 %.0f ms p99 %.0f ms, "
                          "%d/%d prompt tokens cached" % (kind, i + 1, "on" if on else "off", r["gen_s"],
                                                         r["ttft_p50_ms"], r["ttft_p99_ms"],
                                                         r["hit_tokens"], r["queried_tokens"]),
                          file=sys.stderr)
            same = all(a["completions"] == b["completions"] for a in res[kind][True] for b in res[kind][False])
            if not same:
                sys.exit("%s: completions differ with caching on and off" % kind)
    print("| workload | caching | generation s | TTFT p50 ms | TTFT p99 ms | prompt tokens cached | "
          "off/on generation | off/on TTFT p50 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for kind in ("shared", "distinct"):
        for on in (False, True):
            rs = res[kind][on]
            med = {k: statistics.median(r[k] for r in rs) for k in ("gen_s", "ttft_p50_ms", "ttft_p99_ms")}
            med["hit_tokens"], med["queried_tokens"] = rs[0]["hit_tokens"], rs[0]["queried_tokens"]
            summary["%s_%s" % (kind, "on" if on else "off")] = med
        off, on_ = summary[kind + "_off"], summary[kind + "_on"]
        for label, m, ratio in (("off", off, ""), ("on", on_, "| %.2f | %.2f" % (
                off["gen_s"] / on_["gen_s"], off["ttft_p50_ms"] / on_["ttft_p50_ms"]))):
            print("| %s | %s | %.2f | %.0f | %.0f | %d / %d %s |" % (
                kind, label, m["gen_s"], m["ttft_p50_ms"], m["ttft_p99_ms"], m["hit_tokens"],
                m["queried_tokens"], ratio if ratio else "| |"))
    if args.json:
        for kind in res:
            for on in res[kind]:
                for r in res[kind][on]:
                    r.pop("completions", None)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "summary": summary,
                       "runs": {k: {"on": v[True], "off": v[False]} for k, v in res.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
