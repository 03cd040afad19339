/* moegate domains — check domain packs, try the `model: "auto"` router.
 *
 *   moegate domains check [DIR]
 *       validates every pack under DIR (default: domains), or DIR itself
 *       when it holds a domain.yaml; prints every problem as
 *       FILE:LINE:COLUMN: error: MESSAGE on stderr, then a summary on
 *       stdout; exit status 1 when there is any error.
 *   moegate domains route [--dir DIR] [--ood FILE] [--threshold X] TEXT
 *       trains the router on the packs (and FILE, default
 *       DIR/_router/ood_examples.txt) and prints the route of TEXT as JSON:
 *       {"domain": NAME|null, "best": NAME|null, "score": S}.
 *   moegate domains route [--dir DIR] [--ood FILE] [--threshold X] --eval JSONL
 *       the accuracy on a labelled set (lines {"prompt", "domain"}, domain
 *       "none" for the base model), e.g. tests/domains/heldout.jsonl.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "domains/domain.h"

int cmd_domains(int argc, char **argv); /* declared here until cli/cli.h lists it */

static void usage(FILE *f)
{
    fprintf(f, "usage:\n"
               "  moegate domains check [DIR]\n"
               "  moegate domains route [--dir DIR] [--ood FILE] [--threshold X] TEXT\n"
               "  moegate domains route [--dir DIR] [--ood FILE] [--threshold X] --eval JSONL\n");
}

static void print_diag(void *ud, const policy_diag *d)
{
    int *errors = ud;
    *errors += d->severity == POLICY_ERROR;
    char line[1400];
    fprintf(stderr, "%s\n", policy_diag_format(d, line, sizeof line));
}

static int cmd_check(int argc, char **argv)
{
    if (argc > 1) {
        usage(stderr);
        return 2;
    }
    const char *dir = argc ? argv[0] : "domains";
    int errors = 0;
    domain_load_opts o = {print_diag, &errors};
    domain_set *s = NULL;
    char err[1024] = "";
    int rc = domain_set_load(&s, dir, &o, err, sizeof err);
    if (rc) {
        if (rc != MG_EFORMAT)
            fprintf(stderr, "%s\n", err);
        else
            printf("%s: %d error%s\n", dir, errors, errors == 1 ? "" : "s");
        return 1;
    }
    printf("%s: %d pack%s OK:", dir, domain_set_count(s), domain_set_count(s) == 1 ? "" : "s");
    for (int i = 0; i < domain_set_count(s); i++) {
        const domain_pack *p = domain_set_get(s, i);
        printf(" %s (%d examples, %d eval prompts)", p->name, p->n_examples, p->n_eval);
    }
    printf("\n");
    domain_set_free(s);
    return 0;
}

static const char *route_name(const domain_set *s, int i)
{
    return i < 0 ? NULL : domain_set_get(s, i)->name;
}

static int eval_set(const domain_set *s, const domain_router *r, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "domains: cannot read %s\n", path);
        return 1;
    }
    char line[8192];
    int n = 0, right = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        const char *p = json_string_value(json_object_get(o, "prompt"));
        const char *want = json_string_value(json_object_get(o, "domain"));
        if (!p || !want) {
            fprintf(stderr, "%s:%d: expected {\"prompt\": ..., \"domain\": ...}\n", path, lineno);
            json_decref(o);
            fclose(f);
            return 1;
        }
        int wi = strcmp(want, "none") == 0 ? -1 : domain_set_index(s, want);
        domain_route rt;
        domain_router_classify(r, p, strlen(p), &rt);
        n++;
        right += rt.domain == wi;
        json_decref(o);
    }
    fclose(f);
    printf("accuracy %.4f (%d/%d)\n", n ? (double)right / n : 0.0, right, n);
    return 0;
}

static int cmd_route(int argc, char **argv)
{
    const char *dir = "domains", *ood = NULL, *eval = NULL, *text = NULL;
    domain_router_opts ro = {0};
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--ood") && i + 1 < argc)
            ood = argv[++i];
        else if (!strcmp(argv[i], "--eval") && i + 1 < argc)
            eval = argv[++i];
        else if (!strcmp(argv[i], "--threshold") && i + 1 < argc) {
            char *end;
            ro.threshold = strtod(argv[++i], &end);
            if (*end || !(ro.threshold > 0 && ro.threshold <= 1)) {
                fprintf(stderr, "domains: --threshold takes a number in (0, 1]\n");
                return 2;
            }
        } else if (argv[i][0] != '-' && !text)
            text = argv[i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!text == !eval) {
        usage(stderr);
        return 2;
    }
    char oodbuf[4096];
    if (!ood) {
        snprintf(oodbuf, sizeof oodbuf, "%s/_router/ood_examples.txt", dir);
        ood = oodbuf;
    }
    int errors = 0;
    domain_load_opts o = {print_diag, &errors};
    domain_set *s = NULL;
    domain_router *r = NULL;
    char err[1024] = "";
    int rc = domain_set_load(&s, dir, &o, err, sizeof err);
    if (rc == 0)
        rc = domain_router_train(&r, s, ood, &ro, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err);
        domain_set_free(s);
        return 1;
    }
    int status = 0;
    if (eval) {
        status = eval_set(s, r, eval);
    } else {
        domain_route rt;
        domain_router_classify(r, text, strlen(text), &rt);
        json_t *j = json_pack("{s:s?, s:s?, s:f}", "domain", route_name(s, rt.domain), "best",
                              route_name(s, rt.best), "score", floor(rt.score * 1e4 + 0.5) / 1e4);
        char *js = j ? json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(4)) : NULL;
        printf("%s\n", js ? js : "{}");
        free(js);
        json_decref(j);
    }
    domain_router_free(r);
    domain_set_free(s);
    return status;
}

int cmd_domains(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "check"))
        return cmd_check(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "route"))
        return cmd_route(argc - 1, argv + 1);
    usage(argc ? stderr : stdout);
    return 2;
}
