-- How each Unipile answer is applied (sam._complete is what the worker calls with its results).
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-o', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (sam.create_campaign('acc-o', 'Outcomes', 'Hi {first_name|there}'))->>'campaign_id' AS cid \gset
SELECT (sam.add_prospects(:cid, (SELECT jsonb_agg(jsonb_build_object('provider_id', 'ACoO' || lpad(i::text, 2, '0')))
                                  FROM generate_series(1, 11) i)
                                || '[{"public_identifier": "pub-person"}]'))->>'inserted' AS inserted;
SELECT (sam.start_campaign(:cid))->>'queued' AS queued;

CREATE TEMP TABLE claimed AS SELECT * FROM sam._claim(100);
SELECT c.method, c.path, c.query_names, c.query_values, c.json_body::jsonb - 'account_id' AS body
  FROM claimed c ORDER BY c.id LIMIT 2;
SELECT state, count(*) FROM sam.outbox WHERE account_id = 'acc-o' GROUP BY 1;

-- one batch of results, one per outcome family
CREATE TEMP TABLE results (provider_id text, status int, body text, error text);
INSERT INTO results VALUES
 ('ACoO01', 201, '{"object": "UserInvitationSent", "invitation_id": "7001"}', NULL),
 ('ACoO02', 422, '{"status": 422, "type": "errors/already_invited_recently", "title": "Should delay new invitation to this recipient"}', NULL),
 ('ACoO03', 422, '{"status": 422, "type": "errors/already_connected", "title": "Already connected"}', NULL),
 ('ACoO04', 422, '{"status": 422, "type": "errors/cannot_resend_yet", "title": "Cannot resend yet", "detail": "You have reached a temporary provider limit."}', NULL),
 ('ACoO05', 422, '{"status": 422, "type": "errors/cannot_invite_attendee", "title": "Cannot invite"}', NULL),
 ('ACoO06', 429, '{"status": 429, "type": "errors/too_many_requests", "title": "Too many requests"}', NULL),
 ('ACoO07', 500, '{"status": 500, "type": "errors/unexpected_error", "title": "Unexpected error"}', NULL),
 ('ACoO08', 0, NULL, 'timeout after 30000 ms'),
 ('ACoO09', 200, '<html>Bad gateway</html>', NULL),
 ('ACoO10', 400, '{"status": 400, "type": "errors/too_many_characters", "title": "Too many characters"}', NULL),
 ('ACoO11', 502, '<html><body>502 Bad Gateway</body></html>', NULL);
SELECT sam._complete(array_agg(o.id ORDER BY o.id), array_agg(r.status ORDER BY o.id),
                     array_agg(r.body ORDER BY o.id), array_agg(r.error ORDER BY o.id),
                     array_agg(12.5::float8 ORDER BY o.id))
  FROM results r JOIN sam.outbox o ON o.request->'json'->>'provider_id' = r.provider_id;

SELECT p.provider_id, p.status, p.invitation_id, p.follow_up_due_at, p.last_error,
       o.state, o.attempts, o.needs_check, o.http_status, o.error_type, o.not_before > sam.now() AS later
  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id AND o.kind <> 'resolve_profile'
 WHERE p.account_id = 'acc-o' ORDER BY p.id;
SELECT invites_paused_until, status FROM sam.accounts WHERE account_id = 'acc-o';

-- the profile lookup: its answer gives the provider id; the invitation waits for the account's pause to end
SELECT sam._complete(ARRAY[o.id], ARRAY[200],
                     ARRAY['{"object": "UserProfile", "provider_id": "ACoRESOLVED", "first_name": "Pub", "is_relationship": false}'],
                     ARRAY[NULL::text], ARRAY[3.0::float8])
  FROM sam.outbox o WHERE o.kind = 'resolve_profile' AND o.account_id = 'acc-o';
SELECT provider_id, first_name, status FROM sam.prospects WHERE public_identifier = 'pub-person';
SELECT kind, state FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE p.public_identifier = 'pub-person' ORDER BY o.id;
SELECT (sam.send_connection_requests(:cid))->>'reason' AS reason;

