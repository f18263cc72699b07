/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The sam_ext background worker: the only process that talks to
 *	  Unipile.
 *
 *	  Loop: claim due outbox rows (sam._claim_requests, FOR UPDATE SKIP LOCKED) and
 *	  commit them as in_flight; run their HTTP calls concurrently with
 *	  libcurl multi while no transaction is open; record the results in a new
 *	  transaction (sam._complete), which applies the state transitions.  When
 *	  nothing is due it sleeps on its latch until a committing transaction
 *	  queues work (see shmem.c) or the next row's not_before comes.  At start
 *	  it reconciles rows left in flight by a crash (sam._worker_recover):
 *	  they are checked with Unipile before anything is sent again.
 *
 *	  sam.workers of these processes may run: each claims its own rows (SKIP
 *	  LOCKED), stamps them with its number (outbox.claimed_by) and, when it
 *	  starts, reconciles only the rows it left in flight, so that a worker
 *	  restarted alone never requeues the calls another is making.  Worker 0
 *	  also runs the jobs that wait for their calls (jobs.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "sam_ext.h"
#include "http.h"
#include "jobs.h"

/* longest sleep when nothing is due: a safety net, not the wake-up path */
#define SAM_MAX_IDLE_MS 60000
/* how long results may wait before they are recorded while others fly */
#define SAM_FLUSH_INTERVAL_MS 20
/* transactions that may record one batch, when rows meet a deadlock or a lock */
#define SAM_RECORD_ATTEMPTS 3
/* the pause before the next of them (times the attempt) */
#define SAM_RECORD_RETRY_MS 100L
/* how often a job waiting for its calls is looked at */
#define SAM_JOB_POLL_MS 100
/* after SIGTERM: how long answers still in flight are waited for */
#define SAM_SHUTDOWN_DRAIN_MS 500
/* after SIGTERM: seconds after which the worker ends wherever it is */
#define SAM_SHUTDOWN_GRACE_S 3
/* accounts whose overdue actions one start of a worker queues again, at most */
#define SAM_REQUEUE_MAX_ACCOUNTS 100000

static MemoryContext requests_cxt = NULL;
static char *api_key = NULL;	/* in TopMemoryContext, never logged */
static bool warned_no_dsn = false;

int			sam_worker_number = -1;

static volatile sig_atomic_t shutdown_requested = false;
static volatile sig_atomic_t grace_armed = false;
static timer_t grace_timer;
static bool grace_timer_ok = false;

/*
 * worker_sigterm: SIGTERM (a fast shutdown, pg_terminate_backend) asks the
 * worker to end once it has recorded what it holds: the answers it received
 * and those that come within SAM_SHUTDOWN_DRAIN_MS (finish_and_exit).  Ended
 * by die() at once, as before, a record in progress was rolled back and
 * the answers waiting for the next one were lost: their calls were then
 * checked with Unipile after the restart, a notification was posted a
 * second time, and a first message's chat was not known.  The grace timer
 * (timer_settime is async-signal-safe) ends it SAM_SHUTDOWN_GRACE_S later
 * wherever it is.
 */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	shutdown_requested = true;
	if (grace_timer_ok && !grace_armed)
	{
		struct itimerspec its = {{0, 0}, {SAM_SHUTDOWN_GRACE_S, 0}};

		grace_armed = true;
		/* (no timer, no bound: then the worker ends at once, as it always did) */
		if (timer_settime(grace_timer, 0, &its, NULL) != 0)
			die(postgres_signal_arg);
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * grace_expired (SIGUSR2, which PostgreSQL leaves unused in background
 * workers): a SIGTERM not acted on within SAM_SHUTDOWN_GRACE_S (a record
 * waiting for a lock, a job's long statement, a commit waiting for a
 * synchronous standby) ends the worker there, as die() always did.
 */
static void
grace_expired(SIGNAL_ARGS)
{
	die(postgres_signal_arg);
}

static void
worker_exit(int code, Datum arg)
{
	if (sam_shared)
	{
		SamWorkerSlot *w = &sam_shared->workers[sam_worker_number];

		SpinLockAcquire(&sam_shared->mutex);
		if (w->pid == MyProcPid)
		{
			w->latch = NULL;
			w->pid = 0;
			w->ready = false;
		}
		SpinLockRelease(&sam_shared->mutex);
	}
	if (api_key)
		explicit_bzero(api_key, strlen(api_key));
	sam_http_shutdown();
}

/*
 * load_api_key reads the API key from sam.unipile_api_key_file.  A missing
 * or unreadable file is reported by path only, never with its content.
 */
static void
load_api_key(void)
{
	FILE	   *f;
	char		buf[1024];
	size_t		n;

	if (api_key)
	{
		explicit_bzero(api_key, strlen(api_key));
		pfree(api_key);
		api_key = NULL;
	}
	/* and the headers made of it, once the transfers that use them are over */
	sam_http_forget_api_key();
	if (sam_unipile_api_key_file == NULL || sam_unipile_api_key_file[0] == '\0')
		return;
	f = AllocateFile(sam_unipile_api_key_file, "r");
	if (f == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not read the Unipile API key file \"%s\": %m",
						sam_unipile_api_key_file),
				 errhint("Requests are sent without an API key until the file can be read and the configuration is reloaded.")));
		return;
	}
	n = fread(buf, 1, sizeof(buf) - 1, f);
	FreeFile(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
					 buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
	if (n > 0)
		api_key = MemoryContextStrdup(TopMemoryContext, buf);
	else
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("the Unipile API key file \"%s\" is empty",
						sam_unipile_api_key_file),
				 errhint("Requests are sent without an API key until the file holds one and the configuration is reloaded.")));
	explicit_bzero(buf, sizeof(buf));
}

