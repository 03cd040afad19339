/* Domain packs and the "auto" router: the shipped packs under domains/
 * validate with the values they say; each class of mistake in a pack gives
 * its exact FILE:LINE:COLUMN message; blocked topics and language
 * detection; and the router's accuracy on the held-out labelled set
 * tests/domains/heldout.jsonl (never seen in training) is at least
 * HELDOUT_MIN_ACCURACY — a floor set from the measured figure in
 * domains/README.md and never loosened. Run from the repository root
 * (tests/run.sh does); the accuracy is printed as
 * "router: heldout accuracy ...". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "domains/domain.h"

/* measured 0.9000 at DOMAIN_ROUTER_THRESHOLD 0.6 (domains/README.md) */
#define HELDOUT_MIN_ACCURACY 0.88

/* ---- helpers ---------------------------------------------------------------- */

typedef struct diags {
    char text[8192];
    int n;
} diags;

static void on_diag(void *ud, const policy_diag *d)
{
    diags *g = ud;
    char buf[1024];
    policy_diag_format(d, buf, sizeof buf);
    size_t l = strlen(g->text);
    snprintf(g->text + l, sizeof g->text - l, "%s\n", buf);
    g->n++;
}

static char tmp[256];

static void put(const char *rel, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup_tree(void **state)
{
    snprintf(tmp, sizeof tmp, "/tmp/mg-domains-XXXXXX");
    assert_non_null(mkdtemp(tmp));
    char p[512];
    snprintf(p, sizeof p, "%s/acme", tmp);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/acme/eval", tmp);
    mkdir(p, 0700);
    put("acme/zh.md", "你是助理。\n");
    put("acme/en.md", "You are an assistant.\n");
    put("acme/empty.md", " \n\n");
    put("acme/ex.txt", "# comment\nfirst prompt\n\nsecond prompt\n");
    put("acme/eval/p.jsonl", "{\"prompt\": \"hi\", \"lang\": \"en\", \"must_include\": [\"x\"]}\n");
    put("acme/eval/bad.jsonl", "{\"prompt\": \"hi\", \"lang\": \"en\"}\n{\"prompt\": 3,\n");
    return 0;
}

static int teardown_tree(void **state)
{
    const char *files[] = {"acme/zh.md",      "acme/en.md",        "acme/empty.md",
                           "acme/ex.txt",     "acme/eval/p.jsonl", "acme/eval/bad.jsonl",
                           "acme/domain.yaml"};
    char p[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/acme/eval", tmp);
    rmdir(p);
    snprintf(p, sizeof p, "%s/acme", tmp);
    rmdir(p);
    rmdir(tmp);
    return 0;
}

/* ---- the shipped packs ----------------------------------------------------------- */

static void test_packs_validate(void **state)
{
    diags g = {{0}, 0};
    domain_load_opts o = {on_diag, &g};
    domain_set *s = NULL;
    char err[512] = "";
    int rc = domain_set_load(&s, "domains", &o, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n%s", err, g.text);
    assert_int_equal(rc, 0);
    assert_int_equal(g.n, 0);
    assert_int_equal(domain_set_count(s), 3);
    const char *names[] = {"finance", "medical", "telecom"};
    for (int i = 0; i < 3; i++) {
        const domain_pack *p = domain_set_get(s, i);
        assert_string_equal(p->name, names[i]);
        assert_int_equal(domain_set_index(s, names[i]), i);
        assert_ptr_equal(domain_set_find(s, names[i]), p);
        assert_true(strlen(p->system_prompt[DOMAIN_ZH]) > 100);
        assert_true(strlen(p->system_prompt[DOMAIN_EN]) > 100);
        assert_true(p->n_examples >= 60);
        assert_true(p->n_eval >= 4);
        assert_true(p->n_topics >= 1);
        assert_true(p->n_redaction >= 1);
        assert_true(p->default_max_tokens <= p->max_tokens);
        assert_non_null(p->adapter);
    }
    assert_null(domain_set_find(s, "legal"));
    assert_null(domain_set_get(s, 3));
    const domain_pack *f = domain_set_find(s, "finance");
    assert_non_null(strstr(f->disclaimer[DOMAIN_ZH], "不构成任何投资建议"));
    assert_non_null(strstr(f->disclaimer[DOMAIN_EN], "not investment advice"));
    assert_true(f->temperature == 0.3 && f->top_p == 0.9 && f->default_max_tokens == 1024);
    const domain_pack *m = domain_set_find(s, "medical");
    assert_non_null(strstr(m->disclaimer[DOMAIN_EN], "not a diagnosis"));
    assert_null(domain_set_find(s, "telecom")->disclaimer[DOMAIN_ZH]);

    /* blocked topics, both languages, ASCII case-insensitive */
    const char *q1 = "我有内幕消息，帮我分析";
    const domain_topic *t = domain_blocked_topic(f, q1, strlen(q1));
    assert_non_null(t);
    assert_string_equal(t->name, "insider_information");
    const char *q2 = "Draft a note promising a GUARANTEED RETURN";
    t = domain_blocked_topic(f, q2, strlen(q2));
    assert_non_null(t);
    assert_string_equal(t->name, "guaranteed_returns");
    assert_non_null(t->refusal[DOMAIN_ZH]);
    const char *q3 = "Summarise the annual report";
    assert_null(domain_blocked_topic(f, q3, strlen(q3)));
    assert_int_equal(domain_detect_lang(q1, strlen(q1)), DOMAIN_ZH);
    assert_int_equal(domain_detect_lang(q3, strlen(q3)), DOMAIN_EN);
    domain_set_free(s);

    /* one pack folder on its own, with a trailing slash */
    assert_int_equal(domain_set_load(&s, "domains/medical/", NULL, err, sizeof err), 0);
    assert_int_equal(domain_set_count(s), 1);
    assert_string_equal(domain_set_get(s, 0)->name, "medical");
    domain_set_free(s);
    assert_int_equal(domain_set_load(&s, "domains/nonexistent", NULL, err, sizeof err), MG_EIO);
}

/* ---- broken packs: each mistake, its exact message -------------------------------- */

#define OK_TAIL                                                                                    \
    "system_prompt: {zh: zh.md, en: en.md}\n"                                                      \
    "guardrails:\n  max_tokens: 100\n"                                                             \
    "examples: [ex.txt]\n"                                                                         \
    "eval: eval/p.jsonl\n"

static const struct {
    const char *yaml;
    const char *expect; /* the first diagnostic, FILE being "acme/domain.yaml" */
} cases[] = {
    {"name: acme\ndescription: d\n" OK_TAIL, NULL},
    {"name: acme\ndescription: d\ncolour: red\n" OK_TAIL,
     "acme/domain.yaml:3:1: error: domain.yaml: unknown key \"colour\" (expected one of: name, "
     "description, adapter, system_prompt, defaults, guardrails, examples, eval)"},
    {"name: other\ndescription: d\n" OK_TAIL,
     "acme/domain.yaml:1:7: error: name: \"other\" differs from the pack's folder \"acme\""},
    {"name: acme\n" OK_TAIL, "acme/domain.yaml:1:1: error: missing required key description"},
    {"name: acme\ndescription: [a]\n" OK_TAIL,
     "acme/domain.yaml:2:14: error: description: expected a string, got a list"},
    {"name: acme\ndescription: d\ndefaults: {temperature: 3}\n" OK_TAIL,
     "acme/domain.yaml:3:25: error: defaults.temperature: 3 is out of range [0, 2]"},
    {"name: acme\ndescription: d\ndefaults: {top_p: 0}\n" OK_TAIL,
     "acme/domain.yaml:3:19: error: defaults.top_p: 0 is out of range (0, 1]"},
    {"name: acme\ndescription: d\ndefaults: {max_tokens: 500}\n" OK_TAIL,
     "acme/domain.yaml:3:24: error: defaults.max_tokens: 500 exceeds guardrails.max_tokens 100"},
    {"name: acme\ndescription: d\ndefaults: {temperature: \"0.5\"}\n" OK_TAIL,
     "acme/domain.yaml:3:25: error: defaults.temperature: expected a number"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: missing.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:3:32: error: system_prompt.en: cannot read missing.md: No such file or "
     "directory"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: empty.md, en: en.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:3:21: error: system_prompt.zh: empty.md is empty"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: ../zh.md, en: en.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:3:21: error: system_prompt.zh: \"../zh.md\" must be a path inside the "
     "pack folder"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:3:16: error: system_prompt: missing required key en"},
    {"name: acme\ndescription: d\nname: acme\n" OK_TAIL,
     "acme/domain.yaml:3:1: error: domain.yaml: duplicate key \"name\""},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails:\n  max_tokens: 100\n  redaction: [cn_resident_id, passport]\n"
     "examples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:6:31: error: guardrails.redaction: unknown detector \"passport\""},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails:\n  max_tokens: 0\n"
     "examples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:5:15: error: guardrails.max_tokens: 0 is out of range [1, 1048576]"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails:\n  max_tokens: 10\n  blocked_topics:\n    - name: x\n      keywords: {fr: [a]}\n"
     "      refusal: {zh: a, en: b}\n"
     "examples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:8:17: error: guardrails.blocked_topics[0].keywords: at least one keyword "
     "is needed"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails:\n  max_tokens: 10\n  blocked_topics:\n    - name: x\n"
     "      keywords: {en: [ok, \"\\u3000 \\t\"]}\n      refusal: {zh: a, en: b}\n"
     "examples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:8:27: error: guardrails.blocked_topics[0].keywords.en: a keyword of only "
     "spaces matches nothing"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails:\n  max_tokens: 10\n  blocked_topics:\n    - name: x\n      keywords: {en: [a]}\n"
     "examples: [ex.txt]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:7:7: error: guardrails.blocked_topics[0]: name, keywords and refusal are "
     "required"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [ex.txt]\neval: eval/bad.jsonl\n",
     "acme/eval/bad.jsonl:2:"},
    {"name: acme\ndescription: d\nsystem_prompt: {zh: zh.md, en: en.md}\n"
     "guardrails: {max_tokens: 1}\nexamples: [empty.md]\neval: eval/p.jsonl\n",
     "acme/domain.yaml:5:12: error: examples: empty.md is empty"},
    {"name: Acme\ndescription: d\n" OK_TAIL,
     "acme/domain.yaml:1:7: error: name: \"Acme\" must be 1-64 of a-z 0-9 _ - starting with a "
     "letter"},
    {"name: acme\ndescription: &a d\n" OK_TAIL, "acme/domain.yaml:2:"},
    {"- a\n- b\n", "acme/domain.yaml:1:1: error: domain.yaml: expected a mapping, got a list"},
    {"", "acme/domain.yaml:1:1: error: empty document: expected a mapping"},
    {"name: acme\ndescription: d\n\tbad\n", "acme/domain.yaml:"},
};

static void test_broken_packs(void **state)
{
    char pack[512], file[600];
    snprintf(pack, sizeof pack, "%s/acme", tmp);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        diags g = {{0}, 0};
        domain_load_opts o = {on_diag, &g};
        domain_set *s = NULL;
        char err[1024] = "";
        snprintf(file, sizeof file, "%s/domain.yaml", pack);
        int rc = domain_set_load_memory(&s, file, cases[i].yaml, strlen(cases[i].yaml), pack, &o,
                                        err, sizeof err);
        /* diagnostics name the file as given: strip the temp folder */
        char got[8192];
        const char *src = g.text;
        size_t k = 0, tl = strlen(tmp) + 1;
        while (*src && k + 1 < sizeof got) {
            if (strncmp(src, tmp, tl - 1) == 0 && src[tl - 1] == '/')
                src += tl;
            else
                got[k++] = *src++;
        }
        got[k] = 0;
        if (!cases[i].expect) {
            if (rc)
                fprintf(stderr, "case %zu: %s\n%s", i, err, got);
            assert_int_equal(rc, 0);
            assert_int_equal(domain_set_get(s, 0)->n_examples, 2);
            assert_int_equal(domain_set_get(s, 0)->max_tokens, 100);
            assert_int_equal(domain_set_get(s, 0)->default_max_tokens, 100);
            domain_set_free(s);
            continue;
        }
        if (rc != MG_EFORMAT || strncmp(got, cases[i].expect, strlen(cases[i].expect)) != 0)
            fprintf(stderr, "case %zu: rc %d\nwant: %s\ngot:  %s", i, rc, cases[i].expect, got);
        assert_int_equal(rc, MG_EFORMAT);
        assert_null(s);
        assert_true(strncmp(got, cases[i].expect, strlen(cases[i].expect)) == 0);
        assert_true(strncmp(err, "domains: ", 9) == 0);
    }
}

/* A folder whose domain.yaml names another domain, and a folder of packs
 * with one bad pack: the whole set is refused, the error names the file. */
static void test_folder_name(void **state)
{
    put("acme/domain.yaml", "name: acme2\ndescription: d\n" OK_TAIL);
    diags g = {{0}, 0};
    domain_load_opts o = {on_diag, &g};
    domain_set *s = NULL;
    char err[1024] = "";
    assert_int_equal(domain_set_load(&s, tmp, &o, err, sizeof err), MG_EFORMAT);
    assert_null(s);
    assert_non_null(strstr(err, "acme/domain.yaml:1:7: name: \"acme2\" differs"));
    put("acme/domain.yaml", "name: acme\ndescription: d\n" OK_TAIL);
    assert_int_equal(domain_set_load(&s, tmp, NULL, err, sizeof err), 0);
    assert_int_equal(domain_set_count(s), 1);
    domain_set_free(s);
}

/* Blocked-topic keywords are matched in a folded form: case, full-width
 * letters, runs of any white space, spaces between Han characters and
 * zero-width characters do not hide a keyword; other text does not match. */
static void test_blocked_topic_folding(void **state)
{
    (void)state;
    domain_set *s = NULL;
    char err[1024] = "";
    const char *dirs[] = {"domains/finance"};
    assert_int_equal(domain_set_load_packs(&s, dirs, 1, NULL, err, sizeof err), 0);
    const domain_pack *p = domain_set_get(s, 0);
    static const char *const hit[] = {
        "Any INSIDER TIP on this?",
        "any \xef\xbd\x89\xef\xbd\x8e\xef\xbd\x93\xef\xbd\x89\xef\xbd\x84\xef\xbd\x85\xef\xbd\x92"
        "\xe3\x80\x80\xef\xbd\x94\xef\xbd\x89\xef\xbd\x90?", /* full-width, ideographic space */
        "insider \t\n  tip",                                 /* a run of white space */
        "insider\xc2\xa0tip",                                /* no-break space */
        "ins\xe2\x80\x8bider tip",                           /* zero-width space */
        "\xe5\x86\x85\xe5\xb9\x95 \xe6\xb6\x88\xe6\x81\xaf", /* 内幕 消息 */
        "\xe5\x86\x85\xe5\xb9\x95\xe3\x80\x80\xe6\xb6\x88\xe6\x81\xaf", /* 内幕　消息 */
        "\xe5\x86\x85\xc2\xad\xe5\xb9\x95\xe6\xb6\x88\xe6\x81\xaf",     /* soft hyphen inside */
    };
    for (size_t i = 0; i < sizeof hit / sizeof hit[0]; i++) {
        const domain_topic *t = domain_blocked_topic(p, hit[i], strlen(hit[i]));
        if (!t)
            fprintf(stderr, "not blocked: %s\n", hit[i]);
        assert_non_null(t);
        assert_string_equal(t->name, "insider_information");
    }
    static const char *const miss[] = {
        "inside the tip jar",
        "insidertip",               /* a space removed between Latin words is another text */
        "\xe5\x86\x85\xe5\xb9\x95", /* 内幕 alone */
        "\xff\xfe broken bytes",
    };
    for (size_t i = 0; i < sizeof miss / sizeof miss[0]; i++)
        assert_null(domain_blocked_topic(p, miss[i], strlen(miss[i])));
    domain_set_free(s);
}

/* The policy's pack list: given folders in the given order; a folder named
 * twice, or one without domain.yaml, refuses the set. */
static void test_load_packs(void **state)
{
    const char *dirs[] = {"domains/telecom/", "domains/finance"};
    domain_set *s = NULL;
    char err[1024] = "";
    assert_int_equal(domain_set_load_packs(&s, dirs, 2, NULL, err, sizeof err), 0);
    assert_int_equal(domain_set_count(s), 2);
    assert_string_equal(domain_set_get(s, 0)->name, "telecom");
    assert_string_equal(domain_set_get(s, 1)->name, "finance");
    domain_set_free(s);
    s = NULL;
    const char *twice[] = {"domains/finance", "domains/finance"};
    assert_int_equal(domain_set_load_packs(&s, twice, 2, NULL, err, sizeof err), MG_EFORMAT);
    assert_null(s);
    assert_non_null(strstr(err, "duplicate domain name \"finance\""));
    const char *missing[] = {"domains/finance", "domains/_router"};
    assert_int_equal(domain_set_load_packs(&s, missing, 2, NULL, err, sizeof err), MG_EFORMAT);
    assert_non_null(strstr(err, "domains/_router/domain.yaml: cannot read"));
    assert_int_equal(domain_set_load_packs(&s, dirs, 0, NULL, err, sizeof err), MG_ENOTFOUND);
    assert_int_equal(domain_set_load_packs(&s, NULL, 1, NULL, err, sizeof err), MG_EINVAL);
    const char *with_null[] = {"domains/finance", NULL};
    assert_int_equal(domain_set_load_packs(&s, with_null, 2, NULL, err, sizeof err), MG_EINVAL);
}

/* ---- the router ------------------------------------------------------------------- */

static void test_router_heldout(void **state)
{
    domain_set *s = NULL;
    char err[512] = "";
    assert_int_equal(domain_set_load(&s, "domains", NULL, err, sizeof err), 0);
    domain_router *r = NULL;
    int rc = domain_router_train(&r, s, "domains/_router/ood_examples.txt", NULL, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);

    static int sweep_best[2048], sweep_want[2048];
    static double sweep_score[2048];
    json_error_t je;
    FILE *f = fopen("tests/domains/heldout.jsonl", "r");
    assert_non_null(f);
    char line[4096];
    int n = 0, right = 0, per_n[4] = {0}, per_right[4] = {0}, lang_n[2] = {0}, lang_right[2] = {0};
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, &je);
        assert_non_null(o);
        const char *p = json_string_value(json_object_get(o, "prompt"));
        const char *want = json_string_value(json_object_get(o, "domain"));
        const char *lang = json_string_value(json_object_get(o, "lang"));
        assert_non_null(p);
        assert_non_null(want);
        assert_non_null(lang);
        int wi = strcmp(want, "none") == 0 ? -1 : domain_set_index(s, want);
        assert_true(wi >= -1);
        domain_route rt, rt2;
        assert_int_equal(domain_router_classify(r, p, strlen(p), &rt), 0);
        assert_int_equal(domain_router_classify(r, p, strlen(p), &rt2), 0);
        assert_true(rt.domain == rt2.domain && rt.score == rt2.score); /* deterministic */
        assert_true(rt.score >= 0 && rt.score <= 1);
        int li = strcmp(lang, "zh") == 0 ? 0 : 1;
        int ok = rt.domain == wi;
        n++;
        right += ok;
        per_n[wi + 1]++;
        per_right[wi + 1] += ok;
        lang_n[li]++;
        lang_right[li] += ok;
        if (n <= (int)(sizeof sweep_best / sizeof sweep_best[0])) {
            sweep_best[n - 1] = rt.best;
            sweep_score[n - 1] = rt.score;
            sweep_want[n - 1] = wi;
        }
        if (!ok && getenv("MG_ROUTER_VERBOSE"))
            fprintf(stderr, "miss: want %s got %d (best %d, %.3f): %s\n", want, rt.domain, rt.best,
                    rt.score, p);
        json_decref(o);
    }
    fclose(f);
    assert_true(n >= 300);
    double acc = (double)right / n;
    printf("router: heldout accuracy %.4f (%d/%d) at threshold %.2f; none %d/%d, finance %d/%d, "
           "medical %d/%d, telecom %d/%d; zh %d/%d, en %d/%d\n",
           acc, right, n, DOMAIN_ROUTER_THRESHOLD, per_right[0], per_n[0], per_right[1], per_n[1],
           per_right[2], per_n[2], per_right[3], per_n[3], lang_right[0], lang_n[0], lang_right[1],
           lang_n[1]);
    /* how the threshold trades domains for out-of-domain (README's table) */
    printf("router: threshold sweep");
    for (int t = 0; t <= 8; t++) {
        double th = 0.3 + 0.05 * t;
        int k = 0, m = n < 2048 ? n : 2048;
        for (int i = 0; i < m; i++)
            k += (sweep_best[i] >= 0 && sweep_score[i] >= th ? sweep_best[i] : -1) == sweep_want[i];
        printf(" %.2f:%.4f", th, (double)k / m);
    }
    printf("\n");
    assert_true(acc >= HELDOUT_MIN_ACCURACY);

    /* odd inputs never fail */
    domain_route rt;
    assert_int_equal(domain_router_classify(r, "", 0, &rt), 0);
    assert_int_equal(rt.domain, -1);
    assert_int_equal(domain_router_classify(r, "\xff\xfe\x80", 3, &rt), 0);
    assert_int_equal(domain_router_classify(r, NULL, 0, &rt), 0);
    assert_int_equal(domain_router_classify(NULL, "x", 1, &rt), MG_EINVAL);
    domain_router_free(r);
    domain_set_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_packs_validate),
        cmocka_unit_test_setup_teardown(test_broken_packs, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_folder_name, setup_tree, teardown_tree),
        cmocka_unit_test(test_load_packs),
        cmocka_unit_test(test_blocked_topic_folding),
        cmocka_unit_test(test_router_heldout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
