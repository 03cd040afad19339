#!/bin/sh
# tests/policy/suite.sh — `moegate policy check` and `moegate policy hash-key`
# through the real program (run by tests/run.sh with BUILD, PYTHON, QUICK).
#
# Each tests/policy/cases/NAME.yaml is checked inside a fixture tree that has
# the files the cases refer to; its stderr must equal NAME.expect exactly
# (@DIR@ stands for the tree), and the exit status must be 1 when the
# expected output holds an error, 0 otherwise. Then: policies/example.yaml
# is valid in a tree with its files, hash-key matches Python's hashlib,
# never takes a key from argv and never echoes one, and --generate prints a
# key whose hash it prints.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
MG="$(cd "$BUILD" && pwd)/moegate"
CASES="$(pwd)/tests/policy/cases"
EXAMPLE="$(pwd)/policies/example.yaml"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
T=$(cd "$T" && pwd -P)
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
}
unset MG_SUITE_UNSET_DSN

# ---- fixture tree -------------------------------------------------------------
tree="$T/tree"
mkdir -p "$tree/tls" "$tree/spool" "$tree/secrets" "$tree/router"
sh tests/domains/mkpack.sh "$tree/packs/finance" "$tree/packs/medical"
: >"$tree/tls/server.crt"
: >"$tree/router/ood.jsonl"
: >"$tree/model.gguf"
(umask 077 && : >"$tree/tls/server.key" && : >"$tree/secrets/db.conninfo")
head -c 32 /dev/urandom >"$tree/secrets/open.key"
chmod 644 "$tree/secrets/open.key"

