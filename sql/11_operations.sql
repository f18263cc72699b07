-- Operations: notifications (queue, pg_notify, hook POSTs through the outbox),
-- GDPR (retention, cleanup, erasure, suppression, do-not-contact) and roles.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-05-04 10:00:00+00', frozen => true)->>'now' AS now;
-- earlier tests' work is out of the way
UPDATE sam.campaigns SET status = 'paused' WHERE status IN ('running', 'scheduled');
UPDATE sam.outbox SET state = 'cancelled', finished_at = sam.now() WHERE state IN ('queued', 'failed', 'in_flight');
DELETE FROM sam.notifications;

------------------------------------------------------------------------
-- Notifications
------------------------------------------------------------------------
SELECT sam.create_account('acc-n', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (sam.create_campaign('acc-n', 'Notify me', 'Hi {first_name|there}', '[{"template": "one"}]'))->>'campaign_id' AS cid \gset
SELECT (sam.add_prospects(:cid, '[{"provider_id": "ACoN1", "first_name": "Nina", "last_name": "North", "company": "Acme"},
                                  {"provider_id": "ACoN2", "public_identifier": "ned-n"},
                                  {"provider_id": "ACoN3"}]'))->>'inserted' AS inserted;
UPDATE sam.campaigns SET status = 'running', started_at = sam.now() WHERE id = :cid;
-- events: an acceptance, a reply, a disconnection and a reconnection
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now(), connected_via = 'webhook' WHERE provider_id = 'ACoN1';
UPDATE sam.prospects SET status = 'replied', replied_at = sam.now(), chat_id = 'chat-n2' WHERE provider_id = 'ACoN2';
SELECT sam.pause_account('acc-n', 'x')->>'success' AS paused_is_not_an_event;
SELECT sam.resume_account('acc-n')->>'success' AS resumed;
UPDATE sam.accounts SET status = 'disconnected', status_reason = 'CREDENTIALS', status_changed_at = sam.now()
 WHERE account_id = 'acc-n';
UPDATE sam.accounts SET status = 'active', status_reason = NULL, status_changed_at = sam.now() + interval '1 minute'
 WHERE account_id = 'acc-n';
-- the same transition twice is one notification
UPDATE sam.prospects SET status = 'connected' WHERE provider_id = 'ACoN1';
SELECT event, account_id, prospect_id IS NOT NULL AS about_prospect, text, notified_at, http_state
  FROM sam.notifications ORDER BY id;

-- a job that fails: one notification per streak of failures
INSERT INTO sam.job_runs (job, status, error, finished_at) VALUES ('process-outbox', 'succeeded', NULL, now());
INSERT INTO sam.job_runs (job, status, error, finished_at) VALUES ('process-outbox', 'failed', 'boom (SQLSTATE XX000)', now());
INSERT INTO sam.job_runs (job, status, error, finished_at) VALUES ('process-outbox', 'failed', 'boom again', now());
SELECT event, text FROM sam.notifications WHERE event = 'job_failing' ORDER BY id;

-- without a hook: announced by pg_notify only, once
SELECT sam.check_pending_notifications() - 'run_id' AS first_run;
SELECT sam.check_pending_notifications() - 'run_id' AS second_run;
SELECT count(*) FILTER (WHERE notified_at IS NULL) AS pending, count(*) FILTER (WHERE http_state = 'none') AS no_hook,
       bool_and(delivered_via = '{notify}') AS via_notify
  FROM sam.notifications;

-- hooks: the URL is checked, events too; the answer names the host only (the URL holds a token)
SELECT sam.set_notification_url('ftp://example.com/x');
SELECT sam.set_notification_url('https://hooks.example.com/x', events => '{}');
SELECT sam.set_notification_url('https://hooks.example.com/services/T0/B0 secret');
SELECT sam.set_notification_url('https://hooks.example.com:99999/x');
SELECT sam.set_notification_url('https://hooks.example.com/x', events => '{prospect_replied,prospect_replied}');
SELECT sam.set_notification_url('https://hooks.example.com/x', events => '{{prospect_replied},{job_failing}}');
SELECT sam.set_notification_url('https://hooks.example.com/services/T0/B0/SECRETTOKEN', events => '{connection_accepted,nope}');
SELECT sam.set_notification_url('https://hooks.example.com/services/T0/B0/SECRETTOKEN', 'no-such-account');
SELECT sam.set_notification_url('https://hooks.example.com/services/T0/B0/SECRETTOKEN');
SELECT sam.set_notification_url('http://127.0.0.1:9/acc-n', 'acc-n', '{prospect_replied,campaign_completed}');
SELECT account_id, url, events FROM sam.notification_hooks ORDER BY account_id NULLS FIRST;

-- a reply and a completed campaign go to the account's hook; a dead call to the workspace's
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request)
SELECT 'acc-n', :cid, id, 'invite', 'test-dead-' || id, '{"method": "POST", "path": "/api/v1/users/invite"}'
  FROM sam.prospects WHERE provider_id = 'ACoN3';
UPDATE sam.outbox SET state = 'dead', error = 'gave up after 5 attempts: HTTP 500', error_type = 'http_500',
                      finished_at = sam.now()
 WHERE idempotency_key LIKE 'test-dead-%';
UPDATE sam.prospects SET status = 'replied', replied_at = sam.now() WHERE provider_id = 'ACoN1';
UPDATE sam.prospects SET status = 'failed' WHERE provider_id = 'ACoN3';
UPDATE sam.campaigns SET status = 'completed', completed_at = sam.now() WHERE id = :cid;
SELECT sam.check_pending_notifications() - 'run_id' AS with_hooks;
SELECT n.event, n.http_state, o.kind, coalesce(h.account_id, 'workspace') AS hook, o.request->>'method' AS method,
       o.request->>'path' = h.url AS to_its_hook, o.request->'json'->>'text' = n.text AS slack_text
  FROM sam.notifications n
  JOIN sam.outbox o ON o.id = n.http_outbox_id
  JOIN sam.notification_hooks h ON h.url = o.request->>'path'
 ORDER BY n.id;

-- the worker's answers: 2xx delivers (Slack answers "ok" as text), 5xx is retried, 404 is final
CREATE TEMP TABLE hook_calls AS
SELECT c.id, n.event FROM sam._claim(100) c JOIN sam.notifications n ON n.http_outbox_id = c.id;
SELECT event, count(*) FROM hook_calls GROUP BY event ORDER BY event;
SELECT sam._complete(array_agg(id ORDER BY id),
                     array_agg(CASE event WHEN 'prospect_replied' THEN 200 WHEN 'campaign_completed' THEN 503 ELSE 404 END ORDER BY id),
                     array_agg('ok'::text ORDER BY id), array_agg(NULL::text ORDER BY id), array_agg(5.0::float8 ORDER BY id))
  FROM hook_calls;
SELECT n.event, n.http_state, n.delivered_via, n.http_delivered_at, o.state, o.attempts, o.error_type, n.http_error
  FROM sam.notifications n JOIN sam.outbox o ON o.id = n.http_outbox_id ORDER BY n.id;
-- a hook that gave up is not itself a 'delivery_dead' notification
SELECT count(*) AS delivery_dead FROM sam.notifications WHERE event = 'delivery_dead';
SELECT "check", ok, detail FROM sam.doctor() WHERE "check" = 'notifications delivered';
SELECT metric, labels, value FROM sam.metrics WHERE metric LIKE 'sam_notifications%' ORDER BY metric, labels::text;
SELECT sam.set_notification_url(NULL, 'acc-n') AS removed;

------------------------------------------------------------------------
-- GDPR: retention settings
------------------------------------------------------------------------
SELECT kind, keep, default_keep, minimum FROM sam.retention ORDER BY kind;
SELECT sam.set_retention('nope', '1 day');
SELECT sam.set_retention('outbox_rows', '1 day');
-- an interval whose parts have both signs is as long as the month it starts in: refused
SELECT sam.set_retention('outbox_rows', '1 mon -22 days');
SELECT sam.set_retention('prospect_data', '20 years');
SELECT sam.set_retention('prospect_data', '180 days');
SELECT sam.set_retention('prospect_data', NULL);
SELECT sam.set_retention('webhook_payloads', '7 days');
SELECT kind, keep FROM sam.retention WHERE keep <> default_keep;

------------------------------------------------------------------------
-- GDPR: cleanup (what is kept and what is gone)
------------------------------------------------------------------------
-- an old campaign, completed 400 days ago, and a recent one
SELECT sam.create_account('acc-g', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (sam.create_campaign('acc-g', 'Old', 'Hello {first_name}'))->>'campaign_id' AS old_cid \gset
SELECT (sam.create_campaign('acc-g', 'Recent', 'Hello {first_name}'))->>'campaign_id' AS new_cid \gset
SELECT (sam.add_prospects(:old_cid, '[{"provider_id": "ACoG1", "first_name": "Gina", "company": "Old Co", "public_identifier": "gina-g"}]'))->>'inserted';
SELECT (sam.add_prospects(:new_cid, '[{"provider_id": "ACoG2", "first_name": "Gus", "company": "New Co"}]'))->>'inserted';
UPDATE sam.prospects SET status = 'completed', connected_at = sam.now() - interval '420 days'
 WHERE campaign_id = :old_cid;
-- and a paused campaign that never completes: its prospect that failed 400 days ago goes too, the
-- one still pending stays
SELECT (sam.create_campaign('acc-g', 'Paused'))->>'campaign_id' AS paused_cid \gset
SELECT (sam.add_prospects(:paused_cid, '[{"provider_id": "ACoGP1", "first_name": "Pia"}, {"provider_id": "ACoGP2", "first_name": "Pat"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'paused', paused_at = sam.now() - interval '400 days' WHERE id = :paused_cid;
UPDATE sam.prospects SET status = 'failed', failed_at = sam.now() - interval '400 days', updated_at = sam.now() - interval '400 days',
                         last_error = 'gave up'
 WHERE provider_id = 'ACoGP1';
UPDATE sam.prospects SET updated_at = sam.now() - interval '400 days' WHERE provider_id = 'ACoGP2';
UPDATE sam.campaigns SET status = 'completed', completed_at = sam.now() - interval '400 days' WHERE id = :old_cid;
UPDATE sam.campaigns SET status = 'completed', completed_at = sam.now() - interval '10 days' WHERE id = :new_cid;
-- calls: finished 100, 40 and 2 days ago, and one still queued long ago
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, response, state, finished_at, not_before)
VALUES ('acc-g', 'invite', 'g-100', '{"json": {"message": "Hello Gina"}}', '{"invitation_id": "1"}', 'done', sam.now() - interval '100 days', sam.now()),
       ('acc-g', 'invite', 'g-40', '{"json": {"message": "Hello Gina"}}', '{"invitation_id": "2"}', 'dead', sam.now() - interval '40 days', sam.now()),
       ('acc-g', 'invite', 'g-2', '{"json": {"message": "Hello Gus"}}', '{"invitation_id": "3"}', 'done', sam.now() - interval '2 days', sam.now()),
       ('acc-g', 'invite', 'g-queued', '{"json": {"message": "Hello"}}', NULL, 'queued', NULL, sam.now() + interval '1 year');
-- the old prospect's message (finished yesterday, its chat in the context), its notification and the
-- webhook applied to it: they point at the prospect, so they go with its data
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, response, context, state,
                        finished_at, not_before)
SELECT 'acc-g', p.campaign_id, p.id, 'send_message', 'g-msg', '{"form": [["text", "Hi Gina"]]}', '{"chat_id": "chat-gina"}',
       '{"step": 1, "text": "Hi Gina", "chat_id": "chat-gina"}', 'done', sam.now() - interval '1 day', sam.now()
  FROM sam.prospects p WHERE p.provider_id = 'ACoG1';
INSERT INTO sam.notifications (event, account_id, campaign_id, prospect_id, dedupe_key, text, notified_at, http_state)
SELECT 'prospect_replied', 'acc-g', p.campaign_id, p.id, 'g-replied', 'Gina (Old Co) replied', sam.now(), 'none'
  FROM sam.prospects p WHERE p.provider_id = 'ACoG1';
INSERT INTO sam.webhook_events (source, event, account_id, dedupe_key, payload, status, result)
SELECT 'unipile', 'message_received', 'acc-g', 'g-reply', '{"message": "thanks, Gina here"}', 'processed',
       jsonb_build_object('prospect_id', p.id, 'transition', 'replied')
  FROM sam.prospects p WHERE p.provider_id = 'ACoG1';
UPDATE sam.prospects SET connected_at = '2025-01-07 13:14:15.678+00' WHERE provider_id = 'ACoG1';
UPDATE sam.outbox SET updated_at = sam.now() WHERE account_id = 'acc-g';
-- webhook events: applied 10 days ago (gone with webhook_payloads = 7 days), and today
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoOLD"}')->>'status' AS old_event;
UPDATE sam.webhook_events SET received_at = sam.now() - interval '10 days' WHERE dedupe_key = 'new_relation:acc-g:ACoOLD';
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoNEW"}')->>'status' AS new_event;
UPDATE sam.notifications SET created_at = sam.now() - interval '31 days' WHERE event = 'job_failing';
UPDATE sam.job_runs SET clock_at = sam.now() - interval '31 days' WHERE error = 'boom again';

SELECT jsonb_pretty(sam.gdpr_cleanup() - 'run_id') AS cleanup;
-- the old campaign's prospect is anonymised; its figures stay
SELECT c.name, p.provider_id, p.public_identifier ~ '^anonymised-' AS anonymised, p.first_name, p.company, p.status,
       p.connected_at IS NOT NULL AS connected, p.anonymised_at
  FROM sam.prospects p JOIN sam.campaigns c ON c.id = p.campaign_id WHERE p.account_id = 'acc-g' ORDER BY c.id;
SELECT name, prospects, connected, completed FROM sam.campaign_funnel WHERE account_id = 'acc-g' ORDER BY campaign_id;
-- its times are kept to the day (the exact time of a relation named the member); what pointed at it is gone
SELECT connected_at FROM sam.prospects WHERE public_identifier ~ '^anonymised-' ORDER BY connected_at NULLS FIRST;
SELECT request, response, context FROM sam.outbox WHERE idempotency_key = 'g-msg';
SELECT count(*) AS its_notifications FROM sam.notifications WHERE dedupe_key = 'g-replied';
SELECT count(*) AS its_webhooks FROM sam.webhook_events WHERE dedupe_key = 'g-reply';
SELECT idempotency_key, state, request, response, bodies_removed_at IS NOT NULL AS stripped
  FROM sam.outbox WHERE account_id = 'acc-g' ORDER BY idempotency_key;
SELECT user_provider_id FROM (SELECT payload->>'user_provider_id' AS user_provider_id FROM sam.webhook_events
                               WHERE account_id = 'acc-g') s ORDER BY 1;
SELECT count(*) AS old_job_failing_notifications FROM sam.notifications WHERE event = 'job_failing';
SELECT count(*) AS old_runs FROM sam.job_runs WHERE error = 'boom again';
-- nothing more to remove: a second run removes nothing
SELECT sam.gdpr_cleanup()->'removed' AS again;

------------------------------------------------------------------------
-- GDPR: erasure on request, then re-import refused
------------------------------------------------------------------------
SELECT (sam.create_campaign('acc-g', 'Erase', 'Hi {first_name|there}'))->>'campaign_id' AS ecid \gset
SELECT (sam.add_prospects(:ecid, '[{"provider_id": "ACoE1", "public_identifier": "Erin-E", "first_name": "Erin"},
                                   {"provider_id": "ACoE2", "first_name": "Eve"}]'))->>'inserted';
UPDATE sam.prospects SET chat_id = 'chat-erin', status = 'connected', connected_at = sam.now() WHERE provider_id = 'ACoE1';
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-g", "chat_id": "chat-erin", "message_id": "m-e1",
                            "sender": {"attendee_provider_id": "ACoE1"}, "message": "please forget me"}')->>'status' AS reply;
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, response, state, finished_at)
VALUES ('acc-g', 'relations_page', 'e-page', '{}', '{"items": [{"member_id": "ACoE1"}, {"member_id": "ACoE2"}]}', 'done', sam.now());
SELECT count(*) AS erin_rows_before FROM sam.prospects WHERE provider_id = 'ACoE1';
SELECT sam.erase_person('');
SELECT sam.erase_person('https://www.linkedin.com/company/acme');
SELECT jsonb_pretty(sam.erase_person('https://www.linkedin.com/in/erin-e/?utm=x')) AS erased;
SELECT count(*) AS prospects_left FROM sam.prospects WHERE provider_id = 'ACoE1' OR public_identifier = 'erin-e';
SELECT count(*) AS events_left FROM sam.webhook_events WHERE payload::text LIKE '%ACoE1%' OR payload::text LIKE '%chat-erin%';
SELECT count(*) AS notifications_left FROM sam.notifications n
 WHERE NOT EXISTS (SELECT 1 FROM sam.prospects p WHERE p.id = n.prospect_id) AND n.prospect_id IS NOT NULL;
SELECT response IS NULL AS page_scrubbed FROM sam.outbox WHERE idempotency_key = 'e-page';
SELECT count(*) AS suppression_hashes FROM sam.suppressions;
-- nothing readable is kept: only hashes
SELECT count(*) AS plain_identifiers FROM sam.suppressions s WHERE s.hash::text LIKE '%rin%';
-- Eve is untouched
SELECT first_name, status FROM sam.prospects WHERE provider_id = 'ACoE2';
-- re-import, by provider id or public identifier, in any campaign: refused, and said why
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoE1"}, {"public_identifier": "erin-e"}, {"profile_url": "https://linkedin.com/in/ERIN-E"}, {"provider_id": "ACoE9"}]')
       - 'prospect_ids' - 'campaign_id' AS reimport;
-- erasing someone unknown still records them
SELECT sam.erase_person('ACoNEVERSEEN')->'removed' AS unknown;
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoNEVERSEEN"}]')->'refused' AS refused;
-- webhooks that name someone erased, arriving after the erasure, are not kept (not even as events
-- nothing applies): a message from Erin, a relation naming her public identifier
SELECT r->>'status' AS status, r->>'not_kept' AS not_kept
  FROM sam.ingest_webhook('{"event": "message_received", "account_id": "acc-g", "chat_id": "chat-e", "message_id": "m-e1",
                            "sender": {"attendee_provider_id": "ACoE1"}, "message": "Please stop"}') r;
SELECT r->>'status' AS status, r->>'not_kept' AS not_kept
  FROM sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoE1X",
                            "user_public_identifier": "Erin-E"}') r;
