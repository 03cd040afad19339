/* moegate — PEFT LoRA adapters: adapter_config.json + adapter_model.safetensors
 * (what the PEFT library's save_pretrained writes for a LoraConfig).
 *
 * The configuration is parsed and checked first (peft_config_parse): the
 * options that change what the weights mean are honoured, the ones that
 * add weights or behaviour we do not implement are refused by name (the
 * list is in adapters/lora.h). Then every tensor of the safetensors file
 * must be one half of a LoRA pair:
 *     [base_model.model.]model.layers.N.<module>.lora_A.weight   [r][in]
 *     [base_model.model.]model.layers.N.<module>.lora_B.weight   [out][r]
 * where <module> maps to a target (peft_module_target) and is selected by
 * target_modules / exclude_modules / layers_to_transform. Anything else is
 * refused by name: silently ignoring a tensor would serve a different model
 * than the one the adapter's author trained.
 *
 * Matching follows PEFT: a list entry of target_modules (exclude_modules)
 * selects a module whose key equals it or ends with "." + it; a string is
 * a regular expression the whole key must match; rank_pattern and
 * alpha_pattern keys match a key equal to them, else (first in file order)
 * one that the regular expression (.*\.)?(KEY)$ matches. Regular
 * expressions run on PCRE2 with a match limit, so a hostile pattern costs a
 * bounded time and fails as an error.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "adapters/lora_internal.h"
#include "core/errors.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define MAX_LAYER_INDEX  100000
#define MAX_EXPERT_INDEX 100000
#define MAX_RANK         65536

/* ---- module names ---------------------------------------------------------------- */

static const struct {
    const char *name;
    enum lora_target t;
} plain_modules[] = {
    {"self_attn.q_proj", LORA_ATTN_Q},
    {"self_attn.k_proj", LORA_ATTN_K},
    {"self_attn.v_proj", LORA_ATTN_V},
    {"self_attn.o_proj", LORA_ATTN_O},
    {"self_attn.q_a_proj", LORA_ATTN_Q_A},
    {"self_attn.q_b_proj", LORA_ATTN_Q_B},
    {"self_attn.kv_a_proj_with_mqa", LORA_ATTN_KV_A},
    {"self_attn.kv_b_proj", LORA_ATTN_KV_B},
    {"mlp.gate_proj", LORA_FFN_GATE},
    {"mlp.up_proj", LORA_FFN_UP},
    {"mlp.down_proj", LORA_FFN_DOWN},
    {"mlp.shared_expert.gate_proj", LORA_SHEXP_GATE}, /* Qwen2-MoE */
    {"mlp.shared_expert.up_proj", LORA_SHEXP_UP},
    {"mlp.shared_expert.down_proj", LORA_SHEXP_DOWN},
    {"mlp.shared_experts.gate_proj", LORA_SHEXP_GATE}, /* DeepSeek-V2/V3 */
    {"mlp.shared_experts.up_proj", LORA_SHEXP_UP},
    {"mlp.shared_experts.down_proj", LORA_SHEXP_DOWN},
};

static const struct {
    const char *prefix, *suffix;
    enum lora_target t;
} expert_modules[] = {
    {"mlp.experts.", ".gate_proj", LORA_EXP_GATE}, /* Qwen2/3-MoE, DeepSeek */
    {"mlp.experts.", ".up_proj", LORA_EXP_UP},
    {"mlp.experts.", ".down_proj", LORA_EXP_DOWN},
    {"block_sparse_moe.experts.", ".w1", LORA_EXP_GATE}, /* Mixtral */
    {"block_sparse_moe.experts.", ".w3", LORA_EXP_UP},
    {"block_sparse_moe.experts.", ".w2", LORA_EXP_DOWN},
};

/* A decimal index without sign or leading zeros, at most max; *end after it. */
static bool parse_index(const char *s, int64_t max, int64_t *out, const char **end)
{
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9'))
        return false;
    int64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (*s++ - '0');
        if (v > max)
            return false;
    }
    *out = v;
    *end = s;
    return true;
}

