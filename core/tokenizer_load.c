/* tokenizer_load.c — building a tokenizer from GGUF metadata or from a
 * Hugging Face tokenizer.json (+ tokenizer_config.json).
 *
 * Both loaders describe the same thing to tokenizer_internal.h's builder:
 * every token with its type, the merges in rank order, the added tokens, the
 * normaliser and the pre-tokenizer. Everything read is checked; a component
 * we do not implement is refused by name rather than approximated, because a
 * tokenizer that is slightly wrong silently degrades every answer.
 *
 * tokenizer.json is parsed with jansson (the same JSON library the gateway
 * uses); core needs it only here.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/tokenizer_internal.h"

/* ---- GGUF ------------------------------------------------------------------ */

static int gguf_token_id(const gguf *g, const char *key, int32_t n_vocab, int32_t *out, char *err,
                         size_t errlen)
{
    int64_t v;
    int rc = gguf_get_int(g, key, &v);
    if (rc == MG_ENOTFOUND)
        return 0;
    if (rc || v < -1 || v >= n_vocab) {
        mg_err_set(err, errlen, "tokenizer: '%s' is not a token id below %d", key, (int)n_vocab);
        return MG_EFORMAT;
    }
    *out = (int32_t)v;
    return 0;
}

int tokenizer_open_gguf(tokenizer **out, const gguf *g, char *err, size_t errlen)
{
    char model[32], pre[32] = "default";
    int rc = gguf_get_cstr(g, "tokenizer.ggml.model", model, sizeof model);
    if (rc) {
        mg_err_set(err, errlen, "tokenizer: metadata key 'tokenizer.ggml.model' is missing or bad");
        return rc == MG_ENOTFOUND ? rc : MG_EFORMAT;
    }
    enum tokenizer_kind kind;
    if (!strcmp(model, "gpt2"))
        kind = TOKENIZER_BYTE_BPE;
    else if (!strcmp(model, "llama"))
        kind = TOKENIZER_SPM_BPE;
    else {
        mg_err_set(err, errlen, "tokenizer: tokenizer model '%s' is not supported (gpt2, llama)", model);
        return MG_EUNSUPPORTED;
    }
    rc = gguf_get_cstr(g, "tokenizer.ggml.pre", pre, sizeof pre);
    if (rc && rc != MG_ENOTFOUND) {
        mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.pre' is not a short string");
        return MG_EFORMAT;
    }
    enum gguf_type et;
    uint64_t n;
    const void *raw;
    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &raw);
    if (rc || et != GGUF_TYPE_STRING) {
        mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.tokens' is missing or not a string array");
        return rc ? rc : MG_EFORMAT;
    }
    if (n == 0 || n > (1u << 24)) {
        mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.tokens' has %llu entries (1..16777216)",
                   (unsigned long long)n);
        return MG_ERANGE;
    }
    tokenizer *t = NULL;
    rc = tok_create(&t, kind, (int32_t)n, err, errlen);
    if (rc)
        return rc;
    const void *types = NULL;
    uint64_t nt = 0;
    if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nt, &types) == MG_OK) {
        if (nt != n || (et != GGUF_TYPE_INT32 && et != GGUF_TYPE_UINT32)) {
            mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.token_type' must be %llu int32 values",
                       (unsigned long long)n);
            rc = MG_EFORMAT;
            goto fail;
        }
    } else {
        types = NULL;
    }
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if ((rc = gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s)))
            goto fail;
        int32_t ty = TOKENIZER_TYPE_NORMAL;
        if (types)
            memcpy(&ty, (const char *)types + 4 * i, 4);
        else if (kind == TOKENIZER_SPM_BPE && s.len == 6 && !memcmp(s.ptr, "<0x", 3))
            ty = TOKENIZER_TYPE_BYTE;
        if ((rc = tok_set_token(t, (int32_t)i, s.ptr, s.len, ty, err, errlen)))
            goto fail;
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        int ty = t->type[i];
        if (ty == TOKENIZER_TYPE_CONTROL || ty == TOKENIZER_TYPE_USER_DEFINED || ty == TOKENIZER_TYPE_UNKNOWN) {
            if (t->text_len[i] == 0)
                continue;
            if ((rc = tok_add_added(t, i, ty != TOKENIZER_TYPE_USER_DEFINED, false, false)))
                goto oom;
        }
    }
    uint64_t nm = 0;
    if (gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, NULL) == MG_OK) {
        if (et != GGUF_TYPE_STRING) {
            mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.merges' is not a string array");
            rc = MG_EFORMAT;
            goto fail;
        }
        for (uint64_t i = 0; i < nm; i++) {
            gguf_str s;
            if ((rc = gguf_arr_str(g, "tokenizer.ggml.merges", i, &s)))
                goto fail;
            const char *sp = memchr(s.ptr, ' ', s.len);
            if (!sp || sp == s.ptr || sp == s.ptr + s.len - 1) {
                mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.merges'[%llu] is not \"A B\"",
                           (unsigned long long)i);
                rc = MG_EFORMAT;
                goto fail;
            }
            size_t la = (size_t)(sp - s.ptr);
            if ((rc = tok_add_merge(t, s.ptr, la, sp + 1, s.len - la - 1, (int32_t)i)))
                goto oom;
        }
    } else if (kind == TOKENIZER_BYTE_BPE) {
        mg_err_set(err, errlen, "tokenizer: 'tokenizer.ggml.merges' is missing (a gpt2 tokenizer needs it)");
        rc = MG_EFORMAT;
        goto fail;
    }
    float *scores = NULL;
    if (kind == TOKENIZER_SPM_BPE && nm == 0) {
        if (gguf_get_arr(g, "tokenizer.ggml.scores", &et, &nt, &raw) || et != GGUF_TYPE_FLOAT32 || nt != n) {
            mg_err_set(err, errlen, "tokenizer: a llama tokenizer needs 'tokenizer.ggml.scores' (%llu float32) "
                       "or merges", (unsigned long long)n);
            rc = MG_EFORMAT;
            goto fail;
        }
        scores = malloc(n * sizeof *scores);
        if (!scores)
            goto oom;
        memcpy(scores, raw, n * sizeof *scores);
    }
    if (kind == TOKENIZER_BYTE_BPE) {
        if (!strcmp(pre, "default"))
            snprintf(pre, sizeof pre, "gpt-2");
        rc = tok_set_pre(t, pre, err, errlen);
    } else {
        bool prefix = true;
        gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix);
        t->spm_prefix = prefix;
        t->spm_spaces = true;
        t->spm_strip_leading = prefix;
        snprintf(t->pre, sizeof t->pre, "default");
    }
    if (!rc)
        rc = tok_finish(t, scores, err, errlen);
    free(scores);
    if (rc)
        goto fail;
    if ((rc = gguf_token_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos, err, errlen)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos, err, errlen)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk, err, errlen)) ||
        (rc = gguf_token_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad, err, errlen)))
        goto fail;
    t->add_bos = kind == TOKENIZER_SPM_BPE;
    gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    /* EOS became known only now: finish's end-of-generation list needs it */
    if (t->eos >= 0) {
        bool have = false;
        for (int i = 0; i < t->n_eog; i++)
            have |= t->eog[i] == t->eos;
        if (!have && t->n_eog < (int)(sizeof t->eog / sizeof t->eog[0]))
            t->eog[t->n_eog++] = t->eos;
    }
    gguf_str tmpl;
    if (gguf_get_str(g, "tokenizer.chat_template", &tmpl) == MG_OK) {
        t->chat_template = malloc(tmpl.len + 1);
        if (!t->chat_template)
            goto oom;
        memcpy(t->chat_template, tmpl.ptr, tmpl.len);
        t->chat_template[tmpl.len] = '\0';
    }
    *out = t;
    return 0;
