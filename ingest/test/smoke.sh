#!/usr/bin/env bash
#
# smoke.sh
#     Smoke test of ingest/sam_ingest against a throw-away PostgreSQL
#     cluster loaded with stand_in.sql: secrets (401), methods (405),
#     unknown paths (404), body limit (413), bad payloads (400), stored
#     and duplicate webhooks (200), concurrent duplicate deliveries,
#     the cron endpoints with the replaced system's own curl line (200,
#     501, 403, 500), /healthz and /metrics, the database going away and
#     coming back (503, then 200 with nothing lost), a graceful SIGTERM
#     during a request (exit 0), and that no secret ever reaches the
#     daemon's output.  Exits non-zero on any mismatch.
#
# Usage: ingest/test/smoke.sh            (builds the daemon if needed)
#        INGEST_WRAPPER="valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99" \
#            ingest/test/smoke.sh        (run the daemon under a wrapper)
#
# Needs bash, curl and PostgreSQL's server binaries (pg_config --bindir).
# As root, the cluster runs as the "postgres" user.
#
# ingest/test/smoke.sh

set -u

HERE=$(cd "$(dirname "$0")" && pwd)
INGEST_DIR=$(dirname "$HERE")
BIN="$INGEST_DIR/sam_ingest"
WRAPPER=${INGEST_WRAPPER:-}
TMP=$(mktemp -d /tmp/sam_ingest_smoke.XXXXXX)
PGTMP=$(mktemp -d /tmp/sam_ingest_pg.XXXXXX)
PASSES=0
FAILS=0
PID=""
PID2=""

# shellcheck source=cluster.sh
. "$HERE/cluster.sh"

cleanup() {
	if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
		kill -KILL "$PID" 2>/dev/null
	fi
	if [ -n "$PID2" ] && kill -0 "$PID2" 2>/dev/null; then
		kill -KILL "$PID2" 2>/dev/null
	fi
	cluster_destroy
	rm -rf "$TMP"
}
trap cleanup EXIT

make -s -C "$INGEST_DIR" >/dev/null || { echo "smoke: build failed"; exit 1; }
command -v curl >/dev/null || { echo "smoke: curl is needed"; exit 1; }

pass() { PASSES=$((PASSES + 1)); }
fail() {
	FAILS=$((FAILS + 1))
	echo "FAIL: $*"
}

# random secrets, so that grepping the logs for them means something
WSECRET="wh-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CSECRET="cr-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
umask 077
printf '%s\n' "$CSECRET" >"$TMP/cron_secret"

