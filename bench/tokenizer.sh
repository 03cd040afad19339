#!/bin/sh
# bench/tokenizer.sh BUILD — encode throughput of moegate's tokenizers against
# the JS reference tokenizers, in the same run, on the same texts:
#   English  tests/tokenizer/corpus/en.txt                     (38 KB)
#   Chinese  tests/tokenizer/corpus/zh_hans.txt + zh_hant.txt  (51 KB)
# One thread; each call encodes the whole text as plain text with a fresh
# cache (moegate: build/bench/bench_tokenizer, median of 21 calls; JS:
# tests/tokenizer/ref.mjs bench, median of 5 calls after a warm-up).
# MB = 10^6 bytes of UTF-8 input. `BENCH_ONLY=tokenizer make bench` runs only this.
set -eu
BUILD=${1:-build}
OUT="$BUILD/bench"
mkdir -p "$OUT"
node_dir=$(sh tests/tokenizer/setup_node.sh)
sh tests/fixtures/fetch_tokenizers.sh >"$OUT/tokenizers.txt"
cat tests/tokenizer/corpus/en.txt >"$OUT/tok-en.txt"
cat tests/tokenizer/corpus/zh_hans.txt tests/tokenizer/corpus/zh_hant.txt >"$OUT/tok-zh.txt"
echo "| tokenizer | text | KB | tokens | moegate MB/s | JS reference MB/s | ratio |"
echo "|---|---|---:|---:|---:|---:|---:|"
while read -r name dir; do
    for lang in en zh; do
        ours=$("$BUILD/bench/bench_tokenizer" "$dir" "$OUT/tok-$lang.txt" 21)
        ref=$(node tests/tokenizer/ref.mjs "$node_dir" bench "$name" "$OUT/tok-$lang.txt" 5)
        echo "$name $lang $ours $ref" | awk '{
            printf "| %s | %s | %.0f | %d | %.1f | %.2f | %.0fx |\n",
                   $1, ($2 == "en" ? "English" : "Chinese"), $3 / 1000, $4, $6, $10, $6 / $10 }'
    done
done <"$OUT/tokenizers.txt"
