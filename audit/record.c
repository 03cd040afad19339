/* moegate — audit records: sanitising, payload protection, the byte
 * encoding and the chain hash (formats in audit_internal.h).
 *
 * audit_record_encode runs in the submitting (HTTP) thread: it copies the
 * caller's strings, replaces invalid UTF-8 with U+FFFD (PostgreSQL text
 * must be valid UTF-8, and a record that the database refuses would stall
 * the whole batch), checks the limits, and protects the payloads. From then
 * on the record is an immutable byte string; the writer, the spool and
 * verify all go through audit_rec_decode, which trusts nothing (spool files
 * and database rows are external input).
 *
 * Payload encryption: AES-256-GCM, a fresh random 96-bit nonce per field
 * (RAND_bytes), AAD = "moegate-audit-v1\0" || request id || "\0" || field
 * name, stored as nonce || ciphertext || tag. The key id travels in the
 * record so the right key can be chosen years later.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

const audit_field_def audit_fields[AUDIT_NFIELDS] = {
    [F_REQUEST_ID] = {"request_id", AF_TEXT},
    [F_RECEIVED] = {"received_at", AF_TIME},
    [F_FINISHED] = {"finished_at", AF_TIME},
    [F_TENANT] = {"tenant", AF_TEXT},
    [F_KEY_ID] = {"key_id", AF_TEXT},
    [F_CLIENT_ADDR] = {"client_addr", AF_TEXT},
    [F_CLIENT_SUBJECT] = {"client_subject", AF_TEXT},
    [F_ENDPOINT] = {"endpoint", AF_TEXT},
    [F_DOMAIN] = {"domain", AF_TEXT},
    [F_ADAPTER_NAME] = {"adapter_name", AF_TEXT},
    [F_ADAPTER_SHA256] = {"adapter_sha256", AF_TEXT},
    [F_MODEL_SHA256] = {"model_sha256", AF_TEXT},
    [F_SAMPLING] = {"sampling", AF_TEXT},
    [F_PROMPT_TOKENS] = {"prompt_tokens", AF_I64},
    [F_COMPLETION_TOKENS] = {"completion_tokens", AF_I64},
    [F_STATUS] = {"status", AF_I32},
    [F_ERROR] = {"error", AF_TEXT},
    [F_LATENCY] = {"latency_us", AF_I64},
    [F_REDACTION] = {"redaction", AF_TEXT},
    [F_PAYLOAD_MODE] = {"payload_mode", AF_MODE},
    [F_PAYLOAD_KEY_ID] = {"payload_key_id", AF_TEXT},
    [F_PROMPT] = {"prompt", AF_BYTES},
    [F_COMPLETION] = {"completion", AF_BYTES},
};

static const char *const mode_names[] = {"none", "clear", "sha256", "aes-256-gcm"};

const char *audit_payload_mode_name(int mode)
{
    return mode >= 0 && mode < 4 ? mode_names[mode] : "?";
}

int audit_payload_mode_parse(const char *s, size_t len)
{
    for (int i = 0; i < 4; i++)
        if (strlen(mode_names[i]) == len && !memcmp(s, mode_names[i], len))
            return i;
    return -1;
}

bool audit_chain_id_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > AUDIT_MAX_CHAIN_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- byte buffer ---------------------------------------------------------------- */

