-- Accounts: defaults, validation (every bad input names its field and changes nothing).
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT sam.set_clock('2026-03-02 10:00:00+00', frozen => true)->>'now' AS now;
SELECT a - 'created_at' FROM (SELECT (sam.create_account('acc-paris', 'Paris', 'Europe/Paris'))->'account' AS a) s;
SELECT sam.create_account('acc-paris');
SELECT sam.create_account(NULL);
SELECT sam.create_account('has space');
SELECT sam.create_account('x', time_zone => 'Mars/Olympus');
SELECT sam.create_account('x', time_zone => '+02:00');
SELECT sam.create_account('x', time_zone => 'localtime');
SELECT sam.create_account('x', time_zone => 'Factory');
SELECT sam.create_account('x', working_days => '{}');
SELECT sam.create_account('x', working_days => '{0,1}');
SELECT sam.create_account('x', work_start => '18:00', work_end => '09:00');
-- (each of these was taken, then refused by a constraint, or gave an account that never sends)
SELECT sam.create_account('x', working_days => '{1,1,1,1,1,1,1,1}');
SELECT sam.create_account('x', working_days => '{1,NULL}');
SELECT sam.create_account('x', working_days => '{{1,2},{3,4}}');
SELECT sam.create_account('x', work_start => '24:00', work_end => '00:00');
SELECT sam.create_account('x', work_start => NULL);
SELECT sam.create_account('x', name => repeat('n', 201));
SELECT sam.create_account('x', time_zone => repeat('Z', 5000));
-- an end at 24:00 is midnight
SELECT sam.create_account('x24', work_start => '18:00', work_end => '24:00')->'account'->>'work_end' AS work_end;
SELECT sam.delete_account('x24')->>'success' AS deleted;
SELECT sam.create_account('x', daily_invite_cap => 101);
SELECT sam.create_account('x', daily_invite_cap => -1);
SELECT sam.create_account('x', weekly_invite_cap => 201);
SELECT sam.create_account('x', daily_message_cap => 151);
SELECT sam.create_account('x', max_pending_invitations => 3001);
SELECT sam.create_account('x', max_pending_invitations => -1);
SELECT sam.create_account('x', invite_ramp_days => 91);
SELECT sam.create_account('x', invite_ramp_days => NULL);
SELECT sam.create_account('x', note_max_length => 301);
SELECT sam.create_account('x', note_max_length => 0);
SELECT sam.create_account('x', spacing_min => '5 min', spacing_max => '2 min');
SELECT sam.create_account('x', own_provider_id => 'not an id');
SELECT count(*) AS accounts FROM sam.accounts;
-- the table's own constraints hold for direct writes too
UPDATE sam.accounts SET daily_invite_cap = 500 WHERE account_id = 'acc-paris';
UPDATE sam.accounts SET time_zone = 'Nowhere/Land' WHERE account_id = 'acc-paris';
UPDATE sam.accounts SET status = 'sleeping' WHERE account_id = 'acc-paris';

-- working hours in local time, across the DST change (Europe/Paris: 2026-03-29)
SELECT t, sam.is_working_time('acc-paris', t) FROM (VALUES
    ('2026-03-02 07:59+00'::timestamptz), ('2026-03-02 08:00+00'), ('2026-03-02 16:59+00'),
    ('2026-03-02 17:00+00'), ('2026-03-07 10:00+00'),
    ('2026-03-30 06:59+00'), ('2026-03-30 07:00+00'), ('2026-03-30 15:59+00'), ('2026-03-30 16:00+00')) v(t);
-- the next window after Friday evening is Monday 09:00 local: 08:00 UTC before DST, 07:00 UTC after
SELECT sam._next_window_start(a, '2026-03-20 18:30+00') AS before_dst,
       sam._next_window_start(a, '2026-03-27 18:30+00') AS after_dst,
       sam._next_window_start(a, '2026-03-02 10:00+00') AS inside
  FROM sam.accounts a WHERE account_id = 'acc-paris';
-- local day boundaries follow the zone (a 23-hour day on the DST Sunday)
SELECT sam._local_day_start(a, '2026-03-29 12:00+00') AS dst_day,
       sam._local_day_start(a, '2026-03-30 12:00+00') - sam._local_day_start(a, '2026-03-29 12:00+00') AS day_length
  FROM sam.accounts a WHERE account_id = 'acc-paris';
SELECT sam.is_working_time('nope');
SELECT sam.is_working_time('acc-paris', 'infinity');

-- pause and resume
SELECT sam.pause_account('acc-paris', 'holiday')->>'status';
SELECT status, status_reason FROM sam.accounts WHERE account_id = 'acc-paris';
SELECT sam.resume_account('acc-paris')->>'status';
SELECT sam.pause_account('nope');
-- deleting an account: unknown, or with calls in flight, is refused
SELECT sam.delete_account('nope');
SELECT sam.create_account('acc-del', spacing_min => '0', spacing_max => '0')->>'success';
INSERT INTO sam.outbox (account_id, kind, idempotency_key, request, state)
VALUES ('acc-del', 'relations_page', 'del-test', '{"method": "GET", "path": "/x"}', 'in_flight');
SELECT sam.delete_account('acc-del');
-- a row is finished (finished_at) exactly when its state is final: the partial indexes rely on it
UPDATE sam.outbox SET state = 'done' WHERE account_id = 'acc-del';
UPDATE sam.outbox SET state = 'done', finished_at = sam.now() WHERE account_id = 'acc-del';
-- its notifications go with it (their delivery calls went with its outbox rows: they stayed queued forever)
INSERT INTO sam.notifications (event, dedupe_key, text, account_id)
VALUES ('account_disconnected', 'del-n1', 'Account acc-del disconnected', 'acc-del');
SELECT sam.delete_account('acc-del') - 'account_id';
SELECT count(*) FROM sam.accounts WHERE account_id = 'acc-del';
SELECT count(*) AS notifications_left FROM sam.notifications WHERE account_id = 'acc-del';
