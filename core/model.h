/* moegate — model loading and the forward pass.
 *
 * A model is a GGUF file mapped read-only (weights are never copied), the
 * hyper-parameters read from the metadata keys the GGUF ecosystem writes, a
 * thread pool and scratch buffers planned at load. Supported architectures:
 * qwen3moe, qwen2moe, llama with expert tensors (Mixtral), and deepseek2
 * (DeepSeek-V2/V3: multi-head latent attention, DeepSeekMoE). Anything else,
 * a missing tensor or a tensor of the wrong shape or type is refused at open
 * with a message that names it.
 *
 * The forward pass works on a batch of tokens that may belong to several
 * sequences (the unit the serving scheduler uses). Each sequence owns a slot
 * of a model_kv cache; a token at position p of sequence s attends to the
 * cached positions 0..p of s. Within one expert, all the batch's tokens routed
 * to it are multiplied together, so each expert's weights are read once per
 * forward call.
 *
 * Thread safety: one thread at a time may call model_forward on a model (the
 * model's pool runs the kernels). model_get_info and model_gguf may be
 * called from any thread.
 */
#ifndef MOEGATE_CORE_MODEL_H
#define MOEGATE_CORE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "lora.h"

typedef struct model model;
typedef struct model_kv model_kv;

enum model_arch {
    MODEL_ARCH_QWEN3MOE,
    MODEL_ARCH_QWEN2MOE,
    MODEL_ARCH_MIXTRAL, /* GGUF architecture "llama" with expert tensors */
    MODEL_ARCH_DEEPSEEK2, /* DeepSeek-V2/V2-Lite/V3/R1 */
};

/* Router scores (deepseek2.expert_gating_func numbering). */
enum model_gating {
    MODEL_GATING_SOFTMAX = 1,
    MODEL_GATING_SIGMOID = 2,
};

typedef struct model_info {
    enum model_arch arch;
    char arch_name[32]; /* general.architecture as stored */
    char name[128];     /* general.name, may be empty */
    int64_t n_vocab;
    int64_t dim;       /* embedding_length */
    int64_t n_layer;   /* block_count */
    int64_t n_head;    /* attention.head_count */
    int64_t n_head_kv; /* attention.head_count_kv */
    int64_t head_dim;  /* attention.key_length (= value_length); deepseek2: the
                        * query/key head size qk_nope + qk_rope */
    int64_t n_expert;
    int64_t n_expert_used;
    int64_t expert_ff; /* expert_feed_forward_length */
    int64_t shared_ff; /* shared-expert FFN width, 0 if none (qwen2moe:
                        * expert_shared_feed_forward_length; deepseek2:
                        * expert_shared_count x expert_feed_forward_length) */
    int64_t n_expert_shared; /* deepseek2 expert_shared_count */
    int64_t dense_ff;        /* deepseek2 feed_forward_length of the dense layers */
    int64_t n_dense_lead;    /* deepseek2 leading_dense_block_count */
    enum model_gating gating; /* softmax (all but DeepSeek-V3) or sigmoid */
    int64_t n_group, n_group_used; /* expert groups and groups kept (1, 1: none) */
    double expert_scale;     /* routed scaling factor (1 when none) */
    /* deepseek2 multi-head latent attention (0 for the other families) */
    int64_t q_lora_rank;     /* 0: no query compression (V2-Lite) */
    int64_t kv_lora_rank;
    int64_t qk_nope, qk_rope, v_head_dim;
    bool kv_b_split;         /* attn_k_b/attn_v_b instead of attn_kv_b */
    double attn_scale;       /* softmax scale (YaRN mscale^2 / sqrt(head_dim)) */
    char rope_scaling[16];   /* "none", "linear" or "yarn" */
    double yarn_factor, yarn_log_mul, yarn_beta_fast, yarn_beta_slow;
    int64_t yarn_orig_ctx;
    size_t kv_bytes_token;      /* KV cache bytes per token (all layers, f32) */
    size_t kv_bytes_token_full; /* the same for uncompressed per-head keys and values */
    int64_t n_ctx_train;
    int64_t n_rot; /* rope.dimension_count */
    double rope_base;
    double rope_scale; /* linear scaling factor, 1 when none */
    bool rope_neox;    /* NeoX (half-split) rotation, else interleaved pairs */
    double rms_eps;
    bool norm_topk; /* renormalise the top-k router weights */
    bool tied_output; /* no output.weight: logits use token_embd */
    int64_t n_params;        /* every weight element */
    int64_t n_params_active; /* per token: non-expert + n_expert_used experts */
    size_t weight_bytes;     /* bytes of tensor data */
    size_t bytes_per_token;  /* weight bytes one decode step reads (k experts/layer) */
    uint32_t main_type;      /* most common tensor type by bytes */
    double load_seconds;
} model_info;

