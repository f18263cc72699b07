#!/usr/bin/env bash
# The sam_ext demo: a throw-away PostgreSQL cluster preloaded with pg_cron and
# sam_ext, the mock Unipile server (with its simulated LinkedIn network) and,
# when built, the webhook ingest.  A campaign of 50 prospects runs over
# simulated days: the jobs are called on the seed's schedules as the engine's
# clock advances, the real worker sends every call over HTTP, and the mock's
# people accept (some fast, some late, some never).  Prints a day-by-day
# timeline and the funnel.
#
#   sudo scripts/demo.sh            build, install, run (DAYS=10 by default)
#   sudo scripts/demo.sh stop       stop the cluster, the mock and the ingest
#   SAM_SKIP_DEPS=1 / SAM_SKIP_BUILD=1   skip apt-get / the build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
demo=${SAM_DEMO_DIR:-/tmp/sam_ext_demo}
pgport=${SAM_DEMO_PGPORT:-55432}
mockport=${SAM_DEMO_MOCK_PORT:-18181}
ingestport=${SAM_DEMO_INGEST_PORT:-18182}
days=${DAYS:-30}

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi
}

stop_all() {
	if [ -f "$demo/data/postmaster.pid" ]; then
		as_pg pg_ctl -D "$demo/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	# the servers run under runuser: stop them by their path in the demo folder
	pkill -TERM -f "^$demo/mock_unipile" 2>/dev/null || true
	pkill -TERM -f "^$demo/sam_ingest" 2>/dev/null || true
	rm -f "$demo/mock.pid" "$demo/ingest.pid"
}

wait_listening() {
	for _ in $(seq 100); do
		grep -q listening "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "demo: $2 did not start:" >&2
	cat "$1" >&2
	stop_all
	exit 1
}

export PATH="$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin):$PATH"
if [ "${1:-}" = stop ]; then
	stop_all
	echo "demo stopped"
	exit 0
fi

if [ "$(id -u)" = 0 ] && [ "${SAM_SKIP_DEPS:-0}" != 1 ]; then
	scripts/install-deps.sh
fi
export PATH="$(pg_config --bindir):$PATH"
if [ "${SAM_SKIP_BUILD:-0}" != 1 ]; then
	make -s
	make -s install
fi

stop_all
rm -rf "$demo"
mkdir -p "$demo"
cp test/mock_unipile "$demo/"
[ -x ingest/sam_ingest ] && cp ingest/sam_ingest "$demo/"
[ "$(id -u)" = 0 ] && chown -R postgres: "$demo"
chmod 755 "$demo"

key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
webhook_secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
umask 077
printf '%s\n' "$key" > "$demo/unipile_api_key"
printf '%s' "$webhook_secret" > "$demo/webhook_secret"
umask 022
[ "$(id -u)" = 0 ] && chown postgres: "$demo/unipile_api_key" "$demo/webhook_secret"

echo "== starting a throw-away cluster in $demo (port $pgport)"
as_pg initdb -D "$demo/data" -A trust -U postgres >/dev/null
cat >> "$demo/data/postgresql.conf" <<CONF
port = $pgport
listen_addresses = ''
unix_socket_directories = '$demo'
shared_preload_libraries = 'pg_cron,sam_ext'
cron.database_name = 'postgres'
sam.database_name = 'postgres'
sam.unipile_dsn = 'http://127.0.0.1:$mockport'
sam.unipile_api_key_file = '$demo/unipile_api_key'
sam.retry_base_delay = '200ms'
sam.http_timeout = '5s'
# the demo's notification hook is the mock's, on 127.0.0.1
sam.allow_private_hook_addresses = on
CONF
as_pg pg_ctl -D "$demo/data" -l "$demo/postgres.log" -w start >/dev/null

echo "== starting the mock Unipile server (port $mockport)"
as_pg env MOCK_UNIPILE_API_KEY="$key" "$demo/mock_unipile" --port "$mockport" --quiet > "$demo/mock.log" 2>&1 &
wait_listening "$demo/mock.log" "the mock Unipile server"