/* sam_begin_tx starts a transaction with SPI and a snapshot (worker_spi's bracket) */
void
sam_begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* sam_end_tx commits what sam_begin_tx started */
void
sam_end_tx(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* extension_installed tells whether sam_ext exists in this database */
static bool
extension_installed(void)
{
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	found = OidIsValid(get_extension_oid("sam_ext", true));
	CommitTransactionCommand();
	return found;
}

/*
 * The request objects sam._claim_requests answers are read here, in C:
 * {"method", "path", "query": {name: value}, "json": {...} | "form":
 * [[name, value], ...]}.  sam._claim gives the same in columns, built in
 * SQL; the two must agree (the TAP tests send through this path, the
 * pg_regress tests read sam._claim).
 */

static char *build_url(const char *path, char **qn, char **qv, int nq, bool *external);

/* json_value_json is a JSON value's JSON text, as ::text gives it */
static char *
json_value_json(JsonbValue *v)
{
	Jsonb	   *jb;

	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	jb = JsonbValueToJsonb(v);
	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}

/*
 * json_value_text is the text of a JSON value as ->> gives it: a string as
 * is, anything else as its JSON text; NULL for JSON null.  Both allocate in
 * the current memory context.
 */
static char *
json_value_text(JsonbValue *v)
{
	if (v->type == jbvNull)
		return NULL;
	if (v->type == jbvString)
		return pnstrdup(v->val.string.val, v->val.string.len);
	return json_value_json(v);
}

/* request_member finds a member of the request object; NULL when absent */
static JsonbValue *
request_member(Jsonb *request, const char *key, JsonbValue *buf)
{
	if (!JB_ROOT_IS_OBJECT(request))
		return NULL;
	return getKeyJsonValueFromContainer(&request->root, key, strlen(key), buf);
}

/* query_param_cmp orders query parameters by name (bytes, as COLLATE "C") */
static int
query_param_cmp(const void *a, const void *b)
{
	return strcmp(((char *const *) a)[0], ((char *const *) b)[0]);
}

/*
 * request_query reads the request's "query" object into *names and
 * *values (in name order; a JSON null is an empty value).  Returns how many.
 */
static int
request_query(Jsonb *request, char ***names, char ***values)
{
	JsonbValue	buf;
	JsonbValue *query = request_member(request, "query", &buf);
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	char	  **pairs;
	int			n = 0;
	int			size;
	int			i;

	*names = *values = NULL;
	if (query == NULL || query->type != jbvBinary ||
		!JsonContainerIsObject(query->val.binary.data))
		return 0;
	size = JsonContainerSize(query->val.binary.data);
	pairs = palloc0(sizeof(char *) * 2 * (size + 1));
	it = JsonbIteratorInit(query->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && n < size)
			pairs[2 * n] = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE && n < size)
		{
			char	   *text = json_value_text(&v);

			pairs[2 * n + 1] = text ? text : pstrdup("");
			n++;
		}
	}
	qsort(pairs, n, 2 * sizeof(char *), query_param_cmp);
	*names = palloc0(sizeof(char *) * (n + 1));
	*values = palloc0(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
	{
		(*names)[i] = pairs[2 * i];
		(*values)[i] = pairs[2 * i + 1];
	}
	return n;
}

