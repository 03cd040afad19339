/* moegate — model loading and the forward pass for qwen3moe, qwen2moe,
 * mixtral (GGUF arch "llama" with experts) and deepseek2 (whose multi-head
 * latent attention lives in mla.c; its DeepSeekMoE routing, shared experts
 * and leading dense layers are here, with the other families' MoE).
 *
 * Loading binds every tensor of the file to a wmat (weights stay in the
 * read-only mapping) after checking its type and shape against the
 * hyper-parameters; 1-D tensors (norms, biases, the shared-expert gate) are
 * small and are converted to owned f32 arrays so any float/quant type works.
 * Scratch buffers for a batch of up to n_batch tokens are planned here, so
 * the forward pass never allocates.
 *
 * The forward pass (model_forward -> forward_chunk) follows the published
 * model definitions step by step; see the one-line comments there. Shapes
 * are written [rows][cols], row-major, rows = tokens of the batch.
 *
 * Ownership: the model owns its gguf mapping, pool and scratch; a model_kv
 * is owned by its creator and must not outlive the model.
 */
#include "model.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "model_internal.h"

/* ---- metadata ------------------------------------------------------------ */

int model_meta_int(const model *m, const char *suffix, int64_t *out, bool required, char *err,
                    size_t errlen)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->info.arch_name, suffix);
    int rc = gguf_get_int(m->g, key, out);
    if (rc == MG_ENOTFOUND && !required)
        return MG_OK;
    if (rc == MG_ENOTFOUND) {
        mg_err_set(err, errlen, "model: required metadata key '%s' is missing", key);
        return rc;
    }
    if (rc) {
        mg_err_set(err, errlen, "model: metadata key '%s' is not an integer", key);
        return rc;
    }
    if (*out < 0 || *out > ((int64_t)1 << 40)) {
        mg_err_set(err, errlen, "model: metadata key '%s' = %lld is out of range", key,
                   (long long)*out);
        return MG_ERANGE;
    }
    return MG_OK;
}

int model_meta_float(const model *m, const char *suffix, double *out, char *err, size_t errlen)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", m->info.arch_name, suffix);
    int rc = gguf_get_float(m->g, key, out);
    if (rc == MG_ENOTFOUND)
        return MG_OK;
    if (rc || !isfinite(*out)) {
        mg_err_set(err, errlen, "model: metadata key '%s' is not a finite number", key);
        return rc ? rc : MG_EFORMAT;
    }
    return MG_OK;
}

/* ---- owned buffers --------------------------------------------------------- */

/* Zeroed, 64-byte aligned, recorded for model_close. Load time only: the
 * forward pass never allocates. On failure sets m->oom and returns NULL. */
void *model_own_alloc(model *m, size_t bytes)
{
    if (m->n_allocs == m->cap_allocs) {
        size_t cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
        void **na = realloc(m->allocs, cap * sizeof(void *));
        if (!na) {
            m->oom = true;
            return NULL;
        }
        m->allocs = na;
        m->cap_allocs = cap;
    }
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p) {
        m->oom = true;
        return NULL;
    }
    memset(p, 0, bytes);
    m->allocs[m->n_allocs++] = p;
    return p;
}

/* ---- tensor binding ------------------------------------------------------ */

/* Finds name and checks that our kernels can compute its type. *t is NULL
 * (and MG_OK returned) when the tensor is optional and absent. */
static int find_computable(model *m, const gguf_tensor **t, const char *name, bool required,
                           char *err, size_t errlen)
{
    *t = gguf_tensor_find(m->g, name);
    if (!*t) {
        if (!required)
            return MG_OK;
        mg_err_set(err, errlen, "model: tensor '%s' is missing", name);
        return MG_ENOTFOUND;
    }
    const tensor_type_info *ti = tensor_type_get((*t)->type);
    if (!ti || !ti->computable) {
        mg_err_set(err, errlen, "model: tensor '%s' has type %s, which moegate cannot compute "
                   "(supported: f32 f16 bf16 q8_0 q4_0 q4_K q5_K q6_K)", name,
                   ti ? ti->name : "unknown");
        return MG_EUNSUPPORTED;
    }
    return MG_OK;
}

int model_bind_wmat(model *m, wmat *w, const char *name, int64_t n_in, int64_t n_out,
                     int64_t n_mat, bool required, char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    const gguf_tensor *t;
    int rc = find_computable(m, &t, name, required, err, errlen);
    if (rc || !t)
        return rc;
    int64_t want[3] = {n_in, n_out, n_mat};
    int want_dims = n_mat > 1 ? 3 : 2;
    bool ok = true;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        int64_t expect = d < want_dims ? want[d] : 1;
        if (t->ne[d] != expect)
            ok = false;
    }
    if (!ok) {
        mg_err_set(err, errlen,
                   "model: tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
                   name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                   (long long)n_in, (long long)n_out, (long long)(want_dims == 3 ? n_mat : 1));
        return MG_EFORMAT;
    }
    w->name = t->name;
    w->type = t->type;
    w->n_in = n_in;
    w->n_out = n_out;
    w->n_mat = n_mat;
    tensor_row_bytes(t->type, n_in, &w->row_bytes);
    w->mat_bytes = w->row_bytes * (size_t)n_out;
    w->data = t->data;
    return MG_OK;
}

/* Experts stored one tensor per expert (blk.N.ffn_gate.E.weight, the older
 * Mixtral layout): bind them as one stacked wmat with a pointer table. */
static int bind_split_experts(model *m, layer *L, wmat *w, int il, const char *kind,
                              int64_t n_in, int64_t n_out, char *err, size_t errlen)
{
    int64_t ne = m->info.n_expert;
    const void **ptrs = model_own_alloc(m, (size_t)ne * sizeof(void *));
    uint32_t type = 0;
    for (int64_t e = 0; e < ne; e++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s.%lld.weight", il, kind, (long long)e);
        wmat one;
        int rc = model_bind_wmat(m, &one, name, n_in, n_out, 1, true, err, errlen);
        if (rc)
            return rc;
        if (e == 0) {
            *w = one;
            type = one.type;
        } else if (one.type != type) {
            mg_err_set(err, errlen, "model: tensor '%s' has type %s but expert 0 has %s", name,
                       tensor_type_get(one.type)->name, tensor_type_get(type)->name);
            return MG_EUNSUPPORTED;
        }
        if (!ptrs)
            return MG_ENOMEM;
        ptrs[e] = one.data;
    }
    w->n_mat = ne;
    w->split = ptrs;

    return MG_OK;
}

/* 1-D tensor -> owned f32 array of n (NULL and MG_OK when optional and absent). */
int model_bind_vec(model *m, float **out, const char *name, int64_t n, bool required, char *err,
                    size_t errlen)
{
    *out = NULL;
    const gguf_tensor *t;
    int rc = find_computable(m, &t, name, required, err, errlen);
    if (rc || !t)
        return rc;
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        mg_err_set(err, errlen, "model: tensor '%s' has shape [%lld, %lld], expected [%lld]",
                   name, (long long)t->ne[0], (long long)t->ne[1], (long long)n);
        return MG_EFORMAT;
    }
    float *v = model_own_alloc(m, (size_t)n * sizeof(float));
    if (!v) {
        mg_err_set(err, errlen, "model: out of memory for tensor '%s'", name);
        return MG_ENOMEM;
    }
    tensor_dequant_row(m->kt, t->type, v, t->data, n);
    *out = v;
    return MG_OK;
}

/* A SwiGLU triple blk.il.ffn_{gate,up,down}<kind>.weight: gate and up
 * [n_mat][ff][dim], down [n_mat][dim][ff] (kind "", "_exps", "_shexp"). */
static int bind_swiglu(model *m, int il, const char *kind, wmat *gate, wmat *up, wmat *down,
                       int64_t ff, int64_t n_mat, char *err, size_t errlen)
{
    int64_t dim = m->info.dim;
    char n[96];
    int rc;
    snprintf(n, sizeof n, "blk.%d.ffn_gate%s.weight", il, kind);
    if ((rc = model_bind_wmat(m, gate, n, dim, ff, n_mat, true, err, errlen)))
        return rc;
    snprintf(n, sizeof n, "blk.%d.ffn_up%s.weight", il, kind);
    if ((rc = model_bind_wmat(m, up, n, dim, ff, n_mat, true, err, errlen)))
        return rc;
    snprintf(n, sizeof n, "blk.%d.ffn_down%s.weight", il, kind);
    return model_bind_wmat(m, down, n, ff, dim, n_mat, true, err, errlen);
}

/* deepseek2: MLA tensors (mla.c), then a dense FFN for the leading layers,
 * else the router (+ V3's selection bias), routed and shared experts. */