SELECT count(*) AS kept FROM sam.webhook_events
 WHERE payload->>'message_id' = 'm-e1' OR payload->>'user_provider_id' = 'ACoE1X';
-- whole values only: erasing john removes the webhook that names his profile, and keeps johnson's
-- and a message that says "hi john" (a substring match removed every event containing the word)
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoJOHNSON",
                            "user_public_identifier": "johnson"}')->>'status' AS johnson;
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-g", "chat_id": "chat-x", "message_id": "m-j1",
                            "sender": {"attendee_provider_id": "ACoOTHER"}, "message": "hi john"}')->>'status' AS says_john;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoJOHN2",
                            "user_profile_url": "https://www.linkedin.com/in/John/"}')->>'status' AS john_by_url;
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-g", "chat_id": "chat-y", "message_id": "m-j2",
                            "sender": {"attendee_provider_id": "ACoOTHER"},
                            "message": "see https://www.linkedin.com/in/bob-b/ and https://www.linkedin.com/in/john/"}')->>'status' AS names_two;
SELECT sam.erase_person('john')->'removed'->'webhook_events' AS removed_events;
SELECT coalesce(payload->>'user_provider_id', payload->>'message_id') AS kept FROM sam.webhook_events
 WHERE payload->>'user_provider_id' IN ('ACoJOHNSON', 'ACoJOHN2') OR payload->>'message_id' = 'm-j1' ORDER BY 1;
