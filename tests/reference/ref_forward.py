#!/usr/bin/python3
"""Independent float64 reference forward pass for moegate's MoE families.

    ref_forward.py MODEL.gguf --tokens 1,2,3,... [--dump FILE] [--generate N]

Reads a GGUF file (tests/fixtures/gguf_writer.py's reader and dequantisers),
dequantises every weight to float64 and runs the whole sequence at once (no
KV cache) as the published Hugging Face model definitions do:

  qwen3moe  Qwen3MoeForCausalLM  (transformers models/qwen3_moe/modeling_qwen3_moe.py)
  qwen2moe  Qwen2MoeForCausalLM  (transformers models/qwen2_moe/modeling_qwen2_moe.py)
  llama+experts  MixtralForCausalLM (transformers models/mixtral/modeling_mixtral.py)

--dump writes the logits of every position, one text row per position: the
position index, then n_vocab values (%.9g), space-separated. --generate N
appends N greedy tokens (recomputing the full sequence each step) and prints
them with the logit margins. Nothing here is shared with the engine.

RoPE for arch `llama`: GGUF stores q_proj/k_proj rows permuted by the llama
converter (per head, GGUF row 2i+j = HF row j*hd/2 + i) so that ggml's
"normal" RoPE, which rotates adjacent pairs (2i, 2i+1), is the HF rotation.
The reference undoes that permutation when loading and then applies HF's
rotate_half RoPE exactly as modeling_mixtral.py does; the engine, on the
other hand, runs interleaved RoPE on the stored layout. The two agreeing
checks both the permutation convention and the engine's RoPE.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import gguf_writer as gw  # noqa: E402


def rms_norm(x, w, eps):
    """HF Qwen3MoeRMSNorm / Qwen2MoeRMSNorm / MixtralRMSNorm:
    w * x / sqrt(mean(x^2) + eps) over the last axis."""
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def rope_hf(x, positions, base):
    """HF apply_rotary_pos_emb with rotate_half ("NeoX" style).
    x: [T, n_heads, hd]. inv_freq[i] = base^(-2i/hd), emb = cat(freqs, freqs);
    x*cos + rotate_half(x)*sin with rotate_half(x) = cat(-x2, x1)."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    freqs = np.outer(positions.astype(np.float64), inv_freq)      # [T, hd/2]
    emb = np.concatenate([freqs, freqs], axis=-1)                  # [T, hd]
    cos = np.cos(emb)[:, None, :]
    sin = np.sin(emb)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rot = np.concatenate([-x2, x1], axis=-1)
    return x * cos + rot * sin


