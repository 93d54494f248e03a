#!/usr/bin/env python3
"""Workload generator and report for bench/batching.sh.

  batching_report.py gen --out FILE [--n 64] [--seed 1] [--corpus PATH]
      [--dist uniform|sharegpt]
      [--prompt-min 16] [--prompt-max 400] [--out-min 16] [--out-max 256]
  batching_report.py report DIR
  batching_report.py model --prompts FILE --step-ms R:MS,R:MS,... [--batch 16]
      [--kv-gb G] [--kv-gbps B]

gen writes a JSON Lines prompts file for infer-generate: n prompts cut from
the corpus (contiguous word slices, wrapping around), each with its own
max_tokens and ignore_eos, so every request generates exactly max_tokens.
Prompt and output lengths are drawn with a seeded generator, either
uniformly from their ranges (--dist uniform) or (--dist sharegpt, the
default of bench/batching.sh) from lognormal distributions shaped like the
ShareGPT conversations that vLLM's paper benchmarks with (mean prompt 161,
mean output 338 tokens): prompt median 110 tokens, sigma 0.9; output median
250, sigma 0.8; both clipped to the --prompt/--out ranges. Either way prompt lengths are targets in tokens, converted to words
with the ratio measured for SmolLM2's tokenizer on tools/ref_corpus/prose.txt
(about 1.12 tokens per word, BOS included), so actual prompt token counts
land within a few percent of the target (the report shows them).

report reads the runs bench/batching.sh left in DIR: for each case
<case>.<run>.jsonl (infer-generate -o) and <case>.<run>.err (its stderr),
and <case>.<run>.noise (CPU share other processes took during the run), and
prints one row per case with medians over the runs ("other %": the most any
of its runs was disturbed).

model is arithmetic, not a measurement: what continuous batching can buy
over static batching and over one request at a time on this workload when
a decode step with R rows costs T(R) milliseconds (--step-ms, e.g. the
per-step times infer-bench's tg128 xR tests give: R / (t/s); linear in
between, proportional to R past the last point). Static batches are the
workload's prompts in arrival order, --batch at a time, each stepping until
its longest request is done with its unfinished rows; continuous steps keep
--batch rows busy; one at a time steps one row. Prefill is left out, and
attention, the same work in all three, can be added as --kv-gb of KV reads
at --kv-gbps (both 0 by default), which moves every ratio toward 1.
"""
import argparse
import glob
import json
import math
import os
import random
import re
import statistics
import sys

TOKENS_PER_WORD = 1.12


def gen(args):
    with open(args.corpus, encoding="utf-8") as f:
        words = f.read().split()
    if not words:
        sys.exit(f"error: {args.corpus} has no text")
    rng = random.Random(args.seed)
    lines = []
    for _ in range(args.n):
        if args.dist == "sharegpt":
            target = round(rng.lognormvariate(math.log(110), 0.9))
            max_tokens = round(rng.lognormvariate(math.log(250), 0.8))
            target = min(args.prompt_max, max(args.prompt_min, target))
            max_tokens = min(args.out_max, max(args.out_min, max_tokens))
        else:
            target = rng.randint(args.prompt_min, args.prompt_max)
            max_tokens = rng.randint(args.out_min, args.out_max)
        n_words = max(1, round((target - 1) / TOKENS_PER_WORD))
        start = rng.randrange(len(words))
        text = " ".join(words[(start + i) % len(words)] for i in range(n_words))
        lines.append(json.dumps({"prompt": text, "max_tokens": max_tokens, "ignore_eos": True},
                                ensure_ascii=False))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def pct(values, p):
    """Nearest-rank percentile, as infer-generate prints it."""
    v = sorted(values)
    k = min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))
    return v[k]


