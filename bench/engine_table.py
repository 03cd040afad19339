#!/usr/bin/env python3
"""Combines `moegate bench --json` lines with the machine ceilings.

  engine_table.py MACHINE.json ENGINE.jsonl

For every (model, threads) row prints prompt-processing and generation
tokens/s next to their ceilings:
  generation ceiling  = measured read bandwidth (same thread count)
                        / weight bytes one decode step reads
  prompt ceiling      = measured peak int8 rate (AVX-512 VNNI, same threads)
                        / (2 x active parameters per token)
Ceilings use the median of the machine benchmark, the engine the median of
its repetitions, both from the same `make bench` run.
"""
import json
import sys


def result(machine, key, threads):
    for r in machine["results"]:
        if r["key"] == key:
            t = r["threads"].get(str(threads))
            return t["median"] if t else None
    return None


def main():
    machine = json.load(open(sys.argv[1]))
    rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
    keys = {r["key"]: r["label"] for r in machine["results"]}
    mem_key = next(k for k in keys if k.startswith("mem"))
    vnni_key = next((k for k in keys if "vnni" in k and "512" in k), None)
    print("| model | weights | threads | pp tok/s | pp GOP/s | % of VNNI peak | tg tok/s "
          "| GB/token | tg GB/s | tg ceiling tok/s | % of ceiling |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        th = r["threads"]
        bw = result(machine, mem_key, th)
        peak = result(machine, vnni_key, th) if vnni_key else None
        gb = r["bytes_per_token"] / 1e9
        ceil = bw / gb if bw else float("nan")
        pct_pp = 100 * r["pp_gop_s"] / peak if peak else float("nan")
        print(f"| {r['model']} | {r['type']} | {th} | {r['pp_tok_s']:.1f} | {r['pp_gop_s']:.0f} "
              f"| {pct_pp:.0f}% | {r['tg_tok_s']:.2f} | {gb:.3f} | {r['tg_tok_s'] * gb:.1f} "
              f"| {ceil:.1f} | {100 * r['tg_tok_s'] / ceil:.0f}% |")
    print()
    seen = set()
    for r in rows:
        if "kv_bytes_token" in r and r["model"] not in seen:
            seen.add(r["model"])
            full = r.get("kv_bytes_token_full", r["kv_bytes_token"])
            note = (f" (uncompressed keys/values: {full} B, {full / r['kv_bytes_token']:.1f}x)"
                    if full != r["kv_bytes_token"] else "")
            print(f"{r['model']}: KV cache {r['kv_bytes_token']} B/token (f32, all layers){note}")
    print(f"memory read (median): 1 thread {result(machine, mem_key, 1)} GB/s, "
          f"2 threads {result(machine, mem_key, 2)} GB/s; "
          f"int8 VNNI peak: {result(machine, vnni_key, 1)} / {result(machine, vnni_key, 2)} GOP/s")


if __name__ == "__main__":
    main()
