/*-------------------------------------------------------------------------
 *
 * fuzz_ingest.c
 *	  libFuzzer harness of the ingest's request handling: raw HTTP bytes go
 *	  through libmicrohttpd's parser into the ingest's own access handler
 *	  (ingest/routes.c: route, method, secret check, Content-Length and
 *	  body limit, body buffering, the answers and the access log) and its
 *	  completion callback, exactly as in the daemon, but without a TCP
 *	  socket: each input is one connection over a socketpair added with
 *	  MHD_add_connection() to a daemon driven by this thread.
 *
 *	  The database and the worker pool are replaced by stubs (db.c and
 *	  pool.c are not linked): a request handed to the pool is run on this
 *	  thread, and the SQL call answers what the input's first byte asks
 *	  for (a value, NULL, an SQL error of some SQLSTATE, the database
 *	  down), so that every answer path of routes.c is reached.
 *
 * Input: one configuration byte, then the bytes the client sends.
 *	bit 0: a webhook secret is configured    bit 1: a cron secret is
 *	bits 2-4: what the SQL call answers      bit 5: max body 64 bytes
 *	bit 6: shutting down                     bit 7: the pool takes no work
 *
 * Invariants checked (a violation aborts):
 *	- the SQL of a webhook or cron call is made only when the client sent
 *	  the configured secret, and only with the route's fixed SQL;
 *	- a webhook body reaches SQL whole and never longer than the limit;
 *	- every answer is an HTTP status line, and the ingest's own JSON
 *	  error answers hold no raw control characters (messages escaped);
 *	- every request is completed and freed (no request in flight once
 *	  the connection is closed); AddressSanitizer checks the memory.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE				/* memmem */
#include "sam_ingest.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_check.h"

#define WEBHOOK_SECRET	"whsec-fuzz-0123"
#define CRON_SECRET		"cron-fuzz-4567"
#define MAX_ROUNDS		64

/* what sam_ingest.c defines */
IngestConfig ingest_config;
volatile int ingest_shutting_down = 0;
int			ingest_in_flight = 0;

/* this input */
static unsigned char mode;
static const char *input;
static size_t input_len;
static int	sql_calls;
static PoolJob *jobs_head;
static PoolJob *jobs_tail;
static char echo[4096];

void
ingest_log(const char *fmt,...)
{
	char		buf[1024];
	va_list		ap;

	/* format it (the format and arguments are checked), print nothing */
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
}

int64_t
monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool
input_contains(const char *s)
{
	return memmem(input, input_len, s, strlen(s)) != NULL;
}

/* input_contains_nocase: the same, ignoring ASCII case (header values) */
static bool
input_contains_nocase(const char *s)
{
	size_t		n = strlen(s);
	size_t		i,
				j;

	for (i = 0; i + n <= input_len; i++)
	{
		for (j = 0; j < n; j++)
			if (tolower((unsigned char) input[i + j]) != tolower((unsigned char) s[j]))
				break;
		if (j == n)
			return true;
	}
	return false;
}

/*
 * db_call (stub) checks what the ingest asks and answers what the input's
 * mode says.
 */
