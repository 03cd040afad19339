/* moegate — model internals shared by model.c (loading, the GQA families,
 * MoE) and mla.c (deepseek2: multi-head latent attention). Not public.
 *
 * Shapes are written [rows][cols], row-major; rows of activations are the
 * tokens of a forward chunk (at most n_batch).
 */
#ifndef MOEGATE_CORE_MODEL_INTERNAL_H
#define MOEGATE_CORE_MODEL_INTERNAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine_internal.h"
#include "model.h"
#include "tensor.h"

/* RoPE rotates at most this many pairs per head (rope.dimension_count / 2);
 * the per-token angle tables live on the stack. */
#define ROPE_MAX_PAIRS 512

typedef struct layer {
    float *attn_norm;            /* [dim] */
    wmat wq, wk, wv, wo;         /* [n_head*hd][dim], [n_kv*hd][dim] x2, [dim][n_head*hd];
                                  * deepseek2: wq [n_head*qk_hd][dim] (no q_lora),
                                  * wo [dim][n_head*v_hd] */
    float *bq, *bk, *bv;         /* qwen2moe biases, else NULL */
    float *q_norm, *k_norm;      /* qwen3moe per-head norms [hd], else NULL */
    /* deepseek2 MLA (see mla.c) */
    wmat wq_a, wq_b;             /* [q_lora][dim], [n_head*qk_hd][q_lora] (q_lora > 0) */
    float *q_a_norm;             /* [q_lora] */
    wmat wkv_a;                  /* [kv_lora + rope][dim]: latent, then the shared k_pe */
    float *kv_a_norm;            /* [kv_lora] */
    wmat wkv_b;                  /* fused: [n_head*(nope + v_hd)][kv_lora], else n_in 0 */
    wmat wk_b;                   /* split: n_head x [kv_lora][nope] (W_UK^h transposed) */
    wmat wv_b;                   /* n_head x [v_hd][kv_lora]: split tensor, or a view of
                                  * the fused one's value rows (mat_bytes skips keys) */
    float *ffn_norm;             /* [dim] */
    bool dense;                  /* deepseek2 leading dense layer: ffn_gate/up/down */
    wmat gate_ff, up_ff, down_ff; /* [ff][dim] x2, [dim][ff] */
    wmat router;                 /* [n_expert][dim] */
    float *exp_bias;             /* [n_expert] selection bias (deepseek V3), else NULL */
    wmat gate_exps, up_exps;     /* [n_expert][eff][dim] */
    wmat down_exps;              /* [n_expert][dim][eff] */
    float *shexp_gate;           /* qwen2moe: [dim] sigmoid gate of the shared expert */
    wmat gate_sh, up_sh, down_sh; /* shared expert(s): [sff][dim] x2, [dim][sff] */
} layer;

struct model_kv {
    const model *m;
    int n_seq, n_ctx;  /* sequences; the most positions one sequence may hold */
    int32_t n_blocks, bt; /* storage: n_blocks blocks of bt positions (slots: bt = n_ctx) */
    int64_t kv_dim; /* n_head_kv * head_dim; deepseek2: kv_lora + rope (one latent row) */
    float *k, *v;   /* [n_layer][n_blocks][bt][kv_dim]; deepseek2: k only, v NULL */
    bool paged;     /* tables bound by the caller (model_kv_bind), else one slot each */
    const int32_t **table; /* [n_seq] block of each bt positions of the sequence */
    int32_t *table_n;      /* [n_seq] blocks in each table */
    int32_t *own;          /* slots: the identity tables */
    float *scores;  /* [n_threads][n_head/n_head_kv][n_ctx] attention scratch
                     * (deepseek2: [n_threads][n_head][n_ctx]) */
    size_t bytes;
};