static int bind_layer_deepseek2(model *m, int il, char *err, size_t errlen)
{
    const model_info *I = &m->info;
    layer *L = &m->layers[il];
    int64_t dim = I->dim, eff = I->expert_ff, ne = I->n_expert, sff = I->shared_ff;
    char n[96];
    int rc;
#define NAME(fmt) (snprintf(n, sizeof n, "blk.%d." fmt, il), n)
    if ((rc = model_bind_vec(m, &L->attn_norm, NAME("attn_norm.weight"), dim, true, err,
                             errlen)) ||
        (rc = mla_bind_layer(m, il, err, errlen)) ||
        (rc = model_bind_vec(m, &L->ffn_norm, NAME("ffn_norm.weight"), dim, true, err, errlen)))
        return rc;
    if (il < I->n_dense_lead) {
        L->dense = true;
        return bind_swiglu(m, il, "", &L->gate_ff, &L->up_ff, &L->down_ff, I->dense_ff, 1, err,
                           errlen);
    }
    if ((rc = model_bind_wmat(m, &L->router, NAME("ffn_gate_inp.weight"), dim, ne, 1, true, err,
                              errlen)) ||
        (rc = model_bind_vec(m, &L->exp_bias, NAME("exp_probs_b.bias"), ne,
                             I->gating == MODEL_GATING_SIGMOID, err, errlen)) ||
        (rc = bind_swiglu(m, il, "_exps", &L->gate_exps, &L->up_exps, &L->down_exps, eff, ne,
                          err, errlen)))
        return rc;
    if (sff > 0 && (rc = bind_swiglu(m, il, "_shexp", &L->gate_sh, &L->up_sh, &L->down_sh, sff,
                                     1, err, errlen)))
        return rc;
#undef NAME
    return MG_OK;
}

static int bind_layer(model *m, int il, char *err, size_t errlen)
{
    const model_info *I = &m->info;
    layer *L = &m->layers[il];
    int64_t dim = I->dim, hd = I->head_dim;
    int64_t nq = I->n_head * hd, nkv = I->n_head_kv * hd;
    char n[96];
    int rc;
#define NAME(fmt) (snprintf(n, sizeof n, "blk.%d." fmt, il), n)
    if (I->arch == MODEL_ARCH_DEEPSEEK2)
        return bind_layer_deepseek2(m, il, err, errlen);
    if ((rc = model_bind_vec(m, &L->attn_norm, NAME("attn_norm.weight"), dim, true, err, errlen)) ||
        (rc = model_bind_wmat(m, &L->wq, NAME("attn_q.weight"), dim, nq, 1, true, err, errlen)) ||
        (rc = model_bind_wmat(m, &L->wk, NAME("attn_k.weight"), dim, nkv, 1, true, err, errlen)) ||
        (rc = model_bind_wmat(m, &L->wv, NAME("attn_v.weight"), dim, nkv, 1, true, err, errlen)) ||
        (rc = model_bind_wmat(m, &L->wo, NAME("attn_output.weight"), nq, dim, 1, true, err, errlen)) ||
        (rc = model_bind_vec(m, &L->ffn_norm, NAME("ffn_norm.weight"), dim, true, err, errlen)) ||
        (rc = model_bind_wmat(m, &L->router, NAME("ffn_gate_inp.weight"), dim, I->n_expert, 1, true,
                        err, errlen)))
        return rc;
    bool qwen2 = I->arch == MODEL_ARCH_QWEN2MOE, qwen3 = I->arch == MODEL_ARCH_QWEN3MOE;
    if ((rc = model_bind_vec(m, &L->bq, NAME("attn_q.bias"), nq, qwen2, err, errlen)) ||
        (rc = model_bind_vec(m, &L->bk, NAME("attn_k.bias"), nkv, qwen2, err, errlen)) ||
        (rc = model_bind_vec(m, &L->bv, NAME("attn_v.bias"), nkv, qwen2, err, errlen)) ||
        (rc = model_bind_vec(m, &L->q_norm, NAME("attn_q_norm.weight"), hd, qwen3, err, errlen)) ||
        (rc = model_bind_vec(m, &L->k_norm, NAME("attn_k_norm.weight"), hd, qwen3, err, errlen)))
        return rc;
    int64_t eff = I->expert_ff, ne = I->n_expert;
    if (gguf_tensor_find(m->g, NAME("ffn_gate_exps.weight")) || I->arch != MODEL_ARCH_MIXTRAL) {
        if ((rc = bind_swiglu(m, il, "_exps", &L->gate_exps, &L->up_exps, &L->down_exps, eff,
                              ne, err, errlen)))
            return rc;
    } else {
        if ((rc = bind_split_experts(m, L, &L->gate_exps, il, "ffn_gate", dim, eff, err,
                                     errlen)) ||
            (rc = bind_split_experts(m, L, &L->up_exps, il, "ffn_up", dim, eff, err, errlen)) ||
            (rc = bind_split_experts(m, L, &L->down_exps, il, "ffn_down", eff, dim, err,
                                     errlen)))
            return rc;
    }
    if (I->shared_ff > 0) {
        int64_t sff = I->shared_ff;
        if ((rc = model_bind_vec(m, &L->shexp_gate, NAME("ffn_gate_inp_shexp.weight"), dim, true, err,
                           errlen)) ||
            (rc = bind_swiglu(m, il, "_shexp", &L->gate_sh, &L->up_sh, &L->down_sh, sff, 1, err,
                              errlen)))
            return rc;
    }
#undef NAME
    return MG_OK;
}

/* ---- hyper-parameters ------------------------------------------------------ */

