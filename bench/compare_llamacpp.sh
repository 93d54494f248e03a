#!/usr/bin/env bash
# Compare our engine's speed with llama.cpp on the same GGUF file, same
# machine, same run: build/infer-bench and bench/llamacpp_bench.py are run
# back to back (alternating, --rounds times), then a table is printed:
#
#   test    ours t/s    llama.cpp t/s    ours/llama.cpp
#
# Usage: bench/compare_llamacpp.sh [-m MODEL] [-p 512] [-n 128] [-r 5] [-t 2]
#                                  [--rounds N] [--python PY] [--bench PATH]
#                                  [--llama-bench PATH] [--llamacpp-only]
#
#   -m MODEL      GGUF file (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
#   -p/-n/-r/-t   prompt tokens, generated tokens, repetitions, threads
#   --rounds N    alternate ours / llama.cpp N times (default 1); the reported
#                 value is the median over all samples of all rounds
#   --python PY   python with llama-cpp-python (default: $REF_PYTHON, else
#                 .venv-ref/bin/python, else /opt/refenv/bin/python)
#   --bench PATH  our benchmark binary (default build/infer-bench)
#   --llama-bench PATH  time llama.cpp with its own llama-bench binary instead
#                 of llama-cpp-python (tools/setup-llama-server builds one in
#                 .llama-cpp/bin/; used by default when no llama_cpp python is
#                 found). llama-bench's tg test starts from an empty cache;
#                 ours after 8 untimed prompt tokens.
#   --llama-args "ARGS"  extra arguments for llama-bench (word-split), e.g.
#                 "--repack 0" where llama.cpp's AMX repacking crashes (it did
#                 on the AMX machine of docs/benchmarks.md, 2026-12-02)
#   --llamacpp-only  run only the llama.cpp half
#
# Set KEEP_JSON=DIR to keep the raw JSON output of every run in DIR.
#
# Matrix mode: bench/compare_llamacpp.sh --matrix RESULTS_DIR [options]
#   models x formats (SmolLM2 requantized with llama-quantize, Gemma 3 270M,
#   the synthetic 1.1B model) -> one markdown table of ours / llama.cpp
#   (llama-bench, best of -fa 0/1 x -t 1/2) for pp and tg, rounds alternated,
#   medians, raw JSON under RESULTS_DIR. Options: bench/compare_matrix.py -h.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [ "${1:-}" = "--matrix" ]; then
    shift
    exec python3 bench/compare_matrix.py "$@"
fi

model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
n_prompt=512
n_gen=128
reps=5
threads=2
rounds=1
bench="build/infer-bench"
llamacpp_only=0
py="${REF_PYTHON:-}"
llama_bench=""
llama_args=""

while [ $# -gt 0 ]; do
    case "$1" in
        -m|--model) model="$2"; shift 2 ;;
        -p) n_prompt="$2"; shift 2 ;;
        -n) n_gen="$2"; shift 2 ;;
        -r) reps="$2"; shift 2 ;;
        -t) threads="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --python) py="$2"; shift 2 ;;
        --bench) bench="$2"; shift 2 ;;
        --llama-bench) llama_bench="$2"; shift 2 ;;
        --llama-args) llama_args="$2"; shift 2 ;;
        --llamacpp-only) llamacpp_only=1; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

if [ -z "$py" ]; then
    for cand in .venv-ref/bin/python /opt/refenv/bin/python; do
        if [ -x "$cand" ]; then py="$cand"; break; fi
    done
fi
if [ -z "$llama_bench" ] && { [ -z "$py" ] || ! "$py" -c 'import llama_cpp' 2>/dev/null; }; then
    if [ -x .llama-cpp/bin/llama-bench ]; then
        llama_bench=.llama-cpp/bin/llama-bench
    else
        echo "error: no python with llama_cpp found and no llama-bench (run tools/setup-reference-env" >&2
        echo "       or tools/setup-llama-server, or pass --python / --llama-bench)" >&2
        exit 1
    fi
fi
if [ -n "$llama_bench" ]; then
    [ -x "$llama_bench" ] || { echo "error: $llama_bench is not executable" >&2; exit 1; }
    py=python3
