#!/bin/sh
# Runs every test suite against the binaries under $BUILD and prints one
# summary line "tests: N passed, M failed" (suites, not cases: each suite
# prints its own case counts). Exit status 1 when any suite failed.
#   BUILD=build PYTHON=/usr/bin/python3 sh tests/run.sh [--quick]
# --quick (used for the sanitizer build): unit tests, the corruption test and
# the reference check of three small models only.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
QUICK=${1:-}
FIX=${FIXTURES:-build/fixtures}
pass=0
fail=0
failed=""

# Each suite's output is kept in $logs/<name> and shown as it runs; the
# end of the run repeats the FAIL lines and the last lines of every failed
# suite, so a log that keeps only its tail (CI's) still says what failed.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
suite() { # name, command...
    name=$1
    shift
    echo "=== $name"
    # to a file, shown as it grows; not through a pipe, which a server the
    # suite leaves behind would hold open
    "$@" >"$logs/$name" 2>&1 &
    pid=$!
    tail -s 0.2 -n +1 -f --pid="$pid" "$logs/$name"
    wait "$pid"
    rc=$?
    if [ "$rc" = 0 ]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed $name"
        echo "=== $name FAILED"
    fi
}

disk_free() { # a full disk fails suites in ways that look like bugs
    df -Pk . "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR > 1 && !seen[$6]++ { printf "disk: %s has %.1f GB free\n", $6, $4 / 1048576 }'
}
disk_free

report_failures() {
    disk_free
    for name in $failed; do
        echo "=== $name FAILED: its FAIL lines, then its last 30 lines"
        grep -E '^(not ok|FAIL)|FAIL[: ]' "$logs/$name" | head -40
        echo "--- last lines of $name"
        tail -n 30 "$logs/$name"
    done
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    suite "$(basename "$t")" "$t"
done

seed_model="$FIX/qwen3moe-tiny-q4_K.gguf"
[ -f "$seed_model" ] || seed_model=""
suite gguf_corrupt "$BUILD/tests/gguf_corrupt" -n 10000 $seed_model

# Module suites: tests/<module>/suite.sh, run with BUILD, PYTHON, FIXTURES and
# QUICK in the environment; each exits non-zero when a case failed.
for s in tests/*/suite.sh; do
    [ -f "$s" ] || continue
    suite "$(basename "$(dirname "$s")")" env BUILD="$BUILD" PYTHON="$PYTHON" FIXTURES="$FIX" \
        QUICK="$QUICK" sh "$s"
done

if [ "$QUICK" = "--quick" ]; then
    suite reference "$PYTHON" tests/reference/compare.py --moegate "$BUILD/moegate" \
        --fixtures "$FIX" --only mixtral-tiny-q8_0 --only qwen2moe-tiny-q4_K \
        --only deepseek3-tiny-q8_0 --only deepseek2-lite-tiny-q8_0 \
        --adapters "$FIX/adapters" --adapter-bases q8_0
else
    suite reference "$PYTHON" tests/reference/compare.py --moegate "$BUILD/moegate" --fixtures "$FIX" \
        --adapters "$FIX/adapters" --adapter-bases f32 q4_K
    # merged at load (moegate run --merge) into f32, f16 and q8_0 bases: the
    # same tolerances (a q4_K base adds its own rounding of the merged
    # weights, about 3-7e-2 relative, and is not checked this way)
    suite reference-merged "$PYTHON" tests/reference/compare.py --moegate "$BUILD/moegate" \
        --fixtures "$FIX" --only qwen3moe-tiny-f32 --only mixtral-tiny-f32 --only qwen2moe-tiny-f16 \
        --only deepseek2-lite-tiny-q8_0 --only deepseek3-tiny-f32 --adapters "$FIX/adapters" --merge
    suite cli sh tests/cli/test_cli.sh "$BUILD/moegate" "$FIX"
    # libFuzzer targets (built by `make fuzz`), a short seeded run each,
    # starting from tests/fuzz/corpus/<target>/ when the target has one,
    # else from the corruption test's seed GGUF file.
    for f in build/fuzz/fuzz_*; do
        [ -x "$f" ] || continue
        corpus=$(mktemp -d)
        seeds="tests/fuzz/corpus/$(basename "$f")"
        if [ -d "$seeds" ]; then
            cp "$seeds"/* "$corpus"/
        else
            "$BUILD/tests/gguf_corrupt" -o "$corpus/seed.gguf" >/dev/null
        fi
        suite "$(basename "$f")" "$f" -max_total_time="${FUZZ_SECONDS:-20}" -seed=1 \
            -print_final_stats=1 "$corpus"
        rm -rf "$corpus"
    done
fi

[ -z "$failed" ] || report_failures
echo "tests: $pass passed, $fail failed"
[ "$fail" -eq 0 ] || { echo "failed suites:$failed"; exit 1; }