SELECT sam.erase_person('e')->'removed' AS one_letter;
-- one person, a prospect of two accounts: by URL in one (with their provider id), by provider id only
-- in the other; an erasure by URL finds both, and what names the provider id inside text
SELECT sam.create_account('acc-g2')->>'success' AS second_account;
SELECT (sam.add_prospects(:ecid, '[{"provider_id": "ACoEVEXAAAAAAAAAAAAA", "public_identifier": "eve-x"}]'))->>'inserted' AS in_g;
SELECT (sam.add_prospects((sam.create_campaign('acc-g2', 'Erase two')->>'campaign_id')::bigint,
                          '[{"provider_id": "ACoEVEXAAAAAAAAAAAAA"}]'))->>'inserted' AS in_g2;
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, response, state, finished_at)
VALUES ('acc-g2', 'relations_page', 'eve-raw', '{}', '{"raw": "<html>urn:li:fsd_profile:ACoEVEXAAAAAAAAAAAAA,x</html>"}', 'done', sam.now()),
       ('acc-g2', 'relations_page', 'eve-other', '{}', '{"raw": "<html>ACoEVEXAAAAAAAAAAAAAB</html>"}', 'done', sam.now()),
       ('acc-g2', 'relations_page', 'eve-encoded', '{}', '{"items": [{"public_identifier": "eve%2Dx"}]}', 'done', sam.now());
