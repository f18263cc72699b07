/*-------------------------------------------------------------------------
 *
 * http.c
 *	  libcurl multi driver of the sam_ext worker.
 *
 *	  Requests are added to one multi handle, whose connection cache keeps
 *	  connections to Unipile alive across requests.  Only http and https are
 *	  allowed, redirects are not followed, every request has a timeout, and a
 *	  transport failure is stored on the request (never raised), so that the
 *	  caller records it as data.  The API key is added as a header here and
 *	  nowhere else; it is never copied into anything that is stored.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include "miscadmin.h"
#include "portability/instr_time.h"

#include "sam_ext.h"
#include "http.h"

static CURLM *multi = NULL;
static int	in_flight = 0;

/*
 * Easy handles of finished transfers, reset and kept for the next ones: a
 * handle of its own per request cost an allocation of libcurl's whole
 * per-transfer state, and its release, per call.  At most
 * sam.max_concurrency of them are kept (the transfers in flight at once),
 * and none while the worker is idle (sam_http_trim).
 */
/* as many as sam.max_concurrency can be (its maximum) */
#define SAM_MAX_IDLE_HANDLES 1024
static CURL *idle_handles[SAM_MAX_IDLE_HANDLES];
static int	n_idle_handles = 0;

/*
 * The request headers, built once and shared by the requests that send
 * them: a list of their own cost four allocations, a copy of the API key
 * and its wipe per call.  The API key's set is replaced when the key
 * changes (a reload); the set it replaces is freed, the key's copy wiped,
 * once no transfer uses it.
 */
typedef struct SamHeaderSet
{
	struct curl_slist *plain;	/* Accept, Expect: and, with a key, X-API-KEY */
	struct curl_slist *json;	/* the same, and Content-Type: application/json */
	char	   *key;			/* the API key in "X-API-KEY: ..." (NULL: none) */
	int			refs;			/* transfers using it */
	struct SamHeaderSet *next;	/* in the list of retired sets */
} SamHeaderSet;

static SamHeaderSet *keyed_headers = NULL;	/* the current API key's */
static SamHeaderSet *keyless_headers = NULL;	/* notification hooks' */
static SamHeaderSet *retired_headers = NULL;	/* replaced, still used by transfers */

static void free_header_set(SamHeaderSet *set);

/* the transfers libcurl has, in the order they started (their deadlines') */
static dlist_head flying = DLIST_STATIC_INIT(flying);

/*
 * libcurl's own timeout is only a safety net this much beyond
 * sam.http_timeout: the deadline is enforced by sam_http_drive, after it has
 * read what arrived (see there).
 */
#define SAM_CURL_TIMEOUT_MARGIN_MS 60000

/*
 * Requests refused before any byte went out (see sam_http_start): counted in
 * flight, and handed back as finished by the next sam_http_drive.
 */
static List *refused = NIL;

/* CURL_CHECK raises an error when a setup call of libcurl fails */
#define CURL_CHECK(call) \
	do { \
		CURLcode	rc_ = (call); \
		if (rc_ != CURLE_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_SYSTEM_ERROR), \
					 errmsg("libcurl setup failed: %s", curl_easy_strerror(rc_)))); \
	} while (0)

#define CURLM_CHECK(call) \
	do { \
		CURLMcode	rc_ = (call); \
		if (rc_ != CURLM_OK) \
			ereport(ERROR, \
					(errcode(ERRCODE_SYSTEM_ERROR), \
					 errmsg("libcurl multi call failed: %s", curl_multi_strerror(rc_)))); \
	} while (0)

/* sam_http_init creates the multi handle (once per worker process) */
void
sam_http_init(void)
{
	if (multi)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialize libcurl")));
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl multi handle")));
	CURLM_CHECK(curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) 1024));
}

/* sam_http_shutdown frees libcurl's state; used at process exit */
void
sam_http_shutdown(void)
{
	sam_http_trim();
	if (multi)
	{
		curl_multi_cleanup(multi);
		multi = NULL;
	}
	/* after the multi handle: transfers still on it used them (the key's copies are wiped) */
	free_header_set(keyed_headers);
	keyed_headers = NULL;
	free_header_set(keyless_headers);
	keyless_headers = NULL;
	while (retired_headers)
	{
		SamHeaderSet *set = retired_headers;

		retired_headers = set->next;
		free_header_set(set);
	}
	curl_global_cleanup();
}

int
sam_http_in_flight(void)
{
	return in_flight;
}

