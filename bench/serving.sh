#!/usr/bin/env bash
# Serving benchmark: build/loadtest against build/infer-server (and llama.cpp's
# llama-server) over the OpenAI HTTP route. Produces the "Serving benchmark
# (loadtest)" section of docs/benchmarks.md: a markdown fragment plus PNGs.
#
# Parts (--parts, default abcd):
#   a  continuous vs static batching (batcher_config.policy), chat trace at a
#      fixed Poisson rate, and the lab11 trace replayed as recorded
#   b  preemption under memory pressure: a small device pool
#      (cache_config.num_blocks), swap (CPU tier) vs recompute; preemption
#      counts from the server's /metrics
#   c  cache_config.block_size 8/16/32 and batcher_config.batch_max_tokens
#      256/512/1024/2048, chat trace, closed loop
#   d  ours vs llama-server on the same GGUF, 2 threads each, same chat trace,
#      open-loop Poisson rate sweep; capacity under the SLO (p99 TTFT < 2000 ms,
#      median TPOT < 100 ms) and the ratio ours / llama.cpp
#
# Usage: bench/serving.sh [--parts abcd] [--reps 3] [--quick] [-t 2]
#                         [--rates 1,1.5,2,3,4,5,6,8] [--out DIR]
#                         [--md FILE] [--img DIR] [--update-doc] [--no-llama]
#                         [-m MODEL] [--llama-args "ARGS"]
#
#   --reps N       reps of every case (default 3; tables give medians)
#   --quick        smoke run (about 3 minutes): 1 rep, few requests, 2 rates,
#                  2 cases in part c; PNGs go to the results dir, not docs/
#   --rates LIST   part d's offered rates in requests/s; a server's sweep
#                  stops after the first rate whose median fails the SLO
#   --out DIR      every run's files, server logs, meta.json, sweep.json and
#                  the fragment (default: a new /tmp/serving.XXXXXX, kept)
#   --md FILE      the markdown fragment (default DIR/serving.md)
#   --img DIR      PNG directory (default docs/img/serving; --quick: DIR/img)
#   --update-doc   replace the text between <!-- serving:begin --> and
#                  <!-- serving:end --> in docs/benchmarks.md with the fragment
#   --no-llama     skip llama-server in part d (the report says so)
#   --llama-args "ARGS"  extra llama-server arguments (word-split; default
#                  $LLAMA_SERVER_ARGS), e.g. "--no-repack" where llama.cpp's
#                  AMX repacking crashes (it did on the AMX machine of
#                  docs/benchmarks.md, 2026-12-02)
#
# Servers are started and stopped by the script (free loopback ports, logs in
# the results dir, killed on exit). Before each part the script checks that
# no other process uses more than 5% of a core and warns loudly if one does;
# each run's "other %" (CPU other processes took during it) goes in the table.
# Full default run: about 35 minutes on 2 cores. Needs build/infer-server,
# build/loadtest, curl, the model (tools/fetch-model); part d needs
# .llama-cpp/bin/llama-server (tools/setup-llama-server); plots need
# matplotlib (python3-matplotlib), which the script installs when missing
# (tools/install-deps --plot).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
orig_cmd="bench/serving.sh $*"

model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
threads=2
reps=3
parts="abcd"
quick=0
rates=""
out=""
keep=0
md=""
img=""
update_doc=0
use_llama=1
llama_bin="${LLAMA_SERVER:-.llama-cpp/bin/llama-server}"
llama_args="${LLAMA_SERVER_ARGS:-}"
SLO_TTFT=2000
SLO_TPOT=100

while [ $# -gt 0 ]; do
    case "$1" in
        --parts) parts="$2"; shift 2 ;;
        --reps) reps="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        --llama-args) llama_args="$2"; shift 2 ;;
        -t) threads="$2"; shift 2 ;;
        --rates) rates="$2"; shift 2 ;;
        --out) out="$2"; keep=1; shift 2 ;;
        --md) md="$2"; shift 2 ;;
        --img) img="$2"; shift 2 ;;
        --update-doc) update_doc=1; shift ;;
        --no-llama) use_llama=0; shift ;;
        -m|--model) model="$2"; shift 2 ;;
        -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$reps" in ''|*[!0-9]*|0) echo "error: --reps must be a positive integer" >&2; exit 2 ;; esac
case "$parts" in *[!abcd]*|'') echo "error: --parts takes letters from abcd" >&2; exit 2 ;; esac

# ---- sizes (full / --quick)
if [ "$quick" = 1 ]; then
    [ "$reps" = 3 ] && reps=1
    a_rate=2;  a_n=10
    b_conc=8;  b_n=12
    c_conc=8;  c_n=8
    c_cases="bs8 bmt1024"
    [ -z "$rates" ] && rates="1,4"
    d_nmin=8;  d_nmax=10
