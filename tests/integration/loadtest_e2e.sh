#!/usr/bin/env bash
# loadtest_e2e.sh - build/loadtest against a real infer-server on loopback,
# over RPC (closed loop, 8 in flight) and over HTTP (open loop, gamma
# arrivals, plus a short trace replay): every request completes, the
# summary adds up (ok + failed = sent = 50; output tokens = the sum over
# responses.json), one "request N done" line per request, and the timeline
# carries the server's gauges. Then two servers: --url twice, over RPC (the
# C client's balancing) and over HTTP (least requests in flight): both
# servers get requests and the per-endpoint counts add up.
#
# Environment (ctest sets them): ENGINE_BUILD_DIR, ENGINE_MODEL.
# Exit: 0 pass, 1 fail, 77 skipped (no server binary, model or python3).
set -u

build="${ENGINE_BUILD_DIR:-build}"
bin="$build/infer-server"
lt="$build/loadtest"
model="${ENGINE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -x "$bin" ] || { echo "loadtest_e2e: $bin not built, skipping"; exit 77; }
[ -x "$lt" ] || { echo "loadtest_e2e: $lt not built, skipping"; exit 77; }
[ -r "$model" ] || { echo "loadtest_e2e: $model missing, skipping"; exit 77; }
command -v python3 >/dev/null || { echo "loadtest_e2e: python3 missing, skipping"; exit 77; }

# shellcheck source=free_port.sh
. "$(dirname "${BASH_SOURCE[0]}")/free_port.sh"

tmp=$(mktemp -d)
rpc_port=$(free_port) && http_port=$(free_port) || { echo "no free port"; exit 1; }
rpc_port2=$(free_port) && http_port2=$(free_port) || { echo "no free port"; exit 1; }
unset ENGINE_API_KEY
"$bin" -m "$model" --set "server.listen=tcp://127.0.0.1:$rpc_port" \
    --set "server.http_listen=http://127.0.0.1:$http_port" --set cache_config.num_blocks=256 \
    2>"$tmp/server.log" &
pid=$!
"$bin" -m "$model" --set "server.listen=tcp://127.0.0.1:$rpc_port2" \
    --set "server.http_listen=http://127.0.0.1:$http_port2" --set cache_config.num_blocks=256 \
    2>"$tmp/server2.log" &
pid2=$!
trap 'kill -9 $pid $pid2 2>/dev/null; wait $pid $pid2 2>/dev/null; rm -rf "$tmp"' EXIT

for p in "$http_port:$pid:server" "$http_port2:$pid2:server2"; do
    up=1
    for _ in $(seq 1 1200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/${p%%:*}") 2>/dev/null; then up=0; break; fi
        kill -0 "$(echo "$p" | cut -d: -f2)" 2>/dev/null || break
        sleep 0.1
    done
    if [ $up != 0 ]; then
        echo "FAIL infer-server (${p##*:}) did not come up"; cat "$tmp/${p##*:}.log"; exit 1
    fi
done

fails=0
# check NAME OUTDIR STDOUT N: the result files and the printed lines agree
check() {
    local name="$1" dir="$2" out="$3" n="$4" msg
    msg=$(python3 - "$dir" "$out" "$n" <<'PY'
import json, re, sys
d, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = json.load(open(d + "/summary.json"))
r = json.load(open(d + "/responses.json"))
tl = json.load(open(d + "/timeline.json"))
lines = open(out).read().splitlines()
errs = []
def want(c, m):
    if not c: errs.append(m)
want(s["requests_sent"] == n, f"sent {s['requests_sent']} != {n}")
want(s["requests_ok"] + s["requests_failed"] == s["requests_sent"], "ok + failed != sent")
want(s["requests_ok"] == n, f"ok {s['requests_ok']}, errors {[x['error'] for x in r if x['error']][:3]}")
want(len(r) == n, f"{len(r)} responses")
want(sorted(x["index"] for x in r) == list(range(n)), "indices")
want(s["output_tokens"] == sum(x["output_tokens"] for x in r), "output token total")
want(s["input_tokens"] == sum(x["input_tokens"] for x in r if x["error"] is None), "input token total")
want(all(1 <= x["output_tokens"] <= 8 for x in r), "output tokens outside 1..8")
want(all(x["ttft_ms"] is not None and 0 < x["ttft_ms"] <= x["e2e_ms"] for x in r), "ttft")
# RPC: one chunk per token; HTTP: a token whose text is held back (partial
# UTF-8, a possible stop-string prefix) arrives merged into a later event.
if s["kind"] == "rpc":
    want(all(len(x["itl_ms"]) == x["output_tokens"] - 1 for x in r), "itl count != tokens - 1")
else:
    want(all(len(x["itl_ms"]) <= x["output_tokens"] - 1 for x in r), "itl count > tokens - 1")
want(all(x["input_tokens"] > 0 and x["finish_reason"] in ("length", "stop", "eos") for x in r), "usage/finish")
for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
    want(all(s[k][q] is not None for q in ("mean", "p50", "p90", "p99")), k)
want(s["ttft_ms"]["p50"] <= s["ttft_ms"]["p99"], "p50 > p99")
want(s["goodput_fraction"] is not None and 0 <= s["goodput_fraction"] <= 1, "goodput")
done = [l for l in lines if re.fullmatch(r"request \d+ done, latency \d+\.\d{3} s", l)]
want(len(done) == n, f"{len(done)} 'request N done' lines")
want(any(l.startswith("total time: ") for l in lines), "no total time line")
want(len(tl) >= 1 and tl[-1]["completed"] == n, "timeline end")
want(any("running" in x and "kv_blocks_used" in x for x in tl), "no server gauges in the timeline")
print("; ".join(errs))
PY
    )
    if [ $? = 0 ] && [ -z "$msg" ]; then echo "ok   $name"; else
        echo "FAIL $name: $msg"; fails=$((fails + 1)); fi
}

t0=$(date +%s)
"$lt" --url "tcp://127.0.0.1:$rpc_port" --concurrency 8 -n 50 --max-tokens 8 --prompt-len 32 \
    --slo ttft=2000,tpot=500 --out "$tmp/rpc" --sample-interval 0.2 >"$tmp/rpc.out" 2>"$tmp/rpc.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL rpc run exited $rc"; cat "$tmp/rpc.err"; fails=$((fails + 1)); }