static int read_hparams(model *m, char *err, size_t errlen)
{
    model_info *I = &m->info;
    int rc = gguf_get_cstr(m->g, "general.architecture", I->arch_name, sizeof I->arch_name);
    if (rc) {
        mg_err_set(err, errlen, "model: metadata key 'general.architecture' is %s",
                   rc == MG_ENOTFOUND ? "missing" : "not a short string");
        return rc == MG_ENOTFOUND ? MG_ENOTFOUND : MG_EFORMAT;
    }
    gguf_get_cstr(m->g, "general.name", I->name, sizeof I->name);
    if (!strcmp(I->arch_name, "qwen3moe"))
        I->arch = MODEL_ARCH_QWEN3MOE;
    else if (!strcmp(I->arch_name, "qwen2moe"))
        I->arch = MODEL_ARCH_QWEN2MOE;
    else if (!strcmp(I->arch_name, "llama"))
        I->arch = MODEL_ARCH_MIXTRAL;
    else if (!strcmp(I->arch_name, "deepseek2"))
        I->arch = MODEL_ARCH_DEEPSEEK2;
    else {
        mg_err_set(err, errlen, "model: architecture '%s' is not supported (supported: qwen3moe, "
                   "qwen2moe, llama with experts i.e. Mixtral, deepseek2)", I->arch_name);
        return MG_EUNSUPPORTED;
    }
    I->gating = MODEL_GATING_SOFTMAX;
    I->n_group = I->n_group_used = 1;
    I->expert_scale = 1.0;
    strcpy(I->rope_scaling, "none");
    if (I->arch == MODEL_ARCH_DEEPSEEK2)
        return mla_read_hparams(m, err, errlen);
    int64_t ff = 0;
    I->n_ctx_train = 4096;
    if ((rc = model_meta_int(m, "embedding_length", &I->dim, true, err, errlen)) ||
        (rc = model_meta_int(m, "block_count", &I->n_layer, true, err, errlen)) ||
        (rc = model_meta_int(m, "attention.head_count", &I->n_head, true, err, errlen)) ||
        (rc = model_meta_int(m, "context_length", &I->n_ctx_train, false, err, errlen)) ||
        (rc = model_meta_int(m, "feed_forward_length", &ff, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_count", &I->n_expert, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_used_count", &I->n_expert_used, false, err, errlen)))
        return rc;
    if (I->n_expert == 0) {
        mg_err_set(err, errlen, "model: '%s.expert_count' is missing or 0: dense models are not "
                   "supported, moegate serves Mixture-of-Experts models", I->arch_name);
        return MG_EUNSUPPORTED;
    }
    if (I->dim <= 0 || I->n_layer <= 0 || I->n_head <= 0 || I->n_expert_used <= 0 ||
        I->n_expert_used > I->n_expert || I->n_expert > 4096 || I->n_layer > 4096) {
        mg_err_set(err, errlen, "model: inconsistent hyper-parameters (embedding_length %lld, "
                   "block_count %lld, head_count %lld, expert_count %lld, expert_used_count %lld)",
                   (long long)I->dim, (long long)I->n_layer, (long long)I->n_head,
                   (long long)I->n_expert, (long long)I->n_expert_used);
        return MG_EFORMAT;
    }
    I->n_head_kv = I->n_head;
    I->head_dim = I->dim / I->n_head;
    I->expert_ff = ff;
    int64_t vlen = 0;
    if ((rc = model_meta_int(m, "attention.head_count_kv", &I->n_head_kv, false, err, errlen)) ||
        (rc = model_meta_int(m, "attention.key_length", &I->head_dim, false, err, errlen)) ||
        (rc = model_meta_int(m, "attention.value_length", &vlen, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_feed_forward_length", &I->expert_ff, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_shared_feed_forward_length", &I->shared_ff, false, err,
                       errlen)))
        return rc;
    if (vlen && vlen != I->head_dim) {
        mg_err_set(err, errlen, "model: attention.value_length %lld differs from key_length %lld: "
                   "not supported for %s", (long long)vlen, (long long)I->head_dim, I->arch_name);
        return MG_EUNSUPPORTED;
    }
    /* Bounds far above any published model keep every product of sizes
     * below 2^40, so no size computed from them can overflow. */
    if (I->dim > (1 << 20) || I->n_head > (1 << 16) || I->n_head_kv > (1 << 16) ||
        I->head_dim > (1 << 16) || I->expert_ff > (1 << 24) || I->shared_ff > (1 << 24) ||
        I->n_ctx_train > (1 << 24)) {
        mg_err_set(err, errlen, "model: hyper-parameters out of range (embedding_length %lld, "
                   "head_count %lld, head_count_kv %lld, key_length %lld, expert FFN %lld, "
                   "shared FFN %lld, context_length %lld)", (long long)I->dim,
                   (long long)I->n_head, (long long)I->n_head_kv, (long long)I->head_dim,
                   (long long)I->expert_ff, (long long)I->shared_ff, (long long)I->n_ctx_train);
        return MG_ERANGE;
    }
    if (I->n_head_kv <= 0 || I->n_head % I->n_head_kv != 0 || I->head_dim <= 0 ||
        I->head_dim % 2 != 0 || I->expert_ff <= 0) {
        mg_err_set(err, errlen, "model: inconsistent attention/FFN sizes (head_count %lld, "
                   "head_count_kv %lld, key_length %lld, expert FFN %lld)", (long long)I->n_head,
                   (long long)I->n_head_kv, (long long)I->head_dim, (long long)I->expert_ff);
        return MG_EFORMAT;
    }
    if (I->arch == MODEL_ARCH_QWEN2MOE && I->shared_ff == 0) {
        mg_err_set(err, errlen, "model: qwen2moe needs '%s.expert_shared_feed_forward_length'",
                   I->arch_name);
        return MG_ENOTFOUND;
    }
    if (I->arch != MODEL_ARCH_QWEN2MOE)
        I->shared_ff = 0;
    I->n_rot = I->head_dim;
    I->rope_base = 10000.0;
    I->rope_scale = 1.0;
    I->rms_eps = 1e-6;
    if ((rc = model_meta_int(m, "rope.dimension_count", &I->n_rot, false, err, errlen)) ||
        (rc = model_meta_float(m, "rope.freq_base", &I->rope_base, err, errlen)) ||
        (rc = model_meta_float(m, "attention.layer_norm_rms_epsilon", &I->rms_eps, err, errlen)))
        return rc;
    if (I->n_rot <= 0 || I->n_rot > I->head_dim || I->n_rot % 2 ||
        I->n_rot > 2 * ROPE_MAX_PAIRS || I->rope_base <= 0 ||
        I->rms_eps <= 0) {
        mg_err_set(err, errlen, "model: bad rope/norm parameters (rope.dimension_count %lld, "
                   "rope.freq_base %g, layer_norm_rms_epsilon %g)", (long long)I->n_rot,
                   I->rope_base, I->rms_eps);
        return MG_EFORMAT;
    }
    /* RoPE scaling: none or linear (YaRN arrives with deepseek2). */
    char key[160], stype[32] = "";
    snprintf(key, sizeof key, "%s.rope.scaling.type", I->arch_name);
    gguf_get_cstr(m->g, key, stype, sizeof stype);
    double factor = 0;
    if ((rc = model_meta_float(m, "rope.scaling.factor", &factor, err, errlen)))
        return rc;
    if (factor == 0 && (rc = model_meta_float(m, "rope.scale_linear", &factor, err, errlen)))
        return rc;
    if (stype[0] == 0 || !strcmp(stype, "none")) {
        if (factor > 0 && strcmp(stype, "none") != 0)
            I->rope_scale = factor; /* rope.scale_linear alone means linear */
    } else if (!strcmp(stype, "linear")) {
        I->rope_scale = factor > 0 ? factor : 1.0;
        strcpy(I->rope_scaling, "linear");
    } else {
        mg_err_set(err, errlen, "model: rope scaling type '%s' (key '%s') is not supported for %s "
                   "(supported: none, linear)", stype, key, I->arch_name);
        return MG_EUNSUPPORTED;
    }
    I->rope_neox = I->arch != MODEL_ARCH_MIXTRAL;
    I->norm_topk = I->arch != MODEL_ARCH_QWEN2MOE;
    bool b;
    snprintf(key, sizeof key, "%s.expert_weights_norm", I->arch_name);
    if (gguf_get_bool(m->g, key, &b) == MG_OK)
        I->norm_topk = b;
    I->attn_scale = 1.0 / sqrt((double)I->head_dim);
    I->kv_bytes_token = (size_t)I->n_layer * 2 * (size_t)(I->n_head_kv * I->head_dim) *
                        sizeof(float);
    I->kv_bytes_token_full = I->kv_bytes_token;
    return MG_OK;
}

/* ---- scratch planning -------------------------------------------------------- */

static size_t max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Allocates every scratch buffer of the forward pass for n_batch tokens. */
static void plan_scratch(model *m)
{
    const model_info *I = &m->info;
    scratch *s = &m->s;
    int64_t nb = m->n_batch, k = I->n_expert_used, nq = I->n_head * I->head_dim;
    int64_t nkv = I->n_head_kv * I->head_dim;
    int64_t natt = I->n_head * (I->head_dim > I->v_head_dim ? I->head_dim : I->v_head_dim);
    /* widest FFN of any kind: routed experts use nb*k rows of eff, the
     * shared expert and dense layers nb rows of their width */
    int64_t ffmax = I->expert_ff;
    ffmax = ffmax > I->shared_ff ? ffmax : I->shared_ff;
    ffmax = ffmax > I->dense_ff ? ffmax : I->dense_ff;
    int64_t nslot = nb * k;
    int64_t hsize = nslot * I->expert_ff;
    if (hsize < nb * ffmax)
        hsize = nb * ffmax;
    s->x = model_own_alloc(m, sizeof(float) * nb * I->dim);
    s->xn = model_own_alloc(m, sizeof(float) * nb * I->dim);
    s->q = model_own_alloc(m, sizeof(float) * nb * nq);
    s->k = model_own_alloc(m, sizeof(float) * nb * nkv);
    s->v = model_own_alloc(m, sizeof(float) * nb * nkv);
    s->att = model_own_alloc(m, sizeof(float) * nb * natt);
    s->o = model_own_alloc(m, sizeof(float) * nb * I->dim);
    s->rlog = model_own_alloc(m, sizeof(float) * nb * I->n_expert);
    s->rsel = model_own_alloc(m, sizeof(float) * nb * I->n_expert);
    s->sel = model_own_alloc(m, sizeof(int32_t) * nslot);
    s->selw = model_own_alloc(m, sizeof(float) * nslot);
    s->slot_tok = model_own_alloc(m, sizeof(int32_t) * nslot);
    s->tok_slot = model_own_alloc(m, sizeof(int32_t) * nslot);
    s->ex = model_own_alloc(m, sizeof(int32_t) * I->n_expert);
    s->slot_off = model_own_alloc(m, sizeof(int32_t) * (I->n_expert + 1));
    s->rlog_i = model_own_alloc(m, sizeof(int32_t) * I->n_expert);
    /* prepared rows: the widest format any expert matrix needs */
    size_t xa_row = 0, ha_row = 0;
    for (int64_t il = 0; il < I->n_layer; il++) {
        const layer *L = &m->layers[il];
        if (L->dense)
            continue;
        xa_row = max_sz(xa_row, tensor_act_row_bytes(L->gate_exps.type, I->dim));
        xa_row = max_sz(xa_row, tensor_act_row_bytes(L->up_exps.type, I->dim));
        ha_row = max_sz(ha_row, tensor_act_row_bytes(L->down_exps.type, I->expert_ff));
    }
    s->xa = model_own_alloc(m, xa_row * nslot);
    s->xa2 = model_own_alloc(m, xa_row * nslot);
    s->ha = model_own_alloc(m, ha_row * nslot);
    s->hg = model_own_alloc(m, sizeof(float) * hsize);
    s->hu = model_own_alloc(m, sizeof(float) * hsize);
    s->eo = model_own_alloc(m, sizeof(float) * nslot * I->dim);
    s->shg = model_own_alloc(m, sizeof(float) * nb);
    s->rows = model_own_alloc(m, sizeof(float) * nb * I->dim);
    /* mm_run's activation buffer: up to 3 formats of the widest input */
    int64_t wmax = I->dim > natt ? I->dim : natt;
    wmax = wmax > ffmax ? wmax : ffmax;
    wmax = wmax > I->q_lora_rank ? wmax : I->q_lora_rank;
    size_t act_row = 0;
    for (uint32_t t = 0; t < TENSOR_TYPE_COUNT; t++) {
        const tensor_type_info *ti = tensor_type_get(t);
        if (ti && ti->computable) {
            int64_t kr = (wmax + ti->block_elems - 1) / ti->block_elems * ti->block_elems;
            act_row = max_sz(act_row, tensor_act_row_bytes(t, kr));
        }
    }
    m->mm.act_cap = act_row * (size_t)nb * 3;
    m->mm.act = model_own_alloc(m, m->mm.act_cap);
    m->rope_inv_freq = model_own_alloc(m, sizeof(float) * (size_t)(I->n_rot / 2));
    if (I->arch == MODEL_ARCH_DEEPSEEK2)
        mla_plan_scratch(m);
}