SELECT sam.erase_person('https://www.linkedin.com/in/eve-x/')->'removed' AS both_accounts;
SELECT count(*) AS eve_left FROM sam.prospects WHERE provider_id = 'ACoEVEXAAAAAAAAAAAAA' OR public_identifier = 'eve-x';
SELECT idempotency_key, response IS NULL AS scrubbed FROM sam.outbox WHERE idempotency_key LIKE 'eve-%' ORDER BY 1;
-- a prospect imported by provider id only, erased by profile URL: found through a stored answer that
-- gives both identifiers (a webhook, here unmatched in the other account), or by the public identifier
-- a webhook taught it (its webhook gone since); and a do-not-contact entry by URL stops it the same way
SELECT (sam.add_prospects(:ecid, '[{"provider_id": "ACoPAIRONE"}, {"provider_id": "ACoPAIRTWO"},
                                   {"provider_id": "ACoPAIRTHREE"}]'))->>'inserted' AS provider_only;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g2", "user_provider_id": "ACoPAIRONE",
                            "user_public_identifier": "pair-one"}')->>'status' AS elsewhere;
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoPAIRTWO",
                            "user_public_identifier": "Pair-Two"}')->>'transition' AS learnt;
SELECT sam.add_do_not_contact('https://www.linkedin.com/in/pair-three/', reason => 'asked')->>'success' AS dnc;
SELECT r->>'transition' AS dnc_learnt, r->>'reason' AS reason
  FROM sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-g", "user_provider_id": "ACoPAIRTHREE",
                            "user_public_identifier": "pair-three"}') r;
