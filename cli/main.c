/* moegate — the command-line program.
 *
 *   moegate run -m MODEL.gguf (-p TEXT | --tokens 1,2,3) [-n N] [options]
 *   moegate model inspect MODEL.gguf
 *
 * `run` loads the model (progress on stderr), evaluates the prompt in one
 * batch, then generates token by token, printing text as it is produced on
 * stdout; a final line on stderr gives prompt and generation tokens/s.
 * --dump-logits FILE writes one text row per evaluated position: the
 * position, then its n_vocab logits (%.9g), so numerics can be compared
 * with any other engine.
 *
 * This is the only place allowed to exit(); library code returns errors.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/errors.h"
#include "core/gguf.h"
#include "core/model.h"
#include "core/sampler.h"
#include "core/serve.h"
#include "adapters/lora.h"
#include "core/tensor.h"
#include "core/chat.h"
#include "core/tokenizer.h"
#include <jansson.h>

#define MOEGATE_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "moegate %s — Mixture-of-Experts inference\n\n"
            "usage:\n"
            "  moegate serve --policy FILE   (the HTTPS gateway, OpenAI-compatible API)\n"
            "  moegate run -m MODEL.gguf (-p TEXT | --tokens ID,ID,...) [options]\n"
            "  moegate chat -m MODEL.gguf [--system TEXT] [--template NAME] [--no-think] [-n N]\n"
            "  moegate model inspect MODEL.gguf\n"
            "  moegate adapter inspect FILE_OR_DIR [-m BASE.gguf]   (PEFT folder or GGUF LoRA)\n"
            "  moegate domains check [DIR] | domains route [--dir DIR] [--threshold X] TEXT | --eval JSONL\n"
            "  moegate bench -m MODEL.gguf [--threads 1,2] [--pp 512] [--tg 32] [--reps 3] [--json]\n"
            "  moegate tokenize (-m MODEL.gguf | --hf DIR) (-p TEXT | -f FILE) [--ids] [--special]\n"
            "  moegate template (--name NAME | -m MODEL.gguf) < conversations.jsonl\n"
            "  moegate policy check FILE | policy hash-key\n"
            "  moegate db migrate | audit verify | audit export   (see --help of each)\n"
            "  moegate version\n\n"
            "run options:\n"
            "  -n, --n-predict N     tokens to generate (default 64)\n"
            "  --temp T              temperature, 0 = greedy (default 0.8)\n"
            "  --top-k K             (default 40, 0 = off)\n"
            "  --top-p P             (default 0.95)\n"
            "  --min-p P             (default 0.05)\n"
            "  --repeat-penalty R    (default 1.0 = off), over --repeat-last-n N (default 64)\n"
            "  --seed S              sampling seed (default 0)\n"
            "  --threads N           engine threads (default: one per CPU)\n"
            "  --ctx N               context positions (default: min(4096, model's))\n"
            "  --isa NAME            highest kernel level: scalar, avx2, avx512\n"
            "  --dump-logits FILE    write every evaluated position's logits\n"
            "  --lora PATH[:SCALE]   apply a LoRA adapter (PEFT folder or GGUF file), scale 1 by default\n"
            "  --kv-memory SIZE      KV cache pool, e.g. 512MiB (default: one full context)\n"
            "  --merge               with --lora: merge the adapter into a private copy of the weights it\n"
            "                        touches at load (one domain per deployment) instead of per token\n"
            "  --no-prefault         do not read the weights in at load\n"
            "  --show-special        print control tokens\n",
            MOEGATE_VERSION);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("moegate: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- argument parsing -------------------------------------------------------- */

typedef struct args {
    int argc, i;
    char **argv;
} args;

/* Matches "--name VALUE" or "--name=VALUE" (or a short alias); sets *val. */
static int opt_val(args *a, const char *name, const char *alias, const char **val)
{
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (!strncmp(s, name, n) && s[n] == '=') {
        *val = s + n + 1;
        return 1;
    }
    if (strcmp(s, name) && !(alias && !strcmp(s, alias)))
        return 0;
    if (a->i + 1 >= a->argc)
        die("option %s needs a value", name);
    *val = a->argv[++a->i];
    return 1;
}

static long long parse_int(const char *opt, const char *s, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        die("option %s: '%s' is not an integer in [%lld, %lld]", opt, s, lo, hi);
    return v;
}

/* A size in bytes: digits with an optional KiB, MiB, GiB or TiB suffix. */
static size_t parse_size(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (!strcmp(end, "KiB"))
        shift = 10;
    else if (!strcmp(end, "MiB"))
        shift = 20;
    else if (!strcmp(end, "GiB"))
        shift = 30;
    else if (!strcmp(end, "TiB"))
        shift = 40;
    else if (*end)
        end = NULL;
    if (errno || !end || end == s || *s == '-' || v == 0 || v > (1ull << 50) >> shift)
        die("option %s: '%s' is not a size (bytes, or a number with KiB, MiB, GiB or TiB)", opt, s);
    return (size_t)(v << shift);
}

static double parse_num(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        die("option %s: '%s' is not a number", opt, s);
    return v;
}

/* "1,2,3" -> ids; every id must be a non-negative int32. */
static int32_t *parse_tokens(const char *s, int *n_out)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids)
        die("out of memory");
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX)
            die("--tokens: bad token id at '%.20s' (expected comma-separated ids)", p);
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, sizeof(int32_t) * (size_t)cap);
            if (!ids)
                die("out of memory");
        }
        ids[n++] = (int32_t)v;
        p = end;
        if (*p == ',')
            p++;
        else if (*p)
            die("--tokens: unexpected '%c' (expected comma-separated ids)", *p);
    }
    if (n == 0)
        die("--tokens: no token ids given");
    *n_out = n;
    return ids;
}

