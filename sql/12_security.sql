-- A search_path hijack attempted before CREATE EXTENSION (as in pg_cron's
-- tests): an unprivileged role plants shadows of the functions and operators
-- the extension uses in schema public, and the installer and callers put
-- public first in their search_path.  Neither the install script nor any
-- function of the API may call a shadow.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- a fresh install (the earlier tests' objects go)
DROP EXTENSION sam_ext CASCADE;
CREATE ROLE mallory;
GRANT CREATE ON SCHEMA public TO mallory;
SET ROLE mallory;
-- mallory cannot create the extension's schema first
CREATE SCHEMA sam;
CREATE TABLE public.trap_calls (fn text);
GRANT INSERT, SELECT ON public.trap_calls TO PUBLIC;
CREATE FUNCTION public.trap(fn text) RETURNS void LANGUAGE sql AS $$ INSERT INTO public.trap_calls VALUES (fn) $$;
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT public.trap('now'); SELECT 'epoch'::timestamptz $$;
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('lower'); SELECT $1 $$;
CREATE FUNCTION public.btrim(text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('btrim'); SELECT $1 $$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('format'); SELECT $1 $$;
CREATE FUNCTION public.left(text, integer) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('left'); SELECT $1 $$;
CREATE FUNCTION public.md5(text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('md5'); SELECT $1 $$;
CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$ SELECT public.trap('sha256'); SELECT $1 $$;
CREATE FUNCTION public.pg_notify(text, text) RETURNS void LANGUAGE sql AS $$ SELECT public.trap('pg_notify') $$;
CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('current_setting'); SELECT 'x' $$;
CREATE FUNCTION public.jsonb_array_length(jsonb) RETURNS integer LANGUAGE sql AS $$ SELECT public.trap('jsonb_array_length'); SELECT 0 $$;
CREATE FUNCTION public.char_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT public.trap('char_length'); SELECT 1 $$;
CREATE FUNCTION public.trap_eq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT public.trap('=(text,text)'); SELECT true $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap_eq);
CREATE FUNCTION public.trap_concat(text, text) RETURNS text LANGUAGE sql AS $$ SELECT public.trap('||(text,text)'); SELECT $1 $$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap_concat);
RESET ROLE;
-- nor can a role that may create schemas in the database (its owner, often the application's):
-- CREATE EXTENSION refuses a schema sam it did not create (its owner could replace the functions
-- the worker, pg_cron and the API call by name); DROP EXTENSION leaves the schema it created
DROP SCHEMA sam;
CREATE ROLE squatter;
SELECT pg_catalog.format('GRANT CREATE ON DATABASE %I TO squatter', current_database()) \gexec
SET ROLE squatter;
CREATE SCHEMA sam;
RESET ROLE;
CREATE EXTENSION sam_ext;
DROP SCHEMA sam;
-- one of the installer's in which another role may create objects: refused too
CREATE SCHEMA sam;
GRANT CREATE ON SCHEMA sam TO squatter;
CREATE EXTENSION sam_ext;
-- and one in which it left objects, its privilege revoked since
SET ROLE squatter;
CREATE FUNCTION sam.add_prospects(integer, text) RETURNS void LANGUAGE sql AS 'SELECT';
RESET ROLE;
REVOKE CREATE ON SCHEMA sam FROM squatter;
CREATE EXTENSION sam_ext;
DROP SCHEMA sam CASCADE;
SELECT pg_catalog.format('REVOKE CREATE ON DATABASE %I FROM squatter', current_database()) \gexec
DROP ROLE squatter;

-- the installer's search_path puts public first
SET search_path = public, pg_catalog;
-- the traps work: an unqualified call of the session's own is caught
SELECT lower('CONTROL'), 'a' = 'b' AS equal;
SELECT fn FROM public.trap_calls ORDER BY fn;
TRUNCATE public.trap_calls;
CREATE EXTENSION sam_ext;
SELECT count(*) AS trap_calls_during_install FROM public.trap_calls;

-- so does the caller's: every kind of call goes through the API
SELECT sam.set_clock('2026-06-01 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-s', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (sam.create_campaign('acc-s', 'Safe', 'Hi {first_name|there}', '[{"template": "Thanks {first_name|}"}]'))->>'campaign_id' AS cid \gset
SELECT sam.add_prospects(:cid, '[{"provider_id": "ACoS1", "first_name": "Sam", "company": "Safe Co"},
                                 {"profile_url": "https://www.linkedin.com/in/sue-s/"}]')->>'inserted' AS inserted;
SELECT sam.start_campaign(:cid)->>'queued' AS queued;
SELECT sam.render_template('Hi {first_name|there}', '{"first_name": "Sam"}') AS rendered;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-s", "user_provider_id": "ACoS1"}')->>'status' AS webhook;
SELECT sam.set_notification_url('https://hooks.example.com/x')->>'success' AS hook;
SELECT sam.check_pending_notifications()->>'notified' AS notified;
SELECT sam.process_pending_prospects()->>'success' AS pending_job;
SELECT sam.execute_scheduled_campaigns()->>'success' AS scheduled_job;
SELECT sam.process_outbox()->>'success' AS outbox_job;
SELECT sam.add_do_not_contact(company => 'Other Co')->>'success' AS dnc;
SELECT sam.erase_person('https://www.linkedin.com/in/sue-s/')->>'success' AS erased;
SELECT sam.gdpr_cleanup()->>'success' AS gdpr;
SELECT sam.set_retention('job_runs', '10 days')->>'success' AS retention;
SELECT count(*) > 0 AS doctor FROM sam.doctor();
-- the doctor shows the DSN's host, never credentials written into it (sam_monitor may not read the setting)
SELECT sam._dsn_shown(d) FROM unnest(ARRAY['https://apiuser:s3cret@api8.unipile.com:13851/api?k=v',
    'api8.unipile.com:13851', 'https://api8.unipile.com:13851/', 'user@host', 'http://127.0.0.1:8080']) d;
SELECT length(sam.metrics_text()) > 0 AS metrics;
SELECT count(*) > 0 AS health FROM sam.job_health;
SELECT sam.pause_campaign(:cid)->>'success' AS paused;
SELECT sam.delete_account('acc-s');
SELECT fn, count(*) FROM public.trap_calls GROUP BY fn ORDER BY fn;
SELECT count(*) AS trap_calls FROM public.trap_calls;

-- every function not written in C has a search_path of its own (sam.now() is C: src/clock.c)
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'sam'::regnamespace AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')
 ORDER BY 1;

RESET search_path;
DROP OWNED BY mallory;
DROP ROLE mallory;