void audit_buf_put(audit_buf *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (n > b->cap - b->len) {
        size_t c = b->cap ? b->cap : 256;
        while (c - b->len < n) {
            if (c > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            c *= 2;
        }
        uint8_t *p = realloc(b->p, c);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = c;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

void audit_buf_u8(audit_buf *b, uint8_t v)
{
    audit_buf_put(b, &v, 1);
}

void audit_buf_u16(audit_buf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    audit_buf_put(b, x, 2);
}

void audit_buf_u32(audit_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    audit_buf_put(b, x, 4);
}

void audit_buf_u64(audit_buf *b, uint64_t v)
{
    audit_buf_u32(b, (uint32_t)(v >> 32));
    audit_buf_u32(b, (uint32_t)v);
}

void audit_buf_free(audit_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- encoding and decoding ------------------------------------------------------ */

void audit_rec_encode(const audit_rec *r, audit_buf *b)
{
    audit_buf_u8(b, AUDIT_ENCODING_VERSION);
    for (int f = 0; f < AUDIT_NFIELDS; f++) {
        const audit_value *v = &r->v[f];
        switch (audit_fields[f].type) {
        case AF_TEXT:
        case AF_BYTES:
            if (v->null) {
                audit_buf_u32(b, AUDIT_NULL_LEN);
            } else {
                audit_buf_u32(b, v->len);
                audit_buf_put(b, v->p, v->len);
            }
            break;
        case AF_I64:
        case AF_TIME:
            audit_buf_u64(b, (uint64_t)v->i);
            break;
        case AF_I32:
            audit_buf_u32(b, (uint32_t)(int32_t)v->i);
            break;
        case AF_MODE:
            audit_buf_u8(b, (uint8_t)v->i);
            break;
        }
    }
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF, no NUL): what
 * PostgreSQL accepts in text. Returns the length of the valid sequence at
 * s, or 0. */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c >= 0x01 && c < 0x80)
        return 1;
    size_t k;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return k;
}

bool audit_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(s + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

int audit_rec_decode(audit_rec *r, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (len < 1 || buf[0] != AUDIT_ENCODING_VERSION) {
        mg_err_set(err, errlen, "audit: record: unknown encoding version %u",
                   len ? buf[0] : 0u);
        return MG_EFORMAT;
    }
    size_t pos = 1;
    for (int f = 0; f < AUDIT_NFIELDS; f++) {
        audit_value *v = &r->v[f];
        const char *name = audit_fields[f].column;
        switch (audit_fields[f].type) {
        case AF_TEXT:
        case AF_BYTES: {
            if (len - pos < 4)
                goto truncated;
            uint32_t n = rd32(buf + pos);
            pos += 4;
            if (n == AUDIT_NULL_LEN) {
                v->null = true;
                break;
            }
            uint32_t max = audit_fields[f].type == AF_BYTES ? AUDIT_MAX_PAYLOAD + 64u
                           : f == F_REQUEST_ID            ? AUDIT_MAX_REQUEST_ID
                                                          : AUDIT_MAX_FIELD;
            if (n > max) {
                mg_err_set(err, errlen, "audit: record: field %s: length %u over the limit %u",
                           name, n, max);
                return MG_EFORMAT;
            }
            if (len - pos < n)
                goto truncated;
            v->p = buf + pos;
            v->len = n;
            if (audit_fields[f].type == AF_TEXT && !audit_utf8_valid(v->p, n)) {
                mg_err_set(err, errlen, "audit: record: field %s at offset %zu: invalid UTF-8",
                           name, pos);
                return MG_EFORMAT;
            }
            pos += n;
            break;
        }
        case AF_I64:
        case AF_TIME:
            if (len - pos < 8)
                goto truncated;
            v->i = (int64_t)rd64(buf + pos);
            pos += 8;
            break;
        case AF_I32:
            if (len - pos < 4)
                goto truncated;
            v->i = (int32_t)rd32(buf + pos);
            pos += 4;
            break;
        case AF_MODE:
            if (len - pos < 1)
                goto truncated;
            v->i = buf[pos++];
            if (v->i > AUDIT_PAYLOAD_AES256GCM) {
                mg_err_set(err, errlen, "audit: record: payload_mode %d unknown", (int)v->i);
                return MG_EFORMAT;
            }
            break;
        }
        continue;
    truncated:
        mg_err_set(err, errlen, "audit: record: truncated in field %s at offset %zu", name, pos);
        return MG_EFORMAT;
    }
    if (pos != len) {
        mg_err_set(err, errlen, "audit: record: %zu trailing bytes after the last field",
                   len - pos);
        return MG_EFORMAT;
    }
    if (r->v[F_REQUEST_ID].null || r->v[F_REQUEST_ID].len == 0) {
        mg_err_set(err, errlen, "audit: record: request_id missing");
        return MG_EFORMAT;
    }
    /* Times must fit timestamptz (4713 BC .. 294276 AD); keep far inside. */
    for (int f = F_RECEIVED; f <= F_FINISHED; f++)
        if (r->v[f].i < -AUDIT_PG_EPOCH_US * 5 || r->v[f].i > 253402300799000000LL) {
            mg_err_set(err, errlen, "audit: record: %s %lld out of range",
                       audit_fields[f].column, (long long)r->v[f].i);
            return MG_EFORMAT;
        }
    return 0;
}

/* ---- the chain hash ----------------------------------------------------------------- */

int audit_chain_hash(uint8_t out[AUDIT_HASH_LEN], const uint8_t prev[AUDIT_HASH_LEN],
                     const char *chain_id, int64_t seq, const uint8_t *enc, size_t enc_len)
{
    uint8_t head[4 + AUDIT_MAX_CHAIN_ID + 8];
    size_t n = strlen(chain_id);
    if (n > AUDIT_MAX_CHAIN_ID)
        return MG_EINVAL;
    head[0] = (uint8_t)(n >> 24);
    head[1] = (uint8_t)(n >> 16);
    head[2] = (uint8_t)(n >> 8);
    head[3] = (uint8_t)n;
    memcpy(head + 4, chain_id, n);
    for (int i = 0; i < 8; i++)
        head[4 + n + i] = (uint8_t)((uint64_t)seq >> (56 - 8 * i));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int olen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(ctx, prev, AUDIT_HASH_LEN) &&
             EVP_DigestUpdate(ctx, head, 4 + n + 8) && EVP_DigestUpdate(ctx, enc, enc_len) &&
             EVP_DigestFinal_ex(ctx, out, &olen) && olen == AUDIT_HASH_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : MG_ENOMEM;
}

/* ---- payload keys and protection ------------------------------------------------------ */

struct audit_payload_key {
    uint8_t key[32];
    char id[AUDIT_MAX_CHAIN_ID + 1];
};

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int audit_unhex(uint8_t *out, size_t n, const char *in, size_t in_len)
{
    if (in_len != 2 * n)
        return MG_EFORMAT;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval((unsigned char)in[2 * i]), lo = hexval((unsigned char)in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return MG_EFORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

void audit_hex(char *out, const uint8_t *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

int audit_payload_key_load(audit_payload_key **out, const char *path, const char *key_id,
                           char *err, size_t errlen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    audit_payload_key *k = NULL;
    int rc;
    if (!path || !key_id || !audit_chain_id_valid(key_id)) {
        mg_err_set(err, errlen, "audit: payload key: a file and a key id ([A-Za-z0-9._-]{1,64}) "
                                "are required");
        return MG_EINVAL;
    }
    if ((rc = audit_read_file(path, 4096, &buf, &len, err, errlen)))
        return rc;
    k = calloc(1, sizeof *k);
    if (!k) {
        rc = MG_ENOMEM;
        goto fail;
    }
    if (len == 32) {
        memcpy(k->key, buf, 32);
    } else {
        size_t n = len;
        while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            n--;
        if (audit_unhex(k->key, 32, (const char *)buf, n)) {
            mg_err_set(err, errlen,
                       "audit: payload key %s: want 32 bytes or 64 hex digits, found %zu bytes",
                       path, len);
            rc = MG_EFORMAT;
            goto fail;
        }
    }
    snprintf(k->id, sizeof k->id, "%s", key_id);
    OPENSSL_cleanse(buf, len);
    free(buf);
    *out = k;
    return 0;
fail:
    if (buf)
        OPENSSL_cleanse(buf, len);
    free(buf);
    audit_payload_key_free(k);
    return rc;
}

void audit_payload_key_free(audit_payload_key *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof *k);
    free(k);
}

const char *audit_payload_key_id(const audit_payload_key *k)
{
    return k->id;
}

static const char AAD_TAG[] = "moegate-audit-v1";

/* Writes AAD for (request id, field) into aad; returns its length. */
static int gcm_aad(EVP_CIPHER_CTX *c, const char *rid, size_t rid_len, const char *field)
{
    int olen;
    uint8_t zero = 0;
    return EVP_EncryptUpdate(c, NULL, &olen, (const uint8_t *)AAD_TAG, sizeof AAD_TAG) &&
           EVP_EncryptUpdate(c, NULL, &olen, (const uint8_t *)rid, (int)rid_len) &&
           EVP_EncryptUpdate(c, NULL, &olen, &zero, 1) &&
           EVP_EncryptUpdate(c, NULL, &olen, (const uint8_t *)field, (int)strlen(field));
}

static int gcm_aad_dec(EVP_CIPHER_CTX *c, const char *rid, size_t rid_len, const char *field)
{
    int olen;
    uint8_t zero = 0;
    return EVP_DecryptUpdate(c, NULL, &olen, (const uint8_t *)AAD_TAG, sizeof AAD_TAG) &&
           EVP_DecryptUpdate(c, NULL, &olen, (const uint8_t *)rid, (int)rid_len) &&
           EVP_DecryptUpdate(c, NULL, &olen, &zero, 1) &&
           EVP_DecryptUpdate(c, NULL, &olen, (const uint8_t *)field, (int)strlen(field));
}

/* out must hold in_len + 28 bytes. */
static int payload_encrypt(const audit_payload_key *k, const char *rid, size_t rid_len,
                           const char *field, const uint8_t *in, size_t in_len, uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int olen = 0, flen = 0;
    int ok = c && RAND_bytes(out, AUDIT_GCM_NONCE) == 1 &&
             EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, AUDIT_GCM_NONCE, NULL) &&
             EVP_EncryptInit_ex(c, NULL, NULL, k->key, out) && gcm_aad(c, rid, rid_len, field) &&
             EVP_EncryptUpdate(c, out + AUDIT_GCM_NONCE, &olen, in, (int)in_len) &&
             EVP_EncryptFinal_ex(c, out + AUDIT_GCM_NONCE + olen, &flen) &&
             (size_t)(olen + flen) == in_len &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, AUDIT_GCM_TAG,
                                 out + AUDIT_GCM_NONCE + in_len);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : MG_EIO;
}

int audit_payload_decrypt(const audit_payload_key *k, const char *rid, size_t rid_len,
                          const char *field, const uint8_t *in, size_t in_len, uint8_t **out,
                          size_t *out_len, char *err, size_t errlen)
{
    if (in_len < AUDIT_GCM_NONCE + AUDIT_GCM_TAG) {
        mg_err_set(err, errlen, "audit: %s: ciphertext too short (%zu bytes)", field, in_len);
        return MG_EFORMAT;
    }
    size_t n = in_len - AUDIT_GCM_NONCE - AUDIT_GCM_TAG;
    uint8_t *p = malloc(n ? n : 1);
    if (!p)
        return MG_ENOMEM;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int olen = 0, flen = 0;
    uint8_t tag[AUDIT_GCM_TAG];
    memcpy(tag, in + in_len - AUDIT_GCM_TAG, AUDIT_GCM_TAG);
    int ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, AUDIT_GCM_NONCE, NULL) &&
             EVP_DecryptInit_ex(c, NULL, NULL, k->key, in) &&
             gcm_aad_dec(c, rid, rid_len, field) &&
             EVP_DecryptUpdate(c, p, &olen, in + AUDIT_GCM_NONCE, (int)n) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, AUDIT_GCM_TAG, tag) &&
             EVP_DecryptFinal_ex(c, p + olen, &flen) > 0;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        OPENSSL_cleanse(p, n);
        free(p);
        mg_err_set(err, errlen,
                   "audit: %s: authentication failed (wrong key, or the ciphertext or request "
                   "id was altered)",
                   field);
        return MG_EFORMAT;
    }
    *out = p;
    *out_len = n;
    return 0;
}

