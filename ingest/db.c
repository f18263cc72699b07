/*-------------------------------------------------------------------------
 *
 * db.c
 *	  One libpq connection per HTTP pool thread, and the single call each
 *	  request makes on it.
 *
 * Each database worker (pool.c) owns its connection (thread-local, no
 * locking on the hot path).  A connection found broken is reset at the start of the next
 * request that needs it: at most one attempt per request, never a retry
 * loop or a background reconnect, and after a failed attempt the thread
 * waits a little before the next (see db_connection), answering 503 at
 * once meanwhile.  The connection is closed when its thread
 * exits (pthread key destructor), i.e. in pool_stop().
 *
 * ingest/db.c
 *
 *-------------------------------------------------------------------------
 */
#include "sam_ingest.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Statements prepared on one connection (the route table's SQL texts). */
#define MAX_PREPARED	16

typedef struct DbThread
{
	PGconn	   *conn;
	/* prepared[i] (an SQL text, by address) is prepared as "sam_ingest_<i>" */
	const char *prepared[MAX_PREPARED];
	int			nprepared;
	bool		need_reset;		/* last call saw the connection break */
	bool		down_logged;	/* "connection failed" already said */
	int64_t		next_attempt_ns;	/* no (re)connect before this */
	/* under db_registry_lock: */
	PGcancel   *cancel;			/* for the current connection */
	bool		busy;			/* a call is in progress */
	struct DbThread *next;		/* registry of all threads */
} DbThread;

/* Shortest pause between two failed connection attempts of a thread. */
#define MIN_RETRY_NS	(100 * 1000000LL)

static const char *db_conninfo;
static pthread_key_t db_key;
static __thread DbThread *db_self;
static pthread_mutex_t db_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static DbThread *db_registry;

/*
 * db_thread_exit is the pthread key destructor: it closes the connection
 * of a pool thread that is exiting.
 */
static void
db_thread_exit(void *arg)
{
	DbThread   *self = arg;
	DbThread  **p;

	pthread_mutex_lock(&db_registry_lock);
	for (p = &db_registry; *p != NULL; p = &(*p)->next)
		if (*p == self)
		{
			*p = self->next;
			break;
		}
	if (self->cancel)
		PQfreeCancel(self->cancel);
	pthread_mutex_unlock(&db_registry_lock);
	if (self->conn)
		PQfinish(self->conn);
	free(self);
}

/*
 * db_set_busy marks this thread's call as started or finished, for
 * db_cancel_all().
 */
static void
db_set_busy(DbThread *self, bool busy)
{
	pthread_mutex_lock(&db_registry_lock);
	self->busy = busy;
	pthread_mutex_unlock(&db_registry_lock);
}

/*
 * db_cancel_all asks the server to cancel every call in progress (used
 * when a shutdown runs out of patience).
 */
void
db_cancel_all(void)
{
	DbThread   *t;
	char		err[256];

	pthread_mutex_lock(&db_registry_lock);
	for (t = db_registry; t != NULL; t = t->next)
		if (t->busy && t->cancel)
			PQcancel(t->cancel, err, sizeof(err));
	pthread_mutex_unlock(&db_registry_lock);
}

/*
 * db_refresh_cancel replaces this thread's cancel handle after a
 * (re)connection.
 */
static void
db_refresh_cancel(DbThread *self)
{
	PGcancel   *c = PQstatus(self->conn) == CONNECTION_OK ? PQgetCancel(self->conn) : NULL;

	pthread_mutex_lock(&db_registry_lock);
	if (self->cancel)
		PQfreeCancel(self->cancel);
	self->cancel = c;
	pthread_mutex_unlock(&db_registry_lock);
}

/*
 * db_init remembers the connection string (not copied; it lives as long
 * as the process) and creates the thread-local key.
 */
void
db_init(const char *conninfo)
{
	db_conninfo = conninfo;
	if (pthread_key_create(&db_key, db_thread_exit) != 0)
	{
		ingest_log("could not create thread key");
		exit(1);
	}
}

/*
 * db_notice_receiver logs server messages of severity WARNING and above
 * (e.g. the FATAL a backend sends before the server shuts down) with our
 * prefix; NOTICE and below are dropped so a chatty function cannot flood
 * the log at thousands of calls per second.
 */
static void
db_notice_receiver(void *arg, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	(void) arg;
	if (sev == NULL || msg == NULL)
		return;
	if (strcmp(sev, "WARNING") != 0 && strcmp(sev, "ERROR") != 0 &&
		strcmp(sev, "FATAL") != 0 && strcmp(sev, "PANIC") != 0)
		return;
	ingest_log("database %s: %s", sev, msg);
}

