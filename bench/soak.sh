#!/usr/bin/env bash
# soak.sh - run infer-server under a mixed, bounded load for DURATION and
# check that it comes back to idle (bench/soak.py does the driving and the
# checks; see bench/README.md, "soak.sh").
#
# Usage: bench/soak.sh DURATION [soak.py options]     DURATION: 60s, 10m, 1h
#   e.g. bench/soak.sh 90s --out /tmp/soak.json --workers 8
#
# Starts one server on free loopback ports with a small KV pool (so that
# preemption and full queues happen), always stops it on exit, and keeps the
# config, the server log and the report (unless --out) in a /tmp/soak.*
# directory it prints. Environment: ENGINE_BUILD_DIR (infer-server),
# ENGINE_MODEL, SOAK_THREADS (forward-pass threads, default 2).
# Exit: 0 PASS, 1 FAIL, 2 usage or set-up error.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
fi
duration="$1"
shift
bin="${ENGINE_BUILD_DIR:-$root/build}/infer-server"
model="${ENGINE_MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -x "$bin" ] || { echo "soak: $bin not built" >&2; exit 2; }
[ -r "$model" ] || { echo "soak: model $model missing" >&2; exit 2; }
if ! py="$("$root/clients/python/setup.sh" | tail -n 1)" || [ ! -x "$py" ]; then
    echo "soak: the Python client environment could not be prepared (clients/python/setup.sh)" >&2
    exit 2
fi

# shellcheck source=../tests/integration/free_port.sh
. "$root/tests/integration/free_port.sh"
rpc_port=$(free_port) && http_port=$(free_port) || { echo "soak: no free port" >&2; exit 2; }
[ "$rpc_port" != "$http_port" ] || http_port=$(free_port) || exit 2

dir=$(mktemp -d /tmp/soak.XXXXXX)
# 40 blocks of 16 tokens: room for about three of the driver's larger
# requests, so eight workers force swapping; a short waiting queue makes
# "busy" answers (429 / RESOURCE_EXHAUSTED) happen too; 1 MiB messages make
# oversized bodies cheap to send.
cat >"$dir/config.json" <<EOF
{
  "model_loading_config": {"model_path": "$model", "model_max_length": 512,
                           "n_threads": ${SOAK_THREADS:-2}},
  "batcher_config": {"batch_max_tokens": 256, "batch_max_seqs": 16, "max_waiting": 8},
  "cache_config": {"num_blocks": 40, "block_size": 16, "num_blocks_cpu": 32,
                   "watermark": 0.05, "preemption_mode": "swap"},
  "server": {"listen": ["tcp://127.0.0.1:$rpc_port"],
             "http_listen": "http://127.0.0.1:$http_port",
             "max_message_bytes": 1048576, "request_timeout_ms": 0,
             "drain_timeout_ms": 5000}
}
EOF

unset ENGINE_API_KEY
"$bin" --config "$dir/config.json" --frame-timeout 2000 2>"$dir/server.log" &
pid=$!
stop_server() {
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "soak: server stopped (exit status $?); config, log and report in $dir" >&2
}
trap stop_server EXIT
trap 'exit 2' INT TERM

out=()
[[ " $* " == *" --out "* || " $* " == *" --out="* ]] || out=(--out "$dir/report.json")
"$py" "$root/bench/soak.py" --duration "$duration" --pid "$pid" \
    --http "http://127.0.0.1:$http_port" --rpc "tcp://127.0.0.1:$rpc_port" "${out[@]}" "$@"
rc=$?
if [ $rc -ne 0 ] && ! kill -0 "$pid" 2>/dev/null; then
    echo "soak: the server is gone; the end of its log:" >&2
    tail -n 20 "$dir/server.log" >&2
fi
exit $rc