/* ---- audit_record -> encoding ------------------------------------------------------------ */

/* Copies s into b as a TEXT field, replacing invalid UTF-8 with U+FFFD;
 * s may be NULL. Fails when the result exceeds max bytes. */
static int put_text(audit_buf *b, const char *s, size_t max, const char *name, char *err,
                    size_t errlen)
{
    if (!s) {
        audit_buf_u32(b, AUDIT_NULL_LEN);
        return 0;
    }
    size_t n = strlen(s);
    size_t at = b->len;
    audit_buf_u32(b, 0); /* patched below */
    size_t start = b->len;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k) {
            audit_buf_put(b, u + i, k);
            i += k;
        } else {
            audit_buf_put(b, "\xEF\xBF\xBD", 3);
            i++;
        }
        if (b->len - start > max) {
            mg_err_set(err, errlen, "audit: record: field %s longer than %zu bytes", name, max);
            return MG_EINVAL;
        }
    }
    if (b->oom)
        return MG_ENOMEM;
    uint32_t len = (uint32_t)(b->len - start);
    b->p[at] = (uint8_t)(len >> 24);
    b->p[at + 1] = (uint8_t)(len >> 16);
    b->p[at + 2] = (uint8_t)(len >> 8);
    b->p[at + 3] = (uint8_t)len;
    return 0;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (hexval((unsigned char)s[i]) < 0)
            return false;
    return true;
}

