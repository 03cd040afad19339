/* moegate — adapters/ private: an adapter file as read, before it meets a
 * base model.
 *
 * Both loaders (lora_peft.c, lora_gguf.c) turn their file into a lora_src:
 * the container kept open and one lora_entry per adapted matrix (or, for a
 * GGUF expert stack, per stack), pointing at A and B inside the mapping.
 * lora.c then validates the entries (lora_src_check: ranks, duplicates,
 * hidden size), describes them (lora_inspect) or copies them into a
 * model_lora against a base (lora_load). Nothing here is thread-shared.
 */
#ifndef MOEGATE_ADAPTERS_LORA_INTERNAL_H
#define MOEGATE_ADAPTERS_LORA_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapters/lora.h"
#include "adapters/safetensors.h"
#include "core/gguf.h"

/* One matrix (or stack of matrices) as the file holds it, row-major:
 * ne[0] elements per row (fastest), ne[1] rows, ne[2] matrices. */
typedef struct lora_mat {
    const void *data; /* inside the mapping; may be unaligned */
    uint32_t type;    /* TENSOR_F32, TENSOR_F16 or TENSOR_BF16 */
    int64_t ne[3];
    const char *name; /* the tensor's name in the file */
} lora_mat;

typedef struct lora_entry {
    int64_t layer;
    enum lora_target target;
    int64_t expert;  /* PEFT expert index; -1: not an expert, or a GGUF stack of all experts */
    lora_mat a;      /* ne {n_in, r, n_stack} */
    lora_mat b;      /* ne {r, n_out, n_stack} */
    int32_t r;       /* the configured rank (PEFT r / rank_pattern; GGUF: A's rows) */
    double scale;    /* alpha/r or alpha/sqrt(r), before the user's scale */
    bool hf_rows;    /* B's rows in Hugging Face order (PEFT): permuted for llama q/k */
} lora_entry;

typedef struct lora_src {
    enum lora_format format;
    char path[1024];
    safetensors *st;   /* PEFT weights */
    gguf *g;           /* GGUF adapter */
    lora_entry *e;
    int64_t n, cap;
    double alpha;
    bool alpha_varies, rslora, fan_in_fan_out;
    char arch[32], base[256];
    int64_t n_layer;   /* from the file's metadata, -1 when it does not say */
} lora_src;

/* Opens path as a PEFT folder or a GGUF file (by what it is) into *s
 * (zeroed by the caller). lora_src_close frees it even after a failure. */
int lora_src_open(lora_src *s, const char *path, char *err, size_t errlen);
void lora_src_close(lora_src *s);

/* The format loaders, called by lora_src_open. */
int lora_peft_open(lora_src *s, const char *dir, char *err, size_t errlen);
int lora_gguf_open(lora_src *s, const char *path, char *err, size_t errlen);

/* Appends a zeroed entry; NULL when out of memory. */
lora_entry *lora_src_add(lora_src *s);

/* ---- PEFT configuration (lora_peft.c; exposed for the fuzz target) ---------------- */

typedef struct peft_config {
    json_t *root;              /* owned */
    int32_t r;
    double alpha;
    bool rslora, fan_in_fan_out;
    const json_t *target_modules;  /* array of strings, string (regex or "all-linear"), NULL */
    const json_t *exclude_modules; /* same forms, NULL */
    const json_t *rank_pattern;    /* object of integers, NULL */
    const json_t *alpha_pattern;   /* object of numbers, NULL */
    int64_t *layers;           /* layers_to_transform, n_layers of them; NULL: every layer */
    int64_t n_layers;
    const char *base;          /* base_model_name_or_path, may be NULL */
} peft_config;

/* Parses and validates adapter_config.json text (label names it in
 * messages). Frees with peft_config_free even after a failure. */
int peft_config_parse(peft_config *c, const char *text, size_t len, const char *label, char *err,
                      size_t errlen);
void peft_config_free(peft_config *c);

/* Rank and alpha of module key (for example "model.layers.0.self_attn.q_proj")
 * after rank_pattern/alpha_pattern; whether target_modules / exclude_modules
 * / layers_to_transform select it. MG_EFORMAT for a pattern that is not a
 * valid regular expression. */
int peft_config_module(const peft_config *c, const char *key, int64_t layer, int32_t *r, double *alpha,
                       bool *targeted, char *err, size_t errlen);

/* Maps a module key's part after "model.layers.N." to a target and expert
 * (-1 when none); false when it names nothing we adapt. */
bool peft_module_target(const char *rest, enum lora_target *t, int64_t *expert);

#endif