/* sam_http_new_request allocates a request in a memory context of its own */
SamHttpRequest *
sam_http_new_request(MemoryContext parent, int64 id)
{
	MemoryContext cxt;
	SamHttpRequest *req;

	cxt = AllocSetContextCreate(parent, "sam_ext request", ALLOCSET_SMALL_SIZES);
	req = MemoryContextAllocZero(cxt, sizeof(SamHttpRequest));
	req->cxt = cxt;
	req->id = id;
	return req;
}

static size_t
write_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	SamHttpRequest *req = (SamHttpRequest *) userp;
	size_t		n = size * nmemb;
	MemoryContext old;

	if ((size_t) req->response.len + n > (size_t) sam_max_response_bytes)
	{
		req->too_large = true;
		return 0;				/* makes libcurl fail the transfer */
	}
	old = MemoryContextSwitchTo(req->cxt);
	appendBinaryStringInfo(&req->response, data, (int) n);
	MemoryContextSwitchTo(old);
	return n;
}

/*
 * prereq_callback runs each time libcurl is about to send the request.  A
 * second time means libcurl is resending it by itself: on a reused
 * connection that closed before any answer, it sends the same request again
 * on a new one.  The first may have reached Unipile and been acted on (an
 * invitation sent, a message posted), so a body is never sent twice in one
 * attempt: the transfer fails instead, and the worker checks the outcome
 * with Unipile before anything is sent again.  (A body handed to libcurl
 * whole, CURLOPT_POSTFIELDS, goes out with the headers in one packet; a read
 * callback, which could refuse the rewind, costs a second send per request.)
 */
