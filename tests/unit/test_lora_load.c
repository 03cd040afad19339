/* LoRA adapter loading (adapters/): the safetensors reader on hand-made
 * broken files, PEFT and GGUF adapters made here and by the fixtures
 * generator loaded against the tiny fixture models, every refusal checked
 * for the message that names the tensor or field, and the registry's
 * reference counting (unload while acquired: usable until the last
 * release, freed then; run under ASan to see no leak or use after free).
 *
 * Uses the generated fixtures ($MOEGATE_FIXTURES, default build/fixtures;
 * `make fixtures`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters/lora.h"
#include "adapters/lora_internal.h"
#include "adapters/safetensors.h"
#include "core/errors.h"
#include "core/tensor.h"

static char path_buf[4096];
static char tmpdir[64];

static const char *fixture(const char *name)
{
    const char *dir = getenv("MOEGATE_FIXTURES");
    snprintf(path_buf, sizeof path_buf, "%s/%s", dir ? dir : "build/fixtures", name);
    return path_buf;
}

static model *open_base(const char *fam)
{
    char name[128], err[512] = "";
    snprintf(name, sizeof name, "%s-f32.gguf", fam);
    model_opts o = {.n_threads = 1, .no_pin = true};
    model *m = NULL;
    if (model_open(&m, fixture(name), &o, err, sizeof err))
        fail_msg("model_open(%s): %s (run make fixtures)", name, err);
    return m;
}

/* rc and a message containing want (or failure with the message shown). */
#define assert_refused(rc_expr, code, want)                                                      \
    do {                                                                                         \
        int rc_ = (rc_expr);                                                                     \
        if (rc_ != (code) || !strstr(err, (want)))                                               \
            fail_msg("line %d: rc %d (want %d), message '%s' (want '%s')", __LINE__, rc_, (code), \
                     err, (want));                                                               \
    } while (0)

/* ---- safetensors by hand ------------------------------------------------------------- */

static void write_bytes(const char *path, const void *a, size_t na, const void *b, size_t nb)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (na)
        assert_int_equal(fwrite(a, 1, na, f), na);
    if (nb)
        assert_int_equal(fwrite(b, 1, nb, f), nb);
    fclose(f);
}

/* A safetensors image: 8-byte length, header, data. Caller frees. */
static unsigned char *st_image(const char *header, const void *data, size_t nd, size_t *len)
{
    size_t nh = strlen(header);
    unsigned char *buf = malloc(8 + nh + nd + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)nh >> (8 * i));
    memcpy(buf + 8, header, nh);
    if (nd)
        memcpy(buf + 8 + nh, data, nd);
    *len = 8 + nh + nd;
    return buf;
}

static char err[1024];

static int st_try(const char *header, size_t nd)
{
    static unsigned char zeros[4096];
    size_t len;
    unsigned char *img = st_image(header, zeros, nd, &len);
    safetensors *st = NULL;
    err[0] = 0;
    int rc = safetensors_open_memory(&st, img, len, "t.safetensors", err, sizeof err);
    if (rc == 0) {
        assert_non_null(st);
        safetensors_close(st);
    }
    free(img);
    return rc;
}

static void test_safetensors_valid(void **s)
{
    (void)s;
    float d[6] = {1, 2, 3, 4, 5, 6};
    const char *h = "{\"b\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]},"
                    "\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                    "\"z\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[24,24]},"
                    "\"__metadata__\":{\"format\":\"pt\"}}   ";
    size_t len;
    unsigned char *img = st_image(h, d, 24, &len);
    safetensors *st;
    assert_int_equal(safetensors_open_memory(&st, img, len, NULL, err, sizeof err), 0);
    assert_int_equal(safetensors_count(st), 3);
    assert_string_equal(safetensors_at(st, 0)->name, "a"); /* offset order */
    const safetensors_tensor *t = safetensors_find(st, "b");
    assert_non_null(t);
    assert_int_equal(t->type, TENSOR_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->nbytes, 16);
    float x;
    memcpy(&x, (const char *)t->data + 4, 4);
    assert_true(x == 4.0f);
    assert_null(safetensors_find(st, "c"));
    assert_string_equal(safetensors_metadata(st, "format"), "pt");
    assert_null(safetensors_metadata(st, "nope"));
    safetensors_close(st);
    free(img);
    /* the same through a file */
    char p[128];
    snprintf(p, sizeof p, "%s/ok.safetensors", tmpdir);
    img = st_image(h, d, 24, &len);
    write_bytes(p, img, len, NULL, 0);
    free(img);
    assert_int_equal(safetensors_open(&st, p, err, sizeof err), 0);
    safetensors_close(st);
    /* truncated on disk */
    img = st_image(h, d, 24, &len);
    write_bytes(p, img, len - 5, NULL, 0);
    free(img);
    assert_refused(safetensors_open(&st, p, err, sizeof err), MG_EFORMAT, "end outside the data");
    assert_non_null(strstr(err, p));
    safetensors_close(NULL);
}

