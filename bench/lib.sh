# bench/lib.sh
#     Shell functions shared by the benchmarks of bench/: where PostgreSQL's
#     binaries are, the machine line every benchmark prints, a throw-away
#     cluster preloaded with pg_cron and sam_ext, the mock Unipile server,
#     medians.  Source it from a benchmark script; it sets a trap that
#     removes everything it started.
#
#     PGBIN        PostgreSQL's bin directory (default: PG_CONFIG's, or
#                  pg_config's on PATH, --bindir).  sam_ext must be
#                  installed in that installation (make install).
#     PGSS=1       preloads pg_stat_statements (track = all: statements inside
#                  the SQL functions too); bench_top_statements prints them
#     BENCH_KEEP=1 keeps the temporary directory (logs) after the run.
#     BENCH_CONF='lines' are added to the cluster's postgresql.conf, e.g.
#     "session_preload_libraries = 'auto_explain'" and its settings, to read
#     the plans of the statements inside the jobs in $BENCH_DIR/pg.log.
#
#     PostgreSQL refuses to run as root: as root, the cluster runs as the
#     "postgres" user and its directory is theirs.
#
# bench/lib.sh

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PGBIN:-}" ]; then
	PGBIN=$("${PG_CONFIG:-pg_config}" --bindir) || { echo "bench: no pg_config; set PGBIN" >&2; exit 1; }
fi
export PATH="$PGBIN:$PATH"
BENCH_DIR=$(mktemp -d /tmp/sam_bench.XXXXXX)
chmod 755 "$BENCH_DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$BENCH_DIR"
BENCH_PIDS=()
BENCH_PGPORT=""

# as_pg runs a command as the cluster's owner
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}