# req NAME WANT_STATUS BODY_REGEX CURL_ARGS...: one request; checks the
# status, that the body matches the regex and, for JSON answers, the
# content type.  The body is left in $TMP/body.
req() {
	local name=$1 want=$2 pattern=$3 got
	shift 3
	got=$(curl -sS -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' --max-time 20 "$@" 2>"$TMP/curl.err")
	if [ "$got" != "$want" ]; then
		fail "$name: status $got, want $want; body: $(head -c 300 "$TMP/body" 2>/dev/null) $(cat "$TMP/curl.err")"
		return 1
	fi
	if ! grep -Eq -- "$pattern" "$TMP/body"; then
		fail "$name: body $(head -c 300 "$TMP/body") does not match /$pattern/"
		return 1
	fi
	if [ "${want}" != 000 ] && [ "${CT:-json}" = json ] &&
		! grep -qi '^Content-Type: application/json' "$TMP/headers"; then
		fail "$name: content type is not application/json: $(grep -i '^content-type' "$TMP/headers")"
		return 1
	fi
	pass
}

# psql_value SQL: one value from the stand-in database.
psql_value() {
	psql -X -At -v ON_ERROR_STOP=1 -c "$1"
}

# start_ingest: starts the daemon in the background and reads its port
# from the one line it prints.  The environment asks for port 1 and a
# 10-byte body limit; the flags, which win, for any free port and 4096.
start_ingest() {
	: >"$TMP/out"
	: >"$TMP/err"
	SAM_INGEST_DATABASE_URL="$CLUSTER_INGEST_URL" \
	SAM_WEBHOOK_SECRET="$WSECRET" \
	SAM_INGEST_PORT=1 SAM_INGEST_MAX_BODY=10 \
		$WRAPPER "$BIN" --port 0 --max-body 4096 --threads 4 --per-ip-connections 24 --idle-timeout 5 --metrics-max-age 2 \
		--cron-secret-file "$TMP/cron_secret" >"$TMP/out" 2>"$TMP/err" &
	PID=$!
	local i
	for i in $(seq 1 600); do
		grep -q 'listening on' "$TMP/out" 2>/dev/null && break
		kill -0 "$PID" 2>/dev/null || break
		sleep 0.1
	done
	PORT=$(sed -n 's/^sam_ingest listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$TMP/out")
	if [ -z "$PORT" ] || [ "$PORT" = 1 ]; then
		echo "smoke: the daemon did not start:"
		cat "$TMP/out" "$TMP/err"
		exit 1
	fi
	BASE="http://127.0.0.1:$PORT"
}

new_relation() {
	printf '{"event":"new_relation","account_id":"acc-smoke","account_type":"LINKEDIN","webhook_name":"smoke","user_full_name":"Julien Cr\xc3\xa9pieux","user_provider_id":"%s","user_public_identifier":"julien","user_profile_url":"https://www.linkedin.com/in/julien/"}' "$1"
}

echo "smoke: throw-away cluster in $PGTMP"
cluster_create "$PGTMP" || exit 1
cluster_start || { cat "$PGTMP/server.log"; exit 1; }
cluster_load || exit 1
start_ingest
echo "smoke: sam_ingest on port $PORT${WRAPPER:+ under $WRAPPER}"

WH="$BASE/api/webhooks/unipile"
WHA="$BASE/api/webhooks/unipile-connection-accepted"
CRON_ROUTES="/api/cron/check-relations /api/campaigns/direct/process-follow-ups
/api/cron/execute-scheduled-campaigns /api/cron/process-pending-prospects
/api/cron/process-outbox /api/cron/gdpr-cleanup /api/cron/check-pending-notifications"
UNAUTH='^\{"error":"Unauthorized"\}$'
P1=$(new_relation ACoAA-smoke-1)

# --- a secret mistakenly given on the command line is refused, not echoed
for bad in "--webhook-secret=$WSECRET" "--webhook-secre=$WSECRET" "-s$WSECRET"; do
	out=$("$BIN" --database-url "$CLUSTER_INGEST_URL" "$bad" 2>&1)
	rc=$?
	if [ "$rc" = 2 ] && ! grep -qF -- "$WSECRET" <<<"$out"; then pass; else fail "bad flag: rc $rc, $out"; fi
done
# after a long option with its value, the short option is named (not the long one before it)
out=$("$BIN" --database-url "$CLUSTER_INGEST_URL" --listen=127.0.0.1 "-z$WSECRET" 2>&1)
if grep -q 'unknown option: -z' <<<"$out" && ! grep -qF -- "$WSECRET" <<<"$out"; then pass; else fail "short after long: $out"; fi
out=$("$BIN" --database-url "$CLUSTER_INGEST_URL" --listen 2>&1)
if grep -q 'missing value: --listen' <<<"$out"; then pass; else fail "missing value: $out"; fi
for bad in 3601 -1 abc; do
	out=$("$BIN" --database-url "$CLUSTER_INGEST_URL" --metrics-max-age "$bad" 2>&1)
	rc=$?
	if [ "$rc" = 2 ] && grep -q "the metrics' maximum age must be a number" <<<"$out"; then pass; else
		fail "--metrics-max-age $bad: rc $rc, $out"; fi
done

# --- the banner
[ "$(wc -l <"$TMP/out")" = 1 ] && pass || fail "stdout is not exactly one line: $(cat "$TMP/out")"

# --- 401: webhook secret
for url in "$WH" "$WHA"; do
	req "webhook no secret $url" 401 "$UNAUTH" -X POST "$url" -d "$P1"
	req "webhook wrong secret $url" 401 "$UNAUTH" -X POST "$url" -H "Unipile-Auth: wrong" -d "$P1"
	req "webhook secret+1 $url" 401 "$UNAUTH" -X POST "$url" -H "Unipile-Auth: ${WSECRET}x" -d "$P1"
	req "webhook secret-1 $url" 401 "$UNAUTH" -X POST "$url" -H "Unipile-Auth: ${WSECRET%?}" -d "$P1"
	req "webhook empty secret $url" 401 "$UNAUTH" -X POST "$url" -H "Unipile-Auth;" -d "$P1"
	req "webhook cron secret $url" 401 "$UNAUTH" -X POST "$url" -H "Unipile-Auth: $CSECRET" -d "$P1"
	req "webhook secret in x-cron-secret $url" 401 "$UNAUTH" -X POST "$url" -H "x-cron-secret: $WSECRET" -d "$P1"
done
# auth comes before the size check: an oversize unauthenticated body is 401
head -c 5000 /dev/zero | tr '\0' 'a' >"$TMP/big"
req "webhook oversize no secret" 401 "$UNAUTH" -X POST "$WH" --data-binary @"$TMP/big"

# --- 401: cron secret (the seed's "Check 3" line, then every route)
req "seed check 3 wrong secret" 401 "$UNAUTH" -X POST "$BASE/api/cron/check-relations" \
	-H "x-cron-secret: wrong-secret"
for r in $CRON_ROUTES; do
	req "cron no secret $r" 401 "$UNAUTH" -X POST "$BASE$r" -H "Content-Type: application/json"
	req "cron webhook secret $r" 401 "$UNAUTH" -X POST "$BASE$r" -H "x-cron-secret: $WSECRET"
done
req "cron secret+1" 401 "$UNAUTH" -X POST "$BASE/api/cron/check-relations" -H "x-cron-secret: ${CSECRET}x"
req "cron secret-1" 401 "$UNAUTH" -X POST "$BASE/api/cron/check-relations" -H "x-cron-secret: ${CSECRET%?}"

# --- 405 and 404
req "GET webhook" 405 'Method not allowed' "$WH" -H "Unipile-Auth: $WSECRET"
grep -qi '^Allow: POST' "$TMP/headers" && pass || fail "405 without Allow: POST"
req "GET cron" 405 'Method not allowed' "$BASE/api/cron/check-relations" -H "x-cron-secret: $CSECRET"
req "PUT cron" 405 'Method not allowed' -X PUT "$BASE/api/cron/check-relations" -H "x-cron-secret: $CSECRET"
req "POST healthz" 405 'Method not allowed' -X POST "$BASE/healthz"
req "unknown path" 404 '^\{"error":"Not found"\}$' "$BASE/nope"
req "trailing slash" 404 '^\{"error":"Not found"\}$' -X POST "$WH/" -H "Unipile-Auth: $WSECRET" -d "$P1"
req "root" 404 '^\{"error":"Not found"\}$' "$BASE/"

# --- 413 (limit 4096 from --max-body; the environment said 10)
TOO_LARGE='^\{"error":"Payload too large"\}$'
head -c 4097 /dev/zero | tr '\0' 'a' >"$TMP/big"
req "413 content-length" 413 "$TOO_LARGE" -X POST "$WH" -H "Unipile-Auth: $WSECRET" --data-binary @"$TMP/big"
req "413 alias" 413 "$TOO_LARGE" -X POST "$WHA" -H "Unipile-Auth: $WSECRET" --data-binary @"$TMP/big"
req "413 cron" 413 "$TOO_LARGE" -X POST "$BASE/api/cron/check-relations" -H "x-cron-secret: $CSECRET" \
	--data-binary @"$TMP/big"
# without Content-Length (chunked) the excess is read and dropped, then 413 ...
head -c 6000 /dev/zero | tr '\0' 'a' >"$TMP/big"
req "413 chunked" 413 "$TOO_LARGE" -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-H "Transfer-Encoding: chunked" --data-binary @"$TMP/big"
# ... but past twice the limit the connection is closed
head -c 2000000 /dev/zero | tr '\0' 'a' >"$TMP/huge"
got=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-H "Transfer-Encoding: chunked" -H "Expect:" --data-binary @"$TMP/huge" 2>/dev/null)
case "$got" in 2*) fail "endless chunked body was accepted: $got" ;; *) pass ;; esac
# exactly at the limit is accepted
{
	printf '{"event":"padding","pad":"'
	head -c $((4096 - 28)) /dev/zero | tr '\0' 'p'
	printf '"}'
} >"$TMP/exact"
[ "$(wc -c <"$TMP/exact")" = 4096 ] || fail "test bug: exact body is $(wc -c <"$TMP/exact") bytes"
req "4096 bytes accepted" 200 '"duplicate": false' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	--data-binary @"$TMP/exact"

