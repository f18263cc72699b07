#!/usr/bin/env bash
# Installs what sam_ext needs to build, test and run its demo, from Debian's
# packages (Debian 12 "bookworm", PostgreSQL 15).  Run as root.  clang and
# its runtime (libFuzzer, sanitizers) build the fuzzing harnesses (fuzz/).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: run as root (sudo $0)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	build-essential pkg-config ca-certificates curl procps \
	postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-15-cron \
	libcurl4-openssl-dev libmicrohttpd-dev libpq-dev libjansson-dev \
	libipc-run-perl python3 \
	clang libclang-rt-14-dev >/dev/null
echo "install-deps.sh: dependencies installed"
