-- Campaigns and prospects: template validation at creation, bulk import with per-row reasons, dedupe.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-c', spacing_min => '0', spacing_max => '0')->>'success' AS ok;
SELECT (r->>'campaign_id')::bigint AS c1, r->>'status' AS status, r->'campaign'->'follow_ups' AS steps
  FROM sam.create_campaign('acc-c', 'First', 'Hi {first_name|there}, I see you lead {company}.',
        '[{"template": "Thanks {first_name|there}!"}, {"delay": "5 days", "template": "Any thoughts on {topic|our chat}?"}, {"template": "FU3"}, {"template": "FU4"}]',
        custom_variables => '{topic}') r;
-- errors name the field or the step
SELECT sam.create_campaign('nope', 'x');
SELECT sam.create_campaign('acc-c', '');
SELECT sam.create_campaign('acc-c', 'x', 'Hi {nickname}');
SELECT sam.create_campaign('acc-c', 'x', 'Hi {first_name');
SELECT sam.create_campaign('acc-c', 'x', '   ');
SELECT sam.create_campaign('acc-c', 'x', repeat('x', 250) || ' {company}');
SELECT sam.create_campaign('acc-c', 'x', repeat('x', 301));
SELECT sam.create_campaign('acc-c', 'x', repeat('x', 200) || ' {company|' || repeat('y', 120) || '}');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '{"template": "x"}');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"template": "ok", "delay": 86400}]');
-- intervals whose parts have both signs: "1 mon -30 days" is -2 days from 1 February
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"template": "ok", "delay": "1 mon -30 days"}]');
SELECT sam.create_campaign('acc-c', 'x', withdraw_after => '1 mon -29 days');
SELECT sam.create_campaign('acc-c', 'x', custom_variables => '{NULL}');
SELECT sam.create_campaign('acc-c', 'x', start_at => 'infinity');
SELECT sam.create_campaign('acc-c', 'x', custom_variables => '{{a,b},{c,d}}');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"template": "ok"}, {"template": ""}]');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"template": "ok"}, {"template": "Hi {unknown}"}]');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"delay": "soon", "template": "ok"}]');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"delay": "-1 day", "template": "ok"}]');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => '[{"template": "ok", "extra": 1}]');
SELECT sam.create_campaign('acc-c', 'x', follow_ups => ('[{"template": "' || repeat('z', 8001) || '"}]')::jsonb);
SELECT sam.create_campaign('acc-c', 'x', custom_variables => '{Bad-Name}');
SELECT sam.create_campaign('acc-c', 'x', custom_variables => '{company}');
SELECT sam.create_campaign('acc-c', 'x', start_at => '2020-01-01');
SELECT sam.create_campaign('acc-c', 'x', withdraw_after => '2 hours');
SELECT count(*) AS campaigns FROM sam.campaigns;
-- a scheduled campaign
SELECT r->>'status' AS status FROM sam.create_campaign('acc-c', 'Later', start_at => '2026-03-03 09:00+00') r;
-- paused before its start, it waits for its start again when resumed (it used to start at once)
SELECT sam.pause_campaign((SELECT id FROM sam.campaigns WHERE name = 'Later'))->>'status' AS paused;
SELECT sam.resume_campaign((SELECT id FROM sam.campaigns WHERE name = 'Later')) - 'campaign_id' AS resumed;
SELECT status, started_at, paused_at FROM sam.campaigns WHERE name = 'Later';

