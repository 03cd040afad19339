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
# Until the tokenizer lands, the prompt is given as token ids (here: ids of
# "Hello, world" in the Qwen3 vocabulary would come from the tokenizer).
"$BUILD/moegate" run -m "$model" --tokens 9707,11,1879,0 -n 32 --temp 0.7 --seed 42