# --- 400: not JSON, not an object, empty, invalid UTF-8; the body is never echoed
req "400 not JSON" 400 '^\{"error":"invalid JSON payload: [^"]+"\}$' -X POST "$WH" \
	-H "Unipile-Auth: $WSECRET" -d 'this is not json ECHO-CANARY'
grep -q 'ECHO-CANARY' "$TMP/body" && fail "400 answer echoes the body: $(cat "$TMP/body")" || pass
req "400 truncated JSON" 400 'invalid JSON payload' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-d '{"event":"new_relation","account_id":'
req "400 array" 400 'invalid JSON payload: invalid payload: a webhook must be a JSON object' \
	-X POST "$WH" -H "Unipile-Auth: $WSECRET" -d '[1,2,3]'
req "400 empty body" 400 'invalid JSON payload' -X POST "$WH" -H "Unipile-Auth: $WSECRET"
printf '{"event":"\xff\xfe"}' >"$TMP/latin"
req "400 invalid UTF-8" 400 'invalid JSON payload' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	--data-binary @"$TMP/latin"
printf '{"event":"nul\0byte"}' >"$TMP/nul"
req "400 NUL byte" 400 'invalid JSON payload' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	--data-binary @"$TMP/nul"

# --- 200: stored once, then reported as a duplicate of the same id
req "webhook stored" 200 '"duplicate": false' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-H "Content-Type: application/json" -d "$P1"
grep -q '"event": "new_relation"' "$TMP/body" && grep -q '"success": true' "$TMP/body" && pass ||
	fail "webhook answer: $(cat "$TMP/body")"