static int
prereq_callback(void *userp, char *primary_ip, char *local_ip,
				int primary_port, int local_port)
{
	SamHttpRequest *req = (SamHttpRequest *) userp;

	(void) primary_ip;
	(void) local_ip;
	(void) primary_port;
	(void) local_port;
	if (++req->requests_sent > 1)
	{
		req->resend_refused = true;
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/*
 * address_is_private: loopback, unspecified, link-local (cloud metadata
 * services), private networks (RFC 1918, carrier-grade NAT, IPv6 unique
 * local), multicast and broadcast; an IPv4 address carried in IPv6
 * (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d) as
 * that IPv4 address.
 */
static bool
address_is_private(const struct sockaddr *sa)
{
	const unsigned char *a;

	if (sa->sa_family == AF_INET)
		a = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
	{
		const unsigned char *b = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
		static const unsigned char zero[15] = {0};

		if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 ||
			(memcmp(b, zero, 12) == 0 && (b[12] | b[13]) != 0))
			a = b + 12;
		else if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1)
			return true;		/* 64:ff9b:1::/48, local-use NAT64 */
		else
			return (memcmp(b, zero, 15) == 0 && b[15] <= 1) ||	/* :: and ::1 */
				(b[0] & 0xfe) == 0xfc ||	/* fc00::/7 */
				(b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||	/* fe80::/10 */
				b[0] == 0xff;	/* multicast */
	}
	else
		return true;
	return a[0] == 0 || a[0] == 10 || a[0] == 127 ||
		(a[0] == 100 && (a[1] & 0xc0) == 64) ||
		(a[0] == 169 && a[1] == 254) ||
		(a[0] == 172 && (a[1] & 0xf0) == 16) ||
		(a[0] == 192 && a[1] == 168) ||
		a[0] >= 224;
}

/*
 * open_socket_callback opens the connection of a notification hook, unless
 * its address is private and sam.allow_private_hook_addresses is off:
 * refused before any connection is made, so that an application-set URL
 * cannot reach the server's own network, nor tell its open ports from its
 * closed ones.
 */
static curl_socket_t
open_socket_callback(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	SamHttpRequest *req = (SamHttpRequest *) clientp;

	if (purpose == CURLSOCKTYPE_IPCXN && !sam_allow_private_hook_addresses &&
		address_is_private(&address->addr))
	{
		req->address_refused = true;
		return CURL_SOCKET_BAD;
	}
	req->address_tried = true;
	return socket(address->family, address->socktype, address->protocol);
}

/* append_header appends one header to a libcurl list; NULL when out of memory */
static struct curl_slist *
append_header(struct curl_slist *list, const char *header)
{
	struct curl_slist *l = curl_slist_append(list, header);

	if (l == NULL)
		curl_slist_free_all(list);
	return l;
}

/* free_header_list frees a list, wiping its headers first (the API key's) */
static void
free_header_list(struct curl_slist *list)
{
	struct curl_slist *h;

	for (h = list; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(list);
}

/* free_header_set frees a set of header lists (in TopMemoryContext) */
static void
free_header_set(SamHeaderSet *set)
{
	if (set == NULL)
		return;
	free_header_list(set->plain);
	free_header_list(set->json);
	pfree(set);
}

/*
 * build_header_list makes the headers of a request: Accept, an empty Expect
 * (no "100-continue" round trip before a large body), the API key when
 * there is one, and the JSON body's Content-Type when asked.  NULL when
 * libcurl is out of memory (what it had built is freed).
 */
static struct curl_slist *
build_header_list(const char *api_key, bool json)
{
	struct curl_slist *list = NULL;

	list = append_header(list, "Accept: application/json");
	if (list)
		list = append_header(list, "Expect:");
	if (list && api_key)
	{
		char	   *h = psprintf("X-API-KEY: %s", api_key);

		list = append_header(list, h);
		/* the copy made by curl_slist_append is the only one left */
		explicit_bzero(h, strlen(h));
		pfree(h);
	}
	if (list && json)
		list = append_header(list, "Content-Type: application/json");
	return list;
}

/*
 * retire_header_set takes a set that is no longer current out of use: freed
 * (its copy of the key wiped) now, or by its last transfer, and at exit in
 * any case.
 */
static void
retire_header_set(SamHeaderSet *set)
{
	if (set == NULL)
		return;
	if (set->refs == 0)
		free_header_set(set);
	else
	{
		set->next = retired_headers;
		retired_headers = set;
	}
}

/*
 * header_set returns the header lists of a request sent with api_key (NULL
 * or empty: none), building them when the key is new, and counts the
 * request as one of their users.
 */
static SamHeaderSet *
header_set(const char *api_key)
{
	SamHeaderSet **slot;
	SamHeaderSet *set;

	if (api_key && api_key[0] == '\0')
		api_key = NULL;
	slot = api_key ? &keyed_headers : &keyless_headers;
	set = *slot;
	if (set == NULL || (api_key && strcmp(set->key, api_key) != 0))
	{
		SamHeaderSet *fresh = MemoryContextAllocZero(TopMemoryContext, sizeof(SamHeaderSet));

		fresh->plain = build_header_list(api_key, false);
		fresh->json = build_header_list(api_key, true);
		if (fresh->plain == NULL || fresh->json == NULL)
		{
			free_header_set(fresh);
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		}
		if (api_key)
		{
			/* the key as it is in the list (no copy of it of our own) */
			fresh->key = fresh->plain->next->next->data + strlen("X-API-KEY: ");
		}
		retire_header_set(set);
		*slot = set = fresh;
	}
	set->refs++;
	return set;
}

/* release_header_set counts a request out of its header set's users */
static void
release_header_set(SamHeaderSet *set)
{
	if (--set->refs == 0 && set != keyed_headers && set != keyless_headers)
	{
		SamHeaderSet **p;

		/* a retired set: its last transfer is over */
		for (p = &retired_headers; *p; p = &(*p)->next)
			if (*p == set)
			{
				*p = set->next;
				break;
			}
		free_header_set(set);
	}
}

/*
 * release_handle hands an easy handle whose transfer is over (removed from
 * the multi handle) back for the next request, or frees it when enough are
 * kept.  Reset first: it must keep no pointer into the finished request.
 */
static void
release_handle(CURL *easy)
{
	if (n_idle_handles < Min(sam_max_concurrency, SAM_MAX_IDLE_HANDLES))
	{
		curl_easy_reset(easy);
		idle_handles[n_idle_handles++] = easy;
	}
	else
		curl_easy_cleanup(easy);
}

/*
 * finish_transfer ends a request's use of libcurl once its transfer is
 * over: the easy handle goes back to the pool, the body's MIME parts are
 * freed, and the header set loses a user.  What came back stays on the
 * request.
 */
static void
finish_transfer(SamHttpRequest *req)
{
	if (req->easy)
	{
		curl_multi_remove_handle(multi, req->easy);
		release_handle(req->easy);
		req->easy = NULL;
	}
	if (req->mime)
	{
		curl_mime_free(req->mime);
		req->mime = NULL;
	}
	if (req->headers)
	{
		release_header_set(req->headers);
		req->headers = NULL;
	}
}

/*
 * sam_http_forget_api_key drops the headers made of the API key (the key
 * was reloaded or removed): wiped and freed now, or by the last transfer
 * still using them.  The next request builds them again from its key.
 */
void
sam_http_forget_api_key(void)
{
	SamHeaderSet *set = keyed_headers;

	keyed_headers = NULL;
	retire_header_set(set);
}

/*
 * sam_http_trim frees the easy handles kept for later requests: called when
 * the worker goes idle, before the heap is handed back to the system.
 */
void
sam_http_trim(void)
{
	while (n_idle_handles > 0)
		curl_easy_cleanup(idle_handles[--n_idle_handles]);
}

/*
 * sam_http_start sets up a libcurl easy handle for the request and adds it
 * to the multi handle; the transfer makes progress in sam_http_drive.
 */
void
sam_http_start(SamHttpRequest *req, const char *api_key)
{
	CURL	   *easy;
	MemoryContext old = MemoryContextSwitchTo(req->cxt);

	initStringInfo(&req->response);

	/*
	 * A request without a method or a path (a body removed by the retention,
	 * a row written by hand) is never sent: it finishes at once with an error
	 * the record makes final.  Nothing reached the network, so nothing is to
	 * be checked.
	 */
	if (req->method == NULL || req->method[0] == '\0' || !req->has_path)
	{
		req->status = 0;
		req->error = pstrdup(req->method == NULL || req->method[0] == '\0'
							 ? "invalid request: no method; not sent"
							 : "invalid request: no path; not sent");
		MemoryContextSwitchTo(TopMemoryContext);
		refused = lappend(refused, req);
		MemoryContextSwitchTo(old);
		in_flight++;
		return;
	}
	MemoryContextSwitchTo(old);

	easy = n_idle_handles > 0 ? idle_handles[--n_idle_handles] : curl_easy_init();
	if (easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not create a libcurl handle")));
	req->easy = easy;

	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_URL, req->url));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
#if LIBCURL_VERSION_NUM >= 0x075700
	/* a transfer ended during its name lookup does not wait for the resolver thread */
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_QUICK_EXIT, 1L));
#endif
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
								(long) sam_http_timeout_ms + SAM_CURL_TIMEOUT_MARGIN_MS));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) sam_connect_timeout_ms));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_callback));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_WRITEDATA, req));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_PRIVATE, req));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_USERAGENT, "sam_ext/1.0"));

	req->headers = header_set(api_key);
	if (req->nform > 0)
	{
		int			i;

		req->mime = curl_mime_init(easy);
		for (i = 0; i < req->nform; i++)
		{
			curl_mimepart *part = curl_mime_addpart(req->mime);

			CURL_CHECK(curl_mime_name(part, req->form_names[i]));
			CURL_CHECK(curl_mime_data(part, req->form_values[i], CURL_ZERO_TERMINATED));
		}
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_MIMEPOST, req->mime));
	}
	else if (req->json_body)
	{
		/* libcurl neither copies nor frees it: it lives in req->cxt */
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
									(curl_off_t) strlen(req->json_body)));
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->json_body));
	}
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_HTTPHEADER,
								req->nform == 0 && req->json_body ? req->headers->json : req->headers->plain));
	CURL_CHECK(curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method));
	if (strcmp(req->method, "GET") == 0)
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L));
	else
	{
		/* only a read may be sent again by libcurl itself */
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, prereq_callback));
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_PREREQDATA, req));
	}

	/*
	 * A message (a multipart body, or a notification) also gets a connection
	 * of its own, closed after it, so that not even a reset after the peer
	 * acted can happen on a reused connection: messages are few (daily caps),
	 * and the pool stays for everything else.
	 */
	if (req->fresh_connection)
	{
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L));
		/* and closed after it: it must not pile up in the connection cache */
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, 1L));
	}

	/* a notification hook (a URL the application set) may not reach private addresses */
	if (req->external)
	{
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_socket_callback));
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req));
		/* straight to the hook: through an http(s)_proxy, the address checked would be the proxy's */
		CURL_CHECK(curl_easy_setopt(easy, CURLOPT_PROXY, ""));
	}

	CURLM_CHECK(curl_multi_add_handle(multi, easy));
	req->started = GetCurrentTimestamp();
	req->deadline = TimestampTzPlusMilliseconds(req->started, sam_http_timeout_ms);
	dlist_push_tail(&flying, &req->flying_node);
	in_flight++;
}