/* Scratch for one forward chunk of up to nb tokens. */
typedef struct scratch {
    float *x;       /* [nb][dim] residual stream */
    float *xn;      /* [nb][dim] normalised input of a block */
    float *q;       /* [nb][n_head*hd] */
    float *k, *v;   /* [nb][n_kv*hd] */
    float *att;     /* [nb][n_head*max(hd, v_hd)] attention output */
    float *o;       /* [nb][dim] block output */
    float *rlog;    /* [nb][n_expert] router logits, then scores */
    float *rsel;    /* [nb][n_expert] selection scores (scores + bias, masked) */
    int32_t *sel;   /* [nb][k] selected experts */
    float *selw;    /* [nb][k] their weights */
    int32_t *slot_tok; /* [nb*k] token of each expert slot */
    int32_t *tok_slot; /* [nb][k] slot of each (token, choice) */
    int32_t *ex;       /* [n_expert] active experts */
    int32_t *slot_off; /* [n_expert+1] first slot of each active expert */
    int32_t *rlog_i;   /* [n_expert] fill cursors */
    int n_ex;          /* active experts in this chunk */
    unsigned char *xa;  /* [nb*k] prepared rows for gate/up */
    unsigned char *xa2; /* [nb*k] prepared rows for up when its type differs */
    unsigned char *ha;  /* [nb*k] prepared rows for down */
    float *hg, *hu;     /* [max(nb*k*eff, nb*max(sff, ff))] */
    float *eo;          /* [nb*k][dim] expert outputs */
    float *shg;         /* [nb] shared-expert gate logits */
    float *rows;        /* [nb][dim] compacted rows wanting logits */
    /* deepseek2 MLA */
    float *qa;          /* [nb][q_lora] */
    float *kva;         /* [nb][kv_lora + rope] */
    float *qfull;       /* [nb][n_head][kv_lora + rope] absorbed queries */
    float *olat;        /* [nb][n_head][kv_lora] attention output in latent space */
    float *hm_in;       /* [n_head][nb][max(nope, kv_lora)] head-major inputs */
    unsigned char *hm_act; /* [n_head*nb] prepared head-major rows */
    float *hm_out;      /* [n_head][nb][max(kv_lora, v_hd)] head-major outputs */
    int32_t *head_ex;   /* [n_head] 0..n_head-1 */
    int32_t *head_off;  /* [n_head+1] */
    float *rowbuf;      /* [n_threads][max(kv_lora, v_hd, nope)*2] dequantised rows */
} scratch;

struct model {
    model_info info;
    gguf *g;
    pool *pool;
    mm_ctx mm;
    int n_batch;
    const tensor_kernels *kt;
    wmat tok_embd; /* [n_vocab][dim] */
    float *out_norm;
    wmat output;
    layer *layers;
    scratch s;
    float *rope_inv_freq; /* [n_rot/2] (deepseek2: YaRN-corrected) */
    bool mla_naive;       /* deepseek2: expand keys/values per head (tests) */
    void **allocs;        /* every owned buffer (vectors, scratch), freed at close */
    size_t n_allocs, cap_allocs;
    bool oom;             /* an own_alloc failed */
    /* LoRA application scratch (lora.c), grown on demand by the forward caller */
    struct lora_item *lora_items;
    int lora_items_cap;
    float *lora_tmp;      /* [n_threads][lora_tmp_stride] */
    size_t lora_tmp_stride;
    bool lora_oom;        /* growing it failed during this forward */
};

/* ---- shared helpers (model.c) ---- */

/* {arch}.suffix as an integer in 0..2^40 (absent: MG_OK, *out untouched,
 * unless required) or a finite number (absent: MG_OK, untouched). */
int model_meta_int(const model *m, const char *suffix, int64_t *out, bool required, char *err,
                   size_t errlen);
int model_meta_float(const model *m, const char *suffix, double *out, char *err, size_t errlen);
/* Zeroed, 64-byte aligned, freed at close; NULL and m->oom on failure. */
void *model_own_alloc(model *m, size_t bytes);
/* Binds a matrix (n_mat > 1: a stack) checking its shape and type; absent
 * and optional: MG_OK with w zeroed. */
int model_bind_wmat(model *m, wmat *w, const char *name, int64_t n_in, int64_t n_out,
                    int64_t n_mat, bool required, char *err, size_t errlen);
/* 1-D tensor -> owned f32 array (NULL and MG_OK when optional and absent). */
int model_bind_vec(model *m, float **out, const char *name, int64_t n, bool required, char *err,
                   size_t errlen);
void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
void model_rmsnorm_rows(model *m, float *out, const float *x, const float *w, int64_t rows,
                        int64_t n);
void model_rope_angles(float *cs, float *sn, const float *inv_freq, int64_t half, float pos);

/* Cached row of position pos of sequence seq in layer il. */
static inline float *kv_row(const model_kv *kv, float *base, int64_t il, int32_t seq, int32_t pos)
{
    int32_t blk = kv->table[seq][pos / kv->bt];
    size_t idx = ((size_t)il * (size_t)kv->n_blocks + (size_t)blk) * (size_t)kv->bt + (size_t)(pos % kv->bt);
    return base + idx * (size_t)kv->kv_dim;
}

/* Positions p0.. that lie in one block (contiguous rows), up to end. */
static inline int32_t kv_run(const model_kv *kv, int32_t p0, int32_t end)
{
    int32_t n = kv->bt - p0 % kv->bt;
    return n < end - p0 ? n : end - p0;
}

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* out[0..n) += w * x[0..n), in chunks of 16 so the compiler vectorises it
 * even for baseline x86-64. */
