/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  The ingest's own Prometheus counters (text format 0.0.4) and the small
 *	  growable string buffer used to build answers.
 *
 * Counters are plain 64-bit integers updated with relaxed atomics from the
 * pool threads; /metrics reads them without a lock (each value is exact,
 * a scrape is not a snapshot across values, as usual for Prometheus).
 *
 * ingest/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include "sam_ingest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ROUTES	16

/* Status codes the ingest answers; anything else is counted as "other". */
static const unsigned status_codes[] = {
	200, 400, 401, 403, 404, 405, 413, 500, 501, 503
};
#define NUM_STATUS	(sizeof(status_codes) / sizeof(status_codes[0]))

/* Upper bounds (seconds) of the request duration histogram. */
static const double duration_buckets[] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define NUM_BUCKETS	(sizeof(duration_buckets) / sizeof(duration_buckets[0]))

static const char *const reject_names[NUM_WEBHOOK_REJECTS] = {
	"unauthorized", "too_large", "invalid_json", "db_unavailable", "internal"
};

static uint64_t requests_total[MAX_ROUTES][NUM_STATUS + 1];
static uint64_t duration_hist[MAX_ROUTES][NUM_BUCKETS + 1];	/* not cumulative */
static uint64_t duration_sum_ns[MAX_ROUTES];
static uint64_t webhook_rejects[NUM_WEBHOOK_REJECTS];
static uint64_t db_connects[2];		/* [0] failed, [1] ok */
static uint64_t webhook_batches[2];	/* [0] failed as a whole, [1] committed */
static uint64_t webhook_batched;	/* deliveries in committed batches */
static time_t start_time;

#define ADD(var, n)	__atomic_fetch_add(&(var), (n), __ATOMIC_RELAXED)
#define GET(var)	__atomic_load_n(&(var), __ATOMIC_RELAXED)

/*
 * metrics_init records the process start time.
 */
void
metrics_init(void)
{
	if (num_routes > MAX_ROUTES)
		abort();
	start_time = time(NULL);
}

/*
 * metrics_observe counts one finished request of a route with the status
 * it got (0: the client went away before an answer) and its duration.
 */
void
metrics_observe(int route, unsigned status, int64_t duration_ns)
{
	size_t		i;
	double		secs = (double) duration_ns / 1e9;

	for (i = 0; i < NUM_STATUS; i++)
		if (status_codes[i] == status)
			break;
	ADD(requests_total[route][i], 1);
	for (i = 0; i < NUM_BUCKETS; i++)
		if (secs <= duration_buckets[i])
			break;
	ADD(duration_hist[route][i], 1);
	ADD(duration_sum_ns[route], (uint64_t) (duration_ns > 0 ? duration_ns : 0));
}

/*
 * metrics_webhook_reject counts a webhook delivery that was not stored.
 */
void
metrics_webhook_reject(WebhookReject why)
{
	ADD(webhook_rejects[why], 1);
}

/*
 * metrics_db_connect counts a connection attempt of a pool thread.
 */
void
metrics_db_connect(bool ok)
{
	ADD(db_connects[ok ? 1 : 0], 1);
}

/*
 * metrics_webhook_batch counts a batch of n webhooks: committed together,
 * or failed as a whole (its deliveries then made one by one).
 */
void
metrics_webhook_batch(unsigned n, bool committed)
{
	ADD(webhook_batches[committed ? 1 : 0], 1);
	if (committed)
		ADD(webhook_batched, n);
}

/*
 * metrics_render appends the ingest's own metrics to sb.  Request counters
 * and histograms are written for the routes that have seen requests.
 */
