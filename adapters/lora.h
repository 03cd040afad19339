/* moegate — LoRA adapters: loading PEFT and GGUF LoRA files into the
 * engine's model_lora (core/lora.h), inspecting them, and a registry of
 * named adapters with hot load and unload.
 *
 * Two file forms are read:
 *   - PEFT: a folder holding adapter_config.json and
 *     adapter_model.safetensors, as Hugging Face PEFT saves a LoraConfig
 *     adapter (tensors base_model.model.model.layers.N.<module>.lora_A.weight
 *     [r][in] and .lora_B.weight [out][r]). Honoured: r, lora_alpha,
 *     use_rslora (scale alpha/sqrt(r) instead of alpha/r), target_modules
 *     (list, or a string that is a regular expression, or "all-linear"),
 *     exclude_modules, rank_pattern and alpha_pattern (per-module overrides,
 *     keys matched as PEFT does: the module name ends with the key, or the
 *     key as a regular expression matches a dot-separated suffix),
 *     layers_to_transform (+ layers_pattern "layers"), fan_in_fan_out (it
 *     changes nothing here: PEFT stores lora_A/lora_B as nn.Linear weights
 *     whatever it says, and switches it off for nn.Linear targets, which all
 *     of these models' targets are). Refused by name: peft_type other than
 *     LORA, use_dora, modules_to_save, bias other than "none", lora_bias,
 *     layer_replication, megatron_config, target_parameters,
 *     trainable_token_indices, alora_invocation_tokens, and any tensor that
 *     maps to no target (embeddings, lm_head, routers, DoRA magnitudes).
 *     Module names by family: self_attn.{q,k,v,o}_proj; DeepSeek's q_a_proj,
 *     q_b_proj, kv_a_proj_with_mqa, kv_b_proj; mlp.{gate,up,down}_proj
 *     (dense layers); mlp.shared_expert(s).{gate,up,down}_proj;
 *     mlp.experts.E.{gate,up,down}_proj; Mixtral's
 *     block_sparse_moe.experts.E.{w1,w3,w2} (gate, up, down). For the GGUF
 *     architecture llama (Mixtral), whose converter permutes the rows of
 *     q_proj and k_proj for its RoPE layout, B's rows are permuted the same
 *     way so the delta matches the GGUF base.
 *   - GGUF LoRA (llama.cpp's convert_lora_to_gguf layout): general.type
 *     "adapter", adapter.type "lora", adapter.lora.alpha (absent or 0: scale
 *     1), tensors blk.N.<target>.weight.lora_a (ne [n_in, r]) and .lora_b
 *     (ne [r, n_out]); routed-expert targets as stacks ne [n_in, r, n_expert]
 *     and [r, n_out, n_expert]. Rows are already in the base's layout.
 *     general.architecture must be the base's.
 *
 * Validation against the base model: every layer index below the base's
 * block count, every target present in that layer, every shape the one
 * model_lora_shape gives (a mismatch names the tensor and both shapes),
 * A and B present together with one rank (the configured one for PEFT), an
 * expert index below the base's expert count, no matrix given twice; an
 * adapter made for another hidden size or more layers is refused as such
 * first. Then model_lora_check.
 *
 * Storage: A [r][n_in] and B^T [r][n_out] are copied (B transposed) into
 * memory the adapter owns, in the file's dtype (F32, F16 or BF16; when A
 * and B of one module differ, both become F32). The file is closed after
 * loading.
 *
 * Errors are the codes of core/errors.h with a message starting "lora: "
 * (or "safetensors: " / "gguf: " for the container) naming the file and the
 * tensor, module or field.
 */
#ifndef MOEGATE_ADAPTERS_LORA_H
#define MOEGATE_ADAPTERS_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/lora.h"
#include "core/model.h"

/* ---- loading ----------------------------------------------------------------- */

/* Loads the adapter at path (a PEFT folder, or a GGUF LoRA file) for base
 * model m, every pair's scale multiplied by user_scale (finite). On success
 * *out holds one reference (refs = 1; model_lora_release frees it with the
 * last reference) and a fresh id, distinct from every other load in this
 * process. Errors: MG_EINVAL (arguments), MG_EIO (cannot read), MG_EFORMAT
 * (malformed, or does not fit m), MG_EUNSUPPORTED (an option or dtype we do
 * not implement, named), MG_ENOMEM. */
