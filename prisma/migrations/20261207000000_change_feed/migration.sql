-- The change feed (src/changes/): a row per write a PMS imports, written by the statement that made
-- the write, so in its transaction; and the consumers of the internal HTTP API. Expand only:
-- replicas of the previous release keep writing meanwhile, without change rows (see the README's
-- upgrade notes: a PMS starts the feed once they are gone).
SET LOCAL lock_timeout = '10s';

CREATE TABLE "changes" (
    "id" BIGSERIAL NOT NULL,
    -- The writing transaction. A reader takes only changes of transactions older than every one
    -- still in progress, in (txid, id) order: one that commits late is read late, never skipped.
    "txid" xid8 NOT NULL DEFAULT pg_current_xact_id(),
    "vendor" TEXT NOT NULL,
    "source_id" TEXT NOT NULL,
    -- The table of the row that changed; `key` is that row's key within its source: event_id,
    -- patient_id, or the row's id (deliveries, programs, erasures). Keys only, never the data.
    "kind" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    -- The feed's order, and the one index every change pays for on the ack path.
    CONSTRAINT "changes_pkey" PRIMARY KEY ("txid", "id"),
    CONSTRAINT "changes_kind_check" CHECK ("kind" IN ('patiro_events', 'patiro_patients', 'physitrack_deliveries', 'physitrack_programs', 'erasures'))
);
-- A patient's erasure removes the changes whose key is the patient's id (the other kinds are keyed
-- by ids that name nothing once the rows are gone): only those rows are in this index.
CREATE INDEX "changes_patient_idx" ON "changes"("source_id", "key") WHERE "kind" = 'patiro_patients';
-- Retention: rows are appended in time order, so a block range index finds old ones at little cost per write.
CREATE INDEX "changes_at_idx" ON "changes" USING BRIN ("at");

-- How far retention has purged the feed: a cursor before this point has missed changes (410).
CREATE TABLE "changes_purged" (
    "id" BOOLEAN NOT NULL DEFAULT true,
    "txid" xid8 NOT NULL,
    "change_id" BIGINT NOT NULL,
    "purged_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "changes_purged_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "changes_purged_one_row" CHECK ("id")
);

-- Who reads the internal HTTP API: a bearer token per consumer, stored as a hash.
CREATE TABLE "consumers" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    -- sha256 (hex) of the token's secret part; the token itself is shown once, when made.
    "token_hash" TEXT NOT NULL,
    -- After a rotation, the previous token's hash, accepted until previous_valid_until.
    "previous_token_hash" TEXT,
    "previous_valid_until" TIMESTAMPTZ(3),
    -- Every source, or only those listed (never none: a consumer limited to nothing is refused).
    "all_sources" BOOLEAN NOT NULL DEFAULT false,
    "source_ids" TEXT[] NOT NULL DEFAULT '{}',
    "status" TEXT NOT NULL DEFAULT 'active',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_seen_at" TIMESTAMPTZ(3),

    CONSTRAINT "consumers_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "consumers_status_check" CHECK ("status" IN ('active', 'disabled')),
    CONSTRAINT "consumers_scope_check" CHECK ("all_sources" <> (cardinality("source_ids") > 0))
);

