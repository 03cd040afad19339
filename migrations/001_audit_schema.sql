-- moegate audit schema, version 1.
--
-- Applied by `moegate db migrate` as the database owner (or a role that
-- owns these objects), in one transaction, recorded in schema_migrations
-- with the file's SHA-256. Never edit an applied migration: add a new file.
--
-- audit_events is append-only. Three layers enforce it:
--   1. privileges: the gateway's role (moegate_gateway) may only INSERT and
--      SELECT; auditors (moegate_auditor) only SELECT; PUBLIC nothing;
--   2. triggers refuse UPDATE, DELETE and TRUNCATE for every role, the
--      owner included (a superuser can disable them: that is what the hash
--      chain and the signed checkpoints are for);
--   3. `moegate audit verify` recomputes the chains.
-- Operators grant a login role membership: GRANT moegate_gateway TO gw_login;
--
-- Partitioning: by month of received_at. A unique constraint on a
-- partitioned table must contain the partition key, so uniqueness is
-- UNIQUE (request_id, received_at). That suffices for exactly-once replay
-- because a record's received_at is fixed when the gateway submits it and
-- travels unchanged through the spool: a replayed record always collides
-- with its earlier copy. The writer additionally looks replayed request ids
-- up before inserting (the unique index serves that lookup as its prefix),
-- so a replay never fails a whole batch. We rejected a separate
-- non-partitioned request-id table: it would double the index writes on
-- the hot path and could never be cleaned up when partitions are detached.
--
-- Partitions are created ahead (this month and the next three here) and on
-- demand by the writer through audit_ensure_partition(), a SECURITY DEFINER
-- function owned by the schema owner, so the gateway's role needs no DDL
-- rights. A DEFAULT partition catches rows of any month that has none (for
-- example a skewed clock), so an insert never fails for want of a partition.

CREATE TABLE audit_events (
    chain_id          text        NOT NULL,
    seq               bigint      NOT NULL CHECK (seq > 0),
    request_id        text        NOT NULL,
    received_at       timestamptz NOT NULL,
    finished_at       timestamptz NOT NULL,
    tenant            text,
    key_id            text,
    client_addr       text,
    client_subject    text,
    endpoint          text,
    domain            text,
    adapter_name      text,
    adapter_sha256    text,
    model_sha256      text,
    sampling          text,          -- JSON text, kept verbatim (the hash covers the bytes)
    prompt_tokens     bigint      NOT NULL,
    completion_tokens bigint      NOT NULL,
    status            integer     NOT NULL,
    error             text,
    latency_us        bigint      NOT NULL,
    redaction         text,          -- JSON text
    payload_mode      text        NOT NULL
                      CHECK (payload_mode IN ('none', 'clear', 'sha256', 'aes-256-gcm')),
    payload_key_id    text,
    prompt            bytea,         -- clear bytes, SHA-256, or nonce||ciphertext||tag
    completion        bytea,
    prev_hash         bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash              bytea       NOT NULL CHECK (length(hash) = 32),
    written_at        timestamptz NOT NULL DEFAULT now(), -- not covered by the hash
    UNIQUE (request_id, received_at)
) PARTITION BY RANGE (received_at);

-- the writer's head lookup and verify's ordered walk
CREATE INDEX audit_events_chain_seq ON audit_events (chain_id, seq);
CREATE INDEX audit_events_tenant_received ON audit_events (tenant, received_at);

CREATE TABLE audit_events_default PARTITION OF audit_events DEFAULT;

-- Signed checkpoints: chain head (seq, hash) at a time, Ed25519. The
-- authoritative copy is the checkpoint file on WORM media; this one lets
-- verify run without it.
CREATE TABLE audit_checkpoints (
    chain_id   text        NOT NULL,
    seq        bigint      NOT NULL,
    hash       bytea       NOT NULL CHECK (length(hash) = 32),
    signed_at  timestamptz NOT NULL,
    signature  bytea       NOT NULL CHECK (length(signature) = 64),
    public_key bytea       NOT NULL CHECK (length(public_key) = 32),
    PRIMARY KEY (chain_id, seq)
);

-- Partitions detached by retention, with where their export went.
CREATE TABLE audit_retention_log (
    partition_name text        NOT NULL PRIMARY KEY,
    range_from     timestamptz NOT NULL,
    range_to       timestamptz NOT NULL,
    records        bigint      NOT NULL,
    export_file    text        NOT NULL,
    export_sha256  text        NOT NULL,
    detached_at    timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'moegate audit tables are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Row triggers on a partitioned table are cloned onto every partition;
-- statement-level TRUNCATE triggers are not, so audit_ensure_partition adds
-- one to each partition it creates.
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_default_no_truncate BEFORE TRUNCATE ON audit_events_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Creates the month partition holding ts when missing. SECURITY DEFINER:
-- runs with the owner's rights, search_path pinned so a caller cannot
-- substitute objects. Returns false (and changes nothing) when the month
-- cannot get its own partition, e.g. because the DEFAULT partition already
-- holds rows of that month; those rows stay where they are.
CREATE FUNCTION audit_ensure_partition(ts timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    lo   timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := lo + interval '1 month';
    name text := 'audit_events_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMM');
BEGIN
    IF to_regclass('public.' || name) IS NOT NULL THEN
        RETURN true;
    END IF;
    -- one creator at a time; a concurrent writer waits, then sees the table
    PERFORM pg_advisory_xact_lock(hashtext('moegate-audit-partition'));
    IF to_regclass('public.' || name) IS NOT NULL THEN
        RETURN true;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE public.%I PARTITION OF public.audit_events '
                       'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON public.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_refuse_change()',
                       name || '_no_truncate', name);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'audit_ensure_partition(%): %', lo, SQLERRM;
        RETURN false;
    END;
    RETURN true;
END;
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moegate_gateway') THEN
        CREATE ROLE moegate_gateway NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'moegate_auditor') THEN
        CREATE ROLE moegate_auditor NOLOGIN;
    END IF;
END;
$$;

REVOKE ALL ON audit_events, audit_checkpoints, audit_retention_log FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_ensure_partition(timestamptz) FROM PUBLIC;
GRANT INSERT, SELECT ON audit_events, audit_checkpoints TO moegate_gateway;
GRANT EXECUTE ON FUNCTION audit_ensure_partition(timestamptz) TO moegate_gateway;
GRANT SELECT ON audit_events, audit_checkpoints, audit_retention_log TO moegate_auditor;

SELECT audit_ensure_partition(now() + make_interval(months => m)) FROM generate_series(0, 3) m;