/*
 * request_form reads the request's "form" array of [name, value] pairs into
 * req (a missing or JSON null element is an empty string).
 */
static void
request_form(Jsonb *request, SamHttpRequest *req)
{
	JsonbValue	buf;
	JsonbValue *form = request_member(request, "form", &buf);
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	int			size;

	req->nform = 0;
	req->form_names = req->form_values = NULL;
	if (form == NULL || form->type != jbvBinary ||
		!JsonContainerIsArray(form->val.binary.data))
		return;
	size = JsonContainerSize(form->val.binary.data);
	req->form_names = palloc0(sizeof(char *) * (size + 1));
	req->form_values = palloc0(sizeof(char *) * (size + 1));
	it = JsonbIteratorInit(form->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *name = NULL;
		char	   *value = NULL;

		if (tok != WJB_ELEM || req->nform >= size)
			continue;
		if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data))
		{
			JsonbValue *e;

			if ((e = getIthJsonbValueFromContainer(v.val.binary.data, 0)) != NULL)
				name = json_value_text(e);
			if ((e = getIthJsonbValueFromContainer(v.val.binary.data, 1)) != NULL)
				value = json_value_text(e);
		}
		req->form_names[req->nform] = name ? name : pstrdup("");
		req->form_values[req->nform] = value ? value : pstrdup("");
		req->nform++;
	}
}

/*
 * request_from_jsonb fills req's method, URL and body from a request
 * object.  Allocates in the current memory context (the request's).
 */
static void
request_from_jsonb(SamHttpRequest *req, Jsonb *request)
{
	JsonbValue	buf;
	JsonbValue *v;
	char	  **qn;
	char	  **qv;
	int			nq;
	char	   *path = NULL;

	v = request_member(request, "method", &buf);
	req->method = v ? json_value_text(v) : NULL;
	v = request_member(request, "path", &buf);
	if (v != NULL)
		path = json_value_text(v);
	req->has_path = (path != NULL && path[0] != '\0');
	nq = request_query(request, &qn, &qv);
	req->url = build_url(path ? path : "", qn, qv, nq, &req->external);
	v = request_member(request, "json", &buf);
	req->json_body = v ? json_value_json(v) : NULL;
	request_form(request, req);
}

/*
 * build_url joins the DSN, the (already encoded) path and the query
 * parameters, which are percent-encoded here.
 */
