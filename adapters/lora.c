/* moegate — LoRA adapters: from a file's entries to the engine's model_lora
 * (API in adapters/lora.h).
 *
 * Steps, for lora_load and lora_inspect alike:
 *   1. lora_src_open: a folder is a PEFT adapter, a file starting "GGUF" a
 *      GGUF LoRA; the format loader lists one entry per adapted matrix (or
 *      GGUF expert stack) pointing into the mapped file.
 *   2. src_check: what needs no base model. No (layer, target, expert) given
 *      twice; ranks >= 1; every dimension >= 1; and one hidden size: the
 *      input width of the projections that read the residual stream (q, k,
 *      v, q_a, kv_a, gate, up) and the output width of those that write it
 *      (o, down) must agree. The result is the base shape the adapter was
 *      made for (hidden size, at least n layers, at least n experts).
 *   3. lora_inspect describes it; lora_load first refuses an adapter made
 *      for another base (architecture, hidden size, layer count) with one
 *      sentence saying so, then builds: per entry, model_lora_shape gives the
 *      shape the base needs, each mismatch naming the tensor and both
 *      shapes; A is copied as is, B transposed (rows permuted for llama
 *      q/k when they come in Hugging Face order), each pair's data in one
 *      64-byte aligned block; finally model_lora_check.
 *
 * Ownership: the model_lora is embedded in a lora_obj that also owns every
 * pair array and data block; destroy frees it all (core/lora.h's release
 * calls it with the last reference). Ids come from a process-wide atomic
 * sequence number (the only mutable static here: uniqueness across loads
 * needs shared state, and a counter holds nothing else), mixed with a hash
 * of the path in the low bits.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapters/lora_internal.h"
#include "core/errors.h"
#include "core/tensor.h"

#define MAX_RANK 65536

/* ---- the source --------------------------------------------------------------------- */

lora_entry *lora_src_add(lora_src *s)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 64;
        lora_entry *e = realloc(s->e, sizeof *e * (size_t)cap);
        if (!e)
            return NULL;
        s->e = e;
        s->cap = cap;
    }
    lora_entry *e = &s->e[s->n++];
    memset(e, 0, sizeof *e);
    return e;
}

void lora_src_close(lora_src *s)
{
    if (!s)
        return;
    safetensors_close(s->st);
    gguf_close(s->g);
    free(s->e);
    memset(s, 0, sizeof *s);
}

