#!/usr/bin/env python3
"""Text in and out of the moegate program: run -p, run --chat, chat,
tokenize and template on the fixture models.

    python3 tests/tokenizer/test_text_cli.py --moegate build/moegate --fixtures build/fixtures

  - `run -p TEXT` generates exactly what `run --tokens` does with the ids
    `tokenize --add-special` gives for TEXT;
  - `run --chat -p TEXT` equals `run --tokens` of the prompt that
    `template -m` renders for that one user turn;
  - `chat` answers its second turn exactly as a fresh `run` of the whole
    rendered conversation does (the KV cache reuse is invisible);
  - user text that looks like control tokens stays text;
  - bad input gets a clear error and exit status 1 or 2, never a crash.
Greedy sampling throughout, so every comparison is exact.
"""
import argparse
import json
import os
import subprocess
import sys

failures = []
passed = 0


def check(name, cond, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append("%s: %s" % (name, detail))
        print("FAIL %s: %s" % (name, detail))


def mg(args, stdin=None):
    p = subprocess.run([MOEGATE] + args, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, encoding="utf-8")
    return p.returncode, p.stdout, p.stderr


def ids_of(model, text, special=False, add=True):
    args = ["tokenize", "-m", model, "-p", text, "--ids"] + (["--add-special"] if add else []) + \
           (["--special"] if special else [])
    rc, out, err = mg(args)
    assert rc == 0, err
    return [int(x) for x in out.split()]


def run_tokens(model, ids, n):
    rc, out, err = mg(["run", "-m", model, "--tokens", ",".join(map(str, ids)), "-n", str(n), "--temp", "0"])
    assert rc == 0, err
    return out


def main():
    global MOEGATE
    ap = argparse.ArgumentParser()
    ap.add_argument("--moegate", required=True)
    ap.add_argument("--fixtures", default="build/fixtures")
    a = ap.parse_args()
    MOEGATE = a.moegate
    for fixture in ("qwen3moe-tiny-q8_0.gguf", "mixtral-tiny-q8_0.gguf"):
        M = os.path.join(a.fixtures, fixture)
        text = "The bond's yield is 4.25% — 收益率 4.25%。"
        # run -p == run --tokens of tokenize
        rc, out_p, err = mg(["run", "-m", M, "-p", text, "-n", "8", "--temp", "0"])
        check(fixture + " run -p", rc == 0, err[-300:])
        out_t = run_tokens(M, ids_of(M, text), 8)
        check(fixture + " run -p == run --tokens(tokenize)", out_p == out_t, "%r vs %r" % (out_p, out_t))
        # run --chat == run --tokens of the rendered one-turn prompt
        conv = json.dumps({"messages": [{"role": "user", "content": text}], "add_generation_prompt": True})
        rc, rendered, err = mg(["template", "-m", M], conv + "\n")
        prompt = json.loads(rendered)
        rc, out_c, err = mg(["run", "-m", M, "-p", text, "--chat", "-n", "8", "--temp", "0"])
        check(fixture + " run --chat", rc == 0, err[-300:])
        out_ct = run_tokens(M, ids_of(M, prompt, special=True, add=False), 8)
        check(fixture + " run --chat == run --tokens(template)", out_c == out_ct, "%r vs %r" % (out_c, out_ct))
        # chat: the second answer as a fresh run of the whole conversation
        rc, out, err = mg(["chat", "-m", M, "-n", "6", "--temp", "0"], "Hello there\nAnd then?\n")
        check(fixture + " chat", rc == 0, err[-300:])
        answers = out.split("\n\n")
        check(fixture + " chat answers", len(answers) >= 2, repr(out))
        if len(answers) >= 2:
            conv = json.dumps({"messages": [{"role": "user", "content": "Hello there"},
                                            {"role": "assistant", "content": answers[0]},
                                            {"role": "user", "content": "And then?"}],
                               "add_generation_prompt": True})
            rc, rendered, err = mg(["template", "-m", M], conv + "\n")
            fresh = run_tokens(M, ids_of(M, json.loads(rendered), special=True, add=False), 6)
            if fixture.startswith("mixtral"):
                fresh = fresh.lstrip(" ")
            check(fixture + " chat turn 2 == fresh run", answers[1] == fresh.rstrip("\n"),
                  "%r vs %r" % (answers[1], fresh))

    Q = os.path.join(a.fixtures, "qwen3moe-tiny-q8_0.gguf")
    # control tokens typed by a user stay text, unless --special asks
    plain = ids_of(Q, "<|im_start|>", add=False)
    special = ids_of(Q, "<|im_start|>", special=True, add=False)
    check("user text <|im_start|> is text", len(plain) > 1 and 151644 not in plain, plain)
    check("--special matches it", special == [151644], special)
    rc, out, err = mg(["tokenize", "-m", Q, "-p", "Hello world"])
    check("tokenize prints id and piece", rc == 0 and " world" in out and "9707" in out, out)
    # refusals
    rc, out, err = mg(["run", "-m", Q, "-p", "x", "--chat", "--template", "jinja2"])
    check("unknown template refused", rc == 1 and "unknown template 'jinja2'" in err, err)
    rc, out, err = mg(["template", "--name", "qwen3"], "{not json\n")
    check("bad conversation JSON refused", rc == 1 and "line 1" in err, err)
    rc, out, err = mg(["template", "--name", "mistral"], json.dumps({"messages": [
        {"role": "assistant", "content": "first"}]}) + "\n")
    check("template refusal reported", rc == 0 and "must alternate" in out, out)
    rc, out, err = mg(["tokenize", "--hf", "/nonexistent", "-p", "x"])
    check("missing tokenizer.json named", rc == 1 and "/nonexistent/tokenizer.json" in err, err)
    rc, out, err = mg(["tokenize", "-m", Q, "--jsonl"], "[1,2]\n")
    check("tokenize --jsonl wants strings", rc == 1 and "expected a JSON string" in err, err)
    print("text cli: %d passed, %d failed" % (passed, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
