#!/usr/bin/python3
"""Independent float64 reference forward pass for moegate's MoE families.

    ref_forward.py MODEL.gguf --tokens 1,2,3,... [--dump FILE] [--generate N]

Reads a GGUF file (tests/fixtures/gguf_writer.py's reader and dequantisers),
dequantises every weight to float64 and runs the whole sequence at once (no
KV cache) as the published Hugging Face model definitions do:

  qwen3moe  Qwen3MoeForCausalLM  (transformers models/qwen3_moe/modeling_qwen3_moe.py)
  qwen2moe  Qwen2MoeForCausalLM  (transformers models/qwen2_moe/modeling_qwen2_moe.py)
  llama+experts  MixtralForCausalLM (transformers models/mixtral/modeling_mixtral.py)
  deepseek2 DeepseekV2ForCausalLM / DeepseekV3ForCausalLM (modeling_deepseek.py
            of deepseek-ai/DeepSeek-V2-Lite and deepseek-ai/DeepSeek-V3)

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


def causal_attention(q, k, v, scale):
    """softmax(q.k * scale) v per head with a causal mask; q, k [T, h, d],
    v [T, h, dv] -> [T, h, dv]."""
    T = q.shape[0]
    scores = np.einsum("thd,shd->hts", q, k) * scale
    scores[:, np.triu(np.ones((T, T), dtype=bool), k=1)] = -np.inf
    return np.einsum("hts,shd->thd", softmax(scores, axis=-1), v)


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


def yarn_get_mscale(scale, mscale):
    """modeling_deepseek.py: 1 for scale <= 1, else 0.1 * mscale * ln(scale) + 1."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * np.log(scale) + 1.0


