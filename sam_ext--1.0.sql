/* sam_ext--1.0.sql: schema, tables and functions of sam_ext 1.0 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION sam_ext" to load this file. \quit

/*
 * The schema must be a superuser's, and hold nothing of another role.
 * CREATE EXTENSION takes a schema sam that exists already: one that another
 * role created first (any role that may create schemas in the database, its
 * owner for one), in which it may create objects, or in which it left some,
 * would let that role replace the functions the worker, pg_cron and the
 * SECURITY DEFINER API call by name, and run its code as a superuser.
 * (DROP EXTENSION leaves the schema it created, and pg_dump writes it with
 * its owner: a reinstall or a restore finds it, a superuser's.)
 */
DO $$
DECLARE
    nsp oid;
    owner_name name;
    owner_super boolean;
    creators text;
    strangers text;
BEGIN
    SELECT n.oid, r.rolname, r.rolsuper,
           (SELECT pg_catalog.string_agg(DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE g.rolname::text END, ', ')
              FROM pg_catalog.aclexplode(n.nspacl) a
              LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) a.grantee
             WHERE a.privilege_type OPERATOR(pg_catalog.=) 'CREATE' AND NOT coalesce(g.rolsuper, false))
      INTO nsp, owner_name, owner_super, creators
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
     WHERE n.nspname OPERATOR(pg_catalog.=) 'sam';
    IF nsp IS NULL THEN
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(DISTINCT r.rolname::text, ', ') INTO strangers
      FROM (SELECT c.relowner AS owner FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL SELECT t.typowner FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp
            UNION ALL SELECT o.oprowner FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp) x
      JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) x.owner
     WHERE NOT r.rolsuper;
    IF NOT owner_super OR creators IS NOT NULL OR strangers IS NOT NULL THEN
        RAISE EXCEPTION 'schema "sam" must be created by CREATE EXTENSION sam_ext'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = CASE WHEN NOT owner_super
                                THEN pg_catalog.format('It exists already, owned by role "%s", who is not a superuser.', owner_name)
                                WHEN creators IS NOT NULL
                                THEN pg_catalog.format('It exists already, and roles that are not superusers may create objects in it: %s.', creators)
                                ELSE pg_catalog.format('It exists already, and holds objects of roles that are not superusers: %s.', strangers) END,
                  HINT = 'Check what it holds, drop or rename it, then run CREATE EXTENSION sam_ext again.';
    END IF;
END $$;

/*
 * Conventions.  Every function runs with search_path = pg_catalog, pg_temp
 * and names sam's own objects with the schema, so nothing a user creates
 * elsewhere can be picked up instead.  Objects whose name starts with "_"
 * are internal.  Every time the engine reasons about is read from sam.now().
 */

------------------------------------------------------------------------
-- The clock
------------------------------------------------------------------------

CREATE TABLE sam.clock (
    singleton boolean PRIMARY KEY DEFAULT true,
    offset_by interval NOT NULL DEFAULT '0',
    frozen_at timestamptz,
    CONSTRAINT clock_singleton CHECK (singleton)
);
INSERT INTO sam.clock DEFAULT VALUES;
COMMENT ON TABLE sam.clock IS 'The engine''s clock: an offset from the real one, or a frozen instant (tests and the demo move it forward to simulate days)';

-- coalesce(frozen_at, now() + offset_by) of sam.clock's row, read in C (src/clock.c): an SQL
-- body was planned again in every transaction at every call site
CREATE FUNCTION sam.now() RETURNS timestamptz
LANGUAGE c STABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_now';
COMMENT ON FUNCTION sam.now() IS 'The engine''s clock: the transaction''s time plus sam.clock''s offset, or the frozen instant; everything reads time from here';

------------------------------------------------------------------------
-- C functions
------------------------------------------------------------------------

CREATE FUNCTION sam._wake_worker() RETURNS void
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'sam_wake_worker_sql';
COMMENT ON FUNCTION sam._wake_worker() IS 'Wakes the worker when the current transaction commits';

CREATE FUNCTION sam._outbox_wake_trigger() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'sam_outbox_wake_trigger';

CREATE FUNCTION sam.worker_pid() RETURNS integer
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'sam_worker_pid';
COMMENT ON FUNCTION sam.worker_pid() IS 'Process id of the sam_ext worker (worker 0 when sam.workers > 1), NULL when it is not running or has not yet reconciled the calls left in flight';
CREATE FUNCTION sam.workers(OUT worker integer, OUT pid integer, OUT ready boolean, OUT wakeups bigint)
RETURNS SETOF record
LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'sam_workers_sql';
COMMENT ON FUNCTION sam.workers() IS 'The sam.workers worker processes: number, pid (NULL when not running), whether it has reconciled the calls it left in flight, how often a commit woke it';

CREATE FUNCTION sam.render_template(template text, vars jsonb) RETURNS text
LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_render_template';
COMMENT ON FUNCTION sam.render_template(text, jsonb) IS 'Renders {variable} and {variable|fallback} from a jsonb object; values are inserted as plain text';

-- {rendered text, NULL} or {NULL, error message}: renders a batch in one statement, no subtransaction per row
CREATE FUNCTION sam._try_render(template text, vars jsonb) RETURNS text[]
LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_try_render';

-- the same for a prospect's template variables, from its fields: _try_render(t, sam._prospect_vars(p))
-- without building the jsonb object per prospect
CREATE FUNCTION sam._try_render(template text, variables jsonb, first_name text, last_name text,
                                company text, title text) RETURNS text[]
LANGUAGE c IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_try_render_fields';

CREATE FUNCTION sam.template_variables(template text) RETURNS jsonb
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_template_variables';
COMMENT ON FUNCTION sam.template_variables(text) IS 'Parses a template: its variables with their fallbacks and the length of its literal text';

CREATE FUNCTION sam._url_encode(text) RETURNS text
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'sam_url_encode';

/*
 * sam._url_decode: the text with its %XX sequences decoded as UTF-8 (a
 * profile URL names https://www.linkedin.com/in/jos%C3%A9-p/ the person
 * whose public identifier is josé-p); NULL when the bytes are not valid
 * UTF-8 or not representable in the database's encoding.  Text without a %
 * is returned as it is, with no subtransaction.
 */