ID1=$(sed -n 's/.*"id": \([0-9]*\).*/\1/p' "$TMP/body")
req "webhook duplicate" 200 "\"duplicate\": true" -X POST "$WH" -H "Unipile-Auth: $WSECRET" -d "$P1"
grep -q "\"id\": $ID1[,}]" "$TMP/body" && pass || fail "duplicate has another id: $(cat "$TMP/body") vs $ID1"
# header names are case-insensitive; no Content-Type needed (API-created webhooks send none)
P2=$(new_relation ACoAA-smoke-2)
req "alias route, lower-case header" 200 '"duplicate": false' -X POST "$WHA" \
	-H "unipile-auth: $WSECRET" -H "Content-Type:" --data-binary "$P2"
[ "$(psql_value "SELECT source FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoAA-smoke-2'")" = \
	unipile-connection-accepted ] && pass || fail "alias route did not pass its source"
[ "$(psql_value "SELECT source FROM sam.webhook_events WHERE id = $ID1")" = unipile ] && pass ||
	fail "main route did not pass source unipile"
# the raw body is what is stored (multi-byte UTF-8 intact)
[ "$(psql_value "SELECT payload->>'user_full_name' FROM sam.webhook_events WHERE id = $ID1")" = "Julien Crépieux" ] &&
	pass || fail "payload not stored intact"
ACCOUNT='{"AccountStatus":{"account_id":"acc-smoke","account_type":"LINKEDIN","message":"CREDENTIALS"}}'
req "account status webhook" 200 '"event": "account_status"' -X POST "$WH" -H "Unipile-Auth: $WSECRET" -d "$ACCOUNT"

# --- 20 concurrent deliveries of one new payload: exactly one row
P3=$(new_relation ACoAA-smoke-concurrent)
PAR_PIDS=()
for i in $(seq 1 20); do
	curl -sS -o "$TMP/par.$i" -w '%{http_code}\n' --max-time 20 -X POST "$WH" \
		-H "Unipile-Auth: $WSECRET" -d "$P3" >"$TMP/par.code.$i" &
	PAR_PIDS+=($!)
done
wait "${PAR_PIDS[@]}"
[ "$(cat "$TMP"/par.code.* | grep -c '^200$')" = 20 ] && pass ||
	fail "concurrent deliveries: codes $(cat "$TMP"/par.code.* | sort | uniq -c | tr '\n' ' ')"
[ "$(cat "$TMP"/par.[0-9]* | grep -c '"duplicate": false')" = 1 ] && pass ||
	fail "concurrent deliveries: $(cat "$TMP"/par.[0-9]* | grep -c '"duplicate": false') answers say stored"
[ "$(psql_value "SELECT count(*) FROM sam.webhook_events WHERE payload->>'user_provider_id' = 'ACoAA-smoke-concurrent'")" = 1 ] &&
	pass || fail "concurrent deliveries did not store exactly one row"
[ "$(cat "$TMP"/par.[0-9]* | sed -n 's/.*"id": \([0-9]*\).*/\1/p' | sort -u | wc -l)" = 1 ] && pass ||
	fail "concurrent deliveries answered different ids"

# --- cron: the replaced system's "Test Commands" line, verbatim but for host and secret
CRON_SECRET=$CSECRET
curl -X POST http://127.0.0.1:$PORT/api/cron/check-relations \
  -H "x-cron-secret: ${CRON_SECRET}" \
  -H "Content-Type: application/json" >"$TMP/body" 2>"$TMP/curl.err"
got=$?
# (the line prints only the body: the function's JSON is proof of the 200)
if [ "$got" = 0 ] && grep -q '"success": true' "$TMP/body" && grep -q '"checked": 0' "$TMP/body" &&
	grep -q '"accepted": 0' "$TMP/body" && grep -q '"still_pending": 0' "$TMP/body" &&
	grep -q '"errors": \[\]' "$TMP/body"; then
	pass
else
	fail "seed curl line: $got $(cat "$TMP/body")"
fi
req "check-relations empty body" 200 '"success": true' -X POST "$BASE/api/cron/check-relations" \
	-H "x-cron-secret: $CSECRET" -d ''
req "check-relations JSON body" 200 '"success": true' -X POST "$BASE/api/cron/check-relations" \
	-H "x-cron-secret: $CSECRET" -H "Content-Type: application/json" -d '{"dry_run":true}'
req "process-follow-ups 501" 501 \
	'^\{"error":"not implemented: sam.process_follow_ups\(\) is not installed in this database"\}$' \
	-X POST "$BASE/api/campaigns/direct/process-follow-ups" -H "x-cron-secret: $CSECRET" \
	-H "Content-Type: application/json"
for r in /api/cron/execute-scheduled-campaigns /api/cron/process-pending-prospects \
	/api/cron/process-outbox /api/cron/gdpr-cleanup /api/cron/check-pending-notifications; do
	req "501 $r" 501 'not implemented: sam\.[a-z_]+\(\) is not installed' -X POST "$BASE$r" \
		-H "x-cron-secret: $CSECRET"
done
psql_value "REVOKE EXECUTE ON FUNCTION sam.check_relations() FROM sam_ingest" >/dev/null
req "403 without EXECUTE" 403 \
	'^\{"error":"forbidden: the ingest role may not call sam.check_relations\(\)"\}$' \
	-X POST "$BASE/api/cron/check-relations" -H "x-cron-secret: $CSECRET"
psql_value "GRANT EXECUTE ON FUNCTION sam.check_relations() TO sam_ingest" >/dev/null
# a job that answers "success": false (it failed, or the worker is not running): 500 with its answer,
# so that the scheduler's history shows the failure
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION sam.process_outbox() RETURNS jsonb LANGUAGE sql AS
$$SELECT '{"success": false, "error": "the sam_ext worker is not running"}'::jsonb$$;
GRANT EXECUTE ON FUNCTION sam.process_outbox() TO sam_ingest;
SQL
req "500 for success: false" 500 '^\{"error": "the sam_ext worker is not running", "success": false\}$' \
	-X POST "$BASE/api/cron/process-outbox" -H "x-cron-secret: $CSECRET"
# a run that goes on past the wait is not a failure: 202 (a scheduler retrying a 5xx would start it again)
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION sam.check_pending_notifications() RETURNS jsonb LANGUAGE sql AS
$$SELECT '{"success": false, "still_running": true, "error": "the run is still going on", "run_id": 7}'::jsonb$$;
GRANT EXECUTE ON FUNCTION sam.check_pending_notifications() TO sam_ingest;
SQL
req "202 for a run still going on" 202 '^\{"error": "the run is still going on", "run_id": 7, "success": false, "still_running": true\}$' \
	-X POST "$BASE/api/cron/check-pending-notifications" -H "x-cron-secret: $CSECRET"
psql_value "DROP FUNCTION sam.check_pending_notifications()" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION sam.gdpr_cleanup() RETURNS jsonb LANGUAGE plpgsql AS
$$BEGIN RAISE EXCEPTION 'cleanup "exploded"'; END$$;
GRANT EXECUTE ON FUNCTION sam.gdpr_cleanup() TO sam_ingest;
SQL
req "500 from a failing job" 500 '^\{"success":false,"error":"cleanup \\"exploded\\""\}$' \
	-X POST "$BASE/api/cron/gdpr-cleanup" -H "x-cron-secret: $CSECRET"

# --- health and metrics
req "healthz up" 200 '^\{"status":"ok","database":"up"\}$' "$BASE/healthz"
CT=text req "metrics" 200 '^sam_ingest_requests_total\{route="/api/webhooks/unipile",code="401"\} [1-9]' "$BASE/metrics"
grep -qi '^Content-Type: text/plain; version=0.0.4' "$TMP/headers" && pass || fail "metrics content type"
grep -Eq '^sam_ingest_webhook_rejected_total\{reason="too_large"\} [1-9]' "$TMP/body" && pass ||
	fail "metrics: no too_large count"
grep -Eq '^sam_ingest_request_duration_seconds_bucket\{route="/api/webhooks/unipile",le="\+Inf"\} [1-9]' "$TMP/body" &&
	pass || fail "metrics: no duration histogram"
# the database's figures are read once every --metrics-max-age (2) seconds at most: the answer
# "no sam.metrics_text()" above is kept that long too, so the function shows up within 2 s
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE SEQUENCE sam.metrics_reads;
CREATE FUNCTION sam.metrics_text() RETURNS text LANGUAGE sql SECURITY DEFINER AS
$$SELECT E'# TYPE sam_stand_in_events gauge\nsam_stand_in_events ' || count(*)
         || E'\nsam_stand_in_reads ' || nextval('sam.metrics_reads') FROM sam.webhook_events$$;
GRANT EXECUTE ON FUNCTION sam.metrics_text() TO sam_ingest;
SQL
for i in $(seq 1 100); do
	curl -s "$BASE/metrics" | grep -q '^sam_stand_in_events' && break
	sleep 0.1
done
CT=text req "metrics with sam.metrics_text()" 200 '^sam_stand_in_events [0-9]+$' "$BASE/metrics"
READS=$(psql_value "SELECT last_value FROM sam.metrics_reads")
# twenty scrapes at once (under --per-ip-connections): answered from the figures kept, which are
# read again once at most
: >"$TMP/scrapes"
curl -s -Z --parallel-immediate --parallel-max 20 -w '%{http_code}\n' \
	$(for i in $(seq 1 20); do printf -- '-o /dev/null %s ' "$BASE/metrics"; done) >"$TMP/scrapes" 2>/dev/null
[ "$(grep -c '^200$' "$TMP/scrapes")" = 20 ] && pass || fail "20 scrapes: $(sort "$TMP/scrapes" | uniq -c | tr '\n' ' ')"
READS2=$(psql_value "SELECT last_value FROM sam.metrics_reads")
[ "$READS2" -le $((READS + 1)) ] && pass ||
	fail "20 scrapes read the database's figures $((READS2 - READS)) times, want 1 at most"

# --- with a metrics secret: /metrics and /metrics/ingest need "Authorization: Bearer <secret>",
# checked before any figure is read; /healthz still needs nothing
MSECRET="mt-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SAM_INGEST_DATABASE_URL="$CLUSTER_INGEST_URL" SAM_METRICS_SECRET="$MSECRET
" \
	$WRAPPER "$BIN" --port 0 --threads 1 >"$TMP/out2" 2>"$TMP/err2" &
PID2=$!
for i in $(seq 1 600); do
	grep -q 'listening on' "$TMP/out2" 2>/dev/null && break
	kill -0 "$PID2" 2>/dev/null || break
	sleep 0.1
done
BASE2="http://127.0.0.1:$(sed -n 's/^sam_ingest listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$TMP/out2")"
READS=$(psql_value "SELECT last_value FROM sam.metrics_reads")
req "metrics without the bearer token" 401 "$UNAUTH" "$BASE2/metrics"
req "metrics with a wrong token" 401 "$UNAUTH" -H "Authorization: Bearer wrong" "$BASE2/metrics"
req "metrics with the secret as another scheme" 401 "$UNAUTH" -H "Authorization: Basic $MSECRET" "$BASE2/metrics"
req "metrics with the scheme glued to the token" 401 "$UNAUTH" -H "Authorization: Bearer$MSECRET" "$BASE2/metrics"
req "ingest metrics without the token" 401 "$UNAUTH" "$BASE2/metrics/ingest"
[ "$(psql_value "SELECT last_value FROM sam.metrics_reads")" = "$READS" ] && pass ||
	fail "a refused scrape read the database's figures"