check "rpc: 50 requests, concurrency 8" "$tmp/rpc" "$tmp/rpc.out" 50
# stderr is no terminal: plain progress lines; the last one (at the end)
# counts done against the total.
grep -Eq '^\[ *[0-9.]+ s\] sent 50  done 50/50  failed 0 ' "$tmp/rpc.err" ||
    { echo "FAIL rpc: no final progress line 'done 50/50'"; cat "$tmp/rpc.err"; fails=$((fails + 1)); }

"$lt" --url "http://127.0.0.1:$http_port" --rate 25 --burstiness 0.5 -n 50 --max-tokens 8 \
    --prompt-len 32 --seed 3 --slo ttft=2000 --out "$tmp/http" --sample-interval 0.2 \
    >"$tmp/http.out" 2>"$tmp/http.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL http run exited $rc"; cat "$tmp/http.err"; fails=$((fails + 1)); }
check "http: 50 requests, 25/s gamma arrivals" "$tmp/http" "$tmp/http.out" 50

# the lab's /generate stream (its events carry "text" at the top level)
"$lt" --url "http://127.0.0.1:$http_port/generate" --concurrency 4 -n 20 --max-tokens 8 \
    --prompt-len 32 --seed 5 --slo ttft=2000 --out "$tmp/gen" >"$tmp/gen.out" 2>"$tmp/gen.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL /generate run exited $rc"; cat "$tmp/gen.err"; fails=$((fails + 1)); }
check "http /generate: 20 requests" "$tmp/gen" "$tmp/gen.out" 20

# trace replay over HTTP at 4x speed, text prompts and token-length prompts
{
    echo '# t, prompt or prompt_len, sampling'
    for i in $(seq 0 9); do
        if [ $((i % 2)) = 0 ]; then
            echo "{\"t\": $(awk "BEGIN{print $i*0.2}"), \"prompt\": \"The capital of France is\", \"max_length\": 8, \"temperature\": 0, \"id\": \"r$i\"}"
        else
            echo "{\"t\": $(awk "BEGIN{print $i*0.2}"), \"prompt_len\": 20, \"max_tokens\": 8, \"ignore_eos\": true, \"stop\": [\"zzzz\"]}"
        fi
    done
} >"$tmp/trace.jsonl"
"$lt" --url "http://127.0.0.1:$http_port" --trace "$tmp/trace.jsonl" --time-scale 0.25 \
    --slo ttft=2000 --out "$tmp/trace" --sample-interval 0.1 >"$tmp/trace.out" 2>"$tmp/trace.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL trace run exited $rc"; cat "$tmp/trace.err"; fails=$((fails + 1)); }