static char *
build_url(const char *path, char **qn, char **qv, int nq, bool *external)
{
	StringInfoData url;
	const char *dsn = sam_unipile_dsn;
	int			len = strlen(dsn);
	int			i;

	initStringInfo(&url);
	*external = (pg_strncasecmp(path, "http://", 7) == 0 ||
				 pg_strncasecmp(path, "https://", 8) == 0);
	if (*external)
		appendStringInfoString(&url, path);
	else
	{
		if (strstr(dsn, "://") == NULL)
			appendStringInfoString(&url, "https://");
		while (len > 0 && dsn[len - 1] == '/')
			len--;
		appendBinaryStringInfo(&url, dsn, len);
		appendStringInfoString(&url, path);
	}
	for (i = 0; i < nq; i++)
	{
		char	   *v = curl_easy_escape(NULL, qv[i], 0);
		char	   *k = curl_easy_escape(NULL, qn[i], 0);

		appendStringInfo(&url, "%c%s=%s", i == 0 ? '?' : '&', k, v);
		curl_free(v);
		curl_free(k);
	}
	return url.data;
}

/*
 * claim_and_start claims up to max_rows due rows, commits them as in
 * flight, then starts their HTTP calls.  Returns the number claimed.
 */
static int
claim_and_start(int max_rows)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];
	int			ret;
	uint64		i;
	List	   *reqs = NIL;
	ListCell   *lc;
	int			n;

	args[0] = Int32GetDatum(max_rows);
	args[1] = Int32GetDatum(sam_worker_number);
	sam_begin_tx("sam_ext: claiming outbox rows");

	/*
	 * The claim reaches the disk before any call goes out, whatever the
	 * server's or the database's synchronous_commit: a claim lost in a crash
	 * would leave its rows queued, to be sent again without a check.
	 */
	if (synchronous_commit < SYNCHRONOUS_COMMIT_LOCAL_FLUSH)
		(void) set_config_option("synchronous_commit", "local", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	ret = SPI_execute_with_args("SELECT id, request, fresh_connection "
								"FROM sam._claim_requests($1, $2)",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "sam._claim_requests failed: %d", ret);

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		SamHttpRequest *req = sam_http_new_request(requests_cxt, id);
		MemoryContext old = MemoryContextSwitchTo(req->cxt);
		Datum		d;
		Jsonb	   *request;

		d = SPI_getbinval(tup, desc, 2, &isnull);
		if (isnull)
			elog(ERROR, "outbox row " INT64_FORMAT " was claimed without a request", id);
		request = DatumGetJsonbP(d);
		request_from_jsonb(req, request);
		if ((Pointer) request != DatumGetPointer(d))
			pfree(request);		/* a detoasted copy */
		d = SPI_getbinval(tup, desc, 3, &isnull);
		req->fresh_connection = !isnull && DatumGetBool(d);
		/* the list must outlive SPI_finish: keep it in the worker's context */
		MemoryContextSwitchTo(requests_cxt);
		reqs = lappend(reqs, req);
		MemoryContextSwitchTo(old);
	}
	sam_end_tx();

	/* committed as in_flight: only now may the calls go out */
	n = list_length(reqs);
	foreach(lc, reqs)
	{
		SamHttpRequest *req = (SamHttpRequest *) lfirst(lc);

		/* the Unipile key goes to Unipile only, never to a notification hook */
		sam_http_start(req, req->external ? NULL : api_key);
	}
	list_free(reqs);
	return n;
}

/*
 * complete_args fills args[0..4] of sam._complete from the finished
 * requests: ids, statuses, bodies (NULL when none, or when not storable as
 * text: the reason becomes the error), errors and durations.
 */
