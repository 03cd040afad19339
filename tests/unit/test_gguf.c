/* moegate — tests for the GGUF reader (core/gguf.c).
 *
 * The files are built here by a small test-local GGUF writer (struct gw):
 * key/values are encoded by hand into a byte buffer, tensor infos are kept
 * as a list and laid out at build time (auto offsets at the next multiple of
 * the alignment, data filled with a per-tensor byte pattern), and the
 * finished file is an exactly-sized malloc'd buffer, so ASan flags any read
 * past its end. Error tests build a valid file and break one field, then
 * assert both the return code and a piece of the message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/gguf.h"
#include "core/tensor.h"

/* ---- a test-local GGUF writer ------------------------------------------ */

struct wbuf {
    unsigned char *p;
    size_t len, cap;
};

static void wb_put(struct wbuf *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->len + n)
            c *= 2;
        b->p = realloc(b->p, c);
        assert_non_null(b->p);
        b->cap = c;
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void wb_le(struct wbuf *b, uint64_t v, int bytes)
{
    unsigned char t[8];
    for (int i = 0; i < bytes; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    wb_put(b, t, (size_t)bytes);
}

static void wb_u8(struct wbuf *b, uint8_t v)
{
    wb_le(b, v, 1);
}
static void wb_u16(struct wbuf *b, uint16_t v)
{
    wb_le(b, v, 2);
}
static void wb_u32(struct wbuf *b, uint32_t v)
{
    wb_le(b, v, 4);
}
static void wb_u64(struct wbuf *b, uint64_t v)
{
    wb_le(b, v, 8);
}

static void wb_f32(struct wbuf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    wb_u32(b, u);
}

static void wb_f64(struct wbuf *b, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    wb_u64(b, u);
}

static void wb_str(struct wbuf *b, const char *s)
{
    wb_u64(b, strlen(s));
    wb_put(b, s, strlen(s));
}

#define GW_AUTO        UINT64_MAX
#define GW_MAX_TENSORS 16

struct gw_tensor {
    char name[400];
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    uint64_t offset; /* GW_AUTO: the next multiple of the alignment */
    size_t nbytes;   /* from tensor_bytes; 0 when the shape/type is invalid */
};

struct gw {
    uint32_t version;
    size_t align; /* the padding the writer applies (the key is written separately) */
    uint64_t n_kv;
    struct wbuf kv; /* encoded key/values */
    int n_t;
    struct gw_tensor t[GW_MAX_TENSORS];
};

static void gw_init(struct gw *w)
{
    memset(w, 0, sizeof *w);
    w->version = 3;
    w->align = GGUF_DEFAULT_ALIGNMENT;
}

/* Starts a key/value: the value is appended to w->kv by the caller. */
static struct wbuf *gw_key(struct gw *w, const char *key, uint32_t type)
{
    wb_str(&w->kv, key);
    wb_u32(&w->kv, type);
    w->n_kv++;
    return &w->kv;
}

static void gw_kv_u32(struct gw *w, const char *key, uint32_t v)
{
    wb_u32(gw_key(w, key, GGUF_TYPE_UINT32), v);
}
static void gw_kv_str(struct gw *w, const char *key, const char *v)
{
    wb_str(gw_key(w, key, GGUF_TYPE_STRING), v);
}

static struct gw_tensor *gw_tensor(struct gw *w, const char *name, uint32_t type, uint32_t n_dims,
                                   uint64_t ne0, uint64_t ne1, uint64_t ne2, uint64_t ne3)
{
    assert_true(w->n_t < GW_MAX_TENSORS);
    struct gw_tensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0, t->ne[1] = ne1, t->ne[2] = ne2, t->ne[3] = ne3;
    t->type = type;
    t->offset = GW_AUTO;
    int64_t ne[4] = {(int64_t)ne0, (int64_t)ne1, (int64_t)ne2, (int64_t)ne3};
    if (n_dims < 1 || n_dims > 4 || tensor_bytes(type, ne, (int)n_dims, &t->nbytes) != 0)
        t->nbytes = 0;
    return t;
}

static size_t align_up(size_t x, size_t a)
{
    return (x + a - 1) / a * a;
}

/* Byte k of tensor i's data. */
static unsigned char pattern(int i, size_t k)
{
    return (unsigned char)(k * 31 + (size_t)i * 17 + 1);
}

/* The file: header, key/values, tensor infos, padding, data. The file ends
 * at the end of the last tensor's data (no padding when there are no
 * tensors). Returns an exactly-sized malloc'd buffer; frees w's buffers. */
static unsigned char *gw_build(struct gw *w, size_t *len)
{
    struct wbuf b = {0};
    wb_put(&b, "GGUF", 4);
    wb_u32(&b, w->version);
    wb_u64(&b, (uint64_t)w->n_t);
    wb_u64(&b, w->n_kv);
    wb_put(&b, w->kv.p, w->kv.len);
    uint64_t next = 0, end = 0;
    for (int i = 0; i < w->n_t; i++) {
        struct gw_tensor *t = &w->t[i];
        if (t->offset == GW_AUTO) {
            t->offset = align_up(next, w->align);
            next = t->offset + t->nbytes;
        }
        if (t->offset + t->nbytes > end)
            end = t->offset + t->nbytes;
        wb_str(&b, t->name);
        wb_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            wb_u64(&b, d < 4 ? t->ne[d] : 1);
        wb_u32(&b, t->type);
        wb_u64(&b, t->offset);
    }
    size_t total = b.len;
    if (w->n_t > 0) {
        size_t data_off = align_up(b.len, w->align);
        total = data_off + end;
        unsigned char *pad = calloc(1, total - b.len);
        wb_put(&b, pad, total - b.len);
        free(pad);
        for (int i = 0; i < w->n_t; i++)
            for (size_t k = 0; k < w->t[i].nbytes; k++)
                b.p[data_off + w->t[i].offset + k] = pattern(i, k);
    }
    unsigned char *out = malloc(total ? total : 1);
    assert_non_null(out);
    memcpy(out, b.p, total);
    *len = total;
    free(b.p);
    free(w->kv.p);
    w->kv.p = NULL;
    return out;
}

/* ---- helpers ------------------------------------------------------------ */

/* Opens buf[0..len) expecting failure with code and a message containing
 * want. Works on an exactly-sized copy so that ASan sees over-reads. */
static void expect_fail(const unsigned char *buf, size_t len, int code, const char *want)
{
    unsigned char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    gguf *g = NULL;
    char err[512] = "";
    int rc = gguf_open_memory(&g, copy, len, err, sizeof err);
    if (rc != code || !strstr(err, want) || strncmp(err, "gguf: ", 6) != 0)
        print_error("got %s \"%s\", want %s containing \"%s\"\n", mg_err_name(rc), err,
                    mg_err_name(code), want);
    assert_int_equal(rc, code);
    assert_null(g);
    assert_non_null(strstr(err, want));
    free(copy);
}

static gguf *open_ok(const unsigned char *buf, size_t len)
{
    gguf *g = NULL;
    char err[512] = "";
    int rc = gguf_open_memory(&g, buf, len, err, sizeof err);
    if (rc)
        print_error("open failed: %s %s\n", mg_err_name(rc), err);
    assert_int_equal(rc, 0);
    assert_non_null(g);
    return g;
}

static bool str_eq(gguf_str s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static void put_u64_at(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* ---- the rich file: every value type, nested arrays, four tensor types -- */

/* align_key: value of general.alignment, 0 for no key (default 32). */
static unsigned char *rich_file(uint32_t align_key, size_t *len, struct gw *w)
{
    gw_init(w);
    struct wbuf *b;
    gw_kv_str(w, "general.architecture", "qwen3moe");
    if (align_key) {
        gw_kv_u32(w, "general.alignment", align_key);
        w->align = align_key;
    }
    wb_u8(gw_key(w, "t.u8", GGUF_TYPE_UINT8), 200);
    wb_u8(gw_key(w, "t.i8", GGUF_TYPE_INT8), (uint8_t)-100);
    wb_u16(gw_key(w, "t.u16", GGUF_TYPE_UINT16), 60000);
    wb_u16(gw_key(w, "t.i16", GGUF_TYPE_INT16), (uint16_t)-30000);
    gw_kv_u32(w, "t.u32", 4000000000u);
    wb_u32(gw_key(w, "t.i32", GGUF_TYPE_INT32), (uint32_t)-2000000000);
    wb_f32(gw_key(w, "t.f32", GGUF_TYPE_FLOAT32), 1.5f);
    wb_u8(gw_key(w, "t.bool", GGUF_TYPE_BOOL), 1);
    wb_u8(gw_key(w, "t.false", GGUF_TYPE_BOOL), 0);
    gw_kv_str(w, "t.str", "h\xc3\xa9llo");
    gw_kv_str(w, "t.empty", "");
    wb_u64(gw_key(w, "t.u64", GGUF_TYPE_UINT64), UINT64_MAX);
    wb_u64(gw_key(w, "t.i64", GGUF_TYPE_INT64), (uint64_t)INT64_MIN);
    wb_f64(gw_key(w, "t.f64", GGUF_TYPE_FLOAT64), -2.25);
    gw_kv_u32(w, "llama.block_count", 48);

    b = gw_key(w, "a.u8", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_UINT8), wb_u64(b, 3), wb_u8(b, 1), wb_u8(b, 2), wb_u8(b, 3);
    b = gw_key(w, "a.i16", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_INT16), wb_u64(b, 2), wb_u16(b, (uint16_t)-7), wb_u16(b, 9);
    b = gw_key(w, "a.f32", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_FLOAT32), wb_u64(b, 2), wb_f32(b, 0.25f), wb_f32(b, -8.0f);
    b = gw_key(w, "a.i64", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_INT64), wb_u64(b, 1), wb_u64(b, (uint64_t)-5);
    b = gw_key(w, "a.f64", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_FLOAT64), wb_u64(b, 1), wb_f64(b, 3.125);
    b = gw_key(w, "a.bool", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_BOOL), wb_u64(b, 3), wb_u8(b, 1), wb_u8(b, 0), wb_u8(b, 1);
    b = gw_key(w, "a.empty", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_UINT32), wb_u64(b, 0);
    b = gw_key(w, "a.str", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, 3), wb_str(b, "a"), wb_str(b, ""), wb_str(b, "ccc");
    /* [[1, 2], [3], []] of uint32 */
    b = gw_key(w, "a.nested", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_ARRAY), wb_u64(b, 3);
    wb_u32(b, GGUF_TYPE_UINT32), wb_u64(b, 2), wb_u32(b, 1), wb_u32(b, 2);
    wb_u32(b, GGUF_TYPE_UINT32), wb_u64(b, 1), wb_u32(b, 3);
    wb_u32(b, GGUF_TYPE_UINT32), wb_u64(b, 0);
    /* [[["x", "y"]], [["z"], []]]: strings three levels down */
    b = gw_key(w, "a.deep", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_ARRAY), wb_u64(b, 2);
    wb_u32(b, GGUF_TYPE_ARRAY), wb_u64(b, 1);
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, 2), wb_str(b, "x"), wb_str(b, "y");
    wb_u32(b, GGUF_TYPE_ARRAY), wb_u64(b, 2);
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, 1), wb_str(b, "z");
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, 0);

    gw_tensor(w, "token_embd.weight", TENSOR_F32, 2, 8, 3, 0, 0);
    gw_tensor(w, "blk.0.attn_norm.weight", TENSOR_F16, 1, 16, 0, 0, 0);
    gw_tensor(w, "blk.0.attn_q.weight", TENSOR_Q8_0, 2, 64, 2, 0, 0);
    gw_tensor(w, "blk.0.ffn_down_exps.weight", TENSOR_Q4_K, 3, 256, 2, 2, 0);
    return gw_build(w, len);
}

