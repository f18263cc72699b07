/*-------------------------------------------------------------------------
 *
 * routes.c
 *	  The HTTP side of sam_ingest: the route table, the libmicrohttpd access
 *	  handler (secret checks, body limit, one SQL call per request), the
 *	  answers and the access log.
 *
 * libmicrohttpd calls handle_request() several times per request: once
 * when the headers are in (route, method, secret and Content-Length are
 * checked there, so a bad request is refused before its body is read),
 * once per chunk of body, and once more at the end, when the SQL call is
 * made.  A request without a body is checked at that last call instead,
 * which comes at once: an answer queued earlier would close a keep-alive
 * connection.  A request that needs SQL is then suspended and handed to
 * the database pool (pool.c); run_job() runs on a pool worker, queues the
 * answer and resumes the connection.  request_completed() is called when
 * the answer has been sent (or the client went away): it logs the
 * request and frees it.
 *
 * ingest/routes.c
 *
 *-------------------------------------------------------------------------
 */
#include "sam_ingest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#define JSON_TYPE		"application/json"
#define METRICS_TYPE	"text/plain; version=0.0.4"
#define WEBHOOK_SQL		"SELECT sam.ingest_webhook($1::text, $2::text)::text"
#define MAX_REASON		160		/* bytes of an SQL message put in an answer */
#define LOG_PATH_MAX	160
#define METHOD_NOT_ALLOWED	"{\"error\":\"Method not allowed\"}"
#define BUSY_ANSWER		"{\"error\":\"database busy, try again\"}"

/*
 * A job's answer, prefixed with P when its run goes on past the wait
 * ("still_running": true), F when it says "success": false otherwise (the
 * job failed, or the worker is not running), T otherwise: see handle_cron.
 */
#define CRON(path, fn) \
	{path, RK_CRON, NULL, "sam." fn "()", \
	"SELECT CASE WHEN r->>'still_running' = 'true' THEN 'P' WHEN r->>'success' = 'false' THEN 'F' " \
	"ELSE 'T' END || r::text FROM sam." fn "() r"}

const Route routes[] = {
	{"/api/webhooks/unipile", RK_WEBHOOK, "unipile", NULL, NULL},
	{"/api/webhooks/unipile-connection-accepted", RK_WEBHOOK,
	"unipile-connection-accepted", NULL, NULL},
	CRON("/api/cron/check-relations", "check_relations"),
	CRON("/api/campaigns/direct/process-follow-ups", "process_follow_ups"),
	CRON("/api/cron/execute-scheduled-campaigns", "execute_scheduled_campaigns"),
	CRON("/api/cron/process-pending-prospects", "process_pending_prospects"),
	CRON("/api/cron/process-outbox", "process_outbox"),
	CRON("/api/cron/gdpr-cleanup", "gdpr_cleanup"),
	CRON("/api/cron/check-pending-notifications", "check_pending_notifications"),
	{"/healthz", RK_HEALTHZ, NULL, NULL, NULL},
	{"/metrics", RK_METRICS, NULL, NULL, NULL},
	{"/metrics/ingest", RK_METRICS_SELF, NULL, NULL, NULL},
	/* catch-all: must stay last; its path is only the metrics label */
	{"other", RK_NOT_FOUND, NULL, NULL, NULL},
};
const int	num_routes = sizeof(routes) / sizeof(routes[0]);

/* State of one request, from its headers to its completion. */
typedef struct Request
{
	PoolJob		job;			/* first: a Request is its own pool job */
	int			route;			/* index in routes[] */
	int64_t		start_ns;
	char		method[12];		/* sanitized copies, for the access log */
	char		path[LOG_PATH_MAX + 4];
	char	   *body;			/* webhook body, at most max_body bytes */
	size_t		body_len;
	size_t		body_cap;
	size_t		bytes_in;		/* body bytes received (kept or not) */
	bool		too_large;
	bool		deferred;		/* begin_request() not run yet (no body) */
	bool		dispatched;		/* handed to the database pool */
	unsigned	status;			/* 0 until an answer is queued */
	size_t		bytes_out;
} Request;

/*
 * route_lookup returns the index in routes[] of an exact path, or that of
 * the catch-all entry.
 */
int
route_lookup(const char *path)
{
	int			i;

	for (i = 0; i < num_routes - 1; i++)
		if (strcmp(path, routes[i].path) == 0)
			return i;
	return num_routes - 1;
}

/*
 * copy_printable copies at most max bytes of src into dst, replacing
 * anything that is not printable ASCII so that a request cannot forge
 * lines in the log; a longer src is marked with "...".
 */
