/*-------------------------------------------------------------------------
 *
 * curl_multi.c
 *	  The transport's ceiling: a bare libcurl-multi client with no
 *	  database.  Sends N invitations (POST /api/v1/users/invite, a JSON
 *	  body naming a different provider each) to the mock Unipile server
 *	  with CONCURRENCY requests in flight on kept-alive connections, the
 *	  same headers as the sam_ext worker, and prints the rate.
 *
 *	  usage: curl_multi BASE_URL N CONCURRENCY [TAG]
 *	  output: "curl_multi: N requests in S s = R req/s; 2xx A, other B, errors C"
 *
 *	  Easy handles are reused (one per slot): this is the best a libcurl
 *	  client can do on this machine, the reference the worker is compared to.
 *
 * bench/curl_multi.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

typedef struct Slot
{
	CURL	   *easy;
	char		body[256];
} Slot;

static const char *tag = "multi";
static char url[1024];
static struct curl_slist *headers = NULL;
static long n_sent = 0;

/* discard answers: only their status is counted */
static size_t
discard(char *data, size_t size, size_t nmemb, void *userp)
{
	(void) data;
	(void) userp;
	return size * nmemb;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* start_next gives the slot the next invitation and adds it to the multi handle */
static void
start_next(CURLM *multi, Slot *s)
{
	n_sent++;
	snprintf(s->body, sizeof(s->body),
			 "{\"provider_id\":\"ACoBENCH_%s_%ld\",\"account_id\":\"bench\",\"message\":\"Hello there\"}",
			 tag, n_sent);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long) strlen(s->body));
	curl_multi_add_handle(multi, s->easy);
}

int
main(int argc, char **argv)
{
	long		n,
				conc,
				i,
				done = 0,
				ok = 0,
				other = 0,
				errors = 0;
	Slot	   *slots;
	CURLM	   *multi;
	double		t0,
				t1;
	int			running = 1;

	if (argc < 4)
	{
		fprintf(stderr, "usage: curl_multi BASE_URL N CONCURRENCY [TAG]\n");
		return 2;
	}
	snprintf(url, sizeof(url), "%s/api/v1/users/invite", argv[1]);
	n = atol(argv[2]);
	conc = atol(argv[3]);
	if (argc > 4)
		tag = argv[4];
	if (n <= 0 || conc <= 0)
		return 2;
	if (conc > n)
		conc = n;

	curl_global_init(CURL_GLOBAL_ALL);
	multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) conc + 16);
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Expect:");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	slots = calloc(conc, sizeof(Slot));
	for (i = 0; i < conc; i++)
	{
		CURL	   *e = curl_easy_init();

		slots[i].easy = e;
		curl_easy_setopt(e, CURLOPT_URL, url);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
		curl_easy_setopt(e, CURLOPT_PRIVATE, &slots[i]);
		curl_easy_setopt(e, CURLOPT_USERAGENT, "sam_ext-bench/1.0");
	}

	t0 = now_s();
	for (i = 0; i < conc; i++)
		start_next(multi, &slots[i]);
	while (done < n)
	{
		CURLMsg    *msg;
		int			left;

		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			Slot	   *s;
			long		status = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &s);
			if (msg->data.result != CURLE_OK)
				errors++;
			else
			{
				curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
				if (status >= 200 && status < 300)
					ok++;
				else
					other++;
			}
			done++;
			curl_multi_remove_handle(multi, s->easy);
			if (n_sent < n)
				start_next(multi, s);
		}
		if (done < n)
			curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	t1 = now_s();

	printf("curl_multi: %ld requests in %.3f s = %.0f req/s; 2xx %ld, other %ld, errors %ld (concurrency %ld)\n",
		   n, t1 - t0, n / (t1 - t0), ok, other, errors, conc);
	for (i = 0; i < conc; i++)
		curl_easy_cleanup(slots[i].easy);
	curl_slist_free_all(headers);
	curl_multi_cleanup(multi);
	curl_global_cleanup();
	free(slots);
	return errors > 0 || other > 0;
}
