-- A search_path hijack attempted before CREATE EXTENSION must not subvert
-- sam_ext (pg_cron's test): operators and functions planted in public that
-- shadow pg_catalog ones are never called by sam's functions.
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '1999-01-01'::timestamptz $$;
CREATE FUNCTION public.hijacked(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked operator called'; END $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.hijacked);
CREATE FUNCTION public.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'hijacked jsonb_build_object called'; END $$;
SET search_path = public, pg_catalog;
CREATE EXTENSION sam_ext;
SELECT sam.create_account('hijack-test', spacing_min => '0', spacing_max => '0')->>'success' AS created;
SELECT extract(year FROM sam.now()) > 2000 AS clock_not_hijacked;
SELECT sam.delete_account('hijack-test')->>'success' AS deleted;
RESET search_path;
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.hijacked(text, text);
DROP FUNCTION public.now();
DROP FUNCTION public.jsonb_build_object(VARIADIC text[]);

-- CREATE EXTENSION wakes the worker, which reconciles the rows left in flight and only then
-- reports its pid: waited for here, so that it never requeues a row the tests claim later
DO $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXIT WHEN sam.worker_pid() IS NOT NULL;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT sam.worker_pid() IS NOT NULL AS worker_ready;

-- the library refuses to be loaded other than preloaded (it is preloaded here)
SELECT setting ~ 'sam_ext' AS preloaded FROM pg_settings WHERE name = 'shared_preload_libraries';

-- every setting, with its default (the API key itself is never a setting)
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'sam.%' ORDER BY name;
SET sam.no_such_setting = 1;

-- nothing is granted to PUBLIC
SELECT count(*) AS public_function_grants
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'sam'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_table_grants
  FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
 WHERE c.relnamespace = 'sam'::regnamespace AND a.grantee = 0;

-- the outbox is durable (not UNLOGGED), and every CHECK is named
SELECT relname, relpersistence FROM pg_class
 WHERE relnamespace = 'sam'::regnamespace AND relkind = 'r' ORDER BY relname;
SELECT conrelid::regclass, conname FROM pg_constraint
 WHERE connamespace = 'sam'::regnamespace AND contype = 'c' ORDER BY 1, 2;

-- every public object is documented
SELECT p.proname FROM pg_proc p
 WHERE p.pronamespace = 'sam'::regnamespace AND p.proname !~ '^_'
   AND obj_description(p.oid, 'pg_proc') IS NULL ORDER BY 1;
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'sam'::regnamespace AND c.relkind IN ('r', 'v')
   AND obj_description(c.oid, 'pg_class') IS NULL ORDER BY 1;
