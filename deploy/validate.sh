#!/usr/bin/env bash
# Validate the deployment files (ctest: deploy_validate, label `deploy`):
#   1. every resource in deploy/k8s/**/*.yaml against the Kubernetes OpenAPI
#      schemas (kubernetes-validate --strict: unknown fields fail too), and a
#      deliberately broken copy must fail, so a tool that passes everything
#      is caught;
#   2. deploy/check_consistency.py: config <-> manifest cross-checks (ports,
#      grace period vs drain_timeout_ms, CPU vs n_threads, memory vs KV);
#   3. hadolint on deploy/Dockerfile;
#   4. with ENGINE_BUILD_DIR/infer-server built: the real config parser
#      accepts deploy/engine.json (--print-config).
# Tools come from $DEPLOY_VENV, else <repo>/.venv-deploy (deploy/setup-tools,
# run by tools/install-deps --test), else PATH.
#
# Exit status: 0 ok; 1 a check failed; 77 (ctest SKIP) a tool is missing --
# but under CI=true or STRICT=1 a missing tool is an error (1), as test.sh's
# strict mode treats skips.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DEPLOY_VENV:-$root/.venv-deploy}"
strict="${STRICT:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}"
say() { echo "validate: $*" >&2; }

find_tool() {
    if [ -x "$venv/bin/$1" ]; then echo "$venv/bin/$1"; else command -v "$1" || true; fi
}
missing() {
    if [ "$strict" = 1 ]; then
        say "ERROR: $1 not found (run deploy/setup-tools); under CI/STRICT=1 that fails"
        exit 1
    fi
    say "SKIP: $1 not found (run deploy/setup-tools, or tools/install-deps --test)"
    exit 77
}

kv="$(find_tool kubernetes-validate)"
hadolint="$(find_tool hadolint)"
[ -n "$kv" ] || missing kubernetes-validate
[ -n "$hadolint" ] || missing hadolint
py="$(dirname "$kv")/python"
[ -x "$py" ] && "$py" -c 'import yaml' 2>/dev/null || py=python3
"$py" -c 'import yaml' 2>/dev/null || missing "PyYAML (for check_consistency.py)"

fail=0
mapfile -t files < <(find "$root/deploy/k8s" -name '*.yaml' | sort)
[ "${#files[@]}" -gt 0 ] || { say "no manifests under deploy/k8s"; exit 1; }

say "kubernetes-validate --strict: ${#files[@]} files"
"$kv" --strict --quiet "${files[@]}" || { say "FAILED: schema validation"; fail=1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed 's/containerPort: 8080/containerPort: "8080x"/; s/periodSeconds: 2$/periodSecnds: 2/' \
    "$root/deploy/k8s/deployment.yaml" >"$tmp/broken.yaml"
if "$kv" --strict --quiet "$tmp/broken.yaml" >/dev/null 2>&1; then
    say "FAILED: kubernetes-validate accepted a broken manifest"
    fail=1
fi

"$py" "$root/deploy/check_consistency.py" "$root" || fail=1

say "hadolint deploy/Dockerfile"
"$hadolint" "$root/deploy/Dockerfile" || { say "FAILED: hadolint"; fail=1; }

server="${ENGINE_BUILD_DIR:-$root/build}/infer-server"
if [ -x "$server" ]; then
    "$server" --config "$root/deploy/engine.json" --print-config >/dev/null ||
        { say "FAILED: infer-server rejects deploy/engine.json"; fail=1; }
else
    say "note: $server not built; config parse check skipped"
fi

[ "$fail" = 0 ] && say "ok"
exit "$fail"