/* Checks every accessor against what rich_file wrote. */
static void check_rich(const gguf *g, const unsigned char *buf, size_t len, const struct gw *w,
                       size_t align)
{
    int64_t i;
    uint64_t u;
    double d;
    bool bo;
    gguf_str s;

    assert_int_equal(gguf_version(g), 3);
    assert_int_equal(gguf_alignment(g), align);
    assert_int_equal(gguf_file_size(g), len);
    assert_int_equal(gguf_data_offset(g) % align, 0);
    assert_int_equal(gguf_key_count(g), w->n_kv);

    /* integer conversions */
    assert_int_equal(gguf_get_int(g, "t.u8", &i), 0), assert_int_equal(i, 200);
    assert_int_equal(gguf_get_int(g, "t.i8", &i), 0), assert_int_equal(i, -100);
    assert_int_equal(gguf_get_int(g, "t.u16", &i), 0), assert_int_equal(i, 60000);
    assert_int_equal(gguf_get_int(g, "t.i16", &i), 0), assert_int_equal(i, -30000);
    assert_int_equal(gguf_get_int(g, "t.u32", &i), 0), assert_int_equal(i, 4000000000);
    assert_int_equal(gguf_get_int(g, "t.i32", &i), 0), assert_int_equal(i, -2000000000);
    assert_int_equal(gguf_get_int(g, "t.i64", &i), 0), assert_true(i == INT64_MIN);
    assert_int_equal(gguf_get_int(g, "t.bool", &i), 0), assert_int_equal(i, 1);
    i = 77;
    assert_int_equal(gguf_get_int(g, "t.u64", &i), MG_EFORMAT); /* > INT64_MAX */
    assert_int_equal(gguf_get_int(g, "t.f32", &i), MG_EFORMAT);
    assert_int_equal(gguf_get_int(g, "t.str", &i), MG_EFORMAT);
    assert_int_equal(gguf_get_int(g, "a.u8", &i), MG_EFORMAT);
    assert_int_equal(gguf_get_int(g, "no.such.key", &i), MG_ENOTFOUND);
    assert_int_equal(i, 77); /* untouched on failure */
    assert_int_equal(gguf_get_uint(g, "t.u64", &u), 0), assert_true(u == UINT64_MAX);
    assert_int_equal(gguf_get_uint(g, "t.u32", &u), 0), assert_int_equal(u, 4000000000u);
    assert_int_equal(gguf_get_uint(g, "llama.block_count", &u), 0), assert_int_equal(u, 48);
    assert_int_equal(gguf_get_uint(g, "t.i8", &u), MG_EFORMAT); /* negative */
    assert_int_equal(gguf_get_uint(g, "t.i64", &u), MG_EFORMAT);
    assert_int_equal(gguf_get_uint(g, "t.u8", &u), 0), assert_int_equal(u, 200);

    /* floats, bools, strings */
    assert_int_equal(gguf_get_float(g, "t.f32", &d), 0), assert_true(d == 1.5);
    assert_int_equal(gguf_get_float(g, "t.f64", &d), 0), assert_true(d == -2.25);
    assert_int_equal(gguf_get_float(g, "t.i16", &d), 0), assert_true(d == -30000.0);
    assert_int_equal(gguf_get_float(g, "t.u64", &d), 0), assert_true(d == 18446744073709551615.0);
    assert_int_equal(gguf_get_float(g, "t.str", &d), MG_EFORMAT);
    assert_int_equal(gguf_get_float(g, "t.bool", &d), MG_EFORMAT);
    assert_int_equal(gguf_get_bool(g, "t.bool", &bo), 0), assert_true(bo);
    assert_int_equal(gguf_get_bool(g, "t.false", &bo), 0), assert_false(bo);
    assert_int_equal(gguf_get_bool(g, "t.u8", &bo), MG_EFORMAT);
    assert_int_equal(gguf_get_str(g, "t.str", &s), 0), assert_true(str_eq(s, "h\xc3\xa9llo"));
    assert_int_equal(gguf_get_str(g, "t.empty", &s), 0), assert_int_equal(s.len, 0);
    assert_int_equal(gguf_get_str(g, "t.u8", &s), MG_EFORMAT);
    assert_int_equal(gguf_get_str(g, "nope", &s), MG_ENOTFOUND);
    char cbuf[16];
    assert_int_equal(gguf_get_cstr(g, "general.architecture", cbuf, sizeof cbuf), 0);
    assert_string_equal(cbuf, "qwen3moe");
    assert_int_equal(gguf_get_cstr(g, "general.architecture", cbuf, 8), MG_ERANGE);
    assert_int_equal(gguf_get_cstr(g, "general.architecture", cbuf, 9), 0);
    assert_int_equal(gguf_get_cstr(g, "t.u32", cbuf, sizeof cbuf), MG_EFORMAT);
    assert_int_equal(gguf_get_cstr(g, "nope", cbuf, sizeof cbuf), MG_ENOTFOUND);

    /* keys by index, in file order */
    assert_int_equal(gguf_find_key(g, "general.architecture"), 0);
    assert_int_equal(gguf_find_key(g, "t.u"), -1);
    assert_int_equal(gguf_find_key(g, "t.u88"), -1);
    int64_t k = gguf_find_key(g, "t.f64");
    assert_true(k > 0);
    assert_true(str_eq(gguf_key_name(g, k), "t.f64"));
    assert_int_equal(gguf_key_type(g, k), GGUF_TYPE_FLOAT64);
    assert_int_equal(gguf_key_type(g, gguf_find_key(g, "a.deep")), GGUF_TYPE_ARRAY);
    assert_null(gguf_key_name(g, gguf_key_count(g)).ptr);
    assert_int_equal(gguf_key_type(g, -1), GGUF_TYPE_COUNT);
    for (int64_t j = 0; j < gguf_key_count(g); j++) {
        gguf_str nm = gguf_key_name(g, j);
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)nm.len, nm.ptr);
        assert_int_equal(gguf_find_key(g, key), j);
    }

    /* scalar arrays: raw little-endian elements */
    enum gguf_type et;
    const void *raw;
    const unsigned char *rb;
    assert_int_equal(gguf_get_arr(g, "a.u8", &et, &u, &raw), 0);
    rb = raw;
    assert_int_equal(et, GGUF_TYPE_UINT8), assert_int_equal(u, 3);
    assert_int_equal(rb[0], 1), assert_int_equal(rb[1], 2), assert_int_equal(rb[2], 3);
    assert_int_equal(gguf_get_arr(g, "a.i16", &et, &u, &raw), 0);
    int16_t i16[2];
    memcpy(i16, raw, sizeof i16);
    assert_int_equal(et, GGUF_TYPE_INT16);
    assert_int_equal(i16[0], -7), assert_int_equal(i16[1], 9);
    assert_int_equal(gguf_get_arr(g, "a.f32", &et, &u, &raw), 0);
    float f32[2];
    memcpy(f32, raw, sizeof f32);
    assert_true(f32[0] == 0.25f && f32[1] == -8.0f);
    assert_int_equal(gguf_get_arr(g, "a.i64", &et, &u, &raw), 0);
    int64_t i64;
    memcpy(&i64, raw, 8);
    assert_int_equal(u, 1), assert_int_equal(i64, -5);
    assert_int_equal(gguf_get_arr(g, "a.f64", &et, &u, &raw), 0);
    memcpy(&d, raw, 8);
    assert_true(d == 3.125);
    assert_int_equal(gguf_get_arr(g, "a.bool", &et, &u, &raw), 0);
    rb = raw;
    assert_int_equal(et, GGUF_TYPE_BOOL), assert_int_equal(u, 3);
    assert_true(rb[0] == 1 && rb[1] == 0 && rb[2] == 1);
    assert_int_equal(gguf_get_arr(g, "a.empty", &et, &u, &raw), 0);
    assert_int_equal(et, GGUF_TYPE_UINT32), assert_int_equal(u, 0);
    assert_int_equal(gguf_get_arr(g, "t.u8", &et, &u, &raw), MG_EFORMAT);
    assert_int_equal(gguf_get_arr(g, "nope", &et, &u, &raw), MG_ENOTFOUND);

    /* string arrays */
    assert_int_equal(gguf_get_arr(g, "a.str", &et, &u, &raw), 0);
    assert_int_equal(et, GGUF_TYPE_STRING), assert_int_equal(u, 3), assert_null(raw);
    assert_int_equal(gguf_arr_str(g, "a.str", 0, &s), 0), assert_true(str_eq(s, "a"));
    assert_int_equal(gguf_arr_str(g, "a.str", 1, &s), 0), assert_true(str_eq(s, ""));
    assert_int_equal(gguf_arr_str(g, "a.str", 2, &s), 0), assert_true(str_eq(s, "ccc"));
    assert_int_equal(gguf_arr_str(g, "a.str", 3, &s), MG_EINVAL);
    assert_int_equal(gguf_arr_str(g, "a.u8", 0, &s), MG_EINVAL);
    assert_int_equal(gguf_arr_str(g, "t.str", 0, &s), MG_EINVAL);
    assert_int_equal(gguf_arr_str(g, "nope", 0, &s), MG_ENOTFOUND);

    /* nested arrays through handles */
    gguf_arr a, sub, sub2;
    uint32_t v32;
    assert_int_equal(gguf_arr_get(g, "a.nested", &a), 0);
    assert_int_equal(a.elem_type, GGUF_TYPE_ARRAY), assert_int_equal(a.n, 3);
    assert_int_equal(gguf_arrh_sub(&a, 0, &sub), 0);
    assert_int_equal(sub.elem_type, GGUF_TYPE_UINT32), assert_int_equal(sub.n, 2);
    memcpy(&v32, sub.first + 4, 4), assert_int_equal(v32, 2);
    assert_int_equal(gguf_arrh_sub(&a, 1, &sub), 0);
    assert_int_equal(sub.n, 1), memcpy(&v32, sub.first, 4), assert_int_equal(v32, 3);
    assert_int_equal(gguf_arrh_sub(&a, 2, &sub), 0), assert_int_equal(sub.n, 0);
    assert_int_equal(gguf_arrh_sub(&a, 3, &sub), MG_EINVAL);
    assert_int_equal(gguf_arrh_str(&a, 0, &s), MG_EINVAL);
    assert_int_equal(gguf_arrh_sub(&sub, 0, &sub2), MG_EINVAL);
    assert_int_equal(gguf_arr_get(g, "t.str", &a), MG_EFORMAT);
    assert_int_equal(gguf_arr_get(g, "a.deep", &a), 0);
    assert_int_equal(gguf_arrh_sub(&a, 1, &sub), 0); /* [["z"], []] */
    assert_int_equal(sub.n, 2);
    assert_int_equal(gguf_arrh_sub(&sub, 1, &sub2), 0), assert_int_equal(sub2.n, 0);
    assert_int_equal(sub2.elem_type, GGUF_TYPE_STRING);
    assert_int_equal(gguf_arrh_sub(&sub, 0, &sub2), 0); /* ["z"]: found by walking */
    assert_int_equal(gguf_arrh_str(&sub2, 0, &s), 0), assert_true(str_eq(s, "z"));
    assert_int_equal(gguf_arrh_str(&sub2, 1, &s), MG_EINVAL);
    assert_int_equal(gguf_arrh_sub(&a, 0, &sub), 0);
    assert_int_equal(gguf_arrh_sub(&sub, 0, &sub2), 0);
    assert_int_equal(gguf_arrh_str(&sub2, 1, &s), 0), assert_true(str_eq(s, "y"));
    assert_int_equal(gguf_arr_get(g, "a.str", &a), 0);
    assert_int_equal(gguf_arrh_str(&a, 2, &s), 0), assert_true(str_eq(s, "ccc"));

    /* tensors: exact shapes, sizes and data pointers */
    assert_int_equal(gguf_tensor_count(g), w->n_t);
    size_t data_off = gguf_data_offset(g);
    for (int t = 0; t < w->n_t; t++) {
        const gguf_tensor *gt = gguf_tensor_at(g, t);
        assert_non_null(gt);
        assert_string_equal(gt->name, w->t[t].name);
        assert_ptr_equal(gguf_tensor_find(g, w->t[t].name), gt);
        assert_int_equal(gt->n_dims, w->t[t].n_dims);
        for (uint32_t dd = 0; dd < 4; dd++)
            assert_int_equal(gt->ne[dd], dd < w->t[t].n_dims ? (int64_t)w->t[t].ne[dd] : 1);
        assert_int_equal(gt->type, w->t[t].type);
        assert_int_equal(gt->offset, w->t[t].offset);
        assert_int_equal(gt->offset % align, 0);
        assert_int_equal(gt->nbytes, w->t[t].nbytes);
        assert_ptr_equal(gt->data, buf + data_off + w->t[t].offset);
        const unsigned char *p = gt->data;
        for (size_t b = 0; b < gt->nbytes; b++)
            assert_int_equal(p[b], pattern(t, b));
    }
    assert_int_equal(gguf_tensor_at(g, 0)->nbytes, 8 * 3 * 4);
    assert_int_equal(gguf_tensor_at(g, 1)->nbytes, 16 * 2);
    assert_int_equal(gguf_tensor_at(g, 2)->nbytes, 2 * 2 * 34);
    assert_int_equal(gguf_tensor_at(g, 3)->nbytes, 2 * 2 * 144);
    assert_null(gguf_tensor_at(g, w->n_t));
    assert_null(gguf_tensor_at(g, -1));
    assert_null(gguf_tensor_find(g, "blk.0.attn_q"));
    assert_null(gguf_tensor_find(g, "zzz"));
    assert_null(gguf_tensor_find(g, ""));
}