static int put_payload(audit_buf *b, const audit_record *r, const audit_payload_key *key,
                       const char *field, const void *data, size_t len, char *err, size_t errlen)
{
    if (len > AUDIT_MAX_PAYLOAD) {
        mg_err_set(err, errlen, "audit: record: %s of %zu bytes is over the limit of %u", field,
                   len, AUDIT_MAX_PAYLOAD);
        return MG_EINVAL;
    }
    if (!data && len) {
        mg_err_set(err, errlen, "audit: record: %s is NULL with length %zu", field, len);
        return MG_EINVAL;
    }
    switch (r->payload_mode) {
    case AUDIT_PAYLOAD_NONE:
        audit_buf_u32(b, AUDIT_NULL_LEN);
        return 0;
    case AUDIT_PAYLOAD_CLEAR:
        if (!data) {
            audit_buf_u32(b, AUDIT_NULL_LEN);
            return 0;
        }
        audit_buf_u32(b, (uint32_t)len);
        audit_buf_put(b, data, len);
        return 0;
    case AUDIT_PAYLOAD_SHA256: {
        if (!data) {
            audit_buf_u32(b, AUDIT_NULL_LEN);
            return 0;
        }
        uint8_t h[32];
        unsigned int hl = 0;
        if (!EVP_Digest(data, len, h, &hl, EVP_sha256(), NULL))
            return MG_ENOMEM;
        audit_buf_u32(b, 32);
        audit_buf_put(b, h, 32);
        return 0;
    }
    case AUDIT_PAYLOAD_AES256GCM: {
        if (!data) {
            audit_buf_u32(b, AUDIT_NULL_LEN);
            return 0;
        }
        size_t n = len + AUDIT_GCM_NONCE + AUDIT_GCM_TAG;
        audit_buf_u32(b, (uint32_t)n);
        size_t at = b->len;
        /* reserve, then encrypt in place */
        for (size_t left = n; left;) {
            static const uint8_t zeros[256];
            size_t k = left < sizeof zeros ? left : sizeof zeros;
            audit_buf_put(b, zeros, k);
            left -= k;
        }
        if (b->oom)
            return MG_ENOMEM;
        if (payload_encrypt(key, r->request_id, strlen(r->request_id), field,
                            (const uint8_t *)data, len, b->p + at)) {
            mg_err_set(err, errlen, "audit: record: %s: AES-256-GCM encryption failed", field);
            return MG_EIO;
        }
        return 0;
    }
    }
    return MG_EINVAL;
}

