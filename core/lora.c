/* lora.c — target names and shapes for LoRA adapters (see lora.h). */
#include "core/lora.h"

#include <math.h>
#include <stdlib.h>

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

/* ---- application in the forward pass -------------------------------------------------- */

/* A unit of work: up to LORA_ITEM_ROWS rows that use the same pair, so its
 * A and B are read once for all of them. */
#define LORA_ITEM_ROWS 16

typedef struct lora_item {
    const lora_pair *p;
    int n;
    int32_t x_row[LORA_ITEM_ROWS]; /* row of x */
    int32_t y_row[LORA_ITEM_ROWS]; /* row of y */
    int32_t head;                  /* kv_b: -1 (all heads in the worker) */
} lora_item;

typedef struct lora_job {
    model *m;
    const lora_item *items;
    int n_items;
    float *y;
    int64_t ldy;
    const float *x;
    int64_t ldx, n_out, n_in;
} lora_job;

/* Per-thread scratch: u [LORA_ITEM_ROWS][r], then (kv_b) dequantised rows. */
static float *lora_tmp(model *m, int ith)
{
    return m->lora_tmp + (size_t)ith * m->lora_tmp_stride;
}

static size_t type_size(uint32_t type)
{
    return type == TENSOR_F32 ? 4 : 2;
}

/* y_row += scale * B (A x_row) for each row of the item. */
static void lora_item_run(model *m, const lora_item *it, float *tmp, float *y, int64_t ldy, const float *x,
                          int64_t ldx, int64_t n_out, int64_t n_in)
{
    const lora_pair *p = it->p;
    int64_t r = p->r;
    size_t es = type_size(p->type);
    float *u = tmp;
    /* u[k][j] = A_j . x_k; for f32/f16/bf16 weights the prepared activation is the f32 row */
    for (int k = 0; k < it->n; k++)
        tensor_gemm(m->kt, p->type, u + (size_t)k * (size_t)r, r, p->a, (size_t)n_in * es, r,
                    x + (size_t)it->x_row[k] * (size_t)ldx, 0, 1, n_in);
    for (int64_t j = 0; j < r; j++) {
        const void *bj = (const char *)p->bt + (size_t)j * (size_t)n_out * es;
        for (int k = 0; k < it->n; k++)
            tensor_axpy(m->kt, p->type, y + (size_t)it->y_row[k] * (size_t)ldy,
                        p->scale * u[(size_t)k * (size_t)r + (size_t)j], bj, n_out);
    }
}

static void lora_worker(void *arg, int ith, int nth)
{
    lora_job *j = arg;
    for (int i = j->n_items * ith / nth; i < j->n_items * (ith + 1) / nth; i++)
        lora_item_run(j->m, &j->items[i], lora_tmp(j->m, ith), j->y, j->ldy, j->x, j->ldx, j->n_out, j->n_in);
}

/* Room for n items and per-thread scratch of max_r ranks and rows of width;
 * false when memory ran out (the caller skips: the error surfaces as
 * model_forward's MG_ENOMEM through m->lora_oom). */
static bool lora_reserve(model *m, int n_items, int64_t max_r, int64_t width)
{
    if (n_items > m->lora_items_cap) {
        lora_item *it = realloc(m->lora_items, (size_t)n_items * sizeof *it);
        if (!it)
            return false;
        m->lora_items = it;
        m->lora_items_cap = n_items;
    }
    size_t stride = (size_t)LORA_ITEM_ROWS * (size_t)max_r + (size_t)width;
    stride = (stride + 15) & ~(size_t)15;
    int nth = pool_size(m->pool);
    if (stride > m->lora_tmp_stride) {
        float *t = realloc(m->lora_tmp, stride * (size_t)nth * sizeof(float));
        if (!t)
            return false;
        m->lora_tmp = t;
        m->lora_tmp_stride = stride;
    }
    return true;
}

/* Adds rows to the item list, grouping rows of the same pair. open[] keeps
 * the last unfilled item of each distinct pair seen (few adapters a chunk). */
typedef struct grouper {
    lora_item *items;
    int n_items;
    int open[64];
    int n_open;
    int64_t max_r;
} grouper;

