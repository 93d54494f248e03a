#!/usr/bin/env bash
# Set up and run the engine's main job, infer-server, on the default model.
#
# Installs missing system packages (tools/install-deps), fetches
# SmolLM2-135M-Instruct Q4_1 (tools/fetch-model), builds a Release build in
# build/, prints how to query the server, then runs `build/infer-server` in
# the foreground (the script execs it: same PID) with RPC on
# tcp://127.0.0.1:8700 and HTTP on http://127.0.0.1:8080. Ctrl-C (SIGINT) or
# SIGTERM drains it and exits 0.
#
# Usage: ./quickstart.sh [infer-server options]   serve (e.g. -t 4, --api-key KEY)
#        ./quickstart.sh generate ARGS...         run build/infer-generate ARGS...
#                                                 (e.g. --chat -p "Hi" -n 64 --greedy)
#   JOBS=N       parallel build jobs (default: number of cores)
#   SKIP_DEPS=1  do not check/install system packages
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$repo_root"

jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
log() { echo "==> $*" >&2; }

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    tools/install-deps
fi
tools/fetch-model

log "building build/infer-server, build/infer-cli, build/infer-generate (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DENGINE_SANITIZE=OFF >/dev/null
cmake --build build -j "$jobs" --target infer-server infer-cli infer-generate

if [ "${1:-}" = generate ]; then
    shift
    exec build/infer-generate "$@"
fi

rpc_url="tcp://127.0.0.1:8700"
http_url="http://127.0.0.1:8080"

cat >&2 <<EOF

==> starting build/infer-server (RPC $rpc_url, HTTP $http_url); Ctrl-C stops it.
    Once it logs that it is listening, query it from another terminal:

  # curl: OpenAI chat completions (add "stream": true for Server-Sent Events), and /generate
  curl -s $http_url/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "What is a KV cache?"}], "max_tokens": 64}'
  curl -s $http_url/generate -d '{"prompt": "The capital of France is", "max_length": 16, "temperature": 0}'

  # the C client's command line (RPC): interactive chat (/quit to leave)
  build/infer-cli --url $rpc_url chat

  # the Python client (RPC): setup.sh once (venv with protobuf from PyPI), then the example
  clients/python/setup.sh
  .venv-client/bin/python clients/python/example.py --url $rpc_url

EOF

exec build/infer-server --listen "$rpc_url" --http "$http_url" "$@"
