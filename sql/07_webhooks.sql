-- Webhooks: stored once, applied at once; new_relation, message_received, account_status.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-w', own_provider_id => 'ACoOWNER', working_days => '{1,2,3,4,5,6,7}',
                          work_start => '00:00', work_end => '00:00', spacing_min => '0', spacing_max => '0')->>'success';
SELECT (sam.create_campaign('acc-w', 'Hooks', 'Hi {first_name|there}!',
        '[{"delay": "24 hours", "template": "Thanks"}]'))->>'campaign_id' AS cid \gset
SELECT (sam.add_prospects(:cid, '[{"provider_id": "ACoW1", "first_name": "Ann"}, {"provider_id": "ACoW2"},
        {"public_identifier": "wendy-w"}, {"provider_id": "ACoW4", "first_name": "Zed"}, {"provider_id": "ACoW5"}]'))->>'inserted';
SELECT (sam.start_campaign(:cid))->>'queued' AS queued;
-- the worker's part, done by hand here: every invitation confirmed
SELECT sam._complete(array_agg(id ORDER BY id), array_agg(201 ORDER BY id),
                     array_agg('{"object": "UserInvitationSent", "invitation_id": "9' || id || '"}' ORDER BY id),
                     array_agg(NULL::text ORDER BY id), array_agg(1.0::float8 ORDER BY id))
  FROM sam._claim(100);
UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now() WHERE public_identifier = 'wendy-w';
SELECT provider_id, public_identifier, status FROM sam.prospects WHERE account_id = 'acc-w' ORDER BY id;

-- new_relation (flat payload): connected, first follow-up due 24 hours later
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "account_type": "LINKEDIN",
  "user_full_name": "Ann W", "user_provider_id": "ACoW1", "user_public_identifier": "ann-w",
  "user_profile_url": "https://www.linkedin.com/in/ann-w/"}', 'unipile-connection-accepted') - 'id' - 'prospect_id';
SELECT status, connected_at, connected_via, follow_up_due_at, follow_up_sequence_index FROM sam.prospects WHERE provider_id = 'ACoW1';
-- Unipile retries: the duplicate is acknowledged and not applied again
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "user_provider_id": "ACoW1", "user_public_identifier": "ann-w"}') - 'id';
-- matched by public identifier when the provider id is not known yet
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "user_provider_id": "ACoW3", "user_public_identifier": "Wendy-W"}') - 'id' - 'prospect_id';
SELECT provider_id, status, connected_via FROM sam.prospects WHERE public_identifier = 'wendy-w';
-- nobody we know: kept as unmatched, not an error
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "user_provider_id": "ACoSTRANGER"}') - 'id';
-- another account's relation does not match our prospect
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "other-acc", "user_provider_id": "ACoW2"}') ->> 'status';
SELECT status FROM sam.prospects WHERE provider_id = 'ACoW2';

-- message_received from our own account in a new chat, equal to the note: the invitation was accepted
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-4", "message_id": "m-1",
  "message": "Hi Zed!", "account_info": {"user_id": "ACoOWNER"},
  "sender": {"attendee_provider_id": "ACoOWNER"},
  "attendees": [{"attendee_provider_id": "ACoOWNER"}, {"attendee_provider_id": "ACoW4"}]}') - 'id' - 'prospect_id';
SELECT status, connected_via, chat_id FROM sam.prospects WHERE provider_id = 'ACoW4';
-- our own other messages are never taken for replies
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-4", "message_id": "m-2",
  "message": "Thanks", "account_info": {"user_id": "ACoOWNER"}, "sender": {"attendee_provider_id": "ACoOWNER"},
  "attendees": [{"attendee_provider_id": "ACoOWNER"}, {"attendee_provider_id": "ACoW4"}]}') ->> 'reason';
SELECT status FROM sam.prospects WHERE provider_id = 'ACoW4';
-- a message from the prospect: replied, the sequence stops, queued messages are cancelled
INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request)
SELECT account_id, campaign_id, id, 'send_message', 'message:' || id || ':1', '{"method": "POST", "path": "/x"}'
  FROM sam.prospects WHERE provider_id = 'ACoW4';
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-4", "message_id": "m-3",
  "message": "Sounds good", "account_info": {"user_id": "ACoOWNER"}, "sender": {"attendee_provider_id": "ACoW4"}}') - 'id' - 'prospect_id';
SELECT status, replied_at, follow_up_due_at FROM sam.prospects WHERE provider_id = 'ACoW4';
SELECT kind, state, error FROM sam.outbox WHERE idempotency_key LIKE 'message:%';
-- a reply from someone still invited also proves the acceptance
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-5", "message_id": "m-4",
  "message": "Hello!", "sender": {"attendee_provider_id": "ACoW5"}}') ->> 'transition';
SELECT status, connected_via, chat_id FROM sam.prospects WHERE provider_id = 'ACoW5';