static void
complete_args(List *finished, Datum *args)
{
	int			n = list_length(finished);
	Datum	   *ids;
	Datum	   *statuses;
	Datum	   *bodies;
	bool	   *body_nulls;
	Datum	   *errors;
	bool	   *error_nulls;
	Datum	   *elapsed;
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			i = 0;
	ListCell   *lc;

	/*
	 * Called in the record's transaction: allocated in SPI's context, freed
	 * by SPI_finish (outside a transaction the current context is
	 * TopMemoryContext, where they would stay for good: about 45 bytes a
	 * request, 45 MB a million).
	 */
	ids = palloc(sizeof(Datum) * n);
	statuses = palloc(sizeof(Datum) * n);
	bodies = palloc(sizeof(Datum) * n);
	body_nulls = palloc(sizeof(bool) * n);
	errors = palloc(sizeof(Datum) * n);
	error_nulls = palloc(sizeof(bool) * n);
	elapsed = palloc(sizeof(Datum) * n);
	foreach(lc, finished)
	{
		SamHttpRequest *req = lfirst(lc);
		const char *err = req->error;

		ids[i] = Int64GetDatum(req->id);
		statuses[i] = Int32GetDatum((int32) req->status);
		body_nulls[i] = true;
		bodies[i] = (Datum) 0;
		if (req->response.data && req->response.len > 0)
		{
			if (memchr(req->response.data, '\0', req->response.len) != NULL)
				err = err ? err : "response contains NUL bytes";
			else if (!pg_verifymbstr(req->response.data, req->response.len, true))
				err = err ? err : "response is not valid UTF-8";
			else
			{
				bodies[i] = PointerGetDatum(cstring_to_text_with_len(req->response.data,
																	 req->response.len));
				body_nulls[i] = false;
			}
		}
		error_nulls[i] = (err == NULL);
		errors[i] = err ? CStringGetTextDatum(err) : (Datum) 0;
		elapsed[i] = Float8GetDatum(req->elapsed_ms);
		i++;
	}
	args[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(statuses, n, INT4OID, 4, true, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_md_array(bodies, body_nulls, 1, dims, lbs,
												 TEXTOID, -1, false, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_md_array(errors, error_nulls, 1, dims, lbs,
												 TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = PointerGetDatum(construct_array(elapsed, n, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * record_results records finished requests with sam._complete and frees
 * them.  One transaction, unless some results meet a deadlock or a lock
 * (another worker recording, a job, a webhook taking the same rows in
 * another order): sam._complete then leaves them in flight, and they are
 * recorded again in a new transaction, once this one has let go of its
 * locks, after a short pause.  The last attempt records them whatever
 * happens (dead, their outcome to be checked, if they still cannot be).
 */
static void
record_results(List *finished)
{
	int			n = list_length(finished);
	int			attempt;
	bool		any_message = false;
	ListCell   *lc;

	/* messages and notifications are the requests on a connection of their own */
	foreach(lc, finished)
		any_message |= ((SamHttpRequest *) lfirst(lc))->fresh_connection;

	for (attempt = 1;; attempt++)
	{
		bool		last = (attempt >= SAM_RECORD_ATTEMPTS);
		Oid			argtypes[6] = {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, FLOAT8ARRAYOID, BOOLOID};
		Datum		args[6];
		int			ret;
		int			recorded = n;
		bool		isnull;

		sam_begin_tx("sam_ext: recording Unipile results");

		/*
		 * A record of invitations, reads and the like does not wait for its
		 * WAL to reach the disk (the claim does: a lost claim would send
		 * again).  A crash can lose the last such records, up to three
		 * wal_writer_delay; their rows are then in flight again, and the
		 * worker checks their outcome with Unipile before anything is sent,
		 * as for any call in flight at a crash.  The next claim that takes
		 * rows flushes them anyway, so the worker waits for one flush a
		 * cycle instead of two (bench/delivery.sh: +4-11% calls/s with two
		 * workers).  A record that holds the answer to a message (or a
		 * notification) waits: a first message's answer names the chat, the
		 * only way to check it later, and a message must not be left to a
		 * check that cannot be made.
		 */
		if (!any_message)
			(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);

		complete_args(finished, args);
		args[5] = BoolGetDatum(!last);
		ret = SPI_execute_with_args("SELECT sam._complete($1, $2, $3, $4, $5, $6)",
									6, argtypes, args, NULL, false, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "sam._complete failed: %d", ret);
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				recorded = DatumGetInt32(d);
		}
		sam_end_tx();

		if (recorded >= n || last)
			break;
		ereport(LOG,
				(errmsg("sam_ext worker records %d results again: they met a deadlock or a lock",
						n - recorded)));
		/* a lock held for a while (not a deadlock): give its holder a moment */
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 SAM_RECORD_RETRY_MS * attempt, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}

	foreach(lc, finished)
		sam_http_release((SamHttpRequest *) lfirst(lc));
}

/*
 * set_ready says whether the worker serves the database: sam.worker_pid()
 * and sam.workers() report it only once the rows it left in flight before
 * have been reconciled, so that whoever waits for the worker (the tests, a
 * deployment script) knows it will not requeue calls claimed after that.
 */
static void
set_ready(bool ready)
{
	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->workers[sam_worker_number].ready = ready;
	SpinLockRelease(&sam_shared->mutex);
}

/*
 * give_back_memory returns the heap memory a burst of calls needed to the
 * system once the worker goes idle: the easy handles kept for the next
 * calls are freed, and the heap trimmed.  While busy, finished requests
 * keep their buffers until their batch is recorded, so the heap grows to
 * what the largest batch held; glibc keeps that high-water mark resident
 * unless asked (bench/memory.sh saw the worker's private memory step up by
 * ~5 MB in one round and stay there).  Once per idle spell, not per
 * wake-up.
 */
static void
give_back_memory(void)
{
	sam_http_trim();
#ifdef __GLIBC__
	(void) malloc_trim(0);
#endif
}

/*
 * requeue_overdue has the actions that came due while no worker ran queued
 * again within the caps (sam._requeue_overdue), one account per
 * transaction, so that no lock of one account is held while another is
 * waited for (the jobs lock accounts in another order).  Bounded: an
 * account is answered once it is done, and a pass sees each at most once
 * or twice.
 */
static void
requeue_overdue(void)
{
	int			i;

	for (i = 0; i < SAM_REQUEUE_MAX_ACCOUNTS; i++)
	{
		bool		done = true;

		sam_begin_tx("sam_ext: queueing again what came due while no worker ran");
		if (SPI_execute("SELECT sam._requeue_overdue()", false, 1) != SPI_OK_SELECT)
			elog(ERROR, "sam._requeue_overdue failed");
		if (SPI_processed == 1)
		{
			bool		isnull;

			(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			done = isnull;
		}
		sam_end_tx();
		if (done)
			break;
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * recover_in_flight reconciles the rows this worker left in flight (and,
 * for worker 0, those of worker numbers sam.workers no longer runs).
 */
static void
recover_in_flight(void)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];

	args[0] = Int32GetDatum(sam_worker_number);
	args[1] = Int32GetDatum(sam_workers);
	sam_begin_tx("sam_ext: reconciling rows left in flight");
	if (SPI_execute_with_args("SELECT sam._worker_recover($1, $2)", 2, argtypes, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "sam._worker_recover failed");
	sam_end_tx();
	requeue_overdue();
}

/* next_due_ms asks how long until the next claimable row is due */
static long
next_due_ms(void)
{
	long		ms = SAM_MAX_IDLE_MS;
	bool		isnull;

	sam_begin_tx("sam_ext: looking for due work");
	if (SPI_execute("SELECT sam._next_due_ms()", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			ms = DatumGetInt64(d);
	}
	sam_end_tx();
	if (ms < 0)
		ms = 0;
	if (ms > SAM_MAX_IDLE_MS)
		ms = SAM_MAX_IDLE_MS;
	return ms;
}

/*
 * drive_requests lets the calls in flight progress for up to 10 ms; the
 * list of those that finished grows in requests_cxt.  Returns how many are
 * still in flight.
 */
static int
drive_requests(List **finished)
{
	MemoryContext old = MemoryContextSwitchTo(requests_cxt);
	int			in_flight = sam_http_drive(10, finished);

	MemoryContextSwitchTo(old);
	return in_flight;
}

/*
 * finish_and_exit ends the worker on SIGTERM, or for a DROP DATABASE: the
 * answers it holds are recorded first, on SIGTERM with those that come
 * within SAM_SHUTDOWN_DRAIN_MS (no new call is started).  The calls still
 * in flight are checked with Unipile after the restart, like those of a
 * crash.
 */
static void
finish_and_exit(List *finished, bool dropping)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), SAM_SHUTDOWN_DRAIN_MS);
	int			in_flight = sam_http_in_flight();
	int			n;

	while (!dropping && in_flight > 0 && GetCurrentTimestamp() < until)
		in_flight = drive_requests(&finished);
	n = list_length(finished);
	if (n > 0)
		record_results(finished);
	if (dropping)
	{
		/* step aside for DROP DATABASE */
		ereport(LOG,
				(errmsg("sam_ext worker disconnects: database \"%s\" is being dropped",
						sam_database_name),
				 errdetail("%d answers were recorded first; %d calls in flight are checked after the restart.",
						   n, in_flight)));
		proc_exit(1);
	}
	ereport(LOG,
			(errmsg("sam_ext worker ends on SIGTERM"),
			 errdetail("%d answers were recorded first; %d calls in flight are checked after the restart.",
					   n, in_flight)));
	/* the usual end of a worker asked to stop (FATAL, exit code 1: restarted) */
	die(SIGTERM);
	CHECK_FOR_INTERRUPTS();
	proc_exit(1);
}

static void
process_interrupts(List *finished)
{
	if (shutdown_requested || sam_shared->drop_pending)
		finish_and_exit(finished, !shutdown_requested);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		load_api_key();
		warned_no_dsn = false;
	}
}

/*
 * sam_worker_main is the entry point of the background worker.
 */
void
sam_worker_main(Datum main_arg)
{
	bool		recovered = false;
	bool		may_have_work = true;
	bool		jobs_running = false;
	bool		busy_since_trim = false;	/* calls made since the last trim */
	List	   *finished = NIL;
	TimestampTz last_flush = GetCurrentTimestamp();
	TimestampTz last_jobs = 0;

	sam_worker_number = DatumGetInt32(main_arg);
	Assert(sam_worker_number >= 0 && sam_worker_number < SAM_MAX_WORKERS);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* while the served database is being dropped, or is gone, do not connect to it */
	sam_wait_until_database_usable();
	BackgroundWorkerInitializeConnection(sam_database_name, NULL, 0);

	/*
	 * From here a SIGTERM lets the worker record what it holds first
	 * (worker_sigterm), within SAM_SHUTDOWN_GRACE_S (grace_expired).
	 */
	{
		struct sigevent sev;

		memset(&sev, 0, sizeof(sev));
		sev.sigev_notify = SIGEV_SIGNAL;
		sev.sigev_signo = SIGUSR2;
		pqsignal(SIGUSR2, grace_expired);
		grace_timer_ok = (timer_create(CLOCK_MONOTONIC, &sev, &grace_timer) == 0);
		if (!grace_timer_ok)
			ereport(WARNING,
					(errmsg("sam_ext worker could not create its shutdown timer: %m"),
					 errdetail("A SIGTERM ends it at once, as for any background worker.")));
		else
			pqsignal(SIGTERM, worker_sigterm);
	}
	if (ProcDiePending)
		shutdown_requested = true;

	/*
	 * Connected: say so at once, so that DROP DATABASE, which waits for the
	 * workers it sees, cannot miss this one.
	 */
	on_proc_exit(worker_exit, (Datum) 0);
	SpinLockAcquire(&sam_shared->mutex);
	sam_shared->workers[sam_worker_number].latch = MyLatch;
	sam_shared->workers[sam_worker_number].pid = MyProcPid;
	SpinLockRelease(&sam_shared->mutex);

	/* the name _PG_init registered it under: "sam_ext worker", "sam_ext worker 1"... */
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	requests_cxt = AllocSetContextCreate(TopMemoryContext, "sam_ext requests",
										 ALLOCSET_DEFAULT_SIZES);
	sam_http_init();
	load_api_key();

	if (sam_workers == 1)
		ereport(LOG,
				(errmsg("sam_ext worker started for database \"%s\"", sam_database_name)));
	else
		ereport(LOG,
				(errmsg("sam_ext worker %d of %d started for database \"%s\"",
						sam_worker_number, sam_workers, sam_database_name)));

	for (;;)
	{
		int			in_flight = sam_http_in_flight();
		long		timeout;

		process_interrupts(finished);

		if (in_flight == 0 && finished == NIL)
		{
			/* between batches: is there anything to serve? */
			if (!extension_installed())
			{
				recovered = false;
				set_ready(false);
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 5000L, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				continue;
			}
			if (!recovered)
			{
				recover_in_flight();
				if (sam_worker_number == 0)
					sam_jobs_release_all();
				recovered = true;
				set_ready(true);
				may_have_work = true;
			}
			jobs_running = sam_worker_number == 0 && !shutdown_requested &&
				sam_jobs_pending() && sam_service_jobs();
			if (sam_unipile_dsn == NULL || sam_unipile_dsn[0] == '\0')
			{
				if (!warned_no_dsn)
					ereport(LOG,
							(errmsg("sam_ext worker is idle: sam.unipile_dsn is not set")));
				warned_no_dsn = true;
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 jobs_running ? SAM_JOB_POLL_MS : SAM_MAX_IDLE_MS,
								 PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
				continue;
			}
		}

		/* fill free slots */
		if (may_have_work && !shutdown_requested && in_flight < sam_max_concurrency &&
			list_length(finished) < sam_batch_size)
		{
			int			want = Min(sam_max_concurrency - in_flight, sam_batch_size);
			int			got = claim_and_start(want);

			if (got < want)
				may_have_work = false;
			if (got > 0)
				busy_since_trim = true;
			in_flight += got;
		}

		if (in_flight > 0)
		{
			in_flight = drive_requests(&finished);
			/* a commit elsewhere may have queued more */
			if (MyLatch->is_set)
			{
				ResetLatch(MyLatch);
				may_have_work = true;
			}
		}

		if (finished != NIL &&
			(in_flight == 0 || list_length(finished) >= sam_batch_size ||
			 TimestampDifferenceExceeds(last_flush, GetCurrentTimestamp(),
										SAM_FLUSH_INTERVAL_MS)))
		{
			record_results(finished);
			list_free(finished);
			finished = NIL;
			last_flush = GetCurrentTimestamp();
			may_have_work = true;
			/* while busy, jobs waiting for their calls are looked at now and then */
			if (sam_worker_number == 0 && !shutdown_requested && sam_jobs_pending() &&
				TimestampDifferenceExceeds(last_jobs, last_flush, SAM_JOB_POLL_MS))
			{
				jobs_running = sam_service_jobs();
				last_jobs = GetCurrentTimestamp();
			}
			continue;
		}

		if (in_flight > 0 || may_have_work)
			continue;

		/* idle: sleep until woken by a commit or until the next row is due */
		timeout = next_due_ms();
		if (jobs_running && timeout > SAM_JOB_POLL_MS)
			timeout = SAM_JOB_POLL_MS;

		/*
		 * Due rows that the claim did not take are locked by someone else
		 * right now; look again shortly instead of spinning.
		 */
		if (timeout == 0)
			timeout = 50;
		if (busy_since_trim)
		{
			give_back_memory();
			busy_since_trim = false;
		}
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		may_have_work = true;
	}
}