/* ---- load progress ---------------------------------------------------------------- */

typedef struct progress {
    bool tty;
    int last;
    double t0;
} progress;

static void on_progress(void *ud, double frac)
{
    progress *p = ud;
    int pct = (int)(frac * 100.0 + 0.5);
    if (p->tty) {
        if (pct == p->last)
            return;
        int bar = pct / 4;
        fprintf(stderr, "\rloading [%.*s%*s] %3d%%", bar, "#########################", 25 - bar,
                "", pct);
        if (pct >= 100)
            fputc('\n', stderr);
    } else {
        if (pct / 10 == p->last / 10 && pct < 100)
            return;
        if (now() - p->t0 < 1.0 && pct < 100)
            return; /* small files: no chatter */
        fprintf(stderr, "loading: %d%%\n", pct);
    }
    p->last = pct;
}

static void print_summary(const model *m)
{
    const model_info *I = model_get_info(m);
    fprintf(stderr,
            "moegate: loaded %s%s%s%s: %.3gB params (%.3gB active per token), %.2f GB weights "
            "(mostly %s), %lld layers, %lld experts (top-%lld) in %.2f s; kernels %s\n",
            I->arch_name, I->name[0] ? " '" : "", I->name, I->name[0] ? "'" : "",
            I->n_params / 1e9, I->n_params_active / 1e9, I->weight_bytes / 1e9,
            tensor_type_get(I->main_type) ? tensor_type_get(I->main_type)->name : "?",
            (long long)I->n_layer, (long long)I->n_expert, (long long)I->n_expert_used,
            I->load_seconds, model_isa_name(m));
}

/* ---- run ----------------------------------------------------------------------------- */

/* Options run and chat share: sampling, threads, context, kernels. Returns
 * 1 when argv[a->i] was one of them (and consumed its value). */
typedef struct common_opts {
    sampler_params sp;
    int n_threads, n_ctx;
    const char *isa;
} common_opts;

static int common_opt(args *a, common_opts *o)
{
    const char *v;
    if (opt_val(a, "--temp", NULL, &v))
        o->sp.temperature = (float)parse_num("--temp", v);
    else if (opt_val(a, "--top-k", NULL, &v))
        o->sp.top_k = (int)parse_int("--top-k", v, 0, INT_MAX);
    else if (opt_val(a, "--top-p", NULL, &v))
        o->sp.top_p = (float)parse_num("--top-p", v);
    else if (opt_val(a, "--min-p", NULL, &v))
        o->sp.min_p = (float)parse_num("--min-p", v);
    else if (opt_val(a, "--repeat-penalty", NULL, &v))
        o->sp.repeat_penalty = (float)parse_num("--repeat-penalty", v);
    else if (opt_val(a, "--repeat-last-n", NULL, &v))
        o->sp.repeat_last_n = (int)parse_int("--repeat-last-n", v, -1, INT_MAX);
    else if (opt_val(a, "--seed", NULL, &v))
        o->sp.seed = (uint64_t)parse_int("--seed", v, 0, LLONG_MAX);
    else if (opt_val(a, "--threads", "-t", &v))
        o->n_threads = (int)parse_int("--threads", v, 1, 512);
    else if (opt_val(a, "--ctx", "-c", &v))
        o->n_ctx = (int)parse_int("--ctx", v, 1, 1 << 24);
    else if (opt_val(a, "--isa", NULL, &v))
        o->isa = v;
    else
        return 0;
    return 1;
}

/* Opens the model with the shared options, showing load progress and a
 * summary on stderr; dies with the reason on failure. */
static model *open_model(const char *path, const common_opts *co, bool prefault)
{
    char err[512];
    progress pr = {isatty(2), -1, now()};
    model_opts mo = {.n_threads = co->n_threads, .isa = co->isa, .prefault = prefault,
                     .progress = on_progress, .progress_ud = &pr};
    model *m;
    if (model_open(&m, path, &mo, err, sizeof err))
        die("%s", err);
    print_summary(m);
    return m;
}

/* The prompt's tokens: the text as is (BOS as the tokenizer asks), or as one
 * user turn of the model's chat template with the assistant's turn opened. */
