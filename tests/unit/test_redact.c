/* Redaction: each detector finds published valid numbers (GB 11643's own
 * example IDs, card networks' test numbers, ISO 13616's example IBANs,
 * the IMEI in 3GPP TS 23.003's style, ...) in Chinese and English text and
 * leaves near-misses alone: a wrong check digit, a digit too few, the same
 * digits inside a longer run. Placeholders stay consistent within a
 * request, actions apply per direction, block refuses input, findings are
 * counted by type, hostile custom patterns fail closed. The check digits
 * of every number here were verified outside moegate (Python). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/errors.h"
#include "policies/policy.h"
#include "policies/policy_internal.h"

static char dir[256];
static policy *pol;

static const char *const POLICY =
    "server: {listen: '127.0.0.1:8080', tls: off}\n"
    "model: {path: m.gguf}\n"
    "domains: [{name: d, pack: .}]\n"
    "audit: {connection_env: MG_TEST_DSN, on_failure: reject}\n"
    "tenants: [{id: t, mtls_subjects: [], domains: [d]}]\n"
    "redaction:\n"
    "  rules:\n"
    "    - {detector: cn_resident_id, action: redact}\n"
    "    - {detector: imsi}\n"
    "    - {detector: imei}\n"
    "    - {detector: bank_card, action: block}\n"
    "    - {detector: cn_mobile}\n"
    "    - {detector: us_ssn}\n"
    "    - {detector: iban}\n"
    "    - {detector: email, action: redact_output}\n"
    "    - {detector: ipv4, action: redact_input}\n"
    "    - name: mrn\n"
    "      pattern: '(?:MRN|病历号)[:：]?\\s?[0-9]{8}(?![0-9])'\n"
    "      placeholder: MRN\n"
    "    - name: slow\n"
    "      pattern: '^(a+)+$'\n";

static int setup(void **st)
{
    (void)st;
    snprintf(dir, sizeof dir, "/tmp/mg_redact_XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char p[300];
    snprintf(p, sizeof p, "%s/m.gguf", dir);
    FILE *f = fopen(p, "w");
    if (!f)
        return -1;
    fclose(f);
    setenv("MG_TEST_DSN", "x", 1);
    char err[512];
    policy_load_opts o = {.base_dir = dir};
    int rc = policy_load_memory(&pol, "redact.yaml", POLICY, strlen(POLICY), &o, err, sizeof err);
    if (rc)
        fprintf(stderr, "%s\n", err);
    return rc;
}

static int teardown(void **st)
{
    (void)st;
    policy_release(pol);
    char p[300];
    snprintf(p, sizeof p, "%s/m.gguf", dir);
    unlink(p);
    rmdir(dir);
    return 0;
}

/* Redacts text in one direction of a fresh request; returns a static copy. */
static const char *red1(policy_direction dir_, const char *text)
{
    static char out[4096];
    policy_redaction *r;
    policy_redact_result res;
    assert_int_equal(policy_redaction_create(&r, pol), 0);
    assert_int_equal(policy_redact(r, dir_, text, strlen(text), &res, NULL, 0), 0);
    snprintf(out, sizeof out, "%s", res.text);
    assert_int_equal(strlen(res.text), res.len);
    free(res.text);
    policy_redaction_free(r);
    return out;
}

static const char *in(const char *text)
{
    return red1(POLICY_INPUT, text);
}

static void same(const char *text)
{
    assert_string_equal(in(text), text);
}

static void test_cn_resident_id(void **st)
{
    (void)st;
    assert_string_equal(in("张三的身份证号码是11010519491231002X，请核实。"),
                         "张三的身份证号码是[ID_CARD_1]，请核实。");
    assert_string_equal(in("ID 440524188001010014 and 11010519491231002x then 440524188001010014"),
                         "ID [ID_CARD_1] and [ID_CARD_2] then [ID_CARD_1]");
    same("身份证110105194912310021有误");     /* wrong check digit */
    same("号码11010519491231002不全");        /* 17 characters */
    same("流水号911010519491231002X");        /* inside a longer digit run */
    same("流水号11010519491231002X7");        /* followed by a digit */
    same("ID 110105194913310027 bad month");  /* month 13 */
    same("ID 110105190002290014 not a leap"); /* 1900-02-29 does not exist */
}

static void test_cn_mobile(void **st)
{
    (void)st;
    assert_string_equal(in("请拨打13800138000或+86 139-1234-5678联系我"),
                         "请拨打[PHONE_1]或[PHONE_2]联系我");
    assert_string_equal(in("call 13800138000, or +8613800138000"), "call [PHONE_1], or [PHONE_1]");
    same("号码12800138000不是手机");  /* no 12x prefix */
    same("order 138001380001 shipped"); /* 12 digits */
    same("单号813800138000");          /* inside a longer run */
    same("1380013800");                 /* 10 digits */
}