/* ---- valid files -------------------------------------------------------- */

static void test_rich_default_alignment(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf = rich_file(0, &len, &w);
    gguf *g = open_ok(buf, len);
    check_rich(g, buf, len, &w, 32);
    gguf_close(g);
    free(buf);
}

static void test_rich_alignments(void **state)
{
    (void)state;
    static const uint32_t aligns[] = {1, 8, 32, 64, 4096};
    for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
        struct gw w;
        size_t len;
        unsigned char *buf = rich_file(aligns[a], &len, &w);
        gguf *g = open_ok(buf, len);
        check_rich(g, buf, len, &w, aligns[a]);
        gguf_close(g);
        free(buf);
    }
}

static void test_version2_and_empty_files(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    gw_init(&w);
    w.version = 2;
    gw_kv_u32(&w, "x", 1);
    unsigned char *buf = gw_build(&w, &len);
    gguf *g = open_ok(buf, len);
    assert_int_equal(gguf_version(g), 2);
    assert_int_equal(gguf_tensor_count(g), 0);
    assert_null(gguf_tensor_find(g, "x"));
    gguf_close(g);
    free(buf);

    /* no keys, no tensors: 24 bytes */
    gw_init(&w);
    buf = gw_build(&w, &len);
    assert_int_equal(len, 24);
    g = open_ok(buf, len);
    assert_int_equal(gguf_key_count(g), 0);
    assert_int_equal(gguf_find_key(g, "x"), -1);
    assert_int_equal(gguf_data_offset(g), 32); /* aligned, past the end: no tensor uses it */
    gguf_close(g);
    free(buf);
    gguf_close(NULL);
}