static int32_t *encode_prompt(const tokenizer *tok, const model_info *I, const char *text, bool as_chat,
                              const char *system, const char *tmpl_name, bool no_think, bool parse_special,
                              int *n_out)
{
    char err[512];
    unsigned flags = TOKENIZER_ADD_SPECIAL | (parse_special ? TOKENIZER_PARSE_SPECIAL : 0);
    tokenizer_ids ids = {0};
    int rc;
    if (as_chat) {
        enum chat_template t;
        if (tmpl_name) {
            t = chat_template_by_name(tmpl_name);
            if (t == CHAT_TEMPLATE_NONE)
                die("--template: unknown template '%s' (qwen3, qwen2, chatml, deepseek3, deepseek-r1, "
                    "mistral, mistral-legacy)", tmpl_name);
        } else if (chat_template_detect(tokenizer_chat_template(tok), tokenizer_pre(tok), I->arch_name, &t, err,
                                        sizeof err)) {
            die("%s", err);
        }
        chat_message msgs[2] = {{.role = "system", .content = system}, {.role = "user", .content = text}};
        char bos[128] = "", eos[128] = "";
        int nb = tokenizer_bos(tok) >= 0 ? tokenizer_token_bytes(tok, tokenizer_bos(tok), true, bos, sizeof bos - 1) : 0;
        int ne = tokenizer_eos(tok) >= 0 ? tokenizer_token_bytes(tok, tokenizer_eos(tok), true, eos, sizeof eos - 1) : 0;
        bos[nb > 0 && nb < (int)sizeof bos ? nb : 0] = '\0';
        eos[ne > 0 && ne < (int)sizeof eos ? ne : 0] = '\0';
        chat_request r = {.messages = system ? msgs : msgs + 1, .n_messages = system ? 2 : 1,
                          .add_generation_prompt = true, .enable_thinking = no_think ? 0 : -1,
                          .bos = bos, .eos = eos};
        chat_prompt pr;
        if (chat_render(t, &r, &pr, err, sizeof err))
            die("%s", err);
        /* the template writes BOS itself where the model wants it; control
         * tokens count only where the template wrote them */
        rc = tokenizer_encode_chat(tok, pr.text, pr.len, pr.plain, pr.n_plain, &ids);
        chat_prompt_free(&pr);
    } else {
        rc = tokenizer_encode(tok, text, strlen(text), flags, &ids);
    }
    if (rc)
        die("run: cannot encode the prompt (%s)", mg_err_name(rc));
    if (ids.n == 0)
        die("run: the prompt encodes to no tokens");
    *n_out = (int)ids.n;
    return ids.ids;
}

static void dump_row(FILE *f, int pos, const float *logits, int64_t n)
{
    fprintf(f, "%d", pos);
    for (int64_t i = 0; i < n; i++)
        fprintf(f, " %.9g", logits[i]);
    fputc('\n', f);
}

/* One `run` request through the serving engine. Callbacks run on the
 * scheduler thread. */
typedef struct run_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const tokenizer *tok;
    int64_t n_vocab;
    bool show_special, discard, done;
    FILE *dump;
    int32_t *ids;
    int n_ids;
    enum serve_finish finish;
    double t_submit, t_first, t_end;
} run_state;

static void run_on_logits(void *ud, int32_t pos, const float *logits, int64_t n_vocab)
{
    run_state *rs = ud;
    dump_row(rs->dump, pos, logits, n_vocab);
}

static void run_on_token(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    run_state *rs = ud;
    if (token >= 0 && !rs->discard) {
        if (rs->t_first == 0)
            rs->t_first = now();
        rs->ids[rs->n_ids++] = token; /* the stop token too, as the model produced it */
        if (!rs->tok)
            printf("%s%d", rs->n_ids > 1 ? " " : "", token);
        else if (f != SERVE_RUNNING && rs->show_special) {
            char *piece;
            size_t pl;
            if (!tokenizer_decode(rs->tok, &token, 1, true, &piece, &pl)) {
                fwrite(piece, 1, pl, stdout);
                free(piece);
            }
        }
    }
    if (len && !rs->discard)
        fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (f != SERVE_RUNNING) {
        pthread_mutex_lock(&rs->mu);
        rs->t_end = now();
        rs->finish = f;
        rs->done = true;
        pthread_cond_signal(&rs->cv);
        pthread_mutex_unlock(&rs->mu);
    }
}