bool peft_module_target(const char *rest, enum lora_target *t, int64_t *expert)
{
    for (size_t i = 0; i < sizeof plain_modules / sizeof plain_modules[0]; i++)
        if (!strcmp(rest, plain_modules[i].name)) {
            *t = plain_modules[i].t;
            *expert = -1;
            return true;
        }
    for (size_t i = 0; i < sizeof expert_modules / sizeof expert_modules[0]; i++) {
        size_t pl = strlen(expert_modules[i].prefix);
        const char *end;
        int64_t e;
        if (!strncmp(rest, expert_modules[i].prefix, pl) && parse_index(rest + pl, MAX_EXPERT_INDEX, &e, &end) &&
            !strcmp(end, expert_modules[i].suffix)) {
            *t = expert_modules[i].t;
            *expert = e;
            return true;
        }
    }
    return false;
}

/* ---- regular expressions ------------------------------------------------------------ */

/* 1: pattern (wrapped as prefix + pattern + suffix) matches the whole of s;
 * 0: it does not; MG_EFORMAT (message names field) when it does not compile
 * or exceeds the match limit. */
static int regex_full(const char *field, const char *prefix, const char *pattern, const char *suffix,
                      const char *s, char *err, size_t errlen)
{
    size_t n = strlen(prefix) + strlen(pattern) + strlen(suffix) + 1;
    char *re = malloc(n);
    if (!re)
        return MG_ENOMEM;
    snprintf(re, n, "%s%s%s", prefix, pattern, suffix);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
                                     PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &ec, &eo, NULL);
    free(re);
    if (!code) {
        char msg[128];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        mg_err_set(err, errlen, "%s: '%.64s' is not a regular expression: %s", field, pattern, msg);
        return MG_EFORMAT;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    int rc = MG_ENOMEM;
    if (md && mc) {
        pcre2_set_match_limit(mc, 1000000);
        pcre2_set_depth_limit(mc, 10000);
        int m = pcre2_match(code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, mc);
        if (m >= 0)
            rc = 1;
        else if (m == PCRE2_ERROR_NOMATCH)
            rc = 0;
        else {
            mg_err_set(err, errlen, "%s: regular expression '%.64s' failed on '%.128s' (error %d)", field,
                       pattern, s, m);
            rc = MG_EFORMAT;
        }
    }
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(code);
    return rc;
}

/* target_modules / exclude_modules: 1 when key is selected. */
static int modules_select(const char *field, const json_t *v, const char *key, char *err, size_t errlen)
{
    if (json_is_string(v)) {
        if (!strcmp(json_string_value(v), "all-linear"))
            return 1;
        return regex_full(field, "", json_string_value(v), "", key, err, errlen);
    }
    size_t i, kl = strlen(key);
    const json_t *x;
    json_array_foreach(v, i, x)
    {
        const char *t = json_string_value(x);
        size_t tl = strlen(t);
        if (!strcmp(key, t) || (kl > tl && key[kl - tl - 1] == '.' && !strcmp(key + kl - tl, t)))
            return 1;
    }
    return 0;
}

/* rank_pattern / alpha_pattern: the value for key, or NULL. */
static int pattern_lookup(const char *field, const json_t *obj, const char *key, const json_t **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    if (!obj)
        return 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!strcmp(k, key)) {
            *out = v;
            return 0;
        }
    }
    json_object_foreach((json_t *)obj, k, v)
    {
        int m = regex_full(field, "(?:.*\\.)?(?:", k, ")", key, err, errlen);
        if (m < 0)
            return m;
        if (m) {
            *out = v;
            return 0;
        }
    }
    return 0;
}

int peft_config_module(const peft_config *c, const char *key, int64_t layer, int32_t *r, double *alpha,
                       bool *targeted, char *err, size_t errlen)
{
    const json_t *v;
    int rc = pattern_lookup("rank_pattern", c->rank_pattern, key, &v, err, errlen);
    if (rc)
        return rc;
    *r = v ? (int32_t)json_integer_value(v) : c->r;
    rc = pattern_lookup("alpha_pattern", c->alpha_pattern, key, &v, err, errlen);
    if (rc)
        return rc;
    *alpha = v ? json_number_value(v) : c->alpha;
    *targeted = true;
    if (c->target_modules) {
        int m = modules_select("target_modules", c->target_modules, key, err, errlen);
        if (m < 0)
            return m;
        *targeted = m;
    }
    if (*targeted && c->exclude_modules) {
        int m = modules_select("exclude_modules", c->exclude_modules, key, err, errlen);
        if (m < 0)
            return m;
        *targeted = !m;
    }
    if (*targeted && c->layers) {
        bool in = false;
        for (int64_t i = 0; i < c->n_layers; i++)
            in |= c->layers[i] == layer;
        *targeted = in;
    }
    return MG_OK;
}

