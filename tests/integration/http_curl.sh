#!/usr/bin/env bash
# http_curl.sh - infer-server's HTTP API driven with curl, the way the
# README's users call it: /health, /generate, OpenAI completions (unary and
# streamed with -N), chat, /v1/models, /metrics, a bad request, and a clean
# exit (status 0) on SIGTERM.
#
# Environment (ctest sets them): ENGINE_BUILD_DIR (infer-server), ENGINE_MODEL.
# Exit: 0 pass, 1 fail, 77 skipped (no curl, server binary or model).
set -u

bin="${ENGINE_BUILD_DIR:-build}/infer-server"
model="${ENGINE_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
command -v curl >/dev/null || { echo "http_curl: curl not installed, skipping"; exit 77; }
[ -x "$bin" ] || { echo "http_curl: $bin not built, skipping"; exit 77; }
[ -r "$model" ] || { echo "http_curl: $model missing, skipping"; exit 77; }

# shellcheck source=free_port.sh
. "$(dirname "${BASH_SOURCE[0]}")/free_port.sh"

start_server 256

fails=0
check() { # check NAME CONDITION-RESULT DETAIL
    if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; fails=$((fails + 1)); fi
}
c() { curl -s --max-time 60 "$@"; }

up=1
for _ in $(seq 1 1200); do
    if c -f "$base/health" >/dev/null 2>&1; then up=0; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
if [ $up != 0 ]; then
    echo "FAIL infer-server did not come up"; cat "$tmp/server.log"; exit 1
fi

out=$(c "$base/health")
[[ "$out" == *'"status":"ok"'* ]]; check health $? "$out"

out=$(c "$base/generate" -d '{"prompt": "The capital of France is", "max_length": 8, "temperature": 0}')
[[ "$out" == *'"text":'* && "$out" == *'"finish_reason":'* && "$out" == *'"completion_tokens":'* ]]
check generate $? "$out"

out=$(c "$base/v1/models")
[[ "$out" == *'"object":"list"'* && "$out" == *SmolLM2* ]]; check models $? "$out"

