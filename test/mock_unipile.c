/*-------------------------------------------------------------------------
 *
 * mock_unipile.c
 *	  Mock Unipile v1 API server for the sam_ext tests and benchmarks:
 *	  command line, libmicrohttpd glue, request bodies (JSON, multipart,
 *	  url-encoded), delayed answers and clean shutdown.
 *
 * Usage:
 *	  mock_unipile --port N [--listen 127.0.0.1] [--api-key KEY]
 *				   [--threads N] [--quiet] [--no-log] [--log-max N]
 *
 * The HTTP daemon runs an internal thread pool (epoll where available)
 * with HTTP/1.1 keep-alive.  Delayed answers (fault injection) suspend
 * the connection and a timer thread resumes it, so pool threads never
 * sleep.  The same timer thread evaluates due simulated events a few
 * times per second.  See README.md for routes and the control API.
 *
 * test/mock_unipile.c
 *
 *-------------------------------------------------------------------------
 */
#include "mock_unipile.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>
#include <microhttpd.h>

#define MAX_BODY_BYTES		(4 * 1024 * 1024)
#define POST_BUFFER_SIZE	8192
#define TICK_MS				100

MockConfig	g_config = {
	.api_key = NULL,
	.quiet = false,
	.log_enabled = true,
	.echo_sent = true,
	.log_max = 100000
};
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* One multipart / url-encoded field being collected. */
typedef struct FormField
{
	char	   *key;
	char	   *filename;
	StrBuf		value;
} FormField;

typedef enum CtxState
{
	CTX_RECEIVING,				/* headers and body arriving */
	CTX_SUSPENDED				/* answer computed, waiting for its delay */
} CtxState;

/* Per-request context (MHD's con_cls). */
typedef struct ReqCtx
{
	CtxState	state;
	struct timespec started;
	StrBuf		body;
	size_t		received;
	bool		too_large;
	bool		is_form;		/* multipart, parsed while it arrives */
	bool		is_urlencoded;	/* url-encoded (or JSON sent by "curl -d") */
	bool		form_bad;
	struct MHD_PostProcessor *pp;
	PtrVec		fields;			/* FormField */
	Reply		reply;			/* pending answer when suspended */
} ReqCtx;

/* A suspended connection waiting for its delayed answer. */
typedef struct Suspended
{
	int64_t		due;			/* mono_ms */
	struct MHD_Connection *conn;
} Suspended;

static PtrVec suspended;		/* sorted by due; under g_lock */
static bool shutting_down;
static bool timer_stop;
static pthread_cond_t timer_cond;
static pthread_t timer_thread;

/* ---------------------------------------------------------------------
 * Request context
 * ---------------------------------------------------------------------
 */
static void
field_free(void *p)
{
	FormField  *f = p;

	free(f->key);
	free(f->filename);
	free(f->value.data);
	free(f);
}

static void
reply_release(Reply *r)
{
	json_decref(r->json);
	r->json = NULL;
	free(r->raw);
	r->raw = NULL;
}

/* MHD_OPTION_NOTIFY_COMPLETED: free the request context. */
static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	ReqCtx	   *ctx = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (ctx == NULL)
		return;
	if (ctx->pp)
		MHD_destroy_post_processor(ctx->pp);
	pv_free(&ctx->fields, field_free);
	free(ctx->body.data);
	reply_release(&ctx->reply);
	free(ctx);
	*con_cls = NULL;
}

/*
 * Post processor callback: values may arrive in several chunks (off > 0),
 * which are appended to the field started by the off == 0 call.
 */
