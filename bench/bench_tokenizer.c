/* bench/bench_tokenizer.c — encode throughput of one tokenizer on one text.
 *
 *   build/bench/bench_tokenizer DIR FILE [REPS]
 *
 * DIR holds tokenizer.json (+ tokenizer_config.json). The whole FILE is
 * encoded REPS times (default 7) on one thread, as plain text; prints one
 * line: "bytes tokens median_seconds MB/s" (MB = 10^6 bytes). bench/tokenizer.sh
 * runs it next to the JS reference on the same text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/tokenizer.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tokenizer DIR FILE [REPS]\n");
        return 2;
    }
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    if (reps < 1 || reps > 1000)
        reps = 7;
    char json[4096], cfg[4096], err[512];
    snprintf(json, sizeof json, "%s/tokenizer.json", argv[1]);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", argv[1]);
    tokenizer *t;
    if (tokenizer_open_hf(&t, json, cfg, err, sizeof err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", argv[2]);
        return 1;
    }
    fclose(f);
    double *sec = malloc(sizeof(double) * (size_t)reps);
    tokenizer_ids ids = {0};
    for (int r = 0; r < reps; r++) {
        ids.n = 0;
        double t0 = now();
        if (tokenizer_encode(t, text, (size_t)n, 0, &ids)) {
            fprintf(stderr, "bench_tokenizer: encode failed\n");
            return 1;
        }
        sec[r] = now() - t0;
    }
    qsort(sec, (size_t)reps, sizeof *sec, cmp_double);
    double med = sec[reps / 2];
    printf("%ld %zu %.6f %.2f\n", n, ids.n, med, n / med / 1e6);
    tokenizer_ids_free(&ids);
    free(sec);
    free(text);
    tokenizer_free(t);
    return 0;
}
