/* moegate — audit module internals shared by its .c files (not public).
 *
 * A record travels in one byte encoding from audit_submit to the spool and
 * to PostgreSQL: the "protected record", i.e. every field of audit_record
 * after sanitising and payload protection (hashing or encryption happen in
 * the submitting thread, so clear text never reaches the queue, the spool
 * or the database in the sha256 and aes-256-gcm modes).
 *
 * Encoding (version 1), big-endian, fields in the order of audit_fields[]:
 *
 *   u8 version = 1
 *   per field, by type:
 *     TEXT, BYTES  u32 length (0xFFFFFFFF = NULL) then that many bytes
 *     I64, TIME    i64 (TIME: microseconds since the Unix epoch)
 *     I32          i32
 *     MODE         u8 (audit_payload_mode)
 *
 * Canonical serialisation of a sealed record (what the chain hashes):
 *
 *   u32 length || chain_id || i64 seq || protected-record encoding
 *
 * and hash = SHA-256(prev_hash[32] || canonical). verify rebuilds exactly
 * these bytes from a database row, so every field round-trips: text stays
 * text (never json/jsonb, which would normalise it), times are whole
 * microseconds (timestamptz's precision), NULL stays NULL.
 */
#ifndef MOEGATE_AUDIT_INTERNAL_H
#define MOEGATE_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "audit/audit.h"

#define AUDIT_ENCODING_VERSION 1
#define AUDIT_HASH_LEN         32
#define AUDIT_GCM_NONCE        12
#define AUDIT_GCM_TAG          16
#define AUDIT_NULL_LEN         0xFFFFFFFFu
/* Largest encoding we accept when decoding: two payloads at their limit
 * plus the metadata fields at theirs (and headroom for the GCM framing). */
#define AUDIT_MAX_ENCODED      ((size_t)2 * AUDIT_MAX_PAYLOAD + 24u * AUDIT_MAX_FIELD + 4096u)

enum audit_ftype { AF_TEXT, AF_BYTES, AF_I64, AF_I32, AF_TIME, AF_MODE };

enum audit_field {
    F_REQUEST_ID, F_RECEIVED, F_FINISHED, F_TENANT, F_KEY_ID, F_CLIENT_ADDR, F_CLIENT_SUBJECT,
    F_ENDPOINT, F_DOMAIN, F_ADAPTER_NAME, F_ADAPTER_SHA256, F_MODEL_SHA256, F_SAMPLING,
    F_PROMPT_TOKENS, F_COMPLETION_TOKENS, F_STATUS, F_ERROR, F_LATENCY, F_REDACTION,
    F_PAYLOAD_MODE, F_PAYLOAD_KEY_ID, F_PROMPT, F_COMPLETION,
    AUDIT_NFIELDS
};

typedef struct audit_field_def {
    const char *column; /* audit_events column */
    enum audit_ftype type;
} audit_field_def;

extern const audit_field_def audit_fields[AUDIT_NFIELDS];

/* One field's value; p/len point into the buffer the record was decoded
 * from (or built in), so an audit_rec lives no longer than that buffer. */
typedef struct audit_value {
    bool null;
    int64_t i;        /* I64, I32, TIME, MODE */
    const uint8_t *p; /* TEXT, BYTES */
    uint32_t len;
} audit_value;

typedef struct audit_rec {
    audit_value v[AUDIT_NFIELDS];
} audit_rec;

/* A growable byte buffer; on allocation failure it sets oom and drops
 * further writes, so encoders check once at the end. */
typedef struct audit_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} audit_buf;

void audit_buf_put(audit_buf *b, const void *src, size_t n);
void audit_buf_u8(audit_buf *b, uint8_t v);
void audit_buf_u16(audit_buf *b, uint16_t v);
void audit_buf_u32(audit_buf *b, uint32_t v);
void audit_buf_u64(audit_buf *b, uint64_t v);
void audit_buf_free(audit_buf *b);

/* Sanitises and protects r into a fresh encoding (*out, malloc'd, *out_len).
 * key may be NULL unless r asks for AES-256-GCM. */
int audit_record_encode(const audit_record *r, const audit_payload_key *key, uint8_t **out,
                        size_t *out_len, char *err, size_t errlen);

/* Encodes an audit_rec (as decoded or read from the database). */
void audit_rec_encode(const audit_rec *r, audit_buf *b);

/* Decodes and validates an encoding; values point into buf. MG_EFORMAT with
 * the field name and offset when malformed. */
int audit_rec_decode(audit_rec *r, const uint8_t *buf, size_t len, char *err, size_t errlen);

/* hash = SHA-256(prev || u32 len || chain_id || i64 seq || encoding). */
int audit_chain_hash(uint8_t out[AUDIT_HASH_LEN], const uint8_t prev[AUDIT_HASH_LEN],
                     const char *chain_id, int64_t seq, const uint8_t *enc, size_t enc_len);

/* AES-256-GCM of one payload field; AAD binds it to the request id and the
 * field name, so a ciphertext moved to another record or field fails. */