static void test_zero_size_tensor(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    gw_init(&w);
    gw_tensor(&w, "empty", TENSOR_F32, 2, 0, 5, 0, 0);
    gw_tensor(&w, "full", TENSOR_F32, 1, 4, 0, 0, 0);
    w.t[0].offset = 0;
    w.t[1].offset = 0; /* a zero-sized tensor overlaps nothing */
    unsigned char *buf = gw_build(&w, &len);
    gguf *g = open_ok(buf, len);
    assert_int_equal(gguf_tensor_find(g, "empty")->nbytes, 0);
    assert_int_equal(gguf_tensor_find(g, "empty")->ne[0], 0);
    assert_int_equal(gguf_tensor_find(g, "full")->nbytes, 16);
    gguf_close(g);
    free(buf);
}

static void write_nested(struct wbuf *b, int levels)
{
    for (int l = 1; l < levels; l++)
        wb_u32(b, GGUF_TYPE_ARRAY), wb_u64(b, 1);
    wb_u32(b, GGUF_TYPE_UINT8), wb_u64(b, 1), wb_u8(b, 7);
}

static void test_nesting_depth(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    gw_init(&w);
    write_nested(gw_key(&w, "deep8", GGUF_TYPE_ARRAY), 8);
    unsigned char *buf = gw_build(&w, &len);
    gguf *g = open_ok(buf, len);
    gguf_arr a, sub;
    assert_int_equal(gguf_arr_get(g, "deep8", &a), 0);
    for (int l = 1; l < 8; l++) {
        assert_int_equal(gguf_arrh_sub(&a, 0, &sub), 0);
        a = sub;
    }
    assert_int_equal(a.elem_type, GGUF_TYPE_UINT8);
    assert_int_equal(a.n, 1), assert_int_equal(a.first[0], 7);
    gguf_close(g);
    free(buf);

    gw_init(&w);
    write_nested(gw_key(&w, "deep9", GGUF_TYPE_ARRAY), 9);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "key 'deep9': arrays nested deeper than 8 levels");
    free(buf);
}