static int cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = NULL, *tokens = NULL, *dump = NULL;
    const char *system = NULL, *tmpl_name = NULL, *lora_arg = NULL;
    int n_predict = 64;
    size_t kv_memory = 0;
    bool prefault = true, show_special = false, as_chat = false, parse_special = false;
    bool ignore_eos = false, no_think = false, lora_merge = false;
    common_opts co = {.sp = sampler_defaults()};
    args a = {argc, 0, argv};
    for (a.i = 0; a.i < argc; a.i++) {
        const char *v, *s = argv[a.i];
        if (opt_val(&a, "--model", "-m", &v))
            model_path = v;
        else if (!strcmp(s, "--merge"))
            lora_merge = true;
        else if (opt_val(&a, "--prompt", "-p", &v))
            prompt = v;
        else if (opt_val(&a, "--tokens", NULL, &v))
            tokens = v;
        else if (opt_val(&a, "--n-predict", "-n", &v))
            n_predict = (int)parse_int("-n", v, 0, 1 << 20);
        else if (common_opt(&a, &co))
            continue;
        else if (opt_val(&a, "--dump-logits", NULL, &v))
            dump = v;
        else if (opt_val(&a, "--lora", NULL, &v))
            lora_arg = v;
        else if (opt_val(&a, "--kv-memory", NULL, &v))
            kv_memory = parse_size("--kv-memory", v);
        else if (!strcmp(s, "--no-prefault"))
            prefault = false;
        else if (!strcmp(s, "--show-special"))
            show_special = true;
        else if (!strcmp(s, "--chat"))
            as_chat = true;
        else if (opt_val(&a, "--system", NULL, &v))
            system = v;
        else if (opt_val(&a, "--template", NULL, &v))
            tmpl_name = v;
        else if (!strcmp(s, "--no-think"))
            no_think = true;
        else if (!strcmp(s, "--special"))
            parse_special = true;
        else if (!strcmp(s, "--ignore-eos"))
            ignore_eos = true;
        else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 0;
        } else
            die("run: unknown option '%s' (see moegate --help)", s);
    }
    int n_ctx = co.n_ctx;
    if (!model_path)
        die("run: -m MODEL.gguf is required");
    if (!!tokens + !!prompt != 1)
        die("run: give a prompt with -p TEXT or --tokens ID,ID,... (one of them)");
    if ((as_chat || system) && !prompt)
        die("run: --chat and --system need a text prompt (-p)");

    char err[512];
    model *m = open_model(model_path, &co, prefault);
    const model_info *I = model_get_info(m);
    tokenizer *tok = NULL;
    if (tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err)) {
        if (prompt)
            die("%s", err);
        fprintf(stderr, "moegate: no tokenizer for printing text (%s); printing ids\n", err);
    }
    int n_prompt;
    int32_t *prompt_ids = prompt ? encode_prompt(tok, I, prompt, as_chat || system, system, tmpl_name, no_think,
                                                 parse_special, &n_prompt)
                                 : parse_tokens(tokens, &n_prompt);
    for (int i = 0; i < n_prompt; i++)
        if (prompt_ids[i] >= I->n_vocab)
            die("--tokens: token id %d is outside the vocabulary (0..%lld)", prompt_ids[i],
                (long long)I->n_vocab - 1);
    if (n_ctx == 0)
        n_ctx = (int)(I->n_ctx_train < 4096 ? I->n_ctx_train : 4096);
    if (n_prompt + n_predict > n_ctx)
        die("prompt (%d tokens) + -n %d exceeds the context of %d positions (--ctx)", n_prompt,
            n_predict, n_ctx);

    /* --lora PATH[:SCALE]: a PEFT folder or a GGUF LoRA file */
    model_lora *lora = NULL;
    if (lora_arg) {
        char lpath[4096];
        float lscale = 1.0f;
        snprintf(lpath, sizeof lpath, "%s", lora_arg);
        char *colon = strrchr(lpath, ':');
        if (colon && colon[1] && !strchr(colon, '/')) {
            char *end;
            double v = strtod(colon + 1, &end);
            if (*end || !(v > -1000 && v < 1000))
                die("--lora: scale '%s' is not a number in (-1000, 1000)", colon + 1);
            lscale = (float)v;
            *colon = 0;
        }
        if (lora_load(&lora, m, lpath, lscale, err, sizeof err))
            die("--lora: %s", err);
        fprintf(stderr, "moegate: adapter %s (scale %g, %.1f MB)%s\n", lpath, lscale, lora_bytes(lora) / 1e6,
                lora_merge ? ", merged into the weights" : "");
        if (lora_merge) {
            if (model_merge_lora(m, lora, err, sizeof err))
                die("--merge: %s", err);
            model_lora_release(lora);
            lora = NULL;
        }
    } else if (lora_merge) {
        die("--merge needs --lora");
    }

    /* through the serving engine, as the gateway does: one sequence, the
     * whole prompt in one step */
    run_state rs = {.tok = tok, .n_vocab = I->n_vocab, .show_special = show_special, .t_submit = now()};
    pthread_mutex_init(&rs.mu, NULL);
    pthread_cond_init(&rs.cv, NULL);
    rs.ids = malloc(sizeof(int32_t) * (size_t)(n_predict + 1));
    if (!rs.ids)
        die("out of memory");
    if (dump && !(rs.dump = fopen(dump, "w")))
        die("--dump-logits: cannot write '%s': %s", dump, strerror(errno));
    serve_opts so = {.n_slots = 1, .n_ctx = n_ctx, .step_tokens = n_prompt > 256 ? n_prompt : 256,
                     .kv_memory = kv_memory};
    serve *sv;
    if (serve_open(&sv, m, tok, &so, err, sizeof err))
        die("%s", err);
    serve_params sp = {.sampling = co.sp, .max_tokens = n_predict, .ignore_eos = ignore_eos,
                       .show_special = show_special, .logits_cb = dump ? run_on_logits : NULL,
                       .no_prefix_cache = dump != NULL, .lora = lora};
    if (n_predict == 0) { /* evaluate the prompt only */
        sp.max_tokens = 1;
        rs.discard = true;
    }
    uint64_t id;
    rs.t_submit = now();
    if (serve_submit(sv, prompt_ids, (size_t)n_prompt, &sp, run_on_token, &rs, &id, err, sizeof err))
        die("%s", err);
    pthread_mutex_lock(&rs.mu);
    while (!rs.done)
        pthread_cond_wait(&rs.cv, &rs.mu);
    pthread_mutex_unlock(&rs.mu);
    serve_close(sv);
    model_lora_release(lora);
    if (rs.finish == SERVE_ERROR)
        die("generation failed");
    printf("\n");
    fflush(stdout); /* before the stderr lines, when both go to one pipe */
    fprintf(stderr, "tokens:");
    for (int i = 0; i < rs.n_ids; i++)
        fprintf(stderr, "%s%d", i ? "," : " ", rs.ids[i]);
    fprintf(stderr, "\n");
    /* prompt time: submit to the first token; the generation rate counts
     * forward passes: n tokens needed n-1 after the first */
    double t_prompt = (rs.t_first > 0 ? rs.t_first : rs.t_end) - rs.t_submit;
    double t_gen = rs.t_first > 0 ? rs.t_end - rs.t_first : 0;
    fprintf(stderr,
            "moegate: prompt %d tokens in %.3f s (%.2f tok/s); generation %d tokens in %.3f s "
            "(%.2f tok/s); %d threads\n",
            n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), rs.n_ids, t_gen,
            rs.n_ids > 1 ? (rs.n_ids - 1) / (t_gen > 0 ? t_gen : 1e-9) : 0.0, model_n_threads(m));
    if (rs.dump && fclose(rs.dump))
        die("--dump-logits: error writing '%s'", dump);
    pthread_mutex_destroy(&rs.mu);
    pthread_cond_destroy(&rs.cv);
    free(rs.ids);
    free(prompt_ids);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}

