/*-------------------------------------------------------------------------
 *
 * fuzz_webhook.c
 *	  libFuzzer harness of the webhook payload handling, which is SQL
 *	  (sam.ingest_webhook() and the functions it applies an event with):
 *	  each input is a webhook body sent over libpq exactly as the ingest
 *	  sends it (same SQL, the body as a binary text parameter) to a
 *	  throw-away cluster that scripts/fuzz.sh starts and fills with
 *	  fuzz/webhook_setup.sql (an account, a campaign, prospects in every
 *	  state that a webhook can move).
 *
 *	  The server is not instrumented, so the feedback is the outcome: the
 *	  SQLSTATE of an error, or the status, transition, event and reason of
 *	  the answer, hashed into libFuzzer's extra counters; the seed corpus
 *	  gives one payload of each kind the SQL understands.
 *
 * Every input runs in a transaction that is rolled back, so that the
 * database is the same for each.  Invariants checked (a violation prints
 * the SQLSTATE and message and aborts):
 *	- the call answers a JSON object with "success": true, or fails with
 *	  an SQLSTATE of class 22 (data exception: not JSON, not an object,
 *	  not valid UTF-8), which the ingest answers 400.  Any other error is
 *	  answered 500 by the ingest and Unipile would retry it forever; a
 *	  lost connection is a server crash;
 *	- the same delivery a second time is acknowledged as a duplicate; or,
 *	  for an account status (which has no id: the same status later is a
 *	  new event once the account's state changed), applied again without
 *	  changing any account.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define WEBHOOK_SQL "SELECT sam.ingest_webhook($1::text, $2::text)::text"

/* libFuzzer's extra counters: outcomes count as coverage */
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t outcome_counters[4096];

static PGconn *conn;

static void
fail(const char *what, PGresult *res, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz_webhook: %s: SQLSTATE %s: %s\n", what,
			res ? (PQresultErrorField(res, PG_DIAG_SQLSTATE) ?: "-") : "-",
			res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	fprintf(stderr, "payload (%zu bytes): %.*s\n", size,
			(int) (size > 500 ? 500 : size), (const char *) data);
	abort();
}

static void
exec_ok(const char *sql)
{
	PGresult   *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		fail(sql, res, (const uint8_t *) "", 0);
	PQclear(res);
}

/* count an outcome (a few strings) as a feature */
static void
note_outcome(const char *a, const char *b)
{
	uint32_t	h = 2166136261u;

	for (const char *p = a; p && *p; p++)
		h = (h ^ (unsigned char) *p) * 16777619u;
	h = (h ^ '|') * 16777619u;
	for (const char *p = b; p && *p; p++)
		h = (h ^ (unsigned char) *p) * 16777619u;
	outcome_counters[h % sizeof(outcome_counters)]++;
}

/* the value of "key": "..." in a JSON text, copied into buf, or "" */
static const char *
json_field(const char *json, const char *key, char *buf, size_t size)
{
	char		pat[64];
	const char *p;
	size_t		n = 0;

	snprintf(pat, sizeof(pat), "\"%s\": ", key);
	buf[0] = '\0';
	p = strstr(json, pat);
	if (p == NULL)
		return buf;
	p += strlen(pat);
	while (p[n] && p[n] != ',' && p[n] != '}' && n < size - 1)
		n++;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return buf;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *conninfo = getenv("SAM_FUZZ_CONNINFO");

	(void) argc;
	(void) argv;
	if (conninfo == NULL)
	{
		fprintf(stderr, "fuzz_webhook: set SAM_FUZZ_CONNINFO (scripts/fuzz.sh does)\n");
		exit(2);
	}
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "fuzz_webhook: %s", PQerrorMessage(conn));
		exit(2);
	}
	exec_ok("SET statement_timeout = '10s'");
	return 0;
}

/*
 * call_webhook sends a body as the ingest does; returns the answer (to
 * PQclear) whatever its status.
 */
/* accounts_state: every account's state as one string (malloc'd) */
static char *
accounts_state(void)
{
	PGresult   *res = PQexec(conn, "SELECT coalesce(string_agg(format('%s %s %s %s', account_id, status, "
							 "status_reason, status_changed_at), ', ' ORDER BY account_id), '') FROM sam.accounts");
	char	   *out;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		fprintf(stderr, "fuzz_webhook: reading the accounts failed: %s", PQerrorMessage(conn));
		abort();
	}
	out = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	if (out == NULL)
		abort();
	return out;
}

static PGresult *
call_webhook(const uint8_t *data, size_t size, const char *source)
{
	const char *values[2] = {(const char *) data, source};
	int			lengths[2] = {(int) size, 0};
	int			formats[2] = {1, 0};

	return PQexecParams(conn, WEBHOOK_SQL, 2, NULL, values, lengths, formats, 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *source = (size % 2) ? "unipile" : "unipile-connection-accepted";
	PGresult   *res;
	char		status[64],
				transition[64],
				event[64],
				reason[64];
	const char *answer;
	char	   *accounts_before;

	if (size > 8 * 1024 * 1024)
		return 0;
	exec_ok("BEGIN");
	res = call_webhook(data, size, source);
	if (PQstatus(conn) != CONNECTION_OK)
		fail("the server went away", NULL, data, size);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (sqlstate == NULL || strncmp(sqlstate, "22", 2) != 0)
			fail("not answered and not a data exception (the ingest would answer 500)",
				 res, data, size);
		note_outcome(sqlstate, NULL);
		PQclear(res);
		exec_ok("ROLLBACK");
		return 0;
	}
	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0))
		fail("no answer", res, data, size);
	answer = PQgetvalue(res, 0, 0);
	if (answer[0] != '{' || strstr(answer, "\"success\": true") == NULL)
		fail("answer is not {\"success\": true, ...}", res, data, size);
	json_field(answer, "status", status, sizeof(status));
	json_field(answer, "transition", transition, sizeof(transition));
	json_field(answer, "event", event, sizeof(event));
	json_field(answer, "reason", reason, sizeof(reason));
	note_outcome(status, transition);
	note_outcome(event, reason);
	PQclear(res);

	/* Unipile's retry of the same delivery */
	accounts_before = accounts_state();
	res = call_webhook(data, size, source);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		fail("the second delivery failed", res, data, size);
	if (strstr(PQgetvalue(res, 0, 0), "\"duplicate\": true") == NULL)
	{
		char	   *accounts_after;

		if (strcmp(event, "\"account_status\"") != 0)	/* (quoted, as json_field copies it) */
			fail("the second delivery is not a duplicate", res, data, size);
		accounts_after = accounts_state();
		if (strcmp(accounts_before, accounts_after) != 0)
			fail("the second delivery of an account status changed an account", res, data, size);
		free(accounts_after);
	}
	free(accounts_before);
	PQclear(res);
	exec_ok("ROLLBACK");
	return 0;
}