int lora_load(model_lora **out, const model *m, const char *path, float user_scale, char *err,
              size_t errlen);

/* Bytes of A and B^T data held by an adapter from lora_load (0 for others). */
size_t lora_bytes(const model_lora *l);

/* ---- inspection (no base model needed) --------------------------------------- */

enum lora_format { LORA_FORMAT_PEFT, LORA_FORMAT_GGUF };

typedef struct lora_target_info {
    int64_t n_layers;     /* layers with this target adapted (0: not a target) */
    int64_t first, last;  /* lowest and highest such layer */
    int64_t n_experts_min, n_experts_max; /* routed-expert targets: experts adapted per layer */
    int32_t r_min, r_max;
} lora_target_info;

typedef struct lora_info {
    enum lora_format format;
    char arch[32];        /* GGUF: general.architecture; PEFT: guessed from module names */
    char base[256];       /* PEFT base_model_name_or_path / GGUF general.name; may be empty */
    uint32_t type;        /* dtype of most of the data (TENSOR_F32/F16/BF16) */
    int32_t r_min, r_max; /* ranks (equal unless rank_pattern) */
    double alpha;         /* lora_alpha / adapter.lora.alpha (0: GGUF without one, scale 1) */
    bool alpha_varies;    /* alpha_pattern gives some modules another alpha */
    bool rslora;
    bool fan_in_fan_out;  /* as the PEFT config says (no effect, see above) */
    double scale_min, scale_max; /* alpha/r (alpha/sqrt(r) with rsLoRA) over the modules */
    int64_t n_pairs;      /* adapted matrices (each expert counts) */
    int64_t n_tensors;
    size_t bytes;         /* memory A and B^T take once loaded */
    int64_t hidden;       /* hidden size the adapter was made for, from its shapes; -1 unknown */
    int64_t n_layer_min;  /* highest layer index + 1 */
    int64_t n_layer;      /* base block count when the file says (GGUF {arch}.block_count), else -1 */
    int64_t n_expert_min; /* highest expert index + 1 (GGUF: the stack size); 0 without experts */
    lora_target_info target[LORA_N_TARGET];
} lora_info;

/* Reads and validates path as far as it can without a base model (the
 * container, the configuration, names, A/B pairing and ranks) and
 * describes it. Errors as lora_load. */
int lora_inspect(lora_info *out, const char *path, char *err, size_t errlen);

const char *lora_format_name(enum lora_format f); /* "PEFT", "GGUF" */

/* ---- registry ------------------------------------------------------------------ */

/* Named adapters for one base model. Every function is thread safe (one
 * mutex guards the table; loading runs outside it). */
typedef struct lora_registry lora_registry;

#define LORA_NAME_MAX 64 /* names: 1..63 bytes of [A-Za-z0-9._-] */

/* m is borrowed and must outlive the registry. */
int lora_registry_create(lora_registry **out, const model *m, char *err, size_t errlen);

/* Drops the registry's references (adapters still acquired live on until
 * released); accepts NULL. */
void lora_registry_free(lora_registry *r);

/* Loads path (lora_load) under name. MG_EBUSY when the name is taken,
 * MG_EINVAL for a bad name; otherwise lora_load's errors. */
int lora_registry_load(lora_registry *r, const char *name, const char *path, float scale, char *err,
                       size_t errlen);

/* Removes name and releases the registry's reference: the adapter is freed
 * when its last user releases it. MG_ENOTFOUND when absent. */
int lora_registry_unload(lora_registry *r, const char *name);

/* The adapter named name with one more reference (release it with
 * model_lora_release), or NULL when absent. */
model_lora *lora_registry_acquire(lora_registry *r, const char *name);

typedef struct lora_registry_entry {
    char name[LORA_NAME_MAX];
    char path[1024];     /* as given to lora_registry_load (cut to fit) */
    float scale;
    uint64_t id;
    size_t bytes;        /* lora_bytes */
    int refs;            /* references now, the registry's included */
} lora_registry_entry;

/* Copies up to cap entries (in load order) into out and returns the number
 * of adapters loaded (which may exceed cap). */
int lora_registry_list(lora_registry *r, lora_registry_entry *out, int cap);

#endif