/* ---- model inspect ---------------------------------------------------------------- */

/* ---- chat -------------------------------------------------------------------------- */

/* The model's template, or the one named; dies with the reason otherwise. */
static enum chat_template pick_template(const tokenizer *tok, const model_info *I, const char *name)
{
    char err[512];
    enum chat_template t;
    if (name) {
        t = chat_template_by_name(name);
        if (t == CHAT_TEMPLATE_NONE)
            die("--template: unknown template '%s' (qwen3, qwen2, chatml, deepseek3, deepseek-r1, "
                "mistral, mistral-legacy)", name);
        return t;
    }
    if (chat_template_detect(tokenizer_chat_template(tok), tokenizer_pre(tok), I->arch_name, &t, err,
                             sizeof err))
        die("%s", err);
    return t;
}

static void special_text(const tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    int n = id >= 0 ? tokenizer_token_bytes(tok, id, true, buf, cap - 1) : 0;
    buf[n > 0 && (size_t)n < cap ? n : 0] = '\0';
}

/* moegate chat: a conversation on stdin, one user turn per line; each answer
 * streams to stdout, followed by an empty line. The conversation is rendered
 * with the model's chat template every turn; the KV cache keeps the tokens
 * the new rendering shares with the previous one, so each turn evaluates
 * only what is new. "/reset" starts over. */
