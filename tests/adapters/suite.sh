#!/bin/sh
# tests/adapters/suite.sh — LoRA adapters through the real program (run by
# tests/run.sh with BUILD, PYTHON, FIXTURES and QUICK in the environment).
#
#   1. every fixture adapter (build/fixtures/adapters, `make fixtures`):
#      `moegate adapter inspect A -m BASE` exits 0 and prints the format,
#      dtype, rank, rsLoRA, expert coverage and "fits: BASE: yes"; against
#      another family's base it exits 1 with a message naming the adapter;
#   2. every loaded matrix equals the reference merge's delta
#      (tool_lora_probe vs merge_ref.py --probe, written independently from
#      the PEFT/GGUF definitions);
#   3. broken inputs (missing, empty folder, truncated or oversized
#      safetensors, bad JSON, DoRA, a model file, random bytes, a truncated
#      GGUF adapter, 300 byte-mutated safetensors files) exit 1 with a
#      "moegate: " message, never a crash; usage errors exit 2;
#   4. (not QUICK) the float64 reference with the adapter merged changes
#      the logits visibly.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
FIX=${FIXTURES:-build/fixtures}
QUICK=${QUICK:-}
MG="$BUILD/moegate"
PROBE="$BUILD/tests/tool_lora_probe"
AD="$FIX/adapters"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
}

if [ ! -d "$AD" ]; then
    echo "adapters: no $AD (run make fixtures)"
    exit 1
fi

family() { # adapter name -> fixture family
    case "$1" in
    qwen3moe-tiny-*) echo qwen3moe-tiny ;;
    qwen2moe-tiny-*) echo qwen2moe-tiny ;;
    mixtral-tiny-*) echo mixtral-tiny ;;
    deepseek2-lite-tiny-*) echo deepseek2-lite-tiny ;;
    deepseek3-tiny-*) echo deepseek3-tiny ;;
    esac
}

# ---- 1. inspect every fixture ---------------------------------------------------
n=0
for a in "$AD"/*; do
    name=$(basename "$a")
    fam=$(family "$name")
    base="$FIX/$fam-f32.gguf"
    "$MG" adapter inspect "$a" -m "$base" >"$T/out" 2>"$T/err"
    rc=$?
    want_fmt="PEFT (adapter_config.json"
    case "$name" in *.gguf) want_fmt="GGUF LoRA" ;; esac
    rank=$(echo "$name" | sed -n 's/.*-r\([0-9]*\)-.*/\1/p')
    [ -n "$rank" ] || rank="4..8"
    dtype=$(echo "$name" | sed 's/\.gguf$//; s/.*-//')
    okay=1
    [ "$rc" -eq 0 ] || okay=0
    grep -q "^format: *$want_fmt" "$T/out" || okay=0
    grep -q "^rank: *$rank\( \|$\)" "$T/out" || okay=0
    grep -q "^dtype: *$dtype$" "$T/out" || okay=0
    grep -q "^fits: *$base: yes" "$T/out" || okay=0
    grep -q "^made for: *hidden size 256, at least [23] layers" "$T/out" || okay=0
    case "$name" in
    *rslora*) grep -q "^rsLoRA: *yes" "$T/out" && grep -q "ffn_up_exps .*experts 4 per layer" "$T/out" || okay=0 ;;
    *-r8-*) grep -q "^rsLoRA: *no" "$T/out" && grep -q "ffn_down_exps .*experts [0-9]* per layer" "$T/out" || okay=0 ;;
    *attn*) grep -q "exps" "$T/out" && okay=0 ;;
    esac
    case "$name" in *fanin*) grep -q "^fan_in_fan_out: *set" "$T/out" || okay=0 ;; esac
    if [ "$okay" -eq 1 ]; then ok; else
        bad "inspect $name (rc $rc)"
        cat "$T/out" "$T/err" | head -30
    fi
    # the q4_K base takes it too
    if [ -z "$QUICK" ]; then
        "$MG" adapter inspect "$a" -m "$FIX/$fam-q4_K.gguf" >"$T/out" 2>&1 && ok || bad "inspect $name on q4_K"
    fi
    # another family's base refuses it, naming the adapter
    case "$fam" in
    qwen3moe-tiny) other=mixtral-tiny ;; mixtral-tiny) other=deepseek2-lite-tiny ;;
    deepseek2-lite-tiny) other=deepseek3-tiny ;; *) other=qwen3moe-tiny ;;
    esac
    "$MG" adapter inspect "$a" -m "$FIX/$other-f32.gguf" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q "^fits: .*: no$" "$T/out" && grep -q "^moegate: lora: .*$name" "$T/err"; then ok; else
        bad "$name on $other: rc $rc"
        cat "$T/err"
    fi
    n=$((n + 1))