else
    a_rate=2;  a_n=60
    b_conc=16; b_n=48
    c_conc=16; c_n=48
    c_cases="bs8 bs16 bs32 bmt256 bmt1024 bmt2048"
    [ -z "$rates" ] && rates="1,1.5,2,3,4,5,6,8"
    d_nmin=24; d_nmax=100
fi

die() { echo "error: $*" >&2; exit 1; }
[ -x build/infer-server ] || die "build/infer-server missing (cmake --build build -j2)"
[ -x build/loadtest ] || die "build/loadtest missing (cmake --build build -j2 --target loadtest)"
[ -f "$model" ] || die "model not found: $model (tools/fetch-model)"
command -v curl >/dev/null || die "curl is needed"

# plots need matplotlib, which the serving install leaves out: ask for it here
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || tools/install-deps --plot ||
    echo "warning: could not install matplotlib (tools/install-deps --plot)" >&2
PY=python3
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import matplotlib' 2>/dev/null; then PY="$p"; break; fi
done
"$PY" -c 'import matplotlib' 2>/dev/null ||
    echo "warning: matplotlib not found: no PNGs (apt-get install -y python3-matplotlib)" >&2

if [ -z "$out" ]; then
    out="$(mktemp -d /tmp/serving.XXXXXX)"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
[ -n "$md" ] || md="$out/serving.md"
if [ -z "$img" ]; then
    if [ "$quick" = 1 ]; then img="$out/img"; else img="docs/img/serving"; fi
fi
logs="$out/logs"
mkdir -p "$logs"

# ---- server management
pids=()
cleanup() {
    local p
    for p in "${pids[@]:-}"; do
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_health() { # url pid name
    local i
    for ((i = 0; i < 600; i++)); do
        if curl -sf -o /dev/null "$1/health"; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "error: $3 exited during startup; log:" >&2; tail -20 "$logs/$3.log" >&2; return 1; }
        sleep 0.2
    done
    echo "error: $3 did not become healthy in 120 s" >&2
    return 1
}

# start_ours NAME JSON-CONFIG -> sets srv_pid, srv_url
start_ours() {
    local name="$1" cfg="$logs/$1.json" port
    printf '%s\n' "$2" >"$cfg"
    port="$(free_port)"
    build/infer-server --config "$cfg" -m "$model" -t "$threads" --set server.listen= \
        --http "http://127.0.0.1:$port" >"$logs/$name.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    srv_url="http://127.0.0.1:$port"
    wait_health "$srv_url" "$srv_pid" "$name"
}

llama_ctx_per_slot=2048
llama_slots=16
# llama_argv PORT -> sets the array llama_cmd: the llama-server command line
# (one definition for starting it and for the report)
llama_argv() {
    # shellcheck disable=SC2206
    llama_cmd=("$llama_bin" -m "$model" -t "$threads" -tb "$threads" --host 127.0.0.1 --port "$1"
        -np "$llama_slots" -c $((llama_slots * llama_ctx_per_slot)) --metrics --no-webui $llama_args)
}
# start_llama NAME -> sets srv_pid, srv_url
start_llama() {
    local name="$1" port
    port="$(free_port)"
    llama_argv "$port"
    "${llama_cmd[@]}" >"$logs/$name.log" 2>&1 &
    srv_pid=$!
    pids+=("$srv_pid")
    srv_url="http://127.0.0.1:$port"
    wait_health "$srv_url" "$srv_pid" "$name"
}

stop_server() { # pid
    kill -TERM "$1" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keepp=() p
    for p in "${pids[@]}"; do [ "$p" != "$1" ] && keepp+=("$p"); done
    pids=("${keepp[@]:-}")
}

warmup() { # url
    build/loadtest --url "$1" --concurrency 2 -n 4 --prompt-len 32 --max-tokens 16 --ignore-eos \
        --quiet >/dev/null 2>&1 || echo "warning: warm-up against $1 failed" >&2
}

# ---- CPU accounting: "other %" = busy CPU not spent by the servers or loadtest
cpu_jiffies() { local c; c=($(head -n 1 /proc/stat)); local t=0 i; for i in 1 2 3 4 5 6 7 8; do t=$((t + c[i])); done; echo "$((t - c[4] - c[5])) $t"; }
pid_jiffies() { # sum of utime+stime of the given pids (threads included)
    local t=0 p j
    for p in "$@"; do
        j="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')" || j=0
        t=$((t + ${j:-0}))
    done
    echo "$t"
}
hz="$(getconf CLK_TCK)"