static void
copy_printable(char *dst, const char *src, size_t max)
{
	size_t		i;

	for (i = 0; src[i] != '\0' && i < max; i++)
		dst[i] = (src[i] > 0x20 && src[i] < 0x7f) ? src[i] : '?';
	if (src[i] != '\0')
	{
		memcpy(dst + i, "...", 3);
		i += 3;
	}
	dst[i] = '\0';
}

/*
 * secret_matches compares a received header value with the configured
 * secret in time that depends only on the secret's length: every byte of
 * the secret is looked at whatever the value, and a length mismatch is
 * folded into the same accumulator instead of returning early.  No secret
 * configured means nothing matches.
 */
static bool
secret_matches(const char *given, size_t given_len,
			   const char *secret, size_t secret_len)
{
	volatile unsigned char diff;
	size_t		i;

	if (secret == NULL || given == NULL)
		return false;
	diff = (given_len != secret_len);
	for (i = 0; i < secret_len; i++)
	{
		unsigned char g = i < given_len ? (unsigned char) given[i] : 0;

		diff |= g ^ (unsigned char) secret[i];
	}
	return diff == 0;
}

/*
 * respond queues an answer (copied) with its content type and, for 405,
 * an Allow header.  While shutting down it asks the client to close the
 * connection.  The status is remembered for the log only if queued.
 */
static enum MHD_Result
respond(struct MHD_Connection *conn, Request *req, unsigned status,
		const char *type, const char *body, size_t len, const char *allow)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(len, (void *) body,
										   MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	if (__atomic_load_n(&ingest_shutting_down, __ATOMIC_RELAXED))
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	if (ret == MHD_YES)
	{
		req->status = status;
		req->bytes_out = len;
	}
	return ret;
}

/* respond_json answers with a NUL-terminated JSON text. */
static enum MHD_Result
respond_json(struct MHD_Connection *conn, Request *req, unsigned status,
			 const char *json)
{
	return respond(conn, req, status, JSON_TYPE, json, strlen(json), NULL);
}

/*
 * respond_json_message answers {"<key>": "<prefix><message>"} (with
 * "success": false first when asked), the message escaped and shortened.
 */
static enum MHD_Result
respond_json_message(struct MHD_Connection *conn, Request *req,
					 unsigned status, bool with_success, const char *prefix,
					 const char *message)
{
	StrBuf		sb = {0};
	enum MHD_Result ret;

	sb_appends(&sb, with_success ? "{\"success\":false,\"error\":\"" : "{\"error\":\"");
	sb_append_json_string(&sb, prefix, MAX_REASON);
	sb_append_json_string(&sb, message ? message : "unknown error", MAX_REASON);
	sb_appends(&sb, "\"}");
	ret = respond(conn, req, status, JSON_TYPE, sb.data, sb.len, NULL);
	sb_free(&sb);
	return ret;
}

/*
 * sqlstate_is_shutdown_cancel tells whether an error's SQLSTATE is the
 * cancellation the shutdown asked for (see pool_abort).
 */
static bool
sqlstate_is_shutdown_cancel(const char *sqlstate)
{
	return strcmp(sqlstate, "57014") == 0 &&
		__atomic_load_n(&ingest_shutting_down, __ATOMIC_RELAXED);
}

/*
 * cancelled_by_shutdown tells whether a call failed because the shutdown
 * cancelled it (see pool_abort): that is answered 503, not 500.
 */
static bool
cancelled_by_shutdown(const DbResult *r)
{
	return r->outcome == DB_ERROR && sqlstate_is_shutdown_cancel(r->sqlstate);
}

/*
 * sqlstate_is_transient tells whether an error is one a second try makes
 * go away: a deadlock, a serialization failure, a lock not available
 * (sam.ingest_webhook lets them through instead of storing the webhook as
 * failed).
 */
static bool
sqlstate_is_transient(const char *sqlstate)
{
	return strcmp(sqlstate, "40P01") == 0 || strcmp(sqlstate, "40001") == 0 ||
		strcmp(sqlstate, "55P03") == 0;
}

/*
 * header_secret_ok looks up a header (case-insensitively) and compares it
 * with a secret.
 */
static bool
header_secret_ok(struct MHD_Connection *conn, const char *header,
				 const char *secret, size_t secret_len)
{
	const char *value = NULL;
	size_t		value_len = 0;

	if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, header,
									  strlen(header), &value,
									  &value_len) != MHD_YES)
		value = NULL;
	return secret_matches(value, value_len, secret, secret_len);
}

/*
 * handle_healthz answers whether this thread's connection can run
 * SELECT 1 (reconnecting first if it was broken).
 */
