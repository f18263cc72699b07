-- Queueing connection requests: daily and rolling-7-day caps, working hours, spacing, idempotency.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;   -- a Monday, 11:00 in Paris
SELECT sam.create_account('acc-q', time_zone => 'Europe/Paris', daily_invite_cap => 4, weekly_invite_cap => 10,
                          spacing_min => '2 minutes', spacing_max => '5 minutes')->>'success' AS ok;
SELECT (sam.create_campaign('acc-q', 'Caps', 'Hello {first_name|there}'))->>'campaign_id' AS cid \gset
SELECT (sam.add_prospects(:cid, (SELECT jsonb_agg(jsonb_build_object('provider_id', 'ACoQ' || i, 'first_name', 'P' || i))
                                  FROM generate_series(1, 30) i)))->>'inserted' AS inserted;
-- day 1: 4 invitations (the daily cap), spaced 2 to 5 minutes apart
SELECT sam.start_campaign(:cid) - 'campaign_id' AS started;
SELECT count(*) AS queued, bool_and(gap BETWEEN interval '2 minutes' AND interval '5 minutes') AS spaced
  FROM (SELECT not_before - lag(not_before) OVER (ORDER BY not_before) AS gap FROM sam.outbox
         WHERE account_id = 'acc-q') s;
SELECT request->'json'->>'message' AS note, request->'json'->>'provider_id' AS to_whom
  FROM sam.outbox WHERE account_id = 'acc-q' ORDER BY id LIMIT 2;
-- calling again queues nothing more: cap reached, and each action has one row
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS again;
SELECT sam.process_pending_prospects() - 'campaigns' AS job;
SELECT count(*) AS rows, count(DISTINCT idempotency_key) AS keys FROM sam.outbox WHERE account_id = 'acc-q';
-- an action cannot be queued twice, whoever tries
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
SELECT account_id, kind, idempotency_key, request FROM sam.outbox WHERE account_id = 'acc-q' ORDER BY id LIMIT 1;