out=$(c "$base/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}')
[[ "$out" == *'"object":"text_completion"'* && "$out" == *'"choices":[{'* ]]
check completions $? "$out"

out=$(c -N "$base/v1/completions" -d '{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": true}')
events=$(grep -c '^data: {' <<<"$out")
[[ $events -ge 3 && "$out" == *'data: [DONE]'* ]]; check "completions stream" $? "$events events: $out"

out=$(c -N "$base/v1/chat/completions" \
    -d '{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "stream": true}')
[[ "$out" == *'"role":"assistant"'* && "$out" == *'data: [DONE]'* ]]; check "chat stream" $? "$out"

out=$(c "$base/v1/chat/completions" -d '{"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6}')
[[ "$out" == *'"object":"chat.completion"'* && "$out" == *'"message":{"role":"assistant"'* ]]
check chat $? "$out"

code=$(c -o "$tmp/err.json" -w '%{http_code}' "$base/generate" -d '{"prompt": "x", "temperature": "hot"}')
[[ "$code" == 400 ]] && grep -q 'temperature must be a number' "$tmp/err.json"
check "bad parameter -> 400" $? "$code $(cat "$tmp/err.json")"

code=$(c -o "$tmp/err.json" -w '%{http_code}' "$base/v1/completions" -d '{"model": "gpt-4", "prompt": "x"}')
[[ "$code" == 404 ]] && grep -q "model 'gpt-4' does not exist" "$tmp/err.json"
check "unknown model -> 404 as /v1/models/{id}" $? "$code $(cat "$tmp/err.json")"

# One name for the model: HTTP's id is RPC ModelInfo's (infer-cli model) name.
id=$(c "$base/v1/models" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
cli="${ENGINE_BUILD_DIR:-build}/infer-cli"
if [ -x "$cli" ]; then
    out=$("$cli" --url "tcp://127.0.0.1:$rpc_port" model 2>&1)
    [[ -n "$id" ]] && grep -Eq "^name +$id\$" <<<"$out"; check "model name: HTTP = RPC" $? "id '$id' vs $out"
fi

code=$(c -o /dev/null -w '%{http_code}' "$base/nope")
[[ "$code" == 404 ]]; check "unknown path -> 404" $? "$code"

out=$(c -D "$tmp/headers" "$base/metrics")
grep -qi '^content-type: text/plain; version=0.0.4' "$tmp/headers" &&
    [[ "$out" == *'infer_calls_total{status="OK"}'* && "$out" == *infer_kv_blocks_free* ]]
check metrics $? "$(head -c 300 <<<"$out")"

# SIGTERM drains and exits 0.
kill -TERM $pid
status=124
for _ in $(seq 1 600); do
    if ! kill -0 $pid 2>/dev/null; then wait $pid; status=$?; break; fi
    sleep 0.1
done
check "SIGTERM -> exit 0" "$status" "exit status $status"

# Start-up refusals and hints, without a server running.
out=$("$bin" -m "$model" --api-key "" 2>&1); st=$?
[[ $st == 2 && "$out" == *"--api-key: the key is empty"* ]]; check "--api-key \"\" refused" $? "$st $out"
gen="${ENGINE_BUILD_DIR:-build}/infer-generate"
if [ -x "$gen" ]; then
    out=$("$gen" -m "$tmp/none.gguf" -p x 2>&1); st=$?
    [[ $st == 1 && "$out" == *tools/fetch-model* && "$out" == *"-m PATH"* ]]
    check "missing model says how to fetch it" $? "$st $out"
    out=$("$gen" -m "$model" 2>&1); st=$?
    [[ $st == 2 && "$out" == *"pass -p TEXT"*"--prompts-file FILE"* ]]; check "no prompts: says what to pass" $? "$st $out"
    # README's example file, one completion per line
    ex="$(dirname "${BASH_SOURCE[0]}")/../../examples/prompts.jsonl"
    "$gen" -m "$model" --prompts-file "$ex" -q -o "$tmp/ex.jsonl" 2>"$tmp/gen.err"; st=$?
    [[ $st == 0 && $(grep -c '"completion":' "$tmp/ex.jsonl") == "$(grep -c . "$ex")" ]]
    check "examples/prompts.jsonl" $? "$st $(cat "$tmp/gen.err")"
    # -l/--generation-length is --max-tokens
    "$gen" -m "$model" -p "Once upon a time" -l 3 --ignore-eos -q -o "$tmp/l.jsonl" 2>"$tmp/gen.err"
    st=$?
    [[ $st == 0 ]] && grep -q '"completion_tokens":3,' "$tmp/l.jsonl"
    check "-l 3 generates 3 tokens" $? "$st $(cat "$tmp/gen.err" "$tmp/l.jsonl")"
    if command -v script >/dev/null; then # a terminal: progress redrawn in place
        script -qec "'$gen' -m '$model' -p a -p b -n 4 -o '$tmp/tty.jsonl'" /dev/null >"$tmp/tty.out" 2>&1
        grep -aq $'\rgenerating: [0-9]/2 prompts, [0-9]* tokens, .* tokens/s, elapsed [0-9]* s, eta' "$tmp/tty.out"
        check "infer-generate progress on a terminal" $? "$(tr '\r' '\n' <"$tmp/tty.out" | tail -5)"
    fi
    absgen=$(cd "$(dirname "$gen")" && pwd)/infer-generate
    out=$(cd / && env -u ENGINE_MODEL "$absgen" --print-config 2>&1)
    if [ -r "$(dirname "$absgen")/../models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
        grep -Eq '"model_path":[[:space:]]*"/.*/models/SmolLM2-135M-Instruct.Q4_1.gguf"' <<<"$out"
        check "default model found from another directory" $? "$out"
    fi
fi

if [ $fails != 0 ]; then
    echo "---- server log ----"; cat "$tmp/server.log"
    exit 1
fi
echo "http_curl: all checks passed"