-- The data's id of an old event is its patient only when it is a string or a number, as the writer
-- takes it (an object's text is no patient id). Same columns and types: replaced in place.
CREATE OR REPLACE VIEW "receiver_v1"."patiro_events" AS
SELECT source_id, event_id, event_type,
       -- Written with the event since patient_id exists; before, the data's id of a patient event.
       COALESCE(patient_id, CASE WHEN event_type IN ('PatientRevealed', 'PatientUpdated')
                                  AND jsonb_typeof(data->'id') IN ('string', 'number') AND data->>'id' <> '' THEN data->>'id' END) AS patient_id,
       occurred_at, occurred_at_raw, data, signed_at, first_received_at, last_received_at, delivery_count
FROM "public"."patiro_events";

-- The read contract gains the feed. The view shows only what a reader may take now (changes of
-- transactions older than every one in progress), in one statement and so one snapshot.
CREATE VIEW "receiver_v1"."changes" AS
SELECT 'c1.' || c.txid::text || '.' || c.id::text AS "cursor", c.id, c.vendor, c.source_id, c.kind, c.key, c.at
FROM "public"."changes" c
WHERE c.txid < pg_snapshot_xmin(pg_current_snapshot());

-- The next page after a cursor ('' or NULL: from the start), at most max_rows (1 to 10000) rows, in
-- order; each row's cursor is where the next call starts once that row is applied. Raises SQLSTATE
-- WRC10 (a cursor retention has purged past: resynchronise from the tables) or 22023 (not a cursor).
-- STABLE: its statements share the caller's snapshot. SECURITY DEFINER: a reader made by
-- `db grant-reader` has no rights on the tables.
CREATE OR REPLACE FUNCTION "receiver_v1"."changes_after"("after" TEXT, "max_rows" INTEGER)
RETURNS TABLE ("cursor" TEXT, "id" BIGINT, "vendor" TEXT, "source_id" TEXT, "kind" TEXT, "key" TEXT, "at" TIMESTAMPTZ(3))
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts TEXT[];
    after_txid xid8 := '0';
    after_id BIGINT := 0;
    purged RECORD;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 OR max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000' USING ERRCODE = '22023';
    END IF;
    IF after IS NOT NULL AND after <> '' THEN
        parts := regexp_match(after, '^c1\.([0-9]{1,20})\.([0-9]{1,19})$');
        IF parts IS NULL OR parts[1]::numeric > 18446744073709551615 OR parts[2]::numeric > 9223372036854775807 THEN
            RAISE EXCEPTION 'not a change feed cursor' USING ERRCODE = '22023';
        END IF;
        after_txid := parts[1]::xid8;
        after_id := parts[2]::bigint;
    END IF;
    SELECT p.txid, p.change_id INTO purged FROM "public"."changes_purged" p;
    IF FOUND AND (after_txid, after_id) < (purged.txid, purged.change_id) THEN
        RAISE EXCEPTION 'the change feed was purged past this cursor: resynchronise from the tables'
            USING ERRCODE = 'WRC10', HINT = 'Read the tables (or views) again, starting from the cursor of receiver_v1.changes_head().';
    END IF;
    -- A cursor of no transaction this database has had (another database, or a restored backup):
    -- going on from it would skip every change until the ids catch up.
    IF after_txid >= pg_snapshot_xmax(pg_current_snapshot()) THEN
        RAISE EXCEPTION 'this cursor is of a transaction this database has not had: resynchronise from the tables'
            USING ERRCODE = 'WRC10', HINT = 'Read the tables (or views) again, starting from the cursor of receiver_v1.changes_head().';
    END IF;
    RETURN QUERY
    SELECT 'c1.' || c.txid::text || '.' || c.id::text, c.id, c.vendor, c.source_id, c.kind, c.key, c.at
    FROM "public"."changes" c
    WHERE (c.txid, c.id) > (after_txid, after_id) AND c.txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY c.txid, c.id
    LIMIT max_rows;
END $$;

-- Where a reader that has just copied the tables starts: take it before the copy. Every change a
-- reader could not take yet comes after it.
CREATE OR REPLACE FUNCTION "receiver_v1"."changes_head"()
RETURNS TEXT
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    -- The newer of the newest change a reader may take and the purge mark.
    SELECT COALESCE((
        SELECT 'c1.' || h.txid::text || '.' || h.id::text FROM (
            (SELECT c.txid, c.id FROM "public"."changes" c
             WHERE c.txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY c.txid DESC, c.id DESC LIMIT 1)
            UNION ALL (SELECT p.txid, p.change_id FROM "public"."changes_purged" p)
        ) h ORDER BY h.txid DESC, h.id DESC LIMIT 1), '')
$$;

REVOKE ALL ON FUNCTION "receiver_v1"."changes_after"(TEXT, INTEGER) FROM PUBLIC;
REVOKE ALL ON FUNCTION "receiver_v1"."changes_head"() FROM PUBLIC;
