#!/usr/bin/python3
"""Reference LoRA merge: a base GGUF model plus an adapter (PEFT folder or
GGUF LoRA file) -> float64 weights W + scale * B A, for the float64
reference forward pass (tests/reference/ref_forward.py).

Written from the formats' definitions, independently of moegate's C code:

  PEFT (Hugging Face peft, LoraConfig): adapter_config.json gives r,
    lora_alpha, use_rslora, rank_pattern, alpha_pattern; the delta of module
    M is scale * lora_B @ lora_A with lora_A [r][in], lora_B [out][r] (both
    nn.Linear weights; fan_in_fan_out only transposes the delta for
    Conv1D bases, none here), scale = alpha / r, or alpha / sqrt(r) with
    use_rslora. Pattern keys match a module name equal to them, else one
    that re.match(r"(.*\\.)?(KEY)$") accepts.
  GGUF LoRA (llama.cpp): blk.N.<target>.weight.lora_a [r][in] and .lora_b
    [out][r] in numpy order (ne reversed), stacked over experts for
    *_exps; scale = adapter.lora.alpha / r, or 1 when alpha is 0 or absent.

The llama (Mixtral) GGUF converter permutes q_proj/k_proj rows (per head,
GGUF row 2i+j = HF row j*hd/2 + i); a PEFT B for those modules is
permuted the same way here so that the delta lives in the GGUF file's
layout. Merged arrays are in that layout and numpy order: exactly what
RefModel reads from the file (before it undoes the permutation), so they
go in through RefModel(path, overrides=...).

    merge_ref.py --base BASE.gguf --adapter ADAPTER [--scale S] --tokens 1,2,3 [--generate N]
        greedy tokens of the base and of base + adapter, side by side
    merge_ref.py --base BASE.gguf --adapter ADAPTER --probe OUT.txt [--scale S]
        compares tool_lora_probe's output (scale * B (A v) per matrix for a
        fixed v) with the reference deltas; exit 1 on a mismatch
"""

import argparse
import json
import os
import re
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
import gguf_writer as gw  # noqa: E402
import ref_forward as rf  # noqa: E402

# Hugging Face module (after model.layers.N.) -> GGUF target
HF_MODULES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_a_proj": "attn_q_a",
    "self_attn.q_b_proj": "attn_q_b", "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_b_proj": "attn_kv_b", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.shared_expert.gate_proj": "ffn_gate_shexp", "mlp.shared_expert.up_proj": "ffn_up_shexp",
    "mlp.shared_expert.down_proj": "ffn_down_shexp",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp", "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
}
HF_EXPERTS = [
    (re.compile(r"mlp\.experts\.(\d+)\.gate_proj$"), "ffn_gate_exps"),
    (re.compile(r"mlp\.experts\.(\d+)\.up_proj$"), "ffn_up_exps"),
    (re.compile(r"mlp\.experts\.(\d+)\.down_proj$"), "ffn_down_exps"),
    (re.compile(r"block_sparse_moe\.experts\.(\d+)\.w1$"), "ffn_gate_exps"),
    (re.compile(r"block_sparse_moe\.experts\.(\d+)\.w3$"), "ffn_up_exps"),
    (re.compile(r"block_sparse_moe\.experts\.(\d+)\.w2$"), "ffn_down_exps"),
]