/* ---- adapter_config.json -------------------------------------------------------------- */

void peft_config_free(peft_config *c)
{
    if (!c)
        return;
    json_decref(c->root);
    free(c->layers);
    memset(c, 0, sizeof *c);
}

/* A field that must be absent, null, false, empty or equal to an allowed
 * string: non-zero (and a message) otherwise. */
static bool is_off(const json_t *v)
{
    return !v || json_is_null(v) || json_is_false(v) || (json_is_array(v) && json_array_size(v) == 0) ||
           (json_is_object(v) && json_object_size(v) == 0);
}

static int modules_field(const json_t *v, const char *field, const char *label, char *err, size_t errlen)
{
    if (json_is_string(v))
        return MG_OK;
    if (!json_is_array(v)) {
        mg_err_set(err, errlen, "lora: %s: field '%s' is not a list of module names or a string", label, field);
        return MG_EFORMAT;
    }
    size_t i;
    const json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!json_is_string(x) || !json_string_length(x)) {
            mg_err_set(err, errlen, "lora: %s: field '%s' item %zu is not a module name", label, field, i);
            return MG_EFORMAT;
        }
    }
    return MG_OK;
}

int peft_config_parse(peft_config *c, const char *text, size_t len, const char *label, char *err,
                      size_t errlen)
{
    memset(c, 0, sizeof *c);
    json_error_t je;
    c->root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!c->root) {
        mg_err_set(err, errlen, "lora: %s: JSON error at line %d column %d: %s", label, je.line, je.column,
                   je.text);
        return MG_EFORMAT;
    }
    json_t *root = c->root;
    if (!json_is_object(root)) {
        mg_err_set(err, errlen, "lora: %s: not a JSON object", label);
        return MG_EFORMAT;
    }
    json_t *v = json_object_get(root, "peft_type");
    if (!json_is_string(v)) {
        mg_err_set(err, errlen, "lora: %s: field 'peft_type' %s (expected \"LORA\")", label,
                   v ? "is not a string" : "is missing");
        return MG_EFORMAT;
    }
    if (strcmp(json_string_value(v), "LORA")) {
        mg_err_set(err, errlen, "lora: %s: peft_type '%.64s' is not supported (only LORA)", label,
                   json_string_value(v));
        return MG_EUNSUPPORTED;
    }
    /* rank and alpha: PEFT's defaults (8, 8) when absent */
    c->r = 8;
    v = json_object_get(root, "r");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > MAX_RANK) {
            mg_err_set(err, errlen, "lora: %s: field 'r' is not an integer in 1..%d", label, MAX_RANK);
            return MG_EFORMAT;
        }
        c->r = (int32_t)json_integer_value(v);
    }
    c->alpha = 8;
    v = json_object_get(root, "lora_alpha");
    if (v) {
        if (!json_is_number(v) || !isfinite(json_number_value(v))) {
            mg_err_set(err, errlen, "lora: %s: field 'lora_alpha' is not a number", label);
            return MG_EFORMAT;
        }
        c->alpha = json_number_value(v);
    }
    static const char *const bools[] = {"use_rslora", "fan_in_fan_out"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(root, bools[i]);
        if (v && !json_is_boolean(v) && !json_is_null(v)) {
            mg_err_set(err, errlen, "lora: %s: field '%s' is not true or false", label, bools[i]);
            return MG_EFORMAT;
        }
    }
    c->rslora = json_is_true(json_object_get(root, "use_rslora"));
    c->fan_in_fan_out = json_is_true(json_object_get(root, "fan_in_fan_out"));
    /* options that add weights or behaviour we do not implement */
    static const struct {
        const char *field, *why;
    } refused[] = {
        {"use_dora", "DoRA (weight-decomposed LoRA) is not supported"},
        {"modules_to_save", "modules_to_save (fully trained extra modules) is not supported"},
        {"lora_bias", "LoRA bias vectors are not supported"},
        {"layer_replication", "layer replication is not supported"},
        {"megatron_config", "Megatron-parallel LoRA is not supported"},
        {"target_parameters", "LoRA on parameters (target_parameters) is not supported"},
        {"trainable_token_indices", "trainable token embeddings are not supported"},
        {"alora_invocation_tokens", "activated LoRA (aLoRA) is not supported"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        v = json_object_get(root, refused[i].field);
        if (!is_off(v)) {
            mg_err_set(err, errlen, "lora: %s: field '%s': %s", label, refused[i].field, refused[i].why);
            return MG_EUNSUPPORTED;
        }
    }
    v = json_object_get(root, "bias");
    if (v && !json_is_null(v) && !(json_is_string(v) && !strcmp(json_string_value(v), "none"))) {
        mg_err_set(err, errlen, "lora: %s: field 'bias' is %s%.32s%s: only \"none\" is supported (no bias "
                   "vectors)", label, json_is_string(v) ? "\"" : "", json_is_string(v) ? json_string_value(v) : "not a string",
                   json_is_string(v) ? "\"" : "");
        return MG_EUNSUPPORTED;
    }
    /* module selection */
    v = json_object_get(root, "target_modules");
    if (v && !json_is_null(v)) {
        int rc = modules_field(v, "target_modules", label, err, errlen);
        if (rc)
            return rc;
        c->target_modules = v;
    }
    v = json_object_get(root, "exclude_modules");
    if (v && !json_is_null(v)) {
        int rc = modules_field(v, "exclude_modules", label, err, errlen);
        if (rc)
            return rc;
        c->exclude_modules = v;
    }
    static const char *const pats[] = {"rank_pattern", "alpha_pattern"};
    for (int i = 0; i < 2; i++) {
        v = json_object_get(root, pats[i]);
        if (!v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0))
            continue;
        if (!json_is_object(v)) {
            mg_err_set(err, errlen, "lora: %s: field '%s' is not an object", label, pats[i]);
            return MG_EFORMAT;
        }
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            bool ok = i == 0 ? json_is_integer(x) && json_integer_value(x) >= 1 &&
                                   json_integer_value(x) <= MAX_RANK
                             : json_is_number(x) && isfinite(json_number_value(x));
            if (!ok || !*k) {
                mg_err_set(err, errlen, "lora: %s: field '%s' entry '%.64s' is not %s", label, pats[i], k,
                           i == 0 ? "a rank (an integer >= 1)" : "a number");
                return MG_EFORMAT;
            }
        }
        if (i == 0)
            c->rank_pattern = v;
        else
            c->alpha_pattern = v;
    }
    v = json_object_get(root, "layers_to_transform");
    if (v && !json_is_null(v)) {
        size_t n = json_is_array(v) ? json_array_size(v) : 1;
        c->layers = malloc(sizeof *c->layers * (n ? n : 1));
        if (!c->layers)
            return MG_ENOMEM;
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_is_array(v) ? json_array_get(v, i) : v;
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > MAX_LAYER_INDEX) {
                mg_err_set(err, errlen, "lora: %s: field 'layers_to_transform' is not a layer index or a list "
                           "of them", label);
                return MG_EFORMAT;
            }
            c->layers[i] = json_integer_value(x);
        }
        c->n_layers = (int64_t)n;
        /* the layer index is the N of model.layers.N: any other pattern names another list */
        json_t *p = json_object_get(root, "layers_pattern");
        bool ok = !p || json_is_null(p) || (json_is_string(p) && !strcmp(json_string_value(p), "layers"));
        if (json_is_array(p)) {
            ok = json_array_size(p) > 0;
            size_t i;
            json_t *x;
            json_array_foreach(p, i, x) ok &= json_is_string(x) && !strcmp(json_string_value(x), "layers");
        }
        if (!ok) {
            mg_err_set(err, errlen, "lora: %s: field 'layers_pattern': only \"layers\" (model.layers.N) is "
                       "supported", label);
            return MG_EUNSUPPORTED;
        }
    }
    v = json_object_get(root, "base_model_name_or_path");
    if (json_is_string(v))
        c->base = json_string_value(v);
    return MG_OK;
}