static inline void axpy(float *restrict out, float w, const float *restrict x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++)
            out[i + j] += w * x[i + j];
    for (; i < n; i++)
        out[i] += w * x[i];
}

/* out[0..width) = sum_p softmax(scale * sc)_p * row_p for p < n, where
 * row_p = kv_row(kv, base, il, seq, p) + off (the cached values, or latent
 * rows); sc is overwritten with the unnormalised weights. */
static inline void attn_softmax_sum(const tensor_kernels *kt, float *out, float *sc, int32_t n, float scale,
                                    const model_kv *kv, float *base, int64_t il, int32_t seq, int64_t off,
                                    int64_t width)
{
    float mx = -INFINITY;
    for (int32_t p = 0; p < n; p++) {
        sc[p] *= scale;
        mx = sc[p] > mx ? sc[p] : mx;
    }
    double sum = 0;
    for (int32_t p = 0; p < n; p++) {
        sc[p] = expf(sc[p] - mx);
        sum += sc[p];
    }
    float inv = (float)(1.0 / sum);
    memset(out, 0, sizeof(float) * (size_t)width);
    for (int32_t p0 = 0; p0 < n;) {
        int32_t run = kv_run(kv, p0, n);
        const float *rows = kv_row(kv, base, il, seq, p0) + off;
        for (int32_t p = 0; p < run; p++)
            tensor_axpy(kt, TENSOR_F32, out, sc[p0 + p] * inv, rows + (size_t)p * (size_t)kv->kv_dim, width);
        p0 += run;
    }
}

/* scores[h*ld + p] = dot(row_p + off, x_h) for p < n, h < nx: one f32
 * tensor_gemm per block of cached rows. */
static inline void attn_scores(const tensor_kernels *kt, float *scores, int64_t ld, const model_kv *kv,
                               float *base, int64_t il, int32_t seq, int64_t off, int32_t n, const float *x,
                               size_t x_stride, int64_t nx, int64_t k)
{
    for (int32_t p0 = 0; p0 < n;) {
        int32_t run = kv_run(kv, p0, n);
        tensor_gemm(kt, TENSOR_F32, scores + p0, ld, kv_row(kv, base, il, seq, p0) + off,
                    (size_t)kv->kv_dim * sizeof(float), run, x, x_stride, nx, k);
        p0 += run;
    }
}

/* ---- LoRA adapters (lora.c) ---- */

/* y[k] += the LoRA delta of target t, layer il, for each token k < n of the
 * chunk starting at batch index b0 whose adapter adapts it; x rows are the
 * projection's f32 inputs. No-op without adapters. */
void lora_apply_dense(model *m, const model_batch *b, int b0, int n, int64_t il, enum lora_target t, float *y,
                      int64_t ldy, const float *x, int64_t ldx);
/* The same over the MoE expert slots (m->s.ex/slot_off/slot_tok from
 * routing): y row = slot; x row = the slot's token (x_by_token) or slot. */
void lora_apply_experts(model *m, const model_batch *b, int b0, int64_t il, enum lora_target t, float *y,
                        int64_t ldy, const float *x, int64_t ldx, bool x_by_token);
/* deepseek2 kv_b in the absorbed form: the query side (m->s.qfull from
 * m->s.q) or the value side (m->s.att from m->s.olat). */
void lora_apply_kv_b(model *m, const model_batch *b, int b0, int n, int64_t il, bool values);
/* The base matrix of a target (NULL when the layer has none). */
const wmat *model_lora_base(const model *m, int64_t il, enum lora_target t);

/* ---- deepseek2 multi-head latent attention (mla.c) ---- */

/* Reads every deepseek2 hyper-parameter (called by model_open once the
 * architecture is known); checks ranges and consistency, naming keys. */
int mla_read_hparams(model *m, char *err, size_t errlen);
/* Binds layer il's attention tensors (fused or split kv_b). */
int mla_bind_layer(model *m, int il, char *err, size_t errlen);
/* Scratch of the MLA forward (after the generic plan; needs the pool). */
void mla_plan_scratch(model *m);
/* YaRN-corrected inverse frequencies into m->rope_inv_freq. */
void mla_rope_init(model *m);
/* Attention block of layer il for tokens b0..b0+n: reads m->s.xn, writes
 * m->s.o ([n][dim]) and appends each token's latent row to the cache. */
void mla_attention(model *m, model_kv *kv, const model_batch *b, int b0, int n, int64_t il);

#endif