int lora_src_open(lora_src *s, const char *path, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (!path || !*path) {
        mg_err_set(err, errlen, "lora: no adapter path");
        return MG_EINVAL;
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    struct stat sb;
    if (stat(path, &sb)) {
        mg_err_set(err, errlen, "lora: %s: no such file or folder", path);
        return MG_EIO;
    }
    if (S_ISDIR(sb.st_mode))
        return lora_peft_open(s, path, err, errlen);
    if (!S_ISREG(sb.st_mode)) {
        mg_err_set(err, errlen, "lora: %s: not a file or folder", path);
        return MG_EIO;
    }
    FILE *f = fopen(path, "rb");
    char magic[4] = {0};
    size_t n = f ? fread(magic, 1, 4, f) : 0;
    if (f)
        fclose(f);
    if (n == 4 && !memcmp(magic, "GGUF", 4))
        return lora_gguf_open(s, path, err, errlen);
    size_t pl = strlen(path);
    if (pl > 12 && !strcmp(path + pl - 12, ".safetensors"))
        mg_err_set(err, errlen, "lora: %s: a PEFT adapter is read from its folder (adapter_config.json "
                   "next to adapter_model.safetensors): pass the folder", path);
    else
        mg_err_set(err, errlen, "lora: %s: neither a PEFT adapter folder nor a GGUF file", path);
    return MG_EFORMAT;
}

/* ---- checks without a base ------------------------------------------------------------ */

typedef struct src_shape {
    int64_t hidden;       /* -1 when no target reads or writes the residual stream */
    int64_t n_layer_min;  /* highest layer + 1 */
    int64_t n_expert_min; /* highest expert + 1 (GGUF: the largest stack) */
} src_shape;

/* 1: the target reads the hidden state (its n_in is the hidden size); 2:
 * it writes it (n_out); 0: neither (q_b, kv_b). */
static int hidden_side(enum lora_target t)
{
    switch (t) {
    case LORA_ATTN_Q: case LORA_ATTN_K: case LORA_ATTN_V: case LORA_ATTN_Q_A: case LORA_ATTN_KV_A:
    case LORA_FFN_GATE: case LORA_FFN_UP: case LORA_SHEXP_GATE: case LORA_SHEXP_UP: case LORA_EXP_GATE:
    case LORA_EXP_UP: return 1;
    case LORA_ATTN_O: case LORA_FFN_DOWN: case LORA_SHEXP_DOWN: case LORA_EXP_DOWN: return 2;
    default: return 0;
    }
}

/* A sort key per entry: duplicates end up next to each other. */
typedef struct entry_key {
    int64_t layer, expert, i;
    int target;
} entry_key;

static int cmp_key(const void *x, const void *y)
{
    const entry_key *a = x, *b = y;
    if (a->layer != b->layer)
        return a->layer < b->layer ? -1 : 1;
    if (a->target != b->target)
        return a->target < b->target ? -1 : 1;
    if (a->expert != b->expert)
        return a->expert < b->expert ? -1 : 1;
    return 0;
}

/* The matrix's name as the message shows it: "blk.3.ffn_up_exps expert 5". */
static const char *entry_label(const lora_entry *e, char *buf, size_t cap)
{
    if (e->expert >= 0)
        snprintf(buf, cap, "blk.%lld.%s expert %lld", (long long)e->layer, lora_target_name(e->target),
                 (long long)e->expert);
    else
        snprintf(buf, cap, "blk.%lld.%s", (long long)e->layer, lora_target_name(e->target));
    return buf;
}

static int src_check(const lora_src *s, src_shape *sh, char *err, size_t errlen)
{
    sh->hidden = -1;
    sh->n_layer_min = 0;
    sh->n_expert_min = 0;
    const lora_entry *hid_from = NULL;
    for (int64_t i = 0; i < s->n; i++) {
        const lora_entry *e = &s->e[i];
        if (e->r < 1 || e->r > MAX_RANK || e->a.ne[0] < 1 || e->b.ne[1] < 1 || e->a.ne[2] < 1) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s': rank %d or a dimension out of range", s->path,
                       e->a.name, (int)e->r);
            return MG_EFORMAT;
        }
        if (e->layer + 1 > sh->n_layer_min)
            sh->n_layer_min = e->layer + 1;
        int64_t ne = e->expert >= 0 ? e->expert + 1 : e->target >= LORA_EXP_GATE ? e->a.ne[2] : 0;
        if (ne > sh->n_expert_min)
            sh->n_expert_min = ne;
        int side = hidden_side(e->target);
        if (!side)
            continue;
        int64_t h = side == 1 ? e->a.ne[0] : e->b.ne[1];
        if (sh->hidden < 0) {
            sh->hidden = h;
            hid_from = e;
        } else if (h != sh->hidden) {
            mg_err_set(err, errlen, "lora: %s: inconsistent hidden size: tensor '%.200s' implies %lld, tensor "
                       "'%.200s' %lld", s->path, side == 1 ? e->a.name : e->b.name, (long long)h,
                       hidden_side(hid_from->target) == 1 ? hid_from->a.name : hid_from->b.name,
                       (long long)sh->hidden);
            return MG_EFORMAT;
        }
    }
    /* duplicates: sort keys by (layer, target, expert) */
    entry_key *ix = malloc(sizeof *ix * (size_t)(s->n ? s->n : 1));
    if (!ix)
        return MG_ENOMEM;
    for (int64_t i = 0; i < s->n; i++)
        ix[i] = (entry_key){s->e[i].layer, s->e[i].expert, i, s->e[i].target};
    qsort(ix, (size_t)s->n, sizeof *ix, cmp_key);
    int rc = MG_OK;
    for (int64_t i = 1; i < s->n; i++) {
        if (!cmp_key(&ix[i - 1], &ix[i])) {
            const lora_entry *a = &s->e[ix[i - 1].i], *b = &s->e[ix[i].i];
            char lb[96];
            mg_err_set(err, errlen, "lora: %s: %s is adapted twice: tensors '%.200s' and '%.200s'", s->path,
                       entry_label(a, lb, sizeof lb), a->a.name, b->a.name);
            rc = MG_EFORMAT;
            break;
        }
    }
    free(ix);
    return rc;
}