/* A 150k-token vocabulary: indexed once at open, O(1) per element. */
static void test_big_vocab(void **state)
{
    (void)state;
    enum { N = 150000 };
    struct gw w;
    size_t len;
    char tok[32];
    gw_init(&w);
    struct wbuf *b = gw_key(&w, "tokenizer.ggml.tokens", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, N);
    for (int i = 0; i < N; i++) {
        snprintf(tok, sizeof tok, "tok%d", i);
        wb_str(b, tok);
    }
    unsigned char *buf = gw_build(&w, &len);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gguf *g = open_ok(buf, len);
    gguf_str s;
    for (int i = N - 1; i >= 0; i -= 997) {
        snprintf(tok, sizeof tok, "tok%d", i);
        assert_int_equal(gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s), 0);
        assert_true(str_eq(s, tok));
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 2000); /* quadratic behaviour would take minutes */
    gguf_close(g);
    free(buf);
}

static void test_open_file(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf = rich_file(64, &len, &w);
    char path[] = "/tmp/moegate_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);

    gguf *g = NULL;
    char err[512] = "";
    assert_int_equal(gguf_open(&g, path, err, sizeof err), 0);
    assert_int_equal(gguf_file_size(g), len);
    const gguf_tensor *t = gguf_tensor_find(g, "blk.0.ffn_down_exps.weight");
    assert_non_null(t);
    assert_int_equal(memcmp(t->data, buf + gguf_data_offset(g) + t->offset, t->nbytes), 0);
    assert_int_equal((uintptr_t)t->data % 64, 0); /* the mapping is page-aligned */
    gguf_str s;
    assert_int_equal(gguf_arr_str(g, "a.str", 2, &s), 0), assert_true(str_eq(s, "ccc"));
    gguf_close(g);

    /* the real file, truncated by one byte */
    assert_int_equal(truncate(path, (off_t)len - 1), 0);
    g = NULL;
    assert_int_equal(gguf_open(&g, path, err, sizeof err), MG_EFORMAT);
    assert_null(g);
    assert_non_null(strstr(err, "runs past end of file"));
    /* empty */
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(gguf_open(&g, path, err, sizeof err), MG_EFORMAT);
    assert_non_null(strstr(err, "truncated at offset 0 reading the magic"));
    unlink(path);
    free(buf);

    assert_int_equal(gguf_open(&g, "/nonexistent/model.gguf", err, sizeof err), MG_EIO);
    assert_null(g);
    assert_non_null(strstr(err, "/nonexistent/model.gguf"));
    assert_int_equal(gguf_open(&g, "/tmp", err, sizeof err), MG_EIO);
    assert_non_null(strstr(err, "not a regular file"));
    assert_int_equal(gguf_open(&g, "/nonexistent", NULL, 0), MG_EIO);
}