oom:
    rc = MG_ENOMEM;
    mg_err_set(err, errlen, "tokenizer: out of memory");
fail:
    tokenizer_free(t);
    return rc;
}

/* ---- Hugging Face tokenizer.json ------------------------------------------------ */

typedef struct {
    const char *file; /* for messages */
    char *err;
    size_t errlen;
} hf_ctx;

static int hf_bad(hf_ctx *c, int rc, const char *fmt, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, what);
    mg_err_set(c->err, c->errlen, "tokenizer: %s: %s", c->file, msg);
    return rc;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jbool(json_t *o, const char *key, bool dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* The normaliser: NFC, or SentencePiece's Prepend("▁") + Replace(" ", "▁"). */
static int hf_normalizer(hf_ctx *c, tokenizer *t, json_t *n)
{
    if (!n || json_is_null(n))
        return 0;
    const char *type = jstr(n, "type");
    if (!type)
        return hf_bad(c, MG_EFORMAT, "%s has no type", "normalizer");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list))
            return hf_bad(c, MG_EFORMAT, "%s is not an array", "normalizer.normalizers");
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            int rc = hf_normalizer(c, t, e);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "NFC")) {
        t->nfc = true;
        return 0;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p || strcmp(p, "\xe2\x96\x81"))
            return hf_bad(c, MG_EUNSUPPORTED, "%s: only U+2581 is supported", "normalizer Prepend");
        t->spm_prefix = true;
        return 0;
    }
    if (!strcmp(type, "Replace")) {
        json_t *pat = json_object_get(n, "pattern");
        const char *from = pat ? jstr(pat, "String") : NULL, *to = jstr(n, "content");
        if (!from || !to || strcmp(from, " ") || strcmp(to, "\xe2\x96\x81"))
            return hf_bad(c, MG_EUNSUPPORTED, "%s: only \" \" -> U+2581 is supported", "normalizer Replace");
        t->spm_spaces = true;
        return 0;
    }
    return hf_bad(c, MG_EUNSUPPORTED, "normalizer type '%s' is not supported (NFC, Prepend, Replace, Sequence)",
                  type);
}