/* ---- the folder ------------------------------------------------------------------------ */

static int read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        mg_err_set(err, errlen, "lora: %s: cannot open: %s", path, strerror(errno));
        return MG_EIO;
    }
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    if (!buf) {
        fclose(f);
        return MG_ENOMEM;
    }
    size_t n = fread(buf, 1, CONFIG_MAX_BYTES + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > CONFIG_MAX_BYTES) {
        free(buf);
        mg_err_set(err, errlen, "lora: %s: %s", path, bad ? "read error" : "larger than 16 MB");
        return bad ? MG_EIO : MG_EFORMAT;
    }
    *out = buf;
    *len = n;
    return MG_OK;
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

static const char *guess_arch(const lora_src *s)
{
    bool mixtral = false, deepseek = false, shared1 = false;
    for (int64_t i = 0; i < s->n; i++) {
        const char *n = s->e[i].a.name;
        mixtral |= strstr(n, "block_sparse_moe.") != NULL;
        deepseek |= strstr(n, "kv_a_proj_with_mqa") || strstr(n, "q_a_proj") || strstr(n, "kv_b_proj") ||
                    strstr(n, "shared_experts.");
        shared1 |= strstr(n, "shared_expert.") != NULL;
    }
    return mixtral ? "llama" : deepseek ? "deepseek2" : shared1 ? "qwen2moe" : "";
}