fi
if [ ! -f "$model" ]; then
    echo "error: model not found: $model (tools/fetch-model fetches it)" >&2
    exit 1
fi
if [ "$llamacpp_only" = 0 ] && [ ! -x "$bench" ]; then
    echo "error: $bench does not exist (build it: cmake -B build && cmake --build build)." >&2
    echo "       To time only llama.cpp, pass --llamacpp-only." >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for ((i = 1; i <= rounds; i++)); do
    if [ "$llamacpp_only" = 0 ]; then
        echo "[round $i/$rounds] ours: $bench -m $model -p $n_prompt -n $n_gen -r $reps -t $threads --json" >&2
        "$bench" -m "$model" -p "$n_prompt" -n "$n_gen" -r "$reps" -t "$threads" --json > "$tmp/ours.$i.json"
    fi
    if [ -n "$llama_bench" ]; then
        echo "[round $i/$rounds] llama.cpp: $llama_bench -m $model -p $n_prompt -n $n_gen -r $reps -t $threads $llama_args -o json" >&2
        # shellcheck disable=SC2086
        "$llama_bench" -m "$model" -p "$n_prompt" -n "$n_gen" -r "$reps" -t "$threads" $llama_args -o json \
            2> "$tmp/llama-bench.$i.err" > "$tmp/llama.$i.raw" ||
            { cat "$tmp/llama-bench.$i.err" >&2; exit 1; }
        # llama-bench's records -> ours: {"test": "pp512", "samples_ts": [...]}
        python3 -c '
import json, sys
recs = json.load(open(sys.argv[1]))
out = [{"test": ("pp%d" % r["n_prompt"]) if r["n_prompt"] else ("tg%d" % r["n_gen"]),
        "samples_ts": r.get("samples_ts") or [r["avg_ts"]], "median_ts": r["avg_ts"]} for r in recs]
json.dump(out, sys.stdout)' "$tmp/llama.$i.raw" > "$tmp/llama.$i.json"
    else
        echo "[round $i/$rounds] llama.cpp: $py bench/llamacpp_bench.py ..." >&2
        "$py" bench/llamacpp_bench.py -m "$model" -p "$n_prompt" -n "$n_gen" -r "$reps" -t "$threads" \
            > "$tmp/llama.$i.json"
    fi
done

if [ -n "${KEEP_JSON:-}" ]; then
    mkdir -p "$KEEP_JSON" && cp "$tmp"/*.json "$KEEP_JSON"/
fi

"$py" - "$tmp" "$rounds" "$llamacpp_only" "$model" "$threads" <<'EOF'
import json, os, statistics, sys

tmp, rounds, llamacpp_only, model, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5]

def load(prefix):
    """test name -> all samples (t/s) over all rounds; falls back to median_ts."""
    out = {}
    order = []
    for i in range(1, rounds + 1):
        path = os.path.join(tmp, f"{prefix}.{i}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            sys.exit(f"error: {prefix} run {i} did not print valid JSON:\n{text[:2000]}")
        if isinstance(data, dict):
            data = data.get("results", [data])
        for rec in data:
            t = rec["test"]
            if t not in out:
                out[t] = []
                order.append(t)
            s = rec.get("samples_ts") or [rec["median_ts"]]
            out[t].extend(float(x) for x in s)
    return order, out

l_order, llama = load("llama")
o_order, ours = ({}, {}) if llamacpp_only else load("ours")
tests = list(l_order) + [t for t in (o_order or []) if t not in llama]

def med(d, t):
    return statistics.median(d[t]) if t in d and d[t] else None

def fmt(x):
    return f"{x:10.2f}" if x is not None else f"{'-':>10}"

print(f"model: {model}, threads: {threads}, rounds: {rounds}; values are median t/s over all samples")
print(f"{'test':<8} {'ours t/s':>10} {'llama.cpp t/s':>14} {'ours/llama.cpp':>15}")
for t in tests:
    o, l = med(ours, t), med(llama, t)
    ratio = f"{o / l:15.3f}" if (o is not None and l) else f"{'-':>15}"
    lstr = f"{l:14.2f}" if l is not None else f"{'-':>14}"
    print(f"{t:<8} {fmt(o)} {lstr} {ratio}")
EOF
