#!/usr/bin/env bash
#
# bench/delivery.sh [N]
#     Delivery throughput of the sam_ext worker, end to end, beside three
#     references measured against the same mock in the same run:
#
#       wrk          the mock's own ceiling (wrk, keep-alive, POST invitations)
#       curl_multi   a bare libcurl-multi client, no database (bench/curl_multi.c):
#                    the transport's ceiling on this machine
#       sequential   one blocking request at a time (bench/sequential.c), as the
#                    original Netlify function sent invitations
#       worker       N invitations queued in sam.outbox, released in one commit,
#                    drained by the worker: claimed -> committed in_flight -> HTTP
#                    -> result recorded (outbox done, prospect connection_request_sent)
#
#     The worker runs once per sam.max_concurrency:sam.batch_size setting
#     (CONFIGS), so the table shows how the rate moves with them; a third
#     field sets sam.workers (worker processes, each with that concurrency
#     and batch size; the cluster restarts when it changes).  Each
#     measurement is repeated RUNS times; the summary gives medians and the
#     worker's rate as a share of curl_multi's, both measured in the same run.
#     Below each worker line: the CPU a call of the mock and of the cluster's
#     background processes, and how busy the whole machine was (cores) while
#     the worker drained the queue: where the cores went.
#
#     N            invitations per worker run (default 100000)
#     RUNS=3       repetitions
#     CONFIGS="16:100 64:200 128:500 256:1000"   concurrency:batch[:workers] settings
#     REF_CONC=64  concurrency of curl_multi and wrk (-c)
#     SEQ_N        requests of the sequential client (default min(N, 20000))
#     WRK_SECONDS=5
#     PG_PORT=21431 MOCK_PORT=21432   (ports below 32768)
#     PGBIN / PG_CONFIG: which PostgreSQL (sam_ext installed there)
#     STALE_STATS=1  no ANALYZE with the release (the planner then believes nothing is due)
#     PGSS=1       prints the statements that took the most time in each worker run
#     PERF_OUT=/tmp/w.perf  records the worker with perf during each worker
#                  run (perf report -i /tmp/w.perf.CONC.BATCH.WORKERS)
#     PERF_ARGS="-F 499 --call-graph dwarf,16384"  perf record's options (default
#                  "-F 999 -g"; libcurl and libc have no frame pointers, so only
#                  dwarf call graphs attribute their time to a caller)
#     SYSCALLS=1   prints the worker's system calls per call of each worker run
#                  (perf stat of its sendto, recvfrom, poll, epoll and write tracepoints)
#
#   sudo bench/delivery.sh 100000      (as root: the cluster runs as postgres)
#
# bench/delivery.sh

set -euo pipefail
. "$(dirname "$0")/lib.sh"

n=${1:-100000}
runs=${RUNS:-3}
configs=${CONFIGS:-"16:100 64:200 128:500 256:1000"}
ref_conc=${REF_CONC:-64}
seq_n=${SEQ_N:-$((n < 20000 ? n : 20000))}
wrk_s=${WRK_SECONDS:-5}
pg_port=${PG_PORT:-21431}
mock_port=${MOCK_PORT:-21432}
mock_url="http://127.0.0.1:$mock_port"
command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install -y wrk)" >&2; exit 1; }
bench_need_built

bench_cluster_start "$pg_port" "sam.unipile_dsn = '$mock_url'"
bench_mock_start "$mock_port"
q -c "SELECT sam.create_account('bench', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00',
                                spacing_min => '0', spacing_max => '0')" >/dev/null
wpid=$(bench_worker_pid)	# the worker processes' pids, comma-separated
workers=1

# cpu_s PIDS: user + system CPU seconds so far of the processes (comma-separated pids)
cpu_s() {
	local f=()
	IFS=, read -ra f <<<"$1"
	(for p in "${f[@]}"; do cat "/proc/$p/stat"; done) |
		awk -v hz="$(getconf CLK_TCK)" '{ s += $14 + $15 } END { print s / hz }'
}

