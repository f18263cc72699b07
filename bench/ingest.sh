#!/usr/bin/env bash
#
# bench/ingest.sh [SECONDS] [PROSPECTS]
#     The webhook ingest (ingest/sam_ingest) in front of the real extension.
#
#     1. Throughput and latency: wrk posts new_relation webhooks (a new
#        delivery each, ingest/test/bench_webhook.lua) for SECONDS (default
#        20) on 8 kept-alive connections; each is stored once and applied
#        (sam.ingest_webhook) before it is answered.  Webhooks/s, p50 and p99,
#        for synchronous_commit on (a WAL flush per webhook) and off.
#     2. Acceptance to connected: PROSPECTS (default 1000) invitations are sent
#        by the worker to the mock, whose people accept 1 to 3 s later; the
#        mock delivers new_relation to the ingest (its delivery thread checks
#        for due events every 100 ms).  Per prospect: connected_at (the
#        ingest's transaction) minus the relation's created_at at the mock
#        (the moment of acceptance).
#
#     RUNS=3  THREADS=4 (sam_ingest --threads)
#     CONNS="8 32"  wrk -c values measured side by side: how many webhooks
#            are in flight at once (the ingest commits those that queue
#            behind its busy workers together, so more of them make larger
#            transactions)
#     BATCHES="1 16"  the ingest's --batch values measured side by side (the
#            ingest is restarted for each; 1: one transaction per webhook)
#     PGSS=1  prints the statements that took the most time
#     PG_PORT=21461 MOCK_PORT=21462 INGEST_PORT=21463
#
# wrk runs on the same 2 cores as the daemon and PostgreSQL; as root it runs
# at nice -10 (as in ingest/test/bench.sh), so that its own wait for a CPU
# is not counted as the server's latency.
#
# bench/ingest.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

secs=${1:-20}
lat_n=${2:-1000}
runs=${RUNS:-3}
threads=${THREADS:-4}
conns_list=${CONNS:-8 32}
mock_port=${MOCK_PORT:-21462}
ingest_port=${INGEST_PORT:-21463}
mock_url="http://127.0.0.1:$mock_port"
ingest_url="http://127.0.0.1:$ingest_port"
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
bench_need_built
make -s -C "$BENCH_ROOT/ingest" >/dev/null

bench_cluster_start "${PG_PORT:-21461}" "sam.unipile_dsn = '$mock_url'" "max_connections = 50"
bench_mock_start "$mock_port"
q -c "SELECT sam.create_account('bench-account', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00',
                                work_end => '00:00', spacing_min => '0', spacing_max => '0')" >/dev/null
batches=${BATCHES:-1 16}
WRK=(wrk)
[ "$(id -u)" = 0 ] && WRK=(nice -n -10 wrk)

