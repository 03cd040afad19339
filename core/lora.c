/* lora.c — target names and shapes for LoRA adapters (see lora.h). */
#include "core/lora.h"

#include <math.h>

#include "core/errors.h"
#include "core/tensor.h"
#include "model_internal.h"

static const char *const names[LORA_N_TARGET] = {
    [LORA_ATTN_Q] = "attn_q",           [LORA_ATTN_K] = "attn_k",
    [LORA_ATTN_V] = "attn_v",           [LORA_ATTN_O] = "attn_output",
    [LORA_ATTN_Q_A] = "attn_q_a",       [LORA_ATTN_Q_B] = "attn_q_b",
    [LORA_ATTN_KV_A] = "attn_kv_a_mqa", [LORA_ATTN_KV_B] = "attn_kv_b",
    [LORA_FFN_GATE] = "ffn_gate",       [LORA_FFN_UP] = "ffn_up",
    [LORA_FFN_DOWN] = "ffn_down",       [LORA_SHEXP_GATE] = "ffn_gate_shexp",
    [LORA_SHEXP_UP] = "ffn_up_shexp",   [LORA_SHEXP_DOWN] = "ffn_down_shexp",
    [LORA_EXP_GATE] = "ffn_gate_exps",  [LORA_EXP_UP] = "ffn_up_exps",
    [LORA_EXP_DOWN] = "ffn_down_exps",
};

const char *lora_target_name(enum lora_target t)
{
    return (unsigned)t < LORA_N_TARGET ? names[t] : "?";
}

/* The base matrix a target adapts, or NULL when the layer has none. */
const wmat *model_lora_base(const model *m, int64_t il, enum lora_target t)
{
    const layer *L = &m->layers[il];
    const wmat *w = NULL;
    switch (t) {
    case LORA_ATTN_Q: w = &L->wq; break;
    case LORA_ATTN_K: w = &L->wk; break;
    case LORA_ATTN_V: w = &L->wv; break;
    case LORA_ATTN_O: w = &L->wo; break;
    case LORA_ATTN_Q_A: w = &L->wq_a; break;
    case LORA_ATTN_Q_B: w = &L->wq_b; break;
    case LORA_ATTN_KV_A: w = &L->wkv_a; break;
    case LORA_ATTN_KV_B: w = &L->wkv_b; break;
    case LORA_FFN_GATE: w = L->dense ? &L->gate_ff : NULL; break;
    case LORA_FFN_UP: w = L->dense ? &L->up_ff : NULL; break;
    case LORA_FFN_DOWN: w = L->dense ? &L->down_ff : NULL; break;
    case LORA_SHEXP_GATE: w = L->dense ? NULL : &L->gate_sh; break;
    case LORA_SHEXP_UP: w = L->dense ? NULL : &L->up_sh; break;
    case LORA_SHEXP_DOWN: w = L->dense ? NULL : &L->down_sh; break;
    case LORA_EXP_GATE: w = L->dense ? NULL : &L->gate_exps; break;
    case LORA_EXP_UP: w = L->dense ? NULL : &L->up_exps; break;
    case LORA_EXP_DOWN: w = L->dense ? NULL : &L->down_exps; break;
    default: return NULL;
    }
    return w;
}

int model_lora_shape(const model *m, int64_t il, enum lora_target t, int64_t *n_out, int64_t *n_in,
                     int64_t *n_expert)
{
    const model_info *I = &m->info;
    if (il < 0 || il >= I->n_layer || (unsigned)t >= LORA_N_TARGET)
        return MG_ENOTFOUND;
    const layer *L = &m->layers[il];
    if (t == LORA_ATTN_KV_B) {
        if (I->arch != MODEL_ARCH_DEEPSEEK2)
            return MG_ENOTFOUND;
        /* fused or split in the file: the logical kv_b_proj shape */
        (void)L;
        *n_out = I->n_head * (I->qk_nope + I->v_head_dim);
        *n_in = I->kv_lora_rank;
        *n_expert = 1;
        return MG_OK;
    }
    const wmat *w = model_lora_base(m, il, t);
    if (!w || (!w->data && !w->split) || w->n_in <= 0)
        return MG_ENOTFOUND;
    *n_out = w->n_out;
    *n_in = w->n_in;
    *n_expert = t >= LORA_EXP_GATE ? w->n_mat : 1;
    return MG_OK;
}

int model_lora_check(const model *m, const model_lora *l, char *err, size_t errlen)
{
    const model_info *I = &m->info;
    if (!l || !l->layer || l->n_layer != I->n_layer) {
        mg_err_set(err, errlen, "lora: the adapter has %lld layers, the base model %lld",
                   (long long)(l ? l->n_layer : 0), (long long)I->n_layer);
        return MG_EFORMAT;
    }
    for (int64_t il = 0; il < l->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            const lora_pair *p = l->layer[il].t[t];
            if (!p)
                continue;
            int64_t n_out, n_in, ne;
            if (model_lora_shape(m, il, (enum lora_target)t, &n_out, &n_in, &ne)) {
                mg_err_set(err, errlen, "lora: blk.%lld.%s: the base model has no such matrix", (long long)il,
                           names[t]);
                return MG_EFORMAT;
            }
            for (int64_t e = 0; e < ne; e++) {
                const lora_pair *q = &p[e];
                if (q->r == 0)
                    continue;
                if (q->r < 0 || q->r > n_in || q->r > n_out || !q->a || !q->bt || !isfinite(q->scale) ||
                    (q->type != TENSOR_F32 && q->type != TENSOR_F16 && q->type != TENSOR_BF16)) {
                    mg_err_set(err, errlen, "lora: blk.%lld.%s%s%lld: rank %d, type %u or data invalid",
                               (long long)il, names[t], ne > 1 ? " expert " : "", ne > 1 ? (long long)e : 0LL,
                               (int)q->r, (unsigned)q->type);
                    return MG_EFORMAT;
                }
            }
        }
    return MG_OK;
}