SELECT provider_id, public_identifier, status, last_error FROM sam.prospects WHERE provider_id LIKE 'ACoPAIR%' ORDER BY 1;
DELETE FROM sam.webhook_events WHERE payload->>'user_provider_id' IN ('ACoPAIRTWO', 'ACoPAIRTHREE');
SELECT sam.erase_person('https://www.linkedin.com/in/pair-one/')->'removed' AS by_pairing;
SELECT sam.erase_person('pair-two')->'removed'->'prospects' AS by_learnt;
SELECT provider_id FROM sam.prospects WHERE provider_id LIKE 'ACoPAIR%';
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoPAIRONE"}, {"provider_id": "ACoPAIRTWO"}]')->'refused' AS refused_by_pairing;
-- an erasure removes the person's do-not-contact entry too (their identifier in clear, a reason): the
-- hashes refuse them now
SELECT sam.erase_person('https://www.linkedin.com/in/pair-three/')->'removed' AS with_its_entry;
SELECT count(*) AS entries_left FROM sam.do_not_contact;
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoPAIRTHREE"}]')->'refused' AS still_refused;
SELECT setval(pg_get_serial_sequence('sam.do_not_contact', 'id'), 1, false) IS NOT NULL AS reset;
SELECT sam.delete_account('acc-g2')->>'success' AS cleaned;
-- percent-encoded profile URLs name the decoded identifier, in erasures, imports and the do-not-contact list
SELECT sam.erase_person('https://www.linkedin.com/in/jos%C3%A9-p/')->'removed'->'prospects' AS encoded;
SELECT sam.add_prospects(:ecid, '[{"public_identifier": "josé-p"}, {"profile_url": "https://www.linkedin.com/in/JOS%C3%A9-p"},
                                   {"public_identifier": "jos%c3%a9-p"}]')->'refused' AS refused_decoded;
