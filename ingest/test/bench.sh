#!/usr/bin/env bash
#
# bench.sh
#     Webhook throughput benchmark of ingest/sam_ingest on loopback against
#     a throw-away PostgreSQL cluster loaded with stand_in.sql: wrk posts
#     new_relation webhooks (a new row each, bench_webhook.lua) for a while,
#     the daemon's RSS is sampled every second, the stored rows are counted
#     against the answered requests, and the daemon is stopped with SIGTERM.
#
# Usage: ingest/test/bench.sh
#   BENCH_DURATION=30      seconds of measured load (after a 3 s warm-up)
#   BENCH_CONNS=8          wrk connections (keep-alive)
#   BENCH_THREADS=4        sam_ingest --threads
#   BENCH_SYNC_COMMIT=on   synchronous_commit of the ingest's role: "on"
#                          waits for the WAL flush of every webhook (the
#                          disk's fsync rate is then the ceiling); "off" is
#                          what the README discusses as the fast option
#   BENCH_ACCESS_LOG=file  where the access log goes (default: a temp file)
#
# wrk runs on the same 2 cores as the daemon and Postgres: as root it runs
# at nice -10, so that its own wait for a CPU is not counted as the
# server's latency (unprioritized, a starved wrk adds 100+ ms to its p99
# while the daemon's own log shows no slow request).
#
# Needs wrk (Debian: apt-get install -y wrk), curl, PostgreSQL's server
# binaries.  As root, the cluster runs as the "postgres" user.
#
# ingest/test/bench.sh

set -u

HERE=$(cd "$(dirname "$0")" && pwd)
INGEST_DIR=$(dirname "$HERE")
BIN="$INGEST_DIR/sam_ingest"
DURATION=${BENCH_DURATION:-30}
CONNS=${BENCH_CONNS:-8}
THREADS=${BENCH_THREADS:-4}
SYNC=${BENCH_SYNC_COMMIT:-on}
TMP=$(mktemp -d /tmp/sam_ingest_bench.XXXXXX)
PGTMP=$(mktemp -d /tmp/sam_ingest_pg.XXXXXX)
LOG=${BENCH_ACCESS_LOG:-$TMP/access.log}
PID=""
SAMPLER=""

# shellcheck source=cluster.sh
. "$HERE/cluster.sh"

cleanup() {
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
	[ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null
	cluster_destroy
	rm -rf "$TMP"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install -y wrk)"; exit 1; }
make -s -C "$INGEST_DIR" >/dev/null || exit 1

SECRET="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cluster_create "$PGTMP" || exit 1
cluster_start || exit 1
cluster_load || exit 1
psql -X -q -c "ALTER ROLE sam_ingest SET synchronous_commit = '$SYNC'" || exit 1

SAM_INGEST_DATABASE_URL="$CLUSTER_INGEST_URL" SAM_WEBHOOK_SECRET="$SECRET" \
	"$BIN" --port 0 --threads "$THREADS" --per-ip-connections 0 >"$TMP/out" 2>"$LOG" &
PID=$!
for _ in $(seq 1 100); do
	grep -q 'listening on' "$TMP/out" && break
	sleep 0.1
done
PORT=$(sed -n 's/^sam_ingest listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/out")
[ -n "$PORT" ] || { echo "bench: the daemon did not start"; cat "$LOG"; exit 1; }
URL="http://127.0.0.1:$PORT/api/webhooks/unipile"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }

echo "bench: sam_ingest --threads $THREADS, wrk -t1 -c$CONNS -d${DURATION}s, synchronous_commit=$SYNC, $(nproc) cores"
export SAM_BENCH_SECRET="$SECRET"
WRK=(wrk)
[ "$(id -u)" = 0 ] && WRK=(nice -n -10 wrk)
SAM_BENCH_RUN="warmup-$$" "${WRK[@]}" -t1 -c"$CONNS" -d3s -s "$HERE/bench_webhook.lua" "$URL" >/dev/null
RSS_START=$(rss)
(
	while kill -0 "$PID" 2>/dev/null; do
		rss >>"$TMP/rss"
		sleep 1
	done
) &
SAMPLER=$!
BEFORE=$(psql -X -At -c "SELECT count(*) FROM sam.webhook_events")
echo "bench: ${WRK[*]} -t1 -c$CONNS -d${DURATION}s -s bench_webhook.lua $URL"
SAM_BENCH_RUN="run-$$" "${WRK[@]}" -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/bench_webhook.lua" "$URL" | tee "$TMP/wrk"
kill "$SAMPLER" 2>/dev/null
SAMPLER=""
RSS_END=$(rss)
ROWS=$(($(psql -X -At -c "SELECT count(*) FROM sam.webhook_events") - BEFORE))
REQS=$(sed -n 's/^requests: \([0-9]*\) in.*/\1/p' "$TMP/wrk")
echo "bench: rows stored during the run: $ROWS (requests answered: $REQS)"
echo "bench: RSS kB: after warm-up $RSS_START, at end $RSS_END, min $(sort -n "$TMP/rss" | head -1), max $(sort -n "$TMP/rss" | tail -1)"
echo "bench: sam_ingest CPU time: $(ps -o times= -p "$PID" | tr -d ' ') s"
SLOW=$(awk '/ms in=/ {d = $5; sub("ms", "", d); if (d + 0 > 20) n++} END {print n + 0}' "$LOG")
echo "bench: requests slower than 20 ms in the daemon's own access log: $SLOW"
kill -TERM "$PID"
wait "$PID"
echo "bench: exit status after SIGTERM: $?"
PID=""