# ---- schema cases -----------------------------------------------------------------
for y in "$CASES"/*.yaml; do
    name=$(basename "$y" .yaml)
    cp "$y" "$tree/"
    (cd "$tree" && "$MG" policy check "$name.yaml" >"$T/out" 2>"$T/err")
    rc=$?
    sed "s|@DIR@|$tree|g" "$CASES/$name.expect" >"$T/want"
    want_rc=0
    grep -q ': error: ' "$T/want" && want_rc=1
    if [ "$rc" -eq "$want_rc" ] && cmp -s "$T/err" "$T/want"; then
        ok
    else
        bad "case $name: rc=$rc (want $want_rc)"
        diff "$T/want" "$T/err" | head -20
    fi
    rm -f "$tree/$name.yaml"
done

# a valid file with warnings says so in its summary
cp "$CASES/valid_warnings.yaml" "$tree/"
(cd "$tree" && "$MG" policy check valid_warnings.yaml >"$T/out" 2>/dev/null)
grep -q '^valid_warnings.yaml: valid: 1 tenants, 0 API keys, 1 domains, 0 adapters, 2 redaction rules; listening on localhost:8080 (plain HTTP); 3 warnings$' "$T/out" &&
    ok || bad "valid_warnings summary: $(cat "$T/out")"

# secrets from weak.yaml never appear in what check prints
cp "$CASES/weak.yaml" "$tree/"
(cd "$tree" && "$MG" policy check weak.yaml >"$T/out" 2>&1)
if grep -q -e 'S3cr3t-Pa55' -e 'mg_Zx8vQk2' -e '9F5E5DFD' "$T/out"; then
    bad "check echoed a secret"
else
    ok
fi

# ---- the example policy ------------------------------------------------------------
ex="$T/example"
mkdir -p "$ex/tls" "$ex/models" "$ex/adapters" "$ex/secrets" "$ex/keys" "$ex/spool"
cp -r domains "$ex/domains" # the shipped packs, as the example names them
for f in tls/server.crt tls/clients-ca.crt models/Qwen3-30B-A3B-Q4_K_M.gguf \
    adapters/finance-lora.gguf adapters/medical-lora.gguf; do
    : >"$ex/$f"
done
(umask 077 && for f in tls/server.key secrets/audit-db.conninfo keys/checkpoint-ed25519.pem; do
    : >"$ex/$f"
done && head -c 32 /dev/urandom >"$ex/keys/audit-payload.key")
cp "$EXAMPLE" "$ex/policy.yaml"
if "$MG" policy check "$ex/policy.yaml" >"$T/out" 2>"$T/err" && [ ! -s "$T/err" ] &&
    grep -q 'valid: 4 tenants, 5 API keys, 3 domains, 2 adapters, 11 redaction rules' "$T/out"; then
    ok
else
    bad "example.yaml: $(cat "$T/err" "$T/out" | head -5)"
fi

# the packs the policy names are checked too: a broken one fails the check at
# its FILE:LINE:COL; a pack whose adapter the policy defines but the domain
# does not use is a warning
cp -r "$ex" "$T/expack"
sed -i 's/^  temperature: 0.3$/  temperature: 9/' "$T/expack/domains/finance/domain.yaml"
if "$MG" policy check "$T/expack/policy.yaml" >"$T/out" 2>"$T/err"; then
    bad "a broken pack passed policy check"
else
    grep -q "domains/finance/domain.yaml:[0-9]*:[0-9]*: error: defaults.temperature" "$T/err" &&
        grep -q "is not valid: its domain packs: 1 error" "$T/err" && ok ||
        bad "broken pack: $(cat "$T/err")"
fi
cp "$ex/domains/finance/domain.yaml" "$T/expack/domains/finance/domain.yaml"
sed -i 's/^    adapter: medical-lora$//' "$T/expack/policy.yaml"
if "$MG" policy check "$T/expack/policy.yaml" >"$T/out" 2>"$T/err" &&
    grep -q "warning: domains: domain 'medical' has no adapter, so the base model answers it, though its pack was made for adapter 'medical-lora'" "$T/err"; then
    ok
else
    bad "unused pack adapter: $(cat "$T/err" "$T/out")"
fi

# a file that is not there
if "$MG" policy check "$T/nope.yaml" >/dev/null 2>"$T/err"; then
    bad "missing file accepted"
else
    grep -q "cannot open '$T/nope.yaml'" "$T/err" && ok || bad "missing file: $(cat "$T/err")"
fi

# ---- hash-key -------------------------------------------------------------------------
key='k7Qp-2xZr_9LmWv4TnBs8YcHd3JfGe6A'
want=$("$PYTHON" -c "import hashlib,sys; print('sha256:'+hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$key")
got=$(printf '%s\n' "$key" | "$MG" policy hash-key 2>"$T/err")
[ "$got" = "$want" ] && ok || bad "hash-key: got '$got', want '$want'"
grep -q "$key" "$T/err" && bad "hash-key echoed the key on stderr" || ok

# a key on the command line is refused, and not repeated
if "$MG" policy hash-key "$key" >"$T/out" 2>"$T/err"; then
    bad "hash-key took a key from argv"
else
    grep -q "$key" "$T/out" "$T/err" && bad "hash-key repeated an argv key" || ok
fi

# nothing on stdin
if printf '' | "$MG" policy hash-key >/dev/null 2>"$T/err"; then
    bad "hash-key accepted an empty key"
else
    grep -q 'no key on stdin' "$T/err" && ok || bad "empty key: $(cat "$T/err")"
fi

# --generate: a fresh key once, and the hash of exactly that key
"$MG" policy hash-key --generate >"$T/gen" 2>/dev/null
gk=$(sed -n 's/^key:  //p' "$T/gen")
gh=$(sed -n 's/^hash: //p' "$T/gen")
gw=$("$PYTHON" -c "import hashlib,sys; print('sha256:'+hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$gk")
if printf '%s' "$gk" | grep -Eq '^mg_[A-Za-z0-9_-]{43}$' && [ "$gh" = "$gw" ]; then
    ok
else
    bad "--generate: key '$gk' hash '$gh' (want '$gw')"
fi
"$MG" policy hash-key --generate >"$T/gen2" 2>/dev/null
cmp -s "$T/gen" "$T/gen2" && bad "--generate repeated a key" || ok

echo "policy suite: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
