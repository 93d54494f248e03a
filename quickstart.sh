#!/usr/bin/env bash
# Set up and run the engine's main job on the default model.
#
# Installs missing system packages (tools/install-deps), fetches
# SmolLM2-135M-Instruct Q4_1 (tools/fetch-model), builds a Release build in
# build/, then runs `infer-generate`, the offline batch job (the RPC server
# that will become the main job does not exist yet).
#
# Usage: ./quickstart.sh                   run a demo chat prompt
#        ./quickstart.sh ARGS...           run build/infer-generate ARGS...
#                                          (e.g. --chat -p "Hi" -n 64 --greedy)
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

log "building build/infer-generate (Release)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DENGINE_SANITIZE=OFF >/dev/null
cmake --build build -j "$jobs" --target infer-generate

if [ $# -gt 0 ]; then
    exec build/infer-generate "$@"
fi

log "build/infer-generate --chat --stream -n 256 -p ..."
exec build/infer-generate --chat --stream -n 256 --temperature 0.2 --seed 42 \
    -p "Explain in three sentences what a KV cache is in LLM inference."