/* ---- open / close ------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Routed-expert weights: stacked "blk.N.ffn_*_exps.weight", or the older
 * per-expert "blk.N.ffn_{gate,up,down}.E.weight". */
static bool is_expert_tensor(const char *name)
{
    if (strstr(name, "_exps."))
        return true;
    const char *p = strstr(name, ".ffn_");
    if (!p || strstr(name, "shexp"))
        return false;
    p = strchr(p + 1, '.');
    return p && p[1] >= '0' && p[1] <= '9';
}

/* Parameter counts from the tensor index: every tensor counts in n_params;
 * per token, routed experts count k/n_expert of their size and the token
 * embedding one row (a tied embedding counts fully: it is the output). Each
 * of E split expert tensors adds n*k/E, so they also sum to k experts. */
static void count_params(model *m)
{
    model_info *I = &m->info;
    int64_t nt = gguf_tensor_count(m->g);
    size_t by_type[TENSOR_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(m->g, i);
        int64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= t->ne[d];
        I->n_params += n;
        I->weight_bytes += t->nbytes;
        if (t->type < TENSOR_TYPE_COUNT)
            by_type[t->type] += t->nbytes;
        if (!strcmp(t->name, "token_embd.weight") && !I->tied_output) {
            I->n_params_active += I->dim; /* one row is read per token */
            I->bytes_per_token += t->nbytes / (size_t)I->n_vocab;
        } else if (is_expert_tensor(t->name)) {
            I->n_params_active += n * I->n_expert_used / I->n_expert;
            I->bytes_per_token += t->nbytes / (size_t)I->n_expert * (size_t)I->n_expert_used;
        } else {
            I->n_params_active += n;
            I->bytes_per_token += t->nbytes;
        }
    }
    size_t best = 0;
    for (uint32_t t = 0; t < TENSOR_TYPE_COUNT; t++)
        if (by_type[t] > best) {
            best = by_type[t];
            I->main_type = t;
        }
}

typedef struct touch_job {
    const unsigned char *base;
    size_t len;
    _Atomic unsigned sink; /* keeps the reads; every thread adds to it */
} touch_job;

static void touch_pages(void *arg, int64_t p0, int64_t p1)
{
    touch_job *j = arg;
    unsigned acc = 0;
    for (int64_t p = p0; p < p1; p++) {
        size_t off = (size_t)p * 4096;
        if (off < j->len)
            acc += j->base[off];
    }
    atomic_fetch_add_explicit(&j->sink, acc, memory_order_relaxed);
}

/* Reads one byte of every weight page so that the first request does not pay
 * for page faults, reporting progress in 1% steps. */
static void prefault(model *m, const model_opts *o)
{
    const gguf_tensor *first = gguf_tensor_count(m->g) ? gguf_tensor_at(m->g, 0) : NULL;
    if (!first)
        return;
    size_t data_off = gguf_data_offset(m->g);
    const unsigned char *base = (const unsigned char *)first->data - first->offset;
    size_t len = gguf_file_size(m->g) - data_off;
    int64_t pages = (int64_t)((len + 4095) / 4096);
    int64_t step = pages / 100 + 1;
    for (int64_t p = 0; p < pages; p += step) {
        int64_t n = pages - p < step ? pages - p : step;
        touch_job sub = {base + (size_t)p * 4096, len - (size_t)p * 4096, 0};
        mm_pfor(&m->mm, n, touch_pages, &sub);
        if (o->progress)
            o->progress(o->progress_ud, (double)(p + n) / (double)pages);
    }
}

int model_open(model **out, const char *path, const model_opts *opts, char *err, size_t errlen)
{
    double t0 = now_seconds();
    model_opts defaults = {0};
    const model_opts *o = opts ? opts : &defaults;
    model *m = calloc(1, sizeof *m);
    if (!m) {
        mg_err_set(err, errlen, "model: out of memory");
        return MG_ENOMEM;
    }
    int rc = gguf_open(&m->g, path, err, errlen);
    if (rc)
        goto fail;
    if ((rc = read_hparams(m, err, errlen)))
        goto fail;
    model_info *I = &m->info;

    /* kernel table */
    m->kt = tensor_kernels_best();
    if (o->isa) {
        enum tensor_isa want = TENSOR_ISA_COUNT;
        if (!strcmp(o->isa, "scalar"))
            want = TENSOR_ISA_SCALAR;
        else if (!strcmp(o->isa, "avx2"))
            want = TENSOR_ISA_AVX2;
        else if (!strcmp(o->isa, "avx512"))
            want = TENSOR_ISA_AVX512;
        if (want == TENSOR_ISA_COUNT) {
            mg_err_set(err, errlen, "model: unknown ISA '%s' (scalar, avx2, avx512)", o->isa);
            rc = MG_EINVAL;
            goto fail;
        }
        while (want > TENSOR_ISA_SCALAR && !tensor_kernels_get(want))
            want--;
        if (want < tensor_kernels_isa(m->kt))
            m->kt = tensor_kernels_get(want);
    }

    /* token embedding and vocabulary size */
    const gguf_tensor *te = gguf_tensor_find(m->g, "token_embd.weight");
    if (!te) {
        mg_err_set(err, errlen, "model: tensor 'token_embd.weight' is missing");
        rc = MG_ENOTFOUND;
        goto fail;
    }
    I->n_vocab = te->ne[1];
    if (I->n_vocab <= 0 || I->n_vocab > (1 << 24)) {
        mg_err_set(err, errlen, "model: tensor 'token_embd.weight' has %lld rows: bad vocabulary",
                   (long long)I->n_vocab);
        rc = MG_EFORMAT;
        goto fail;
    }
    if ((rc = model_bind_wmat(m, &m->tok_embd, "token_embd.weight", I->dim, I->n_vocab, 1, true, err,
                        errlen)))
        goto fail;
    if ((rc = model_bind_wmat(m, &m->output, "output.weight", I->dim, I->n_vocab, 1, false, err,
                        errlen)))
        goto fail;
    if (!m->output.data) {
        m->output = m->tok_embd;
        I->tied_output = true;
    }

    m->layers = calloc((size_t)I->n_layer, sizeof(layer));
    if (!m->layers) {
        rc = MG_ENOMEM;
        mg_err_set(err, errlen, "model: out of memory");
        goto fail;
    }

    for (int64_t il = 0; il < I->n_layer; il++)
        if ((rc = bind_layer(m, (int)il, err, errlen)))
            goto fail;
    if ((rc = model_bind_vec(m, &m->out_norm, "output_norm.weight", I->dim, true, err, errlen)))
        goto fail;

    /* the pool, the matmul driver and every scratch buffer */
    if ((rc = pool_create(&m->pool, o->n_threads, !o->no_pin, err, errlen)))
        goto fail;
    m->n_batch = o->n_batch > 0 ? o->n_batch : 256;
    if (m->n_batch > 4096)
        m->n_batch = 4096;
    m->mm.pool = m->pool;
    m->mm.kt = m->kt;
    m->mm.blas_min_nt = 32;
    const char *blas = getenv("MOEGATE_BLAS");
    m->mm.use_blas = blas && blas[0] == '1';
    if (m->mm.use_blas)
        mm_blas_threads(pool_size(m->pool));
    plan_scratch(m);
    if (m->oom) {
        mg_err_set(err, errlen, "model: out of memory planning scratch buffers");
        rc = MG_ENOMEM;
        goto fail;
    }
    /* RoPE: theta_i = base^(-2i/n_rot), computed in double (deepseek2: YaRN) */
    if (I->arch == MODEL_ARCH_DEEPSEEK2)
        mla_rope_init(m);
    else
        for (int64_t i = 0; i < I->n_rot / 2; i++)
            m->rope_inv_freq[i] = (float)pow(I->rope_base, -2.0 * (double)i / (double)I->n_rot);
    m->mla_naive = I->arch == MODEL_ARCH_DEEPSEEK2 && o->mla_naive;

    count_params(m);
    if (o->prefault)
        prefault(m, o);
    I->load_seconds = now_seconds() - t0;
    *out = m;
    return MG_OK;
fail:
    model_close(m);
    return rc;
}