static void group_add(grouper *g, const lora_pair *p, int32_t x_row, int32_t y_row)
{
    int slot = -1;
    for (int i = 0; i < g->n_open; i++)
        if (g->items[g->open[i]].p == p) {
            slot = i;
            break;
        }
    if (slot >= 0 && g->items[g->open[slot]].n == LORA_ITEM_ROWS) {
        g->open[slot] = g->open[--g->n_open]; /* full: a fresh item below */
        slot = -1;
    }
    if (slot < 0) {
        if (g->n_open == 64) /* many pairs at once: close the oldest */
            g->open[0] = g->open[--g->n_open];
        g->items[g->n_items] = (lora_item){.p = p, .head = -1};
        g->open[g->n_open++] = g->n_items++;
        slot = g->n_open - 1;
        if (p->r > g->max_r)
            g->max_r = p->r;
    }
    lora_item *it = &g->items[g->open[slot]];
    it->x_row[it->n] = x_row;
    it->y_row[it->n++] = y_row;
}

static void lora_launch(model *m, grouper *g, float *y, int64_t ldy, const float *x, int64_t ldx, int64_t n_out,
                        int64_t n_in)
{
    if (g->n_items == 0)
        return;
    if (!lora_reserve(m, 0, g->max_r, 0)) {
        m->lora_oom = true;
        return;
    }
    lora_job j = {m, g->items, g->n_items, y, ldy, x, ldx, n_out, n_in};
    if (g->n_items == 1)
        lora_worker(&j, 0, 1);
    else
        pool_run(m->pool, lora_worker, &j);
}

/* The chunk's tokens k < n grouped by their adapter's pair for target t
 * of layer il (row k of x and y); false when the item list cannot grow. */
static bool group_tokens(model *m, const model_batch *b, int b0, int n, int64_t il, enum lora_target t, grouper *g)
{
    if (!lora_reserve(m, n, 0, 0)) {
        m->lora_oom = true;
        return false;
    }
    *g = (grouper){.items = m->lora_items};
    for (int k = 0; k < n; k++) {
        const model_lora *l = b->lora[b0 + k];
        const lora_pair *p = l ? l->layer[il].t[t] : NULL;
        if (p && p->r > 0)
            group_add(g, p, k, k);
    }
    return true;
}

void lora_apply_dense(model *m, const model_batch *b, int b0, int n, int64_t il, enum lora_target t, float *y,
                      int64_t ldy, const float *x, int64_t ldx)
{
    if (!b->lora)
        return;
    int64_t n_out, n_in, ne;
    grouper g;
    if (model_lora_shape(m, il, t, &n_out, &n_in, &ne) || !group_tokens(m, b, b0, n, il, t, &g))
        return;
    lora_launch(m, &g, y, ldy, x, ldx, n_out, n_in);
}

void lora_apply_experts(model *m, const model_batch *b, int b0, int64_t il, enum lora_target t, float *y,
                        int64_t ldy, const float *x, int64_t ldx, bool x_by_token)
{
    if (!b->lora)
        return;
    scratch *s = &m->s;
    int64_t n_out, n_in, ne;
    if (model_lora_shape(m, il, t, &n_out, &n_in, &ne))
        return;
    int n_slots = s->slot_off[s->n_ex];
    if (!lora_reserve(m, n_slots, 0, 0)) {
        m->lora_oom = true;
        return;
    }
    grouper g = {.items = m->lora_items};
    for (int i = 0; i < s->n_ex; i++) {
        int32_t e = s->ex[i];
        g.n_open = 0; /* items never span experts */
        for (int32_t sl = s->slot_off[i]; sl < s->slot_off[i + 1]; sl++) {
            int32_t tok = s->slot_tok[sl];
            const model_lora *l = b->lora[b0 + tok];
            const lora_pair *p = l && l->layer[il].t[t] ? &l->layer[il].t[t][e] : NULL;
            if (p && p->r > 0)
                group_add(&g, p, x_by_token ? tok : sl, sl);
        }
    }
    lora_launch(m, &g, y, ldy, x, ldx, n_out, n_in);
}

