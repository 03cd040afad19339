/* moegate — the matrix-product driver: splits tensor_gemm over the pool.
 *
 * Work split: output rows are cut into chunks of ROW_ALIGN rows; each thread
 * takes a contiguous range of chunks, so each weight row is read by exactly
 * one thread (generation is bandwidth-bound: no row is streamed twice). For
 * batches, each thread walks its rows in blocks small enough to stay in L2
 * and, inside a block, tokens in tiles of TOK_TILE, so a weight block is
 * reused across a tile of tokens from cache.
 *
 * Activations are prepared (quantised for integer kernels) once per product
 * into mm->act, in parallel over tokens, before the row pass.
 *
 * Expert products (mm_run_experts) flatten (expert, row-chunk) into one task
 * list weighted by the number of tokens routed to that expert, and give each
 * thread a contiguous, equally weighted range: one pool pass for all experts
 * of a layer, instead of one per expert.
 *
 * Results do not depend on the number of threads: every output element is
 * computed by one kernel call whose summation order is fixed.
 */
#include <cblas.h>
#include <string.h>

#include "engine_internal.h"

#define ROW_ALIGN 16
#define TOK_TILE 64
#define L2_BLOCK_BYTES (512 * 1024)

void mm_blas_threads(int n)
{
    openblas_set_num_threads(n);
}

/* ---- parallel for ------------------------------------------------------ */

typedef struct pfor_job {
    int64_t n;
    pfor_fn fn;
    void *ctx;
} pfor_job;

static void pfor_worker(void *arg, int ith, int nth)
{
    pfor_job *j = arg;
    int64_t i0 = j->n * ith / nth, i1 = j->n * (ith + 1) / nth;
    if (i1 > i0)
        j->fn(j->ctx, i0, i1);
}

void mm_pfor(mm_ctx *mm, int64_t n, pfor_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (n == 1 || pool_size(mm->pool) == 1) {
        fn(ctx, 0, n);
        return;
    }
    pfor_job j = {n, fn, ctx};
    pool_run(mm->pool, pfor_worker, &j);
}

/* ---- activation preparation --------------------------------------------- */

typedef struct prep_job {
    const tensor_kernels *kt;
    uint32_t type;
    unsigned char *dst;
    size_t dst_stride;
    const float *x;
    int64_t ldx, k;
} prep_job;

static void prep_rows(void *arg, int64_t t0, int64_t t1)
{
    prep_job *j = arg;
    for (int64_t t = t0; t < t1; t++)
        tensor_act_prepare(j->kt, j->type, j->dst + (size_t)t * j->dst_stride, j->x + t * j->ldx,
                           j->k);
}

static void prepare(mm_ctx *mm, unsigned char *dst, size_t stride, uint32_t type, const float *x,
                    int64_t ldx, int64_t k, int64_t nt)
{
    prep_job j = {mm->kt, type, dst, stride, x, ldx, k};
    mm_pfor(mm, nt, prep_rows, &j);
}

/* ---- row-split products ------------------------------------------------- */

/* One product of a row pass: rows [r0, r1) of matrix w (expert e) against
 * nt prepared rows. */
static void gemm_rows(const tensor_kernels *kt, float *y, int64_t ldy, const wmat *w,
                      const void *wdata, int64_t r0, int64_t r1, const unsigned char *xa,
                      size_t xa_stride, int64_t nt)
{
    int64_t rows_per_block = (int64_t)(L2_BLOCK_BYTES / (w->row_bytes ? w->row_bytes : 1));
    if (rows_per_block < ROW_ALIGN)
        rows_per_block = ROW_ALIGN;
    if (nt == 1)
        rows_per_block = r1 - r0; /* one streaming pass */
    for (int64_t rb = r0; rb < r1; rb += rows_per_block) {
        int64_t re = rb + rows_per_block < r1 ? rb + rows_per_block : r1;
        for (int64_t t0 = 0; t0 < nt; t0 += TOK_TILE) {
            int64_t tn = nt - t0 < TOK_TILE ? nt - t0 : TOK_TILE;
            tensor_gemm(kt, w->type, y + t0 * ldy + rb, ldy,
                        (const char *)wdata + (size_t)rb * w->row_bytes, w->row_bytes, re - rb,
                        xa + (size_t)t0 * xa_stride, xa_stride, tn, w->n_in);
        }
    }
}

typedef struct multi_job {
    mm_ctx *mm;
    int n_w;
    float *const *y;
    const int64_t *ldy;
    const wmat *const *w;
    const unsigned char *const *xa; /* per product */
    const size_t *xa_stride;
    int64_t e;
    int64_t nt;
    int64_t total_chunks;
} multi_job;

static int64_t n_chunks(int64_t rows)
{
    return (rows + ROW_ALIGN - 1) / ROW_ALIGN;
}

/* Threads take contiguous ranges of the concatenated row chunks of all
 * products, so work is balanced even when the matrices differ in size. */
static void multi_worker(void *arg, int ith, int nth)
{
    multi_job *j = arg;
    int64_t c0 = j->total_chunks * ith / nth, c1 = j->total_chunks * (ith + 1) / nth;
    int64_t base = 0;
    for (int i = 0; i < j->n_w && c0 < c1; i++) {
        const wmat *w = j->w[i];
        int64_t nc = n_chunks(w->n_out);
        int64_t lo = c0 > base ? c0 - base : 0, hi = c1 - base < nc ? c1 - base : nc;
        if (lo < hi) {
            int64_t r0 = lo * ROW_ALIGN, r1 = hi * ROW_ALIGN < w->n_out ? hi * ROW_ALIGN : w->n_out;
            gemm_rows(j->mm->kt, j->y[i], j->ldy[i], w, wmat_data(w, j->e), r0, r1, j->xa[i],
                      j->xa_stride[i], j->nt);
        }
        base += nc;
    }
}

