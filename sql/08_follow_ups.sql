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
-- The queueing itself (what the worker runs for process_follow_ups), in a transaction rolled back:
-- one statement renders the batch, fails a prospect whose step does not render (without using the
-- account's budget), keeps the daily cap in due order and spaces the messages.
BEGIN;
SELECT sam.create_account('acc-g', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_message_cap => 2, spacing_min => '10 minutes', spacing_max => '10 minutes')->>'success';
SELECT (sam.create_campaign('acc-g', 'Vars', NULL, '[{"template": "Hi {first_name|there}, about {topic}."}]',
                            custom_variables => '{topic}'))->>'campaign_id' AS gid \gset
SELECT (sam.add_prospects(:gid, '[{"provider_id": "ACoG1", "first_name": "Ann", "variables": {"topic": "tea"}},
                                   {"provider_id": "ACoG2", "variables": {"topic": "jam"}},
                                   {"provider_id": "ACoG3", "first_name": "Cy", "variables": {"topic": "oats"}},
                                   {"provider_id": "ACoG4", "first_name": "Di", "variables": {"topic": "rye"}}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running' WHERE id = :gid;
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now() - interval '2 days',
                         follow_up_due_at = sam.now() - (substr(provider_id, 5)::integer * interval '1 minute')
 WHERE campaign_id = :gid;
-- G3 (due second) lost its topic
UPDATE sam.prospects SET variables = '{}' WHERE provider_id = 'ACoG3';
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT sam._job_process_follow_ups_start(:run_id) AS answer \gset
SELECT jsonb_pretty(:'answer'::jsonb - 'results') AS answer;
-- the prospects it did not queue a message for are listed (the finish lists the others)
SELECT p.provider_id, r - 'prospect_id' AS entry
  FROM jsonb_array_elements(:'answer'::jsonb->'results') WITH ORDINALITY AS e(r, n)
  JOIN sam.prospects p ON p.id = (r->>'prospect_id')::bigint ORDER BY e.n;
SELECT p.provider_id, p.status, p.last_error, o.kind, o.not_before, o.context->>'text' AS text,
       p.follow_up_due_at
  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id
 WHERE p.campaign_id = :gid ORDER BY p.provider_id;
SELECT next_action_at FROM sam.accounts WHERE account_id = 'acc-g';
-- a second run with room under a higher cap: the two queued are listed as on their way, with their
-- time; the deferred one is queued now, and the finish lists it; nothing was left out of results
UPDATE sam.accounts SET daily_message_cap = 10 WHERE account_id = 'acc-g';
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id2 \gset
SELECT sam._job_process_follow_ups_start(:run_id2) AS answer2 \gset
SELECT p.provider_id, r - 'prospect_id' AS entry
  FROM jsonb_array_elements(:'answer2'::jsonb->'results') WITH ORDINALITY AS e(r, n)
  JOIN sam.prospects p ON p.id = (r->>'prospect_id')::bigint ORDER BY e.n;
-- (those on their way are looked at again an hour after their message is to go)
SELECT provider_id, follow_up_due_at FROM sam.prospects WHERE provider_id IN ('ACoG4', 'ACoG2') ORDER BY 1;
SELECT jsonb_pretty(f - 'results') AS finish, jsonb_array_length(f->'results') AS results_listed
  FROM sam._job_process_follow_ups_finish(:run_id2, :'answer2'::jsonb) f;
ROLLBACK;
-- A message that went dead goes again, in the same row, once its prospect is set back by hand to
-- connected at that step (the engine itself fails the prospect with it): one refused for good (R1,
-- a 4xx) with the text rendered now; one whose last attempt's outcome is unknown (R3, a 503) with
-- the text it had and its check first.  A message that was done never goes twice (R2).  Rolled back.
BEGIN;
SELECT sam.create_account('acc-r', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-r', 'Again', NULL, '[{"template": "one"}, {"template": "two"}]'))->>'campaign_id' AS rid \gset
SELECT (sam.add_prospects(:rid, '[{"provider_id": "ACoR1"}, {"provider_id": "ACoR2"}, {"provider_id": "ACoR3"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running' WHERE id = :rid;
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now() - interval '2 days', chat_id = 'chat-' || provider_id,
                         follow_up_due_at = sam.now() - interval '1 minute'
 WHERE campaign_id = :rid;
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT (sam._job_process_follow_ups_start(:run_id))->'queued' AS queued;
UPDATE sam.outbox o SET state = CASE p.provider_id WHEN 'ACoR2' THEN 'done' ELSE 'dead' END, finished_at = sam.now(),
                        attempts = 5, needs_check = p.provider_id = 'ACoR3',
                        error = CASE p.provider_id WHEN 'ACoR1' THEN 'errors/invalid_recipient'
                                                   WHEN 'ACoR3' THEN 'gave up after 5 attempts: HTTP 503' END
  FROM sam.prospects p WHERE p.id = o.prospect_id AND p.campaign_id = :rid;
UPDATE sam.campaigns SET follow_ups = '[{"template": "one, edited"}, {"template": "two"}]' WHERE id = :rid;
UPDATE sam.prospects SET follow_up_due_at = sam.now() - interval '1 minute' WHERE campaign_id = :rid;
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT (sam._job_process_follow_ups_start(:run_id))->'queued' AS queued_again;
SELECT p.provider_id, o.state, o.attempts, o.needs_check, o.context->>'text' AS text, o.error, p.follow_up_due_at
  FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id
 WHERE p.campaign_id = :rid ORDER BY p.provider_id;
ROLLBACK;
-- What cannot go now stays due, in its place (oldest due first), and a run takes only the due
-- prospects of accounts that may send now (active, in working hours, under the daily cap), besides
-- acceptance checks: an account with more due than its cap fills at most the run that reaches its
-- cap, and another account's prospects never wait behind them run after run.  Rolled back.
BEGIN;
SELECT sam.create_account('acc-hl', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_message_cap => 1, spacing_min => '0', spacing_max => '0')->>'success';
-- Monday 10:00 UTC is 19:00 in Tokyo: outside acc-late's hours
SELECT sam.create_account('acc-late', time_zone => 'Asia/Tokyo')->>'success';
SELECT sam.create_account('acc-ok', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-hl', 'HL', NULL, '[{"template": "hi"}]'))->>'campaign_id' AS hl \gset
SELECT (sam.create_campaign('acc-late', 'Late', NULL, '[{"template": "hi"}]'))->>'campaign_id' AS late \gset
SELECT (sam.create_campaign('acc-ok', 'OK', NULL, '[{"template": "hi"}]'))->>'campaign_id' AS ok \gset
UPDATE sam.campaigns SET status = 'running' WHERE id IN (:hl, :late, :ok);
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, connected_at, follow_up_due_at)
SELECT :hl, 'acc-hl', 'ACoHL' || i, 'connected', sam.now() - interval '2 days',
       sam.now() - interval '1 day' + i * interval '1 millisecond'
  FROM generate_series(1, 10000) i
UNION ALL
SELECT :late, 'acc-late', 'ACoLATE', 'connected', sam.now() - interval '2 days', sam.now() - interval '2 days'
UNION ALL
SELECT :ok, 'acc-ok', 'ACoOK', 'connected', sam.now() - interval '2 days', sam.now() - interval '1 minute';
-- and an invitation of acc-hl whose acceptance check is due
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, invited_at, follow_up_due_at)
VALUES (:hl, 'acc-hl', 'ACoHLCHECK', 'connection_request_sent', sam.now() - interval '4 days', sam.now() - interval '1 hour');
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
-- the first 10,000 in due order of the accounts that may send: acc-hl's (ACoLATE, older, is not
-- taken: outside its account's hours); one message goes (acc-hl's cap), the rest stay due
SELECT r->'processed' AS processed, r->'queued' AS queued, r->'pending' AS pending
  FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT account_id, count(*) FILTER (WHERE follow_up_due_at <= sam.now()) AS due, count(*) AS prospects
  FROM sam.prospects WHERE account_id IN ('acc-hl', 'acc-late', 'acc-ok') AND status = 'connected'
 GROUP BY 1 ORDER BY 1;
-- the next run: acc-hl has reached its cap, so ACoOK goes, and acc-hl's acceptance check is made
SELECT r->'processed' AS processed, r->'queued' AS queued,
       (SELECT jsonb_agg(e - 'prospect_id') FROM jsonb_array_elements(r->'results') e) AS results
  FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT p.provider_id, o.kind FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id IN ('acc-hl', 'acc-late', 'acc-ok') ORDER BY o.id;
-- a paused account's due prospects are not taken; resumed, they are, and a step queued before the
-- pause and held past its time (ACoOK's) is queued again, in its row, within the day's cap
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, connected_at, follow_up_due_at)
VALUES (:ok, 'acc-ok', 'ACoOK2', 'connected', sam.now() - interval '2 days', sam.now() - interval '1 minute');
SELECT sam.pause_account('acc-ok')->>'status' AS status;
SELECT r->'processed' AS processed FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT sam.resume_account('acc-ok')->>'status' AS status;
SELECT r->'processed' AS processed, r->'queued' AS queued FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT p.provider_id, o.not_before, p.follow_up_due_at FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id = 'acc-ok' ORDER BY o.id;
ROLLBACK;
-- A late acceptance in a campaign that completed by itself (its one prospect ended as no longer
-- pending, without an id to withdraw it by): the campaign runs again and the sequence goes on.
BEGIN;
SELECT sam.create_account('acc-reopen', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-reopen', 'Reopen', NULL, '[{"delay": "1 hour", "template": "Thanks for connecting"}]'))->>'campaign_id' AS rid \gset
SELECT (sam.add_prospects(:rid, '[{"provider_id": "ACoREOPEN"}]'))->>'inserted' AS inserted;
UPDATE sam.campaigns SET status = 'running', started_at = sam.now() WHERE id = :rid;
UPDATE sam.prospects SET status = 'withdrawn', withdrawn_at = sam.now(), invited_at = sam.now() - interval '30 days',
       last_error = 'no longer pending and missing from both lists'
 WHERE campaign_id = :rid;
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT r->'processed' AS processed FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT status, completed_at IS NOT NULL AS completed_at_set FROM sam.campaigns WHERE id = :rid;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-reopen", "user_provider_id": "ACoREOPEN"}')
       ->> 'transition' AS transition;
SELECT status, completed_at FROM sam.campaigns WHERE id = :rid;
SELECT status, follow_up_due_at FROM sam.prospects WHERE campaign_id = :rid;
SELECT sam.advance_clock('2 hours')->>'now' AS now;
SELECT r->'queued' AS queued FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT o.kind, o.context->>'text' AS text FROM sam.outbox o WHERE o.campaign_id = :rid;
-- its sequence ends: the campaign completes again, and says so again
UPDATE sam.prospects SET status = 'completed', completed_at = sam.now(), follow_up_due_at = NULL WHERE campaign_id = :rid;
SELECT r->'processed' AS processed FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT status FROM sam.campaigns WHERE id = :rid;
SELECT count(*) AS completion_notices FROM sam.notifications WHERE event = 'campaign_completed' AND campaign_id = :rid;
ROLLBACK;
-- Messages held by a pause are not sent in one burst at the resume, nor past the cap of the day
-- they go: campaign HA's three messages queued on day 1 are held by its pause; on day 2 campaign
-- HB (same account, cap 3) queues three; resumed, HA's held messages are cancelled (never tried):
-- the day's cap is reached, so they are queued again, in their rows, the next day.
BEGIN;
SELECT sam.create_account('acc-hold', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_message_cap => 3, spacing_min => '10 minutes', spacing_max => '10 minutes')->>'success';
SELECT (sam.create_campaign('acc-hold', 'HA', NULL, '[{"delay": "1 hour", "template": "Hello from A"}]'))->>'campaign_id' AS ha \gset
SELECT (sam.create_campaign('acc-hold', 'HB', NULL, '[{"delay": "1 hour", "template": "Hello from B"}]'))->>'campaign_id' AS hb \gset
SELECT (sam.add_prospects(:ha, '[{"provider_id": "ACoHA1"}, {"provider_id": "ACoHA2"}, {"provider_id": "ACoHA3"}]'))->>'inserted';
SELECT (sam.add_prospects(:hb, '[{"provider_id": "ACoHB1"}, {"provider_id": "ACoHB2"}, {"provider_id": "ACoHB3"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running', started_at = sam.now() WHERE id = :ha;
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now() - interval '2 days',
                         follow_up_due_at = sam.now() - interval '1 minute'
 WHERE account_id = 'acc-hold';
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT r->'queued' AS day1_queued FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT sam.pause_campaign(:ha)->>'status' AS ha;
SELECT sam.advance_clock('1 day')->>'now' AS day2;
UPDATE sam.campaigns SET status = 'running', started_at = sam.now() WHERE id = :hb;
SELECT r->'queued' AS day2_queued_hb FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT r->'held_to_queue_again' AS held_to_queue_again, r->>'status' AS status FROM sam.resume_campaign(:ha) r;
SELECT count(*) AS claimable_at_once FROM sam._claim(100) c
  JOIN sam.outbox o ON o.id = c.id WHERE o.campaign_id = :ha;
SELECT sam.advance_clock('2 hours')->>'now' AS later;
SELECT r->'processed' AS processed, r->'queued' AS queued FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT sam.advance_clock('1 day')->>'now' AS day3;
SELECT r->'processed' AS processed, r->'queued' AS queued FROM sam._job_process_follow_ups_start(:run_id) r;
SELECT c.name, o.state, date_trunc('day', o.not_before) AS day, count(*), count(*) FILTER (WHERE o.error LIKE 'queued again%') AS again
  FROM sam.outbox o JOIN sam.campaigns c ON c.id = o.campaign_id
 WHERE o.account_id = 'acc-hold' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
ROLLBACK;
-- A follow-up in a chat that exists is sent only after a look at the chat (a reply whose webhook
-- never came stops the sequence): the claim sends the chat's messages request first; no message
-- of the prospect since the invitation (ours, LinkedIn's events and an older exchange only)
-- queues the follow-up to go at once, checked; one of theirs cancels it and the prospect has
-- replied.  A failed look is no unknown outcome, and a 429 to it no limit on messages.
BEGIN;
SELECT sam.create_account('acc-look', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-look', 'Look', NULL,
        '[{"delay": "1 hour", "template": "one"}, {"delay": "1 day", "template": "two"}]'))->>'campaign_id' AS lk \gset
SELECT (sam.add_prospects(:lk, '[{"provider_id": "ACoLOOK1"}, {"provider_id": "ACoLOOK2"}, {"provider_id": "ACoLOOK3"},
                                 {"provider_id": "ACoLOOK4"}, {"provider_id": "ACoLOOK5"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running', started_at = sam.now() WHERE id = :lk;
UPDATE sam.prospects SET status = 'connected', invited_at = sam.now() - interval '3 days',
                         connected_at = sam.now() - interval '2 days', follow_up_sequence_index = 1,
                         chat_id = 'chat-' || provider_id, follow_up_due_at = sam.now() - interval '1 minute'
 WHERE account_id = 'acc-look';
INSERT INTO sam.job_runs (job) VALUES ('process-follow-ups') RETURNING id AS run_id \gset
SELECT r->'queued' AS queued FROM sam._job_process_follow_ups_start(:run_id) r;
CREATE TEMP TABLE look1 AS SELECT c.* FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-look';
SELECT method, path, query_names, query_values, fresh_connection FROM look1 ORDER BY id;
SELECT sam._complete(array_agg(l.id ORDER BY l.id), ARRAY[200, 200, 200, 503, 429],
    ARRAY['{"object": "MessageList", "items": [{"text": "one", "is_sender": 1}, {"text": "Kim accepted", "is_sender": 0, "is_event": 1}], "cursor": null}',
          '{"object": "MessageList", "items": [{"text": "Not for us, thanks", "is_sender": 0}, {"text": "one", "is_sender": 1}], "cursor": null}',
          jsonb_build_object('object', 'MessageList', 'cursor', NULL, 'items', jsonb_build_array(
              jsonb_build_object('text', 'one', 'is_sender', 1, 'timestamp', sam.now() - interval '1 hour'),
              jsonb_build_object('text', 'See you at the fair', 'is_sender', 0, 'timestamp', sam.now() - interval '1 year')))::text,
          '{"status": 503, "type": "errors/service_unavailable", "title": "Service unavailable"}',
          '{"status": 429, "type": "errors/too_many_requests", "title": "Too many requests"}'],
    ARRAY[NULL, NULL, NULL, NULL, NULL]::text[], ARRAY[1.0, 1.0, 1.0, 1.0, 1.0]::float8[]) AS recorded FROM look1 l;
SELECT p.provider_id, p.status, o.state, o.error, o.attempts, o.needs_check, o.context ? 'reply_checked_at' AS checked
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-look' ORDER BY p.id;
SELECT messages_paused_until IS NULL AS messages_not_paused FROM sam.accounts WHERE account_id = 'acc-look';
-- the checked ones go now, as the messages themselves, on connections of their own; the others
-- look at the chat again once due
UPDATE sam.outbox SET not_before = sam.now() WHERE account_id = 'acc-look' AND state = 'failed';
SELECT p.provider_id, c.method, c.path, c.form_names, c.form_values, c.fresh_connection
  FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id = 'acc-look' ORDER BY p.id;
-- a look older than 10 minutes (a hold, a pause, the night between) is made again before the message
UPDATE sam.outbox SET state = 'queued', not_before = sam.now(),
                      context = context - 'reading_chat' || jsonb_build_object('reply_checked_at', sam.now() - interval '11 minutes')
 WHERE account_id = 'acc-look' AND prospect_id = (SELECT id FROM sam.prospects WHERE provider_id = 'ACoLOOK1');
SELECT c.method, c.path FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-look';
-- an answer without items is no answer: looked at again, not sent unchecked
SELECT sam._complete(ARRAY[o.id], ARRAY[200], ARRAY['{"object": "MessageList"}'], ARRAY[NULL]::text[], ARRAY[1.0]::float8[])
  FROM sam.outbox o WHERE o.account_id = 'acc-look' AND o.prospect_id = (SELECT id FROM sam.prospects WHERE provider_id = 'ACoLOOK1');
SELECT o.state, o.error, o.needs_check FROM sam.outbox o
 WHERE o.account_id = 'acc-look' AND o.prospect_id = (SELECT id FROM sam.prospects WHERE provider_id = 'ACoLOOK1');
-- a look refused (a 4xx but 404) is made again, not taken for the message's refusal; a message whose
-- outcome is unknown is checked, and a check answered without items stays to be checked (resent on
-- it, a message delivered before would go twice)
SELECT sam._complete(array_agg(o.id ORDER BY p.id), ARRAY[0, 400],
    ARRAY[NULL, '{"status": 400, "type": "errors/invalid_parameters", "title": "Invalid parameters"}'],
    ARRAY['timeout after 30000 ms', NULL], ARRAY[30000.0, 1.0]::float8[]) AS recorded
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id = 'acc-look' AND p.provider_id IN ('ACoLOOK3', 'ACoLOOK4');
UPDATE sam.outbox SET not_before = sam.now() WHERE account_id = 'acc-look' AND state = 'failed';
SELECT p.provider_id, c.method, c.path FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id
  JOIN sam.prospects p ON p.id = o.prospect_id WHERE p.provider_id IN ('ACoLOOK3', 'ACoLOOK4') ORDER BY p.id;
SELECT sam._complete(ARRAY[o.id], ARRAY[200], ARRAY['{"object": "MessageList"}'], ARRAY[NULL]::text[], ARRAY[1.0]::float8[])
  FROM sam.outbox o WHERE o.account_id = 'acc-look' AND o.prospect_id = (SELECT id FROM sam.prospects WHERE provider_id = 'ACoLOOK3');
SELECT p.provider_id, o.state, o.error, o.needs_check FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id = 'acc-look' AND p.provider_id IN ('ACoLOOK3', 'ACoLOOK4') ORDER BY p.id;
ROLLBACK;
