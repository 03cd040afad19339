#!/bin/sh
# The quickstart: build moegate, make the demo model, generate text.
# Usage: make quickstart   (installs the Debian packages it needs first)
# Grows as the gateway, audit and domain packs land.
set -eu
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
sh tests/fixtures/fetch_tokenizers.sh >/dev/null
"$PYTHON" tests/fixtures/gen_models.py --out build/fixtures --only qwen3moe-tiny-q4_K
model=build/fixtures/qwen3moe-tiny-q4_K.gguf
echo
"$BUILD/moegate" model inspect "$model"
echo
# The demo model has random weights: the text is gibberish, but every step
# is the real one (tokenizer, chat template, forward pass, sampling, streaming).
"$BUILD/moegate" tokenize -m "$model" -p "Hello, world! 你好，世界"
echo
"$BUILD/moegate" run -m "$model" --chat --system "You are a concise assistant." \
    -p "What is a bond's yield to maturity?" -n 32 --temp 0.7 --seed 42