-- after the pause: retries whose outcome is unknown are checked first, never resent blindly
SELECT sam.advance_clock('7 hours')->>'now' AS now;
CREATE TEMP TABLE claimed2 AS SELECT * FROM sam._claim(100);
SELECT o.request->'json'->>'provider_id' AS provider_id, c.method, c.path, o.needs_check
  FROM claimed2 c JOIN sam.outbox o ON o.id = c.id ORDER BY c.id;
-- the check of ACoO07 finds the invitation pending (it had gone through); ACoO08's check finds nothing: sent again
SELECT sam._complete(array_agg(c.id ORDER BY c.id),
         array_agg(200 ORDER BY c.id),
         array_agg(CASE o.request->'json'->>'provider_id'
                   WHEN 'ACoO07' THEN '{"object": "UserProfile", "provider_id": "ACoO07", "invitation": {"type": "SENT", "status": "PENDING"}}'
                   WHEN 'ACoO08' THEN '{"object": "UserProfile", "provider_id": "ACoO08", "is_relationship": false}'
                   WHEN 'ACoO09' THEN '{"object": "UserProfile", "provider_id": "ACoO09", "network_distance": "FIRST_DEGREE", "is_relationship": true}'
                   ELSE '{"object": "UserInvitationSent", "invitation_id": "7100"}' END ORDER BY c.id),
         array_agg(NULL::text ORDER BY c.id), array_agg(1.0::float8 ORDER BY c.id))
  FROM claimed2 c JOIN sam.outbox o ON o.id = c.id;
SELECT p.provider_id, p.status, o.state, o.needs_check, o.error
  FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id AND o.kind = 'invite'
 WHERE p.provider_id IN ('ACoO04', 'ACoO06', 'ACoO07', 'ACoO08', 'ACoO09', 'ACoO11', 'ACoRESOLVED') ORDER BY p.id;

-- exhausted retries are dead, and the prospect fails with the reason
UPDATE sam.outbox SET attempts = 4, state = 'queued', not_before = sam.now()
 WHERE request->'json'->>'provider_id' = 'ACoO08';
CREATE TEMP TABLE claimed3 AS SELECT c.* FROM sam._claim(100) c;
SELECT sam._complete(ARRAY[c.id], ARRAY[503], ARRAY['{"status": 503, "type": "errors/service_unavailable", "title": "Service unavailable"}'],
                     ARRAY[NULL::text], ARRAY[1.0::float8])
  FROM claimed3 c JOIN sam.outbox o ON o.id = c.id WHERE o.request->'json'->>'provider_id' = 'ACoO08';
