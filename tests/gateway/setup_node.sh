#!/bin/sh
# Installs the official `openai` npm package (pinned) into
# "$MOEGATE_CACHE/node" (default ~/.cache/moegate/node), next to the
# tokenizer references, for tests/gateway/openai_client.mjs. Install
# scripts are not run. Prints the folder that holds node_modules; a no-op
# when the package is already there.
set -eu
CACHE="${MOEGATE_CACHE:-${HOME:-/tmp}/.cache/moegate}"
DIR="$CACHE/node"
PKGS="openai@6.30.1"
stamp="$DIR/.installed-gateway"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$PKGS" ] || [ ! -d "$DIR/node_modules/openai" ]; then
    mkdir -p "$DIR"
    [ -f "$DIR/package.json" ] || echo '{"name":"moegate-test-refs","private":true}' >"$DIR/package.json"
    # shellcheck disable=SC2086
    (cd "$DIR" && npm install --silent --no-audit --no-fund --ignore-scripts $PKGS) >&2
    echo "$PKGS" >"$stamp"
fi
echo "$DIR"