idle_warnings=()
check_idle() { # label
    local busy
    if ! busy="$("$PY" bench/serving_report.py idle --seconds 2 --threshold 5)"; then
        echo "" >&2
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
        echo "!! WARNING ($1): the machine is not idle; timings will be disturbed:" >&2
        echo "$busy" | sed 's/^/!!   /' >&2
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
        idle_warnings+=("$1: $(echo "$busy" | head -3 | tr -s ' ' | paste -sd, -)")
    fi
}

# run_lt DIR URL SERVER_PIDS... -- LOADTEST_ARGS...
run_lt() {
    local dir="$1" url="$2"; shift 2
    local spids=()
    while [ "$1" != "--" ]; do spids+=("$1"); shift; done
    shift
    mkdir -p "$dir"
    curl -sf "$url/metrics" >"$dir/metrics_before.txt" 2>/dev/null || true
    local cmd=(build/loadtest --url "$url" --quiet --slo "ttft=$SLO_TTFT,tpot=$SLO_TPOT" --out "$dir" "$@")
    echo "${cmd[*]}" >"$dir/cmd.txt"
    echo "  $ ${cmd[*]}" >&2
    local a b sa sb rc=0 lt_cpu
    a=($(cpu_jiffies)); sa="$(pid_jiffies "${spids[@]}")"
    TIMEFORMAT='%U %S'
    { time "${cmd[@]}" >"$dir/loadtest.out" 2>"$dir/loadtest.err" || rc=$?; } 2>"$dir/time"
    b=($(cpu_jiffies)); sb="$(pid_jiffies "${spids[@]}")"
    curl -sf "$url/metrics" >"$dir/metrics_after.txt" 2>/dev/null || true
    if [ "$rc" != 0 ]; then
        echo "error: loadtest failed (exit $rc):" >&2
        tail -20 "$dir/loadtest.err" >&2
        exit 1
    fi
    lt_cpu="$(awk -v hz="$hz" '{printf "%d", ($1 + $2) * hz}' "$dir/time")"
    local total=$((b[1] - a[1])) own=$((sb - sa + lt_cpu))
    local other=$(( total > 0 ? 100 * (b[0] - a[0] - own) / total : 0 ))
    [ "$other" -lt 0 ] && other=0
    echo "$other" >"$dir/other_pct"
    "$PY" - "$dir" <<'EOF' >&2
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
g = lambda k, p: (s.get(k) or {}).get(p)
f = lambda v: "-" if v is None else f"{v:.1f}"
print(f"    ok {s['requests_ok']}/{s['requests_sent']}, {s['output_tps']:.0f} out tok/s, "
      f"TTFT p50/p99 {f(g('ttft_ms','p50'))}/{f(g('ttft_ms','p99'))} ms, TPOT p50 {f(g('tpot_ms','p50'))} ms")
EOF
    echo "    other processes: ${other}% of the CPU" >&2
}

# case_json DIR key=value... (string values; order=N numeric)
case_json() {
    local dir="$1"; shift
    mkdir -p "$dir"
    "$PY" -c '
import json, sys
d = {}
for kv in sys.argv[2:]:
    k, _, v = kv.partition("=")
    try:
        v = float(v) if k in ("rate", "order") else v
    except ValueError:
        pass
    d[k] = v
json.dump(d, open(sys.argv[1] + "/case.json", "w"), indent=1)' "$dir" "$@"
}

ours_cfg() { # extra JSON fragments for batcher_config and cache_config (without braces), model_loading extra
    local bc="$1" cc="$2" ml="${3:-}"
    printf '{"model_loading_config": {"model_path": "%s", "n_threads": %s%s}, "batcher_config": {%s}, "cache_config": {%s}}' \
        "$model" "$threads" "${ml:+, $ml}" "$bc" "$cc"
}

chat="loadtest/traces/chat.jsonl"
lab11="loadtest/traces/lab11.jsonl"

# run_ours_case PART CASE ORDER LABEL WORKLOAD_DESC BATCHER CACHE MODEL_EXTRA -- LOADTEST_ARGS...
run_ours_case() {
    local part="$1" case="$2" order="$3" label="$4" wl="$5" bc="$6" cc="$7" ml="$8"; shift 8
    [ "$1" = "--" ] && shift
    local cdir="$out/$part/$case" cfg
    cfg="$(ours_cfg "$bc" "$cc" "$ml")"
    case_json "$cdir" "label=$label" "workload=$wl" "server=ours" "order=$order" \
        "config_summary=$(echo "$cfg" | sed "s|\"model_path\": \"[^\"]*\", ||")"
    echo "[$part/$case rep $rep] infer-server --config $(echo "$cfg")" >&2
    start_ours "$part-$case-rep$rep" "$cfg"
    warmup "$srv_url"
    run_lt "$cdir/rep$rep" "$srv_url" "$srv_pid" -- "$@"
    stop_server "$srv_pid"
}