void model_close(model *m)
{
    if (!m)
        return;
    pool_free(m->pool);
    for (size_t i = 0; i < m->n_allocs; i++)
        free(m->allocs[i]);
    free(m->allocs);
    free(m->layers);
    free(m->lora_items);
    free(m->lora_tmp);
    gguf_close(m->g);
    free(m);
}

const model_info *model_get_info(const model *m)
{
    return &m->info;
}

const gguf *model_gguf(const model *m)
{
    return m->g;
}

int model_n_threads(const model *m)
{
    return pool_size(m->pool);
}

void model_pin_thread(model *m, bool pin)
{
    pool_pin_thread(m->pool, pin);
}

const char *model_isa_name(const model *m)
{
    return tensor_kernels_name(m->kt);
}

/* ---- KV cache ------------------------------------------------------------------- */

/* Storage for n_blocks blocks of bt positions, n_seq tables, attention
 * scratch for sequences of up to n_ctx positions. */
static int kv_alloc(model_kv **out, const model *m, int n_seq, int32_t n_blocks, int32_t bt, int n_ctx,
                    bool paged, char *err, size_t errlen)
{
    const model_info *I = &m->info;
    model_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        goto nomem;
    kv->m = m;
    kv->n_seq = n_seq;
    kv->n_ctx = n_ctx;
    kv->n_blocks = n_blocks;
    kv->bt = bt;
    kv->paged = paged;
    /* deepseek2 caches one latent row (kv_lora + rope) per token and layer,
     * shared by all heads; the others keys and values per kv head */
    bool mla = I->arch == MODEL_ARCH_DEEPSEEK2;
    kv->kv_dim = mla ? I->kv_lora_rank + I->qk_rope : I->n_head_kv * I->head_dim;
    /* checked products: the sizes come from the caller */
    size_t n, n_sc, group = mla ? (size_t)I->n_head : (size_t)(I->n_head / I->n_head_kv);
    if (__builtin_mul_overflow((size_t)I->n_layer * (size_t)kv->kv_dim, (size_t)n_blocks, &n) ||
        __builtin_mul_overflow(n, (size_t)bt, &n) ||
        __builtin_mul_overflow(n, (mla ? 1 : 2) * sizeof(float), &kv->bytes) ||
        __builtin_mul_overflow((size_t)pool_size(m->pool) * group, (size_t)n_ctx, &n_sc)) {
        mg_err_set(err, errlen, "model: kv cache of %d blocks x %d positions is too large", (int)n_blocks,
                   (int)bt);
        model_kv_free(kv);
        return MG_ERANGE;
    }
    /* zeroed: a position read before it was written yields zeros, never
     * stale heap contents */
    kv->k = calloc(n, sizeof(float));
    kv->v = mla ? NULL : calloc(n, sizeof(float));
    /* attention scores: sized by this cache's positions, not the model's
     * (possibly huge) training context */
    kv->scores = calloc(n_sc, sizeof(float));
    kv->table = calloc((size_t)n_seq, sizeof *kv->table);
    kv->table_n = calloc((size_t)n_seq, sizeof *kv->table_n);
    kv->own = paged ? NULL : malloc((size_t)n_seq * sizeof *kv->own);
    if (!kv->k || (!mla && !kv->v) || !kv->scores || !kv->table || !kv->table_n || (!paged && !kv->own))
        goto nomem;
    for (int s = 0; !paged && s < n_seq; s++) { /* slot s is block s */
        kv->own[s] = s;
        kv->table[s] = &kv->own[s];
        kv->table_n[s] = 1;
    }
    *out = kv;
    return MG_OK;
nomem:
    mg_err_set(err, errlen, "model: out of memory for a kv cache of %d blocks x %d positions", (int)n_blocks,
               (int)bt);
    model_kv_free(kv);
    return MG_ENOMEM;
}

int model_kv_create(model_kv **out, const model *m, int n_seq, int n_ctx, char *err,
                    size_t errlen)
{
    const model_info *I = &m->info;
    if (n_seq <= 0 || n_seq > (1 << 16) || n_ctx <= 0 || n_ctx > I->n_ctx_train) {
        mg_err_set(err, errlen, "model: kv cache of %d sequences x %d positions: sequences "
                   "must be in 1..65536, positions in 1..%lld (the model's context length)",
                   n_seq, n_ctx,
                   (long long)I->n_ctx_train);
        return MG_ERANGE;
    }
    return kv_alloc(out, m, n_seq, n_seq, n_ctx, n_ctx, false, err, errlen);
}

int model_kv_create_paged(model_kv **out, const model *m, int n_seq, int n_blocks, int block_tokens, int n_ctx,
                          char *err, size_t errlen)
{
    const model_info *I = &m->info;
    if (n_seq <= 0 || n_seq > (1 << 16) || n_ctx <= 0 || n_ctx > I->n_ctx_train || block_tokens < 1 ||
        block_tokens > 4096 || n_blocks < 1 || n_blocks > (1 << 26)) {
        mg_err_set(err, errlen, "model: paged kv cache of %d blocks x %d positions for %d sequences of up to "
                   "%d positions: blocks must be in 1..2^26, positions per block in 1..4096, sequences in "
                   "1..65536, positions per sequence in 1..%lld (the model's context length)",
                   n_blocks, block_tokens, n_seq, n_ctx, (long long)I->n_ctx_train);
        return MG_ERANGE;
    }
    return kv_alloc(out, m, n_seq, n_blocks, block_tokens, n_ctx, true, err, errlen);
}

int model_kv_bind(model_kv *kv, int seq, const int32_t *blocks, int n)
{
    if (!kv || !kv->paged || seq < 0 || seq >= kv->n_seq || n < 0 || (n && !blocks) ||
        (int64_t)n * kv->bt > (int64_t)kv->n_ctx + kv->bt - 1)
        return MG_EINVAL;
    for (int i = 0; i < n; i++)
        if (blocks[i] < 0 || blocks[i] >= kv->n_blocks)
            return MG_ERANGE;
    kv->table[seq] = blocks;
    kv->table_n[seq] = n;
    return MG_OK;
}

int model_kv_copy_rows(model_kv *kv, int32_t dst, int32_t src, int32_t rows)
{
    if (!kv || !kv->paged || dst < 0 || dst >= kv->n_blocks || src < 0 || src >= kv->n_blocks || dst == src ||
        rows < 0 || rows > kv->bt)
        return MG_EINVAL;
    int64_t n_layer = kv->m->info.n_layer;
    size_t row = (size_t)kv->kv_dim * sizeof(float), n = (size_t)rows * row;
    for (int64_t il = 0; il < n_layer; il++) {
        size_t d = ((size_t)il * (size_t)kv->n_blocks + (size_t)dst) * (size_t)kv->bt * (size_t)kv->kv_dim;
        size_t s = ((size_t)il * (size_t)kv->n_blocks + (size_t)src) * (size_t)kv->bt * (size_t)kv->kv_dim;
        memcpy(kv->k + d, kv->k + s, n);
        if (kv->v)
            memcpy(kv->v + d, kv->v + s, n);
    }
    return MG_OK;
}

size_t model_kv_block_bytes(const model *m, int block_tokens)
{
    const model_info *I = &m->info;
    bool mla = I->arch == MODEL_ARCH_DEEPSEEK2;
    size_t kvd = mla ? (size_t)(I->kv_lora_rank + I->qk_rope) : (size_t)(I->n_head_kv * I->head_dim);
    return (size_t)I->n_layer * kvd * (size_t)block_tokens * (mla ? 1 : 2) * sizeof(float);
}

void model_kv_free(model_kv *kv)
{
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv->scores);
    free(kv->table);
    free(kv->table_n);
    free(kv->own);
    free(kv);
}

size_t model_kv_bytes(const model_kv *kv)
{
    return kv->bytes;
}


/* ---- element-wise operations ------------------------------------------------------ */