static enum MHD_Result
handle_healthz(struct MHD_Connection *conn, Request *req)
{
	DbResult	r;
	enum MHD_Result ret;

	db_call("SELECT 1", 0, NULL, NULL, NULL, true, &r);
	if (r.outcome == DB_OK)
		ret = respond_json(conn, req, MHD_HTTP_OK,
						   "{\"status\":\"ok\",\"database\":\"up\"}");
	else
		ret = respond_json(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
						   "{\"status\":\"degraded\",\"database\":\"down\"}");
	db_result_clear(&r);
	return ret;
}

/*
 * The database's figures (sam.metrics_text(), which counts whole tables)
 * as last read, reused for --metrics-max-age seconds: however often
 * /metrics is asked for, the database reads them at most once in that
 * time, and at most one read is under way.  Protected by metrics_lock.
 */
static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static char *metrics_text;		/* NULL: nothing kept */
static size_t metrics_text_len;
static int64_t metrics_read_ns; /* when metrics_text was read */
static bool metrics_reading;	/* a worker is reading them */

/*
 * metrics_take appends the kept figures to sb when there are some; when
 * fresh_only, only if they are younger than --metrics-max-age.  True when
 * it did.  Called with metrics_lock held.
 */
static bool
metrics_take(StrBuf *sb, bool fresh_only)
{
	if (metrics_text == NULL)
		return false;
	if (fresh_only &&
		monotonic_ns() - metrics_read_ns >=
		(int64_t) ingest_config.metrics_max_age * 1000000000)
		return false;
	sb_append(sb, metrics_text, metrics_text_len);
	return true;
}

/*
 * metrics_answer_cached answers /metrics on the HTTP thread, without the
 * pool, when the kept figures are fresh.  True when it answered.
 */
static bool
metrics_answer_cached(struct MHD_Connection *conn, Request *req,
					  enum MHD_Result *ret)
{
	StrBuf		sb = {0};
	bool		fresh;

	metrics_render(&sb);
	pthread_mutex_lock(&metrics_lock);
	fresh = metrics_take(&sb, true);
	pthread_mutex_unlock(&metrics_lock);
	if (fresh)
		*ret = respond(conn, req, MHD_HTTP_OK, METRICS_TYPE, sb.data, sb.len, NULL);
	sb_free(&sb);
	return fresh;
}

/*
 * handle_metrics answers the ingest's own metrics followed by
 * sam.metrics_text() when the extension has it (and the database is up).
 * The database's figures are read again only when those kept are older
 * than --metrics-max-age and no other worker is reading them; while one
 * is, the others answer the figures kept, or none when there are none.
 * An answer without them (no function: 42883, 3F000) is kept too, so
 * that a database without the extension is not asked at every scrape;
 * a failure is not.
 */
static enum MHD_Result
handle_metrics(struct MHD_Connection *conn, Request *req)
{
	StrBuf		sb = {0};
	DbResult	r;
	enum MHD_Result ret;
	bool		read = false;
	bool		keep = ingest_config.metrics_max_age > 0;

	metrics_render(&sb);
	pthread_mutex_lock(&metrics_lock);
	if (!keep)
		read = true;
	else if (metrics_take(&sb, true))
		 /* fresh */ ;
	else if (metrics_reading)
		(void) metrics_take(&sb, false);	/* another worker reads them */
	else
		read = metrics_reading = true;
	pthread_mutex_unlock(&metrics_lock);

	if (read)
	{
		size_t		start = sb.len;
		bool		ok = false;

		db_call("SELECT sam.metrics_text()", 0, NULL, NULL, NULL, false, &r);
		if (r.outcome == DB_OK && r.value_len > 0)
		{
			sb_append(&sb, r.value, r.value_len);
			if (r.value[r.value_len - 1] != '\n')
				sb_append(&sb, "\n", 1);
			ok = true;
		}
		else if (r.outcome == DB_OK || r.outcome == DB_NULL ||
				 (r.outcome == DB_ERROR && (strcmp(r.sqlstate, "42883") == 0 ||
											strcmp(r.sqlstate, "3F000") == 0)))
			ok = true;
		else if (r.outcome == DB_ERROR)
			ingest_log("sam.metrics_text() failed: SQLSTATE %s: %s",
					   r.sqlstate, r.message);
		db_result_clear(&r);

		if (keep)
		{
			char	   *copy = NULL;
			size_t		len = sb.len - start;

			if (ok)
			{
				copy = malloc(len + 1);
				if (copy != NULL)
				{
					memcpy(copy, sb.data + start, len);
					copy[len] = '\0';
				}
			}
			pthread_mutex_lock(&metrics_lock);
			free(metrics_text);
			metrics_text = copy;
			metrics_text_len = copy ? len : 0;
			metrics_read_ns = monotonic_ns();
			metrics_reading = false;
			pthread_mutex_unlock(&metrics_lock);
		}
	}
	ret = respond(conn, req, MHD_HTTP_OK, METRICS_TYPE, sb.data, sb.len, NULL);
	sb_free(&sb);
	return ret;
}