CT=text req "metrics with the token" 200 '^sam_stand_in_events [0-9]+$' -H "Authorization: bearer $MSECRET" "$BASE2/metrics"
CT=text req "metrics with blanks after the scheme" 200 '^sam_stand_in_events [0-9]+$' -H "Authorization: Bearer   $MSECRET" "$BASE2/metrics"
CT=text req "ingest metrics with the token" 200 '^sam_ingest_requests_total' -H "Authorization: Bearer $MSECRET" \
	"$BASE2/metrics/ingest"
grep -q 'metrics secret set' "$TMP/err2" && pass || fail "the start line does not say the metrics secret is set"
req "healthz needs no token" 200 '^\{"status":"ok","database":"up"\}$' "$BASE2/healthz"
kill -TERM "$PID2"
wait "$PID2"
PID2=""
if grep -qF -- "$MSECRET" "$TMP/out2" "$TMP/err2"; then fail "the metrics secret appears in the daemon's output"; else pass; fi

# --- the database goes away: 503; it comes back: 200, nothing lost
BEFORE=$(psql_value "SELECT count(*) FROM sam.webhook_events")
cluster_stop || fail "pg_ctl stop failed"
DOWN='^\{"error":"database unavailable"\}$'
req "webhook while db down" 503 "$DOWN" -X POST "$WH" -H "Unipile-Auth: $WSECRET" -d "$(new_relation ACoAA-down)"
req "alias while db down" 503 "$DOWN" -X POST "$WHA" -H "Unipile-Auth: $WSECRET" -d "$(new_relation ACoAA-down)"
req "healthz while db down" 503 '^\{"status":"degraded","database":"down"\}$' "$BASE/healthz"
req "cron while db down" 503 "$DOWN" -X POST "$BASE/api/cron/check-relations" -H "x-cron-secret: $CSECRET"
CT=text req "metrics while db down" 200 '^sam_ingest_webhook_rejected_total\{reason="db_unavailable"\} [1-9]' "$BASE/metrics"
req "auth still checked while db down" 401 "$UNAUTH" -X POST "$WH" -d "$P1"
cluster_start || fail "pg_ctl start failed"
req "webhook after restart" 200 '"duplicate": false' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-d "$(new_relation ACoAA-after-restart)"
# every pool thread finds its connection broken and reconnects by itself
for i in $(seq 1 12); do
	req "webhook after restart #$i" 200 '"duplicate": false' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
		-d "$(new_relation "ACoAA-after-restart-$i")"
