#!/usr/bin/env bash
#
# bench/claim_sql.sh [N] [BATCH]
#     The database's share of a delivered call, without HTTP: N invitations
#     queued in sam.outbox are claimed (sam._claim_requests) and recorded as
#     Unipile's success (sam._complete, 201 and an invitation object) in
#     batches of BATCH, by pgbench, one claim and one record per transaction
#     as the worker does.  Prints the microseconds a call of each statement
#     and of the two together, per run and the median, and how many of the
#     outbox's updates were HOT; before each run, the time of each of a new
#     session's first six claims (rolled back): the plans a worker makes
#     after it starts.
#
#     The worker is pointed at another database (template1), so that it
#     claims nothing: what is timed is the SQL alone, in one session.
#
#     N            invitations per run (default 50000)
#     BATCH        rows per claim and per record (default 1000)
#     RUNS=5       repetitions (median)
#     PG_PORT=21481
#     BENCH_CONF / BENCH_KEEP / PGBIN: as in lib.sh
#
#   sudo bench/claim_sql.sh 50000 1000
#
# bench/claim_sql.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

n=${1:-50000}
batch=${2:-1000}
runs=${RUNS:-5}
[ $((n % batch)) -eq 0 ] || { echo "bench: N must be a multiple of BATCH" >&2; exit 1; }
command -v pgbench >/dev/null || { echo "bench: pgbench is needed (PostgreSQL's bin directory)" >&2; exit 1; }

bench_cluster_start "${PG_PORT:-21481}" "sam.database_name = 'template1'"
q -c "SELECT sam.create_account('bench', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                                spacing_min => '0', spacing_max => '0')" >/dev/null

# one transaction of pgbench: claim a batch, then record it as the worker would
script="$BENCH_DIR/round.pgb"
cat >"$script" <<'PGB'
SELECT array_to_string(array_agg(id), ',') AS ids FROM sam._claim_requests(:b) \gset
SELECT sam._complete(string_to_array(':ids', ',')::bigint[], array_fill(201, ARRAY[:b]), array_fill('{"object": "UserInvitationSent", "invitation_id": "inv1"}'::text, ARRAY[:b]), array_fill(NULL::text, ARRAY[:b]), array_fill(1.5::float8, ARRAY[:b]));
PGB
chmod 644 "$script"

bench_machine
echo "inputs: N=$n invitations a run, claimed and recorded in batches of $batch by pgbench (one session), RUNS=$runs"
echo
printf '%-4s %12s %12s %12s %10s %8s %6s\n' run claim_us complete_us total_us hot_share left load

results="$BENCH_DIR/results"
: >"$results"
for r in $(seq "$runs"); do
	bench_queue_invitations "$n" "sam.now() - interval '1 minute'"
	# a new session's first claims (the plans a worker makes after it starts), rolled back; in one
	# transaction, so each also passes the rows the earlier ones took (a worker commits each)
	probe=(-c '\timing on' -c BEGIN)
	for _ in 1 2 3 4 5 6; do probe+=(-c "SELECT count(*) FROM sam._claim_requests($batch)"); done
	first=$(q "${probe[@]}" -c ROLLBACK | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | sed -n '2,7p' | awk '{ printf "%.1f ", $1 }')
	echo "     first claims of a new session: $first(ms each)"
	read -r u0 h0 <<<"$(q -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'sam.outbox'::regclass")"
	out=$(pgbench -h "$BENCH_DIR" -p "$BENCH_PGPORT" -U postgres -n -r -D b="$batch" -t $((n / batch)) -c 1 -f "$script" postgres 2>&1) ||
		{ echo "$out" >&2; exit 1; }
	# pgbench's per-statement latencies are in ms per transaction (one batch)
	claim=$(echo "$out" | awk -v b="$batch" '/sam._claim_requests/ { printf "%.1f", $1 * 1000 / b }')
	complete=$(echo "$out" | awk -v b="$batch" '/sam._complete/ { printf "%.1f", $1 * 1000 / b }')
	# the statistics collector reports a backend's counts when it goes idle: wait for them
	for _ in $(seq 1 50); do
		read -r u1 h1 <<<"$(q -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'sam.outbox'::regclass")"
		[ "$((u1 - u0))" -ge "$((2 * n))" ] && break
		sleep 0.1
	done
	left=$(q -c "SELECT count(*) FROM sam.outbox WHERE state <> 'done'")
	total=$(echo "$claim $complete" | awk '{ printf "%.1f", $1 + $2 }')
	hot=$(echo "$u0 $h0 $u1 $h1" | awk '{ d = $3 - $1; printf "%.2f", (d > 0 ? ($4 - $2) / d : 0) }')
	printf '%-4s %12s %12s %12s %10s %8s %6s\n' "$r" "$claim" "$complete" "$total" "$hot" "$left" "$(bench_load)"
	echo "$claim $complete $total" >>"$results"
done

echo
echo "medians over $runs runs (microseconds a call):"
echo "claim $(awk '{ print $1 }' "$results" | median), complete $(awk '{ print $2 }' "$results" | median), total $(awk '{ print $3 }' "$results" | median)"
