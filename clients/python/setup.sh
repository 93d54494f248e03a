#!/usr/bin/env bash
# setup.sh - prepare the Python client: a virtual environment with protobuf
# (runtime) and grpcio-tools (its bundled protoc generates the message
# classes), then the generated modules in infer_client/_pb/.
#
# Usage: clients/python/setup.sh [VENV_DIR]
#   VENV_DIR defaults to .venv-client at the repository root (git-ignored).
#   Needs PyPI the first time; afterwards it only regenerates the code.
# Prints the interpreter to use on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/.venv-client}"
py="${PYTHON:-python3}"

if ! "$venv/bin/python" -c 'import google.protobuf, grpc_tools' 2>/dev/null; then
    echo "setup.sh: creating $venv (protobuf, grpcio-tools from PyPI)" >&2
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check protobuf grpcio-tools >&2
fi

"$venv/bin/python" "$here/gen_proto.py" >&2
echo "$venv/bin/python"
