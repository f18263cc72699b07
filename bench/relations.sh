#!/usr/bin/env bash
#
# bench/relations.sh [CONNECTIONS] [NEW]
#     API economy of check_relations(): an account with CONNECTIONS existing
#     LinkedIn connections (default 30000, all older than its invitations)
#     and NEW of its pending invitations accepted since (default 50).
#     sam.check_relations() reads the relations newest first and stops at the
#     oldest pending invitation; the naive way (the seed's) reads every page.
#     Prints pages fetched, acceptances found and the time of each, RUNS times.
#
#     RUNS=3   PG_PORT=21451 MOCK_PORT=21452
#
# bench/relations.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

conns=${1:-30000}
new=${2:-50}
runs=${RUNS:-3}
mock_port=${MOCK_PORT:-21452}
mock_url="http://127.0.0.1:$mock_port"
bench_need_built
bench_cluster_start "${PG_PORT:-21451}" "sam.unipile_dsn = '$mock_url'"
bench_mock_start "$mock_port"

bench_machine
echo "inputs: $conns existing connections, $new accepted invitations among $new pending; page size 100; RUNS=$runs"
echo
printf '%-4s %-22s %8s %10s %10s\n' run method pages accepted ms
for r in $(seq "$runs"); do
	curl -sf -X POST "$mock_url/_mock/reset" >/dev/null
	q -c "TRUNCATE sam.outbox, sam.prospects, sam.campaigns, sam.accounts, sam.job_runs RESTART IDENTITY CASCADE" 2>/dev/null
	q -c "SELECT sam.create_account('bench', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00')" \
	  -c "INSERT INTO sam.campaigns (account_id, name, status) VALUES ('bench', 'bench', 'running')" \
	  -c "INSERT INTO sam.prospects (campaign_id, account_id, provider_id, status, invited_at, follow_up_due_at)
	      SELECT 1, 'bench', 'ACoNEW' || i, 'connection_request_sent', now() - interval '1 hour', now() + interval '2 days'
	        FROM generate_series(1, $new) i" >/dev/null
	now_ms=$(($(date +%s%3N)))
	# the existing connections: a minute apart, the newest 2 hours old (before any invitation)
	curl -sf -X POST "$mock_url/_mock/relations" -H 'Content-Type: application/json' \
		-d "{\"account_id\":\"bench\",\"count\":$conns,\"newest_ms\":$((now_ms - 7200000)),\"spacing_ms\":60000}" >/dev/null
	for i in $(seq "$new"); do
		curl -sf -X POST "$mock_url/_mock/relations" -H 'Content-Type: application/json' \
			-d "{\"account_id\":\"bench\",\"provider_id\":\"ACoNEW$i\",\"created_at\":$((now_ms - 1800000 + i * 1000))}" >/dev/null
	done

	t0=$(date +%s%3N)
	res=$(q -c "SELECT sam.check_relations()")
	t1=$(date +%s%3N)
	pages=$(echo "$res" | sed -n 's/.*"pages_fetched": \([0-9]*\).*/\1/p')
	accepted=$(echo "$res" | sed -n 's/.*"accepted": \([0-9]*\).*/\1/p')
	printf '%-4s %-22s %8s %10s %10s\n' "$r" "sam.check_relations()" "$pages" "$accepted" "$((t1 - t0))"

	# the naive full scan: every page (timed: the fetches), then the pending invitations
	# matched against all of them
	t0=$(date +%s%3N)
	cursor=""
	pages=0
	while :; do
		pages=$((pages + 1))
		curl -sf -o "$BENCH_DIR/page.$pages" "$mock_url/api/v1/users/relations?account_id=bench&limit=100${cursor:+&cursor=$cursor}"
		cursor=$(grep -o '"cursor": *"[^"]*"' "$BENCH_DIR/page.$pages" | cut -d'"' -f4 || true)
		[ -n "$cursor" ] || break
	done
	t1=$(date +%s%3N)
	accepted=$(cat "$BENCH_DIR"/page.* | grep -o '"member_id": *"ACoNEW[0-9]*"' | sort -u | wc -l)
	rm -f "$BENCH_DIR"/page.*
	printf '%-4s %-22s %8s %10s %10s\n' "$r" "naive full scan" "$pages" "$accepted" "$((t1 - t0))"
done