static uint32_t entry_type(const lora_entry *e)
{
    return e->a.type == e->b.type ? e->a.type : TENSOR_F32;
}

static size_t entry_bytes(const lora_entry *e)
{
    return safetensors_type_size(entry_type(e)) * (size_t)e->r * (size_t)(e->a.ne[0] + e->b.ne[1]) *
           (size_t)e->a.ne[2];
}

/* ---- inspect ---------------------------------------------------------------------------- */

const char *lora_format_name(enum lora_format f)
{
    return f == LORA_FORMAT_PEFT ? "PEFT" : f == LORA_FORMAT_GGUF ? "GGUF" : "?";
}

static void fill_info(const lora_src *s, const src_shape *sh, lora_info *in)
{
    memset(in, 0, sizeof *in);
    in->format = s->format;
    snprintf(in->arch, sizeof in->arch, "%s", s->arch);
    snprintf(in->base, sizeof in->base, "%s", s->base);
    in->alpha = s->alpha;
    in->alpha_varies = s->alpha_varies;
    in->rslora = s->rslora;
    in->fan_in_fan_out = s->fan_in_fan_out;
    in->hidden = sh->hidden;
    in->n_layer_min = sh->n_layer_min;
    in->n_layer = s->n_layer;
    in->n_expert_min = sh->n_expert_min;
    in->n_tensors = 2 * s->n;
    size_t by_type[3] = {0};
    for (int t = 0; t < LORA_N_TARGET; t++) {
        in->target[t].first = -1;
        in->target[t].n_experts_min = -1;
    }
    /* per (layer, target): experts adapted, counted along the sorted-free
     * walk with a small table indexed by layer */
    int64_t L = sh->n_layer_min;
    int64_t *count = calloc((size_t)(L ? L : 1) * LORA_N_TARGET, sizeof *count);
    for (int64_t i = 0; i < s->n; i++) {
        const lora_entry *e = &s->e[i];
        lora_target_info *ti = &in->target[e->target];
        int64_t k = e->expert >= 0 ? 1 : e->a.ne[2];
        if (count)
            count[e->layer * LORA_N_TARGET + e->target] += k;
        if (in->r_min == 0 || e->r < in->r_min)
            in->r_min = e->r;
        if (e->r > in->r_max)
            in->r_max = e->r;
        if (ti->r_min == 0 || e->r < ti->r_min)
            ti->r_min = e->r;
        if (e->r > ti->r_max)
            ti->r_max = e->r;
        if (in->n_pairs == 0 || e->scale < in->scale_min)
            in->scale_min = e->scale;
        if (in->n_pairs == 0 || e->scale > in->scale_max)
            in->scale_max = e->scale;
        in->n_pairs += k;
        size_t b = entry_bytes(e);
        in->bytes += b;
        uint32_t ty = entry_type(e);
        by_type[ty == TENSOR_F32 ? 0 : ty == TENSOR_F16 ? 1 : 2] += b;
    }
    in->type = by_type[0] >= by_type[1] && by_type[0] >= by_type[2] ? TENSOR_F32
               : by_type[1] >= by_type[2]                            ? TENSOR_F16
                                                                     : TENSOR_BF16;
    for (int64_t il = 0; count && il < L; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            int64_t c = count[il * LORA_N_TARGET + t];
            if (!c)
                continue;
            lora_target_info *ti = &in->target[t];
            if (ti->first < 0)
                ti->first = il;
            ti->last = il;
            ti->n_layers++;
            if (t >= LORA_EXP_GATE) {
                if (ti->n_experts_min < 0 || c < ti->n_experts_min)
                    ti->n_experts_min = c;
                if (c > ti->n_experts_max)
                    ti->n_experts_max = c;
            }
        }
    for (int t = 0; t < LORA_N_TARGET; t++)
        if (in->target[t].n_experts_min < 0)
            in->target[t].n_experts_min = 0;
    free(count);
}

