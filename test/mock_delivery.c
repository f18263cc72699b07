/*-------------------------------------------------------------------------
 *
 * mock_delivery.c
 *	  Webhook delivery for the mock Unipile server.
 *
 * Request threads never talk to webhook receivers.  They enqueue jobs
 * (under g_lock) and one dedicated thread posts them with libcurl,
 * retrying on anything but HTTP 200 like Unipile does ("five retry
 * attempts ... when the HTTP response code is not equal to 200"): one
 * first attempt plus up to 5 retries after 100, 200, 400, 800 and
 * 1600 ms.  Every attempt is recorded for GET /_mock/deliveries.
 *
 * test/mock_delivery.c
 *
 *-------------------------------------------------------------------------
 */
#include "mock_unipile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#define DELIVERY_MAX_ATTEMPTS	6	/* first try + 5 retries */
#define DELIVERY_BASE_DELAY_MS	100

typedef struct DeliveryJob
{
	struct DeliveryJob *next;
	uint64_t	seq;			/* FIFO tie-break */
	char	   *webhook_id;		/* NULL for /_mock/webhooks/emit with url */
	char	   *url;
	char	  **headers;		/* "Key: Value" */
	int			nheaders;
	char	   *body;
	char	   *event;
	int			attempt;		/* number of the next attempt, from 1 */
	int64_t		next_at;		/* mono_ms when it may be tried */
} DeliveryJob;

static DeliveryJob *q_head;
static DeliveryJob *q_tail;
static size_t q_len;
static size_t in_flight;
static uint64_t job_seq;
static uint64_t generation;		/* bumped by reset: in-flight results are
								 * then discarded */
static pthread_cond_t q_cond;
static pthread_t delivery_thread;
static bool thread_running;
static bool stopping;
static JsonRing records;

static void
job_free(DeliveryJob *job)
{
	for (int i = 0; i < job->nheaders; i++)
		free(job->headers[i]);
	free(job->headers);
	free(job->webhook_id);
	free(job->url);
	free(job->body);
	free(job->event);
	free(job);
}

/*
 * Insert a job keeping the queue ordered by (next_at, seq).  New jobs are
 * due now and normally go to the tail in O(1); retries walk the list.
 */
static void
queue_insert(DeliveryJob *job)
{
	DeliveryJob **pp;

	job->next = NULL;
	if (q_tail == NULL)
	{
		q_head = q_tail = job;
	}
	else if (q_tail->next_at <= job->next_at)
	{
		q_tail->next = job;
		q_tail = job;
	}
	else
	{
		for (pp = &q_head; *pp && (*pp)->next_at <= job->next_at; pp = &(*pp)->next)
			;
		job->next = *pp;
		*pp = job;
	}
	q_len++;
}

static DeliveryJob *
queue_pop(void)
{
	DeliveryJob *job = q_head;

	q_head = job->next;
	if (q_head == NULL)
		q_tail = NULL;
	q_len--;
	job->next = NULL;
	return job;
}

/*
 * Queue one delivery.  headers is NULL or a JSON array of {key, value}
 * objects (the webhook's custom headers).  Caller holds g_lock.
 */
void
delivery_enqueue_locked(const char *webhook_id, const char *url,
						json_t *headers, const char *body, const char *event)
{
	DeliveryJob *job = xcalloc(1, sizeof(DeliveryJob));
	size_t		nh = json_is_array(headers) ? json_array_size(headers) : 0;

	job->seq = ++job_seq;
	job->webhook_id = xstrdup_or_null(webhook_id);
	job->url = xstrdup(url);
	job->body = xstrdup(body);
	job->event = xstrdup_or_null(event);
	job->attempt = 1;
	job->next_at = mono_ms();
	job->headers = xcalloc(nh + 1, sizeof(char *));
	for (size_t i = 0; i < nh; i++)
	{
		json_t	   *h = json_array_get(headers, i);
		const char *k = json_string_value(json_object_get(h, "key"));
		const char *v = json_string_value(json_object_get(h, "value"));
		StrBuf		sb = {0};

		if (k == NULL || *k == '\0')
			continue;
		sb_printf(&sb, "%s: %s", k, v ? v : "");
		job->headers[job->nheaders++] = sb.data;
	}
	queue_insert(job);
	pthread_cond_signal(&q_cond);
}

/* Record one attempt (caller holds g_lock). */
static void
record_attempt(const DeliveryJob *job, long status, const char *error, bool ok)
{
	json_t	   *rec = json_object();
	char	   *s;
	StrBuf		sb = {0};

	json_object_set_new(rec, "seq", json_integer((json_int_t) records.next_seq));
	json_object_set_new(rec, "at_ms", json_integer(sim_now_locked()));
	json_object_set_new(rec, "webhook_id",
						job->webhook_id ? json_string(job->webhook_id) : json_null());
	json_object_set_new(rec, "url", json_string(job->url));
	json_object_set_new(rec, "event", job->event ? json_string(job->event) : json_null());
	json_object_set_new(rec, "attempt", json_integer(job->attempt));
	json_object_set_new(rec, "status", status > 0 ? json_integer(status) : json_null());
	json_object_set_new(rec, "error", error ? json_string(error) : json_null());
	json_object_set_new(rec, "ok", json_boolean(ok));
	s = json_dumps(rec, JSON_COMPACT);
	json_decref(rec);
	if (s == NULL)
		return;
	/* splice the payload in as raw JSON: it was produced by jansson */
	sb_append(&sb, s, strlen(s) - 1);
	free(s);
	sb_puts(&sb, ",\"payload\":");
	sb_puts(&sb, job->body);
	sb_puts(&sb, "}");
	ring_push(&records, sb.data);
}

