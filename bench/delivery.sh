#!/usr/bin/env bash
# bench/delivery.sh N: end-to-end delivery throughput of the worker.
# A throw-away cluster and the mock Unipile server (request log off); N invitation
# calls are queued in the outbox, released at once, and the worker drains them
# (claim -> commit in_flight -> HTTP -> record).  Prints calls/s for several
# sam.max_concurrency / sam.batch_size settings, with the machine and inputs.
#   sudo bench/delivery.sh 20000            (as root: the cluster runs as postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
configs=${CONFIGS:-"16:100 32:100 64:200 128:500"}
export PATH="$(pg_config --bindir):$PATH"
dir=$(mktemp -d /tmp/sam_bench.XXXXXX)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env PATH="$PATH" "$@"; else "$@"; fi; }
pgport=${PGPORT_BENCH:-55499}
mockport=${MOCK_PORT_BENCH:-18299}
cleanup() {
	as_pg pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	[ -n "${mockpid:-}" ] && kill "$mockpid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

as_pg initdb -D "$dir/data" -A trust -U postgres >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
port = $pgport
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_cron,sam_ext'
sam.unipile_dsn = 'http://127.0.0.1:$mockport'
shared_buffers = '512MB'
synchronous_commit = on
CONF
as_pg pg_ctl -D "$dir/data" -l "$dir/pg.log" -w start >/dev/null
test/mock_unipile --port "$mockport" --no-log --quiet --threads 2 > "$dir/mock.log" 2>&1 &
mockpid=$!
for _ in $(seq 50); do grep -q listening "$dir/mock.log" && break; sleep 0.1; done
q() { psql -h "$dir" -p "$pgport" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION sam_ext" \
  -c "SELECT sam.create_account('bench', working_days => '{1,2,3,4,5,6,7}', work_start => '00:00', work_end => '00:00', spacing_min => '0', spacing_max => '0')" >/dev/null

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $(pg_config --version | awk '{print $2}'); calls: $n invitations per run"
printf '%-12s %-10s %10s %12s %8s\n' concurrency batch seconds calls/s errors
for c in $configs; do
	conc=${c%%:*}; batch=${c##*:}
	q -c "ALTER SYSTEM SET sam.max_concurrency = $conc" -c "ALTER SYSTEM SET sam.batch_size = $batch" -c "SELECT pg_reload_conf()" >/dev/null
	sleep 0.5
	q -c "TRUNCATE sam.outbox" -c "DELETE FROM sam.prospects" -c "DELETE FROM sam.campaigns" >/dev/null
	# N pending prospects of a running campaign, their invitations queued but not due yet;
	# then released in one commit (which wakes the worker)
	q -c "INSERT INTO sam.campaigns (account_id, name, status) VALUES ('bench', 'bench', 'running')" \
	  -c "INSERT INTO sam.prospects (campaign_id, account_id, provider_id)
	      SELECT (SELECT max(id) FROM sam.campaigns), 'bench', 'ACoB' || i || '_' || extract(epoch FROM clock_timestamp())::bigint
	        FROM generate_series(1, $n) i" \
	  -c "INSERT INTO sam.outbox (account_id, campaign_id, prospect_id, kind, idempotency_key, request, not_before)
	      SELECT 'bench', p.campaign_id, p.id, 'invite', 'invite:' || p.id,
	             jsonb_build_object('method', 'POST', 'path', '/api/v1/users/invite',
	                 'json', jsonb_build_object('provider_id', p.provider_id, 'account_id', 'bench', 'message', 'Hello there')),
	             sam.now() + interval '1 day'
	        FROM sam.prospects p" -c "VACUUM ANALYZE sam.outbox" -c "VACUUM ANALYZE sam.prospects" >/dev/null
	start=$(date +%s.%N)
	q -c "UPDATE sam.outbox SET not_before = sam.now()" >/dev/null
	while [ "$(q -c "SELECT count(*) FROM sam.outbox WHERE state IN ('queued', 'in_flight', 'failed')")" != 0 ]; do sleep 0.05; done
	end=$(date +%s.%N)
	errors=$(q -c "SELECT count(*) FROM sam.outbox WHERE state <> 'done'")
	awk -v c="$conc" -v b="$batch" -v s="$start" -v e="$end" -v n="$n" -v err="$errors" \
		'BEGIN { printf "%-12s %-10s %10.2f %12.0f %8s\n", c, b, e - s, n / (e - s), err }'
done