def yarn_inv_freq(dim, base, factor, orig_ctx, beta_fast=32.0, beta_slow=1.0):
    """DeepseekV2YarnRotaryEmbedding's inv_freq: per pair i, a mix of the
    extrapolated base^(-2i/dim) and the interpolated one / factor, with a
    linear ramp between the correction dims of beta_fast and beta_slow
    rotations over the original context."""
    def corr_dim(n_rot):
        return (dim * np.log(orig_ctx / (n_rot * 2 * np.pi))) / (2 * np.log(base))
    low = max(int(np.floor(corr_dim(beta_fast))), 0)
    high = min(int(np.ceil(corr_dim(beta_slow))), dim - 1)
    freq_extra = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    freq_inter = 1.0 / (factor * base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    mask = 1.0 - ramp
    return freq_inter * (1 - mask) + freq_extra * mask


def rope_deepseek(x, positions, inv_freq, mscale):
    """modeling_deepseek.py apply_rotary_pos_emb: x [T, heads, d] is first
    reordered from interleaved pairs to halves (view(d/2, 2).transpose),
    then rotated with rotate_half; cos and sin carry the YaRN factor
    mscale. (So GGUF, which keeps HF's rows, rotates adjacent pairs.)"""
    d = x.shape[-1]
    x = x.reshape(*x.shape[:-1], d // 2, 2).swapaxes(-1, -2).reshape(x.shape)
    freqs = np.outer(positions.astype(np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos = (np.cos(emb) * mscale)[:, None, :]
    sin = (np.sin(emb) * mscale)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rot * sin


def llama_unpermute(w, n_head):
    """Inverse of the llama converter's q/k permutation: GGUF row 2i+j of a
    head -> HF row j*hd/2 + i. w: [n_head*hd, dim] (numpy order)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class RefModel:
    """One GGUF model, all weights as float64 numpy arrays (HF orientation:
    a Linear weight is [out, in])."""

    def __init__(self, path, overrides=None):
        """overrides: {GGUF tensor name: float array of that tensor's numpy
        shape, in the file's layout}; replaces the file's values as they are
        loaded (before the llama q/k unpermutation), e.g. weights with a LoRA
        adapter merged in (tests/adapters/merge_ref.py)."""
        self.path = path
        self.overrides = overrides or {}
        r = gw.GGUFReader(path)
        self.reader = r
        kv = r.kv
        a = kv["general.architecture"]
        if a not in ("qwen3moe", "qwen2moe", "llama", "deepseek2"):
            raise ValueError("unsupported architecture " + a)
        self.arch = a
        if a == "deepseek2":
            self._init_deepseek2(r)
            return
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
        W = self._load_weights(r)
        if a == "llama":
            for il in range(self.n_layer):
                p = "blk.%d." % il
                W[p + "attn_q.weight"] = llama_unpermute(W[p + "attn_q.weight"], self.n_head)
                W[p + "attn_k.weight"] = llama_unpermute(W[p + "attn_k.weight"], self.n_head_kv)

    def _load_weights(self, r):
        """Every tensor as float64 (self.W), the vocabulary size, token types
        and whether the output head is tied to the embedding."""
        self.token_type = r.kv.get("tokenizer.ggml.token_type")
        self.W = {name: t.to_numpy(np.float64) for name, t in r.tensors.items()}
        for name, arr in self.overrides.items():
            if name not in self.W or self.W[name].shape != np.shape(arr):
                raise ValueError("override %s: no such tensor of shape %s" % (name, np.shape(arr)))
            self.W[name] = np.asarray(arr, dtype=np.float64)
        self.n_vocab = self.W["token_embd.weight"].shape[0]
        self.tied = "output.weight" not in self.W
        return self.W

    def _init_deepseek2(self, r):
        """Hyper-parameters of a deepseek2 GGUF, mapped back to the HF config
        names (comments), then the weights."""
        kv, a = r.kv, "deepseek2"
        self.n_layer = int(kv[a + ".block_count"])
        self.dim = int(kv[a + ".embedding_length"])
        self.n_head = int(kv[a + ".attention.head_count"])
        self.eps = float(kv[a + ".attention.layer_norm_rms_epsilon"])
        self.rope_base = float(kv.get(a + ".rope.freq_base", 10000.0))
        self.q_lora = int(kv.get(a + ".attention.q_lora_rank", 0))     # q_lora_rank (None: 0)
        self.kv_lora = int(kv[a + ".attention.kv_lora_rank"])           # kv_lora_rank
        self.qk_rope = int(kv[a + ".rope.dimension_count"])             # qk_rope_head_dim
        if a + ".attention.key_length_mla" in kv:                       # newer MQA-style files
            qk = int(kv[a + ".attention.key_length_mla"])
            self.v_head = int(kv[a + ".attention.value_length_mla"])
        else:
            qk = int(kv[a + ".attention.key_length"])
            self.v_head = int(kv[a + ".attention.value_length"])         # v_head_dim
        self.qk_nope = qk - self.qk_rope                                # qk_nope_head_dim
        self.n_dense = int(kv.get(a + ".leading_dense_block_count", 0))  # first_k_dense_replace
        self.n_expert = int(kv[a + ".expert_count"])                    # n_routed_experts
        self.n_expert_used = int(kv[a + ".expert_used_count"])          # num_experts_per_tok
        self.n_group = int(kv.get(a + ".expert_group_count", 1))        # n_group
        self.n_group_used = int(kv.get(a + ".expert_group_used_count", 1))  # topk_group
        self.norm_topk = bool(kv.get(a + ".expert_weights_norm", False))  # norm_topk_prob
        self.w_scale = float(kv.get(a + ".expert_weights_scale", 1.0))  # routed_scaling_factor
        self.gating = int(kv.get(a + ".expert_gating_func", 1))         # 1 softmax, 2 sigmoid
        # rope_scaling {type: yarn, factor, original_max_position_embeddings,
        # mscale_all_dim = yarn_log_multiplier / 0.1; mscale: GGUF has no key,
        # every published config has mscale == mscale_all_dim}
        stype = kv.get(a + ".rope.scaling.type", "none")
        qhd = self.qk_nope + self.qk_rope
        self.softmax_scale = qhd ** -0.5
        self.inv_freq = 1.0 / (self.rope_base ** (np.arange(0, self.qk_rope, 2,
                                                             dtype=np.float64) / self.qk_rope))
        self.rope_mscale = 1.0
        if stype == "yarn":
            factor = float(kv[a + ".rope.scaling.factor"])
            orig = int(kv[a + ".rope.scaling.original_context_length"])
            mscale_all_dim = float(kv.get(a + ".rope.scaling.yarn_log_multiplier", 0.0)) / 0.1
            mscale = mscale_all_dim
            self.inv_freq = yarn_inv_freq(self.qk_rope, self.rope_base, factor, orig,
                                          float(kv.get(a + ".rope.scaling.yarn_beta_fast", 32.0)),
                                          float(kv.get(a + ".rope.scaling.yarn_beta_slow", 1.0)))
            self.rope_mscale = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
            if mscale_all_dim:
                m = yarn_get_mscale(factor, mscale_all_dim)
                self.softmax_scale *= m * m
        elif stype != "none":
            raise ValueError("rope scaling " + stype)
        self._load_weights(r)

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
        out = causal_attention(q, k, v, 1.0 / np.sqrt(hd))
        return self.linear(out.reshape(T, nh * hd), p + "attn_output.weight")

    def attention_mla(self, il, h, positions):
        """DeepseekV2Attention (= V3's): multi-head latent attention, the
        naive (non-absorbed) form of the published code.
          q = q_proj(h)  or  q_b_proj(q_a_layernorm(q_a_proj(h))), per head
              [q_nope | q_pe]
          [c | k_pe] = kv_a_proj_with_mqa(h);  c = kv_a_layernorm(c)
          [k_nope | v] per head = kv_b_proj(c)
          q_pe, k_pe: RoPE (k_pe shared by all heads)
          softmax(q.k * softmax_scale) v, causal; o_proj."""
        W, p = self.W, "blk.%d." % il
        T = h.shape[0]
        nh, nope, rope, vh, kvl = self.n_head, self.qk_nope, self.qk_rope, self.v_head, self.kv_lora
        if self.q_lora:
            qa = rms_norm(self.linear(h, p + "attn_q_a.weight"), W[p + "attn_q_a_norm.weight"],
                          self.eps)
            q = self.linear(qa, p + "attn_q_b.weight")
        else:
            q = self.linear(h, p + "attn_q.weight")
        q = q.reshape(T, nh, nope + rope)
        q_nope, q_pe = q[..., :nope], q[..., nope:]
        ckv = self.linear(h, p + "attn_kv_a_mqa.weight")
        c, k_pe = ckv[:, :kvl], ckv[:, kvl:]
        c = rms_norm(c, W[p + "attn_kv_a_norm.weight"], self.eps)
        if p + "attn_kv_b.weight" in W:
            kvb = self.linear(c, p + "attn_kv_b.weight").reshape(T, nh, nope + vh)
            k_nope, v = kvb[..., :nope], kvb[..., nope:]
        else:
            # split form: k_b[h] = W_UK^h transposed ([kv_lora][nope]), v_b[h] = W_UV^h
            k_nope = np.einsum("tc,hci->thi", c, W[p + "attn_k_b.weight"])
            v = np.einsum("tc,hjc->thj", c, W[p + "attn_v_b.weight"])
        q_pe = rope_deepseek(q_pe, positions, self.inv_freq, self.rope_mscale)
        k_pe = rope_deepseek(k_pe[:, None, :], positions, self.inv_freq, self.rope_mscale)
        qs = np.concatenate([q_nope, q_pe], axis=-1)
        ks = np.concatenate([k_nope, np.broadcast_to(k_pe, (T, nh, rope))], axis=-1)
        out = causal_attention(qs, ks, v, self.softmax_scale)
        return self.linear(out.reshape(T, nh * vh), p + "attn_output.weight")

    def mlp(self, h, p, kind):
        """DeepseekV2MLP: down(silu(gate(h)) * up(h)); kind "" (dense) or "_shexp"."""
        act = silu(self.linear(h, p + "ffn_gate%s.weight" % kind)) * \
            self.linear(h, p + "ffn_up%s.weight" % kind)
        return self.linear(act, p + "ffn_down%s.weight" % kind)

    def moe_deepseek(self, il, h, stats):
        """DeepseekV2MoE / DeepseekV3MoE with MoEGate:
          softmax scores (V2): topk_method greedy (n_group 1) or
            group_limited_greedy (group score = max of its experts);
          sigmoid scores (V3): noaux_tc, selection on scores +
            e_score_correction_bias, group score = sum of the group's top-2,
            weights = the unbiased scores;
          top-k within the top topk_group groups (others masked to 0.0);
          weights renormalised when norm_topk_prob; routed_scaling_factor
          (V2 code applies it only without renormalisation, V3 always;
          published V2 models never renormalise, so both read: renormalise
          if asked, then scale);
          plus the shared experts, ungated."""
        W, p = self.W, "blk.%d." % il
        k, ne, ng = self.n_expert_used, self.n_expert, self.n_group
        T = h.shape[0]
        logits = self.linear(h, p + "ffn_gate_inp.weight")
        if self.gating == 2:
            scores = 1.0 / (1.0 + np.exp(-logits))
            choice = scores + W[p + "exp_probs_b.bias"]
            grp = np.sort(choice.reshape(T, ng, ne // ng), axis=-1)[..., -2:].sum(-1)
        else:
            scores = softmax(logits, axis=-1)
            choice = scores
            grp = scores.reshape(T, ng, ne // ng).max(-1)
        gorder = np.argsort(-grp, axis=-1, kind="stable")
        gmask = np.zeros((T, ng), dtype=bool)
        np.put_along_axis(gmask, gorder[:, :self.n_group_used], True, axis=-1)
        emask = np.repeat(gmask, ne // ng, axis=-1)
        tmp = np.where(emask, choice, 0.0)
        order = np.argsort(-tmp, axis=-1, kind="stable")
        top = order[:, :k]
        w = np.take_along_axis(scores, top, axis=-1)
        if k > 1 and self.norm_topk:
            w = w / (np.sum(w, axis=-1, keepdims=True) + 1e-20)
        w = w * self.w_scale
        st = np.take_along_axis(tmp, order, axis=-1)
        if k < ne:
            gap = st[:, k - 1] - st[:, k]
            stats["router_gap_min"] = min(stats.get("router_gap_min", np.inf), float(gap.min()))
        if ng > 1:
            sg = np.take_along_axis(grp, gorder, axis=-1)
            ggap = sg[:, self.n_group_used - 1] - sg[:, self.n_group_used]
            stats["group_gap_min"] = min(stats.get("group_gap_min", np.inf), float(ggap.min()))
        stats.setdefault("experts_used", set()).update(int(e) for e in top.reshape(-1))
        out = np.zeros_like(h)
        for e in np.unique(top):
            rows, slot = np.nonzero(top == e)
            x = h[rows]
            act = silu(self.linear(x, p + "ffn_gate_exps.weight", e)) * \
                self.linear(x, p + "ffn_up_exps.weight", e)
            out[rows] += w[rows, slot][:, None] * self.linear(act, p + "ffn_down_exps.weight", e)
        return out + self.mlp(h, p, "_shexp")

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
            hn = rms_norm(x, W[p + "attn_norm.weight"], self.eps)
            if self.arch == "deepseek2":
                x = x + self.attention_mla(il, hn, positions)
                hn = rms_norm(x, W[p + "ffn_norm.weight"], self.eps)
                if il < self.n_dense:
                    x = x + self.mlp(hn, p, "")
                else:
                    x = x + self.moe_deepseek(il, hn, stats)
                continue
            x = x + self.attention(il, hn, positions)
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
