#!/usr/bin/env python3
"""Compares moegate's built-in chat templates with the published Jinja
templates rendered by @huggingface/jinja (tests/tokenizer/ref.mjs).

    python3 tests/tokenizer/test_chat.py --moegate build/moegate

Templates: Qwen3 and DeepSeek-V3 from the tokenizer_config.json their npm
packages ship; Qwen2, ChatML, DeepSeek-R1, Mistral and the original Mixtral template from
tests/tokenizer/templates/*.json (the published template texts, with the
model each comes from). Every conversation of
tests/tokenizer/conversations.jsonl is rendered by both; the texts must be
identical character for character, and where the reference template raises
an error (roles out of order, a role it does not know) moegate must refuse
too. The model's own template text must also select the right built-in
(moegate template -m / --hf). Exit status 1 on any difference.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run(cmd, lines):
    p = subprocess.run(cmd, input="".join(l + "\n" for l in lines), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, encoding="utf-8")
    if p.returncode != 0:
        sys.exit("test_chat: %s failed (%d):\n%s" % (" ".join(cmd), p.returncode, p.stderr[-2000:]))
    out = [json.loads(l) for l in p.stdout.split("\n") if l]
    if len(out) != len(lines):
        sys.exit("test_chat: %s gave %d results for %d conversations" % (cmd[0], len(out), len(lines)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moegate", required=True)
    ap.add_argument("--fixtures", default="build/fixtures")
    args = ap.parse_args()
    node_dir = subprocess.run(["sh", os.path.join(HERE, "setup_node.sh")], check=True,
                              stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    out = subprocess.run(["sh", os.path.join(ROOT, "tests", "fixtures", "fetch_tokenizers.sh")], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    dirs = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)

    with open(os.path.join(HERE, "conversations.jsonl"), encoding="utf-8") as f:
        convs = [l.rstrip("\n") for l in f if l.strip()]
    tmp = tempfile.mkdtemp(prefix="moegate-chat-")
    try:
        return compare_all(args, node_dir, dirs, convs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_all(args, node_dir, dirs, convs, tmp):
    specs = {}
    for name, pkg in (("qwen3", "qwen3"), ("deepseek3", "deepseek_v3")):
        with open(os.path.join(dirs[pkg], "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        tok = lambda v: v.get("content") if isinstance(v, dict) else (v or "")
        path = os.path.join(tmp, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dict(template=cfg["chat_template"], bos_token=tok(cfg.get("bos_token")),
                           eos_token=tok(cfg.get("eos_token"))), f)
        specs[name] = path
    for name in ("qwen2", "chatml", "deepseek-r1", "mistral", "mistral-legacy"):
        specs[name] = os.path.join(HERE, "templates", name + ".json")

    ok = True
    failures = []
    for name, spec_path in specs.items():
        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)
        ref = run(["node", os.path.join(HERE, "ref.mjs"), node_dir, "render", spec_path], convs)
        ours = run([args.moegate, "template", "--name", name, "--bos", spec["bos_token"],
                    "--eos", spec["eos_token"]], convs)
        same = refused = 0
        for i, (a, b) in enumerate(zip(ours, ref)):
            conv_name = json.loads(convs[i]).get("name", str(i))
            if isinstance(b, str) and "[object " in b:
                # The template concatenated an object into a string: JS prints
                # "[object Map]" (Python would print a dict repr). Neither is a
                # prompt; moegate refuses such conversations (DeepSeek wants
                # tool arguments as a JSON string).
                b = {"error": "object concatenated into a string"}
            if isinstance(b, dict) and "error" in b:
                if isinstance(a, dict) and "error" in a:
                    refused += 1
                else:
                    failures.append("%s/%s: the reference refuses (%s) but moegate rendered it"
                                    % (name, conv_name, b["error"]))
            elif a == b:
                same += 1
            else:
                if isinstance(a, dict):
                    failures.append("%s/%s: moegate refused (%s); the reference renders it" % (name, conv_name, a["error"]))
                else:
                    k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
                    failures.append("%s/%s: first difference at character %d\n    moegate:   %r\n    reference: %r"
                                    % (name, conv_name, k, a[max(0, k - 40):k + 40], b[max(0, k - 40):k + 40]))
        good = same + refused
        ok &= good == len(convs)
        print("%-16s %3d/%d identical (%d rendered, %d refused by both)" % (name, good, len(convs), same, refused))

    # the models' own template texts choose the built-in
    for pkg, want in (("qwen3", "qwen3"), ("deepseek_v3", "deepseek3")):
        a = run([args.moegate, "template", "--hf", dirs[pkg]], convs)
        b = run([args.moegate, "template", "--name", want, "--bos",
                 json.load(open(specs[want], encoding="utf-8"))["bos_token"], "--eos",
                 json.load(open(specs[want], encoding="utf-8"))["eos_token"]], convs)
        same = a == b
        ok &= same
        print("%-16s template text of the %s package selects %s: %s" % ("detect", pkg, want, "yes" if same else "NO"))

    # every published template text selects its own built-in
    for name, spec_path in specs.items():
        spec = json.load(open(spec_path, encoding="utf-8"))
        tf = os.path.join(tmp, name + ".jinja")
        with open(tf, "w", encoding="utf-8") as f:
            f.write(spec["template"])
        a = run([args.moegate, "template", "--text", tf, "--bos", spec["bos_token"], "--eos", spec["eos_token"]], convs)
        b = run([args.moegate, "template", "--name", name, "--bos", spec["bos_token"], "--eos", spec["eos_token"]],
                convs)
        ok &= a == b
        print("%-16s the published %s template text selects %s: %s" % ("detect", name, name, "yes" if a == b else "NO"))

    # ... and so do the GGUF fixtures' template texts, or their architecture
    # and pre-tokenizer when they carry none (Mixtral's vocabulary package has none)
    for fixture, want in (("qwen3moe-tiny-q8_0.gguf", "qwen3"), ("qwen2moe-tiny-q8_0.gguf", "qwen2"),
                          ("tokenizers/deepseek_v3.gguf", "deepseek3"), ("mixtral-tiny-q8_0.gguf", "mistral-legacy")):
        path = os.path.join(args.fixtures, fixture)
        spec = json.load(open(specs[want], encoding="utf-8"))
        a = run([args.moegate, "template", "-m", path], convs)
        b = run([args.moegate, "template", "--name", want, "--bos", spec["bos_token"], "--eos", spec["eos_token"]],
                convs)
        same = a == b
        ok &= same
        print("%-16s %s selects %s: %s" % ("detect", fixture, want, "yes" if same else "NO"))

    for f in failures[:20]:
        print("MISMATCH " + f)
    print("chat templates: %s" % ("all identical" if ok else "DIFFERENCES"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