int lora_inspect(lora_info *out, const char *path, char *err, size_t errlen)
{
    if (!out) {
        mg_err_set(err, errlen, "lora: no info to fill");
        return MG_EINVAL;
    }
    lora_src s;
    int rc = lora_src_open(&s, path, err, errlen);
    src_shape sh;
    if (rc == MG_OK)
        rc = src_check(&s, &sh, err, errlen);
    if (rc == MG_OK)
        fill_info(&s, &sh, out);
    lora_src_close(&s);
    return rc;
}

/* ---- the loaded adapter ------------------------------------------------------------------ */

typedef struct lora_obj {
    model_lora l;     /* first: a model_lora * is a lora_obj * */
    size_t bytes;     /* A and B^T data */
    void **blocks;    /* every data block, for destroy */
    int64_t n_blocks, cap_blocks;
} lora_obj;

static void lora_destroy(model_lora *l)
{
    lora_obj *o = (lora_obj *)l;
    for (int64_t i = 0; i < o->n_blocks; i++)
        free(o->blocks[i]);
    free(o->blocks);
    if (l->layer)
        for (int64_t il = 0; il < l->n_layer; il++)
            for (int t = 0; t < LORA_N_TARGET; t++)
                free(l->layer[il].t[t]);
    free(l->layer);
    free(o);
}

size_t lora_bytes(const model_lora *l)
{
    return l && l->destroy == lora_destroy ? ((const lora_obj *)l)->bytes : 0;
}

static uint64_t next_id(const char *path)
{
    static atomic_uint_least64_t seq = 1;
    uint64_t n = atomic_fetch_add_explicit(&seq, 1, memory_order_relaxed);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 16777619u;
    return n << 32 | h;
}

static void *block_alloc(lora_obj *o, size_t bytes)
{
    if (o->n_blocks == o->cap_blocks) {
        int64_t cap = o->cap_blocks ? o->cap_blocks * 2 : 64;
        void **b = realloc(o->blocks, sizeof *b * (size_t)cap);
        if (!b)
            return NULL;
        o->blocks = b;
        o->cap_blocks = cap;
    }
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (p)
        o->blocks[o->n_blocks++] = p;
    return p;
}