/*
 * handle_webhook makes the one call of a webhook delivery: the raw body
 * and the route's source go to sam.ingest_webhook() as parameters, the
 * body in binary format so that its length is explicit (the server still
 * checks that it is valid UTF-8).  The function is idempotent (it
 * deduplicates), so a call that met a connection broken since its last
 * use is made once more on a new one, and one that met a deadlock or a
 * lock not available once more at once.  *busy is set when it was
 * answered 503 because the database is busy (a lock still not available
 * the second time, a statement timeout): the caller should not make
 * further calls that would wait as long (see handle_webhook_batch).
 */
static enum MHD_Result
handle_webhook(struct MHD_Connection *conn, Request *req, bool *busy)
{
	const Route *route = &routes[req->route];
	const char *values[2];
	int			lengths[2];
	int			formats[2] = {1, 0};
	DbResult	r;
	enum MHD_Result ret;

	values[0] = req->body ? req->body : "";
	values[1] = route->source;
	lengths[0] = (int) req->body_len;
	lengths[1] = 0;
	db_call(WEBHOOK_SQL, 2, values, lengths, formats, true, &r);
	if (r.outcome == DB_ERROR && sqlstate_is_transient(r.sqlstate))
	{
		/* met a deadlock or a lock: made once more (the call is idempotent) */
		db_result_clear(&r);
		db_call(WEBHOOK_SQL, 2, values, lengths, formats, true, &r);
	}
	if (cancelled_by_shutdown(&r))
		r.outcome = DB_UNAVAILABLE;
	*busy = false;
	switch (r.outcome)
	{
		case DB_OK:
			ret = respond(conn, req, MHD_HTTP_OK, JSON_TYPE, r.value,
						  r.value_len, NULL);
			break;
		case DB_UNAVAILABLE:
			metrics_webhook_reject(WR_DB_UNAVAILABLE);
			ret = respond_json(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
							   "{\"error\":\"database unavailable\"}");
			break;
		case DB_ERROR:
			if (sqlstate_is_transient(r.sqlstate) ||
				strcmp(r.sqlstate, "57014") == 0)
			{
				/*
				 * twice (a statement timeout: once, a second try would wait
				 * as long): answered 503, so that Unipile delivers it again
				 * later
				 */
				ingest_log("sam.ingest_webhook() failed%s: SQLSTATE %s: %s",
						   strcmp(r.sqlstate, "57014") == 0 ? "" : " twice",
						   r.sqlstate, r.message);
				metrics_webhook_reject(WR_DB_UNAVAILABLE);
				ret = respond_json(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
								   BUSY_ANSWER);
				*busy = strcmp(r.sqlstate, "57014") == 0 ||
					strcmp(r.sqlstate, "55P03") == 0;
				break;
			}
			if (strncmp(r.sqlstate, "22", 2) == 0)
			{
				/* data exception: 22P02 not JSON, 22023 not an object... */
				metrics_webhook_reject(WR_INVALID_JSON);
				ret = respond_json_message(conn, req, MHD_HTTP_BAD_REQUEST,
										   false, "invalid JSON payload: ",
										   r.message);
				break;
			}
			ingest_log("sam.ingest_webhook() failed: SQLSTATE %s: %s",
					   r.sqlstate[0] ? r.sqlstate : "-", r.message);
			metrics_webhook_reject(WR_INTERNAL);
			ret = respond_json(conn, req, MHD_HTTP_INTERNAL_SERVER_ERROR,
							   "{\"error\":\"internal error\"}");
			break;
		case DB_NULL:
		default:
			ingest_log("sam.ingest_webhook() returned NULL");
			metrics_webhook_reject(WR_INTERNAL);
			ret = respond_json(conn, req, MHD_HTTP_INTERNAL_SERVER_ERROR,
							   "{\"error\":\"internal error\"}");
			break;
	}
	db_result_clear(&r);
	return ret;
}

