/* moegate — audit log: every request recorded in PostgreSQL, hash-chained,
 * spooled to a local fsync'd file while the database is unreachable.
 *
 * The gateway fills an audit_opts from its policy, opens one audit_writer
 * per process and, for each finished request, calls audit_submit() and (in
 * strict durability) audit_wait_durable() before sending the last byte of
 * the response. Everything here depends only on libpq, OpenSSL and core/
 * errors.h; nothing knows about policies or HTTP.
 *
 * Durability (audit_opts.durability):
 *   AUDIT_DURABILITY_STRICT  audit_wait_durable() returns 0 only once the
 *       record is committed in PostgreSQL (synchronous_commit stays on) or
 *       fsync'd into the spool. Concurrent requests share one transaction or
 *       one fsync (group commit): the writer takes everything queued as one
 *       batch.
 *   AUDIT_DURABILITY_ASYNC   records are written in the background; a crash
 *       (kill -9, power loss) loses the records still in the queue, at most
 *       queue_capacity of them. Nothing already committed or spooled is lost.
 *
 * Chain: each writer owns one chain (chain_id = audit_opts.writer_id), so
 * replicas never contend. hash = SHA-256(prev_hash || canonical(record));
 * the first record's prev_hash is 32 zero bytes. Sequence numbers and hashes
 * are assigned by the writer thread inside the transaction that inserts the
 * record, from the chain head it read from PostgreSQL under an advisory
 * lock, so a record is sealed exactly once and a spooled record is sealed
 * when it is replayed (the spool holds protected, unsealed records).
 *
 * Threads: audit_submit, audit_wait_durable, audit_writable and
 * audit_writer_stats are safe from any thread. The writer's PostgreSQL
 * connection and spool belong to its one thread.
 */
#ifndef MOEGATE_AUDIT_H
#define MOEGATE_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- records ---------------------------------------------------------------- */

typedef enum audit_payload_mode {
    AUDIT_PAYLOAD_NONE = 0,   /* prompt and completion not stored */
    AUDIT_PAYLOAD_CLEAR = 1,  /* stored as given */
    AUDIT_PAYLOAD_SHA256 = 2, /* SHA-256 of each (32 bytes) */
    AUDIT_PAYLOAD_AES256GCM = 3, /* nonce(12) || ciphertext || tag(16), see audit_payload_key */
} audit_payload_mode;

/* One finished request, as the gateway knows it. Strings are borrowed,
 * NUL-terminated, may be NULL (stored as SQL NULL); they are copied by
 * audit_submit. Invalid UTF-8 in them is replaced by U+FFFD (PostgreSQL
 * text must be valid UTF-8) and each is limited to AUDIT_MAX_FIELD bytes.
 * prompt/completion are bytes (need not be text); their stored form follows
 * payload_mode. Times are microseconds since the Unix epoch (UTC). */
typedef struct audit_record {
    const char *request_id; /* required, 1..128 bytes, unique */
    int64_t received_us, finished_us;
    const char *tenant, *key_id;
    const char *client_addr, *client_subject; /* peer address, mTLS subject */
    const char *endpoint, *domain;
    const char *adapter_name, *adapter_sha256, *model_sha256; /* sha256: 64 hex chars */
    const char *sampling;  /* sampling parameters as JSON text, stored verbatim */
    int64_t prompt_tokens, completion_tokens;
    int32_t status;        /* HTTP status */
    const char *error;
    int64_t latency_us;
    const char *redaction; /* redaction summary, JSON text */
    audit_payload_mode payload_mode;
    const void *prompt;
    size_t prompt_len;
    const void *completion;
    size_t completion_len;
} audit_record;

#define AUDIT_MAX_FIELD      65536u       /* bytes per metadata string */
#define AUDIT_MAX_PAYLOAD    (32u << 20)  /* bytes per prompt / completion */
#define AUDIT_MAX_REQUEST_ID 128u
#define AUDIT_MAX_CHAIN_ID   64u          /* [A-Za-z0-9._-]{1,64} */

/* ---- payload keys ------------------------------------------------------------- */

/* An AES-256-GCM key for prompt/completion encryption: a file holding
 * exactly 32 bytes, or 64 hex digits and an optional newline. */
typedef struct audit_payload_key audit_payload_key;
int audit_payload_key_load(audit_payload_key **out, const char *path, const char *key_id,
                           char *err, size_t errlen);
