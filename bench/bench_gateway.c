/* bench_gateway — the engine side of the gateway benchmark: the same
 * 1-token generation the HTTP benchmark asks for, submitted to the serving
 * engine directly (no HTTP, TLS, auth, policy or audit), so that
 * bench/gateway.sh can report what the gateway adds.
 *
 *   bench_gateway -m MODEL.gguf [--conc 16] [--seconds 10] [--max-tokens 1]
 *                 [--text "Say hello."] [--threads N] [--ctx N]
 *
 * --conc closed-loop clients each render the chat prompt once with the
 * model's template (one user message, as the HTTP benchmark sends), then
 * submit it again and again (greedy, --max-tokens), waiting for each to
 * finish. Latency is submit to last callback. Prints one line:
 *   direct conc=16: 1234.5 req/s, p50 1.234 ms, p99 2.345 ms (N requests)
 * The engine is opened as `moegate serve` opens it (default slots and
 * queue), so the batching is the same.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/chat.h"
#include "core/errors.h"
#include "core/model.h"
#include "core/serve.h"
#include "core/tokenizer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *msg)
{
    fprintf(stderr, "bench_gateway: %s\n", msg);
    exit(1);
}

typedef struct client {
    serve *sv;
    const int32_t *prompt;
    size_t n_prompt;
    int max_tokens;
    double stop_at;
    double *lat; /* latencies, seconds */
    size_t n_lat, cap_lat;
    pthread_mutex_t mu; /* guards done */
    pthread_cond_t cv;
    bool done;
} client;

static void on_text(void *ud, const char *text, size_t len, int32_t token, enum serve_finish f)
{
    (void)text;
    (void)len;
    (void)token;
    client *c = ud;
    if (f == SERVE_RUNNING)
        return;
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void *client_main(void *arg)
{
    client *c = arg;
    serve_params sp = {.sampling = sampler_defaults(), .max_tokens = c->max_tokens};
    sp.sampling.temperature = 0;
    char err[256];
    while (now() < c->stop_at) {
        c->done = false;
        double t0 = now();
        uint64_t id;
        int rc = serve_submit(c->sv, c->prompt, c->n_prompt, &sp, on_text, c, &id, err, sizeof err);
        if (rc == MG_EBUSY)
            continue;
        if (rc)
            die(err);
        pthread_mutex_lock(&c->mu);
        while (!c->done)
            pthread_cond_wait(&c->cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
        if (c->n_lat == c->cap_lat) {
            c->cap_lat = c->cap_lat ? 2 * c->cap_lat : 4096;
            c->lat = realloc(c->lat, c->cap_lat * sizeof *c->lat);
            if (!c->lat)
                die("out of memory");
        }
        c->lat[c->n_lat++] = now() - t0;
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *text = "Say hello.";
    int conc = 16, max_tokens = 1, threads = 0, n_ctx = 0;
    double seconds = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v)
            path = argv[++i];
        else if (!strcmp(a, "--conc") && v)
            conc = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v)
            seconds = atof(argv[++i]);
        else if (!strcmp(a, "--max-tokens") && v)
            max_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--text") && v)
            text = argv[++i];
        else if (!strcmp(a, "--threads") && v)
            threads = atoi(argv[++i]);
        else if (!strcmp(a, "--ctx") && v)
            n_ctx = atoi(argv[++i]);
        else
            die("usage: bench_gateway -m MODEL.gguf [--conc N] [--seconds S] [--max-tokens N] [--text T]");
    }
    if (!path || conc < 1 || conc > 1024 || max_tokens < 1 || seconds <= 0)
        die("bad arguments");
    char err[512];
    model_opts mo = {.n_threads = threads, .prefault = true};
    model *m;
    tokenizer *tok;
    if (model_open(&m, path, &mo, err, sizeof err) || tokenizer_open_gguf(&tok, model_gguf(m), err, sizeof err))
        die(err);
    const model_info *mi = model_get_info(m);
    enum chat_template t;
    if (chat_template_detect(tokenizer_chat_template(tok), tokenizer_pre(tok), mi->arch_name, &t, err, sizeof err))
        die(err);
    char bos[64] = "", eos[64] = "";
    int nb = tokenizer_bos(tok) >= 0 ? tokenizer_token_bytes(tok, tokenizer_bos(tok), true, bos, sizeof bos - 1) : 0;
    int ne = tokenizer_eos(tok) >= 0 ? tokenizer_token_bytes(tok, tokenizer_eos(tok), true, eos, sizeof eos - 1) : 0;
    bos[nb > 0 && nb < (int)sizeof bos ? nb : 0] = 0;
    eos[ne > 0 && ne < (int)sizeof eos ? ne : 0] = 0;
    chat_message msg = {.role = "user", .content = text};
    chat_request cr = {.messages = &msg, .n_messages = 1, .add_generation_prompt = true, .enable_thinking = -1,
                       .bos = bos, .eos = eos};
    chat_prompt cp = {0};
    tokenizer_ids ids = {0};
    if (chat_render(t, &cr, &cp, err, sizeof err) ||
        tokenizer_encode_chat(tok, cp.text, cp.len, cp.plain, cp.n_plain, &ids))
        die("cannot render the prompt");
    serve_opts so = {.n_ctx = n_ctx > 0 ? n_ctx : (int)mi->n_ctx_train};
    serve *sv;
    if (serve_open(&sv, m, tok, &so, err, sizeof err))
        die(err);
    client *cl = calloc((size_t)conc, sizeof *cl);
    pthread_t *th = calloc((size_t)conc, sizeof *th);
    if (!cl || !th)
        die("out of memory");
    /* warm up: the prompt's blocks enter the prefix cache, as after the HTTP warm-up */
    client w = {.sv = sv, .prompt = ids.ids, .n_prompt = ids.n, .max_tokens = max_tokens, .stop_at = now() + 0.5};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    client_main(&w);
    free(w.lat);
    double t0 = now();
    for (int i = 0; i < conc; i++) {
        cl[i] = (client){.sv = sv, .prompt = ids.ids, .n_prompt = ids.n, .max_tokens = max_tokens,
                         .stop_at = t0 + seconds};
        pthread_mutex_init(&cl[i].mu, NULL);
        pthread_cond_init(&cl[i].cv, NULL);
        if (pthread_create(&th[i], NULL, client_main, &cl[i]))
            die("cannot start a client thread");
    }
    size_t total = 0;
    for (int i = 0; i < conc; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].n_lat;
    }
    double elapsed = now() - t0;
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all)
        die("out of memory");
    size_t k = 0;
    for (int i = 0; i < conc; i++) {
        memcpy(all + k, cl[i].lat, cl[i].n_lat * sizeof *all);
        k += cl[i].n_lat;
        free(cl[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_d);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
    printf("direct conc=%d: %.1f req/s, p50 %.3f ms, p99 %.3f ms (%zu requests, prompt %zu tokens, %d generated)\n",
           conc, total / elapsed, p50 * 1e3, p99 * 1e3, total, ids.n, max_tokens);
    free(all);
    free(cl);
    free(th);
    serve_close(sv);
    tokenizer_ids_free(&ids);
    chat_prompt_free(&cp);
    tokenizer_free(tok);
    model_close(m);
    return 0;
}
