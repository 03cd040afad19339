/* moegate adapter — LoRA adapter commands.
 *
 *   moegate adapter inspect FILE_OR_DIR [-m BASE.gguf] [--scale S]
 *       describes a PEFT adapter folder or a GGUF LoRA file on stdout:
 *       format, architecture, dtype, rank(s), alpha, scale, rsLoRA, each
 *       target with the layers (and experts) it covers, memory once loaded,
 *       and the base shape it was made for. With -m it also loads it
 *       against BASE and prints "fits: BASE: yes", or "fits: BASE: no: "
 *       and the reason. Exit status 0 when the adapter is valid (and fits),
 *       1 otherwise (the message on stderr), 2 for a usage error.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/lora.h"
#include "cli/cli.h"
#include "core/errors.h"
#include "core/model.h"
#include "core/tensor.h"

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  moegate adapter inspect FILE_OR_DIR [-m BASE.gguf] [--scale S]\n"
               "      FILE_OR_DIR: a PEFT folder (adapter_config.json + adapter_model.safetensors)\n"
               "      or a GGUF LoRA file; -m also checks that it fits the base model\n");
}

static void print_range(int64_t lo, int64_t hi)
{
    if (lo == hi)
        printf("%lld", (long long)lo);
    else
        printf("%lld..%lld", (long long)lo, (long long)hi);
}

static void print_info(const char *path, const lora_info *in)
{
    printf("adapter:         %s\n", path);
    printf("format:          %s\n", in->format == LORA_FORMAT_PEFT
                                        ? "PEFT (adapter_config.json + adapter_model.safetensors)"
                                        : "GGUF LoRA");
    if (in->arch[0])
        printf("architecture:    %s%s\n", in->arch,
               in->format == LORA_FORMAT_PEFT ? " (from its module names)" : "");
    else
        printf("architecture:    not stated (module names common to Qwen-MoE and DeepSeek)\n");
    if (in->base[0])
        printf("base:            %s\n", in->base);
    printf("dtype:           %s\n", tensor_type_get(in->type) ? tensor_type_get(in->type)->name : "?");
    printf("rank:            ");
    print_range(in->r_min, in->r_max);
    printf("%s\n", in->r_min != in->r_max ? " (per-module ranks)" : "");
    if (in->format == LORA_FORMAT_GGUF && in->alpha == 0)
        printf("alpha:           none (scale 1)\n");
    else
        printf("alpha:           %g%s\n", in->alpha, in->alpha_varies ? " (alpha_pattern overrides some modules)" : "");
    printf("rsLoRA:          %s\n", in->rslora ? "yes (scale alpha/sqrt(r))" : "no (scale alpha/r)");
    if (in->scale_min == in->scale_max)
        printf("scale:           %g\n", in->scale_min);
    else
        printf("scale:           %g..%g\n", in->scale_min, in->scale_max);
    if (in->fan_in_fan_out)
        printf("fan_in_fan_out:  set (no effect: lora_A/lora_B are stored as nn.Linear weights)\n");
    printf("targets:\n");
    for (int t = 0; t < LORA_N_TARGET; t++) {
        const lora_target_info *ti = &in->target[t];
        if (!ti->n_layers)
            continue;
        printf("  %-15s layers ", lora_target_name((enum lora_target)t));
        print_range(ti->first, ti->last);
        printf(" (%lld)", (long long)ti->n_layers);
        if (t >= LORA_EXP_GATE) {
            printf(", experts ");
            print_range(ti->n_experts_min, ti->n_experts_max);
            printf(" per layer");
        }
        printf(", rank ");
        print_range(ti->r_min, ti->r_max);
        printf("\n");
    }
    printf("matrices:        %lld in %lld tensors\n", (long long)in->n_pairs, (long long)in->n_tensors);
    printf("memory:          %zu bytes (%.2f MB)\n", in->bytes, in->bytes / 1e6);
    printf("made for:        ");
    if (in->hidden > 0)
        printf("hidden size %lld, ", (long long)in->hidden);
    if (in->n_layer > 0)
        printf("%lld layers", (long long)in->n_layer);
    else
        printf("at least %lld layers", (long long)in->n_layer_min);
    if (in->n_expert_min > 0)
        printf(", at least %lld experts", (long long)in->n_expert_min);
    printf("\n");
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL, *base = NULL;
    double scale = 1.0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc)
            base = argv[++i];
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            char *end;
            errno = 0;
            scale = strtod(argv[++i], &end);
            if (errno || *end || end == argv[i] || !isfinite(scale)) {
                fprintf(stderr, "moegate adapter inspect: --scale '%s' is not a number\n", argv[i]);
                return 2;
            }
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "moegate adapter inspect: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path)
            path = argv[i];
        else {
            fprintf(stderr, "moegate adapter inspect: one adapter at a time ('%s')\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    lora_info in;
    int rc = lora_inspect(&in, path, err, sizeof err);
    if (rc) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    print_info(path, &in);
    if (!base)
        return 0;
    model_opts mo = {.n_threads = 1, .no_pin = true};
    model *m;
    if (model_open(&m, base, &mo, err, sizeof err)) {
        fprintf(stderr, "moegate: %s\n", err);
        return 1;
    }
    model_lora *l;
    rc = lora_load(&l, m, path, (float)scale, err, sizeof err);
    if (rc) {
        printf("fits:            %s: no\n", base);
        fprintf(stderr, "moegate: %s\n", err);
    } else {
        printf("fits:            %s: yes (%zu bytes loaded)\n", base, lora_bytes(l));
        model_lora_release(l);
    }
    model_close(m);
    return rc ? 1 : 0;
}

int cmd_adapter(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "inspect"))
        return cmd_inspect(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help"))) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