check_idle "start"

# ---- part a: continuous vs static
if [[ "$parts" == *a* ]]; then
    echo "== part a: continuous vs static batching" >&2
    check_idle "part a"
    for ((rep = 1; rep <= reps; rep++)); do
        for pol in continuous static; do
            run_ours_case a "chat-$pol" "$([ $pol = continuous ] && echo 1 || echo 2)" "$pol" \
                "chat trace (\`$chat\`), first $a_n requests at $a_rate req/s (Poisson, seed = rep)" \
                "\"policy\": \"$pol\"" "" "" -- \
                --trace "$chat" --rate "$a_rate" -n "$a_n" --seed "$rep"
            run_ours_case a "lab11-$pol" "$([ $pol = continuous ] && echo 3 || echo 4)" "$pol" \
                "lab11 trace (\`$lab11\`) replayed as recorded" \
                "\"policy\": \"$pol\"" "" "" -- \
                --trace "$lab11" --seed "$rep"
        done
    done
fi

# ---- part b: swap vs recompute under memory pressure
if [[ "$parts" == *b* ]]; then
    echo "== part b: preemption, swap vs recompute" >&2
    check_idle "part b"
    # 112 blocks x 16 tokens = 1792 tokens on the device: the longest chat
    # request (1024 + 512 tokens) fits, 16 average ones (about 390 tokens) do not.
    for ((rep = 1; rep <= reps; rep++)); do
        run_ours_case b swap 1 "swap" \
            "chat trace, closed loop, $b_conc in flight, first $b_n requests; device pool 112 blocks of 16 tokens" \
            "" "\"num_blocks\": 112, \"block_size\": 16, \"num_blocks_cpu\": 1024, \"preemption_mode\": \"swap\"" \
            "\"model_max_length\": 1600" -- \
            --trace "$chat" --concurrency "$b_conc" -n "$b_n" --seed "$rep"
        run_ours_case b recompute 2 "recompute" \
            "chat trace, closed loop, $b_conc in flight, first $b_n requests; device pool 112 blocks of 16 tokens" \
            "" "\"num_blocks\": 112, \"block_size\": 16, \"num_blocks_cpu\": 0, \"preemption_mode\": \"recompute\"" \
            "\"model_max_length\": 1600" -- \
            --trace "$chat" --concurrency "$b_conc" -n "$b_n" --seed "$rep"
    done
fi

# ---- part c: block_size and batch_max_tokens
if [[ "$parts" == *c* ]]; then
    echo "== part c: block_size and batch_max_tokens" >&2
    check_idle "part c"
    for ((rep = 1; rep <= reps; rep++)); do
        order=0
        for c in $c_cases; do
            order=$((order + 1))
            case "$c" in
                bs*) bs="${c#bs}"; bmt=512; wl="block_size sweep (batch_max_tokens 512)"; label="block_size $bs" ;;
                bmt*) bs=16; bmt="${c#bmt}"; wl="batch_max_tokens sweep (block_size 16)"; label="batch_max_tokens $bmt" ;;
            esac
            [ "$c" = bs16 ] && label="block_size 16 (= batch_max_tokens 512)"
            run_ours_case c "$c" "$order" "$label" \
                "chat trace, closed loop, $c_conc in flight, first $c_n requests; $wl" \
                "\"batch_max_tokens\": $bmt" "\"block_size\": $bs" "" -- \
                --trace "$chat" --concurrency "$c_conc" -n "$c_n" --seed "$rep"
        done
    done
fi