-- bulk import: inserted, duplicates and invalid rows, each with its reason
SELECT jsonb_pretty(sam.add_prospects(1, ('[
  {"provider_id": "ACoAAA1", "first_name": "Alice", "company": "Acme"},
  {"public_identifier": "Bob-B", "company": "Beta"},
  {"profile_url": "https://www.linkedin.com/in/carol-c/?trk=x", "company": "Gamma", "title": "CTO"},
  {"provider_id": "ACoAAA1", "company": "Again"},
  {"public_identifier": "bob-b", "company": "Beta again"},
  {"provider_id": "bad id!", "company": "x"},
  {"first_name": "Nobody", "company": "x"},
  {"provider_id": "ACoAAA2"},
  {"provider_id": "ACoAAA3", "company": "x", "age": 3},
  {"provider_id": "ACoAAA4", "company": "x", "first_name": 7},
  {"profile_url": "https://example.com/in/zed", "company": "x"},
  {"provider_id": "ACoAAA5", "company": "x", "variables": []},
  {"provider_id": "ACoAAA6", "company": "x", "variables": {"topic": {"nested": 1}}},
  {"provider_id": "ACoAAA7", "company": "' || repeat('c', 61) || '"},
  "just a string",
  {"provider_id": "ACoAAA8", "company": "Robert''); DROP TABLE sam.prospects; --", "first_name": "%s%n 👋"}
]')::jsonb) - 'prospect_ids');
SELECT provider_id, public_identifier, profile_url, first_name, company, status FROM sam.prospects ORDER BY id;
-- the same person is never added to a second campaign of the account
SELECT (sam.add_prospects(2, '[{"provider_id": "ACoAAA1", "company": "x"}]'))->'duplicate_rows';
SELECT sam.add_prospects(1, '{"provider_id": "x"}');
SELECT sam.add_prospects(999, '[]');
SELECT sam.add_prospects(1, NULL);
-- names as spreadsheets export them: blanks around a value (a CSV's CRLF leaves "\r" after the
-- last column, which may be an identifier or a variable) are trimmed; a control character inside a
-- name (C0, DEL or C1), a name over 1000 characters and an item over 32 kB are refused (rolled
-- back, the ids given back)
SELECT last_value AS prospects_seq0 FROM sam.prospects_id_seq \gset
BEGIN;
SELECT jsonb_pretty(sam.add_prospects(1, jsonb_build_array(
    jsonb_build_object('provider_id', 'ACoBL1', 'first_name', E'\tAnna ', 'company', E'Acme\r\n'),
    jsonb_build_object('provider_id', 'ACoBL2', 'first_name', E'An\nna', 'company', 'x'),
    jsonb_build_object('provider_id', 'ACoBL3', 'company', 'x', 'title', E'CTO\x07 of x'),
    jsonb_build_object('provider_id', 'ACoBL4', 'company', repeat('c', 1001)),
    jsonb_build_object('provider_id', 'ACoBL5', 'company', 'x', 'variables', jsonb_build_object('x', repeat('v', 40000))),
    jsonb_build_object('provider_id', 'ACoBL6', 'first_name', 'Viv', 'last_name', 'Dave', 'company', 'Vvv'),
    jsonb_build_object('provider_id', E'ACoBL7\r', 'company', 'x', 'variables', jsonb_build_object('topic', E' APIs\r', E'n\r', 2)),
    jsonb_build_object('provider_id', 'ACoBL8', 'company', E'Acme\u0085Corp')))
    - 'prospect_ids' - 'campaign_id');
SELECT provider_id, first_name, last_name, company, variables FROM sam.prospects WHERE provider_id LIKE 'ACoBL%' ORDER BY id;
ROLLBACK;
SELECT setval('sam.prospects_id_seq', :prospects_seq0) > 0 AS ids_given_back;

-- lifecycle errors
SELECT sam.send_connection_requests(1);
SELECT sam.resume_campaign(1);
SELECT sam.pause_campaign(1);
SELECT sam.start_campaign(999);
-- one batch, checked and inserted in one statement: of the items naming the same person (by either
-- identifier) the first is inserted, the later ones are duplicates naming it (rolled back, and the
-- ids it drew given back, so that later tests see the same ids)
SELECT last_value AS prospects_seq FROM sam.prospects_id_seq \gset
BEGIN;
SELECT (sam.create_campaign('acc-c', 'Batch', NULL))->>'campaign_id' AS bid \gset
SELECT sam.add_prospects(:bid, '[{"provider_id": "ACoM1"}, {"public_identifier": "m-two"},
                                 {"provider_id": "ACoM1", "public_identifier": "m-two"}, {"provider_id": "ACoM1"},
                                 {"profile_url": "https://www.linkedin.com/in/M-Two/"}, {"provider_id": "bad id"},
                                 {"provider_id": "ACoM3", "public_identifier": "m-three"},
                                 {"provider_id": "ACoM4", "company": ["an", "array"]},
                                 {"provider_id": "ACoM5", "variables": {"topic": ["an array"]}},
                                 {"provider_id": "ACoM6", "variables": {"n": 1, "b": true, "s": "x", "z": null}}]') AS r \gset
SELECT jsonb_pretty(:'r'::jsonb - 'campaign_id' - 'prospect_ids') AS answer;
SELECT o.n AS nth, p.provider_id, p.public_identifier
  FROM jsonb_array_elements_text(:'r'::jsonb->'prospect_ids') WITH ORDINALITY o(id, n)
  JOIN sam.prospects p ON p.id = o.id::bigint ORDER BY o.n;
SELECT d->>'index' AS index, p.provider_id, p.public_identifier
  FROM jsonb_array_elements(:'r'::jsonb->'duplicate_rows') d
  JOIN sam.prospects p ON d->>'reason' = format('already prospect %s of campaign %s on this account', p.id, p.campaign_id)
 ORDER BY 1;
ROLLBACK;
SELECT setval('sam.prospects_id_seq', :prospects_seq) > 0 AS ids_given_back;

-- an account renamed (a new Unipile account id): its campaigns and prospects follow it, and the
-- calls not yet made name the new id (rolled back)
BEGIN;
SELECT count(*) AS prospects_of_acc_c FROM sam.prospects WHERE account_id = 'acc-c' \gset
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, state, finished_at) VALUES
    ('acc-c', 'invite', 'rename-1', '{"method": "POST", "path": "/api/v1/users/invite", "json": {"provider_id": "ACoX", "account_id": "acc-c"}}', 'queued', NULL),
    ('acc-c', 'relations_page', 'rename-2', '{"method": "GET", "path": "/api/v1/users/relations", "query": {"account_id": "acc-c", "limit": "100"}}', 'failed', NULL),
    ('acc-c', 'send_message', 'rename-3', '{"method": "POST", "path": "/api/v1/chats/c1/messages", "form": [["text", "hi"], ["account_id", "acc-c"]]}', 'queued', NULL),
    ('acc-c', 'invite', 'rename-4', '{"method": "POST", "path": "/api/v1/users/invite", "json": {"provider_id": "ACoY", "account_id": "acc-c"}}', 'done', sam.now());
UPDATE sam.accounts SET account_id = 'acc-c-renamed' WHERE account_id = 'acc-c';
SELECT :prospects_of_acc_c > 0 AS had_prospects,
       (SELECT count(*) FROM sam.campaigns WHERE account_id = 'acc-c') AS campaigns_left,
       (SELECT count(*) FROM sam.prospects WHERE account_id = 'acc-c') AS prospects_left,
       (SELECT count(*) FROM sam.prospects WHERE account_id = 'acc-c-renamed') = :prospects_of_acc_c AS prospects_moved,
       (SELECT count(*) FROM sam.prospects p JOIN sam.campaigns c ON c.id = p.campaign_id
         WHERE p.account_id <> c.account_id) AS prospects_not_on_their_campaigns_account;
SELECT idempotency_key, account_id, state, request - 'method' - 'path' AS request
  FROM sam.outbox WHERE idempotency_key LIKE 'rename-%' ORDER BY 1;
ROLLBACK;
-- not while a call is in flight: it was made under the old id, and its answer is about that one
BEGIN;
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, state, claimed_at)
VALUES ('acc-c', 'relations_page', 'rename-5', '{"method": "GET", "path": "/api/v1/users/relations"}', 'in_flight', sam.now());
UPDATE sam.accounts SET account_id = 'acc-c-renamed' WHERE account_id = 'acc-c';
ROLLBACK;
