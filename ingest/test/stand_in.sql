/*
 * stand_in.sql
 *	  A small stand-in for the sam_ext functions that sam_ingest calls, used
 *	  only by ingest/test/smoke.sh and ingest/test/bench.sh, so the ingest can
 *	  be tested without the extension.  Same signatures and answer shapes as
 *	  the real ones; none of their business logic.
 *
 *	  Only sam.ingest_webhook() and sam.check_relations() exist here: the
 *	  other cron functions are left undefined so that the ingest's 501
 *	  answer is exercised.
 *
 * ingest/test/stand_in.sql
 */
CREATE SCHEMA sam;

CREATE TABLE sam.webhook_events (
    id          bigserial PRIMARY KEY,
    dedupe_key  text NOT NULL UNIQUE,
    payload     jsonb NOT NULL,
    source      text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

/*
 * sam.ingest_webhook(payload, source) stores a delivery once.  Not JSON:
 * the cast raises 22P02; not an object: 22023 (as the real function).  A
 * delivery whose payload was already stored (same md5) is reported as a
 * duplicate with the id of the first one; concurrent identical deliveries
 * meet at the unique index, so exactly one row is inserted.
 */
CREATE FUNCTION sam.ingest_webhook(payload text, source text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb;
    key text;
    new_id bigint;
BEGIN
    p := payload::jsonb;
    IF jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'invalid payload: a webhook must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key := md5(payload);
    INSERT INTO sam.webhook_events (dedupe_key, payload, source)
    VALUES (key, p, source)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN jsonb_build_object('success', true, 'duplicate', true,
            'id', (SELECT w.id FROM sam.webhook_events w WHERE w.dedupe_key = key),
            'event', coalesce(p->>'event', CASE WHEN p ? 'AccountStatus' THEN 'account_status' END));
    END IF;
    RETURN jsonb_build_object('success', true, 'id', new_id, 'duplicate', false,
        'event', coalesce(p->>'event', CASE WHEN p ? 'AccountStatus' THEN 'account_status' END));
END $$;

/* sam.check_relations() answers like the system being replaced, with nothing to check. */
CREATE FUNCTION sam.check_relations() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object('success', true, 'checked', 0, 'accepted', 0,
                              'still_pending', 0, 'errors', '[]'::jsonb)
$$;

REVOKE ALL ON FUNCTION sam.ingest_webhook(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sam.check_relations() FROM PUBLIC;
