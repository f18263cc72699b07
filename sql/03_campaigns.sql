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

-- lifecycle errors
SELECT sam.send_connection_requests(1);
SELECT sam.resume_campaign(1);
SELECT sam.pause_campaign(1);
SELECT sam.start_campaign(999);