/*
 * first_line copies the first line of a libpq error message into buf.
 */
static const char *
first_line(const char *msg, char *buf, size_t size)
{
	size_t		n = strcspn(msg, "\n");

	if (n >= size)
		n = size - 1;
	memcpy(buf, msg, n);
	buf[n] = '\0';
	return buf;
}

/*
 * db_looks_alive tells whether an idle connection that libpq still calls
 * OK really is: a server that shut down or restarted has sent its FATAL
 * and closed the socket, which shows up as readable input.  One poll()
 * with no wait; only when there is input does libpq read it.
 */
static bool
db_looks_alive(PGconn *conn)
{
	struct pollfd pfd;
	PGnotify   *n;

	pfd.fd = PQsocket(conn);
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (pfd.fd < 0)
		return false;
	if (poll(&pfd, 1, 0) <= 0)
		return true;			/* nothing pending (or EINTR: let the call tell) */
	if (!PQconsumeInput(conn))
		return false;
	while ((n = PQnotifies(conn)) != NULL)
		PQfreemem(n);
	return PQstatus(conn) == CONNECTION_OK;
}

/*
 * db_connection returns this thread's connection, connecting or resetting
 * it first when needed (at most one attempt), or NULL when the database
 * cannot be reached.  *fresh is set when the connection was just made.
 * With check, an idle connection is first checked for a server that went
 * away meanwhile (one poll(); callers that may retry skip it and find out
 * from the call itself).
 */
static PGconn *
db_connection(bool check, bool *fresh)
{
	DbThread   *self = db_self;
	char		line[256];
	int64_t		start;

	*fresh = false;
	if (self == NULL)
	{
		self = calloc(1, sizeof(DbThread));
		if (self == NULL)
			return NULL;
		db_self = self;
		pthread_setspecific(db_key, self);
		pthread_mutex_lock(&db_registry_lock);
		self->next = db_registry;
		db_registry = self;
		pthread_mutex_unlock(&db_registry_lock);
	}

	if (self->conn != NULL && !self->need_reset &&
		PQstatus(self->conn) == CONNECTION_OK &&
		(!check || db_looks_alive(self->conn)))
		return self->conn;

	/*
	 * Not again so soon after a failed attempt: wait at least as long as
	 * that attempt took (100 ms at least), so that a server that refuses
	 * connections is not hammered and a thread never spends more than
	 * about half its time in connection timeouts.
	 */
	start = monotonic_ns();
	if (start < self->next_attempt_ns)
		return NULL;

	if (self->conn == NULL)
	{
		/*
		 * Our defaults come before "dbname", which libpq expands as the
		 * user's conninfo or URI; later values win, so the user's settings
		 * override these.  TCP keepalives after 30 s of silence, every
		 * 10 s, 3 of them, and 60 s at most for data sent to be
		 * acknowledged (tcp_user_timeout): a server that vanished without
		 * closing the connection (a host down, a network cut) frees the
		 * thread waiting for its answer, or sending to it, within about a
		 * minute, not the system's two hours or fifteen minutes.  (They do
		 * not apply to Unix sockets.)
		 */
		const char *const keywords[] = {
			"fallback_application_name", "connect_timeout", "client_encoding",
			"keepalives_idle", "keepalives_interval", "keepalives_count",
			"tcp_user_timeout", "dbname", NULL
		};
		const char *const values[] = {
			"sam_ingest", "5", "UTF8", "30", "10", "3", "60000", db_conninfo, NULL
		};

		self->conn = PQconnectdbParams(keywords, values, 1);
		if (self->conn == NULL)
			return NULL;
		PQsetNoticeReceiver(self->conn, db_notice_receiver, NULL);
	}
	else
		PQreset(self->conn);

	self->need_reset = false;
	self->nprepared = 0;		/* a new session has no prepared statements */
	*fresh = true;
	db_refresh_cancel(self);
	if (PQstatus(self->conn) != CONNECTION_OK)
	{
		int64_t		end = monotonic_ns();

		self->next_attempt_ns = end + (end - start > MIN_RETRY_NS ?
									   end - start : MIN_RETRY_NS);
		metrics_db_connect(false);
		if (!self->down_logged)
			ingest_log("database connection failed: %s",
					   first_line(PQerrorMessage(self->conn), line, sizeof(line)));
		self->down_logged = true;
		return NULL;
	}
	metrics_db_connect(true);
	if (self->down_logged)
		ingest_log("database connection re-established");
	self->down_logged = false;
	return self->conn;
}

/*
 * db_is_connection_failure tells whether a failed call failed because the
 * connection is gone (class 08, the 57P0x shutdown codes, or libpq's own
 * errors on a broken socket) rather than because the SQL raised.
 */
