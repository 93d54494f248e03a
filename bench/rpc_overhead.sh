#!/usr/bin/env bash
# rpc_overhead.sh - what the RPC front end adds to a request on loopback.
#
# Builds build/infer-server and build/rpc-overhead-bench (Release) if
# needed, then runs the bench: it starts infer-server on a loopback port
# with the default model and 2 threads, times (a) 1-token unary Generate
# calls, (b) sampling -> client receive per token of 64-token streams (from
# GenerateChunk.sampled_ms), stops the server (SIGTERM to its pid), then
# times (c) the same 1-token generate through engine_submit in process.
# Prints a table and, on its last line, JSON.
#
# Usage: bench/rpc_overhead.sh [rpc-overhead-bench options]
#   defaults: -t 2 -n 300 --warmup 30 --stream-calls 10 --stream-tokens 64 -p Hello
#   BUILD_DIR=DIR   build directory (default build)
#   JOBS=N          build jobs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${BUILD_DIR:-build}"
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || tools/fetch-model
if [ ! -x "$build/infer-server" ] || [ ! -x "$build/rpc-overhead-bench" ] || [ "${REBUILD:-1}" = 1 ]; then
    cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j "${JOBS:-$(nproc)}" --target infer-server rpc-overhead-bench >/dev/null
fi
exec "$build/rpc-overhead-bench" --server "$build/infer-server" -m "$model" -t 2 -n 300 "$@"