CREATE FUNCTION sam._url_decode(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b bytea;
BEGIN
    IF position('%' IN s) = 0 THEN
        RETURN s;
    END IF;
    SELECT string_agg(CASE WHEN t.m[1] IS NOT NULL THEN decode(substr(t.m[1], 2), 'hex')
                           ELSE convert_to(t.m[2], 'UTF8') END, ''::bytea ORDER BY t.n)
      INTO b
      FROM regexp_matches(s, '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g') WITH ORDINALITY t(m, n);
    BEGIN
        RETURN convert_from(b, 'UTF8');
    EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
        RETURN NULL;
    END;
END $$;

CREATE FUNCTION sam.set_clock(t timestamptz, frozen boolean DEFAULT false) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF t IS NULL OR NOT isfinite(t) OR t NOT BETWEEN '2000-01-01 00:00+00' AND '2200-01-01 00:00+00' THEN
        RAISE EXCEPTION 'invalid t: must be a time between 2000 and 2200' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF frozen IS NULL THEN
        RAISE EXCEPTION 'invalid frozen: must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE sam.clock SET offset_by = t - pg_catalog.now(),
                         frozen_at = CASE WHEN frozen THEN t END;
    PERFORM sam._wake_worker();
    RETURN jsonb_build_object('success', true, 'now', sam.now());
END $$;
COMMENT ON FUNCTION sam.set_clock(timestamptz, boolean) IS 'Sets the engine''s clock (tests and demos); frozen: it stays there until moved';

CREATE FUNCTION sam.advance_clock(by_interval interval) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF by_interval IS NULL OR by_interval < interval '0' THEN
        RAISE EXCEPTION 'invalid by_interval: must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The clock only moves forward; use sam.reset_clock() to go back to real time.';
    END IF;
    IF by_interval > interval '100 years' OR sam._mixed_signs(by_interval)
       OR sam.now() + by_interval > '2200-01-01 00:00+00' THEN
        RAISE EXCEPTION 'invalid by_interval: must take the clock no further than 2200, in parts of one sign'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE sam.clock SET offset_by = offset_by + by_interval, frozen_at = frozen_at + by_interval;
    PERFORM sam._wake_worker();
    RETURN jsonb_build_object('success', true, 'now', sam.now());
END $$;
COMMENT ON FUNCTION sam.advance_clock(interval) IS 'Moves the engine''s clock forward (tests and demos)';

CREATE FUNCTION sam.reset_clock() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.clock SET offset_by = '0', frozen_at = NULL;
    PERFORM sam._wake_worker();
    RETURN jsonb_build_object('success', true, 'now', sam.now());
END $$;
COMMENT ON FUNCTION sam.reset_clock() IS 'Puts the engine''s clock back on real time';

------------------------------------------------------------------------
-- Validation helpers
------------------------------------------------------------------------

/*
 * sam._mixed_signs: an interval whose months, days and time do not all have
 * the same sign ('1 mon -22 days').  Its length depends on the date it is
 * added to (28 to 31 days a month, 23 to 25 hours a day across DST), so a
 * bound checked on it (at least 8 days, at least 0) does not hold on every
 * date: such intervals are refused.
 */
CREATE FUNCTION sam._mixed_signs(x interval) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (m > 0 OR d > 0 OR t > 0) AND (m < 0 OR d < 0 OR t < 0)
      FROM (SELECT extract(year FROM x) * 12 + extract(month FROM x) AS m, extract(day FROM x) AS d,
                   extract(hour FROM x) * 3600 + extract(minute FROM x) * 60 + extract(second FROM x) AS t) v
$$;

CREATE FUNCTION sam._invalid(field text, message text, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF hint IS NULL THEN
        RAISE EXCEPTION 'invalid %: %', field, message USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RAISE EXCEPTION 'invalid %: %', field, message USING ERRCODE = 'invalid_parameter_value', HINT = hint;
END $$;

CREATE FUNCTION sam._is_valid_time_zone(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF tz IS NULL OR tz = '' OR tz ~ '^[+-]?[0-9]' THEN
        RETURN false;           -- only named (IANA) zones: offsets are not DST-safe
    END IF;
    IF lower(tz) IN ('localtime', 'posixrules', 'factory') THEN
        RETURN false;           -- the server's own zone (its /etc/localtime), or no zone at all
    END IF;
    PERFORM pg_catalog.now() AT TIME ZONE tz;
    RETURN EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = tz);
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END $$;

------------------------------------------------------------------------
-- Tables
------------------------------------------------------------------------

CREATE TABLE sam.accounts (
    account_id text PRIMARY KEY,
    name text,
    own_provider_id text,
    time_zone text NOT NULL DEFAULT 'UTC',
    working_days smallint[] NOT NULL DEFAULT '{1,2,3,4,5}',
    work_start time NOT NULL DEFAULT '09:00',
    work_end time NOT NULL DEFAULT '18:00',
    daily_invite_cap integer NOT NULL DEFAULT 20,
    weekly_invite_cap integer NOT NULL DEFAULT 100,
    daily_message_cap integer NOT NULL DEFAULT 50,
    max_pending_invitations integer DEFAULT 500,
    invite_ramp_days integer NOT NULL DEFAULT 0,
    note_max_length integer NOT NULL DEFAULT 300,
    spacing_min interval NOT NULL DEFAULT '2 minutes',
    spacing_max interval NOT NULL DEFAULT '5 minutes',
    limit_pause interval NOT NULL DEFAULT '6 hours',
    status text NOT NULL DEFAULT 'active',
    status_reason text,
    status_changed_at timestamptz,
    invites_paused_until timestamptz,
    messages_paused_until timestamptz,
    next_action_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    CONSTRAINT accounts_account_id_format CHECK (account_id ~ '^[A-Za-z0-9_.:=-]{1,200}$'),
    CONSTRAINT accounts_working_days_valid CHECK (cardinality(working_days) BETWEEN 1 AND 7
        AND working_days <@ '{1,2,3,4,5,6,7}'::smallint[]),
    CONSTRAINT accounts_working_hours_order CHECK (work_start < work_end OR work_end = '00:00'),
    CONSTRAINT accounts_daily_invite_cap_range CHECK (daily_invite_cap BETWEEN 0 AND 100),
    CONSTRAINT accounts_weekly_invite_cap_range CHECK (weekly_invite_cap BETWEEN 0 AND 200),
    CONSTRAINT accounts_daily_message_cap_range CHECK (daily_message_cap BETWEEN 0 AND 150),
    CONSTRAINT accounts_max_pending_invitations_range CHECK (max_pending_invitations BETWEEN 0 AND 3000),
    CONSTRAINT accounts_invite_ramp_days_range CHECK (invite_ramp_days BETWEEN 0 AND 90),
    CONSTRAINT accounts_note_max_length_range CHECK (note_max_length BETWEEN 1 AND 300),
    CONSTRAINT accounts_spacing_range CHECK (spacing_min >= interval '0' AND spacing_min <= spacing_max
        AND spacing_max <= interval '1 hour'),
    CONSTRAINT accounts_limit_pause_range CHECK (limit_pause BETWEEN interval '1 minute' AND interval '30 days'),
    CONSTRAINT accounts_status_valid CHECK (status IN ('active', 'paused', 'disconnected'))
) WITH (fillfactor = 10);
/*
 * A few accounts per page (fillfactor 10), so that the foreign key checks
 * find an account by its primary key.  PostgreSQL checks each row written
 * to sam.outbox (and each campaign) with SELECT 1 FROM ONLY sam.accounts
 * WHERE account_id = $1 FOR KEY SHARE, planned like any query: 100 accounts
 * packed into 3 pages cost less to read in full than through the index at
 * the default random_page_cost, so each check read every account (~7 us);
 * by key it takes ~1.2 us.  With fewer accounts than fill 8 pages (about
 * 30) the scan remains, and reads only those few rows.  bench/due_work.sh
 * at 1,000,000 prospects (100 accounts): process_pending_prospects 13%
 * faster, process_follow_ups 9%.  The table stays small (4 accounts a page:
 * 2 MB for 1,000) and the room left serves its updates (next_action_at,
 * status) as HOT ones.  sam.campaigns keeps the default: its rows fill a
 * page at fillfactor 10, and the campaigns are read in full every hour.
 */
/*
 * The time zone is checked by a trigger, not a CHECK constraint: a CHECK
 * runs on every update of the row (the worker updates accounts on every
 * invitation it records), and looking a name up in pg_timezone_names costs
 * milliseconds.  The error is the one a CHECK would raise.
 */
CREATE FUNCTION sam._accounts_check_time_zone() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT sam._is_valid_time_zone(NEW.time_zone) THEN
        RAISE EXCEPTION 'new row for relation "accounts" violates check constraint "accounts_time_zone_valid"'
              USING ERRCODE = 'check_violation', CONSTRAINT = 'accounts_time_zone_valid',
                    SCHEMA = 'sam', TABLE = 'accounts', COLUMN = 'time_zone',
                    DETAIL = format('time_zone %s is not a named (IANA) time zone', quote_literal(NEW.time_zone));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_time_zone_valid BEFORE INSERT OR UPDATE OF time_zone ON sam.accounts
    FOR EACH ROW EXECUTE FUNCTION sam._accounts_check_time_zone();

COMMENT ON TABLE sam.accounts IS 'LinkedIn accounts connected through Unipile, with their sending window, caps and spacing';
COMMENT ON COLUMN sam.accounts.account_id IS 'Unipile account_id';
COMMENT ON COLUMN sam.accounts.own_provider_id IS 'The account''s own LinkedIn provider id (tells our own messages from the prospect''s)';
COMMENT ON COLUMN sam.accounts.working_days IS 'ISO days of the week (1 = Monday) on which the account sends';
COMMENT ON COLUMN sam.accounts.work_end IS 'End of the sending window, local time; 00:00 means midnight (end of day)';
COMMENT ON COLUMN sam.accounts.weekly_invite_cap IS 'Invitations in any rolling 7 days';
COMMENT ON COLUMN sam.accounts.note_max_length IS 'Longest invitation note LinkedIn takes from this account, rendered: 300 characters, 200 for a free account';
COMMENT ON COLUMN sam.accounts.invite_ramp_days IS 'Warm-up: for this many days after the account was created, its daily invitation cap starts at 5 and grows linearly to daily_invite_cap (0: none)';
COMMENT ON COLUMN sam.accounts.max_pending_invitations IS 'No new invitation while this many wait for an answer (sent and not accepted, withdrawn or failed, or under way); NULL: no ceiling';
COMMENT ON COLUMN sam.accounts.limit_pause IS 'How long the account''s invitations (or messages) pause after Unipile reports a LinkedIn limit (429, cannot_resend_yet, limit_exceeded); 24 hours at least when the last pause ended less than a day before';
COMMENT ON COLUMN sam.accounts.messages_paused_until IS 'The account''s messages wait until then (a 429 on a message); invites_paused_until is the same for invitations';
COMMENT ON COLUMN sam.accounts.next_action_at IS 'Earliest time of the account''s next action (random spacing between actions)';

CREATE TABLE sam.campaigns (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text NOT NULL REFERENCES sam.accounts (account_id) ON UPDATE CASCADE,
    name text NOT NULL,
    status text NOT NULL DEFAULT 'draft',
    start_at timestamptz,
    connection_note text,
    custom_variables text[] NOT NULL DEFAULT '{}',
    follow_ups jsonb NOT NULL DEFAULT '[]',
    complete_after interval NOT NULL DEFAULT '7 days',
    invite_check_delay interval NOT NULL DEFAULT '3 days',
    withdraw_after interval NOT NULL DEFAULT '21 days',
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    started_at timestamptz,
    paused_at timestamptz,
    completed_at timestamptz,
    CONSTRAINT campaigns_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
    CONSTRAINT campaigns_status_valid CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed')),
    CONSTRAINT campaigns_scheduled_has_start CHECK (status <> 'scheduled' OR start_at IS NOT NULL),
    CONSTRAINT campaigns_follow_ups_array CHECK (jsonb_typeof(follow_ups) = 'array'),
    CONSTRAINT campaigns_withdraw_after_range CHECK (withdraw_after BETWEEN interval '1 day' AND interval '180 days'),
    CONSTRAINT campaigns_complete_after_range CHECK (complete_after BETWEEN interval '0' AND interval '365 days')
);
CREATE INDEX campaigns_account_idx ON sam.campaigns (account_id);
CREATE INDEX campaigns_scheduled_idx ON sam.campaigns (start_at) WHERE status = 'scheduled';
COMMENT ON TABLE sam.campaigns IS 'Outreach campaigns: one account, a connection note and a follow-up sequence';
COMMENT ON COLUMN sam.campaigns.follow_ups IS 'Ordered steps [{"delay": interval, "template": text}]; delay counts from acceptance (step 1) or from the previous message';
COMMENT ON COLUMN sam.campaigns.invite_check_delay IS 'When an invitation is confirmed, the first acceptance check is due this much later';
COMMENT ON COLUMN sam.campaigns.withdraw_after IS 'Invitations pending longer than this are withdrawn';

CREATE TABLE sam.prospects (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES sam.campaigns (id) ON DELETE CASCADE,
    account_id text NOT NULL,
    provider_id text,
    public_identifier text,
    profile_url text,
    first_name text,
    last_name text,
    company text,
    title text,
    variables jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending',
    follow_up_due_at timestamptz,
    follow_up_sequence_index integer NOT NULL DEFAULT 0,
    invitation_id text,
    chat_id text,
    connected_via text,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    updated_at timestamptz NOT NULL DEFAULT sam.now(),
    invited_at timestamptz,
    connected_at timestamptz,
    last_message_at timestamptz,
    replied_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    withdrawn_at timestamptz,
    anonymised_at timestamptz,
    CONSTRAINT prospects_identified CHECK (provider_id IS NOT NULL OR public_identifier IS NOT NULL),
    CONSTRAINT prospects_variables_object CHECK (jsonb_typeof(variables) = 'object'),
    CONSTRAINT prospects_status_valid CHECK (status IN ('pending', 'connection_request_sent', 'connected',
        'replied', 'completed', 'failed', 'withdrawn')),
    CONSTRAINT prospects_sequence_index_range CHECK (follow_up_sequence_index >= 0)
);
-- one person is a prospect of an account once: never in two campaigns of it, never invited twice
CREATE UNIQUE INDEX prospects_account_provider_key ON sam.prospects (account_id, provider_id) WHERE provider_id IS NOT NULL;
CREATE UNIQUE INDEX prospects_account_public_key ON sam.prospects (account_id, public_identifier) WHERE public_identifier IS NOT NULL;
CREATE INDEX prospects_campaign_status_idx ON sam.prospects (campaign_id, status);
/*
 * A campaign's pending prospects in id order: the hourly queueing takes the next ones its cap
 * lets go (ORDER BY id LIMIT the cap) from the front of this index instead of sorting all of
 * them, often thousands against a cap of a few dozen a day.  Partial, so that it holds only the
 * prospects still to invite and no later update of a prospect writes to it; the id is not added
 * to prospects_campaign_status_idx instead, because that would end the B-tree's deduplication
 * of its (campaign, status) keys: 84 MB more at 1,000,000 prospects.
 */
CREATE INDEX prospects_pending_idx ON sam.prospects (campaign_id, id) WHERE status = 'pending';
CREATE INDEX prospects_follow_up_due_idx ON sam.prospects (follow_up_due_at) WHERE follow_up_due_at IS NOT NULL;
COMMENT ON TABLE sam.prospects IS 'People a campaign reaches, their state in the sequence and the time of each transition';
COMMENT ON COLUMN sam.prospects.connected_via IS 'The evidence of acceptance: webhook, relations, note_chat, reply, already_connected, profile';
COMMENT ON COLUMN sam.prospects.follow_up_due_at IS 'When the next step (acceptance check or follow-up) is due';
COMMENT ON COLUMN sam.prospects.account_id IS 'The account of the prospect''s campaign, repeated so that the queries by account need no join; follows a renamed account';

/*
 * A renamed account (sam.accounts.account_id, ON UPDATE CASCADE to its
 * campaigns) takes its prospects along: their account_id repeats their
 * campaign's.
 */
CREATE FUNCTION sam._campaign_account_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.prospects p SET account_id = NEW.account_id
     WHERE p.campaign_id = NEW.id AND p.account_id IS DISTINCT FROM NEW.account_id;
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_account_changed AFTER UPDATE OF account_id ON sam.campaigns
    FOR EACH ROW WHEN (OLD.account_id IS DISTINCT FROM NEW.account_id)
    EXECUTE FUNCTION sam._campaign_account_trigger();

CREATE TABLE sam.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text REFERENCES sam.accounts (account_id) ON UPDATE CASCADE,
    campaign_id bigint,
    prospect_id bigint,
    kind text NOT NULL,
    idempotency_key text NOT NULL,
    request jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    needs_check boolean NOT NULL DEFAULT false,
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz NOT NULL DEFAULT sam.now(),
    http_status integer,
    error_type text,
    error text,
    response jsonb,
    duration_ms double precision,
    job_run_id bigint,
    context jsonb,
    outcome jsonb,
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    claimed_at timestamptz,
    claimed_by smallint,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT sam.now(),
    bodies_removed_at timestamptz,
    CONSTRAINT outbox_account_required CHECK (account_id IS NOT NULL OR kind = 'notify'),
    CONSTRAINT outbox_kind_valid CHECK (kind IN ('resolve_profile', 'invite', 'withdraw_invite',
        'relations_page', 'sent_invitations_page', 'start_chat', 'send_message', 'notify')),
    CONSTRAINT outbox_state_valid CHECK (state IN ('queued', 'in_flight', 'done', 'failed', 'dead', 'cancelled')),
    CONSTRAINT outbox_attempts_range CHECK (attempts >= 0),
    CONSTRAINT outbox_request_object CHECK (jsonb_typeof(request) = 'object'),
    CONSTRAINT outbox_idempotency_key UNIQUE NULLS NOT DISTINCT (account_id, idempotency_key),
    -- a row is finished exactly when it can change no more; the partial indexes name
    -- finished_at, never state (see below)
    CONSTRAINT outbox_finished_when_final CHECK ((finished_at IS NULL) = (state IN ('queued', 'in_flight', 'failed')))
) WITH (fillfactor = 50);
/*
 * The claim (queued -> in_flight) is a HOT update: it changes no indexed column and no
 * column of an index's predicate, and the half of each page left free by the fillfactor
 * holds the new versions of a whole batch of rows (claimed in the order they were queued,
 * so mostly from the same pages).  An index that named state would make every claim insert
 * into every index of the table (bench/delivery.sh: ~10 us a call).  So the unfinished
 * rows (queued, failed and in flight) are found through finished_at IS NULL, and the
 * queries add the state they want as a filter: the rows in flight are at most the
 * worker's concurrency plus one batch.  Recording the result (-> done) is not HOT
 * (finished_at is set) but finds room on the page pruned of the claim's old versions.
 */
CREATE INDEX outbox_due_idx ON sam.outbox (not_before, id) WHERE finished_at IS NULL;
CREATE INDEX outbox_account_due_idx ON sam.outbox (account_id, not_before) WHERE finished_at IS NULL;
CREATE INDEX outbox_account_kind_idx ON sam.outbox (account_id, kind, not_before);
CREATE INDEX outbox_prospect_idx ON sam.outbox (prospect_id) WHERE prospect_id IS NOT NULL;
CREATE INDEX outbox_job_run_idx ON sam.outbox (job_run_id) WHERE job_run_id IS NOT NULL;
CREATE INDEX outbox_finished_idx ON sam.outbox (finished_at) WHERE finished_at IS NOT NULL;
COMMENT ON TABLE sam.outbox IS 'Every Unipile call, as a durable row first: queued -> in_flight -> done | failed (retry at not_before) | dead | cancelled';
COMMENT ON COLUMN sam.outbox.idempotency_key IS 'One action, one row: queuing the same action twice is impossible';
COMMENT ON COLUMN sam.outbox.needs_check IS 'The outcome of an earlier attempt is unknown (crash, timeout, 5xx): Unipile is asked before anything is sent again';
COMMENT ON COLUMN sam.outbox.claimed_by IS 'The worker (0 .. sam.workers - 1) that made or is making the last attempt; a worker that starts reconciles only its own rows in flight';
COMMENT ON COLUMN sam.outbox.job_run_id IS 'The job run that queued the call and waits for its answer';
COMMENT ON COLUMN sam.outbox.outcome IS 'What the answer did (for example, acceptances found on a page of relations)';
COMMENT ON COLUMN sam.outbox.bodies_removed_at IS 'When gdpr_cleanup (or erase_person) removed the request and response bodies';
COMMENT ON COLUMN sam.outbox.request IS 'The call: {"method", "path", "query": {}, "json": {} | "form": [[name, value], ...]}; the API key is added by the worker only';

/*
 * A renamed account is the same LinkedIn account under a new Unipile account
 * id: the calls not yet made (its outbox rows, moved by ON UPDATE CASCADE)
 * name the new id in their request, in the JSON body, the query or the form;
 * finished ones keep what was sent.  A trigger on sam.accounts, so that the
 * outbox's own updates (two a call) carry no row trigger; it fires after the
 * cascade (triggers fire in name order, "RI_ConstraintTrigger_..." first).
 */
CREATE FUNCTION sam._request_for_account(r jsonb, acc text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF r->'json' ? 'account_id' THEN
        r := jsonb_set(r, '{json,account_id}', to_jsonb(acc));
    END IF;
    IF r->'query' ? 'account_id' THEN
        r := jsonb_set(r, '{query,account_id}', to_jsonb(acc));
    END IF;
    IF jsonb_typeof(r->'form') = 'array' THEN
        r := jsonb_set(r, '{form}',
                       (SELECT coalesce(jsonb_agg(CASE WHEN e.f->>0 = 'account_id'
                                                       THEN jsonb_build_array('account_id', acc)
                                                       ELSE e.f END ORDER BY e.n), '[]')
                          FROM jsonb_array_elements(r->'form') WITH ORDINALITY e(f, n)));
    END IF;
    RETURN r;
END $$;

CREATE FUNCTION sam._account_renamed_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a call in flight was made under the old id, and its answer (a 401, say) is about that one
    IF EXISTS (SELECT 1 FROM sam.outbox o
                WHERE o.account_id = NEW.account_id AND o.finished_at IS NULL AND o.state = 'in_flight') THEN
        RAISE EXCEPTION 'account "%" has Unipile calls in flight', OLD.account_id
            USING ERRCODE = 'object_in_use', HINT = 'Pause the account and try again once they are recorded.';
    END IF;
    UPDATE sam.outbox o SET request = sam._request_for_account(o.request, NEW.account_id)
     WHERE o.account_id = NEW.account_id AND o.finished_at IS NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_renamed AFTER UPDATE OF account_id ON sam.accounts
    FOR EACH ROW WHEN (OLD.account_id IS DISTINCT FROM NEW.account_id)
    EXECUTE FUNCTION sam._account_renamed_trigger();

CREATE TRIGGER outbox_wake AFTER INSERT OR UPDATE ON sam.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION sam._outbox_wake_trigger();

/*
 * Rows to lock, so that a job's runs, and an account's imports, take turns.
 * Not advisory locks: any role that can connect may take those, under keys
 * it can guess (and see in pg_locks), and hold them, so that every run of a
 * job answered "skipped" (the retention, the notifications) and an
 * account's imports waited for ever.  These need a privilege on the table,
 * which no role but the owner has.
 */
CREATE TABLE sam.locks (
    kind text NOT NULL,
    key text NOT NULL,
    PRIMARY KEY (kind, key)
);
COMMENT ON TABLE sam.locks IS 'Rows whose lock makes a job''s runs (kind job) and an account''s imports (kind import) take turns';
-- (made now: made by a job's first run, a second run at once would wait for the first instead of skipping)
INSERT INTO sam.locks (kind, key)
VALUES ('job', 'check-pending-notifications'), ('job', 'execute-scheduled-campaigns'), ('job', 'gdpr-cleanup'),
       ('job', 'process-outbox'), ('job', 'process-pending-prospects');

CREATE TABLE sam.job_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    clock_at timestamptz NOT NULL DEFAULT sam.now(),
    status text NOT NULL DEFAULT 'running',
    result jsonb,
    error text,
    CONSTRAINT job_runs_status_valid CHECK (status IN ('running', 'succeeded', 'failed', 'skipped'))
);
CREATE INDEX job_runs_job_started_idx ON sam.job_runs (job, started_at);
COMMENT ON TABLE sam.job_runs IS 'One row per job function call, like cron.job_run_details';
COMMENT ON COLUMN sam.job_runs.clock_at IS 'The engine''s clock (sam.now()) when the run started';

SELECT pg_catalog.pg_extension_config_dump('sam.accounts', '');
SELECT pg_catalog.pg_extension_config_dump('sam.campaigns', '');
SELECT pg_catalog.pg_extension_config_dump('sam.prospects', '');
SELECT pg_catalog.pg_extension_config_dump('sam.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('sam.job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('sam.clock', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.campaigns', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.prospects', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.outbox', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.job_runs', 'id'), '');

------------------------------------------------------------------------
-- Working hours (local time of the account, DST-safe through IANA zones)
------------------------------------------------------------------------

CREATE FUNCTION sam._in_working_hours(a sam.accounts, t timestamptz) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT extract(isodow FROM (t AT TIME ZONE a.time_zone))::smallint = ANY (a.working_days)
       AND (t AT TIME ZONE a.time_zone)::time >= a.work_start
       AND (a.work_end = '00:00' OR (t AT TIME ZONE a.time_zone)::time < a.work_end)
$$;

-- sam._next_window_start: t itself inside the window, else the next start of one
CREATE FUNCTION sam._next_window_start(a sam.accounts, t timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    local_day date := (t AT TIME ZONE a.time_zone)::date;
    candidate timestamptz;
BEGIN
    IF sam._in_working_hours(a, t) THEN
        RETURN t;
    END IF;
    FOR d IN 0..8 LOOP
        IF extract(isodow FROM local_day + d)::smallint = ANY (a.working_days) THEN
            -- local wall time -> instant: a start inside a DST gap moves forward
            candidate := ((local_day + d) + a.work_start) AT TIME ZONE a.time_zone;
            IF candidate > t THEN
                RETURN candidate;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- sam._local_day_start: midnight of t's local day, as an instant
CREATE FUNCTION sam._local_day_start(a sam.accounts, t timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT ((t AT TIME ZONE a.time_zone)::date::timestamp) AT TIME ZONE a.time_zone $$;

CREATE FUNCTION sam.is_working_time(account_id text, at_time timestamptz DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts;
BEGIN
    SELECT * INTO a FROM sam.accounts x WHERE x.account_id = is_working_time.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account "%" does not exist', is_working_time.account_id USING ERRCODE = 'no_data_found';
    END IF;
    IF at_time IS NOT NULL AND NOT isfinite(at_time) THEN
        PERFORM sam._invalid('at_time', 'must be a finite time');
    END IF;
    RETURN sam._in_working_hours(a, coalesce(at_time, sam.now()));
END $$;
COMMENT ON FUNCTION sam.is_working_time(text, timestamptz) IS 'Whether the account may send at that time (its local working days and hours)';

------------------------------------------------------------------------
-- Templates
------------------------------------------------------------------------

-- longest value a variable may have; add_prospects enforces it for the variables a campaign uses
CREATE FUNCTION sam._variable_max_length(name text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE name WHEN 'first_name' THEN 40 WHEN 'last_name' THEN 40
                     WHEN 'company' THEN 60 WHEN 'title' THEN 80 ELSE 80 END
$$;

/*
 * sam._check_template validates a template for a field: syntax, known
 * variables, and (when max_length is given) that no prospect can make it
 * longer than max_length characters once rendered.  Returns the variables
 * used without a fallback (every prospect must have them).
 */
CREATE FUNCTION sam._check_template(template text, field text, custom_variables text[], max_length integer)
RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    info jsonb;
    v jsonb;
    known text[] := ARRAY['first_name', 'last_name', 'company', 'title'] || coalesce(custom_variables, '{}');
    longest integer;
    required text[] := '{}';
BEGIN
    IF template IS NULL OR btrim(template) = '' THEN
        PERFORM sam._invalid(field, 'must not be empty');
    END IF;
    BEGIN
        info := sam.template_variables(template);
    EXCEPTION WHEN invalid_parameter_value THEN
        PERFORM sam._invalid(field, SQLERRM);
    END;
    longest := (info->>'static_length')::integer;
    FOR v IN SELECT * FROM jsonb_array_elements(info->'variables') LOOP
        IF NOT (v->>'name') = ANY (known) THEN
            PERFORM sam._invalid(field, format('unknown variable {%s}', v->>'name'),
                format('Known variables: %s. Declare custom ones in custom_variables.', array_to_string(known, ', ')));
        END IF;
        longest := longest + greatest(sam._variable_max_length(v->>'name'),
                                      coalesce(char_length(v->>'fallback'), 0));
        IF v->'fallback' = 'null'::jsonb AND NOT (v->>'name') = ANY (required) THEN
            required := required || (v->>'name');
        END IF;
    END LOOP;
    IF max_length IS NOT NULL AND longest > max_length THEN
        PERFORM sam._invalid(field,
            format('can exceed %s characters once rendered (up to %s)', max_length, longest),
            'Variables may be as long as: first_name 40, last_name 40, company 60, title 80, custom 80 characters; shorten the text or use fewer variables.');
    END IF;
    RETURN required;
END $$;

-- the variables a prospect offers to templates: custom ones, then the standard fields
CREATE FUNCTION sam._prospect_vars(p sam.prospects) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.variables || jsonb_strip_nulls(jsonb_build_object(
        'first_name', p.first_name, 'last_name', p.last_name,
        'company', p.company, 'title', p.title))
$$;

------------------------------------------------------------------------
-- Accounts
------------------------------------------------------------------------

CREATE FUNCTION sam.create_account(
    account_id text,
    name text DEFAULT NULL,
    time_zone text DEFAULT 'UTC',
    working_days integer[] DEFAULT '{1,2,3,4,5}',
    work_start time DEFAULT '09:00',
    work_end time DEFAULT '18:00',
    daily_invite_cap integer DEFAULT 20,
    weekly_invite_cap integer DEFAULT 100,
    daily_message_cap integer DEFAULT 50,
    spacing_min interval DEFAULT '2 minutes',
    spacing_max interval DEFAULT '5 minutes',
    own_provider_id text DEFAULT NULL,
    max_pending_invitations integer DEFAULT 500,
    invite_ramp_days integer DEFAULT 0,
    note_max_length integer DEFAULT 300
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts;
BEGIN
    IF account_id IS NULL OR account_id !~ '^[A-Za-z0-9_.:=-]{1,200}$' THEN
        PERFORM sam._invalid('account_id', 'must be the Unipile account id (1 to 200 letters, digits or _.:=-)');
    END IF;
    IF char_length(name) > 200 THEN
        PERFORM sam._invalid('name', 'longer than 200 characters');
    END IF;
    IF NOT sam._is_valid_time_zone(time_zone) THEN
        PERFORM sam._invalid('time_zone', format('"%s" is not an IANA time zone name', left(time_zone, 100)),
            'Use a name such as Europe/Paris or America/New_York (see pg_timezone_names).');
    END IF;
    IF working_days IS NULL OR cardinality(working_days) = 0 OR array_ndims(working_days) <> 1
       OR array_position(working_days, NULL) IS NOT NULL OR NOT working_days <@ '{1,2,3,4,5,6,7}'::integer[]
       OR (SELECT count(DISTINCT d) FROM unnest(working_days) d) <> cardinality(working_days) THEN
        PERFORM sam._invalid('working_days', 'must be a non-empty list of distinct ISO weekdays from 1 (Monday) to 7 (Sunday)');
    END IF;
    -- (the time type takes 24:00: as an end it is midnight, as a start it leaves no working time)
    IF work_end = '24:00' THEN
        work_end := '00:00';
    END IF;
    IF work_start IS NULL OR work_start >= '24:00' THEN
        PERFORM sam._invalid('work_start', 'must be a time before 24:00');
    END IF;
    IF work_start IS NULL OR work_end IS NULL OR NOT (work_start < work_end OR work_end = '00:00') THEN
        PERFORM sam._invalid('work_end', 'must be after work_start (00:00 means midnight)');
    END IF;
    IF daily_invite_cap IS NULL OR daily_invite_cap NOT BETWEEN 0 AND 100 THEN
        PERFORM sam._invalid('daily_invite_cap', 'must be between 0 and 100',
            'Unipile recommends no more than 100 invitations a day; 20 is a safe default.');
    END IF;
    IF weekly_invite_cap IS NULL OR weekly_invite_cap NOT BETWEEN 0 AND 200 THEN
        PERFORM sam._invalid('weekly_invite_cap', 'must be between 0 and 200',
            'LinkedIn restricts accounts that send more than about 200 invitations a week.');
    END IF;
    IF daily_message_cap IS NULL OR daily_message_cap NOT BETWEEN 0 AND 150 THEN
        PERFORM sam._invalid('daily_message_cap', 'must be between 0 and 150');
    END IF;
    IF note_max_length IS NULL OR note_max_length NOT BETWEEN 1 AND 300 THEN
        PERFORM sam._invalid('note_max_length', 'must be between 1 and 300 characters',
            'LinkedIn takes notes of up to 300 characters, 200 from a free account.');
    END IF;
    IF invite_ramp_days IS NULL OR invite_ramp_days NOT BETWEEN 0 AND 90 THEN
        PERFORM sam._invalid('invite_ramp_days', 'must be between 0 (no warm-up) and 90 days',
            'A new LinkedIn account is usually warmed up over 14 to 28 days.');
    END IF;
    -- (NULL: no ceiling)
    IF max_pending_invitations NOT BETWEEN 0 AND 3000 THEN
        PERFORM sam._invalid('max_pending_invitations', 'must be between 0 and 3000, or NULL for no ceiling',
            'LinkedIn restricts accounts with too many invitations waiting for an answer; under 500 is the usual advice.');
    END IF;
    IF spacing_min IS NULL OR spacing_max IS NULL OR spacing_min < interval '0'
       OR spacing_min > spacing_max OR spacing_max > interval '1 hour' THEN
        PERFORM sam._invalid('spacing_min', 'spacing must satisfy 0 <= spacing_min <= spacing_max <= 1 hour');
    END IF;
    IF own_provider_id IS NOT NULL AND own_provider_id !~ '^[A-Za-z0-9_-]{4,200}$' THEN
        PERFORM sam._invalid('own_provider_id', 'must be a LinkedIn provider id such as ACoAA...');
    END IF;
    -- (ON CONFLICT, not a look first: the same account created by two sessions at once gets the
    -- same error as one created before, not the primary key's name)
    INSERT INTO sam.accounts AS x (account_id, name, own_provider_id, time_zone, working_days, work_start, work_end,
                              daily_invite_cap, weekly_invite_cap, daily_message_cap, max_pending_invitations,
                              invite_ramp_days, note_max_length, spacing_min, spacing_max)
    VALUES (create_account.account_id, create_account.name, create_account.own_provider_id,
            create_account.time_zone, create_account.working_days::smallint[],
            create_account.work_start, create_account.work_end, create_account.daily_invite_cap,
            create_account.weekly_invite_cap, create_account.daily_message_cap,
            create_account.max_pending_invitations, create_account.invite_ramp_days,
            create_account.note_max_length, create_account.spacing_min, create_account.spacing_max)
    ON CONFLICT ON CONSTRAINT accounts_pkey DO NOTHING
    RETURNING * INTO a;
    IF a.account_id IS NULL THEN
        RAISE EXCEPTION 'account "%" already exists', create_account.account_id
            USING ERRCODE = 'unique_violation';
    END IF;
    -- the row its imports lock (see add_prospects)
    INSERT INTO sam.locks (kind, key) VALUES ('import', a.account_id) ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('success', true, 'account', to_jsonb(a));
END $$;
COMMENT ON FUNCTION sam.create_account IS 'Registers a LinkedIn account connected through Unipile, with its time zone, working hours, caps and spacing';

CREATE FUNCTION sam._account_or_fail(p_account_id text) RETURNS sam.accounts
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts;
BEGIN
    SELECT * INTO a FROM sam.accounts WHERE account_id = p_account_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account "%" does not exist', p_account_id
            USING ERRCODE = 'no_data_found', HINT = 'Create it with sam.create_account().';
    END IF;
    RETURN a;
END $$;

/*
 * sam._drop_held cancels an account's actions (of the kinds given, of one
 * campaign or all) that were queued, never tried (no attempt, no answer:
 * a call held by a limit keeps its place), and held past their
 * time (due before p_due_before; NULL: all of them) because the account
 * or the campaign could not send: a pause, a disconnection, LinkedIn's
 * invitation limit.  Left queued, they all became due together when the
 * account could send again and went out in one burst, without the
 * spacing, and counted against the day they were first planned for, not
 * the day they went: a day's cap was passed.  Cancelled, they are queued
 * again in the same rows, within the caps, spacing and working hours of
 * the day they go: the invitations at once by the resume or reconnection
 * (or, after LinkedIn's limit, by process_pending_prospects once it is
 * over), the messages by process_follow_ups.  Returns how many.
 */
CREATE FUNCTION sam._drop_held(p_account_id text, p_campaign_id bigint, p_kinds text[],
                               p_due_before timestamptz, p_why text)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    -- (the callers go on to lock prospects' rows, or write them: the table's lock first, so that an
    -- erasure under way, which holds it EXCLUSIVE and goes on to remove calls, is waited for before
    -- any of its calls is locked here)
    LOCK TABLE sam.prospects IN ROW SHARE MODE;
    UPDATE sam.outbox o SET state = 'cancelled', finished_at = sam.now(), updated_at = sam.now(), error = p_why
     WHERE o.account_id = p_account_id AND o.finished_at IS NULL AND o.state = 'queued'
       AND o.attempts = 0 AND o.http_status IS NULL AND NOT o.needs_check AND o.kind = ANY (p_kinds)
       AND (p_due_before IS NULL OR o.not_before <= p_due_before)
       AND (p_campaign_id IS NULL OR o.campaign_id = p_campaign_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

/*
 * sam._requeue_held: an account that may send again (resumed, reconnected,
 * served by a worker again) has its actions held past their time (due
 * before p_due_before, by default now) cancelled (sam._drop_held), and its
 * running campaigns' invitations queued again at once, within the caps
 * (the messages go at the next process_follow_ups).  Returns how many were
 * held.
 */
CREATE FUNCTION sam._requeue_held(p_account_id text, p_why text, p_due_before timestamptz DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    cid bigint;
BEGIN
    n := sam._drop_held(p_account_id, NULL, '{invite,start_chat,send_message}', coalesce(p_due_before, sam.now()),
                        p_why || ': queued again within the caps');
    IF n > 0 THEN
        FOR cid IN SELECT c.id FROM sam.campaigns c WHERE c.account_id = p_account_id AND c.status = 'running'
                    ORDER BY c.id LOOP
            PERFORM sam._queue_invites(cid);
        END LOOP;
    END IF;
    RETURN n;
END $$;

CREATE FUNCTION sam.pause_account(account_id text, reason text DEFAULT 'paused by user') RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts := sam._account_or_fail(pause_account.account_id);
BEGIN
    IF char_length(reason) > 1000 THEN
        PERFORM sam._invalid('reason', 'longer than 1000 characters');
    END IF;
    UPDATE sam.accounts x SET status = 'paused', status_reason = reason, status_changed_at = sam.now()
     WHERE x.account_id = a.account_id AND x.status = 'active';
    RETURN jsonb_build_object('success', true, 'account_id', a.account_id,
        'status', (SELECT x.status FROM sam.accounts x WHERE x.account_id = a.account_id));
END $$;
COMMENT ON FUNCTION sam.pause_account(text, text) IS 'Stops the account''s sends; queued calls are held, not lost';

CREATE FUNCTION sam.resume_account(account_id text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts := sam._account_or_fail(resume_account.account_id);
    dropped integer := 0;
BEGIN
    UPDATE sam.accounts x SET status = 'active', status_reason = NULL, status_changed_at = sam.now()
     WHERE x.account_id = a.account_id AND x.status <> 'active';
    IF FOUND THEN
        dropped := sam._requeue_held(a.account_id, format('held while the account was %s', a.status));
    END IF;
    PERFORM sam._wake_worker();
    RETURN jsonb_build_object('success', true, 'account_id', a.account_id, 'status', 'active',
                              'held_to_queue_again', dropped);
END $$;
COMMENT ON FUNCTION sam.resume_account(text) IS 'Resumes a paused or reconnected account; its calls held past their time are queued again by the jobs, within the caps and spacing';

CREATE FUNCTION sam.delete_account(account_id text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts := sam._account_or_fail(delete_account.account_id);
    n_campaigns integer;
    n_prospects integer;
    n_calls integer;
    n_notifications integer;
BEGIN
    IF EXISTS (SELECT 1 FROM sam.outbox o
                WHERE o.account_id = a.account_id AND o.finished_at IS NULL AND o.state = 'in_flight') THEN
        RAISE EXCEPTION 'account "%" has Unipile calls in flight', a.account_id
            USING ERRCODE = 'object_in_use', HINT = 'Pause the account and try again once they are recorded.';
    END IF;
    DELETE FROM sam.outbox o WHERE o.account_id = a.account_id;
    GET DIAGNOSTICS n_calls = ROW_COUNT;
    -- its notifications too: their delivery calls just went, and nothing else would remove them
    DELETE FROM sam.notifications x WHERE x.account_id = a.account_id;
    GET DIAGNOSTICS n_notifications = ROW_COUNT;
    DELETE FROM sam.prospects p WHERE p.account_id = a.account_id;
    GET DIAGNOSTICS n_prospects = ROW_COUNT;
    DELETE FROM sam.campaigns c WHERE c.account_id = a.account_id;
    GET DIAGNOSTICS n_campaigns = ROW_COUNT;
    DELETE FROM sam.accounts x WHERE x.account_id = a.account_id;
    DELETE FROM sam.locks l WHERE l.kind = 'import' AND l.key = a.account_id;
    RETURN jsonb_build_object('success', true, 'account_id', a.account_id, 'campaigns', n_campaigns,
                              'prospects', n_prospects, 'outbox', n_calls, 'notifications', n_notifications);
END $$;
COMMENT ON FUNCTION sam.delete_account(text) IS 'Deletes an account with its campaigns, prospects, calls and notifications (refused while calls are in flight)';

------------------------------------------------------------------------
-- Campaigns
------------------------------------------------------------------------

/*
 * sam._check_follow_ups validates follow-up steps and returns them in
 * their stored form [{"delay": "1 day", "template": "..."}].
 */
CREATE FUNCTION sam._check_follow_ups(steps jsonb, custom_variables text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp SET IntervalStyle = 'postgres'
AS $$
DECLARE
    s jsonb;
    i integer := 0;
    d interval;
    out jsonb := '[]';
BEGIN
    IF steps IS NULL THEN
        RETURN '[]';
    END IF;
    IF jsonb_typeof(steps) <> 'array' THEN
        PERFORM sam._invalid('follow_ups', 'must be a JSON array of {"delay", "template"} steps');
    END IF;
    IF jsonb_array_length(steps) > 10 THEN
        PERFORM sam._invalid('follow_ups', 'at most 10 steps');
    END IF;
    FOR s IN SELECT * FROM jsonb_array_elements(steps) LOOP
        i := i + 1;
        IF jsonb_typeof(s) <> 'object' OR NOT s ? 'template' THEN
            PERFORM sam._invalid(format('follow_ups step %s', i), 'must be an object with "template" (and "delay")');
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_object_keys(s) k WHERE k NOT IN ('delay', 'template')) THEN
            PERFORM sam._invalid(format('follow_ups step %s', i), 'only "delay" and "template" are allowed');
        END IF;
        IF jsonb_typeof(s->'delay') NOT IN ('string', 'null') THEN
            PERFORM sam._invalid(format('follow_ups step %s delay', i), 'must be a string such as "2 days"');
        END IF;
        BEGIN
            d := coalesce(s->>'delay',
                          CASE i WHEN 1 THEN '24 hours' WHEN 2 THEN '5 days' WHEN 3 THEN '7 days' ELSE '5 days' END)::interval;
        EXCEPTION WHEN OTHERS THEN
            PERFORM sam._invalid(format('follow_ups step %s delay', i), format('"%s" is not an interval', s->>'delay'));
        END;
        IF d < interval '0' OR d > interval '365 days' OR sam._mixed_signs(d) THEN
            PERFORM sam._invalid(format('follow_ups step %s delay', i),
                                 'must be between 0 and 365 days, in parts of one sign (not "1 mon -30 days")');
        END IF;
        IF jsonb_typeof(s->'template') <> 'string' THEN
            PERFORM sam._invalid(format('follow_ups step %s template', i), 'must be a string');
        END IF;
        PERFORM sam._check_template(s->>'template', format('follow_ups step %s template', i), custom_variables, 8000);
        out := out || jsonb_build_array(jsonb_build_object('delay', d::text, 'template', s->>'template'));
    END LOOP;
    RETURN out;
END $$;

CREATE FUNCTION sam.create_campaign(
    account_id text,
    name text,
    connection_note text DEFAULT NULL,
    follow_ups jsonb DEFAULT NULL,
    start_at timestamptz DEFAULT NULL,
    custom_variables text[] DEFAULT '{}',
    withdraw_after interval DEFAULT '21 days',
    complete_after interval DEFAULT '7 days'
) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts := sam._account_or_fail(create_campaign.account_id);
    c sam.campaigns;
    steps jsonb;
    v text;
BEGIN
    IF name IS NULL OR char_length(btrim(name)) NOT BETWEEN 1 AND 200 THEN
        PERFORM sam._invalid('name', 'must be 1 to 200 characters');
    END IF;
    IF array_ndims(custom_variables) > 1 THEN
        PERFORM sam._invalid('custom_variables', 'must be a list of names, not an array of arrays');
    END IF;
    FOREACH v IN ARRAY coalesce(custom_variables, '{}') LOOP
        IF v IS NULL THEN
            PERFORM sam._invalid('custom_variables', 'must not hold NULL');
        END IF;
        IF v !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
            PERFORM sam._invalid('custom_variables', format('"%s" is not a variable name (lowercase letters, digits, _)', left(v, 100)));
        END IF;
        IF v IN ('first_name', 'last_name', 'company', 'title') THEN
            PERFORM sam._invalid('custom_variables', format('"%s" is a standard variable', v));
        END IF;
    END LOOP;
    IF connection_note IS NOT NULL THEN
        -- (the account's limit: 300 characters, 200 from a free account)
        PERFORM sam._check_template(connection_note, 'connection_note', custom_variables, a.note_max_length);
    END IF;
    steps := sam._check_follow_ups(follow_ups, custom_variables);
    IF start_at IS NOT NULL AND NOT isfinite(start_at) THEN
        PERFORM sam._invalid('start_at', 'must be a finite time');
    END IF;
    IF start_at IS NOT NULL AND start_at < sam.now() - interval '1 day' THEN
        PERFORM sam._invalid('start_at', 'is more than a day in the past');
    END IF;
    IF withdraw_after IS NULL OR withdraw_after NOT BETWEEN interval '1 day' AND interval '180 days'
       OR sam._mixed_signs(withdraw_after) THEN
        PERFORM sam._invalid('withdraw_after', 'must be between 1 and 180 days, in parts of one sign');
    END IF;
    IF complete_after IS NULL OR complete_after NOT BETWEEN interval '0' AND interval '365 days'
       OR sam._mixed_signs(complete_after) THEN
        PERFORM sam._invalid('complete_after', 'must be between 0 and 365 days, in parts of one sign');
    END IF;

    INSERT INTO sam.campaigns AS x (account_id, name, status, start_at, connection_note, custom_variables,
                               follow_ups, withdraw_after, complete_after)
    VALUES (a.account_id, btrim(create_campaign.name),
            CASE WHEN create_campaign.start_at IS NULL THEN 'draft' ELSE 'scheduled' END,
            create_campaign.start_at, nullif(create_campaign.connection_note, ''),
            coalesce(create_campaign.custom_variables, '{}'), steps,
            create_campaign.withdraw_after, create_campaign.complete_after)
    RETURNING * INTO c;
    RETURN jsonb_build_object('success', true, 'campaign_id', c.id, 'status', c.status, 'campaign', to_jsonb(c));
END $$;
COMMENT ON FUNCTION sam.create_campaign IS 'Creates a campaign (draft, or scheduled when start_at is given); templates are validated here, not at send time';

CREATE FUNCTION sam._campaign_or_fail(p_campaign_id bigint) RETURNS sam.campaigns
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns;
BEGIN
    SELECT * INTO c FROM sam.campaigns WHERE id = p_campaign_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign % does not exist', coalesce(p_campaign_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN c;
END $$;

-- the variables every prospect of a campaign must have (used without fallback)
CREATE FUNCTION sam._campaign_required_variables(c sam.campaigns) RETURNS text[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    req text[] := '{}';
    s jsonb;
BEGIN
    IF c.connection_note IS NOT NULL THEN
        req := req || sam._check_template(c.connection_note, 'connection_note', c.custom_variables, NULL);
    END IF;
    FOR s IN SELECT * FROM jsonb_array_elements(c.follow_ups) LOOP
        req := req || sam._check_template(s->>'template', 'follow_ups', c.custom_variables, NULL);
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT unnest(req) ORDER BY 1);
END $$;

-- the variables any template of the campaign uses (their values are length-checked)
CREATE FUNCTION sam._campaign_used_variables(c sam.campaigns) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(DISTINCT v->>'name'), '{}')
      FROM (SELECT c.connection_note AS t WHERE c.connection_note IS NOT NULL
            UNION ALL
            SELECT s->>'template' FROM jsonb_array_elements(c.follow_ups) s) tpl,
           jsonb_array_elements(sam.template_variables(tpl.t)->'variables') v
$$;

------------------------------------------------------------------------
-- Prospects
------------------------------------------------------------------------

/*
 * sam._normalize_prospect checks one input item of add_prospects and
 * returns it in stored form, or {"error": reason} (add_prospects reports it
 * for that row and goes on): an answer, not an exception, so that checking
 * a batch needs no subtransaction per item.
 */
CREATE FUNCTION sam._normalize_prospect(item jsonb, used text[], required text[]) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
    pid text;
    pub text;
    url text;
    m text[];
    vars jsonb;
    all_vars jsonb;
    v text;
    fn text;
    ln text;
    co text;
    ti text;
    fields CONSTANT text[] := '{provider_id,public_identifier,profile_url,first_name,last_name,company,title,variables}';
    -- (what a spreadsheet's export leaves around a value: a CSV's CRLF put "\r" after the last column)
    blank CONSTANT text := E' \t\r\n\x0b\f';
BEGIN
    IF jsonb_typeof(item) <> 'object' THEN
        RETURN jsonb_build_object('error', 'invalid prospect: must be a JSON object');
    END IF;
    -- (the stored size, read from the datum: no serialisation)
    IF pg_column_size(item) > 32768 THEN
        RETURN jsonb_build_object('error', 'invalid prospect: larger than 32 kB');
    END IF;
    -- (a query per item costs more than the rest of the checks: the keys are walked, in the
    -- order of the first error to report, only when a test of the whole item fails)
    IF NOT ((item - fields) = '{}'
            AND NOT jsonb_path_exists(item - 'variables', 'strict $.* ? (@.type() != "string" && @.type() != "null")')) THEN
        FOR k IN SELECT jsonb_object_keys(item) LOOP
            IF k <> ALL (fields) THEN
                RETURN jsonb_build_object('error', format('invalid %s: unknown field', k));
            END IF;
            IF k <> 'variables' AND jsonb_typeof(item->k) NOT IN ('string', 'null') THEN
                RETURN jsonb_build_object('error', format('invalid %s: must be a string', k));
            END IF;
        END LOOP;
    END IF;
    pid := nullif(btrim(item->>'provider_id', blank), '');
    pub := btrim(item->>'public_identifier', blank);
    -- (the call only when there is something to decode: a plpgsql call per item costs)
    pub := nullif(lower(CASE WHEN strpos(pub, '%') > 0 THEN sam._url_decode(pub) ELSE pub END), '');
    IF pub IS NULL AND nullif(btrim(item->>'public_identifier', blank), '') IS NOT NULL THEN
        RETURN jsonb_build_object('error', 'invalid public_identifier: its percent-encoding is not UTF-8');
    END IF;
    url := nullif(btrim(item->>'profile_url', blank), '');
    IF pid IS NOT NULL AND pid !~ '^[A-Za-z0-9_-]{4,200}$' THEN
        RETURN jsonb_build_object('error', 'invalid provider_id: must be a LinkedIn provider id such as ACoAA...');
    END IF;
    IF url IS NOT NULL THEN
        m := regexp_match(url, '^(?:https?://)?(?:[a-z]{2,3}\.)?(?:www\.)?linkedin\.com/in/([^/?#\s]{1,200})/?(?:[?#].*)?$', 'i');
        IF m IS NULL THEN
            RETURN jsonb_build_object('error', 'invalid profile_url: must look like https://www.linkedin.com/in/<public-identifier>/');
        END IF;
        -- (percent-decoded: the URL of josé-p is .../in/jos%C3%A9-p/)
        m[1] := lower(CASE WHEN strpos(m[1], '%') > 0 THEN sam._url_decode(m[1]) ELSE m[1] END);
        IF m[1] IS NULL THEN
            RETURN jsonb_build_object('error', 'invalid profile_url: its percent-encoding is not UTF-8');
        END IF;
        IF pub IS NOT NULL AND pub <> m[1] THEN
            RETURN jsonb_build_object('error', 'invalid profile_url: names another person than public_identifier');
        END IF;
        pub := m[1];
    END IF;
    -- (dots alone would be a path segment of their own: GET /api/v1/users/.. is another endpoint)
    IF pub IS NOT NULL AND (pub !~ '^[^/?#\s]{1,200}$' OR pub ~ '^\.+$') THEN
        RETURN jsonb_build_object('error', 'invalid public_identifier: must be the part after linkedin.com/in/');
    END IF;
    IF pid IS NULL AND pub IS NULL THEN
        RETURN jsonb_build_object('error', 'invalid prospect: needs provider_id, public_identifier or profile_url');
    END IF;
    vars := coalesce(item->'variables', '{}');
    IF jsonb_typeof(vars) <> 'object' THEN
        RETURN jsonb_build_object('error', 'invalid variables: must be a JSON object');
    END IF;
    IF vars <> '{}' AND jsonb_path_exists(vars, 'strict $.* ? (@.type() == "object" || @.type() == "array")') THEN
        RETURN jsonb_build_object('error', 'invalid variables: values must be strings, numbers or booleans');
    END IF;
    -- (a custom column may be the CSV's last one too)
    IF vars <> '{}' AND EXISTS (SELECT 1 FROM jsonb_each_text(vars) e
                                 WHERE e.value <> btrim(e.value, blank) OR e.key <> btrim(e.key, blank)) THEN
        SELECT jsonb_object_agg(btrim(e.key, blank), CASE WHEN jsonb_typeof(e.value) = 'string'
                                                          THEN to_jsonb(btrim(e.value #>> '{}', blank)) ELSE e.value END)
          INTO vars FROM jsonb_each(vars) e;
    END IF;
    fn := nullif(btrim(item->>'first_name', blank), '');
    ln := nullif(btrim(item->>'last_name', blank), '');
    co := nullif(btrim(item->>'company', blank), '');
    ti := nullif(btrim(item->>'title', blank), '');
    -- a name with a line break or another control character inside would go into messages as is
    -- (C0 and C1 controls, DEL, the line and paragraph separators)
    IF concat(fn, ln, co, ti) ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]' THEN
        RETURN jsonb_build_object('error', format('invalid %s: contains a control character (a line break, a tab...)',
            CASE WHEN fn ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]' THEN 'first_name'
                 WHEN ln ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]' THEN 'last_name'
                 WHEN co ~ '[\x01-\x1f\x7f-\x9f\u2028\u2029]' THEN 'company' ELSE 'title' END));
    END IF;
    IF greatest(char_length(fn), char_length(ln), char_length(co), char_length(ti)) > 1000 THEN
        RETURN jsonb_build_object('error', format('invalid %s: longer than 1000 characters',
            CASE WHEN char_length(fn) > 1000 THEN 'first_name' WHEN char_length(ln) > 1000 THEN 'last_name'
                 WHEN char_length(co) > 1000 THEN 'company' ELSE 'title' END));
    END IF;
    all_vars := vars || jsonb_strip_nulls(jsonb_build_object('first_name', fn, 'last_name', ln, 'company', co, 'title', ti));
    FOREACH v IN ARRAY used LOOP
        IF char_length(all_vars->>v) > sam._variable_max_length(v) THEN
            RETURN jsonb_build_object('error', format('invalid %s: longer than %s characters', v, sam._variable_max_length(v)));
        END IF;
    END LOOP;
    FOREACH v IN ARRAY required LOOP
        IF coalesce(all_vars->>v, '') = '' THEN
            RETURN jsonb_build_object('error', format('invalid %s: missing, and a template of the campaign uses it without a fallback', v));
        END IF;
    END LOOP;
    RETURN jsonb_build_object('provider_id', pid, 'public_identifier', pub, 'profile_url', url,
        'first_name', fn, 'last_name', ln, 'company', co, 'title', ti, 'variables', vars);
END $$;

CREATE FUNCTION sam.add_prospects(campaign_id bigint, prospects jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns := sam._campaign_or_fail(add_prospects.campaign_id);
    used text[];
    required text[];
    inserted integer;
    ids bigint[];
    tried jsonb;
    screening boolean;
    dups jsonb;
    bad jsonb;
    refused jsonb;
    -- the identity's sequence, whatever it is named
    seq regclass := pg_get_serial_sequence('sam.prospects', 'id')::regclass;
BEGIN
    IF prospects IS NULL OR jsonb_typeof(prospects) <> 'array' THEN
        PERFORM sam._invalid('prospects', 'must be a JSON array of prospect objects');
    END IF;
    IF jsonb_array_length(prospects) > 100000 THEN
        PERFORM sam._invalid('prospects', 'at most 100000 prospects per call');
    END IF;
    IF c.status = 'completed' THEN
        RAISE EXCEPTION 'campaign % is completed', c.id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    used := sam._campaign_used_variables(c);
    required := sam._campaign_required_variables(c);

    -- taken before the refusal checks: an erasure (SHARE ROW EXCLUSIVE) either
    -- finished, and its suppression is seen below, or waits for this import
    /*
     * One import at a time per account, until its transaction ends: two
     * transactions importing the same people in different orders would each
     * wait, on the account's unique keys, for a person the other inserted
     * (specs/import_deadlock.spec).  Other accounts' imports do not wait (a
     * transaction that imports into several accounts should take them in
     * account order).  Taken before the table lock, so that an import
     * waiting here holds nothing an erasure would wait for.
     */
    -- (made with the account; here for an account made otherwise, or renamed)
    INSERT INTO sam.locks (kind, key) VALUES ('import', c.account_id) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM sam.locks l WHERE l.kind = 'import' AND l.key = c.account_id FOR UPDATE;
    LOCK TABLE sam.prospects IN ROW EXCLUSIVE MODE;
    -- with no erasure and no do-not-contact entry, no item is looked up in them (15 us an item)
    screening := EXISTS (SELECT 1 FROM sam.suppressions) OR EXISTS (SELECT 1 FROM sam.do_not_contact);
    /*
     * The whole batch in one statement: each item checked (an invalid one is
     * answered, not raised), refused or inserted in the order given (so that,
     * of two items naming the same person, the first is inserted and the
     * second is a duplicate).  Each item to insert draws its id first, in
     * that order: the ids returned are then the inserted items in order, and
     * the others are the duplicates, with no join of the batch with itself
     * (whose size the planner cannot know: a nested loop over 100,000 items
     * would compare every pair).
     */
    WITH items AS MATERIALIZED (
        SELECT (e.ord - 1)::integer AS idx, sam._normalize_prospect(e.item, used, required) AS n
          FROM jsonb_array_elements(prospects) WITH ORDINALITY e(item, ord)
    ),
    -- why an item may not be imported (NULL: it may): erased on request, or on the do-not-contact list
    checked AS MATERIALIZED (
        SELECT i.idx, i.n,
               CASE WHEN screening AND NOT i.n ? 'error' THEN coalesce(
                   (SELECT 'erased on request: never to be imported or contacted again' FROM sam.suppressions s
                     WHERE s.hash IN (sam._identity_hash(i.n->>'provider_id'), sam._identity_hash(i.n->>'public_identifier'))
                     LIMIT 1),
                   -- the first entry by id, found through the three indexes (ORDER BY d.id alone
                   -- lets the planner walk the primary key until one matches: the whole list for
                   -- every item that is on none, 3 ms an item at 10,000 entries)
                   (SELECT format('on the do-not-contact list (entry %s%s)', d.id, coalesce(': ' || d.reason, ''))
                      FROM sam.do_not_contact d
                     WHERE d.identifier = i.n->>'provider_id' OR lower(d.identifier) = i.n->>'public_identifier'
                        OR lower(d.company) = lower(i.n->>'company')
                     ORDER BY d.id + 0 LIMIT 1)) END AS why
          FROM items i
    ),
    cand AS MATERIALIZED (
        SELECT s.idx, s.n, nextval(seq) AS id
          FROM (SELECT k.idx, k.n FROM checked k WHERE NOT k.n ? 'error' AND k.why IS NULL ORDER BY k.idx) s
    ),
    ins AS (
        INSERT INTO sam.prospects (id, campaign_id, account_id, provider_id, public_identifier, profile_url,
                                   first_name, last_name, company, title, variables)
        OVERRIDING SYSTEM VALUE
        SELECT k.id, c.id, c.account_id, k.n->>'provider_id', k.n->>'public_identifier', k.n->>'profile_url',
               k.n->>'first_name', k.n->>'last_name', k.n->>'company', k.n->>'title', k.n->'variables'
          FROM cand k
         ORDER BY k.idx
        ON CONFLICT DO NOTHING
        RETURNING id
    )
    SELECT (SELECT count(*) FROM ins),
           (SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}') FROM ins x),
           (SELECT coalesce(jsonb_agg(jsonb_build_object('index', k.idx, 'reason', k.n->>'error') ORDER BY k.idx), '[]')
              FROM checked k WHERE k.n ? 'error'),
           (SELECT coalesce(jsonb_agg(jsonb_build_object('index', k.idx, 'reason', k.why) ORDER BY k.idx), '[]')
              FROM checked k WHERE k.why IS NOT NULL),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(k.idx, k.id, k.n->>'provider_id', k.n->>'public_identifier')
                                      ORDER BY k.idx), '[]')
              FROM cand k)
      INTO inserted, ids, bad, refused, tried;

    -- the items not inserted are duplicates: named with the other prospect, once the batch is in (it
    -- may be one of it); OFFSET 0 keeps each a probe of the primary key
    SELECT coalesce(jsonb_agg(jsonb_build_object('index', (t->>0)::integer,
               'reason', format('already prospect %s of campaign %s on this account', o.id, o.campaign_id))
               ORDER BY (t->>0)::integer), '[]')
      INTO dups
      FROM jsonb_array_elements(tried) t
      LEFT JOIN LATERAL (SELECT p.id, p.campaign_id FROM sam.prospects p
                          WHERE p.account_id = c.account_id
                            AND (p.provider_id = t->>2 OR p.public_identifier = t->>3)
                          LIMIT 1) o ON true
     WHERE NOT EXISTS (SELECT 1 FROM sam.prospects x WHERE x.id = (t->>1)::bigint OFFSET 0);
    IF inserted > 0 AND c.status = 'running' THEN
        PERFORM sam._wake_worker();
    END IF;
    RETURN jsonb_build_object('success', true, 'campaign_id', c.id, 'inserted', inserted,
        'duplicates', jsonb_array_length(dups), 'invalid', jsonb_array_length(bad),
        'refused', jsonb_array_length(refused),
        'prospect_ids', to_jsonb(ids), 'duplicate_rows', dups, 'invalid_rows', bad, 'refused_rows', refused);
END $$;
COMMENT ON FUNCTION sam.add_prospects(bigint, jsonb) IS 'Adds prospects in bulk; answers inserted, duplicates, invalid and refused (erased or do-not-contact) rows with the reason per row';

------------------------------------------------------------------------
-- Queueing connection requests
------------------------------------------------------------------------

-- actions of these kinds charged to [from_t, now]: queued ones at their not_before, sent ones when sent
-- (plpgsql, so that its plan is kept for the session: an SQL function with SET is planned at every
-- call, 0.6 ms, and the queueing jobs call it twice per account)
CREATE FUNCTION sam._actions_since(p_account_id text, kinds text[], from_t timestamptz) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT count(*)::integer FROM sam.outbox o
             WHERE o.account_id = p_account_id AND o.kind = ANY (kinds)
               AND o.state IN ('queued', 'in_flight', 'failed', 'done')
               AND o.not_before >= from_t - interval '30 days'
               AND CASE WHEN o.state = 'done' THEN o.finished_at ELSE o.not_before END >= from_t);
END $$;

/*
 * sam._invite_cap: the account's daily invitation cap on the (local) day of
 * t.  During its warm-up (the first invite_ramp_days local days, the day it
 * was created being day 0) the cap starts at 5 and grows linearly to
 * daily_invite_cap, by whole days (the day's count restarts at local
 * midnight, so a cap that grew by the hour would let an afternoon send more
 * than the morning counted): a new LinkedIn account that sends its full
 * volume from the first day is the one restricted first.
 */
CREATE FUNCTION sam._invite_cap(a sam.accounts, t timestamptz) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN a.invite_ramp_days > 0 AND d.n < a.invite_ramp_days
                THEN least(a.daily_invite_cap, 5 + (a.daily_invite_cap - 5) * greatest(d.n, 0) / a.invite_ramp_days)
                ELSE a.daily_invite_cap END
      FROM (SELECT (t AT TIME ZONE a.time_zone)::date - (a.created_at AT TIME ZONE a.time_zone)::date AS n) d
$$;

/*
 * sam._pending_invitations counts an account's invitations waiting for an
 * answer, up to p_limit: its prospects invited and not yet connected,
 * withdrawn or failed, and its invitations under way (queued, in flight or
 * to be retried; their prospects are still pending).  Only the sent ones
 * are read past the limit's worth (prospects_campaign_status_idx, campaign
 * by campaign), so an account far past its ceiling costs no more than one
 * at it.  Invitations sent outside the engine (by hand) are not known here.
 */
CREATE FUNCTION sam._pending_invitations(p_account_id text, p_limit integer) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT count(*) FROM (SELECT 1 FROM sam.campaigns c
                                    JOIN sam.prospects p ON p.campaign_id = c.id
                                   WHERE c.account_id = p_account_id AND p.status = 'connection_request_sent'
                                   LIMIT p_limit) s)
         + (SELECT count(*) FROM sam.outbox o
             WHERE o.account_id = p_account_id AND o.finished_at IS NULL
               AND o.kind = 'invite' AND o.state IN ('queued', 'in_flight', 'failed'));
END $$;

/*
 * sam._queue_invites queues connection requests for a running campaign's
 * pending prospects, within the account's state, working hours, caps and
 * ceiling of invitations waiting for an answer, spaced by the account's
 * random spacing.  Prospects known only by public
 * identifier get a profile lookup first; its answer queues their invitation.
 * Returns what it did and, when it queued less than it could, why.
 *
 * Set-based (bench/due_work.sh): the account is locked first, the caps are
 * counted after (a statement of their own, so they see every invitation
 * committed before the lock), the prospects are locked in id order, and one
 * statement renders the notes, queues the calls, fails the prospects whose
 * note does not render or is too long, and moves the account's next action
 * time.  The k-th invitation goes at the account's next action time plus
 * k-1 random spacings; a profile lookup goes at the time of the invitation
 * after it and uses no spacing of its own.
 */
CREATE FUNCTION sam._queue_invites(p_campaign_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns;
    a sam.accounts;
    now_t timestamptz := sam.now();
    remaining integer;
    queued integer := 0;
    resolving integer := 0;
    failed integer := 0;
    reason text;
    next_window timestamptz;
    ids bigint[];
    left_pending integer;
    waiting integer;
    cap integer;
BEGIN
    SELECT * INTO c FROM sam.campaigns WHERE id = p_campaign_id;
    IF NOT FOUND OR c.status <> 'running' THEN
        RETURN jsonb_build_object('queued', 0, 'resolving', 0, 'reason', 'campaign is not running');
    END IF;
    -- one queuer per account at a time: caps and spacing are per account
    SELECT * INTO a FROM sam.accounts WHERE account_id = c.account_id FOR UPDATE;

    IF a.status <> 'active' THEN
        reason := format('account is %s', a.status);
    ELSIF a.invites_paused_until > now_t THEN
        reason := format('invitations paused until %s (LinkedIn limit reported)', a.invites_paused_until);
    ELSIF NOT sam._in_working_hours(a, now_t) THEN
        next_window := sam._next_window_start(a, now_t);
        reason := format('outside working hours; next window starts %s', next_window);
    ELSE
        cap := sam._invite_cap(a, now_t);
        remaining := least(
            cap - sam._actions_since(a.account_id, '{invite}', sam._local_day_start(a, now_t)),
            a.weekly_invite_cap - sam._actions_since(a.account_id, '{invite}', now_t - interval '7 days'));
        IF remaining <= 0 THEN
            reason := 'invitation cap reached'
                      || CASE WHEN cap < a.daily_invite_cap THEN format(' (warm-up: %s today)', cap) ELSE '' END;
        ELSIF a.max_pending_invitations IS NOT NULL THEN
            waiting := sam._pending_invitations(a.account_id, a.max_pending_invitations);
            IF waiting >= a.max_pending_invitations THEN
                reason := format('pending invitation ceiling reached (max_pending_invitations %s)',
                                 a.max_pending_invitations);
            ELSE
                remaining := least(remaining, a.max_pending_invitations - waiting);
            END IF;
        END IF;
    END IF;

    IF reason IS NULL THEN
        /*
         * OFFSET 0 keeps each NOT EXISTS a probe of the outbox's unique key per prospect.  Without
         * it the subquery becomes an anti join planned from the outbox's statistics, and when
         * they say it is empty or small (a new installation's outbox after a VACUUM) the plan
         * scans the whole outbox for each campaign (hash anti join) or each prospect (nested
         * loop), while the run itself fills it: quadratic.  bench/due_work.sh, 100 campaigns of
         * 100 prospects after a VACUUM: 790 ms without, 425 ms with.  prospects_pending_idx
         * gives the pending prospects in id order, so the scan stops after the first `remaining`
         * that may go: a campaign's backlog beyond its cap is not read (bench/due_work.sh, 4,900
         * pending prospects a campaign and 100 let go: 16 ms a campaign by sorting them all).
         */
        SELECT array_agg(s.id ORDER BY s.id) INTO ids
          FROM (SELECT x.id FROM sam.prospects x
                 WHERE x.campaign_id = c.id AND x.status = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM sam.outbox o
                                    WHERE o.account_id = x.account_id
                                      AND o.idempotency_key IN ('invite:' || x.id, 'resolve:' || x.id)
                                      AND o.state IN ('queued', 'in_flight', 'failed', 'done')
                                      AND (o.kind = 'invite' OR x.provider_id IS NULL)
                                   OFFSET 0)
                 ORDER BY x.id
                 LIMIT remaining
                   FOR UPDATE SKIP LOCKED) s;

        WITH p AS MATERIALIZED (
            SELECT x.id, x.provider_id, x.public_identifier,
                   CASE WHEN x.provider_id IS NOT NULL AND c.connection_note IS NOT NULL
                        THEN sam._try_render(c.connection_note, x.variables, x.first_name, x.last_name,
                                             x.company, x.title) END AS out
              FROM sam.prospects x
             WHERE x.id = ANY (ids)
        ),
        -- what goes: lookups, and invitations whose note rendered within the account's limit (300 characters)
        v AS MATERIALIZED (
            SELECT p.*, p.out[1] AS note,
                   CASE WHEN p.provider_id IS NOT NULL
                        THEN a.spacing_min + random() * (a.spacing_max - a.spacing_min)
                        ELSE interval '0' END AS gap
              FROM p
             WHERE p.out[2] IS NULL AND coalesce(char_length(p.out[1]), 0) <= a.note_max_length
        ),
        s AS MATERIALIZED (
            SELECT v.*, greatest(now_t, coalesce(a.next_action_at, now_t))
                        + coalesce(sum(v.gap) OVER (ORDER BY v.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                                   interval '0') AS t
              FROM v
        ),
        ins AS (
            INSERT INTO sam.outbox AS o (account_id, campaign_id, prospect_id, kind, idempotency_key, request,
                                         not_before, created_at, updated_at)
            SELECT a.account_id, c.id, s.id, CASE WHEN s.provider_id IS NULL THEN 'resolve_profile' ELSE 'invite' END,
                   CASE WHEN s.provider_id IS NULL THEN 'resolve:' ELSE 'invite:' END || s.id,
                   CASE WHEN s.provider_id IS NULL
                        THEN jsonb_build_object('method', 'GET',
                                 'path', '/api/v1/users/' || sam._url_encode(s.public_identifier),
                                 'query', jsonb_build_object('account_id', a.account_id))
                        ELSE jsonb_build_object('method', 'POST', 'path', '/api/v1/users/invite',
                                 'json', jsonb_strip_nulls(jsonb_build_object('provider_id', s.provider_id,
                                                                              'account_id', a.account_id,
                                                                              'message', nullif(s.note, '')))) END,
                   s.t, now_t, now_t
              FROM s
             ORDER BY s.id
            -- a dead or cancelled call of a prospect pending again (set back by hand, say after
            -- the account was reconnected) goes again, in the same row: one row per action
            -- (a call whose outcome is unknown keeps what it sent: the check compares with it)
            ON CONFLICT (account_id, idempotency_key) DO UPDATE SET
                request = CASE WHEN o.needs_check THEN o.request ELSE EXCLUDED.request END,
                not_before = EXCLUDED.not_before, state = 'queued', attempts = 0,
                finished_at = NULL, claimed_at = NULL, claimed_by = NULL, http_status = NULL, error_type = NULL,
                response = NULL, duration_ms = NULL, outcome = NULL, bodies_removed_at = NULL,
                updated_at = EXCLUDED.updated_at,
                error = left(format('queued again (was %s%s)', o.state, ': ' || o.error), 1000)
             WHERE o.state IN ('dead', 'cancelled')
            RETURNING kind, not_before
        ),
        failures AS (
            UPDATE sam.prospects x
               SET status = 'failed', failed_at = now_t, updated_at = now_t, follow_up_due_at = NULL,
                   last_error = left(CASE WHEN p.out[2] IS NOT NULL THEN 'connection note: ' || p.out[2]
                                          ELSE format('connection note is %s characters once rendered (limit %s)',
                                                      char_length(p.out[1]), a.note_max_length) END, 1000)
              FROM p
             WHERE x.id = p.id AND x.status = 'pending'
               AND (p.out[2] IS NOT NULL OR char_length(p.out[1]) > a.note_max_length)
            RETURNING 1
        ),
        moved AS (
            UPDATE sam.accounts x SET next_action_at = m.t_end
              FROM (SELECT max(s.t + s.gap) AS t_end FROM s WHERE s.provider_id IS NOT NULL) m
             WHERE x.account_id = a.account_id AND m.t_end IS NOT NULL
        )
        SELECT (SELECT count(*) FROM ins WHERE kind = 'invite') AS queued,
               (SELECT count(*) FROM ins WHERE kind = 'resolve_profile') AS resolving,
               (SELECT count(*) FROM failures) AS failed
          INTO queued, resolving, failed;
    END IF;

    /*
     * Still pending: the campaign's pending prospects less those with a call
     * under way (queued, in flight or failed and to be retried).  Counted as
     * a difference, so that the prospects waiting for a later day (often
     * thousands a campaign, against a cap of a few dozen a day) are counted
     * from an index alone, not each with a probe of the outbox every hour;
     * the calls under way are the account's unfinished rows
     * (outbox_account_due_idx).  One statement: one snapshot.
     */
    SELECT (SELECT count(*) FROM sam.prospects x WHERE x.campaign_id = c.id AND x.status = 'pending')
           - (SELECT count(DISTINCT y.id)
                FROM sam.outbox o
                JOIN sam.prospects y ON y.id = o.prospect_id
               WHERE o.account_id = c.account_id AND o.finished_at IS NULL
                 AND o.state IN ('queued', 'in_flight', 'failed')
                 AND o.kind IN ('invite', 'resolve_profile')
                 AND y.campaign_id = c.id AND y.status = 'pending' AND y.account_id = o.account_id
                 AND o.idempotency_key IN ('invite:' || y.id, 'resolve:' || y.id))
      INTO left_pending;
    RETURN jsonb_strip_nulls(jsonb_build_object('queued', queued,
        'resolving', resolving, 'failed', failed,
        'still_pending', left_pending, 'reason', reason, 'next_window', next_window));
END $$;

-- sam._prospect_failed: a prospect fails with a reason, if it is still in the expected state
CREATE FUNCTION sam._prospect_failed(p_id bigint, expected text, reason text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.prospects SET status = 'failed', failed_at = sam.now(), updated_at = sam.now(),
                             last_error = left(reason, 1000), follow_up_due_at = NULL
     WHERE id = p_id AND (status = expected OR (expected IS NULL AND status IN ('pending', 'connection_request_sent', 'connected')));
    RETURN FOUND;
END $$;

/*
 * sam._remove_prospects removes prospects with their calls, queued or
 * finished (a call in flight goes out, its answer is dropped), and their
 * notifications with the calls that deliver them.  Used by erase_person,
 * and for a prospect found to be an erased person later (_refuse_prospect).
 */
CREATE FUNCTION sam._remove_prospects(ids bigint[], OUT n_outbox integer, OUT n_notifications integer,
                                      OUT n_prospects integer)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM sam.outbox o
     WHERE o.prospect_id = ANY (ids)
        OR (o.kind = 'notify' AND (o.context->>'notification_id')::bigint IN
              (SELECT x.id FROM sam.notifications x WHERE x.prospect_id = ANY (ids)));
    GET DIAGNOSTICS n_outbox = ROW_COUNT;
    DELETE FROM sam.notifications x WHERE x.prospect_id = ANY (ids);
    GET DIAGNOSTICS n_notifications = ROW_COUNT;
    DELETE FROM sam.prospects p WHERE p.id = ANY (ids);
    GET DIAGNOSTICS n_prospects = ROW_COUNT;
END $$;

/*
 * sam._refusal: why the person a provider id (or public identifier) names
 * may not be contacted, NULL when they may: erased on request (a hash on
 * the suppression list) or on the do-not-contact list.  add_prospects makes
 * the same test on import; this one is for an identifier learned later (the
 * profile lookup of a prospect imported by public identifier, a webhook).
 */
CREATE FUNCTION sam._refusal(pid text, pub text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT 'erased on request: never to be imported or contacted again' FROM sam.suppressions s
          WHERE s.hash IN (sam._identity_hash(pid), sam._identity_hash(pub)) LIMIT 1),
        (SELECT format('on the do-not-contact list (entry %s%s)', d.id, coalesce(': ' || d.reason, ''))
           FROM sam.do_not_contact d
          WHERE d.identifier = pid OR lower(d.identifier) = lower(pub)
          ORDER BY d.id + 0 LIMIT 1))
$$;

/*
 * sam._names_erased: whether a webhook's payload names a person erased on
 * request (a hash on the suppression list) as the relation, the sender or
 * an attendee.  Such an event that matched no prospect is not kept: the
 * erasure removed the person's events, and one arriving later would bring
 * their name and messages back for the events' retention.
 */
CREATE FUNCTION sam._names_erased(p jsonb) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM sam.suppressions s
         WHERE s.hash = ANY (ARRAY(
               SELECT sam._identity_hash(x)
                 FROM unnest(ARRAY[p->>'user_provider_id',
                                   lower(sam._url_decode(nullif(p->>'user_public_identifier', ''))),
                                   p->'sender'->>'attendee_provider_id']
                             || ARRAY(SELECT a->>'attendee_provider_id'
                                        FROM jsonb_array_elements(CASE jsonb_typeof(p->'attendees')
                                                                       WHEN 'array' THEN p->'attendees'
                                                                       ELSE '[]' END) a)) x
                WHERE x IS NOT NULL AND x <> '')));
END $$;

/*
 * sam._refuse_prospect: a prospect found to be a person who may not be
 * contacted, once their provider id is known.  On the do-not-contact list:
 * failed with the reason, its queued calls cancelled (as add_do_not_contact
 * does).  Erased on request: removed with its calls and notifications, and
 * its other identifiers added to the suppression list (as erase_person
 * does).  Returns the reason, or NULL when the prospect may be contacted.
 */
CREATE FUNCTION sam._refuse_prospect(p_id bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pr sam.prospects;
    why text;
BEGIN
    SELECT * INTO pr FROM sam.prospects WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    why := sam._refusal(pr.provider_id, pr.public_identifier);
    IF why IS NULL THEN
        RETURN NULL;
    END IF;
    IF why LIKE 'erased on request%' THEN
        PERFORM sam._remove_prospects(ARRAY[pr.id]);
        INSERT INTO sam.suppressions (hash)
        SELECT DISTINCT sam._identity_hash(k) FROM unnest(ARRAY[pr.provider_id, pr.public_identifier]) k
         WHERE k IS NOT NULL
        ON CONFLICT (hash) DO NOTHING;
        RAISE LOG 'sam_ext: prospect % was erased on request (found by its provider id) and is removed', pr.id;
    ELSE
        PERFORM sam._prospect_failed(pr.id, NULL, why);
        UPDATE sam.outbox o SET state = 'cancelled', finished_at = sam.now(), updated_at = sam.now(),
                                error = left('prospect ' || why, 1000)
         WHERE o.prospect_id = pr.id AND o.state IN ('queued', 'failed') AND o.kind <> 'notify';
    END IF;
    RETURN why;
END $$;

/*
 * sam._learn_identifiers: an answer names a prospect by the identifier it
 * was not imported with (a webhook, a page of relations gives both the
 * provider id and the public identifier): the prospect gets it, and is
 * screened again, since an erasure or a do-not-contact entry may name the
 * person by that one only.  A public identifier another prospect of the
 * account already has is left (the same person imported twice, by each
 * identifier: the import's screening cannot see that).  Returns
 * _refuse_prospect's reason, NULL when the prospect may go on.
 */
CREATE FUNCTION sam._learn_identifiers(p_id bigint, pid text, pub text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lpub text := lower(sam._url_decode(nullif(btrim(pub), '')));
    changed boolean := false;
BEGIN
    IF nullif(pid, '') IS NOT NULL THEN
        UPDATE sam.prospects SET provider_id = pid WHERE id = p_id AND provider_id IS NULL;
        changed := FOUND;
    END IF;
    IF lpub IS NOT NULL AND lpub <> '' THEN
        BEGIN
            UPDATE sam.prospects SET public_identifier = lpub WHERE id = p_id AND public_identifier IS NULL;
            changed := changed OR FOUND;
        EXCEPTION WHEN unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT changed THEN
        RETURN NULL;
    END IF;
    RETURN sam._refuse_prospect(p_id);
END $$;

CREATE FUNCTION sam.start_campaign(campaign_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns := sam._campaign_or_fail(start_campaign.campaign_id);
    r jsonb;
BEGIN
    IF c.status = 'completed' THEN
        RAISE EXCEPTION 'campaign % is completed', c.id USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF c.status <> 'running' THEN
        UPDATE sam.campaigns SET status = 'running', started_at = coalesce(started_at, sam.now()), paused_at = NULL
         WHERE id = c.id;
    END IF;
    r := sam._queue_invites(c.id);
    RETURN jsonb_build_object('success', true, 'campaign_id', c.id, 'status', 'running') || r;
END $$;
COMMENT ON FUNCTION sam.start_campaign(bigint) IS 'The seed''s "Start Campaign": sets the campaign running and queues its connection requests';

CREATE FUNCTION sam.send_connection_requests(campaign_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns := sam._campaign_or_fail(send_connection_requests.campaign_id);
BEGIN
    IF c.status <> 'running' THEN
        RAISE EXCEPTION 'campaign % is %, not running', c.id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Start it with sam.start_campaign().';
    END IF;
    RETURN jsonb_build_object('success', true, 'campaign_id', c.id) || sam._queue_invites(c.id);
END $$;
COMMENT ON FUNCTION sam.send_connection_requests(bigint) IS 'The seed''s endpoint 1: queues connection requests for the campaign''s pending prospects within caps';

CREATE FUNCTION sam.pause_campaign(campaign_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns := sam._campaign_or_fail(pause_campaign.campaign_id);
BEGIN
    IF c.status NOT IN ('running', 'scheduled') THEN
        RAISE EXCEPTION 'campaign % is %; only running or scheduled campaigns can be paused', c.id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE sam.campaigns SET status = 'paused', paused_at = sam.now() WHERE id = c.id;
    RETURN jsonb_build_object('success', true, 'campaign_id', c.id, 'status', 'paused');
END $$;
COMMENT ON FUNCTION sam.pause_campaign(bigint) IS 'Stops the campaign''s sends; queued calls are held, not lost';

CREATE FUNCTION sam.resume_campaign(campaign_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c sam.campaigns := sam._campaign_or_fail(resume_campaign.campaign_id);
    dropped integer;
BEGIN
    IF c.status <> 'paused' THEN
        RAISE EXCEPTION 'campaign % is %, not paused', c.id, c.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- paused before its start: it waits for its start again (execute_scheduled_campaigns starts it)
    IF c.started_at IS NULL AND c.start_at > sam.now() THEN
        UPDATE sam.campaigns SET status = 'scheduled', paused_at = NULL WHERE id = c.id;
        RETURN jsonb_build_object('success', true, 'campaign_id', c.id, 'status', 'scheduled', 'start_at', c.start_at);
    END IF;
    -- its actions held past their time are queued again (the invitations just below, by start_campaign)
    dropped := sam._drop_held(c.account_id, c.id, '{invite,start_chat,send_message}', sam.now(),
                              'held while the campaign was paused: queued again within the caps');
    RETURN sam.start_campaign(c.id) || jsonb_build_object('held_to_queue_again', dropped);
END $$;
COMMENT ON FUNCTION sam.resume_campaign(bigint) IS 'Resumes a paused campaign where it stopped: running, or scheduled again when paused before its start; its actions held past their time are queued again within the caps and spacing';

------------------------------------------------------------------------
-- The worker's side: claim, record results, recover
------------------------------------------------------------------------

-- kinds whose call changes something at LinkedIn: never resent without a check
CREATE FUNCTION sam._is_action(kind text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT kind IN ('invite', 'withdraw_invite', 'start_chat', 'send_message') $$;

-- kinds whose resend could repeat something visible to the person: checked first when the outcome is unknown
CREATE FUNCTION sam._must_check(kind text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT kind IN ('invite', 'start_chat', 'send_message') $$;

/*
 * sam._check_request: the read that tells whether an action of unknown
 * outcome happened: the profile's invitation status for an invitation,
 * the chat's latest messages for a message.  NULL while no such read is
 * possible yet (a first message whose chat is not known): the row then waits.
 */
CREATE FUNCTION sam._check_request(o sam.outbox) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE o.kind
        WHEN 'invite' THEN jsonb_build_object('method', 'GET',
            'path', '/api/v1/users/' || sam._url_encode(o.request->'json'->>'provider_id'),
            'query', jsonb_build_object('account_id', o.account_id))
        WHEN 'send_message' THEN jsonb_build_object('method', 'GET',
            'path', format('/api/v1/chats/%s/messages', sam._url_encode(o.context->>'chat_id')),
            'query', jsonb_build_object('limit', '20'))
        WHEN 'start_chat' THEN (
            SELECT jsonb_build_object('method', 'GET',
                       'path', format('/api/v1/chats/%s/messages', sam._url_encode(p.chat_id)),
                       'query', jsonb_build_object('limit', '20'))
              FROM sam.prospects p WHERE p.id = o.prospect_id AND p.chat_id IS NOT NULL)
        ELSE NULL END
$$;

/*
 * sam._reply_check_first: the call in flight (o) is the look at the chat's
 * latest messages that comes right before a follow-up into a chat that
 * exists (a second step or later).  A reply whose webhook never came (lost,
 * late: Unipile's webhooks can lag by hours) was otherwise answered by the
 * next step of the sequence.  The claim marks the row (context.reading_chat)
 * and sends the chat's messages request instead (sam._check_request); its
 * answer stops the sequence if the prospect wrote (sam._on_success), or
 * queues the message to go at once (context.reply_checked_at).  The read is
 * not the message: a failure of it is no unknown outcome, and a 429 is
 * retried, not taken for LinkedIn's limit on messages.
 */
CREATE FUNCTION sam._reply_check_first(o sam.outbox) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.kind = 'send_message' AND NOT o.needs_check AND o.context->>'reading_chat' IS NOT NULL
$$;

-- sam._ts_or_null: a timestamp read from a JSON value, NULL when it is none
CREATE FUNCTION sam._ts_or_null(v text) RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF v IS NULL OR v !~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d' THEN
        RETURN NULL;
    END IF;
    RETURN v::timestamptz;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END $$;

/*
 * sam._chat_reply: the first message among a chat's latest (a MessageList)
 * that the account did not send itself, and sent since the given time (the
 * invitation, or the connection for a prospect not invited by the engine):
 * the prospect wrote.  LinkedIn keeps one conversation per pair of people,
 * so an older message of theirs is an earlier exchange, not a reply.
 * LinkedIn's event messages (is_event) are not theirs; an undated message
 * is taken for a reply (better no message than one after a reply).
 */
CREATE FUNCTION sam._chat_reply(resp jsonb, since timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    m jsonb;
    ts timestamptz;
BEGIN
    IF jsonb_typeof(resp->'items') IS DISTINCT FROM 'array' THEN
        RETURN NULL;
    END IF;
    FOR m IN SELECT x FROM jsonb_array_elements(resp->'items') x LOOP
        CONTINUE WHEN jsonb_typeof(m) <> 'object' OR coalesce(m->>'is_sender', '0') IN ('1', 'true')
                      OR coalesce(m->>'is_event', '0') IN ('1', 'true');
        ts := sam._ts_or_null(m->>'timestamp');
        IF ts IS NULL OR since IS NULL OR ts >= since THEN
            RETURN m;
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

/*
 * sam._may_go_then: an action the claim could take at t, as far as its
 * campaign (running or completed, or none) and the account's pause of
 * invitations say.  The spacing of actions moved to the next window counts
 * only those: a paused campaign's actions, or an invitation held for days,
 * took the window's first places and pushed the others back.
 *
 * (The same conditions as sam._claimable's, which keeps them inline: it is
 * the claim's hot statement, planned once.)
 */
CREATE FUNCTION sam._may_go_then(kind text, campaign_id bigint, invites_paused_until timestamptz,
                                 messages_paused_until timestamptz, t timestamptz)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (kind <> 'invite' OR invites_paused_until IS NULL OR invites_paused_until <= t)
           AND (kind NOT IN ('start_chat', 'send_message') OR messages_paused_until IS NULL
                OR messages_paused_until <= t)
           AND (campaign_id IS NULL
                OR EXISTS (SELECT 1 FROM sam.campaigns c WHERE c.id = campaign_id AND c.status IN ('running', 'completed')))
$$;

/*
 * sam._claimable locks and returns the ids of up to n rows the claim may
 * take, in the order they are due: unfinished and due, of an active account
 * (or a notification), of a running or completed campaign, not a paused
 * account's invitation, not an action of an account outside its working
 * hours (closed), unless its outcome is to be checked.
 *
 * Always the generic plan: the planner cannot estimate how many rows the
 * joined conditions let through, takes it for a few dozen, and planned each
 * of a session's first five calls (the custom plans) as a sequential scan
 * and a sort of every due row: 130 ms a claim with 100,000 due, after each
 * start of the worker.  The generic plan walks the due index in order and
 * stops at n rows (about 3 ms).  A function of its own, so that only this
 * statement is planned so (the claim's other statements are better planned
 * for the account or the ids at hand).
 */
CREATE FUNCTION sam._claimable(n integer, now_t timestamptz, closed text[]) RETURNS bigint[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    ids bigint[];
BEGIN
    SELECT array_agg(s.id) INTO ids FROM (
        SELECT o.id FROM sam.outbox o
          LEFT JOIN sam.accounts x ON x.account_id = o.account_id
          LEFT JOIN sam.campaigns c ON c.id = o.campaign_id
         WHERE o.finished_at IS NULL AND o.state IN ('queued', 'failed') AND o.not_before <= now_t
           AND (x.status = 'active' OR o.kind = 'notify')
           AND (c.id IS NULL OR c.status IN ('running', 'completed') OR NOT sam._is_action(o.kind))
           AND (o.kind <> 'invite' OR x.invites_paused_until IS NULL OR x.invites_paused_until <= now_t
                OR o.needs_check)
           AND (o.kind NOT IN ('start_chat', 'send_message') OR x.messages_paused_until IS NULL
                OR x.messages_paused_until <= now_t OR o.needs_check)
           AND (o.account_id <> ALL (closed) OR o.account_id IS NULL OR NOT sam._is_action(o.kind) OR o.needs_check)
         ORDER BY o.not_before, o.id
         LIMIT n
         FOR UPDATE OF o SKIP LOCKED) s;
    RETURN ids;
END $$;

/*
 * sam._claim_requests takes up to n due rows (FOR UPDATE SKIP LOCKED),
 * re-checks what may have changed since they were queued (account active,
 * campaign running, prospect still in the state the action needs, working
 * hours), and marks the rest in_flight.  The caller commits before any HTTP
 * call.  Returns each call ready to send, as its request object (the
 * worker reads it in C; sam._claim gives the same in columns).  worker is
 * the claiming worker's number (outbox.claimed_by).  With sam.workers > 1
 * several claims run at once: every row lock here is taken with SKIP
 * LOCKED, so that one never waits for another.
 */
CREATE FUNCTION sam._claim_requests(n integer, worker integer DEFAULT 0)
RETURNS TABLE (id bigint, request jsonb, fresh_connection boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    a sam.accounts;
    ids bigint[];
    returned bigint;
    closed text[] := '{}';
    window_t timestamptz;
    last_t timestamptz;
BEGIN
    /*
     * Actions of accounts outside their window wait for its next start,
     * spaced as when they were queued: in their order, one random gap of
     * the account's spacing apart, after those moved there before (they
     * come due one by one through the night), and the account's next action
     * after them (unless a job holds the account: the claim never waits).
     * Moved all to the window's start, they went out in one burst.  A row
     * another transaction holds is skipped here, and left out of the claim
     * below.
     */
    FOR a IN SELECT * FROM sam.accounts x WHERE x.status = 'active' AND NOT sam._in_working_hours(x, now_t) LOOP
        closed := closed || a.account_id;
        window_t := sam._next_window_start(a, now_t);
        WITH w AS MATERIALIZED (
            SELECT w.id, w.not_before, a.spacing_min + random() * (a.spacing_max - a.spacing_min) AS gap
              FROM sam.outbox w
             WHERE w.account_id = a.account_id AND w.finished_at IS NULL
               AND w.state IN ('queued', 'failed') AND w.not_before <= now_t
               AND sam._is_action(w.kind) AND NOT w.needs_check
               AND sam._may_go_then(w.kind, w.campaign_id, a.invites_paused_until, a.messages_paused_until, window_t)
               FOR UPDATE OF w SKIP LOCKED
        ), st AS (              -- (not inlined: volatile) where the first of them goes
            SELECT greatest(window_t, max(x.not_before) + a.spacing_min + random() * (a.spacing_max - a.spacing_min)) AS t0
              FROM sam.outbox x
             WHERE x.account_id = a.account_id AND x.finished_at IS NULL
               AND x.not_before >= window_t AND x.not_before < window_t + interval '1 day'
               AND sam._is_action(x.kind)
               AND sam._may_go_then(x.kind, x.campaign_id, a.invites_paused_until, a.messages_paused_until, window_t)
        ), s AS (
            SELECT w.id, w.gap,
                   st.t0 + coalesce(sum(w.gap) OVER (ORDER BY w.not_before, w.id
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), interval '0') AS t
              FROM w, st
        ), moved AS (
            UPDATE sam.outbox o SET not_before = s.t, updated_at = now_t
              FROM s WHERE o.id = s.id
            RETURNING s.t + s.gap AS t_end
        )
        SELECT max(m.t_end) INTO last_t FROM moved m;
        IF last_t IS NOT NULL THEN
            -- (FOR NO KEY UPDATE: a key-share lock, the foreign key check of a row queued for the account
            -- meanwhile, does not make it skip)
            UPDATE sam.accounts x SET next_action_at = last_t
             WHERE x.account_id IN (SELECT y.account_id FROM sam.accounts y WHERE y.account_id = a.account_id
                                       AND (y.next_action_at IS NULL OR y.next_action_at < last_t)
                                       FOR NO KEY UPDATE SKIP LOCKED);
        END IF;
    END LOOP;

    -- a batch may be all cancelled (replied, paused, erased): then take the next one, so that
    -- an empty answer really means nothing is due
    LOOP
    ids := sam._claimable(n, now_t, closed);
    IF ids IS NULL THEN
        RETURN;
    END IF;

    -- the re-checks below, in one pass that finds nothing in the common case (a superset of
    -- their conditions: when it finds something, each of them runs as written); OFFSET 0 keeps
    -- each prospect a probe of its primary key (a session's first plans, made for the batch's
    -- size, hashed the batch and read every prospect: 3.5 ms a claim at 50,000 prospects)
    IF EXISTS (SELECT 1 FROM sam.outbox o
                LEFT JOIN LATERAL (SELECT x.id, x.status, x.follow_up_sequence_index FROM sam.prospects x
                                    WHERE x.id = o.prospect_id OFFSET 0) p ON true
                WHERE o.id = ANY (ids)
                  AND (o.needs_check
                       OR (o.kind IN ('invite', 'resolve_profile', 'start_chat', 'send_message') AND p.id IS NULL)
                       OR (o.kind = 'invite' AND p.status <> 'pending')
                       OR (o.kind = 'withdraw_invite' AND p.status <> 'connection_request_sent')
                       OR (o.kind IN ('start_chat', 'send_message')
                           AND (p.status <> 'connected'
                                OR p.follow_up_sequence_index <> (o.context->>'step')::integer - 1)))) THEN
        -- a withdrawal only of an invitation still waiting (not accepted, replied to, or withdrawn)
        UPDATE sam.outbox o SET state = 'cancelled', finished_at = now_t, updated_at = now_t,
                                error = format('prospect is %s: the invitation no longer waits', p.status)
          FROM sam.prospects p
         WHERE o.id = ANY (ids) AND o.kind = 'withdraw_invite' AND NOT o.needs_check
           AND p.id = o.prospect_id AND p.status <> 'connection_request_sent';
        -- an invitation is only for a prospect that is still pending
        UPDATE sam.outbox o SET state = 'cancelled', error = 'prospect is no longer pending', finished_at = now_t,
                                updated_at = now_t
          FROM sam.prospects p
         WHERE o.id = ANY (ids) AND o.kind = 'invite' AND NOT o.needs_check
           AND p.id = o.prospect_id AND p.status <> 'pending';
        UPDATE sam.outbox o SET state = 'cancelled', error = 'prospect no longer exists', finished_at = now_t,
                                updated_at = now_t
         WHERE o.id = ANY (ids) AND o.kind IN ('invite', 'resolve_profile', 'start_chat', 'send_message')
           AND o.state <> 'cancelled'
           AND NOT EXISTS (SELECT 1 FROM sam.prospects p WHERE p.id = o.prospect_id);
        -- a follow-up only goes to a prospect still connected (not replied, not paused out) at that step
        UPDATE sam.outbox o SET state = 'cancelled', finished_at = now_t, updated_at = now_t,
                                error = format('prospect is %s at step %s', p.status, p.follow_up_sequence_index)
          FROM sam.prospects p
         WHERE o.id = ANY (ids) AND o.kind IN ('start_chat', 'send_message') AND NOT o.needs_check
           AND o.state <> 'cancelled' AND p.id = o.prospect_id
           AND (p.status <> 'connected' OR p.follow_up_sequence_index <> (o.context->>'step')::integer - 1);
        -- an outcome that cannot be checked yet: wait (the webhook of our own message may name the chat);
        -- the wait counts as an attempt, so that it ends in 'dead' after max_attempts
        UPDATE sam.outbox o SET attempts = o.attempts + 1
         WHERE o.id = ANY (ids) AND o.needs_check AND o.state <> 'cancelled' AND sam._check_request(o) IS NULL;
        PERFORM sam._retry(o, 'outcome_unknown', 'waiting for a way to check the earlier attempt', true)
           FROM sam.outbox o
          WHERE o.id = ANY (ids) AND o.needs_check AND o.state <> 'cancelled' AND sam._check_request(o) IS NULL;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE sam.outbox o SET state = 'in_flight', attempts = o.attempts + 1, claimed_at = now_t,
                                claimed_by = worker, updated_at = now_t,
                                -- a message into a known chat first reads the chat (sam._reply_check_first):
                                -- marked here, so that the answer is known for the read's; read again when the
                                -- last read is more than 10 minutes old (a hold, a pause or the night came between)
                                context = CASE WHEN o.kind <> 'send_message' THEN o.context
                                               WHEN NOT o.needs_check AND o.context->>'chat_id' IS NOT NULL
                                                    AND NOT coalesce(sam._ts_or_null(o.context->>'reply_checked_at')
                                                                     BETWEEN now_t - interval '10 minutes' AND now_t, false)
                                               THEN o.context || '{"reading_chat": true}'
                                               ELSE o.context - 'reading_chat' END
         WHERE o.id = ANY (ids) AND o.state IN ('queued', 'failed') AND o.not_before <= now_t
        RETURNING o.*
    ), r AS (
        -- (sam._reply_check_first written out: a function call per row would cost every invitation)
        SELECT cl.id AS rid,
               CASE WHEN cl.needs_check OR (cl.kind = 'send_message' AND cl.context->>'reading_chat' IS NOT NULL)
                    THEN sam._check_request(cl) ELSE cl.request END AS req,
               -- a message sent twice reaches a person twice: never on a reused connection, which
               -- libcurl would silently use again after a reset (a second invitation is refused)
               cl.kind IN ('start_chat', 'send_message', 'notify') AND NOT cl.needs_check
               AND NOT (cl.kind = 'send_message' AND cl.context->>'reading_chat' IS NOT NULL) AS fresh
          FROM claimed cl
    )
    SELECT r.rid, r.req, r.fresh
      FROM r
     ORDER BY r.rid;
    GET DIAGNOSTICS returned = ROW_COUNT;
    EXIT WHEN returned > 0;
    END LOOP;
END $$;

/*
 * sam._claim is sam._claim_requests with each request in columns: method,
 * path, the query's names and values (in name order), the JSON body's
 * text, the form's names and values.  The worker decodes the request
 * object itself (src/worker.c: building these arrays in SQL cost 13 us a
 * call); the tests and a DBA read them here.
 */
CREATE FUNCTION sam._claim(n integer)
RETURNS TABLE (id bigint, method text, path text, query_names text[], query_values text[],
               json_body text, form_names text[], form_values text[], fresh_connection boolean)
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.request->>'method', c.request->>'path',
           ARRAY(SELECT k FROM jsonb_object_keys(coalesce(c.request->'query', '{}')) k ORDER BY k COLLATE "C"),
           ARRAY(SELECT e.value FROM jsonb_each_text(coalesce(c.request->'query', '{}')) e ORDER BY e.key COLLATE "C"),
           (c.request->'json')::text,
           ARRAY(SELECT f->>0 FROM jsonb_array_elements(coalesce(c.request->'form', '[]')) f),
           ARRAY(SELECT f->>1 FROM jsonb_array_elements(coalesce(c.request->'form', '[]')) f),
           c.fresh_connection
      FROM sam._claim_requests(n) c
     ORDER BY c.id
$$;

-- sam._next_due_ms: milliseconds until the next row the worker could claim (NULL: none)
CREATE FUNCTION sam._next_due_ms() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ceil(extract(epoch FROM min(CASE WHEN o.kind = 'invite' AND NOT o.needs_check
                                                 AND x.invites_paused_until > o.not_before
                                            THEN x.invites_paused_until
                                            WHEN o.kind IN ('start_chat', 'send_message') AND NOT o.needs_check
                                                 AND x.messages_paused_until > o.not_before
                                            THEN x.messages_paused_until ELSE o.not_before END)
                              - sam.now()) * 1000)::bigint
      FROM sam.outbox o
      LEFT JOIN sam.accounts x ON x.account_id = o.account_id
      LEFT JOIN sam.campaigns c ON c.id = o.campaign_id
     WHERE o.finished_at IS NULL AND o.state IN ('queued', 'failed') AND (x.status = 'active' OR o.kind = 'notify')
       AND (c.id IS NULL OR c.status IN ('running', 'completed') OR NOT sam._is_action(o.kind))
$$;

/*
 * sam._worker_recover runs when a worker starts serving: rows it left
 * in_flight (a crash, a restart) are queued again; actions among them must
 * be checked with Unipile before they may be sent again.  worker is its
 * number and workers the setting sam.workers: another worker's rows are
 * being called right now and stay as they are, but worker 0 also takes
 * those of numbers that no longer run (sam.workers lowered) and of no
 * number.
 */
CREATE FUNCTION sam._worker_recover(worker integer DEFAULT 0, workers integer DEFAULT 1) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
BEGIN
    UPDATE sam.outbox o
       SET state = 'queued', not_before = sam.now(), updated_at = sam.now(),
           -- (a look at a chat before a message is no unknown outcome: the message was not sent)
           needs_check = o.needs_check OR (sam._must_check(o.kind) AND NOT sam._reply_check_first(o)),
           attempts = greatest(o.attempts - 1, 0),
           error = CASE WHEN sam._reply_check_first(o) THEN 'in flight when the worker stopped (a look at the chat); made again'
                        ELSE 'in flight when the worker stopped; outcome to be checked' END
     WHERE o.finished_at IS NULL AND o.state = 'in_flight'
       AND (o.claimed_by = worker
            OR (worker = 0 AND (o.claimed_by IS NULL OR o.claimed_by >= workers)));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RAISE LOG 'sam_ext: % outbox rows were in flight when the worker stopped; they will be checked before any resend', n;
    END IF;
    -- the runs worker 0 was making are over: they would stay running (and kept) for ever
    IF worker = 0 THEN
        UPDATE sam.job_runs r SET status = 'failed', finished_at = clock_timestamp(),
                                  error = 'the worker stopped before the run ended'
         WHERE r.status = 'running' AND r.job IN ('check-relations', 'process-follow-ups');
    END IF;
    RETURN n;
END $$;

/*
 * sam._requeue_overdue: after an outage (the server down, the worker
 * stopped for hours), the actions that came due meanwhile all went at once
 * when it started again: one burst without the account's spacing, counted
 * against the days they were planned for, past today's cap.  Each worker,
 * when it starts and before it claims anything, calls this until it
 * answers NULL, each call in a transaction of its own: it takes one active
 * account with actions due more than 15 minutes ago and never tried, locks
 * it first (the order of the queueing jobs and of a resume: the account,
 * then its calls), and has them queued again within the caps, spacing and
 * working hours of now, as after a pause (sam._requeue_held: the
 * invitations at once, the messages at the next process_follow_ups).
 * Returns the account, and the number in the server log.  Two workers
 * starting together wait for each other on the account, and the second
 * finds nothing left to do.
 */
CREATE FUNCTION sam._requeue_overdue() RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    acc text;
    held integer;
BEGIN
    SELECT o.account_id INTO acc FROM sam.outbox o
      JOIN sam.accounts a ON a.account_id = o.account_id AND a.status = 'active'
     WHERE o.finished_at IS NULL AND o.state = 'queued' AND o.attempts = 0 AND o.http_status IS NULL
       AND NOT o.needs_check AND o.kind IN ('invite', 'start_chat', 'send_message')
       AND o.not_before < sam.now() - interval '15 minutes'
     ORDER BY o.not_before
     LIMIT 1;
    IF acc IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM sam.accounts a WHERE a.account_id = acc AND a.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN acc;             -- paused or gone meanwhile: its actions stay held
    END IF;
    held := sam._requeue_held(acc, 'due while no worker was running', sam.now() - interval '15 minutes');
    IF held > 0 THEN
        RAISE LOG 'sam_ext: % actions of account "%" came due while no worker was running; they are queued again within the caps',
            held, acc;
    END IF;
    RETURN acc;
END $$;

-- backoff before attempt k+1: base * 2^(k-1), at most 1 hour, with jitter (x0.5 .. x1.5)
CREATE FUNCTION sam._backoff(attempts integer) RETURNS interval
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(current_setting('sam.retry_base_delay')::interval * power(2, greatest(attempts - 1, 0)),
                 interval '1 hour') * (0.5 + random())
$$;

-- sam._retry: a transient failure; retried later, or dead after sam.max_attempts
CREATE FUNCTION sam._retry(o sam.outbox, etype text, message text, check_first boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
BEGIN
    IF o.attempts >= current_setting('sam.max_attempts')::integer THEN
        -- an action whose last attempt has an unknown outcome stays to be checked: should it be
        -- queued again (its prospect set back by hand), Unipile is asked before anything is sent
        UPDATE sam.outbox SET state = 'dead', error_type = etype, finished_at = now_t, updated_at = now_t,
                              error = format('gave up after %s attempts: %s', o.attempts, message),
                              needs_check = o.needs_check OR (check_first AND sam._must_check(o.kind))
         WHERE id = o.id;
        IF o.kind IN ('invite', 'resolve_profile', 'start_chat', 'send_message') THEN
            PERFORM sam._prospect_failed(o.prospect_id, NULL,
                format('%s gave up after %s attempts: %s', o.kind, o.attempts, message));
        END IF;
    ELSE
        UPDATE sam.outbox SET state = 'failed', error_type = etype, error = message, updated_at = now_t,
                              not_before = now_t + sam._backoff(o.attempts),
                              needs_check = o.needs_check OR (check_first AND sam._must_check(o.kind))
         WHERE id = o.id;
    END IF;
END $$;

-- sam._dead: a permanent failure of the call; the prospect it was for fails with the reason
CREATE FUNCTION sam._dead(o sam.outbox, etype text, message text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.outbox SET state = 'dead', error_type = etype, error = message,
                          finished_at = sam.now(), updated_at = sam.now()
     WHERE id = o.id;
    IF o.prospect_id IS NOT NULL AND o.kind IN ('invite', 'resolve_profile', 'start_chat', 'send_message') THEN
        PERFORM sam._prospect_failed(o.prospect_id, NULL, coalesce(etype || ': ', '') || message);
    END IF;
END $$;

-- sam._hold: the call waits (account disconnected or limited) without spending an attempt
CREATE FUNCTION sam._hold(o sam.outbox, etype text, message text, until_t timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.outbox SET state = 'queued', error_type = etype, error = message,
                          attempts = greatest(o.attempts - 1, 0),
                          not_before = coalesce(until_t, sam.now()), updated_at = sam.now()
     WHERE id = o.id;
END $$;

CREATE FUNCTION sam._account_disconnected(p_account_id text, reason text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.accounts SET status = 'disconnected', status_reason = reason, status_changed_at = sam.now()
     WHERE account_id = p_account_id AND status <> 'disconnected';
    IF FOUND THEN
        RAISE LOG 'sam_ext: account % disconnected (%); its sends are held until it is resumed', p_account_id, reason;
    END IF;
END $$;

-- sam._invite_confirmed: the invitation stands (sent now, or already pending at LinkedIn)
CREATE FUNCTION sam._invite_confirmed(o sam.outbox, invitation_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.prospects p
       SET status = 'connection_request_sent', invitation_id = coalesce(_invite_confirmed.invitation_id, p.invitation_id),
           invited_at = sam.now(), updated_at = sam.now(), last_error = NULL,
           follow_up_due_at = sam.now() + (SELECT c.invite_check_delay FROM sam.campaigns c WHERE c.id = p.campaign_id)
     WHERE p.id = o.prospect_id AND p.status = 'pending';
END $$;

/*
 * sam._prospect_connected: positive evidence of acceptance, at_t the time of
 * the acceptance as the evidence gives it (the relation's created_at), or
 * its detection.  The first step's delay counts from it.  A time before the
 * invitation (a wrong clock, a time in other units) is taken as now (the
 * detection), one to come as now too: no message sent at once on a wrong
 * time, none put off by a time to come.
 */
CREATE FUNCTION sam._prospect_connected(p_id bigint, at_t timestamptz, via text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.prospects p
       SET status = 'connected', connected_at = x.t, connected_via = via, updated_at = sam.now(),
           follow_up_sequence_index = 0,
           follow_up_due_at = x.t + coalesce(
               (SELECT (c.follow_ups->0->>'delay')::interval FROM sam.campaigns c WHERE c.id = p.campaign_id),
               interval '24 hours')
      FROM (SELECT CASE WHEN at_t < q.invited_at THEN sam.now() ELSE least(coalesce(at_t, sam.now()), sam.now()) END AS t
              FROM sam.prospects q WHERE q.id = p_id) x
     WHERE p.id = p_id
       AND (p.status IN ('pending', 'connection_request_sent')
            -- ended as no longer pending without an id to withdraw it by (check_relations): evidence wins
            OR (p.status = 'withdrawn' AND p.invitation_id IS NULL));
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- accepted: a withdrawal queued for the invitation (it was stale) must not go out
    UPDATE sam.outbox SET state = 'cancelled', error = 'the invitation was accepted', finished_at = sam.now(),
                          updated_at = sam.now()
     WHERE prospect_id = p_id AND kind = 'withdraw_invite' AND state IN ('queued', 'failed') AND NOT needs_check;
    RETURN true;
END $$;

/*
 * sam._message_delivered: Unipile confirmed follow-up step N: the
 * sequence advances and the next step is due its delay after this
 * delivery (or, after the last step, the prospect completes complete_after
 * later).
 */
CREATE FUNCTION sam._message_delivered(o sam.outbox, p_chat_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    step integer := (o.context->>'step')::integer;
    now_t timestamptz := sam.now();
BEGIN
    UPDATE sam.prospects p
       SET follow_up_sequence_index = step, last_message_at = now_t, updated_at = now_t,
           chat_id = coalesce(p.chat_id, p_chat_id),
           follow_up_due_at = CASE WHEN p.status <> 'connected' THEN NULL
                                   ELSE now_t + (SELECT CASE WHEN step < jsonb_array_length(c.follow_ups)
                                                             THEN (c.follow_ups->step->>'delay')::interval
                                                             ELSE c.complete_after END
                                                   FROM sam.campaigns c WHERE c.id = p.campaign_id) END
     WHERE p.id = o.prospect_id AND p.follow_up_sequence_index = step - 1
       AND p.status IN ('connected', 'replied');
END $$;

/*
 * sam._reply_since: from when a prospect's message in the chat is a reply
 * (see sam._chat_reply): the invitation; when its time is not known (an
 * invitation whose outcome was checked and found accepted), the time it was
 * queued; for a prospect the engine did not invite, the connection.
 */
CREATE FUNCTION sam._reply_since(p_prospect_id bigint) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(p.invited_at,
                    (SELECT o.created_at FROM sam.outbox o
                      WHERE o.account_id = p.account_id AND o.idempotency_key = 'invite:' || p.id),
                    p.connected_at)
      FROM sam.prospects p WHERE p.id = p_prospect_id
$$;

/*
 * sam._replied_in_chat: a message not to be sent (o, in flight), because
 * the chat's latest messages (resp) show one of the prospect's: the call is
 * cancelled with why, and the prospect has replied (its sequence stops).
 */
CREATE FUNCTION sam._replied_in_chat(o sam.outbox, resp jsonb, why text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    pr sam.prospects;
BEGIN
    UPDATE sam.outbox SET state = 'cancelled', finished_at = now_t, updated_at = now_t, response = resp, error = why
     WHERE id = o.id;
    SELECT * INTO pr FROM sam.prospects WHERE id = o.prospect_id FOR UPDATE;
    IF FOUND THEN
        PERFORM sam._prospect_replied(pr, coalesce(o.context->>'chat_id', pr.chat_id), now_t);
    END IF;
END $$;

/*
 * sam._on_success applies a 2xx answer.  For a row whose outcome had to be
 * checked, the answer is the check's: the action is finished when it is
 * found to have happened, and sent again otherwise.
 */
CREATE FUNCTION sam._on_success(o sam.outbox, resp jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    c sam.campaigns;
BEGIN
    IF sam._reply_check_first(o) THEN
        -- the look at the chat before a follow-up: did the prospect write?
        IF jsonb_typeof(resp->'items') IS DISTINCT FROM 'array' THEN
            -- not an answer to read: look again (the message does not go unchecked)
            PERFORM sam._retry(o, 'bad_response', 'the chat''s messages came without a list of items', false);
        ELSIF sam._chat_reply(resp, sam._reply_since(o.prospect_id)) IS NOT NULL THEN
            PERFORM sam._replied_in_chat(o, resp, 'checked before sending: the prospect replied in the chat');
        ELSE
            -- the message itself goes at once (the look was no attempt at it)
            UPDATE sam.outbox SET state = 'queued', not_before = now_t, attempts = greatest(o.attempts - 1, 0),
                                  http_status = NULL, response = resp, updated_at = now_t, error = NULL,
                                  context = o.context - 'reading_chat' || jsonb_build_object('reply_checked_at', now_t)
             WHERE id = o.id;
        END IF;
        RETURN;
    END IF;

    IF o.needs_check AND o.kind IN ('start_chat', 'send_message') THEN
        -- the check lists the chat's latest messages: is ours there?  (An answer without the list
        -- says neither: resent on it, a message delivered before would go twice.)
        IF jsonb_typeof(resp->'items') IS DISTINCT FROM 'array' THEN
            PERFORM sam._retry(o, 'bad_response', 'the chat''s messages came without a list of items', true);
        ELSIF EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(resp->'items', '[]')) m
                    WHERE btrim(m->>'text') = btrim(o.context->>'text')
                      AND coalesce(m->>'is_sender', '0') IN ('1', 'true')) THEN
            UPDATE sam.outbox SET state = 'done', finished_at = now_t, updated_at = now_t, response = resp,
                                  error = 'checked: the earlier attempt had been delivered'
             WHERE id = o.id;
            PERFORM sam._message_delivered(o, NULL);
        ELSIF sam._chat_reply(resp, sam._reply_since(o.prospect_id)) IS NOT NULL THEN
            -- not delivered, and the prospect wrote meanwhile: the sequence stops there
            PERFORM sam._replied_in_chat(o, resp,
                'checked: the earlier attempt was not delivered, and the prospect replied in the chat');
        ELSE
            UPDATE sam.outbox SET state = 'queued', needs_check = false, not_before = now_t,
                                  attempts = greatest(o.attempts - 1, 0), response = resp, updated_at = now_t,
                                  error = 'checked: the earlier attempt was not delivered',
                                  -- (the chat was just read: no second look before the send)
                                  context = CASE WHEN o.kind = 'send_message'
                                                 THEN o.context || jsonb_build_object('reply_checked_at', now_t)
                                                 ELSE o.context END
             WHERE id = o.id;
        END IF;
        RETURN;
    END IF;

    IF o.needs_check THEN
        IF o.kind = 'invite' THEN
            IF resp->'invitation'->>'type' = 'SENT' AND resp->'invitation'->>'status' = 'PENDING' THEN
                PERFORM sam._invite_confirmed(o, NULL);
            ELSIF coalesce((resp->>'is_relationship')::boolean, false)
                  OR resp->>'network_distance' = 'FIRST_DEGREE' THEN
                PERFORM sam._prospect_connected(o.prospect_id, now_t, 'profile');
            ELSE
                -- it never reached LinkedIn: send it now
                UPDATE sam.outbox SET state = 'queued', needs_check = false, not_before = now_t,
                                      attempts = greatest(o.attempts - 1, 0), response = resp, updated_at = now_t,
                                      error = 'checked: the earlier attempt did not reach LinkedIn'
                 WHERE id = o.id;
                RETURN;
            END IF;
            UPDATE sam.outbox SET state = 'done', finished_at = now_t, updated_at = now_t, response = resp,
                                  error = 'checked: the earlier attempt had reached LinkedIn'
             WHERE id = o.id;
            RETURN;
        END IF;
    END IF;

    UPDATE sam.outbox SET state = 'done', finished_at = now_t, updated_at = now_t, response = resp,
                          error = NULL, error_type = NULL
     WHERE id = o.id;

    IF o.kind = 'invite' THEN
        PERFORM sam._invite_confirmed(o, resp->>'invitation_id');
    ELSIF o.kind IN ('start_chat', 'send_message') THEN
        PERFORM sam._message_delivered(o, resp->>'chat_id');
    ELSIF o.kind = 'relations_page' THEN
        PERFORM sam._on_relations_page(o, resp);
    ELSIF o.kind = 'sent_invitations_page' THEN
        PERFORM sam._on_sent_invitations_page(o, resp);
    ELSIF o.kind = 'withdraw_invite' THEN
        UPDATE sam.prospects SET status = 'withdrawn', withdrawn_at = now_t, updated_at = now_t, follow_up_due_at = NULL
         WHERE id = o.prospect_id AND status = 'connection_request_sent';
    ELSIF o.kind = 'resolve_profile' THEN
        IF coalesce(resp->>'provider_id', '') = '' THEN
            PERFORM sam._dead(o, 'bad_response', 'profile answer has no provider_id');
            RETURN;
        END IF;
        BEGIN
            UPDATE sam.prospects p
               SET provider_id = resp->>'provider_id',
                   first_name = coalesce(p.first_name, resp->>'first_name'),
                   last_name = coalesce(p.last_name, resp->>'last_name'),
                   updated_at = now_t
             WHERE p.id = o.prospect_id AND p.provider_id IS NULL;
        EXCEPTION WHEN unique_violation THEN
            PERFORM sam._prospect_failed(o.prospect_id, 'pending',
                'duplicate: the same LinkedIn member is already a prospect of this account');
            RETURN;
        END;
        -- imported by public identifier: the provider id may be on the do-not-contact or erasure lists
        IF sam._refuse_prospect(o.prospect_id) IS NOT NULL THEN
            RETURN;
        END IF;
        IF coalesce((resp->>'is_relationship')::boolean, false) THEN
            PERFORM sam._prospect_connected(o.prospect_id, now_t, 'profile');
        ELSE
            PERFORM sam._queue_invites(o.campaign_id);
        END IF;
    END IF;
END $$;

/*
 * sam._limit_reached: Unipile answered an action of the account with a limit
 * (429 too many requests, cannot_resend_yet, limit_exceeded).  The account's
 * actions of that kind (invitations, or messages) pause for its limit_pause
 * (6 hours), or 24 hours at least when its last such pause ended less than
 * a day before (a limit met again at once); the call waits for the end of
 * the pause without spending an attempt (its prospect is not failed for
 * it); the account's other actions of that kind queued and never tried are
 * queued again after the pause, spaced (held, they would all go at its end,
 * and meet the limit again).  Sending on after a 429, each call retried and
 * then dead, burned prospects and kept hitting the limit.
 */
CREATE FUNCTION sam._limit_reached(o sam.outbox, etype text, detail text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a sam.accounts;
    invites boolean := o.kind = 'invite';
    last_until timestamptz;
    pause interval;
    until_t timestamptz;
    what text := CASE WHEN o.kind = 'invite' THEN 'invitations' ELSE 'messages' END;
BEGIN
    SELECT * INTO a FROM sam.accounts WHERE account_id = o.account_id FOR UPDATE;
    last_until := CASE WHEN invites THEN a.invites_paused_until ELSE a.messages_paused_until END;
    pause := CASE WHEN last_until <= sam.now() AND last_until > sam.now() - interval '24 hours'
                  THEN greatest(a.limit_pause, interval '24 hours') ELSE a.limit_pause END;
    until_t := greatest(coalesce(last_until, sam.now()), sam.now() + pause);
    IF invites THEN
        UPDATE sam.accounts SET invites_paused_until = until_t WHERE account_id = o.account_id;
    ELSE
        UPDATE sam.accounts SET messages_paused_until = until_t WHERE account_id = o.account_id;
    END IF;
    IF last_until IS NULL OR last_until < until_t THEN
        RAISE LOG 'sam_ext: account % reached a limit (%): its % pause until %', o.account_id, etype, what, until_t;
    END IF;
    -- (this call is in flight still: not dropped)
    PERFORM sam._drop_held(o.account_id, NULL,
                           CASE WHEN invites THEN '{invite}'::text[] ELSE '{start_chat,send_message}'::text[] END, NULL,
                           format('%s of the account paused until %s (%s): queued again after it', what, until_t, etype));
    PERFORM sam._hold(o, etype, format('%s; %s of the account paused until %s', detail, what, until_t), until_t);
END $$;

/*
 * sam._complete_one records one call's result and applies its transition.
 * Mapping of Unipile's answers (see README "Unipile outcomes").
 */
CREATE FUNCTION sam._complete_one(p_id bigint, p_status integer, p_body text, p_error text, p_ms double precision)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o sam.outbox;
    resp jsonb;
    etype text;
    detail text;
    a sam.accounts;
BEGIN
    SELECT * INTO o FROM sam.outbox WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR o.state <> 'in_flight' THEN
        RETURN;                 -- erased or cancelled meanwhile: nothing to apply
    END IF;
    IF p_body IS NOT NULL THEN
        BEGIN
            resp := p_body::jsonb;
        EXCEPTION WHEN OTHERS THEN
            resp := NULL;
        END;
    END IF;
    UPDATE sam.outbox SET http_status = nullif(p_status, 0), duration_ms = p_ms,
                          response = coalesce(resp, CASE WHEN p_body IS NOT NULL
                                                         THEN jsonb_build_object('raw', left(p_body, 1000)) END)
     WHERE id = o.id;

    -- refused by the worker before anything was sent (no method or path, a hook's private address):
    -- final, nothing to check
    IF p_error LIKE 'invalid request:%' THEN
        PERFORM sam._dead(o, 'invalid_request', p_error);
        RETURN;
    END IF;
    IF p_error IS NOT NULL THEN
        PERFORM sam._retry(o, CASE WHEN p_error LIKE 'timeout%' THEN 'timeout' ELSE 'network' END,
                           p_error, sam._is_action(o.kind) AND NOT sam._reply_check_first(o));
        RETURN;
    END IF;

    IF o.kind = 'notify' THEN
        -- a notification hook: any 2xx delivers; 408, 429 and 5xx are retried; other answers are final
        IF p_status BETWEEN 200 AND 299 THEN
            PERFORM sam._notify_delivered(o);
        ELSIF p_status IN (408, 429) OR p_status >= 500 THEN
            PERFORM sam._retry(o, 'http_' || p_status, format('HTTP %s from the notification hook', p_status), false);
        ELSE
            PERFORM sam._dead(o, 'http_' || p_status, format('HTTP %s from the notification hook', p_status));
        END IF;
        RETURN;
    END IF;

    IF p_status BETWEEN 200 AND 299 THEN
        IF resp IS NULL OR jsonb_typeof(resp) <> 'object' THEN
            -- the action may have happened: check before any resend
            PERFORM sam._retry(o, 'bad_response', format('HTTP %s with a body that is not a JSON object', p_status),
                               sam._is_action(o.kind) AND NOT sam._reply_check_first(o));
        ELSE
            PERFORM sam._on_success(o, resp);
        END IF;
        RETURN;
    END IF;

    etype := CASE WHEN jsonb_typeof(resp) = 'object' THEN resp->>'type' END;
    detail := coalesce(CASE WHEN jsonb_typeof(resp) = 'object' THEN coalesce(resp->>'detail', resp->>'title') END,
                       format('HTTP %s', p_status));

    IF p_status = 429 AND o.kind IN ('invite', 'start_chat', 'send_message') AND NOT sam._reply_check_first(o) THEN
        -- too many requests: LinkedIn's or Unipile's limit for the account, not this call's fault
        PERFORM sam._limit_reached(o, coalesce(etype, 'http_429'), detail);
        RETURN;
    END IF;
    IF p_status = 429 OR p_status >= 500 OR p_status = 408 THEN
        -- the outcome is unknown unless Unipile itself answered with its error body; a first message
        -- can only be checked once its chat is known, so Unipile's own refusal is taken at its word
        PERFORM sam._retry(o, coalesce(etype, 'http_' || p_status), format('HTTP %s: %s', p_status, detail),
                           sam._is_action(o.kind) AND p_status <> 429 AND NOT sam._reply_check_first(o)
                           AND NOT (o.kind = 'start_chat' AND etype LIKE 'errors/%'));
        RETURN;
    END IF;

    IF p_status = 401 OR (p_status = 403 AND etype = 'errors/account_restricted') THEN
        IF etype IN ('errors/disconnected_account', 'errors/invalid_credentials', 'errors/expired_credentials',
                     'errors/checkpoint_error', 'errors/invalid_checkpoint_solution', 'errors/multiple_sessions',
                     'errors/missing_credentials', 'errors/disconnected_feature', 'errors/wrong_account',
                     'errors/insufficient_privileges', 'errors/expired_link', 'errors/captcha_not_supported',
                     'errors/account_restricted') THEN
            PERFORM sam._account_disconnected(o.account_id, etype);
            PERFORM sam._hold(o, etype, detail, NULL);
        ELSE
            -- not about the LinkedIn account: most likely the API key
            PERFORM sam._retry(o, coalesce(etype, 'http_401'),
                format('HTTP %s: %s (check sam.unipile_api_key_file)', p_status, detail), false);
        END IF;
        RETURN;
    END IF;

    IF o.needs_check AND p_status = 404 AND o.kind = 'invite' THEN
        -- no such profile, so no invitation to it exists: the earlier attempt did not happen
        UPDATE sam.outbox SET state = 'queued', needs_check = false, not_before = sam.now(),
                              attempts = greatest(o.attempts - 1, 0), updated_at = sam.now(),
                              error = 'checked: the earlier attempt did not reach LinkedIn (profile not found)'
         WHERE id = o.id;
        RETURN;
    END IF;

    IF o.needs_check THEN
        -- the check itself was refused: the outcome stays unknown, so never resend blindly
        PERFORM sam._dead(o, etype, format('could not check the outcome of an earlier attempt: HTTP %s: %s', p_status, detail));
        RETURN;
    END IF;

    IF o.kind = 'withdraw_invite' AND p_status = 404 THEN
        -- nothing pending under that id (accepted, declined or withdrawn already): the prospect stays as it
        -- is, without the id, so that check_relations looks for the invitation in the sent list (withdrawn
        -- again under the id found there) or among the relations, and ends it if it is in neither
        UPDATE sam.outbox SET state = 'done', error_type = etype, error = 'no such pending invitation: ' || detail,
                              finished_at = sam.now(), updated_at = sam.now()
         WHERE id = o.id;
        UPDATE sam.prospects SET invitation_id = NULL, updated_at = sam.now()
         WHERE id = o.prospect_id AND status = 'connection_request_sent';
        RETURN;
    END IF;

    IF o.kind = 'invite' AND p_status = 422 THEN
        IF etype = 'errors/already_invited_recently' THEN
            UPDATE sam.outbox SET state = 'done', error_type = etype, error = detail, finished_at = sam.now(),
                                  updated_at = sam.now()
             WHERE id = o.id;
            PERFORM sam._invite_confirmed(o, NULL);
            RETURN;
        ELSIF etype = 'errors/already_connected' THEN
            UPDATE sam.outbox SET state = 'done', error_type = etype, error = detail, finished_at = sam.now(),
                                  updated_at = sam.now()
             WHERE id = o.id;
            PERFORM sam._prospect_connected(o.prospect_id, sam.now(), 'already_connected');
            RETURN;
        ELSIF etype IN ('errors/cannot_resend_yet', 'errors/limit_exceeded') THEN
            PERFORM sam._limit_reached(o, etype, detail);
            RETURN;
        END IF;
    END IF;

    IF sam._reply_check_first(o) AND p_status <> 404 THEN
        -- the look at the chat refused (not the message: a 404, no such chat, would be the message's too)
        PERFORM sam._retry(o, coalesce(etype, 'http_' || p_status),
                           format('reading the chat before the message: HTTP %s: %s', p_status, detail), false);
        RETURN;
    END IF;

    -- any other 4xx is about this call or its recipient: permanent
    PERFORM sam._dead(o, coalesce(etype, 'http_' || p_status),
                      CASE WHEN sam._reply_check_first(o) THEN 'reading the chat before the message: ' ELSE '' END
                      || detail);
END $$;

/*
 * sam._complete records a batch of results; one row that cannot be
 * recorded is marked dead with the reason and never blocks the others.
 * Returns how many were recorded (or found recorded already): with
 * p_defer_locked, those that met a deadlock or a lock are left in flight and
 * not counted, for the worker to record again.
 */
CREATE FUNCTION sam._complete(p_ids bigint[], p_statuses integer[], p_bodies text[], p_errors text[],
                              p_ms double precision[], p_defer_locked boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i integer;
    now_t timestamptz := sam.now();
    fast bigint[] := '{}';
    deferred integer := 0;
BEGIN
    /*
     * The common case in one statement: invitations Unipile accepted (2xx,
     * a JSON object, outcome not under check).  Anything else, or the whole
     * batch if this statement fails (say, a body that is not JSON), goes
     * row by row below, with the same effect.
     */
    BEGIN
        WITH r AS (
            SELECT * FROM unnest(p_ids, p_statuses, p_bodies, p_errors, p_ms) AS r(id, status, body, err, ms)
             WHERE r.err IS NULL AND r.status BETWEEN 200 AND 299 AND r.body LIKE '{%'
        ), o AS (
            UPDATE sam.outbox x
               SET state = 'done', finished_at = now_t, updated_at = now_t, response = r.body::jsonb,
                   http_status = r.status, duration_ms = r.ms, error = NULL, error_type = NULL
              FROM r
             WHERE x.id = r.id
               AND x.state = 'in_flight' AND x.kind = 'invite' AND NOT x.needs_check
            RETURNING x.id, x.prospect_id, x.response
        ), p AS (
            UPDATE sam.prospects p
               SET status = 'connection_request_sent', invitation_id = coalesce(o.response->>'invitation_id', p.invitation_id),
                   invited_at = now_t, updated_at = now_t, last_error = NULL,
                   follow_up_due_at = now_t + c.invite_check_delay
              FROM o, sam.campaigns c
             WHERE p.id = o.prospect_id AND p.status = 'pending' AND c.id = p.campaign_id
            RETURNING p.id
        )
        SELECT coalesce(array_agg(o.id), '{}') INTO fast FROM o;
    EXCEPTION WHEN OTHERS THEN
        fast := '{}';
    END;
    IF cardinality(fast) = cardinality(p_ids) THEN
        RETURN cardinality(p_ids);      -- all recorded (the loop's = ANY would be quadratic)
    END IF;

    /*
     * Row by row, in the order of the rows they lock (account, then
     * prospect): two workers recording at once then take their locks in the
     * same order.  Other sessions (a job, a webhook) may still take them in
     * another order: a row that meets a deadlock or a lock it may not wait
     * for is left in flight when p_defer_locked, and not counted, so that the
     * worker records it again in a new transaction once this one has let go
     * of its locks.  Otherwise, and for any other error, the row is dead with
     * the error, and its outcome is to be checked before any new attempt
     * (the answer it got is not known to the database).
     */
    FOR i IN SELECT u.i FROM generate_subscripts(p_ids, 1) u(i)
                        LEFT JOIN sam.outbox o ON o.id = p_ids[u.i]
              ORDER BY o.account_id, o.prospect_id, u.i LOOP
        CONTINUE WHEN p_ids[i] = ANY (fast);
        BEGIN
            PERFORM sam._complete_one(p_ids[i], p_statuses[i], p_bodies[i], p_errors[i], p_ms[i]);
        EXCEPTION WHEN OTHERS THEN
            IF p_defer_locked AND SQLSTATE IN ('40P01', '40001', '55P03') THEN
                deferred := deferred + 1;
            ELSE
                UPDATE sam.outbox x SET state = 'dead', finished_at = sam.now(), updated_at = sam.now(),
                                        needs_check = x.needs_check OR (sam._must_check(x.kind)
                                                                        AND NOT sam._reply_check_first(x)),
                                        error = 'could not record the result: ' || SQLERRM
                 WHERE x.id = p_ids[i] AND x.state = 'in_flight';
                RAISE WARNING 'sam_ext: could not record the result of outbox row %: %', p_ids[i], SQLERRM;
            END IF;
        END;
    END LOOP;
    RETURN coalesce(array_length(p_ids, 1), 0) - deferred;
END $$;

------------------------------------------------------------------------
-- Webhooks (stored by the ingest, applied at once)
------------------------------------------------------------------------

CREATE TABLE sam.webhook_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT sam.now(),
    source text NOT NULL,
    event text,
    account_id text,
    dedupe_key text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'received',
    result jsonb,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    processed_at timestamptz,
    CONSTRAINT webhook_events_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT webhook_events_status_valid CHECK (status IN ('received', 'processed', 'unmatched', 'ignored', 'failed')),
    CONSTRAINT webhook_events_source_length CHECK (char_length(source) BETWEEN 1 AND 100)
) WITH (fillfactor = 85);
-- error is set exactly when status is 'failed'; the predicate names error, not status, so that
-- applying a new event (status received -> processed, error staying NULL) is a HOT update
-- (room left by the fillfactor): no new entry in any index
CREATE INDEX webhook_events_failed_idx ON sam.webhook_events (id) WHERE error IS NOT NULL;
CREATE INDEX webhook_events_received_idx ON sam.webhook_events (received_at);
COMMENT ON TABLE sam.webhook_events IS 'Every Unipile webhook delivery, stored once (dedupe_key) and applied at once; failures keep their error and can be retried';
SELECT pg_catalog.pg_extension_config_dump('sam.webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.webhook_events', 'id'), '');


-- sam._webhook_dedupe_key: the identity of an event, so that Unipile's retries are stored once
-- (plpgsql, not sql: PostgreSQL 15 plans an SQL function's body again in every transaction)
CREATE FUNCTION sam._webhook_dedupe_key(p jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    k := CASE
            WHEN p->>'event' = 'new_relation' AND p->>'user_provider_id' IS NOT NULL
                THEN 'new_relation:' || coalesce(p->>'account_id', '') || ':' || (p->>'user_provider_id')
            WHEN p->>'event' IN ('message_received', 'message_reaction', 'message_read')
                 AND p->>'message_id' IS NOT NULL
                THEN (p->>'event') || ':' || coalesce(p->>'account_id', '') || ':' || (p->>'message_id')
            ELSE 'payload:' || md5(p::text)
        END;
    -- a key longer than 200 bytes (hostile ids) is hashed, so that it always fits the unique index
    RETURN CASE WHEN octet_length(k) <= 200 THEN k ELSE 'md5:' || md5(k) END;
END $$;

/*
 * sam._apply_webhook applies one stored event and returns its status and
 * result.  Every transition names the state it expects, so applying an
 * event twice changes nothing the second time.
 */
CREATE FUNCTION sam._apply_webhook(e sam.webhook_events) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb := e.payload;
    pr sam.prospects;
    now_t timestamptz := sam.now();
    sender text;
    own text;
    att jsonb;
    n integer;
    st text;
    why text;
BEGIN
    IF e.event = 'new_relation' THEN
        SELECT * INTO pr FROM sam.prospects x
         WHERE x.account_id = e.account_id
           AND (x.provider_id = p->>'user_provider_id'
                OR (x.public_identifier IS NOT NULL AND x.public_identifier = lower(sam._url_decode(p->>'user_public_identifier'))))
         ORDER BY (x.provider_id = p->>'user_provider_id') DESC NULLS LAST
         LIMIT 1 FOR UPDATE;
        IF NOT FOUND THEN
            RETURN jsonb_build_object('status', 'unmatched', 'reason', 'no prospect of this account is that person');
        END IF;
        IF (pr.provider_id IS NULL AND p->>'user_provider_id' IS NOT NULL)
           OR (pr.public_identifier IS NULL AND coalesce(p->>'user_public_identifier', '') <> '') THEN
            -- known until now by one identifier only: the other may be refused
            why := sam._learn_identifiers(pr.id, p->>'user_provider_id', p->>'user_public_identifier');
            IF why LIKE 'erased on request%' THEN
                -- this webhook names them too: it goes with them (its row's update finds nothing)
                DELETE FROM sam.webhook_events w WHERE w.id = e.id;
            END IF;
            IF why IS NOT NULL THEN
                RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'refused',
                                          'reason', why);
            END IF;
        END IF;
        IF sam._prospect_connected(pr.id, now_t, 'webhook') THEN
            RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'connected');
        END IF;
        RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'none',
                                  'reason', format('prospect is already %s', pr.status));

    ELSIF e.event = 'message_received' THEN
        sender := p->'sender'->>'attendee_provider_id';
        own := coalesce(p->'account_info'->>'user_id',
                        (SELECT a.own_provider_id FROM sam.accounts a WHERE a.account_id = e.account_id));
        -- a message from the prospect is a reply (never our own: the sender must be the prospect)
        IF sender IS NOT NULL AND (own IS NULL OR sender <> own) THEN
            SELECT * INTO pr FROM sam.prospects x
             WHERE x.account_id = e.account_id AND x.provider_id = sender
             FOR UPDATE;
            IF FOUND THEN
                RETURN sam._prospect_replied(pr, p->>'chat_id', now_t);
            END IF;
        END IF;
        -- our own first message in a new chat, equal to the invitation note: the invitation was accepted
        IF sender IS NOT NULL AND sender = own THEN
            FOR att IN SELECT * FROM jsonb_array_elements(coalesce(p->'attendees', '[]')) LOOP
                CONTINUE WHEN att->>'attendee_provider_id' IS NULL OR att->>'attendee_provider_id' = own;
                SELECT * INTO pr FROM sam.prospects x
                 WHERE x.account_id = e.account_id AND x.provider_id = att->>'attendee_provider_id'
                 FOR UPDATE;
                CONTINUE WHEN NOT FOUND;
                IF pr.chat_id IS NULL AND p->>'chat_id' IS NOT NULL THEN
                    UPDATE sam.prospects SET chat_id = p->>'chat_id', updated_at = now_t WHERE id = pr.id;
                END IF;
                IF pr.status = 'connection_request_sent' AND EXISTS (
                       SELECT 1 FROM sam.outbox o
                        WHERE o.account_id = pr.account_id AND o.idempotency_key = 'invite:' || pr.id
                          AND btrim(o.request->'json'->>'message') = btrim(p->>'message')) THEN
                    PERFORM sam._prospect_connected(pr.id, now_t, 'note_chat');
                    RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'connected',
                                              'reason', 'the invitation note opened a chat: accepted');
                END IF;
                RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'none',
                                          'reason', 'our own message');
            END LOOP;
        END IF;
        RETURN jsonb_build_object('status', 'unmatched', 'reason', 'neither sender nor attendees are prospects of this account');

    ELSIF e.event = 'account_status' THEN
        st := p->'AccountStatus'->>'message';
        IF NOT EXISTS (SELECT 1 FROM sam.accounts a WHERE a.account_id = e.account_id) THEN
            RETURN jsonb_build_object('status', 'unmatched', 'reason', 'unknown account');
        END IF;
        IF st IN ('CREDENTIALS', 'ERROR', 'STOPPED') THEN
            PERFORM sam._account_disconnected(e.account_id, 'unipile account status ' || st);
            RETURN jsonb_build_object('status', 'processed', 'transition', 'disconnected');
        ELSIF st IN ('OK', 'RECONNECTED', 'SYNC_SUCCESS') THEN
            UPDATE sam.accounts SET status = 'active', status_reason = NULL, status_changed_at = now_t
             WHERE account_id = e.account_id AND status = 'disconnected';
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n > 0 THEN
                PERFORM sam._requeue_held(e.account_id, 'held while the account was disconnected');
                PERFORM sam._wake_worker();
            END IF;
            RETURN jsonb_build_object('status', 'processed', 'transition', CASE WHEN n > 0 THEN 'active' ELSE 'none' END);
        END IF;
        RETURN jsonb_build_object('status', 'ignored', 'reason', format('account status %s needs no action', st));
    END IF;
    RETURN jsonb_build_object('status', 'ignored', 'reason', format('event %s is not used', coalesce(e.event, 'without a name')));
END $$;

-- sam._prospect_replied: the prospect wrote to us: the sequence stops, queued messages are cancelled
CREATE FUNCTION sam._prospect_replied(pr sam.prospects, p_chat_id text, at_t timestamptz) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cancelled integer;
BEGIN
    -- (whatever the prospect's state: a completed sequence's prospect who writes back replied too,
    -- the funnel and the app want it; so does one whose sequence failed, after a message given up
    -- on that may well have gone out, and one whose invitation was withdrawn or taken for no
    -- longer pending, see check_relations: the salesperson must hear of every reply)
    IF pr.status = 'replied'
       -- (but one stopped by the do-not-contact list stays so: nothing is to follow from it)
       OR (pr.status = 'failed' AND pr.last_error LIKE 'do not contact%') THEN
        UPDATE sam.prospects SET chat_id = coalesce(chat_id, p_chat_id) WHERE id = pr.id;
        RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'none',
                                  'reason', format('prospect is already %s', pr.status));
    END IF;
    UPDATE sam.prospects
       SET status = 'replied', replied_at = at_t, updated_at = at_t, follow_up_due_at = NULL,
           chat_id = coalesce(chat_id, p_chat_id),
           connected_at = coalesce(connected_at, at_t), connected_via = coalesce(connected_via, 'reply')
     WHERE id = pr.id;
    UPDATE sam.outbox SET state = 'cancelled', error = 'the prospect replied', finished_at = at_t, updated_at = at_t
     WHERE prospect_id = pr.id AND kind IN ('start_chat', 'send_message', 'invite', 'withdraw_invite')
       AND state IN ('queued', 'failed') AND NOT needs_check;
    GET DIAGNOSTICS cancelled = ROW_COUNT;
    RETURN jsonb_build_object('status', 'processed', 'prospect_id', pr.id, 'transition', 'replied',
                              'cancelled_calls', cancelled);
END $$;

/*
 * sam.ingest_webhook(payload, source) stores a Unipile webhook delivery
 * once and applies it at once.  Not JSON: SQLSTATE 22P02; not an object:
 * 22023.  A duplicate delivery is acknowledged and not applied again; an
 * event that fails to apply keeps its error (the ingest still answers 200:
 * the event is safely stored and sam.retry_webhooks() applies it again).
 */
CREATE FUNCTION sam.ingest_webhook(payload text, source text DEFAULT 'unipile') RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p jsonb;
    e sam.webhook_events;
    r jsonb;
    key text;
BEGIN
    IF payload IS NULL THEN
        RAISE EXCEPTION 'invalid payload: must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := payload::jsonb;
    IF jsonb_typeof(p) <> 'object' THEN
        RAISE EXCEPTION 'invalid payload: a webhook must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF source IS NULL OR char_length(source) NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'invalid source: must be 1 to 100 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    key := sam._webhook_dedupe_key(p);
    /*
     * An account's status carries no id and no time: the same status (say,
     * CREDENTIALS) may come again weeks later, after the account was
     * reconnected, and must then be applied.  So it is a duplicate only of
     * the same status received while the account's state has not changed
     * since (two deliveries at once); one received after the first was
     * applied is applied again, which changes nothing.
     */
    IF p ? 'AccountStatus' AND p->>'event' IS NULL THEN
        -- (read under the account's lock, which applying the status takes anyway: two statuses at
        -- once are keyed one after the other, each with the state the other left)
        key := 'account_status:' || md5(p::text) || ':'
               || coalesce((SELECT extract(epoch FROM a.status_changed_at)::text FROM sam.accounts a
                             WHERE a.account_id = p->'AccountStatus'->>'account_id' FOR UPDATE), 'none');
    END IF;
    INSERT INTO sam.webhook_events AS w (source, event, account_id, dedupe_key, payload)
    VALUES (source,
            coalesce(p->>'event', CASE WHEN p ? 'AccountStatus' THEN 'account_status' END),
            coalesce(p->>'account_id', p->'AccountStatus'->>'account_id'),
            key, p)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING * INTO e;
    IF e.id IS NULL THEN
        RETURN jsonb_build_object('success', true, 'duplicate', true,
            'id', (SELECT w.id FROM sam.webhook_events w WHERE w.dedupe_key = key));
    END IF;
    r := sam._apply_webhook_row(e);
    IF r->>'status' IN ('unmatched', 'ignored') AND sam._names_erased(p) THEN
        -- a person erased on request: not stored again, not even as an event nothing applies
        DELETE FROM sam.webhook_events w WHERE w.id = e.id;
        r := r || jsonb_build_object('not_kept', 'names a person erased on request');
    END IF;
    RETURN jsonb_build_object('success', true, 'duplicate', false, 'id', e.id, 'event', e.event) || r;
END $$;
COMMENT ON FUNCTION sam.ingest_webhook(text, text) IS 'Stores a Unipile webhook once and applies it at once (the ingest''s only call)';

-- sam._apply_webhook_event applies a stored event; a failure is kept on its row, except a deadlock
-- or a lock (raised: see sam._apply_webhook_row)
CREATE FUNCTION sam._apply_webhook_event(p_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e sam.webhook_events;
BEGIN
    SELECT * INTO e FROM sam.webhook_events WHERE id = p_id FOR UPDATE;
    IF e.status NOT IN ('received', 'failed') THEN
        RETURN jsonb_build_object('status', e.status);
    END IF;
    RETURN sam._apply_webhook_row(e);
END $$;

-- sam._apply_webhook_row applies an event whose row the caller holds (locked, or inserted by it)
CREATE FUNCTION sam._apply_webhook_row(e sam.webhook_events) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb;
BEGIN
    BEGIN
        r := sam._apply_webhook(e);
        UPDATE sam.webhook_events SET status = r->>'status', result = r, error = NULL,
                                      attempts = attempts + 1, processed_at = sam.now()
         WHERE id = e.id;
    EXCEPTION
        WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
            -- not the event's fault, and gone on a second try: the caller's transaction fails, so
            -- that the webhook is sent again (the ingest makes it again alone, Unipile retries a 5xx);
            -- kept as failed, nothing would apply it again
            RAISE;
        WHEN OTHERS THEN
            UPDATE sam.webhook_events SET status = 'failed', error = SQLERRM, attempts = attempts + 1
             WHERE id = e.id;
            RETURN jsonb_build_object('status', 'failed', 'error', SQLERRM);
    END;
    RETURN jsonb_build_object('status', r->>'status') || (r - 'status');
END $$;

CREATE FUNCTION sam.retry_webhooks(max_events integer DEFAULT 1000) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    w record;
    n integer := 0;
    ok integer := 0;
BEGIN
    IF max_events IS NULL OR max_events NOT BETWEEN 1 AND 100000 THEN
        PERFORM sam._invalid('max_events', 'must be between 1 and 100000');
    END IF;
    FOR w IN SELECT id FROM sam.webhook_events WHERE status = 'failed' AND error IS NOT NULL ORDER BY id LIMIT max_events
             FOR UPDATE SKIP LOCKED LOOP
        n := n + 1;
        BEGIN
            IF sam._apply_webhook_event(w.id)->>'status' <> 'failed' THEN
                ok := ok + 1;
            END IF;
        EXCEPTION WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
            NULL;       -- (raised, not kept: that event stays failed, the others are applied)
        END;
    END LOOP;
    RETURN jsonb_build_object('success', true, 'retried', n, 'applied', ok, 'still_failing', n - ok);
END $$;
COMMENT ON FUNCTION sam.retry_webhooks(integer) IS 'Applies again the webhook events that failed';

------------------------------------------------------------------------
-- Jobs (what pg_cron runs)
------------------------------------------------------------------------

/*
 * sam._run_job runs one job body, records the run in sam.job_runs and logs
 * one summary line.  The same job never runs twice at once: a second call
 * answers "skipped" and says why.  A failing body is recorded as failed and
 * answered with success false; it does not raise, so that the run is kept.
 */
CREATE FUNCTION sam._run_job(p_job text, p_body text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run_id bigint;
    v_result jsonb;
    msg text;
    st text;
BEGIN
    -- (a new job's row is made once; two first runs at once then take turns instead)
    INSERT INTO sam.locks (kind, key) VALUES ('job', p_job) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM sam.locks l WHERE l.kind = 'job' AND l.key = p_job FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        v_result := jsonb_build_object('success', true, 'skipped', true,
            'reason', format('another run of %s is in progress', p_job));
        INSERT INTO sam.job_runs (job, finished_at, status, result)
        VALUES (p_job, clock_timestamp(), 'skipped', v_result);
        RETURN v_result;
    END IF;
    INSERT INTO sam.job_runs (job) VALUES (p_job) RETURNING id INTO run_id;
    BEGIN
        EXECUTE format('SELECT sam.%I()', p_body) INTO v_result;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
        UPDATE sam.job_runs SET status = 'failed', finished_at = clock_timestamp(),
                                error = format('%s (SQLSTATE %s)', msg, st)
         WHERE id = run_id;
        RAISE WARNING 'sam job % failed: %', p_job, msg;
        RETURN jsonb_build_object('success', false, 'error', msg, 'run_id', run_id);
    END;
    v_result := jsonb_build_object('success', true) || v_result;
    UPDATE sam.job_runs SET status = 'succeeded', finished_at = clock_timestamp(), result = v_result
     WHERE id = run_id;
    RAISE LOG 'sam job %: %', p_job, (v_result - 'results' - 'campaigns')::text;
    RETURN v_result;
END $$;

CREATE FUNCTION sam._job_process_pending_prospects() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    r jsonb;
    per jsonb := '[]';
    queued integer := 0;
    resolving integer := 0;
    n integer := 0;
BEGIN
    FOR c IN SELECT DISTINCT x.id FROM sam.campaigns x
              WHERE x.status = 'running'
                AND EXISTS (SELECT 1 FROM sam.prospects p WHERE p.campaign_id = x.id AND p.status = 'pending')
              ORDER BY x.id
    LOOP
        r := sam._queue_invites(c.id);
        n := n + 1;
        queued := queued + (r->>'queued')::integer;
        resolving := resolving + (r->>'resolving')::integer;
        IF n <= 100 THEN
            per := per || jsonb_build_array(jsonb_build_object('campaign_id', c.id) || r);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('campaigns_checked', n, 'queued', queued, 'resolving', resolving, 'campaigns', per);
END $$;

CREATE FUNCTION sam.process_pending_prospects() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._run_job('process-pending-prospects', '_job_process_pending_prospects') $$;
COMMENT ON FUNCTION sam.process_pending_prospects() IS 'Hourly: queues connection requests of every running campaign''s pending prospects, within caps and working hours';

CREATE FUNCTION sam._job_execute_scheduled_campaigns() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    started jsonb := '[]';
    r jsonb;
BEGIN
    FOR c IN SELECT x.id FROM sam.campaigns x
              WHERE x.status = 'scheduled' AND x.start_at <= sam.now()
              ORDER BY x.start_at, x.id
              FOR UPDATE SKIP LOCKED
    LOOP
        r := sam.start_campaign(c.id);
        started := started || jsonb_build_array(jsonb_build_object('campaign_id', c.id, 'queued', r->'queued',
                                                                   'resolving', r->'resolving'));
    END LOOP;
    RETURN jsonb_build_object('started', jsonb_array_length(started), 'campaigns', started);
END $$;

CREATE FUNCTION sam.execute_scheduled_campaigns() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._run_job('execute-scheduled-campaigns', '_job_execute_scheduled_campaigns') $$;
COMMENT ON FUNCTION sam.execute_scheduled_campaigns() IS 'Every 5 minutes: starts the scheduled campaigns whose start_at has come';

CREATE FUNCTION sam._job_process_outbox() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    stale integer;
    exhausted integer;
    n_failed integer;
    due integer;
    queue jsonb;
BEGIN
    -- in flight far longer than any request may take, and no worker to finish it: check and requeue
    UPDATE sam.outbox o
       SET state = 'queued', not_before = now_t, updated_at = now_t,
           needs_check = o.needs_check OR (sam._must_check(o.kind) AND NOT sam._reply_check_first(o)),
           error = CASE WHEN sam._reply_check_first(o) THEN 'in flight for too long (a look at the chat); made again'
                        ELSE 'in flight for too long; outcome to be checked' END
     WHERE o.finished_at IS NULL AND o.state = 'in_flight'
       AND o.claimed_at < now_t - (current_setting('sam.http_timeout')::interval * 2 + interval '5 minutes')
       AND NOT EXISTS (SELECT 1 FROM sam.workers() w WHERE w.worker = coalesce(o.claimed_by, 0) AND w.ready);
    GET DIAGNOSTICS stale = ROW_COUNT;

    -- retries that can no longer happen (sam.max_attempts lowered): dead, and their prospects
    -- failed, as when the last attempt fails (sam._retry)
    WITH d AS (
        UPDATE sam.outbox o SET state = 'dead', finished_at = now_t, updated_at = now_t,
                                error = format('gave up after %s attempts: %s', o.attempts, o.error)
         WHERE o.state = 'failed' AND o.attempts >= current_setting('sam.max_attempts')::integer
        RETURNING o.*
    ), f AS (
        -- (read below, or it would not run: a SELECT in WITH runs only when read)
        SELECT sam._prospect_failed(d.prospect_id, NULL, format('%s %s', d.kind, d.error)) AS failed
          FROM d WHERE d.prospect_id IS NOT NULL AND d.kind IN ('invite', 'resolve_profile', 'start_chat', 'send_message')
    )
    SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM f) INTO exhausted, n_failed;

    SELECT count(*) INTO due FROM sam.outbox o
     WHERE o.finished_at IS NULL AND o.state IN ('queued', 'failed') AND o.not_before <= now_t;
    IF due > 0 OR stale > 0 THEN
        PERFORM sam._wake_worker();
    END IF;

    SELECT coalesce(jsonb_object_agg(k.kind, k.states), '{}') INTO queue
      FROM (SELECT s.kind, jsonb_object_agg(s.state, s.n) AS states
              FROM (SELECT o.kind, o.state, count(*) AS n FROM sam.outbox o GROUP BY 1, 2) s
             GROUP BY s.kind) k;
    RETURN jsonb_build_object('requeued_stale', stale, 'dead_exhausted', exhausted, 'due_now', due,
                              'worker_running', sam.worker_pid() IS NOT NULL, 'queue', queue);
END $$;

CREATE FUNCTION sam.process_outbox() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._run_job('process-outbox', '_job_process_outbox') $$;
COMMENT ON FUNCTION sam.process_outbox() IS 'Hourly: requeues what is due, moves exhausted retries to dead, reports the queue by kind and state';

------------------------------------------------------------------------
-- Jobs that wait for Unipile's answers (run inside the worker, see src/jobs.c)
------------------------------------------------------------------------

CREATE FUNCTION sam._run_job_in_worker(job text) RETURNS bigint
LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'sam_run_job_in_worker';

/*
 * sam._job_async_start runs in the worker: records the run, calls the
 * job's start function (which queues its calls, tagged with the run) and
 * says whether there is anything to wait for.
 */
CREATE FUNCTION sam._job_async_start(p_job text, p_deadline timestamptz)
RETURNS TABLE (run_id bigint, finished boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid bigint;
    r jsonb;
    msg text;
    st text;
BEGIN
    INSERT INTO sam.job_runs (job) VALUES (p_job) RETURNING id INTO rid;
    BEGIN
        EXECUTE format('SELECT sam.%I($1)', '_job_' || replace(p_job, '-', '_') || '_start') INTO r USING rid;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
        UPDATE sam.job_runs SET status = 'failed', finished_at = clock_timestamp(),
                                error = format('%s (SQLSTATE %s)', msg, st)
         WHERE id = rid;
        RAISE WARNING 'sam job % failed: %', p_job, msg;
        RETURN QUERY SELECT rid, true;
        RETURN;
    END;
    UPDATE sam.job_runs SET result = r WHERE id = rid;
    IF NOT EXISTS (SELECT 1 FROM sam.outbox o WHERE o.job_run_id = rid) THEN
        PERFORM sam._job_async_poll(rid, true);
        RETURN QUERY SELECT rid, true;
        RETURN;
    END IF;
    RETURN QUERY SELECT rid, false;
END $$;

/*
 * sam._job_async_poll runs in the worker: once none of the run's calls is
 * waiting any more (or the deadline has passed), the job's finish function
 * writes the answer.  Returns whether the run is finished.
 */
CREATE FUNCTION sam._job_async_poll(p_run_id bigint, p_deadline_passed boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    jr sam.job_runs;
    r jsonb;
    msg text;
    st text;
BEGIN
    SELECT * INTO jr FROM sam.job_runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND OR jr.status <> 'running' THEN
        RETURN true;
    END IF;
    -- still waiting: a call in flight, or due and claimable (not held by an inactive account)
    IF NOT p_deadline_passed AND EXISTS (
           SELECT 1 FROM sam.outbox o JOIN sam.accounts x ON x.account_id = o.account_id
            WHERE o.job_run_id = p_run_id
              AND (o.state = 'in_flight'
                   OR (o.state IN ('queued', 'failed') AND o.not_before <= sam.now() AND x.status = 'active'))) THEN
        RETURN false;
    END IF;
    BEGIN
        EXECUTE format('SELECT sam.%I($1, $2)', '_job_' || replace(jr.job, '-', '_') || '_finish')
           INTO r USING p_run_id, coalesce(jr.result, '{}');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, st = RETURNED_SQLSTATE;
        UPDATE sam.job_runs SET status = 'failed', finished_at = clock_timestamp(),
                                error = format('%s (SQLSTATE %s)', msg, st)
         WHERE id = p_run_id;
        RAISE WARNING 'sam job % failed: %', jr.job, msg;
        RETURN true;
    END;
    r := jsonb_build_object('success', true) || r;
    UPDATE sam.job_runs SET status = 'succeeded', finished_at = clock_timestamp(), result = r WHERE id = p_run_id;
    RAISE LOG 'sam job %: %', jr.job, (r - 'results' - 'errors')::text;
    RETURN true;
END $$;

/*
 * sam._await_job hands a job to the worker, waits for it (at most
 * sam.job_wait_timeout, then the answer says what is still pending) and
 * returns its answer.
 */
CREATE FUNCTION sam._await_job(p_job text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rid bigint := sam._run_job_in_worker(p_job);
    jr sam.job_runs;
    r jsonb;
BEGIN
    IF rid = 0 THEN
        r := jsonb_build_object('success', true, 'skipped', true,
                                'reason', format('another run of %s is in progress', p_job));
        INSERT INTO sam.job_runs (job, finished_at, status, result) VALUES (p_job, clock_timestamp(), 'skipped', r);
        RETURN r;
    ELSIF rid < 0 THEN
        r := jsonb_build_object('success', false, 'error', CASE rid
            WHEN -1 THEN 'the sam_ext worker is not running'
            WHEN -2 THEN 'too many jobs are waiting for the worker'
            ELSE 'the sam_ext worker did not answer in time' END);
        INSERT INTO sam.job_runs (job, finished_at, status, error) VALUES (p_job, clock_timestamp(), 'failed', r->>'error');
        RAISE WARNING 'sam job % failed: %', p_job, r->>'error'
            USING HINT = 'Check that sam_ext is in shared_preload_libraries and that sam.database_name is this database.';
        RETURN r;
    END IF;
    SELECT * INTO jr FROM sam.job_runs WHERE id = rid;
    IF jr.status = 'succeeded' THEN
        RETURN jr.result;
    ELSIF jr.status = 'running' THEN
        RETURN jsonb_build_object('success', false, 'still_running', true, 'error', 'the run is still going on',
                                  'run_id', rid);
    END IF;
    RETURN jsonb_build_object('success', false, 'error', jr.error, 'run_id', rid);
END $$;

------------------------------------------------------------------------
-- check_relations: the seed's backup acceptance detection
------------------------------------------------------------------------

/*
 * sam._stale_without_id: the prospects whose invitation is pending longer
 * than their campaign's withdraw_after, and known without an id (it cannot
 * be withdrawn by id): what check_relations looks up in the sent list, and
 * ends once it is missing from every list.
 */
CREATE FUNCTION sam._stale_without_id(now_t timestamptz) RETURNS TABLE (id bigint, account_id text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pr.id, pr.account_id
      FROM sam.prospects pr
      JOIN sam.campaigns c ON c.id = pr.campaign_id
     WHERE pr.status = 'connection_request_sent' AND pr.invitation_id IS NULL
       AND pr.invited_at < now_t - c.withdraw_after
$$;

/*
 * sam._queue_withdrawals queues the withdrawals of up to n stale
 * invitations (pending longer than their campaign's withdraw_after), of one
 * active account or of all, the oldest first, for the job run: those known
 * by their id and not withdrawn before (a withdrawal that ended, dead or
 * done, is not made again), except one that found no invitation under a
 * former id (404): that one is made again under the id known now.  Returns
 * how many were queued.
 */
CREATE FUNCTION sam._queue_withdrawals(p_account_id text, p_run_id bigint, n integer) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    queued integer;
BEGIN
    INSERT INTO sam.outbox AS x (account_id, campaign_id, prospect_id, kind, idempotency_key, request, job_run_id)
    SELECT pr.account_id, pr.campaign_id, pr.id, 'withdraw_invite', 'withdraw:' || pr.id,
           jsonb_build_object('method', 'DELETE',
               'path', '/api/v1/users/invite/sent/' || sam._url_encode(pr.invitation_id),
               'query', jsonb_build_object('account_id', pr.account_id)),
           p_run_id
      FROM sam.prospects pr
      JOIN sam.campaigns c ON c.id = pr.campaign_id
      JOIN sam.accounts a ON a.account_id = pr.account_id AND a.status = 'active'
     WHERE (p_account_id IS NULL OR pr.account_id = p_account_id)
       AND pr.status = 'connection_request_sent' AND pr.invitation_id IS NOT NULL
       AND pr.invited_at < now_t - c.withdraw_after
       AND NOT EXISTS (SELECT 1 FROM sam.outbox w
                        WHERE w.account_id = pr.account_id AND w.idempotency_key = 'withdraw:' || pr.id
                          AND NOT (w.state = 'done' AND w.http_status = 404)
                       OFFSET 0)
     ORDER BY pr.invited_at
     LIMIT greatest(n, 0)
    ON CONFLICT (account_id, idempotency_key) DO UPDATE
       SET request = EXCLUDED.request, job_run_id = EXCLUDED.job_run_id, state = 'queued', attempts = 0,
           not_before = now_t, finished_at = NULL, claimed_at = NULL, claimed_by = NULL, http_status = NULL,
           error_type = NULL, response = NULL, outcome = NULL, duration_ms = NULL, updated_at = now_t,
           error = 'queued again: the invitation is pending under another id'
     WHERE x.state = 'done' AND x.http_status = 404;
    GET DIAGNOSTICS queued = ROW_COUNT;
    RETURN queued;
END $$;

/*
 * sam._job_check_relations_start: for every active account with
 * invitations pending, fetch the first page of its relations (newest
 * first); the page handler fetches the next one only while the relations
 * are newer than the oldest pending invitation.  Invitations pending longer
 * than their campaign's withdraw_after are withdrawn.
 */
CREATE FUNCTION sam._job_check_relations_start(p_run_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    now_t timestamptz := sam.now();
    checked integer := 0;
    accounts integer := 0;
    withdrawing integer := 0;
    stale_without_id integer := 0;
    errors jsonb := '[]';
BEGIN
    FOR a IN SELECT x.account_id, x.status, x.status_reason, count(*) AS pending, min(pr.invited_at) AS oldest
               FROM sam.accounts x
               JOIN sam.prospects pr ON pr.account_id = x.account_id AND pr.status = 'connection_request_sent'
              GROUP BY x.account_id
              ORDER BY x.account_id
    LOOP
        IF a.status <> 'active' THEN
            errors := errors || jsonb_build_array(jsonb_build_object('account_id', a.account_id,
                'error', format('account is %s%s', a.status, coalesce(' (' || a.status_reason || ')', ''))));
            CONTINUE;
        END IF;
        checked := checked + a.pending;
        accounts := accounts + 1;
        INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, job_run_id, context)
        VALUES (a.account_id, 'relations_page', format('relations:%s:1', p_run_id),
                jsonb_build_object('method', 'GET', 'path', '/api/v1/users/relations',
                                   'query', jsonb_build_object('account_id', a.account_id, 'limit', '100')),
                p_run_id,
                jsonb_build_object('page', 1,
                    -- relations made before the oldest pending invitation cannot be acceptances of it
                    'stop_before_ms', floor(extract(epoch FROM coalesce(a.oldest, now_t) - interval '1 hour') * 1000)));
    END LOOP;

    /*
     * Invitations confirmed without an id (already pending at LinkedIn, or
     * found by a check of an unknown outcome) cannot be withdrawn by id.
     * For active accounts with such stale ones, the list of pending sent
     * invitations is read: those found there get their id (and are
     * withdrawn), those missing from it are no longer pending at LinkedIn
     * (see sam._job_check_relations_finish).
     */
    WITH stale AS (
        SELECT s.account_id
          FROM sam._stale_without_id(now_t) s
          JOIN sam.accounts x ON x.account_id = s.account_id AND x.status = 'active'
    ), pages AS (
        INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, job_run_id, context)
        SELECT w.account_id, 'sent_invitations_page', format('sent_invitations:%s:1', p_run_id),
               jsonb_build_object('method', 'GET', 'path', '/api/v1/users/invite/sent',
                                  'query', jsonb_build_object('account_id', w.account_id, 'limit', '100')),
               p_run_id, jsonb_build_object('page', 1)
          FROM (SELECT DISTINCT st.account_id FROM stale st ORDER BY 1) w
    )
    SELECT count(*) INTO stale_without_id FROM stale;
    withdrawing := sam._queue_withdrawals(NULL, p_run_id, 50);   -- a run's: LinkedIn watches them too
    RETURN jsonb_build_object('checked', checked, 'accounts', accounts, 'withdrawing', withdrawing,
                              'stale_without_invitation_id', stale_without_id, 'errors', errors);
END $$;

CREATE FUNCTION sam._job_check_relations_finish(p_run_id bigint, started jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    accepted integer;
    pages integer;
    withdrawn integer;
    still integer;
    errors jsonb;
    looked_up integer;
    gone integer;
    missing bigint[];
    missing_before bigint[];
BEGIN
    -- the run's row first, as a page being recorded takes it (then the prospects): never the other order
    PERFORM 1 FROM sam.job_runs r WHERE r.id = p_run_id FOR NO KEY UPDATE;
    /*
     * A stale invitation without an id that is neither among the account's
     * pending sent invitations (the list read to its end in this run, each
     * item naming its person) nor among its relations (read back past the
     * oldest pending invitation, in this run, every page recorded) is no
     * longer pending at LinkedIn: declined and expired, or withdrawn by hand.
     * Twice in a row, in this run and the one before: an acceptance made
     * between the reads of one run is in neither list, and shows among the
     * relations of the next.  Its prospect then ends as withdrawn, so that
     * the campaign can complete (and its data reach their retention), and
     * the paging stops pinned to its age; later evidence of an acceptance,
     * or a reply, still counts (see sam._prospect_connected).
     */
    WITH read_through AS (
        SELECT o.account_id
          FROM sam.outbox o
         WHERE o.job_run_id = p_run_id AND o.kind IN ('sent_invitations_page', 'relations_page')
         GROUP BY o.account_id
        HAVING bool_and(o.state = 'done')
           AND bool_or(o.kind = 'sent_invitations_page' AND coalesce((o.outcome->>'complete')::boolean, false))
           AND bool_or(o.kind = 'relations_page' AND coalesce((o.outcome->>'complete')::boolean, false))
           AND coalesce(sum((o.outcome->>'unmatchable')::integer), 0) = 0
    )
    SELECT coalesce(array_agg(s.id ORDER BY s.id), '{}') INTO missing
      FROM read_through r
      JOIN sam._stale_without_id(now_t) s ON s.account_id = r.account_id;
    SELECT coalesce(ARRAY(SELECT x::bigint FROM jsonb_array_elements_text(r.result->'missing_from_both_lists') x), '{}')
      INTO missing_before
      FROM sam.job_runs r
     WHERE r.job = 'check-relations' AND r.id < p_run_id AND r.status = 'succeeded'
     ORDER BY r.id DESC LIMIT 1;
    WITH ended AS (
        UPDATE sam.prospects pr
           SET status = 'withdrawn', withdrawn_at = now_t, updated_at = now_t, follow_up_due_at = NULL,
               last_error = 'the invitation is no longer pending at LinkedIn (not among the sent invitations, '
                            || 'and the person is not a relation, in two runs): declined and expired, or withdrawn outside sam_ext'
         WHERE pr.id = ANY (missing) AND pr.id = ANY (coalesce(missing_before, '{}'))
           AND pr.status = 'connection_request_sent' AND pr.invitation_id IS NULL
        RETURNING 1
    )
    SELECT count(*) INTO gone FROM ended;

    SELECT coalesce(sum((o.outcome->>'accepted')::integer) FILTER (WHERE o.kind = 'relations_page'), 0),
           count(*) FILTER (WHERE o.kind = 'relations_page' AND o.state = 'done'),
           count(*) FILTER (WHERE o.kind = 'withdraw_invite' AND o.state = 'done'),
           coalesce(sum((o.outcome->>'found')::integer)
                    FILTER (WHERE o.kind = 'sent_invitations_page' AND o.state = 'done'), 0)
      INTO accepted, pages, withdrawn, looked_up
      FROM sam.outbox o WHERE o.job_run_id = p_run_id;
    SELECT count(*) INTO still FROM sam.prospects pr
      JOIN sam.accounts x ON x.account_id = pr.account_id AND x.status = 'active'
     WHERE pr.status = 'connection_request_sent';
    SELECT coalesce(started->'errors', '[]') || coalesce(jsonb_agg(DISTINCT jsonb_build_object('account_id', o.account_id,
               'error', CASE WHEN o.error_type IS NOT NULL OR o.state = 'dead'
                             THEN coalesce(o.error_type || ': ', '') || coalesce(o.error, o.state)
                             ELSE 'no answer from Unipile within sam.job_wait_timeout'
                                  || coalesce(' (last error: ' || o.error || ')', '') END)), '[]')
      INTO errors
      FROM sam.outbox o
     WHERE o.job_run_id = p_run_id AND o.state NOT IN ('done', 'cancelled');
    -- the run is over: its reads that did not happen are not needed any more
    UPDATE sam.outbox SET state = 'cancelled', finished_at = sam.now(), updated_at = sam.now(),
                          error = coalesce(error || '; ', '') || 'the job run ended without it'
     WHERE job_run_id = p_run_id AND kind IN ('relations_page', 'sent_invitations_page') AND state IN ('queued', 'failed');
    RETURN jsonb_build_object('checked', coalesce((started->>'checked')::integer, 0), 'accepted', accepted,
                              'still_pending', still, 'errors', errors, 'pages_fetched', pages,
                              'withdrawn', withdrawn, 'invitation_ids_found', looked_up,
                              'no_longer_pending', gone,
                              -- (ended if still so at the next run)
                              'missing_from_both_lists', to_jsonb(missing));
END $$;

CREATE FUNCTION sam.check_relations() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._await_job('check-relations') $$;
COMMENT ON FUNCTION sam.check_relations() IS 'Twice a day: backup acceptance detection from each account''s relations (newest first, paging stops at the oldest pending invitation); withdraws stale invitations';

/*
 * sam._page_read: one page of a job's paged read is applied.  Its outcome
 * (with next_page) is kept on its row, and the next page, if next_cursor
 * names one, is queued for the same run while it runs (once: the key is
 * the run and the page number).
 */
CREATE FUNCTION sam._page_read(o sam.outbox, outcome jsonb, next_cursor text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    page integer := coalesce((o.context->>'page')::integer, 1);
BEGIN
    -- the page's people are not kept: most are no prospect of ours (what matched is applied)
    UPDATE sam.outbox x SET outcome = _page_read.outcome || jsonb_build_object('next_page', next_cursor IS NOT NULL),
                            response = CASE WHEN jsonb_typeof(x.response->'items') = 'array'
                                            THEN (x.response - 'items')
                                                 || jsonb_build_object('items_not_kept', jsonb_array_length(x.response->'items'))
                                            ELSE x.response END
     WHERE x.id = o.id;
    IF next_cursor IS NOT NULL
       AND (o.job_run_id IS NULL
            OR EXISTS (SELECT 1 FROM sam.job_runs r WHERE r.id = o.job_run_id AND r.status = 'running')) THEN
        INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, job_run_id, context)
        VALUES (o.account_id, o.kind, format('%s:%s:%s', split_part(o.idempotency_key, ':', 1), o.job_run_id, page + 1),
                jsonb_set(o.request, '{query,cursor}', to_jsonb(next_cursor)),
                o.job_run_id, o.context || jsonb_build_object('page', page + 1))
        ON CONFLICT (account_id, idempotency_key) DO NOTHING;
    END IF;
END $$;

/*
 * sam._on_relations_page applies one page of relations: every prospect of
 * the account found there (member_id = provider_id) is connected at the
 * relation's created_at; the next page is fetched only while this page's
 * relations are all newer than the oldest pending invitation.
 */
CREATE FUNCTION sam._on_relations_page(o sam.outbox, resp jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    item jsonb;
    pr record;
    accepted integer := 0;
    oldest_ms numeric;
    n integer := 0;
    page integer := coalesce((o.context->>'page')::integer, 1);
    more boolean;
BEGIN
    -- (a page without its list is no proof of anything: not an end of the relations)
    IF jsonb_typeof(resp->'items') IS DISTINCT FROM 'array' THEN
        PERFORM sam._dead(o, 'bad_response', 'the list of relations has no items array');
        RETURN;
    END IF;
    FOR item IN SELECT * FROM jsonb_array_elements(resp->'items') LOOP
        n := n + 1;
        oldest_ms := least(oldest_ms, (item->>'created_at')::numeric);
        FOR pr IN SELECT x.id, x.provider_id, x.public_identifier FROM sam.prospects x
                   WHERE x.account_id = o.account_id
                     AND (x.status = 'connection_request_sent'
                          -- (ended as no longer pending without an id: an acceptance still counts)
                          OR (x.status = 'withdrawn' AND x.invitation_id IS NULL))
                     AND (x.provider_id = item->>'member_id'
                          OR (x.public_identifier IS NOT NULL AND x.public_identifier = lower(sam._url_decode(item->>'public_identifier'))))
        LOOP
            -- known until now by one identifier only: the other may be refused
            CONTINUE WHEN (pr.provider_id IS NULL OR pr.public_identifier IS NULL)
                          AND sam._learn_identifiers(pr.id, item->>'member_id', item->>'public_identifier') IS NOT NULL;
            IF sam._prospect_connected(pr.id, coalesce(to_timestamp((item->>'created_at')::numeric / 1000), sam.now()),
                                       'relations') THEN
                accepted := accepted + 1;
            END IF;
        END LOOP;
    END LOOP;
    more := resp->>'cursor' IS NOT NULL AND n > 0
            AND oldest_ms >= (o.context->>'stop_before_ms')::numeric AND page < 1000;
    PERFORM sam._page_read(o, jsonb_build_object('accepted', accepted, 'relations', n,
                                                 -- read back past the oldest pending invitation, or to the end
                                                 -- (not stopped by the page limit, nor by relations without a time)
                                                 'complete', NOT coalesce(more, false)
                                                             AND (coalesce(resp->>'cursor', '') = '' OR n = 0
                                                                  OR coalesce(oldest_ms < (o.context->>'stop_before_ms')::numeric, false))),
                           CASE WHEN more THEN resp->>'cursor' END);
END $$;

/*
 * sam._on_sent_invitations_page applies one page of the account's pending
 * sent invitations: each invitation of a prospect still waiting without an
 * id (invited_user_id = provider_id, or the public identifier) gives it its
 * id, and a stale one is withdrawn at once, within the run's 50
 * withdrawals.  The next page is fetched while there is one.
 */
CREATE FUNCTION sam._on_sent_invitations_page(o sam.outbox, resp jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    page integer := coalesce((o.context->>'page')::integer, 1);
    n integer;
    unmatchable integer;
    found_ids integer;
    room integer;
    more boolean;
    running boolean;
BEGIN
    -- (a page without its list is no proof that an invitation is missing from it)
    IF jsonb_typeof(resp->'items') IS DISTINCT FROM 'array' THEN
        PERFORM sam._dead(o, 'bad_response', 'the list of sent invitations has no items array');
        RETURN;
    END IF;
    SELECT count(*), count(*) FILTER (WHERE coalesce(i->>'id', '') = ''
                                        OR (coalesce(i->>'invited_user_id', '') = ''
                                            AND coalesce(i->>'invited_user_public_id', '') = ''))
      INTO n, unmatchable
      FROM jsonb_array_elements(resp->'items') i;
    -- the run's withdrawals are counted, and its next pages queued, under its row's lock (pages of one run
    -- are recorded by two workers at once), and only while it runs (a page recorded after its end)
    SELECT true INTO running FROM sam.job_runs r
     WHERE r.id = o.job_run_id AND r.status = 'running' FOR NO KEY UPDATE;
    running := coalesce(running, false);

    -- by provider id; by public identifier only for an item without one (a vanity URL can change hands)
    WITH items AS (
        SELECT i->>'id' AS invitation_id, nullif(i->>'invited_user_id', '') AS provider_id,
               lower(sam._url_decode(nullif(i->>'invited_user_public_id', ''))) AS public_identifier
          FROM jsonb_array_elements(resp->'items') i
         WHERE coalesce(i->>'id', '') <> ''
    ), cand AS (
        SELECT DISTINCT ON (pr.id) pr.id, it.invitation_id
          FROM items it
          JOIN sam.prospects pr ON pr.account_id = o.account_id AND pr.status = 'connection_request_sent'
                               AND pr.invitation_id IS NULL
                               AND (pr.provider_id = it.provider_id
                                    OR (it.provider_id IS NULL AND pr.public_identifier = it.public_identifier))
         ORDER BY pr.id, it.invitation_id
    ), given AS (
        UPDATE sam.prospects pr SET invitation_id = cand.invitation_id, updated_at = now_t
          FROM cand WHERE pr.id = cand.id
        RETURNING pr.id
    )
    SELECT count(*) INTO found_ids FROM given;

    -- the stale ones among them are withdrawn now, within the run's withdrawals (one whose withdrawal
    -- found no invitation under its former id is withdrawn again under this one)
    room := 50 - (SELECT count(*) FROM sam.outbox x
                   WHERE x.job_run_id = o.job_run_id AND x.kind = 'withdraw_invite');
    IF running AND found_ids > 0 AND room > 0 THEN
        PERFORM sam._queue_withdrawals(o.account_id, o.job_run_id, room);
    END IF;

    more := coalesce(resp->>'cursor', '') <> '' AND n > 0 AND page < 1000;
    PERFORM sam._page_read(o, jsonb_build_object('found', found_ids, 'invitations', n, 'unmatchable', unmatchable,
                                                 -- read to its end (not stopped by the page limit)
                                                 'complete', NOT more AND (coalesce(resp->>'cursor', '') = '' OR n = 0)),
                           CASE WHEN more AND running THEN resp->>'cursor' END);
END $$;

------------------------------------------------------------------------
-- process_follow_ups: the seed's "Send Follow-Up Messages" (hourly)
------------------------------------------------------------------------

/*
 * sam._job_process_follow_ups_start: the seed's steps.  Prospects whose
 * follow_up_due_at has come: not accepted yet -> wait for evidence (webhook,
 * relations; checked again a day later); all steps sent -> completed;
 * otherwise the next step is rendered from the prospect's current data and
 * queued (a new chat for the first message without one, else the known
 * chat), within the account's state, working hours, daily message cap and
 * spacing.  What cannot go now stays due, in its place (oldest due first).
 * A run takes at most 10,000 due prospects, and only of accounts that may
 * send now (active, in working hours, under the daily cap), besides the
 * acceptance checks and ended sequences of every active account: so the
 * steps that cannot go never fill the batch, run after run, while other
 * accounts' wait behind them (an account with more due than its cap fills
 * at most the run that reaches its cap).  A step already queued is looked
 * at again an hour after its message is to go.  Campaigns whose prospects
 * all reached a final state are completed.
 *
 * Set-based (bench/due_work.sh): the due prospects are locked in one
 * statement, their accounts in a second (in account order), and a third,
 * whose snapshot is taken once the locks are held (so the caps count every
 * message committed before), renders, queues, spaces and updates the whole
 * batch.  Within an account, messages go in due order, the k-th at the
 * account's next action time plus k-1 random spacings; a step that does not
 * render fails its prospect without using the account's budget.
 */
CREATE FUNCTION sam._job_process_follow_ups_start(p_run_id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    due_ids bigint[];
    answer jsonb;
    done_campaigns integer;
BEGIN
    -- (the active accounts and whether each may send now, worked out once per account:
    -- the caps are counted again once the accounts are locked, below)
    WITH acc AS MATERIALIZED (
        SELECT a.account_id,
               sam._in_working_hours(a, now_t)
               AND (a.messages_paused_until IS NULL OR a.messages_paused_until <= now_t)
               AND a.daily_message_cap > sam._actions_since(a.account_id, '{start_chat,send_message}',
                                                            sam._local_day_start(a, now_t)) AS sending
          FROM sam.accounts a
         WHERE a.status = 'active'
    )
    SELECT array_agg(s.id ORDER BY s.follow_up_due_at, s.id) INTO due_ids
      FROM (SELECT pr.id, pr.follow_up_due_at
              FROM sam.prospects pr
              JOIN sam.campaigns c ON c.id = pr.campaign_id AND c.status = 'running'
              JOIN acc ON acc.account_id = pr.account_id
             WHERE pr.follow_up_due_at <= now_t AND pr.status IN ('connection_request_sent', 'connected')
               AND (acc.sending OR pr.status = 'connection_request_sent'
                    OR pr.follow_up_sequence_index >= jsonb_array_length(c.follow_ups))
             ORDER BY pr.follow_up_due_at, pr.id
             LIMIT 10000
               FOR UPDATE OF pr SKIP LOCKED) s;

    -- one queuer per account at a time: caps and spacing are per account
    PERFORM 1 FROM sam.accounts a
     WHERE a.account_id IN (SELECT pr.account_id FROM sam.prospects pr
                             WHERE pr.id = ANY (due_ids) AND pr.status = 'connected')
     ORDER BY a.account_id
       FOR UPDATE OF a;

    WITH d AS MATERIALIZED (
        SELECT pr.id, pr.status, pr.account_id, pr.campaign_id, pr.chat_id, pr.provider_id,
               pr.follow_up_due_at, pr.follow_up_sequence_index + 1 AS step, c.follow_ups,
               pr.variables, pr.first_name, pr.last_name, pr.company, pr.title
          FROM sam.prospects pr
          JOIN sam.campaigns c ON c.id = pr.campaign_id AND c.status = 'running'
         WHERE pr.id = ANY (due_ids) AND pr.status IN ('connection_request_sent', 'connected')
    ),
    -- per account: messages left today, next action time, why it cannot send now
    b AS MATERIALIZED (
        SELECT a.account_id, greatest(now_t, coalesce(a.next_action_at, now_t)) AS t0,
               a.spacing_min, a.spacing_max, x.remaining,
               CASE WHEN a.status <> 'active' THEN format('account is %s', a.status)
                    WHEN NOT sam._in_working_hours(a, now_t) THEN 'outside working hours'
                    WHEN a.messages_paused_until > now_t
                    THEN format('messages paused until %s (LinkedIn limit reported)', a.messages_paused_until)
                    WHEN x.remaining <= 0 THEN 'daily message cap reached' END AS reason
          FROM sam.accounts a
         CROSS JOIN LATERAL (
               SELECT a.daily_message_cap - sam._actions_since(a.account_id, '{start_chat,send_message}',
                                                               sam._local_day_start(a, now_t)) AS remaining) x
         WHERE a.account_id IN (SELECT d.account_id FROM d WHERE d.status = 'connected')
    ),
    -- (without the campaign's steps and the prospect's variables: the CTEs after this one stay narrow)
    k AS MATERIALIZED (
        SELECT d.id, d.status, d.account_id, d.campaign_id, d.chat_id, d.provider_id, d.follow_up_due_at, d.step,
               b.reason, b.remaining, b.t0, b.spacing_min, b.spacing_max, q.not_before AS queued_for,
               CASE WHEN d.status = 'connection_request_sent' THEN 'not_connected_yet'
                    WHEN d.step > jsonb_array_length(d.follow_ups) THEN 'completed'
                    -- already queued for this step (an earlier run): it is on its way
                    WHEN q.not_before IS NOT NULL THEN 'on_its_way'
                    WHEN b.reason IS NOT NULL THEN 'deferred'
                    ELSE 'render' END AS what,
               CASE WHEN d.status = 'connected' AND d.step <= jsonb_array_length(d.follow_ups) AND b.reason IS NULL
                         AND q.not_before IS NULL
                    THEN sam._try_render(d.follow_ups->(d.step - 1)->>'template', d.variables,
                                         d.first_name, d.last_name, d.company, d.title) END AS out
          FROM d LEFT JOIN b ON b.account_id = d.account_id
          -- (OFFSET 0: a probe of the key per prospect, never a join planned from the outbox's
          -- statistics; a dead or cancelled message of a prospect connected again at that step, set
          -- back by hand, is rendered and goes again)
          LEFT JOIN LATERAL (SELECT o.not_before FROM sam.outbox o
                              WHERE d.status = 'connected' AND d.step <= jsonb_array_length(d.follow_ups)
                                AND o.account_id = d.account_id
                                AND o.idempotency_key = 'message:' || d.id || ':' || d.step
                                AND o.state NOT IN ('dead', 'cancelled')
                             OFFSET 0) q ON true
    ),
    -- the rendered messages, numbered per account in due order
    y AS MATERIALIZED (
        SELECT k.*, k.out[1] AS msg,
               row_number() OVER (PARTITION BY k.account_id ORDER BY k.follow_up_due_at, k.id) AS rn
          FROM k WHERE k.what = 'render' AND k.out[2] IS NULL
    ),
    -- those within the account's budget, each with its random spacing after it
    g AS MATERIALIZED (
        SELECT y.*, y.spacing_min + random() * (y.spacing_max - y.spacing_min) AS gap
          FROM y WHERE y.rn <= y.remaining
    ),
    s AS MATERIALIZED (
        SELECT g.*, g.t0 + coalesce(sum(g.gap) OVER (PARTITION BY g.account_id ORDER BY g.rn
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                                    interval '0') AS t
          FROM g
    ),
    ins AS (
        INSERT INTO sam.outbox AS o (account_id, campaign_id, prospect_id, kind, idempotency_key, request,
                                     not_before, job_run_id, context, created_at, updated_at)
        SELECT s.account_id, s.campaign_id, s.id, CASE WHEN s.chat_id IS NULL THEN 'start_chat' ELSE 'send_message' END,
               'message:' || s.id || ':' || s.step,
               CASE WHEN s.chat_id IS NULL
                    THEN jsonb_build_object('method', 'POST', 'path', '/api/v1/chats',
                             'form', jsonb_build_array(jsonb_build_array('account_id', s.account_id),
                                                       jsonb_build_array('attendees_ids', s.provider_id),
                                                       jsonb_build_array('text', s.msg)))
                    ELSE jsonb_build_object('method', 'POST',
                             'path', format('/api/v1/chats/%s/messages', sam._url_encode(s.chat_id)),
                             'form', jsonb_build_array(jsonb_build_array('text', s.msg),
                                                       jsonb_build_array('account_id', s.account_id))) END,
               s.t, p_run_id, jsonb_build_object('step', s.step, 'text', s.msg, 'chat_id', s.chat_id), now_t, now_t
          FROM s
         ORDER BY s.follow_up_due_at, s.id
        -- (a message whose outcome is unknown keeps what it sent: the check looks for that text)
        ON CONFLICT (account_id, idempotency_key) DO UPDATE SET
                kind = CASE WHEN o.needs_check THEN o.kind ELSE EXCLUDED.kind END,
                request = CASE WHEN o.needs_check THEN o.request ELSE EXCLUDED.request END,
                context = CASE WHEN o.needs_check THEN o.context ELSE EXCLUDED.context END,
                not_before = EXCLUDED.not_before, job_run_id = EXCLUDED.job_run_id, state = 'queued', attempts = 0,
                finished_at = NULL, claimed_at = NULL, claimed_by = NULL, http_status = NULL, error_type = NULL,
                response = NULL, duration_ms = NULL, outcome = NULL, bodies_removed_at = NULL,
                updated_at = EXCLUDED.updated_at,
                error = left(format('queued again (was %s%s)', o.state, ': ' || o.error), 1000)
         WHERE o.state IN ('dead', 'cancelled')
        RETURNING 1
    ),
    spaced AS (
        UPDATE sam.accounts a SET next_action_at = x.t_end
          FROM (SELECT s.account_id, max(s.t + s.gap) AS t_end FROM s GROUP BY s.account_id) x
         WHERE a.account_id = x.account_id
    ),
    -- not accepted yet: look again tomorrow; sequence ended: completed; step not renderable: failed;
    -- queued already: looked at again an hour after its message is to go (its delivery sets the
    -- next step's time before that)
    moved AS (
        UPDATE sam.prospects x
           SET follow_up_due_at = CASE m.what WHEN 'not_connected_yet' THEN now_t + interval '1 day'
                                              WHEN 'on_its_way' THEN greatest(m.queued_for, now_t) + interval '1 hour' END,
               status = CASE WHEN m.what IN ('not_connected_yet', 'on_its_way') THEN x.status
                             WHEN m.what = 'completed' THEN 'completed' ELSE 'failed' END,
               completed_at = CASE WHEN m.what = 'completed' THEN now_t ELSE x.completed_at END,
               failed_at = CASE WHEN m.what = 'failed' THEN now_t ELSE x.failed_at END,
               updated_at = CASE WHEN m.what IN ('not_connected_yet', 'on_its_way') THEN x.updated_at ELSE now_t END,
               last_error = CASE WHEN m.what = 'failed'
                                 THEN left(format('follow-up step %s: %s', m.step, m.out[2]), 1000)
                                 ELSE x.last_error END
          FROM (SELECT k.id, k.step, k.out, k.queued_for,
                       CASE WHEN k.what = 'render' THEN 'failed' ELSE k.what END AS what
                  FROM k
                 WHERE k.what IN ('not_connected_yet', 'completed', 'on_its_way')
                    OR (k.what = 'render' AND k.out[2] IS NOT NULL)) m
         WHERE x.id = m.id
        RETURNING m.what
    ),
    -- what the answer lists (at most 100), in due order: every due prospect but those whose message
    -- this run queued (the finish lists those with their outcome)
    listed AS (
        SELECT k.follow_up_due_at, k.id,
               CASE WHEN k.what = 'deferred'
                    THEN jsonb_build_object('prospect_id', k.id, 'step', k.step, 'status', 'deferred', 'reason', k.reason)
                    WHEN k.what = 'on_its_way'
                    THEN jsonb_build_object('prospect_id', k.id, 'step', k.step, 'status', 'on_its_way',
                                            'not_before', k.queued_for)
                    WHEN k.what = 'render'
                    THEN jsonb_build_object('prospect_id', k.id, 'step', k.step, 'status', 'failed',
                                            'error', k.out[2])
                    ELSE jsonb_build_object('prospect_id', k.id, 'status', k.what) END AS entry
          FROM k WHERE k.what IN ('not_connected_yet', 'completed', 'deferred', 'on_its_way')
                    OR (k.what = 'render' AND k.out[2] IS NOT NULL)
        UNION ALL
        SELECT y.follow_up_due_at, y.id,
               jsonb_build_object('prospect_id', y.id, 'step', y.step, 'status', 'deferred',
                                  'reason', 'daily message cap reached')
          FROM y WHERE y.rn > y.remaining
    )
    SELECT jsonb_build_object(
               'processed', (SELECT count(*) FROM k),
               'queued', (SELECT count(*) FROM ins),
               'completed', (SELECT count(*) FROM moved WHERE what = 'completed'),
               'failed', (SELECT count(*) FROM moved WHERE what = 'failed'),
               'pending', (SELECT count(*) FROM k WHERE k.what IN ('not_connected_yet', 'on_its_way', 'deferred'))
                          + (SELECT count(*) FROM y WHERE y.rn > y.remaining),
               'results', coalesce((SELECT jsonb_agg(l.entry ORDER BY l.follow_up_due_at, l.id)
                                      FROM (SELECT * FROM listed ORDER BY follow_up_due_at, id LIMIT 100) l), '[]'))
      INTO answer;

    -- the campaigns to complete are locked first, then looked at again in a statement of its own
    -- (a new snapshot): a prospect that left a final state meanwhile (its trigger locks the campaign)
    -- has committed by then, and is seen
    PERFORM 1 FROM sam.campaigns c
     WHERE c.status = 'running'
       AND EXISTS (SELECT 1 FROM sam.prospects x WHERE x.campaign_id = c.id)
       AND NOT EXISTS (SELECT 1 FROM sam.prospects x WHERE x.campaign_id = c.id
                          AND x.status IN ('pending', 'connection_request_sent', 'connected'))
     ORDER BY c.id
       FOR NO KEY UPDATE OF c;
    UPDATE sam.campaigns c SET status = 'completed', completed_at = now_t
     WHERE c.status = 'running'
       AND EXISTS (SELECT 1 FROM sam.prospects x WHERE x.campaign_id = c.id)
       AND NOT EXISTS (SELECT 1 FROM sam.prospects x WHERE x.campaign_id = c.id
                          AND x.status IN ('pending', 'connection_request_sent', 'connected'));
    GET DIAGNOSTICS done_campaigns = ROW_COUNT;

    RETURN answer || jsonb_build_object('campaigns_completed', done_campaigns);
END $$;


/*
 * sam._dsn_shown: the Unipile DSN as doctor() shows it to its readers
 * (sam_monitor among them, who may not read the setting itself): scheme,
 * host and port only, never a user or password written into it, nor a path
 * or query.
 */
CREATE FUNCTION sam._dsn_shown(dsn text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(btrim(dsn), '^([a-z][a-z0-9+.-]*://)?([^@/?#]*@)?([^/?#]*).*$', '\1\3', 'i')
$$;

/*
 * sam._job_process_follow_ups_finish: the answer.  sent counts only the
 * messages Unipile confirmed; pending, the due prospects whose message is
 * still on its way or deferred; failed, the prospects whose step failed
 * permanently; completed, the sequences that ended.
 */
CREATE FUNCTION sam._job_process_follow_ups_finish(p_run_id bigint, started jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sent integer;
    dead integer;
    waiting integer;
    cancelled integer;
    per jsonb;
BEGIN
    SELECT count(*) FILTER (WHERE o.state = 'done'),
           count(*) FILTER (WHERE o.state = 'dead'),
           count(*) FILTER (WHERE o.state IN ('queued', 'in_flight', 'failed')),
           count(*) FILTER (WHERE o.state = 'cancelled'),
           coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object('prospect_id', o.prospect_id,
               'step', (o.context->>'step')::integer,
               'status', CASE o.state WHEN 'done' THEN 'sent' WHEN 'dead' THEN 'failed'
                                      WHEN 'cancelled' THEN 'cancelled' ELSE 'pending' END,
               'error', CASE WHEN o.state <> 'done' THEN coalesce(o.error_type || ': ', '') || o.error END))
               ORDER BY o.id) FILTER (WHERE o.id IS NOT NULL), '[]')
      INTO sent, dead, waiting, cancelled, per
      FROM (SELECT * FROM sam.outbox x WHERE x.job_run_id = p_run_id ORDER BY x.id) o;
    IF jsonb_array_length(per) > 200 THEN
        per := (SELECT jsonb_agg(e) FROM (SELECT e FROM jsonb_array_elements(per) e LIMIT 200) s);
    END IF;
    RETURN jsonb_build_object(
        'processed', (started->>'processed')::integer,
        'sent', sent,
        'pending', (started->>'pending')::integer + waiting,
        'completed', (started->>'completed')::integer,
        'failed', (started->>'failed')::integer + dead,
        'cancelled', cancelled,
        'campaigns_completed', (started->>'campaigns_completed')::integer,
        'results', per || (started->'results'),
        'results_truncated', jsonb_array_length(per) + jsonb_array_length(started->'results')
                             < sent + dead + waiting + cancelled + (started->>'processed')::integer
                               - (started->>'queued')::integer);
END $$;

CREATE FUNCTION sam.process_follow_ups() RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._await_job('process-follow-ups') $$;
COMMENT ON FUNCTION sam.process_follow_ups() IS 'Hourly: sends the follow-up steps that are due (the seed''s job 3); answers sent (confirmed by Unipile), pending, completed, failed and per-prospect results';

------------------------------------------------------------------------
-- Scheduling with pg_cron, run health, doctor
------------------------------------------------------------------------

-- the jobs, their functions, the seed's schedules (UTC) and how late a success may be before an alert
CREATE FUNCTION sam._job_catalog()
RETURNS TABLE (job text, cron_name text, fn text, default_schedule text, expected_every interval)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('check-relations', 'sam-check-relations-am', 'check_relations', '0 9 * * *', interval '13 hours'),
           ('check-relations', 'sam-check-relations-pm', 'check_relations', '0 21 * * *', interval '13 hours'),
           ('process-follow-ups', 'sam-process-follow-ups', 'process_follow_ups', '0 * * * *', interval '1 hour'),
           ('execute-scheduled-campaigns', 'sam-execute-scheduled-campaigns', 'execute_scheduled_campaigns', '*/5 * * * *', interval '5 minutes'),
           ('process-pending-prospects', 'sam-process-pending-prospects', 'process_pending_prospects', '10 * * * *', interval '1 hour'),
           ('process-outbox', 'sam-process-outbox', 'process_outbox', '20 * * * *', interval '1 hour'),
           ('gdpr-cleanup', 'sam-gdpr-cleanup', 'gdpr_cleanup', '30 3 * * *', interval '1 day'),
           ('check-pending-notifications', 'sam-check-pending-notifications', 'check_pending_notifications', '*/5 * * * *', interval '5 minutes')
$$;

-- sam._cron_ready: pg_cron is installed in this database, or an error that says what to do
CREATE FUNCTION sam._cron_ready() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cron_db text := current_setting('cron.database_name', true);
BEGIN
    IF to_regprocedure('cron.schedule_in_database(text,text,text,text,text,boolean)') IS NOT NULL THEN
        RETURN;
    END IF;
    IF cron_db IS NULL THEN
        RAISE EXCEPTION 'pg_cron is not loaded'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add pg_cron to shared_preload_libraries (before sam_ext), restart, and CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    ELSIF cron_db = current_database() THEN
        RAISE EXCEPTION 'pg_cron is not installed in this database'
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Run CREATE EXTENSION pg_cron; here.';
    END IF;
    RAISE EXCEPTION 'pg_cron lives in database "%", not in "%"', cron_db, current_database()
        USING ERRCODE = 'object_not_in_prerequisite_state',
              HINT = format('Run SELECT sam.schedule_jobs(); in a session of "%s" is not possible: call there SELECT cron.schedule_in_database(job_name, schedule, command, %L) for each row of SELECT * FROM sam.job_schedule_commands();',
                            cron_db, current_database());
END $$;

-- sam.job_schedule_commands: what schedule_jobs would schedule (for a pg_cron in another database)
CREATE FUNCTION sam.job_schedule_commands(schedules jsonb DEFAULT '{}')
RETURNS TABLE (job_name text, schedule text, command text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text;
BEGIN
    IF schedules IS NULL OR jsonb_typeof(schedules) <> 'object' THEN
        PERFORM sam._invalid('schedules', 'must be a JSON object {"job name": "cron schedule"}');
    END IF;
    FOR k IN SELECT jsonb_object_keys(schedules) LOOP
        IF NOT EXISTS (SELECT 1 FROM sam._job_catalog() c WHERE c.cron_name = k OR c.job = k) THEN
            PERFORM sam._invalid('schedules', format('unknown job "%s"', k),
                'Jobs: ' || (SELECT string_agg(DISTINCT c.job, ', ') FROM sam._job_catalog() c)
                || ' (check-relations has two: sam-check-relations-am and -pm).');
        END IF;
        IF jsonb_typeof(schedules->k) <> 'string' OR schedules->>k !~ '^\s*(\S+\s+){4}\S+\s*$' THEN
            PERFORM sam._invalid('schedules', format('"%s" for %s is not a five-field cron schedule', schedules->>k, k));
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT c.cron_name, coalesce(schedules->>c.cron_name, schedules->>c.job, c.default_schedule),
           format('SELECT sam.%I()', c.fn)
      FROM sam._job_catalog() c
     WHERE to_regprocedure(format('sam.%I()', c.fn)) IS NOT NULL      -- jobs built so far
     ORDER BY c.cron_name;
END $$;
COMMENT ON FUNCTION sam.job_schedule_commands(jsonb) IS 'The pg_cron jobs sam.schedule_jobs() creates: name, schedule (UTC), command';

CREATE FUNCTION sam.schedule_jobs(schedules jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    out jsonb := '[]';
    id bigint;
BEGIN
    PERFORM sam._cron_ready();
    FOR r IN SELECT * FROM sam.job_schedule_commands(schedules) LOOP
        -- pg_cron upserts by job name: calling again updates the schedule
        EXECUTE 'SELECT cron.schedule_in_database($1, $2, $3, $4)' INTO id
          USING r.job_name, r.schedule, r.command, current_database();
        out := out || jsonb_build_array(jsonb_build_object('job_name', r.job_name, 'schedule', r.schedule,
                                                           'command', r.command, 'jobid', id));
    END LOOP;
    RETURN jsonb_build_object('success', true, 'database', current_database(), 'jobs', out);
END $$;
COMMENT ON FUNCTION sam.schedule_jobs(jsonb) IS 'Creates or updates the named pg_cron jobs with the seed''s schedules (UTC); {"job": "schedule"} overrides';

CREATE FUNCTION sam.unschedule_jobs() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := 0;
    c record;
BEGIN
    PERFORM sam._cron_ready();
    FOR c IN SELECT DISTINCT x.cron_name FROM sam._job_catalog() x LOOP
        IF EXISTS (SELECT 1 FROM cron.job j WHERE j.jobname = c.cron_name) THEN
            EXECUTE 'SELECT cron.unschedule($1::name)' USING c.cron_name;
            n := n + 1;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('success', true, 'unscheduled', n);
END $$;
COMMENT ON FUNCTION sam.unschedule_jobs() IS 'Removes exactly the pg_cron jobs sam.schedule_jobs() created';

-- the schedules pg_cron holds for sam's jobs (none when pg_cron is absent)
CREATE FUNCTION sam._cron_jobs() RETURNS TABLE (jobname text, schedule text, active boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE 'SELECT jobname::text, schedule::text, active FROM cron.job WHERE jobname LIKE ''sam-%''';
END $$;

CREATE VIEW sam.job_health AS
SELECT c.job,
       string_agg(DISTINCT cj.schedule, ' and ') AS schedule,
       bool_or(cj.active) AS scheduled,
       (SELECT max(r.started_at) FROM sam.job_runs r WHERE r.job = c.job) AS last_start,
       (SELECT max(r.finished_at) FROM sam.job_runs r WHERE r.job = c.job AND r.status = 'succeeded') AS last_success,
       (SELECT r.error FROM sam.job_runs r WHERE r.job = c.job AND r.status = 'failed' ORDER BY r.started_at DESC LIMIT 1) AS last_error,
       (SELECT count(*) FROM sam.job_runs r WHERE r.job = c.job AND r.started_at > clock_timestamp() - interval '24 hours') AS runs_24h,
       (SELECT count(*) FROM sam.job_runs r WHERE r.job = c.job AND r.status = 'failed'
           AND r.started_at > clock_timestamp() - interval '24 hours') AS failures_24h,
       bool_or(cj.active) IS TRUE
         AND EXISTS (SELECT 1 FROM sam.job_runs r WHERE r.job = c.job)
         AND coalesce((SELECT max(r.finished_at) FROM sam.job_runs r WHERE r.job = c.job AND r.status = 'succeeded')
                        < clock_timestamp() - max(c.expected_every) * 2, true) AS late
  FROM sam._job_catalog() c
  LEFT JOIN sam._cron_jobs() cj ON cj.jobname = c.cron_name
 WHERE to_regprocedure(format('sam.%I()', c.fn)) IS NOT NULL
 GROUP BY c.job;
COMMENT ON VIEW sam.job_health IS 'One row per job: schedule, last start, last success, last error, runs and failures in 24 h, late (scheduled, has run, and no success within twice its interval): what an alert checks';

CREATE FUNCTION sam.doctor()
RETURNS TABLE ("check" text, ok boolean, detail text, hint text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
    t text;
BEGIN
    "check" := 'pg_cron installed';
    ok := to_regclass('cron.job') IS NOT NULL;
    detail := CASE WHEN ok THEN 'cron.database_name = ' || coalesce(current_setting('cron.database_name', true), '?')
                   ELSE 'pg_cron is not installed in this database' END;
    hint := CASE WHEN NOT ok THEN 'Preload pg_cron and CREATE EXTENSION pg_cron (see sam.schedule_jobs()).' END;
    RETURN NEXT;

    SELECT count(*) FILTER (WHERE NOT coalesce(h.scheduled, false)), string_agg(h.job, ', ') FILTER (WHERE NOT coalesce(h.scheduled, false))
      INTO n, t FROM sam.job_health h;
    "check" := 'jobs scheduled and enabled'; ok := n = 0;
    detail := CASE WHEN ok THEN 'every job has an active pg_cron schedule' ELSE 'not scheduled: ' || t END;
    hint := CASE WHEN NOT ok THEN 'SELECT sam.schedule_jobs();' END;
    RETURN NEXT;

    SELECT count(*) FILTER (WHERE NOT w.ready), string_agg(w.pid::text, ', ' ORDER BY w.worker) FILTER (WHERE w.ready)
      INTO n, t FROM sam.workers() w;
    "check" := 'worker running'; ok := sam.worker_pid() IS NOT NULL AND n = 0;
    detail := CASE WHEN ok AND t LIKE '%,%' THEN 'pids ' || t WHEN ok THEN 'pid ' || t
                   WHEN t IS NOT NULL THEN format('%s of the %s workers (sam.workers) not running', n,
                                                  current_setting('sam.workers'))
                   ELSE 'no sam_ext worker serves this database' END;
    hint := CASE WHEN NOT ok AND t IS NOT NULL
                 THEN 'Look for "too many background workers" in the server log: max_worker_processes must cover sam.workers, pg_cron and parallel queries (restart after raising it).'
                 WHEN NOT ok THEN format('Check shared_preload_libraries and that sam.database_name (%s) is this database (%s).',
                                         current_setting('sam.database_name'), current_database()) END;
    RETURN NEXT;

    "check" := 'Unipile DSN configured'; ok := current_setting('sam.unipile_dsn') <> '';
    detail := CASE WHEN ok THEN sam._dsn_shown(current_setting('sam.unipile_dsn'))
                   ELSE 'sam.unipile_dsn is empty: nothing is sent' END;
    hint := CASE WHEN NOT ok THEN 'ALTER SYSTEM SET sam.unipile_dsn = ''https://apiN.unipile.com:PORT''; SELECT pg_reload_conf();' END;
    RETURN NEXT;

    "check" := 'Unipile API key configured'; ok := current_setting('sam.unipile_api_key_file') <> '';
    detail := CASE WHEN ok THEN 'read from sam.unipile_api_key_file' ELSE 'sam.unipile_api_key_file is empty' END;
    hint := CASE WHEN NOT ok THEN 'Put the key alone in a file readable by postgres only and name it in sam.unipile_api_key_file.' END;
    RETURN NEXT;

    SELECT count(*), string_agg(account_id || ' (' || coalesce(status_reason, '?') || ')', ', ') INTO n, t
      FROM sam.accounts WHERE status = 'disconnected';
    "check" := 'accounts connected'; ok := n = 0;
    detail := CASE WHEN ok THEN 'no disconnected account' ELSE n || ' disconnected: ' || t END;
    hint := CASE WHEN NOT ok THEN 'Reconnect the account in Unipile; the account_status webhook (or sam.resume_account()) makes it active again.' END;
    RETURN NEXT;

    SELECT max(received_at) INTO t FROM sam.webhook_events;
    "check" := 'webhooks received recently';
    ok := EXISTS (SELECT 1 FROM sam.webhook_events WHERE received_at > sam.now() - interval '24 hours')
          OR NOT EXISTS (SELECT 1 FROM sam.prospects WHERE status = 'connection_request_sent');
    detail := coalesce('last webhook at ' || t, 'no webhook ever received');
    hint := CASE WHEN NOT ok THEN 'Check the webhooks registered at Unipile (POST /api/v1/webhooks) and the ingest (GET /healthz).' END;
    RETURN NEXT;

    -- (webhook_events_failed_idx: the failed ones only)
    SELECT count(*) INTO n FROM sam.webhook_events WHERE error IS NOT NULL;
    "check" := 'webhooks applied'; ok := n = 0;
    detail := CASE WHEN ok THEN 'no stored webhook failed to apply' ELSE n || ' stored webhooks failed to apply' END;
    hint := CASE WHEN NOT ok THEN 'SELECT id, event, error FROM sam.webhook_events WHERE error IS NOT NULL; then SELECT sam.retry_webhooks();' END;
    RETURN NEXT;

    SELECT count(*), string_agg(job, ', ') INTO n, t FROM sam.job_health WHERE late OR failures_24h > 0;
    "check" := 'jobs on time and succeeding'; ok := n = 0;
    detail := CASE WHEN ok THEN 'no job late or failing' ELSE 'late or failing: ' || t END;
    hint := CASE WHEN NOT ok THEN 'SELECT * FROM sam.job_health; SELECT * FROM sam.job_runs WHERE status = ''failed'' ORDER BY id DESC;' END;
    RETURN NEXT;

    SELECT count(*) INTO n FROM sam.outbox
     WHERE state = 'dead' AND kind <> 'notify' AND finished_at > sam.now() - interval '7 days';
    "check" := 'no dead Unipile calls'; ok := n = 0;
    detail := n || ' dead in the last 7 days';
    hint := CASE WHEN NOT ok THEN 'SELECT kind, error_type, error, count(*) FROM sam.outbox WHERE state = ''dead'' GROUP BY 1, 2, 3;' END;
    RETURN NEXT;

    SELECT count(*) FILTER (WHERE notified_at IS NULL AND created_at < sam.now() - interval '15 minutes'),
           count(*) FILTER (WHERE http_state = 'dead' AND created_at > sam.now() - interval '24 hours')
      INTO n, t FROM sam.notifications;
    "check" := 'notifications delivered'; ok := n = 0 AND t::bigint = 0;
    detail := format('%s waiting longer than 15 minutes, %s hook deliveries dead in 24 hours', n, t);
    hint := CASE WHEN n > 0 THEN 'Schedule sam.check_pending_notifications() (SELECT sam.schedule_jobs();).'
                 WHEN NOT ok THEN 'The notification URL refused or failed: SELECT error FROM sam.outbox WHERE kind = ''notify'' AND state = ''dead'';' END;
    RETURN NEXT;
END $$;
COMMENT ON FUNCTION sam.doctor() IS 'The seed''s troubleshooting list as rows: check, ok, detail, hint';

------------------------------------------------------------------------
-- Notifications: events for people, delivered by pg_notify and, where a
-- hook URL is set, by an HTTP POST the worker makes (kind 'notify')
------------------------------------------------------------------------

CREATE TABLE sam.notification_hooks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id text REFERENCES sam.accounts (account_id) ON UPDATE CASCADE ON DELETE CASCADE,
    url text NOT NULL,
    events text[],
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    CONSTRAINT notification_hooks_scope UNIQUE NULLS NOT DISTINCT (account_id),
    CONSTRAINT notification_hooks_url_valid CHECK (char_length(url) <= 2000
        AND url ~* '^https?://[a-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$')
);
COMMENT ON TABLE sam.notification_hooks IS 'Where notifications are POSTed: one URL for the workspace (account_id NULL) and one per account; an account''s own hook wins';
COMMENT ON COLUMN sam.notification_hooks.events IS 'The events sent to this hook (NULL: all)';
SELECT pg_catalog.pg_extension_config_dump('sam.notification_hooks', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.notification_hooks', 'id'), '');

CREATE TABLE sam.notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event text NOT NULL,
    account_id text,
    campaign_id bigint,
    prospect_id bigint,
    dedupe_key text NOT NULL,
    text text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    notified_at timestamptz,
    http_state text NOT NULL DEFAULT 'pending',
    http_outbox_id bigint,
    http_delivered_at timestamptz,
    http_error text,
    delivered_via text[] NOT NULL DEFAULT '{}',
    CONSTRAINT notifications_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT notifications_event_valid CHECK (event IN ('connection_accepted', 'prospect_replied',
        'account_disconnected', 'account_reconnected', 'campaign_completed', 'job_failing', 'delivery_dead')),
    CONSTRAINT notifications_http_state_valid CHECK (http_state IN ('pending', 'none', 'queued', 'delivered', 'dead'))
);
CREATE INDEX notifications_pending_idx ON sam.notifications (id) WHERE notified_at IS NULL;
CREATE INDEX notifications_prospect_idx ON sam.notifications (prospect_id) WHERE prospect_id IS NOT NULL;
CREATE INDEX notifications_created_idx ON sam.notifications (created_at);
COMMENT ON TABLE sam.notifications IS 'Events for people (acceptances, replies, accounts, campaigns, failing jobs, dead calls), each delivered once by sam.check_pending_notifications()';
COMMENT ON COLUMN sam.notifications.notified_at IS 'When pg_notify(''sam_notifications'', ...) announced it (sent at that transaction''s commit)';
COMMENT ON COLUMN sam.notifications.http_state IS 'pending (not looked at yet), none (no hook), queued (POST in the outbox), delivered, dead';
COMMENT ON COLUMN sam.notifications.delivered_via IS 'How it was delivered: notify, http';
SELECT pg_catalog.pg_extension_config_dump('sam.notifications', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.notifications', 'id'), '');

-- sam._notify: records a notification once (dedupe_key); delivery is check_pending_notifications' job
CREATE FUNCTION sam._notify(p_event text, p_key text, p_text text, p_account_id text, p_campaign_id bigint,
                            p_prospect_id bigint, p_details jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO sam.notifications (event, dedupe_key, text, account_id, campaign_id, prospect_id, details)
    VALUES (p_event, p_key, left(p_text, 3000), p_account_id, p_campaign_id, p_prospect_id, coalesce(p_details, '{}'))
    ON CONFLICT (dedupe_key) DO NOTHING
$$;

-- how a prospect is named in a notification
CREATE FUNCTION sam._prospect_label(p sam.prospects) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(nullif(concat_ws(' ', p.first_name, p.last_name), ''), p.public_identifier, p.provider_id)
           || coalesce(' (' || p.company || ')', '')
$$;

CREATE FUNCTION sam._prospect_notify_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cname text;
BEGIN
    SELECT c.name INTO cname FROM sam.campaigns c WHERE c.id = NEW.campaign_id;
    IF NEW.status = 'connected' THEN
        PERFORM sam._notify('connection_accepted', 'connection_accepted:' || NEW.id,
            format('%s accepted the connection request (campaign "%s", account %s)',
                   sam._prospect_label(NEW), cname, NEW.account_id),
            NEW.account_id, NEW.campaign_id, NEW.id, jsonb_build_object('via', NEW.connected_via));
    ELSIF NEW.status = 'replied' THEN
        PERFORM sam._notify('prospect_replied', 'prospect_replied:' || NEW.id,
            format('%s replied (campaign "%s", account %s)', sam._prospect_label(NEW), cname, NEW.account_id),
            NEW.account_id, NEW.campaign_id, NEW.id, jsonb_build_object('chat_id', NEW.chat_id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER prospects_notify AFTER UPDATE OF status ON sam.prospects
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status IN ('connected', 'replied'))
    EXECUTE FUNCTION sam._prospect_notify_trigger();

/*
 * A campaign completes by itself once every prospect of it is in a final
 * state (process_follow_ups).  A prospect that leaves a final state again
 * (a late acceptance of an invitation ended as no longer pending; a failed
 * prospect set back by hand to pending or connected, as README says) makes
 * its completed campaign run again: the jobs take only running campaigns'
 * prospects, so it would otherwise stay connected for ever with no
 * follow-up, and the campaign could be neither resumed nor started.
 */
CREATE FUNCTION sam._prospect_reopened_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- (the row locked first, whatever its state: a completion under way is waited for and then seen,
    -- and one that comes after waits for this transaction and sees the prospect; see
    -- _job_process_follow_ups_start)
    PERFORM 1 FROM sam.campaigns c WHERE c.id = NEW.campaign_id FOR NO KEY UPDATE;
    UPDATE sam.campaigns c SET status = 'running', completed_at = NULL
     WHERE c.id = NEW.campaign_id AND c.status = 'completed';
    IF FOUND THEN
        RAISE LOG 'sam_ext: campaign % runs again: its prospect % is % again', NEW.campaign_id, NEW.id, NEW.status;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER prospects_reopen_campaign AFTER UPDATE OF status ON sam.prospects
    FOR EACH ROW WHEN (OLD.status IN ('replied', 'completed', 'failed', 'withdrawn')
                       AND NEW.status IN ('pending', 'connection_request_sent', 'connected'))
    EXECUTE FUNCTION sam._prospect_reopened_trigger();

CREATE FUNCTION sam._account_notify_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k text := NEW.account_id || ':' || extract(epoch FROM coalesce(NEW.status_changed_at, sam.now()))::text;
BEGIN
    IF NEW.status = 'disconnected' THEN
        PERFORM sam._notify('account_disconnected', 'account_disconnected:' || k,
            format('LinkedIn account %s is disconnected (%s): nothing is sent for it until it is reconnected',
                   NEW.account_id, coalesce(NEW.status_reason, 'no reason given')),
            NEW.account_id, NULL, NULL, jsonb_build_object('reason', NEW.status_reason));
    ELSE
        PERFORM sam._notify('account_reconnected', 'account_reconnected:' || k,
            format('LinkedIn account %s is connected again', NEW.account_id), NEW.account_id, NULL, NULL);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_notify AFTER UPDATE OF status ON sam.accounts
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       AND (NEW.status = 'disconnected' OR (OLD.status = 'disconnected' AND NEW.status = 'active')))
    EXECUTE FUNCTION sam._account_notify_trigger();

CREATE FUNCTION sam._campaign_notify_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f record;
BEGIN
    SELECT count(*) AS prospects, count(p.connected_at) AS connected, count(p.replied_at) AS replied
      INTO f FROM sam.prospects p WHERE p.campaign_id = NEW.id;
    -- (one per completion: a campaign runs again when a prospect leaves a final state, and may
    -- complete again)
    PERFORM sam._notify('campaign_completed', 'campaign_completed:' || NEW.id || ':' || extract(epoch FROM NEW.completed_at),
        format('Campaign "%s" is completed: %s prospects, %s connected, %s replied',
               NEW.name, f.prospects, f.connected, f.replied),
        NEW.account_id, NEW.id, NULL,
        jsonb_build_object('prospects', f.prospects, 'connected', f.connected, 'replied', f.replied));
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_notify AFTER UPDATE OF status ON sam.campaigns
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'completed')
    EXECUTE FUNCTION sam._campaign_notify_trigger();

/*
 * A call that gave up: people are told; a notification POST that gave up is
 * marked on its notification.  While an account's delivery_dead
 * notification waits for delivery, later dead calls of that account are
 * folded into it (a count, the latest call, the first 20 outbox ids), so
 * that an outage makes one message per account and delivery run, not one
 * per call.
 */
CREATE FUNCTION sam._outbox_dead_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prospect text := coalesce(', prospect ' || NEW.prospect_id, '');
    err text := coalesce(NEW.error, NEW.error_type, 'no detail');
    n sam.notifications;
    cnt integer;
BEGIN
    IF NEW.kind = 'notify' THEN
        UPDATE sam.notifications SET http_state = 'dead', http_error = left(NEW.error, 1000)
         WHERE id = (NEW.context->>'notification_id')::bigint AND http_state = 'queued';
        RETURN NULL;
    END IF;
    SELECT * INTO n FROM sam.notifications x
     WHERE x.notified_at IS NULL AND x.event = 'delivery_dead' AND x.account_id = NEW.account_id
     ORDER BY x.id DESC LIMIT 1
       FOR UPDATE;
    IF FOUND THEN
        cnt := coalesce((n.details->>'count')::integer, 1) + 1;
        UPDATE sam.notifications
           SET text = left(format('%s Unipile calls gave up for good (account %s); the latest (%s%s): %s',
                                  cnt, NEW.account_id, NEW.kind, prospect, err), 3000),
               details = n.details || jsonb_build_object(
                   'count', cnt, 'latest_outbox_id', NEW.id, 'latest_kind', NEW.kind,
                   'latest_error_type', NEW.error_type,
                   'outbox_ids', CASE WHEN jsonb_array_length(coalesce(n.details->'outbox_ids', '[]')) < 20
                                      THEN coalesce(n.details->'outbox_ids', '[]') || to_jsonb(NEW.id)
                                      ELSE n.details->'outbox_ids' END)
         WHERE id = n.id;
    ELSE
        -- (one per death: a call queued again, by hand, may die again; the account's, not a prospect's:
        -- erasing the prospect of its first call must not take the outage's alert with it)
        PERFORM sam._notify('delivery_dead', 'delivery_dead:' || NEW.id || ':' || extract(epoch FROM NEW.finished_at),
            format('A Unipile call gave up for good (%s, account %s%s): %s', NEW.kind, NEW.account_id, prospect, err),
            NEW.account_id, NEW.campaign_id, NULL,
            jsonb_build_object('outbox_id', NEW.id, 'kind', NEW.kind, 'error_type', NEW.error_type,
                               'count', 1, 'outbox_ids', jsonb_build_array(NEW.id)));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_dead_notify AFTER UPDATE OF state ON sam.outbox
    FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state IS DISTINCT FROM 'dead')
    EXECUTE FUNCTION sam._outbox_dead_trigger();

-- a job that starts failing (its previous finished run did not fail): one notification per streak
CREATE FUNCTION sam._job_run_notify_trigger() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (SELECT r.status FROM sam.job_runs r
         WHERE r.job = NEW.job AND r.id < NEW.id AND r.status IN ('succeeded', 'failed')
         ORDER BY r.id DESC LIMIT 1) IS DISTINCT FROM 'failed' THEN
        PERFORM sam._notify('job_failing', 'job_failing:' || NEW.id,
            format('Job %s failed: %s', NEW.job, coalesce(NEW.error, 'no detail')), NULL, NULL, NULL,
            jsonb_build_object('job', NEW.job, 'run_id', NEW.id));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER job_runs_notify AFTER INSERT OR UPDATE OF status ON sam.job_runs
    FOR EACH ROW WHEN (NEW.status = 'failed')
    EXECUTE FUNCTION sam._job_run_notify_trigger();

-- sam._check_hook_url: an http(s) URL, or an invalid_parameter_value error naming the field
CREATE FUNCTION sam._check_hook_url(url text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF url IS NULL OR char_length(url) > 2000 OR url !~* '^https?://[a-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$' THEN
        PERFORM sam._invalid('url', 'must be an http:// or https:// URL without spaces, at most 2000 characters',
                             'For example a Slack incoming webhook: https://hooks.slack.com/services/...');
    END IF;
    IF coalesce(substring(url FROM '^[^/]*//[^/:]+:([0-9]+)')::integer, 1) NOT BETWEEN 1 AND 65535 THEN
        PERFORM sam._invalid('url', 'its port must be between 1 and 65535');
    END IF;
    RETURN url;
END $$;

CREATE FUNCTION sam.set_notification_url(url text, account_id text DEFAULT NULL, events text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text;
BEGIN
    IF set_notification_url.account_id IS NOT NULL THEN
        PERFORM sam._account_or_fail(set_notification_url.account_id);
    END IF;
    IF url IS NULL THEN
        DELETE FROM sam.notification_hooks h WHERE h.account_id IS NOT DISTINCT FROM set_notification_url.account_id;
        RETURN jsonb_build_object('success', true, 'account_id', set_notification_url.account_id, 'removed', FOUND);
    END IF;
    PERFORM sam._check_hook_url(url);
    IF events IS NOT NULL AND cardinality(events) = 0 THEN
        PERFORM sam._invalid('events', 'must name at least one event, or be NULL for all of them');
    END IF;
    IF array_ndims(events) > 1 THEN
        PERFORM sam._invalid('events', 'must be a list of event names, not an array of arrays');
    END IF;
    IF (SELECT count(DISTINCT e) <> count(e) FROM unnest(events) e) THEN
        PERFORM sam._invalid('events', 'names an event twice');
    END IF;
    SELECT e INTO bad FROM unnest(events) e
     WHERE e IS NULL OR e NOT IN ('connection_accepted', 'prospect_replied', 'account_disconnected',
                                  'account_reconnected', 'campaign_completed', 'job_failing', 'delivery_dead')
     LIMIT 1;
    IF FOUND THEN
        PERFORM sam._invalid('events', format('unknown event "%s"', coalesce(bad, 'NULL')),
            'Events: connection_accepted, prospect_replied, account_disconnected, account_reconnected, campaign_completed, job_failing, delivery_dead.');
    END IF;
    INSERT INTO sam.notification_hooks (account_id, url, events)
    VALUES (set_notification_url.account_id, url, events)
    ON CONFLICT ON CONSTRAINT notification_hooks_scope DO UPDATE SET url = EXCLUDED.url, events = EXCLUDED.events;
    -- the URL often holds a token (Slack): the answer names its host only
    RETURN jsonb_build_object('success', true, 'account_id', set_notification_url.account_id,
                              'host', substring(url FROM '^https?://([^/:]+)'), 'events', to_jsonb(events));
END $$;
COMMENT ON FUNCTION sam.set_notification_url(text, text, text[]) IS 'Sets (or with NULL removes) the URL notifications are POSTed to: the workspace''s (account_id NULL) or an account''s';

-- the hook a notification goes to: the account's own, else the workspace's
CREATE FUNCTION sam._hook_for(n sam.notifications) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.url FROM sam.notification_hooks h
     WHERE (h.account_id = n.account_id OR h.account_id IS NULL)
       AND (h.events IS NULL OR n.event = ANY (h.events))
     ORDER BY h.account_id NULLS LAST
     LIMIT 1
$$;

/*
 * sam._job_check_pending_notifications: every notification not yet
 * announced is sent with pg_notify on channel sam_notifications (delivered
 * at commit, so exactly once with the row's notified_at) and, where a hook
 * applies, queued as an HTTP POST for the worker (retried with backoff).
 */
CREATE FUNCTION sam._job_check_pending_notifications() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n sam.notifications;
    hook text;
    oid bigint;
    now_t timestamptz := sam.now();
    notified integer := 0;
    queued integer := 0;
    msg jsonb;
BEGIN
    FOR n IN SELECT * FROM sam.notifications x WHERE x.notified_at IS NULL ORDER BY x.id LIMIT 10000
             FOR UPDATE SKIP LOCKED LOOP
        -- (ids only: any role that can connect may LISTEN, whatever it may read; the text, with the
        -- person's name, is read from sam.notifications by those allowed to)
        msg := jsonb_build_object('id', n.id, 'event', n.event, 'account_id', n.account_id,
                                  'campaign_id', n.campaign_id, 'prospect_id', n.prospect_id, 'at', n.created_at);
        PERFORM pg_notify('sam_notifications', msg::text);
        notified := notified + 1;
        hook := sam._hook_for(n);
        oid := NULL;
        IF hook IS NOT NULL THEN
            INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, context)
            VALUES (n.account_id, n.campaign_id, n.prospect_id, 'notify', 'notify:' || n.id,
                    jsonb_build_object('method', 'POST', 'path', hook,
                                       'json', jsonb_build_object('text', n.text, 'event', n.event, 'id', n.id,
                                                                  'account_id', n.account_id, 'campaign_id', n.campaign_id,
                                                                  'prospect_id', n.prospect_id, 'details', n.details,
                                                                  'at', n.created_at)),
                    jsonb_build_object('notification_id', n.id))
            ON CONFLICT ON CONSTRAINT outbox_idempotency_key DO NOTHING
            RETURNING id INTO oid;
            queued := queued + 1;
        END IF;
        UPDATE sam.notifications SET notified_at = now_t, delivered_via = ARRAY['notify'],
                                     http_state = CASE WHEN hook IS NULL THEN 'none' ELSE 'queued' END,
                                     http_outbox_id = oid
         WHERE id = n.id;
    END LOOP;
    RETURN jsonb_build_object('notified', notified, 'http_queued', queued,
        'pending', (SELECT count(*) FROM sam.notifications WHERE notified_at IS NULL),
        'http_in_progress', (SELECT count(*) FROM sam.notifications WHERE http_state = 'queued'),
        'http_delivered_24h', (SELECT count(*) FROM sam.notifications
                                WHERE http_state = 'delivered' AND http_delivered_at > now_t - interval '24 hours'),
        'http_dead_24h', (SELECT count(*) FROM sam.notifications
                           WHERE http_state = 'dead' AND created_at > now_t - interval '24 hours'));
END $$;

CREATE FUNCTION sam.check_pending_notifications() RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._run_job('check-pending-notifications', '_job_check_pending_notifications') $$;
COMMENT ON FUNCTION sam.check_pending_notifications() IS 'Job (every 5 minutes): announces new notifications with pg_notify on sam_notifications and queues their HTTP POSTs';

-- the answer to a notification POST: any 2xx is delivered (Slack answers "ok" as text)
CREATE FUNCTION sam._notify_delivered(o sam.outbox) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE sam.outbox SET state = 'done', finished_at = sam.now(), updated_at = sam.now(), error = NULL, error_type = NULL
     WHERE id = o.id;
    UPDATE sam.notifications SET http_state = 'delivered', http_delivered_at = sam.now(), http_error = NULL,
                                 delivered_via = array_append(array_remove(delivered_via, 'http'), 'http')
     WHERE id = (o.context->>'notification_id')::bigint;
END $$;

------------------------------------------------------------------------
-- GDPR: retention, erasure on request, suppression and do-not-contact
------------------------------------------------------------------------

-- the defaults; sam.retention_settings holds what a DBA changed (sam.set_retention)
CREATE FUNCTION sam._retention_defaults()
RETURNS TABLE (kind text, keep interval, minimum interval, description text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    VALUES ('prospect_data', interval '365 days', interval '1 day',
            'Personal data of prospects of campaigns completed longer ago is anonymised'),
           ('webhook_payloads', interval '30 days', interval '1 day', 'Webhook events received longer ago are deleted'),
           ('outbox_bodies', interval '30 days', interval '1 day',
            'Request and response bodies (names, message text) of finished calls are removed'),
           ('outbox_rows', interval '90 days', interval '8 days',
            'Finished calls are deleted (at least 8 days: the weekly invitation cap counts them)'),
           ('notifications', interval '30 days', interval '1 day', 'Delivered notifications are deleted'),
           ('job_runs', interval '30 days', interval '2 days', 'Job run history is deleted')
$$;

CREATE TABLE sam.retention_settings (
    kind text PRIMARY KEY,
    keep interval NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT sam.now()
);
COMMENT ON TABLE sam.retention_settings IS 'Retention periods changed from their defaults (see sam.retention)';
SELECT pg_catalog.pg_extension_config_dump('sam.retention_settings', '');

CREATE VIEW sam.retention AS
SELECT d.kind, coalesce(s.keep, d.keep) AS keep, d.keep AS default_keep, d.minimum, d.description
  FROM sam._retention_defaults() d
  LEFT JOIN sam.retention_settings s ON s.kind = d.kind;
COMMENT ON VIEW sam.retention IS 'How long each kind of data is kept before sam.gdpr_cleanup() removes it';

CREATE FUNCTION sam.set_retention(kind text, keep interval) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    SELECT * INTO d FROM sam._retention_defaults() x WHERE x.kind = set_retention.kind;
    IF NOT FOUND THEN
        PERFORM sam._invalid('kind', format('unknown retention kind "%s"', coalesce(set_retention.kind, 'NULL')),
            'Kinds: ' || (SELECT string_agg(x.kind, ', ') FROM sam._retention_defaults() x) || '.');
    END IF;
    IF keep IS NULL THEN
        DELETE FROM sam.retention_settings s WHERE s.kind = d.kind;
        RETURN jsonb_build_object('success', true, 'kind', d.kind, 'keep', d.keep::text, 'default', true);
    END IF;
    IF keep < d.minimum OR keep > interval '10 years' OR sam._mixed_signs(keep) THEN
        PERFORM sam._invalid('keep', format('must be between %s and 10 years for %s, in parts of one sign', d.minimum, d.kind));
    END IF;
    INSERT INTO sam.retention_settings (kind, keep) VALUES (d.kind, keep)
    ON CONFLICT ON CONSTRAINT retention_settings_pkey DO UPDATE SET keep = EXCLUDED.keep, changed_at = sam.now();
    RETURN jsonb_build_object('success', true, 'kind', d.kind, 'keep', keep::text, 'default', false);
END $$;
COMMENT ON FUNCTION sam.set_retention(text, interval) IS 'Sets how long a kind of data is kept (NULL: back to the default)';

CREATE FUNCTION sam._keep(p_kind text) RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT r.keep FROM sam.retention r WHERE r.kind = p_kind $$;

/*
 * sam._job_gdpr_cleanup: removes what is older than its retention period.
 * Prospects are anonymised, not deleted, so that campaign figures stay.
 */
CREATE FUNCTION sam._job_gdpr_cleanup() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_t timestamptz := sam.now();
    n_prospects integer;
    n_webhooks integer;
    n_bodies integer;
    n_rows integer;
    n_notifications integer;
    n_runs integer;
    anonymised bigint[];
BEGIN
    /*
     * Anonymised: no identifier, name or text of theirs, and the times
     * kept to the day (a relation's exact created_at, which the account's
     * relations list shows, named the member).  What points at the row
     * goes too, whatever its own retention: the bodies of its calls (a
     * chat id in the context was enough to name the person again), its
     * notifications, and the webhooks applied to it.
     */
    WITH a AS (
        UPDATE sam.prospects p
           SET provider_id = NULL, public_identifier = 'anonymised-' || p.id, profile_url = NULL,
               first_name = NULL, last_name = NULL, company = NULL, title = NULL, variables = '{}',
               invitation_id = NULL, chat_id = NULL, last_error = NULL, follow_up_due_at = NULL,
               created_at = date_trunc('day', p.created_at), invited_at = date_trunc('day', p.invited_at),
               connected_at = date_trunc('day', p.connected_at), last_message_at = date_trunc('day', p.last_message_at),
               replied_at = date_trunc('day', p.replied_at), completed_at = date_trunc('day', p.completed_at),
               failed_at = date_trunc('day', p.failed_at), withdrawn_at = date_trunc('day', p.withdrawn_at),
               anonymised_at = now_t, updated_at = date_trunc('day', now_t)
          FROM sam.campaigns c
         WHERE c.id = p.campaign_id AND p.anonymised_at IS NULL
           AND ((c.status = 'completed' AND c.completed_at < now_t - sam._keep('prospect_data'))
                -- a campaign that never completes (paused, a draft, its account gone quiet): its
                -- prospects that reached an end long ago go the same way
                OR (p.status IN ('replied', 'completed', 'failed', 'withdrawn')
                    AND p.updated_at < now_t - sam._keep('prospect_data')))
        RETURNING p.id
    )
    SELECT coalesce(array_agg(a.id), '{}') INTO anonymised FROM a;
    n_prospects := cardinality(anonymised);
    IF n_prospects > 0 THEN
        UPDATE sam.outbox o SET request = '{}', response = NULL, context = o.context - 'text' - 'chat_id',
                                bodies_removed_at = coalesce(o.bodies_removed_at, now_t)
         WHERE o.prospect_id = ANY (anonymised) AND o.finished_at IS NOT NULL
           AND (o.request <> '{}' OR o.response IS NOT NULL OR o.context ?| ARRAY['text', 'chat_id']);
        DELETE FROM sam.notifications x WHERE x.prospect_id = ANY (anonymised) AND x.http_state <> 'queued';
        DELETE FROM sam.webhook_events w
         WHERE (w.result->>'prospect_id')::bigint = ANY (anonymised) AND w.status <> 'received';
    END IF;

    DELETE FROM sam.webhook_events w
     WHERE w.received_at < now_t - sam._keep('webhook_payloads') AND w.status <> 'received';
    GET DIAGNOSTICS n_webhooks = ROW_COUNT;

    DELETE FROM sam.outbox o
     WHERE o.state IN ('done', 'dead', 'cancelled') AND o.finished_at < now_t - sam._keep('outbox_rows');
    GET DIAGNOSTICS n_rows = ROW_COUNT;

    UPDATE sam.outbox o SET request = '{}', response = NULL, context = o.context - 'text' - 'chat_id', bodies_removed_at = now_t
     WHERE o.state IN ('done', 'dead', 'cancelled') AND o.finished_at < now_t - sam._keep('outbox_bodies')
       AND o.bodies_removed_at IS NULL;
    GET DIAGNOSTICS n_bodies = ROW_COUNT;

    DELETE FROM sam.notifications x
     WHERE x.created_at < now_t - sam._keep('notifications') AND x.notified_at IS NOT NULL AND x.http_state <> 'queued';
    GET DIAGNOSTICS n_notifications = ROW_COUNT;

    DELETE FROM sam.job_runs r
     WHERE r.clock_at < now_t - sam._keep('job_runs') AND r.status <> 'running';
    GET DIAGNOSTICS n_runs = ROW_COUNT;

    RETURN jsonb_build_object('removed', jsonb_build_object(
        'prospects_anonymised', n_prospects, 'webhook_events', n_webhooks, 'outbox_bodies', n_bodies,
        'outbox_rows', n_rows, 'notifications', n_notifications, 'job_runs', n_runs),
        'retention', (SELECT jsonb_object_agg(r.kind, r.keep::text) FROM sam.retention r));
END $$;

CREATE FUNCTION sam.gdpr_cleanup() RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ SELECT sam._run_job('gdpr-cleanup', '_job_gdpr_cleanup') $$;
COMMENT ON FUNCTION sam.gdpr_cleanup() IS 'Job (daily): removes personal data and history older than their retention (sam.retention); answers what it removed per kind';

CREATE TABLE sam.suppressions (
    hash bytea PRIMARY KEY,
    reason text NOT NULL DEFAULT 'erased on request',
    created_at timestamptz NOT NULL DEFAULT sam.now()
);
COMMENT ON TABLE sam.suppressions IS 'People erased on request: only a hash of each identifier, so that they are never imported or contacted again';
SELECT pg_catalog.pg_extension_config_dump('sam.suppressions', '');

-- the suppression hash of an identifier (public identifiers are case-insensitive)
CREATE FUNCTION sam._identity_hash(identifier text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(convert_to('sam_ext:' || identifier, 'UTF8')) $$;

CREATE TABLE sam.do_not_contact (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identifier text,
    company text,
    reason text,
    created_at timestamptz NOT NULL DEFAULT sam.now(),
    CONSTRAINT do_not_contact_one_target CHECK ((identifier IS NULL) <> (company IS NULL)),
    CONSTRAINT do_not_contact_identifier_length CHECK (char_length(identifier) BETWEEN 1 AND 200),
    CONSTRAINT do_not_contact_company_length CHECK (char_length(company) BETWEEN 1 AND 200),
    CONSTRAINT do_not_contact_reason_length CHECK (char_length(reason) <= 1000)
);
CREATE UNIQUE INDEX do_not_contact_identifier_key ON sam.do_not_contact (identifier) WHERE identifier IS NOT NULL;
-- add_prospects looks a public identifier up by lower(identifier) (bench/import.sh: with the
-- other two lookups, a BitmapOr of the three indexes)
CREATE INDEX do_not_contact_identifier_lower_idx ON sam.do_not_contact (lower(identifier)) WHERE identifier IS NOT NULL;
CREATE UNIQUE INDEX do_not_contact_company_key ON sam.do_not_contact (lower(company)) WHERE company IS NOT NULL;
COMMENT ON TABLE sam.do_not_contact IS 'People (provider id or public identifier) and companies that no campaign of any account may contact';
SELECT pg_catalog.pg_extension_config_dump('sam.do_not_contact', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('sam.do_not_contact', 'id'), '');

/*
 * sam._person_identifier: a provider id, a public identifier or a profile
 * URL, as {"kind", "value"}; the kind of a bare word is unknown ("any").
 */
CREATE FUNCTION sam._person_identifier(identifier text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    x text := btrim(identifier);
    m text[];
BEGIN
    IF x IS NULL OR x = '' THEN
        PERFORM sam._invalid('identifier', 'must be a provider id, a public identifier or a profile URL');
    END IF;
    IF x ~* 'linkedin\.com/' THEN
        m := regexp_match(x, '^(?:https?://)?(?:[a-z]{2,3}\.)?(?:www\.)?linkedin\.com/in/([^/?#\s]{1,200})/?(?:[?#].*)?$', 'i');
        IF m IS NULL THEN
            PERFORM sam._invalid('identifier', 'must look like https://www.linkedin.com/in/<public-identifier>/');
        END IF;
        x := lower(sam._url_decode(m[1]));
        IF x IS NULL OR x !~ '^[^/?#\s]{1,200}$' THEN
            PERFORM sam._invalid('identifier', 'its percent-encoding is not that of a public identifier');
        END IF;
        RETURN jsonb_build_object('kind', 'public_identifier', 'value', x);
    END IF;
    x := sam._url_decode(x);
    IF x IS NULL THEN
        PERFORM sam._invalid('identifier', 'its percent-encoding is not UTF-8');
    END IF;
    IF x !~ '^[^/?#\s]{1,200}$' THEN
        PERFORM sam._invalid('identifier', 'must be a provider id, a public identifier or a profile URL');
    END IF;
    RETURN jsonb_build_object('kind', 'any', 'value', x);
END $$;

/*
 * sam._names_person: whether a JSON document (a webhook, a call's answer)
 * names the person: a string value equal to one of their keys (identifiers,
 * chat ids), ignoring case and percent-encoding, or a LinkedIn profile URL
 * of one; or a string containing one of their tokens (provider ids and chat
 * ids: long, unique) as a word of its own, as in urn:li:fsd_profile:ACo...
 * or an answer kept as raw text.  Public identifiers match whole values
 * only: an erasure of "john" must not remove the events of johnson, nor a
 * message that says "hi john".
 */
CREATE FUNCTION sam._names_person(doc jsonb, keys text[], tokens text[] DEFAULT '{}') RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lkeys text[] := ARRAY(SELECT lower(k) FROM unnest(keys) k WHERE k IS NOT NULL AND k <> '');
    re text;
BEGIN
    IF doc IS NULL THEN
        RETURN false;
    END IF;
    -- one pattern for every token, each escaped (a backslash before anything but [a-z0-9_-])
    SELECT '(^|[^a-z0-9_-])(' || string_agg(regexp_replace(lower(t), '([^a-z0-9_-])', '\\\1', 'g'), '|')
           || ')($|[^a-z0-9_-])'
      INTO re
      FROM unnest(tokens) t WHERE t IS NOT NULL AND t <> '';
    RETURN EXISTS (
        SELECT 1
          FROM jsonb_path_query(doc, 'strict $.** ? (@.type() == "string")') s(v)
         CROSS JOIN LATERAL (SELECT lower(s.v #>> '{}') AS t) x
         WHERE x.t = ANY (lkeys)
            OR (strpos(x.t, '%') > 0 AND lower(sam._url_decode(x.t)) = ANY (lkeys))
            OR (x.t LIKE '%linkedin.com/in/%'
                AND EXISTS (SELECT 1 FROM regexp_matches(x.t, 'linkedin\.com/in/([^/?#\s]+)', 'g') m
                             WHERE lower(sam._url_decode(m[1])) = ANY (lkeys)))
            OR (re IS NOT NULL AND x.t ~ re));
END $$;

/*
 * sam._paired_identifiers: the identifiers stored answers give together with
 * one of keys (a new_relation webhook names the person by provider id and
 * public identifier, a profile lookup's answer too): so that an erasure by
 * profile URL also finds a prospect imported by provider id only.
 */
CREATE FUNCTION sam._paired_identifiers(keys text[]) RETURNS text[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
AS $$
    WITH pairs AS (
        SELECT w.payload->>'user_provider_id' AS pid, w.payload->>'user_public_identifier' AS pub
          FROM sam.webhook_events w
         WHERE w.event = 'new_relation'
        UNION ALL
        SELECT o.response->>'provider_id', o.response->>'public_identifier'
          FROM sam.outbox o
         WHERE o.kind IN ('resolve_profile', 'invite') AND o.response ? 'provider_id'
    )
    SELECT coalesce(array_agg(DISTINCT v.x), '{}')
      FROM (SELECT p.pid, lower(sam._url_decode(nullif(p.pub, ''))) AS lpub FROM pairs p) q
     CROSS JOIN LATERAL (VALUES (q.pid), (q.lpub)) v(x)
     WHERE (q.pid = ANY (keys) OR q.lpub = ANY (keys))
       AND v.x IS NOT NULL AND v.x <> ''
$$;

CREATE FUNCTION sam.erase_person(identifier text) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who jsonb := sam._person_identifier(identifier);
    v text := who->>'value';
    ids bigint[];
    keys text[];
    more_ids bigint[];
    more_keys text[];
    chats text[];
    tokens text[];
    n_prospects integer;
    n_outbox integer;
    n_scrubbed integer;
    n_webhooks integer;
    n_notifications integer;
    n_hashes integer;
    n_dnc integer;
BEGIN
    -- imports of the same person wait, or are seen (see add_prospects); so do the jobs, webhooks and
    -- records that lock prospects' rows (ROW SHARE: SELECT ... FOR UPDATE) before they write to them:
    -- SHARE ROW EXCLUSIVE let them lock a row, then wait for this lock to write to it, while this
    -- erasure waited for their row to remove it (a deadlock that failed the hourly follow-ups run).
    -- One that holds such a row already finishes first (it goes ahead of this lock in the queue).
    LOCK TABLE sam.prospects IN EXCLUSIVE MODE;
    -- their prospects, by the identifier given, then by the other identifiers those have (the same
    -- person in another account, found by URL here and by provider id there): until no new one turns up
    -- (and by the identifiers stored answers pair with theirs: a prospect imported by provider id,
    -- erased by profile URL)
    ids := '{}';
    keys := ARRAY[v, lower(v)];
    LOOP
        SELECT coalesce(array_agg(DISTINCT p.id), '{}'),
               coalesce(array_agg(DISTINCT k) FILTER (WHERE k IS NOT NULL), '{}')
          INTO more_ids, more_keys
          FROM sam.prospects p
          LEFT JOIN LATERAL unnest(ARRAY[p.provider_id, p.public_identifier]) k ON true
         WHERE (p.provider_id = ANY (keys) OR p.public_identifier = ANY (keys)) AND p.id <> ALL (ids);
        more_keys := more_keys || sam._paired_identifiers(keys || more_keys);
        EXIT WHEN cardinality(more_ids) = 0 AND more_keys <@ keys;
        ids := ids || more_ids;
        keys := ARRAY(SELECT DISTINCT k FROM unnest(keys || more_keys) k);
    END LOOP;
    SELECT coalesce(array_agg(DISTINCT p.chat_id) FILTER (WHERE p.chat_id IS NOT NULL), '{}'),
           coalesce(array_agg(DISTINCT p.provider_id) FILTER (WHERE p.provider_id IS NOT NULL), '{}')
      INTO chats, tokens
      FROM sam.prospects p WHERE p.id = ANY (ids);
    -- found in text as words of their own: provider ids (the one given too, when it looks like one) and chats
    tokens := tokens || chats || CASE WHEN who->>'kind' = 'any' AND v ~ '^AC[A-Za-z0-9_-]{14,}$' THEN ARRAY[v] ELSE '{}' END;

    -- the account's delivery_dead alerts stay (an outage is not the person's), but without their
    -- prospect's id, nor Unipile's detail when it names them; so do the hook's POSTs of them not in
    -- flight.  (SKIP LOCKED: a worker recording a death holds its account's alert, and waits for
    -- this erasure to write the prospect; it rewrites the whole text anyway, with its own call's.)
    IF cardinality(ids) > 0 THEN
        WITH cand AS (
            SELECT y.id, y.text,
                   regexp_replace(y.text, ', prospect (' || array_to_string(ids, '|') || ')\)', ')', 'g') AS t
              FROM sam.notifications y
             WHERE y.event = 'delivery_dead'
               AND y.account_id IN (SELECT p.account_id FROM sam.prospects p WHERE p.id = ANY (ids))
               FOR UPDATE SKIP LOCKED
        ), fixed AS (
            SELECT c.id, c.text AS old_t,
                   CASE WHEN sam._names_person(to_jsonb(c.t), keys || chats, tokens)
                        THEN regexp_replace(c.t, '\): .*$', '): (detail removed by an erasure)')
                        ELSE c.t END AS t
              FROM cand c
        ), upd AS (
            UPDATE sam.notifications n SET text = f.t
              FROM fixed f
             WHERE n.id = f.id AND f.t IS DISTINCT FROM f.old_t
            RETURNING n.id, n.account_id, n.text
        )
        UPDATE sam.outbox o SET request = jsonb_set(o.request, '{json,text}', to_jsonb(u.text))
          FROM upd u
         WHERE o.account_id = u.account_id AND o.idempotency_key = 'notify:' || u.id
           AND o.state <> 'in_flight' AND o.request ? 'json';
    END IF;
    -- whatever is queued or finished for them goes
    SELECT r.n_outbox, r.n_notifications, r.n_prospects INTO n_outbox, n_notifications, n_prospects
      FROM sam._remove_prospects(ids) r;
    -- other calls whose bodies name them (pages of relations), and the webhooks that do
    UPDATE sam.outbox o SET response = NULL, bodies_removed_at = sam.now()
     WHERE o.response IS NOT NULL AND sam._names_person(o.response, keys || chats, tokens);
    GET DIAGNOSTICS n_scrubbed = ROW_COUNT;
    DELETE FROM sam.webhook_events w WHERE sam._names_person(w.payload, keys || chats, tokens);
    GET DIAGNOSTICS n_webhooks = ROW_COUNT;
    -- a do-not-contact entry of theirs held the identifier in clear (and a reason): the hashes refuse them now
    DELETE FROM sam.do_not_contact d
     WHERE d.identifier IS NOT NULL AND lower(d.identifier) = ANY (ARRAY(SELECT lower(k) FROM unnest(keys) k));
    GET DIAGNOSTICS n_dnc = ROW_COUNT;

    INSERT INTO sam.suppressions (hash)
    SELECT DISTINCT sam._identity_hash(k) FROM unnest(keys) k
    ON CONFLICT (hash) DO NOTHING;
    GET DIAGNOSTICS n_hashes = ROW_COUNT;

    RAISE LOG 'sam_ext: erase_person removed % prospects, % calls, % webhook events, % notifications',
        n_prospects, n_outbox, n_webhooks, n_notifications;
    RETURN jsonb_build_object('success', true, 'suppressed', true,
        'removed', jsonb_build_object('prospects', n_prospects, 'outbox', n_outbox, 'outbox_bodies', n_scrubbed,
                                      'webhook_events', n_webhooks, 'notifications', n_notifications,
                                      'do_not_contact', n_dnc),
        'suppression_hashes_added', n_hashes);
END $$;
COMMENT ON FUNCTION sam.erase_person(text) IS 'GDPR erasure: removes the person''s data everywhere, cancels what is queued for them, and keeps only hashes on the suppression list';

CREATE FUNCTION sam.add_do_not_contact(identifier text DEFAULT NULL, company text DEFAULT NULL, reason text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who jsonb;
    v text;
    co text := nullif(btrim(company), '');
    entry sam.do_not_contact;
    stopped bigint[];
    n_cancelled integer;
BEGIN
    IF (identifier IS NULL) = (co IS NULL) THEN
        PERFORM sam._invalid('identifier', 'give either identifier or company');
    END IF;
    IF co IS NOT NULL AND char_length(co) > 200 THEN
        PERFORM sam._invalid('company', 'longer than 200 characters');
    END IF;
    IF char_length(reason) > 1000 THEN
        PERFORM sam._invalid('reason', 'longer than 1000 characters');
    END IF;
    IF identifier IS NOT NULL THEN
        who := sam._person_identifier(identifier);
        v := who->>'value';
        SELECT * INTO entry FROM sam.do_not_contact d WHERE d.identifier = v;
    ELSE
        SELECT * INTO entry FROM sam.do_not_contact d WHERE lower(d.company) = lower(co);
    END IF;
    IF entry.id IS NULL THEN
        -- (the same entry added by two sessions at once: the second finds the first's, not the unique
        -- index's name in an error)
        INSERT INTO sam.do_not_contact (identifier, company, reason) VALUES (v, co, nullif(btrim(reason), ''))
        ON CONFLICT DO NOTHING
        RETURNING * INTO entry;
        IF entry.id IS NULL AND v IS NOT NULL THEN
            SELECT * INTO entry FROM sam.do_not_contact d WHERE d.identifier = v;
        ELSIF entry.id IS NULL THEN
            SELECT * INTO entry FROM sam.do_not_contact d WHERE lower(d.company) = lower(co);
        END IF;
    END IF;

    -- (EXCLUSIVE, not SHARE ROW EXCLUSIVE: see erase_person)
    LOCK TABLE sam.prospects IN EXCLUSIVE MODE;
    -- every campaign of every account: people still in progress stop here
    WITH s AS (
        UPDATE sam.prospects p
           SET status = 'failed', failed_at = sam.now(), updated_at = sam.now(), follow_up_due_at = NULL,
               last_error = format('do not contact (entry %s%s)', entry.id, coalesce(': ' || entry.reason, ''))
         WHERE p.status IN ('pending', 'connection_request_sent', 'connected')
           AND (p.provider_id = v OR p.public_identifier = lower(v) OR lower(p.company) = lower(co))
        RETURNING p.id)
    SELECT coalesce(array_agg(s.id), '{}') INTO stopped FROM s;
    UPDATE sam.outbox o SET state = 'cancelled', finished_at = sam.now(), updated_at = sam.now(),
                            error = format('do not contact (entry %s)', entry.id)
     WHERE o.prospect_id = ANY (stopped) AND o.state IN ('queued', 'failed') AND o.kind <> 'notify';
    GET DIAGNOSTICS n_cancelled = ROW_COUNT;
    RETURN jsonb_build_object('success', true, 'id', entry.id, 'identifier', entry.identifier,
                              'company', entry.company, 'prospects_stopped', cardinality(stopped),
                              'calls_cancelled', n_cancelled);
END $$;
COMMENT ON FUNCTION sam.add_do_not_contact(text, text, text) IS 'Adds a person or a company to the do-not-contact list; prospects in progress stop and their queued calls are cancelled';

CREATE FUNCTION sam.remove_do_not_contact(id bigint) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF remove_do_not_contact.id IS NULL THEN
        PERFORM sam._invalid('id', 'must not be null');
    END IF;
    DELETE FROM sam.do_not_contact d WHERE d.id = remove_do_not_contact.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'do-not-contact entry % does not exist', remove_do_not_contact.id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN jsonb_build_object('success', true, 'id', remove_do_not_contact.id,
                              'note', 'prospects stopped by the entry stay failed');
END $$;
COMMENT ON FUNCTION sam.remove_do_not_contact(bigint) IS 'Removes a do-not-contact entry (people it stopped stay stopped)';

------------------------------------------------------------------------
-- Views for people
------------------------------------------------------------------------

CREATE VIEW sam.queue_status AS
SELECT o.kind, o.state, count(*) AS calls, min(o.not_before) AS oldest_not_before,
       max(o.updated_at) AS last_change
  FROM sam.outbox o
 GROUP BY o.kind, o.state;
COMMENT ON VIEW sam.queue_status IS 'The outbox by kind and state';

CREATE VIEW sam.campaign_funnel AS
SELECT c.id AS campaign_id, c.name, c.status, c.account_id,
       count(p.id) AS prospects,
       count(p.id) FILTER (WHERE p.status = 'pending') AS pending,
       count(p.invited_at) AS invited,
       count(p.connected_at) AS connected,
       count(p.replied_at) AS replied,
       count(p.id) FILTER (WHERE p.status = 'completed') AS completed,
       count(p.id) FILTER (WHERE p.status = 'failed') AS failed,
       count(p.id) FILTER (WHERE p.status = 'withdrawn') AS withdrawn
  FROM sam.campaigns c
  LEFT JOIN sam.prospects p ON p.campaign_id = c.id
 GROUP BY c.id;
COMMENT ON VIEW sam.campaign_funnel IS 'Per campaign: how many prospects reached each stage';

------------------------------------------------------------------------
-- Metrics (served by the ingest's GET /metrics)
------------------------------------------------------------------------

CREATE VIEW sam.metrics AS
SELECT 'sam_outbox_calls'::text AS metric, 'gauge'::text AS type, 'Unipile calls in the outbox by kind and state'::text AS help,
       jsonb_build_object('kind', kind, 'state', state) AS labels, count(*)::numeric AS value
  FROM sam.outbox GROUP BY kind, state
UNION ALL
SELECT 'sam_outbox_errors', 'gauge', 'Unipile calls in the outbox whose last answer was an error, by Unipile type',
       jsonb_build_object('type', error_type), count(*)
  FROM sam.outbox WHERE error_type IS NOT NULL GROUP BY error_type
UNION ALL
SELECT 'sam_outbox_due', 'gauge', 'Unipile calls due now and not yet in flight',
       '{}'::jsonb, count(*) FROM sam.outbox WHERE finished_at IS NULL AND state IN ('queued', 'failed') AND not_before <= sam.now()
UNION ALL
SELECT 'sam_webhook_events', 'gauge', 'Webhook events stored, by event and status',
       jsonb_build_object('event', coalesce(event, 'unknown'), 'status', status), count(*)
  FROM sam.webhook_events GROUP BY event, status
UNION ALL
SELECT 'sam_job_runs', 'gauge', 'Job runs kept in sam.job_runs, by job and status',
       jsonb_build_object('job', job, 'status', status), count(*)
  FROM sam.job_runs GROUP BY job, status
UNION ALL
SELECT 'sam_job_late', 'gauge', '1 when the job is scheduled and has no success within twice its interval',
       jsonb_build_object('job', job), CASE WHEN late THEN 1 ELSE 0 END
  FROM sam.job_health
UNION ALL
SELECT 'sam_accounts', 'gauge', 'LinkedIn accounts by status',
       jsonb_build_object('status', status), count(*)
  FROM sam.accounts GROUP BY status
UNION ALL
SELECT 'sam_prospects', 'gauge', 'Prospects by status',
       jsonb_build_object('status', status), count(*)
  FROM sam.prospects GROUP BY status
UNION ALL
SELECT 'sam_notifications', 'gauge', 'Notifications kept, by event and delivery state of their hook',
       jsonb_build_object('event', event, 'http_state', http_state), count(*)
  FROM sam.notifications GROUP BY event, http_state
UNION ALL
SELECT 'sam_notifications_pending', 'gauge', 'Notifications not yet announced by check_pending_notifications',
       '{}'::jsonb, count(*) FROM sam.notifications WHERE notified_at IS NULL
UNION ALL
SELECT 'sam_worker_up', 'gauge', '1 when the sam_ext worker is running',
       '{}'::jsonb, CASE WHEN sam.worker_pid() IS NULL THEN 0 ELSE 1 END
UNION ALL
SELECT 'sam_workers_ready', 'gauge', 'sam_ext worker processes serving the database, of sam.workers',
       '{}'::jsonb, count(*) FILTER (WHERE w.ready) FROM sam.workers() w
UNION ALL
SELECT 'sam_workers_configured', 'gauge', 'sam.workers: worker processes asked for',
       '{}'::jsonb, current_setting('sam.workers')::bigint;
COMMENT ON VIEW sam.metrics IS 'Figures for monitoring (no personal data, no message text): one row per metric and label set';

-- sam.metrics_text: sam.metrics in the Prometheus text format (0.0.4)
CREATE FUNCTION sam.metrics_text() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(string_agg(block, ''), '')
      FROM (SELECT format(E'# HELP %s %s\n# TYPE %s %s\n', m.metric, min(m.help), m.metric, min(m.type))
                   || string_agg(m.metric
                          || coalesce('{' || (SELECT string_agg(format('%s="%s"', l.key,
                                                   replace(replace(replace(l.value, '\', '\\'), '"', '\"'), E'\n', '\n')),
                                                   ',' ORDER BY l.key)
                                                FROM jsonb_each_text(m.labels) l) || '}', '')
                          || ' ' || m.value::text || E'\n', '' ORDER BY m.labels::text) AS block
              FROM sam.metrics m
             GROUP BY m.metric
             ORDER BY m.metric) s
$$;
COMMENT ON FUNCTION sam.metrics_text() IS 'sam.metrics in the Prometheus text format; the ingest appends it to its own GET /metrics';

------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC
------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA sam FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA sam FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA sam FROM PUBLIC;
REVOKE ALL ON SCHEMA sam FROM PUBLIC;

------------------------------------------------------------------------
-- Roles: four group roles (NOLOGIN) a DBA grants to login roles.
--   sam_app      the application: accounts, campaigns, prospects, starting,
--                erasure and do-not-contact, notification URLs
--   sam_jobs     scheduled jobs (pg_cron or the ingest's cron routes)
--   sam_ingest   the webhook ingest: sam.ingest_webhook only
--   sam_monitor  read-only: health, run history, queue figures, metrics
--                (no secrets, no personal data, no message bodies)
-- The functions they call are SECURITY DEFINER with a fixed search_path:
-- no role gets a privilege on a table it writes.  Roles are shared by the
-- cluster: an existing role of the same name is reused, and DROP EXTENSION
-- leaves them.
------------------------------------------------------------------------

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['sam_app', 'sam_jobs', 'sam_ingest', 'sam_monitor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $roles$;

/*
 * Each role's functions, by name (every overload): those that write or read
 * tables the role has no privilege on become SECURITY DEFINER; all get
 * EXECUTE for the role.
 */
DO $grants$
DECLARE
    g record;
    f regprocedure;
BEGIN
    FOR g IN
        SELECT * FROM (VALUES
            ('sam_app', true, ARRAY['create_account', 'pause_account', 'resume_account', 'delete_account',
                                    'create_campaign', 'add_prospects', 'start_campaign', 'send_connection_requests',
                                    'pause_campaign', 'resume_campaign', 'erase_person', 'add_do_not_contact',
                                    'remove_do_not_contact', 'set_notification_url', 'is_working_time']),
            ('sam_app', false, ARRAY['render_template', 'template_variables', 'now', '_retention_defaults']),
            ('sam_jobs', true, ARRAY['process_pending_prospects', 'execute_scheduled_campaigns', 'process_outbox',
                                     'check_relations', 'process_follow_ups', 'gdpr_cleanup',
                                     'check_pending_notifications', 'retry_webhooks']),
            ('sam_jobs', false, ARRAY['now', 'worker_pid', 'workers', '_job_catalog', '_cron_jobs']),
            ('sam_ingest', true, ARRAY['ingest_webhook']),
            ('sam_monitor', true, ARRAY['doctor', 'metrics_text', '_cron_jobs']),
            ('sam_monitor', false, ARRAY['now', 'worker_pid', 'workers', '_job_catalog', '_retention_defaults'])
        ) AS v(role, definer, fns)
    LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                  WHERE p.pronamespace = 'sam'::regnamespace AND p.proname = ANY (g.fns) LOOP
            IF g.definer THEN
                EXECUTE pg_catalog.format('ALTER FUNCTION %s SECURITY DEFINER', f);
            END IF;
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, g.role);
        END LOOP;
    END LOOP;
END $grants$;

GRANT USAGE ON SCHEMA sam TO sam_app, sam_jobs, sam_ingest, sam_monitor;
-- sam.now() reads the clock (no secret in it)
GRANT SELECT ON sam.clock TO sam_app, sam_jobs, sam_monitor;
GRANT SELECT ON sam.accounts, sam.campaigns, sam.prospects, sam.campaign_funnel, sam.queue_status,
                sam.do_not_contact, sam.notifications, sam.retention TO sam_app;
GRANT SELECT ON sam.job_runs, sam.job_health TO sam_jobs;
GRANT SELECT ON sam.job_health, sam.job_runs, sam.queue_status, sam.metrics, sam.campaign_funnel,
                sam.retention TO sam_monitor;

-- the worker looks for the extension every few seconds: tell it now (at commit), so that it
-- reconciles what a previous installation left in flight and starts serving at once
SELECT sam._wake_worker();