static float load_elem(const unsigned char *p, uint32_t type)
{
    if (type == TENSOR_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return type == TENSOR_F16 ? tensor_f16_to_f32(h) : tensor_bf16_to_f32(h);
}

/* dst[i] (type dt) = src element i (type st), for i < n; dt == st or dt F32. */
static void convert(void *dst, uint32_t dt, const unsigned char *src, uint32_t st, int64_t n)
{
    if (dt == st) {
        memcpy(dst, src, (size_t)n * safetensors_type_size(st));
        return;
    }
    float *d = dst;
    size_t es = safetensors_type_size(st);
    for (int64_t i = 0; i < n; i++)
        d[i] = load_elem(src + (size_t)i * es, st);
}

/* Base shape in the file's convention, for messages. */
static const char *shape_str(const lora_src *s, int64_t rows, int64_t cols, char *buf, size_t cap)
{
    if (s->format == LORA_FORMAT_PEFT)
        snprintf(buf, cap, "[%lld, %lld]", (long long)rows, (long long)cols);
    else
        snprintf(buf, cap, "ne [%lld, %lld]", (long long)cols, (long long)rows);
    return buf;
}

/* Copies one entry (every matrix of a GGUF stack) into o's pairs. */
static int build_entry(lora_obj *o, const lora_src *s, const model *m, const lora_entry *e, float user_scale,
                       char *err, size_t errlen)
{
    const model_info *I = model_get_info(m);
    char lb[96], s1[64], s2[64];
    int64_t n_out, n_in, n_exp;
    if (model_lora_shape(m, e->layer, e->target, &n_out, &n_in, &n_exp)) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s': the base model (%s) has no %s.weight to adapt", s->path,
                   e->a.name, I->arch_name, entry_label(e, lb, sizeof lb));
        return MG_EFORMAT;
    }
    bool is_exp = e->target >= LORA_EXP_GATE;
    if (e->expert >= n_exp && e->expert >= 0) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s': expert %lld, the base model has %lld experts", s->path,
                   e->a.name, (long long)e->expert, (long long)n_exp);
        return MG_EFORMAT;
    }
    if (is_exp && e->expert < 0 && e->a.ne[2] != n_exp) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s' stacks %lld experts, the base model's %s has %lld",
                   s->path, e->a.name, (long long)e->a.ne[2], entry_label(e, lb, sizeof lb), (long long)n_exp);
        return MG_EFORMAT;
    }
    if (e->a.ne[0] != n_in) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s' is %s, the base's %s.weight [%lld x %lld] needs %s",
                   s->path, e->a.name, shape_str(s, e->a.ne[1], e->a.ne[0], s1, sizeof s1),
                   entry_label(e, lb, sizeof lb), (long long)n_out, (long long)n_in,
                   shape_str(s, e->r, n_in, s2, sizeof s2));
        return MG_EFORMAT;
    }
    if (e->b.ne[1] != n_out) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s' is %s, the base's %s.weight [%lld x %lld] needs %s",
                   s->path, e->b.name, shape_str(s, e->b.ne[1], e->b.ne[0], s1, sizeof s1),
                   entry_label(e, lb, sizeof lb), (long long)n_out, (long long)n_in,
                   shape_str(s, n_out, e->r, s2, sizeof s2));
        return MG_EFORMAT;
    }
    /* llama q/k: PEFT's B rows are in Hugging Face order; GGUF row 2i+j of
     * a head is HF row j*hd/2 + i (the converter's permutation) */
    int64_t heads = 0, hd = 0;
    if (I->arch == MODEL_ARCH_MIXTRAL && e->hf_rows && (e->target == LORA_ATTN_Q || e->target == LORA_ATTN_K)) {
        heads = e->target == LORA_ATTN_Q ? I->n_head : I->n_head_kv;
        hd = heads > 0 ? n_out / heads : 0;
        if (heads <= 0 || hd * heads != n_out || hd % 2) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s': %lld rows do not split into %lld heads of even size",
                       s->path, e->b.name, (long long)n_out, (long long)heads);
            return MG_EFORMAT;
        }
    }
    double sc = e->scale * (double)user_scale;
    if (!isfinite(sc) || fabs(sc) > 3.0e38) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s': scale %g is not finite", s->path, e->a.name, sc);
        return MG_ERANGE;
    }
    lora_layer *ly = &o->l.layer[e->layer];
    if (!ly->t[e->target]) {
        ly->t[e->target] = calloc((size_t)n_exp, sizeof(lora_pair));
        if (!ly->t[e->target])
            return MG_ENOMEM;
    }
    uint32_t ty = entry_type(e);
    size_t es = safetensors_type_size(ty), sa = safetensors_type_size(e->a.type), sb = safetensors_type_size(e->b.type);
    int64_t r = e->r;
    size_t a_bytes = (size_t)r * (size_t)n_in * es, bt_bytes = (size_t)r * (size_t)n_out * es;
    size_t a_round = (a_bytes + 63) / 64 * 64;
    int64_t n_mat = e->expert >= 0 ? 1 : e->a.ne[2];
    for (int64_t k = 0; k < n_mat; k++) {
        int64_t pi = e->expert >= 0 ? e->expert : k;
        lora_pair *p = &ly->t[e->target][pi];
        if (p->r) {
            mg_err_set(err, errlen, "lora: %s: %s is adapted twice", s->path, entry_label(e, lb, sizeof lb));
            return MG_EFORMAT;
        }
        unsigned char *blk = block_alloc(o, a_round + bt_bytes);
        if (!blk)
            return MG_ENOMEM;
        const unsigned char *asrc = (const unsigned char *)e->a.data + (size_t)k * (size_t)r * (size_t)n_in * sa;
        const unsigned char *bsrc = (const unsigned char *)e->b.data + (size_t)k * (size_t)n_out * (size_t)r * sb;
        convert(blk, ty, asrc, e->a.type, r * n_in);
        unsigned char *bt = blk + a_round;
        for (int64_t row = 0; row < n_out; row++) {
            int64_t src_row = row;
            if (heads) {
                int64_t h = row / hd, within = row % hd;
                src_row = h * hd + (within % 2) * (hd / 2) + within / 2;
            }
            const unsigned char *brow = bsrc + (size_t)src_row * (size_t)r * sb;
            for (int64_t j = 0; j < r; j++) {
                unsigned char *d = bt + ((size_t)j * (size_t)n_out + (size_t)row) * es;
                if (ty == e->b.type)
                    memcpy(d, brow + (size_t)j * sb, sb);
                else {
                    float f = load_elem(brow + (size_t)j * sb, e->b.type);
                    memcpy(d, &f, 4);
                }
            }
        }
        p->r = (int32_t)r;
        p->type = ty;
        p->scale = (float)sc;
        p->a = blk;
        p->bt = bt;
        o->bytes += a_bytes + bt_bytes;
    }
    return MG_OK;
}