# busy_s: CPU seconds the whole machine has spent busy so far (all cores; /proc/stat)
busy_s() {
	awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

# others_pids: the cluster's long-lived processes other than the workers (the postmaster,
# checkpointer, background writer, WAL writer, launchers; comma-separated).  Short-lived ones
# (autovacuum workers, the benchmark's own sessions) only show in the machine's busy time.
others_pids() {
	local pm others
	pm=$(head -n 1 "$BENCH_DIR/data/postmaster.pid")
	others=$(q -c "SELECT string_agg(pid::text, ',') FROM pg_stat_get_activity(NULL)
	               WHERE backend_type IN ('checkpointer', 'background writer', 'walwriter', 'autovacuum launcher',
	                                      'logical replication launcher', 'pg_cron launcher')")
	[ -n "$pm" ] && [ -n "$others" ] || { echo "bench: the cluster's background processes not found" >&2; exit 1; }
	echo "$pm,$others"
}

# worker_run CONC BATCH: queue N invitations (not yet due), release them in
# one commit, wait until none is queued or in flight; prints
# "seconds calls/s errors worker_cpu_us_per_call mock_cpu_us_per_call
#  others_cpu_us_per_call machine_busy_cores"
worker_run() {
	local conc=$1 batch=$2 start end c0 c1 m0 m1 o0 o1 b0 b1 t0 t1 opids
	bench_set sam.max_concurrency "$conc" sam.batch_size "$batch"
	bench_queue_invitations "$n" "sam.now() + interval '1 day'"
	[ -z "${PGSS:-}" ] || q -c "SELECT pg_stat_statements_reset()" >/dev/null
	opids=$(others_pids) || return 1
	c0=$(cpu_s "$wpid")
	if [ -n "${PERF_OUT:-}" ]; then
		perf record ${PERF_ARGS:--F 999 -g} -o "$PERF_OUT.$conc.$batch.$workers" -p "$wpid" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	if [ -n "${SYSCALLS:-}" ]; then
		perf stat -x, -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_poll,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync' \
			-o "$BENCH_DIR/syscalls" -p "$wpid" >/dev/null 2>&1 &
		stat_pid=$!
	fi
	# start: the release commits (clock_timestamp() just before COMMIT); end: the last result
	# recorded (max(finished_at), the recording transaction's time).  Polled from the shell: a
	# waiting loop inside the server would hold back the xmin horizon, and then no dead index
	# entry could be skipped (the claims would slow down for the benchmark only).
	# The release analyzes the outbox in its transaction, so that the worker's plans see the
	# rows as due (STALE_STATS=1: statistics from before the release, when nothing was due).
	start=$(q -c "BEGIN" -c "UPDATE sam.outbox SET not_before = sam.now()" \
	          -c "$([ -n "${STALE_STATS:-}" ] && echo "SET LOCAL work_mem = '4MB'" || echo "ANALYZE sam.outbox, sam.prospects")" \
	          -c "SELECT extract(epoch FROM clock_timestamp())" -c "COMMIT")
	# the others from here on: the release's own backend (its UPDATE and ANALYZE) is not theirs
	m0=$(cpu_s "$BENCH_MOCK_PID")
	o0=$(cpu_s "$opids")
	b0=$(busy_s)
	t0=$(date +%s.%N)
	# First the mock's count of requests (a GET to the mock, nothing for the database), until
	# it reaches N or stops moving for a second (retries, errors); only then the outbox, which
	# has at most the last batch in flight by then.  Polling the outbox all along cost ~0.1 s
	# of a core a poll at 100,000 rows, taken from the 2 cores the worker and the mock share.
	# (a count that stays 0 for 30 s, or stops moving for 1 s once started, ends the wait too)
	prev=-1 still=0
	while :; do
		got=$(curl -sf --max-time 5 "$mock_url/_mock/stats" | grep -o '"requests": *[0-9]*' | grep -o '[0-9]*$' || true)
		got=${got:-0}
		[ "$got" -ge "$n" ] && break
		if [ "$got" = "$prev" ]; then
			still=$((still + 1))
			[ "$got" -gt 0 ] && [ "$still" -ge 10 ] && break
			[ "$still" -ge 300 ] && break
		else
			still=0
		fi
		prev=$got
		sleep 0.1
	done
	while [ "$(q -c "$not_drained")" = t ]; do
		sleep 0.1
	done
	end=$(q -c "SELECT extract(epoch FROM max(finished_at)) FROM sam.outbox")
	c1=$(cpu_s "$wpid")
	m1=$(cpu_s "$BENCH_MOCK_PID")
	o1=$(cpu_s "$opids")
	b1=$(busy_s)
	t1=$(date +%s.%N)
	if [ -n "${PERF_OUT:-}" ]; then
		kill -INT "$perf_pid"
		wait "$perf_pid" || true
	fi
	if [ -n "${SYSCALLS:-}" ]; then
		kill -INT "$stat_pid"
		wait "$stat_pid" || true
		awk -F, -v n="$n" '$3 ~ /sys_enter_/ { sub(/.*sys_enter_/, "", $3); printf "%s %.2f  ", $3, $1 / n }
			END { print "(system calls a call)" }' "$BENCH_DIR/syscalls" | sed 's/^/    /' >&2
	fi
	errors=$(q -c "SELECT count(*) FROM sam.outbox WHERE state <> 'done'")
	awk -v s="$start" -v e="$end" -v n="$n" -v err="$errors" -v c0="$c0" -v c1="$c1" \
		-v m0="$m0" -v m1="$m1" -v o0="$o0" -v o1="$o1" -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" \
		'BEGIN { printf "%.3f %.0f %d %.0f %.0f %.0f %.2f\n", e - s, n / (e - s), err, (c1 - c0) * 1e6 / n,
		         (m1 - m0) * 1e6 / n, (o1 - o0) * 1e6 / n, (b1 - b0) / (t1 - t0) }'
}

bench_machine
echo "inputs: N=$n invitations per worker run, RUNS=$runs, CONFIGS=\"$configs\" (sam.max_concurrency:sam.batch_size[:sam.workers]),"
echo "        curl_multi: N requests at concurrency $ref_conc; wrk -t2 -c$ref_conc -d${wrk_s}s; sequential: $seq_n requests;"
echo "        mock_unipile --threads ${MOCK_THREADS:-2} --no-log --quiet on 127.0.0.1:$mock_port; synchronous_commit on"
echo
printf '%-4s %-12s %10s %10s %8s %10s %8s %6s\n' run client rate/s seconds errors cpu_us/call ratio load
res="$BENCH_DIR/results"
: >"$res"
for r in $(seq "$runs"); do
	curl -s -X POST "$mock_url/_mock/reset" >/dev/null
	line=$(BENCH_TAG="w$r$$" wrk -t2 -c"$ref_conc" -d"${wrk_s}s" -s "$BENCH_ROOT/bench/wrk_invite.lua" "$mock_url" | grep '^wrk:')
	wrk_rate=$(echo "$line" | sed -n 's/.* = \([0-9]*\) req\/s.*/\1/p')
	wrk_err=$(echo "$line" | sed -n 's/.*non-2xx \([0-9]*\), socket errors \([0-9]*\).*/\1+\2/p')
	printf '%-4s %-12s %10s %10s %8s %10s %8s %6s\n' "$r" wrk "$wrk_rate" "$wrk_s" "$((wrk_err))" - - "$(bench_load)"
	echo "$r wrk $wrk_rate" >>"$res"

	curl -s -X POST "$mock_url/_mock/reset" >/dev/null
	line=$("$BENCH_ROOT/bench/curl_multi" "$mock_url" "$n" "$ref_conc" "m$r$$" || true)
	cm_rate=$(echo "$line" | sed -n 's/.* = \([0-9]*\) req\/s.*/\1/p')
	cm_s=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
	cm_err=$(echo "$line" | sed -n 's/.*other \([0-9]*\), errors \([0-9]*\).*/\1+\2/p')
	printf '%-4s %-12s %10s %10s %8s %10s %8s %6s\n' "$r" curl_multi "$cm_rate" "$cm_s" "$((cm_err))" - 1.00 "$(bench_load)"
	echo "$r curl_multi $cm_rate" >>"$res"

	line=$("$BENCH_ROOT/bench/sequential" "$mock_url" "$seq_n" "s$r$$" || true)
	sq_rate=$(echo "$line" | sed -n 's/.* = \([0-9]*\) req\/s.*/\1/p')
	sq_s=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s .*/\1/p')
	sq_err=$(echo "$line" | sed -n 's/.*other \([0-9]*\), errors \([0-9]*\).*/\1+\2/p')
	printf '%-4s %-12s %10s %10s %8s %10s %8.2f %6s\n' "$r" sequential "$sq_rate" "$sq_s" "$((sq_err))" - \
		"$(echo "$sq_rate $cm_rate" | awk '{print $1 / $2}')" "$(bench_load)"
	echo "$r sequential $sq_rate $(echo "$sq_rate $cm_rate" | awk '{print $1 / $2}')" >>"$res"

	for c in $configs; do
		IFS=: read -r conc batch nw <<<"$c"
		nw=${nw:-1}
		if [ "$nw" != "$workers" ]; then
			wpid=$(bench_set_workers "$nw")
			workers=$nw
		fi
		curl -s -X POST "$mock_url/_mock/reset" >/dev/null
		read -r secs rate errs cpu mcpu ocpu busy <<<"$(worker_run "$conc" "$batch")"
		# set -e does not reach inside $(...): a run that failed prints less than its seven fields
		[ -n "$busy" ] || { echo "bench: the worker run $c failed" >&2; exit 1; }
		printf '%-4s %-12s %10s %10s %8s %10s %8.2f %6s\n' "$r" "worker $c" "$rate" "$secs" "$errs" "$cpu" \
			"$(echo "$rate $cm_rate" | awk '{print $1 / $2}')" "$(bench_load)"
		echo "     cpu µs a call: mock $mcpu, the cluster's background processes $ocpu; machine busy $busy of $(nproc) cores"
		bench_top_statements | sed 's/^/    /'
		echo "$r worker_$c $rate $(echo "$rate $cm_rate" | awk '{print $1 / $2}') $errs" >>"$res"
	done
done

echo
echo "medians over $runs runs (ratio: worker / curl_multi of the same run):"
printf '%-16s %10s %8s %8s\n' client rate/s ratio errors
for client in wrk curl_multi sequential $(for c in $configs; do echo "worker_$c"; done); do
	rate=$(awk -v c="$client" '$2 == c {print $3}' "$res" | median)
	ratio=$(awk -v c="$client" '$2 == c && NF >= 4 {print $4}' "$res" | median)
	[ "$client" = curl_multi ] && ratio=1
	errs=$(awk -v c="$client" '$2 == c && NF >= 5 {s += $5} END {print s + 0}' "$res")
	printf '%-16s %10.0f %8s %8s\n' "$client" "$rate" "$([ "$ratio" = nan ] && echo - || printf '%.2f' "$ratio")" "$errs"
done
