#!/usr/bin/env bash
# Build and run every test, in three phases:
#   1. Release build in build/        -> ctest (all tests)
#   2. ASan + UBSan build in build-asan/ (-DENGINE_SANITIZE=ON)
#                                      -> ctest -LE slow (tests labelled `slow`
#                                         take too long under the sanitizers and
#                                         already ran in phase 1)
#   3. ThreadSanitizer build in build-tsan/ (-DENGINE_TSAN=ON)
#                                      -> ctest -L threads (the tests of the
#                                         threaded code; tests/tsan.supp names
#                                         the uninstrumented libraries)
#   4. libFuzzer build in build-fuzz/ (clang, ASan+UBSan)
#                                      -> tests/fuzz/run.sh $FUZZ_SECONDS
#                                         (default 10 s per harness; the long
#                                         runs are in docs/testing.md)
# Missing system packages are installed first (tools/install-deps) and the
# models are fetched (tools/fetch-model --gemma: SmolLM2 and Gemma 3 270M).
# Without a model, the tests that need it skip (ctest reports them as "Not Run ... Skipped") -- except
# under CI (CI=true, or STRICT=1): there a model that cannot be fetched fails
# the run at once, and a phase in which any test skipped fails, so a green
# run means every test ran.
#
# Usage: ./test.sh            (from any directory)
#   JOBS=N           parallel build jobs (default: number of cores)
#   SKIP_ASAN=1      skip phase 2
#   SKIP_TSAN=1      skip phase 3
#   SKIP_FUZZ=1      skip phase 4; FUZZ_SECONDS=N its seconds per harness
#   SKIP_DEPS=1      do not check/install system packages
#   STRICT=0|1       skipped tests fail the phase (default: 1 under CI=true)
#
# Exit status: 0 when every phase built and all its tests passed or skipped;
# 1 otherwise. Both phases always run; the summary at the end lists each.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$repo_root" || exit 1

jobs="${JOBS:-$(nproc 2>/dev/null || echo 2)}"
summary=()
failed=0

log() { echo "==> $*" >&2; }

if [ "${SKIP_DEPS:-0}" != 1 ]; then
    tools/install-deps --test || { log "installing system packages failed"; exit 1; }
fi

strict="${STRICT:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}"

model_ok=1
if ! tools/fetch-model --gemma; then
    model_ok=0
    if [ "$strict" = 1 ]; then
        log "ERROR: the model could not be fetched; under CI that fails the run"
        echo "RESULT: FAILED (no model)"
        exit 1
    fi
    log "WARNING: the model could not be fetched; tests that need it will be SKIPPED"
fi

# phase NAME BUILD_DIR CMAKE_ARGS CTEST_ARGS
phase() {
    local name="$1" dir="$2" cmake_args="$3" ctest_args="$4" t0 t1 rc=0
    t0=$(date +%s)
    log "[$name] configure + build in $dir/"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    if ! cmake -S . -B "$dir" $cmake_args >"$dir/configure.log" 2>&1; then
        cat "$dir/configure.log" >&2
        rc=1
    elif ! cmake --build "$dir" -j "$jobs"; then
        rc=1
    fi
    if [ "$rc" != 0 ]; then
        t1=$(date +%s)
        summary+=("[$name] BUILD FAILED ($((t1 - t0)) s)")
        failed=1
        return
    fi
    log "[$name] ctest $ctest_args"
    # shellcheck disable=SC2086
    ctest --test-dir "$dir" --output-on-failure $ctest_args 2>&1 | tee "$dir/ctest.log"
    rc=${PIPESTATUS[0]}
    t1=$(date +%s)
    [ "$rc" = 0 ] || failed=1
    local line skipped
    line=$(grep -E 'tests passed|tests failed' "$dir/ctest.log" | tail -n 1)
    summary+=("[$name] ${line:-ctest exited with status $rc} ($((t1 - t0)) s incl. build)")
    skipped=$(grep -c '(Skipped)' "$dir/ctest.log" || true)
    if [ "$strict" = 1 ] && [ "$skipped" != 0 ]; then
        summary+=("[$name] FAILED: $skipped test(s) skipped, and skips fail under CI/STRICT=1")
        failed=1
    fi
    while IFS= read -r l; do summary+=("        $l"); done < <(
        sed -n '/^The following tests \(FAILED\|did not run\):/,/^$/p' "$dir/ctest.log" |
            grep -v -e '^$' -e '^Errors while running CTest')
}

phase release build "-DCMAKE_BUILD_TYPE=Release -DENGINE_SANITIZE=OFF" ""

if [ "${SKIP_ASAN:-0}" != 1 ]; then
    # Leak checking stays on (ASan's default on Linux); UBSan findings abort
    # (-fno-sanitize-recover) with a stack trace.
    export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    # The sanitizer flags bring their own -O1 -g (CMakeLists.txt).
    phase asan+ubsan build-asan "-DCMAKE_BUILD_TYPE=Release -DENGINE_SANITIZE=ON" "-LE slow"
fi

if [ "${SKIP_TSAN:-0}" != 1 ]; then
    # A report makes the process exit 66 (the test, or the server it runs,
    # then fails); halt_on_error=0 lets one run show every race.
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1 suppressions=$repo_root/tests/tsan.supp}"
    phase tsan build-tsan "-DCMAKE_BUILD_TYPE=Release -DENGINE_TSAN=ON" "-L threads"
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    t0=$(date +%s)
    log "[fuzz] tests/fuzz/run.sh ${FUZZ_SECONDS:-10}"
    mkdir -p build-fuzz
    if JOBS="$jobs" tests/fuzz/run.sh "${FUZZ_SECONDS:-10}" 2>&1 | tee build-fuzz/run.log; then
        result="every harness ran clean"
    else
        result="FAILED (a finding or a build failure; see build-fuzz/run.log)"
        failed=1
    fi
    summary+=("[fuzz] $result ($(($(date +%s) - t0)) s incl. build)")
    while IFS= read -r l; do summary+=("        $l"); done < <(grep -E " execs " build-fuzz/run.log)
fi

echo
echo "==================== test.sh summary ===================="
for s in "${summary[@]}"; do echo "$s"; done
[ "$model_ok" = 1 ] || echo "NOTE: model not available; model-dependent tests were skipped"
if [ "$failed" = 0 ]; then
    echo "RESULT: OK"
else
    echo "RESULT: FAILED"
fi
exit "$failed"