/*
 * handle_cron runs the route's fixed SQL (no request data reaches it) and
 * maps the usual failures to answers a scheduler can act on.  Jobs are
 * not assumed idempotent: a call is never repeated here.  A job that
 * answers "success": false (it failed, or the worker is not running) is
 * answered 500 with that answer: a scheduler's history shows failures by
 * the HTTP status, and a 200 would show it green.  One whose run goes on
 * past the wait for Unipile's answers is answered 202 (accepted, not a
 * failure: a scheduler that retries a 5xx would start the job again).
 */
static enum MHD_Result
handle_cron(struct MHD_Connection *conn, Request *req)
{
	const Route *route = &routes[req->route];
	DbResult	r;
	enum MHD_Result ret;
	char		buf[256];

	db_call(route->sql, 0, NULL, NULL, NULL, false, &r);
	if (cancelled_by_shutdown(&r))
		r.outcome = DB_UNAVAILABLE;
	switch (r.outcome)
	{
		case DB_OK:
			/* (the T, F or P prefix the route's SQL adds is not sent) */
			if (r.value_len > 0 && r.value[0] == 'F')
			{
				ingest_log("%s answered \"success\": false", route->function);
				ret = respond(conn, req, MHD_HTTP_INTERNAL_SERVER_ERROR, JSON_TYPE,
							  r.value + 1, r.value_len - 1, NULL);
			}
			else if (r.value_len > 0 && r.value[0] == 'P')
				ret = respond(conn, req, MHD_HTTP_ACCEPTED, JSON_TYPE,
							  r.value + 1, r.value_len - 1, NULL);
			else
				ret = respond(conn, req, MHD_HTTP_OK, JSON_TYPE,
							  r.value + (r.value_len > 0), r.value_len - (r.value_len > 0),
							  NULL);
			break;
		case DB_UNAVAILABLE:
			ret = respond_json(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
							   "{\"error\":\"database unavailable\"}");
			break;
		case DB_NULL:
			ingest_log("%s returned NULL", route->function);
			snprintf(buf, sizeof(buf), "%s returned NULL", route->function);
			ret = respond_json_message(conn, req, MHD_HTTP_INTERNAL_SERVER_ERROR,
									   true, "", buf);
			break;
		case DB_ERROR:
		default:
			if (strcmp(r.sqlstate, "42883") == 0 || strcmp(r.sqlstate, "3F000") == 0)
			{
				snprintf(buf, sizeof(buf),
						 "{\"error\":\"not implemented: %s is not installed in this database\"}",
						 route->function);
				ret = respond_json(conn, req, MHD_HTTP_NOT_IMPLEMENTED, buf);
			}
			else if (strcmp(r.sqlstate, "42501") == 0)
			{
				snprintf(buf, sizeof(buf),
						 "{\"error\":\"forbidden: the ingest role may not call %s\"}",
						 route->function);
				ret = respond_json(conn, req, MHD_HTTP_FORBIDDEN, buf);
			}
			else
			{
				ingest_log("%s failed: SQLSTATE %s: %s", route->function,
						   r.sqlstate[0] ? r.sqlstate : "-", r.message);
				ret = respond_json_message(conn, req,
										   MHD_HTTP_INTERNAL_SERVER_ERROR,
										   true, "", r.message);
			}
			break;
	}
	db_result_clear(&r);
	return ret;
}

/*
 * dispatch hands a request that needs SQL to the database pool.  While
 * shutting down, once the pool takes no more work, it is answered 503.
 */
static enum MHD_Result
dispatch(struct MHD_Connection *conn, Request *req)
{
	req->dispatched = true;
	req->job.batchable = routes[req->route].kind == RK_WEBHOOK;
	if (pool_submit(&req->job, conn))
		return MHD_YES;
	return respond_json(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
						"{\"error\":\"shutting down\"}");
}

/*
 * handle_webhook_batch stores n webhook deliveries in one transaction
 * (db_call_batch) and answers each with its own result once that has
 * committed.  When the batch fails as a whole (a delivery that is not
 * JSON, a deadlock with another batch, the connection), nothing of it was
 * committed, and each delivery is made again on its own, so that each
 * gets the answer it would have got alone: sam.ingest_webhook is
 * idempotent.  A batch cancelled by the shutdown is answered 503.
 *
 * Once two deliveries in a row are answered 503 because the database is
 * busy (a lock not available, a statement timeout), the deliveries after
 * them are answered 503 at once, without a call: they would most likely
 * wait as long for the same lock (a table's), and the worker would be held
 * for the sum of their timeouts (up to 2 * --batch of them) while the queue
 * grows.  Unipile delivers them again later.  One delivery that meets a
 * lock of its own (a prospect's row held by a session left idle in its
 * transaction) does not stop the others, wherever it is in the batch: the
 * next one is made, and a success resets the count.
 */
