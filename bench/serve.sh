#!/bin/sh
# bench/serve.sh BUILD — the serving engine (build/bench/bench_serve) on the
# engine bench models (bench-qwen3moe-q4_K, bench-deepseek2-lite-q4_K,
# generated once under build/benchmodels by tests/fixtures/gen_models.py
# --bench): aggregate generation tokens/s at 1, 4, 8 and 16 concurrent
# sequences, and time to first token of a 1,000-token shared system prompt
# cold, with a prefix-cache hit (another question) and for the same prompt
# again, against one decode step and the engine's own prefill of a prompt of
# the same length. `BENCH_ONLY=serve make bench` runs only this;
# BENCH_SERVE_MODELS picks models (default: qwen3moe deepseek2-lite),
# BENCH_REPS the repetitions (default 3, medians).
set -eu
BUILD=${1:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
MODELS=build/benchmodels
sh tests/fixtures/fetch_tokenizers.sh >/dev/null
"$PYTHON" tests/fixtures/gen_models.py --bench --out "$MODELS" >&2
for m in ${BENCH_SERVE_MODELS:-qwen3moe deepseek2-lite}; do
    echo
    "$BUILD/bench/bench_serve" -m "$MODELS/bench-$m-q4_K.gguf" --conc 1,4,8,16 --sys 1000 \
        --reps "${BENCH_REPS:-3}"
done