/*
 * expire_overdue ends, as timed out, the transfers whose sam.http_timeout
 * has passed: called once libcurl has read what arrived.  libcurl checks a
 * transfer's timeout before it reads its socket, so with its own timeout an
 * answer that came in time, while the worker was busy in SQL (a record
 * waiting for a lock, a job), was thrown away as a timeout, and the call
 * checked or made again.  The transfers are in the order they started:
 * the walk stops at the first one still within its time (after the
 * setting is lowered, a later one waits for those before it, at most the
 * former timeout).
 */
static void
expire_overdue(List **finished)
{
	TimestampTz now = GetCurrentTimestamp();
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &flying)
	{
		SamHttpRequest *req = dlist_container(SamHttpRequest, flying_node, iter.cur);
		MemoryContext old;

		if (req->deadline > now)
			break;
		finish_transfer(req);
		dlist_delete(&req->flying_node);
		in_flight--;
		req->status = 0;
		req->timed_out = true;
		req->elapsed_ms = (double) (now - req->started) / 1000.0;
		old = MemoryContextSwitchTo(req->cxt);
		req->error = psprintf("timeout after %d ms", sam_http_timeout_ms);
		MemoryContextSwitchTo(old);
		*finished = lappend(*finished, req);
	}
}

/*
 * multi_perform runs curl_multi_perform with every signal but SIGQUIT
 * blocked: libcurl's resolver threads, started there, inherit that mask, so
 * that no signal of the process (SIGALRM of PostgreSQL's timeouts, SIGTERM,
 * SIGUSR1...) runs its handler on one of them.  (CURLOPT_QUICK_EXIT keeps a
 * transfer ended during its lookup from waiting there for the thread.)
 */