static bool
db_is_connection_failure(PGconn *conn, const char *sqlstate)
{
	if (PQstatus(conn) != CONNECTION_OK)
		return true;
	if (sqlstate == NULL)
		return false;
	return strncmp(sqlstate, "08", 2) == 0 ||
		strcmp(sqlstate, "57P01") == 0 ||
		strcmp(sqlstate, "57P02") == 0 ||
		strcmp(sqlstate, "57P03") == 0;
}

/*
 * db_prepare puts in name the prepared statement of sql on this thread's
 * connection, preparing it first if needed; name is "" when the table of
 * prepared statements is full (the caller sends the SQL text instead).
 * False when PREPARE failed: *error is then its result (or NULL).
 */
static bool
db_prepare(DbThread *self, const char *sql, int nparams, char *name,
		   PGresult **error)
{
	int			i;
	uint64_t	h = 14695981039346656037u;
	const char *c;

	for (i = 0; i < self->nprepared; i++)
		if (self->prepared[i] == sql)
			break;
	name[0] = '\0';
	if (i == MAX_PREPARED)
		return true;

	/*
	 * The name is the SQL text's (FNV-1a hash), not the order of first use:
	 * behind a pooler in transaction mode, the server session under a
	 * connection changes, and a name must mean the same statement in every
	 * session, whichever client prepared it there first.
	 */
	for (c = sql; *c; c++)
		h = (h ^ (unsigned char) *c) * 1099511628211u;
	snprintf(name, 32, "sam_ingest_%016llx", (unsigned long long) h);
	if (i == self->nprepared)
	{
		PGresult   *res = PQprepare(self->conn, name, sql, nparams, NULL);

		if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

			/* 42P05: that session has it already, under the same name: the same SQL */
			if (state == NULL || strcmp(state, "42P05") != 0)
			{
				*error = res;
				return false;
			}
		}
		PQclear(res);
		self->prepared[self->nprepared++] = sql;
	}
	return true;
}

/*
 * db_exec runs sql on conn as a statement prepared once per connection:
 * the webhook's call is then neither parsed nor planned again per
 * request.  The SQL texts are the route table's constants, so they are
 * known by their address.  A statement that cannot be prepared (say, the
 * extension is not installed) answers the PREPARE's error and is prepared
 * again next time; a session that lost its statements (DISCARD ALL by a
 * pooler) answers SQLSTATE 26000, and db_call then prepares them again.
 */
static PGresult *
db_exec(DbThread *self, const char *sql, int nparams,
		const char *const *values, const int *lengths, const int *formats)
{
	char		name[32];
	PGresult   *res = NULL;

	if (!db_prepare(self, sql, nparams, name, &res))
		return res;
	if (name[0] == '\0')
		return PQexecParams(self->conn, sql, nparams, NULL, values,
							lengths, formats, 0);
	return PQexecPrepared(self->conn, name, nparams, values, lengths, formats, 0);
}

/*
 * db_call runs one statement that returns one column of one row, with
 * parameters passed out of line (never pasted into the SQL), and fills
 * *out.  With may_retry, a call that found a previously good connection
 * broken (typically: the server restarted since this thread last used
 * it) is made once more on a fresh connection; only idempotent calls
 * (sam.ingest_webhook deduplicates, SELECT 1) may do that.  The caller
 * must db_result_clear(out).
 */
void
db_call(const char *sql, int nparams, const char *const *values,
		const int *lengths, const int *formats, bool may_retry, DbResult *out)
{
	int			attempt;

	memset(out, 0, sizeof(*out));
	for (attempt = 0;; attempt++)
	{
		bool		fresh;
		PGconn	   *conn = db_connection(!may_retry, &fresh);
		PGresult   *res;
		const char *state;

		if (conn == NULL)
		{
			out->outcome = DB_UNAVAILABLE;
			return;
		}

		db_set_busy(db_self, true);
		res = db_exec(db_self, sql, nparams, values, lengths, formats);
		db_set_busy(db_self, false);
		if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK &&
			PQntuples(res) == 1 && PQnfields(res) == 1)
		{
			out->res = res;
			if (PQgetisnull(res, 0, 0))
				out->outcome = DB_NULL;
			else
			{
				out->outcome = DB_OK;
				out->value = PQgetvalue(res, 0, 0);
				out->value_len = (size_t) PQgetlength(res, 0, 0);
			}
			return;
		}

		state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state != NULL && strcmp(state, "26000") == 0 && attempt == 0)
		{
			/* our prepared statements are gone: prepare them again */
			PQclear(res);
			db_self->nprepared = 0;
			continue;
		}
		if (res == NULL || db_is_connection_failure(conn, state))
		{
			PQclear(res);
			db_self->need_reset = true;
			if (may_retry && !fresh && attempt == 0)
				continue;
			out->outcome = DB_UNAVAILABLE;
			return;
		}

		out->res = res;
		out->outcome = DB_ERROR;
		if (state != NULL && strlen(state) == 5)
			memcpy(out->sqlstate, state, 6);
		if (PQresultStatus(res) != PGRES_FATAL_ERROR)
		{
			/* a statement that does not return exactly one value */
			out->message = "unexpected result shape";
			return;
		}
		out->message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		if (out->message == NULL)
			out->message = PQresultErrorMessage(res);
		return;
	}
}