-- (its last attempt's outcome is unknown, a 5xx: should it be queued again, it is checked first)
SELECT p.status, p.last_error, o.state, o.attempts, o.needs_check, o.error FROM sam.prospects p JOIN sam.outbox o ON o.prospect_id = p.id
 WHERE p.provider_id = 'ACoO08';

-- 401 of the disconnected family: the account is disconnected and its calls are held
SELECT (sam.add_prospects(:cid, '[{"provider_id": "ACoO12"}]'))->>'inserted' AS inserted;
SELECT (sam.send_connection_requests(:cid))->>'queued' AS queued;
CREATE TEMP TABLE claimed4 AS SELECT c.* FROM sam._claim(100) c;
SELECT sam._complete(ARRAY[c.id], ARRAY[401], ARRAY['{"status": 401, "type": "errors/disconnected_account", "title": "Disconnected account"}'],
                     ARRAY[NULL::text], ARRAY[1.0::float8])
  FROM claimed4 c JOIN sam.outbox o ON o.id = c.id WHERE o.request->'json'->>'provider_id' = 'ACoO12';
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-o';
SELECT o.state, o.attempts, o.error_type FROM sam.outbox o WHERE request->'json'->>'provider_id' = 'ACoO12';
SELECT status FROM sam.prospects WHERE provider_id = 'ACoO12';
SELECT count(*) AS claimable_while_disconnected FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.account_id = 'acc-o';
SELECT sam.resume_account('acc-o')->>'status';

-- a result for a row that is no longer in flight changes nothing; a broken one never blocks the others
SELECT sam._complete(ARRAY[-1, (SELECT min(id) FROM sam.outbox)], ARRAY[201, 201], ARRAY[NULL, NULL]::text[],
                     ARRAY[NULL, NULL]::text[], ARRAY[1, 1]::float8[]);

-- restart: rows in flight are queued again; actions must be checked first
UPDATE sam.outbox SET state = 'in_flight', finished_at = NULL WHERE request->'json'->>'provider_id' IN ('ACoO06', 'ACoO10')
   OR kind = 'resolve_profile';
SELECT sam._worker_recover() > 0 AS recovered;
SELECT kind, request->'json'->>'provider_id' AS provider_id, state, needs_check, error FROM sam.outbox
 WHERE request->'json'->>'provider_id' IN ('ACoO06', 'ACoO10') OR kind = 'resolve_profile' ORDER BY 1, 2;
-- with several workers (sam.workers), one that starts again reconciles only the rows it left in
-- flight: the others' are being called right now.  Worker 0 also takes those of a number that no
-- longer runs (sam.workers lowered) and of none.  (Rolled back.)
BEGIN;
UPDATE sam.outbox SET state = 'in_flight', needs_check = false, error = NULL,
       claimed_by = CASE request->'json'->>'provider_id' WHEN 'ACoO06' THEN 1 ELSE 3 END
 WHERE request->'json'->>'provider_id' IN ('ACoO06', 'ACoO10');
SELECT sam._worker_recover(2, 4) AS recovered_by_2_of_4, sam._worker_recover(0, 4) AS recovered_by_0_of_4;
SELECT sam._worker_recover(1, 4) AS recovered_by_1_of_4;
SELECT sam._worker_recover(0, 3) AS recovered_by_0_of_3;
SELECT request->'json'->>'provider_id' AS provider_id, claimed_by, state, needs_check FROM sam.outbox
 WHERE request->'json'->>'provider_id' IN ('ACoO06', 'ACoO10') ORDER BY 1;
ROLLBACK;

-- a person imported by public identifier, whose provider id (learned from the profile lookup or a
-- webhook) is on the do-not-contact list, is stopped; one erased on request is removed with their
-- calls, and stays refused by public identifier too (both used to be invited)
SELECT sam.add_do_not_contact('ACoBLOCKEDLATE', reason => 'asked us') - 'id' AS dnc;
SELECT sam.add_do_not_contact('ACoWEBHOOKLATE') - 'id' AS dnc_webhook;
SELECT sam.erase_person('ACoERASEDLATE')->'removed'->'prospects' AS erased_before_known;
SELECT (sam.add_prospects(:cid, '[{"public_identifier": "late-blocked"}, {"public_identifier": "late-erased"},
                                   {"public_identifier": "late-webhook"}, {"public_identifier": "late-fine"}]'))->>'inserted' AS inserted;
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, state, attempts, claimed_at)
SELECT 'acc-o', p.campaign_id, p.id, 'resolve_profile', 'resolve:' || p.id,
       jsonb_build_object('method', 'GET', 'path', '/api/v1/users/' || p.public_identifier), 'in_flight', 1, sam.now()
  FROM sam.prospects p WHERE p.public_identifier IN ('late-blocked', 'late-erased', 'late-fine');
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, state)
SELECT 'acc-o', p.campaign_id, p.id, 'invite', 'invite:' || p.id, '{"method": "POST", "path": "/api/v1/users/invite"}', 'queued'
  FROM sam.prospects p WHERE p.public_identifier = 'late-blocked';