static void test_safetensors_broken(void **s)
{
    (void)s;
    safetensors *st;
    unsigned char small[5] = {1, 2, 3, 4, 5};
    assert_refused(safetensors_open_memory(&st, small, 5, "t", err, sizeof err), MG_EFORMAT, "too short");
    /* header length past the end / above the limit */
    unsigned char big[16] = {0xff, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    assert_refused(safetensors_open_memory(&st, big, 10, "t", err, sizeof err), MG_EFORMAT,
                   "runs past the end");
    unsigned char huge[16] = {0, 0, 0, 0, 0, 0, 0, 0x10};
    assert_refused(safetensors_open_memory(&st, huge, 16, "t", err, sizeof err), MG_EFORMAT,
                   "exceeds the limit");
    assert_refused(st_try(" {}", 0), MG_EFORMAT, "does not start with '{'");
    assert_refused(st_try("{\"a\":", 0), MG_EFORMAT, "header JSON");
    assert_refused(st_try("[1,2]", 0), MG_EFORMAT, "does not start");
    assert_int_equal(st_try("{}", 0), 0);
    const char *t1 = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},";
    char h[1024];
    /* overlapping tensors */
    snprintf(h, sizeof h, "%s\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", t1);
    assert_refused(st_try(h, 12), MG_EFORMAT, "overlaps tensor 'w'");
    /* a gap, trailing bytes */
    snprintf(h, sizeof h, "%s\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]}}", t1);
    assert_refused(st_try(h, 16), MG_EFORMAT, "tensor 'v' starts at 12");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12), MG_EFORMAT,
                   "4 bytes after the last tensor");
    /* offsets outside the file, backwards */
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4), MG_EFORMAT,
                   "tensor 'w': data_offsets [0, 8] end outside");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8), MG_EFORMAT,
                   "run backwards");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8),
                   MG_EFORMAT, "header JSON"); /* jansson: integer too big */
    /* dtypes */
    assert_refused(st_try("{\"w\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), MG_EUNSUPPORTED,
                   "tensor 'w': dtype I32 is not supported");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2),
                   MG_EUNSUPPORTED, "F8_E4M3");
    assert_refused(st_try("{\"w\":{\"dtype\":\"float\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), MG_EFORMAT,
                   "unknown dtype 'float'");
    assert_refused(st_try("{\"w\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8), MG_EFORMAT,
                   "field 'dtype' is not a string");
    /* shape x dtype against the bytes */
    assert_refused(st_try("{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8), MG_EFORMAT,
                   "tensor 'w': shape and dtype make 12 bytes, data_offsets [0, 8] hold 8");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8), MG_EFORMAT,
                   "shape[0] is not a non-negative integer");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,8]}}", 8),
                   MG_EFORMAT, "overflows");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4),
                   MG_EFORMAT, "9 dimensions");
    /* duplicates, fields, metadata, names */
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                          "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8),
                   MG_EFORMAT, "duplicate");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4),
                   MG_EFORMAT, "unknown field 'x'");
    assert_refused(st_try("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), MG_EFORMAT,
                   "field 'data_offsets' is missing");
    assert_refused(st_try("{\"w\":[1]}", 0), MG_EFORMAT, "entry is not an object");
    assert_refused(st_try("{\"__metadata__\":{\"a\":1}}", 0), MG_EFORMAT, "__metadata__ 'a' is not a string");
    assert_refused(st_try("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MG_EFORMAT,
                   "tensor name of 0 bytes");
    assert_refused(st_try("{\"a\\u0001\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MG_EFORMAT,
                   "control character");
    assert_refused(st_try("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                   MG_EFORMAT, "header JSON");
    assert_refused(st_try("{\"\xff\xfe\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), MG_EFORMAT,
                   "header JSON"); /* invalid UTF-8 */
}

/* ---- PEFT folders by hand ---------------------------------------------------------------- */

typedef struct mat { /* an F32 matrix */
    const char *name;
    int64_t rows, cols;
} mat;

static const char *DEFAULT_CONFIG =
    "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"target_modules\":[\"q_proj\",\"k_proj\",\"v_proj\","
    "\"o_proj\",\"gate_proj\",\"up_proj\",\"down_proj\",\"w1\",\"w2\",\"w3\",\"kv_b_proj\"],\"bias\":\"none\","
    "\"use_dora\":false,\"modules_to_save\":null}";

/* Writes tmpdir/name/{adapter_config.json, adapter_model.safetensors}. */
static const char *peft_dir(const char *name, const char *config, const mat *m, int n)
{
    static char dir[256];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0700);
    char p[512];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    write_bytes(p, config, strlen(config), NULL, 0);
    char *h = malloc(65536);
    size_t hl = 0, off = 0;
    hl += (size_t)snprintf(h + hl, 65536 - hl, "{");
    for (int i = 0; i < n; i++) {
        size_t nb = (size_t)(m[i].rows * m[i].cols) * 4;
        hl += (size_t)snprintf(h + hl, 65536 - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],"
                               "\"data_offsets\":[%zu,%zu]}", i ? "," : "", m[i].name, (long long)m[i].rows,
                               (long long)m[i].cols, off, off + nb);
        off += nb;
    }
    snprintf(h + hl, 65536 - hl, "}");
    unsigned char *data = malloc(off ? off : 1);
    for (size_t i = 0; i + 4 <= off; i += 4) {
        float x = (float)((int)(i % 97) - 48) / 256.0f;
        memcpy(data + i, &x, 4);
    }
    size_t len;
    unsigned char *img = st_image(h, data, off, &len);
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
    write_bytes(p, img, len, NULL, 0);
    free(img);
    free(data);
    free(h);
    return dir;
}

#define L0 "base_model.model.model.layers.0."
#define QA(r) {L0 "self_attn.q_proj.lora_A.weight", r, 256}
#define QB(r) {L0 "self_attn.q_proj.lora_B.weight", 512, r}

static void test_peft_refusals(void **s)
{
    (void)s;
    model *m = open_base("qwen3moe-tiny");
    model_lora *l = NULL;
    const char *d;
    /* a good one first */
    mat ok[] = {QA(4), QB(4), {L0 "self_attn.o_proj.lora_A.weight", 4, 512}, {L0 "self_attn.o_proj.lora_B.weight", 256, 4},
                {L0 "mlp.experts.3.down_proj.lora_A.weight", 4, 256},
                {L0 "mlp.experts.3.down_proj.lora_B.weight", 256, 4}};
    d = peft_dir("ok", DEFAULT_CONFIG, ok, 6);
    assert_int_equal(lora_load(&l, m, d, 0.5f, err, sizeof err), 0);
    assert_non_null(l->layer[0].t[LORA_ATTN_Q]);
    assert_int_equal(l->layer[0].t[LORA_ATTN_Q][0].r, 4);
    assert_true(l->layer[0].t[LORA_ATTN_Q][0].scale == 1.0f); /* 8/4 * 0.5 */
    assert_null(l->layer[1].t[LORA_ATTN_Q]);
    assert_int_equal(l->layer[0].t[LORA_EXP_DOWN][3].r, 4);
    assert_int_equal(l->layer[0].t[LORA_EXP_DOWN][2].r, 0);
    assert_int_equal(atomic_load(&l->refs), 1);
    assert_int_equal(lora_bytes(l), 4 * (256 + 512) * 4 * 2 + 4 * (256 + 256) * 4);
    model_lora_release(l);

    /* rank differs between A and B */
    mat rk[] = {QA(4), QB(8)};
    d = peft_dir("rank", DEFAULT_CONFIG, rk, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "rank mismatch: lora_A is [4, 256]");
    /* rank differs from the config */
    mat rk2[] = {QA(8), QB(8)};
    d = peft_dir("rank2", DEFAULT_CONFIG, rk2, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "has rank 8, adapter_config.json says 4");
    /* a module that maps to nothing: the router */
    mat rt[] = {QA(4), QB(4), {L0 "mlp.gate.lora_A.weight", 4, 256}, {L0 "mlp.gate.lora_B.weight", 16, 4}};
    d = peft_dir("router", DEFAULT_CONFIG, rt, 4);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED,
                   "module 'model.layers.0.mlp.gate' is not a LoRA target");
    mat lm[] = {{"base_model.model.lm_head.lora_A.weight", 4, 256}, {"base_model.model.lm_head.lora_B.weight", 100, 4}};
    d = peft_dir("lmhead", DEFAULT_CONFIG, lm, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "module 'lm_head'");
    /* layer out of range */
    mat ly[] = {{"base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight", 4, 256},
                {"base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight", 512, 4}};
    d = peft_dir("layer", DEFAULT_CONFIG, ly, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "adapts layer 5, the base model has 2 layers");
    /* made for another base: hidden size 512 */
    mat hs[] = {{L0 "self_attn.q_proj.lora_A.weight", 4, 512}, {L0 "self_attn.q_proj.lora_B.weight", 512, 4}};
    d = peft_dir("hidden", DEFAULT_CONFIG, hs, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "adapter made for hidden size 512");
    /* shape mismatch on an output width: names the tensor and both shapes */
    mat sm[] = {QA(4), {L0 "self_attn.q_proj.lora_B.weight", 256, 4}};
    d = peft_dir("shape", DEFAULT_CONFIG, sm, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT,
                   "self_attn.q_proj.lora_B.weight' is [256, 4], the base's blk.0.attn_q.weight [512 x 256] needs [512, 4]");
    /* a matrix this architecture lacks */
    mat kvb[] = {QA(4), QB(4), {L0 "self_attn.kv_b_proj.lora_A.weight", 4, 128},
                 {L0 "self_attn.kv_b_proj.lora_B.weight", 256, 4}};
    d = peft_dir("kvb", DEFAULT_CONFIG, kvb, 4);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "(qwen3moe) has no blk.0.attn_kv_b.weight");
    /* expert beyond the base's */
    mat ex[] = {QA(4), QB(4), {L0 "mlp.experts.20.up_proj.lora_A.weight", 4, 256},
                {L0 "mlp.experts.20.up_proj.lora_B.weight", 256, 4}};
    d = peft_dir("expert", DEFAULT_CONFIG, ex, 4);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "expert 20, the base model has 16 experts");
    /* A without B, B without A */
    mat ab[] = {QA(4)};
    d = peft_dir("nob", DEFAULT_CONFIG, ab, 1);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "has no lora_B partner");
    mat ba[] = {QB(4)};
    d = peft_dir("noa", DEFAULT_CONFIG, ba, 1);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "q_proj.lora_B.weight' has no lora_A partner");
    /* the same matrix twice (with and without the base_model.model. prefix) */
    mat dup[] = {QA(4), QB(4), {"model.layers.0.self_attn.q_proj.lora_A.weight", 4, 256},
                 {"model.layers.0.self_attn.q_proj.lora_B.weight", 512, 4}};
    d = peft_dir("dup", DEFAULT_CONFIG, dup, 4);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "blk.0.attn_q is adapted twice");
    /* DoRA, modules_to_save, bias, peft_type, module not selected */
    mat q[] = {QA(4), QB(4)};
    d = peft_dir("dora", "{\"peft_type\":\"LORA\",\"r\":4,\"use_dora\":true}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "field 'use_dora': DoRA");
    mat dm[] = {QA(4), QB(4), {L0 "self_attn.q_proj.lora_magnitude_vector", 1, 512}};
    d = peft_dir("doramag", "{\"peft_type\":\"LORA\",\"r\":4}", dm, 3);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "DoRA magnitude vector");
    d = peft_dir("mts", "{\"peft_type\":\"LORA\",\"r\":4,\"modules_to_save\":[\"lm_head\"]}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "field 'modules_to_save'");
    d = peft_dir("bias", "{\"peft_type\":\"LORA\",\"r\":4,\"bias\":\"lora_only\"}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "field 'bias' is \"lora_only\"");
    d = peft_dir("ptype", "{\"peft_type\":\"IA3\"}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EUNSUPPORTED, "peft_type 'IA3'");
    d = peft_dir("nottarget", "{\"peft_type\":\"LORA\",\"r\":4,\"target_modules\":[\"v_proj\"]}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "is not selected by adapter_config.json");
    d = peft_dir("excluded", "{\"peft_type\":\"LORA\",\"r\":4,\"exclude_modules\":\"model\\\\.layers\\\\.0\\\\..*\"}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "is not selected");
    d = peft_dir("layers", "{\"peft_type\":\"LORA\",\"r\":4,\"layers_to_transform\":[1]}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "is not selected");
    d = peft_dir("badre", "{\"peft_type\":\"LORA\",\"r\":4,\"target_modules\":\"(q_proj\"}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "is not a regular expression");
    d = peft_dir("badjson", "{\"peft_type\":\"LORA\",", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "adapter_config.json: JSON error");
    d = peft_dir("badr", "{\"peft_type\":\"LORA\",\"r\":\"4\"}", q, 2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "field 'r'");
    /* rank_pattern, alpha_pattern, rsLoRA, layers_to_transform honoured */
    mat pq[] = {{L0 "self_attn.q_proj.lora_A.weight", 2, 256}, {L0 "self_attn.q_proj.lora_B.weight", 512, 2}, {L0 "self_attn.k_proj.lora_A.weight", 4, 256}, {L0 "self_attn.k_proj.lora_B.weight", 256, 4}};
    d = peft_dir("pattern", "{\"peft_type\":\"LORA\",\"r\":4,\"lora_alpha\":8,\"use_rslora\":true,"
                 "\"rank_pattern\":{\"q_proj\":2},\"alpha_pattern\":{\"layers\\\\.0\\\\.self_attn\\\\.k_proj\":2},"
                 "\"layers_to_transform\":0,\"layers_pattern\":\"layers\"}", pq, 4);
    assert_int_equal(lora_load(&l, m, d, 1, err, sizeof err), 0);
    assert_float_equal(l->layer[0].t[LORA_ATTN_Q][0].scale, 8 / 1.41421356, 1e-5);
    assert_float_equal(l->layer[0].t[LORA_ATTN_K][0].scale, 2 / 2.0, 1e-6);
    model_lora_release(l);
    /* no weights file; a pickle only; a bare safetensors file */
    char p[512];
    snprintf(p, sizeof p, "%s/adapter_model.safetensors", d);
    char p2[512];
    snprintf(p2, sizeof p2, "%s/adapter_model.bin", d);
    rename(p, p2);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_ENOTFOUND, "adapter_model.bin is a Python pickle");
    rename(p2, p);
    assert_refused(lora_load(&l, m, p, 1, err, sizeof err), MG_EFORMAT, "pass the folder");
    /* truncated weights file */
    FILE *f = fopen(p, "rb");
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes(p, buf, n - 100, NULL, 0);
    assert_refused(lora_load(&l, m, d, 1, err, sizeof err), MG_EFORMAT, "end outside the data");
    assert_non_null(strstr(err, "safetensors: "));
    /* not a scale */
    assert_refused(lora_load(&l, m, d, 1.0f / 0.0f, err, sizeof err), MG_EINVAL, "not a finite number");
    model_close(m);
}

/* ---- the fixtures ---------------------------------------------------------------------- */

static const char *const families[] = {"qwen3moe-tiny", "qwen2moe-tiny", "mixtral-tiny", "deepseek2-lite-tiny",
                                        "deepseek3-tiny"};
#define N_FAM 5

static bool same_pairs(const model *m, const model_lora *a, const model_lora *b)
{
    for (int64_t il = 0; il < a->n_layer; il++)
        for (int t = 0; t < LORA_N_TARGET; t++) {
            const lora_pair *p = a->layer[il].t[t], *q = b->layer[il].t[t];
            if (!p != !q)
                return false;
            if (!p)
                continue;
            int64_t n_out, n_in, ne;
            assert_int_equal(model_lora_shape(m, il, (enum lora_target)t, &n_out, &n_in, &ne), 0);
            for (int64_t e = 0; e < ne; e++) {
                if (p[e].r != q[e].r || p[e].type != q[e].type || p[e].scale != q[e].scale)
                    return false;
                size_t es = p[e].type == TENSOR_F32 ? 4 : 2;
                if (p[e].r && (memcmp(p[e].a, q[e].a, es * (size_t)(p[e].r * n_in)) ||
                               memcmp(p[e].bt, q[e].bt, es * (size_t)(p[e].r * n_out))))
                    return false;
            }
        }
    return true;
}

static void test_fixtures(void **s)
{
    (void)s;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", fixture("adapters"));
    DIR *dd = opendir(dir);
    if (!dd)
        fail_msg("no %s: run make fixtures", dir);
    int n_loaded = 0;
    model *bases[N_FAM];
    for (int i = 0; i < N_FAM; i++)
        bases[i] = open_base(families[i]);
    struct dirent *de;
    uint64_t last_id = 0;
    while ((de = readdir(dd))) {
        if (de->d_name[0] == '.')
            continue;
        int fi = -1;
        for (int i = 0; i < N_FAM; i++)
            if (!strncmp(de->d_name, families[i], strlen(families[i])) && de->d_name[strlen(families[i])] == '-')
                fi = i;
        assert_true(fi >= 0);
        char p[8500];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        model_lora *l;
        if (lora_load(&l, bases[fi], p, 1.0f, err, sizeof err))
            fail_msg("%s: %s", de->d_name, err);
        assert_int_equal(model_lora_check(bases[fi], l, err, sizeof err), 0);
        assert_int_equal(atomic_load(&l->refs), 1);
        assert_true(l->id != 0 && l->id != last_id);
        last_id = l->id;
        lora_info in;
        assert_int_equal(lora_inspect(&in, p, err, sizeof err), 0);
        assert_int_equal(in.bytes, lora_bytes(l));
        assert_int_equal(in.hidden, 256);
        assert_int_equal(in.format, strstr(de->d_name, ".gguf") ? LORA_FORMAT_GGUF : LORA_FORMAT_PEFT);
        /* another family's base refuses it as such */
        model_lora *l2;
        int other = (fi + 1) % N_FAM;
        int rc = lora_load(&l2, bases[other], p, 1.0f, err, sizeof err);
        if (rc == 0)
            fail_msg("%s loaded on %s", de->d_name, families[other]);
        assert_non_null(strstr(err, de->d_name));
        model_lora_release(l);
        n_loaded++;
    }
    closedir(dd);
    assert_true(n_loaded >= 30);
    /* the same matrices as PEFT, PEFT with fan_in_fan_out, and GGUF (rows permuted by
     * the loader for PEFT llama q/k, by the converter for GGUF) load identically */
    for (int i = 0; i < N_FAM; i++) {
        model_lora *a, *b, *c;
        char p[8500];
        snprintf(p, sizeof p, "%s/%s-peft-r8-f32", dir, families[i]);
        assert_int_equal(lora_load(&a, bases[i], p, 1.0f, err, sizeof err), 0);
        snprintf(p, sizeof p, "%s/%s-peft-r8-fanin-f32", dir, families[i]);
        assert_int_equal(lora_load(&b, bases[i], p, 1.0f, err, sizeof err), 0);
        snprintf(p, sizeof p, "%s/%s-gguf-r8-f32.gguf", dir, families[i]);
        assert_int_equal(lora_load(&c, bases[i], p, 1.0f, err, sizeof err), 0);
        assert_true(same_pairs(bases[i], a, b));
        assert_true(same_pairs(bases[i], a, c));
        assert_true(a->id != b->id && b->id != c->id);
        model_lora_release(a);
        model_lora_release(b);
        model_lora_release(c);
    }
    /* GGUF: another architecture, a model file */
    char p[8500];
    snprintf(p, sizeof p, "%s/mixtral-tiny-gguf-r8-f32.gguf", dir);
    model_lora *l;
    assert_refused(lora_load(&l, bases[0], p, 1, err, sizeof err), MG_EFORMAT,
                   "adapter for architecture 'llama', the base model is 'qwen3moe'");
    assert_refused(lora_load(&l, bases[0], fixture("qwen3moe-tiny-f32.gguf"), 1, err, sizeof err), MG_EFORMAT,
                   "not a GGUF adapter");
    /* user scale */
    snprintf(p, sizeof p, "%s/qwen3moe-tiny-peft-r4-rslora-f16", dir);
    assert_int_equal(lora_load(&l, bases[0], p, 0.25f, err, sizeof err), 0);
    assert_float_equal(l->layer[1].t[LORA_ATTN_V][0].scale, 8 / 2.0 * 0.25, 1e-6);
    assert_int_equal(l->layer[1].t[LORA_ATTN_V][0].type, TENSOR_F16);
    assert_int_equal(l->layer[1].t[LORA_EXP_UP][3].r, 4);
    assert_int_equal(l->layer[1].t[LORA_EXP_UP][4].r, 0);
    model_lora_release(l);
    for (int i = 0; i < N_FAM; i++)
        model_close(bases[i]);
}

/* ---- registry ---------------------------------------------------------------------------- */

static int destroyed;
static void (*real_destroy)(model_lora *);
static void counting_destroy(model_lora *l)
{
    destroyed++;
    real_destroy(l);
}

typedef struct hammer {
    lora_registry *r;
    int iters;
} hammer;

static void *acquire_loop(void *p)
{
    hammer *h = p;
    for (int i = 0; i < h->iters; i++) {
        model_lora *l = lora_registry_acquire(h->r, i % 2 ? "fin" : "med");
        if (l) {
            assert_true(l->n_layer == 2);
            model_lora_release(l);
        }
    }
    return NULL;
}

static void test_registry(void **s)
{
    (void)s;
    model *m = open_base("qwen3moe-tiny");
    lora_registry *r;
    assert_int_equal(lora_registry_create(&r, m, err, sizeof err), 0);
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s", fixture("adapters/qwen3moe-tiny-peft-r8-f32"));
    snprintf(b, sizeof b, "%s", fixture("adapters/qwen3moe-tiny-gguf-r16-attn-f16.gguf"));
    assert_int_equal(lora_registry_load(r, "fin", a, 1.0f, err, sizeof err), 0);
    assert_int_equal(lora_registry_load(r, "med", b, 0.5f, err, sizeof err), 0);
    assert_refused(lora_registry_load(r, "fin", b, 1.0f, err, sizeof err), MG_EBUSY, "already loaded");
    assert_refused(lora_registry_load(r, "bad name", b, 1.0f, err, sizeof err), MG_EINVAL, "is not 1..63");
    assert_refused(lora_registry_load(r, "", b, 1.0f, err, sizeof err), MG_EINVAL, "is not");
    assert_refused(lora_registry_load(r, "x", "/nonexistent", 1.0f, err, sizeof err), MG_EIO, "no such file");
    assert_null(lora_registry_acquire(r, "x"));
    lora_registry_entry e[4];
    assert_int_equal(lora_registry_list(r, e, 4), 2);
    assert_string_equal(e[0].name, "fin");
    assert_string_equal(e[1].path, b);
    assert_int_equal(e[0].refs, 1);
    assert_true(e[0].bytes > 0 && e[0].id != e[1].id);
    assert_int_equal(lora_registry_list(r, e, 1), 2);

    model_lora *fin = lora_registry_acquire(r, "fin");
    assert_non_null(fin);
    assert_int_equal(atomic_load(&fin->refs), 2);
    assert_int_equal(lora_registry_list(r, e, 4), 2);
    assert_int_equal(e[0].refs, 2);
    real_destroy = fin->destroy;
    fin->destroy = counting_destroy;
    destroyed = 0;
    /* unload while acquired: gone from the registry, alive for its user */
    assert_int_equal(lora_registry_unload(r, "fin"), 0);
    assert_int_equal(lora_registry_unload(r, "fin"), MG_ENOTFOUND);
    assert_null(lora_registry_acquire(r, "fin"));
    assert_int_equal(lora_registry_list(r, e, 4), 1);
    assert_string_equal(e[0].name, "med");
    assert_int_equal(destroyed, 0);
    assert_int_equal(atomic_load(&fin->refs), 1);
    assert_int_equal(fin->layer[1].t[LORA_EXP_GATE][15].r, 8); /* still readable */
    model_lora_release(fin);
    assert_int_equal(destroyed, 1);
    /* the name is free again; a reload gets a new id */
    assert_int_equal(lora_registry_load(r, "fin", a, 1.0f, err, sizeof err), 0);
    /* acquire/release from threads while loading and unloading */
    hammer h = {r, 20000};
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, acquire_loop, &h);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(lora_registry_unload(r, "med"), 0);
        assert_int_equal(lora_registry_load(r, "med", b, 1.0f, err, sizeof err), 0);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    /* an adapter acquired when the registry is freed outlives it */
    model_lora *med = lora_registry_acquire(r, "med");
    lora_registry_free(r);
    assert_int_equal(atomic_load(&med->refs), 1);
    model_lora_release(med);
    lora_registry_free(NULL);
    model_close(m);
}

/* ---- PEFT config parsing on its own ------------------------------------------------------- */

static void test_peft_config(void **s)
{
    (void)s;
    peft_config c;
    const char *j = "{\"peft_type\":\"LORA\",\"r\":16,\"lora_alpha\":32,\"target_modules\":\"all-linear\","
                    "\"rank_pattern\":{\"experts\\\\.\\\\d+\\\\.down_proj\":4,\"model.layers.1.self_attn.q_proj\":2}}";
    assert_int_equal(peft_config_parse(&c, j, strlen(j), "cfg", err, sizeof err), 0);
    int32_t r;
    double alpha;
    bool tg;
    assert_int_equal(peft_config_module(&c, "model.layers.0.mlp.experts.7.down_proj", 0, &r, &alpha, &tg, err, sizeof err), 0);
    assert_int_equal(r, 4);
    assert_true(tg);
    assert_int_equal(peft_config_module(&c, "model.layers.1.self_attn.q_proj", 1, &r, &alpha, &tg, err, sizeof err), 0);
    assert_int_equal(r, 2);
    assert_int_equal(peft_config_module(&c, "model.layers.0.self_attn.q_proj", 0, &r, &alpha, &tg, err, sizeof err), 0);
    assert_int_equal(r, 16);
    assert_true(alpha == 32);
    peft_config_free(&c);
    enum lora_target t;
    int64_t ex;
    assert_true(peft_module_target("block_sparse_moe.experts.7.w3", &t, &ex));
    assert_int_equal(t, LORA_EXP_UP);
    assert_int_equal(ex, 7);
    assert_true(peft_module_target("mlp.shared_experts.down_proj", &t, &ex));
    assert_int_equal(t, LORA_SHEXP_DOWN);
    assert_false(peft_module_target("mlp.experts.07.w3", &t, &ex));
    assert_false(peft_module_target("mlp.experts.1.w3", &t, &ex));
    assert_false(peft_module_target("self_attn.q_proj.base_layer", &t, &ex));
    const char *bad[] = {"[]", "{}", "{\"peft_type\":\"LORA\",\"lora_alpha\":\"x\"}",
                         "{\"peft_type\":\"LORA\",\"rank_pattern\":{\"q\":0}}",
                         "{\"peft_type\":\"LORA\",\"layers_to_transform\":[1],\"layers_pattern\":\"h\"}",
                         "{\"peft_type\":\"LORA\",\"target_modules\":[1]}",
                         "{\"peft_type\":\"LORA\",\"megatron_config\":{\"a\":1}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        assert_true(peft_config_parse(&c, bad[i], strlen(bad[i]), "cfg", err, sizeof err) < 0);
        assert_non_null(strstr(err, "lora: cfg: "));
        peft_config_free(&c);
    }
}

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mg_lora_test_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors_valid), cmocka_unit_test(test_safetensors_broken),
        cmocka_unit_test(test_peft_config),       cmocka_unit_test(test_peft_refusals),
        cmocka_unit_test(test_fixtures),          cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests_name("lora_load", tests, setup, teardown);
}