void audit_payload_key_free(audit_payload_key *k);

/* ---- the writer ------------------------------------------------------------- */

typedef enum audit_durability {
    AUDIT_DURABILITY_STRICT = 0,
    AUDIT_DURABILITY_ASYNC = 1,
} audit_durability;

typedef enum audit_on_failure {
    AUDIT_ON_FAILURE_REJECT = 0, /* audit_writable() false when records cannot be made durable */
    AUDIT_ON_FAILURE_CONTINUE = 1, /* audit_writable() always true; records wait in memory */
} audit_on_failure;

typedef struct audit_opts {
    const char *conninfo;    /* libpq connection string (secret: never logged) */
    const char *writer_id;   /* chain id, [A-Za-z0-9._-]{1,64}, one per writer instance */
    const char *spool_dir;   /* spool file <spool_dir>/<writer_id>.spool; required */
    audit_durability durability;
    audit_on_failure on_failure;
    const char *payload_key_file; /* needed when a record asks for AES-256-GCM */
    const char *payload_key_id;   /* recorded with each encrypted record */
    const char *checkpoint_key_file; /* Ed25519 private key (PEM); NULL: no checkpoints */
    const char *checkpoint_file;     /* checkpoint lines appended here (fsync'd); may be NULL */
    int checkpoint_every;       /* records between checkpoints (0: 10000) */
    int checkpoint_interval_ms; /* at most this long between checkpoints (0: 10000) */
    int queue_capacity;         /* records queued before submit blocks (0: 65536) */
    int max_batch;              /* records per transaction (0: 4096) */
    size_t spool_max_bytes;     /* spool size before it refuses records (0: 1 GiB) */
    int submit_timeout_ms;      /* how long submit waits for queue space (0: 5000) */
    int connect_timeout_s;      /* libpq connect_timeout (0: 3) */
    int reconnect_max_ms;       /* backoff ceiling (0: 5000); backoff starts at 100 ms */
    int close_timeout_ms;       /* how long close keeps trying to make records durable
                                   and to empty the spool (0: 15000) */
} audit_opts;

typedef struct audit_writer audit_writer;

/* Opens the spool (recovering a torn last record), loads keys, and starts
 * the writer thread, which connects in the background: open succeeds while
 * PostgreSQL is down. Errors: MG_EINVAL (bad options), MG_EIO (spool or key
 * file), MG_EFORMAT (spool corrupt before its last record, key file
 * malformed), MG_EBUSY (another process holds the spool). */
int audit_writer_open(audit_writer **out, const audit_opts *opts, char *err, size_t errlen);

/* Stops accepting records, writes what is queued (to PostgreSQL or the
 * spool), writes a final checkpoint, and joins the thread. Returns MG_EIO
 * when some queued records could be made durable neither way (they are
 * lost; err says how many). Accepts NULL. */
int audit_writer_close(audit_writer *w, char *err, size_t errlen);

/* Copies and protects the record (hash or encrypt per payload_mode) and
 * queues it; *ticket identifies it for audit_wait_durable. Blocks while the
 * queue is full, up to submit_timeout_ms, then MG_EBUSY. MG_EINVAL for a
 * bad record (missing request id, bad sha256, payload too large, AES asked
 * without a key), MG_EBUSY once the writer is closing. */
int audit_submit(audit_writer *w, const audit_record *r, uint64_t *ticket, char *err,
                 size_t errlen);

/* Blocks until the record of `ticket` is durable (committed in PostgreSQL or
 * fsync'd in the spool), or timeout_ms passes (< 0: no limit). Returns 0;
 * MG_EBUSY on timeout (the record is still queued and may yet land);
 * MG_EIO when the writer closed without making it durable; MG_EINVAL for a
 * ticket audit_submit never returned. */
int audit_wait_durable(audit_writer *w, uint64_t ticket, int timeout_ms);

/* Whether a new request can be audited durably now: with on_failure reject,
 * false while neither PostgreSQL nor the spool accepts records or the queue
 * is full, so the gateway answers 503. */
bool audit_writable(audit_writer *w);

