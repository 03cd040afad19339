/* moegate — signed chain checkpoints.
 *
 * A hash chain only proves something to whoever kept an earlier hash, and
 * whoever can rewrite the table can recompute every hash after a change or
 * simply delete the newest records. So the writer periodically signs
 * (chain id, sequence number, hash, time) with an Ed25519 key (EVP API),
 * stores the checkpoint in audit_checkpoints and appends it as one text
 * line to a file the operator ships to WORM or external media. verify
 * trusts the file's lines (and keys), not the database's copy.
 *
 * Signed message: "moegate-checkpoint-v1" NUL || u32 len || chain id ||
 * i64 seq || hash[32] || i64 time_us (big-endian).
 * Line: "moegate-checkpoint-v1 CHAIN SEQ HASH TIME PUBKEY SIG" with hash,
 * public key and signature in lower-case hex.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit/audit_internal.h"
#include "core/errors.h"

#define CKPT_TAG "moegate-checkpoint-v1"

struct audit_signer {
    EVP_PKEY *key;
    uint8_t pub[32];
};

static EVP_PKEY *read_pem(const char *path, bool *is_private, char *err, size_t errlen)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (audit_read_file(path, 65536, &buf, &len, err, errlen))
        return NULL;
    BIO *bio = BIO_new_mem_buf(buf, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    *is_private = k != NULL;
    if (!k && bio) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(buf, (int)len);
        k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    }
    BIO_free(bio);
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (!k) {
        mg_err_set(err, errlen, "audit: checkpoint key %s: not a PEM key", path);
        return NULL;
    }
    if (EVP_PKEY_id(k) != EVP_PKEY_ED25519) {
        mg_err_set(err, errlen, "audit: checkpoint key %s: not an Ed25519 key", path);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

int audit_signer_load(audit_signer **out, const char *pem_path, char *err, size_t errlen)
{
    bool priv = false;
    EVP_PKEY *k = read_pem(pem_path, &priv, err, errlen);
    if (!k)
        return MG_EFORMAT;
    if (!priv) {
        mg_err_set(err, errlen, "audit: checkpoint key %s: a private key is needed to sign",
                   pem_path);
        EVP_PKEY_free(k);
        return MG_EFORMAT;
    }
    audit_signer *s = calloc(1, sizeof *s);
    size_t pl = sizeof s->pub;
    if (!s || !EVP_PKEY_get_raw_public_key(k, s->pub, &pl) || pl != 32) {
        EVP_PKEY_free(k);
        free(s);
        return MG_ENOMEM;
    }
    s->key = k;
    *out = s;
    return 0;
}

void audit_signer_free(audit_signer *s)
{
    if (!s)
        return;
    EVP_PKEY_free(s->key);
    free(s);
}

int audit_pubkey_load(uint8_t pub[32], const char *pem_path, char *err, size_t errlen)
{
    bool priv;
    EVP_PKEY *k = read_pem(pem_path, &priv, err, errlen);
    if (!k)
        return MG_EFORMAT;
    size_t pl = 32;
    int ok = EVP_PKEY_get_raw_public_key(k, pub, &pl) && pl == 32;
    EVP_PKEY_free(k);
    return ok ? 0 : MG_EFORMAT;
}

static void put64(uint8_t *p, int64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
}

/* The signed bytes; returns their length (buffer is big enough). */
static size_t ckpt_message(const audit_ckpt *c, uint8_t *m)
{
    size_t n = strlen(c->chain_id), pos = sizeof CKPT_TAG; /* tag and its NUL */
    memcpy(m, CKPT_TAG, sizeof CKPT_TAG);
    m[pos++] = (uint8_t)(n >> 24);
    m[pos++] = (uint8_t)(n >> 16);
    m[pos++] = (uint8_t)(n >> 8);
    m[pos++] = (uint8_t)n;
    memcpy(m + pos, c->chain_id, n);
    pos += n;
    put64(m + pos, c->seq);
    pos += 8;
    memcpy(m + pos, c->hash, AUDIT_HASH_LEN);
    pos += AUDIT_HASH_LEN;
    put64(m + pos, c->time_us);
    return pos + 8;
}

#define MSG_MAX (sizeof CKPT_TAG + 4 + AUDIT_MAX_CHAIN_ID + 8 + AUDIT_HASH_LEN + 8)

int audit_ckpt_sign(audit_signer *s, audit_ckpt *c, char *err, size_t errlen)
{
    uint8_t m[MSG_MAX];
    size_t n = ckpt_message(c, m), sl = sizeof c->sig;
    memcpy(c->pubkey, s->pub, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->key) == 1 &&
             EVP_DigestSign(ctx, c->sig, &sl, m, n) == 1 && sl == 64;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        mg_err_set(err, errlen, "audit: checkpoint: signing failed");
        return MG_EIO;
    }
    return 0;
}

bool audit_ckpt_verify(const audit_ckpt *c)
{
    uint8_t m[MSG_MAX];
    if (!audit_chain_id_valid(c->chain_id))
        return false;
    size_t n = ckpt_message(c, m);
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, c->pubkey, 32);
    EVP_MD_CTX *ctx = k ? EVP_MD_CTX_new() : NULL;
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k) == 1 &&
              EVP_DigestVerify(ctx, c->sig, 64, m, n) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok;
}

void audit_ckpt_format(const audit_ckpt *c, char *line, size_t len)
{
    char h[65], p[65], s[129];
    audit_hex(h, c->hash, 32);
    audit_hex(p, c->pubkey, 32);
    audit_hex(s, c->sig, 64);
    snprintf(line, len, "%s %s %lld %s %lld %s %s\n", CKPT_TAG, c->chain_id, (long long)c->seq,
             h, (long long)c->time_us, p, s);
}

/* Next space-separated token of *s (no leading spaces allowed: one space
 * between fields, as written). */
static const char *token(const char **s, size_t *len)
{
    const char *b = *s, *e = b;
    while (*e && *e != ' ' && *e != '\n' && *e != '\r')
        e++;
    *len = (size_t)(e - b);
    *s = *e == ' ' ? e + 1 : e;
    return b;
}

static int parse_i64(const char *s, size_t n, int64_t *v)
{
    if (n == 0 || n > 19)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 0;
}

int audit_ckpt_parse(audit_ckpt *c, const char *line, char *err, size_t errlen)
{
    const char *s = line, *t;
    size_t n;
    memset(c, 0, sizeof *c);
    t = token(&s, &n);
    if (n != strlen(CKPT_TAG) || memcmp(t, CKPT_TAG, n))
        goto bad;
    t = token(&s, &n);
    if (n == 0 || n > AUDIT_MAX_CHAIN_ID)
        goto bad;
    memcpy(c->chain_id, t, n);
    if (!audit_chain_id_valid(c->chain_id))
        goto bad;
    t = token(&s, &n);
    if (parse_i64(t, n, &c->seq))
        goto bad;
    t = token(&s, &n);
    if (audit_unhex(c->hash, 32, t, n))
        goto bad;
    t = token(&s, &n);
    if (parse_i64(t, n, &c->time_us))
        goto bad;
    t = token(&s, &n);
    if (audit_unhex(c->pubkey, 32, t, n))
        goto bad;
    t = token(&s, &n);
    if (audit_unhex(c->sig, 64, t, n))
        goto bad;
    while (*s == '\r' || *s == '\n')
        s++;
    if (*s)
        goto bad;
    return 0;
bad:
    mg_err_set(err, errlen, "audit: checkpoint line malformed near byte %zu",
                (size_t)(s - line));
    return MG_EFORMAT;
}