static void
multi_perform(int *running)
{
	sigset_t	all,
				old;
	CURLMcode	rc;

	sigfillset(&all);
	sigdelset(&all, SIGQUIT);	/* an immediate shutdown still ends it */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = curl_multi_perform(multi, running);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("libcurl multi call failed: %s", curl_multi_strerror(rc))));
}

/*
 * sam_http_drive lets the transfers make progress for up to timeout_ms and
 * appends the requests that finished to *finished.  Returns the number of
 * requests still in flight.
 */
int
sam_http_drive(int timeout_ms, List **finished)
{
	int			running = 0;
	int			numfds;
	int			msgs;
	CURLMsg    *msg;

	if (refused != NIL)
	{
		ListCell   *lc;

		foreach(lc, refused)
		{
			*finished = lappend(*finished, lfirst(lc));
			in_flight--;
		}
		list_free(refused);
		refused = NIL;
		timeout_ms = 0;			/* they are to be recorded now */
	}

	multi_perform(&running);
	if (running > 0 && timeout_ms > 0)
	{
		CURLM_CHECK(curl_multi_poll(multi, NULL, 0, timeout_ms, &numfds));
		multi_perform(&running);
	}

	while ((msg = curl_multi_info_read(multi, &msgs)) != NULL)
	{
		SamHttpRequest *req;
		CURL	   *easy = msg->easy_handle;
		double		total = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &req);
		curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME, &total);
		req->elapsed_ms = total * 1000.0;
		if (msg->data.result == CURLE_OK)
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
		else
		{
			MemoryContext old = MemoryContextSwitchTo(req->cxt);

			req->status = 0;
			req->timed_out = (msg->data.result == CURLE_OPERATION_TIMEDOUT);
			/* refused: only when no address was tried (a dual-stack host may have had others) */
			if (req->address_refused && !req->address_tried)
				req->error = pstrdup("invalid request: the hook's host has a private address (loopback, link-local or "
									 "private network); not sent (sam.allow_private_hook_addresses)");
			else if (req->resend_refused)
				req->error = pstrdup("connection closed before an answer; the request is not sent again without a check");
			else if (req->too_large)
				req->error = psprintf("response larger than sam.max_response_size (%d bytes)",
									  sam_max_response_bytes);
			else if (req->timed_out)
				req->error = psprintf("timeout after %d ms", sam_http_timeout_ms);
			else
				req->error = psprintf("%s%s%s", curl_easy_strerror(msg->data.result),
									  req->errbuf[0] ? ": " : "", req->errbuf);
			MemoryContextSwitchTo(old);
		}
		finish_transfer(req);
		dlist_delete(&req->flying_node);
		in_flight--;
		*finished = lappend(*finished, req);
	}
	expire_overdue(finished);
	return in_flight;
}

/* sam_http_release frees libcurl's state of a request and the request */
void
sam_http_release(SamHttpRequest *req)
{
	/* (a transfer still under way is ended: curl_easy_cleanup takes it off the multi handle) */
	if (req->easy)
		curl_easy_cleanup(req->easy);
	req->easy = NULL;
	finish_transfer(req);
	MemoryContextDelete(req->cxt);
}