-- evening: outside working hours, nothing is queued and the answer says when the window opens
SELECT sam.set_clock('2026-03-02 18:30:00+00', frozen => true)->>'now' AS now;
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS evening;
-- next day: 4 more
SELECT sam.set_clock('2026-03-03 09:00:00+00', frozen => true)->>'now' AS now;
SELECT (sam.process_pending_prospects())->'queued' AS queued_day2;
SELECT sam.set_clock('2026-03-04 09:00:00+00', frozen => true)->>'now' AS now;
SELECT (sam.process_pending_prospects())->'queued' AS queued_day3;
-- day 4: only 2 left in the rolling week (10)
SELECT sam.set_clock('2026-03-05 09:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS day4;
SELECT sam.set_clock('2026-03-06 09:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS day5;
-- Saturday is not a working day
SELECT sam.set_clock('2026-03-07 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS saturday;
-- a week after day 1 the rolling window has room again
SELECT sam.set_clock('2026-03-09 12:00:00+00', frozen => true)->>'now' AS now;
SELECT (sam.send_connection_requests(:cid))->'queued' AS next_monday;
SELECT date_trunc('day', not_before) AS day, count(*) FROM sam.outbox WHERE account_id = 'acc-q' GROUP BY 1 ORDER BY 1;

-- a paused account queues nothing; its queued calls are held, not lost
SELECT sam.pause_account('acc-q')->>'status';
SELECT sam.set_clock('2026-03-10 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.send_connection_requests(:cid) - 'campaign_id' AS paused;
SELECT count(*) AS claimable FROM sam._claim(100);
-- resumed: the invitations held past their time are cancelled, to be queued again within the caps of
-- the day they go (left queued, they all went out at once, past the day's cap)
SELECT r->>'status' AS status, r->'held_to_queue_again' AS held FROM sam.resume_account('acc-q') r;

-- a paused campaign keeps its rows queued and they are not claimed; resumed, it queues its
-- invitations again within the caps (after those already queued for the coming days)
SELECT sam.pause_campaign(:cid)->>'status';
SELECT count(*) AS claimable_while_paused FROM sam._claim(100);
SELECT r ->> 'status' AS status, r->'queued' AS queued, r->>'reason' AS reason FROM sam.resume_campaign(:cid) r;
SELECT count(*) > 0 AS claimable_after_resume FROM sam._claim(100);
SELECT state, count(*) FROM sam.outbox WHERE account_id = 'acc-q' GROUP BY 1 ORDER BY 1;

-- rows claimed outside working hours wait for the next window instead
SELECT sam.create_account('acc-night', time_zone => 'America/New_York', spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-night', 'Night'))->>'campaign_id' AS nid \gset
SELECT (sam.add_prospects(:nid, '[{"provider_id": "ACoNIGHT1"}]'))->>'inserted';
SELECT sam.set_clock('2026-03-10 15:00:00+00', frozen => true)->>'now' AS now;   -- 11:00 in New York
SELECT (sam.start_campaign(:nid))->>'queued' AS queued;
SELECT sam.set_clock('2026-03-11 02:00:00+00', frozen => true)->>'now' AS now;   -- 22:00 in New York
SELECT count(*) AS claimed_at_night FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-night';
SELECT not_before FROM sam.outbox WHERE account_id = 'acc-night';
-- several of them keep their order and the account's spacing (all at the window's start, they went
-- out in one burst); those that come due later in the night go after them, and so does the
-- account's next action (in a transaction rolled back: the claims take other accounts' rows)
BEGIN;
SELECT sam.create_account('acc-spill', time_zone => 'America/New_York', spacing_min => '3 minutes',
                          spacing_max => '3 minutes')->>'success';
SELECT (sam.create_campaign('acc-spill', 'Spill'))->>'campaign_id' AS sid \gset
SELECT (sam.add_prospects(:sid, '[{"provider_id": "ACoSPILL1"}, {"provider_id": "ACoSPILL2"},
                                  {"provider_id": "ACoSPILL3"}, {"provider_id": "ACoSPILL4"}]'))->>'inserted';
SELECT sam.set_clock('2026-03-10 15:00:00+00', frozen => true)->>'now' AS now;   -- 11:00 in New York
SELECT (sam.start_campaign(:sid))->>'queued' AS queued;
SELECT sam.set_clock('2026-03-11 02:00:00+00', frozen => true)->>'now' AS now;   -- 22:00 in New York
SELECT count(*) AS claimed_at_night FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-spill';
SELECT o.not_before AT TIME ZONE 'America/New_York' AS local_time, p.provider_id
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-spill' ORDER BY o.not_before;
UPDATE sam.outbox o SET not_before = '2026-03-11 02:30+00' FROM sam.prospects p
 WHERE p.id = o.prospect_id AND p.provider_id = 'ACoSPILL2';
SELECT sam.set_clock('2026-03-11 03:00:00+00', frozen => true)->>'now' AS now;   -- 23:00 in New York
SELECT count(*) AS claimed_at_night FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-spill';
SELECT o.not_before AT TIME ZONE 'America/New_York' AS local_time, p.provider_id
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-spill' ORDER BY o.not_before;
SELECT next_action_at AT TIME ZONE 'America/New_York' AS next_action_local FROM sam.accounts WHERE account_id = 'acc-spill';
ROLLBACK;
-- what the claim could not take then (a paused campaign's invitations) neither moves nor takes the
-- window's first places
BEGIN;
SELECT sam.create_account('acc-spill2', time_zone => 'America/New_York', spacing_min => '3 minutes',
                          spacing_max => '3 minutes')->>'success';
SELECT (sam.create_campaign('acc-spill2', 'Going'))->>'campaign_id' AS gid \gset
SELECT (sam.create_campaign('acc-spill2', 'Paused'))->>'campaign_id' AS pid \gset
SELECT (sam.add_prospects(:pid, '[{"provider_id": "ACoSPILLP1"}, {"provider_id": "ACoSPILLP2"}]'))->>'inserted';
SELECT (sam.add_prospects(:gid, '[{"provider_id": "ACoSPILLG1"}]'))->>'inserted';
SELECT sam.set_clock('2026-03-10 15:00:00+00', frozen => true)->>'now' AS now;   -- 11:00 in New York
SELECT (sam.start_campaign(:pid))->>'queued' AS queued_paused, (sam.start_campaign(:gid))->>'queued' AS queued_going;
SELECT (sam.pause_campaign(:pid))->>'success' AS paused;
SELECT sam.set_clock('2026-03-11 02:00:00+00', frozen => true)->>'now' AS now;   -- 22:00 in New York
SELECT count(*) AS claimed_at_night FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-spill2';
SELECT o.not_before AT TIME ZONE 'America/New_York' AS local_time, p.provider_id
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-spill2' ORDER BY o.not_before;
SELECT next_action_at AT TIME ZONE 'America/New_York' AS next_action_local FROM sam.accounts WHERE account_id = 'acc-spill2';
ROLLBACK;
-- The claim (queued -> in_flight) changes no indexed column and no column of an index's
-- predicate (they name finished_at, not state), and the fillfactor leaves room on the page: it is
-- a HOT update, no index entry written (rolled back here)
BEGIN;
SELECT sam.create_account('acc-hot', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success';
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
SELECT 'acc-hot', 'relations_page', 'hot-' || g, '{"method": "GET", "path": "/api/v1/users/relations"}'
  FROM generate_series(1, 5) g;
SELECT pg_stat_get_xact_tuples_updated('sam.outbox'::regclass) AS u0,
       pg_stat_get_xact_tuples_hot_updated('sam.outbox'::regclass) AS h0 \gset
-- worker 1 (sam.workers = 2) claims two, worker 0 the rest: each row names its worker
SELECT count(*) AS claimed_by_worker_1 FROM sam._claim_requests(2, 1);
SELECT o.account_id, count(*) AS claimed FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id GROUP BY 1;
SELECT claimed_by, count(*) FROM sam.outbox WHERE account_id = 'acc-hot' GROUP BY 1 ORDER BY 1;
SELECT pg_stat_get_xact_tuples_updated('sam.outbox'::regclass) - :u0 AS updates,
       pg_stat_get_xact_tuples_hot_updated('sam.outbox'::regclass) - :h0 AS hot_updates;
ROLLBACK;
-- One statement queues a campaign's batch (rolled back here): a profile lookup takes no spacing, a
-- note that does not render or is longer than 300 characters fails its prospect and takes none.
BEGIN;
SELECT sam.set_clock('2026-03-12 15:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-set', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '10 minutes', spacing_max => '10 minutes')->>'success';
SELECT (sam.create_campaign('acc-set', 'Set', 'Hi {first_name|there}, about {topic}.', NULL,
                            custom_variables => '{topic}'))->>'campaign_id' AS sid \gset
SELECT (sam.add_prospects(:sid, '[{"public_identifier": "lookup-me", "variables": {"topic": "a"}},
                                   {"provider_id": "ACoS2", "first_name": "Bo", "variables": {"topic": "b"}},
                                   {"provider_id": "ACoS3", "variables": {"topic": "c"}},
                                   {"provider_id": "ACoS4", "variables": {"topic": "d"}},
                                   {"provider_id": "ACoS5", "variables": {"topic": "e"}}]'))->>'inserted';
UPDATE sam.prospects SET variables = '{}' WHERE provider_id = 'ACoS3';
UPDATE sam.prospects SET variables = jsonb_build_object('topic', repeat('x', 290)) WHERE provider_id = 'ACoS4';
SELECT sam.start_campaign(:sid) - 'campaign_id' AS started;
SELECT coalesce(p.provider_id, p.public_identifier) AS who, p.status, p.last_error, o.kind, o.not_before,
       o.request->'json'->>'message' AS note
  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id
 WHERE p.campaign_id = :sid ORDER BY p.id;
SELECT next_action_at FROM sam.accounts WHERE account_id = 'acc-set';
ROLLBACK;
-- still_pending: the campaign's pending prospects less those with a call under way (queued, in
-- flight, failed and to be retried); a done call leaves its prospect counted.  A dead or cancelled
-- call of a prospect still pending (set here by hand, as a DBA would to try again) goes again, in
-- the same row, and takes its place under the cap.  Rolled back; the last query is the count
-- written as a probe per prospect.
BEGIN;
SELECT sam.set_clock('2026-03-12 15:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-sp', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_invite_cap => 7, spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-sp', 'Still pending', NULL))->>'campaign_id' AS spid \gset
SELECT (sam.add_prospects(:spid, (SELECT jsonb_agg(CASE WHEN i <= 2 THEN jsonb_build_object('public_identifier', 'sp-' || i)
                                                       ELSE jsonb_build_object('provider_id', 'ACoSP' || i) END)
                                   FROM generate_series(1, 10) i)))->>'inserted' AS inserted;
SELECT sam.start_campaign(:spid) - 'campaign_id' AS started;
UPDATE sam.outbox o SET state = s.state, finished_at = CASE WHEN s.state IN ('done', 'dead', 'cancelled') THEN sam.now() END,
                        claimed_at = CASE WHEN s.state = 'in_flight' THEN sam.now() END
  FROM (SELECT id, (ARRAY['in_flight', 'queued', 'failed', 'done', 'dead', 'cancelled', 'queued'])[row_number() OVER (ORDER BY id)] AS state
          FROM sam.outbox WHERE account_id = 'acc-sp') s
 WHERE o.id = s.id;
UPDATE sam.prospects SET status = 'failed' WHERE id = (SELECT max(prospect_id) FROM sam.outbox WHERE account_id = 'acc-sp');
SELECT o.kind, o.state, p.status FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.account_id = 'acc-sp' ORDER BY o.id;
SELECT sam.send_connection_requests(:spid) - 'campaign_id' AS again;
SELECT o.kind, o.state, o.attempts, o.error FROM sam.outbox o WHERE o.account_id = 'acc-sp' ORDER BY o.id;
SELECT count(*) AS by_probes FROM sam.prospects x
 WHERE x.campaign_id = :spid AND x.status = 'pending'
   AND NOT EXISTS (SELECT 1 FROM sam.outbox o WHERE o.account_id = x.account_id
                      AND o.idempotency_key IN ('invite:' || x.id, 'resolve:' || x.id)
                      AND o.state IN ('queued', 'in_flight', 'failed'));
ROLLBACK;
-- An idle worker sleeps until the next row it could claim: an invitation of an account whose
-- invitations are paused counts from the pause's end (not now: workers would wake every 50 ms for
-- the whole pause), an outcome to check counts from its own time.  Rolled back.
BEGIN;
UPDATE sam.outbox SET not_before = sam.now() + interval '30 days' WHERE finished_at IS NULL;
SELECT sam.create_account('acc-pause', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00')->>'success';
UPDATE sam.accounts SET invites_paused_until = sam.now() + interval '6 hours' WHERE account_id = 'acc-pause';
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, not_before)
VALUES ('acc-pause', 'invite', 'pause-1', '{"method": "POST", "path": "/api/v1/users/invite"}', sam.now() - interval '1 minute');
SELECT sam._next_due_ms() / 3600000.0 AS hours_to_next_due;
SELECT count(*) AS claimed FROM sam._claim(10);
UPDATE sam.outbox SET needs_check = true WHERE idempotency_key = 'pause-1';
SELECT sam._next_due_ms() <= 0 AS check_due_now;
ROLLBACK;
-- A session's first claims walk the due index and stop at n rows: their custom plans (before
-- sam._claimable's plan_cache_mode = force_generic_plan) took a sequential scan and a sort of every
-- due row, 130 ms a claim at 100,000 due, five times after each start of the worker.  A new
-- session, 5,000 due; no sequential scan of the outbox.
SELECT sam.create_account('acc-plan', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00')->>'success';
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, not_before)
SELECT 'acc-plan', 'relations_page', 'plan-' || i, '{"method": "GET", "path": "/api/v1/users/relations"}',
       sam.now() - interval '1 minute'
  FROM generate_series(1, 5000) i;
ANALYZE sam.outbox;
\c
BEGIN;
SELECT count(*) AS claimed FROM sam._claim(10);
SELECT seq_scan AS outbox_seq_scans, idx_scan > 0 AS used_an_index
  FROM pg_stat_xact_user_tables WHERE relid = 'sam.outbox'::regclass;
ROLLBACK;
DELETE FROM sam.outbox WHERE account_id = 'acc-plan';
DELETE FROM sam.accounts WHERE account_id = 'acc-plan';
ANALYZE sam.outbox;

-- The ceiling of invitations waiting for an answer (max_pending_invitations): those sent and not
-- yet accepted, withdrawn or failed, and those under way, count; none is queued past it, and the
-- answer says why (LinkedIn restricts accounts with too many invitations outstanding).  (In a
-- transaction rolled back: the later tests count the queue.)
BEGIN;
SELECT sam.create_account('acc-ceil', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_invite_cap => 100, weekly_invite_cap => 200,
                          max_pending_invitations => 5)->'account'->'max_pending_invitations' AS ceiling;
SELECT (sam.create_campaign('acc-ceil', 'Ceiling', NULL))->>'campaign_id' AS ceil_cid \gset
SELECT (sam.add_prospects(:ceil_cid, (SELECT jsonb_agg(jsonb_build_object('provider_id', 'ACoCEIL' || i))
                                       FROM generate_series(1, 12) i)))->>'inserted' AS inserted;
-- three invited by an earlier run, still waiting
UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now()
 WHERE id IN (SELECT id FROM sam.prospects WHERE campaign_id = :ceil_cid ORDER BY id LIMIT 3);
SELECT sam.start_campaign(:ceil_cid) - 'campaign_id' AS started;
-- the two queued count as waiting too
SELECT sam.send_connection_requests(:ceil_cid) - 'campaign_id' AS at_ceiling;
-- one accepted: one more may go
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now()
 WHERE id = (SELECT min(id) FROM sam.prospects WHERE campaign_id = :ceil_cid);
SELECT (sam.send_connection_requests(:ceil_cid))->'queued' AS after_an_acceptance;
SELECT sam._pending_invitations('acc-ceil', 100) AS waiting;
-- NULL: no ceiling (the caps still apply)
UPDATE sam.accounts SET max_pending_invitations = NULL WHERE account_id = 'acc-ceil';
SELECT sam.send_connection_requests(:ceil_cid) - 'campaign_id' AS without_ceiling;
SELECT count(*) AS invitations_queued FROM sam.outbox WHERE account_id = 'acc-ceil' AND kind = 'invite';
ROLLBACK;

-- A new account's warm-up (invite_ramp_days): its daily invitation cap starts at 5 and grows
-- linearly to daily_invite_cap over that many days from its creation.  (Rolled back.)
BEGIN;
SELECT sam.create_account('acc-ramp', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          daily_invite_cap => 25, weekly_invite_cap => 200, spacing_min => '0', spacing_max => '0',
                          invite_ramp_days => 10)->'account'->'invite_ramp_days' AS ramp_days;
SELECT (sam.create_campaign('acc-ramp', 'Ramp', NULL))->>'campaign_id' AS ramp_cid \gset
SELECT (sam.add_prospects(:ramp_cid, (SELECT jsonb_agg(jsonb_build_object('provider_id', 'ACoRAMP' || i))
                                       FROM generate_series(1, 100) i)))->>'inserted' AS inserted;
SELECT sam.start_campaign(:ramp_cid) - 'campaign_id' AS day0;
SELECT sam.advance_clock('5 days')->>'now' IS NOT NULL AS day5;
SELECT (sam.send_connection_requests(:ramp_cid))->'queued' AS queued_day5;   -- 5 + 20 * 5/10
SELECT sam.send_connection_requests(:ramp_cid)->>'reason' AS reason_day5;
SELECT sam.advance_clock('5 days')->>'now' IS NOT NULL AS day10;
SELECT (sam.send_connection_requests(:ramp_cid))->'queued' AS queued_day10;  -- the full cap
-- by whole local days: the day's count restarts at midnight, so the cap does not grow within it
SELECT sam._invite_cap(a, a.created_at + interval '1 day') AS cap_day1,
       sam._invite_cap(a, a.created_at - interval '1 day') AS cap_before_creation,
       sam._invite_cap(a, sam._local_day_start(a, a.created_at) + interval '23 hours 59 minutes') AS cap_day0_evening
  FROM sam.accounts a WHERE account_id = 'acc-ramp';
ROLLBACK;

-- An account's note limit (note_max_length: 300 characters, 200 from a free account): a campaign
-- whose note could render longer is refused when it is created; a note that renders longer once
-- the limit was lowered fails its prospect with the reason.  (Rolled back.)
BEGIN;
SELECT sam.create_account('acc-free', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          note_max_length => 200)->'account'->'note_max_length' AS note_max_length;
SAVEPOINT too_long;
SELECT sam.create_campaign('acc-free', 'Too long', repeat('x', 201));
ROLLBACK TO too_long;
SELECT (sam.create_campaign('acc-free', 'Fits', 'Hi {first_name|there}, ' || repeat('x', 100)))->>'campaign_id' AS free_cid \gset
SELECT (sam.add_prospects(:free_cid, '[{"provider_id": "ACoFREE1", "first_name": "Dominique"}]'))->>'inserted' AS inserted;
UPDATE sam.accounts SET note_max_length = 100 WHERE account_id = 'acc-free';
SELECT sam.start_campaign(:free_cid) - 'campaign_id' AS started;
SELECT status, last_error FROM sam.prospects WHERE provider_id = 'ACoFREE1';
ROLLBACK;