done
[ "$n" -ge 30 ] && ok || bad "only $n fixture adapters"

# a scale, and the GGUF and PEFT forms of one adapter describe the same matrices
"$MG" adapter inspect "$AD/mixtral-tiny-peft-r8-f32" >"$T/p" 2>&1
"$MG" adapter inspect "$AD/mixtral-tiny-gguf-r8-f32.gguf" >"$T/g" 2>&1
if grep -q "^memory: *892928 bytes" "$T/p" && grep "^memory:\|^  \|^scale" "$T/p" >"$T/p2" &&
    grep "^memory:\|^  \|^scale" "$T/g" >"$T/g2" && cmp -s "$T/p2" "$T/g2"; then ok; else
    bad "PEFT and GGUF forms of mixtral r8 differ"
    diff "$T/p2" "$T/g2" | head
fi
grep -q "^architecture: *llama (from its module names)" "$T/p" && ok || bad "mixtral PEFT architecture"
"$MG" adapter inspect "$AD/qwen3moe-tiny-peft-pattern-f32" >"$T/out" 2>&1
grep -q "^scale: *2..4$" "$T/out" && grep -q "attn_output .*rank 4$" "$T/out" && ok || bad "pattern adapter"

# ---- 2. loaded matrices against the reference merge ---------------------------------
if [ -x "$PROBE" ]; then
    for a in "$AD"/*; do
        name=$(basename "$a")
        case "$QUICK$name" in --quick*r16* | --quick*fanin* | --quick*rslora*) continue ;; esac
        fam=$(family "$name")
        if "$PROBE" "$FIX/$fam-f32.gguf" "$a" 0.5 >"$T/probe" 2>"$T/err" &&
            "$PYTHON" tests/adapters/merge_ref.py --base "$FIX/$fam-f32.gguf" --adapter "$a" --scale 0.5 \
                --probe "$T/probe" >"$T/out" 2>&1; then ok; else
            bad "probe $name"
            cat "$T/err" "$T/out" | head
        fi
    done
else
    bad "no $PROBE (make check-build)"
fi

# ---- 3. bad inputs -------------------------------------------------------------------
expect_fail() { # want-substring, args...
    want=$1
    shift
    "$MG" adapter inspect "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 1 ] && grep -q "^moegate: " "$T/err" && grep -qF -- "$want" "$T/err"; then ok; else
        bad "inspect $* : rc $rc, wanted '$want'"
        cat "$T/err" | head -5
    fi
}
src="$AD/qwen3moe-tiny-peft-r8-f32"
expect_fail "no such file or folder" "$T/nothing"
mkdir "$T/empty"
expect_fail "needs adapter_config.json" "$T/empty"
mk() { # name: a copy of the r8 PEFT adapter to break
    rm -rf "$T/$1"
    cp -r "$src" "$T/$1"
    echo "$T/$1"
}
d=$(mk trunc)
"$PYTHON" -c "import sys; p=sys.argv[1]; b=open(p,'rb').read(); open(p,'wb').write(b[:len(b)//2])" \
    "$d/adapter_model.safetensors"
expect_fail "end outside the data" "$d"
d=$(mk hugeheader)
"$PYTHON" -c "import sys,struct; p=sys.argv[1]; b=open(p,'rb').read(); open(p,'wb').write(struct.pack('<Q', 1<<40)+b[8:])" \
    "$d/adapter_model.safetensors"
expect_fail "exceeds the limit" "$d"
d=$(mk badjson)
printf '{"peft_type": "LORA", "r": 8,' >"$d/adapter_config.json"
expect_fail "JSON error" "$d"
d=$(mk dora)
"$PYTHON" -c "import sys,json; p=sys.argv[1]; c=json.load(open(p)); c['use_dora']=True; json.dump(c,open(p,'w'))" \
    "$d/adapter_config.json"
expect_fail "DoRA" "$d"
d=$(mk mts)
"$PYTHON" -c "import sys,json; p=sys.argv[1]; c=json.load(open(p)); c['modules_to_save']=['lm_head']; json.dump(c,open(p,'w'))" \
    "$d/adapter_config.json"
expect_fail "modules_to_save" "$d"
d=$(mk rank)
"$PYTHON" -c "import sys,json; p=sys.argv[1]; c=json.load(open(p)); c['r']=4; json.dump(c,open(p,'w'))" \
    "$d/adapter_config.json"
expect_fail "adapter_config.json says 4" "$d"
expect_fail "not a GGUF adapter" "$FIX/qwen3moe-tiny-f32.gguf"
head -c 4096 /dev/urandom >"$T/random.bin"
expect_fail "neither a PEFT adapter folder nor a GGUF file" "$T/random.bin"
expect_fail "pass the folder" "$src/adapter_model.safetensors"
head -c 5000 "$AD/qwen3moe-tiny-gguf-r8-f32.gguf" >"$T/trunc.gguf"
expect_fail "gguf: " "$T/trunc.gguf"
expect_fail "adapter for architecture 'llama', the base model is 'qwen3moe'" \
    "$AD/mixtral-tiny-gguf-r8-f32.gguf" -m "$FIX/qwen3moe-tiny-f32.gguf"
"$MG" adapter inspect >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "no argument: not a usage error"
"$MG" adapter inspect "$src" --bogus >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "unknown option: not a usage error"
"$MG" adapter frobnicate >/dev/null 2>&1
[ $? -eq 2 ] && ok || bad "unknown subcommand: not a usage error"

# byte-mutated safetensors: any answer but a crash
nmut=300
[ -n "$QUICK" ] && nmut=60
d=$(mk mut)
"$PYTHON" - "$src/adapter_model.safetensors" "$T/mutants" "$nmut" <<'EOF'
import os, random, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
hlen = int.from_bytes(data[:8], "little")
os.makedirs(out, exist_ok=True)
rng = random.Random(5)
for i in range(n):
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        # mostly the header, where the structure is
        pos = rng.randrange(0, 8 + hlen) if rng.random() < 0.9 else rng.randrange(len(b))
        b[pos] = rng.choice([rng.randrange(256), ord('"'), ord(','), ord('9'), ord('}'), 0])
    if rng.random() < 0.1:
        b = b[:rng.randrange(len(b))]
    open(os.path.join(out, "%03d" % i), "wb").write(bytes(b))
EOF
crashes=0
for f in "$T"/mutants/*; do
    cp "$f" "$d/adapter_model.safetensors"
    "$MG" adapter inspect "$d" -m "$FIX/qwen3moe-tiny-f32.gguf" >/dev/null 2>"$T/err"
    rc=$?
    if [ "$rc" -gt 1 ]; then
        crashes=$((crashes + 1))
        echo "mutant $(basename "$f"): rc $rc"
        head -3 "$T/err"
    elif [ "$rc" -eq 1 ] && ! grep -q "^moegate: " "$T/err"; then
        crashes=$((crashes + 1))
        echo "mutant $(basename "$f"): no message"
    fi
done
[ "$crashes" -eq 0 ] && ok || bad "$crashes mutated files crashed or failed silently"

# ---- 4. the reference with the adapter merged ------------------------------------------
if [ -z "$QUICK" ]; then
    "$PYTHON" tests/adapters/merge_ref.py --base "$FIX/mixtral-tiny-f32.gguf" \
        --adapter "$AD/mixtral-tiny-peft-r8-f32" --tokens 100,101,102,103,104,105,106,107 \
        --generate 2 >"$T/out" 2>&1
    change=$(sed -n 's/.*max |logit change| \([0-9.e+-]*\).*/\1/p' "$T/out")
    if [ -n "$change" ] && "$PYTHON" -c "import sys; sys.exit(0 if 0.1 < float('$change') < 20 else 1)"; then ok; else
        bad "reference merge: logit change '$change'"
        cat "$T/out"
    fi
fi

echo "adapters: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