SELECT sam._complete(array_agg(o.id ORDER BY o.id), array_agg(200 ORDER BY o.id),
         array_agg(format('{"object": "UserProfile", "provider_id": "%s", "is_relationship": false}',
                          CASE p.public_identifier WHEN 'late-blocked' THEN 'ACoBLOCKEDLATE'
                                                   WHEN 'late-erased' THEN 'ACoERASEDLATE' ELSE 'ACoFINELATE' END) ORDER BY o.id),
         array_agg(NULL::text ORDER BY o.id), array_agg(1.0::float8 ORDER BY o.id))
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.kind = 'resolve_profile' AND p.public_identifier LIKE 'late-%';
SELECT p.public_identifier, p.provider_id, p.status, p.last_error,
       (SELECT string_agg(o.kind || ' ' || o.state, ', ' ORDER BY o.id) FROM sam.outbox o WHERE o.prospect_id = p.id) AS calls
  FROM sam.prospects p WHERE p.public_identifier LIKE 'late-%' ORDER BY p.id;
SELECT count(*) AS erased_calls_left FROM sam.outbox WHERE idempotency_key LIKE 'resolve:%' AND response::text LIKE '%ERASEDLATE%';
SELECT sam.add_prospects(:cid, '[{"public_identifier": "late-erased"}]')->'refused_rows' AS refused_again;
-- the webhook that names the provider id of a prospect known by public identifier only
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-o", "user_provider_id": "ACoWEBHOOKLATE",
                            "user_public_identifier": "late-webhook"}') - 'event_id' - 'id' - 'prospect_id' AS webhook;
SELECT p.provider_id, p.status, p.last_error,
       (SELECT string_agg(o.kind || ' ' || o.state, ', ' ORDER BY o.id) FROM sam.outbox o WHERE o.prospect_id = p.id) AS calls
  FROM sam.prospects p WHERE p.public_identifier = 'late-webhook';
-- an erased person named by a webhook, known here by public identifier only: removed, and the
-- webhook that named them too
SELECT sam.erase_person('ACoERASEDHOOK')->'removed'->'prospects' AS erased_hook_before_known;
SELECT (sam.add_prospects(:cid, '[{"public_identifier": "late-erased-hook"}]'))->>'inserted' AS inserted;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-o", "user_provider_id": "ACoERASEDHOOK",
                            "user_public_identifier": "late-erased-hook"}') - 'event_id' - 'id' - 'prospect_id' AS webhook;
SELECT (SELECT count(*) FROM sam.prospects WHERE public_identifier = 'late-erased-hook') AS prospects_left,
       (SELECT count(*) FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoERASEDHOOK') AS webhooks_left;
-- a withdrawal queued for a stale invitation is cancelled when the invitation turns out accepted
-- (webhook) or the prospect replies, and at the claim when it no longer waits; a prospect whose
-- sequence completed and who writes back has replied (all three were lost or sent before)
SELECT (sam.add_prospects(:cid, '[{"provider_id": "ACoWDA"}, {"provider_id": "ACoWDB"}, {"provider_id": "ACoWDC"}]'))->>'inserted' AS inserted;
UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now() - interval '40 days',
                         invitation_id = 'inv-' || provider_id WHERE provider_id IN ('ACoWDA', 'ACoWDB');
UPDATE sam.prospects SET status = 'completed', completed_at = sam.now(), connected_at = sam.now() - interval '20 days'
 WHERE provider_id = 'ACoWDC';
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, not_before)
SELECT 'acc-o', p.campaign_id, p.id, 'withdraw_invite', 'withdraw:' || p.id,
       jsonb_build_object('method', 'DELETE', 'path', '/api/v1/users/invite/sent/' || p.invitation_id), sam.now()
  FROM sam.prospects p WHERE p.provider_id IN ('ACoWDA', 'ACoWDB');
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-o", "user_provider_id": "ACoWDA"}')->>'transition' AS accepted;
UPDATE sam.prospects SET status = 'replied', replied_at = sam.now() WHERE provider_id = 'ACoWDB';    -- (by hand: the claim sees it)
BEGIN;     -- (the claim takes other due rows too: rolled back for the later tests)
SELECT count(*) AS withdrawals_claimed FROM sam._claim(100) c JOIN sam.outbox o ON o.id = c.id WHERE o.kind = 'withdraw_invite';
SELECT p.provider_id, p.status, o.state, o.error FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id
 WHERE o.kind = 'withdraw_invite' AND p.provider_id LIKE 'ACoWD%' ORDER BY 1;
