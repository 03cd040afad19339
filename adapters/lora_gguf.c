/* moegate — GGUF LoRA adapters (the layout llama.cpp's convert_lora_to_gguf
 * writes and its loader reads).
 *
 * Metadata: general.type = "adapter", adapter.type = "lora",
 * adapter.lora.alpha (float; absent or 0 means a scale of 1, as llama.cpp
 * reads it), general.architecture (compared with the base's at load).
 * Tensors, for each adapted base matrix blk.N.<target>.weight:
 *     blk.N.<target>.weight.lora_a   ne [n_in, r]        (A, [r][n_in] row-major)
 *     blk.N.<target>.weight.lora_b   ne [r, n_out]       (B, [n_out][r])
 * and for routed-expert targets the stacks ne [n_in, r, n_expert] and
 * [r, n_out, n_expert]. Types F32, F16 or BF16. The converter has already
 * put B's rows in the GGUF base's order (llama q/k permuted), so nothing is
 * permuted here. The split MLA tensors attn_k_b / attn_v_b, embeddings and
 * the output head are no targets and are refused by name, as is any other
 * tensor.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "adapters/lora_internal.h"
#include "core/errors.h"
#include "core/tensor.h"

#define MAX_LAYER_INDEX 100000

static bool parse_layer(const char *s, int64_t *out, const char **end)
{
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    int64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > MAX_LAYER_INDEX)
            return false;
    }
    *out = v;
    *end = s;
    return true;
}

/* "blk.N.<target>.weight.lora_X": layer, target, and which half. */
static bool parse_name(const char *name, int64_t *layer, enum lora_target *t, bool *is_b, char *target,
                       size_t cap)
{
    const char *p;
    if (strncmp(name, "blk.", 4) || !parse_layer(name + 4, layer, &p) || *p != '.')
        return false;
    p++;
    const char *w = strstr(p, ".weight.lora_");
    if (!w || (strcmp(w, ".weight.lora_a") && strcmp(w, ".weight.lora_b")))
        return false;
    *is_b = w[13] == 'b';
    size_t n = (size_t)(w - p);
    if (n + 1 > cap)
        return false;
    memcpy(target, p, n);
    target[n] = 0;
    for (int i = 0; i < LORA_N_TARGET; i++)
        if (!strcmp(target, lora_target_name((enum lora_target)i))) {
            *t = (enum lora_target)i;
            return true;
        }
    return false;
}

