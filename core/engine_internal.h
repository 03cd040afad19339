/* moegate — engine internals shared by model.c and matmul.c (not public).
 *
 * wmat describes one weight matrix (or a stack of expert matrices) living in
 * the mapped GGUF file: rows of n_in elements of `type`, n_out rows per
 * matrix. Expert e's matrix starts at wmat_data(w, e).
 */
#ifndef MOEGATE_CORE_ENGINE_INTERNAL_H
#define MOEGATE_CORE_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "tensor.h"

typedef struct wmat {
    const char *name; /* tensor name, for messages */
    uint32_t type;
    int64_t n_in;  /* elements per row (GGUF ne[0]) */
    int64_t n_out; /* rows per matrix (GGUF ne[1]) */
    int64_t n_mat; /* 1, or the number of experts */
    size_t row_bytes;
    size_t mat_bytes;
    const void *data;   /* first matrix; matrix e at data + e*mat_bytes ... */
    const void **split; /* ... unless experts are separate tensors: split[e] */
} wmat;

static inline const void *wmat_data(const wmat *w, int64_t e)
{
    if (w->split)
        return w->split[e];
    return (const char *)w->data + (size_t)e * w->mat_bytes;
}

/* The matrix-product driver: the pool, the kernel table, and a scratch
 * buffer for prepared activations (sized at load; never grown on the hot
 * path). */
typedef struct mm_ctx {
    pool *pool;
    const tensor_kernels *kt;
    unsigned char *act; /* prepared activation rows */
    size_t act_cap;     /* bytes */
    int use_blas;       /* 1: OpenBLAS sgemm for f32 weights with nt >= blas_min_nt */
    int blas_min_nt;
} mm_ctx;

/* y[t*ldy + r] = W_e[r] . x[t*ldx ...]  for r < W->n_out, t < nt.
 * Prepares x into mm->act (nt rows must fit act_cap) then splits rows over
 * the pool. */
void mm_run(mm_ctx *mm, float *y, int64_t ldy, const wmat *w, int64_t e, const float *x,
            int64_t ldx, int64_t nt);

/* Several matrices sharing the same input x (q/k/v, gate/up): prepares x
 * once per distinct weight type, then runs all products in one pool pass. */
void mm_run_multi(mm_ctx *mm, int n_w, float *const *y, const int64_t *ldy, const wmat *const *w,
                  const float *x, int64_t ldx, int64_t nt);

/* Expert products for a batch routed to experts: for each active expert e
 * (list ex[0..n_ex)), rows slot_off[i]..slot_off[i+1] of the prepared input
 * xa (rows xa_stride bytes apart) are multiplied by w's matrix ex[i]; output
 * row s goes to y + s*ldy. */
void mm_run_experts(mm_ctx *mm, int n_w, float *const *y, int64_t ldy, const wmat *const *w,
                    const unsigned char *xa, size_t xa_stride, const int32_t *ex,
                    const int32_t *slot_off, int n_ex);

/* Sets OpenBLAS's own thread count (it runs on the calling thread's turn,
 * while the pool's workers wait). */
void mm_blas_threads(int n);

/* Parallel for: fn(ctx, i0, i1) over [0, n) split evenly across the pool. */
typedef void (*pfor_fn)(void *ctx, int64_t i0, int64_t i1);
void mm_pfor(mm_ctx *mm, int64_t n, pfor_fn fn, void *ctx);

#endif
