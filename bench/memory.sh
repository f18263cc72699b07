#!/usr/bin/env bash
#
# bench/memory.sh [REQUESTS]
#     Memory of the two long-running processes over REQUESTS requests each
#     (default 1000000):
#
#       worker   REQUESTS invitations through the sam_ext worker against the
#                mock, in rounds of 100,000 (queued, released, drained);
#                its memory is read after each round
#       ingest   REQUESTS new_relation webhooks posted to sam_ingest by wrk
#                (in rounds of about 100,000); its memory is read after each
#
#     The growth is measured from the end of the first round (warm: caches,
#     plans, connection pools are built) to the end of the last.  For the
#     worker, a PostgreSQL backend, RSS counts the shared buffers it has
#     touched; RssAnon (its private memory) is the figure that tells a leak.
#
#     CONFIG=128:500 (sam.max_concurrency:sam.batch_size of the worker)
#     PG_PORT=21471 MOCK_PORT=21472 INGEST_PORT=21473
#
# bench/memory.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

total=${1:-1000000}
round=100000
[ "$total" -lt "$round" ] && round=$total
rounds=$(((total + round - 1) / round))
config=${CONFIG:-128:500}
mock_port=${MOCK_PORT:-21472}
ingest_port=${INGEST_PORT:-21473}
mock_url="http://127.0.0.1:$mock_port"
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
bench_need_built
make -s -C "$BENCH_ROOT/ingest" >/dev/null

bench_cluster_start "${PG_PORT:-21471}" "sam.unipile_dsn = '$mock_url'" \
	"sam.max_concurrency = ${config%%:*}" "sam.batch_size = ${config##*:}" "shared_buffers = '256MB'"
bench_mock_start "$mock_port"
q -c "SELECT sam.create_account('bench-account', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                                spacing_min => '0', spacing_max => '0')" \
  -c "INSERT INTO sam.campaigns (account_id, name, status) VALUES ('bench-account', 'memory', 'running')" >/dev/null
wpid=$(bench_worker_pid)

# mem PID: "RSS RssAnon" in kB
mem() {
	awk '/^VmRSS/ {r = $2} /^RssAnon/ {a = $2} END {print r, a}' "/proc/$1/status"
}

bench_machine
echo "inputs: $total requests for each process, in $rounds rounds; worker at $config; sam_ingest --threads 4, wrk -t1 -c8"
echo
printf '%-8s %6s %12s %10s %12s\n' process round requests rss_kb rss_anon_kb
sent=0
for r in $(seq "$rounds"); do
	curl -sf -X POST "$mock_url/_mock/reset" >/dev/null
	q <<-SQL >/dev/null
		TRUNCATE sam.outbox, sam.prospects;
		INSERT INTO sam.prospects (campaign_id, account_id, provider_id)
		SELECT (SELECT max(id) FROM sam.campaigns), 'bench-account', 'ACoM' || $r || '_' || i FROM generate_series(1, $round) i;
		INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, not_before)
		SELECT 'bench-account', p.campaign_id, p.id, 'invite', 'invite:' || p.id,
		       jsonb_build_object('method', 'POST', 'path', '/api/v1/users/invite',
		           'json', jsonb_build_object('provider_id', p.provider_id, 'account_id', 'bench-account', 'message', 'Hello there')),
		       now() + interval '1 day'
		  FROM sam.prospects p;
		VACUUM ANALYZE sam.outbox;
		VACUUM ANALYZE sam.prospects;
	SQL
	q -c "BEGIN" -c "UPDATE sam.outbox SET not_before = sam.now()" -c "ANALYZE sam.outbox, sam.prospects" -c "COMMIT" >/dev/null
	while [ "$(q -c "$not_drained")" = t ]; do
		sleep 0.5
	done
	sent=$((sent + round))
	read -r rss anon <<<"$(mem "$wpid")"
	printf '%-8s %6s %12s %10s %12s\n' worker "$r" "$sent" "$rss" "$anon"
	echo "worker $r $rss $anon" >>"$BENCH_DIR/mem"
done
echo "worker: outbox rows not done in the last round: $(q -c "SELECT count(*) FROM sam.outbox WHERE state <> 'done'")"

bench_ingest_start "$ingest_port"
ipid=$INGEST_PID
q -c "ALTER ROLE sam_ingest SET synchronous_commit = off" >/dev/null
q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'sam_ingestd'" >/dev/null
sent=0
r=0
secs=20
while [ "$sent" -lt "$total" ]; do
	r=$((r + 1))
	out=$(SAM_BENCH_RUN="mem-$r-$$" wrk -t1 -c8 -d"${secs}s" -s "$BENCH_ROOT/ingest/test/bench_webhook.lua" \
		"http://127.0.0.1:$ingest_port/api/webhooks/unipile")
	n=$(echo "$out" | sed -n 's/^requests: \([0-9]*\) in.*/\1/p')
	sent=$((sent + n))
	# rounds of about 100,000 requests at the rate just seen
	secs=$(awk -v n="$n" -v s="$secs" 'BEGIN { t = int(100000 / (n / s)) + 1; print (t < 5 ? 5 : t) }')
	read -r rss anon <<<"$(mem "$ipid")"
	printf '%-8s %6s %12s %10s %12s\n' ingest "$r" "$sent" "$rss" "$anon"
	echo "ingest $r $rss $anon" >>"$BENCH_DIR/mem"
done

echo
for p in worker ingest; do
	awk -v p=$p '$1 == p { if (!f) { r0 = $3; a0 = $4; f = 1 } r1 = $3; a1 = $4 }
		END { printf "%s: growth from the end of round 1 to the end: RSS %+d kB, RssAnon %+d kB (target: under 5 MB)\n", p, r1 - r0, a1 - a0 }' \
		"$BENCH_DIR/mem"
done
