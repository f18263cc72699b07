-- Hostile input in prospect fields and templates: SQL, format specifiers,
-- NUL bytes, invalid UTF-8, 1 MB strings and emoji are stored and rendered
-- as plain text, or rejected with a clear error.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT sam.create_account('acc-h', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                          spacing_min => '0', spacing_max => '0')->>'success' AS ok;

-- SQL and format specifiers in templates are literal text
SELECT sam.render_template('''; DROP TABLE sam.prospects; -- %s %n %x %% %1$s \\ \n', '{}');
SELECT sam.render_template('{first_name} %s%n', '{"first_name": "%n%n%s%p''); DELETE FROM sam.accounts; --"}');
SELECT sam.template_variables('%s {a|%n%d} ''; SELECT 1; --');
SELECT sam.render_template('{a|$1} {b|$$} {c|:x} {d|\\}', '{}');
-- emoji: 4-byte characters, skin tones, ZWJ sequences and flags in text, fallbacks and values
SELECT sam.render_template('👋🏽 {first_name|👨‍👩‍👧}, 🇫🇷 {company}', '{"company": "🚀 Acme™"}');
SELECT sam.template_variables('🚀{a|🚀}🚀');
-- error positions count characters, not bytes
SELECT sam.render_template('👨‍👩‍👧 }', '{}');
SELECT sam.render_template('🇫🇷{🚀}', '{}');
-- a NUL byte cannot be part of a template or a value: text and jsonb refuse it
SELECT sam.render_template('Hi {x}', '{"x": "a\u0000b"}');
SELECT sam.render_template(E'a\000b', '{}');
SELECT convert_from('\x610062'::bytea, 'UTF8');
-- invalid UTF-8 never gets in: bad bytes, truncated sequences, surrogates, overlong forms
SELECT convert_from('\xff'::bytea, 'UTF8');
SELECT sam.render_template(convert_from('\x48c3'::bytea, 'UTF8'), '{}');
SELECT sam.render_template('{x}', jsonb_build_object('x', convert_from('\xeda080'::bytea, 'UTF8')));
SELECT sam.render_template('{x}', '{"x": "\ud800"}');
SELECT convert_from('\xc0af'::bytea, 'UTF8');
-- 1 MB: templates and values of any size render in full
SELECT length(sam.render_template(repeat('🚀', 1048576) || '{x}', jsonb_build_object('x', repeat('é', 1048576))));
SELECT length(sam.render_template('{x}{x}{x}', jsonb_build_object('x', repeat('{y}', 349526))));
SELECT (sam.template_variables(repeat('{{', 524288) || '{a}'))->>'static_length' AS static_length;

-- campaigns: hostile templates are stored as written and checked like any other
SELECT (sam.create_campaign('acc-h', 'Robert''); DROP TABLE sam.campaigns; -- 🚀 %s',
        'Hi {first_name|there} 👋 %s %n ''; DROP TABLE sam.prospects; --',
        '[{"delay": "1 day", "template": "{{first_name}} → {first_name|friend} 🇫🇷 $1 \\\\ %%"}]'))->>'campaign_id' AS cid \gset
SELECT name, connection_note, follow_ups->0->>'template' AS step1 FROM sam.campaigns WHERE id = :cid;
SELECT sam.create_campaign('acc-h', 'x', repeat('🚀', 301));
SELECT sam.create_campaign('acc-h', 'x', 'Hi {first_name|' || repeat('é', 1048576) || '}');
SELECT sam.create_campaign('acc-h', repeat('x', 1048576));
SELECT sam.create_campaign('acc-h', 'x', follow_ups => jsonb_build_array(jsonb_build_object('template', repeat('🚀', 1048576))));
SELECT sam.create_campaign('acc-h', E'bad\u0000name');

-- prospects: fields holding SQL, format specifiers and emoji are stored as they are
SELECT r->>'inserted' AS inserted, r->>'invalid' AS invalid FROM sam.add_prospects(:cid, '[
  {"provider_id": "ACoH1", "first_name": "Robert''); DROP TABLE x;--", "company": "%s%n%x%p", "title": "🚀 CTO 👨‍👩‍👧"},
  {"provider_id": "ACoH2", "first_name": "{company}", "last_name": "}}{{", "company": "$1 $$ :x \\\\"},
  {"provider_id": "ACoH3", "first_name": "👋🏽🇫🇷", "variables": {"note": "''; SELECT pg_sleep(10); --"}}]') r;
SELECT provider_id, first_name, last_name, company, title, variables FROM sam.prospects WHERE campaign_id = :cid ORDER BY id;
-- and rendered as plain text: nothing in a value is interpreted
SELECT p.provider_id, sam.render_template(c.connection_note, sam._prospect_vars(p)) AS note,
       sam.render_template(c.follow_ups->0->>'template', sam._prospect_vars(p)) AS step1
  FROM sam.prospects p JOIN sam.campaigns c ON c.id = p.campaign_id WHERE c.id = :cid ORDER BY p.id;
-- identifiers holding SQL or emoji, or only dots (a path segment of their own), are refused with the
-- reason, the other rows go in
SELECT r->>'inserted' AS inserted, e->>'index' AS index, e->>'reason' AS reason
  FROM sam.add_prospects(:cid, '[
  {"provider_id": "ACo''; DROP TABLE x; --"}, {"provider_id": "ACo🚀🚀🚀"},
  {"public_identifier": "a b"}, {"profile_url": "https://www.linkedin.com/in/%s%n/"},
  {"provider_id": "ACoH4", "first_name": 42}, {"public_identifier": ".."}]') r, jsonb_array_elements(r->'invalid_rows') e;
-- NUL and invalid UTF-8 never reach a prospect
SELECT sam.add_prospects(c.id, '[{"provider_id": "ACoH5", "first_name": "a\u0000b"}]')
  FROM sam.campaigns c WHERE c.account_id = 'acc-h';
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', 'ACoH5',
       'first_name', convert_from('\xe282'::bytea, 'UTF8'))));
-- 1 MB: an item over 32 kB is refused whole; under it, a field a template uses is held to its
-- limit, a name to 1000 characters, and the rest (a variable no template uses) is stored whole
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', 'ACoH6',
       'first_name', repeat('🚀', 1048576))))->'invalid_rows' AS invalid_rows;
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', 'ACoH6',
       'first_name', repeat('🚀', 41))))->'invalid_rows' AS invalid_rows;
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', 'ACoH7', 'first_name', 'Kim',
       'title', repeat('é', 1048576))))->'invalid_rows' AS invalid_rows;
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', 'ACoH7', 'first_name', 'Kim',
       'title', repeat('é', 1000), 'variables', jsonb_build_object('bio', repeat('%s', 8000)))))->'inserted' AS inserted;
SELECT length(title), length(variables->>'bio'), sam.render_template(c.connection_note, sam._prospect_vars(p)) AS note
  FROM sam.prospects p JOIN sam.campaigns c ON c.id = p.campaign_id WHERE p.provider_id = 'ACoH7';
SELECT sam.add_prospects(:cid, jsonb_build_array(jsonb_build_object('provider_id', repeat('A', 1048576))))->'invalid_rows' AS invalid_rows;

-- the queue renders the same notes: the invitations carry them as plain text,
-- and an identifier goes into a URL path percent-encoded
SELECT (sam.start_campaign(:cid))->>'queued' AS queued;
SELECT o.kind, coalesce(p.provider_id, p.public_identifier) AS prospect, o.request->>'path' AS path,
       o.request->'json'->>'message' AS message
  FROM sam.outbox o JOIN sam.prospects p ON p.id = o.prospect_id WHERE o.campaign_id = :cid ORDER BY o.id;

-- nothing was dropped or deleted on the way
SELECT count(*) AS accounts FROM sam.accounts WHERE account_id = 'acc-h';
SELECT count(*) AS prospects FROM sam.prospects WHERE campaign_id = :cid;
SELECT to_regclass('sam.prospects') IS NOT NULL AS prospects_table, to_regclass('sam.campaigns') IS NOT NULL AS campaigns_table;

-- a webhook with a 3 KB message id is stored once under a hashed key, and its retry is a duplicate
SELECT sam.ingest_webhook(jsonb_build_object('event', 'message_received', 'account_id', 'acc-h',
                                             'message_id', repeat('m', 3000), 'message', 'hi')::text)->>'status' AS first;
SELECT sam.ingest_webhook(jsonb_build_object('event', 'message_received', 'account_id', 'acc-h',
                                             'message_id', repeat('m', 3000), 'message', 'hi')::text)->>'duplicate' AS retry;
SELECT count(*) AS stored, max(octet_length(dedupe_key)) AS key_bytes
  FROM sam.webhook_events WHERE account_id = 'acc-h' AND event = 'message_received';