static void test_bank_card(void **st)
{
    (void)st;
    assert_string_equal(in("Visa 4111 1111 1111 1111, MC 5555555555554444, Amex 378282246310005"),
                         "Visa [BANK_CARD_1], MC [BANK_CARD_2], Amex [BANK_CARD_3]");
    assert_string_equal(in("银联卡6250941006528599和6212-3456-7890-1232"),
                         "银联卡[BANK_CARD_1]和[BANK_CARD_2]");
    /* a following group is not part of the card */
    assert_string_equal(in("card 4111 1111 1111 1111 123 apples"), "card [BANK_CARD_1] 123 apples");
    same("card 4111111111111112 fails Luhn");
    same("ref 94111111111111111 is longer");
    same("卡号0000000000000000");
}

static void test_email_ipv4_direction(void **st)
{
    (void)st;
    /* email is redact_output: input keeps it */
    same("联系zhang.san@example.com。");
    assert_string_equal(red1(POLICY_OUTPUT, "联系zhang.san@example.com。mail a.b+c@mail.example.co.uk."),
                        "联系[EMAIL_1]。mail [EMAIL_2].");
    assert_string_equal(red1(POLICY_OUTPUT, "user@localhost and @example.com stay"),
                        "user@localhost and @example.com stay");
    /* ipv4 is redact_input: output keeps it */
    assert_string_equal(in("server 192.168.1.254 down, 10.0.0.1:8080 up"),
                        "server [IPV4_1] down, [IPV4_2]:8080 up");
    assert_string_equal(red1(POLICY_OUTPUT, "server 192.168.1.254"), "server 192.168.1.254");
    same("version 1.2.3.4.5 and 256.1.1.1 and 192.168.1 and 01.2.3.4");
}

static void test_ssn_iban(void **st)
{
    (void)st;
    assert_string_equal(in("SSN 078-05-1120."), "SSN [SSN_1].");
    same("000-12-3456 666-12-3456 900-12-3456 078-00-1120 078-05-11201");
    assert_string_equal(in("IBAN DE89 3704 0044 0532 0130 00 或 GB82WEST12345698765432。"),
                        "IBAN [IBAN_1] 或 [IBAN_2]。");
    same("DE89370400440532013001 GB82WEST1234569876543");
}

static void test_imei_imsi(void **st)
{
    (void)st;
    assert_string_equal(in("IMEI 490154203237518, 串号49-015420-323751-8"),
                        "IMEI [IMEI_1], 串号[IMEI_1]");
    assert_null(strstr(in("IMEI 490154203237519"), "[IMEI"));  /* wrong check digit */
    assert_null(strstr(in("IMEI 4901542032375181"), "[IMEI")); /* 16 digits */
    assert_string_equal(in("用户IMSI为460001234567890"), "用户IMSI为[IMSI_1]");
    assert_null(strstr(in("IMSI 46000123456789"), "[IMSI"));   /* 14 digits */
    assert_null(strstr(in("IMSI 999001234567890"), "[IMSI"));  /* no such country */
}

static void test_custom_pattern(void **st)
{
    (void)st;
    assert_string_equal(in("患者病历号：12345678，MRN 87654321。"), "患者[MRN_1]，[MRN_2]。");
    same("病历号：1234567");
    /* a pattern that backtracks exponentially hits its limit: fail closed */
    policy_redaction *r;
    policy_redact_result res;
    char err[256];
    assert_int_equal(policy_redaction_create(&r, pol), 0);
    const char *evil = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!";
    assert_int_equal(policy_redact(r, POLICY_INPUT, evil, strlen(evil), &res, err, sizeof err),
                     MG_EBUSY);
    assert_non_null(strstr(err, "redaction rule slow"));
    assert_null(res.text);
    policy_redaction_free(r);
}