# the socket accepts the postgres role from any local user (trust): no runuser per call
psql_q() { psql -h "$demo" -p "$pgport" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_v() { psql_q -At -c "$1"; }
mock() { curl -s -X "$1" "http://127.0.0.1:$mockport$2" ${3:+-H 'Content-Type: application/json' -d "$3"} >/dev/null; }

psql_q -c "CREATE EXTENSION sam_ext"

if [ -x "$demo/sam_ingest" ]; then
	echo "== starting the webhook ingest (port $ingestport)"
	as_pg env SAM_INGEST_DATABASE_URL="host=$demo port=$pgport dbname=postgres user=postgres" \
		SAM_INGEST_PORT="$ingestport" SAM_WEBHOOK_SECRET="$webhook_secret" \
		"$demo/sam_ingest" > "$demo/ingest.log" 2>&1 &
	wait_listening "$demo/ingest.log" "the ingest"
	curl -s -X POST "http://127.0.0.1:$mockport/api/v1/webhooks" -H "X-API-KEY: $key" -H 'Content-Type: application/json' \
		-d "{\"source\":\"users\",\"request_url\":\"http://127.0.0.1:$ingestport/api/webhooks/unipile\",\"name\":\"sam\",\"headers\":[{\"key\":\"Unipile-Auth\",\"value\":\"$webhook_secret\"}]}" >/dev/null
	curl -s -X POST "http://127.0.0.1:$mockport/api/v1/webhooks" -H "X-API-KEY: $key" -H 'Content-Type: application/json' \
		-d "{\"source\":\"messaging\",\"request_url\":\"http://127.0.0.1:$ingestport/api/webhooks/unipile\",\"name\":\"sam-msg\",\"headers\":[{\"key\":\"Unipile-Auth\",\"value\":\"$webhook_secret\"}]}" >/dev/null
fi

# the engine's clock and the mock's: Monday 2 March 2026, 08:00 UTC (09:00 in Paris)
start_epoch=1772438400
psql_v "SELECT sam.set_clock(to_timestamp($start_epoch), frozen => true)" >/dev/null
mock POST /_mock/clock "{\"now_ms\": ${start_epoch}000}"

echo "== a LinkedIn account (Europe/Paris, Mon-Fri 09:00-18:00, 20 invitations a day, 100 a week), a campaign of 50"
# the simulated network: a quarter never accept, some within hours, the rest after days
people=$(psql_v "
  WITH seed AS (SELECT setseed(0.7)),
  g AS (SELECT i, (ARRAY['Alice','Bruno','Chloé','David','Emma','Farid','Gaëlle','Hugo','Inès','Jules','Karim','Léa','Marc',
                         'Nina','Omar','Paula','Quentin','Rita','Samir','Tess','Ugo','Vera','Walid','Xenia','Yann'])[1 + i % 25] AS fn,
               (ARRAY['Martin','Bernard','Dubois','Thomas','Robert','Richard','Petit','Durand','Leroy','Moreau'])[1 + (i * 7) % 10] AS ln,
               (ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Vandelay','Stark','Wayne','Tyrell','Cyberdyne'])[1 + i % 10] AS co,
               random() AS r, random() AS r2
          FROM seed, generate_series(0, 49) i)
  SELECT jsonb_build_object(
    'people', jsonb_agg(jsonb_build_object('provider_id', format('ACoDEMO%s', lpad(i::text, 3, '0')),
        'public_identifier', lower(format('%s-%s-%s', fn, ln, i)), 'first_name', fn, 'last_name', ln, 'headline', 'Head of Ops',
        'accept_after_s', CASE WHEN r < 0.25 THEN NULL WHEN r < 0.65 THEN (1 + floor(r2 * 8)) * 3600
                               ELSE (2 + floor(r2 * 5)) * 86400 END,
        'reply_after_s', CASE WHEN i % 5 IN (1, 3) THEN 3 * 3600 END,
        'reply_after_step', CASE WHEN i % 5 = 1 THEN 1 ELSE 2 END,
        'reply_text', 'Thanks, happy to talk next week') ORDER BY i),
    'prospects', jsonb_agg(jsonb_build_object('first_name', fn, 'last_name', ln, 'company', co)
        || CASE WHEN i % 10 = 9 THEN jsonb_build_object('profile_url', lower(format('https://www.linkedin.com/in/%s-%s-%s/', fn, ln, i)))
                ELSE jsonb_build_object('provider_id', format('ACoDEMO%s', lpad(i::text, 3, '0'))) END ORDER BY i))
  FROM g")
# (psql interpolates :'j' only in what it reads, not in -c)
mock POST /_mock/people "$(echo "SELECT (:'j'::jsonb)->'people'" | psql_q -At -v j="$people")"
psql_v "SELECT sam.create_account('demo-linkedin', name => 'Demo seller', time_zone => 'Europe/Paris',
        daily_invite_cap => 20, weekly_invite_cap => 100, spacing_min => '0', spacing_max => '0')" >/dev/null
cid=$(psql_v "SELECT sam.create_campaign('demo-linkedin', 'Ops leaders',
        connection_note => 'Hi {first_name|there}, I work with ops teams like {company}''s. Happy to connect!',
        follow_ups => '[{\"delay\": \"24 hours\", \"template\": \"Thanks for connecting, {first_name|there}!\"},
                        {\"delay\": \"5 days\", \"template\": \"{first_name|Hi}, worth a short call?\"},
                        {\"delay\": \"7 days\", \"template\": \"Sharing a case study from a team like {company}.\"},
                        {\"delay\": \"5 days\", \"template\": \"Last note from me, {first_name|there}.\"}]'
        )->>'campaign_id'")
echo "SELECT 'prospects added: ' || ((sam.add_prospects($cid, (:'j'::jsonb)->'prospects'))->>'inserted')" | psql_q -At -v j="$people"
psql_q -At -c "SELECT 'start_campaign: ' || ((sam.start_campaign($cid) - 'campaign_id')::text)"

drain() {
	# wait until the worker has made every call that is due now
	for _ in $(seq 400); do
		n=$(psql_v "SELECT count(*) FROM sam.outbox o LEFT JOIN sam.accounts a USING (account_id)
		             WHERE (a.status = 'active' OR o.kind = 'notify')
		               AND (o.state = 'in_flight' OR (o.state IN ('queued', 'failed') AND o.not_before <= sam.now()))")
		[ "$n" = 0 ] && return 0
		sleep 0.05
	done
	echo "   (the worker is still busy)"
}

# notifications go to the mock's hook receiver, as they would to a Slack incoming webhook
psql_v "SELECT sam.set_notification_url('http://127.0.0.1:$mockport/hooks/demo-slack')" >/dev/null

echo
echo "== $days simulated days; the jobs run on the seed's schedules (UTC)"
printf '%-12s %7s %8s %8s %7s %9s %7s  %s\n' day invited accepted messages replied completed failed "acceptances detected by"
drain
for day in $(seq 0 $((days - 1))); do
	for hour in $(seq 0 23); do
		now_epoch=$((start_epoch + day * 86400 + hour * 3600))
		utc_hour=$(( (8 + hour) % 24 ))
		check=()
		if [ $utc_hour = 9 ] || [ $utc_hour = 21 ]; then
			check=(-c "SELECT sam.check_relations()")                       # 0 9 * * *, 0 21 * * *
		fi
		if [ $utc_hour = 3 ]; then
			check+=(-c "SELECT sam.gdpr_cleanup()")                         # daily
		fi
		mock POST /_mock/clock "{\"now_ms\": ${now_epoch}000}"
		# one psql, one transaction per -c: each job sees the clock committed
		psql_q -At -o /dev/null \
			-c "SELECT sam.set_clock(to_timestamp($now_epoch), frozen => true)" \
			-c "SELECT sam.execute_scheduled_campaigns()" \
			-c "SELECT sam.process_pending_prospects()" \
			"${check[@]}" \
			-c "SELECT sam.process_follow_ups()" \
			-c "SELECT sam.process_outbox()" \
			-c "SELECT sam.check_pending_notifications()"
		drain
	done
	d0="to_timestamp($start_epoch + $day * 86400 - 8 * 3600)"
	d1="to_timestamp($start_epoch + ($day + 1) * 86400 - 8 * 3600)"
	psql_v "SELECT to_char(to_timestamp($start_epoch + $day * 86400) AT TIME ZONE 'Europe/Paris', 'Dy DD Mon') || '|' ||
	               count(*) FILTER (WHERE invited_at >= $d0 AND invited_at < $d1) || '|' ||
	               count(connected_at) || '|' ||
	               (SELECT count(*) FROM sam.outbox o WHERE o.campaign_id = $cid AND o.kind IN ('start_chat', 'send_message')
	                   AND o.state = 'done' AND o.finished_at >= $d0 AND o.finished_at < $d1) || '|' ||
	               count(replied_at) || '|' ||
	               count(*) FILTER (WHERE status = 'completed') || '|' ||
	               count(*) FILTER (WHERE status = 'failed') || '|' ||
	               coalesce((SELECT string_agg(v || ' ' || n, ', ') FROM (SELECT connected_via v, count(*) n FROM sam.prospects
	                          WHERE campaign_id = $cid AND connected_via IS NOT NULL GROUP BY 1 ORDER BY 1) s), '-')
	          FROM sam.prospects WHERE campaign_id = $cid" |
		awk -F'|' '{ printf "%-12s %7s %8s %8s %7s %9s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
done

echo
echo "== who was invited when (first 12, local time of the account)"
psql_q -c "SELECT coalesce(first_name || ' ' || last_name, public_identifier) AS prospect, company,
                  to_char(invited_at AT TIME ZONE 'Europe/Paris', 'Dy DD Mon HH24:MI') AS invited,
                  to_char(connected_at AT TIME ZONE 'Europe/Paris', 'Dy DD Mon HH24:MI') AS accepted, connected_via AS via, status
             FROM sam.prospects WHERE campaign_id = $cid ORDER BY invited_at NULLS LAST, id LIMIT 12"
echo "== caps: invitations per local day (cap 20/day, 100 per rolling week)"
psql_q -c "SELECT to_char(invited_at AT TIME ZONE 'Europe/Paris', 'Dy DD Mon') AS day, count(*) AS invitations,
                  min(to_char(invited_at AT TIME ZONE 'Europe/Paris', 'HH24:MI')) AS first, max(to_char(invited_at AT TIME ZONE 'Europe/Paris', 'HH24:MI')) AS last
             FROM sam.prospects WHERE campaign_id = $cid AND invited_at IS NOT NULL
            GROUP BY 1, date_trunc('day', invited_at AT TIME ZONE 'Europe/Paris') ORDER BY date_trunc('day', invited_at AT TIME ZONE 'Europe/Paris')"
echo "== funnel"
psql_q -c "SELECT prospects, invited, connected AS accepted, replied, completed, failed, withdrawn, pending FROM sam.campaign_funnel WHERE campaign_id = $cid"
echo "== follow-ups: messages confirmed by Unipile per step"
psql_q -c "SELECT 'FU' || (context->>'step') AS step, count(*) AS sent FROM sam.outbox
            WHERE campaign_id = $cid AND kind IN ('start_chat', 'send_message') AND state = 'done' GROUP BY 1 ORDER BY 1"
echo "== webhooks received by the ingest"
psql_q -c "SELECT event, status, count(*) FROM sam.webhook_events GROUP BY 1, 2 ORDER BY 1, 2"
echo "== notifications (pg_notify on sam_notifications, and POSTed to the hook)"
psql_q -c "SELECT event, http_state, count(*) FROM sam.notifications GROUP BY 1, 2 ORDER BY 1, 2"
psql_q -c "SELECT text FROM sam.notifications ORDER BY id LIMIT 3"
echo "== Unipile calls made by the worker"
psql_q -c "SELECT kind, state, count(*) FROM sam.outbox GROUP BY 1, 2 ORDER BY 1, 2"
calls=$(curl -s "http://127.0.0.1:$mockport/_mock/stats")
echo "mock Unipile received: $calls"
echo
echo "The demo keeps running. Look around with:"
echo "    sudo -u postgres psql -h $demo -p $pgport -U postgres     # then e.g. TABLE sam.campaign_funnel;"
echo "Stop it with:"
echo "    sudo scripts/demo.sh stop"