static int hf_pretokenizer(hf_ctx *c, tokenizer *t, json_t *p, bool *byte_level)
{
    if (!p || json_is_null(p))
        return 0;
    const char *type = jstr(p, "type");
    if (!type)
        return hf_bad(c, MG_EFORMAT, "%s has no type", "pre_tokenizer");
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list))
            return hf_bad(c, MG_EFORMAT, "%s is not an array", "pre_tokenizer.pretokenizers");
        size_t i;
        json_t *e;
        json_array_foreach(list, i, e)
        {
            int rc = hf_pretokenizer(c, t, e, byte_level);
            if (rc)
                return rc;
        }
        return 0;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = pat ? jstr(pat, "Regex") : NULL;
        const char *beh = jstr(p, "behavior");
        if (!re)
            return hf_bad(c, MG_EUNSUPPORTED, "%s: only Regex patterns are supported", "pre_tokenizer Split");
        if (!beh || strcmp(beh, "Isolated") || jbool(p, "invert", false))
            return hf_bad(c, MG_EUNSUPPORTED, "%s: only behavior Isolated without invert is supported",
                          "pre_tokenizer Split");
        return tok_add_regex(t, re, c->err, c->errlen);
    }
    if (!strcmp(type, "ByteLevel")) {
        if (jbool(p, "add_prefix_space", false))
            return hf_bad(c, MG_EUNSUPPORTED, "%s: add_prefix_space is not supported", "pre_tokenizer ByteLevel");
        *byte_level = true;
        if (jbool(p, "use_regex", true))
            return tok_add_regex(t,
                                 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
                                 c->err, c->errlen);
        return 0;
    }
    return hf_bad(c, MG_EUNSUPPORTED, "pre_tokenizer type '%s' is not supported (Split, ByteLevel, Sequence)",
                  type);
}

/* Names an HF pre-tokenizer as GGUF would (tokenizer.ggml.pre), for display
 * and for choosing a chat template; the patterns themselves are what encode. */
static void hf_name_pre(tokenizer *t, json_t *root)
{
    char *dump = json_dumps(json_object_get(root, "pre_tokenizer"), JSON_COMPACT);
    const char *name = t->kind == TOKENIZER_SPM_BPE ? "default" : "custom";
    if (dump && t->kind == TOKENIZER_BYTE_BPE) {
        if (t->n_re == 3 && strstr(dump, "\xe4\xb8\x80"))
            name = "deepseek-v3";
        else if (t->n_re == 1 && strstr(dump, "\\\\p{N}{1,3}"))
            name = "llama-bpe";
        else if (t->n_re == 1 && t->nfc && strstr(dump, "\\\\p{N}|"))
            name = "qwen2";
        else if (t->n_re == 1 && !strstr(dump, "\"Split\""))
            name = "gpt-2";
    }
    snprintf(t->pre, sizeof t->pre, "%s", name);
    free(dump);
}

/* A special token named in tokenizer_config.json: a string, or an
 * AddedToken object {"content": ...}. */
static const char *cfg_token(json_t *cfg, const char *key)
{
    json_t *v = json_object_get(cfg, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_object(v))
        return jstr(v, "content");
    return NULL;
}

