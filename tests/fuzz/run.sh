#!/usr/bin/env bash
# run.sh - fuzz every harness of tests/fuzz/ for a while, or replay the
# committed corpus through every harness.
#
# Usage (from any directory):
#   tests/fuzz/run.sh SECONDS          configure and build build-fuzz/ (clang,
#                                      -DENGINE_FUZZ=ON, ASan+UBSan), then run
#                                      each harness for SECONDS on a copy of
#                                      its corpus, one after the other
#   tests/fuzz/run.sh --replay BUILD   run BUILD/fuzz_<name>_replay over
#                                      tests/fuzz/corpus/<name>/ (what ctest
#                                      fuzz_corpus_replay does; any compiler)
# Environment: FUZZ_BUILD_DIR (default build-fuzz), JOBS (build jobs,
# default 2), FUZZ_ONLY="gguf rpc" to run only those harnesses,
# FUZZ_RUNS=N to stop each harness after N executions (or SECONDS, whichever
# comes first; the long run of docs/testing.md uses FUZZ_RUNS=10000000).
#
# Harnesses are the files tests/fuzz/fuzz_<name>.c. A fuzz run reports per
# harness the executions and the outcome (ok, crash, leak, timeout, oom);
# the input of a finding is kept as FUZZ_BUILD_DIR/findings/<name>-*.
# Exit status: 0 when every harness ran clean; 1 on any finding, build
# failure or missing corpus.
set -uo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$fuzz_dir/../.." && pwd)"

harnesses() {
    local only="${FUZZ_ONLY:-}" src name
    for src in "$fuzz_dir"/fuzz_*.c; do
        name="$(basename "$src" .c)"
        name="${name#fuzz_}"
        if [ -z "$only" ] || [[ " $only " == *" $name "* ]]; then echo "$name"; fi
    done
}

replay() {
    local build="$1" name failed=0
    for name in $(harnesses); do
        if ! "$build/fuzz_${name}_replay" "$fuzz_dir/corpus/$name"; then
            echo "replay of corpus/$name FAILED" >&2
            failed=1
        fi
    done
    return "$failed"
}

# The outcome of one libFuzzer run, from its exit status and log.
outcome() {
    local rc="$1" log="$2"
    if [ "$rc" = 0 ]; then echo ok
    elif grep -q 'ERROR: LeakSanitizer' "$log"; then echo leak
    elif grep -q 'ERROR: libFuzzer: timeout' "$log"; then echo timeout
    elif grep -q 'ERROR: libFuzzer: out-of-memory' "$log"; then echo oom
    else echo crash
    fi
}

fuzz() {
    local seconds="$1" build="${FUZZ_BUILD_DIR:-$repo_root/build-fuzz}" name targets=() failed=0
    for name in $(harnesses); do targets+=("fuzz_$name"); done
    echo "==> building ${targets[*]} in $build" >&2
    mkdir -p "$build"
    # -O1 as OSS-Fuzz builds: two to three times the executions of -O0, asserts kept
    if ! CC=clang cmake -S "$repo_root" -B "$build" -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DENGINE_FUZZ=ON -DENGINE_SANITIZE=ON >"$build/fuzz-configure.log" 2>&1; then
        cat "$build/fuzz-configure.log" >&2
        return 1
    fi
    if ! cmake --build "$build" -j "${JOBS:-2}" --target "${targets[@]}" >"$build/fuzz-build.log" 2>&1; then
        grep -E -A3 'error|Error' "$build/fuzz-build.log" >&2
        return 1
    fi
    mkdir -p "$build/findings"
    local report=()
    for name in $(harnesses); do
        local work log rc execs result
        work="$(mktemp -d)"
        log="$build/findings/$name.log"
        cp -r "$fuzz_dir/corpus/$name/." "$work/"
        echo "==> fuzz_$name for $seconds s${FUZZ_RUNS:+ or $FUZZ_RUNS executions}" >&2
        "$build/fuzz_$name" -max_total_time="$seconds" -runs="${FUZZ_RUNS:--1}" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$build/findings/$name-" "$work" >"$log" 2>&1
        rc=$?
        rm -rf "$work"
        execs="$(awk '/stat::number_of_executed_units/ {print $2}' "$log")"
        result="$(outcome "$rc" "$log")"
        if [ "$result" != ok ]; then
            failed=1
            grep -m 3 -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY' "$log" >&2
        fi
        report+=("$(printf '%-12s %10s execs  %6s s  %s' "$name" "${execs:-?}" "$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log")" "$result")")
    done
    echo "==> summary (logs and inputs of findings: $build/findings/)"
    printf '%s\n' "${report[@]}"
    return "$failed"
}

case "${1:-}" in
--replay)
    [ $# = 2 ] || { echo "usage: $0 --replay BUILD_DIR" >&2; exit 2; }
    replay "$2"
    ;;
'' | *[!0-9]*)
    echo "usage: $0 SECONDS | --replay BUILD_DIR" >&2
    exit 2
    ;;
*) fuzz "$1" ;;
esac