static enum MHD_Result
post_iterator(void *cls, enum MHD_ValueKind kind, const char *key,
			  const char *filename, const char *content_type,
			  const char *transfer_encoding, const char *data,
			  uint64_t off, size_t size)
{
	ReqCtx	   *ctx = cls;
	FormField  *f = ctx->fields.n ? ctx->fields.items[ctx->fields.n - 1] : NULL;

	(void) kind;
	(void) content_type;
	(void) transfer_encoding;
	if (key == NULL)
		return MHD_YES;
	if (off == 0 || f == NULL || strcmp(f->key, key) != 0)
	{
		f = xcalloc(1, sizeof(FormField));
		f->key = xstrdup(key);
		f->filename = xstrdup_or_null(filename);
		sb_append(&f->value, "", 0);
		pv_push(&ctx->fields, f);
	}
	if (size > 0)
		sb_append(&f->value, data, size);
	return MHD_YES;
}

/* Add key=value to a JSON object, turning repeated keys into arrays. */
static void
add_multi(json_t *obj, const char *key, json_t *val)
{
	json_t	   *old = json_object_get(obj, key);

	if (old == NULL)
		json_object_set_new(obj, key, val);
	else if (json_is_array(old))
		json_array_append_new(old, val);
	else
		json_object_set_new(obj, key, json_pack("[Oo]", old, val));
}

/* A JSON string for arbitrary bytes (placeholder when not UTF-8). */
static json_t *
bytes_json(const char *data, size_t len, const char *filename)
{
	json_t	   *s = filename ? NULL : json_stringn(data ? data : "", len);

	if (s == NULL)
		s = json_sprintf("<%s%s%s%zu bytes>", filename ? "file " : "",
						 filename ? filename : "", filename ? ", " : "", len);
	return s;
}

static enum MHD_Result
query_iterator(void *cls, enum MHD_ValueKind kind, const char *key,
			   const char *value)
{
	(void) kind;
	if (key)
		add_multi(cls, key, json_string(value ? value : ""));
	return MHD_YES;
}

/* The collected form fields as a JSON object (repeated keys -> arrays). */
static json_t *
fields_json(ReqCtx *ctx)
{
	json_t	   *obj = json_object();

	for (size_t i = 0; i < ctx->fields.n; i++)
	{
		FormField  *f = ctx->fields.items[i];

		add_multi(obj, f->key, bytes_json(f->value.data, f->value.len, f->filename));
	}
	return obj;
}

/*
 * Parse a buffered application/x-www-form-urlencoded body.  It is
 * buffered rather than streamed because "curl -d '{json}'" sends JSON
 * with this content type, and such bodies are accepted as JSON.
 */
static json_t *
parse_urlencoded(struct MHD_Connection *conn, ReqCtx *ctx, bool *malformed)
{
	struct MHD_PostProcessor *pp;
	bool		ok;

	pp = MHD_create_post_processor(conn, POST_BUFFER_SIZE, post_iterator, ctx);
	if (pp == NULL)
	{
		*malformed = true;
		return NULL;
	}
	ok = MHD_post_process(pp, ctx->body.data, ctx->body.len) == MHD_YES;
	ok = (MHD_destroy_post_processor(pp) == MHD_YES) && ok;
	if (!ok)
	{
		*malformed = true;
		return NULL;
	}
	return fields_json(ctx);
}

/* ---------------------------------------------------------------------
 * Answers
 * ---------------------------------------------------------------------
 */
