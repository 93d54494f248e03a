#!/usr/bin/env python3
"""ab_pairs.py - two builds of infer-bench, alternated, as a ratio.

A speed claim about a change compares the build before it (A) with the build
after it (B) on the same machine in the same minutes: this VM's speed drifts
by 10-30% over minutes, so runs of A and B alternate (A B, B A, A B, ...),
each pair gives a ratio B/A per test, and the report is the median of each
side and the median of the per-pair ratios.

Usage:
  bench/ab_pairs.py A_BIN B_BIN [--pairs N] [--] [infer-bench args...]
  bench/ab_pairs.py /tmp/base/build/infer-bench build/infer-bench --pairs 5 -- -p 512 -n 128 -r 3 -t 2

Prints a table (test, median t/s of A and B, median ratio B/A, the per-pair
ratios) and, with --json FILE, writes every sample.
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run([binary, "--json"] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} failed ({out.returncode}):\n{out.stderr}")
    return {r["test"]: r["median_ts"] for r in json.loads(out.stdout)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--json", help="write all samples here")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    o = ap.parse_args(argv[:cut])
    args = argv[cut + 1:]
    samples = {"a": [], "b": []}
    for i in range(o.pairs):
        order = ("a", "b") if i % 2 == 0 else ("b", "a")
        for side in order:
            samples[side].append(run(getattr(o, side), args))
        print(f"pair {i + 1}/{o.pairs}: " + ", ".join(
            f"{t} {samples['b'][-1][t] / samples['a'][-1][t]:.3f}" for t in samples["a"][-1]),
            file=sys.stderr)
    print(f"{'test':<12} {'A t/s':>10} {'B t/s':>10} {'B/A':>7}  per pair")
    for t in samples["a"][0]:
        a = [s[t] for s in samples["a"]]
        b = [s[t] for s in samples["b"]]
        ratios = [y / x for x, y in zip(a, b)]
        print(f"{t:<12} {statistics.median(a):>10.1f} {statistics.median(b):>10.1f} "
              f"{statistics.median(ratios):>7.3f}  " + " ".join(f"{r:.3f}" for r in ratios))
    if o.json:
        with open(o.json, "w") as f:
            json.dump({"a": o.a, "b": o.b, "args": args, "samples": samples}, f, indent=1)


if __name__ == "__main__":
    main()
