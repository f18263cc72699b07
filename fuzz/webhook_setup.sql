-- Fixture of fuzz_webhook (loaded by scripts/fuzz.sh into its throw-away
-- cluster): an account, a campaign and prospects in each state a webhook
-- can move (invited, connected with a chat, pending, by public
-- identifier), so that the seed payloads in fuzz/corpus/fuzz_webhook/
-- reach every branch of the webhook SQL.  Each fuzz input runs in a
-- transaction that is rolled back, so this stays as it is.
CREATE EXTENSION sam_ext;
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true);
SELECT sam.create_account('acc-w', own_provider_id => 'ACoOWNER', working_days => '{1,2,3,4,5,6,7}',
                          work_start => '00:00', work_end => '00:00', spacing_min => '0', spacing_max => '0');
SELECT (sam.create_campaign('acc-w', 'Hooks', 'Hi {first_name|there}!',
        '[{"delay": "24 hours", "template": "Thanks {first_name|}"}]'))->>'campaign_id' AS cid \gset
SELECT sam.add_prospects(:cid, '[{"provider_id": "ACoW1", "first_name": "Ann"}, {"provider_id": "ACoW2"},
        {"public_identifier": "wendy-w"}, {"provider_id": "ACoW4", "first_name": "Zed"}, {"provider_id": "ACoW5"},
        {"provider_id": "ACoW6", "first_name": "Pat"}]');
SELECT sam.start_campaign(:cid);
-- the worker's part, done by hand: every invitation confirmed
SELECT sam._complete(array_agg(id ORDER BY id), array_agg(201 ORDER BY id),
                     array_agg('{"object": "UserInvitationSent", "invitation_id": "9' || id || '"}' ORDER BY id),
                     array_agg(NULL::text ORDER BY id), array_agg(1.0::float8 ORDER BY id))
  FROM sam._claim(100);
UPDATE sam.prospects SET status = 'connection_request_sent', invited_at = sam.now() WHERE public_identifier = 'wendy-w';
-- one prospect already connected, with a chat
UPDATE sam.prospects SET status = 'connected', connected_at = sam.now(), connected_via = 'webhook',
       chat_id = 'chat-6', follow_up_due_at = sam.now() + interval '1 day'
 WHERE provider_id = 'ACoW6';