bench_machine
echo "inputs: wrk -t1 -c in $conns_list -d${secs}s new_relation webhooks (unmatched: stored and applied), sam_ingest --threads $threads,"
echo "        --batch in $batches, RUNS=$runs; then $lat_n invitations accepted 1-3 s after they are sent, new_relation delivered by the mock"
echo
printf '%-4s %-6s %-6s %-18s %10s %8s %8s %8s %8s %6s\n' run batch conns synchronous_commit webhooks/s p50_ms p90_ms p99_ms errors load
res="$BENCH_DIR/results"
: >"$res"
for batch in $batches; do
[ -z "${INGEST_PID:-}" ] || { kill "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; }
SAM_INGEST_BATCH=$batch bench_ingest_start "$ingest_port"
for conns in $conns_list; do
for sync in on off; do
	q -c "ALTER ROLE sam_ingestd SET synchronous_commit = '$sync'" >/dev/null
	# (each pass tags its payloads with its batch, conns, sync and run: a payload seen in an
	# earlier pass would be a duplicate, stored once and answered without being applied again)
	# connections are opened at start: restart the pool by reconnecting (the daemon reconnects on failure)
	q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'sam_ingestd'" >/dev/null
	SAM_BENCH_RUN="warm-$batch-$conns-$sync-$$" "${WRK[@]}" -t1 -c"$conns" -d2s -s "$BENCH_ROOT/ingest/test/bench_webhook.lua" \
		"$ingest_url/api/webhooks/unipile" >/dev/null
	[ -z "${PGSS:-}" ] || q -c "SELECT pg_stat_statements_reset()" >/dev/null
	for r in $(seq "$runs"); do
		out=$(SAM_BENCH_RUN="run-$batch-$conns-$sync-$r-$$" "${WRK[@]}" -t1 -c"$conns" -d"${secs}s" \
			-s "$BENCH_ROOT/ingest/test/bench_webhook.lua" "$ingest_url/api/webhooks/unipile")
		rate=$(echo "$out" | sed -n 's/^requests: .* = \([0-9]*\) req\/s.*/\1/p')
		errs=$(echo "$out" | sed -n 's/.*non-200: \([0-9]*\); socket errors: \([0-9]*\).*/\1+\2/p')
		read -r p50 p90 p99 <<<"$(echo "$out" | sed -n 's/^latency ms: p50 \([0-9.]*\) *p90 \([0-9.]*\) *p99 \([0-9.]*\).*/\1 \2 \3/p')"
		printf '%-4s %-6s %-6s %-18s %10s %8s %8s %8s %8s %6s\n' "$r" "$batch" "$conns" "$sync" "$rate" "$p50" "$p90" "$p99" "$((errs))" "$(bench_load)"
		echo "$batch:$conns:$sync $rate $p50 $p99" >>"$res"
	done
	bench_top_statements 10 | sed 's/^/    /' >&2
	# batches so far (counters since the ingest started, warm-ups included)
	curl -sf "$ingest_url/metrics" | awk '
		/^sam_ingest_webhook_batches_total\{result="committed"\}/ { b = $2 }
		/^sam_ingest_webhook_batches_total\{result="failed"\}/ { f = $2 }
		/^sam_ingest_webhook_batched_total/ { w = $2 }
		/^sam_ingest_requests_total\{route="\/api\/webhooks\/unipile",code="200"\}/ { t = $2 }
		END { printf "    batches so far: %d committed (%d webhooks, %.1f a batch), %d failed; %d of %d webhooks in batches\n",
		             b, w, b ? w / b : 0, f, w, t }' >&2
done
done
done
q -c "ALTER ROLE sam_ingestd RESET synchronous_commit" >/dev/null
secret=$SAM_BENCH_SECRET		# that of the ingest still running
echo
for batch in $batches; do
	for conns in $conns_list; do
		for sync in on off; do
			k="$batch:$conns:$sync"
			echo "median, --batch $batch, $conns connections, synchronous_commit $sync:" \
				"$(awk -v s=$k '$1 == s {print $2}' "$res" | median) webhooks/s," \
				"p50 $(awk -v s=$k '$1 == s {print $3}' "$res" | median) ms, p99 $(awk -v s=$k '$1 == s {print $4}' "$res" | median) ms"
		done
	done
done
echo "stored webhook events: $(q -c "SELECT count(*) FROM sam.webhook_events")"

# 2. acceptance -> connected, through the mock's real webhook delivery
echo
curl -sf -X POST "$mock_url/_mock/reset" >/dev/null
curl -sf -X POST "$mock_url/api/v1/webhooks" -H 'Content-Type: application/json' \
	-d "{\"source\":\"users\",\"request_url\":\"$ingest_url/api/webhooks/unipile\",\"headers\":[{\"key\":\"Unipile-Auth\",\"value\":\"$secret\"}]}" >/dev/null
people=$(seq "$lat_n" | awk '{ printf "%s{\"provider_id\":\"ACoLAT%d\",\"first_name\":\"P%d\",\"accept_after_s\":%.1f}", (NR > 1 ? "," : "["), $1, $1, 1 + ($1 % 21) / 10 } END { print "]" }')
curl -sf -X POST "$mock_url/_mock/people" -H 'Content-Type: application/json' -d "$people" >/dev/null
q <<-SQL >/dev/null
	INSERT INTO sam.campaigns (account_id, name, status) VALUES ('bench-account', 'latency', 'running');
	INSERT INTO sam.prospects (campaign_id, account_id, provider_id, first_name)
	SELECT (SELECT max(id) FROM sam.campaigns), 'bench-account', 'ACoLAT' || i, 'P' || i FROM generate_series(1, $lat_n) i;
	INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request)
	SELECT 'bench-account', p.campaign_id, p.id, 'invite', 'invite:' || p.id,
	       jsonb_build_object('method', 'POST', 'path', '/api/v1/users/invite',
	           'json', jsonb_build_object('provider_id', p.provider_id, 'account_id', 'bench-account'))
	  FROM sam.prospects p WHERE p.provider_id LIKE 'ACoLAT%';
SQL
for _ in $(seq 120); do
	[ "$(q -c "SELECT count(*) FROM sam.prospects WHERE provider_id LIKE 'ACoLAT%' AND status = 'connected'")" -ge "$lat_n" ] && break
	sleep 0.5
done
# the relations' created_at, from the mock (pages of 1000)
q -c "CREATE TABLE public.bench_relations (page jsonb)" >/dev/null
cursor=""
while :; do
	curl -sf -o "$BENCH_DIR/rel.json" "$mock_url/api/v1/users/relations?account_id=bench-account&limit=1000${cursor:+&cursor=$cursor}"
	tr -d '\n' <"$BENCH_DIR/rel.json" | q -c "\\copy public.bench_relations FROM STDIN"
	cursor=$(grep -o '"cursor": *"[^"]*"' "$BENCH_DIR/rel.json" | cut -d'"' -f4 || true)
	[ -n "$cursor" ] || break
done
q -F ' ' <<-SQL | awk '{ printf "acceptance -> connected: %s of %s connected by webhook; latency ms p50 %s, p90 %s, p99 %s, max %s\n", $1, '"$lat_n"', $2, $3, $4, $5 }'
	SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)), round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)),
	       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), round(max(ms))
	  FROM (SELECT extract(epoch FROM p.connected_at - to_timestamp((r->>'created_at')::numeric / 1000)) * 1000 AS ms
	          FROM public.bench_relations b, jsonb_array_elements(b.page->'items') r
	          JOIN sam.prospects p ON p.provider_id = r->>'member_id'
	         WHERE p.connected_via = 'webhook') s;
SQL
echo "deliveries by the mock: $(curl -sf "$mock_url/_mock/stats" | grep -o '"deliveries": *{[^}]*}')"