/* MLA's kv_b in the absorbed form. kv_b maps the latent c to per-head
 * [k_nope | v]; its LoRA (A [r][kvl], B [nh*(nope+vh)][r]) changes
 *   the absorbed query:  q_lat^h += s * A^T (B_k^h^T q_nope^h)
 *   the value output:    out^h   += s * B_v^h (A o_lat^h)
 * Items are (pair, up to 16 tokens); heads are looped inside. */
typedef struct kvb_job {
    model *m;
    const lora_item *items;
    int n_items;
    bool values; /* false: the query side */
} kvb_job;

static void kvb_worker(void *arg, int ith, int nth)
{
    kvb_job *j = arg;
    model *m = j->m;
    const model_info *I = &m->info;
    int64_t nh = I->n_head, kvl = I->kv_lora_rank, nope = I->qk_nope, vh = I->v_head_dim;
    int64_t kvd = kvl + I->qk_rope, qk = I->head_dim, w = nope + vh, n_out = nh * w;
    float *tmp = lora_tmp(m, ith);
    for (int i = j->n_items * ith / nth; i < j->n_items * (ith + 1) / nth; i++) {
        const lora_item *it = &j->items[i];
        const lora_pair *p = it->p;
        int64_t r = p->r;
        size_t es = type_size(p->type);
        float *u = tmp, *arow = u + LORA_ITEM_ROWS * r, *brow = arow + kvl; /* brow: one head's slice */
        for (int64_t h = 0; h < nh; h++) {
            if (!j->values) {
                /* u[k][jj] = B_k^h[:, jj] . q_nope^h  (rows of bt, this head's key slice) */
                for (int k = 0; k < it->n; k++)
                    for (int64_t jj = 0; jj < r; jj++)
                        u[k * r + jj] = 0;
                for (int64_t jj = 0; jj < r; jj++) {
                    tensor_dequant_row(m->kt, p->type, brow,
                                       (const char *)p->bt + ((size_t)jj * (size_t)n_out + (size_t)(h * w)) * es, nope);
                    for (int k = 0; k < it->n; k++) {
                        const float *q = m->s.q + ((size_t)it->x_row[k] * (size_t)nh + (size_t)h) * (size_t)qk;
                        double d = 0;
                        for (int64_t x = 0; x < nope; x++)
                            d += (double)brow[x] * q[x];
                        u[k * r + jj] = (float)d;
                    }
                }
                for (int64_t jj = 0; jj < r; jj++) {
                    tensor_dequant_row(m->kt, p->type, arow, (const char *)p->a + (size_t)jj * (size_t)kvl * es, kvl);
                    for (int k = 0; k < it->n; k++)
                        axpy(m->s.qfull + ((size_t)it->y_row[k] * (size_t)nh + (size_t)h) * (size_t)kvd,
                             p->scale * u[k * r + jj], arow, kvl);
                }
            } else {
                /* u[k][jj] = A_jj . o_lat^h, then out^h += s * sum_jj u B_v^h[:, jj] */
                for (int64_t jj = 0; jj < r; jj++) {
                    tensor_dequant_row(m->kt, p->type, arow, (const char *)p->a + (size_t)jj * (size_t)kvl * es, kvl);
                    for (int k = 0; k < it->n; k++) {
                        const float *o = m->s.olat + ((size_t)it->x_row[k] * (size_t)nh + (size_t)h) * (size_t)kvl;
                        double d = 0;
                        for (int64_t x = 0; x < kvl; x++)
                            d += (double)arow[x] * o[x];
                        u[k * r + jj] = (float)d;
                    }
                }
                for (int64_t jj = 0; jj < r; jj++) {
                    tensor_dequant_row(m->kt, p->type, brow,
                                       (const char *)p->bt +
                                           ((size_t)jj * (size_t)n_out + (size_t)(h * w + nope)) * es,
                                       vh);
                    for (int k = 0; k < it->n; k++)
                        axpy(m->s.att + ((size_t)it->y_row[k] * (size_t)nh + (size_t)h) * (size_t)vh,
                             p->scale * u[k * r + jj], brow, vh);
                }
            }
        }
    }
}