static void test_request_state(void **st)
{
    (void)st;
    policy_redaction *r;
    policy_redact_result res;
    assert_int_equal(policy_redaction_create(&r, pol), 0);
    /* the same number in the prompt and the answer: one placeholder */
    const char *q = "我的手机13800138000，卡号4111111111111111";
    assert_int_equal(policy_redact(r, POLICY_INPUT, q, strlen(q), &res, NULL, 0), 0);
    assert_string_equal(res.text, "我的手机[PHONE_1]，卡号[BANK_CARD_1]");
    assert_true(res.blocked);
    assert_string_equal(res.blocked_by, "bank_card");
    assert_int_equal(res.n_found, 2);
    free(res.text);
    const char *a = "已记录138-0013-8000和13912345678，卡4111-1111-1111-1111";
    assert_int_equal(policy_redact(r, POLICY_OUTPUT, a, strlen(a), &res, NULL, 0), 0);
    assert_string_equal(res.text, "已记录[PHONE_1]和[PHONE_2]，卡[BANK_CARD_1]");
    assert_false(res.blocked); /* output: redacted, not blocking */
    free(res.text);
    policy_finding f[8];
    assert_int_equal(policy_redaction_findings(r, f, 8), 2);
    assert_string_equal(f[0].rule, "bank_card");
    assert_string_equal(f[0].label, "BANK_CARD");
    assert_int_equal(f[0].input, 1);
    assert_int_equal(f[0].output, 1);
    assert_string_equal(f[1].rule, "cn_mobile");
    assert_int_equal(f[1].input, 1);
    assert_int_equal(f[1].output, 2);
    /* not UTF-8: refused */
    char err[128];
    assert_int_equal(policy_redact(r, POLICY_INPUT, "a\xff", 2, &res, err, sizeof err), MG_EINVAL);
    assert_string_equal(err, "policy: redact: the text is not valid UTF-8 (byte 1)");
    /* UTF-8 as Unicode defines it: what Python's strict decoder accepts */
    static const struct {
        const char *s;
        bool ok;
    } u[] = {
        {"\xe4\xb8\xad\xe6\x96\x87", true},  /* 中文 */
        {"\xf0\x9f\x98\x80", true},          /* U+1F600 */
        {"\xee\x80\x80\xef\xbf\xbf", true},  /* U+E000, U+FFFF */
        {"\xed\xa0\x80", false},              /* a surrogate */
        {"\xe0\x80\xaf", false},              /* overlong '/' */
        {"\xc0\xaf", false},                  /* overlong '/' */
        {"\xf4\x90\x80\x80", false},          /* above U+10FFFF */
        {"\xe4\xb8", false},                  /* cut short */
        {"\xe4\x41\xad", false},              /* not a continuation */
    };
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        int urc = policy_redact(r, POLICY_INPUT, u[i].s, strlen(u[i].s), &res, NULL, 0);
        assert_int_equal(urc, u[i].ok ? 0 : MG_EINVAL);
        if (urc == 0) {
            assert_string_equal(res.text, u[i].s);
            free(res.text);
        }
    }
    /* empty text */
    assert_int_equal(policy_redact(r, POLICY_INPUT, "", 0, &res, NULL, 0), 0);
    assert_string_equal(res.text, "");
    free(res.text);
    policy_redaction_free(r);
}

/* an ID that also passes Luhn stays an ID: priority over bank_card */
static void test_priority(void **st)
{
    (void)st;
    /* 11010519491231002X has a letter; this one is all digits and Luhn-valid:
     * GB 11643 check digit and Luhn verified in Python */
    assert_true(redact_cn_id_ok("440524188001010014", 18));
    assert_string_equal(in("证件440524188001010014"), "证件[ID_CARD_1]");
}

static void test_validators(void **st)
{
    (void)st;
    assert_true(redact_luhn_ok("79927398713", 11)); /* the classic Luhn example */
    assert_false(redact_luhn_ok("79927398710", 11));
    assert_true(redact_cn_id_ok("11010519491231002X", 18));
    assert_true(redact_cn_id_ok("11010519491231002x", 18));
    assert_false(redact_cn_id_ok("110105194912310021", 18));
    assert_false(redact_cn_id_ok("11010519491231002", 17));
    assert_true(redact_iban_ok("DE89 3704 0044 0532 0130 00", 27));
    assert_true(redact_iban_ok("GB82WEST12345698765432", 22));
    assert_false(redact_iban_ok("GB82WEST12345698765433", 22));
    assert_false(redact_iban_ok("DE8937040044053201300", 21)); /* DE is 22 long */
}


/* Streamed output in chunks of every size from 1 byte (which splits
 * Chinese characters) up: the concatenation equals redacting the whole
 * text at once, and the counts match. */
