#!/usr/bin/env python3
"""What constrained decoding costs the unconstrained requests of a batch.

One batch of 2N requests, all submitted at once to build/infer-generate, each
generating exactly --tokens tokens (ignore_eos; sampled at temperature 0.7,
top-k 40, top-p 0.95, min-p 0.05, the engine's defaults). The first N are
plain text in every mode; the other N ask for JSON in their prompts, and are:

  plain     plain text (the baseline: the same batch without a grammar)
  schema    response_format json_schema: an array of at least 500 objects
            {"id": integer, "name": string (at most 12), "ok": boolean}
  numbers   response_format json_schema: an array of at least 5000 integers,
            so almost every step allows only digits, ',' and whitespace and
            the sampler's window of likely tokens rarely settles it (the whole
            vocabulary is masked when it does not)
  full      numbers, with the constrained requests sampling from the whole
            distribution (top-k 0, top-p 1, min-p 0): no cut bounds the
            candidates, so every step masks the whole vocabulary (the worst
            case for the mask)

The minimums keep every constrained value open for the whole run, so each mode
runs the same number of sequences for the same number of steps. The modes
alternate run by run (plain, schema, numbers, full, plain, ...), so drift of
the machine hits all four. For each run: the median over the N plain requests of
their inter-token time (generation_ms / (completion_tokens - 1)); the engine
thread's time in forward passes and in sampling (infer-generate's report:
engine_stats forward_ms and sample_ms), per step; and the wall time of the
run. The report gives the medians over the runs, and each mode's ITL ratio to
plain, taken run by run (same round) and then the median. The sampling time
per step is the steadier figure: it is what the masks add to every request's
step, while the ITL moves with the machine's drift.

Usage: bench/structured_output.py [-m MODEL] [-t THREADS] [-r RUNS] [-N PER_HALF]
                                  [--tokens 96] [--bin build/infer-generate]
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
import time

TOPICS = ("cats dogs rivers mountains cities trains music books clouds ships gardens "
          "bridges forests deserts islands lakes").split()

SCHEMAS = {
    "schema": {
        "type": "array", "minItems": 500,
        "items": {"type": "object",
                  "properties": {"id": {"type": "integer"},
                                 "name": {"type": "string", "maxLength": 12},
                                 "ok": {"type": "boolean"}},
                  "required": ["id", "name", "ok"]}},
    "numbers": {"type": "array", "minItems": 5000, "items": {"type": "integer"}},
}
SCHEMAS["full"] = SCHEMAS["numbers"]


def workload(mode, n, tokens):
    lines = []
    for i in range(2 * n):
        topic = TOPICS[i % len(TOPICS)]
        req = {"max_tokens": tokens, "temperature": 0.7, "seed": i + 1, "ignore_eos": True}
        if i < n:
            req["prompt"] = "Tell me about %s." % topic
        else:
            req["prompt"] = "Answer in JSON. List facts about %s." % topic
        if i >= n and mode != "plain":
            req["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": mode, "schema": SCHEMAS[mode]}}
            if mode == "full":
                req.update(top_k=0, top_p=1.0, min_p=0.0)
        lines.append(json.dumps(req))
    return "\n".join(lines) + "\n"


def run_once(args, mode, workdir):
    prompts = os.path.join(workdir, mode + ".jsonl")
    out = os.path.join(workdir, mode + ".out")
    with open(prompts, "w") as f:
        f.write(workload(mode, args.N, args.tokens))
    cmd = [args.bin, "-m", args.model, "-t", str(args.threads), "-b", str(2 * args.N),
           "--prompts-file", prompts, "-o", out]
    t0 = time.monotonic()
    report = subprocess.run(cmd, check=True, stderr=subprocess.PIPE, text=True).stderr
    wall = time.monotonic() - t0
    m = re.search(r"engine thread: +forward ([0-9.]+) s, sampling ([0-9.]+) s", report)
    steps = re.search(r"engine: +([0-9]+) steps", report)
    if not m or not steps:
        sys.exit("%s: no engine report from %s:\n%s" % (mode, args.bin, report))
    rows = [json.loads(line) for line in open(out)]
    if len(rows) != 2 * args.N:
        sys.exit("%s: %d results, expected %d" % (mode, len(rows), 2 * args.N))
    for r in rows:
        if r["completion_tokens"] != args.tokens:
            sys.exit("%s: a request generated %d tokens (finish %s), expected %d"
                     % (mode, r["completion_tokens"], r["finish_reason"], args.tokens))
    itl = [r["timings"]["generation_ms"] / (r["completion_tokens"] - 1) for r in rows[:args.N]]
    n_steps = int(steps.group(1))
    return {"itl_ms": statistics.median(itl), "wall_s": wall, "steps": n_steps,
            "forward_ms_per_step": 1e3 * float(m.group(1)) / n_steps,
            "sample_ms_per_step": 1e3 * float(m.group(2)) / n_steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-r", "--runs", type=int, default=5)
    ap.add_argument("-N", type=int, default=8, help="requests per half (default 8)")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--bin", default="build/infer-generate")
    ap.add_argument("--json", help="write every run and the summary here")
    args = ap.parse_args()
    if args.tokens < 2:
        sys.exit("--tokens must be at least 2")
    modes = ("plain", "schema", "numbers", "full")
    runs = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(args.runs):
            for m in modes:
                runs[m].append(run_once(args, m, workdir))
                r = runs[m][-1]
                print("run %d %-8s plain requests %.2f ms/token; per step: forward %.2f ms, "
                      "sampling %.2f ms; run %.2f s" % (i + 1, m, r["itl_ms"], r["forward_ms_per_step"],
                                                        r["sample_ms_per_step"], r["wall_s"]),
                      file=sys.stderr)
    summary = {}
    print("| mode | plain requests' ms/token | ratio to plain | forward ms/step | sampling ms/step "
          "| run wall s (load included) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in modes:
        ratio = statistics.median(r["itl_ms"] / p["itl_ms"] for r, p in zip(runs[m], runs["plain"]))
        summary[m] = {"itl_ms": statistics.median(r["itl_ms"] for r in runs[m]),
                      "ratio_to_plain": ratio,
                      "wall_s": statistics.median(r["wall_s"] for r in runs[m]),
                      "forward_ms_per_step": statistics.median(r["forward_ms_per_step"] for r in runs[m]),
                      "sample_ms_per_step": statistics.median(r["sample_ms_per_step"] for r in runs[m])}
        sm = summary[m]
        print("| %s | %.2f | %.3f | %.2f | %.2f | %.2f |" % (m, sm["itl_ms"], ratio, sm["forward_ms_per_step"],
                                                           sm["sample_ms_per_step"], sm["wall_s"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
