/* moegate — LoRA deltas in the form the forward pass applies them.
 *
 * A LoRA adapter adds to a base weight W [n_out][n_in] the low-rank product
 * scale * B A, with A [r][n_in] and B [n_out][r]. The engine applies it
 * unmerged, per sequence: y = W x + scale * B (A x), so one batch can mix
 * sequences of several adapters and of the base model.
 *
 * This header is the contract between the file loaders (adapters/: PEFT
 * safetensors, GGUF LoRA) and the engine (core/): the loaders fill a
 * model_lora, model_lora_check validates it against the base model, and
 * model_batch.lora names, per token, the adapter to apply (NULL: base).
 *
 * Targets are the base model's projection tensors, named as in GGUF
 * (blk.N.<name>.weight). Routed-expert targets hold one pair per expert
 * (n_expert pairs; r == 0 for an expert the adapter leaves alone).
 *
 * Storage: A and B are f32, f16 or bf16 (the adapter file's type), row-major;
 * B is stored transposed, bt [r][n_out], so the update is r scaled row
 * additions. The engine never writes them.
 *
 * Lifetime: a model_lora is reference counted (model_lora_retain/release);
 * the serving engine holds a reference for as long as a sequence uses it,
 * so an adapter unloaded from a registry is freed only after its last
 * sequence ends. The last release calls destroy.
 */
#ifndef MOEGATE_CORE_LORA_H
#define MOEGATE_CORE_LORA_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum lora_target {
    LORA_ATTN_Q,      /* attn_q         q_proj (deepseek2 without q compression) */
    LORA_ATTN_K,      /* attn_k         k_proj */
    LORA_ATTN_V,      /* attn_v         v_proj */
    LORA_ATTN_O,      /* attn_output    o_proj */
    LORA_ATTN_Q_A,    /* attn_q_a       q_a_proj            (deepseek2) */
    LORA_ATTN_Q_B,    /* attn_q_b       q_b_proj            (deepseek2) */
    LORA_ATTN_KV_A,   /* attn_kv_a_mqa  kv_a_proj_with_mqa  (deepseek2) */
    LORA_ATTN_KV_B,   /* attn_kv_b      kv_b_proj           (deepseek2; also for split k_b/v_b) */
    LORA_FFN_GATE,    /* ffn_gate       mlp.gate_proj  (deepseek2 leading dense layers) */
    LORA_FFN_UP,      /* ffn_up         mlp.up_proj */
    LORA_FFN_DOWN,    /* ffn_down       mlp.down_proj */
    LORA_SHEXP_GATE,  /* ffn_gate_shexp shared expert(s) gate_proj */
    LORA_SHEXP_UP,    /* ffn_up_shexp */
    LORA_SHEXP_DOWN,  /* ffn_down_shexp */
    LORA_EXP_GATE,    /* ffn_gate_exps  routed experts: one pair per expert */
    LORA_EXP_UP,      /* ffn_up_exps */
    LORA_EXP_DOWN,    /* ffn_down_exps */
    LORA_N_TARGET
};

typedef struct lora_pair {
    int32_t r;        /* rank; 0: this matrix is not adapted */
    uint32_t type;    /* TENSOR_F32, TENSOR_F16 or TENSOR_BF16, for a and bt */
    float scale;      /* alpha / r (alpha / sqrt(r) with rsLoRA), times the user's scale */
    const void *a;    /* [r][n_in] */
    const void *bt;   /* [r][n_out]: B transposed */
} lora_pair;

typedef struct lora_layer {
    /* NULL: target not adapted in this layer; else one pair, or n_expert
     * pairs for LORA_EXP_* */
    lora_pair *t[LORA_N_TARGET];
} lora_layer;

typedef struct model_lora model_lora;
struct model_lora {
    int64_t n_layer;   /* must equal the base model's block_count */
    lora_layer *layer; /* [n_layer] */
    uint64_t id;       /* unique per loaded adapter: separates its cached KV prefixes */
    atomic_int refs;   /* starts at 1 (the loader's reference) */
    void (*destroy)(model_lora *l); /* frees everything; called by the last release */
    void *owner;       /* the loader's private data */
};

struct model;

/* GGUF base name of a target ("attn_q", "ffn_gate_exps", ...). */
const char *lora_target_name(enum lora_target t);

/* The shape LoRA must have for target t of layer il of model m:
 * n_out x n_in, and n_expert (1 for non-expert targets). MG_ENOTFOUND when
 * the base has no such matrix in that layer (for example attn_q_a in a
 * Qwen model, or ffn_gate_exps in a dense layer). For attn_kv_b the shape is
 * the fused one, [n_head * (qk_nope + v_head_dim)][kv_lora_rank], even when
 * the GGUF stores it split. */
int model_lora_shape(const struct model *m, int64_t il, enum lora_target t, int64_t *n_out, int64_t *n_in,
                     int64_t *n_expert);

/* Checks l against m: layer count, every present pair's type, rank
 * (1..n_in), pointers, and that its target exists in that layer. The
 * message names layer and target. */
int model_lora_check(const struct model *m, const model_lora *l, char *err, size_t errlen);

/* Merge at load, for a deployment that serves one domain: every matrix the
 * adapter touches gets a private copy holding W + scale * B A, re-quantised
 * to the base's type (f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K; others
 * MG_EUNSUPPORTED), and the model uses it for every sequence from then on;
 * untouched weights stay mapped from the file. Call before any forward pass
 * (not while a scheduler runs). The adapter is not needed afterwards. With
 * a quantised base, re-quantising adds that type's rounding to the delta;
 * the unmerged path (model_batch.lora) has none. */
int model_merge_lora(struct model *m, const model_lora *l, char *err, size_t errlen);

static inline model_lora *model_lora_retain(model_lora *l)
{
    if (l)
        atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
    return l;
}

static inline void model_lora_release(model_lora *l)
{
    if (l && atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1 && l->destroy)
        l->destroy(l);
}

#endif