typedef void (*model_progress_fn)(void *ud, double fraction);

typedef struct model_opts {
    int n_threads;           /* <= 0: one per CPU */
    bool no_pin;             /* do not pin worker threads */
    const char *isa;         /* NULL: best; "scalar", "avx2", "avx512": upper bound */
    int n_batch;             /* max tokens per internal forward chunk; <= 0: 256 */
    bool prefault;           /* touch every weight page at load (shows progress) */
    model_progress_fn progress; /* called with 0..1 during prefault; may be NULL */
    void *progress_ud;
    bool mla_naive;          /* deepseek2: naive MLA (per-head keys and values expanded
                              * from the cache) instead of the absorbed form; tests */
} model_opts;

/* Opens path. Errors: those of gguf_open, MG_EUNSUPPORTED (architecture,
 * tensor type), MG_ENOTFOUND (missing tensor or key, named), MG_EFORMAT
 * (shape mismatch, named with expected and found shapes). */
int model_open(model **out, const char *path, const model_opts *opts, char *err, size_t errlen);
void model_close(model *m); /* accepts NULL */

const model_info *model_get_info(const model *m);
const gguf *model_gguf(const model *m);
const char *model_isa_name(const model *m); /* kernel table in use */
int model_n_threads(const model *m);        /* engine threads (the pool's size) */
/* The calling thread becomes the one that runs model_forward (pin: it takes
 * the first engine CPU), or gives that role up (!pin: back to the affinity
 * the thread that opened the model had). See pool_pin_thread. */
void model_pin_thread(model *m, bool pin);

/* KV cache for n_seq sequences of up to n_ctx positions each, f32: keys and
 * values per kv head, or for deepseek2 one compressed latent row per token
 * and layer (kv_lora_rank + rope dims, shared by all heads); model_info's
 * kv_bytes_token gives the size per token. */
int model_kv_create(model_kv **out, const model *m, int n_seq, int n_ctx, char *err,
                    size_t errlen);
void model_kv_free(model_kv *kv); /* accepts NULL */

/* A paged KV cache: n_blocks blocks of block_tokens positions each, shared by
 * n_seq sequences of up to n_ctx positions. Which blocks hold a sequence is
 * the caller's choice (core/kvblocks.h decides it for the scheduler): before
 * a forward pass touches sequence seq, model_kv_bind gives its table, block
 * ids for positions [i*block_tokens, (i+1)*block_tokens), i < n. The table
 * is not copied: it must stay valid and unchanged until the next bind of
 * that sequence. Blocks may be shared by several sequences (an identical
 * prefix): a forward pass only writes the positions of its batch tokens.
 * MG_EINVAL for a slot cache or a bad seq/n, MG_ERANGE for a block id
 * outside the pool. */
int model_kv_create_paged(model_kv **out, const model *m, int n_seq, int n_blocks, int block_tokens, int n_ctx,
                          char *err, size_t errlen);
int model_kv_bind(model_kv *kv, int seq, const int32_t *blocks, int n);
/* Copies positions 0..rows-1 of block src into block dst, every layer
 * (paged caches; a shared prefix ending inside a block). */
int model_kv_copy_rows(model_kv *kv, int32_t dst, int32_t src, int32_t rows);
/* Bytes one block of block_tokens positions takes (keys and values, every layer). */
size_t model_kv_block_bytes(const model *m, int block_tokens);
size_t model_kv_bytes(const model_kv *kv);

typedef struct model_batch {
    int n;                      /* tokens in the batch */
    const int32_t *token;       /* [n] token ids */
    const int32_t *pos;         /* [n] position of each token in its sequence */
    const int32_t *seq;         /* [n] sequence slot in the kv cache */
    const uint8_t *want_logits; /* [n] nonzero: produce logits; NULL: all */
    const model_lora *const *lora; /* [n] adapter applied to each token (NULL entry: the
                                    * base); NULL: no adapter anywhere. Each adapter must
                                    * have passed model_lora_check for this model. */
} model_batch;

/* Runs the batch. For every token with want_logits, writes one row of n_vocab
 * logits into logits, rows in batch order. Every position 0..pos-1 of a
 * token's sequence must have been evaluated (earlier in this batch or in an
 * earlier call). Errors: MG_EINVAL/MG_ERANGE for a bad token id, position or
 * slot (named). */
int model_forward(model *m, model_kv *kv, const model_batch *b, float *logits, char *err,
                  size_t errlen);

#endif