# bench_cleanup runs at exit, also after a failure: nothing in it may stop it
# halfway (set -e applies inside a trap too)
bench_cleanup() {
	local pid
	for pid in "${BENCH_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	if [ -f "$BENCH_DIR/data/postmaster.pid" ]; then
		as_pg pg_ctl -D "$BENCH_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ -n "${BENCH_KEEP:-}" ]; then
		echo "bench: kept $BENCH_DIR" >&2
	else
		rm -rf "$BENCH_DIR"
	fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# bench_machine prints the machine line: cores, memory, load, PostgreSQL
bench_machine() {
	echo "machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, load average $(cut -d' ' -f1-3 /proc/loadavg); $(uname -sr); PostgreSQL $(pg_ctl --version | awk '{print $3}')"
}

# bench_load prints the 1-minute load average (to note it beside each run)
bench_load() {
	cut -d' ' -f1 /proc/loadavg
}

# bench_cluster_start PORT [postgresql.conf lines...]: initdb and start a
# cluster preloaded with pg_cron and sam_ext, reachable on a Unix socket in
# BENCH_DIR only; the database "postgres" has the extension
bench_cluster_start() {
	local line
	BENCH_PGPORT=$1
	shift
	as_pg initdb -D "$BENCH_DIR/data" -A trust -U postgres -E UTF8 --locale=C --no-sync >"$BENCH_DIR/initdb.log" 2>&1 ||
		{ cat "$BENCH_DIR/initdb.log" >&2; exit 1; }
	{
		echo "port = $BENCH_PGPORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$BENCH_DIR'"
		if [ -n "${PGSS:-}" ]; then
			echo "shared_preload_libraries = 'pg_cron,sam_ext,pg_stat_statements'"
			echo "pg_stat_statements.track = all"
		else
			echo "shared_preload_libraries = 'pg_cron,sam_ext'"
		fi
		echo "shared_buffers = '1GB'"
		echo "max_wal_size = '4GB'"
		echo "checkpoint_timeout = '30min'"
		echo "log_min_messages = warning"
		for line in "$@"; do echo "$line"; done
		[ -z "${BENCH_CONF:-}" ] || printf '%s\n' "$BENCH_CONF"
	} | as_pg tee -a "$BENCH_DIR/data/postgresql.conf" >/dev/null
	as_pg pg_ctl -D "$BENCH_DIR/data" -l "$BENCH_DIR/pg.log" -w -t 60 start >/dev/null ||
		{ cat "$BENCH_DIR/pg.log" >&2; exit 1; }
	q -c "CREATE EXTENSION sam_ext" >/dev/null
	[ -z "${PGSS:-}" ] || q -c "CREATE EXTENSION pg_stat_statements" >/dev/null
}

# not_drained: true while the outbox holds work, through its partial indexes (one test
# of the three states is a sequential scan of the whole outbox, ~50 ms at 100,000 rows
# every 0.2 s, taken from the CPU the worker is measured on)
not_drained="SET enable_seqscan = off; SELECT EXISTS (SELECT 1 FROM sam.outbox WHERE state IN ('queued', 'failed'))
                 OR EXISTS (SELECT 1 FROM sam.outbox WHERE state = 'in_flight')"

# bench_top_statements [N]: with PGSS=1, the N statements that took the most
# time since the last call (then resets the counters)
bench_top_statements() {
	[ -n "${PGSS:-}" ] || return 0
	q -F ' | ' -c "SELECT round(total_exec_time)::bigint AS ms, calls, round((total_exec_time / calls)::numeric, 3) AS ms_per_call,
	                      rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
	                 FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT ${1:-15}"
	q -c "SELECT pg_stat_statements_reset()" >/dev/null
}

# q runs psql on the benchmark's cluster (unaligned, tuples only, stops at the first error)
q() {
	psql -h "$BENCH_DIR" -p "$BENCH_PGPORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"
}

# bench_set NAME VALUE...: ALTER SYSTEM SET for each pair, then reload
bench_set() {
	local args=()
	while [ $# -ge 2 ]; do
		args+=(-c "ALTER SYSTEM SET $1 = '$2'")
		shift 2
	done
	q "${args[@]}" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 0.3
}

# bench_mock_start PORT: starts the mock Unipile server (no request log,
# quiet, 2 threads) and waits until it listens
bench_mock_start() {
	local port=$1
	"$BENCH_ROOT/test/mock_unipile" --port "$port" --no-log --quiet --threads "${MOCK_THREADS:-2}" \
		>"$BENCH_DIR/mock.out" 2>"$BENCH_DIR/mock.err" &
	BENCH_PIDS+=($!)
	BENCH_MOCK_PID=$!
	for _ in $(seq 100); do
		grep -q listening "$BENCH_DIR/mock.out" && return 0
		sleep 0.1
	done
	echo "bench: the mock did not start" >&2
	cat "$BENCH_DIR/mock.err" >&2
	exit 1
}

# bench_ingest_start PORT: creates the ingest's role (it may only call
# sam.ingest_webhook), starts ingest/sam_ingest --threads ${THREADS:-4} --per-ip-connections 0 (wrk is one address) on
# PORT with a fresh webhook secret (exported as SAM_BENCH_SECRET, as
# ingest/test/bench_webhook.lua wants it) and waits until it listens; sets
# INGEST_PID.  SAM_INGEST_BATCH in the environment sets its --batch.
bench_ingest_start() {
	local port=$1
	q <<-SQL >/dev/null
		DO \$\$ BEGIN
		    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sam_ingestd') THEN
		        CREATE ROLE sam_ingestd LOGIN IN ROLE sam_ingest;
		    END IF;
		END \$\$;
	SQL
	SAM_BENCH_SECRET="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	export SAM_BENCH_SECRET
	SAM_INGEST_DATABASE_URL="host=$BENCH_DIR port=$BENCH_PGPORT dbname=postgres user=sam_ingestd" \
		SAM_WEBHOOK_SECRET="$SAM_BENCH_SECRET" \
		"$BENCH_ROOT/ingest/sam_ingest" --port "$port" --threads "${THREADS:-4}" --per-ip-connections 0 >"$BENCH_DIR/ingest.out" 2>"$BENCH_DIR/ingest.log" &
	BENCH_PIDS+=($!)
	INGEST_PID=$!
	for _ in $(seq 100); do
		grep -q 'listening on' "$BENCH_DIR/ingest.out" && return 0
		sleep 0.1
	done
	echo "bench: the ingest did not start" >&2
	cat "$BENCH_DIR/ingest.log" >&2
	exit 1
}

# bench_queue_invitations N NOT_BEFORE: empties the outbox, the prospects and the
# campaigns, then queues N invitations of the account "bench" (one running campaign,
# a prospect each) at NOT_BEFORE (an SQL expression), vacuumed, analyzed and
# checkpointed: the input of delivery.sh and claim_sql.sh
bench_queue_invitations() {
	q -c "TRUNCATE sam.outbox, sam.prospects, sam.campaigns" \
	  -c "INSERT INTO sam.campaigns (account_id, name, status) VALUES ('bench', 'bench', 'running')" \
	  -c "INSERT INTO sam.prospects (campaign_id, account_id, provider_id)
	      SELECT (SELECT max(id) FROM sam.campaigns), 'bench', 'ACoB' || i || '_' || extract(epoch FROM clock_timestamp())::bigint
	        FROM generate_series(1, $1) i" \
	  -c "INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, not_before)
	      SELECT 'bench', p.campaign_id, p.id, 'invite', 'invite:' || p.id,
	             jsonb_build_object('method', 'POST', 'path', '/api/v1/users/invite',
	                 'json', jsonb_build_object('provider_id', p.provider_id, 'account_id', 'bench', 'message', 'Hello there')),
	             $2
	        FROM sam.prospects p" \
	  -c "VACUUM ANALYZE sam.outbox" -c "VACUUM ANALYZE sam.prospects" -c "CHECKPOINT" >/dev/null
}

# bench_worker_pid prints the pid of the sam_ext worker, once it serves the
# database (it reports its pid after reconciling the rows left in flight)
bench_worker_pid() {
	local pid i
	for i in $(seq 1 300); do
		pid=$(q -c "SELECT sam.worker_pid()")
		[ -n "$pid" ] && { echo "$pid"; return 0; }
		sleep 0.1
	done
	echo "bench: the sam_ext worker did not start" >&2
	exit 1
}

# bench_set_workers W: sam.workers = W (a restart), then waits until all W
# serve the database; prints their pids, comma-separated
bench_set_workers() {
	local pids i
	q -c "ALTER SYSTEM SET sam.workers = '$1'" >/dev/null
	as_pg pg_ctl -D "$BENCH_DIR/data" -l "$BENCH_DIR/pg.log" -w -t 60 restart >/dev/null ||
		{ cat "$BENCH_DIR/pg.log" >&2; exit 1; }
	for i in $(seq 1 300); do
		pids=$(q -c "SELECT string_agg(pid::text, ',' ORDER BY worker) FROM sam.workers()
		             HAVING count(*) FILTER (WHERE ready) = $1")
		[ -n "$pids" ] && { echo "$pids"; return 0; }
		sleep 0.1
	done
	echo "bench: $1 sam_ext workers did not start" >&2
	exit 1
}

# rss_kb PID prints the resident set size of a process, in kB
rss_kb() {
	awk '/^VmRSS/ {print $2}' "/proc/$1/status"
}

# median reads numbers, one a line, and prints their median
median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# bench_need_built: the mock and the bench clients must be built
bench_need_built() {
	make -s -C "$BENCH_ROOT/test" >/dev/null || exit 1
	make -s -C "$BENCH_ROOT/bench" >/dev/null || exit 1
}
