-- Jobs: their JSON answers, the run history, and "skipped" when a run is already in progress.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-j', spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (sam.create_campaign('acc-j', 'Scheduled', start_at => '2026-03-02 10:30+00'))->>'campaign_id' AS sid \gset
SELECT (sam.add_prospects(:sid, '[{"provider_id": "ACoJ1"}, {"provider_id": "ACoJ2"}]'))->>'inserted';
SELECT sam.execute_scheduled_campaigns();
SELECT sam.advance_clock('31 minutes')->>'now' AS now;
SELECT sam.execute_scheduled_campaigns() #- '{campaigns,0,campaign_id}' AS answer;
SELECT status FROM sam.campaigns WHERE id = :sid;
SELECT count(*) AS queued FROM sam.outbox WHERE account_id = 'acc-j';
SELECT jsonb_pretty(sam.process_outbox() #- '{queue}') AS process_outbox;
SELECT (sam.process_outbox())->'queue'->'invite' AS invites;
SELECT (sam.process_pending_prospects()) ?& ARRAY['success', 'campaigns_checked', 'queued'] AS keys;
SELECT job, status, (result->>'success')::boolean AS success, finished_at >= started_at AS ended
  FROM sam.job_runs ORDER BY id;
-- a job body that fails is recorded as failed and answered with success false
CREATE FUNCTION sam._job_broken() RETURNS jsonb LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
SELECT sam._run_job('broken', '_job_broken');
SELECT job, status, error FROM sam.job_runs WHERE job = 'broken';
DROP FUNCTION sam._job_broken();
-- the clock only moves forward
SELECT sam.advance_clock('-1 day');
SELECT sam.set_clock(NULL);
SELECT sam.set_clock(now(), NULL);
SELECT sam.set_clock('infinity');
SELECT sam.set_clock('4713-01-01 BC');
SELECT sam.advance_clock('178000000 years');
SELECT sam.advance_clock('1 mon -29 days');
-- retries that can no longer happen (sam.max_attempts lowered) are dead and fail their prospect, as
-- a last attempt that fails does: the next run does not queue it again (rolled back)
BEGIN;
SELECT sam.create_account('acc-ex', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-ex', 'Exhausted', NULL))->>'campaign_id' AS exid \gset
SELECT (sam.add_prospects(:exid, '[{"provider_id": "ACoEX1"}]'))->>'inserted';
SELECT (sam.start_campaign(:exid))->>'queued' AS queued;
UPDATE sam.outbox SET state = 'failed', attempts = 7, error = 'HTTP 503' WHERE account_id = 'acc-ex';
SELECT (sam.process_outbox())->'dead_exhausted' AS dead_exhausted;
SELECT p.status, p.last_error, o.state FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id
 WHERE p.account_id = 'acc-ex';
SELECT (sam.send_connection_requests(:exid))->>'queued' AS queued_again;
ROLLBACK;