/* ---- header errors ------------------------------------------------------ */

static void test_bad_magic_and_version(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf = rich_file(0, &len, &w);
    buf[0] = 'g';
    expect_fail(buf, len, MG_EFORMAT, "bad magic 67 47 55 46 at offset 0");
    buf[0] = 'G';
    buf[4] = 1;
    expect_fail(buf, len, MG_EUNSUPPORTED, "version 1 at offset 4 is not supported");
    buf[4] = 4;
    expect_fail(buf, len, MG_EUNSUPPORTED, "version 4 at offset 4 is not supported");
    buf[4] = 0, buf[7] = 3;
    expect_fail(buf, len, MG_EUNSUPPORTED, "big-endian");
    free(buf);
    gguf *g = NULL;
    assert_int_equal(gguf_open_memory(&g, NULL, 10, NULL, 0), MG_EINVAL);
    assert_int_equal(gguf_open_memory(NULL, "GGUF", 4, NULL, 0), MG_EINVAL);
}

/* Every prefix of a valid file is refused as EFORMAT, without a crash. */
static void test_truncation_everywhere(void **state)
{
    (void)state;
    static const uint32_t aligns[] = {0, 1, 64};
    for (size_t a = 0; a < 3; a++) {
        struct gw w;
        size_t len;
        unsigned char *buf = rich_file(aligns[a], &len, &w);
        for (size_t cut = 0; cut < len; cut++)
            expect_fail(buf, cut, MG_EFORMAT, "gguf: ");
        free(buf);
    }
}

static void test_truncation_messages(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    gw_init(&w);
    gw_kv_u32(&w, "llama.block_count", 48);
    unsigned char *buf = gw_build(&w, &len);
    /* value at 24 + 8 + 17 + 4 = 53 */
    expect_fail(buf, 55, MG_EFORMAT,
                "truncated at offset 53 reading the value of key 'llama.block_count'");
    expect_fail(buf, 50, MG_EFORMAT, "truncated at offset 49 reading the type of key");
    expect_fail(buf, 40, MG_EFORMAT,
                "truncated at offset 32 reading the name of key #0 (17 bytes)");
    expect_fail(buf, 28, MG_EFORMAT,
                "key/value count 1 at offset 16 is more than the 4 bytes left");
    expect_fail(buf, 20, MG_EFORMAT, "truncated at offset 16 reading the key/value count");
    free(buf);
}