int audit_record_encode(const audit_record *r, const audit_payload_key *key, uint8_t **out,
                        size_t *out_len, char *err, size_t errlen)
{
    audit_buf b = {0};
    int rc;
    size_t rid_len = r->request_id ? strlen(r->request_id) : 0;
    if (rid_len == 0 || rid_len > AUDIT_MAX_REQUEST_ID ||
        !audit_utf8_valid((const uint8_t *)r->request_id, rid_len)) {
        mg_err_set(err, errlen, "audit: record: request_id must be 1..%u bytes of UTF-8",
                   AUDIT_MAX_REQUEST_ID);
        return MG_EINVAL;
    }
    if ((unsigned)r->payload_mode > AUDIT_PAYLOAD_AES256GCM) {
        mg_err_set(err, errlen, "audit: record: payload_mode %d unknown", (int)r->payload_mode);
        return MG_EINVAL;
    }
    if (r->payload_mode == AUDIT_PAYLOAD_AES256GCM && !key) {
        mg_err_set(err, errlen, "audit: record %s: aes-256-gcm payload asked but the writer has "
                                "no payload key",
                   r->request_id);
        return MG_EINVAL;
    }
    if ((r->adapter_sha256 && !is_hex64(r->adapter_sha256)) ||
        (r->model_sha256 && !is_hex64(r->model_sha256))) {
        mg_err_set(err, errlen, "audit: record %s: adapter_sha256/model_sha256 must be 64 hex "
                                "digits",
                   r->request_id);
        return MG_EINVAL;
    }
    const int64_t tmax = 253402300799000000LL, tmin = -AUDIT_PG_EPOCH_US * 5;
    if (r->received_us < tmin || r->received_us > tmax || r->finished_us < tmin ||
        r->finished_us > tmax) {
        mg_err_set(err, errlen, "audit: record %s: received/finished time out of range",
                   r->request_id);
        return MG_EINVAL;
    }
    const char *texts[AUDIT_NFIELDS] = {
        [F_REQUEST_ID] = r->request_id, [F_TENANT] = r->tenant,
        [F_KEY_ID] = r->key_id, [F_CLIENT_ADDR] = r->client_addr,
        [F_CLIENT_SUBJECT] = r->client_subject, [F_ENDPOINT] = r->endpoint,
        [F_DOMAIN] = r->domain, [F_ADAPTER_NAME] = r->adapter_name,
        [F_ADAPTER_SHA256] = r->adapter_sha256, [F_MODEL_SHA256] = r->model_sha256,
        [F_SAMPLING] = r->sampling, [F_ERROR] = r->error,
        [F_REDACTION] = r->redaction,
        [F_PAYLOAD_KEY_ID] = r->payload_mode == AUDIT_PAYLOAD_AES256GCM
                                 ? audit_payload_key_id(key) : NULL,
    };
    const int64_t ints[AUDIT_NFIELDS] = {
        [F_RECEIVED] = r->received_us, [F_FINISHED] = r->finished_us,
        [F_PROMPT_TOKENS] = r->prompt_tokens, [F_COMPLETION_TOKENS] = r->completion_tokens,
        [F_STATUS] = r->status, [F_LATENCY] = r->latency_us,
        [F_PAYLOAD_MODE] = r->payload_mode,
    };
    audit_buf_u8(&b, AUDIT_ENCODING_VERSION);
    for (int f = 0; f < AUDIT_NFIELDS; f++) {
        switch (audit_fields[f].type) {
        case AF_TEXT:
            rc = put_text(&b, texts[f], AUDIT_MAX_FIELD, audit_fields[f].column, err, errlen);
            if (rc)
                goto fail;
            break;
        case AF_BYTES:
            rc = f == F_PROMPT
                     ? put_payload(&b, r, key, "prompt", r->prompt, r->prompt_len, err, errlen)
                     : put_payload(&b, r, key, "completion", r->completion, r->completion_len,
                                   err, errlen);
            if (rc)
                goto fail;
            break;
        case AF_I64:
        case AF_TIME:
            audit_buf_u64(&b, (uint64_t)ints[f]);
            break;
        case AF_I32:
            audit_buf_u32(&b, (uint32_t)(int32_t)ints[f]);
            break;
        case AF_MODE:
            audit_buf_u8(&b, (uint8_t)ints[f]);
            break;
        }
    }
    if (b.oom) {
        rc = MG_ENOMEM;
        mg_err_set(err, errlen, "audit: record: out of memory");
        goto fail;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
fail:
    if (b.p)
        OPENSSL_cleanse(b.p, b.len);
    audit_buf_free(&b);
    return rc;
}
