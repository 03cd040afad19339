/* moegate — libFuzzer target for the domain pack loader (and the router
 * trained on what it loads).
 *
 * Each input is a pack's domain.yaml, loaded from memory as
 * TREE/finance/domain.yaml; the files a pack names resolve into a small
 * fixture pack made once at start-up (system prompts, example files and an
 * eval JSONL under the shipped packs' names, plus an empty file and a
 * folder), so inputs reach validation past "file not found". The loader
 * must answer 0 or MG_EFORMAT, never crash or leak; an error must come with
 * an err message starting "domains: " and at least one error diagnostic;
 * every diagnostic must have a message, a file and a sane position. A pack
 * that loads is then used the way the gateway will: lookups, the language
 * and blocked-topic checks on the input itself, and a router trained on it
 * classifying the input.
 *
 *   make fuzz && build/fuzz/fuzz_domain_pack -max_total_time=60 tests/fuzz/corpus/fuzz_domain_pack
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "domains/domain.h"

static char tree[64];
static char pack[128];

static const char *const dirs[] = {"finance", "finance/examples", "finance/eval", "finance/dir"};
static const struct {
    const char *path, *text;
} files[] = {
    {"finance/system_prompt.zh.md", "你是证券公司的研究助理。\n"},
    {"finance/system_prompt.en.md", "You are a securities research assistant.\n"},
    {"finance/examples/zh.txt", "# c\n总结年报\n解释市盈率\n"},
    {"finance/examples/en.txt", "Summarise the annual report\nExplain P/E\n"},
    {"finance/eval/prompts.jsonl",
     "{\"prompt\": \"p\", \"lang\": \"en\", \"must_include\": [\"a\"]}\n"},
    {"finance/eval/bad.jsonl", "{\"prompt\": 1}\n[]\n"},
    {"finance/empty.md", ""},
};

static void cleanup(void)
{
    char p[192];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tree, files[i].path);
        unlink(p);
    }
    for (size_t i = sizeof dirs / sizeof dirs[0]; i-- > 0;) {
        snprintf(p, sizeof p, "%s/%s", tree, dirs[i]);
        rmdir(p);
    }
    rmdir(tree);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(tree, sizeof tree, "/tmp/mg_fuzz_domain_XXXXXX");
    if (!mkdtemp(tree))
        abort();
    char p[192];
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tree, dirs[i]);
        mkdir(p, 0700);
    }
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tree, files[i].path);
        FILE *f = fopen(p, "w");
        if (!f)
            abort();
        fputs(files[i].text, f);
        fclose(f);
    }
    snprintf(pack, sizeof pack, "%s/finance", tree);
    atexit(cleanup);
    return 0;
}

typedef struct seen {
    int errors;
} seen;

static void check_diag(void *ud, const policy_diag *d)
{
    seen *s = ud;
    if (!d->message || !d->message[0] || !d->file || !d->file[0] || d->line < 0 || d->column < 0 ||
        (d->line == 0) != (d->column == 0)) {
        fprintf(stderr, "fuzz_domain_pack: bad diagnostic\n");
        __builtin_trap();
    }
    char buf[512];
    policy_diag_format(d, buf, sizeof buf);
    s->errors += d->severity == POLICY_ERROR;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size ? size : 1); /* exactly sized: ASan sees overreads */
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    seen s = {0};
    domain_load_opts o = {.on_diag = check_diag, .ud = &s};
    char file[192], err[512] = "";
    snprintf(file, sizeof file, "%s/domain.yaml", pack);
    domain_set *set = NULL;
    int rc = domain_set_load_memory(&set, file, copy, size, pack, &o, err, sizeof err);
    if (rc == 0) {
        if (!set || domain_set_count(set) != 1 || s.errors)
            __builtin_trap();
        const domain_pack *p = domain_set_get(set, 0);
        if (!p->name || domain_set_find(set, p->name) != p || !p->system_prompt[DOMAIN_ZH] ||
            !p->system_prompt[DOMAIN_EN] || p->n_examples < 1 || p->max_tokens < 1 ||
            p->default_max_tokens > p->max_tokens)
            __builtin_trap();
        const domain_topic *t = domain_blocked_topic(p, copy, size);
        if (t && (!t->name || !t->refusal[DOMAIN_ZH] || !t->refusal[DOMAIN_EN]))
            __builtin_trap();
        (void)domain_detect_lang(copy, size);
        domain_router *r = NULL;
        if (domain_router_train(&r, set, NULL, NULL, err, sizeof err) == 0) {
            domain_route rt;
            if (domain_router_classify(r, copy, size, &rt) != 0 || rt.score < 0 || rt.score > 1 ||
                rt.domain < -1 || rt.domain > 0)
                __builtin_trap();
        }
        domain_router_free(r);
    } else if (rc == MG_EFORMAT) {
        if (set || s.errors == 0 || strncmp(err, "domains: ", 9) != 0) {
            fprintf(stderr, "fuzz_domain_pack: error without diagnostics: \"%s\"\n", err);
            __builtin_trap();
        }
    } else if (rc != MG_ENOMEM) {
        fprintf(stderr, "fuzz_domain_pack: unexpected %s \"%s\"\n", mg_err_name(rc), err);
        __builtin_trap();
    }
    domain_set_free(set);
    free(copy);
    return 0;
}