/* out = x / sqrt(mean(x^2) + eps) * w   (RMSNorm, Zhang & Sennrich 2019) */
void model_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double ss = 0; /* sum in double: dim can be 7168 and values large */
    for (int64_t i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

typedef struct norm_job {
    float *out;
    const float *x;
    const float *w;
    int64_t n, ld;
    float eps;
} norm_job;

static void norm_rows(void *arg, int64_t r0, int64_t r1)
{
    norm_job *j = arg;
    for (int64_t r = r0; r < r1; r++)
        model_rmsnorm(j->out + r * j->ld, j->x + r * j->ld, j->w, j->n, j->eps);
}

void model_rmsnorm_rows(model *m, float *out, const float *x, const float *w, int64_t rows,
                         int64_t n)
{
    norm_job j = {out, x, w, n, n, (float)m->info.rms_eps};
    if (rows * n < 65536)
        norm_rows(&j, 0, rows);
    else
        mm_pfor(&m->mm, rows, norm_rows, &j);
}

/* RoPE angles of one position: cs[i] = cos(pos * theta_i), sn[i] = sin(...),
 * i < n_rot/2, computed once per token and shared by all its heads. */
void model_rope_angles(float *cs, float *sn, const float *inv_freq, int64_t half, float pos)
{
    for (int64_t i = 0; i < half; i++) {
        double theta = (double)pos * inv_freq[i];
        cs[i] = (float)cos(theta);
        sn[i] = (float)sin(theta);
    }
}

/* Rotates one head vector in place. NeoX style pairs (i, i + n_rot/2);
 * the original (GPT-J / llama GGUF) style pairs (2i, 2i+1). */
static void rope_head(float *v, const float *cs, const float *sn, int64_t half, bool neox)
{
    for (int64_t i = 0; i < half; i++) {
        int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[i] - x1 * sn[i];
        v[b] = x0 * sn[i] + x1 * cs[i];
    }
}


/* ---- forward: attention ------------------------------------------------------------ */

typedef struct attn_job {
    model *m;
    model_kv *kv;
    const model_batch *b;
    int b0; /* first token of this chunk in the batch */
    int n;  /* tokens in this chunk */
    int64_t il;
} attn_job;

/* Per token: bias, q/k norm, RoPE, then store k and v into the cache. */
static void qk_prepare(void *arg, int64_t t0, int64_t t1)
{
    attn_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    const layer *L = &m->layers[j->il];
    int64_t hd = I->head_dim, nq = I->n_head * hd, nkv = I->n_head_kv * hd;
    for (int64_t t = t0; t < t1; t++) {
        float *q = m->s.q + t * nq, *k = m->s.k + t * nkv, *v = m->s.v + t * nkv;
        if (L->bq)
            for (int64_t i = 0; i < nq; i++)
                q[i] += L->bq[i];
        if (L->bk)
            for (int64_t i = 0; i < nkv; i++)
                k[i] += L->bk[i];
        if (L->bv)
            for (int64_t i = 0; i < nkv; i++)
                v[i] += L->bv[i];
        if (L->q_norm) /* qwen3: RMSNorm over each head before RoPE */
            for (int64_t h = 0; h < I->n_head; h++)
                model_rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, (float)I->rms_eps);
        if (L->k_norm)
            for (int64_t h = 0; h < I->n_head_kv; h++)
                model_rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, (float)I->rms_eps);
        int32_t pos = j->b->pos[j->b0 + t], seq = j->b->seq[j->b0 + t];
        float p = (float)((double)pos / I->rope_scale);
        float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
        int64_t half = I->n_rot / 2;
        model_rope_angles(cs, sn, m->rope_inv_freq, half, p);
        for (int64_t h = 0; h < I->n_head; h++)
            rope_head(q + h * hd, cs, sn, half, I->rope_neox);
        for (int64_t h = 0; h < I->n_head_kv; h++)
            rope_head(k + h * hd, cs, sn, half, I->rope_neox);
        memcpy(kv_row(j->kv, j->kv->k, j->il, seq, pos), k, sizeof(float) * nkv);
        memcpy(kv_row(j->kv, j->kv->v, j->il, seq, pos), v, sizeof(float) * nkv);
    }
}

/* Causal attention, softmax(q.K^T / sqrt(hd)) V, for one (token, kv head)
 * pair at a time: the `group` query heads sharing that kv head are scored
 * against the cached keys of positions 0..pos with one f32 tensor_gemm (the
 * cached k rows are the "weights", the query heads the "tokens"), then each
 * head's softmax weights sum the cached values. Work items t * n_kv + g are
 * split evenly over the pool; each thread has its own score rows. */
static void attn_worker(void *arg, int ith, int nth)
{
    attn_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    int64_t hd = I->head_dim, group = I->n_head / I->n_head_kv;
    int64_t n_items = (int64_t)j->n * I->n_head_kv;
    int64_t i0 = n_items * ith / nth, i1 = n_items * (ith + 1) / nth;
    int64_t ld = j->kv->n_ctx;
    float *scores = j->kv->scores + (size_t)ith * (size_t)group * (size_t)ld; /* [group][ld] */
    float scale = (float)(1.0 / sqrt((double)hd));
    for (int64_t it = i0; it < i1; it++) {
        int64_t t = it / I->n_head_kv, g = it % I->n_head_kv;
        int32_t pos = j->b->pos[j->b0 + t], seq = j->b->seq[j->b0 + t];
        const float *q = m->s.q + t * I->n_head * hd + g * group * hd; /* [group][hd] */
        /* scores[h][p] = k_p . q_h for p <= pos */
        attn_scores(m->kt, scores, ld, j->kv, j->kv->k, j->il, seq, g * hd, pos + 1, q,
                    (size_t)hd * sizeof(float), group, hd);
        for (int64_t h = 0; h < group; h++)
            attn_softmax_sum(m->kt, m->s.att + t * I->n_head * hd + (g * group + h) * hd, scores + h * ld,
                             pos + 1, scale, j->kv, j->kv->v, j->il, seq, g * hd, hd);
    }
}

/* ---- forward: mixture of experts ------------------------------------------------------ */

typedef struct moe_job {
    model *m;
    const layer *L;
    int n;
    uint32_t type;      /* weight type rows are prepared for */
    unsigned char *dst; /* prepared rows */
    size_t stride;
    const float *src;   /* f32 rows, ld src_ld, indexed through slot_tok or directly */
    int64_t src_ld, k;
    bool by_token;      /* src row = slot_tok[slot] (else = slot) */
} moe_job;

static void moe_prepare(void *arg, int64_t s0, int64_t s1)
{
    moe_job *j = arg;
    model *m = j->m;
    for (int64_t s = s0; s < s1; s++) {
        int64_t r = j->by_token ? m->s.slot_tok[s] : s;
        tensor_act_prepare(m->kt, j->type, j->dst + (size_t)s * j->stride, j->src + r * j->src_ld,
                           j->k);
    }
}

/* h = silu(gate) * up, in place into hg, rows [s0, s1) of width k. */
static void moe_swiglu(void *arg, int64_t s0, int64_t s1)
{
    moe_job *j = arg;
    float *hg = j->m->s.hg, *hu = j->m->s.hu;
    for (int64_t s = s0; s < s1; s++)
        for (int64_t i = 0; i < j->k; i++)
            hg[s * j->k + i] = silu(hg[s * j->k + i]) * hu[s * j->k + i];
}

/* Index of the largest v[i] over i < n with allowed[i] (ties to the lower
 * index), or -1. */
static int64_t argmax_allowed(const float *v, const uint8_t *allowed, int64_t n)
{
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (allowed[i] && (best < 0 || v[i] > v[best]))
            best = i;
    return best;
}

/* Router of one token: logits lg[0..ne) -> k experts and their weights.
 *   scores: softmax over all experts (qwen, mixtral, DeepSeek-V2) or
 *           sigmoid (DeepSeek-V3);
 *   selection score: the score, plus the correction bias when the layer has
 *           one (V3: used for the choice only, never for the weights);
 *   groups (n_group > 1): keep the n_group_used groups with the best group
 *           score (V2's group_limited_greedy: the group's best selection
 *           score; V3's noaux_tc: the sum of its two best), experts outside
 *           them cannot be chosen;
 *   top-k by selection score (ties to the lower index); weight = score,
 *           renormalised over the k when norm_topk, times expert_scale. */