-- account_status: CREDENTIALS disconnects, RECONNECTED makes it active again
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "CREDENTIALS"}}') - 'id';
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-w';
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "CONNECTING"}}') - 'id';
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "RECONNECTED"}}') - 'id';
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-w';
-- the same status again later (no id, no time in it) is applied: CREDENTIALS, RECONNECTED, CREDENTIALS
-- ends disconnected (the third was answered as a duplicate of the first); a second delivery is applied
-- again and changes nothing
SELECT sam.advance_clock('1 day')->>'now' IS NOT NULL AS later;
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "CREDENTIALS"}}') - 'id';
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-w';
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "CREDENTIALS"}}')->'duplicate' AS twice;
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-w';
SELECT sam.ingest_webhook('{"AccountStatus": {"account_id": "acc-w", "account_type": "LINKEDIN", "message": "RECONNECTED"}}')->>'transition' AS again;
SELECT status FROM sam.accounts WHERE account_id = 'acc-w';

-- unknown events are stored and ignored
SELECT sam.ingest_webhook('{"event": "message_reaction", "account_id": "acc-w", "message_id": "m-9"}') - 'id';
-- bad input: nothing is stored
SELECT sam.ingest_webhook('not json');
SELECT sam.ingest_webhook('[1, 2]');
SELECT sam.ingest_webhook(NULL);
SELECT sam.ingest_webhook('{}', '');
SELECT event, account_id, status, source FROM sam.webhook_events ORDER BY id;

-- an event that fails to apply keeps its error and can be retried; it never blocks others
CREATE FUNCTION sam._broken_hook() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'prospects are read-only right now'; END $$;
CREATE TRIGGER broken BEFORE UPDATE ON sam.prospects FOR EACH ROW EXECUTE FUNCTION sam._broken_hook();
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "user_provider_id": "ACoW2"}') - 'id';
SELECT status, error FROM sam.webhook_events WHERE dedupe_key = 'new_relation:acc-w:ACoW2';
-- the doctor says so, and what to do
SELECT "check", ok, detail, hint FROM sam.doctor() WHERE "check" = 'webhooks applied';
DROP TRIGGER broken ON sam.prospects;
DROP FUNCTION sam._broken_hook();
SELECT sam.retry_webhooks();
SELECT "check", ok, detail FROM sam.doctor() WHERE "check" = 'webhooks applied';
SELECT status, attempts FROM sam.webhook_events WHERE dedupe_key = 'new_relation:acc-w:ACoW2';
SELECT status FROM sam.prospects WHERE provider_id = 'ACoW2';
SELECT sam.retry_webhooks(0);
SELECT sam.retry_webhooks(NULL);
-- applying a new event changes no indexed column (the failed-events index names error, not
-- status): the update is HOT, the row's index entries are written once
BEGIN;
SELECT pg_stat_get_xact_tuples_updated('sam.webhook_events'::regclass) AS u0,
       pg_stat_get_xact_tuples_hot_updated('sam.webhook_events'::regclass) AS h0 \gset
SELECT sam.ingest_webhook('{"event": "new_relation", "account_id": "acc-w", "user_provider_id": "ACoHOT"}') ->> 'status' AS status;
SELECT pg_stat_get_xact_tuples_updated('sam.webhook_events'::regclass) - :u0 AS updates,
       pg_stat_get_xact_tuples_hot_updated('sam.webhook_events'::regclass) - :h0 AS hot_updates;
ROLLBACK;

-- a reply counts whatever the prospect's state: one whose sequence failed (a message given up on
-- after timeouts may well have gone out) is replied, and notified, not dropped
UPDATE sam.prospects SET status = 'failed', failed_at = sam.now(), follow_up_due_at = NULL,
       last_error = 'send_message gave up after 5 attempts: HTTP 503'
 WHERE provider_id = 'ACoW2';
SELECT sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-6", "message_id": "m-6",
  "message": "Got your note", "sender": {"attendee_provider_id": "ACoW2"}}') ->> 'transition' AS transition;
SELECT status, replied_at IS NOT NULL AS replied_at_set, chat_id FROM sam.prospects WHERE provider_id = 'ACoW2';
SELECT count(*) AS notified FROM sam.notifications n JOIN sam.prospects p ON p.id = n.prospect_id
 WHERE p.provider_id = 'ACoW2' AND n.event = 'prospect_replied';
-- but one stopped by the do-not-contact list stays so (nothing is to follow from a reply)
UPDATE sam.prospects SET status = 'failed', failed_at = sam.now(), last_error = 'do not contact (entry 1)'
 WHERE provider_id = 'ACoW1';
SELECT r->>'transition' AS transition, r->>'reason' AS reason
  FROM sam.ingest_webhook('{"event": "message_received", "account_id": "acc-w", "chat_id": "chat-7", "message_id": "m-7",
  "message": "Why?", "sender": {"attendee_provider_id": "ACoW1"}}') r;
SELECT status FROM sam.prospects WHERE provider_id = 'ACoW1';