def parse_err(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    out = {}
    m = re.search(r"total time:.*generation ([0-9.]+) s", text)
    if m:
        out["gen_s"] = float(m.group(1))
    m = re.search(r"engine:\s+(\d+) steps, (\d+) preemptions", text)
    if m:
        out["steps"], out["preemptions"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"KV peak \d+ blocks at ([0-9.]+)% slot efficiency", text)
    out["kv_eff"] = float(m.group(1)) if m else float("nan")
    if "gen_s" not in out:
        sys.exit(f"error: {path}: no report (did the run fail?)\n{text[-2000:]}")
    return out


def report(args):
    runs = {}
    for err in sorted(glob.glob(os.path.join(args.dir, "*.err"))):
        if err.endswith(".try.err"):
            continue
        case, run = os.path.basename(err)[:-4].rsplit(".", 1)
        jl = err[:-4] + ".jsonl"
        recs = [json.loads(l) for l in open(jl, encoding="utf-8") if l.strip()]
        st = parse_err(err)
        noise = err[:-4] + ".noise"
        st["other"] = int(open(noise).read()) if os.path.exists(noise) else float("nan")
        lat = [r["timings"]["latency_ms"] for r in recs]
        ttft = [r["timings"]["ttft_ms"] for r in recs]
        out_tok = sum(r["completion_tokens"] for r in recs)
        st.update(
            out_tok=out_tok,
            prompt_tok=sum(r["prompt_tokens"] for r in recs),
            tps=out_tok / st["gen_s"],
            p50=pct(lat, 50), p90=pct(lat, 90), p99=pct(lat, 99), ttft50=pct(ttft, 50),
            completions=[r["completion"] for r in recs],
            n=len(recs),
        )
        runs.setdefault(case, []).append(st)
    if not runs:
        sys.exit(f"error: no runs in {args.dir}")

    order = [c for c in ("continuous", "static", "one-at-a-time", "pressure-swap",
                         "pressure-recompute") if c in runs]
    order += [c for c in runs if c not in order]
    first = runs[order[0]][0]
    print(f"requests: {first['n']}, prompt tokens: {first['prompt_tok']}, "
          f"output tokens: {first['out_tok']}; values are medians over runs")
    hdr = (f"{'case':<20} {'runs':>4} {'time s':>8} {'out tok/s':>10} {'p50 ms':>8} "
           f"{'p90 ms':>8} {'p99 ms':>8} {'ttft p50':>9} {'steps':>6} {'preempt':>8} {'KV eff %':>8} "
           f"{'other %':>8}")
    print(hdr)
    med = {}
    for c in order:
        rs = runs[c]
        m = {k: statistics.median(r[k] for r in rs)
             for k in ("gen_s", "tps", "p50", "p90", "p99", "ttft50", "steps", "preemptions",
                       "kv_eff")}
        m["other"] = max(r["other"] for r in rs)
        med[c] = m
        print(f"{c:<20} {len(rs):>4} {m['gen_s']:>8.2f} {m['tps']:>10.1f} {m['p50']:>8.0f} "
              f"{m['p90']:>8.0f} {m['p99']:>8.0f} {m['ttft50']:>9.0f} {m['steps']:>6.0f} "
              f"{m['preemptions']:>8.0f} {m['kv_eff']:>8.1f} {m['other']:>8.0f}")
    if "continuous" in med and "one-at-a-time" in med:
        r = med["continuous"]["tps"] / med["one-at-a-time"]["tps"]
        print(f"continuous / one-at-a-time output throughput: {r:.2f}x (target 3x: "
              f"{'met' if r >= 3 else 'missed'})")
    if "continuous" in med and "static" in med:
        r = med["continuous"]["tps"] / med["static"]["tps"]
        print(f"continuous / static output throughput: {r:.2f}x (target 1.5x: "
              f"{'met' if r >= 1.5 else 'missed'})")
    if "continuous" in med:
        e = med["continuous"]["kv_eff"]
        print(f"continuous: KV slots holding tokens at the peak: {e:.1f}% (target 96%: "
              f"{'met' if e >= 96 else 'missed'})")
    # Greedy decoding: the completions must not depend on how requests were batched.
    ref = runs[order[0]][0]["completions"]
    same = all(r["completions"] == ref for c in order for r in runs[c])
    print(f"completions identical across all runs and cases: {'yes' if same else 'NO'}")
    return 0 if same else 1


def step_cost(points):
    """T(R) from (rows, ms) points: linear between them, proportional past the last."""
    pts = sorted(points)

    def cost(r):
        if r <= pts[0][0]:
            return pts[0][1] * r / pts[0][0]
        for (a, ta), (b, tb) in zip(pts, pts[1:]):
            if r <= b:
                return ta + (tb - ta) * (r - a) / (b - a)
        return pts[-1][1] * r / pts[-1][0]

    return cost


def model(args):
    try:
        points = [(int(r), float(t)) for r, t in (p.split(":") for p in args.step_ms.split(","))]
    except ValueError:
        sys.exit("error: --step-ms wants ROWS:MS pairs, e.g. 1:2.5,4:6.0,16:17.0")
    if not points or any(r < 1 or t <= 0 for r, t in points):
        sys.exit("error: --step-ms: rows >= 1 and times > 0")
    with open(args.prompts, encoding="utf-8") as f:
        outs = [json.loads(line)["max_tokens"] for line in f if line.strip()]
    cost, b = step_cost(points), args.batch
    static_ms = 0.0
    static_steps = 0
    for i in range(0, len(outs), b):
        group = outs[i:i + b]
        for t in range(max(group)):
            static_ms += cost(sum(1 for o in group if o > t))
            static_steps += 1
    total = sum(outs)
    cont_ms = total / b * cost(b)
    one_ms = total * cost(1)
    attn_ms = 1000.0 * args.kv_gb / args.kv_gbps if args.kv_gbps > 0 else 0.0
    print(f"{len(outs)} requests, {total} output tokens; decode steps: static {static_steps}, "
          f"continuous {math.ceil(total / b)}, one at a time {total}")
    print(f"modeled seconds: continuous {(cont_ms + attn_ms) / 1e3:.1f}, static "
          f"{(static_ms + attn_ms) / 1e3:.1f}, one at a time {(one_ms + attn_ms) / 1e3:.1f}"
          f" (attention {attn_ms / 1e3:.1f} in each)")
    print(f"modeled ratios: continuous / static {(static_ms + attn_ms) / (cont_ms + attn_ms):.2f}x, "
          f"continuous / one at a time {(one_ms + attn_ms) / (cont_ms + attn_ms):.2f}x")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=64)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--corpus", default="tools/ref_corpus/prose.txt")
    g.add_argument("--dist", choices=("uniform", "sharegpt"), default="uniform")
    g.add_argument("--prompt-min", type=int, default=16)
    g.add_argument("--prompt-max", type=int, default=400)
    g.add_argument("--out-min", type=int, default=16)
    g.add_argument("--out-max", type=int, default=256)
    r = sub.add_parser("report")
    r.add_argument("dir")
    m = sub.add_parser("model")
    m.add_argument("--prompts", default="bench/prompts/batching-64.jsonl")
    m.add_argument("--step-ms", required=True)
    m.add_argument("--batch", type=int, default=16)
    m.add_argument("--kv-gb", type=float, default=0.0)
    m.add_argument("--kv-gbps", type=float, default=0.0)
    args = ap.parse_args()
    if args.cmd == "gen":
        gen(args)
        return 0
    if args.cmd == "model":
        return model(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
