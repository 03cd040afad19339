#!/bin/sh
# bench/lora.sh BUILD — LoRA adapters applied per sequence
# (build/bench/bench_lora) on the engine bench model bench-qwen3moe-q4_K:
# 8 concurrent sequences generating, (a) base only, (b) one adapter for all,
# (c) a different adapter for each, rank 16 (bf16) on every attention and
# routed-expert projection; interleaved rep by rep in one run, medians.
# `BENCH_ONLY=lora make bench` runs only this; BENCH_REPS (default 5).
set -eu
BUILD=${1:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
MODELS=build/benchmodels
sh tests/fixtures/fetch_tokenizers.sh >/dev/null
"$PYTHON" tests/fixtures/gen_models.py --bench --out "$MODELS" >&2
"$BUILD/bench/bench_lora" -m "$MODELS/bench-qwen3moe-q4_K.gguf" --conc 8 --rank 16 --type bf16 \
    --reps "${BENCH_REPS:-5}"