/* name with suffix replaced by repl (in buf); false when name lacks it. */
static bool swap_suffix(const char *name, const char *suffix, const char *repl, char *buf, size_t cap)
{
    size_t n = strlen(name), sl = strlen(suffix);
    if (n < sl || strcmp(name + n - sl, suffix) || n - sl + strlen(repl) + 1 > cap)
        return false;
    memcpy(buf, name, n - sl);
    strcpy(buf + n - sl, repl);
    return true;
}

/* One lora_A tensor and its lora_B into an entry. */
static int peft_pair(lora_src *s, const peft_config *c, const safetensors_tensor *ta, const char *wpath,
                     char *err, size_t errlen)
{
    char key[SAFETENSORS_MAX_NAME + 32], bname[SAFETENSORS_MAX_NAME + 32];
    const char *name = ta->name;
    const char *k = name;
    if (!strncmp(k, "base_model.model.", 17))
        k += 17;
    if (!swap_suffix(k, ".lora_A.weight", "", key, sizeof key) ||
        !swap_suffix(name, ".lora_A.weight", ".lora_B.weight", bname, sizeof bname))
        return MG_EINVAL; /* the caller only passes lora_A tensors */
    int64_t layer;
    const char *rest;
    enum lora_target t;
    int64_t expert;
    if (strncmp(key, "model.layers.", 13) || !parse_index(key + 13, MAX_LAYER_INDEX, &layer, &rest) ||
        *rest != '.' || !peft_module_target(rest + 1, &t, &expert)) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s': module '%.200s' is not a LoRA target moegate "
                   "applies (attention and MLP/expert projections of model.layers.N)", wpath, name, key);
        return MG_EUNSUPPORTED;
    }
    const safetensors_tensor *tb = safetensors_find(s->st, bname);
    if (!tb) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has no lora_B partner '%.200s'", wpath, name, bname);
        return MG_EFORMAT;
    }
    if (ta->n_dims != 2 || tb->n_dims != 2) {
        const safetensors_tensor *bad = ta->n_dims != 2 ? ta : tb;
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has %d dimensions (a LoRA matrix has 2)", wpath,
                   bad->name, bad->n_dims);
        return MG_EFORMAT;
    }
    int32_t r;
    double alpha;
    bool targeted;
    char e2[400];
    int rc = peft_config_module(c, key, layer, &r, &alpha, &targeted, e2, sizeof e2);
    if (rc) {
        mg_err_set(err, errlen, "lora: %s/adapter_config.json: %s", s->path, e2);
        return rc;
    }
    if (!targeted) {
        mg_err_set(err, errlen, "lora: %s: tensor '%.200s': module '%.200s' is not selected by adapter_config.json "
                   "(target_modules, exclude_modules or layers_to_transform)", wpath, name, key);
        return MG_EFORMAT;
    }
    if (ta->shape[0] != tb->shape[1]) {
        mg_err_set(err, errlen, "lora: %s: module '%.200s': rank mismatch: lora_A is [%lld, %lld] (rank %lld), "
                   "lora_B is [%lld, %lld] (rank %lld)", wpath, key, (long long)ta->shape[0], (long long)ta->shape[1],
                   (long long)ta->shape[0], (long long)tb->shape[0], (long long)tb->shape[1], (long long)tb->shape[1]);
        return MG_EFORMAT;
    }
    if (ta->shape[0] != r) {
        mg_err_set(err, errlen, "lora: %s: module '%.200s': lora_A has rank %lld, adapter_config.json says %d%s",
                   wpath, key, (long long)ta->shape[0], (int)r,
                   c->rank_pattern ? " (r or rank_pattern)" : " (r)");
        return MG_EFORMAT;
    }
    lora_entry *e = lora_src_add(s);
    if (!e)
        return MG_ENOMEM;
    e->layer = layer;
    e->target = t;
    e->expert = expert;
    e->a = (lora_mat){ta->data, ta->type, {ta->shape[1], ta->shape[0], 1}, ta->name};
    e->b = (lora_mat){tb->data, tb->type, {tb->shape[1], tb->shape[0], 1}, tb->name};
    e->r = r;
    e->scale = c->rslora ? alpha / sqrt((double)r) : alpha / r;
    e->hf_rows = true;
    return MG_OK;
}

