#!/usr/bin/env bash
# Runs every test of sam_ext: builds and installs the extension, the mock
# Unipile server and the ingest, then runs pg_regress, the isolation specs
# and the TAP tests (each on throw-away instances preloaded with pg_cron and
# sam_ext), and the smoke tests of the mock and the ingest.
#
#   sudo scripts/test.sh          on a fresh Debian 12 machine (installs dependencies)
#   SAM_SKIP_DEPS=1 ...           skip apt-get
#   SAM_FUZZ_SECONDS=N ...        run each fuzzing harness N s (default 60; 0: skip)
#
# PostgreSQL refuses to run as root, so when run as root the server side of the
# tests runs as the "postgres" user on a copy of the tree it can write.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
passed=0
failed=0
failed_names=()

suite() {
	local name=$1
	shift
	echo "=== $name"
	if "$@"; then
		passed=$((passed + 1))
		echo "=== $name: ok"
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		echo "=== $name: FAILED"
	fi
}

as_server() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}

if [ "$(id -u)" = 0 ] && [ "${SAM_SKIP_DEPS:-0}" != 1 ]; then
	scripts/install-deps.sh || exit 1
fi
export PATH="$(pg_config --bindir):$PATH"

echo "=== build and install"
make -s || exit 1
if [ "$(id -u)" = 0 ]; then
	make -s install || exit 1
else
	make -s install || { echo "make install failed: run as root (sudo $0)"; exit 1; }
fi

if [ "$(id -u)" = 0 ]; then
	work=$(mktemp -d /tmp/sam_ext_test.XXXXXX)
	tar --exclude=.git -cf - . | tar -xf - -C "$work"
	chown -R postgres: "$work"
	chmod 755 "$work"
else
	work=$root
fi

suite "pg_regress + isolation + TAP (make installcheck)" \
	as_server make -C "$work" installcheck PROVE_FLAGS="--timer"
suite "mock Unipile smoke test" as_server bash "$work/test/mock_smoke.sh"
if [ -f "$work/ingest/test/smoke.sh" ]; then
	suite "ingest smoke test" as_server bash "$work/ingest/test/smoke.sh"
fi

fuzz_seconds=${SAM_FUZZ_SECONDS:-60}
if [ "$fuzz_seconds" != 0 ]; then
	suite "fuzzing, ${fuzz_seconds} s per harness (scripts/fuzz.sh)" \
		as_server bash "$work/scripts/fuzz.sh" "$fuzz_seconds"
fi

if [ $failed -gt 0 ]; then
	for f in "$work"/regression.diffs "$work"/output_iso/regression.diffs; do
		[ -f "$f" ] && { echo "--- $f"; head -200 "$f"; }
	done
	for f in "$work"/tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { echo "--- $f (tail)"; tail -60 "$f"; }
	done
	echo "failed: ${failed_names[*]}"
fi
echo "test suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