/*
 * db_drop_connection closes a connection left in an unknown state (broken
 * in the middle of a pipeline): the next call makes a new one.
 */
static void
db_drop_connection(DbThread *self)
{
	PQfinish(self->conn);
	self->conn = NULL;
	self->nprepared = 0;
	db_refresh_cancel(self);
}

/*
 * db_call_batch runs the same statement n times, with the parameters of
 * call i at values[i * nparams] (lengths likewise, formats shared), in one
 * transaction and one round trip: the calls are pipelined and followed by
 * one Sync, so they run in one implicit transaction that commits at the
 * Sync.  True when every call returned one non-NULL value and the
 * transaction committed: outs[i] then holds call i's value (the caller
 * must db_result_clear each).  False when anything failed (a call's error,
 * a NULL, the commit, the connection): nothing was committed, nothing is
 * left in outs, and *sqlstate holds the first error's SQLSTATE or "".  The
 * caller then makes the calls one by one, which only idempotent
 * statements may be (a broken connection may have lost the answer to a
 * commit that happened).
 */
bool
db_call_batch(const char *sql, unsigned n, int nparams,
			  const char *const *values, const int *lengths,
			  const int *formats, DbResult *outs, char *sqlstate)
{
	DbThread   *self;
	bool		fresh;
	PGconn	   *conn = db_connection(false, &fresh);
	PGresult   *res = NULL;
	char		name[32];
	bool		ok = true;
	bool		synced = false;
	unsigned	i;

	sqlstate[0] = '\0';
	memset(outs, 0, sizeof(DbResult) * n);
	if (conn == NULL)
		return false;
	self = db_self;
	if (!db_prepare(self, sql, nparams, name, &res) || name[0] == '\0')
	{
		PQclear(res);
		return false;
	}
	if (!PQenterPipelineMode(conn))
		return false;

	db_set_busy(self, true);
	for (i = 0; i < n && ok; i++)
		ok = PQsendQueryPrepared(conn, name, nparams, values + i * nparams,
								 lengths + i * nparams, formats, 0) == 1;
	if (ok)
		ok = PQpipelineSync(conn) == 1;
	if (!ok)
	{
		/* could not even send: the connection is in an unknown state */
		db_set_busy(self, false);
		db_drop_connection(self);
		return false;
	}

	/* each call's result, then NULL; then the Sync (after the commit) */
	for (i = 0; i < n; i++)
	{
		PGresult   *extra;

		res = PQgetResult(conn);
		if (res == NULL)
		{
			ok = false;
			break;
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
			PQnfields(res) == 1 && !PQgetisnull(res, 0, 0))
		{
			outs[i].res = res;
			outs[i].outcome = DB_OK;
			outs[i].value = PQgetvalue(res, 0, 0);
			outs[i].value_len = (size_t) PQgetlength(res, 0, 0);
		}
		else
		{
			const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

			if (ok && st != NULL && strlen(st) == 5)
				memcpy(sqlstate, st, 6);
			ok = false;
			PQclear(res);
		}
		while ((extra = PQgetResult(conn)) != NULL)
			PQclear(extra);
	}
	while (i == n && (res = PQgetResult(conn)) != NULL)
	{
		ExecStatusType st = PQresultStatus(res);

		if (st != PGRES_PIPELINE_SYNC)
		{
			/* the commit failed */
			const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);

			if (ok && code != NULL && strlen(code) == 5)
				memcpy(sqlstate, code, 6);
			ok = false;
		}
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
		{
			synced = true;
			break;
		}
	}
	db_set_busy(self, false);

	if (!synced || !PQexitPipelineMode(conn) || PQstatus(conn) != CONNECTION_OK)
	{
		ok = false;
		db_drop_connection(self);
	}
	if (!ok)
		for (i = 0; i < n; i++)
			db_result_clear(&outs[i]);
	return ok;
}

/*
 * db_result_clear releases what db_call kept.
 */
void
db_result_clear(DbResult *r)
{
	if (r->res)
		PQclear(r->res);
	r->res = NULL;
	r->value = NULL;
	r->message = NULL;
}