int lora_peft_open(lora_src *s, const char *dir, char *err, size_t errlen)
{
    char cpath[1100], wpath[1100];
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    snprintf(wpath, sizeof wpath, "%s/adapter_model.safetensors", dir);
    s->format = LORA_FORMAT_PEFT;
    if (!exists(cpath)) {
        mg_err_set(err, errlen, "lora: %s: a PEFT adapter folder needs adapter_config.json", dir);
        return MG_ENOTFOUND;
    }
    if (!exists(wpath)) {
        snprintf(wpath, sizeof wpath, "%s/adapter_model.bin", dir);
        bool bin = exists(wpath);
        mg_err_set(err, errlen, "lora: %s: no adapter_model.safetensors%s", dir,
                   bin ? " (adapter_model.bin is a Python pickle, which is never read: convert it to "
                         "safetensors)" : "");
        return MG_ENOTFOUND;
    }
    char *text = NULL;
    size_t len = 0;
    int rc = read_file(cpath, &text, &len, err, errlen);
    if (rc)
        return rc;
    peft_config c;
    rc = peft_config_parse(&c, text, len, cpath, err, errlen);
    free(text);
    if (rc)
        goto done;
    rc = safetensors_open(&s->st, wpath, err, errlen);
    if (rc)
        goto done;
    s->alpha = c.alpha;
    s->rslora = c.rslora;
    s->fan_in_fan_out = c.fan_in_fan_out;
    s->alpha_varies = c.alpha_pattern != NULL;
    s->n_layer = -1;
    if (c.base)
        snprintf(s->base, sizeof s->base, "%s", c.base);
    /* every tensor is half of a pair: pairs are made from their lora_A */
    for (int64_t i = 0; i < safetensors_count(s->st); i++) {
        const safetensors_tensor *t = safetensors_at(s->st, i);
        const char *n = t->name;
        size_t nl = strlen(n);
        char other[SAFETENSORS_MAX_NAME + 32];
        if (nl > 14 && !strcmp(n + nl - 14, ".lora_A.weight")) {
            rc = peft_pair(s, &c, t, wpath, err, errlen);
            if (rc)
                goto done;
        } else if (nl > 14 && !strcmp(n + nl - 14, ".lora_B.weight")) {
            swap_suffix(n, ".lora_B.weight", ".lora_A.weight", other, sizeof other);
            if (!safetensors_find(s->st, other)) {
                mg_err_set(err, errlen, "lora: %s: tensor '%.200s' has no lora_A partner", wpath, n);
                rc = MG_EFORMAT;
                goto done;
            }
        } else if (strstr(n, "lora_magnitude_vector")) {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' is a DoRA magnitude vector: DoRA is not supported",
                       wpath, n);
            rc = MG_EUNSUPPORTED;
            goto done;
        } else {
            mg_err_set(err, errlen, "lora: %s: tensor '%.200s' is not a LoRA matrix (expected names ending in "
                       ".lora_A.weight or .lora_B.weight)", wpath, n);
            rc = MG_EUNSUPPORTED;
            goto done;
        }
    }
    if (s->n == 0) {
        mg_err_set(err, errlen, "lora: %s: no LoRA tensors", wpath);
        rc = MG_EFORMAT;
        goto done;
    }
    snprintf(s->arch, sizeof s->arch, "%s", guess_arch(s));
done:
    peft_config_free(&c);
    return rc;
}
