#!/bin/sh
# CLI behaviour: bad input gets a clear error naming what is wrong (exit 1,
# no crash), and the documented outputs appear.
#   sh tests/cli/test_cli.sh BUILD/moegate FIXTURES_DIR
set -u
MG=$1
FIX=$2
M="$FIX/mixtral-tiny-q8_0.gguf"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0

# expect_fail NAME SUBSTRING CMD...: exit status 1 (not a signal) and stderr
# containing SUBSTRING.
expect_fail() {
    name=$1 want=$2
    shift 2
    "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 1 ] && grep -qF -- "$want" "$T/err"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL $name: rc=$rc, stderr: $(head -c 300 "$T/err")"
    fi
}

expect_ok() { # NAME SUBSTRING-IN-STDOUT+STDERR CMD...
    name=$1 want=$2
    shift 2
    "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ] && grep -qF -- "$want" "$T/out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL $name: rc=$rc, output: $(head -c 300 "$T/out")"
    fi
}

expect_fail missing-file "No such file" "$MG" run -m "$T/nope.gguf" --tokens 1
printf 'not a gguf file at all' >"$T/bad.gguf"
expect_fail bad-magic "gguf" "$MG" run -m "$T/bad.gguf" --tokens 1
head -c 100000 "$M" >"$T/trunc.gguf"
expect_fail truncated "gguf" "$MG" run -m "$T/trunc.gguf" --tokens 1
expect_fail token-range "outside the vocabulary" "$MG" run -m "$M" --tokens 1,99999999 -n 1
expect_fail token-syntax "--tokens" "$MG" run -m "$M" --tokens 1,x -n 1
expect_fail bad-temp "temperature" "$MG" run -m "$M" --tokens 1 --temp 1000
expect_fail bad-topp "top_p" "$MG" run -m "$M" --tokens 1 --top-p 0
expect_fail ctx "exceeds the context" "$MG" run -m "$M" --tokens 1,2,3 -n 10 --ctx 5
expect_fail unknown-opt "unknown option" "$MG" run -m "$M" --frobnicate
# domain packs: the shipped ones validate; a broken one is refused with FILE:LINE:COLUMN
if "$MG" domains check domains >"$T/dom.out" 2>&1 && grep -q "3 packs OK" "$T/dom.out"; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL domains-check: $(head -c 300 "$T/dom.out")"
fi
mkdir -p "$T/packs/bad"
printf 'name: bad\nfoo: 1\n' >"$T/packs/bad/domain.yaml"
expect_fail domains-bad "bad/domain.yaml:2:1: error: domain.yaml: unknown key \"foo\"" "$MG" domains check "$T/packs"
expect_fail merge-alone "--merge needs --lora" "$MG" run -m "$M" --tokens 1 --merge
expect_fail kv-size "is not a size" "$MG" run -m "$M" --tokens 1 --kv-memory 12XB
expect_fail kv-tiny "must hold" "$MG" run -m "$M" --tokens 1 --kv-memory 1KiB
expect_fail kv-short "KV blocks" "$MG" run -m "$M" --tokens 1,2,3 -n 200 --kv-memory 64KiB
expect_fail lora-missing "no such file or folder" "$MG" run -m "$M" --tokens 1 --lora /nonexistent/adapter
expect_fail no-model "-m MODEL.gguf is required" "$MG" run --tokens 1
expect_fail bad-isa "unknown ISA" "$MG" run -m "$M" --tokens 1 --isa sse9
# one defect per model file, each named in the error
PYTHON=${PYTHON:-/usr/bin/python3}
"$PYTHON" "$(dirname "$0")/make_broken.py" "$M" "$T/broken" >"$T/cases" || {
    echo "FAIL make_broken.py"
    fail=$((fail + 1))
}
while read -r case want; do
    expect_fail "broken-$case" "$want" "$MG" run -m "$T/broken/$case.gguf" --tokens 1 -n 1
    expect_fail "broken-inspect-$case" "$want" "$MG" model inspect "$T/broken/$case.gguf"
done <"$T/cases"
expect_ok inspect "active per token" "$MG" model inspect "$M"
expect_ok inspect-arch "architecture:    llama" "$MG" model inspect "$M"
expect_ok run-summary "generation 4 tokens" "$MG" run -m "$M" --tokens 1,2,3 -n 4 --temp 0
# the same seed gives the same tokens; sampling (not greedy) is exercised
"$MG" run -m "$M" --tokens 1,2,3 -n 12 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 --seed 7 2>"$T/a" >/dev/null
"$MG" run -m "$M" --tokens 1,2,3 -n 12 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 --seed 7 --threads 1 2>"$T/b" >/dev/null
if [ -s "$T/a" ] && [ "$(grep '^tokens:' "$T/a")" = "$(grep '^tokens:' "$T/b")" ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL seed-reproducible: $(grep '^tokens:' "$T/a") vs $(grep '^tokens:' "$T/b")"
fi
# scalar kernels give the same greedy tokens as the SIMD ones
"$MG" run -m "$M" --tokens 1,2,3 -n 8 --temp 0 --isa scalar 2>"$T/a" >/dev/null
"$MG" run -m "$M" --tokens 1,2,3 -n 8 --temp 0 2>"$T/b" >/dev/null
if [ -s "$T/a" ] && [ "$(grep '^tokens:' "$T/a")" = "$(grep '^tokens:' "$T/b")" ]; then
    pass=$((pass + 1))
else
    fail=$((fail + 1))
    echo "FAIL isa-scalar-equal: $(grep '^tokens:' "$T/a") vs $(grep '^tokens:' "$T/b")"
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