def read_safetensors(path):
    """{name: float64 array} of an F32/F16/BF16 safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        buf = data[b:e]
        if t["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif t["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2")
        elif t["dtype"] == "BF16":
            a = gw.bf16_bits_to_f32(np.frombuffer(buf, dtype="<u2"))
        else:
            raise ValueError("%s: dtype %s" % (name, t["dtype"]))
        out[name] = a.astype(np.float64).reshape(t["shape"])
    return out


def _pattern(patterns, key, default):
    for k, v in patterns.items():
        if k == key:
            return v
    for k, v in patterns.items():
        if re.match(r"(.*\.)?(%s)$" % k, key):
            return v
    return default


def llama_permute_rows(b, n_head):
    """HF rows -> GGUF llama rows: GGUF row 2i+j of a head = HF row j*hd/2 + i."""
    out_dim = b.shape[0]
    hd = out_dim // n_head
    return b.reshape(n_head, 2, hd // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def adapter_pairs(adapter, base_kv):
    """[(target name "blk.L.attn_q", expert or None, A [r][in], B [out][r]
    in GGUF row order, scale)] for an adapter path, given the base's
    metadata (for the llama permutation)."""
    arch = base_kv["general.architecture"]
    pairs = []
    if os.path.isdir(adapter):
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            cfg = json.load(f)
        W = read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
        for name in sorted(W):
            if not name.endswith(".lora_A.weight"):
                continue
            key = name[:-len(".lora_A.weight")]
            if key.startswith("base_model.model."):
                key = key[len("base_model.model."):]
            m = re.match(r"model\.layers\.(\d+)\.(.+)$", key)
            layer, mod = int(m.group(1)), m.group(2)
            expert = None
            target = HF_MODULES.get(mod)
            if target is None:
                for rx, t in HF_EXPERTS:
                    mm = rx.match(mod)
                    if mm:
                        target, expert = t, int(mm.group(1))
            if target is None:
                raise ValueError("unknown module " + key)
            A = W[name]
            B = W[name[:-len(".lora_A.weight")] + ".lora_B.weight"]
            r = _pattern(cfg.get("rank_pattern") or {}, key, cfg.get("r", 8))
            alpha = _pattern(cfg.get("alpha_pattern") or {}, key, cfg.get("lora_alpha", 8))
            assert A.shape[0] == r and B.shape[1] == r
            scale = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
            if arch == "llama" and target in ("attn_q", "attn_k"):
                nh = int(base_kv["llama.attention.head_count"])
                nkv = int(base_kv.get("llama.attention.head_count_kv", nh))
                B = llama_permute_rows(B, nh if target == "attn_q" else nkv)
            pairs.append(("blk.%d.%s" % (layer, target), expert, A, B, scale))
        return pairs
    r = gw.GGUFReader(adapter)
    alpha = float(r.kv.get("adapter.lora.alpha", 0.0))
    for name, t in r.tensors.items():
        if not name.endswith(".weight.lora_a"):
            continue
        base = name[:-len(".weight.lora_a")]
        A = t.to_numpy(np.float64)
        B = r.tensors[base + ".weight.lora_b"].to_numpy(np.float64)
        if A.ndim == 2:
            rank = A.shape[0]
            pairs.append((base, None, A, B, alpha / rank if alpha else 1.0))
        else:
            for e in range(A.shape[0]):
                rank = A.shape[1]
                pairs.append((base, e, A[e], B[e], alpha / rank if alpha else 1.0))
    return pairs


def deltas(base_kv, adapter, scale=1.0):
    """{(target name, expert or None): scale_total * B @ A} [out][in] float64."""
    out = {}
    for name, e, A, B, s in adapter_pairs(adapter, base_kv):
        key = (name, e)
        if key in out:
            raise ValueError("adapted twice: %s %s" % key)
        out[key] = (s * scale) * (B @ A)
    return out


def merged_weights(base_path, adapter, scale=1.0):
    """{GGUF tensor name: W + delta} for every adapted tensor, in the file's
    layout (numpy order). attn_kv_b deltas go into the split attn_k_b /
    attn_v_b tensors when the base stores them split."""
    r = gw.GGUFReader(base_path)
    kv = r.kv
    merged = {}

    def base_of(name):
        if name not in merged:
            merged[name] = r.tensors[name].to_numpy(np.float64).copy()
        return merged[name]

    for (name, e), d in deltas(kv, adapter, scale).items():
        wname = name + ".weight"
        if wname not in r.tensors and name.endswith(".attn_kv_b"):
            # split MLA: k_b[h] = W_UK^h transposed [kv_lora][nope], v_b[h] = W_UV^h
            blk = name[:-len(".attn_kv_b")]
            kb = base_of(blk + ".attn_k_b.weight")
            vb = base_of(blk + ".attn_v_b.weight")
            nh, nope = kb.shape[0], kb.shape[2]
            d3 = d.reshape(nh, -1, d.shape[1])
            kb += d3[:, :nope, :].transpose(0, 2, 1)
            vb += d3[:, nope:, :]
            continue
        w = base_of(wname)
        if e is None:
            w += d
        else:
            w[e] += d
    return merged


def ref_model(base_path, adapter, scale=1.0):
    """RefModel of the base with the adapter merged in."""
    return rf.RefModel(base_path, overrides=merged_weights(base_path, adapter, scale))


def probe_vector(n):
    """The fixed input tool_lora_probe multiplies by."""
    i = np.arange(n, dtype=np.int64)
    return ((i * 7919) % 1009).astype(np.float64) / 504.5 - 1.0


def check_probe(base_path, adapter, probe_file, scale):
    kv = gw.GGUFReader(base_path).kv
    want = {}
    for (name, e), d in deltas(kv, adapter, scale).items():
        want[(name, -1 if e is None else e)] = d @ probe_vector(d.shape[1])
    got = {}
    with open(probe_file) as f:
        for line in f:
            parts = line.split()
            got[(parts[0], int(parts[1]))] = np.array([float(x) for x in parts[2:]])
    bad = 0
    if set(want) != set(got):
        print("probe: matrices differ: reference only %s, engine only %s"
              % (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]))
        return 1
    worst = 0.0
    for k, y in want.items():
        g = got[k]
        err = np.max(np.abs(g - y)) / max(1.0, np.max(np.abs(y))) if g.shape == y.shape else np.inf
        worst = max(worst, err)
        if err > 1e-5:
            bad += 1
            if bad <= 5:
                print("probe: %s expert %d: max relative error %.3g" % (k[0], k[1], err))
    print("probe: %d matrices, worst relative error %.3g" % (len(want), worst))
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--tokens")
    ap.add_argument("--generate", type=int, default=8)
    ap.add_argument("--probe", help="tool_lora_probe output to check")
    args = ap.parse_args(argv)
    if args.probe:
        return check_probe(args.base, args.adapter, args.probe, args.scale)
    toks = [int(t) for t in (args.tokens or "1,2,3,4").split(",")]
    base = rf.RefModel(args.base)
    lora = ref_model(args.base, args.adapter, args.scale)
    tb, lb = rf.greedy(base, toks, args.generate)
    ta, la = rf.greedy(lora, toks, args.generate)
    n = len(toks)
    same = np.mean(np.argmax(lb[:n], -1) == np.argmax(la[:n], -1))
    print("base:    %s" % ",".join(map(str, tb[len(toks):])))
    print("adapter: %s" % ",".join(map(str, ta[len(toks):])))
    print("prompt positions whose argmax the adapter keeps: %.2f; max |logit change| %.3g"
          % (same, np.max(np.abs(la[:n] - lb[:n]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
