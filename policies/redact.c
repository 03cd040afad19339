/* moegate policies — guardrails and redaction: PII detectors, placeholders,
 * findings.
 *
 * A redactor is the compiled rule list of one snapshot: the built-in
 * detectors the file enables and its custom patterns, each a PCRE2 regex
 * (JIT-compiled) plus an optional validator (check digit, date, prefix
 * table). It is immutable after load and shared by every request.
 *
 * A scan runs each rule that applies to the direction over the whole text
 * and collects validated matches as candidates. Candidates are then
 * accepted in rule priority order (table order for built-ins, then custom
 * rules in file order), a candidate that overlaps an accepted one being
 * dropped; so an 18-digit resident ID that also passes Luhn is an ID_CARD,
 * not a BANK_CARD. Accepted findings become "[LABEL_n]".
 *
 * Extra detectors (policy_detectors, turned on by a domain pack) are a
 * second redactor of built-ins only. A request's rule list is the
 * snapshot's rules followed by those extras the snapshot does not have
 * itself (its own action wins), in built-in table order; scanning,
 * placeholders, streaming and findings go through that one list, so an
 * extra detector behaves exactly like a policy rule of lowest priority.
 *
 * Why these patterns look the way they do:
 *   - every numeric detector is fenced by (?<![0-9]) and (?![0-9]), so it
 *     never matches a piece of a longer digit run, while Chinese text, which
 *     has no spaces, may touch the number directly ("身份证号1101...");
 *   - built-ins are ASCII-only and run in byte mode: UTF-8 continuation
 *     bytes are >= 0x80 and never look like digits or letters, so byte mode
 *     is exact on UTF-8 text and skips PCRE2's per-call UTF check. Custom
 *     patterns run in UTF mode (operators write Chinese literals and
 *     classes); the text is validated once per scan, then matched with
 *     PCRE2_NO_UTF_CHECK;
 *   - custom patterns get a match limit, and hitting it fails the scan
 *     (MG_EBUSY): the gateway then refuses the request rather than let
 *     unscanned text through.
 *
 * Placeholders: the n of [LABEL_n] numbers distinct values per label within
 * one policy_redaction (one request), keyed by a normalised value (digits
 * and letters only, upper case; a mobile number without its +86), so
 * "138-0013-8000" and "13800138000" are both [PHONE_1], in the prompt and
 * in the answer. The remembered values are wiped when the request ends.
 *
 * Threads: a redactor (and a policy_detectors) is read-only and shared; a
 * policy_redaction belongs to one request.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/errors.h"
#include "policies/policy_internal.h"

#define CUSTOM_MATCH_LIMIT 1000000u
#define CUSTOM_DEPTH_LIMIT 10000u

/* ---- validators ---------------------------------------------------------------- */

/* Copies the ASCII digits of s into d (at most cap); returns how many. */
static size_t digits_of(const char *s, size_t n, char *d, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k < cap; i++)
        if (s[i] >= '0' && s[i] <= '9')
            d[k++] = s[i];
    return k;
}

bool redact_luhn_ok(const char *digits, size_t n)
{
    if (n < 2)
        return false;
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int x = digits[n - 1 - i] - '0';
        if (x < 0 || x > 9)
            return false;
        if (i % 2 == 1) {
            x *= 2;
            if (x > 9)
                x -= 9;
        }
        sum += x;
    }
    return sum % 10 == 0;
}

/* GB 11643-1999: 6-digit area, 8-digit birth date, 3-digit sequence, and a
 * check character: sum(d[i] * (2^(17-i) mod 11)) mod 11 indexes "10X98765432". */
bool redact_cn_id_ok(const char *s, size_t n)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[] = "10X98765432";
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n != 18)
        return false;
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        sum += (s[i] - '0') * w[i];
    }
    if (toupper((unsigned char)s[17]) != check[sum % 11])
        return false;
    int year = (s[6] - '0') * 1000 + (s[7] - '0') * 100 + (s[8] - '0') * 10 + (s[9] - '0');
    int month = (s[10] - '0') * 10 + (s[11] - '0');
    int day = (s[12] - '0') * 10 + (s[13] - '0');
    if (year < 1800 || month < 1 || month > 12 || day < 1 || day > mdays[month - 1])
        return false;
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return !(month == 2 && day == 29 && !leap);
}

/* ISO 13616: move the first four characters to the end, letters become
 * 10..35, and the number mod 97 must be 1; countries with a known length
 * must have it. */
