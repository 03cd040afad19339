/* moegate — deepseek2: multi-head latent attention (DeepSeek-V2/V3).
 *
 * The published definition (DeepseekV2Attention, the same in V3), per token
 * h of the layer's normalised input:
 *   q      = W_q h,  or  W_qb rmsnorm(W_qa h) with q_lora_rank > 0;
 *            per head [q_nope (qk_nope) | q_pe (qk_rope)]
 *   [c|kr] = W_kva h   (attn_kv_a_mqa: the kv_lora_rank latent, then one
 *            rope key shared by all heads);  c = rmsnorm(c) (attn_kv_a_norm)
 *   per head: k_nope = W_UK^h c, v = W_UV^h c   (attn_kv_b: per head qk_nope
 *            key rows then v_head_dim value rows; newer files store them
 *            split, attn_k_b = W_UK^h transposed, attn_v_b = W_UV^h)
 *   score  = (q_nope . k_nope + rope(q_pe) . rope(kr)) * attn_scale
 *   out    = W_o [sum_p softmax(score)_p v_p]_heads
 *
 * What is cached: only [c | rope(kr)] per token and layer, kv_lora_rank +
 * qk_rope floats, shared by all heads (instead of n_head * (qk_nope + qk_rope
 * + v_head_dim) for expanded keys and values).
 *
 * How it is computed (the "absorbed" form): q_nope . (W_UK^h c) =
 * (W_UK^h^T q_nope) . c, so each head's query is mapped into latent space
 * once (q_lat, kv_lora_rank wide) and scored directly against the cached
 * rows: [q_lat | rope(q_pe)] . [c | rope(kr)] is one dot product per
 * cached position, all heads of a token in one f32 tensor_gemm. Likewise
 * sum_p a_p W_UV^h c_p = W_UV^h (sum_p a_p c_p): attention runs in latent
 * space and the value up-projection is applied once per head afterwards.
 * Both forms are exact rewrites; model_opts.mla_naive runs the naive one
 * (keys and values expanded per head from the cache) so tests can compare.
 *
 * RoPE: GGUF keeps HF's rows unpermuted. HF reorders each rope vector from
 * interleaved pairs to halves before rotate_half, which is the same as
 * rotating adjacent pairs (2i, 2i+1) by frequency i: what we do. YaRN
 * (rope.scaling.type yarn): frequencies mix the interpolated (/factor) and
 * original ones with a linear ramp between the correction dimensions of
 * beta_fast and beta_slow rotations over the original context; the softmax
 * scale is multiplied by mscale^2, mscale = 1 + yarn_log_multiplier *
 * ln(factor) (the GGUF key is 0.1 * mscale_all_dim). HF also multiplies cos
 * and sin by mscale(mscale) / mscale(mscale_all_dim); GGUF has no key for
 * mscale, and every published DeepSeek config sets mscale = mscale_all_dim,
 * where that factor is exactly 1.
 *
 * Threading: every pass runs on the model's pool (mm_* or pool_run); each
 * thread writes disjoint rows and has its own score and row buffers.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "model_internal.h"

/* ---- hyper-parameters ------------------------------------------------------ */

static int get_key_float(model *m, const char *suffix, double *out, double dflt, char *err,
                         size_t errlen)
{
    *out = dflt;
    return model_meta_float(m, suffix, out, err, errlen);
}