int audit_payload_decrypt(const audit_payload_key *k, const char *request_id, size_t rid_len,
                          const char *field, const uint8_t *in, size_t in_len, uint8_t **out,
                          size_t *out_len, char *err, size_t errlen);
const char *audit_payload_key_id(const audit_payload_key *k);

const char *audit_payload_mode_name(int mode);
int audit_payload_mode_parse(const char *s, size_t len);
bool audit_chain_id_valid(const char *s);
/* Strict UTF-8 without NUL bytes: what PostgreSQL text accepts. */
bool audit_utf8_valid(const uint8_t *s, size_t n);

/* Microseconds between the Unix epoch and PostgreSQL's 2000-01-01. */
#define AUDIT_PG_EPOCH_US 946684800000000LL

/* ---- spool (spool.c) ----------------------------------------------------------- */

typedef struct audit_spool audit_spool;

/* Opens or creates path (locked with flock against a second process),
 * checks every frame, truncates a torn last frame. */
int audit_spool_open(audit_spool **out, const char *path, char *err, size_t errlen);
void audit_spool_close(audit_spool *s);
/* Appends n encodings as frames with one write and one fdatasync. */
int audit_spool_append(audit_spool *s, const uint8_t *const *encs, const size_t *lens, int n,
                       char *err, size_t errlen);
/* Reads up to max frames starting at the read cursor into malloc'd copies
 * (*encs[i], free each and the arrays); does not advance the cursor. */
int audit_spool_peek(audit_spool *s, int max, uint8_t ***encs, size_t **lens, int *n,
                     size_t *next_off, char *err, size_t errlen);
/* Marks everything before off (n records) as replayed; when that is the
 * whole file, truncates the file back to its header (fsync'd). */
int audit_spool_consume(audit_spool *s, size_t off, uint64_t n, char *err, size_t errlen);
size_t audit_spool_pending_bytes(const audit_spool *s);
uint64_t audit_spool_pending_records(const audit_spool *s);
bool audit_spool_torn_tail_truncated(const audit_spool *s);

/* Validates a whole spool image in memory (the fuzz target and open share
 * it). Returns 0 and sets *good_len (bytes of valid frames; the rest is a
 * torn tail) and *n_records, or MG_EFORMAT when a bad frame is followed by
 * a valid one (corruption, not a torn write). */
int audit_spool_scan(const uint8_t *buf, size_t len, size_t *good_len, uint64_t *n_records,
                     char *err, size_t errlen);

#define AUDIT_SPOOL_HEADER_LEN 16

/* ---- checkpoints (checkpoint.c) ------------------------------------------------- */

typedef struct audit_ckpt {
    char chain_id[AUDIT_MAX_CHAIN_ID + 1];
    int64_t seq;
    uint8_t hash[AUDIT_HASH_LEN];
    int64_t time_us;
    uint8_t pubkey[32];
    uint8_t sig[64];
} audit_ckpt;

typedef struct audit_signer audit_signer;
int audit_signer_load(audit_signer **out, const char *pem_path, char *err, size_t errlen);
void audit_signer_free(audit_signer *s);
int audit_ckpt_sign(audit_signer *s, audit_ckpt *c, char *err, size_t errlen);
bool audit_ckpt_verify(const audit_ckpt *c);
/* One line "moegate-checkpoint-v1 CHAIN SEQ HASH TIME PUBKEY SIG\n". */
void audit_ckpt_format(const audit_ckpt *c, char *line, size_t len);
int audit_ckpt_parse(audit_ckpt *c, const char *line, char *err, size_t errlen);
/* Reads a public key (PEM public or private Ed25519 key) into raw bytes. */
int audit_pubkey_load(uint8_t pub[32], const char *pem_path, char *err, size_t errlen);

/* ---- shared helpers (pg.c) ----------------------------------------------------------- */

/* Connects; the error message carries libpq's reason, never the conninfo. */
int audit_pg_connect(PGconn **out, const char *conninfo, int connect_timeout_s, char *err,
                     size_t errlen);
/* Non-blocking connect: start, then poll until 0 (connected and checked),
 * 1 (not yet: call again later) or a negative code; each poll waits for the
 * socket at most until until_us (wall clock). *want starts as
 * PGRES_POLLING_WRITING and is kept by the poller between calls. The
 * caller enforces the overall limit (libpq does not, in this mode). */
int audit_pg_connect_start(PGconn **out, const char *conninfo, char *err, size_t errlen);
int audit_pg_connect_poll(PGconn *c, int *want, int64_t until_us, char *err, size_t errlen);
/* Runs a command expecting PGRES_COMMAND_OK or TUPLES_OK. */
int audit_pg_exec(PGconn *c, const char *sql, char *err, size_t errlen);
void audit_hex(char *out, const uint8_t *in, size_t n);
int audit_unhex(uint8_t *out, size_t n, const char *in, size_t in_len);
int64_t audit_now_us(void);
/* Reads a whole small file (< max bytes). */
int audit_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
                    size_t errlen);
/* Columns of audit_events in COPY / SELECT order: chain_id, seq, the
 * audit_fields, prev_hash, hash. */
const char *audit_columns_sql(void);

#endif