static int cmd_chat(int argc, char **argv)
{
    const char *model_path = NULL, *system = NULL, *tmpl_name = NULL;
    int n_predict = 512;
    bool no_think = false, show_special = false;
    common_opts co = {.sp = sampler_defaults()};
    args a = {argc, 0, argv};
    for (a.i = 0; a.i < argc; a.i++) {
        const char *v, *s = argv[a.i];
        if (opt_val(&a, "--model", "-m", &v))
            model_path = v;
        else if (opt_val(&a, "--system", NULL, &v))
            system = v;
        else if (opt_val(&a, "--template", NULL, &v))
            tmpl_name = v;
        else if (opt_val(&a, "--n-predict", "-n", &v))
            n_predict = (int)parse_int("-n", v, 1, 1 << 20);
        else if (common_opt(&a, &co))
            continue;
        else if (!strcmp(s, "--no-think"))
            no_think = true;
        else if (!strcmp(s, "--show-special"))
            show_special = true;
        else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 0;
        } else
            die("chat: unknown option '%s' (see moegate --help)", s);
    }
    int n_ctx = co.n_ctx;
    sampler_params sp = co.sp;
    if (!model_path)
        die("chat: -m MODEL.gguf is required");
    char err[512];
    model *m = open_model(model_path, &co, true);
    const model_info *I = model_get_info(m);
    tokenizer *tok;
    if (tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err))
        die("%s", err);
    enum chat_template tmpl = pick_template(tok, I, tmpl_name);
    fprintf(stderr, "moegate: chat template %s\n", chat_template_name(tmpl));
    if (n_ctx == 0)
        n_ctx = (int)(I->n_ctx_train < 4096 ? I->n_ctx_train : 4096);
    model_kv *kv;
    sampler *smp;
    if (model_kv_create(&kv, m, 1, n_ctx, err, sizeof err) || sampler_create(&smp, I->n_vocab, &sp, err, sizeof err))
        die("%s", err);
    char bos[128], eos[128];
    special_text(tok, tokenizer_bos(tok), bos, sizeof bos);
    special_text(tok, tokenizer_eos(tok), eos, sizeof eos);

    /* the conversation: message texts are owned here */
    size_t n_msg = 0, cap_msg = 16;
    chat_message *msgs = calloc(cap_msg, sizeof *msgs);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)n_ctx), *pos = malloc(sizeof(int32_t) * (size_t)n_ctx);
    int32_t *seq = calloc((size_t)n_ctx, sizeof(int32_t));
    uint8_t *want = calloc((size_t)n_ctx, 1);
    float *logits = malloc(sizeof(float) * (size_t)I->n_vocab);
    size_t text_cap = tokenizer_max_piece_bytes(tok) + 8;
    char *piece = malloc(text_cap);
    if (!msgs || !hist || !pos || !seq || !want || !logits || !piece)
        die("out of memory");
    for (int i = 0; i < n_ctx; i++)
        pos[i] = i;
    if (system)
        msgs[n_msg++] = (chat_message){.role = "system", .content = strdup(system)};
    int n_hist = 0; /* tokens whose keys and values are in the cache */
    char *line = NULL;
    size_t line_cap = 0;
    bool tty = isatty(0);
    for (;;) {
        if (tty)
            fputs("> ", stderr);
        ssize_t nl = getline(&line, &line_cap, stdin);
        if (nl < 0)
            break;
        while (nl > 0 && (line[nl - 1] == '\n' || line[nl - 1] == '\r'))
            line[--nl] = '\0';
        if (nl == 0)
            continue;
        if (!strcmp(line, "/reset")) {
            for (size_t i = system ? 1 : 0; i < n_msg; i++)
                free((void *)msgs[i].content);
            n_msg = system ? 1 : 0;
            n_hist = 0;
            continue;
        }
        if (n_msg + 2 > cap_msg) {
            cap_msg *= 2;
            msgs = realloc(msgs, cap_msg * sizeof *msgs);
            if (!msgs)
                die("out of memory");
        }
        msgs[n_msg++] = (chat_message){.role = "user", .content = strdup(line)};
        chat_request r = {.messages = msgs, .n_messages = n_msg, .add_generation_prompt = true,
                          .enable_thinking = no_think ? 0 : -1, .bos = bos, .eos = eos};
        chat_prompt p;
        tokenizer_ids ids = {0};
        if (chat_render(tmpl, &r, &p, err, sizeof err)) {
            fprintf(stderr, "moegate: %s\n", err);
            free((void *)msgs[--n_msg].content);
            continue;
        }
        if (tokenizer_encode_chat(tok, p.text, p.len, p.plain, p.n_plain, &ids))
            die("out of memory");
        chat_prompt_free(&p);
        if ((int)ids.n + n_predict > n_ctx) {
            fprintf(stderr, "moegate: the conversation (%zu tokens) + -n %d no longer fits the context of %d "
                            "(--ctx); /reset to start over\n", ids.n, n_predict, n_ctx);
            free((void *)msgs[--n_msg].content);
            tokenizer_ids_free(&ids);
            continue;
        }
        /* evaluate only what differs from the cached tokens */
        int common = 0;
        while (common < n_hist && common < (int)ids.n - 1 && hist[common] == ids.ids[common])
            common++;
        memcpy(hist, ids.ids, ids.n * sizeof(int32_t));
        int n_new = (int)ids.n - common;
        memset(want + common, 0, (size_t)n_new);
        want[ids.n - 1] = 1;
        model_batch b = {.n = n_new, .token = hist + common, .pos = pos + common, .seq = seq, .want_logits = want + common};
        /* logits has room for one row: only the last position asks for it */
        if (model_forward(m, kv, &b, logits, err, sizeof err))
            die("%s", err);
        n_hist = (int)ids.n;
        tokenizer_ids_free(&ids);
        /* generate the answer */
        tokenizer_stream ts;
        tokenizer_stream_init(&ts, tok, show_special);
        size_t ans_len = 0, ans_cap = 256;
        char *ans = malloc(ans_cap);
        if (!ans)
            die("out of memory");
        int prompt_end = n_hist;
        for (int i = 0; i < n_predict && n_hist < n_ctx; i++) {
            int32_t id = sampler_sample(smp, logits, hist + prompt_end, n_hist - prompt_end);
            if (tokenizer_is_eog(tok, id))
                break;
            hist[n_hist] = id;
            int k = tokenizer_stream_push(&ts, id, piece, text_cap);
            if (k > 0) {
                fwrite(piece, 1, (size_t)k, stdout);
                fflush(stdout);
            }
            /* the answer as text, for the next turn's rendering */
            int kb = tokenizer_token_bytes(tok, id, false, piece, text_cap);
            if (ans_len + (size_t)kb + 1 > ans_cap) {
                ans_cap = (ans_len + (size_t)kb + 1) * 2;
                ans = realloc(ans, ans_cap);
                if (!ans)
                    die("out of memory");
            }
            memcpy(ans + ans_len, piece, (size_t)kb);
            ans_len += (size_t)kb;
            model_batch g = {.n = 1, .token = &hist[n_hist], .pos = &pos[n_hist], .seq = seq};
            n_hist++;
            if (model_forward(m, kv, &g, logits, err, sizeof err))
                die("%s", err);
        }
        int k = tokenizer_stream_flush(&ts, piece, text_cap);
        if (k > 0)
            fwrite(piece, 1, (size_t)k, stdout);
        printf("\n\n");
        fflush(stdout);
        ans[ans_len] = '\0';
        /* SentencePiece answers start with the space of their first piece */
        if (tokenizer_get_kind(tok) == TOKENIZER_SPM_BPE && ans[0] == ' ')
            memmove(ans, ans + 1, ans_len--);
        msgs[n_msg++] = (chat_message){.role = "assistant", .content = ans};
    }
    for (size_t i = 0; i < n_msg; i++)
        free((void *)msgs[i].content);
    free(msgs);
    free(line);
    free(hist);
    free(pos);
    free(seq);
    free(want);
    free(logits);
    free(piece);
    sampler_free(smp);
    model_kv_free(kv);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    if (argc != 1)
        die("usage: moegate model inspect MODEL.gguf");
    char err[512];
    model_opts mo = {.n_threads = 1, .n_batch = 1};
    model *m;
    if (model_open(&m, argv[0], &mo, err, sizeof err))
        die("%s", err);
    const model_info *I = model_get_info(m);
    const gguf *g = model_gguf(m);
    printf("file:            %s (GGUF v%u, %.2f GB)\n", argv[0], gguf_version(g),
           gguf_file_size(g) / 1e9);
    printf("architecture:    %s%s%s\n", I->arch_name,
           I->arch == MODEL_ARCH_MIXTRAL ? " (Mixtral-style MoE)" : "",
           I->arch == MODEL_ARCH_DEEPSEEK2 ? " (DeepSeek-V2/V3: MLA + DeepSeekMoE)" : "");
    if (I->name[0])
        printf("name:            %s\n", I->name);
    printf("vocabulary:      %lld\n", (long long)I->n_vocab);
    printf("context:         %lld\n", (long long)I->n_ctx_train);
    printf("embedding:       %lld\n", (long long)I->dim);
    printf("layers:          %lld\n", (long long)I->n_layer);
    if (I->arch == MODEL_ARCH_DEEPSEEK2) {
        printf("attention:       MLA, %lld heads, q_lora_rank %lld%s, kv_lora_rank %lld, "
               "key head %lld (nope %lld + rope %lld), value head %lld, kv_b %s\n",
               (long long)I->n_head, (long long)I->q_lora_rank,
               I->q_lora_rank ? "" : " (none)", (long long)I->kv_lora_rank,
               (long long)I->head_dim, (long long)I->qk_nope, (long long)I->qk_rope,
               (long long)I->v_head_dim,
               I->kv_b_split ? "split (attn_k_b + attn_v_b)" : "fused (attn_kv_b)");
        printf("softmax scale:   %.6g (1/sqrt(%lld)%s)\n", I->attn_scale, (long long)I->head_dim,
               !strcmp(I->rope_scaling, "yarn") ? " x YaRN mscale^2" : "");
    } else {
        printf("attention:       %lld query heads, %lld kv heads, head dim %lld\n",
               (long long)I->n_head, (long long)I->n_head_kv, (long long)I->head_dim);
    }
    if (!strcmp(I->rope_scaling, "yarn"))
        printf("rope:            %s, %lld dims, base %g, YaRN factor %g, original context %lld, "
               "log multiplier %g (mscale %.4g), beta fast %g slow %g\n",
               I->rope_neox ? "neox" : "normal", (long long)I->n_rot, I->rope_base,
               I->yarn_factor, (long long)I->yarn_orig_ctx, I->yarn_log_mul,
               I->yarn_factor > 1 ? 1 + I->yarn_log_mul * log(I->yarn_factor) : 1.0,
               I->yarn_beta_fast, I->yarn_beta_slow);
    else
        printf("rope:            %s, %lld dims, base %g, linear scale %g\n",
               I->rope_neox ? "neox" : "normal", (long long)I->n_rot, I->rope_base,
               I->rope_scale);
    printf("rms norm eps:    %g\n", I->rms_eps);
    if (I->n_dense_lead)
        printf("dense layers:    first %lld, FFN %lld\n", (long long)I->n_dense_lead,
               (long long)I->dense_ff);
    printf("experts:         %lld, %lld used per token, FFN %lld; %s scores",
           (long long)I->n_expert, (long long)I->n_expert_used, (long long)I->expert_ff,
           I->gating == MODEL_GATING_SIGMOID ? "sigmoid" : "softmax");
    if (I->n_group > 1)
        printf(", top %lld of %lld groups", (long long)I->n_group_used, (long long)I->n_group);
    if (I->arch == MODEL_ARCH_DEEPSEEK2 && I->gating == MODEL_GATING_SIGMOID)
        printf(", selection bias (exp_probs_b)");
    printf(", %s", I->norm_topk ? "weights renormalised" : "weights not renormalised");
    if (I->expert_scale != 1.0)
        printf(", scaled by %g", I->expert_scale);
    printf("\n");
    if (I->shared_ff)
        printf("shared expert:   FFN %lld%s\n", (long long)I->shared_ff,
               I->arch == MODEL_ARCH_DEEPSEEK2 ? "" : ", sigmoid-gated");
    printf("kv cache:        %zu bytes per token (f32, all layers)", I->kv_bytes_token);
    if (I->kv_bytes_token_full != I->kv_bytes_token)
        printf(": compressed latent; uncompressed keys and values would take %zu (%.1fx)",
               I->kv_bytes_token_full, (double)I->kv_bytes_token_full / (double)I->kv_bytes_token);
    printf("\n");
    printf("output:          %s\n", I->tied_output ? "tied to token_embd" : "output.weight");
    printf("parameters:      %lld total (%.3f B), %lld active per token (%.3f B)\n",
           (long long)I->n_params, I->n_params / 1e9, (long long)I->n_params_active,
           I->n_params_active / 1e9);
    /* tensor types by count and bytes */
    size_t bytes[TENSOR_TYPE_COUNT] = {0};
    int count[TENSOR_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_tensor_count(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->type < TENSOR_TYPE_COUNT) {
            bytes[t->type] += t->nbytes;
            count[t->type]++;
        }
    }
    printf("weights:         %.3f GB in %lld tensors:", I->weight_bytes / 1e9,
           (long long)gguf_tensor_count(g));
    for (int t = 0; t < TENSOR_TYPE_COUNT; t++)
        if (count[t])
            printf(" %s x%d (%.1f MB)", tensor_type_get((uint32_t)t)->name, count[t],
                   bytes[t] / 1e6);
    printf("\n");
    model_close(m);
    return 0;
}