ROLLBACK;
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-o", "chat_id": "chat-wdc", "message_id": "m-wdc",
                            "message": "thanks, interested now", "sender": {"attendee_provider_id": "ACoWDC"}}')->>'transition' AS after_completed;
SELECT status, replied_at IS NOT NULL AS replied_at, completed_at IS NOT NULL AS completed_at, chat_id,
       (SELECT count(*) FROM sam.notifications n WHERE n.prospect_id = p.id AND n.event = 'prospect_replied') AS notified
  FROM sam.prospects p WHERE provider_id = 'ACoWDC';
DELETE FROM sam.notifications n USING sam.prospects p WHERE p.id = n.prospect_id AND p.provider_id LIKE 'ACoWD%';
DELETE FROM sam.outbox o USING sam.prospects p WHERE p.id = o.prospect_id AND p.provider_id LIKE 'ACoWD%';
DELETE FROM sam.prospects WHERE provider_id LIKE 'ACoWD%';
DELETE FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoWDA' OR payload->>'message_id' = 'm-wdc';
-- (removed again, so that the later tests see the lists and the queue as before)
DELETE FROM sam.outbox o USING sam.prospects p WHERE p.id = o.prospect_id AND p.public_identifier LIKE 'late-%';
DELETE FROM sam.prospects WHERE public_identifier LIKE 'late-%';
DELETE FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoWEBHOOKLATE';
DELETE FROM sam.do_not_contact;
SELECT setval(pg_get_serial_sequence('sam.do_not_contact', 'id'), 1, false) IS NOT NULL AS reset;
DELETE FROM sam.suppressions;
-- the first step's delay counts from the acceptance as the evidence dates it (a relation's
-- created_at); a time before the invitation, or to come, is taken as now, the detection (rolled back)
BEGIN;
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, invited_at)
SELECT c.id, 'acc-o', 'ACoAT' || g, 'connection_request_sent', sam.now() - interval '1 day'
  FROM sam.campaigns c, generate_series(1, 3) g WHERE c.id = :cid;
SELECT sam._prospect_connected(p.id, CASE p.provider_id WHEN 'ACoAT1' THEN sam.now() - interval '2 hours'
                                                        WHEN 'ACoAT2' THEN sam.now() - interval '30 days'
                                                        ELSE sam.now() + interval '10 days' END, 'relations')
  FROM sam.prospects p WHERE p.provider_id LIKE 'ACoAT%' ORDER BY p.id;
SELECT provider_id, sam.now() - connected_at AS accepted_ago, follow_up_due_at - connected_at AS first_step_after
  FROM sam.prospects WHERE provider_id LIKE 'ACoAT%' ORDER BY id;
ROLLBACK;
-- a withdrawal answered 404 (no invitation under that id) is made again once the invitation is
-- known under another id; one that went through is not (rolled back)
BEGIN;
SELECT sam.create_account('acc-rewd')->>'success' AS account;
SELECT (sam.create_campaign('acc-rewd', 'Rewd'))->>'campaign_id' AS rcid \gset
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, invited_at, invitation_id)
VALUES (:rcid, 'acc-rewd', 'ACoREWD1', 'connection_request_sent', sam.now() - interval '30 days', 'inv-new'),
       (:rcid, 'acc-rewd', 'ACoREWD2', 'connection_request_sent', sam.now() - interval '30 days', 'inv-two');
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, state, http_status,
                        finished_at, error)