int lora_gguf_open(lora_src *s, const char *path, char *err, size_t errlen)
{
    s->format = LORA_FORMAT_GGUF;
    s->n_layer = -1;
    int rc = gguf_open(&s->g, path, err, errlen);
    if (rc)
        return rc;
    const gguf *g = s->g;
    char buf[64];
    rc = gguf_get_cstr(g, "general.type", buf, sizeof buf);
    if (rc || strcmp(buf, "adapter")) {
        mg_err_set(err, errlen, "lora: %s: not a GGUF adapter: general.type is %s%s%s (expected \"adapter\")", path,
                   rc ? "" : "\"", rc == MG_ENOTFOUND ? "missing (a model file?)" : rc ? "not a string" : buf,
                   rc ? "" : "\"");
        return MG_EFORMAT;
    }
    rc = gguf_get_cstr(g, "adapter.type", buf, sizeof buf);
    if (rc || strcmp(buf, "lora")) {
        mg_err_set(err, errlen, "lora: %s: adapter.type is %s%s%s (only \"lora\" is supported)", path,
                   rc ? "" : "\"", rc == MG_ENOTFOUND ? "missing" : rc ? "not a string" : buf, rc ? "" : "\"");
        return rc ? MG_EFORMAT : MG_EUNSUPPORTED;
    }
    rc = gguf_get_cstr(g, "general.architecture", s->arch, sizeof s->arch);
    if (rc) {
        mg_err_set(err, errlen, "lora: %s: general.architecture is %s", path,
                   rc == MG_ENOTFOUND ? "missing" : "not a short string");
        return MG_EFORMAT;
    }
    double alpha = 0;
    rc = gguf_get_float(g, "adapter.lora.alpha", &alpha);
    if (rc && rc != MG_ENOTFOUND) {
        mg_err_set(err, errlen, "lora: %s: adapter.lora.alpha is not a number", path);
        return MG_EFORMAT;
    }
    if (!isfinite(alpha) || alpha < 0) {
        mg_err_set(err, errlen, "lora: %s: adapter.lora.alpha %g is not a finite number >= 0", path, alpha);
        return MG_EFORMAT;
    }
    s->alpha = alpha;
    if (gguf_get_cstr(g, "general.name", s->base, sizeof s->base))
        s->base[0] = 0;
    char key[64];
    snprintf(key, sizeof key, "%s.block_count", s->arch);
    int64_t bc;
    if (gguf_get_int(g, key, &bc) == 0 && bc > 0)
        s->n_layer = bc;

    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        int64_t layer;
        enum lora_target tg;
        bool is_b;
        char target[64];
        if (!parse_name(t->name, &layer, &tg, &is_b, target, sizeof target)) {
            bool split = strstr(t->name, ".attn_k_b.") || strstr(t->name, ".attn_v_b.");
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' %s", path, t->name,
                       split ? "adapts the split MLA attn_k_b/attn_v_b, which is not supported (adapt attn_kv_b)"
                             : "is not a LoRA tensor of a target moegate applies "
                               "(blk.N.<target>.weight.lora_a / .lora_b)");
            return MG_EUNSUPPORTED;
        }
        if (t->type != TENSOR_F32 && t->type != TENSOR_F16 && t->type != TENSOR_BF16) {
            const tensor_type_info *ti = tensor_type_get(t->type);
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has type %s (F32, F16 or BF16 expected)", path,
                       t->name, ti ? ti->name : "?");
            return MG_EUNSUPPORTED;
        }
        if (t->ne[3] != 1 || (t->ne[2] != 1 && tg < LORA_EXP_GATE)) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has ne [%lld, %lld, %lld, %lld]: a %s LoRA matrix "
                       "has %s", path, t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                       (long long)t->ne[3], tg >= LORA_EXP_GATE ? "routed-expert" : "plain",
                       tg >= LORA_EXP_GATE ? "3 dimensions" : "2 dimensions");
            return MG_EFORMAT;
        }
        if (is_b) {
            char other[320];
            snprintf(other, sizeof other, "%.*s_a", (int)strlen(t->name) - 2, t->name);
            if (!gguf_tensor_find(g, other)) {
                mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has no lora_a partner", path, t->name);
                return MG_EFORMAT;
            }
            continue;
        }
        char other[320];
        snprintf(other, sizeof other, "%.*s_b", (int)strlen(t->name) - 2, t->name);
        const gguf_tensor *tb = gguf_tensor_find(g, other);
        if (!tb) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has no lora_b partner '%.200s'", path, t->name,
                       other);
            return MG_EFORMAT;
        }
        /* lora_b passes the checks above in its own turn; its type and dims
         * are checked here too, since this pair is made now */
        if ((tb->type != TENSOR_F32 && tb->type != TENSOR_F16 && tb->type != TENSOR_BF16) || tb->ne[3] != 1) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has an unsupported type or shape", path, tb->name);
            return MG_EUNSUPPORTED;
        }
        if (t->ne[1] != tb->ne[0]) {
            mg_err_set(err, errlen, "lora: %s: blk.%lld.%s: rank mismatch: lora_a ne [%lld, %lld] has rank %lld, "
                       "lora_b ne [%lld, %lld] rank %lld", path, (long long)layer, target, (long long)t->ne[0],
                       (long long)t->ne[1], (long long)t->ne[1], (long long)tb->ne[0], (long long)tb->ne[1],
                       (long long)tb->ne[0]);
            return MG_EFORMAT;
        }
        if (t->ne[2] != tb->ne[2]) {
            mg_err_set(err, errlen, "lora: %s: blk.%lld.%s: lora_a stacks %lld experts, lora_b %lld", path,
                       (long long)layer, target, (long long)t->ne[2], (long long)tb->ne[2]);
            return MG_EFORMAT;
        }
        if (t->ne[1] < 1 || t->ne[1] > INT32_MAX) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s': rank %lld", path, t->name, (long long)t->ne[1]);
            return MG_EFORMAT;
        }
        lora_entry *e = lora_src_add(s);
        if (!e)
            return MG_ENOMEM;
        e->layer = layer;
        e->target = tg;
        e->expert = -1;
        e->a = (lora_mat){t->data, t->type, {t->ne[0], t->ne[1], t->ne[2]}, t->name};
        e->b = (lora_mat){tb->data, tb->type, {tb->ne[0], tb->ne[1], tb->ne[2]}, tb->name};
        e->r = (int32_t)t->ne[1];
        e->scale = alpha > 0 ? alpha / e->r : 1.0;
        e->hf_rows = false;
    }
    if (s->n == 0) {
        mg_err_set(err, errlen, "lora: %s: no LoRA tensors", path);
        return MG_EFORMAT;
    }
    return MG_OK;
}