void
db_call(const char *sql, int nparams, const char *const *values,
		const int *lengths, const int *formats, bool may_retry,
		DbResult *out)
{
	static const char *const sqlstates[] = {"22P02", "23505", "42883", "42501", "57014"};
	unsigned	answer = (mode >> 2) & 7;
	bool		webhook = strncmp(sql, "SELECT sam.ingest_webhook(", 26) == 0;
	bool		cron = false;

	(void) may_retry;
	sql_calls++;
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < num_routes; i++)
		if (routes[i].kind == RK_CRON && strcmp(sql, routes[i].sql) == 0)
			cron = true;
	if (webhook)
	{
		CHECK(nparams == 2 && formats[0] == 1 && formats[1] == 0);
		CHECK(ingest_config.webhook_secret != NULL && input_contains(WEBHOOK_SECRET));
		CHECK(lengths[0] >= 0 && (size_t) lengths[0] <= ingest_config.max_body);
		CHECK((size_t) lengths[0] <= input_len);
		CHECK(lengths[0] == 0 || memmem(input, input_len, values[0], lengths[0]) != NULL ||
			  input_contains_nocase("chunked"));
		CHECK(strcmp(values[1], "unipile") == 0 ||
			  strcmp(values[1], "unipile-connection-accepted") == 0);
	}
	else if (cron)
	{
		CHECK(nparams == 0);
		CHECK(ingest_config.cron_secret != NULL && input_contains(CRON_SECRET));
	}
	else
		CHECK(nparams == 0 && (strcmp(sql, "SELECT 1") == 0 ||
							   strcmp(sql, "SELECT sam.metrics_text()") == 0));

	switch (answer)
	{
		case 0:
		case 1:
			out->outcome = DB_OK;
			if (webhook && answer == 1)
			{
				/* the body as the answer: any bytes at all */
				size_t		n = (size_t) lengths[0] < sizeof(echo) ? (size_t) lengths[0] : sizeof(echo);

				memcpy(echo, values[0], n);
				out->value = echo;
				out->value_len = n;
			}
			else
			{
				out->value = "{\"success\": true}\n";
				out->value_len = strlen(out->value);
			}
			break;
		case 2:
			out->outcome = DB_NULL;
			break;
		case 3:
			out->outcome = DB_UNAVAILABLE;
			break;
		default:
			out->outcome = DB_ERROR;
			strcpy(out->sqlstate, sqlstates[(answer - 4 + input_len) % 5]);
			/* a message with quotes, backslashes and control characters */
			{
				size_t		n = input_len < sizeof(echo) - 1 ? input_len : sizeof(echo) - 1;

				memcpy(echo, input, n);
				echo[n] = '\0';
				out->message = echo;
			}
			break;
	}
}

/*
 * db_call_batch (stub): each call is checked as db_call checks it; the
 * batch commits when every call was answered a value, and fails as a whole
 * otherwise (the ingest then makes the calls one by one).
 */
bool
db_call_batch(const char *sql, unsigned n, int nparams,
			  const char *const *values, const int *lengths,
			  const int *formats, DbResult *outs, char *sqlstate)
{
	bool		ok = true;

	CHECK(n >= 1 && n <= MAX_BATCH);
	sqlstate[0] = '\0';
	for (unsigned i = 0; i < n; i++)
	{
		db_call(sql, nparams, values + i * nparams, lengths + i * nparams,
				formats, true, &outs[i]);
		if (outs[i].outcome != DB_OK)
		{
			if (ok && outs[i].outcome == DB_ERROR)
				memcpy(sqlstate, outs[i].sqlstate, 6);
			ok = false;
		}
	}
	if (!ok)
		memset(outs, 0, sizeof(DbResult) * n);
	return ok;
}

int
pool_queued(void)
{
	int			n = 0;

	for (PoolJob *j = jobs_head; j != NULL; j = j->next)
		n++;
	return n;
}

void
db_result_clear(DbResult *r)
{
	memset(r, 0, sizeof(*r));
}

/* pool_submit (stub) suspends the connection and queues its job here */
bool
pool_submit(PoolJob *job, struct MHD_Connection *conn)
{
	if (mode & 0x80)
		return false;
	MHD_suspend_connection(conn);
	job->conn = conn;
	job->next = NULL;
	if (jobs_tail)
		jobs_tail->next = job;
	else
		jobs_head = job;
	jobs_tail = job;
	return true;
}

/*
 * drain_jobs runs the queued jobs as the pool's workers would: a webhook
 * with the webhooks queued behind it, in one batch.
 */
static bool
drain_jobs(void)
{
	bool		ran = false;

	while (jobs_head)
	{
		PoolJob    *jobs[MAX_BATCH];
		unsigned	n = 0;

		do
		{
			jobs[n++] = jobs_head;
			jobs_head = jobs_head->next;
		} while (jobs_head != NULL && n < MAX_BATCH &&
				 jobs[0]->batchable && jobs_head->batchable);
		if (jobs_head == NULL)
			jobs_tail = NULL;
		run_jobs(jobs, n, false);
		ran = true;
	}
	return ran;
}

static void
mhd_quiet_logger(void *cls, const char *fmt, va_list ap)
{
	(void) cls;
	(void) fmt;
	(void) ap;
}