SELECT sam.add_prospects(:ecid, '[{"profile_url": "https://www.linkedin.com/in/ren%C3%A9-r/"}]')->'inserted' AS inserted;
SELECT public_identifier FROM sam.prospects WHERE public_identifier LIKE 'ren%-r';
SELECT sam.add_prospects(:ecid, '[{"profile_url": "https://www.linkedin.com/in/%FF%FE/"}, {"public_identifier": "a%2Fb"},
                                   {"public_identifier": "%C3"}]')->'invalid_rows' AS invalid_encodings;
SELECT sam.erase_person('https://www.linkedin.com/in/%FF/');
SELECT sam.add_do_not_contact('%FF');

------------------------------------------------------------------------
-- Do-not-contact list: every campaign of every account respects it
------------------------------------------------------------------------
SELECT (sam.add_prospects(:ecid, '[{"provider_id": "ACoD1", "company": "Blocked Corp"}, {"provider_id": "ACoD2", "company": "Fine Inc"},
                                   {"provider_id": "ACoD3", "public_identifier": "dan-d"}]'))->>'inserted';
UPDATE sam.campaigns SET status = 'running' WHERE id = :ecid;
SELECT (sam.send_connection_requests(:ecid))->>'queued' AS queued;
SELECT sam.add_do_not_contact();
SELECT sam.add_do_not_contact('ACoD9', 'Both Inc');
SELECT sam.add_do_not_contact(company => repeat('x', 201));
SELECT sam.add_do_not_contact(company => 'blocked corp', reason => 'asked by their legal team') - 'id' AS by_company;
SELECT sam.add_do_not_contact('https://www.linkedin.com/in/dan-d') - 'id' AS by_identifier;
SELECT sam.add_do_not_contact('https://www.linkedin.com/in/dan-d') - 'id' AS again;
SELECT p.provider_id, p.status, p.last_error IS NOT NULL AS said_why, o.state AS call_state
  FROM sam.prospects p LEFT JOIN sam.outbox o ON o.prospect_id = p.id AND o.kind = 'invite'
 WHERE p.provider_id LIKE 'ACoD%' ORDER BY p.provider_id;
SELECT identifier, company, reason FROM sam.do_not_contact ORDER BY id;
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoX1", "company": "BLOCKED CORP"}, {"public_identifier": "Dan-D"}]')
       -> 'refused_rows' AS refused_rows;
SELECT sam.remove_do_not_contact((SELECT id FROM sam.do_not_contact WHERE company IS NOT NULL)) - 'id' AS removed;
SELECT sam.remove_do_not_contact(999999);
SELECT sam.remove_do_not_contact(NULL);
SELECT sam.add_prospects(:ecid, '[{"provider_id": "ACoX1", "company": "BLOCKED CORP"}]')->>'inserted' AS inserted_after_removal;

------------------------------------------------------------------------
-- Roles and privileges
------------------------------------------------------------------------
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'sam\_%' ORDER BY rolname;
-- nothing for PUBLIC
SELECT count(*) AS public_functions FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'sam'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_relations FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'sam'::regnamespace AND a.grantee = 0;
-- every SECURITY DEFINER function has a fixed search_path
SELECT count(*) AS definer_functions, count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%')) AS without_search_path
  FROM pg_proc p WHERE p.pronamespace = 'sam'::regnamespace AND p.prosecdef;
-- each role's functions
SELECT r.rolname, string_agg(p.proname, ' ' ORDER BY p.proname) AS may_execute
  FROM pg_roles r, pg_proc p
 WHERE r.rolname IN ('sam_app', 'sam_jobs', 'sam_ingest', 'sam_monitor') AND p.pronamespace = 'sam'::regnamespace
   AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
 GROUP BY r.rolname ORDER BY r.rolname;
SELECT r.rolname, string_agg(c.relname, ' ' ORDER BY c.relname) AS may_select
  FROM pg_roles r, pg_class c
 WHERE r.rolname IN ('sam_app', 'sam_jobs', 'sam_ingest', 'sam_monitor') AND c.relnamespace = 'sam'::regnamespace
   AND c.relkind IN ('r', 'v') AND has_table_privilege(r.oid, c.oid, 'SELECT')
 GROUP BY r.rolname ORDER BY r.rolname;
SELECT count(*) AS writable_by_a_role FROM pg_roles r, pg_class c
 WHERE r.rolname IN ('sam_app', 'sam_jobs', 'sam_ingest', 'sam_monitor') AND c.relnamespace = 'sam'::regnamespace
   AND c.relkind = 'r' AND has_table_privilege(r.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE');

-- the application
SET ROLE sam_app;
SELECT sam.create_account('acc-app')->>'success' AS create_account;
SELECT (sam.create_campaign('acc-app', 'By the app', 'Hi {first_name|there}'))->>'campaign_id' AS app_cid \gset
SELECT sam.add_prospects(:app_cid, '[{"provider_id": "ACoAPP1"}]')->>'inserted' AS add_prospects;
SELECT sam.start_campaign(:app_cid)->>'success' AS start_campaign;
SELECT sam.render_template('Hi {first_name}', '{"first_name": "Ann"}') AS render;
SELECT count(*) AS own_prospects FROM sam.prospects WHERE account_id = 'acc-app';
SELECT name, prospects FROM sam.campaign_funnel WHERE account_id = 'acc-app';
SELECT count(*) >= 0 AS notifications_readable FROM sam.notifications;
SELECT * FROM sam.outbox LIMIT 1;
SELECT * FROM sam.webhook_events LIMIT 1;
SELECT * FROM sam.suppressions LIMIT 1;
SELECT * FROM sam.notification_hooks LIMIT 1;
UPDATE sam.prospects SET status = 'replied';
SELECT sam.process_outbox();
SELECT sam.ingest_webhook('{}');
SELECT sam.set_clock(now());
SELECT sam._claim(1);
SELECT sam.schedule_jobs();
RESET ROLE;

-- the jobs
SET ROLE sam_jobs;
SELECT sam.gdpr_cleanup()->>'success' AS gdpr_cleanup;
SELECT sam.check_pending_notifications()->>'success' AS check_pending_notifications;
SELECT sam.retry_webhooks()->>'success' AS retry_webhooks;
SELECT count(*) > 0 AS job_health FROM sam.job_health;
SELECT sam.create_account('acc-jobs');
SELECT count(*) FROM sam.prospects;
RESET ROLE;

-- the ingest: its function, nothing else
SET ROLE sam_ingest;
SELECT sam.ingest_webhook('{"event": "message_read", "account_id": "acc-app", "message_id": "m-ingest"}')->>'success' AS ingest_webhook;
SELECT count(*) FROM sam.webhook_events;
SELECT count(*) FROM sam.accounts;
SELECT sam.process_follow_ups();
SELECT sam.metrics_text();
RESET ROLE;

-- monitoring: health, history, figures; no personal data, no message bodies, no secrets
SET ROLE sam_monitor;
SELECT count(*) > 0 AS job_health FROM sam.job_health;
SELECT count(*) > 0 AS job_runs FROM sam.job_runs;
SELECT count(*) > 0 AS metrics FROM sam.metrics;
SELECT metric, value FROM sam.metrics WHERE metric LIKE 'sam_worker%' ORDER BY metric;
SELECT sam.metrics_text() LIKE '%sam_outbox_calls%' AS metrics_text;
SELECT count(*) > 0 AS doctor FROM sam.doctor();
SELECT count(*) >= 0 AS queue_status FROM sam.queue_status;
SELECT count(*) = 6 AS retention FROM sam.retention;
SELECT count(*) FROM sam.prospects;
SELECT count(*) FROM sam.notifications;
SELECT count(*) FROM sam.outbox;
SELECT count(*) FROM sam.do_not_contact;
SELECT sam.erase_person('ACoAPP1');
SELECT sam.gdpr_cleanup();
SHOW sam.unipile_api_key_file;
RESET ROLE;
-- an outage: the dead calls of one account fold into its delivery_dead notification until that
-- is delivered; the next one after it starts a new notification
BEGIN;
SELECT coalesce(max(id), 0) AS before_fold FROM sam.notifications \gset
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
SELECT 'acc-n', 'relations_page', 'fold-' || g, '{"method": "GET", "path": "/api/v1/users/relations"}'
  FROM generate_series(1, 3) g;
UPDATE sam.outbox SET state = 'dead', error = 'gave up after 5 attempts: HTTP 503', error_type = 'http_503',
                      finished_at = sam.now()
 WHERE idempotency_key LIKE 'fold-%';
SELECT n.text, n.details->'count' AS count, jsonb_array_length(n.details->'outbox_ids') AS ids,
       (n.details->>'latest_outbox_id')::bigint IN (SELECT id FROM sam.outbox WHERE idempotency_key LIKE 'fold-%') AS latest
  FROM sam.notifications n WHERE n.event = 'delivery_dead' AND n.notified_at IS NULL;
SELECT (sam.check_pending_notifications())->'notified' AS notified;
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request)
VALUES ('acc-n', 'relations_page', 'fold-4', '{"method": "GET", "path": "/api/v1/users/relations"}');
UPDATE sam.outbox SET state = 'dead', error = 'HTTP 401', error_type = 'http_401', finished_at = sam.now()
 WHERE idempotency_key = 'fold-4';
SELECT n.text, n.details->'count' AS count, n.notified_at IS NULL AS pending
  FROM sam.notifications n WHERE n.event = 'delivery_dead' AND n.id > :before_fold ORDER BY n.id;
-- the same call queued again (its prospect set back by hand) and dead again: a notification of its own
SELECT (sam.check_pending_notifications())->'notified' AS notified_again;
UPDATE sam.outbox SET state = 'queued', finished_at = NULL WHERE idempotency_key = 'fold-4';
SELECT sam.advance_clock('1 minute') IS NOT NULL AS later;
UPDATE sam.outbox SET state = 'dead', finished_at = sam.now() WHERE idempotency_key = 'fold-4';
SELECT count(*) AS deaths_of_fold_4_notified FROM sam.notifications n
 WHERE n.event = 'delivery_dead' AND n.details->'outbox_ids' @> to_jsonb((SELECT id FROM sam.outbox WHERE idempotency_key = 'fold-4'));
ROLLBACK;
-- the alert is the account's: erasing the prospect of its first dead call keeps it
BEGIN;
SELECT (sam.create_campaign('acc-n', 'Dead'))->>'campaign_id' AS dcid \gset
SELECT (sam.add_prospects(:dcid, '[{"provider_id": "ACoDEAD1"}]'))->>'inserted' AS inserted;
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request)
SELECT 'acc-n', :dcid, p.id, 'invite', 'dead-1', '{"method": "POST", "path": "/api/v1/users/invite"}'
  FROM sam.prospects p WHERE p.provider_id = 'ACoDEAD1';