int tokenizer_open_hf(tokenizer **out, const char *json_path, const char *config_path, char *err,
                      size_t errlen)
{
    hf_ctx c = {json_path, err, errlen};
    json_error_t je;
    tokenizer *t = NULL;
    json_t *cfg = NULL;
    float *no_scores = NULL;
    int rc;
    json_t *root = json_load_file(json_path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        mg_err_set(err, errlen, "tokenizer: %s:%d:%d: %s", json_path, je.line, je.column, je.text);
        return MG_EFORMAT;
    }
    json_t *model = json_object_get(root, "model");
    const char *mtype = model ? jstr(model, "type") : NULL;
    if (!mtype || strcmp(mtype, "BPE")) {
        rc = hf_bad(&c, MG_EUNSUPPORTED, "model.type is '%s'; only BPE is supported", mtype ? mtype : "(none)");
        goto fail;
    }
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || !json_is_array(merges)) {
        rc = hf_bad(&c, MG_EFORMAT, "%s must be an object and model.merges an array", "model.vocab");
        goto fail;
    }
    if (added && !json_is_array(added)) {
        rc = hf_bad(&c, MG_EFORMAT, "%s is not an array", "added_tokens");
        goto fail;
    }
    if (!json_is_null(json_object_get(model, "dropout")) && json_object_get(model, "dropout")) {
        rc = hf_bad(&c, MG_EUNSUPPORTED, "%s is not supported", "model.dropout");
        goto fail;
    }
    const char *cont = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (eow && *eow) || jbool(model, "ignore_merges", false)) {
        rc = hf_bad(&c, MG_EUNSUPPORTED, "%s are not supported",
                    "model.continuing_subword_prefix, end_of_word_suffix and ignore_merges");
        goto fail;
    }
    /* vocabulary size: the largest id + 1, over the vocabulary and the added tokens */
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= (1 << 24)) {
            rc = hf_bad(&c, MG_EFORMAT, "model.vocab[\"%.64s\"] is not a token id in 0..16777215", key);
            goto fail;
        }
        if (json_integer_value(val) > max_id)
            max_id = json_integer_value(val);
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        json_t *id = json_object_get(a, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
            !jstr(a, "content") || !*jstr(a, "content")) {
            char w[48];
            snprintf(w, sizeof w, "added_tokens[%zu]", i);
            rc = hf_bad(&c, MG_EFORMAT, "%s needs an id in 0..16777215 and a non-empty content", w);
            goto fail;
        }
        if (json_integer_value(id) > max_id)
            max_id = json_integer_value(id);
    }
    bool byte_level = false;
    json_t *pre = json_object_get(root, "pre_tokenizer");
    /* kind: byte-level when a ByteLevel pre-tokenizer is present */
    char *dump = json_dumps(pre, JSON_COMPACT);
    bool has_bl = dump && strstr(dump, "\"ByteLevel\"");
    free(dump);
    if ((rc = tok_create(&t, has_bl ? TOKENIZER_BYTE_BPE : TOKENIZER_SPM_BPE, (int32_t)(max_id + 1), err, errlen)))
        goto fail;
    for (int32_t id = 0; id < t->n_vocab; id++)
        t->type[id] = TOKENIZER_TYPE_UNUSED;
    json_object_foreach(vocab, key, val)
    {
        int32_t id = (int32_t)json_integer_value(val);
        size_t len = strlen(key);
        int ty = TOKENIZER_TYPE_NORMAL;
        if (!has_bl && len == 6 && !memcmp(key, "<0x", 3) && key[5] == '>')
            ty = TOKENIZER_TYPE_BYTE;
        if ((rc = tok_set_token(t, id, key, len, ty, err, errlen)))
            goto fail;
    }
    const char *unk = jstr(model, "unk_token");
    json_array_foreach(added, i, a)
    {
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        const char *content = jstr(a, "content");
        bool special = jbool(a, "special", false);
        if (jbool(a, "single_word", false)) {
            char w[48];
            snprintf(w, sizeof w, "added_tokens[%zu].single_word", i);
            rc = hf_bad(&c, MG_EUNSUPPORTED, "%s is not supported", w);
            goto fail;
        }
        int ty = special ? TOKENIZER_TYPE_CONTROL : TOKENIZER_TYPE_USER_DEFINED;
        if (unk && !strcmp(content, unk))
            ty = TOKENIZER_TYPE_UNKNOWN;
        /* an added token replaces a vocabulary entry of the same id */
        t->key_len[id] = 0;
        if ((rc = tok_set_token(t, id, content, strlen(content), ty, err, errlen)))
            goto fail;
        if ((rc = tok_add_added(t, id, special, jbool(a, "lstrip", false), jbool(a, "rstrip", false))))
            goto fail;
    }
    json_array_foreach(merges, i, a)
    {
        const char *ma, *mb;
        size_t la, lb;
        if (json_is_string(a)) {
            const char *s = json_string_value(a), *sp = strchr(s, ' ');
            if (!sp || sp == s || !sp[1])
                goto bad_merge;
            ma = s;
            la = (size_t)(sp - s);
            mb = sp + 1;
            lb = strlen(mb);
        } else if (json_is_array(a) && json_array_size(a) == 2 && json_is_string(json_array_get(a, 0)) &&
                   json_is_string(json_array_get(a, 1))) {
            ma = json_string_value(json_array_get(a, 0));
            mb = json_string_value(json_array_get(a, 1));
            la = strlen(ma);
            lb = strlen(mb);
        } else {
            goto bad_merge;
        }
        if ((rc = tok_add_merge(t, ma, la, mb, lb, (int32_t)i))) {
            mg_err_set(err, errlen, "tokenizer: out of memory");
            goto fail;
        }
        continue;
    bad_merge : {
        char w[48];
        snprintf(w, sizeof w, "model.merges[%zu]", i);
        rc = hf_bad(&c, MG_EFORMAT, "%s is not \"A B\" or [\"A\", \"B\"]", w);
        goto fail;
    }
    }
    if ((rc = hf_normalizer(&c, t, json_object_get(root, "normalizer"))) ||
        (rc = hf_pretokenizer(&c, t, pre, &byte_level)))
        goto fail;
    if (t->kind == TOKENIZER_SPM_BPE) {
        /* the decoder's Strip(" ", 1, 0) undoes the prepended U+2581 */
        char *d = json_dumps(json_object_get(root, "decoder"), JSON_COMPACT);
        t->spm_strip_leading = d && strstr(d, "\"Strip\"");
        free(d);
        if (!jbool(model, "byte_fallback", false)) {
            rc = hf_bad(&c, MG_EUNSUPPORTED, "%s: a SentencePiece BPE without byte_fallback is not supported",
                        "model");
            goto fail;
        }
    }
    hf_name_pre(t, root);
    if ((rc = tok_finish(t, no_scores, err, errlen)))
        goto fail;
    if (unk)
        t->unk = tokenizer_find(t, unk);
    if (config_path) {
        c.file = config_path;
        /* DECODE_INT_AS_REAL: configs hold integers beyond int64 (model_max_length) */
        cfg = json_load_file(config_path, JSON_DECODE_INT_AS_REAL, &je);
        if (!cfg) {
            mg_err_set(err, errlen, "tokenizer: %s:%d:%d: %s", config_path, je.line, je.column, je.text);
            rc = MG_EFORMAT;
            goto fail;
        }
        static const char *const names[] = {"bos_token", "eos_token", "pad_token"};
        int32_t *dst[] = {&t->bos, &t->eos, &t->pad};
        for (int k = 0; k < 3; k++) {
            const char *s = cfg_token(cfg, names[k]);
            if (!s)
                continue;
            *dst[k] = tokenizer_find(t, s);
            if (*dst[k] < 0) {
                rc = hf_bad(&c, MG_EFORMAT, "%s names a token the vocabulary does not have", names[k]);
                goto fail;
            }
        }
        t->add_bos = jbool(cfg, "add_bos_token", false) && t->bos >= 0;
        t->add_eos = jbool(cfg, "add_eos_token", false) && t->eos >= 0;
        json_t *ct = json_object_get(cfg, "chat_template");
        const char *tmpl = json_is_string(ct) ? json_string_value(ct) : NULL;
        if (json_is_array(ct)) {
            json_array_foreach(ct, i, a)
            {
                const char *nm = jstr(a, "name");
                if (nm && !strcmp(nm, "default"))
                    tmpl = jstr(a, "template");
            }
        }
        if (tmpl && !(t->chat_template = strdup(tmpl))) {
            rc = MG_ENOMEM;
            goto fail;
        }
        if (t->eos >= 0 && t->n_eog < (int)(sizeof t->eog / sizeof t->eog[0])) {
            bool have = false;
            for (int k = 0; k < t->n_eog; k++)
                have |= t->eog[k] == t->eos;
            if (!have)
                t->eog[t->n_eog++] = t->eos;
        }
    }
    json_decref(cfg);
    json_decref(root);
    *out = t;
    return 0;
fail:
    json_decref(cfg);
    json_decref(root);
    tokenizer_free(t);
    return rc;
}