static int try_blas(mm_ctx *mm, float *y, int64_t ldy, const wmat *w, int64_t e, const float *x,
                    int64_t ldx, int64_t nt)
{
    if (!mm->use_blas || w->type != TENSOR_F32 || nt < mm->blas_min_nt)
        return 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nt, (int)w->n_out, (int)w->n_in,
                1.0f, x, (int)ldx, (const float *)wmat_data(w, e), (int)w->n_in, 0.0f, y,
                (int)ldy);
    return 1;
}

void mm_run_multi(mm_ctx *mm, int n_w, float *const *y, const int64_t *ldy, const wmat *const *w,
                  const float *x, int64_t ldx, int64_t nt)
{
    enum { MAXW = 4 };
    const unsigned char *xa[MAXW];
    size_t stride[MAXW];
    uint32_t done_type[MAXW];
    int n_done = 0;
    size_t off = 0;
    /* prepare once per distinct weight type */
    for (int i = 0; i < n_w; i++) {
        int found = -1;
        for (int d = 0; d < n_done; d++)
            if (done_type[d] == w[i]->type)
                found = d;
        if (found >= 0) {
            for (int p = 0; p < i; p++)
                if (w[p]->type == w[i]->type) {
                    xa[i] = xa[p];
                    stride[i] = stride[p];
                    break;
                }
            continue;
        }
        stride[i] = tensor_act_row_bytes(w[i]->type, w[i]->n_in);
        xa[i] = mm->act + off;
        prepare(mm, mm->act + off, stride[i], w[i]->type, x, ldx, w[i]->n_in, nt);
        off += stride[i] * (size_t)nt;
        done_type[n_done++] = w[i]->type;
    }
    multi_job j = {mm, n_w, y, ldy, w, xa, stride, 0, nt, 0};
    for (int i = 0; i < n_w; i++)
        j.total_chunks += n_chunks(w[i]->n_out);
    pool_run(mm->pool, multi_worker, &j);
}

void mm_run(mm_ctx *mm, float *y, int64_t ldy, const wmat *w, int64_t e, const float *x,
            int64_t ldx, int64_t nt)
{
    if (try_blas(mm, y, ldy, w, e, x, ldx, nt))
        return;
    size_t stride = tensor_act_row_bytes(w->type, w->n_in);
    prepare(mm, mm->act, stride, w->type, x, ldx, w->n_in, nt);
    const unsigned char *xa = mm->act;
    multi_job j = {mm, 1, &y, &ldy, &w, &xa, &stride, e, nt, n_chunks(w->n_out)};
    pool_run(mm->pool, multi_worker, &j);
}

/* ---- expert products ------------------------------------------------------ */

typedef struct expert_job {
    mm_ctx *mm;
    int n_w;
    float *const *y;
    int64_t ldy;
    const wmat *const *w;
    const unsigned char *xa;
    size_t xa_stride;
    const int32_t *ex;
    const int32_t *slot_off;
    int n_ex;
    int64_t total_cost; /* sum over (w, expert, chunk) of tokens */
} expert_job;

/* Cost of a chunk = tokens routed to its expert (+1 so that the weight read
 * itself counts when tokens are few). Thread ith takes the chunks whose
 * cumulative cost falls in [total*ith/nth, total*(ith+1)/nth). */
static void expert_worker(void *arg, int ith, int nth)
{
    expert_job *j = arg;
    int64_t lo = j->total_cost * ith / nth, hi = j->total_cost * (ith + 1) / nth;
    int64_t acc = 0;
    for (int wi = 0; wi < j->n_w; wi++) {
        const wmat *w = j->w[wi];
        int64_t nc = n_chunks(w->n_out);
        for (int i = 0; i < j->n_ex; i++) {
            int64_t nt = j->slot_off[i + 1] - j->slot_off[i];
            if (nt == 0)
                continue;
            int64_t cost = nt + 1;
            /* chunks of this expert whose start cost is in [lo, hi) */
            int64_t first = acc >= lo ? 0 : (lo - acc + cost - 1) / cost;
            int64_t last = (hi - acc + cost - 1) / cost; /* exclusive */
            if (last > nc)
                last = nc;
            if (first < last) {
                int64_t r0 = first * ROW_ALIGN;
                int64_t r1 = last * ROW_ALIGN < w->n_out ? last * ROW_ALIGN : w->n_out;
                int64_t s0 = j->slot_off[i];
                gemm_rows(j->mm->kt, j->y[wi] + s0 * j->ldy, j->ldy, w, wmat_data(w, j->ex[i]),
                          r0, r1, j->xa + (size_t)s0 * j->xa_stride, j->xa_stride, nt);
            }
            acc += cost * nc;
            if (acc >= hi)
                return;
        }
    }
}

void mm_run_experts(mm_ctx *mm, int n_w, float *const *y, int64_t ldy, const wmat *const *w,
                    const unsigned char *xa, size_t xa_stride, const int32_t *ex,
                    const int32_t *slot_off, int n_ex)
{
    expert_job j = {mm, n_w, y, ldy, w, xa, xa_stride, ex, slot_off, n_ex, 0};
    for (int wi = 0; wi < n_w; wi++)
        for (int i = 0; i < n_ex; i++) {
            int64_t nt = slot_off[i + 1] - slot_off[i];
            if (nt)
                j.total_cost += (nt + 1) * n_chunks(w[wi]->n_out);
        }
    if (j.total_cost)
        pool_run(mm->pool, expert_worker, &j);
}