/* ---- bench -------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One table row per thread count: prompt processing (one batch of n_pp
 * tokens) and generation (n_tg single-token steps) throughput, medians of
 * reps runs, with the bandwidth and op rate they imply. */
static int cmd_bench(int argc, char **argv)
{
    const char *model_path = NULL, *threads = "1,2", *isa = NULL;
    int n_pp = 512, n_tg = 32, reps = 3;
    bool json = false;
    args a = {argc, 0, argv};
    for (a.i = 0; a.i < argc; a.i++) {
        const char *v, *s = argv[a.i];
        if (opt_val(&a, "--model", "-m", &v))
            model_path = v;
        else if (opt_val(&a, "--threads", "-t", &v))
            threads = v;
        else if (opt_val(&a, "--pp", "-p", &v))
            n_pp = (int)parse_int("--pp", v, 1, 1 << 16);
        else if (opt_val(&a, "--tg", "-n", &v))
            n_tg = (int)parse_int("--tg", v, 2, 1 << 16);
        else if (opt_val(&a, "--reps", "-r", &v))
            reps = (int)parse_int("--reps", v, 1, 100);
        else if (opt_val(&a, "--isa", NULL, &v))
            isa = v;
        else if (!strcmp(s, "--json"))
            json = true;
        else
            die("bench: unknown option '%s'", s);
    }
    if (!model_path)
        die("bench: -m MODEL.gguf is required");
    int n_th;
    int32_t *th = parse_tokens(threads, &n_th);
    if (!json)
        printf("| model | type | threads | pp%d tok/s | tg tok/s | GB read/token | tg GB/s | "
               "pp GOP/s |\n|---|---|---|---|---|---|---|---|\n", n_pp);
    for (int ti = 0; ti < n_th; ti++) {
        char err[512];
        model_opts mo = {.n_threads = th[ti], .isa = isa, .prefault = true,
                         .n_batch = n_pp < 512 ? n_pp : 512};
        model *m;
        if (model_open(&m, model_path, &mo, err, sizeof err))
            die("%s", err);
        const model_info *I = model_get_info(m);
        int n_ctx = n_pp > n_tg + 1 ? n_pp : n_tg + 1;
        model_kv *kv;
        if (model_kv_create(&kv, m, 1, n_ctx, err, sizeof err))
            die("%s", err);
        int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_ctx);
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_ctx);
        int32_t *seq = calloc((size_t)n_ctx, sizeof(int32_t));
        uint8_t *want = calloc((size_t)n_ctx, 1);
        float *logits = malloc(sizeof(float) * (size_t)I->n_vocab);
        double *t_pp = malloc(sizeof(double) * (size_t)reps);
        double *t_tg = malloc(sizeof(double) * (size_t)reps);
        if (!tok || !pos || !seq || !want || !logits || !t_pp || !t_tg)
            die("out of memory");
        uint64_t x = 12345;
        for (int i = 0; i < n_ctx; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tok[i] = (int32_t)((x >> 33) % (uint64_t)I->n_vocab);
            pos[i] = i;
        }
        want[n_pp - 1] = 1;
        for (int r = 0; r < reps + 1; r++) { /* first run warms up, not counted */
            model_batch b = {.n = n_pp, .token = tok, .pos = pos, .seq = seq, .want_logits = want};
            double t0 = now();
            if (model_forward(m, kv, &b, logits, err, sizeof err))
                die("%s", err);
            double dt = now() - t0;
            double t1 = now();
            for (int i = 0; i < n_tg; i++) {
                model_batch g = {.n = 1, .token = &tok[i], .pos = &pos[i], .seq = seq};
                if (model_forward(m, kv, &g, logits, err, sizeof err))
                    die("%s", err);
            }
            double dg = now() - t1;
            if (r > 0) {
                t_pp[r - 1] = dt;
                t_tg[r - 1] = dg;
            }
        }
        double pp = n_pp / median(t_pp, reps), tg = n_tg / median(t_tg, reps);
        double gb = I->bytes_per_token / 1e9;
        /* matmul ops of one prompt batch: every active weight once per token,
         * except the output matrix, applied to the last position only */
        double out_params = (double)I->n_vocab * (double)I->dim;
        double ops = 2.0 * (((double)I->n_params_active - out_params) * n_pp + out_params);
        double gops = ops / median(t_pp, reps) / 1e9;
        const char *tname = tensor_type_get(I->main_type)->name;
        if (json)
            printf("{\"model\":\"%s\",\"arch\":\"%s\",\"type\":\"%s\",\"threads\":%d,"
                   "\"pp_tokens\":%d,\"pp_tok_s\":%.3f,\"tg_tok_s\":%.3f,"
                   "\"bytes_per_token\":%zu,\"tg_gb_s\":%.3f,\"pp_gop_s\":%.1f,"
                   "\"kv_bytes_token\":%zu,\"kv_bytes_token_full\":%zu,\"isa\":\"%s\"}\n",
                   I->name, I->arch_name, tname, th[ti], n_pp, pp, tg, I->bytes_per_token,
                   tg * gb, gops, I->kv_bytes_token, I->kv_bytes_token_full, model_isa_name(m));
        else
            printf("| %s | %s | %d | %.1f | %.2f | %.3f | %.2f | %.0f |\n", I->name, tname, th[ti],
                   pp, tg, gb, tg * gb, gops);
        fflush(stdout);
        free(tok);
        free(pos);
        free(seq);
        free(want);
        free(logits);
        free(t_pp);
        free(t_tg);
        model_kv_free(kv);
        model_close(m);
    }
    free(th);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "model") && argc >= 3 && !strcmp(argv[2], "inspect"))
        return cmd_inspect(argc - 3, argv + 3);
    if (!strcmp(cmd, "chat"))
        return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "template"))
        return cmd_template(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "policy"))
        return cmd_policy(argc - 2, argv + 2);
    if (!strcmp(cmd, "adapter"))
        return cmd_adapter(argc - 2, argv + 2);
    if (!strcmp(cmd, "domains"))
        return cmd_domains(argc - 2, argv + 2);
    if (!strcmp(cmd, "db"))
        return cmd_db(argc - 2, argv + 2);
    if (!strcmp(cmd, "audit"))
        return cmd_audit(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("moegate %s\n", MOEGATE_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moegate: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