static void test_stream(void **st)
{
    (void)st;
    static char text[8192];
    size_t n = 0;
    for (int rep = 0; rep < 6; rep++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "第%d段：客户手机13800138000，卡号4111 1111 1111 1111，邮箱"
                              "li.si@example.cn。The SSN 078-05-1120 and IBAN GB82 WEST 1234 "
                              "5698 7654 32 were read back; server 10.0.%d.1 logged it. ",
                              rep, rep);
    policy_redaction *whole;
    policy_redact_result all;
    assert_int_equal(policy_redaction_create(&whole, pol), 0);
    assert_int_equal(policy_redact(whole, POLICY_OUTPUT, text, n, &all, NULL, 0), 0);
    assert_int_equal(all.n_found, 6 * 5); /* ipv4 is input-only here */
    static const size_t sizes[] = {1, 2, 3, 7, 64, 300, 5000};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        policy_redaction *r;
        assert_int_equal(policy_redaction_create(&r, pol), 0);
        static char out[16384];
        size_t used = 0;
        for (size_t off = 0; off <= n; off += sizes[si]) {
            size_t len = off + sizes[si] > n ? n - off : sizes[si];
            bool final = off + sizes[si] >= n;
            policy_redact_result res;
            char err[128];
            int rc = policy_redact_stream(r, text + off, len, final, &res, err, sizeof err);
            if (rc)
                fprintf(stderr, "chunk %zu at %zu: %s\n", sizes[si], off, err);
            assert_int_equal(rc, 0);
            assert_true(used + res.len < sizeof out);
            memcpy(out + used, res.text, res.len);
            used += res.len;
            free(res.text);
            if (final)
                break;
        }
        out[used] = 0;
        assert_string_equal(out, all.text);
        policy_finding f[8];
        int nf = policy_redaction_findings(r, f, 8);
        int total = 0;
        for (int i = 0; i < nf; i++)
            total += f[i].output;
        assert_int_equal(total, 30);
        policy_redaction_free(r);
    }
    free(all.text);
    policy_redaction_free(whole);
}

/* Many findings of interleaved kinds (a hostile body): every one found,
 * numbered, in order; overlap resolution stays linear. */
static void test_many_findings(void **st)
{
    (void)st;
    enum { N = 10000 };
    size_t cap = (size_t)N * 3 * 24, n = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(text + n, cap - n, "10.%d.%d.1 1380013%04d 078-05-%04d ",
                              i / 256 % 256, i % 256, i, 1000 + i % 9000);
    policy_redaction *r;
    policy_redact_result res;
    assert_int_equal(policy_redaction_create(&r, pol), 0);
    assert_int_equal(policy_redact(r, POLICY_INPUT, text, n, &res, NULL, 0), 0);
    assert_int_equal(res.n_found, 3 * N);
    /* the SSNs repeat after 9000: the 10000th is the 1000th again */
    const char *last = "[IPV4_10000] [PHONE_10000] [SSN_1000] ";
    assert_string_equal(res.text + res.len - strlen(last), last);
    assert_memory_equal(res.text, "[IPV4_1] [PHONE_1] [SSN_1] [IPV4_2] [PHONE_2] [SSN_2] ", 54);
    free(res.text);
    free(text);
    policy_redaction_free(r);
}

/* One snapshot shared by several request threads, each with its own
 * redaction state: every thread gets the single-threaded answer. */
typedef struct worker {
    const char *text, *want;
    int bad;
} worker;

static void *redact_worker(void *ud)
{
    worker *w = ud;
    for (int i = 0; i < 300; i++) {
        policy_redaction *r;
        policy_redact_result res;
        if (policy_redaction_create(&r, pol) ||
            policy_redact(r, POLICY_INPUT, w->text, strlen(w->text), &res, NULL, 0)) {
            w->bad++;
            continue;
        }
        w->bad += strcmp(res.text, w->want) != 0;
        free(res.text);
        policy_redaction_free(r);
    }
    return NULL;
}

static void test_threads(void **st)
{
    (void)st;
    const char *text = "身份证11010519491231002X，手机+86 139-1234-5678，病历号：12345678，"
                       "card 5555555555554444, SSN 078-05-1120, IMEI 490154203237518";
    char want[1024];
    snprintf(want, sizeof want, "%s", in(text));
    assert_string_equal(want, "身份证[ID_CARD_1]，手机[PHONE_1]，[MRN_1]，card [BANK_CARD_1], "
                              "SSN [SSN_1], IMEI [IMEI_1]");
    enum { N = 4 };
    pthread_t th[N];
    worker w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (worker){text, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, redact_worker, &w[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cn_resident_id),   cmocka_unit_test(test_cn_mobile),
        cmocka_unit_test(test_bank_card),        cmocka_unit_test(test_email_ipv4_direction),
        cmocka_unit_test(test_ssn_iban),         cmocka_unit_test(test_imei_imsi),
        cmocka_unit_test(test_custom_pattern),   cmocka_unit_test(test_request_state),
        cmocka_unit_test(test_priority),         cmocka_unit_test(test_validators),
        cmocka_unit_test(test_stream),           cmocka_unit_test(test_many_findings),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
