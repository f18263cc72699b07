#!/usr/bin/env bash
# Runs the whole test suite (pg_regress, isolation specs, TAP, the mock's and
# the ingest's smoke tests) with the extension, the mock Unipile server and
# the ingest built with AddressSanitizer and UndefinedBehaviorSanitizer
# (make SANITIZE=1, gcc's -fsanitize=address,undefined).
#
#   sudo scripts/test-sanitize.sh        as scripts/test.sh (SAM_SKIP_DEPS=1 skips apt-get)
#   PG_CONFIG=/path/to/pg_config ...     another PostgreSQL install
#
# The mock and the ingest are instrumented executables: ASan is complete
# there.  PostgreSQL itself is not instrumented.  Preloading the ASan runtime
# into it (LD_PRELOAD) is what ASan asks for, but on Debian 12 every program
# linked with libpq or the server (psql, postgres: libldap -> gnutls ->
# p11-kit) then deadlocks on glibc's locale locks (p11-kit's constructor runs
# before ASan is initialized).  So the runtime is not preloaded: the server
# loads it with sam_ext.so (verify_asan_link_order=0).  In the extension,
# UBSan and ASan's stack and global checks work; heap checks do not (its
# malloc stays glibc's, and palloc memory is PostgreSQL's own anyway).
# Leak detection is off; everything else stops at the first error and is
# written to a log that fails the run.
#
# The sanitized build is made and installed from a copy of the tree; at the
# end the normal build is installed again (SAM_SANITIZE_KEEP=1 keeps the
# sanitized one).
set -uo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-pg_config}
passed=0
failed=0
failed_names=()

if [ "$(id -u)" = 0 ] && [ "${SAM_SKIP_DEPS:-0}" != 1 ]; then
	scripts/install-deps.sh || exit 1
fi
export PATH="$("$PG_CONFIG" --bindir):$PATH"
if [ ! -e "$(gcc -print-file-name=libasan.so)" ]; then
	echo "test-sanitize.sh: gcc's ASan runtime (libasan) is missing" >&2
	exit 1
fi

work=$(mktemp -d /tmp/sam_ext_sanitize.XXXXXX)
tar --exclude=.git -cf - . | tar -xf - -C "$work"
logs=$work/sanitizer_logs
mkdir -p "$logs"
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

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

# as_server runs a command as the server's user with the sanitizers' runtime
# and options.
as_server() {
	local env=(env PATH="$PATH"
		ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=0:abort_on_error=1:log_path=$logs/asan"
		UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan")
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "${env[@]}" "$@"
	else
		"${env[@]}" "$@"
	fi
}

install_build() {
	if [ "$(id -u)" = 0 ] || [ -w "$("$PG_CONFIG" --pkglibdir)" ]; then
		make -s -C "$work" PG_CONFIG="$PG_CONFIG" install
	else
		echo "make install failed: run as root (sudo $0)"
		return 1
	fi
}

start=$(date +%s)
echo "=== sanitized build (make SANITIZE=1) and install"
make -s -C "$work" clean >/dev/null 2>&1
make -s -C "$work" PG_CONFIG="$PG_CONFIG" SANITIZE=1 || exit 1
install_build || exit 1
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"

suite "pg_regress + isolation + TAP (make installcheck), sanitized" \
	as_server make -C "$work" PG_CONFIG="$PG_CONFIG" installcheck PROVE_FLAGS="--timer"
suite "mock Unipile smoke test, sanitized" as_server bash "$work/test/mock_smoke.sh"
if [ -f "$work/ingest/test/smoke.sh" ]; then
	suite "ingest smoke test, sanitized" as_server bash "$work/ingest/test/smoke.sh"
fi

# A report in a log fails the run even when the test around it passed
# (a crash the test tolerated, an error in a process nobody waited for).
reports=$(grep -l -E 'ERROR: AddressSanitizer|runtime error:' "$logs"/* 2>/dev/null)
if [ -n "$reports" ]; then
	for f in $reports; do
		echo "--- $f"
		head -80 "$f"
	done
	failed=$((failed + 1))
	failed_names+=("sanitizer reports")
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

if [ "${SAM_SANITIZE_KEEP:-0}" != 1 ]; then
	echo "=== reinstalling the normal build"
	make -s -C "$work" clean >/dev/null 2>&1
	{ make -s -C "$work" PG_CONFIG="$PG_CONFIG" && install_build; } >/dev/null ||
		echo "test-sanitize.sh: could not reinstall the normal build" >&2
fi
echo "sanitized run took $(($(date +%s) - start)) s (work tree: $work)"
echo "sanitized test suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