check "http: trace replay of 10 requests" "$tmp/trace" "$tmp/trace.out" 10
python3 - "$tmp/trace" <<'PY' || { echo "FAIL trace ids/schedule"; fails=$((fails + 1)); }
import json, sys
r = sorted(json.load(open(sys.argv[1] + "/responses.json")), key=lambda x: x["index"])
assert [x["id"] for x in r[:2]] == ["r0", None], [x["id"] for x in r[:2]]
assert all(abs(x["t_sched"] - 0.05 * i) < 1e-9 for i, x in enumerate(r)), [x["t_sched"] for x in r]
assert all(x["t_send"] >= x["t_sched"] - 1e-3 for x in r)
assert all(x["output_tokens"] == 8 for x in r[1::2])  # ignore_eos
PY

# a bad trace line: exit 2 and the line-numbered message
echo '{"t": 0, "prompt_len": 4, "max_tokens": "abc"}' >"$tmp/bad.jsonl"
"$lt" --url "http://127.0.0.1:$http_port" --trace "$tmp/bad.jsonl" >/dev/null 2>"$tmp/bad.err"
rc=$?
want="$tmp/bad.jsonl:1: max_tokens must be an integer >= 1, got \"abc\""
if [ $rc = 2 ] && grep -qF "$want" "$tmp/bad.err"; then echo "ok   bad trace line -> exit 2"; else
    echo "FAIL bad trace: exit $rc: $(cat "$tmp/bad.err")"; fails=$((fails + 1)); fi

# two servers: both take requests; the per-endpoint counts add up to the total
# check_spread NAME OUTDIR N
check_spread() {
    local msg
    msg=$(python3 - "$2" "$3" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
s = json.load(open(d + "/summary.json"))
r = json.load(open(d + "/responses.json"))
eps = s["endpoints"]
errs = []
if len(eps) != 2: errs.append(f"{len(eps)} endpoints in the summary")
elif min(e["requests"] for e in eps) < 1: errs.append(f"a server got no request: {eps}")
elif sum(e["requests"] for e in eps) != n: errs.append(f"per-endpoint requests {eps} != {n}")
if s["kind"] == "http":
    per = {e["url"]: sum(1 for x in r if x["endpoint"] == e["url"]) for e in eps}
    if any(per[e["url"]] != e["requests"] for e in eps): errs.append(f"responses {per} vs {eps}")
print("; ".join(errs))
PY
    )
    if [ $? = 0 ] && [ -z "$msg" ]; then echo "ok   $1: both servers used"; else
        echo "FAIL $1: $msg"; fails=$((fails + 1)); fi
}

"$lt" --url "tcp://127.0.0.1:$rpc_port" --url "tcp://127.0.0.1:$rpc_port2" --heartbeat 1 \
    --concurrency 4 -n 20 --max-tokens 8 --prompt-len 32 --slo ttft=2000 --out "$tmp/rpc2" \
    --sample-interval 0.2 >"$tmp/rpc2.out" 2>"$tmp/rpc2.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL rpc x2 run exited $rc"; cat "$tmp/rpc2.err"; fails=$((fails + 1)); }
check "rpc, two servers: 20 requests" "$tmp/rpc2" "$tmp/rpc2.out" 20
check_spread "rpc, two servers" "$tmp/rpc2" 20
grep -q "^  endpoint  *tcp://127.0.0.1:$rpc_port2: [0-9]* requests" "$tmp/rpc2.out" ||
    { echo "FAIL rpc x2: no endpoint line in the summary"; fails=$((fails + 1)); }

"$lt" --url "http://127.0.0.1:$http_port" --url "http://127.0.0.1:$http_port2" \
    --concurrency 4 -n 20 --max-tokens 8 --prompt-len 32 --slo ttft=2000 --out "$tmp/http2" \
    --sample-interval 0.2 >"$tmp/http2.out" 2>"$tmp/http2.err"
rc=$?
[ $rc = 0 ] || { echo "FAIL http x2 run exited $rc"; cat "$tmp/http2.err"; fails=$((fails + 1)); }
check "http, two servers: 20 requests" "$tmp/http2" "$tmp/http2.out" 20
check_spread "http, two servers" "$tmp/http2" 20

# mixed kinds: a usage error
"$lt" --url "tcp://127.0.0.1:$rpc_port" --url "http://127.0.0.1:$http_port" -n 1 \
    --concurrency 1 >/dev/null 2>"$tmp/mixed.err"
rc=$?
if [ $rc = 2 ] && grep -q "all URLs must be RPC or all HTTP" "$tmp/mixed.err"; then
    echo "ok   mixed RPC and HTTP URLs -> exit 2"; else
    echo "FAIL mixed URLs: exit $rc: $(cat "$tmp/mixed.err")"; fails=$((fails + 1)); fi

echo "loadtest_e2e: $(($(date +%s) - t0)) s, $fails failed"
[ $fails = 0 ] || { tail -n 20 "$tmp/server.log"; exit 1; }
exit 0