void
metrics_render(StrBuf *sb)
{
	int			r;
	size_t		i;

	sb_appends(sb,
			   "# HELP sam_ingest_requests_total HTTP requests answered, by route and status code.\n"
			   "# TYPE sam_ingest_requests_total counter\n");
	for (r = 0; r < num_routes; r++)
		for (i = 0; i <= NUM_STATUS; i++)
		{
			uint64_t	v = GET(requests_total[r][i]);

			if (v == 0)
				continue;
			if (i < NUM_STATUS)
				sb_appendf(sb, "sam_ingest_requests_total{route=\"%s\",code=\"%u\"} %llu\n",
						   routes[r].path, status_codes[i], (unsigned long long) v);
			else
				sb_appendf(sb, "sam_ingest_requests_total{route=\"%s\",code=\"other\"} %llu\n",
						   routes[r].path, (unsigned long long) v);
		}

	sb_appends(sb,
			   "# HELP sam_ingest_request_duration_seconds Time from the request's headers to its completion.\n"
			   "# TYPE sam_ingest_request_duration_seconds histogram\n");
	for (r = 0; r < num_routes; r++)
	{
		uint64_t	cum = 0;
		uint64_t	counts[NUM_BUCKETS + 1];

		for (i = 0; i <= NUM_BUCKETS; i++)
		{
			counts[i] = GET(duration_hist[r][i]);
			cum += counts[i];
		}
		if (cum == 0)
			continue;
		cum = 0;
		for (i = 0; i < NUM_BUCKETS; i++)
		{
			cum += counts[i];
			sb_appendf(sb, "sam_ingest_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
					   routes[r].path, duration_buckets[i], (unsigned long long) cum);
		}
		cum += counts[NUM_BUCKETS];
		sb_appendf(sb, "sam_ingest_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
				   routes[r].path, (unsigned long long) cum);
		sb_appendf(sb, "sam_ingest_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
				   routes[r].path, (double) GET(duration_sum_ns[r]) / 1e9);
		sb_appendf(sb, "sam_ingest_request_duration_seconds_count{route=\"%s\"} %llu\n",
				   routes[r].path, (unsigned long long) cum);
	}

	sb_appends(sb,
			   "# HELP sam_ingest_webhook_rejected_total Webhook deliveries not stored, by reason.\n"
			   "# TYPE sam_ingest_webhook_rejected_total counter\n");
	for (i = 0; i < NUM_WEBHOOK_REJECTS; i++)
		sb_appendf(sb, "sam_ingest_webhook_rejected_total{reason=\"%s\"} %llu\n",
				   reject_names[i], (unsigned long long) GET(webhook_rejects[i]));

	sb_appendf(sb,
			   "# HELP sam_ingest_db_connects_total Database connection attempts of the pool threads.\n"
			   "# TYPE sam_ingest_db_connects_total counter\n"
			   "sam_ingest_db_connects_total{result=\"ok\"} %llu\n"
			   "sam_ingest_db_connects_total{result=\"failed\"} %llu\n",
			   (unsigned long long) GET(db_connects[1]),
			   (unsigned long long) GET(db_connects[0]));
	sb_appendf(sb,
			   "# HELP sam_ingest_webhook_batches_total Batches of several webhooks stored in one transaction, by result (failed: made again one by one).\n"
			   "# TYPE sam_ingest_webhook_batches_total counter\n"
			   "sam_ingest_webhook_batches_total{result=\"committed\"} %llu\n"
			   "sam_ingest_webhook_batches_total{result=\"failed\"} %llu\n"
			   "# HELP sam_ingest_webhook_batched_total Webhooks stored in committed batches.\n"
			   "# TYPE sam_ingest_webhook_batched_total counter\n"
			   "sam_ingest_webhook_batched_total %llu\n"
			   "# HELP sam_ingest_queued_requests Requests waiting for a database worker.\n"
			   "# TYPE sam_ingest_queued_requests gauge\n"
			   "sam_ingest_queued_requests %d\n",
			   (unsigned long long) GET(webhook_batches[1]),
			   (unsigned long long) GET(webhook_batches[0]),
			   (unsigned long long) GET(webhook_batched),
			   pool_queued());
	sb_appendf(sb,
			   "# HELP sam_ingest_in_flight_requests Requests being handled.\n"
			   "# TYPE sam_ingest_in_flight_requests gauge\n"
			   "sam_ingest_in_flight_requests %d\n"
			   "# HELP sam_ingest_start_time_seconds Start time of the process since the epoch.\n"
			   "# TYPE sam_ingest_start_time_seconds gauge\n"
			   "sam_ingest_start_time_seconds %lld\n",
			   __atomic_load_n(&ingest_in_flight, __ATOMIC_RELAXED),
			   (long long) start_time);
}

/*
 * sb_reserve makes room for n more bytes plus a terminating NUL; it aborts
 * on out-of-memory (an HTTP answer cannot be half-built).
 */
static void
sb_reserve(StrBuf *sb, size_t n)
{
	size_t		need = sb->len + n + 1;

	if (need <= sb->cap)
		return;
	if (sb->cap == 0)
		sb->cap = 256;
	while (sb->cap < need)
		sb->cap *= 2;
	sb->data = realloc(sb->data, sb->cap);
	if (sb->data == NULL)
		abort();
}

void
sb_append(StrBuf *sb, const char *s, size_t n)
{
	sb_reserve(sb, n);
	memcpy(sb->data + sb->len, s, n);
	sb->len += n;
	sb->data[sb->len] = '\0';
}

void
sb_appends(StrBuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

void
sb_appendf(StrBuf *sb, const char *fmt,...)
{
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sb_reserve(sb, (size_t) n);
	va_start(ap, fmt);
	vsnprintf(sb->data + sb->len, (size_t) n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t) n;
}

/*
 * sb_append_json_string appends s as the contents of a JSON string (no
 * quotes), escaped, cut to at most max_bytes of input on a UTF-8 character
 * boundary ("..." marks a cut).
 */
void
sb_append_json_string(StrBuf *sb, const char *s, size_t max_bytes)
{
	size_t		n = strlen(s);
	bool		cut = false;
	size_t		i;

	if (n > max_bytes)
	{
		n = max_bytes;
		while (n > 0 && ((unsigned char) s[n] & 0xC0) == 0x80)
			n--;
		cut = true;
	}
	for (i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			char		esc[2] = {'\\', (char) c};

			sb_append(sb, esc, 2);
		}
		else if (c == '\n')
			sb_append(sb, "\\n", 2);
		else if (c < 0x20 || c == 0x7f)
			sb_appendf(sb, "\\u%04x", c);
		else
			sb_append(sb, (const char *) &s[i], 1);
	}
	if (cut)
		sb_append(sb, "...", 3);
}

void
sb_free(StrBuf *sb)
{
	free(sb->data);
	sb->data = NULL;
	sb->len = sb->cap = 0;
}
