#!/bin/sh
# bench/redact.sh BUILD — redaction throughput (bench/bench_redact.c), all
# detectors on, over mixed zh/en text with PII and over plain zh and en
# text. Run by bench/run.sh; alone: BENCH_ONLY=redact make bench.
set -eu
BUILD=${1:-build}
"$BUILD/bench/bench_redact" --mb "${BENCH_REDACT_MB:-16}" --reps "${BENCH_REPS:-5}"
