-- Scheduling with pg_cron (preloaded in the test instance), run health and the doctor.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
-- without pg_cron in the database, it explains itself
SELECT sam.schedule_jobs();
CREATE EXTENSION pg_cron;
SELECT * FROM sam.job_schedule_commands();
SELECT jsonb_array_length(sam.schedule_jobs()->'jobs') AS scheduled;
-- idempotent, and each schedule can be overridden
SELECT jsonb_array_length(sam.schedule_jobs('{"process-follow-ups": "5 * * * *", "sam-check-relations-pm": "0 22 * * *"}')->'jobs') AS scheduled;
SELECT jobname, schedule, command, database = current_database() AS here, active FROM cron.job ORDER BY jobname;
SELECT sam.schedule_jobs('{"nope": "* * * * *"}');
SELECT sam.schedule_jobs('{"process-outbox": "every hour"}');
SELECT sam.schedule_jobs('[]');
SELECT job, schedule, scheduled, runs_24h, late FROM sam.job_health ORDER BY job;
SELECT "check", ok FROM sam.doctor() WHERE "check" IN ('pg_cron installed', 'jobs scheduled and enabled', 'worker running', 'Unipile DSN configured');
-- unschedule removes exactly sam's jobs
SELECT cron.schedule('someone-else', '0 0 * * *', 'SELECT 1') > 0 AS other_job;
SELECT sam.unschedule_jobs();
SELECT jobname FROM cron.job ORDER BY jobname;
SELECT cron.unschedule('someone-else');
SELECT "check", ok, hint FROM sam.doctor() WHERE "check" = 'jobs scheduled and enabled';
DROP EXTENSION pg_cron;
