-- process_follow_ups(): its JSON answer and the transitions that need no Unipile call.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-04-06 10:00:00+00', frozen => true)->>'now' AS now;
-- earlier tests' campaigns are out of the way
UPDATE sam.campaigns SET status = 'paused' WHERE status = 'running';
SELECT sam.create_account('acc-f', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-f', 'Seq', NULL, '[{"template": "one"}, {"template": "two"}]'))->>'campaign_id' AS cid \gset
SELECT (sam.add_prospects(:cid, '[{"provider_id": "ACoF1"}, {"provider_id": "ACoF2"}, {"provider_id": "ACoF3"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running' WHERE id = :cid;
-- nothing due
SELECT sam.process_follow_ups() - 'results' AS nothing_due;
-- F1 sent both steps and waited 7 days; F2 is still invited (its check is due); F3 replied
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now() - interval '20 days', follow_up_sequence_index = 2,
                         follow_up_due_at = sam.now() - interval '1 minute' WHERE provider_id = 'ACoF1';
UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now() - interval '3 days',
                         follow_up_due_at = sam.now() WHERE provider_id = 'ACoF2';
UPDATE sam.prospects SET status = 'replied', follow_up_due_at = NULL WHERE provider_id = 'ACoF3';
SELECT jsonb_pretty(sam.process_follow_ups() #- '{results,0,prospect_id}' #- '{results,1,prospect_id}') AS answer;
SELECT provider_id, status, follow_up_due_at FROM sam.prospects WHERE campaign_id = :cid ORDER BY provider_id;
-- every prospect final: the campaign is completed
UPDATE sam.prospects SET status = 'withdrawn', follow_up_due_at = NULL WHERE provider_id = 'ACoF2';
SELECT (sam.process_follow_ups())->'campaigns_completed' AS campaigns_completed;
SELECT status FROM sam.campaigns WHERE id = :cid;
SELECT job, status FROM sam.job_runs WHERE job = 'process-follow-ups' ORDER BY id;
