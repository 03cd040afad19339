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

# BENCH_ONLY=machine,engine,<name> runs only those sections; <name> is one
# of the module benchmarks bench/<name>.sh (each gets BUILD as $1).
ONLY=",${BENCH_ONLY:-all},"
want() { case "$ONLY" in *,all,* | *,"$1",*) return 0 ;; *) return 1 ;; esac; }

# ---- machine ceilings ------------------------------------------------------
if want machine; then
# -O2 only: no -march, no -ffast-math; every SIMD/AMX kernel carries its own
# target attribute and is chosen at run time.
"$CC" -O2 -pthread -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
    $(pkg-config --cflags openblas) \
    -o "$OUT/machine" bench/machine.c \
    $(pkg-config --libs openblas) -lm
"$OUT/machine" --json-out "$OUT/machine.json" "$@"
echo "machine ceilings: JSON in $OUT/machine.json"
fi

# ---- engine benchmark --------------------------------------------------------
# Bench models, 6 layers each, in q8_0 and q4_K (generated once, ~13 GB,
# under build/benchmodels):
#   qwen3moe       Qwen3-30B-A3B's per-layer shape (dim 2048, 128 experts,
#                  top-8, expert FFN 768, 32 q heads, 4 kv heads, head dim 128)
#   deepseek2-lite DeepSeek-V2-Lite's (dim 2048, MLA with 16 heads,
#                  kv_lora_rank 512, qk 128 + 64 rope, v 128; 64 experts
#                  top-6 + 2 shared, expert FFN 1408; 1 dense + 5 MoE layers)
# BENCH_MODELS="qwen3moe deepseek2-lite" (the default) picks among them.
PYTHON=${PYTHON:-/usr/bin/python3}
if want engine; then
MODELS=build/benchmodels
sh tests/fixtures/fetch_tokenizers.sh >/dev/null
"$PYTHON" tests/fixtures/gen_models.py --bench --out "$MODELS"
: >"$OUT/engine.jsonl"
for model in ${BENCH_MODELS:-qwen3moe deepseek2-lite}; do
    for q in q8_0 q4_K; do
        "$BUILD/moegate" bench -m "$MODELS/bench-$model-$q.gguf" --threads 1,2 \
            --pp "${BENCH_PP:-256}" --tg "${BENCH_TG:-32}" --reps "${BENCH_REPS:-5}" --json \
            | tee -a "$OUT/engine.jsonl"
    done
done
echo
"$PYTHON" bench/engine_table.py "$OUT/machine.json" "$OUT/engine.jsonl"
fi

# ---- module benchmarks (tokenizer, redaction, audit, ...) ---------------------
for b in bench/*.sh; do
    [ -f "$b" ] || continue
    name=$(basename "$b" .sh)
    [ "$name" = run ] && continue
    want "$name" || continue
    echo
    echo "== $name"
    PYTHON="$PYTHON" sh "$b" "$BUILD"
done