typedef struct audit_stats {
    uint64_t queue_depth, queue_capacity;
    uint64_t spool_bytes, spool_records; /* records waiting in the spool */
    uint64_t written;      /* records committed to PostgreSQL (replays included) */
    uint64_t spooled;      /* records written to the spool */
    uint64_t replayed;     /* spooled records committed to PostgreSQL */
    uint64_t duplicates;   /* replayed records already in PostgreSQL, skipped */
    uint64_t failed;       /* failed transactions / spool writes */
    uint64_t checkpoints;  /* checkpoints written */
    uint64_t transactions; /* PostgreSQL transactions committed */
    int64_t last_seq;      /* chain head, -1 before the first record */
    bool connected;
} audit_stats;

/* A snapshot for metrics; safe from any thread. */
void audit_writer_stats(audit_writer *w, audit_stats *st);

/* Last connection/spool error in words (conninfo never included), "" if none. */
void audit_writer_last_error(audit_writer *w, char *buf, size_t len);

/* ---- schema migrations ------------------------------------------------------ */

/* Applies dir/NNN_name.sql files in order, each in one transaction recorded
 * in schema_migrations (version, name, sha256 of the file). Refuses to run
 * when an applied migration's file changed or disappeared. Idempotent.
 * Prints one line per applied migration to log (may be NULL). */
int audit_migrate(const char *conninfo, const char *dir, FILE *log, char *err, size_t errlen);

/* ---- verification and export -------------------------------------------------- */

typedef struct audit_verify_opts {
    const char *conninfo;
    int64_t from_us, to_us;      /* received time range; 0: unbounded */
    const char *checkpoint_file; /* trusted checkpoint lines (WORM copy); may be NULL */
    const char *public_key_file; /* Ed25519 key (PEM, public or private); may be NULL */
    int max_problems;            /* stop reporting after this many (0: 100) */
} audit_verify_opts;

typedef struct audit_verify_report {
    uint64_t records, chains, checkpoints_checked, problems;
} audit_verify_report;

/* Recomputes every chain (within the range) and checks it against the
 * signed checkpoints: each problem (altered record, broken link, gap,
 * duplicate, reordered record, bad checkpoint signature, checkpoint
 * disagreement, records missing after a checkpoint) is printed to out as
 * one line starting "problem:". Returns 0 when verification ran (problems
 * are counted in the report), negative when it could not run. */
int audit_verify(const audit_verify_opts *o, FILE *out, audit_verify_report *rep, char *err,
                 size_t errlen);

typedef enum audit_export_format { AUDIT_EXPORT_JSONL = 0, AUDIT_EXPORT_CSV = 1 } audit_export_format;

typedef struct audit_export_opts {
    const char *conninfo;
    audit_export_format format;
    const char *tenant;          /* NULL: all */
    int64_t from_us, to_us;      /* 0: unbounded */
    const char *key_file, *key_id; /* decrypt AES-256-GCM payloads with this key */
    const char *partition;       /* export one (detached) table instead; NULL: audit_events */
} audit_export_opts;

/* Writes the records ordered by chain and sequence number. Without the key,
 * encrypted payloads are exported as hex ciphertext only. *n_out: rows. */
int audit_export(const audit_export_opts *o, FILE *out, uint64_t *n_out, char *err,
                 size_t errlen);

/* ---- retention ------------------------------------------------------------------ */

/* Retention presets, in days. */
#define AUDIT_RETENTION_SECURITIES_DAYS 2192 /* SEC 17a-4: 6 years */
#define AUDIT_RETENTION_HIPAA_DAYS      2192 /* HIPAA documentation: 6 years */
#define AUDIT_RETENTION_CN_NETLOG_DAYS  183  /* China network logs: 6 months minimum */

typedef struct audit_retention_tenant {
    const char *tenant;
    int days;
} audit_retention_tenant;

typedef struct audit_retention_opts {
    const char *conninfo;       /* a role that owns audit_events (detach is DDL) */
    const audit_retention_tenant *tenants;
    int n_tenants;
    int default_days;           /* tenants not listed (0: never expire) */
    const char *export_dir;     /* each expired partition exported here as JSONL first */
    int64_t now_us;             /* 0: the current time */
    bool dry_run;
} audit_retention_opts;

/* Detaches the month partitions whose every record is past its tenant's
 * retention, after exporting each (fsync'd) to export_dir/<partition>.jsonl.
 * Never drops: a detached partition stays a plain table. One line per
 * partition to log. */
int audit_retention_apply(const audit_retention_opts *o, FILE *log, char *err, size_t errlen);

#endif
