# cluster.sh
#     Shell functions shared by ingest/test/smoke.sh and bench.sh: a
#     throw-away PostgreSQL cluster in a temporary directory, reachable
#     only through a Unix socket in that directory (no TCP port, so no
#     port can clash), loaded with stand_in.sql and a login role
#     "sam_ingest" that may only EXECUTE the stand-in functions.
#
#     PostgreSQL refuses to run as root: when run as root, the server side
#     runs as the "postgres" user (runuser) and the directory is theirs.
#
#     Source it, then: cluster_create DIR; cluster_start; ...; cluster_destroy.
#     Sets PGHOST, PGPORT, PGUSER, PGDATABASE for psql, and
#     CLUSTER_INGEST_URL (the conninfo the ingest should use).
#
# ingest/test/cluster.sh

CLUSTER_DIR=""
PG_BINDIR=$(pg_config --bindir)

# as_pg runs a command as the cluster's owner.
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# cluster_create DIR [postgres -c settings...]: initdb into DIR/data.
cluster_create() {
	CLUSTER_DIR=$1
	shift
	mkdir -p "$CLUSTER_DIR/sock"
	if [ "$(id -u)" = 0 ]; then
		chown -R postgres: "$CLUSTER_DIR"
	fi
	as_pg "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres -A trust \
		--no-sync -E UTF8 --locale=C >"$CLUSTER_DIR/initdb.log" 2>&1 || {
		cat "$CLUSTER_DIR/initdb.log" >&2
		return 1
	}
	{
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$CLUSTER_DIR/sock'"
		echo "port = 5432"
		echo "max_connections = 100"
		echo "shared_buffers = 128MB"
		echo "log_min_messages = warning"
		for setting in "$@"; do echo "$setting"; done
	} | as_pg tee -a "$CLUSTER_DIR/data/postgresql.conf" >/dev/null
	export PGHOST="$CLUSTER_DIR/sock" PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
	CLUSTER_INGEST_URL="host=$CLUSTER_DIR/sock port=5432 dbname=postgres user=sam_ingest"
}

# cluster_start starts the server and waits until it accepts connections.
cluster_start() {
	as_pg "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" \
		-w -t 60 start >/dev/null
}

# cluster_stop stops the server (fast: sessions are terminated).
cluster_stop() {
	as_pg "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null
}

# cluster_load loads stand_in.sql and creates the ingest's role, which may
# only execute the two stand-in functions (as the README recommends).
cluster_load() {
	psql -X -q -v ON_ERROR_STOP=1 -f "$(dirname "${BASH_SOURCE[0]}")/stand_in.sql" >/dev/null &&
	psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<-'SQL'
		CREATE ROLE sam_ingest LOGIN;
		GRANT USAGE ON SCHEMA sam TO sam_ingest;
		GRANT EXECUTE ON FUNCTION sam.ingest_webhook(text, text) TO sam_ingest;
		GRANT EXECUTE ON FUNCTION sam.check_relations() TO sam_ingest;
	SQL
}

# cluster_destroy stops the server if it runs (immediately) and removes
# the directory.
cluster_destroy() {
	[ -n "$CLUSTER_DIR" ] || return 0
	if [ -f "$CLUSTER_DIR/data/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -m immediate -w stop >/dev/null 2>&1
	fi
	rm -rf "$CLUSTER_DIR"
	CLUSTER_DIR=""
}