void lora_apply_kv_b(model *m, const model_batch *b, int b0, int n, int64_t il, bool values)
{
    if (!b->lora)
        return;
    const model_info *I = &m->info;
    grouper g;
    if (!group_tokens(m, b, b0, n, il, LORA_ATTN_KV_B, &g) || g.n_items == 0)
        return;
    int64_t wmax = I->qk_nope > I->v_head_dim ? I->qk_nope : I->v_head_dim;
    if (!lora_reserve(m, 0, g.max_r, I->kv_lora_rank + wmax)) {
        m->lora_oom = true;
        return;
    }
    kvb_job j = {m, g.items, g.n_items, values};
    pool_run(m->pool, kvb_worker, &j);
}

/* ---- merge at load ------------------------------------------------------------------ */

/* Private copy of matrix e of w (all of a stack when e < 0); returns the
 * new base pointer of matrix e (or of the stack). */
static void *own_copy(model *m, const wmat *w, int64_t e)
{
    size_t bytes = e < 0 ? w->mat_bytes * (size_t)w->n_mat : w->mat_bytes;
    void *p = model_own_alloc(m, bytes);
    if (!p)
        return NULL;
    if (e < 0 && !w->split)
        memcpy(p, w->data, bytes);
    else if (e < 0)
        for (int64_t i = 0; i < w->n_mat; i++)
            memcpy((char *)p + (size_t)i * w->mat_bytes, w->split[i], w->mat_bytes);
    else
        memcpy(p, wmat_data(w, e), bytes);
    return p;
}

/* row (f32, n_in) += scale * sum_j bt[j][o] * A_j, for output row o of a pair */
static void delta_row(const tensor_kernels *kt, const lora_pair *p, int64_t o, int64_t n_out, int64_t n_in,
                      float *row, float *tmp)
{
    size_t es = type_size(p->type);
    for (int64_t j = 0; j < p->r; j++) {
        tensor_dequant_row(kt, p->type, tmp, (const char *)p->bt + ((size_t)j * (size_t)n_out + (size_t)o) * es, 1);
        float c = p->scale * tmp[0];
        if (c != 0)
            tensor_axpy(kt, p->type, row, c, (const char *)p->a + (size_t)j * (size_t)n_in * es, n_in);
    }
}

/* Matrix data (n_out rows of w's type at base) += the pair's delta. */
static int merge_matrix(model *m, const wmat *w, void *base, const lora_pair *p, int64_t n_out, int64_t n_in,
                        float *row, float *tmp)
{
    for (int64_t o = 0; o < n_out; o++) {
        char *dst = (char *)base + (size_t)o * w->row_bytes;
        tensor_dequant_row(m->kt, w->type, row, dst, n_in);
        delta_row(m->kt, p, o, n_out, n_in, row, tmp);
        if (tensor_quantize_row(w->type, dst, row, n_in))
            return MG_EUNSUPPORTED;
    }
    return MG_OK;
}