# ---- part d: ours vs llama-server, rate sweep
llama_missing=""
if [[ "$parts" == *d* ]]; then
    echo "== part d: ours vs llama-server, request-rate sweep ($rates req/s)" >&2
    if [ "$use_llama" = 0 ]; then
        llama_missing="skipped with --no-llama"
    elif [ ! -x "$llama_bin" ]; then
        llama_missing="$llama_bin not found (tools/setup-llama-server builds it)"
    elif ! "$llama_bin" --version >/dev/null 2>&1; then
        llama_missing="$llama_bin does not run"
    fi
    if [ -n "$llama_missing" ]; then
        echo "" >&2
        echo "!! llama-server NOT MEASURED: $llama_missing" >&2
        echo "" >&2
    fi
    check_idle "part d"
    servers="ours"
    [ -z "$llama_missing" ] && servers="ours llama.cpp"
    # Same resources for both: 2 threads, 16 sequences at most, the same KV
    # capacity in tokens (16 slots x 2048 = 32768 tokens = 2048 blocks of 16).
    d_cfg="$(ours_cfg "\"batch_max_seqs\": $llama_slots" "\"num_blocks\": $((llama_slots * llama_ctx_per_slot / 16)), \"block_size\": 16" "\"model_max_length\": $llama_ctx_per_slot")"
    llama_argv PORT
    llama_summary="${llama_cmd[*]}"
    declare -A stopped=()
    IFS=',' read -r -a rate_list <<<"$rates"
    for r in "${rate_list[@]}"; do
        n="$("$PY" -c "import sys; r=float(sys.argv[1]); print(max($d_nmin, min($d_nmax, round(r * 20))))" "$r")"
        for ((rep = 1; rep <= reps; rep++)); do
            for s in $servers; do
                [ -n "${stopped[$s]:-}" ] && continue
                cdir="$out/d/$s-r$r"
                if [ "$s" = ours ]; then
                    case_json "$cdir" "server=$s" "rate=$r" "label=$s" "order=0" \
                        "config_summary=build/infer-server --config CFG -t $threads, CFG = $(echo "$d_cfg" | sed "s|\"model_path\": \"[^\"]*\", ||")"
                    echo "[d/$s rate $r rep $rep]" >&2
                    start_ours "d-$s-r$r-rep$rep" "$d_cfg"
                else
                    case_json "$cdir" "server=$s" "rate=$r" "label=$s" "order=1" "config_summary=$llama_summary"
                    echo "[d/$s rate $r rep $rep]" >&2
                    start_llama "d-llama-r$r-rep$rep"
                fi
                warmup "$srv_url"
                run_lt "$cdir/rep$rep" "$srv_url" "$srv_pid" -- \
                    --trace "$chat" --rate "$r" -n "$n" --seed "$rep" --max-inflight 256
                stop_server "$srv_pid"
            done
        done
        for s in $servers; do
            [ -n "${stopped[$s]:-}" ] && continue
            if ! "$PY" bench/serving_report.py slo-check "$out/d/$s-r$r" --ttft "$SLO_TTFT" --tpot "$SLO_TPOT" >&2; then
                stopped[$s]=1
                echo "  $s fails the SLO at $r req/s: its sweep stops here" >&2
            fi
        done
        all_stopped=1
        for s in $servers; do [ -z "${stopped[$s]:-}" ] && all_stopped=0; done
        [ "$all_stopped" = 1 ] && break
    done
fi

# ---- metadata and report
export SERVING_IDLE_WARNINGS
SERVING_IDLE_WARNINGS="$(printf '%s\n' "${idle_warnings[@]:-}")"
"$PY" - "$out/meta.json" <<EOF
import json, subprocess, sys, datetime, os
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""
cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1")
meta = {
    "command": """$orig_cmd""".strip(),
    "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    "commit": sh("git rev-parse --short HEAD") + (" (+ uncommitted changes)" if sh("git status --porcelain --untracked-files=no") else ""),
    "cpu": cpu, "nproc": os.cpu_count(), "threads": $threads, "model": "$model", "reps": $reps,
    "quick": bool($quick),
    "slo": {"ttft_ms": $SLO_TTFT, "tpot_ms": $SLO_TPOT},
    "idle_warnings": [l.strip() for l in os.environ.get("SERVING_IDLE_WARNINGS", "").splitlines() if l.strip()],
    "llama_missing": """$llama_missing""",
    "d_note": ("Both servers: 2 threads, at most $llama_slots sequences at once, the same KV capacity "
               "($llama_slots x $llama_ctx_per_slot tokens), requests over HTTP \`/v1/completions\` with SSE "
               "by the same build/loadtest; the chat trace's contents (greedy, ignore_eos) at each offered "
               "rate, Poisson arrivals (seed = rep), n = clamp(20 x rate, $d_nmin, $d_nmax) requests per point. "
               "llama-server: " + sh("$llama_bin --version 2>&1 | head -1") if not """$llama_missing""" else
               "llama-server was NOT measured: $llama_missing."),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF

doc_args=()
[ "$update_doc" = 1 ] && doc_args=(--doc docs/benchmarks.md)
"$PY" bench/serving_report.py report "$out" --md "$md" --img "$img" "${doc_args[@]}"
echo "results: $out" >&2
echo "fragment: $md" >&2
[ -n "$llama_missing" ] && echo "NOTE: llama-server was not measured: $llama_missing" >&2
exit 0
