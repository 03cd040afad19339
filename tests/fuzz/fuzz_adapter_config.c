/* moegate — libFuzzer target for PEFT adapter_config.json parsing
 * (adapters/lora_peft.c).
 *
 * Each input is parsed as adapter_config.json; the parser must answer 0,
 * MG_EFORMAT, MG_EUNSUPPORTED or MG_ENOMEM with a "lora: cfg: " message,
 * never crash or leak. A configuration that parses is then asked about a
 * few module names, as the loader does for each tensor (target_modules,
 * exclude_modules and the rank/alpha patterns, regular expressions
 * included, with PCRE2's match limit); each answer must be 0 or
 * MG_EFORMAT, and a rank it gives is >= 1. The input also goes through the
 * module-name mapper.
 *
 *   make fuzz && build/fuzz/fuzz_adapter_config -max_total_time=60 tests/fuzz/corpus/fuzz_adapter_config
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora_internal.h"
#include "core/errors.h"

static const char *const keys[] = {
    "model.layers.0.self_attn.q_proj", "model.layers.1.mlp.experts.7.down_proj",
    "model.layers.3.block_sparse_moe.experts.0.w1", "model.layers.0.mlp.shared_experts.up_proj",
    "model.layers.12.self_attn.kv_b_proj"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = 0;
    peft_config c;
    char err[512] = "";
    int rc = peft_config_parse(&c, copy, size, "cfg", err, sizeof err);
    if (rc) {
        if ((rc != MG_EFORMAT && rc != MG_EUNSUPPORTED && rc != MG_ENOMEM) || strncmp(err, "lora: cfg: ", 11))
            __builtin_trap();
    } else {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            int32_t r = 0;
            double alpha;
            bool targeted;
            int mrc = peft_config_module(&c, keys[i], (int64_t)i, &r, &alpha, &targeted, err, sizeof err);
            if (mrc != 0 && mrc != MG_EFORMAT && mrc != MG_ENOMEM)
                __builtin_trap();
            if (mrc == 0 && r < 1)
                __builtin_trap();
        }
    }
    peft_config_free(&c);
    enum lora_target t;
    int64_t e;
    if (peft_module_target(copy, &t, &e) && ((unsigned)t >= LORA_N_TARGET || (t >= LORA_EXP_GATE) != (e >= 0)))
        __builtin_trap();
    free(copy);
    return 0;
}