static void route_token(const model_info *I, const float *bias, float *lg, float *sc,
                        int32_t *sel, float *w)
{
    int64_t ne = I->n_expert, k = I->n_expert_used, ng = I->n_group;
    if (I->gating == MODEL_GATING_SIGMOID) {
        for (int64_t e = 0; e < ne; e++)
            lg[e] = 1.0f / (1.0f + expf(-lg[e]));
    } else {
        float mx = -INFINITY;
        for (int64_t e = 0; e < ne; e++)
            mx = lg[e] > mx ? lg[e] : mx;
        double sum = 0;
        for (int64_t e = 0; e < ne; e++) {
            lg[e] = expf(lg[e] - mx);
            sum += lg[e];
        }
        for (int64_t e = 0; e < ne; e++)
            lg[e] = (float)(lg[e] / sum);
    }
    for (int64_t e = 0; e < ne; e++)
        sc[e] = bias ? lg[e] + bias[e] : lg[e];
    uint8_t allowed[4096]; /* n_expert <= 4096 (checked at load) */
    memset(allowed, 1, (size_t)ne);
    if (ng > 1) {
        int64_t gs = ne / ng;
        float gscore[256]; /* n_group <= 256 (checked at load) */
        uint8_t gfree[256];
        for (int64_t g = 0; g < ng; g++) {
            const float *v = sc + g * gs;
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int64_t i = 0; i < gs; i++) {
                if (v[i] > b1) {
                    b2 = b1;
                    b1 = v[i];
                } else if (v[i] > b2) {
                    b2 = v[i];
                }
            }
            gscore[g] = I->gating == MODEL_GATING_SIGMOID && gs > 1 ? b1 + b2 : b1;
            gfree[g] = 1;
        }
        memset(allowed, 0, (size_t)ne);
        for (int64_t c = 0; c < I->n_group_used; c++) {
            int64_t g = argmax_allowed(gscore, gfree, ng);
            gfree[g] = 0;
            memset(allowed + g * gs, 1, (size_t)gs);
        }
    }
    double wsum = 0;
    for (int64_t c = 0; c < k; c++) {
        int64_t best = argmax_allowed(sc, allowed, ne);
        allowed[best] = 0;
        sel[c] = (int32_t)best;
        w[c] = lg[best];
        wsum += lg[best];
    }
    double scale = I->expert_scale;
    if (I->norm_topk)
        scale /= wsum;
    for (int64_t c = 0; c < k; c++)
        w[c] = (float)(w[c] * scale);
}

/* Router of a chunk: route_token for every token (fills sel/selw), then
 * groups (token, choice) pairs into slots by expert. */
static void moe_route(model *m, const layer *L, int n)
{
    const model_info *I = &m->info;
    scratch *s = &m->s;
    int64_t ne = I->n_expert, k = I->n_expert_used;
    for (int t = 0; t < n; t++)
        route_token(I, L->exp_bias, s->rlog + (int64_t)t * ne, s->rsel + (int64_t)t * ne,
                    s->sel + (int64_t)t * k, s->selw + (int64_t)t * k);
    /* group by expert: counts, then offsets over active experts in id order */
    int32_t *count = s->slot_off; /* reuse as a counter array of n_expert+1 */
    memset(count, 0, sizeof(int32_t) * (size_t)(ne + 1));
    for (int64_t i = 0; i < (int64_t)n * k; i++)
        count[s->sel[i]]++;
    int n_ex = 0;
    int32_t off = 0;
    /* compact: ex[i] = expert, slot_off[i] = first slot; uses count before
     * overwriting it (i <= e always holds). */
    for (int64_t e = 0; e < ne; e++) {
        int32_t c = count[e];
        if (c == 0)
            continue;
        s->ex[n_ex] = (int32_t)e;
        count[n_ex] = off; /* slot_off[n_ex] */
        off += c;
        n_ex++;
    }
    count[n_ex] = off;
    m->s.n_ex = n_ex;
    /* fill slots in token order */
    int32_t *fill = s->rlog_i; /* [n_expert] cursor per expert */
    for (int i = 0; i < n_ex; i++)
        fill[s->ex[i]] = s->slot_off[i];
    for (int t = 0; t < n; t++)
        for (int64_t c = 0; c < k; c++) {
            int32_t e = s->sel[(int64_t)t * k + c];
            int32_t slot = fill[e]++;
            s->slot_tok[slot] = t;
            s->tok_slot[(int64_t)t * k + c] = slot;
        }
}

typedef struct combine_job {
    model *m;
    float *out; /* [n][dim] */
} combine_job;

static void moe_combine(void *arg, int64_t t0, int64_t t1)
{
    combine_job *j = arg;
    model *m = j->m;
    int64_t dim = m->info.dim, k = m->info.n_expert_used;
    for (int64_t t = t0; t < t1; t++) {
        float *o = j->out + t * dim;
        memset(o, 0, sizeof(float) * dim);
        for (int64_t c = 0; c < k; c++) {
            float w = m->s.selw[t * k + c];
            const float *eo = m->s.eo + (int64_t)m->s.tok_slot[t * k + c] * dim;
            for (int64_t i = 0; i < dim; i++)
                o[i] += w * eo[i];
        }
    }
}

/* out[n][dim] = sum over chosen experts of weight * SwiGLU_e(xn) (+ the
 * shared expert, gated by sigmoid(xn . w_gate_shexp), for qwen2moe). */
static void moe_forward(model *m, const layer *L, const float *xn, float *out, int n, const model_batch *b, int b0,
                        int64_t il)
{
    const model_info *I = &m->info;
    scratch *s = &m->s;
    int64_t dim = I->dim, eff = I->expert_ff, k = I->n_expert_used;
    int64_t nslot = (int64_t)n * k;
    /* route tokens to experts */
    mm_run(&m->mm, s->rlog, I->n_expert, &L->router, 0, xn, dim, n);
    moe_route(m, L, n);
    /* gather each slot's input, prepared for the gate/up weight type */
    size_t xs = tensor_act_row_bytes(L->gate_exps.type, dim);
    moe_job pj = {m, L, n, L->gate_exps.type, s->xa, xs, xn, dim, dim, true};
    mm_pfor(&m->mm, nslot, moe_prepare, &pj);
    float *gy[2] = {s->hg, s->hu};
    const wmat *gw[2] = {&L->gate_exps, &L->up_exps};
    if (L->up_exps.type == L->gate_exps.type) {
        /* gate and up of every active expert in one pass */
        mm_run_experts(&m->mm, 2, gy, eff, gw, s->xa, xs, s->ex, s->slot_off, s->n_ex);
    } else {
        size_t xs2 = tensor_act_row_bytes(L->up_exps.type, dim);
        moe_job pj2 = {m, L, n, L->up_exps.type, s->xa2, xs2, xn, dim, dim, true};
        mm_pfor(&m->mm, nslot, moe_prepare, &pj2);
        mm_run_experts(&m->mm, 1, &gy[0], eff, &gw[0], s->xa, xs, s->ex, s->slot_off, s->n_ex);
        mm_run_experts(&m->mm, 1, &gy[1], eff, &gw[1], s->xa2, xs2, s->ex, s->slot_off,
                       s->n_ex);
    }
    lora_apply_experts(m, b, b0, il, LORA_EXP_GATE, s->hg, eff, xn, dim, true);
    lora_apply_experts(m, b, b0, il, LORA_EXP_UP, s->hu, eff, xn, dim, true);
    /* SwiGLU, then the down projection of every active expert */
    moe_job hj = {m, L, n, L->down_exps.type, s->ha, tensor_act_row_bytes(L->down_exps.type, eff),
                  s->hg, eff, eff, false};
    mm_pfor(&m->mm, nslot, moe_swiglu, &hj);
    mm_pfor(&m->mm, nslot, moe_prepare, &hj);
    const wmat *dw = &L->down_exps;
    mm_run_experts(&m->mm, 1, &s->eo, dim, &dw, s->ha, hj.stride, s->ex, s->slot_off, s->n_ex);
    lora_apply_experts(m, b, b0, il, LORA_EXP_DOWN, s->eo, dim, s->hg, eff, false);
    /* weighted sum of each token's experts, in choice order */
    combine_job cj = {m, out};
    mm_pfor(&m->mm, n, moe_combine, &cj);

    if (I->shared_ff > 0) {
        /* shared expert(s): out += down(silu(gate(xn)) * up(xn)), scaled by
         * sigmoid(xn . g) for qwen2moe (deepseek2: ungated) */
        int64_t sff = I->shared_ff;
        float *ys[2] = {s->hg, s->hu};
        int64_t lds[2] = {sff, sff};
        const wmat *ws[2] = {&L->gate_sh, &L->up_sh};
        mm_run_multi(&m->mm, 2, ys, lds, ws, xn, dim, n);
        lora_apply_dense(m, b, b0, n, il, LORA_SHEXP_GATE, s->hg, sff, xn, dim);
        lora_apply_dense(m, b, b0, n, il, LORA_SHEXP_UP, s->hu, sff, xn, dim);
        moe_job sj = {m, L, n, 0, NULL, 0, NULL, 0, sff, false};
        mm_pfor(&m->mm, n, moe_swiglu, &sj);
        mm_run(&m->mm, s->rows, dim, &L->down_sh, 0, s->hg, sff, n);
        lora_apply_dense(m, b, b0, n, il, LORA_SHEXP_DOWN, s->rows, dim, s->hg, sff);
        for (int t = 0; t < n && !L->shexp_gate; t++)
            for (int64_t i = 0; i < dim; i++)
                out[t * dim + i] += s->rows[t * dim + i];
        for (int t = 0; t < n && L->shexp_gate; t++) {
            double g = 0;
            for (int64_t i = 0; i < dim; i++)
                g += (double)xn[t * dim + i] * L->shexp_gate[i];
            float gate = (float)(1.0 / (1.0 + exp(-g)));
            for (int64_t i = 0; i < dim; i++)
                out[t * dim + i] += gate * s->rows[t * dim + i];
        }
    }
}