int model_merge_lora(model *m, const model_lora *l, char *err, size_t errlen)
{
    int rc = model_lora_check(m, l, err, errlen);
    if (rc)
        return rc;
    const model_info *I = &m->info;
    int64_t wmax = I->dim;
    wmax = I->expert_ff > wmax ? I->expert_ff : wmax;
    wmax = I->dense_ff > wmax ? I->dense_ff : wmax;
    wmax = I->shared_ff > wmax ? I->shared_ff : wmax;
    wmax = I->n_head * I->head_dim > wmax ? I->n_head * I->head_dim : wmax;
    wmax = I->kv_lora_rank + 64 > wmax ? I->kv_lora_rank + 64 : wmax;
    wmax = I->q_lora_rank > wmax ? I->q_lora_rank : wmax;
    wmax = I->n_head * I->v_head_dim > wmax ? I->n_head * I->v_head_dim : wmax;
    float *row = malloc(sizeof(float) * (size_t)(wmax + 16)), tmp[16];
    if (!row) {
        mg_err_set(err, errlen, "lora merge: out of memory");
        return MG_ENOMEM;
    }
    for (int64_t il = 0; il < I->n_layer && !rc; il++) {
        layer *L = &m->layers[il];
        for (int t = 0; t < LORA_N_TARGET && !rc; t++) {
            const lora_pair *p = l->layer[il].t[t];
            if (!p)
                continue;
            int64_t n_out, n_in, ne;
            model_lora_shape(m, il, (enum lora_target)t, &n_out, &n_in, &ne);
            if (t == LORA_ATTN_KV_B) {
                if (p->r == 0)
                    continue;
                /* fused rows h*(nope+vh) + i: keys then values of head h */
                int64_t nope = I->qk_nope, vh = I->v_head_dim, kvl = I->kv_lora_rank;
                if (!I->kv_b_split) {
                    const void *old = L->wkv_b.data;
                    void *nb = own_copy(m, &L->wkv_b, -1);
                    if (!nb) {
                        rc = MG_ENOMEM;
                        break;
                    }
                    rc = merge_matrix(m, &L->wkv_b, nb, p, n_out, n_in, row, tmp);
                    L->wkv_b.data = nb;
                    L->wv_b.data = (const char *)nb + ((const char *)L->wv_b.data - (const char *)old);
                    continue;
                }
                /* split: k_b[h] [kvl][nope] (transposed), v_b[h] [vh][kvl] */
                void *kb = own_copy(m, &L->wk_b, -1), *vb = own_copy(m, &L->wv_b, -1);
                if (!kb || !vb) {
                    rc = MG_ENOMEM;
                    break;
                }
                float *col = malloc(sizeof(float) * (size_t)(nope * kvl));
                if (!col) {
                    rc = MG_ENOMEM;
                    break;
                }
                for (int64_t h = 0; h < I->n_head && !rc; h++) {
                    /* key part: delta[i][c] for i < nope, written into k_b[h][c][i] */
                    memset(col, 0, sizeof(float) * (size_t)(nope * kvl));
                    for (int64_t i = 0; i < nope; i++)
                        delta_row(m->kt, p, h * (nope + vh) + i, n_out, kvl, col + i * kvl, tmp);
                    char *kh = (char *)kb + (size_t)h * L->wk_b.mat_bytes;
                    for (int64_t c = 0; c < kvl && !rc; c++) {
                        char *dst = kh + (size_t)c * L->wk_b.row_bytes;
                        tensor_dequant_row(m->kt, L->wk_b.type, row, dst, nope);
                        for (int64_t i = 0; i < nope; i++)
                            row[i] += col[i * kvl + c];
                        if (tensor_quantize_row(L->wk_b.type, dst, row, nope))
                            rc = MG_EUNSUPPORTED;
                    }
                    char *vhp = (char *)vb + (size_t)h * L->wv_b.mat_bytes;
                    for (int64_t i = 0; i < vh && !rc; i++) {
                        char *dst = vhp + (size_t)i * L->wv_b.row_bytes;
                        tensor_dequant_row(m->kt, L->wv_b.type, row, dst, kvl);
                        delta_row(m->kt, p, h * (nope + vh) + nope + i, n_out, kvl, row, tmp);
                        if (tensor_quantize_row(L->wv_b.type, dst, row, kvl))
                            rc = MG_EUNSUPPORTED;
                    }
                }
                free(col);
                L->wk_b.data = kb;
                L->wk_b.split = NULL;
                L->wv_b.data = vb;
                L->wv_b.split = NULL;
                continue;
            }
            wmat *w = (wmat *)model_lora_base(m, il, (enum lora_target)t);
            void *nb = own_copy(m, w, -1);
            if (!nb) {
                rc = MG_ENOMEM;
                break;
            }
            for (int64_t e = 0; e < ne && !rc; e++)
                if (p[e].r > 0)
                    rc = merge_matrix(m, w, (char *)nb + (size_t)e * w->mat_bytes, &p[e], n_out, n_in, row, tmp);
            w->data = nb;
            w->split = NULL;
        }
    }
    free(row);
    if (rc == MG_ENOMEM)
        mg_err_set(err, errlen, "lora merge: out of memory for the merged copies");
    else if (rc)
        mg_err_set(err, errlen, "lora merge: the base's weight type cannot be re-quantised here (f32, f16, bf16, "
                   "q8_0, q4_0, q4_K, q5_K, q6_K can)");
    return rc;
}
