#!/usr/bin/env bash
# Runs each libFuzzer harness of fuzz/ for a bounded time over its seed
# corpus in fuzz/corpus/<name>/ (see fuzz/README.md):
#
#   scripts/fuzz.sh [SECONDS] [NAME...]    default: 60 s each, every harness
#   scripts/fuzz.sh 3600 fuzz_template     a longer local run of one
#
# fuzz_template and fuzz_ingest need nothing but clang.  fuzz_webhook
# needs the extension installed (make install) for the PostgreSQL of
# PG_CONFIG: it starts a throw-away cluster (Unix socket only, in a
# temporary directory; as the "postgres" user when run as root), loads
# fuzz/webhook_setup.sql and stops it afterwards.
#
# New inputs the fuzzer finds go to a temporary directory (the seed corpus
# in the repository is never written); a crash, leak or failed invariant
# is saved as fuzz/artifacts/<name>-crash-<sha1> and fails the run.
# Environment: PG_CONFIG, FUZZ_CORPUS_OUT=DIR to keep the new inputs,
# FUZZ_ARGS to pass more libFuzzer flags.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-60}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(fuzz_template fuzz_ingest fuzz_webhook)
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$("$PG_CONFIG" --bindir)
tmp=$(mktemp -d /tmp/sam_fuzz.XXXXXX)
chmod 755 "$tmp"
cluster_started=0

as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cleanup() {
	if [ $cluster_started = 1 ]; then
		as_pg "$bindir/pg_ctl" -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# start_cluster: a throw-away cluster preloaded with pg_cron and sam_ext,
# holding the fixture of fuzz_webhook; exports SAM_FUZZ_CONNINFO.
start_cluster() {
	mkdir -p "$tmp/pg/sock"
	[ "$(id -u)" = 0 ] && chown -R postgres: "$tmp/pg"
	as_pg "$bindir/initdb" -D "$tmp/pg/data" -U postgres -A trust --no-sync -E UTF8 \
		--locale=C >"$tmp/pg/initdb.log" 2>&1 || { cat "$tmp/pg/initdb.log"; return 1; }
	cat >>"$tmp/pg/data/postgresql.conf" <<-EOF
		listen_addresses = ''
		unix_socket_directories = '$tmp/pg/sock'
		shared_preload_libraries = 'pg_cron,sam_ext'
		cron.database_name = 'postgres'
		sam.database_name = 'postgres'
		max_worker_processes = 16
		fsync = off
		log_min_messages = warning
		log_min_error_statement = panic
	EOF
	as_pg "$bindir/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/server.log" -w -t 60 start >/dev/null ||
		{ cat "$tmp/pg/server.log"; return 1; }
	cluster_started=1
	export SAM_FUZZ_CONNINFO="host=$tmp/pg/sock port=5432 user=postgres dbname=postgres"
	"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -d "$SAM_FUZZ_CONNINFO" \
		-f fuzz/webhook_setup.sql >"$tmp/pg/setup.log" 2>&1 || { cat "$tmp/pg/setup.log"; return 1; }
}

echo "=== fuzz: building the harnesses (make fuzz)"
make -s fuzz PG_CONFIG="$PG_CONFIG" || exit 1
mkdir -p fuzz/artifacts

passed=0
failed=0
for name in "${names[@]}"; do
	max_len=65536
	case $name in
	fuzz_template) max_len=1048576 ;;
	fuzz_webhook)
		max_len=16384
		if [ $cluster_started = 0 ] && ! start_cluster; then
			echo "=== $name: FAILED (cannot start the cluster)"
			failed=$((failed + 1))
			continue
		fi
		;;
	esac
	out=${FUZZ_CORPUS_OUT:+$FUZZ_CORPUS_OUT/$name}
	out=${out:-$tmp/corpus/$name}
	mkdir -p "$out"
	echo "=== $name: $seconds s over fuzz/corpus/$name"
	start=$(date +%s)
	# shellcheck disable=SC2086
	fuzz/$name -max_total_time="$seconds" -max_len=$max_len -timeout=30 -rss_limit_mb=4096 \
		-print_final_stats=1 -artifact_prefix="fuzz/artifacts/$name-" ${FUZZ_ARGS:-} \
		"$out" "fuzz/corpus/$name" >"$tmp/$name.log" 2>&1
	rc=$?
	grep -E '^(stat::number_of_executed_units|stat::new_units_added)|^#[0-9]+ +DONE' "$tmp/$name.log" |
		sed 's/^/    /'
	if [ $rc = 0 ]; then
		passed=$((passed + 1))
		echo "=== $name: ok ($(($(date +%s) - start)) s)"
	else
		failed=$((failed + 1))
		tail -60 "$tmp/$name.log"
		echo "=== $name: FAILED (artifacts in fuzz/artifacts/)"
	fi
done
echo "fuzz: $passed passed, $failed failed"
[ $failed = 0 ]