/* Dense SwiGLU FFN (deepseek2's leading layers): out = down(silu(gate(xn)) * up(xn)). */
static void dense_ffn(model *m, const layer *L, const float *xn, float *out, int n, const model_batch *b, int b0,
                      int64_t il)
{
    scratch *s = &m->s;
    int64_t dim = m->info.dim, ff = m->info.dense_ff;
    float *ys[2] = {s->hg, s->hu};
    int64_t lds[2] = {ff, ff};
    const wmat *ws[2] = {&L->gate_ff, &L->up_ff};
    mm_run_multi(&m->mm, 2, ys, lds, ws, xn, dim, n);
    lora_apply_dense(m, b, b0, n, il, LORA_FFN_GATE, s->hg, ff, xn, dim);
    lora_apply_dense(m, b, b0, n, il, LORA_FFN_UP, s->hu, ff, xn, dim);
    moe_job sj = {m, L, n, 0, NULL, 0, NULL, 0, ff, false};
    mm_pfor(&m->mm, n, moe_swiglu, &sj);
    mm_run(&m->mm, out, dim, &L->down_ff, 0, s->hg, ff, n);
    lora_apply_dense(m, b, b0, n, il, LORA_FFN_DOWN, out, dim, s->hg, ff);
}

/* ---- forward: the whole model --------------------------------------------------------- */

typedef struct embd_job {
    model *m;
    const int32_t *tok;
} embd_job;

static void embed_rows(void *arg, int64_t t0, int64_t t1)
{
    embd_job *j = arg;
    model *m = j->m;
    const wmat *w = &m->tok_embd;
    for (int64_t t = t0; t < t1; t++)
        tensor_dequant_row(m->kt, w->type, m->s.x + t * m->info.dim,
                           (const char *)w->data + (size_t)j->tok[t] * w->row_bytes, w->n_in);
}

/* One chunk of at most n_batch tokens (b0..b0+n of the batch). Writes the
 * logits of wanted tokens to logits, returns how many rows it wrote. */
static int forward_chunk(model *m, model_kv *kv, const model_batch *b, int b0, int n,
                         float *logits)
{
    const model_info *I = &m->info;
    scratch *s = &m->s;
    int64_t dim = I->dim, nq = I->n_head * I->head_dim, nkv = I->n_head_kv * I->head_dim;

    /* token embedding */
    embd_job ej = {m, b->token + b0};
    mm_pfor(&m->mm, n, embed_rows, &ej);

    for (int64_t il = 0; il < I->n_layer; il++) {
        const layer *L = &m->layers[il];
        /* attention rmsnorm */
        model_rmsnorm_rows(m, s->xn, s->x, L->attn_norm, n, dim);
        if (I->arch == MODEL_ARCH_DEEPSEEK2) {
            /* multi-head latent attention (mla.c), output projection included */
            mla_attention(m, kv, b, b0, n, il);
        } else {
            /* q, k, v projections */
            float *qkv[3] = {s->q, s->k, s->v};
            int64_t ld[3] = {nq, nkv, nkv};
            const wmat *wqkv[3] = {&L->wq, &L->wk, &L->wv};
            mm_run_multi(&m->mm, 3, qkv, ld, wqkv, s->xn, dim, n);
            lora_apply_dense(m, b, b0, n, il, LORA_ATTN_Q, s->q, nq, s->xn, dim);
            lora_apply_dense(m, b, b0, n, il, LORA_ATTN_K, s->k, nkv, s->xn, dim);
            lora_apply_dense(m, b, b0, n, il, LORA_ATTN_V, s->v, nkv, s->xn, dim);
            /* biases, q/k norms, RoPE; append k and v to the cache */
            attn_job aj = {m, kv, b, b0, n, il};
            mm_pfor(&m->mm, n, qk_prepare, &aj);
            /* causal attention over each sequence's cache */
            pool_run(m->pool, attn_worker, &aj);
            /* output projection */
            mm_run(&m->mm, s->o, dim, &L->wo, 0, s->att, nq, n);
            lora_apply_dense(m, b, b0, n, il, LORA_ATTN_O, s->o, dim, s->att, nq);
        }
        /* residual */
        for (int64_t i = 0; i < (int64_t)n * dim; i++)
            s->x[i] += s->o[i];
        /* ffn rmsnorm, dense FFN or mixture of experts, residual */
        model_rmsnorm_rows(m, s->xn, s->x, L->ffn_norm, n, dim);
        if (L->dense)
            dense_ffn(m, L, s->xn, s->o, n, b, b0, il);
        else
            moe_forward(m, L, s->xn, s->o, n, b, b0, il);
        for (int64_t i = 0; i < (int64_t)n * dim; i++)
            s->x[i] += s->o[i];
    }

    /* output norm and logits, for the wanted rows only */
    int nw = 0;
    for (int t = 0; t < n; t++) {
        if (b->want_logits && !b->want_logits[b0 + t])
            continue;
        model_rmsnorm(s->rows + (int64_t)nw * dim, s->x + (int64_t)t * dim, m->out_norm, dim,
                (float)I->rms_eps);
        nw++;
    }
    if (nw > 0)
        mm_run(&m->mm, logits, I->n_vocab, &m->output, 0, s->rows, dim, nw);
    return nw;
}

int model_forward(model *m, model_kv *kv, const model_batch *b, float *logits, char *err,
                  size_t errlen)
{
    const model_info *I = &m->info;
    if (!b || b->n < 0 || (b->n > 0 && (!b->token || !b->pos || !b->seq))) {
        mg_err_set(err, errlen, "model: bad batch");
        return MG_EINVAL;
    }
    if (!logits) {
        for (int i = 0; i < b->n; i++)
            if (!b->want_logits || b->want_logits[i]) {
                mg_err_set(err, errlen, "model: batch index %d wants logits but the logits "
                           "buffer is NULL", i);
                return MG_EINVAL;
            }
    }
    if (kv->m != m) {
        mg_err_set(err, errlen, "model: kv cache belongs to another model");
        return MG_EINVAL;
    }
    for (int i = 0; i < b->n; i++) {
        if (b->token[i] < 0 || b->token[i] >= I->n_vocab) {
            mg_err_set(err, errlen, "model: token id %d at batch index %d is outside the "
                       "vocabulary (0..%lld)", b->token[i], i, (long long)I->n_vocab - 1);
            return MG_ERANGE;
        }
        if (b->seq[i] < 0 || b->seq[i] >= kv->n_seq || b->pos[i] < 0 || b->pos[i] >= kv->n_ctx ||
            b->pos[i] / kv->bt >= kv->table_n[b->seq[i]]) {
            mg_err_set(err, errlen, "model: batch index %d: sequence %d position %d is outside "
                       "the kv cache (%d sequences x %d positions%s)", i, b->seq[i], b->pos[i],
                       kv->n_seq, kv->n_ctx, kv->paged ? ", or beyond the sequence's bound blocks" : "");
            return MG_ERANGE;
        }
    }
    for (int i = 0; b->lora && i < b->n; i++) {
        const model_lora *l = b->lora[i];
        if (l && (l->n_layer != I->n_layer || !l->layer)) {
            mg_err_set(err, errlen, "model: batch index %d: the adapter has %lld layers, the model %lld", i,
                       (long long)l->n_layer, (long long)I->n_layer);
            return MG_EINVAL;
        }
        if (l && m->mla_naive) {
            mg_err_set(err, errlen, "model: adapters are not applied in the naive MLA form (a test mode)");
            return MG_EUNSUPPORTED;
        }
    }
    m->lora_oom = false;
    for (int b0 = 0; b0 < b->n; b0 += m->n_batch) {
        int n = b->n - b0 < m->n_batch ? b->n - b0 : m->n_batch;
        int rows = forward_chunk(m, kv, b, b0, n, logits);
        if (logits)
            logits += (size_t)rows * (size_t)I->n_vocab;
    }
    if (m->lora_oom) {
        mg_err_set(err, errlen, "model: out of memory for adapter scratch");
        return MG_ENOMEM;
    }
    return MG_OK;
}