def rope_interleaved(x, positions, base):
    """ggml "normal" RoPE (GGUF arch llama): rotates pairs (2i, 2i+1) by
    pos * base^(-2i/hd). Used only by the self-tests, to check the llama
    permutation convention against rope_hf."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    ang = np.outer(positions.astype(np.float64), inv_freq)[:, None, :]
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def llama_unpermute(w, n_head):
    """Inverse of the llama converter's q/k permutation: GGUF row 2i+j of a
    head -> HF row j*hd/2 + i. w: [n_head*hd, dim] (numpy order)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class RefModel:
    """One GGUF model, all weights as float64 numpy arrays (HF orientation:
    a Linear weight is [out, in])."""

    def __init__(self, path):
        self.path = path
        r = gw.GGUFReader(path)
        self.reader = r
        kv = r.kv
        a = kv["general.architecture"]
        if a not in ("qwen3moe", "qwen2moe", "llama"):
            raise ValueError("unsupported architecture " + a)
        self.arch = a
        self.n_layer = int(kv[a + ".block_count"])
        self.dim = int(kv[a + ".embedding_length"])
        self.n_head = int(kv[a + ".attention.head_count"])
        self.n_head_kv = int(kv.get(a + ".attention.head_count_kv", self.n_head))
        self.head_dim = int(kv.get(a + ".attention.key_length", self.dim // self.n_head))
        self.eps = float(kv[a + ".attention.layer_norm_rms_epsilon"])
        self.rope_base = float(kv.get(a + ".rope.freq_base", 10000.0))
        self.n_expert = int(kv.get(a + ".expert_count", 0))
        self.n_expert_used = int(kv.get(a + ".expert_used_count", 0))
        if self.n_expert == 0:
            raise ValueError("not a MoE model (expert_count missing)")
        rope_dim = int(kv.get(a + ".rope.dimension_count", self.head_dim))
        if rope_dim != self.head_dim:
            raise ValueError("partial RoPE is not part of these families")
        # top-k renormalisation: Qwen3-MoE norm_topk_prob=True; Mixtral's
        # softmax-then-renormalise over the top-k; Qwen2-MoE norm_topk_prob=False.
        self.norm_topk = a in ("qwen3moe", "llama")
        self.token_type = kv.get("tokenizer.ggml.token_type")

        W = {}
        for name, t in r.tensors.items():
            W[name] = t.to_numpy(np.float64)
        self.W = W
        self.n_vocab = W["token_embd.weight"].shape[0]
        self.tied = "output.weight" not in W
        if a == "llama":
            for il in range(self.n_layer):
                p = "blk.%d." % il
                W[p + "attn_q.weight"] = llama_unpermute(W[p + "attn_q.weight"], self.n_head)
                W[p + "attn_k.weight"] = llama_unpermute(W[p + "attn_k.weight"], self.n_head_kv)

    # ------------------------------------------------------------------
    def linear(self, x, name, expert=None):
        """x @ W^T for the Linear weight `name` ([out, in]; expert slice of a
        stacked [n_expert, out, in] tensor). A 1-D weight is one output row.
        (Subclasses may override it to model other arithmetic.)"""
        w = self.W[name]
        if expert is not None:
            w = w[expert]
        if w.ndim == 1:
            w = w[None, :]
        return x @ w.T

    def attention(self, il, h, positions):
        """Qwen3MoeAttention / Qwen2MoeAttention / MixtralAttention,
        causal, GQA (query head j uses KV head j // (n_head/n_head_kv),
        HF repeat_kv), scale 1/sqrt(head_dim)."""
        W, p = self.W, "blk.%d." % il
        T = h.shape[0]
        nh, nkv, hd = self.n_head, self.n_head_kv, self.head_dim
        q = self.linear(h, p + "attn_q.weight")
        k = self.linear(h, p + "attn_k.weight")
        v = self.linear(h, p + "attn_v.weight")
        if p + "attn_q.bias" in W:                      # Qwen2-MoE q/k/v bias
            q = q + W[p + "attn_q.bias"]
            k = k + W[p + "attn_k.bias"]
            v = v + W[p + "attn_v.bias"]
        q = q.reshape(T, nh, hd)
        k = k.reshape(T, nkv, hd)
        v = v.reshape(T, nkv, hd)
        if p + "attn_q_norm.weight" in W:               # Qwen3: per-head RMSNorm before RoPE
            q = rms_norm(q, W[p + "attn_q_norm.weight"], self.eps)
            k = rms_norm(k, W[p + "attn_k_norm.weight"], self.eps)
        q = rope_hf(q, positions, self.rope_base)
        k = rope_hf(k, positions, self.rope_base)
        rep = nh // nkv
        k = np.repeat(k, rep, axis=1)                   # repeat_kv
        v = np.repeat(v, rep, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        mask = np.triu(np.ones((T, T), dtype=bool), k=1)
        scores[:, mask] = -np.inf
        probs = softmax(scores, axis=-1)
        out = np.einsum("hts,shd->thd", probs, v).reshape(T, nh * hd)
        return self.linear(out, p + "attn_output.weight")

    def moe(self, il, h, stats):
        """Qwen3MoeSparseMoeBlock / Qwen2MoeSparseMoeBlock / MixtralSparseMoeBlock:
        softmax over all router logits, top-k, optional renormalisation,
        experts down(silu(gate(x)) * up(x)); Qwen2-MoE adds the shared
        expert scaled by sigmoid(x . w_gate_shexp)."""
        W, p = self.W, "blk.%d." % il
        k = self.n_expert_used
        logits = self.linear(h, p + "ffn_gate_inp.weight")  # [T, n_expert]
        probs = softmax(logits, axis=-1)
        order = np.argsort(-probs, axis=-1, kind="stable")
        top = order[:, :k]
        w = np.take_along_axis(probs, top, axis=-1)
        if self.norm_topk:
            w = w / np.sum(w, axis=-1, keepdims=True)
        # the smallest router-logit gap at the top-k boundary (a near tie
        # would make the expert choice fragile under rounding)
        sl = np.take_along_axis(logits, order, axis=-1)
        if k < self.n_expert:
            gap = sl[:, k - 1] - sl[:, k]
            stats["router_gap_min"] = min(stats.get("router_gap_min", np.inf), float(gap.min()))
        stats.setdefault("experts_used", set()).update(int(e) for e in top.reshape(-1))
        out = np.zeros_like(h)
        for e in np.unique(top):                         # tokens routed to expert e
            rows, slot = np.nonzero(top == e)
            x = h[rows]
            act = silu(self.linear(x, p + "ffn_gate_exps.weight", e)) * \
                self.linear(x, p + "ffn_up_exps.weight", e)
            out[rows] += w[rows, slot][:, None] * self.linear(act, p + "ffn_down_exps.weight", e)
        if p + "ffn_gate_inp_shexp.weight" in W:
            g = 1.0 / (1.0 + np.exp(-self.linear(h, p + "ffn_gate_inp_shexp.weight")[:, 0]))
            act = silu(self.linear(h, p + "ffn_gate_shexp.weight")) * \
                self.linear(h, p + "ffn_up_shexp.weight")
            out += g[:, None] * self.linear(act, p + "ffn_down_shexp.weight")
        return out

    def forward(self, tokens, stats=None, last_only=False):
        """Logits [T, n_vocab] (float64) for every position of tokens
        (only the last position's, [1, n_vocab], when last_only)."""
        if stats is None:
            stats = {}
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValueError("token id out of range")
        W = self.W
        positions = np.arange(len(tokens))
        x = W["token_embd.weight"][tokens]
        for il in range(self.n_layer):
            p = "blk.%d." % il
            x = x + self.attention(il, rms_norm(x, W[p + "attn_norm.weight"], self.eps), positions)
            x = x + self.moe(il, rms_norm(x, W[p + "ffn_norm.weight"], self.eps), stats)
        if last_only:
            x = x[-1:]
        x = rms_norm(x, W["output_norm.weight"], self.eps)
        return self.linear(x, "token_embd.weight" if self.tied else "output.weight")


def margins(logits):
    """Per row: (top1 - top2) absolute, and relative to max|row|."""
    part = np.partition(logits, -2, axis=-1)
    gap = part[:, -1] - part[:, -2]
    return gap, gap / np.max(np.abs(logits), axis=-1)


def greedy(model, prompt, n, stats=None):
    """Appends n argmax tokens, recomputing the full sequence each step.
    Returns (tokens, logits of the final sequence)."""
    toks = list(prompt)
    for _ in range(n):
        lg = model.forward(toks, stats, last_only=True)
        toks.append(int(np.argmax(lg[-1])))
    return toks, model.forward(toks, stats)


def write_dump(path, logits):
    V = logits.shape[1]
    fmt = "%d" + " %.9g" * V + "\n"
    with open(path, "w") as f:
        for i, row in enumerate(logits):
            f.write(fmt % ((i,) + tuple(row.tolist())))


def main(argv=None):
    ap = argparse.ArgumentParser(description="float64 reference forward for MoE GGUF models")
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids")
    ap.add_argument("--dump", help="write every position's logits to FILE")
    ap.add_argument("--generate", type=int, default=0, metavar="N",
                    help="append N greedy tokens first (full recompute per step)")
    args = ap.parse_args(argv)
    toks = [int(t) for t in args.tokens.split(",") if t.strip()]
    m = RefModel(args.model)
    stats = {}
    if args.generate:
        toks, logits = greedy(m, toks, args.generate, stats)
        print("tokens: " + ",".join(str(t) for t in toks[-args.generate:]))
    else:
        logits = m.forward(toks, stats)
    gap, rel = margins(logits)
    print("positions %d  n_vocab %d  margin(top1-top2) min %.4g  min/max|logit| %.4g"
          "  router gap min %.4g  experts used %d/%d"
          % (len(toks), logits.shape[1], gap.min(), rel.min(),
             stats.get("router_gap_min", float("nan")),
             len(stats.get("experts_used", ())), m.n_expert), file=sys.stderr)
    if args.dump:
        write_dump(args.dump, logits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