static void
handle_webhook_batch(PoolJob **jobs, unsigned n)
{
	const char *values[MAX_BATCH * 2] = {0};
	int			lengths[MAX_BATCH * 2] = {0};
	int			formats[2] = {1, 0};
	DbResult	outs[MAX_BATCH];
	char		sqlstate[6];
	unsigned	i;
	bool		ok;
	bool		busy;
	int			strikes;

	for (i = 0; i < n; i++)
	{
		Request    *req = (Request *) jobs[i];

		values[2 * i] = req->body ? req->body : "";
		lengths[2 * i] = (int) req->body_len;
		values[2 * i + 1] = routes[req->route].source;
		lengths[2 * i + 1] = 0;
	}
	ok = db_call_batch(WEBHOOK_SQL, n, 2, values, lengths, formats, outs, sqlstate);
	metrics_webhook_batch(n, ok);
	strikes = 0;
	for (i = 0; i < n; i++)
	{
		Request    *req = (Request *) jobs[i];

		if (ok)
		{
			respond(jobs[i]->conn, req, MHD_HTTP_OK, JSON_TYPE, outs[i].value,
					outs[i].value_len, NULL);
			db_result_clear(&outs[i]);
		}
		else if (sqlstate_is_shutdown_cancel(sqlstate))
		{
			metrics_webhook_reject(WR_DB_UNAVAILABLE);
			respond_json(jobs[i]->conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
						 "{\"error\":\"database unavailable\"}");
		}
		else if (strikes >= 2)
		{
			metrics_webhook_reject(WR_DB_UNAVAILABLE);
			respond_json(jobs[i]->conn, req, MHD_HTTP_SERVICE_UNAVAILABLE,
						 BUSY_ANSWER);
		}
		else
		{
			handle_webhook(jobs[i]->conn, req, &busy);
			strikes = busy ? strikes + 1 : 0;
		}
	}
}

/*
 * run_jobs runs on a database worker: it makes the requests' SQL calls
 * (several webhooks in one transaction; or, when the shutdown has given up
 * waiting, answers 503 without any), queues the answers and resumes the
 * connections.  A request belongs to the HTTP thread again once resumed,
 * so it is not touched after that.
 */
void
run_jobs(PoolJob **jobs, unsigned n, bool abort)
{
	unsigned	i;

	if (abort)
		for (i = 0; i < n; i++)
			respond_json(jobs[i]->conn, (Request *) jobs[i],
						 MHD_HTTP_SERVICE_UNAVAILABLE,
						 "{\"error\":\"shutting down\"}");
	else if (n > 1)
		handle_webhook_batch(jobs, n);	/* only webhooks are batched */
	else
	{
		Request    *req = (Request *) jobs[0];
		struct MHD_Connection *conn = jobs[0]->conn;

		switch (routes[req->route].kind)
		{
			case RK_WEBHOOK:
				{
					bool		busy;

					handle_webhook(conn, req, &busy);
				}
				break;
			case RK_CRON:
				handle_cron(conn, req);
				break;
			case RK_HEALTHZ:
				handle_healthz(conn, req);
				break;
			case RK_METRICS:
				handle_metrics(conn, req);
				break;
			case RK_METRICS_SELF:
			case RK_NOT_FOUND:
				break;
		}
	}
	for (i = 0; i < n; i++)
		MHD_resume_connection(jobs[i]->conn);
}

/*
 * bearer_ok says whether a request may read the metrics: always when no
 * metrics secret is configured, otherwise only with the header
 * "Authorization: Bearer <secret>" (the scheme's name in any case, as
 * RFC 9110 has it), compared in constant time.
 */