static void test_huge_counts(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf = rich_file(0, &len, &w);
    static const uint64_t bad[] = {UINT64_MAX, 1ull << 63, 1ull << 32, 100000};
    for (int i = 0; i < 4; i++) {
        unsigned char *c = malloc(len);
        memcpy(c, buf, len);
        put_u64_at(c + 16, bad[i]);
        expect_fail(c, len, MG_EFORMAT, "key/value count");
        memcpy(c, buf, len);
        put_u64_at(c + 8, bad[i]);
        expect_fail(c, len, MG_EFORMAT, "tensor count");
        free(c);
    }
    free(buf);

    /* a string length */
    gw_init(&w);
    gw_kv_str(&w, "general.name", "abc");
    buf = gw_build(&w, &len);
    put_u64_at(buf + len - 11, UINT64_MAX);
    expect_fail(buf, len, MG_EFORMAT,
                "reading the value of key 'general.name' (a string of 18446744073709551615 "
                "bytes, 3 left)");
    free(buf);

    /* an array count */
    gw_init(&w);
    struct wbuf *b = gw_key(&w, "tokenizer.ggml.scores", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_FLOAT32), wb_u64(b, 2), wb_f32(b, 1), wb_f32(b, 2);
    buf = gw_build(&w, &len);
    for (int i = 0; i < 4; i++) {
        put_u64_at(buf + len - 16, bad[i]);
        expect_fail(buf, len, MG_EFORMAT, "key 'tokenizer.ggml.scores': array at offset 57 claims");
    }
    free(buf);

    /* a string array count: refused before any index is allocated */
    gw_init(&w);
    b = gw_key(&w, "v", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_STRING), wb_u64(b, 1), wb_str(b, "0123456789abcdef");
    buf = gw_build(&w, &len);
    put_u64_at(buf + 24 + 8 + 1 + 4 + 4, 4); /* 4 strings need 32 bytes; 24 remain */
    expect_fail(buf, len, MG_EFORMAT, "claims 4 elements of type string, more than the 24 bytes");
    put_u64_at(buf + 24 + 8 + 1 + 4 + 4, 3); /* fits the minimum, then runs out */
    expect_fail(buf, len, MG_EFORMAT, "element 1 of the array value of key 'v'");
    free(buf);
}

/* ---- value errors ------------------------------------------------------- */

static void test_bad_values(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf;

    gw_init(&w);
    wb_u8(gw_key(&w, "flag", GGUF_TYPE_BOOL), 2);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "key 'flag': bool value at offset 40 is 2, not 0 or 1");
    free(buf);

    gw_init(&w);
    struct wbuf *b = gw_key(&w, "flags", GGUF_TYPE_ARRAY);
    wb_u32(b, GGUF_TYPE_BOOL), wb_u64(b, 3), wb_u8(b, 0), wb_u8(b, 1), wb_u8(b, 255);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "key 'flags': bool array element 2");
    free(buf);

    gw_init(&w);
    wb_u8(gw_key(&w, "x", 13), 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "key 'x' at offset 33 has unknown value type 13");
    free(buf);

    gw_init(&w);
    b = gw_key(&w, "x", GGUF_TYPE_ARRAY);
    wb_u32(b, 99), wb_u64(b, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "unknown element type 99");
    free(buf);

    /* keys: NUL inside, empty, too long */
    gw_init(&w);
    gw_kv_u32(&w, "a_b", 1);
    buf = gw_build(&w, &len);
    buf[24 + 8 + 1] = 0;
    expect_fail(buf, len, MG_EFORMAT, "key #0 at offset 24 contains a NUL byte");
    put_u64_at(buf + 24, 0);
    expect_fail(buf, len, MG_EFORMAT, "key #0 at offset 24 has length 0");
    put_u64_at(buf + 24, 65536);
    expect_fail(buf, len, MG_EFORMAT, "has length 65536 (must be 1..65535)");
    free(buf);

    /* non-printable bytes in a name are not echoed */
    gw_init(&w);
    wb_u8(gw_key(&w, "a\x01\xff", GGUF_TYPE_BOOL), 3);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "key 'a\?\?': bool value");
    free(buf);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    gw_init(&w);
    gw_kv_u32(&w, "a.b", 1);
    gw_kv_u32(&w, "c", 2);
    gw_kv_str(&w, "a.b", "again");
    unsigned char *buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "duplicate key 'a.b' (at offsets 24 and 60)");
    free(buf);
}

static void test_bad_alignment(void **state)
{
    (void)state;
    static const uint32_t bad[] = {0, 3, 48, 0xffffffffu};
    for (int i = 0; i < 4; i++) {
        struct gw w;
        size_t len;
        gw_init(&w);
        gw_kv_u32(&w, "general.alignment", bad[i]);
        unsigned char *buf = gw_build(&w, &len);
        char want[128];
        snprintf(want, sizeof want,
                 "general.alignment = %u at offset 53 is not a nonzero power of two", bad[i]);
        expect_fail(buf, len, MG_EFORMAT, want);
        free(buf);
    }
    struct gw w;
    size_t len;
    gw_init(&w);
    wb_u64(gw_key(&w, "general.alignment", GGUF_TYPE_UINT64), 32);
    unsigned char *buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT,
                "general.alignment at offset 53 has type uint64, expected uint32");
    free(buf);
    gw_init(&w);
    gw_kv_str(&w, "general.alignment", "32");
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "has type string, expected uint32");
    free(buf);
    /* a huge alignment puts the data section past the end */
    gw_init(&w);
    gw_kv_u32(&w, "general.alignment", 1u << 31);
    gw_tensor(&w, "t", TENSOR_F32, 1, 4, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "data section (aligned to 2147483648) would start at offset");
    free(buf);
}

/* ---- tensor errors ------------------------------------------------------ */

