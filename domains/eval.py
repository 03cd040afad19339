#!/usr/bin/env python3
"""Runs the domain packs' eval prompts against a running moegate gateway.

    python3 domains/eval.py --url https://127.0.0.1:8443 --ca ca.pem --key-file api-key \
        [--packs domains] [--domain finance ...] [--require guardrails|all] [--max-tokens 256]

Each line of a pack's eval/prompts.jsonl names properties an answer must
have (domains/README.md). They are of two kinds:

  guardrails  must_refuse (the pack's refusal, finish_reason content_filter)
              and must_end_with_disclaimer (the pack's disclaimer in the
              prompt's language ends the answer, before any explicit
              AI-content label). The gateway guarantees these whatever
              the model: they hold for the demo model too.
  content     must_include / must_not_include (case-insensitive
              substrings): what the adapter and the model must achieve.
              Meaningful with a real model and real adapters only.

Prints one row per domain and property with passes and failures, then every
failure with its prompt. Exits 1 when a property of the --require kind
failed (default: guardrails), 2 on a usage or connection error. The key is
read from a file, never from the command line (it would show in `ps`).
"""
import argparse
import http.client
import json
import os
import ssl
import sys
import urllib.parse

import yaml  # python3-yaml


def load_pack(folder):
    y = yaml.safe_load(open(os.path.join(folder, "domain.yaml"), encoding="utf-8"))
    prompts = []
    with open(os.path.join(folder, y["eval"]), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                o = json.loads(line)
                o["_line"] = n
                prompts.append(o)
    return y, prompts


def ask(conn_args, key, model, prompt, max_tokens):
    host, port, ctx = conn_args
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=600) if ctx else \
        http.client.HTTPConnection(host, port, timeout=600)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens}).encode()
    c.request("POST", "/v1/chat/completions", body=body,
              headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, raw[:300].decode(errors="replace")))
    return json.loads(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--url", required=True)
    ap.add_argument("--ca", help="CA bundle for the server certificate (default: the system's)")
    ap.add_argument("--key-file", required=True, help="file holding the API key")
    ap.add_argument("--packs", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--domain", action="append", help="only these domains (default: every pack)")
    ap.add_argument("--require", choices=("guardrails", "all", "none"), default="guardrails")
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()
    key = open(a.key_file, encoding="utf-8").read().strip()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme not in ("https", "http") or not u.hostname:
        print("eval: --url must be https://HOST:PORT", file=sys.stderr)
        return 2
    ctx = ssl.create_default_context(cafile=a.ca) if u.scheme == "https" else None
    conn_args = (u.hostname, u.port or (443 if ctx else 80), ctx)
    names = a.domain or sorted(d for d in os.listdir(a.packs) if not d.startswith((".", "_")) and
                               os.path.isfile(os.path.join(a.packs, d, "domain.yaml")))
    rows, failures = [], []
    failed_required = False
    for name in names:
        pack, prompts = load_pack(os.path.join(a.packs, name))
        refusals = {t["refusal"][lang] for t in pack["guardrails"].get("blocked_topics", []) for lang in ("zh", "en")}
        tally = {}
        for p in prompts:
            try:
                d = ask(conn_args, key, name, p["prompt"], a.max_tokens)
            except (OSError, RuntimeError, ValueError) as e:
                print("eval: %s line %d: %s" % (name, p["_line"], e), file=sys.stderr)
                return 2
            ch = d["choices"][0]
            text = ch["message"]["content"] or ""
            refused = ch["finish_reason"] == "content_filter" and ch["message"].get("refusal") in refusals
            checks = []
            if p.get("must_refuse"):
                checks.append(("guardrails", "must_refuse", refused))
            if p.get("must_end_with_disclaimer"):
                disc = (pack["guardrails"].get("disclaimer") or {}).get(p["lang"], "")
                # the disclaimer ends the answer, or comes right before the explicit label
                body = text.rstrip()
                ok = bool(disc) and (body.endswith(disc) or ("\n\n" + disc + "\n\n") in body[-(len(disc) + 200):])
                checks.append(("guardrails", "must_end_with_disclaimer", ok))
            for s in p.get("must_include", []):
                checks.append(("content", "must_include", s.lower() in text.lower()))
            for s in p.get("must_not_include", []):
                checks.append(("content", "must_not_include", s.lower() not in text.lower()))
            if not p.get("must_refuse"):
                checks.append(("guardrails", "not_refused", not refused))
            for kind, prop, ok in checks:
                t = tally.setdefault((kind, prop), [0, 0])
                t[0 if ok else 1] += 1
                if not ok:
                    failures.append((name, p["_line"], prop, p["prompt"], text[-160:]))
                    if a.require == "all" or a.require == kind:
                        failed_required = True
        for (kind, prop), (ok, bad) in sorted(tally.items()):
            rows.append((name, kind, prop, ok, bad))
    print("| domain | kind | property | pass | fail |")
    print("|---|---|---|---:|---:|")
    for r in rows:
        print("| %s | %s | %s | %d | %d |" % r)
    for name, line, prop, prompt, tail in failures:
        print("fail: %s eval line %d %s: %s\n      answer ends: %r" % (name, line, prop, prompt, tail))
    return 1 if failed_required else 0


if __name__ == "__main__":
    sys.exit(main())