static bool
bearer_ok(struct MHD_Connection *conn)
{
	const char *value = NULL;
	size_t		value_len = 0;

	if (ingest_config.metrics_secret == NULL)
		return true;
	if (MHD_lookup_connection_value_n(conn, MHD_HEADER_KIND, "Authorization",
									  strlen("Authorization"), &value,
									  &value_len) != MHD_YES ||
		value_len < 7 || strncasecmp(value, "Bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
		return false;
	/* the scheme, then one or more blanks (RFC 9110's 1*SP, tabs taken too) */
	value += 6;
	value_len -= 6;
	while (value_len > 0 && (*value == ' ' || *value == '\t'))
	{
		value++;
		value_len--;
	}
	return secret_matches(value, value_len, ingest_config.metrics_secret,
						  ingest_config.metrics_secret_len);
}

/*
 * begin_request runs when a request's headers are in: it answers at once
 * what is refused without looking at the body (unknown path, wrong
 * method, missing or wrong secret, a Content-Length over the limit), so
 * that no body is read for it, and hands health and metrics to the pool.
 * *done is set when the request was answered or handed over: the caller
 * must then leave it alone (a pool worker may be using it).
 */
static enum MHD_Result
begin_request(struct MHD_Connection *conn, Request *req, const char *method,
			  bool *done)
{
	const Route *route = &routes[req->route];
	bool		ok;
	const char *cl;

	*done = true;
	switch (route->kind)
	{
		case RK_NOT_FOUND:
			return respond_json(conn, req, MHD_HTTP_NOT_FOUND,
								"{\"error\":\"Not found\"}");
		case RK_HEALTHZ:
		case RK_METRICS:
		case RK_METRICS_SELF:
			if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
				return respond(conn, req, MHD_HTTP_METHOD_NOT_ALLOWED, JSON_TYPE,
							   METHOD_NOT_ALLOWED, strlen(METHOD_NOT_ALLOWED), "GET, HEAD");
			/* (before any figure is read: a refused scrape costs the database nothing) */
			if (route->kind != RK_HEALTHZ && !bearer_ok(conn))
				return respond_json(conn, req, MHD_HTTP_UNAUTHORIZED,
									"{\"error\":\"Unauthorized\"}");
			if (route->kind == RK_METRICS_SELF)
			{
				/* no database: answered here, even when every worker is busy */
				StrBuf		sb = {0};
				enum MHD_Result ret;

				metrics_render(&sb);
				ret = respond(conn, req, MHD_HTTP_OK, METRICS_TYPE, sb.data, sb.len, NULL);
				sb_free(&sb);
				return ret;
			}
			if (route->kind == RK_METRICS)
			{
				enum MHD_Result ret;

				/* the database's figures read less than --metrics-max-age ago */
				if (metrics_answer_cached(conn, req, &ret))
					return ret;
			}
			return dispatch(conn, req);
		case RK_WEBHOOK:
		case RK_CRON:
			break;
	}

	if (strcmp(method, "POST") != 0)
		return respond(conn, req, MHD_HTTP_METHOD_NOT_ALLOWED, JSON_TYPE,
					   METHOD_NOT_ALLOWED, strlen(METHOD_NOT_ALLOWED), "POST");

	if (route->kind == RK_WEBHOOK)
		ok = header_secret_ok(conn, ingest_config.webhook_header,
							  ingest_config.webhook_secret,
							  ingest_config.webhook_secret_len);
	else
		ok = header_secret_ok(conn, "x-cron-secret", ingest_config.cron_secret,
							  ingest_config.cron_secret_len);
	if (!ok)
	{
		if (route->kind == RK_WEBHOOK)
			metrics_webhook_reject(WR_UNAUTHORIZED);
		return respond_json(conn, req, MHD_HTTP_UNAUTHORIZED,
							"{\"error\":\"Unauthorized\"}");
	}

	cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
									 MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl != NULL)
	{
		char	   *end;
		unsigned long long n = strtoull(cl, &end, 10);

		if (n > ingest_config.max_body)
		{
			req->too_large = true;
			if (route->kind == RK_WEBHOOK)
				metrics_webhook_reject(WR_TOO_LARGE);
			return respond_json(conn, req, MHD_HTTP_CONTENT_TOO_LARGE,
								"{\"error\":\"Payload too large\"}");
		}
		/* a webhook's buffer is made to measure */
		if (route->kind == RK_WEBHOOK && *end == '\0' && n > 0)
		{
			req->body = malloc((size_t) n);
			if (req->body == NULL)
				return MHD_NO;
			req->body_cap = (size_t) n;
		}
	}
	*done = false;
	return MHD_YES;				/* wait for the body */
}

/*
 * receive_body takes one chunk of body.  A webhook's body is kept, up to
 * the limit; past it the request is marked too large and its buffer freed
 * (the rest is dropped as it arrives).  A cron call's body is not used and
 * not kept, only counted against the same limit.
 */
static void
receive_body(Request *req, const char *data, size_t n)
{
	size_t		need;

	req->bytes_in += n;
	if (req->too_large)
		return;
	if (req->bytes_in > ingest_config.max_body)
	{
		req->too_large = true;
		free(req->body);
		req->body = NULL;
		req->body_len = req->body_cap = 0;
		return;
	}
	if (routes[req->route].kind != RK_WEBHOOK)
		return;
	need = req->body_len + n;
	if (need > req->body_cap)
	{
		size_t		cap = req->body_cap ? req->body_cap : 4096;
		char	   *p;

		while (cap < need)
			cap *= 2;
		if (cap > ingest_config.max_body)
			cap = ingest_config.max_body;
		p = realloc(req->body, cap);
		if (p == NULL)
		{
			/* out of memory: refuse like an oversize body */
			req->too_large = true;
			free(req->body);
			req->body = NULL;
			req->body_len = req->body_cap = 0;
			return;
		}
		req->body = p;
		req->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, n);
	req->body_len = need;
}

/*
 * request_has_body tells whether a request announces a body: a
 * Content-Length other than 0, or a Transfer-Encoding.
 */
static bool
request_has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												 MHD_HTTP_HEADER_CONTENT_LENGTH);

	if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
									MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)
		return true;
	return cl != NULL && strspn(cl, "0") != strlen(cl);
}