static void test_tensor_layout_errors(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf;

    /* misaligned offset */
    gw_init(&w);
    gw_tensor(&w, "a", TENSOR_F32, 1, 8, 0, 0, 0);
    gw_tensor(&w, "blk.0.attn_q.weight", TENSOR_F32, 1, 8, 0, 0, 0)->offset = 48;
    buf = gw_build(&w, &len);
    expect_fail(
        buf, len, MG_EFORMAT,
        "tensor 'blk.0.attn_q.weight': data offset 48 is not a multiple of the alignment 32");
    free(buf);

    /* past EOF: the valid file minus its last byte, and a huge offset */
    gw_init(&w);
    gw_tensor(&w, "a", TENSOR_F32, 1, 8, 0, 0, 0);
    gw_tensor(&w, "blk.0.attn_q.weight", TENSOR_Q8_0, 2, 64, 2, 0, 0);
    buf = gw_build(&w, &len);
    char want[200];
    snprintf(want, sizeof want,
             "tensor 'blk.0.attn_q.weight': data [offset 32, 136 bytes] runs past end of file "
             "(size %zu",
             len - 1);
    expect_fail(buf, len - 1, MG_EFORMAT, want);
    size_t off_field = 24 + 33 + 59 - 8; /* header, info 'a', info 'blk...': its u64 offset */
    put_u64_at(buf + off_field, 0xFFFFFFFFFFFFFFE0ull);
    expect_fail(buf, len, MG_EFORMAT, "data [offset 18446744073709551584, 136 bytes] runs past");
    free(buf);

    /* overlap */
    gw_init(&w);
    gw_tensor(&w, "a", TENSOR_F32, 1, 16, 0, 0, 0); /* 64 bytes at 0 */
    gw_tensor(&w, "b", TENSOR_F32, 1, 8, 0, 0, 0)->offset = 32;
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT,
                "tensors 'a' [offset 0, 64 bytes] and 'b' [offset 32, 32 bytes] overlap");
    free(buf);

    /* duplicate name */
    gw_init(&w);
    gw_tensor(&w, "x.weight", TENSOR_F32, 1, 8, 0, 0, 0);
    gw_tensor(&w, "x.weight", TENSOR_F32, 1, 8, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "duplicate tensor name 'x.weight'");
    free(buf);
}

static void test_tensor_shape_errors(void **state)
{
    (void)state;
    struct gw w;
    size_t len;
    unsigned char *buf;

    gw_init(&w);
    gw_tensor(&w, "odd", 4, 1, 32, 0, 0, 0); /* a retired ggml id */
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EUNSUPPORTED, "tensor 'odd': unknown tensor type id 4");
    free(buf);
    gw_init(&w);
    gw_tensor(&w, "odd", 1000, 1, 32, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EUNSUPPORTED, "tensor 'odd': unknown tensor type id 1000");
    free(buf);

    gw_init(&w);
    gw_tensor(&w, "q", TENSOR_Q8_0, 2, 48, 2, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT,
                "tensor 'q': ne[0] = 48 is not a multiple of the q8_0 block size 32");
    free(buf);
    gw_init(&w);
    gw_tensor(&w, "k", TENSOR_Q4_K, 1, 128, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "block size 256");
    free(buf);

    gw_init(&w);
    gw_tensor(&w, "t0", TENSOR_F32, 0, 0, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "tensor 't0': n_dims 0 at offset 34 is out of range 1..4");
    free(buf);
    gw_init(&w);
    gw_tensor(&w, "t5", TENSOR_F32, 5, 1, 1, 1, 1);
    buf = gw_build(&w, &len); /* writes 5 dims: ne[4] is 0 */
    expect_fail(buf, len, MG_EFORMAT, "tensor 't5': n_dims 5");
    free(buf);

    gw_init(&w);
    gw_tensor(&w, "big", TENSOR_F32, 2, 1ull << 62, 4, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "tensor 'big': element count overflows int64");
    free(buf);
    gw_init(&w);
    gw_tensor(&w, "big", TENSOR_F32, 1, 1ull << 62, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "tensor 'big': byte size overflows");
    free(buf);
    gw_init(&w);
    gw_tensor(&w, "neg", TENSOR_F32, 2, 4, UINT64_MAX, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT, "tensor 'neg': ne[1] = 18446744073709551615 at offset");
    free(buf);

    /* names: too long (257 > 256), NUL inside */
    gw_init(&w);
    char name[258];
    memset(name, 'n', 257);
    name[257] = 0;
    gw_tensor(&w, name, TENSOR_F32, 1, 4, 0, 0, 0);
    buf = gw_build(&w, &len);
    expect_fail(buf, len, MG_EFORMAT,
                "tensor #0 at offset 24 has name length 257 (must be 1..256)");
    free(buf);
    gw_init(&w);
    name[256] = 0;
    gw_tensor(&w, name, TENSOR_F32, 1, 4, 0, 0, 0);
    buf = gw_build(&w, &len);
    gguf *g = open_ok(buf, len); /* 256 is accepted */
    assert_non_null(gguf_tensor_find(g, name));
    gguf_close(g);
    buf[24 + 8 + 5] = 0;
    expect_fail(buf, len, MG_EFORMAT, "tensor #0 at offset 24: name contains a NUL byte");
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rich_default_alignment),
        cmocka_unit_test(test_rich_alignments),
        cmocka_unit_test(test_version2_and_empty_files),
        cmocka_unit_test(test_zero_size_tensor),
        cmocka_unit_test(test_nesting_depth),
        cmocka_unit_test(test_big_vocab),
        cmocka_unit_test(test_open_file),
        cmocka_unit_test(test_bad_magic_and_version),
        cmocka_unit_test(test_truncation_everywhere),
        cmocka_unit_test(test_truncation_messages),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_bad_alignment),
        cmocka_unit_test(test_tensor_layout_errors),
        cmocka_unit_test(test_tensor_shape_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