int mla_read_hparams(model *m, char *err, size_t errlen)
{
    model_info *I = &m->info;
    int rc;
    int64_t kl = 0, vl = 0, kl_mla = 0, vl_mla = 0, n_kv = 0, ctx_orig = 0;
    I->n_ctx_train = 4096;
    if ((rc = model_meta_int(m, "embedding_length", &I->dim, true, err, errlen)) ||
        (rc = model_meta_int(m, "block_count", &I->n_layer, true, err, errlen)) ||
        (rc = model_meta_int(m, "attention.head_count", &I->n_head, true, err, errlen)) ||
        (rc = model_meta_int(m, "context_length", &I->n_ctx_train, false, err, errlen)) ||
        (rc = model_meta_int(m, "feed_forward_length", &I->dense_ff, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_count", &I->n_expert, true, err, errlen)) ||
        (rc = model_meta_int(m, "expert_used_count", &I->n_expert_used, true, err, errlen)) ||
        (rc = model_meta_int(m, "expert_feed_forward_length", &I->expert_ff, true, err,
                             errlen)) ||
        (rc = model_meta_int(m, "expert_shared_count", &I->n_expert_shared, false, err,
                             errlen)) ||
        (rc = model_meta_int(m, "leading_dense_block_count", &I->n_dense_lead, false, err,
                             errlen)) ||
        (rc = model_meta_int(m, "expert_group_count", &I->n_group, false, err, errlen)) ||
        (rc = model_meta_int(m, "expert_group_used_count", &I->n_group_used, false, err,
                             errlen)) ||
        (rc = model_meta_int(m, "attention.head_count_kv", &n_kv, false, err, errlen)) ||
        (rc = model_meta_int(m, "attention.q_lora_rank", &I->q_lora_rank, false, err,
                             errlen)) ||
        (rc = model_meta_int(m, "attention.kv_lora_rank", &I->kv_lora_rank, true, err,
                             errlen)) ||
        (rc = model_meta_int(m, "attention.key_length", &kl, true, err, errlen)) ||
        (rc = model_meta_int(m, "attention.value_length", &vl, true, err, errlen)) ||
        (rc = model_meta_int(m, "attention.key_length_mla", &kl_mla, false, err, errlen)) ||
        (rc = model_meta_int(m, "attention.value_length_mla", &vl_mla, false, err, errlen)) ||
        (rc = model_meta_int(m, "rope.dimension_count", &I->qk_rope, true, err, errlen)))
        return rc;
    int64_t gating = MODEL_GATING_SOFTMAX;
    if ((rc = model_meta_int(m, "expert_gating_func", &gating, false, err, errlen)))
        return rc;
    if (gating != MODEL_GATING_SOFTMAX && gating != MODEL_GATING_SIGMOID) {
        mg_err_set(err, errlen, "model: metadata key 'deepseek2.expert_gating_func' = %lld is not "
                   "supported (1 softmax, 2 sigmoid)", (long long)gating);
        return MG_EUNSUPPORTED;
    }
    I->gating = (enum model_gating)gating;
    /* Two layouts of the head sizes. Older files: key_length = qk_nope +
     * qk_rope, value_length = v_head_dim, head_count_kv = head_count. Newer
     * ones store MLA as MQA: key_length = kv_lora + qk_rope, value_length =
     * kv_lora, head_count_kv = 1, and the per-head sizes in *_mla. */
    if (kl_mla || vl_mla) {
        if (!kl_mla || !vl_mla || kl != I->kv_lora_rank + I->qk_rope || vl != I->kv_lora_rank ||
            (n_kv && n_kv != 1)) {
            mg_err_set(err, errlen, "model: inconsistent MLA head sizes: key_length_mla %lld, "
                       "value_length_mla %lld, key_length %lld (expected kv_lora_rank + "
                       "rope.dimension_count = %lld), value_length %lld (expected %lld), "
                       "head_count_kv %lld (expected 1)", (long long)kl_mla, (long long)vl_mla,
                       (long long)kl, (long long)(I->kv_lora_rank + I->qk_rope), (long long)vl,
                       (long long)I->kv_lora_rank, (long long)n_kv);
            return MG_EFORMAT;
        }
        kl = kl_mla;
        vl = vl_mla;
    } else if (n_kv && n_kv != I->n_head) {
        mg_err_set(err, errlen, "model: deepseek2 'attention.head_count_kv' = %lld differs from "
                   "head_count %lld without key_length_mla/value_length_mla", (long long)n_kv,
                   (long long)I->n_head);
        return MG_EFORMAT;
    }
    I->head_dim = kl;
    I->v_head_dim = vl;
    I->qk_nope = kl - I->qk_rope;
    I->n_head_kv = I->n_head;
    I->n_rot = I->qk_rope;
    I->shared_ff = I->n_expert_shared * I->expert_ff;
    I->rope_base = 10000.0;
    I->rms_eps = 1e-6;
    double scale = 1.0;
    if ((rc = model_meta_float(m, "rope.freq_base", &I->rope_base, err, errlen)) ||
        (rc = model_meta_float(m, "attention.layer_norm_rms_epsilon", &I->rms_eps, err,
                               errlen)) ||
        (rc = model_meta_float(m, "expert_weights_scale", &scale, err, errlen)))
        return rc;
    I->expert_scale = scale == 0 ? 1.0 : scale; /* 0 (the converter's "none") = 1 */
    I->norm_topk = false;
    char key[160];
    bool bv;
    snprintf(key, sizeof key, "%s.expert_weights_norm", I->arch_name);
    if (gguf_get_bool(m->g, key, &bv) == MG_OK)
        I->norm_topk = bv;
    /* Bounds far above any published model keep every product of sizes
     * below 2^40; the sizes must also fit together. */
    if (I->dim <= 0 || I->dim > (1 << 20) || I->n_layer <= 0 || I->n_layer > 4096 ||
        I->n_head <= 0 || I->n_head > (1 << 12) || I->kv_lora_rank <= 0 ||
        I->kv_lora_rank > (1 << 16) || I->q_lora_rank > (1 << 16) || I->qk_rope <= 0 ||
        I->qk_rope % 2 || I->qk_rope > 2 * ROPE_MAX_PAIRS || I->qk_nope <= 0 ||
        I->qk_nope > (1 << 16) || I->v_head_dim <= 0 || I->v_head_dim > (1 << 16) ||
        I->n_ctx_train <= 0 || I->n_ctx_train > (1 << 24)) {
        mg_err_set(err, errlen, "model: bad MLA sizes (embedding_length %lld, block_count %lld, "
                   "head_count %lld, q_lora_rank %lld, kv_lora_rank %lld, key head %lld = "
                   "nope %lld + rope.dimension_count %lld, value head %lld, context_length %lld)",
                   (long long)I->dim, (long long)I->n_layer, (long long)I->n_head,
                   (long long)I->q_lora_rank, (long long)I->kv_lora_rank, (long long)kl,
                   (long long)I->qk_nope, (long long)I->qk_rope, (long long)vl,
                   (long long)I->n_ctx_train);
        return MG_EFORMAT;
    }
    if (I->n_expert <= 0 || I->n_expert > 4096 || I->n_expert_used <= 0 ||
        I->n_expert_used > I->n_expert || I->expert_ff <= 0 || I->expert_ff > (1 << 24) ||
        I->n_expert_shared > 64 || I->dense_ff > (1 << 24) || I->n_dense_lead > I->n_layer ||
        (I->n_dense_lead > 0 && I->dense_ff <= 0) || I->n_group <= 0 || I->n_group > 256 ||
        I->n_expert % I->n_group || I->n_group_used <= 0 || I->n_group_used > I->n_group ||
        I->n_expert_used > I->n_group_used * (I->n_expert / I->n_group)) {
        mg_err_set(err, errlen, "model: inconsistent DeepSeekMoE parameters (expert_count %lld, "
                   "expert_used_count %lld, expert_feed_forward_length %lld, expert_shared_count "
                   "%lld, feed_forward_length %lld, leading_dense_block_count %lld of %lld "
                   "layers, expert_group_count %lld, expert_group_used_count %lld)",
                   (long long)I->n_expert, (long long)I->n_expert_used, (long long)I->expert_ff,
                   (long long)I->n_expert_shared, (long long)I->dense_ff,
                   (long long)I->n_dense_lead, (long long)I->n_layer, (long long)I->n_group,
                   (long long)I->n_group_used);
        return MG_EFORMAT;
    }
    if (I->rope_base <= 0 || I->rms_eps <= 0 || I->expert_scale < 0) {
        mg_err_set(err, errlen, "model: bad rope.freq_base %g, layer_norm_rms_epsilon %g or "
                   "expert_weights_scale %g", I->rope_base, I->rms_eps, I->expert_scale);
        return MG_EFORMAT;
    }
    /* RoPE scaling: none or YaRN */
    char stype[32] = "";
    snprintf(key, sizeof key, "%s.rope.scaling.type", I->arch_name);
    gguf_get_cstr(m->g, key, stype, sizeof stype);
    double mscale = 1.0;
    if (!strcmp(stype, "yarn")) {
        strcpy(I->rope_scaling, "yarn");
        if ((rc = get_key_float(m, "rope.scaling.factor", &I->yarn_factor, 1.0, err, errlen)) ||
            (rc = model_meta_int(m, "rope.scaling.original_context_length", &ctx_orig, true, err,
                                 errlen)) ||
            (rc = get_key_float(m, "rope.scaling.yarn_log_multiplier", &I->yarn_log_mul, 0.0,
                                err, errlen)) ||
            (rc = get_key_float(m, "rope.scaling.yarn_beta_fast", &I->yarn_beta_fast, 32.0, err,
                                errlen)) ||
            (rc = get_key_float(m, "rope.scaling.yarn_beta_slow", &I->yarn_beta_slow, 1.0, err,
                                errlen)))
            return rc;
        I->yarn_orig_ctx = ctx_orig;
        if (I->yarn_factor < 1 || I->yarn_factor > 1e6 || ctx_orig <= 0 ||
            I->yarn_beta_fast <= 0 || I->yarn_beta_slow <= 0 || I->yarn_log_mul < 0 ||
            I->yarn_log_mul > 100) {
            mg_err_set(err, errlen, "model: bad YaRN parameters (rope.scaling.factor %g, "
                       "original_context_length %lld, yarn_log_multiplier %g, beta_fast %g, "
                       "beta_slow %g)", I->yarn_factor, (long long)ctx_orig, I->yarn_log_mul,
                       I->yarn_beta_fast, I->yarn_beta_slow);
            return MG_EFORMAT;
        }
        if (I->yarn_factor > 1)
            mscale = 1.0 + I->yarn_log_mul * log(I->yarn_factor);
    } else if (stype[0] && strcmp(stype, "none")) {
        mg_err_set(err, errlen, "model: rope scaling type '%s' (key '%s') is not supported for "
                   "deepseek2 (supported: none, yarn)", stype, key);
        return MG_EUNSUPPORTED;
    }
    I->rope_scale = 1.0;
    I->rope_neox = false;
    I->attn_scale = mscale * mscale / sqrt((double)I->head_dim);
    I->kv_bytes_token = (size_t)I->n_layer * (size_t)(I->kv_lora_rank + I->qk_rope) *
                        sizeof(float);
    I->kv_bytes_token_full = (size_t)I->n_layer * (size_t)I->n_head *
                             (size_t)(I->head_dim + I->v_head_dim) * sizeof(float);
    return MG_OK;
}

/* ---- tensors ------------------------------------------------------------------- */

int mla_bind_layer(model *m, int il, char *err, size_t errlen)
{
    const model_info *I = &m->info;
    layer *L = &m->layers[il];
    int64_t dim = I->dim, nh = I->n_head, qk = I->head_dim, kvl = I->kv_lora_rank;
    int64_t nope = I->qk_nope, vh = I->v_head_dim;
    char n[96];
    int rc;
#define NAME(fmt) (snprintf(n, sizeof n, "blk.%d." fmt, il), n)
    if (I->q_lora_rank > 0) {
        int64_t ql = I->q_lora_rank;
        if ((rc = model_bind_wmat(m, &L->wq_a, NAME("attn_q_a.weight"), dim, ql, 1, true, err,
                                  errlen)) ||
            (rc = model_bind_vec(m, &L->q_a_norm, NAME("attn_q_a_norm.weight"), ql, true, err,
                                 errlen)) ||
            (rc = model_bind_wmat(m, &L->wq_b, NAME("attn_q_b.weight"), ql, nh * qk, 1, true, err,
                                  errlen)))
            return rc;
    } else if ((rc = model_bind_wmat(m, &L->wq, NAME("attn_q.weight"), dim, nh * qk, 1, true, err,
                                     errlen))) {
        return rc;
    }
    if ((rc = model_bind_wmat(m, &L->wkv_a, NAME("attn_kv_a_mqa.weight"), dim,
                              kvl + I->qk_rope, 1, true, err, errlen)) ||
        (rc = model_bind_vec(m, &L->kv_a_norm, NAME("attn_kv_a_norm.weight"), kvl, true, err,
                             errlen)) ||
        (rc = model_bind_wmat(m, &L->wo, NAME("attn_output.weight"), nh * vh, dim, 1, true, err,
                              errlen)))
        return rc;
    if (gguf_tensor_find(m->g, NAME("attn_k_b.weight"))) {
        /* split form: k_b[h] is [kv_lora][nope] (W_UK^h transposed), v_b[h] [v][kv_lora] */
        if ((rc = model_bind_wmat(m, &L->wk_b, NAME("attn_k_b.weight"), nope, kvl, nh, true, err,
                                  errlen)) ||
            (rc = model_bind_wmat(m, &L->wv_b, NAME("attn_v_b.weight"), kvl, vh, nh, true, err,
                                  errlen)))
            return rc;
        m->info.kv_b_split = true;
        return MG_OK;
    }
    rc = model_bind_wmat(m, &L->wkv_b, NAME("attn_kv_b.weight"), kvl, nh * (nope + vh), 1, false,
                         err, errlen);
    if (rc)
        return rc;
    if (!L->wkv_b.data) {
        mg_err_set(err, errlen, "model: tensor 'blk.%d.attn_kv_b.weight' is missing (and so is "
                   "the split form 'blk.%d.attn_k_b.weight' + 'attn_v_b.weight')", il, il);
        return MG_ENOTFOUND;
    }
    /* the value rows of each head, as a stack of n_head [v][kv_lora] matrices */
    L->wv_b = L->wkv_b;
    L->wv_b.n_out = vh;
    L->wv_b.n_mat = nh;
    L->wv_b.mat_bytes = L->wkv_b.row_bytes * (size_t)(nope + vh);
    L->wv_b.data = (const char *)L->wkv_b.data + L->wkv_b.row_bytes * (size_t)nope;
    return MG_OK;
#undef NAME
}

void mla_rope_init(model *m)
{
    const model_info *I = &m->info;
    int64_t half = I->qk_rope / 2;
    double d = (double)I->qk_rope, base = I->rope_base;
    double low = 0, high = 0;
    bool yarn = !strcmp(I->rope_scaling, "yarn") && I->yarn_factor > 1;
    if (yarn) {
        /* dimension whose wavelength makes n_rot turns over the original context */
        double lo = d * log((double)I->yarn_orig_ctx / (I->yarn_beta_fast * 2 * M_PI)) /
                    (2 * log(base));
        double hi = d * log((double)I->yarn_orig_ctx / (I->yarn_beta_slow * 2 * M_PI)) /
                    (2 * log(base));
        low = floor(lo) > 0 ? floor(lo) : 0;
        high = ceil(hi) < d - 1 ? ceil(hi) : d - 1;
        if (low == high)
            high += 0.001;
    }
    for (int64_t i = 0; i < half; i++) {
        double extra = pow(base, -2.0 * (double)i / d);
        double f = extra;
        if (yarn) {
            double ramp = ((double)i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double keep = 1.0 - ramp; /* weight of the original frequency */
            f = extra / I->yarn_factor * (1.0 - keep) + extra * keep;
        }
        m->rope_inv_freq[i] = (float)f;
    }
}

void mla_plan_scratch(model *m)
{
    const model_info *I = &m->info;
    scratch *s = &m->s;
    int64_t nb = m->n_batch, nh = I->n_head, kvd = I->kv_lora_rank + I->qk_rope;
    int64_t kvl = I->kv_lora_rank, nope = I->qk_nope, vh = I->v_head_dim;
    int64_t in_w = nope > kvl ? nope : kvl, out_w = kvl > vh ? kvl : vh;
    s->qa = model_own_alloc(m, sizeof(float) * (size_t)(nb * (I->q_lora_rank + 1)));
    s->kva = model_own_alloc(m, sizeof(float) * (size_t)(nb * kvd));
    s->qfull = model_own_alloc(m, sizeof(float) * (size_t)(nb * nh * kvd));
    s->olat = model_own_alloc(m, sizeof(float) * (size_t)(nb * nh * kvl));
    s->hm_in = model_own_alloc(m, sizeof(float) * (size_t)(nb * nh * in_w));
    s->hm_out = model_own_alloc(m, sizeof(float) * (size_t)(nb * nh * out_w));
    size_t act_row = 0;
    for (int64_t il = 0; il < I->n_layer; il++) {
        const layer *L = &m->layers[il];
        size_t a = tensor_act_row_bytes(L->wv_b.type, kvl);
        act_row = act_row > a ? act_row : a;
        if (L->wk_b.data) {
            a = tensor_act_row_bytes(L->wk_b.type, nope);
            act_row = act_row > a ? act_row : a;
        }
    }
    s->hm_act = model_own_alloc(m, act_row * (size_t)(nb * nh));
    s->head_ex = model_own_alloc(m, sizeof(int32_t) * (size_t)nh);
    s->head_off = model_own_alloc(m, sizeof(int32_t) * (size_t)(nh + 1));
    for (int64_t h = 0; h < nh; h++)
        s->head_ex[h] = (int32_t)h;
    /* per thread: the naive form's per-head W_UK (nope x kvl) and W_UV (v x
     * kvl), or one dequantised row of the fused kv_b */
    s->rowbuf = model_own_alloc(m, sizeof(float) * (size_t)pool_size(m->pool) *
                                       (size_t)((nope + vh + 1) * kvl));
}

/* ---- forward ------------------------------------------------------------------- */

typedef struct mla_job {
    model *m;
    model_kv *kv;
    const layer *L;
    const model_batch *b;
    int b0, n;
    int64_t il;
    const wmat *w;  /* weight rows are prepared for (prep_head) */
    const float *src;
    int64_t src_k;  /* elements per prepared row */
    size_t stride;  /* prepared row bytes */
    bool from_q;    /* prep source: q_nope of s->q (else s->olat) */
} mla_job;

/* Rotates adjacent pairs (2i, 2i+1) by pos * inv_freq[i]. */
static void rope_pairs(float *v, const float *cs, const float *sn, int64_t half)
{
    for (int64_t i = 0; i < half; i++) {
        float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cs[i] - x1 * sn[i];
        v[2 * i + 1] = x0 * sn[i] + x1 * cs[i];
    }
}

/* Per token: latent norm, RoPE of the shared key and of each head's q_pe;
 * the latent row [c | rope(kr)] goes into the cache. */
static void mla_prepare_tokens(void *arg, int64_t t0, int64_t t1)
{
    mla_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    int64_t kvl = I->kv_lora_rank, kvd = kvl + I->qk_rope, qk = I->head_dim;
    int64_t half = I->qk_rope / 2;
    for (int64_t t = t0; t < t1; t++) {
        int32_t pos = j->b->pos[j->b0 + t], seq = j->b->seq[j->b0 + t];
        float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
        model_rope_angles(cs, sn, m->rope_inv_freq, half, (float)pos);
        const float *kva = m->s.kva + t * kvd;
        float *row = kv_row(j->kv, j->kv->k, j->il, seq, pos);
        model_rmsnorm(row, kva, j->L->kv_a_norm, kvl, (float)I->rms_eps);
        memcpy(row + kvl, kva + kvl, sizeof(float) * (size_t)I->qk_rope);
        rope_pairs(row + kvl, cs, sn, half);
        float *q = m->s.q + t * I->n_head * qk;
        for (int64_t h = 0; h < I->n_head; h++)
            rope_pairs(q + h * qk + I->qk_nope, cs, sn, half);
    }
}

/* Prepared head-major rows r = h*n + t for j->w: q_nope of (t, h), or the
 * latent attention output of (t, h). */
static void prep_head_rows(void *arg, int64_t r0, int64_t r1)
{
    mla_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    for (int64_t r = r0; r < r1; r++) {
        int64_t h = r / j->n, t = r % j->n;
        const float *src = j->from_q ? m->s.q + (t * I->n_head + h) * I->head_dim
                                     : m->s.olat + (t * I->n_head + h) * I->kv_lora_rank;
        tensor_act_prepare(m->kt, j->w->type, m->s.hm_act + (size_t)r * j->stride, src, j->src_k);
    }
}

/* Fused kv_b: q_lat^h = W_UK^h^T q_nope^h, a sum of key rows weighted by
 * q_nope: each row is dequantised once and used for every token. Heads are
 * split across threads. */
static void absorb_fused_worker(void *arg, int ith, int nth)
{
    mla_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    const wmat *w = &j->L->wkv_b;
    int64_t nh = I->n_head, kvl = I->kv_lora_rank, kvd = kvl + I->qk_rope;
    int64_t nope = I->qk_nope, qk = I->head_dim, vh = I->v_head_dim;
    float *row = m->s.rowbuf + (size_t)ith * (size_t)((nope + vh + 1) * kvl);
    for (int64_t h = nh * ith / nth; h < nh * (ith + 1) / nth; h++) {
        for (int t = 0; t < j->n; t++)
            memset(m->s.qfull + (t * nh + h) * kvd, 0, sizeof(float) * (size_t)kvl);
        for (int64_t i = 0; i < nope; i++) {
            tensor_dequant_row(m->kt, w->type, row,
                               (const char *)w->data + (size_t)(h * (nope + vh) + i) * w->row_bytes,
                               kvl);
            for (int t = 0; t < j->n; t++)
                axpy(m->s.qfull + (t * nh + h) * kvd, m->s.q[(t * nh + h) * qk + i], row, kvl);
        }
    }
}

/* Absorbed attention. Items (token, head) are split evenly over threads; a
 * thread's run of heads of one token is scored with one f32 tensor_gemm of
 * the cached latent rows (as "weights") against their [q_lat | q_pe] rows,
 * then softmax and the latent output o_lat = sum_p a_p c_p. */
static void attn_latent_worker(void *arg, int ith, int nth)
{
    mla_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    int64_t nh = I->n_head, kvl = I->kv_lora_rank, kvd = j->kv->kv_dim;
    int64_t n_items = (int64_t)j->n * nh;
    int64_t i0 = n_items * ith / nth, i1 = n_items * (ith + 1) / nth;
    int64_t ld = j->kv->n_ctx;
    float *scores = j->kv->scores + (size_t)ith * (size_t)nh * (size_t)ld; /* [nh][ld] */
    float scale = (float)I->attn_scale;
    for (int64_t it = i0; it < i1;) {
        int64_t t = it / nh, h0 = it % nh;
        int64_t h1 = h0 + (i1 - it) < nh ? h0 + (i1 - it) : nh;
        int32_t pos = j->b->pos[j->b0 + t], seq = j->b->seq[j->b0 + t];
        attn_scores(m->kt, scores, ld, j->kv, j->kv->k, j->il, seq, 0, pos + 1,
                    m->s.qfull + (t * nh + h0) * kvd, (size_t)kvd * sizeof(float), h1 - h0, kvd);
        for (int64_t h = h0; h < h1; h++)
            attn_softmax_sum(m->kt, m->s.olat + (t * nh + h) * kvl, scores + (h - h0) * ld, pos + 1,
                             scale, j->kv, j->kv->k, j->il, seq, 0, kvl);
        it += h1 - h0;
    }
}

/* The naive form, for tests: per (token, head), W_UK^h and W_UV^h are
 * dequantised, every cached latent expanded into k_nope and v, and
 * attention run on the expanded keys and values; writes s->att. */
static void attn_naive_worker(void *arg, int ith, int nth)
{
    mla_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    const layer *L = j->L;
    int64_t nh = I->n_head, kvl = I->kv_lora_rank, qk = I->head_dim;
    int64_t nope = I->qk_nope, vh = I->v_head_dim, rope = I->qk_rope;
    int64_t n_items = (int64_t)j->n * nh;
    int64_t ld = j->kv->n_ctx;
    float *sc = j->kv->scores + (size_t)ith * (size_t)nh * (size_t)ld;
    float *wk = m->s.rowbuf + (size_t)ith * (size_t)((nope + vh + 1) * kvl); /* [nope][kvl] */
    float *wv = wk + nope * kvl;                                             /* [vh][kvl] */
    float *tmp = wv + vh * kvl;                                              /* [kvl] */
    for (int64_t it = n_items * ith / nth; it < n_items * (ith + 1) / nth; it++) {
        int64_t t = it / nh, h = it % nh;
        int32_t pos = j->b->pos[j->b0 + t], seq = j->b->seq[j->b0 + t];
        if (L->wk_b.data) {
            const char *kb = wmat_data(&L->wk_b, h); /* rows c: [nope] */
            for (int64_t c = 0; c < kvl; c++) {
                tensor_dequant_row(m->kt, L->wk_b.type, tmp, kb + (size_t)c * L->wk_b.row_bytes,
                                   nope);
                for (int64_t i = 0; i < nope; i++)
                    wk[i * kvl + c] = tmp[i];
            }
        } else {
            const char *kb = (const char *)L->wkv_b.data +
                             (size_t)(h * (nope + vh)) * L->wkv_b.row_bytes;
            for (int64_t i = 0; i < nope; i++)
                tensor_dequant_row(m->kt, L->wkv_b.type, wk + i * kvl,
                                   kb + (size_t)i * L->wkv_b.row_bytes, kvl);
        }
        const char *vb = wmat_data(&L->wv_b, h);
        for (int64_t r = 0; r < vh; r++)
            tensor_dequant_row(m->kt, L->wv_b.type, wv + r * kvl,
                               vb + (size_t)r * L->wv_b.row_bytes, kvl);
        const float *q = m->s.q + (t * nh + h) * qk;
        float mx = -INFINITY;
        for (int32_t p = 0; p <= pos; p++) {
            const float *c = kv_row(j->kv, j->kv->k, j->il, seq, p);
            double s = 0;
            for (int64_t i = 0; i < nope; i++) {
                double k = 0;
                for (int64_t x = 0; x < kvl; x++)
                    k += (double)wk[i * kvl + x] * c[x];
                s += (double)q[i] * k;
            }
            for (int64_t i = 0; i < rope; i++)
                s += (double)q[nope + i] * c[kvl + i];
            sc[p] = (float)(s * I->attn_scale);
            mx = sc[p] > mx ? sc[p] : mx;
        }
        double sum = 0;
        for (int32_t p = 0; p <= pos; p++) {
            sc[p] = expf(sc[p] - mx);
            sum += sc[p];
        }
        float *out = m->s.att + t * nh * vh + h * vh;
        for (int64_t r = 0; r < vh; r++) {
            double acc = 0;
            for (int32_t p = 0; p <= pos; p++) {
                const float *c = kv_row(j->kv, j->kv->k, j->il, seq, p);
                double v = 0;
                for (int64_t x = 0; x < kvl; x++)
                    v += (double)wv[r * kvl + x] * c[x];
                acc += sc[p] / sum * v;
            }
            out[r] = (float)acc;
        }
    }
}

/* Head-major [h][t][w] rows of hm_out -> token-major dst[t][h] (ld dst_ld,
 * head stride dst_hs), w elements each. */
typedef struct scatter_job {
    model *m;
    int n;
    int64_t w, dst_ld, dst_hs;
    float *dst;
} scatter_job;

static void scatter_heads(void *arg, int64_t r0, int64_t r1)
{
    scatter_job *j = arg;
    for (int64_t r = r0; r < r1; r++) {
        int64_t h = r / j->n, t = r % j->n;
        memcpy(j->dst + t * j->dst_ld + h * j->dst_hs, j->m->s.hm_out + r * j->w,
               sizeof(float) * (size_t)j->w);
    }
}

/* Products of every head's matrix of w (a stack of n_head) with its
 * prepared head-major rows, one pool pass; output head-major in hm_out. */
static void run_heads(model *m, const wmat *w, mla_job *j, bool from_q, int64_t k)
{
    scratch *s = &m->s;
    int64_t nh = m->info.n_head;
    j->w = w;
    j->from_q = from_q;
    j->src_k = k;
    j->stride = tensor_act_row_bytes(w->type, k);
    mm_pfor(&m->mm, nh * j->n, prep_head_rows, j);
    for (int64_t h = 0; h <= nh; h++)
        s->head_off[h] = (int32_t)(h * j->n);
    float *y = s->hm_out;
    mm_run_experts(&m->mm, 1, &y, w->n_out, &w, s->hm_act, j->stride, s->head_ex, s->head_off,
                   (int)nh);
}

void mla_attention(model *m, model_kv *kv, const model_batch *b, int b0, int n, int64_t il)
{
    const model_info *I = &m->info;
    const layer *L = &m->layers[il];
    scratch *s = &m->s;
    int64_t dim = I->dim, nh = I->n_head, kvl = I->kv_lora_rank, kvd = kvl + I->qk_rope;
    int64_t qk = I->head_dim, nope = I->qk_nope, vh = I->v_head_dim;
    mla_job j = {m, kv, L, b, b0, n, il, NULL, NULL, 0, 0, false};

    /* query (through the q_lora bottleneck and its norm when present) and
     * the latent + shared rope key */
    if (I->q_lora_rank > 0) {
        float *y[2] = {s->qa, s->kva};
        int64_t ld[2] = {I->q_lora_rank, kvd};
        const wmat *w[2] = {&L->wq_a, &L->wkv_a};
        mm_run_multi(&m->mm, 2, y, ld, w, s->xn, dim, n);
        lora_apply_dense(m, b, b0, n, il, LORA_ATTN_Q_A, s->qa, I->q_lora_rank, s->xn, dim);
        lora_apply_dense(m, b, b0, n, il, LORA_ATTN_KV_A, s->kva, kvd, s->xn, dim);
        model_rmsnorm_rows(m, s->qa, s->qa, L->q_a_norm, n, I->q_lora_rank);
        mm_run(&m->mm, s->q, nh * qk, &L->wq_b, 0, s->qa, I->q_lora_rank, n);
        lora_apply_dense(m, b, b0, n, il, LORA_ATTN_Q_B, s->q, nh * qk, s->qa, I->q_lora_rank);
    } else {
        float *y[2] = {s->q, s->kva};
        int64_t ld[2] = {nh * qk, kvd};
        const wmat *w[2] = {&L->wq, &L->wkv_a};
        mm_run_multi(&m->mm, 2, y, ld, w, s->xn, dim, n);
        lora_apply_dense(m, b, b0, n, il, LORA_ATTN_Q, s->q, nh * qk, s->xn, dim);
        lora_apply_dense(m, b, b0, n, il, LORA_ATTN_KV_A, s->kva, kvd, s->xn, dim);
    }
    /* latent norm, RoPE; append [c | rope(kr)] to the cache */
    mm_pfor(&m->mm, n, mla_prepare_tokens, &j);

    if (m->mla_naive) {
        pool_run(m->pool, attn_naive_worker, &j);
    } else {
        /* absorb W_UK into the query: qfull[t][h] = [W_UK^h^T q_nope | q_pe] */
        if (L->wk_b.data) {
            run_heads(m, &L->wk_b, &j, true, nope);
            scatter_job sj = {m, n, kvl, nh * kvd, kvd, s->qfull};
            mm_pfor(&m->mm, nh * n, scatter_heads, &sj);
        } else {
            pool_run(m->pool, absorb_fused_worker, &j);
        }
        for (int t = 0; t < n; t++)
            for (int64_t h = 0; h < nh; h++)
                memcpy(s->qfull + (t * nh + h) * kvd + kvl, s->q + (t * nh + h) * qk + nope,
                       sizeof(float) * (size_t)I->qk_rope);
        lora_apply_kv_b(m, b, b0, n, il, false);
        /* attention in latent space */
        pool_run(m->pool, attn_latent_worker, &j);
        /* value up-projection per head: att[t][h] = W_UV^h o_lat[t][h] */
        run_heads(m, &L->wv_b, &j, false, kvl);
        scatter_job sj = {m, n, vh, nh * vh, vh, s->att};
        mm_pfor(&m->mm, nh * n, scatter_heads, &sj);
        lora_apply_kv_b(m, b, b0, n, il, true);
    }
    /* output projection */
    mm_run(&m->mm, s->o, dim, &L->wo, 0, s->att, nh * vh, n);
    lora_apply_dense(m, b, b0, n, il, LORA_ATTN_O, s->o, dim, s->att, nh * vh);
}