done
req "redelivery of the 503'd webhook" 200 '"duplicate": false' -X POST "$WH" -H "Unipile-Auth: $WSECRET" \
	-d "$(new_relation ACoAA-down)"
req "healthz after restart" 200 '"database":"up"' "$BASE/healthz"
[ "$(psql_value "SELECT count(*) FROM sam.webhook_events")" = $((BEFORE + 14)) ] && pass ||
	fail "rows after restart: $(psql_value "SELECT count(*) FROM sam.webhook_events"), want $((BEFORE + 14))"

# --- access log: one line per request, no secrets, no bodies
grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z POST /api/webhooks/unipile 200 [0-9.]+ms in=[0-9]+ out=[0-9]+$' "$TMP/err" &&
	pass || fail "no access log line for a webhook"
grep -q 'ECHO-CANARY\|ACoAA-smoke' "$TMP/err" && fail "a body reached the log" || pass

# --- connections that send nothing cannot take every place: at most --per-ip-connections from
# one address (the next is closed at once), each closed after --idle-timeout of silence
idle_fds=()
for i in $(seq 1 24); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
	idle_fds+=("$fd")
done
# healthz_until CODE TRIES: asks /healthz until it answers CODE (000: no answer); the last in $got
healthz_until() {
	local i
	for i in $(seq 1 "$2"); do
		got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/healthz")
		[ "$got" = "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
healthz_until 000 50 && pass || fail "a 25th connection from the address was served while 24 sent nothing ($got)"
healthz_until 200 300 && pass || fail "the silent connections were not closed after the idle timeout ($got)"
for fd in "${idle_fds[@]}"; do exec {fd}<&-; done
grep -q 'connections at most 1000 (24 an address' "$TMP/err" && pass || fail "the limits are not in the start line"

# --- SIGTERM while a request is in flight: it is answered, then exit 0
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE FUNCTION sam.execute_scheduled_campaigns() RETURNS jsonb LANGUAGE sql AS
$$SELECT pg_sleep(1.5); SELECT '{"success":true,"started":0}'::jsonb$$;
GRANT EXECUTE ON FUNCTION sam.execute_scheduled_campaigns() TO sam_ingest;
SQL
curl -sS -o "$TMP/slow" -w '%{http_code}' --max-time 20 -X POST "$BASE/api/cron/execute-scheduled-campaigns" \
	-H "x-cron-secret: $CSECRET" >"$TMP/slow.code" 2>&1 &
CURL_PID=$!
sleep 0.5
kill -TERM "$PID"
wait "$CURL_PID"
[ "$(cat "$TMP/slow.code")" = 200 ] && grep -q '"started": 0' "$TMP/slow" && pass ||
	fail "request in flight at SIGTERM: $(cat "$TMP/slow.code") $(cat "$TMP/slow" 2>/dev/null)"
wait "$PID"
rc=$?
PID=""
[ "$rc" = 0 ] && pass || fail "exit status after SIGTERM: $rc"
grep -q 'sam_ingest: stopped' "$TMP/err" && pass || fail "no 'stopped' line"
[ "$(psql_value "SELECT count(*) FROM pg_stat_activity WHERE usename = 'sam_ingest'")" = 0 ] && pass ||
	fail "database sessions left open after exit"

# --- no secret anywhere in what the daemon printed
for s in "$WSECRET" "$CSECRET"; do
	if grep -qF -- "$s" "$TMP/out" "$TMP/err"; then
		fail "a secret appears in the daemon's output"
	else
		pass
	fi
done
[ "$(wc -l <"$TMP/out")" = 1 ] && pass || fail "stdout is not exactly one line at exit"

if [ "$FAILS" -gt 0 ]; then
	echo "--- sam_ingest stderr (tail)"
	tail -40 "$TMP/err"
	echo "--- server log (tail)"
	tail -20 "$PGTMP/server.log" 2>/dev/null
fi
[ -n "${SMOKE_KEEP_LOG:-}" ] && cp "$TMP/err" "$SMOKE_KEEP_LOG"
echo "ingest smoke: $PASSES passed, $FAILS failed"
[ "$FAILS" -eq 0 ]