bool redact_iban_ok(const char *s, size_t n)
{
    static const struct {
        char cc[3];
        unsigned char len;
    } lens[] = {
        {"AD", 24}, {"AE", 23}, {"AT", 20}, {"BE", 16}, {"BG", 22}, {"CH", 21}, {"CY", 28},
        {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"EE", 20}, {"ES", 24}, {"FI", 18}, {"FR", 27},
        {"GB", 22}, {"GR", 27}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IS", 26}, {"IT", 27},
        {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MT", 31}, {"NL", 18},
        {"NO", 15}, {"PL", 28}, {"PT", 25}, {"RO", 24}, {"SA", 24}, {"SE", 24}, {"SI", 19},
        {"SK", 24}, {"SM", 27}, {"TR", 26},
    };
    char b[40];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ')
            continue;
        if (k == sizeof b || !isalnum((unsigned char)s[i]))
            return false;
        b[k++] = (char)toupper((unsigned char)s[i]);
    }
    if (k < 15 || k > 34 || !isupper((unsigned char)b[0]) || !isupper((unsigned char)b[1]) ||
        !isdigit((unsigned char)b[2]) || !isdigit((unsigned char)b[3]))
        return false;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
        if (b[0] == lens[i].cc[0] && b[1] == lens[i].cc[1] && k != lens[i].len)
            return false;
    unsigned rem = 0;
    for (size_t i = 0; i < k; i++) {
        char ch = b[(i + 4) % k];
        if (isdigit((unsigned char)ch))
            rem = (rem * 10 + (unsigned)(ch - '0')) % 97;
        else
            rem = (rem * 100 + (unsigned)(ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

static bool v_cn_id(const char *s, size_t n)
{
    return redact_cn_id_ok(s, n);
}

/* Payment cards: 13..19 digits, Luhn, a leading digit used by card schemes
 * (2 Mastercard, 3 Amex/JCB/Diners, 4 Visa, 5 Mastercard, 6 UnionPay/
 * Discover), 15 digits only for Amex (34/37): other 15-digit Luhn numbers
 * are IMEIs. An all-zero run passes Luhn and is not a card. */
static bool v_card(const char *s, size_t n)
{
    char d[24];
    size_t k = digits_of(s, n, d, sizeof d);
    if (k < 13 || k > 19 || d[0] < '2' || d[0] > '6')
        return false;
    if (k == 15 && !(d[0] == '3' && (d[1] == '4' || d[1] == '7')))
        return false;
    return redact_luhn_ok(d, k);
}

/* IMEI: 14 digits + Luhn check digit; the first two digits are a GSMA
 * reporting body, which rules out most other 15-digit numbers. */
static bool v_imei(const char *s, size_t n)
{
    static const char *const rb[] = {"01", "10", "30", "33", "35", "44", "45", "49", "50",
                                     "51", "52", "53", "54", "86", "91", "98", "99"};
    char d[24];
    size_t k = digits_of(s, n, d, sizeof d);
    if (k != 15)
        return false;
    bool known = false;
    for (size_t i = 0; i < sizeof rb / sizeof rb[0] && !known; i++)
        known = d[0] == rb[i][0] && d[1] == rb[i][1];
    return known && redact_luhn_ok(d, k);
}

/* IMSI: MCC (3) + MNC + MSIN = 15 digits, no check digit; accepted only
 * with a mobile country code of the markets we serve (China, Hong Kong,
 * Macau, Taiwan, US, UK, Germany, France, Japan, Korea, Australia). */
static bool v_imsi(const char *s, size_t n)
{
    static const int mcc[] = {460, 461, 454, 455, 466, 310, 311, 312, 313, 314,
                              315, 316, 234, 235, 262, 208, 440, 441, 450, 505};
    if (n != 15)
        return false;
    int m = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    for (size_t i = 0; i < sizeof mcc / sizeof mcc[0]; i++)
        if (m == mcc[i])
            return true;
    return false;
}

static bool v_iban(const char *s, size_t n)
{
    return redact_iban_ok(s, n);
}

/* ---- built-in detectors ---------------------------------------------------------------- */

typedef bool (*validator_fn)(const char *s, size_t n);

enum norm {
    NORM_ALNUM = 0, /* letters and digits, upper case */
    NORM_PHONE,     /* digits without a leading 86 / 0086 */
    NORM_EXACT,     /* the bytes as found */
};

static const struct builtin {
    const char *name;
    const char *label;
    const char *pattern;
    validator_fn ok;
    char need; /* a byte every match contains, to skip the scan cheaply; 0 = none */
    enum norm norm;
} builtins[] = {
    {"cn_resident_id", "ID_CARD",
     "(?<![0-9])[1-9][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
     "[0-9]{3}[0-9Xx](?![0-9])",
     v_cn_id, 0, NORM_ALNUM},
    {"imsi", "IMSI", "(?<![0-9])[0-9]{15}(?![0-9])", v_imsi, 0, NORM_ALNUM},
    {"imei", "IMEI", "(?<![0-9])[0-9]{2}[ -]?[0-9]{6}[ -]?[0-9]{6}[ -]?[0-9](?![0-9])", v_imei, 0,
     NORM_ALNUM},
    {"bank_card", "BANK_CARD",
     "(?<![0-9])[0-9]{4}(?:[ -]?[0-9]{4}){2}[ -]?[0-9]{1,4}(?:[ -]?[0-9]{1,3})?(?![0-9])", v_card,
     0, NORM_ALNUM},
    {"cn_mobile", "PHONE",
     "(?<![0-9+])(?:(?:\\+|00)86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])", NULL, 0,
     NORM_PHONE},
    {"us_ssn", "SSN",
     "(?<![0-9-])(?!000|666|9)[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9]|-[0-9])", NULL, '-',
     NORM_ALNUM},
    {"iban", "IBAN",
     "(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
     v_iban, 0, NORM_ALNUM},
    {"email", "EMAIL",
     "(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*+@(?:[A-Za-z0-9-]++\\.)+[A-Za-z]{2,24}"
     "(?![A-Za-z0-9-])",
     NULL, '@', NORM_ALNUM},
    {"ipv4", "IPV4",
     "(?<![0-9.])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}"
     "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?![0-9]|\\.[0-9])",
     NULL, '.', NORM_EXACT},
};
enum { N_BUILTIN = sizeof builtins / sizeof builtins[0] };

int redactor_builtin_find(const char *name)
{
    for (int i = 0; i < N_BUILTIN; i++)
        if (!strcmp(builtins[i].name, name))
            return i;
    return -1;
}

const char *redactor_builtin_names(void)
{
    return "cn_resident_id, imsi, imei, bank_card, cn_mobile, us_ssn, iban, email, ipv4";
}

/* ---- the compiled rule list --------------------------------------------------------------- */

typedef struct rule {
    const char *name;
    const char *label;
    pcre2_code *code;
    enum redact_action action;
    int builtin;                     /* index in builtins[], or -1 for a custom pattern */
    int priority;                    /* lower wins an overlap */
    enum redact_validator validator; /* custom rules */
} rule;

struct redactor {
    rule *rules;
    int n, cap;
    pcre2_match_context *mctx; /* limits for custom patterns */
};

int redactor_create(redactor **out)
{
    redactor *r = calloc(1, sizeof *r);
    if (!r)
        return MG_ENOMEM;
    r->mctx = pcre2_match_context_create(NULL);
    if (!r->mctx) {
        free(r);
        return MG_ENOMEM;
    }
    pcre2_set_match_limit(r->mctx, CUSTOM_MATCH_LIMIT);
    pcre2_set_depth_limit(r->mctx, CUSTOM_DEPTH_LIMIT);
    *out = r;
    return 0;
}

void redactor_free(redactor *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        pcre2_code_free(r->rules[i].code);
    free(r->rules);
    pcre2_match_context_free(r->mctx);
    free(r);
}

int redactor_n_rules(const redactor *r)
{
    return r->n;
}

/* Makes room for one more element in *v (n used of *cap). */
static int grow(void **v, int n, int *cap, size_t elem, int first)
{
    if (n < *cap)
        return 0;
    int c = *cap ? 2 * *cap : first;
    void *p = realloc(*v, elem * (size_t)c);
    if (!p)
        return MG_ENOMEM;
    *v = p;
    *cap = c;
    return 0;
}

static rule *rule_push(redactor *r)
{
    if (grow((void **)&r->rules, r->n, &r->cap, sizeof(rule), 16))
        return NULL;
    rule *x = &r->rules[r->n];
    memset(x, 0, sizeof *x);
    return x;
}

static pcre2_code *compile(const char *pat, size_t len, uint32_t flags, int *ec, size_t *eo)
{
    PCRE2_SIZE off = 0;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pat, len, flags, ec, &off, NULL);
    *eo = off;
    if (code)
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter runs */
    return code;
}

int redactor_add_builtin(redactor *r, int b, enum redact_action action)
{
    if (b < 0 || b >= N_BUILTIN)
        return MG_EINVAL;
    rule *x = rule_push(r);
    if (!x)
        return MG_ENOMEM;
    int ec;
    size_t eo;
    x->code = compile(builtins[b].pattern, PCRE2_ZERO_TERMINATED, 0, &ec, &eo);
    if (!x->code)
        return MG_ENOMEM; /* the built-in patterns compile: only memory can fail */
    x->name = builtins[b].name;
    x->label = builtins[b].label;
    x->action = action;
    x->builtin = b;
    x->priority = b;
    r->n++;
    return 0;
}

int redactor_add_custom(redactor *r, const char *name, const char *label, const char *pattern,
                        size_t pattern_len, enum redact_validator v, enum redact_action action,
                        size_t *erroffset, char *err, size_t errlen)
{
    rule *x = rule_push(r);
    if (!x) {
        mg_err_set(err, errlen, "out of memory");
        return MG_ENOMEM;
    }
    int ec = 0;
    x->code = compile(pattern, pattern_len, PCRE2_UTF, &ec, erroffset);
    if (!x->code) {
        PCRE2_UCHAR msg[200];
        if (pcre2_get_error_message(ec, msg, sizeof msg) < 0)
            strcpy((char *)msg, "unknown error");
        mg_err_set(err, errlen, "%s", (const char *)msg);
        return MG_EFORMAT;
    }
    x->name = name;
    x->label = label;
    x->action = action;
    x->builtin = -1;
    x->priority = N_BUILTIN + r->n;
    x->validator = v;
    r->n++;
    return 0;
}

/* ---- one request's state --------------------------------------------------------------- */

typedef struct value_entry {
    const char *label;
    char *value; /* normalised, wiped at free */
    size_t len;
    uint64_t hash;
    int n; /* the placeholder number */
} value_entry;

typedef struct label_count {
    const char *label;
    int n;
} label_count;

struct policy_redaction {
    const policy *p;
    pcre2_match_data *md;
    /* The rules this request runs, in priority order: the policy's, then
     * the extra detectors the policy does not have itself. Indices into
     * this list are what spans and counters refer to. */
    const rule **rules; /* [n_rules] */
    int n_rules;
    int *found_in, *found_out; /* [n_rules] */
    value_entry *ent;
    int n_ent, cap_ent;
    int *slot; /* open addressing over ent: index + 1, 0 = empty; [n_slot] */
    int n_slot;
    label_count *labels;
    int n_labels, cap_labels;
    char *pend; /* streamed output not yet released: [n_pend] of [cap_pend] */
    size_t n_pend, cap_pend;
};

/* ---- extra detectors (from a domain pack) ------------------------------------------------ */

/* A redactor holding built-ins only, in table order (so in built-in
 * priority order), each once, each with action redact. */
struct policy_detectors {
    redactor *red;
};

int policy_detectors_create(policy_detectors **out, const char *const *names, int n, char *err,
                            size_t errlen)
{
    bool want[N_BUILTIN] = {false};
    if (!out || n < 0 || (n > 0 && !names)) {
        mg_err_set(err, errlen, "policy: detectors: no names given");
        return MG_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        int b = names[i] ? redactor_builtin_find(names[i]) : -1;
        if (b < 0) {
            mg_err_set(err, errlen, "policy: unknown detector '%.64s' (built-in: %s)",
                       names[i] ? names[i] : "(null)", redactor_builtin_names());
            return MG_EINVAL;
        }
        want[b] = true;
    }
    policy_detectors *d = calloc(1, sizeof *d);
    if (!d || redactor_create(&d->red))
        goto fail;
    for (int b = 0; b < N_BUILTIN; b++)
        if (want[b] && redactor_add_builtin(d->red, b, REDACT_BOTH))
            goto fail;
    *out = d;
    return 0;
fail:
    mg_err_set(err, errlen, "policy: detectors: out of memory");
    policy_detectors_free(d);
    return MG_ENOMEM;
}

void policy_detectors_free(policy_detectors *d)
{
    if (!d)
        return;
    redactor_free(d->red);
    free(d);
}

/* Whether the policy's redactor has built-in b as a rule of its own. */
static bool has_builtin(const redactor *rd, int b)
{
    for (int i = 0; i < rd->n; i++)
        if (rd->rules[i].builtin == b)
            return true;
    return false;
}

int policy_redaction_create_ex(policy_redaction **out, const policy *p,
                               const policy_detectors *extra)
{
    if (!out || !p)
        return MG_EINVAL;
    policy_redaction *r = calloc(1, sizeof *r);
    if (!r)
        return MG_ENOMEM;
    const redactor *pr = p->red, *xr = extra ? extra->red : NULL;
    int cap = pr->n + (xr ? xr->n : 0);
    r->rules = calloc((size_t)cap + 1, sizeof *r->rules);
    r->md = pcre2_match_data_create(1, NULL);
    r->found_in = calloc((size_t)cap + 1, sizeof(int));
    r->found_out = calloc((size_t)cap + 1, sizeof(int));
    if (!r->rules || !r->md || !r->found_in || !r->found_out) {
        free(r->rules);
        pcre2_match_data_free(r->md);
        free(r->found_in);
        free(r->found_out);
        free(r);
        return MG_ENOMEM;
    }
    for (int i = 0; i < pr->n; i++)
        r->rules[r->n_rules++] = &pr->rules[i];
    for (int i = 0; xr && i < xr->n; i++)
        if (!has_builtin(pr, xr->rules[i].builtin)) /* the policy's own action wins */
            r->rules[r->n_rules++] = &xr->rules[i];
    r->p = policy_retain(p);
    *out = r;
    return 0;
}

int policy_redaction_create(policy_redaction **out, const policy *p)
{
    return policy_redaction_create_ex(out, p, NULL);
}

void policy_redaction_free(policy_redaction *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_ent; i++) {
        OPENSSL_cleanse(r->ent[i].value, r->ent[i].len);
        free(r->ent[i].value);
    }
    free(r->ent);
    if (r->pend)
        OPENSSL_cleanse(r->pend, r->cap_pend);
    free(r->pend);
    free(r->slot);
    free(r->labels);
    free(r->found_in);
    free(r->found_out);
    free(r->rules);
    pcre2_match_data_free(r->md);
    policy_release(r->p);
    free(r);
}

int policy_redaction_findings(const policy_redaction *r, policy_finding *out, int max)
{
    int n = 0;
    for (int i = 0; i < r->n_rules; i++) {
        if (!r->found_in[i] && !r->found_out[i])
            continue;
        if (n < max && out)
            out[n] = (policy_finding){r->rules[i]->name, r->rules[i]->label, r->found_in[i],
                                      r->found_out[i]};
        n++;
    }
    return n;
}

static uint64_t fnv1a(const char *label, const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *q = label; *q; q++)
        h = (h ^ (unsigned char)*q) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int slots_grow(policy_redaction *r)
{
    int n = r->n_slot ? 2 * r->n_slot : 64;
    int *s = calloc((size_t)n, sizeof(int));
    if (!s)
        return MG_ENOMEM;
    for (int i = 0; i < r->n_ent; i++) {
        size_t j = (size_t)r->ent[i].hash & (size_t)(n - 1);
        while (s[j])
            j = (j + 1) & (size_t)(n - 1);
        s[j] = i + 1;
    }
    free(r->slot);
    r->slot = s;
    r->n_slot = n;
    return 0;
}

/* The placeholder number of (label, normalised value): an existing one, or
 * the next number of that label. Returns > 0, or MG_ENOMEM. */
static int placeholder_number(policy_redaction *r, const char *label, const char *v, size_t n)
{
    uint64_t h = fnv1a(label, v, n);
    if (r->n_slot) {
        for (size_t j = (size_t)h & (size_t)(r->n_slot - 1); r->slot[j];
             j = (j + 1) & (size_t)(r->n_slot - 1)) {
            const value_entry *e = &r->ent[r->slot[j] - 1];
            if (e->hash == h && e->len == n && !strcmp(e->label, label) && !memcmp(e->value, v, n))
                return e->n;
        }
    }
    /* a new value: number it within its label */
    label_count *lc = NULL;
    for (int i = 0; i < r->n_labels && !lc; i++)
        if (!strcmp(r->labels[i].label, label))
            lc = &r->labels[i];
    if (!lc) {
        if (grow((void **)&r->labels, r->n_labels, &r->cap_labels, sizeof(label_count), 8))
            return MG_ENOMEM;
        lc = &r->labels[r->n_labels++];
        *lc = (label_count){label, 0};
    }
    if (grow((void **)&r->ent, r->n_ent, &r->cap_ent, sizeof(value_entry), 16))
        return MG_ENOMEM;
    if (2 * (r->n_ent + 1) > r->n_slot && slots_grow(r))
        return MG_ENOMEM;
    char *copy = malloc(n + 1);
    if (!copy)
        return MG_ENOMEM;
    memcpy(copy, v, n);
    copy[n] = 0;
    value_entry *e = &r->ent[r->n_ent];
    *e = (value_entry){label, copy, n, h, ++lc->n};
    size_t j = (size_t)h & (size_t)(r->n_slot - 1);
    while (r->slot[j])
        j = (j + 1) & (size_t)(r->n_slot - 1);
    r->slot[j] = ++r->n_ent;
    return e->n;
}

/* ---- scanning ------------------------------------------------------------------------------ */

typedef struct span {
    size_t start, end;
    int rule;
} span;

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static int spans_push(spans *s, span x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        span *v = realloc(s->v, sizeof *v * cap);
        if (!v)
            return MG_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 0;
}

/* Overlap resolution in O(total match length): a bitset of the bytes that
 * accepted findings cover. (Inserting into a sorted array instead would
 * cost O(n^2) moves on a body with 10^5 findings of interleaved kinds.) */
static bool range_free(const uint8_t *bits, size_t s, size_t e)
{
    for (size_t i = s; i < e; i++)
        if (bits[i >> 3] & (1u << (i & 7)))
            return false;
    return true;
}

static void range_take(uint8_t *bits, size_t s, size_t e)
{
    for (size_t i = s; i < e; i++)
        bits[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static bool applies(enum redact_action a, policy_direction dir)
{
    if (a == REDACT_INPUT)
        return dir == POLICY_INPUT;
    if (a == REDACT_OUTPUT)
        return dir == POLICY_OUTPUT;
    return true;
}

static bool custom_valid(enum redact_validator v, const char *s, size_t n)
{
    if (v == REDACT_VALIDATE_LUHN) {
        char d[64];
        size_t k = digits_of(s, n, d, sizeof d);
        return k == sizeof d ? false : redact_luhn_ok(d, k);
    }
    if (v == REDACT_VALIDATE_MOD97)
        return redact_iban_ok(s, n);
    return true;
}

/* Byte offset of the next UTF-8 character after i. */
static size_t next_char(const char *t, size_t len, size_t i)
{
    i++;
    while (i < len && ((unsigned char)t[i] & 0xc0) == 0x80)
        i++;
    return i;
}

/* Runs rule x (the request's rule ri) over the text, appending validated
 * matches to cand; mctx limits custom patterns. */
static int scan_rule(const rule *x, int ri, pcre2_match_context *mctx, pcre2_match_data *md,
                     const char *text, size_t len, spans *cand, char *err, size_t errlen)
{
    const struct builtin *b = x->builtin >= 0 ? &builtins[x->builtin] : NULL;
    if (b && b->need && !memchr(text, b->need, len))
        return 0;
    uint32_t opts = b ? 0 : PCRE2_NO_UTF_CHECK;
    size_t off = 0;
    while (off <= len) {
        int rc = pcre2_match(x->code, (PCRE2_SPTR)text, len, off, opts, md, b ? NULL : mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            mg_err_set(err, errlen, "policy: redaction rule %s: %s", x->name, (const char *)msg);
            return rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
                           rc == PCRE2_ERROR_JIT_STACKLIMIT
                       ? MG_EBUSY
                       : MG_EINVAL;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* an empty match finds nothing */
            off = next_char(text, len, s);
            continue;
        }
        bool ok =
            b ? (!b->ok || b->ok(text + s, e - s)) : custom_valid(x->validator, text + s, e - s);
        /* Grouped numbers: the pattern may have swallowed a following
         * group ("4111 1111 1111 1111 123"); try the match cut back at each
         * separator, longest first. A cut before a separator still meets
         * the pattern's (?![0-9]). */
        for (size_t k = e - 1; !ok && b && b->ok && k > s + 1; k--)
            if ((text[k] == ' ' || text[k] == '-') && isalnum((unsigned char)text[k - 1]) &&
                b->ok(text + s, k - s))
                ok = true, e = k;
        if (ok) {
            if (spans_push(cand, (span){s, e, ri}))
                return MG_ENOMEM;
            off = e;
        } else {
            off = next_char(text, len, s);
        }
    }
    return 0;
}

/* The normalised value of a finding, for placeholder consistency. */
static size_t normalise(const struct builtin *b, const char *s, size_t n, char *out, size_t cap)
{
    if (!b || b->norm == NORM_EXACT) {
        size_t m = n < cap ? n : cap;
        memcpy(out, s, m);
        return m;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && k < cap; i++)
        if (isalnum((unsigned char)s[i]))
            out[k++] = (char)toupper((unsigned char)s[i]);
    if (b->norm == NORM_PHONE && k > 11) { /* drop the country code */
        memmove(out, out + (k - 11), 11);
        k = 11;
    }
    return k;
}

static bool utf8_valid(const unsigned char *s, size_t n, size_t *bad)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        /* the common case in Chinese text: a 3-byte character outside the
         * surrogates (E0 needs A0..BF next, ED needs 80..9F) */
        if (c >= 0xe1 && c <= 0xef && c != 0xed && n - i > 2 && (s[i + 1] & 0xc0) == 0x80 &&
            (s[i + 2] & 0xc0) == 0x80) {
            i += 3;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            goto bad;
        if (n - i <= k)
            goto bad;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            goto bad;
        i += k + 1;
    }
    return true;
bad:
    *bad = i;
    return false;
}

/* The accepted findings of text[0..len) for dir, sorted by start. */
static int find_spans(policy_redaction *r, policy_direction dir, const char *text, size_t len,
                      spans *acc, char *err, size_t errlen)
{
    spans cand = {0};
    int rc = 0;
    size_t bad = 0;
    if (!utf8_valid((const unsigned char *)text, len, &bad)) {
        mg_err_set(err, errlen, "policy: redact: the text is not valid UTF-8 (byte %zu)", bad);
        return MG_EINVAL;
    }
    for (int i = 0; i < r->n_rules && !rc; i++)
        if (applies(r->rules[i]->action, dir))
            rc = scan_rule(r->rules[i], i, r->p->red->mctx, r->md, text, len, &cand, err, errlen);
    /* candidates are in (priority, start) order, since rules ran in priority
     * order: the first to claim a byte wins it */
    uint8_t *taken = rc || !cand.n ? NULL : calloc(len / 8 + 1, 1);
    if (!rc && cand.n && !taken)
        rc = MG_ENOMEM;
    for (size_t i = 0; i < cand.n && !rc; i++)
        if (range_free(taken, cand.v[i].start, cand.v[i].end)) {
            range_take(taken, cand.v[i].start, cand.v[i].end);
            rc = spans_push(acc, cand.v[i]);
        }
    free(taken);
    if (!rc && acc->n > 1)
        qsort(acc->v, acc->n, sizeof(span), span_cmp);
    if (rc == MG_ENOMEM)
        mg_err_set(err, errlen, "policy: redact: out of memory");
    free(cand.v);
    return rc;
}

/* Writes text[0..len) with the findings in acc (all inside it) replaced,
 * counts them and decides blocking. */
static int emit(policy_redaction *r, policy_direction dir, const char *text, size_t len,
                const spans *acc, policy_redact_result *res, char *err, size_t errlen)
{
    size_t cap = len + 48 * acc->n + 1 /* "[" label<=32 "_" n<=10 "]" */, used = 0, pos = 0;
    char *out = malloc(cap);
    if (!out)
        goto fail;
    for (size_t i = 0; i < acc->n; i++) {
        const span *s = &acc->v[i];
        const rule *x = r->rules[s->rule];
        char norm[256];
        size_t nn = normalise(x->builtin >= 0 ? &builtins[x->builtin] : NULL, text + s->start,
                              s->end - s->start, norm, sizeof norm);
        int num = placeholder_number(r, x->label, norm, nn);
        OPENSSL_cleanse(norm, sizeof norm);
        if (num < 0)
            goto fail;
        memcpy(out + used, text + pos, s->start - pos);
        used += s->start - pos;
        int w = snprintf(out + used, cap - used, "[%s_%d]", x->label, num);
        if (w < 0 || (size_t)w >= cap - used)
            goto fail; /* cap reserves 48 bytes per finding: cannot happen */
        used += (size_t)w;
        pos = s->end;
        (dir == POLICY_INPUT ? r->found_in : r->found_out)[s->rule]++;
        if (dir == POLICY_INPUT && x->action == REDACT_BLOCK && !res->blocked) {
            res->blocked = true;
            res->blocked_by = x->name;
        }
    }
    memcpy(out + used, text + pos, len - pos);
    used += len - pos;
    out[used] = 0;
    res->text = out;
    res->len = used;
    res->n_found = (int)acc->n;
    return 0;
fail:
    mg_err_set(err, errlen, "policy: redact: out of memory");
    free(out);
    return MG_ENOMEM;
}

int policy_redact(policy_redaction *r, policy_direction dir, const char *text, size_t len,
                  policy_redact_result *res, char *err, size_t errlen)
{
    if (!r || !res || (!text && len)) {
        mg_err_set(err, errlen, "policy: redact: no text or result given");
        return MG_EINVAL;
    }
    memset(res, 0, sizeof *res);
    if (!text)
        text = "";
    spans acc = {0};
    int rc = find_spans(r, dir, text, len, &acc, err, errlen);
    if (rc == 0)
        rc = emit(r, dir, text, len, &acc, res, err, errlen);
    free(acc.v);
    return rc;
}

/* ---- streamed output --------------------------------------------------------------------- */

/* A byte that can be part of, or border, a finding of a built-in: a cut
 * is never placed next to one, so the text on either side of a cut scans
 * the same alone as together (lookarounds see no difference). */
static bool sticky(unsigned char c)
{
    return isalnum(c) || (c && strchr(".-+@_%:", c));
}

int policy_redact_stream(policy_redaction *r, const char *chunk, size_t len, bool final,
                         policy_redact_result *res, char *err, size_t errlen)
{
    if (!r || !res || (!chunk && len)) {
        mg_err_set(err, errlen, "policy: redact: no text or result given");
        return MG_EINVAL;
    }
    memset(res, 0, sizeof *res);
    if (len > SIZE_MAX / 2 - r->n_pend) {
        mg_err_set(err, errlen, "policy: redact: stream too long");
        return MG_ERANGE;
    }
    if (r->n_pend + len + 1 > r->cap_pend) {
        size_t cap = 2 * (r->n_pend + len) + 256;
        char *p = malloc(cap);
        if (!p) {
            mg_err_set(err, errlen, "policy: redact: out of memory");
            return MG_ENOMEM;
        }
        if (r->n_pend)
            memcpy(p, r->pend, r->n_pend);
        if (r->pend)
            OPENSSL_cleanse(r->pend, r->cap_pend);
        free(r->pend);
        r->pend = p;
        r->cap_pend = cap;
    }
    if (len)
        memcpy(r->pend + r->n_pend, chunk, len);
    r->n_pend += len;
    const unsigned char *t = (const unsigned char *)r->pend;
    size_t n = r->n_pend, cut = 0;
    if (final)
        cut = n;
    else if (n > POLICY_STREAM_HOLDBACK) {
        /* the last boundary at least HOLDBACK bytes before the end, at a
         * character start, between two bytes no finding can contain */
        for (size_t c = n - POLICY_STREAM_HOLDBACK; c > 0 && !cut; c--)
            if ((t[c] & 0xc0) != 0x80 && !sticky(t[c]) && !sticky(t[c - 1]))
                cut = c;
        /* no such boundary in a long stretch: cut at a character start anyway */
        for (size_t c = n - POLICY_STREAM_HOLDBACK;
             !cut && n > 16 * POLICY_STREAM_HOLDBACK && c > 0; c--)
            if ((t[c] & 0xc0) != 0x80)
                cut = c;
    }
    spans acc = {0};
    int rc = 0;
    if (cut > 0)
        rc = find_spans(r, POLICY_OUTPUT, r->pend, n, &acc, err, errlen);
    if (rc == MG_EINVAL && !final && cut > 0) {
        /* an incomplete character at the end: it completes in a later chunk */
        size_t bad = 0;
        utf8_valid(t, n, &bad);
        if (n - bad < 4 && bad > cut) {
            acc.n = 0;
            rc = find_spans(r, POLICY_OUTPUT, r->pend, bad, &acc, err, errlen);
        }
    }
    if (rc == 0) {
        /* a finding across the cut moves the cut to its start */
        size_t keep = 0;
        for (size_t i = 0; i < acc.n; i++)
            if (acc.v[i].start < cut && acc.v[i].end > cut)
                cut = acc.v[i].start;
        while (keep < acc.n && acc.v[keep].end <= cut)
            keep++;
        acc.n = keep;
        rc = emit(r, POLICY_OUTPUT, r->pend, cut, &acc, res, err, errlen);
    }
    free(acc.v);
    if (rc)
        return rc;
    memmove(r->pend, r->pend + cut, n - cut);
    OPENSSL_cleanse(r->pend + (n - cut), cut);
    r->n_pend = n - cut;
    return 0;
}