SELECT 'acc-rewd', :rcid, p.id, 'withdraw_invite', 'withdraw:' || p.id,
       jsonb_build_object('method', 'DELETE', 'path', '/api/v1/users/invite/sent/inv-old'), 'done',
       CASE p.provider_id WHEN 'ACoREWD1' THEN 404 ELSE 200 END, sam.now(), NULL
  FROM sam.prospects p WHERE p.account_id = 'acc-rewd';
SELECT sam._queue_withdrawals('acc-rewd', NULL, 50) AS queued;
SELECT p.provider_id, o.state, o.request->>'path' AS path, o.error
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-rewd' ORDER BY 1;
SELECT sam._queue_withdrawals('acc-rewd', NULL, 50) AS queued_again;
ROLLBACK;
-- a prospect ended as no longer pending (no id to withdraw its invitation by) that shows among the
-- relations later is connected all the same (rolled back)
BEGIN;
SELECT sam.create_account('acc-late')->>'success' AS account;
SELECT (sam.create_campaign('acc-late', 'Late'))->>'campaign_id' AS lcid \gset
INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, invited_at, withdrawn_at)
VALUES (:lcid, 'acc-late', 'ACoLATE1', 'withdrawn', sam.now() - interval '30 days', sam.now() - interval '1 day');
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, context, state)
VALUES ('acc-late', 'relations_page', 'late-page', '{"method": "GET", "path": "/api/v1/users/relations"}',
        '{"page": 1, "stop_before_ms": 0}', 'in_flight');
SELECT sam._on_relations_page(o, jsonb_build_object('object', 'UserRelationsList', 'cursor', NULL,
           'items', jsonb_build_array(jsonb_build_object('member_id', 'ACoLATE1',
                                                         'created_at', extract(epoch FROM sam.now()) * 1000))))
  FROM sam.outbox o WHERE o.idempotency_key = 'late-page';
SELECT status, connected_via FROM sam.prospects WHERE provider_id = 'ACoLATE1';
SELECT outcome FROM sam.outbox WHERE idempotency_key = 'late-page';
ROLLBACK;
-- LinkedIn's invitation limit: the account's other invitations queued are cancelled, and queued
-- again once the pause is over, spaced (held, they would all go at its end, and meet the limit
-- again) (rolled back)
BEGIN;
SELECT sam.create_account('acc-lim', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS account;
SELECT (sam.create_campaign('acc-lim', 'Limit'))->>'campaign_id' AS limcid \gset
SELECT (sam.add_prospects(:limcid, '[{"provider_id": "ACoLIM1"}, {"provider_id": "ACoLIM2"}, {"provider_id": "ACoLIM3"}]'))->>'inserted';
SELECT (sam.start_campaign(:limcid))->'queued' AS queued;
-- (the first of them claimed as the worker would: other accounts' rows are due too)
CREATE TEMP TABLE lim_claim AS
WITH c AS (UPDATE sam.outbox SET state = 'in_flight', claimed_at = sam.now(), claimed_by = 0, attempts = attempts + 1
            WHERE id = (SELECT min(id) FROM sam.outbox WHERE account_id = 'acc-lim') RETURNING id)
SELECT id FROM c;
SELECT sam._complete(array_agg(id), ARRAY[422],
                     ARRAY['{"status": 422, "type": "errors/limit_exceeded", "title": "Limit exceeded", "detail": "Weekly limit."}'],
                     ARRAY[NULL::text], ARRAY[1.0::float8]) AS recorded FROM lim_claim;
SELECT p.provider_id, o.state, o.error LIKE 'invitations of the account paused until%' AS held_by_limit
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-lim' ORDER BY 1;
SELECT (sam.send_connection_requests(:limcid))->>'reason' AS while_paused;
SELECT sam.advance_clock('7 hours')->>'now' IS NOT NULL AS after_the_pause;
SELECT (sam.send_connection_requests(:limcid))->'queued' AS queued_again;
SELECT p.provider_id, o.state, o.error LIKE 'queued again%' AS again
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.account_id = 'acc-lim' ORDER BY 1;
ROLLBACK;