static struct MHD_Daemon *daemon_;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	metrics_init();
	ingest_config.webhook_header = "Unipile-Auth";
	daemon_ = MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_ALLOW_SUSPEND_RESUME |
							   MHD_USE_ERROR_LOG,
							   0, NULL, NULL, handle_request, NULL,
							   MHD_OPTION_EXTERNAL_LOGGER, mhd_quiet_logger, NULL,
							   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							   MHD_OPTION_END);
	CHECK(daemon_ != NULL);
	return 0;
}

/* check_answer checks the first answer the client got */
static void
check_answer(char *resp, size_t len)
{
	const char *body;
	unsigned	status;

	if (len == 0)
		return;
	CHECK(len >= 12 && memcmp(resp, "HTTP/1.", 7) == 0);
	resp[len] = '\0';			/* room was left for it */
	CHECK(resp[9] >= '1' && resp[9] <= '5');
	status = (resp[9] - '0') * 100 + (resp[10] - '0') * 10 + (resp[11] - '0');
	body = memmem(resp, len, "\r\n\r\n", 4);
	if (body == NULL || status == 200)
		return;
	body += 4;
	if (strncmp(body, "{\"error\":", 9) == 0 || strncmp(body, "{\"success\":false", 16) == 0)
	{
		/* the ingest's own JSON: one line, no raw control characters */
		for (const char *p = body; p < resp + len && *p != '}'; p++)
			CHECK((unsigned char) *p >= 0x20);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int			sv[2];
	struct sockaddr_in addr;
	static char resp[1 << 16];
	static char chunk[1 << 16];
	size_t		resp_len = 0;
	size_t		sent = 0;
	int			idle = 0;
	bool		client_open = true;

	if (size < 1)
		return 0;
	mode = data[0];
	input = (const char *) data + 1;
	input_len = size - 1;
	sql_calls = 0;

	ingest_config.webhook_secret = (mode & 1) ? WEBHOOK_SECRET : NULL;
	ingest_config.webhook_secret_len = (mode & 1) ? strlen(WEBHOOK_SECRET) : 0;
	ingest_config.cron_secret = (mode & 2) ? CRON_SECRET : NULL;
	ingest_config.cron_secret_len = (mode & 2) ? strlen(CRON_SECRET) : 0;
	ingest_config.max_body = (mode & 0x20) ? 64 : 1048576;
	ingest_shutting_down = (mode & 0x40) ? 1 : 0;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons(40000);
	if (MHD_add_connection(daemon_, sv[1], (struct sockaddr *) &addr,
						   sizeof(addr)) != MHD_YES)
	{
		close(sv[0]);
		close(sv[1]);
		return 0;
	}

	/* send, serve and read until nothing moves any more */
	for (int round = 0; round < MAX_ROUNDS && idle < 3; round++)
	{
		bool		moved = false;
		ssize_t		n;

		if (sent < input_len)
		{
			n = write(sv[0], input + sent, input_len - sent);
			if (n > 0)
			{
				sent += n;
				moved = true;
			}
		}
		MHD_run(daemon_);
		if (drain_jobs())
		{
			moved = true;
			MHD_run(daemon_);
		}
		while ((n = read(sv[0], chunk, sizeof(chunk))) > 0)
		{
			/* keep the start of the answers; only that is checked */
			size_t		keep = sizeof(resp) - 1 - resp_len;

			if (keep > (size_t) n)
				keep = n;
			memcpy(resp + resp_len, chunk, keep);
			resp_len += keep;
			moved = true;
		}
		if (n == 0)
			break;				/* the server closed the connection */
		idle = moved ? 0 : idle + 1;
	}
	check_answer(resp, resp_len);

	/* the client goes away: every request must be completed and freed */
	close(sv[0]);
	client_open = false;
	for (int round = 0; round < MAX_ROUNDS && ingest_in_flight > 0; round++)
	{
		MHD_run(daemon_);
		drain_jobs();
	}
	MHD_run(daemon_);
	CHECK(!client_open && ingest_in_flight == 0);
	CHECK(jobs_head == NULL);
	return 0;
}