/*
 * handle_request is the libmicrohttpd access handler (see the file
 * header for the order of calls).
 */
enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size,
			   void **con_cls)
{
	Request    *req = *con_cls;
	bool		done;

	(void) cls;
	(void) version;
	if (req == NULL)
	{
		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		req->start_ns = monotonic_ns();
		req->route = route_lookup(url);
		copy_printable(req->method, method, sizeof(req->method) - 4);
		copy_printable(req->path, url, LOG_PATH_MAX);
		*con_cls = req;
		__atomic_add_fetch(&ingest_in_flight, 1, __ATOMIC_RELAXED);

		/*
		 * An answer queued before the request is fully read makes
		 * libmicrohttpd close the connection.  That is what we want for
		 * a refused request with a body (it is not read), but a request
		 * without one is better answered on the next call, which comes
		 * at once, keeping the connection alive.
		 */
		if (request_has_body(conn))
			return begin_request(conn, req, method, &done);
		req->deferred = true;
		return MHD_YES;
	}

	if (*upload_data_size > 0)
	{
		bool		was_too_large = req->too_large;

		receive_body(req, upload_data, *upload_data_size);
		*upload_data_size = 0;
		if (req->too_large && !was_too_large && routes[req->route].kind == RK_WEBHOOK)
			metrics_webhook_reject(WR_TOO_LARGE);

		/*
		 * libmicrohttpd 0.9 cannot answer in the middle of a body, so the rest
		 * of an oversize body without Content-Length (chunked) is read and
		 * dropped, then answered 413; one that goes on past twice the limit
		 * gets its connection closed instead.
		 */
		if (req->too_large && req->bytes_in / 2 > ingest_config.max_body)
			return MHD_NO;
		return MHD_YES;
	}

	if (req->deferred)
	{
		enum MHD_Result ret;

		req->deferred = false;
		ret = begin_request(conn, req, method, &done);
		if (ret != MHD_YES || done)
			return ret;
	}
	if (req->status != 0)
		return MHD_YES;			/* already answered */
	if (req->dispatched)
		return MHD_NO;			/* resumed without an answer: give up */
	if (req->too_large)
		return respond_json(conn, req, MHD_HTTP_CONTENT_TOO_LARGE,
							"{\"error\":\"Payload too large\"}");
	return dispatch(conn, req);
}

/*
 * access_log writes one line per request to stderr in a single write():
 * time, method, path, status, duration and body bytes in and out.  Never
 * headers, query strings or bodies.
 */
static void
access_log(const Request *req, int64_t duration_ns,
		   enum MHD_RequestTerminationCode toe)
{
	char		line[512];
	char		stamp[32];
	struct timespec ts;
	struct tm	tm;
	int			n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s %u %.3fms in=%zu out=%zu%s\n",
				 stamp, ts.tv_nsec / 1000000, req->method, req->path,
				 req->status, (double) duration_ns / 1e6, req->bytes_in,
				 req->bytes_out,
				 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (not completed)");
	if (n > 0)
	{
		if ((size_t) n >= sizeof(line))
		{
			n = sizeof(line) - 1;
			line[n - 1] = '\n';
		}
		if (write(STDERR_FILENO, line, (size_t) n) < 0)
		{
			/* nothing sensible to do */
		}
	}
}

/*
 * request_completed is libmicrohttpd's completion callback: it counts and
 * logs the request, then frees it.
 */
void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;
	int64_t		duration;

	(void) cls;
	(void) conn;
	if (req == NULL)
		return;
	duration = monotonic_ns() - req->start_ns;
	metrics_observe(req->route, req->status, duration);
	access_log(req, duration, toe);
	free(req->body);
	free(req);
	*con_cls = NULL;
	__atomic_sub_fetch(&ingest_in_flight, 1, __ATOMIC_RELAXED);
}