static double
elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000.0 +
		(now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Queue the reply on the connection (MHD_NO closes it for drops). */
static enum MHD_Result
send_reply(struct MHD_Connection *conn, ReqCtx *ctx, const char *method,
		   const char *url, Reply *r)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char	   *data;
	size_t		len;
	const char *ctype;

	if (!g_config.quiet)
		fprintf(stderr, "mock_unipile: %s %s -> %u%s (%.2f ms)\n", method, url,
				r->status, r->kind == REPLY_DROP ? " (dropped)" : "",
				elapsed_ms(&ctx->started));
	if (r->kind == REPLY_DROP)
		return MHD_NO;
	if (r->kind == REPLY_JSON)
	{
		data = r->json ? json_dumps(r->json, JSON_COMPACT) : NULL;
		if (data == NULL)
			data = xstrdup("{}");
		len = strlen(data);
		ctype = "application/json; charset=utf-8";
		json_decref(r->json);
		r->json = NULL;
	}
	else
	{
		data = r->raw;
		len = r->raw_len;
		ctype = r->content_type;
		r->raw = NULL;
	}
	resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
	{
		free(data);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
	if (r->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
	ret = MHD_queue_response(conn, r->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * Park the connection until the reply's delay has passed.  Returns false
 * when shutting down (the caller answers at once).  The connection is
 * suspended before the timer can see it, so resume never precedes
 * suspend.
 */
static bool
suspend_for_delay(struct MHD_Connection *conn, ReqCtx *ctx)
{
	Suspended  *s;
	size_t		i;

	pthread_mutex_lock(&g_lock);
	if (shutting_down)
	{
		pthread_mutex_unlock(&g_lock);
		return false;
	}
	ctx->state = CTX_SUSPENDED;
	MHD_suspend_connection(conn);
	s = xmalloc(sizeof(Suspended));
	s->due = mono_ms() + ctx->reply.delay_ms;
	s->conn = conn;
	for (i = 0; i < suspended.n && ((Suspended *) suspended.items[i])->due <= s->due; i++)
		;
	pv_insert(&suspended, i, s);
	pthread_cond_signal(&timer_cond);
	pthread_mutex_unlock(&g_lock);
	return true;
}

/* ---------------------------------------------------------------------
 * Access handler
 * ---------------------------------------------------------------------
 */
static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size,
			   void **con_cls)
{
	ReqCtx	   *ctx = *con_cls;
	MockRequest mr;
	enum MHD_Result ret;

	(void) cls;
	(void) version;

	if (ctx == NULL)
	{
		const char *ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														MHD_HTTP_HEADER_CONTENT_TYPE);

		ctx = xcalloc(1, sizeof(ReqCtx));
		clock_gettime(CLOCK_MONOTONIC, &ctx->started);
		if (ctype && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) == 0)
			ctx->is_urlencoded = true;	/* buffered; see below */
		else if (ctype && strncasecmp(ctype, "multipart/form-data", 19) == 0)
		{
			ctx->is_form = true;
			ctx->pp = MHD_create_post_processor(conn, POST_BUFFER_SIZE,
												post_iterator, ctx);
			if (ctx->pp == NULL)
				ctx->form_bad = true;
		}
		*con_cls = ctx;
		return MHD_YES;
	}

	if (ctx->state == CTX_SUSPENDED)
	{
		/* resumed after the delay: send the stored answer */
		ret = send_reply(conn, ctx, method, url, &ctx->reply);
		reply_release(&ctx->reply);
		return ret;
	}

	if (*upload_data_size > 0)
	{
		ctx->received += *upload_data_size;
		if (ctx->received > MAX_BODY_BYTES)
			ctx->too_large = true;
		else if (ctx->is_form)
		{
			if (ctx->pp && MHD_post_process(ctx->pp, upload_data, *upload_data_size) != MHD_YES)
				ctx->form_bad = true;
		}
		else
			sb_append(&ctx->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* the whole request is here: build the MockRequest and route it */
	memset(&mr, 0, sizeof(mr));
	mr.method = method;
	mr.path = url;
	mr.query = json_object();
	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_iterator, mr.query);
	mr.api_key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-API-KEY");
	if (ctx->too_large)
		mr.body_too_large = true;
	else if (ctx->is_form)
	{
		if (ctx->form_bad)
			mr.body_malformed = true;
		else
			mr.body = fields_json(ctx);
	}
	else if (ctx->body.len > 0)
	{
		json_error_t err;

		mr.body = json_loadb(ctx->body.data, ctx->body.len, 0, &err);
		if (mr.body)
			mr.body_is_json = true;
		else if (ctx->is_urlencoded &&
				 ctx->body.data[strspn(ctx->body.data, " \t\r\n")] != '{' &&
				 ctx->body.data[strspn(ctx->body.data, " \t\r\n")] != '[')
			mr.body = parse_urlencoded(conn, ctx, &mr.body_malformed);
		else
		{
			mr.body_malformed = true;
			mr.body = bytes_json(ctx->body.data, ctx->body.len, NULL);
		}
	}

	handle_request(&mr, &ctx->reply);
	json_decref(mr.query);
	json_decref(mr.body);

	if (ctx->reply.delay_ms > 0 && suspend_for_delay(conn, ctx))
		return MHD_YES;
	ret = send_reply(conn, ctx, method, url, &ctx->reply);
	reply_release(&ctx->reply);
	return ret;
}

/* ---------------------------------------------------------------------
 * Timer thread: resumes delayed connections and ticks the simulation
 * ---------------------------------------------------------------------
 */
static void *
timer_main(void *arg)
{
	int64_t		next_tick = mono_ms() + TICK_MS;

	(void) arg;
	pthread_mutex_lock(&g_lock);
	while (!timer_stop)
	{
		int64_t		now = mono_ms();
		int64_t		wake;
		struct timespec ts;

		if (suspended.n > 0 && ((Suspended *) suspended.items[0])->due <= now)
		{
			Suspended  *s = pv_remove(&suspended, 0);

			pthread_mutex_unlock(&g_lock);
			MHD_resume_connection(s->conn);
			free(s);
			pthread_mutex_lock(&g_lock);
			continue;
		}
		if (now >= next_tick)
		{
			pthread_mutex_unlock(&g_lock);
			state_tick();
			pthread_mutex_lock(&g_lock);
			next_tick = now + TICK_MS;
			continue;
		}
		wake = next_tick;
		if (suspended.n > 0 && ((Suspended *) suspended.items[0])->due < wake)
			wake = ((Suspended *) suspended.items[0])->due;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (wake - now) / 1000;
		ts.tv_nsec += ((wake - now) % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000)
		{
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&timer_cond, &g_lock, &ts);
	}
	pthread_mutex_unlock(&g_lock);
	return NULL;
}

/* ---------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------
 */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: mock_unipile --port N [--listen ADDR] [--api-key KEY] [--threads N]\n"
			"                    [--quiet] [--no-log] [--log-max N]\n"
			"  --port N       TCP port (0 = pick a free port; the line printed on start\n"
			"                 tells which)\n"
			"  --listen ADDR  address to bind (default 127.0.0.1; IPv6 allowed)\n"
			"  --api-key KEY  required X-API-KEY (default: $MOCK_UNIPILE_API_KEY;\n"
			"                 none = no check)\n"
			"  --threads N    HTTP thread pool size (default 2)\n"
			"  --quiet        no per-request line on stderr\n"
			"  --no-log       do not keep the /_mock/log request log (counters stay)\n"
			"  --log-max N    keep at most N request log / delivery records (default 100000)\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"port", required_argument, NULL, 'p'},
		{"listen", required_argument, NULL, 'l'},
		{"api-key", required_argument, NULL, 'k'},
		{"threads", required_argument, NULL, 't'},
		{"quiet", no_argument, NULL, 'q'},
		{"no-log", no_argument, NULL, 'n'},
		{"log-max", required_argument, NULL, 'm'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int64_t		port = 0;
	int64_t		threads = 2;
	int64_t		log_max;
	const char *listen_addr = "127.0.0.1";
	const char *key = getenv("MOCK_UNIPILE_API_KEY");
	struct sockaddr_storage ss;
	socklen_t	sslen;
	unsigned int flags;
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	sigset_t	sigs;
	int			sig;
	int			c;
	pthread_condattr_t cattr;

	while ((c = getopt_long(argc, argv, "p:l:k:t:qnm:h", opts, NULL)) != -1)
	{
		switch (c)
		{
			case 'p':
				if (!parse_int64(optarg, &port) || port < 0 || port > 65535)
				{
					fprintf(stderr, "mock_unipile: invalid --port\n");
					return 2;
				}
				break;
			case 'l':
				listen_addr = optarg;
				break;
			case 'k':
				key = optarg;
				break;
			case 't':
				if (!parse_int64(optarg, &threads) || threads < 1 || threads > 256)
				{
					fprintf(stderr, "mock_unipile: invalid --threads\n");
					return 2;
				}
				break;
			case 'q':
				g_config.quiet = true;
				break;
			case 'n':
				g_config.log_enabled = false;
				break;
			case 'm':
				if (!parse_int64(optarg, &log_max) || log_max < 1)
				{
					fprintf(stderr, "mock_unipile: invalid --log-max\n");
					return 2;
				}
				g_config.log_max = (size_t) log_max;
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 2;
		}
	}
	if (optind < argc)
	{
		usage(stderr);
		return 2;
	}
	g_config.api_key = key && *key ? xstrdup(key) : NULL;

	memset(&ss, 0, sizeof(ss));
	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
		MHD_USE_ERROR_LOG;
	if (strchr(listen_addr, ':'))
	{
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) &ss;

		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t) port);
		if (inet_pton(AF_INET6, listen_addr, &a6->sin6_addr) != 1)
		{
			fprintf(stderr, "mock_unipile: invalid --listen address\n");
			return 2;
		}
		sslen = sizeof(*a6);
		flags |= MHD_USE_IPv6;
	}
	else
	{
		struct sockaddr_in *a4 = (struct sockaddr_in *) &ss;

		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t) port);
		if (inet_pton(AF_INET, listen_addr, &a4->sin_addr) != 1)
		{
			fprintf(stderr, "mock_unipile: invalid --listen address\n");
			return 2;
		}
		sslen = sizeof(*a4);
	}
	(void) sslen;
	if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
		flags |= MHD_USE_EPOLL;

	/* every thread inherits this mask: only main receives the signals */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	/*
	 * jansson seeds its hash function lazily on the first json_object();
	 * do it here, before any thread exists, as its docs require for
	 * multi-threaded programs.
	 */
	json_object_seed(0);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	state_init();
	delivery_start();

	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&timer_cond, &cattr);
	pthread_condattr_destroy(&cattr);
	if (pthread_create(&timer_thread, NULL, timer_main, NULL) != 0)
	{
		fprintf(stderr, "mock_unipile: cannot start timer thread\n");
		return 1;
	}

	daemon = MHD_start_daemon(flags, (uint16_t) port, NULL, NULL,
							  access_handler, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
							  MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) threads,
							  MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 120,
							  MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) 1024,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "mock_unipile: cannot listen on %s:%lld\n",
				listen_addr, (long long) port);
		return 1;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (info && info->port)
		port = info->port;
	printf("mock_unipile listening on %s%s%s:%lld\n",
		   strchr(listen_addr, ':') ? "[" : "", listen_addr,
		   strchr(listen_addr, ':') ? "]" : "", (long long) port);
	fflush(stdout);

	do
	{
		if (sigwait(&sigs, &sig) != 0)
			sig = SIGTERM;
	} while (sig != SIGINT && sig != SIGTERM);

	/* answer delayed requests now, then stop accepting */
	pthread_mutex_lock(&g_lock);
	shutting_down = true;
	timer_stop = true;
	pthread_cond_broadcast(&timer_cond);
	pthread_mutex_unlock(&g_lock);
	pthread_join(timer_thread, NULL);
	while (suspended.n > 0)
	{
		Suspended  *s = pv_remove(&suspended, 0);

		MHD_resume_connection(s->conn);
		free(s);
	}
	pv_free(&suspended, NULL);
	MHD_stop_daemon(daemon);
	pthread_cond_destroy(&timer_cond);

	delivery_stop();
	state_shutdown();
	curl_global_cleanup();
	free(g_config.api_key);
	if (!g_config.quiet)
		fprintf(stderr, "mock_unipile: stopped\n");
	return 0;
}