/* An adapter made for another base is refused as a whole before any
 * tensor-by-tensor message. */
static int check_base(const lora_src *s, const src_shape *sh, const model *m, char *err, size_t errlen)
{
    const model_info *I = model_get_info(m);
    if (s->format == LORA_FORMAT_GGUF && strcmp(s->arch, I->arch_name)) {
        mg_err_set(err, errlen, "lora: %s: adapter for architecture '%s', the base model is '%s'", s->path, s->arch,
                   I->arch_name);
        return MG_EFORMAT;
    }
    if (sh->hidden > 0 && sh->hidden != I->dim) {
        mg_err_set(err, errlen, "lora: %s: adapter made for hidden size %lld, the base model (%s%s%s) has %lld: "
                   "it belongs to another base model", s->path, (long long)sh->hidden, I->arch_name,
                   I->name[0] ? " " : "", I->name, (long long)I->dim);
        return MG_EFORMAT;
    }
    if (s->n_layer > 0 && s->n_layer != I->n_layer) {
        mg_err_set(err, errlen, "lora: %s: adapter made for %lld layers, the base model has %lld", s->path,
                   (long long)s->n_layer, (long long)I->n_layer);
        return MG_EFORMAT;
    }
    if (sh->n_layer_min > I->n_layer) {
        for (int64_t i = 0; i < s->n; i++)
            if (s->e[i].layer >= I->n_layer) {
                mg_err_set(err, errlen, "lora: %s: tensor '%.200s' adapts layer %lld, the base model has %lld layers "
                           "(0..%lld)", s->path, s->e[i].a.name, (long long)s->e[i].layer, (long long)I->n_layer,
                           (long long)I->n_layer - 1);
                return MG_EFORMAT;
            }
    }
    return MG_OK;
}

int lora_load(model_lora **out, const model *m, const char *path, float user_scale, char *err, size_t errlen)
{
    if (!out || !m || !path) {
        mg_err_set(err, errlen, "lora: lora_load: NULL argument");
        return MG_EINVAL;
    }
    if (!isfinite(user_scale)) {
        mg_err_set(err, errlen, "lora: %s: scale %g is not a finite number", path, (double)user_scale);
        return MG_EINVAL;
    }
    const model_info *I = model_get_info(m);
    lora_obj *o = NULL;
    src_shape sh;
    lora_src s;
    int rc = lora_src_open(&s, path, err, errlen);
    if (rc)
        goto fail;
    if ((rc = src_check(&s, &sh, err, errlen)) || (rc = check_base(&s, &sh, m, err, errlen)))
        goto fail;
    rc = MG_ENOMEM;
    o = calloc(1, sizeof *o);
    if (!o)
        goto fail;
    o->l.n_layer = I->n_layer;
    o->l.layer = calloc((size_t)I->n_layer, sizeof *o->l.layer);
    o->l.destroy = lora_destroy;
    o->l.owner = o;
    atomic_init(&o->l.refs, 1);
    if (!o->l.layer)
        goto fail;
    for (int64_t i = 0; i < s.n; i++)
        if ((rc = build_entry(o, &s, m, &s.e[i], user_scale, err, errlen)))
            goto fail;
    char e2[400];
    if ((rc = model_lora_check(m, &o->l, e2, sizeof e2))) {
        mg_err_set(err, errlen, "lora: %s: %s", path, e2);
        goto fail;
    }
    o->l.id = next_id(path);
    lora_src_close(&s);
    *out = &o->l;
    return MG_OK;
fail:
    if (rc == MG_ENOMEM)
        mg_err_set(err, errlen, "lora: %s: out of memory", path);
    if (o)
        lora_destroy(&o->l);
    lora_src_close(&s);
    return rc;
}
