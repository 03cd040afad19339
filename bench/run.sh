#!/bin/sh
# bench/run.sh BUILD_DIR [machine options] — the `make bench` driver.
#
# Builds bench/machine.c on its own (it links only OpenBLAS, none of the
# engine) into BUILD_DIR/bench/, runs it, and keeps its JSON next to the
# binary. Extra arguments go to the machine benchmark, e.g. `--quick` or
# `--only mem,blas`; see bench/README.md.
set -eu

BUILD=${1:-build}
[ $# -gt 0 ] && shift
CC=${CC:-cc}
OUT="$BUILD/bench"
mkdir -p "$OUT"

# ---- machine ceilings ------------------------------------------------------
# -O2 only: no -march, no -ffast-math; every SIMD/AMX kernel carries its own
# target attribute and is chosen at run time.
"$CC" -O2 -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
    $(pkg-config --cflags openblas) \
    -o "$OUT/machine" bench/machine.c \
    $(pkg-config --libs openblas) -lm
"$OUT/machine" --json-out "$OUT/machine.json" "$@"
echo "machine ceilings: JSON in $OUT/machine.json"

# ---- engine benchmark --------------------------------------------------------
# LEAD: append the engine benchmark (build/moegate bench ...) below this line.
