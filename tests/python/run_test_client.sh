#!/usr/bin/env bash
# run_test_client.sh - ctest entry for the Python client: prepare its
# environment (clients/python/setup.sh: a venv with protobuf and
# grpcio-tools from PyPI, messages generated from proto/) and run
# tests/python/test_client.py against a real infer-server, then
# tests/python/test_client_balance.py (several endpoints: three servers).
# Exit 77 (skip) when the model, infer-server or the Python environment is
# unavailable (e.g. no PyPI on a first run); otherwise the test's status.
set -uo pipefail

src="${ENGINE_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
build="${ENGINE_BUILD_DIR:-$src/build}"
model="${ENGINE_MODEL:-$src/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

if [ ! -f "$model" ] || [ ! -x "$build/infer-server" ]; then
    echo "SKIP: needs $model and $build/infer-server"
    exit 77
fi
# Fail fast when PyPI cannot be reached instead of retrying for minutes.
export PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-15}" PIP_RETRIES="${PIP_RETRIES:-1}"
if ! py="$("$src/clients/python/setup.sh" | tail -n 1)" || [ ! -x "$py" ]; then
    echo "SKIP: the Python client environment could not be prepared (clients/python/setup.sh)"
    exit 77
fi
export ENGINE_SOURCE_DIR="$src" ENGINE_BUILD_DIR="$build" ENGINE_MODEL="$model"
"$py" "$src/tests/python/test_client.py" || exit 1
exec "$py" "$src/tests/python/test_client_balance.py"
