#!/bin/sh
# tests/domains/mkpack.sh DIR... — writes a minimal valid domain pack into
# each DIR (its name is the folder's): a one-line system prompt, two router
# examples, one eval prompt, no disclaimer, no guardrail beyond the cap. For
# suites that need a policy's domains[].pack to load without testing packs
# (tests/domains/suite.sh runs the shipped ones).
set -eu
for dir in "$@"; do
    name=$(basename "$dir")
    mkdir -p "$dir"
    printf 'Answer briefly.\n' >"$dir/sp.md"
    printf '%s question one\n%s question two\n' "$name" "$name" >"$dir/examples.txt"
    printf '{"prompt": "a %s question", "lang": "en"}\n' "$name" >"$dir/eval.jsonl"
    cat >"$dir/domain.yaml" <<YAML
name: $name
description: test pack
system_prompt: {zh: sp.md, en: sp.md}
defaults: {temperature: 1, top_p: 1}
guardrails: {max_tokens: 1048576}
examples: [examples.txt]
eval: eval.jsonl
YAML
done