UPDATE sam.outbox SET state = 'dead', error = 'HTTP 500 for ACoDEAD1', error_type = 'http_500', finished_at = sam.now()
 WHERE idempotency_key = 'dead-1';
SELECT id AS dead_nid, text ~ 'prospect [0-9]' AS names_prospect, text ~ 'ACoDEAD1' AS names_person
  FROM sam.notifications WHERE event = 'delivery_dead' AND notified_at IS NULL \gset
SELECT :'names_prospect' AS names_prospect, :'names_person' AS names_person;
-- announced, its POST to the hook is queued with the text
SELECT sam.set_notification_url('https://hooks.example.com/dead', account_id => 'acc-n')->>'success' AS hook;
SELECT (sam.check_pending_notifications())->'notified' IS NOT NULL AS announced;
SELECT request->'json'->>'text' ~ 'ACoDEAD1' AS post_names_person FROM sam.outbox WHERE idempotency_key = 'notify:' || :dead_nid;
SELECT sam.erase_person('ACoDEAD1')->'removed'->'notifications' AS removed_notifications;
-- it stays, without the prospect's id and without Unipile's detail that names them, in the
-- notification and in the POST still to go
SELECT count(*) AS outage_alerts FROM sam.notifications WHERE id = :dead_nid;
SELECT text FROM sam.notifications WHERE id = :dead_nid;
SELECT request->'json'->>'text' AS post_text FROM sam.outbox WHERE idempotency_key = 'notify:' || :dead_nid;
ROLLBACK;
