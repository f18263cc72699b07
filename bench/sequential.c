/*-------------------------------------------------------------------------
 *
 * sequential.c
 *	  The naive reference: one blocking request at a time, as the original
 *	  Netlify function sent its invitations (await each fetch in a loop).
 *	  Sends N invitations to the mock Unipile server with curl_easy_perform
 *	  on one kept-alive connection (the most favourable case for it) and
 *	  prints the rate.
 *
 *	  usage: sequential BASE_URL N [TAG]
 *	  output: "sequential: N requests in S s = R req/s; 2xx A, other B, errors C"
 *
 * bench/sequential.c
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

/* discard answers: only their status is counted */
static size_t
discard(char *data, size_t size, size_t nmemb, void *userp)
{
	(void) data;
	(void) userp;
	return size * nmemb;
}

int
main(int argc, char **argv)
{
	char		url[1024];
	char		body[256];
	const char *tag = argc > 3 ? argv[3] : "seq";
	long		n,
				i,
				ok = 0,
				other = 0,
				errors = 0;
	struct curl_slist *headers = NULL;
	struct timespec t0,
				t1;
	double		secs;
	CURL	   *easy;

	if (argc < 3 || (n = atol(argv[2])) <= 0)
	{
		fprintf(stderr, "usage: sequential BASE_URL N [TAG]\n");
		return 2;
	}
	snprintf(url, sizeof(url), "%s/api/v1/users/invite", argv[1]);
	curl_global_init(CURL_GLOBAL_ALL);
	easy = curl_easy_init();
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Content-Type: application/json");
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 1; i <= n; i++)
	{
		long		status = 0;

		snprintf(body, sizeof(body),
				 "{\"provider_id\":\"ACoSEQ_%s_%ld\",\"account_id\":\"bench\",\"message\":\"Hello there\"}",
				 tag, i);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
		if (curl_easy_perform(easy) != CURLE_OK)
		{
			errors++;
			continue;
		}
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300)
			ok++;
		else
			other++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;

	printf("sequential: %ld requests in %.3f s = %.0f req/s; 2xx %ld, other %ld, errors %ld\n",
		   n, secs, n / secs, ok, other, errors);
	curl_slist_free_all(headers);
	curl_easy_cleanup(easy);
	curl_global_cleanup();
	return errors > 0 || other > 0;
}