static size_t
discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void) ptr;
	(void) userdata;
	return size * nmemb;
}

/*
 * POST one job.  Returns the HTTP status (0 on transport failure) and
 * fills errbuf on failure.
 */
static long
perform_post(CURL *curl, const DeliveryJob *job, char *errbuf)
{
	struct curl_slist *hl = NULL;
	bool		has_ctype = false;
	long		code = 0;
	CURLcode	rc;

	for (int i = 0; i < job->nheaders; i++)
	{
		if (strncasecmp(job->headers[i], "Content-Type:", 13) == 0)
			has_ctype = true;
		hl = curl_slist_append(hl, job->headers[i]);
	}
	if (!has_ctype)
		hl = curl_slist_append(hl, "Content-Type: application/json");
	hl = curl_slist_append(hl, "Expect:");

	curl_easy_reset(curl);
	errbuf[0] = '\0';
	curl_easy_setopt(curl, CURLOPT_URL, job->url);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, job->body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(job->body));
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "mock_unipile-webhook/1.0");
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);

	rc = curl_easy_perform(curl);
	if (rc == CURLE_OK)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
	else if (errbuf[0] == '\0')
		snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
	curl_slist_free_all(hl);
	return rc == CURLE_OK ? code : 0;
}

/* Compute an absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait. */
static struct timespec
deadline_in(int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000)
	{
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* The delivery thread: pop due jobs, post them, requeue failures. */
static void *
delivery_main(void *arg)
{
	CURL	   *curl = curl_easy_init();
	char		errbuf[CURL_ERROR_SIZE];

	(void) arg;
	pthread_mutex_lock(&g_lock);
	while (!stopping)
	{
		DeliveryJob *job;
		int64_t		now = mono_ms();
		uint64_t	gen;
		long		status;
		bool		ok;

		if (q_head == NULL)
		{
			pthread_cond_wait(&q_cond, &g_lock);
			continue;
		}
		if (q_head->next_at > now)
		{
			struct timespec ts = deadline_in(q_head->next_at - now);

			pthread_cond_timedwait(&q_cond, &g_lock, &ts);
			continue;
		}
		job = queue_pop();
		in_flight++;
		gen = generation;
		pthread_mutex_unlock(&g_lock);

		if (curl == NULL)
		{
			status = 0;
			snprintf(errbuf, sizeof(errbuf), "curl_easy_init failed");
		}
		else
			status = perform_post(curl, job, errbuf);
		ok = (status == 200);

		pthread_mutex_lock(&g_lock);
		in_flight--;
		if (gen != generation)
		{
			job_free(job);
			continue;
		}
		record_attempt(job, status, ok ? NULL : (status > 0 ? "non-200 status" : errbuf), ok);
		if (!ok && job->attempt < DELIVERY_MAX_ATTEMPTS && !stopping)
		{
			job->next_at = mono_ms() + ((int64_t) DELIVERY_BASE_DELAY_MS << (job->attempt - 1));
			job->attempt++;
			queue_insert(job);
		}
		else
			job_free(job);
	}
	while (q_head)
		job_free(queue_pop());
	pthread_mutex_unlock(&g_lock);
	if (curl)
		curl_easy_cleanup(curl);
	return NULL;
}

/* Start the delivery thread (before the HTTP daemon). */
void
delivery_start(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&q_cond, &attr);
	pthread_condattr_destroy(&attr);
	ring_init(&records, g_config.log_max);
	stopping = false;
	if (pthread_create(&delivery_thread, NULL, delivery_main, NULL) != 0)
	{
		fprintf(stderr, "mock_unipile: cannot start delivery thread\n");
		exit(1);
	}
	thread_running = true;
}

/* Stop the thread, dropping undelivered jobs, and free the records. */
void
delivery_stop(void)
{
	if (!thread_running)
		return;
	pthread_mutex_lock(&g_lock);
	stopping = true;
	pthread_cond_broadcast(&q_cond);
	pthread_mutex_unlock(&g_lock);
	pthread_join(delivery_thread, NULL);
	thread_running = false;
	ring_clear(&records);
	free(records.items);
	records.items = NULL;
	pthread_cond_destroy(&q_cond);
}

/* Forget queued jobs and records (POST /_mock/reset).  Holds g_lock. */
void
delivery_reset_locked(void)
{
	while (q_head)
		job_free(queue_pop());
	ring_clear(&records);
	generation++;
}

/* Change the record ring size (drops existing records).  Holds g_lock. */
void
deliveries_set_cap_locked(size_t cap)
{
	ring_clear(&records);
	free(records.items);
	ring_init(&records, cap);
}

/* {"pending":N,"recorded":N} (caller holds g_lock). */
json_t *
deliveries_info_locked(void)
{
	return json_pack("{s:I,s:I}",
					 "pending", (json_int_t) (q_len + in_flight),
					 "recorded", (json_int_t) (records.next_seq - 1));
}

/*
 * GET /_mock/deliveries body: {"items":[...],"next":N,"first":N,
 * "pending":N}.  Caller holds g_lock.
 */
void
deliveries_dump_locked(uint64_t since, size_t limit, StrBuf *out)
{
	ring_dump(&records, since, limit, out);
	/* replace the closing brace to add the queue length */
	out->len--;
	out->data[out->len] = '\0';
	sb_printf(out, ",\"pending\":%zu}", q_len + in_flight);
}
